"""Retry policy: backoff grows and is capped, jitter stays in bounds, deadlines hold."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.envelopes import FailureReason
from shore.retry import (
    AttemptResult,
    Outcome,
    RetryPolicy,
    classify_sms_reply,
    classify_smtp_reply,
    decide,
    parse_retry_after,
)

policies = st.builds(
    RetryPolicy,
    initial_delay_s=st.floats(1, 600),
    multiplier=st.floats(1, 4),
    max_delay_s=st.floats(600, 86400),
    jitter=st.floats(0, 0.99),
    deadline_s=st.floats(60, 30 * 86400),
)


@given(policies, st.integers(1, 200))
def test_base_delays_grow_and_are_capped(policy: RetryPolicy, attempt: int) -> None:
    """Each retry waits at least as long as the one before, never beyond the cap."""
    assert policy.base_delay(attempt) <= policy.base_delay(attempt + 1) <= policy.max_delay_s
    assert policy.base_delay(1) == policy.initial_delay_s


@given(policies, st.integers(1, 200), st.integers(0, 2**32))
def test_jittered_delay_stays_within_its_band(policy: RetryPolicy, attempt: int, seed: int) -> None:
    """Jitter only shortens a delay, by at most the jitter share, and is reproducible."""
    base = policy.base_delay(attempt)
    delay = policy.delay(attempt, random.Random(seed))
    assert base * (1 - policy.jitter) - 1e-9 <= delay <= base
    assert delay == policy.delay(attempt, random.Random(seed))


@given(
    policies,
    st.integers(1, 100),
    st.floats(0, 10 * 86400),
    st.one_of(st.none(), st.floats(0, 86400)),
    st.integers(0, 2**32),
)
def test_a_retry_never_falls_after_the_deadline(
    policy: RetryPolicy, attempt: int, elapsed: float, retry_after: float | None, seed: int
) -> None:
    """A transient failure retries before the deadline, or fails with DEADLINE_PASSED."""
    accepted_at = 1_000_000.0
    now = accepted_at + elapsed
    result = AttemptResult.transient(FailureReason.PROVIDER_ERROR, "smtp 451", retry_after)
    decision = decide(result, attempt, accepted_at, now, policy, random.Random(seed))
    if decision.retry_at is None:
        assert decision.reason is FailureReason.DEADLINE_PASSED
        assert "smtp 451" in decision.result.detail
    else:
        assert now < decision.retry_at <= accepted_at + policy.deadline_s
        if retry_after is not None:
            assert decision.retry_at >= now + retry_after


def test_retry_sequence_in_virtual_time_ends_at_the_deadline() -> None:
    """A smarthost down for good: retries space out, then the message fails at the deadline."""
    policy = RetryPolicy(initial_delay_s=60, max_delay_s=3600, jitter=0.5, deadline_s=86400)
    rng = random.Random(7)
    now = accepted = 0.0
    waits = []
    for attempt in range(1, 1000):
        result = AttemptResult.transient(FailureReason.PROVIDER_ERROR, "smtp timeout")
        decision = decide(result, attempt, accepted, now, policy, rng)
        if decision.final:
            break
        assert decision.retry_at is not None
        waits.append(decision.retry_at - now)
        now = decision.retry_at
    assert decision.reason is FailureReason.DEADLINE_PASSED
    assert now <= 86400
    assert max(waits) <= 3600
    assert 20 < len(waits) < 60


def test_final_outcomes_end_at_once() -> None:
    """Delivered and permanent results are final whatever the attempt number."""
    rng = random.Random(1)
    policy = RetryPolicy()
    done = decide(AttemptResult.delivered("smtp 250"), 3, 0, 10, policy, rng)
    assert done.delivered
    assert done.final
    assert done.reason is None
    bad = AttemptResult.permanent(FailureReason.ADDRESS_INVALID, "smtp 550 5.1.1")
    failed = decide(bad, 1, 0, 10, policy, rng)
    assert failed.final
    assert not failed.delivered
    assert failed.reason is FailureReason.ADDRESS_INVALID


@pytest.mark.parametrize(
    ("code", "text", "outcome", "reason"),
    [
        (250, "2.0.0 OK", Outcome.DELIVERED, None),
        (451, "4.3.0 try later", Outcome.TRANSIENT, FailureReason.RECIPIENT_REFUSED),
        (421, "", Outcome.TRANSIENT, FailureReason.RECIPIENT_REFUSED),
        (550, "5.1.1 no such user", Outcome.PERMANENT, FailureReason.ADDRESS_INVALID),
        (550, "mailbox unavailable", Outcome.PERMANENT, FailureReason.ADDRESS_INVALID),
        (553, "", Outcome.PERMANENT, FailureReason.ADDRESS_INVALID),
        (554, "5.7.1 rejected by policy", Outcome.PERMANENT, FailureReason.RECIPIENT_REFUSED),
        (552, "5.2.2 mailbox full", Outcome.PERMANENT, FailureReason.RECIPIENT_REFUSED),
        (535, "5.7.8 bad credentials", Outcome.TRANSIENT, FailureReason.PROVIDER_ERROR),
    ],
)
def test_smtp_replies_are_classified(
    code: int, text: str, outcome: Outcome, reason: FailureReason | None
) -> None:
    """SMTP 4xx retries, 5xx fails for good (address or refusal), our own auth waits."""
    result = classify_smtp_reply(code, text)
    assert (result.outcome, result.reason) == (outcome, reason)
    assert str(code) in result.detail


@pytest.mark.parametrize(
    ("status", "code", "outcome", "reason"),
    [
        (201, None, Outcome.DELIVERED, None),
        (400, 21211, Outcome.PERMANENT, FailureReason.ADDRESS_INVALID),
        (400, 21614, Outcome.PERMANENT, FailureReason.ADDRESS_INVALID),
        (400, 21610, Outcome.PERMANENT, FailureReason.RECIPIENT_REFUSED),
        (400, 21602, Outcome.PERMANENT, FailureReason.PROVIDER_ERROR),
        (401, 20003, Outcome.TRANSIENT, FailureReason.PROVIDER_ERROR),
        (429, 20429, Outcome.TRANSIENT, FailureReason.PROVIDER_ERROR),
        (500, None, Outcome.TRANSIENT, FailureReason.PROVIDER_ERROR),
        (503, None, Outcome.TRANSIENT, FailureReason.PROVIDER_ERROR),
    ],
)
def test_sms_provider_replies_are_classified(
    status: int, code: int | None, outcome: Outcome, reason: FailureReason | None
) -> None:
    """An invalid number fails for good; rate limits and provider errors retry."""
    result = classify_sms_reply(status, code, 5.0 if status == 429 else None)
    assert (result.outcome, result.reason) == (outcome, reason)


def test_retry_after_header_parsing() -> None:
    """Retry-After seconds are honoured, capped; junk falls back to the default."""
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None, default_s=30) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", default_s=30) == 30.0
    assert parse_retry_after("-3", default_s=30) == 30.0
    assert parse_retry_after("99999999", cap_s=3600) == 3600.0


def test_results_refuse_inconsistent_states() -> None:
    """A failure needs a reason and a success has none: bugs fail loudly."""
    with pytest.raises(ValueError, match="needs a FailureReason"):
        AttemptResult(Outcome.TRANSIENT)
    with pytest.raises(ValueError, match="no failure reason"):
        AttemptResult(Outcome.DELIVERED, FailureReason.ADDRESS_INVALID)
