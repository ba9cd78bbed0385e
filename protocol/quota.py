"""Quota arithmetic: the Thai rule's monthly text allowance, link-byte shares, the reserved lane.

Pure functions and immutable values; time comes in as UTC minutes and a time zone.

The rule (Thai Ministerial Regulation on Labour Protection in Sea Fishing Work, No. 2,
B.E. 2561): at least **1 MB of text per person per month for at least a quarter of the
crew**. "1 MB" is read strictly as 1 MiB = 1,048,576 bytes (:data:`RULE_MONTHLY_TEXT_BYTES`),
so that no reading of "MB" (10^6 or 2^20) can find a vessel short. Text is counted in
UTF-8 bytes of the normalised text (:attr:`protocol.text.NormalisedText.text_bytes`).

A month is a calendar month in the **vessel's time zone** (:mod:`protocol.months`), so that
"October" on the compliance report is the October the crew lived through.

Grievance reports and SOS travel in a :class:`ReservedLane` that sits outside every crew
quota and budget: :func:`check_owner_settings` refuses any owner setting that would
lower the crew quota below the rule or the reserved lane below its floor.

::

    LocalProtocolError
    ├── QuotaExhausted     a charge the crew member's monthly quota does not cover
    └── SettingRefused     an owner setting that would weaken the rule or the reserve
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from protocol.errors import LocalProtocolError, Reason
from protocol.months import Month

__all__ = [
    "MIN_RESERVED_DAILY_BYTES_PER_CREW",
    "RESERVED_DAILY_BYTES_PER_CREW",
    "RULE_MONTHLY_TEXT_BYTES",
    "OwnerSettings",
    "QuotaExhausted",
    "QuotaLedger",
    "ReservedLane",
    "SettingRefused",
    "attribute_link_bytes",
    "check_owner_settings",
    "crew_quota",
    "rule_met",
]

#: The rule's monthly minimum of text per crew member: 1 MiB, the stricter reading of 1 MB.
RULE_MONTHLY_TEXT_BYTES = 1_048_576
#: Default daily slot of the reserved lane (grievance reports and SOS), per crew member.
RESERVED_DAILY_BYTES_PER_CREW = 2048
#: The floor of that slot: owner settings may raise it, never put it below this.
MIN_RESERVED_DAILY_BYTES_PER_CREW = 1024


class QuotaExhausted(LocalProtocolError):
    """A crew member's monthly text quota does not cover a message (nothing is charged)."""

    reason = Reason.LIMIT_EXCEEDED

    def __init__(self, message: str, *, remaining_bytes: int, needed_bytes: int) -> None:
        super().__init__(message)
        self.remaining_bytes = remaining_bytes
        self.needed_bytes = needed_bytes


class SettingRefused(LocalProtocolError):
    """An owner setting that would put the crew quota or the reserved lane below its floor."""

    reason = Reason.NOT_ALLOWED_IN_STATE


# --- the crew quota ------------------------------------------------------------------------


def crew_quota(configured: int | None = None) -> int:
    """The monthly text quota per crew member: ``configured``, or the rule's minimum.

    Raises :class:`SettingRefused` when ``configured`` is below the rule.
    """
    if configured is None:
        return RULE_MONTHLY_TEXT_BYTES
    if configured < RULE_MONTHLY_TEXT_BYTES:
        raise SettingRefused(
            f"a crew text quota of {configured:,} bytes a month is below the Thai rule's "
            f"{RULE_MONTHLY_TEXT_BYTES:,} bytes (1 MiB) per person; raise it to at least that"
        )
    return configured


def rule_met(
    granted_bytes_per_crew: Mapping[int, int],
    crew_count: int,
    *,
    rule_bytes: int = RULE_MONTHLY_TEXT_BYTES,
) -> bool:
    """Whether at least a quarter of the crew (rounded up) was granted the rule's monthly text.

    ``granted_bytes_per_crew`` maps crew members to the text bytes they could send that
    month; crew members missing from it count as granted nothing.
    """
    if crew_count < 0:
        raise ValueError(f"crew_count must not be negative, not {crew_count}")
    if len(granted_bytes_per_crew) > crew_count:
        raise ValueError(
            f"{len(granted_bytes_per_crew)} crew members have grants, but the crew is {crew_count}"
        )
    needed = math.ceil(crew_count / 4)
    granted = sum(1 for value in granted_bytes_per_crew.values() if value >= rule_bytes)
    return granted >= needed


