"""Months: one type, every conversion given its zone (the rule in protocol.months)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.months import BILLING_ZONE, LOG_ZONE, Month

BANGKOK = ZoneInfo("Asia/Bangkok")
TAIPEI = ZoneInfo("Asia/Taipei")
UTC_ZONE = ZoneInfo("UTC")
OCTOBER = Month(2026, 10)


def utc_minutes(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) // 60


# --- months in the vessel's time zone ------------------------------------------------------------


def test_month_boundary_is_in_the_vessels_time_zone() -> None:
    """A message sent at 00:30 on 1 October in Bangkok counts for October, even though it
    is still 30 September in UTC."""
    assert Month.of_minutes(utc_minutes(2026, 9, 30, 17, 30), BANGKOK) == OCTOBER
    assert Month.of_minutes(utc_minutes(2026, 9, 30, 16, 59), BANGKOK) == Month(2026, 9)
    assert Month.of_minutes(utc_minutes(2026, 9, 30, 17, 30), UTC_ZONE) == Month(2026, 9)


def test_year_turns_in_the_vessels_time_zone() -> None:
    """New Year's Eve in Taipei starts January's quota at local midnight."""
    assert Month.of_minutes(utc_minutes(2026, 12, 31, 16, 0), TAIPEI) == Month(2027, 1)
    assert Month.of_minutes(utc_minutes(2026, 12, 31, 15, 59), TAIPEI) == Month(2026, 12)


@given(st.integers(min_value=0, max_value=200 * 365 * 24 * 60))
def test_month_start_and_month_of_agree(minutes: int) -> None:
    """Every moment falls in the month whose start is at or before it and whose
    successor starts after it, in any vessel time zone."""
    for tz in (BANGKOK, TAIPEI, UTC_ZONE, ZoneInfo("America/Los_Angeles")):
        month = Month.of_minutes(minutes, tz)
        assert month.start_utc_minutes(tz) <= minutes < month.next().start_utc_minutes(tz)


def test_month_text_round_trips() -> None:
    """Months are written 2026-10 on reports and read back the same."""
    assert str(OCTOBER) == "2026-10"
    assert Month.parse("2026-10") == OCTOBER
    assert Month.parse(str(Month(987, 1))) == Month(987, 1)
    assert Month(2026, 12).next() == Month(2027, 1)
    assert Month(2026, 1) < Month(2026, 2) < Month(2027, 1)
    assert Month(2028, 2).days() == 29
    assert Month(2026, 2).days() == 28


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-10", "2026/10", "October", ""])
def test_bad_month_text_is_refused(text: str) -> None:
    """A month that is not YYYY-MM (or not a month at all) is refused with the format."""
    with pytest.raises(ValueError, match="month"):
        Month.parse(text)


def test_keys_and_bounds() -> None:
    """Months are stored as YYYYMM; bounds in a zone are that zone's midnights."""
    assert OCTOBER.key == 202610
    assert Month.from_key(202610) == OCTOBER
    assert Month(2027, 1).previous() == Month(2026, 12)
    start, end = OCTOBER.bounds_s(BANGKOK)
    assert datetime.fromtimestamp(start, BANGKOK) == datetime(2026, 10, 1, tzinfo=BANGKOK)
    assert datetime.fromtimestamp(end, BANGKOK) == datetime(2026, 11, 1, tzinfo=BANGKOK)
    assert OCTOBER.bounds_minutes(LOG_ZONE) == (
        utc_minutes(2026, 10, 1, 0, 0),
        utc_minutes(2026, 11, 1, 0, 0),
    )
    assert Month.of(start, BANGKOK) == OCTOBER
    assert Month.of(start, LOG_ZONE) == Month(2026, 9)  # still September in UTC
    assert BILLING_ZONE == LOG_ZONE == UTC_ZONE
    for bad in (202613, 202600, 0, 99999913):
        with pytest.raises(ValueError, match=r"month|year"):
            Month.from_key(bad)
