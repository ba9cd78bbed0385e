"""Grievance slots: the daily fixed-size slots that carry reports off the vessel unseen.

Every crew member has, per union and per day (``[quota] slot_period_s``), one slot of
``slot_bytes``: a sealed row that leaves when its day is over, whatever it holds. Slots
are made ahead (today's and tomorrow's) as cover, sealed to a throwaway key; a report
goes into the reporter's earliest slot still on board, overwriting the cover in place
(same size). So at any moment every crew member has the same rows, whatever they filed,
and nobody reading the disk or the traffic can tell a report from cover
(:mod:`protocol.slots`).

:class:`DailySlots` is the one place that knows this: intake asks it to file a sealed
report (:meth:`DailySlots.file`) and the outbox asks it to make the day's slots before it
lists what is pending (:meth:`DailySlots.ensure`). The slot rows themselves are outbox
rows of kind ``grievance`` released at the end of their day; :class:`SlotRows` is what
this module needs of the outbox. A per-vessel lane (:mod:`shipboard.lane_plan`) is to
replace the daily slots: it replaces this module and those rows, and nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import nacl.public

from protocol.slots import (
    SlotHeader,
    SlotKind,
    day_of,
    payload_capacity,
    period_of,
    seal_slot,
    slot_header,
)
from shipboard.crew import CrewMember
from shipboard.states import MessageState

__all__ = ["CrewNumbers", "DailySlots", "SlotPolicy", "SlotRows", "SlotUnion"]

logger = logging.getLogger(__name__)


class SlotRows(Protocol):
    """The outbox's grievance rows released later (:class:`shipboard.outbox.Outbox`)."""

    def slot_releases(self, since: float) -> Sequence[tuple[int, str, int, bytes, float]]:
        """Rows released from ``since`` on, oldest first: (seq, state, union, sealed, at)."""
        ...

    def accept_slots(self, slots: Sequence[tuple[int, bytes, float]]) -> Sequence[int]:
        """Commit cover rows ``(union, sealed, release_at)`` in one transaction."""
        ...

    def fill_slot(self, seq: int, sealed: bytes, case_key: bytes) -> bool:
        """Overwrite the cover in row ``seq`` with a report; False if it left meanwhile."""
        ...


class CrewNumbers(Protocol):
    """The crew register, as the slots ask it: who is on board."""

    def members(self, *, include_signed_off: bool = False) -> list[CrewMember]:
        """Crew members on board, by number."""
        ...


class SlotUnion(Protocol):
    """A union that receives reports (``shipboard.config.UnionConfig``)."""

    @property
    def union_id(self) -> int: ...
    @property
    def public_key(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SlotPolicy:
    """How big a slot is and how long its day (``[quota]`` in the vessel's config)."""

    slot_bytes: int
    period_s: int
    unions: tuple[SlotUnion, ...]


class DailySlots:
    """The daily slots of one vessel (see the module docstring). Thread-safe: the link's
    thread and intake's both make slots."""

    def __init__(self, rows: SlotRows, crew: CrewNumbers, policy: SlotPolicy) -> None:
        self.rows = rows
        self.crew = crew
        self.policy = policy
        self._lock = threading.Lock()

    def ensure(self, now: float) -> int:
        """Make the cover slots of today and tomorrow that do not exist yet (one per crew
        member per union per day, each sealed to a throwaway key); how many were made."""
        with self._lock:
            return self._ensure(now)

    def _ensure(self, now: float) -> int:
        period_s = self.policy.period_s
        current = period_of(now, period_s)
        have: set[tuple[int, float, int]] = set()
        for _, _, union_id, sealed, release in self.rows.slot_releases(current * period_s):
            header = slot_header(sealed)
            if header is not None:
                have.add((header.crew, release, union_id))
        size = self.policy.slot_bytes
        made: list[tuple[int, bytes, float]] = []
        for member in self.crew.members():
            for period in (current, current + 1):
                release = float((period + 1) * period_s)
                day = day_of(period * period_s)
                for union in self.policy.unions:
                    if (member.crew, release, union.union_id) in have:
                        continue
                    throwaway = bytes(nacl.public.PrivateKey.generate().public_key)
                    cover = seal_slot(
                        SlotHeader(member.crew, day), SlotKind.COVER, b"", throwaway, size
                    )
                    made.append((union.union_id, cover, release))
        if made:
            self.rows.accept_slots(made)
            logger.info("daily slots: %d cover slots made", len(made))
        return len(made)

    def file(
        self, crew: int, union: SlotUnion, sealed: bytes, case_key: bytes, now: float
    ) -> int | None:
        """Put a sealed report into the crew member's earliest slot still on board; its
        message number, or None if it does not fit a slot (then it goes on its own)."""
        size = self.policy.slot_bytes
        period_s = self.policy.period_s
        if len(sealed) > payload_capacity(size):
            logger.warning("a grievance report is too long for a slot; it goes on its own")
            return None
        for _ in range(3):  # the link may take a slot away between reading and filling
            self.ensure(now)
            mine = []
            since = period_of(now, period_s) * period_s
            for seq, state, union_id, old, release in self.rows.slot_releases(since):
                header = slot_header(old)
                if (
                    state == MessageState.ACCEPTED
                    and union_id == union.union_id
                    and header is not None
                    and header.crew == crew
                    and len(old) == size
                ):
                    mine.append((release, seq, header.day))
            for _, seq, day in sorted(mine):
                filled = seal_slot(
                    SlotHeader(crew, day), SlotKind.GRIEVANCE, sealed, union.public_key, size
                )
                if self.rows.fill_slot(seq, filled, case_key):
                    return seq
            now += period_s  # every slot on board is taken: use the next period's
        return None
