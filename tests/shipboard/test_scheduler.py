"""The session scheduler: pure policy, driven with a fake clock (``now`` as a number)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.months import Month
from protocol.quota import RULE_MONTHLY_TEXT_BYTES, QuotaLedger
from shipboard.config import link_profile_names
from shipboard.profiles import FLEETBROADBAND, IRIDIUM_CERTUS, PROFILES, VSAT, LinkProfile
from shipboard.scheduler import (
    HoldReason,
    Plan,
    SchedulerSettings,
    SessionReason,
    Snapshot,
    fill_target_bytes,
    plan,
)

MONTH = Month(2026, 10)
MONTH_START = 1_790_812_800.0  # 2026-10-01 00:00 UTC
NEXT_MONTH = 1_793_491_200.0  # 2026-11-01 00:00 UTC
T0 = MONTH_START + 10 * 86_400.0
QUOTA = RULE_MONTHLY_TEXT_BYTES
SETTINGS = SchedulerSettings()


@dataclass(frozen=True, slots=True)
class Pending:
    """A pending message as the outbox hands it to the scheduler."""

    message_seq: int
    kind: str
    crew: int | None
    text_bytes: int
    payload_bytes: int
    accepted_at: float


def message(seq: int, crew: int, size: int = 60, at: float = T0) -> Pending:
    return Pending(seq, "message", crew, size, size, at)


def grievance(seq: int, at: float = T0) -> Pending:
    return Pending(seq, "grievance", None, 0, 400, at)


def sos(seq: int, crew: int = 1, at: float = T0) -> Pending:
    return Pending(seq, "sos", crew, 0, 20, at)


def snapshot(
    pending: Sequence[Pending],
    *,
    used: dict[int, int] | None = None,
    budget: int = 40_000_000,
    last: float | None = T0,
    unacked: int = 0,
) -> Snapshot:
    ledger = QuotaLedger(QUOTA, {(crew, MONTH): n for crew, n in (used or {}).items()})
    return Snapshot(
        pending=tuple(pending),
        ledger=ledger,
        remaining_budget_bytes=budget,
        month=MONTH,
        month_start=MONTH_START,
        next_month_start=NEXT_MONTH,
        last_session_at=last,
        unacknowledged_batches=unacked,
    )


# --- profiles ---------------------------------------------------------------------------


def test_certus_bills_at_least_five_kilobytes_per_session() -> None:
    """A poll that carries 300 bytes on Iridium Certus is billed as 5 KB, like a full one."""
    assert IRIDIUM_CERTUS.billed_bytes(300) == 5120
    assert IRIDIUM_CERTUS.billed_bytes(5120) == 5120
    assert IRIDIUM_CERTUS.billed_bytes(5121) == 6144
    assert IRIDIUM_CERTUS.billed_bytes(0) == 0


def test_fleetbroadband_and_vsat_bill_by_increment() -> None:
    """FleetBroadband rounds up to whole kilobytes; the VSAT bills each byte."""
    assert FLEETBROADBAND.billed_bytes(1) == 1024
    assert FLEETBROADBAND.billed_bytes(2049) == 3072
    assert VSAT.billed_bytes(1234) == 1234
    assert FLEETBROADBAND.cost_usd(1_000_000) == pytest.approx(18.78)


def test_config_knows_every_built_in_profile() -> None:
    """The vessel's config accepts exactly the built-in profile names."""
    assert (
        set(link_profile_names()) == set(PROFILES) == {"iridium-certus", "fleetbroadband", "vsat"}
    )


def test_publish_timeout_grows_with_the_batch_on_a_slow_link() -> None:
    """A 20 KB batch at 2.4 kbit/s gets far more than aiomqtt's 10 s default."""
    slow = replace(IRIDIUM_CERTUS, bandwidth_bps=2400)
    assert slow.transfer_timeout_s(20_000) > 100
    assert VSAT.transfer_timeout_s(2_000) == 10.0


# --- session economics ------------------------------------------------------------------


