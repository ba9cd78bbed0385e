"""Retry: what one delivery attempt's outcome means, and when to try again.

Pure: no clock, no global randomness. Every function takes ``now`` (seconds, any epoch the
caller uses consistently) and jitter comes from a ``random.Random`` the caller passes in,
so the whole policy is reproducible in tests.

An attempt ends in one :class:`AttemptResult`:

- ``DELIVERED``: the smarthost or SMS provider took the message;
- ``TRANSIENT``: try again later (SMTP 4xx, time-outs, connection errors, HTTP 429 and 5xx,
  a misconfigured relay credential: the operator can fix that before the deadline);
- ``PERMANENT``: never try again (SMTP 5xx, an invalid address or phone number).

:func:`decide` turns a result into a :class:`Decision`: finish (delivered, or failed with a
:class:`~protocol.envelopes.FailureReason`) or retry at a given time. A transient failure
whose next try would fall after the deadline fails with ``DEADLINE_PASSED``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from protocol.envelopes import FailureReason


class Outcome(Enum):
    """How one delivery attempt ended."""

    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one attempt, with an operator-facing detail that names no person.

    ``detail`` holds codes only ("smtp 550 5.1.1", "provider code 21211"), never an address,
    a name or message text, so it may be logged and stored.
    """

    outcome: Outcome
    reason: FailureReason | None = None
    detail: str = ""
    #: The peer asked us to wait at least this long (HTTP Retry-After).
    retry_after_s: float | None = None
    #: The provider's id for the message (an SMS sid), when it gave one.
    provider_id: str | None = None
    #: The failure came after the message was handed over (a connection lost or timed out
    #: during SMTP DATA): it may have arrived, so its next attempt counts as a repeat.
    maybe_sent: bool = False

    def __post_init__(self) -> None:
        if self.outcome is Outcome.DELIVERED:
            if self.reason is not None:
                raise ValueError("a delivered attempt has no failure reason")
        elif self.reason is None:
            raise ValueError(f"a {self.outcome.value} failure needs a FailureReason")
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must not be negative, not {self.retry_after_s}")

    @classmethod
    def delivered(cls, detail: str = "", provider_id: str | None = None) -> AttemptResult:
        """A successful attempt."""
        return cls(Outcome.DELIVERED, detail=detail, provider_id=provider_id)

    @classmethod
    def transient(
        cls, reason: FailureReason, detail: str, retry_after_s: float | None = None
    ) -> AttemptResult:
        """A failure worth retrying."""
        return cls(Outcome.TRANSIENT, reason, detail, retry_after_s)

    @classmethod
    def permanent(cls, reason: FailureReason, detail: str) -> AttemptResult:
        """A failure that no retry will fix."""
        return cls(Outcome.PERMANENT, reason, detail)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped, and a deadline for the whole delivery.

    The n-th retry (``attempt`` = n, from 1) waits ``base = min(max_delay_s, initial_delay_s
    * multiplier ** (n - 1))`` less a random share of up to ``jitter`` of it, so the delay
    lies in ``[base * (1 - jitter), base]``. The deadline counts from when the message was
    accepted ashore: a family that gets a message a week late may be worse off than a crew
    member who is told it failed.
    """

    initial_delay_s: float = 60.0
    multiplier: float = 2.0
    max_delay_s: float = 3600.0
    jitter: float = 0.5
    deadline_s: float = 3 * 24 * 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < initial_delay_s <= max_delay_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, not {self.multiplier}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {self.jitter}")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive, not {self.deadline_s}")

    def base_delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (from 1), before jitter."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, not {attempt}")
        # Compare exponents rather than computing a huge power for a large attempt number.
        delay = self.initial_delay_s
        for _ in range(attempt - 1):
            delay *= self.multiplier
            if delay >= self.max_delay_s:
                return self.max_delay_s
        return min(delay, self.max_delay_s)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The jittered delay before retry number ``attempt``."""
        base = self.base_delay(attempt)
        return base * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an attempt: finish (``retry_at`` is None) or try again at a time."""

    result: AttemptResult
    retry_at: float | None = None

    @property
    def final(self) -> bool:
        """Whether the delivery is over (delivered or failed for good)."""
        return self.retry_at is None

    @property
    def delivered(self) -> bool:
        """Whether the delivery is over and succeeded."""
        return self.retry_at is None and self.result.outcome is Outcome.DELIVERED

    @property
    def reason(self) -> FailureReason | None:
        """The failure reason of a final failure (None if delivered or retrying)."""
        return self.result.reason if self.retry_at is None else None


def decide(
    result: AttemptResult,
    attempt: int,
    accepted_at: float,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    """What to do after attempt number ``attempt`` (from 1) ended with ``result`` at ``now``.

    A transient failure retries after the policy's delay, or later if the peer asked
    (Retry-After). When that time would fall after ``accepted_at + deadline_s``, the
    delivery fails with ``DEADLINE_PASSED``, keeping the last failure's detail.
    """
    if result.outcome is not Outcome.TRANSIENT:
        return Decision(result)
    wait = policy.delay(attempt, rng)
    if result.retry_after_s is not None:
        wait = max(wait, result.retry_after_s)
    retry_at = now + wait
    if retry_at > accepted_at + policy.deadline_s:
        detail = f"deadline passed after {attempt} attempts; last: {result.detail}"
        return Decision(AttemptResult.permanent(FailureReason.DEADLINE_PASSED, detail))
    return Decision(result, retry_at)


# --- classifying SMTP replies ----------------------------------------------------------

#: SMTP reply codes that mean our own credentials or TLS set-up are wrong: the relay
#: operator must act, and the message must not fail for the family meanwhile.
SMTP_RELAY_CONFIG_CODES = frozenset({530, 534, 535, 538})


def classify_smtp_reply(code: int, text: str = "") -> AttemptResult:
    """Classify an SMTP reply code (and its enhanced status code, if the text starts with one).

    2xx: delivered. 4xx: transient. 5xx: permanent; an address problem (550, 551, 553, or an
    enhanced code 5.1.x) is ``ADDRESS_INVALID``, anything else the remote refused is
    ``RECIPIENT_REFUSED``. Authentication and TLS set-up errors are transient
    ``PROVIDER_ERROR`` (the operator can fix them before the deadline).
    """
    enhanced = _enhanced_status(text)
    detail = f"smtp {code}" + (f" {enhanced}" if enhanced else "")
    if 200 <= code < 300:
        return AttemptResult.delivered(detail)
    if code in SMTP_RELAY_CONFIG_CODES:
        return AttemptResult.transient(FailureReason.PROVIDER_ERROR, detail)
    if 400 <= code < 500:
        return AttemptResult.transient(FailureReason.RECIPIENT_REFUSED, detail)
    if 500 <= code < 600:
        if (enhanced and enhanced.startswith("5.1.")) or (not enhanced and code in (550, 551, 553)):
            return AttemptResult.permanent(FailureReason.ADDRESS_INVALID, detail)
        return AttemptResult.permanent(FailureReason.RECIPIENT_REFUSED, detail)
    # Not an SMTP reply at all: the server is broken; treat like a dropped connection.
    return AttemptResult.transient(FailureReason.PROVIDER_ERROR, detail)


def _enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text, if there is one."""
    head = text.strip().split(" ", 1)[0] if text.strip() else ""
    parts = head.split(".")
    if len(parts) == 3 and parts[0] in ("2", "4", "5") and all(p.isdigit() for p in parts):
        return head
    return None


