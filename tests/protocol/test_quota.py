"""Quota arithmetic: the Thai rule's monthly text, fair link-byte shares, the reserved lane."""

from __future__ import annotations

from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError
from protocol.months import Month
from protocol.quota import (
    MIN_RESERVED_DAILY_BYTES_PER_CREW,
    RESERVED_DAILY_BYTES_PER_CREW,
    RULE_MONTHLY_TEXT_BYTES,
    OwnerSettings,
    QuotaExhausted,
    QuotaLedger,
    ReservedLane,
    SettingRefused,
    attribute_link_bytes,
    check_owner_settings,
    crew_quota,
    rule_met,
)

BANGKOK = ZoneInfo("Asia/Bangkok")
TAIPEI = ZoneInfo("Asia/Taipei")
UTC_ZONE = ZoneInfo("UTC")
OCTOBER = Month(2026, 10)


def utc_minutes(year: int, month: int, day: int, hour: int, minute: int) -> int:
    from datetime import UTC, datetime

    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) // 60


# --- the rule ----------------------------------------------------------------------------------


def test_rule_is_read_as_one_mebibyte() -> None:
    """The Thai rule's "1 MB" is read strictly: 1,048,576 bytes, so that no inspector's
    reading of MB can find the vessel short."""
    assert RULE_MONTHLY_TEXT_BYTES == 1_048_576


def test_crew_quota_never_below_the_rule() -> None:
    """An owner who configures 1,000,000 bytes (decimal MB) is told to raise it; the
    default is the rule itself, and more is always allowed."""
    assert crew_quota() == RULE_MONTHLY_TEXT_BYTES
    assert crew_quota(2_000_000) == 2_000_000
    with pytest.raises(SettingRefused, match="below the Thai rule") as caught:
        crew_quota(1_000_000)
    assert isinstance(caught.value, LocalProtocolError)


@pytest.mark.parametrize(
    ("crew_count", "needed"), [(0, 0), (1, 1), (4, 1), (5, 2), (10, 3), (24, 6), (25, 7)]
)
def test_rule_met_needs_a_quarter_of_the_crew_rounded_up(crew_count: int, needed: int) -> None:
    """A compliance report says the rule is met only when at least a quarter of the crew
    (rounded up) could send 1 MiB of text that month."""
    full = dict.fromkeys(range(needed), RULE_MONTHLY_TEXT_BYTES)
    assert rule_met(full, crew_count)
    if needed:
        short = dict(full)
        short[0] = RULE_MONTHLY_TEXT_BYTES - 1
        assert not rule_met(short, crew_count)
        assert not rule_met(dict.fromkeys(range(needed - 1), 10**9), crew_count)


def test_rule_met_refuses_more_grants_than_crew() -> None:
    """A report listing more crew members than the vessel has is a bug, said loudly."""
    with pytest.raises(ValueError, match="crew is 1"):
        rule_met({1: RULE_MONTHLY_TEXT_BYTES, 2: RULE_MONTHLY_TEXT_BYTES}, 1)
    with pytest.raises(ValueError, match="negative"):
        rule_met({}, -1)


def test_decimal_megabyte_does_not_meet_the_rule() -> None:
    """Granting everyone 1,000,000 bytes does not count as meeting the 1 MiB rule."""
    assert not rule_met(dict.fromkeys(range(8), 1_000_000), 8)


# --- the ledger ----------------------------------------------------------------------------------


def test_ledger_charges_until_the_quota_and_says_what_is_left() -> None:
    """A crew member can send up to exactly their monthly quota; the message that would
    go over is refused with their remaining balance and what it needed."""
    ledger = QuotaLedger()
    ledger = ledger.charge(7, OCTOBER, RULE_MONTHLY_TEXT_BYTES - 100)
    assert ledger.remaining(7, OCTOBER) == 100
    with pytest.raises(QuotaExhausted, match="has 100 bytes of text left for 2026-10") as caught:
        ledger.charge(7, OCTOBER, 101)
    assert caught.value.remaining_bytes == 100
    assert caught.value.needed_bytes == 101
    assert "Grievance reports and SOS are not counted" in str(caught.value)
    ledger = ledger.charge(7, OCTOBER, 100)
    assert ledger.remaining(7, OCTOBER) == 0