def test_one_small_message_waits_to_fill_a_certus_session() -> None:
    """A crew member's short message does not buy a 5 KB session alone: it waits, and the
    agent wakes up when its latency target is due."""
    result = plan(snapshot([message(1, crew=1)]), IRIDIUM_CERTUS, SETTINGS, T0 + 60)
    assert not result.open_session
    assert [h.reason for h in result.held] == [HoldReason.WAITING]
    assert result.timer == T0 + SETTINGS.latency_s["message"]


def test_the_message_goes_when_its_latency_target_is_due() -> None:
    """Six hours later, the same message opens a session even though it is small."""
    now = T0 + SETTINGS.latency_s["message"]
    result = plan(snapshot([message(1, crew=1)]), IRIDIUM_CERTUS, SETTINGS, now)
    assert result.open_session
    assert result.reason is SessionReason.LATENCY_DUE
    assert result.send == (1,)
    assert result.timer == now


def test_a_full_session_goes_before_any_deadline() -> None:
    """When the waiting messages fill the 5 KB the session is billed anyway, it opens."""
    pending = [message(seq, crew=seq % 5, size=300) for seq in range(1, 30)]
    result = plan(snapshot(pending), IRIDIUM_CERTUS, SETTINGS, T0 + 120)
    assert result.open_session
    assert result.reason is SessionReason.SESSION_FULL
    assert result.estimated_link_bytes >= IRIDIUM_CERTUS.min_session_bytes


def test_vsat_sends_at_once_and_fleetbroadband_fills_a_little() -> None:
    """On a cheap VSAT a message goes at once; on FleetBroadband it waits for company."""
    pending = [message(1, crew=1)]
    assert plan(snapshot(pending), VSAT, SETTINGS, T0 + 120).open_session
    assert not plan(snapshot(pending), FLEETBROADBAND, SETTINGS, T0 + 120).open_session
    assert fill_target_bytes(FLEETBROADBAND, SETTINGS) == 4 * SETTINGS.session_overhead_bytes


def test_sessions_keep_a_minimum_gap_except_for_sos() -> None:
    """Right after a session, a due message waits out the one-minute gap; an SOS does not."""
    late = message(1, crew=1, at=T0 - 7 * 3600)
    result = plan(snapshot([late], last=T0), VSAT, SETTINGS, T0 + 10)
    assert not result.open_session
    assert result.timer == T0 + SETTINGS.min_gap_s
    result = plan(snapshot([late, sos(2)], last=T0), VSAT, SETTINGS, T0 + 10)
    assert result.open_session
    assert result.reason is SessionReason.SOS
    assert result.send == (2, 1)


def test_idle_vessel_polls_on_the_profile_schedule() -> None:
    """With nothing to send, the agent looks for replies every 12 h on Certus, no sooner."""
    result = plan(snapshot([]), IRIDIUM_CERTUS, SETTINGS, T0 + 3600)
    assert not result.open_session
    assert result.timer == T0 + IRIDIUM_CERTUS.idle_poll_s
    result = plan(snapshot([]), IRIDIUM_CERTUS, SETTINGS, result.timer)
    assert result.open_session
    assert result.reason is SessionReason.POLL
    assert plan(snapshot([], last=None), IRIDIUM_CERTUS, SETTINGS, T0).reason is SessionReason.POLL


def test_unacknowledged_batches_are_resent_after_an_hour() -> None:
    """A batch the shore never acknowledged goes again an hour after the last session."""
    result = plan(snapshot([], unacked=1), IRIDIUM_CERTUS, SETTINGS, T0 + 60)
    assert result.timer == T0 + SETTINGS.resend_after_s
    result = plan(snapshot([], unacked=1), IRIDIUM_CERTUS, SETTINGS, result.timer)
    assert result.open_session
    assert result.reason is SessionReason.RESEND


# --- the reserved lane ------------------------------------------------------------------


def test_sos_goes_at_once_even_with_no_budget_and_no_quota() -> None:
    """An SOS opens a session immediately, even when the owner's budget is spent."""
    result = plan(snapshot([sos(7)], budget=0, used={1: QUOTA}), IRIDIUM_CERTUS, SETTINGS, T0)
    assert result.open_session
    assert result.reason is SessionReason.SOS
    assert result.send == (7,)


