"""Months: the one calendar-month type, and the rule for which clock a month is read on.

The rule, stated once:

- A crew member's **quota** renews at midnight on the first of the month where the vessel
  keeps its time (``[time] zone`` in the agent's configuration): quota months are read in
  the vessel's time zone.
- The **transparency log, the agent's statement and the compliance report** count UTC
  months (:data:`LOG_ZONE`): shore and vessel must put every batch in the same month
  whatever zone either keeps.

- The owner's **satellite budget** and operators' monthly link bytes count UTC months too
  (:data:`BILLING_ZONE`), like a provider's bill.

:class:`Month` never guesses a zone: every conversion takes one.

Integers of the form ``YYYYMM`` (:attr:`Month.key`) are how months are stored in tables,
log leaves and reports; :meth:`Month.from_key` reads them back.

**Weeks** (the compliance report's weekly access, issue 23) are ISO 8601 weeks, Monday
00:00 to Monday 00:00 UTC (:data:`LOG_ZONE`), stored as ``YYYYWW`` with the ISO year
(:func:`week_of`); a month's weeks are those that overlap it (:meth:`Month.weeks`), so the
first and the last may lie partly in the neighbouring months.

Pure: times come in as arguments (seconds or minutes since 1970, UTC).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["BILLING_ZONE", "LOG_ZONE", "Month", "week_bounds_s", "week_of"]

#: The zone of log, statement and report months.
LOG_ZONE = ZoneInfo("UTC")
#: The zone of budget and link-byte months.
BILLING_ZONE = LOG_ZONE

_MONTH_TEXT = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """A calendar month, written ``"2026-10"``, stored as ``202610``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError(f"month must be 1 to 12, not {self.month}")
        if not 1 <= self.year <= 9999:
            raise ValueError(f"year must be 1 to 9999, not {self.year}")

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    # --- making one -----------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Month:
        """The month written as ``YYYY-MM``; raises ``ValueError`` for anything else."""
        found = _MONTH_TEXT.fullmatch(text.strip())
        if found is None:
            raise ValueError(f"a month is written YYYY-MM (like 2026-10), not {text!r}")
        return cls(int(found.group(1)), int(found.group(2)))

    @classmethod
    def from_key(cls, key: int) -> Month:
        """The month stored as ``YYYYMM``; raises ``ValueError`` for anything else."""
        year, month = divmod(int(key), 100)
        return cls(year, month)

    @classmethod
    def of(cls, seconds: float, tz: ZoneInfo) -> Month:
        """The month, in the time zone ``tz``, of a moment in seconds since 1970 (UTC)."""
        moment = datetime.fromtimestamp(seconds, tz=UTC).astimezone(tz)
        return cls(moment.year, moment.month)

    @classmethod
    def of_minutes(cls, utc_minutes: int, tz: ZoneInfo) -> Month:
        """The month, in the time zone ``tz``, of a moment in minutes since 1970 (UTC)."""
        return cls.of(utc_minutes * 60, tz)

    # --- reading one ----------------------------------------------------------------------

    @property
    def key(self) -> int:
        """The month as the integer ``YYYYMM`` (tables, log leaves, reports)."""
        return self.year * 100 + self.month

    def next(self) -> Month:
        """The month after this one."""
        if self.month == 12:
            return Month(self.year + 1, 1)
        return Month(self.year, self.month + 1)

    def previous(self) -> Month:
        """The month before this one."""
        if self.month == 1:
            return Month(self.year - 1, 12)
        return Month(self.year, self.month - 1)

    def start_s(self, tz: ZoneInfo) -> float:
        """Seconds since 1970 (UTC) at which this month starts in the time zone ``tz``."""
        return datetime(self.year, self.month, 1, tzinfo=tz).timestamp()

    def bounds_s(self, tz: ZoneInfo) -> tuple[float, float]:
        """This month's first second and the next month's, in ``tz``, as Unix times."""
        return self.start_s(tz), self.next().start_s(tz)

    def start_utc_minutes(self, tz: ZoneInfo) -> int:
        """UTC minutes (since 1970) at which this month starts in the time zone ``tz``."""
        return math.floor(self.start_s(tz)) // 60

    def bounds_minutes(self, tz: ZoneInfo) -> tuple[int, int]:
        """This month's first minute and the next month's, in ``tz``, as UTC minutes."""
        return self.start_utc_minutes(tz), self.next().start_utc_minutes(tz)

    def days(self) -> int:
        """Number of days in this month."""
        following = self.next()
        first = datetime(self.year, self.month, 1)
        return (datetime(following.year, following.month, 1) - first).days

    def weeks(self) -> tuple[int, ...]:
        """The ISO weeks (``YYYYWW``, UTC) that overlap this month (UTC), in order."""
        start, end = self.bounds_s(LOG_ZONE)
        found: list[int] = []
        moment = start
        while moment < end:
            week = week_of(moment)
            if not found or found[-1] != week:
                found.append(week)
            moment += 86_400
        return tuple(found)


def week_of(seconds: float) -> int:
    """The ISO week (``YYYYWW``, ISO year, Monday to Sunday in UTC) of a moment in seconds
    since 1970 (UTC)."""
    year, week, _ = datetime.fromtimestamp(seconds, tz=UTC).isocalendar()
    return year * 100 + week


def week_bounds_s(week: int) -> tuple[float, float]:
    """The first second of ISO week ``YYYYWW`` (Monday 00:00 UTC) and of the next one;
    raises ``ValueError`` for a week that does not exist."""
    year, number = divmod(int(week), 100)
    monday = datetime.fromisocalendar(year, number, 1).replace(tzinfo=UTC)
    return monday.timestamp(), (monday + timedelta(days=7)).timestamp()
