"""Lane plan: which reservoir rows carry a report, and which leave each lane period.

The vessel database keeps a **reservoir** of rows, each one fixed-size sealed uplink
block (:mod:`protocol.lane`) with a random ``row_id`` and an integer ``order_key``. Every
lane period the ``blocks_per_period`` rows with the smallest order keys leave, whatever
they hold, and fresh cover rows take their place at the back. A report never adds rows:
its fragments overwrite cover rows in place, at intake, in one transaction.

What is on disk must not tell whether a report is pending, and an owner who reads the
disk knows everything a freshly started agent knows. So which rows hold fragments is
known only in this planner's memory, and is lost at every restart:

* ``FREE``: cover made in this run; may be overwritten.
* ``REAL``: a fragment placed in this run; leaves in its turn, never overwritten.
* ``UNKNOWN``: a row that was there when the agent started; possibly a fragment, so
  never overwritten; it leaves in order-key order like every row.

Every decision that shows on disk (which rows leave, how many rows are made, their
order keys) is a function of the disk's rows, the restart history and the credit below,
never of reports. Only a placement writes report-dependent content, and only into rows
that already exist.

Policy
------
* **Release** (each period): the ``n`` rows with the smallest order keys leave. The
  released rows are replaced at the back so that the reservoir keeps at least
  ``min_rows`` rows and at least ``pool_rows`` known (free or real) rows, never more
  than ``max_rows``: ``fresh = clamp(max(min_rows - count, pool_rows - known), 0,
  max_rows - count)``. Unknown rows that leave are therefore not replaced while the
  reservoir is above both floors: after a restart it drifts back down.
* **Placement** (intake): a report of ``k`` fragments needs ``k`` free rows. Real
  fragments always occupy the oldest known rows; a placement lays all queued fragments
  out again over those rows **round-robin** across queued reports (a short report filed
  after a long one is not stuck behind it), moving existing fragments between real rows
  and writing the new ones into the free rows that follow. Not enough free rows:
  :class:`LaneFull`, with how many releases until there is room.
* **Start** (every agent start): every row becomes unknown. Fresh cover rows are made
  (the same formula, with no known row), and up to ``credit // 2`` of them are given
  order keys interleaved one for one after the oldest unknown rows, so a report filed
  just after a restart leaves as soon as one filed just before it; the rest go to the
  back. All rows are then renumbered ``0, 1, 2, ...`` in their new order.
* **Credit**: interleaving delays rows already there, so it is rationed: the credit (in
  half rows, persisted, at most ``2 * pool_rows``) grows by ``n`` half rows per release
  and pays one row per two half rows interleaved at a start. However often the agent
  restarts, rows ahead of any row grow by at most half a row per release it waits.

Bounds (proved in the docstrings of :meth:`ReservoirParams.release_bound` and checked by
``tests/shipboard/test_lane_plan*.py``):

* a row at position ``p`` (1 = leaves next) leaves within
  ``max(1, floor(2 (p - 1 + pool_rows) / n))`` releases, whatever restarts happen;
* after a start that interleaved at least ``k`` fresh rows (it had ``2 k`` half rows of
  credit and room for ``k`` rows: the case unless the agent restarted often lately), a
  report of ``k`` fragments filed right after it, none other queued, leaves within ``ceil(2 k / n)``
  releases, unless the agent restarts meanwhile (``ceil(k / n)`` with no unknown rows);
* within one run, two queued reports' counts of fragments released since both were
  queued never differ by more than one (round-robin).

Crash points: the caller commits each plan in one transaction and tells the planner
afterwards (``*_committed``). A crash before the commit leaves the disk as it was; a
crash after it loses only memory. Either way the next start treats every row as
unknown, so nothing committed is overwritten or lost.

Pure: no I/O, no clock, no randomness (row ids come from the caller's ``new_row_id``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protocol.lane import MAX_REPORT_BYTES, LaneShape
from shipboard.errors import ShipboardError

RowId = bytes
NewRowId = Callable[[], RowId]


class LaneRefused(ShipboardError):
    """A report the lane cannot take now; the message says when, or why never."""


class LaneFull(LaneRefused):
    """Not enough free rows for this report now: queued reports fill the reservoir, or
    the agent restarted recently. Room comes after ``releases_until_room`` releases."""

    def __init__(self, fragments: int, free: int, releases_until_room: int) -> None:
        super().__init__(
            f"a report of {fragments} blocks does not fit: {free} rows are free; there "
            f"is room after {releases_until_room} more lane periods"
        )
        self.fragments = fragments
        self.free = free
        self.releases_until_room = releases_until_room

    def try_again_at(self, shape: LaneShape, now: float) -> int:
        """When to tell the crew member to try again (seconds since 1970): the start of
        the period after the last release that makes room."""
        return shape.period_start(shape.period_of(now) + self.releases_until_room)


class ReportTooLong(LaneRefused):
    """A report longer than the reservoir can ever hold: it must be shortened."""


class LanePlanMisuse(ShipboardError):
    """The planner was used out of order (a stale plan, a duplicate report id): a bug."""


class RowStatus(enum.Enum):
    """What the planner knows about a row (memory only; the disk never says)."""

    UNKNOWN = "unknown"
    FREE = "free"
    REAL = "real"


@dataclass(frozen=True, slots=True)
class ReservoirParams:
    """The reservoir's sizes, the same for every vessel of a deployment.

    ``pool_rows`` (X) is how many rows the agent knows after a start (the most fragments
    that can be queued at once: the largest report must fit); ``min_rows`` (R) the
    steady-state floor; ``max_rows`` the ceiling, reached only by restarting often."""

    blocks_per_period: int
    pool_rows: int
    min_rows: int
    max_rows: int

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"reservoir {name} must be a positive integer, not {value!r}")
        if self.min_rows < self.blocks_per_period:
            raise ValueError(
                f"min_rows ({self.min_rows}) must be at least blocks_per_period "
                f"({self.blocks_per_period}): every release takes that many rows"
            )
        floor = max(self.min_rows, self.pool_rows) + self.pool_rows
        if self.max_rows < floor:
            raise ValueError(
                f"max_rows ({self.max_rows}) must be at least {floor}, so that a start "
                "from the steady state gets a full pool of known rows"
            )

    @classmethod
    def for_lane(
        cls, shape: LaneShape, largest_report_bytes: int = MAX_REPORT_BYTES
    ) -> ReservoirParams:
        """Sizes for ``shape`` such that a sealed report of ``largest_report_bytes`` always
        fits once the lane has drained: X = R = its fragment count, max = R + 2X."""
        pool = max(shape.up_fragments(largest_report_bytes), shape.blocks_per_period)
        return cls(shape.blocks_per_period, pool, pool, 3 * pool)

    def release_bound(self, position: int) -> int:
        """Releases within which a row now at ``position`` (1 = the oldest) leaves, however
        often the agent restarts.

        Proof: rows behind it never pass it (fresh rows at a release go to the back, and
        renumbering keeps the order). Each release removes ``n`` rows ahead of it, until it
        is among the ``n`` oldest. A start puts rows ahead of it only by interleaving,
        paid by credit: at most ``pool_rows`` rows of credit exist now, and each release
        adds ``n / 2``. Before release ``j + 1`` the rows ahead are at most
        ``p - 1 + X + j n / 2 - j n``, below ``n`` once ``j > 2 (p - 1 + X - n) / n``."""
        n = self.blocks_per_period
        return max(1, 2 * (position - 1 + self.pool_rows) // n)

    def fresh_rows(self, count: int, unknown: int) -> int:
        """Cover rows to make when ``count`` rows remain, ``unknown`` of them unknown."""
        known = count - unknown
        wanted = max(self.min_rows - count, self.pool_rows - known, 0)
        return max(0, min(wanted, self.max_rows - count))


@dataclass(frozen=True, slots=True)
class NewRow:
    """A cover row to make: seal a cover block (to a throwaway key) and store it here."""

    row_id: RowId
    order_key: int


@dataclass(frozen=True, slots=True)
class StartPlan:
    """What the caller commits, in one transaction, when the agent starts."""

    #: existing rows whose order key changes (row id, new key)
    rekey: tuple[tuple[RowId, int], ...]
    #: cover rows to make
    fresh: tuple[NewRow, ...]
    #: the credit to persist (half rows)
    credit_halves: int


@dataclass(frozen=True, slots=True)
class Move:
    """Content of ``from_row`` (a fragment) goes to ``to_row``."""

    to_row: RowId
    from_row: RowId


@dataclass(frozen=True, slots=True)
class Fill:
    """The new report's fragment ``fragment_index`` (its sealed block) goes to ``row_id``."""

    row_id: RowId
    fragment_index: int