def test_grievance_goes_when_due_even_when_budget_is_spent() -> None:
    """A grievance report waits at most its hour, and an empty budget cannot hold it."""
    pending = [grievance(3), message(4, crew=1)]
    now = T0 + SETTINGS.latency_s["grievance"]
    result = plan(snapshot(pending, budget=0), IRIDIUM_CERTUS, SETTINGS, now)
    assert result.open_session
    assert result.reason is SessionReason.GRIEVANCE_DUE
    assert result.send == (3,)
    assert [(h.message_seq, h.reason) for h in result.held] == [(4, HoldReason.BUDGET)]


# --- quota and fairness -----------------------------------------------------------------


def test_quota_exhausted_holds_with_the_balance_in_the_notice() -> None:
    """A crew member 100 bytes short of quota sees how much is left, in the notice."""
    pending = [message(1, crew=1, size=500), message(2, crew=2, size=500)]
    now = T0 + SETTINGS.latency_s["message"]
    result = plan(snapshot(pending, used={1: QUOTA - 100}), VSAT, SETTINGS, now)
    assert result.send == (2,)
    (held,) = result.held_for(HoldReason.QUOTA)
    assert (held.message_seq, held.remaining_bytes, held.needed_bytes) == (1, 100, 500)
    assert "100 bytes are left" in held.notice
    assert "not counted" in held.notice


def test_last_months_message_is_not_charged_to_this_month() -> None:
    """A message accepted on 30 September is not held by October's quota."""
    old = message(1, crew=1, size=500, at=MONTH_START - 3600)
    result = plan(snapshot([old], used={1: QUOTA}), VSAT, SETTINGS, T0 + 120)
    assert result.send == (1,)


def test_budget_is_shared_least_used_first() -> None:
    """When the budget covers only some messages, crew who sent least this month go first."""
    pending = [message(seq, crew=seq, size=1000) for seq in (1, 2, 3)]
    tight = replace(SETTINGS, session_overhead_bytes=100)
    result = plan(
        snapshot(pending, used={1: 50_000, 2: 0, 3: 10_000}, budget=100 + 1100),
        VSAT,
        tight,
        T0 + 7 * 3600,
    )
    assert result.send == (2, 3)
    assert [h.message_seq for h in result.held_for(HoldReason.BUDGET)] == [1]
    assert "budget" in result.held_for(HoldReason.BUDGET)[0].notice


def test_budget_held_messages_wake_the_agent_next_month() -> None:
    """With the budget spent and nothing else to do, the agent sleeps until the month turns
    (or until its next poll, whichever comes first)."""
    patient = replace(IRIDIUM_CERTUS, idle_poll_s=60 * 86_400.0)
    result = plan(snapshot([message(1, crew=1)], budget=0), patient, SETTINGS, T0)
    assert result.timer == NEXT_MONTH


def test_a_full_session_leaves_the_rest_for_the_next_one_at_once() -> None:
    """Messages beyond a session's size cap are held as CAPACITY; the plan says "again now"."""
    small = replace(SETTINGS, max_session_payload_bytes=1000)
    pending = [message(seq, crew=seq % 3, size=300) for seq in range(1, 10)]
    result = plan(snapshot(pending), VSAT, small, T0 + 7 * 3600)
    assert result.open_session
    assert result.held_for(HoldReason.CAPACITY)
    assert result.timer == T0 + 7 * 3600


# --- properties -------------------------------------------------------------------------

KINDS = st.sampled_from(["message", "message", "message", "grievance", "sos"])


@st.composite
def pending_messages(draw: st.DrawFn) -> list[Pending]:
    count = draw(st.integers(0, 40))
    result = []
    for seq in range(1, count + 1):
        kind = draw(KINDS)
        crew = draw(st.integers(1, 6))
        size = draw(st.integers(1, 400_000 if kind == "message" else 2000))
        at = T0 - draw(st.integers(0, 12 * 3600))
        if kind == "grievance":
            result.append(Pending(seq, kind, None, 0, size, at))
        elif kind == "sos":
            result.append(Pending(seq, kind, crew, 0, min(size, 200), at))
        else:
            result.append(Pending(seq, kind, crew, size, size, at))
    return result


