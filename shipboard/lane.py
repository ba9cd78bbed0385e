"""Lane: the vessel's grievance lane on board: the reservoir and the one planner that owns it.

Every lane period (``[grievances] slot_period_s``, :class:`protocol.lane.LaneShape`) the
vessel sends exactly ``blocks_per_period`` sealed blocks of exactly ``block_bytes``,
whatever happens: fragments of reports, sealed to their union, or cover, sealed to a key
nobody keeps. The blocks wait in the **reservoir** (:class:`Reservoir`, a repository of
the vessel database: table ``lane_reservoir``, rows of a random id, an order key and a
block, and ``lane_state``: the release credit and the last period released). Which rows
hold a report is known only to this process's :class:`~shipboard.lane_plan.LanePlanner`
(memory only, lost at every restart), and nothing on disk names a crew member, a union or
a report.

:class:`VesselLane` is the one owner of the planner in an agent process (thread-safe:
intake and the link call it from worker threads). It does three things, each one
transaction of the database that it then tells the planner about:

* **start** (:meth:`VesselLane.start`): the planner's start plan (rows renumbered, fresh
  cover rows made), the first time with the current period as the first to release;
* **file** (:meth:`VesselLane.file`): a sealed report is cut into fragments
  (:func:`protocol.lane.fragment_report`), each sealed to the union
  (:func:`protocol.lane.seal_up_block`), and written over free cover rows **in place**
  (same size), with the caller's own change (the reporter's casebook) in the same
  transaction, so the report is committed before the crew member is told "filed";
  :class:`~shipboard.lane_plan.LaneFull` or :class:`~shipboard.lane_plan.ReportTooLong`
  when it cannot be taken (nothing is written then);
* **release** (:meth:`VesselLane.release_due`): at each period boundary (the link loop
  calls it with its clock; periods missed while the agent was off are released at once,
  in order) the planner's oldest rows leave the reservoir and become outbox items of kind
  ``lane`` (period, index, block), fresh cover replacing them.

Each is one transaction of the database, after which the WAL is emptied (as after every
commit, :mod:`shipboard.database`), so the files at any moment hold no older copy of a row
that changed, and nothing says a lane write was the last.

Which of this run's reports have left, and whether the shore has acknowledged them, is
kept in memory for the reporter's case page (:meth:`VesselLane.progress`); after a
restart it is unknown.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import nacl.public

from protocol.errors import LimitExceeded
from protocol.lane import (
    SECONDS_PER_DAY,
    Fragment,
    LaneShape,
    cover_up_block,
    fragment_report,
    seal_up_block,
)
from shipboard.database import OnDatabase, Transaction, VesselDatabase
from shipboard.lane_plan import (
    LanePlanMisuse,
    LanePlanner,
    NewRow,
    ReportTooLong,
    ReservoirParams,
    RowStatus,
)
from shipboard.states import MessageState

__all__ = [
    "MAX_CATCH_UP_DAYS",
    "FiledInLane",
    "LaneItem",
    "LaneOnDemand",
    "LaneOutbox",
    "LaneProgress",
    "Reservoir",
    "VesselLane",
    "cover_block",
]

logger = logging.getLogger(__name__)

#: Missed periods released at once after the agent was off (or its clock jumped) go back
#: at most this many days; older ones are skipped (their rows leave with the next ones:
#: nothing is lost, the lane only did not run while the agent did not).
MAX_CATCH_UP_DAYS = 90
#: Bytes of a reservoir row id (random).
ROW_ID_BYTES = 16
_CREDIT = "credit_halves"
_RELEASED = "released_through"


def cover_block(block_bytes: int) -> bytes:
    """A cover block: sealed to a fresh key whose private half is dropped at once."""
    throwaway = nacl.public.PrivateKey.generate()
    return cover_up_block(bytes(throwaway.public_key), block_bytes)


def _new_row_id() -> bytes:
    return os.urandom(ROW_ID_BYTES)


@dataclass(frozen=True, slots=True)
class LaneItem:
    """One released block as the outbox keeps it, and the wire's ``LaneBlock`` carries it."""

    period: int
    index: int
    block: bytes


