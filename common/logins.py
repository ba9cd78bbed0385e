"""Logins: the one sign-in rule of the web apps with passwords (operators, caseworkers).

The operator dashboard and the union's web app each keep one :class:`Logins` per process,
so one rule holds at both doors::

    try:
        right = await logins.sign_in(name, password, client_address)
    except SignInThrottled as paused:       # 429 page: "try again in N minutes"
        ...

Two :class:`~common.signins.SignInGuard` are asked before the password is checked:

- **per login name** (the default policy: 5 wrong passwords evaluated per 5 minutes, then a
  pause that doubles up to an hour). It counts names that do not exist as well, so the
  answers (401 wrong, 429 paused) are the same for every name and say nothing of which
  names exist;
- **per client address** (:data:`ADDRESS_POLICY`: 20 per 5 minutes), against one machine
  trying a few passwords on each of many names. A right password from an address does not
  wipe its count (it may be the guesser's own login). Behind a reverse proxy, the address
  is the one the proxy reports (uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 only).

The password itself is checked by :meth:`common.passwords.PasswordBook.check` (off the event
loop; unknown names against a dummy hash; old hashes upgraded at a successful sign-in).

A door with a second factor (the union's web app: TOTP, :mod:`shore.union.totp`) gives
:class:`Logins` a :class:`SecondFactor`; the code is checked in the same guarded attempt as
the password, so a wrong code counts like a wrong password, and the answer never says
which of the two was wrong. A code is spent only when the password was right too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from common.passwords import MAX_NAME_CHARS, PasswordBook
from common.signins import GuardPolicy, SignInGuard, SignInThrottled

__all__ = ["ADDRESS_POLICY", "Logins", "SecondFactor", "SignInThrottled"]

#: Wrong passwords evaluated per client address (across names) before it is paused.
ADDRESS_POLICY = GuardPolicy(attempts=20, window_s=300.0, max_pause_s=3600.0)


class SecondFactor(Protocol):
    """A second secret besides the password (e.g. a TOTP code)."""

    def accept(self, name: str, code: str, *, spend: bool) -> bool:
        """Whether ``code`` is right for ``name`` now; ``spend``: it may not be used again."""
        ...


@dataclass
class Logins:
    """A web app's logins and its two guards (one of these per app, per process)."""

    book: PasswordBook
    by_name: SignInGuard = field(default_factory=SignInGuard)
    by_address: SignInGuard = field(default_factory=lambda: SignInGuard(ADDRESS_POLICY))
    #: When set, a sign-in also needs ``code`` (see the module docstring).
    second_factor: SecondFactor | None = None

    async def sign_in(self, name: str, password: str, address: str, code: str = "") -> bool:
        """Whether ``password`` (and, with a second factor, ``code``) is ``name``'s;
        :class:`SignInThrottled` when either the name or the address is paused (nothing is
        evaluated then)."""
        # a name longer than any login shares a counter with others of its prefix: it can
        # never be right, and the guard's memory stays bounded
        by_name = self.by_name.begin(("name", name[: MAX_NAME_CHARS + 1]))
        try:
            by_address = self.by_address.begin(("address", address))
        except SignInThrottled:
            by_name.abandoned()
            raise
        with by_name, by_address:  # anything that escapes (a crash, a cancel) is not counted
            right = await self.book.check(name, password)
            if self.second_factor is not None:
                code_right = self.second_factor.accept(name, code, spend=right)
                right = right and code_right
            if right:
                by_name.succeeded()
                by_address.abandoned()
            else:
                by_name.failed()
                by_address.failed()
        return right