snapshots = st.builds(
    snapshot,
    pending_messages(),
    used=st.dictionaries(st.integers(1, 6), st.integers(0, QUOTA)),
    budget=st.integers(0, 200_000),
    last=st.one_of(st.none(), st.floats(T0 - 86_400, T0)),
    unacked=st.integers(0, 3),
)
profiles = st.sampled_from([IRIDIUM_CERTUS, FLEETBROADBAND, VSAT])
nows = st.floats(T0, T0 + 86_400)


def sent_text_bytes(snap: Snapshot, result: Plan) -> Counter[int]:
    by_seq = {m.message_seq: m for m in snap.pending}
    sent: Counter[int] = Counter()
    for seq in result.send:
        m = by_seq[seq]
        if m.kind == "message" and m.crew is not None and m.accepted_at >= snap.month_start:
            sent[m.crew] += m.text_bytes
    return sent


@settings(max_examples=300, deadline=None)
@given(snapshots, profiles, nows)
def test_no_crew_member_ever_exceeds_their_quota(
    snap: Snapshot, profile: LinkProfile, now: float
) -> None:
    """Whatever waits on board, a session never carries a crew member past their quota."""
    result = plan(snap, profile, SETTINGS, now)
    for crew, sent in sent_text_bytes(snap, result).items():
        assert snap.ledger.used_bytes(crew, MONTH) + sent <= snap.ledger.quota_bytes


@settings(max_examples=300, deadline=None)
@given(snapshots, profiles, nows)
def test_reports_and_sos_are_never_held_by_quota_or_budget(
    snap: Snapshot, profile: LinkProfile, now: float
) -> None:
    """Grievance reports and SOS are never held for quota, budget or a full session, and any
    SOS opens a session at once."""
    result = plan(snap, profile, SETTINGS, now)
    reserved = {m.message_seq for m in snap.pending if m.kind in ("grievance", "sos")}
    for held in result.held:
        if held.message_seq in reserved:
            assert held.reason is HoldReason.WAITING
    if any(m.kind == "sos" for m in snap.pending):
        assert result.open_session
        assert reserved <= set(result.send)


@settings(max_examples=200, deadline=None)
@given(snapshots, profiles, nows)
def test_plan_is_deterministic_and_accounts_for_every_message(
    snap: Snapshot, profile: LinkProfile, now: float
) -> None:
    """The same snapshot and time give the same plan, in any input order; each pending
    message is either sent or held, once; the timer is never in the past."""
    result = plan(snap, profile, SETTINGS, now)
    shuffled = replace(snap, pending=tuple(reversed(snap.pending)))
    assert plan(shuffled, profile, SETTINGS, now) == result
    seqs = [*result.send, *(h.message_seq for h in result.held)]
    assert sorted(seqs) == sorted(m.message_seq for m in snap.pending)
    assert result.timer >= now
    if not result.open_session:
        assert result.timer > now


@settings(max_examples=200, deadline=None)
@given(
    crew_count=st.integers(2, 12),
    per_crew=st.integers(1, 30),
    size=st.integers(20, 400),
    budget=st.integers(0, 60_000),
)
def test_equal_demand_gets_shares_within_one_message(
    crew_count: int, per_crew: int, size: int, budget: int
) -> None:
    """Crew members who wrote the same number of equal messages get the same number through
    a short budget, give or take one."""
    pending = [
        message(crew * 100 + n, crew=crew, size=size)
        for crew in range(1, crew_count + 1)
        for n in range(per_crew)
    ]
    result = plan(snapshot(pending, budget=budget), VSAT, SETTINGS, T0 + 7 * 3600)
    counts = Counter(seq // 100 for seq in result.send)
    shares = [counts.get(crew, 0) for crew in range(1, crew_count + 1)]
    assert max(shares) - min(shares) <= 1