def test_ledger_is_per_crew_member_and_per_month() -> None:
    """One crew member's use does not touch another's, and a new month starts afresh."""
    ledger = QuotaLedger().charge(1, OCTOBER, 5000).charge(2, OCTOBER, 70)
    assert ledger.used_bytes(1, OCTOBER) == 5000
    assert ledger.remaining(2, OCTOBER) == RULE_MONTHLY_TEXT_BYTES - 70
    assert ledger.remaining(1, OCTOBER.next()) == RULE_MONTHLY_TEXT_BYTES
    assert ledger.month_statement(OCTOBER) == {1: 5000, 2: 70}
    assert ledger.month_statement(OCTOBER.next()) == {}


def test_ledger_is_immutable() -> None:
    """Charging returns a new ledger: a refused or abandoned charge changes nothing."""
    empty = QuotaLedger()
    charged = empty.charge(1, OCTOBER, 10)
    assert empty.used_bytes(1, OCTOBER) == 0
    assert charged != empty
    assert charged == QuotaLedger(used={(1, OCTOBER): 10})
    with pytest.raises(TypeError):
        charged.used[(1, OCTOBER)] = 0  # type: ignore[index]


def test_ledger_quota_never_below_the_rule() -> None:
    """A ledger cannot even be built with a quota under the rule."""
    with pytest.raises(SettingRefused):
        QuotaLedger(quota_bytes=RULE_MONTHLY_TEXT_BYTES - 1)
    assert QuotaLedger(quota_bytes=3_000_000).remaining(1, OCTOBER) == 3_000_000


def test_ledger_refuses_nonsense() -> None:
    """Negative charges and negative stored use are bugs, refused loudly."""
    with pytest.raises(ValueError, match="negative"):
        QuotaLedger().charge(1, OCTOBER, -1)
    with pytest.raises(ValueError, match="used -5 bytes"):
        QuotaLedger(used={(1, OCTOBER): -5})


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 600_000)), max_size=20))
def test_ledger_never_lets_anyone_over_their_quota(charges: list[tuple[int, int]]) -> None:
    """Whatever the order of messages, nobody's use goes over the quota, and every refused
    message is refused because it would have."""
    ledger = QuotaLedger()
    for crew, text_bytes in charges:
        before = ledger.used_bytes(crew, OCTOBER)
        try:
            ledger = ledger.charge(crew, OCTOBER, text_bytes)
        except QuotaExhausted:
            assert before + text_bytes > RULE_MONTHLY_TEXT_BYTES
        assert ledger.used_bytes(crew, OCTOBER) <= RULE_MONTHLY_TEXT_BYTES


# --- link-byte attribution -----------------------------------------------------------------------

SHARES = st.dictionaries(st.integers(0, 50), st.integers(0, 5000), min_size=1, max_size=12)


@given(st.integers(0, 100_000), SHARES)
def test_link_bytes_are_split_exactly_and_fairly(link_bytes: int, shares: dict[int, int]) -> None:
    """A batch's satellite bytes, headers included, are shared by text size: the parts add
    up to the batch exactly and nobody pays a whole byte more than their fair share."""
    parts = attribute_link_bytes(link_bytes, shares)
    assert sum(parts.values()) == link_bytes
    assert set(parts) == set(shares)
    weights = shares if any(shares.values()) else dict.fromkeys(shares, 1)
    total = sum(weights.values())
    for crew, part in parts.items():
        fair = Fraction(link_bytes * weights[crew], total)
        assert fair - 1 < part < fair + 1


@given(st.integers(0, 100_000), SHARES, st.randoms(use_true_random=False))
def test_link_bytes_split_does_not_depend_on_order(
    link_bytes: int, shares: dict[int, int], rng: object
) -> None:
    """The vessel and the shore compute the same split whatever order they list crew in."""
    import random

    assert isinstance(rng, random.Random)
    items = list(shares.items())
    rng.shuffle(items)
    assert attribute_link_bytes(link_bytes, dict(items)) == attribute_link_bytes(link_bytes, shares)


