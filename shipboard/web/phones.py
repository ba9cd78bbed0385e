"""Signed-in phones: the crew page's sign-ins, one cookie per phone, with CSRF tokens,
expiry and rate limits.

Sign-ins live in memory only (a restart signs everyone out). A sign-in expires after
:data:`IDLE_S` without a request or :data:`MAX_AGE_S` after it was made. Rate limits count
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
#: Case numbers one sign-in holds for the mode-A page (one per page load, the latest kept).
MAX_OPEN_CASE_NUMBERS = 8


@dataclass
class SignedInPhone:
    """One phone signed in to the crew page (its cookie is ``token``)."""

    token: str
    csrf: str
    signed_in: SignedIn
    duress: bool
    lang: Language
    must_choose_pin: bool
    created_at: float
    last_seen: float
    #: Case numbers drawn for the mode-A page in this sign-in and not used yet.
    case_numbers: list[str] = field(default_factory=list)

    @property
    def crew(self) -> int:
        return self.signed_in.member.crew

    def remember_case_number(self, case: str) -> None:
        """A case number the report page drew for this sign-in (the latest few are kept)."""
        self.case_numbers = [*self.case_numbers[-(MAX_OPEN_CASE_NUMBERS - 1) :], case]

    def case_number_issued(self, case: str) -> bool:
        """Whether the page drew ``case`` for this sign-in and it was not used yet."""
        return any(hmac.compare_digest(case, issued) for issued in self.case_numbers)

    def case_number_used(self, case: str) -> None:
        """A report was filed with ``case``: it cannot be used again."""
        self.case_numbers = [issued for issued in self.case_numbers if issued != case]


@dataclass
class SignedInPhones:
    """The phones signed in to the crew page, by cookie, and the per-crew-member rate
    counters."""

    clock: Callable[[], float] = time.monotonic
    phones: dict[str, SignedInPhone] = field(default_factory=dict)
    actions: dict[int, deque[float]] = field(default_factory=dict)

    def open(
        self, signed_in: SignedIn, *, duress: bool, lang: Language, must_choose_pin: bool
    ) -> SignedInPhone:
        """Sign a phone in: a new cookie token and CSRF token."""
        now = self.clock()
        self.expire()
        phone = SignedInPhone(
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(24),
            signed_in=signed_in,
            duress=duress,
            lang=lang,
            must_choose_pin=must_choose_pin,
            created_at=now,
            last_seen=now,
        )
        self.phones[phone.token] = phone
        return phone

    def get(self, token: str | None) -> SignedInPhone | None:
        """The phone signed in with this cookie (touching it), or None if unknown or expired."""
        if not token:
            return None
        phone = self.phones.get(token)
        if phone is None:
            return None
        now = self.clock()
        if now - phone.last_seen > IDLE_S or now - phone.created_at > MAX_AGE_S:
            del self.phones[token]
            return None
        phone.last_seen = now
        return phone

    def close(self, token: str | None) -> None:
        """Sign the phone with this cookie out."""
        if token:
            self.phones.pop(token, None)

    def expire(self) -> None:
        """Forget the sign-ins that expired."""
        now = self.clock()
        for token, phone in list(self.phones.items()):
            if now - phone.last_seen > IDLE_S or now - phone.created_at > MAX_AGE_S:
                del self.phones[token]

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
