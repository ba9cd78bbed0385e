"""Web sessions: a cookie per signed-in phone, CSRF tokens, expiry and rate limits.

Sessions live in memory only (a restart signs everyone out). A session expires after
:data:`IDLE_S` without a request or :data:`MAX_AGE_S` after sign-in. Rate limits count
per crew number, never for grievance reports or SOS. Wrong PINs are not counted here but
by the process's one sign-in guard, across every door (:mod:`shipboard.signin`).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol.languages import Language
from shipboard.crew import SignedIn

IDLE_S = 15 * 60
MAX_AGE_S = 4 * 3600
#: Messages and contacts a crew member may add per RATE_WINDOW_S (grievances, SOS: no limit).
RATE_LIMIT = 20
RATE_WINDOW_S = 600


@dataclass
class WebSession:
    """One signed-in phone."""

    token: str
    csrf: str
    signed_in: SignedIn
    duress: bool
    lang: Language
    must_choose_pin: bool
    created_at: float
    last_seen: float

    @property
    def crew(self) -> int:
        return self.signed_in.member.crew


@dataclass
class WebSessions:
    """The session table and the per-crew-member rate counters."""

    clock: Callable[[], float] = time.monotonic
    sessions: dict[str, WebSession] = field(default_factory=dict)
    actions: dict[int, deque[float]] = field(default_factory=dict)

    def open(
        self, signed_in: SignedIn, *, duress: bool, lang: Language, must_choose_pin: bool
    ) -> WebSession:
        now = self.clock()
        self.expire()
        session = WebSession(
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(24),
            signed_in=signed_in,
            duress=duress,
            lang=lang,
            must_choose_pin=must_choose_pin,
            created_at=now,
            last_seen=now,
        )
        self.sessions[session.token] = session
        return session

    def get(self, token: str | None) -> WebSession | None:
        """The live session for this cookie (touching it), or None if unknown or expired."""
        if not token:
            return None
        session = self.sessions.get(token)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_seen > IDLE_S or now - session.created_at > MAX_AGE_S:
            del self.sessions[token]
            return None
        session.last_seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self.sessions.pop(token, None)

    def expire(self) -> None:
        now = self.clock()
        for token, session in list(self.sessions.items()):
            if now - session.last_seen > IDLE_S or now - session.created_at > MAX_AGE_S:
                del self.sessions[token]

    def allow_action(self, crew: int) -> bool:
        """Count one message or contact; False when the crew member is over the limit."""
        now = self.clock()
        recent = self.actions.setdefault(crew, deque())
        while recent and now - recent[0] > RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= RATE_LIMIT:
            return False
        recent.append(now)
        return True


def csrf_ok(expected: str, given: object) -> bool:
    """Constant-time check of a form's CSRF token."""
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected, given)
