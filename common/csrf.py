"""CSRF: one check for every form of the web apps that keep a signed session cookie.

The operator dashboard and the union's web app (and any later one) keep a random token in
the session (Starlette's signed cookie, ``SameSite=Strict``) and put it in a hidden field
``csrf`` of every form they render, the login form included::

    <input type="hidden" name="csrf" value="{{ csrf }}">

Every POST (log in, log out, each action) passes only when the field matches the session's
token (constant-time). The token exists before anybody signs in (the login page makes it),
so a login form posted from another site, which carries no session, is refused too; a
successful sign-in starts a new session with a new token (:func:`new_session_token`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["FIELD", "SESSION_KEY", "csrf_ok", "csrf_token", "new_session_token"]

#: The form field and the session key that hold the token.
FIELD = "csrf"
SESSION_KEY = "csrf"


def csrf_token(session: MutableMapping[str, Any]) -> str:
    """The session's token, made on first use (render it into every form)."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = session[SESSION_KEY] = secrets.token_urlsafe(24)
    return token


def new_session_token(session: MutableMapping[str, Any]) -> str:
    """Forget the session's token and make another (after signing in or out)."""
    session.pop(SESSION_KEY, None)
    return csrf_token(session)


def csrf_ok(session: Mapping[str, Any], sent: object) -> bool:
    """Whether ``sent`` (the form's field) is the session's token (constant time)."""
    expected = session.get(SESSION_KEY)
    if not (isinstance(sent, str) and isinstance(expected, str) and expected):
        return False
    return secrets.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8"))