class LaneOutbox(Protocol):
    """The outbox, as the release writes to it (:class:`shipboard.outbox.Outbox`)."""

    def add_lane_items(self, tx: Transaction, items: Sequence[LaneItem], at: float) -> list[int]:
        """Queue released blocks (inside the release's transaction); their numbers."""
        ...

    def message_stages(self, seq: int) -> dict[str, object] | None:
        """One outbox item's state (for :meth:`VesselLane.progress`)."""
        ...


class Reservoir:
    """The lane's tables (migration set ``lane``): rows waiting for their period, and the
    lane's two numbers. Its writes take the caller's transaction (only
    :class:`VesselLane` calls them)."""

    def __init__(self, on: OnDatabase) -> None:
        self.database = on.database

    @staticmethod
    def rows(tx: Transaction) -> list[tuple[bytes, int]]:
        """Every row as (row id, order key)."""
        return [
            (bytes(row_id), int(key))
            for row_id, key in tx.execute("SELECT row_id, order_key FROM lane_reservoir")
        ]

    @staticmethod
    def state(tx: Transaction, key: str) -> int | None:
        row = tx.execute("SELECT value FROM lane_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def set_state(tx: Transaction, key: str, value: int) -> None:
        tx.execute(
            "INSERT INTO lane_state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @staticmethod
    def insert(tx: Transaction, row: NewRow, block: bytes) -> None:
        tx.execute(
            "INSERT INTO lane_reservoir (row_id, order_key, block) VALUES (?, ?, ?)",
            (row.row_id, row.order_key, block),
        )

    @staticmethod
    def rekey(tx: Transaction, row_id: bytes, order_key: int) -> None:
        tx.execute("UPDATE lane_reservoir SET order_key = ? WHERE row_id = ?", (order_key, row_id))

    @staticmethod
    def blocks(tx: Transaction, row_ids: Sequence[bytes]) -> list[bytes]:
        """The blocks of these rows, in this order."""
        found: list[bytes] = []
        for row_id in row_ids:
            row = tx.execute(
                "SELECT block FROM lane_reservoir WHERE row_id = ?", (row_id,)
            ).fetchone()
            if row is None:
                raise LanePlanMisuse(f"the reservoir has no row {row_id.hex()}")
            found.append(bytes(row[0]))
        return found

    @staticmethod
    def overwrite(tx: Transaction, row_id: bytes, block: bytes) -> None:
        """Write ``block`` over the row's block, in place (the same size)."""
        changed = tx.execute(
            "UPDATE lane_reservoir SET block = ? WHERE row_id = ? AND LENGTH(block) = ?",
            (block, row_id, len(block)),
        ).rowcount
        if changed != 1:
            raise LanePlanMisuse(f"reservoir row {row_id.hex()} is gone or of another size")

    @staticmethod
    def delete(tx: Transaction, row_id: bytes) -> None:
        tx.execute("DELETE FROM lane_reservoir WHERE row_id = ?", (row_id,))

    def snapshot(self) -> list[tuple[bytes, int, bytes]]:
        """Every row (row id, order key, block), oldest first: what anyone reading the
        disk sees (tests compare it with and without reports)."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT row_id, order_key, block FROM lane_reservoir ORDER BY order_key"
            ).fetchall()
        return [(bytes(a), int(b), bytes(c)) for a, b, c in rows]


class LaneProgress(enum.Enum):
    """How far a report filed in this run has got (the reporter's case page)."""

    QUEUED = "queued"  # fragments wait in the reservoir
    RELEASED = "released"  # every fragment is in the outbox, waiting for a session
    SENT = "sent"  # every fragment went up in a batch
    ACKNOWLEDGED = "acknowledged"  # the relay committed every batch that carried one


@dataclass(frozen=True, slots=True)
class FiledInLane:
    """A report committed in the reservoir.

    ``released_by`` (seconds since 1970): when its last block is expected to leave the
    reservoir for the outbox, the end of the period that releases it, counted at filing
    as if it had the lane to itself (:meth:`~shipboard.lane_plan.LanePlanner.
    releases_until_left`: rows left from before a restart go first; other crew members'
    reports are not counted, so that the reporter learns nothing of them)."""

    report_id: bytes
    fragments: int
    released_by: float


class VesselLane:
    """The grievance lane of one agent process (see the module docstring)."""

    def __init__(
        self,
        database: VesselDatabase,
        outbox: LaneOutbox,
        shape: LaneShape,
        planner: LanePlanner,
        released_through: int,
    ) -> None:
        self.database = database
        self.outbox = outbox
        self.shape = shape
        self._planner = planner
        self._released_through = released_through
        self._lock = threading.RLock()
        #: report number -> report id, for this run's reports
        self._numbers: dict[int, bytes] = {}
        #: report id -> the outbox items its fragments left in
        self._carried: dict[bytes, list[int]] = {}

    # --- start ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        outbox: LaneOutbox,
        shape: LaneShape,
        now: float,
        *,
        on: OnDatabase | None = None,
        params: ReservoirParams | None = None,
    ) -> VesselLane:
        """The lane of this database in this process: started now if it is not yet
        (:meth:`start`), else the one already running (one planner per database: two
        would each think the other's rows free)."""
        database = (on if on is not None else _database_of(outbox)).database
        running = database.one_of(
            "grievance lane",
            VesselLane,
            lambda: cls.start(database, outbox, shape, now, params=params),
        )
        if running.shape != shape:
            raise LanePlanMisuse(
                f"the lane of {database.path} runs with {running.shape}; it cannot also run "
                f"with {shape}"
            )
        return running

    @classmethod
    def start(
        cls,
        on: OnDatabase,
        outbox: LaneOutbox,
        shape: LaneShape,
        now: float,
        *,
        params: ReservoirParams | None = None,
    ) -> VesselLane:
        """Start the lane from the disk: every row there becomes unknown, fresh cover rows
        are made as the planner says (the first time: the whole reservoir), in one
        transaction. Use :meth:`open` in the agent (one lane per database)."""
        database = on.database
        params = params or ReservoirParams.for_lane(shape)
        with database.transaction("start the grievance lane") as tx:
            planner, plan = LanePlanner.start(
                Reservoir.rows(tx),
                params,
                credit_halves=Reservoir.state(tx, _CREDIT),
                new_row_id=_new_row_id,
            )
            for row_id, key in plan.rekey:
                Reservoir.rekey(tx, row_id, key)
            for row in plan.fresh:
                Reservoir.insert(tx, row, cover_block(shape.block_bytes))
            Reservoir.set_state(tx, _CREDIT, plan.credit_halves)
            released = Reservoir.state(tx, _RELEASED)
            if released is None:  # the first start: the current period is the first
                released = shape.period_of(now) - 1
                Reservoir.set_state(tx, _RELEASED, released)
        logger.info(
            "grievance lane started: %d rows (%d fresh), %d-byte blocks every %d s",
            planner.row_count,
            len(plan.fresh),
            shape.block_bytes,
            shape.period_s,
        )
        return cls(database, outbox, shape, planner, released)

    # --- what it knows -------------------------------------------------------------------

    @property
    def released_through(self) -> int:
        """The last period whose blocks left the reservoir."""
        return self._released_through

    def next_release_at(self) -> float:
        """When the next period ends (seconds since 1970): the next release is due."""
        return float(self.shape.period_start(self._released_through + 2))

    def row_count(self) -> int:
        with self._lock:
            return self._planner.row_count

    def most_report_bytes(self) -> int:
        """The longest sealed report this lane ever carries (its pool of rows, full)."""
        return self._planner.params.pool_rows * self.shape.up_payload_bytes

    def free_rows(self) -> int:
        """Rows this run may write a report over now."""
        with self._lock:
            return self._planner.count(RowStatus.FREE)

    def progress(self, report_number: int) -> LaneProgress | None:
        """How far a report filed in this run has got; None if it was not filed in this
        run (after a restart nobody on board knows)."""
        with self._lock:
            report_id = self._numbers.get(report_number)
            if report_id is None:
                return None
            if self._planner.pending(report_id):
                return LaneProgress.QUEUED
            carried = list(self._carried.get(report_id, ()))
        states = []
        for seq in carried:
            stages = self.outbox.message_stages(seq)
            states.append(MessageState(str(stages["state"])) if stages else MessageState.FAILED)
        if all(s in (MessageState.ACKNOWLEDGED, MessageState.DELIVERED) for s in states):
            return LaneProgress.ACKNOWLEDGED
        if all(s is not MessageState.ACCEPTED and s is not MessageState.BATCHED for s in states):
            return LaneProgress.SENT
        return LaneProgress.RELEASED

    # --- filing --------------------------------------------------------------------------

    def file(
        self,
        sealed_report: bytes,
        union_public_key: bytes,
        *,
        report_number: int,
        now: float,
        also: Callable[[Transaction], None] | None = None,
    ) -> FiledInLane:
        """Commit a sealed report into the reservoir, with ``also`` (the caller's own
        change) in the same transaction. Raises :class:`~shipboard.lane_plan.LaneFull`
        (room comes later) or :class:`~shipboard.lane_plan.ReportTooLong` (never fits);
        then nothing was written."""
        try:
            pieces = fragment_report(sealed_report, self.shape.block_bytes)
        except LimitExceeded as exc:
            raise ReportTooLong(str(exc)) from exc
        report_id = os.urandom(8)
        count = len(pieces)
        blocks = [
            seal_up_block(
                Fragment(report_id, index, count, piece), union_public_key, self.shape.block_bytes
            )
            for index, piece in enumerate(pieces)
        ]
        with self._lock:
            if report_number in self._numbers:
                raise LanePlanMisuse(f"report number {report_number} was filed already")
            self._release_due(now)  # blocks of periods already over leave first
            placement = self._planner.plan_placement(report_id, count)
            with self.database.transaction("save the report") as tx:
                moved = dict(
                    zip(
                        [move.from_row for move in placement.moves],
                        Reservoir.blocks(tx, [move.from_row for move in placement.moves]),
                        strict=True,
                    )
                )
                for move in placement.moves:
                    Reservoir.overwrite(tx, move.to_row, moved[move.from_row])
                for fill in placement.fills:
                    Reservoir.overwrite(tx, fill.row_id, blocks[fill.fragment_index])
                if also is not None:
                    also(tx)
            self._planner.placement_committed(placement)
            self._numbers[report_number] = report_id
            self._carried[report_id] = []
            last = self._released_through + self._planner.releases_until_left(count)
            released_by = float(self.shape.period_start(last + 1))
        # Nothing is logged: the journal is the owner's to read, and a line here (or its
        # time) would say that someone reported, and when (tests/shipboard/test_journal.py).
        return FiledInLane(report_id, count, released_by)

    # --- release -------------------------------------------------------------------------

    def release_due(self, now: float) -> int:
        """Release every period that has ended by ``now`` and was not released yet, oldest
        first, each in its own transaction; how many were released."""
        with self._lock:
            return self._release_due(now)

    def _release_due(self, now: float) -> int:
        last_over = self.shape.period_of(now) - 1
        oldest = last_over - MAX_CATCH_UP_DAYS * (SECONDS_PER_DAY // self.shape.period_s)
        if self._released_through < oldest:
            logger.warning(
                "grievance lane: %d periods were missed (agent off, or the clock jumped); "
                "the last %d days are released now",
                oldest - self._released_through,
                MAX_CATCH_UP_DAYS,
            )
            self._released_through = oldest
        count = 0
        while self._released_through < last_over:
            self._release_one(self._released_through + 1)
            count += 1
        if count > 1:
            logger.info("grievance lane: %d periods released at once", count)
        return count

    def _release_one(self, period: int) -> None:
        release = self._planner.plan_release(_new_row_id)
        carrying = [self._planner.status(row_id)[1] for row_id in release.released]
        with self.database.transaction("release the grievance lane") as tx:
            blocks = Reservoir.blocks(tx, release.released)
            for row_id in release.released:
                Reservoir.delete(tx, row_id)
            for row in release.fresh:
                Reservoir.insert(tx, row, cover_block(self.shape.block_bytes))
            items = [LaneItem(period, index, block) for index, block in enumerate(blocks)]
            seqs = self.outbox.add_lane_items(tx, items, float(self.shape.period_start(period + 1)))
            Reservoir.set_state(tx, _CREDIT, release.credit_halves)
            Reservoir.set_state(tx, _RELEASED, period)
        self._planner.release_committed(release)
        self._released_through = period
        for report_id, seq in zip(carrying, seqs, strict=True):
            if report_id is not None and report_id in self._carried:
                self._carried[report_id].append(seq)


class LaneOnDemand:
    """The database's :class:`VesselLane`, started the first time it is needed.

    Starting writes (cover rows, the credit), so an agent whose disk is full or read-only
    still starts, signs crew in and answers 451/503 to a report; each use tries the start
    again (:class:`~shipboard.errors.OutboxUnavailable` until the disk works)."""

    def __init__(
        self,
        outbox: LaneOutbox,
        shape: LaneShape,
        clock: Callable[[], float],
        *,
        before_start: Callable[[], object] | None = None,
    ) -> None:
        self.outbox = outbox
        self.shape = shape
        self.clock = clock
        self._before_start = before_start
        self._lane: VesselLane | None = None
        self._lock = threading.Lock()

    def started(self) -> VesselLane:
        """The running lane (started now if it was not; raises ``OutboxUnavailable``)."""
        with self._lock:
            if self._lane is None:
                if self._before_start is not None:
                    self._before_start()
                self._lane = VesselLane.open(self.outbox, self.shape, self.clock())
            return self._lane

    def file(
        self,
        sealed_report: bytes,
        union_public_key: bytes,
        *,
        report_number: int,
        now: float,
        also: Callable[[Transaction], None] | None = None,
    ) -> FiledInLane:
        """:meth:`VesselLane.file`."""
        return self.started().file(
            sealed_report, union_public_key, report_number=report_number, now=now, also=also
        )

    def release_due(self, now: float) -> int:
        """:meth:`VesselLane.release_due`."""
        return self.started().release_due(now)

    def most_report_bytes(self) -> int:
        """:meth:`VesselLane.most_report_bytes` (the lane's own sizes for its shape)."""
        lane = self._lane
        if lane is not None:
            return lane.most_report_bytes()
        return ReservoirParams.for_lane(self.shape).pool_rows * self.shape.up_payload_bytes

    def next_release_at(self) -> float:
        """:meth:`VesselLane.next_release_at` (never, while it cannot start)."""
        lane = self._lane
        return math.inf if lane is None else lane.next_release_at()

    def progress(self, report_number: int) -> LaneProgress | None:
        """:meth:`VesselLane.progress` (None while it has not started)."""
        lane = self._lane
        return None if lane is None else lane.progress(report_number)


def _database_of(outbox: object) -> OnDatabase:
    if isinstance(outbox, OnDatabase):
        return outbox
    raise TypeError("give the database the lane stands on (on=...), or an outbox on one")