def test_link_bytes_ties_go_to_more_text_then_lower_crew_number() -> None:
    """Equal shares split a leftover byte to the lower crew number, deterministically."""
    assert attribute_link_bytes(10, {3: 1, 1: 1, 2: 1}) == {1: 4, 2: 3, 3: 3}
    assert attribute_link_bytes(5, {1: 1, 2: 1}) == {1: 3, 2: 2}
    assert attribute_link_bytes(1000, {1: 300, 2: 700}) == {1: 300, 2: 700}


def test_quick_messages_only_split_the_batch_evenly() -> None:
    """A batch of quick messages (no text bytes) is shared evenly among their senders."""
    assert attribute_link_bytes(7, {4: 0, 9: 0}) == {4: 4, 9: 3}


def test_link_bytes_without_crew_are_refused() -> None:
    """Overhead with nobody to charge it to is a bug in the caller, said loudly."""
    assert attribute_link_bytes(0, {}) == {}
    with pytest.raises(ValueError, match="at least one crew member"):
        attribute_link_bytes(10, {})
    with pytest.raises(ValueError, match="negative"):
        attribute_link_bytes(-1, {1: 1})
    with pytest.raises(ValueError, match="negative share"):
        attribute_link_bytes(10, {1: -1})


# --- the reserved lane ----------------------------------------------------------------------------


def test_reserved_lane_grows_with_the_crew() -> None:
    """Twenty crew members get 2 KiB each per day for grievance reports and SOS."""
    lane = ReservedLane(20)
    assert lane.daily_bytes_per_crew == RESERVED_DAILY_BYTES_PER_CREW == 2048
    assert lane.daily_link_bytes == 20 * 2048
    assert lane.link_bytes_for(OCTOBER) == 31 * 20 * 2048


def test_reserved_lane_has_a_floor() -> None:
    """The relay cannot configure the grievance lane below its floor."""
    assert ReservedLane(3, MIN_RESERVED_DAILY_BYTES_PER_CREW).daily_link_bytes == 3 * 1024
    with pytest.raises(SettingRefused, match="floor"):
        ReservedLane(3, MIN_RESERVED_DAILY_BYTES_PER_CREW - 1)
    with pytest.raises(ValueError, match="at least one crew member"):
        ReservedLane(0)


def test_owner_cannot_lower_the_reserved_lane() -> None:
    """An owner who tries to shrink the grievance and SOS lane is refused; raising it is fine."""
    with pytest.raises(SettingRefused, match="may only be raised"):
        check_owner_settings(OwnerSettings(reserved_daily_bytes_per_crew=1500), 10)
    lane = check_owner_settings(OwnerSettings(reserved_daily_bytes_per_crew=4096), 10)
    assert lane.daily_link_bytes == 40_960
    assert check_owner_settings(OwnerSettings(), 10) == ReservedLane(10)


def test_owner_cannot_cap_the_reserved_lane() -> None:
    """A daily cap on grievance traffic below what the crew is owed is refused."""
    with pytest.raises(SettingRefused, match="cannot be capped"):
        check_owner_settings(OwnerSettings(reserved_daily_cap_bytes=10_000), 10)
    assert check_owner_settings(OwnerSettings(reserved_daily_cap_bytes=20_480), 10)


def test_owner_cannot_set_crew_quota_below_the_rule() -> None:
    """An owner's crew quota under 1 MiB is refused before anything else is applied."""
    with pytest.raises(SettingRefused, match="below the Thai rule"):
        check_owner_settings(OwnerSettings(crew_text_bytes=500_000), 10)


def test_a_higher_relay_slot_is_the_owners_floor() -> None:
    """When the relay reserves 3 KiB per crew member, the owner cannot go back to 2 KiB."""
    with pytest.raises(SettingRefused, match="may only be raised"):
        check_owner_settings(
            OwnerSettings(reserved_daily_bytes_per_crew=2048), 5, daily_bytes_per_crew=3072
        )