@dataclass(frozen=True, slots=True)
class Placement:
    """What the caller commits, in one transaction, to file a report: read every
    ``from_row`` first, then write every move and fill. Order keys do not change."""

    report_id: bytes
    fragments: int
    moves: tuple[Move, ...]
    fills: tuple[Fill, ...]
    version: int


@dataclass(frozen=True, slots=True)
class Release:
    """What the caller commits, in one transaction, at the end of a lane period: send the
    ``released`` rows' blocks (oldest first) and delete them, make the ``fresh`` rows,
    persist the credit."""

    released: tuple[RowId, ...]
    fresh: tuple[NewRow, ...]
    credit_halves: int
    version: int


@dataclass(slots=True)
class _Row:
    row_id: RowId
    key: int
    status: RowStatus
    report: bytes | None = None
    index: int = -1


class LanePlanner:
    """The reservoir as this run of the agent knows it. Build it with :meth:`start`."""

    def __init__(self, params: ReservoirParams, rows: list[_Row], credit_halves: int) -> None:
        self.params = params
        self._rows = rows  # in order-key order
        self._credit = credit_halves
        self._next_key = rows[-1].key + 1 if rows else 0
        self._left: dict[bytes, int] = {}  # report id -> fragments still on board
        self._version = 0

    # --- start ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        rows: Iterable[tuple[RowId, int]],
        params: ReservoirParams,
        *,
        credit_halves: int | None,
        new_row_id: NewRowId,
    ) -> tuple[LanePlanner, StartPlan]:
        """Plan the start from the rows on disk (row id, order key) and the persisted
        credit (None on the first start: full). Use the returned planner only once the
        plan is committed; if the commit fails, start again from the disk."""
        found = sorted(rows, key=lambda row: (row[1], row[0]))
        if len({row_id for row_id, _ in found}) != len(found):
            raise LanePlanMisuse("the reservoir lists one row id twice")
        credit = 2 * params.pool_rows if credit_halves is None else credit_halves
        credit = max(0, min(credit, 2 * params.pool_rows))
        count = len(found)
        fresh = params.fresh_rows(count, count)
        front = min(fresh, credit // 2, count)
        fresh_ids = [new_row_id() for _ in range(fresh)]
        known_ids = {row_id for row_id, _ in found}
        if len(set(fresh_ids) | known_ids) != count + fresh:
            raise LanePlanMisuse("new_row_id gave an id that is already in use")
        order: list[tuple[RowId, bool]] = []  # (row id, is fresh)
        for position, (row_id, _) in enumerate(found):
            order.append((row_id, False))
            if position < front:
                order.append((fresh_ids[position], True))
        order.extend((row_id, True) for row_id in fresh_ids[front:])
        old_keys = dict(found)
        rekey: list[tuple[RowId, int]] = []
        new_rows: list[NewRow] = []
        planned: list[_Row] = []
        for key, (row_id, is_fresh) in enumerate(order):
            if is_fresh:
                new_rows.append(NewRow(row_id, key))
                planned.append(_Row(row_id, key, RowStatus.FREE))
            else:
                if old_keys[row_id] != key:
                    rekey.append((row_id, key))
                planned.append(_Row(row_id, key, RowStatus.UNKNOWN))
        credit -= 2 * front
        plan = StartPlan(tuple(rekey), tuple(new_rows), credit)
        return cls(params, planned, credit), plan

    # --- what the planner knows ----------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def credit_halves(self) -> int:
        return self._credit

    def row_ids(self) -> tuple[RowId, ...]:
        """Row ids, oldest (next to leave) first."""
        return tuple(row.row_id for row in self._rows)

    def order_keys(self) -> tuple[int, ...]:
        return tuple(row.key for row in self._rows)

    def count(self, status: RowStatus) -> int:
        return sum(1 for row in self._rows if row.status is status)

    def status(self, row_id: RowId) -> tuple[RowStatus, bytes | None, int]:
        """(status, report id, fragment index) of one row."""
        for row in self._rows:
            if row.row_id == row_id:
                return row.status, row.report, row.index
        raise LanePlanMisuse(f"no row {row_id.hex()} in the reservoir")

    def pending(self, report_id: bytes) -> int:
        """Fragments of a report filed in this run that are still on board (0: all left,
        or not filed in this run; after a restart the planner cannot know)."""
        return self._left.get(report_id, 0)

    def queued_reports(self) -> int:
        return len(self._left)

    # --- placement -----------------------------------------------------------------------

    def plan_placement(self, report_id: bytes, fragments: int) -> Placement:
        """Where a new report's ``fragments`` go, and how queued fragments move so that
        all of them leave round-robin. Raises :class:`LaneFull` (try later) or
        :class:`ReportTooLong` (never fits). Changes nothing until committed."""
        if fragments < 1:
            raise LanePlanMisuse(f"a report has at least one fragment, not {fragments}")
        if report_id in self._left:
            raise LanePlanMisuse(f"report {report_id.hex()} is already queued")
        if fragments > self.params.pool_rows:
            raise ReportTooLong(
                f"a report of {fragments} blocks is longer than the lane ever holds "
                f"({self.params.pool_rows} blocks); it must be shortened"
            )
        known = [row for row in self._rows if row.status is not RowStatus.UNKNOWN]
        free = sum(1 for row in known if row.status is RowStatus.FREE)
        if fragments > free:
            raise LaneFull(fragments, free, self.releases_until_room(fragments))
        queued: dict[bytes, list[_Row]] = {}
        for row in known:
            if row.status is RowStatus.REAL:
                assert row.report is not None
                queued.setdefault(row.report, []).append(row)
        sequence: list[tuple[bytes, int, RowId | None]] = []  # report, index, current row
        lists: list[list[tuple[bytes, int, RowId | None]]] = [
            [(report, row.index, row.row_id) for row in rows] for report, rows in queued.items()
        ]
        lists.append([(report_id, index, None) for index in range(fragments)])
        for depth in range(max(len(items) for items in lists)):
            sequence.extend(items[depth] for items in lists if depth < len(items))
        moves: list[Move] = []
        fills: list[Fill] = []
        for target, (_, index, current) in zip(known, sequence, strict=False):
            if current is None:
                fills.append(Fill(target.row_id, index))
            elif current != target.row_id:
                moves.append(Move(target.row_id, current))
        return Placement(report_id, fragments, tuple(moves), tuple(fills), self._version)

    def placement_committed(self, placement: Placement) -> None:
        """The placement's transaction committed: the planner now knows the new layout."""
        self._check_version(placement.version, "placement")
        by_id = {row.row_id: row for row in self._rows}
        contents = {
            move.to_row: (by_id[move.from_row].report, by_id[move.from_row].index)
            for move in placement.moves
        }
        for move in placement.moves:
            row = by_id[move.to_row]
            row.status = RowStatus.REAL
            row.report, row.index = contents[move.to_row]
        for fill in placement.fills:
            row = by_id[fill.row_id]
            row.status, row.report, row.index = (
                RowStatus.REAL,
                placement.report_id,
                fill.fragment_index,
            )
        self._left[placement.report_id] = placement.fragments
        self._version += 1

    # --- release -------------------------------------------------------------------------

    def plan_release(self, new_row_id: NewRowId) -> Release:
        """The rows that leave this period (the oldest ``n``) and the cover rows that
        replace them. Changes nothing until committed."""
        n = self.params.blocks_per_period
        leaving = self._rows[:n]
        staying = len(self._rows) - len(leaving)
        unknown = sum(1 for row in self._rows[n:] if row.status is RowStatus.UNKNOWN)
        fresh = [
            NewRow(new_row_id(), self._next_key + offset)
            for offset in range(self.params.fresh_rows(staying, unknown))
        ]
        ids = {row.row_id for row in self._rows[n:]} | {row.row_id for row in fresh}
        if len(ids) != staying + len(fresh):
            raise LanePlanMisuse("new_row_id gave an id that is already in use")
        credit = min(self._credit + n, 2 * self.params.pool_rows)
        released = tuple(row.row_id for row in leaving)
        return Release(released, tuple(fresh), credit, self._version)

    def release_committed(self, release: Release) -> None:
        """The release's transaction committed: the rows left, the fresh rows exist."""
        self._check_version(release.version, "release")
        for row in self._rows[: len(release.released)]:
            if row.status is RowStatus.REAL:
                assert row.report is not None
                left = self._left[row.report] - 1
                if left:
                    self._left[row.report] = left
                else:
                    del self._left[row.report]
        self._rows = self._rows[len(release.released) :]
        self._rows.extend(_Row(new.row_id, new.order_key, RowStatus.FREE) for new in release.fresh)
        if release.fresh:
            self._next_key = release.fresh[-1].order_key + 1
        self._credit = release.credit_halves
        self._version += 1

    def releases_until_left(self, fragments: int) -> int:
        """Releases until a report of ``fragments`` blocks placed now has left, counted as
        if it had the lane to itself: its blocks then take the oldest ``fragments`` known
        rows, so this is where the last of those stands among all rows (unknown rows ahead
        of it leave first). It depends only on which rows are unknown (the restarts, which
        the disk shows anyway) and never on the reports queued in this run: the reporter
        is told it, and must learn nothing of anyone else's report. Reports queued by
        others delay it by round-robin (a release per block of theirs laid before its last),
        and a restart meanwhile by the credit it pays (the bound of
        :meth:`ReservoirParams.release_bound`)."""
        if fragments < 1:
            raise LanePlanMisuse(f"a report has at least one fragment, not {fragments}")
        known = 0
        for position, row in enumerate(self._rows, start=1):
            if row.status is not RowStatus.UNKNOWN:
                known += 1
                if known == fragments:
                    return -(-position // self.params.blocks_per_period)
        raise LaneFull(fragments, self.count(RowStatus.FREE), self.releases_until_room(fragments))

    def releases_until_room(self, fragments: int) -> int:
        """Releases until ``fragments`` rows are free, if no report is filed and the agent
        does not restart meanwhile (0: there is room now)."""
        if fragments > self.params.pool_rows:
            raise ReportTooLong(
                f"a report of {fragments} blocks is longer than the lane ever holds "
                f"({self.params.pool_rows} blocks)"
            )
        statuses = [row.status for row in self._rows]
        releases = 0
        n = self.params.blocks_per_period
        while statuses.count(RowStatus.FREE) < fragments:
            statuses = statuses[n:]
            fresh = self.params.fresh_rows(len(statuses), statuses.count(RowStatus.UNKNOWN))
            statuses.extend([RowStatus.FREE] * fresh)
            releases += 1
        return releases

    def _check_version(self, version: int, what: str) -> None:
        if version != self._version:
            raise LanePlanMisuse(
                f"this {what} was planned for reservoir version {version}, which is now "
                f"{self._version}: plan, commit and report each step before the next"
            )