def connection_failure(what: str, *, maybe_sent: bool = False) -> AttemptResult:
    """A time-out or lost connection: transient; ``what`` names the kind, not the peer.
    ``maybe_sent``: it happened after the message was handed over (the next attempt is then
    a counted repeat)."""
    return AttemptResult(
        Outcome.TRANSIENT, FailureReason.PROVIDER_ERROR, what, maybe_sent=maybe_sent
    )


# --- classifying SMS provider replies --------------------------------------------------

#: Provider error codes meaning the phone number is wrong (Twilio-style codes).
SMS_INVALID_NUMBER_CODES = frozenset({21211, 21217, 21614, 21401, 21421})
#: Provider error codes meaning this recipient cannot be reached by us, for good.
SMS_REFUSED_CODES = frozenset({21610, 21612, 21408, 21635, 30004, 30005, 30006, 30007})


def classify_sms_reply(
    http_status: int, code: int | None = None, retry_after_s: float | None = None
) -> AttemptResult:
    """Classify an SMS provider's HTTP reply (status, error ``code`` from its JSON body).

    2xx: delivered to the provider. 429 and 5xx: transient (honouring Retry-After). 401 and
    403: transient ``PROVIDER_ERROR`` (our credentials; the operator can fix them). Other
    4xx: permanent; an invalid number is ``ADDRESS_INVALID``, an unsubscribed or
    unreachable one ``RECIPIENT_REFUSED``, anything else ``PROVIDER_ERROR``.
    """
    detail = f"http {http_status}" + (f" provider code {code}" if code is not None else "")
    if 200 <= http_status < 300:
        return AttemptResult.delivered(detail)
    if http_status == 429:
        return AttemptResult.transient(FailureReason.PROVIDER_ERROR, detail, retry_after_s)
    if http_status >= 500 or http_status in (401, 403, 408):
        return AttemptResult.transient(FailureReason.PROVIDER_ERROR, detail, retry_after_s)
    if code in SMS_INVALID_NUMBER_CODES:
        return AttemptResult.permanent(FailureReason.ADDRESS_INVALID, detail)
    if code in SMS_REFUSED_CODES:
        return AttemptResult.permanent(FailureReason.RECIPIENT_REFUSED, detail)
    return AttemptResult.permanent(FailureReason.PROVIDER_ERROR, detail)


def parse_retry_after(value: str | None, default_s: float = 60.0, cap_s: float = 86400.0) -> float:
    """Seconds to wait from an HTTP ``Retry-After`` header (delta-seconds; dates give default).

    A missing or unreadable header gives ``default_s``; a huge one is capped at ``cap_s``.
    """
    if value is None:
        return default_s
    try:
        seconds = float(value.strip())
    except ValueError:
        return default_s
    if seconds != seconds or seconds < 0:  # NaN or negative
        return default_s
    return min(seconds, cap_s)