@dataclass(frozen=True, slots=True, eq=True)
class QuotaLedger:
    """Text bytes used per crew member per month, against one monthly quota for everyone.

    Immutable: :meth:`charge` returns a new ledger. ``quota_bytes`` is checked with
    :func:`crew_quota`, so it is never below the rule.
    """

    quota_bytes: int = RULE_MONTHLY_TEXT_BYTES
    used: Mapping[tuple[int, Month], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        crew_quota(self.quota_bytes)
        frozen = dict(self.used)
        for (crew, month), used_bytes in frozen.items():
            if used_bytes < 0:
                raise ValueError(f"crew member {crew} used {used_bytes} bytes in {month}")
        object.__setattr__(self, "used", MappingProxyType(frozen))

    __hash__ = None  # type: ignore[assignment]  # holds a mapping: not hashable

    def used_bytes(self, crew: int, month: Month) -> int:
        """Text bytes the crew member has used in ``month``."""
        return self.used.get((crew, month), 0)

    def remaining(self, crew: int, month: Month) -> int:
        """Text bytes the crew member may still send in ``month`` (never negative)."""
        return max(0, self.quota_bytes - self.used_bytes(crew, month))

    def charge(self, crew: int, month: Month, text_bytes: int) -> QuotaLedger:
        """The ledger with ``text_bytes`` charged; raises :class:`QuotaExhausted` if over."""
        if text_bytes < 0:
            raise ValueError(f"cannot charge a negative number of bytes ({text_bytes})")
        left = self.remaining(crew, month)
        if text_bytes > left:
            raise QuotaExhausted(
                f"crew member {crew} has {left:,} bytes of text left for {month} "
                f"(of {self.quota_bytes:,}); this message needs {text_bytes:,}. "
                "Grievance reports and SOS are not counted and can still be sent.",
                remaining_bytes=left,
                needed_bytes=text_bytes,
            )
        updated = dict(self.used)
        updated[(crew, month)] = self.used_bytes(crew, month) + text_bytes
        return QuotaLedger(self.quota_bytes, updated)

    def month_statement(self, month: Month) -> dict[int, int]:
        """Text bytes used per crew member in ``month``, by crew member."""
        return {crew: used for (crew, m), used in sorted(self.used.items()) if m == month}


# --- attributing a batch's link bytes ------------------------------------------------------


def attribute_link_bytes(batch_link_bytes: int, shares: Mapping[int, int]) -> dict[int, int]:
    """Split a batch's link bytes (overhead included) between its crew members.

    Each crew member's part is proportional to the text bytes they put in the batch,
    rounded by the largest-remainder method so that the parts add up exactly to
    ``batch_link_bytes``. Ties go to more text bytes first, then to the lower crew
    number, so the split is the same on every run. When nobody put any text bytes in
    (quick messages only), the bytes are split evenly.
    """
    if batch_link_bytes < 0:
        raise ValueError(f"batch_link_bytes must not be negative, not {batch_link_bytes}")
    if not shares:
        if batch_link_bytes == 0:
            return {}
        raise ValueError("a batch with link bytes needs at least one crew member to attribute")
    for crew, text_bytes in shares.items():
        if text_bytes < 0:
            raise ValueError(f"crew member {crew} has a negative share ({text_bytes})")
    weights = dict(shares) if any(shares.values()) else dict.fromkeys(shares, 1)
    total_weight = sum(weights.values())
    parts: dict[int, int] = {}
    remainders: list[tuple[int, int, int]] = []
    for crew, weight in weights.items():
        whole, remainder = divmod(batch_link_bytes * weight, total_weight)
        parts[crew] = whole
        remainders.append((-remainder, -weight, crew))
    left_over = batch_link_bytes - sum(parts.values())
    for _, _, crew in sorted(remainders)[:left_over]:
        parts[crew] += 1
    return dict(sorted(parts.items()))


# --- the reserved lane ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReservedLane:
    """Link bytes kept for grievance reports and SOS, outside every quota and budget.

    Sized from the crew count: ``daily_bytes_per_crew`` (default 2 KiB) for each crew
    member, each day. It may be raised, never set below
    :data:`MIN_RESERVED_DAILY_BYTES_PER_CREW`.
    """

    crew_count: int
    daily_bytes_per_crew: int = RESERVED_DAILY_BYTES_PER_CREW

    def __post_init__(self) -> None:
        if self.crew_count < 1:
            raise ValueError(f"a vessel has at least one crew member, not {self.crew_count}")
        if self.daily_bytes_per_crew < MIN_RESERVED_DAILY_BYTES_PER_CREW:
            raise SettingRefused(
                f"the reserved lane for grievance reports and SOS cannot be set to "
                f"{self.daily_bytes_per_crew:,} bytes per crew member per day; its floor is "
                f"{MIN_RESERVED_DAILY_BYTES_PER_CREW:,}"
            )

    @property
    def daily_link_bytes(self) -> int:
        """Link bytes reserved per day for the whole crew."""
        return self.crew_count * self.daily_bytes_per_crew

    def link_bytes_for(self, month: Month) -> int:
        """Link bytes reserved for the whole of ``month``."""
        return self.daily_link_bytes * month.days()


@dataclass(frozen=True, slots=True)
class OwnerSettings:
    """What an owner may set that touches quotas; ``None`` means "the default"."""

    crew_text_bytes: int | None = None
    reserved_daily_bytes_per_crew: int | None = None
    #: A cap on the reserved lane in link bytes per day (refused if under what it needs).
    reserved_daily_cap_bytes: int | None = None


def check_owner_settings(
    settings: OwnerSettings,
    crew_count: int,
    *,
    daily_bytes_per_crew: int = RESERVED_DAILY_BYTES_PER_CREW,
) -> ReservedLane:
    """The reserved lane once the owner's settings are applied.

    ``daily_bytes_per_crew`` is the lane's slot as the relay sets it (never below its
    floor). The owner may raise it, never lower it. Raises :class:`SettingRefused` for a
    setting that would lower the crew quota below the rule, or the reserved lane below
    what ``daily_bytes_per_crew`` gives for ``crew_count`` crew members.
    """
    crew_quota(settings.crew_text_bytes)
    lane = ReservedLane(crew_count, daily_bytes_per_crew)
    owner_daily = settings.reserved_daily_bytes_per_crew
    if owner_daily is not None:
        if owner_daily < lane.daily_bytes_per_crew:
            raise SettingRefused(
                f"the owner cannot lower the reserved lane for grievance reports and SOS "
                f"to {owner_daily:,} bytes per crew member per day: it is "
                f"{lane.daily_bytes_per_crew:,} and may only be raised"
            )
        lane = ReservedLane(crew_count, owner_daily)
    cap = settings.reserved_daily_cap_bytes
    if cap is not None and cap < lane.daily_link_bytes:
        raise SettingRefused(
            f"a cap of {cap:,} bytes a day on grievance reports and SOS is under the "
            f"{lane.daily_link_bytes:,} bytes reserved for {crew_count} crew members; "
            "the reserved lane cannot be capped below that"
        )
    return lane
