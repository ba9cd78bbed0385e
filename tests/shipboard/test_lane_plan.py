"""Lane plan: the on-board reservoir of fixed-size rows that carries grievance reports.

Scenarios in users' terms, on a model of the vessel's disk (rows with order keys and
contents) driven exactly as the agent will drive it: every plan is applied to the disk
in one step, then the planner is told. The disk model checks, at every write, that no
report fragment is overwritten, and at every release, that the oldest rows leave.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from protocol.lane import MAX_REPORT_BYTES, LaneShape
from shipboard.lane_plan import (
    LaneFull,
    LanePlanMisuse,
    LanePlanner,
    Placement,
    Release,
    ReportTooLong,
    ReservoirParams,
    RowStatus,
)

#: What a row holds on the model disk: ("cover", serial, 0) or ("frag", report id, index).
Content = tuple[str, bytes, int]


class Ids:
    """Row ids as the agent would draw them (here: a counter, so two runs draw alike)."""

    def __init__(self) -> None:
        self.drawn = 0

    def __call__(self) -> bytes:
        self.drawn += 1
        return self.drawn.to_bytes(8, "big")


@dataclass
class Disk:
    """The vessel database as the owner sees it: rows, the persisted credit, and what
    left on the link (the outbox), in order."""

    rows: dict[bytes, tuple[int, Content]] = field(default_factory=dict)
    credit: int | None = None
    sent: list[Content] = field(default_factory=list)
    covers_made: int = 0

    def cover(self) -> Content:
        self.covers_made += 1
        return ("cover", self.covers_made.to_bytes(8, "big"), 0)

    def shape(self) -> list[tuple[bytes, int]]:
        """Row ids and order keys, in order: everything about the rows but their content."""
        return sorted(((row_id, key) for row_id, (key, _) in self.rows.items()), key=lambda r: r[1])

    def fragments(self) -> list[tuple[bytes, int]]:
        return [(c[1], c[2]) for _, c in self.rows.values() if c[0] == "frag"]

    def position(self, report: bytes, index: int) -> int | None:
        """1-based position (1 = leaves next) of a fragment on disk, or None."""
        for position, (row_id, _) in enumerate(self.shape(), start=1):
            if self.rows[row_id][1] == ("frag", report, index):
                return position
        return None


class Vessel:
    """The agent's lane over the model disk: start, file, release, crash."""

    def __init__(self, params: ReservoirParams) -> None:
        self.params = params
        self.disk = Disk()
        self.ids = Ids()
        self.releases = 0
        self.planner: LanePlanner
        self.start()

    def start(self) -> None:
        planner, plan = LanePlanner.start(
            [(row_id, key) for row_id, (key, _) in self.disk.rows.items()],
            self.params,
            credit_halves=self.disk.credit,
            new_row_id=self.ids,
        )
        for row_id, key in plan.rekey:
            self.disk.rows[row_id] = (key, self.disk.rows[row_id][1])
        for new in plan.fresh:
            assert new.row_id not in self.disk.rows
            self.disk.rows[new.row_id] = (new.order_key, self.disk.cover())
        self.disk.credit = plan.credit_halves
        keys = [key for key, _ in self.disk.rows.values()]
        assert len(set(keys)) == len(keys), "order keys are unique after a start"
        self.planner = planner

    def crash(self) -> None:
        """Power cut: memory is gone; the next start reads the disk."""
        del self.planner
        self.start()

    def write_placement(self, placement: Placement, fragments: dict[int, Content]) -> None:
        """The placement's one transaction: read every source, then write; check that
        every fragment overwritten was moved elsewhere in the same transaction."""
        before = sorted(self.disk.fragments())
        read = {move.from_row: self.disk.rows[move.from_row][1] for move in placement.moves}
        targets = [move.to_row for move in placement.moves] + [f.row_id for f in placement.fills]
        assert len(set(targets)) == len(targets), "one write per row"
        moved_away = {move.from_row for move in placement.moves}
        for row_id in targets:
            old = self.disk.rows[row_id][1]
            assert old[0] == "cover" or row_id in moved_away, f"fragment {old} overwritten"
        for move in placement.moves:
            key, _ = self.disk.rows[move.to_row]
            self.disk.rows[move.to_row] = (key, read[move.from_row])
        for fill in placement.fills:
            key, _ = self.disk.rows[fill.row_id]
            self.disk.rows[fill.row_id] = (key, fragments[fill.fragment_index])
        new = [(placement.report_id, index) for index in range(placement.fragments)]
        assert sorted(self.disk.fragments()) == sorted(before + new), "fragments kept once"

    def file(self, report_id: bytes, fragments: int) -> Placement:
        """A crew member files a report of ``fragments`` blocks (committed at once)."""
        placement = self.planner.plan_placement(report_id, fragments)
        contents = {index: ("frag", report_id, index) for index in range(fragments)}
        self.write_placement(placement, contents)
        self.planner.placement_committed(placement)
        return placement

    def write_release(self, release: Release, *, replace: bool = True) -> list[Content]:
        """The release's transaction (``replace=False``: only its first half, as if the
        agent committed sending and deleting but died before making the fresh rows)."""
        oldest = [row_id for row_id, _ in self.disk.shape()[: len(release.released)]]
        assert list(release.released) == oldest, "the oldest rows leave, in order"
        gone = [self.disk.rows.pop(row_id)[1] for row_id in release.released]
        self.disk.sent.extend(gone)
        self.releases += 1
        if replace:
            for new in release.fresh:
                assert new.row_id not in self.disk.rows
                assert all(new.order_key > key for key, _ in self.disk.rows.values())
                self.disk.rows[new.row_id] = (new.order_key, self.disk.cover())
            self.disk.credit = release.credit_halves
        return gone

    def release(self) -> list[Content]:
        """A lane period ends: its blocks leave."""
        release = self.planner.plan_release(self.ids)
        gone = self.write_release(release)
        self.planner.release_committed(release)
        return gone

    def releases_until_gone(self, report_id: bytes, limit: int = 10_000) -> int:
        """Release until no fragment of the report is on disk; return how many it took."""
        count = 0
        while any(report == report_id for report, _ in self.disk.fragments()):
            self.release()
            count += 1
            assert count <= limit, "the report never left"
        return count


PARAMS = ReservoirParams(blocks_per_period=1, pool_rows=8, min_rows=8, max_rows=24)


def _sent_reports(sent: list[Content]) -> list[bytes]:
    return [content[1] for content in sent if content[0] == "frag"]


# --- sizes ----------------------------------------------------------------------------------


def test_reservoir_for_the_default_lane_holds_the_largest_report() -> None:
    """Sized for the default lane, the pool holds the largest sealed report (a mode-A
    report in the largest bucket: 65,520 bytes in 384-byte blocks)."""
    params = ReservoirParams.for_lane(LaneShape())
    assert params.pool_rows == -(-MAX_REPORT_BYTES // (384 - 68)) == 208
    assert (params.min_rows, params.max_rows) == (208, 624)
    smaller = ReservoirParams.for_lane(LaneShape(), largest_report_bytes=16_432)
    assert smaller.pool_rows == 52


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"blocks_per_period": 0}, "positive integer"),
        ({"pool_rows": True}, "positive integer"),
        ({"blocks_per_period": 9}, "at least blocks_per_period"),
        ({"max_rows": 15}, "at least 16"),
    ],
)
def test_reservoir_sizes_that_cannot_work_are_refused(kwargs: dict[str, int], words: str) -> None:
    """Sizes that would leave a release short of rows, or a start without a pool."""
    values = {"blocks_per_period": 1, "pool_rows": 8, "min_rows": 8, "max_rows": 24} | kwargs
    with pytest.raises(ValueError, match=words):
        ReservoirParams(**values)


# --- steady state ---------------------------------------------------------------------------


def test_first_start_makes_a_full_reservoir_of_cover() -> None:
    """A new vessel: R rows of cover, keys 0..R-1, full credit, all known to be cover."""
    vessel = Vessel(PARAMS)
    assert vessel.planner.row_count == 8
    assert [key for _, key in vessel.disk.shape()] == list(range(8))
    assert vessel.planner.count(RowStatus.FREE) == 8
    assert vessel.disk.credit == 16


def test_an_idle_lane_releases_the_oldest_rows_and_replaces_them_at_the_back() -> None:
    """Period after period with no report: one row leaves, one cover row is made behind
    the others; the reservoir keeps its size."""
    vessel = Vessel(PARAMS)
    for _ in range(20):
        first = vessel.disk.shape()[0][0]
        gone = vessel.release()
        assert gone[0][0] == "cover"
        assert first not in vessel.disk.rows
        assert vessel.planner.row_count == 8
    assert vessel.disk.credit == 16


def test_a_report_leaves_in_the_next_periods() -> None:
    """A report of three blocks goes into the rows that leave soonest: it is gone after
    three releases of one block."""
    vessel = Vessel(PARAMS)
    vessel.release()
    vessel.file(b"report-A", 3)
    assert vessel.planner.pending(b"report-A") == 3
    assert vessel.releases_until_gone(b"report-A") == 3
    assert vessel.planner.pending(b"report-A") == 0
    assert _sent_reports(vessel.disk.sent) == [b"report-A"] * 3


def test_a_short_report_is_not_stuck_behind_a_long_one() -> None:
    """Round-robin: a one-block report filed after a six-block one leaves second."""
    vessel = Vessel(PARAMS)
    vessel.file(b"long....", 6)
    vessel.release()
    placement = vessel.file(b"short...", 1)
    assert placement.moves, "a queued fragment moved to make way"
    for _ in range(6):
        vessel.release()
    assert _sent_reports(vessel.disk.sent) == [b"long...."] * 2 + [b"short..."] + [b"long...."] * 4


def test_three_reports_take_turns() -> None:
    """Reports of 4, 2 and 3 blocks filed together leave as A B C A B C A C A."""
    vessel = Vessel(PARAMS)
    vessel.file(b"AAAAAAAA", 4)
    vessel.file(b"BBBBBBBB", 2)
    vessel.file(b"CCCCCCCC", 2)
    with pytest.raises(LaneFull):
        vessel.file(b"DDDDDDDD", 1)
    for _ in range(8):
        vessel.release()
    order = b"".join(report[:1] for report in _sent_reports(vessel.disk.sent))
    assert order == b"ABCABCAA"


def test_a_full_lane_says_when_to_try_again() -> None:
    """With the pool full, the next report is refused with the number of periods until
    it fits; one period earlier it still does not fit, then it does."""
    vessel = Vessel(PARAMS)
    vessel.file(b"first...", 5)
    with pytest.raises(LaneFull) as refused:
        vessel.file(b"second..", 6)
    wait = refused.value.releases_until_room
    assert wait == 3
    assert refused.value.free == 3
    shape = LaneShape()
    assert refused.value.try_again_at(shape, 21_600 * 10 + 5) == 21_600 * 13
    for _ in range(wait - 1):
        vessel.release()
    with pytest.raises(LaneFull):
        vessel.file(b"second..", 6)
    vessel.release()
    vessel.file(b"second..", 6)


def test_a_report_longer_than_the_pool_is_refused_for_good() -> None:
    """A report that could never fit is refused as too long, not 'try later'."""
    vessel = Vessel(PARAMS)
    with pytest.raises(ReportTooLong, match="must be shortened"):
        vessel.file(b"huge....", 9)
    with pytest.raises(ReportTooLong):
        vessel.planner.releases_until_room(9)


# --- restarts -------------------------------------------------------------------------------


def test_after_a_restart_old_and_new_reports_take_turns() -> None:
    """A report filed just before a power cut and one filed just after leave in turns:
    both are gone within 2k releases of one block (k = 3)."""
    vessel = Vessel(PARAMS)
    vessel.file(b"before..", 3)
    vessel.crash()
    assert vessel.planner.count(RowStatus.UNKNOWN) == 8
    assert vessel.planner.count(RowStatus.FREE) == 8
    assert vessel.planner.row_count == 16
    vessel.file(b"after...", 3)
    for _ in range(6):
        vessel.release()
    assert _sent_reports(vessel.disk.sent) == [b"before..", b"after..."] * 3


def test_the_reservoir_drifts_back_after_a_restart() -> None:
    """A start adds the pool; as the unknown rows leave, they are not replaced until the
    reservoir is back at its steady size."""
    vessel = Vessel(PARAMS)
    vessel.crash()
    counts = [vessel.planner.row_count]
    for _ in range(20):
        vessel.release()
        counts.append(vessel.planner.row_count)
    assert counts[0] == 16
    assert counts[-1] == 8
    assert all(a - b in (0, 1) for a, b in itertools.pairwise(counts))
    assert vessel.planner.count(RowStatus.UNKNOWN) == 0


def test_unknown_rows_are_never_written() -> None:
    """After a restart a report goes only into rows made since the start."""
    vessel = Vessel(PARAMS)
    vessel.crash()
    unknown = {
        r for r in vessel.planner.row_ids() if vessel.planner.status(r)[0] is RowStatus.UNKNOWN
    }
    placement = vessel.file(b"after...", 8)
    assert not {fill.row_id for fill in placement.fills} & unknown
    with pytest.raises(LaneFull):
        vessel.file(b"more....", 1)


def test_power_cut_before_the_placement_commits() -> None:
    """The crew member is told 'not saved'; the disk holds cover as before; nothing is
    half-written and the lane goes on."""
    vessel = Vessel(PARAMS)
    before = dict(vessel.disk.rows)
    vessel.planner.plan_placement(b"lost....", 3)
    vessel.crash()
    assert {row_id: content for row_id, (_, content) in before.items()} == {
        row_id: content for row_id, (_, content) in vessel.disk.rows.items() if row_id in before
    }
    assert vessel.disk.fragments() == []


def test_power_cut_after_the_placement_commits() -> None:
    """The report was committed but the agent died before it knew: it still leaves, in
    order-key order, within the proved bound."""
    vessel = Vessel(PARAMS)
    placement = vessel.planner.plan_placement(b"saved...", 4)
    vessel.write_placement(placement, {i: ("frag", b"saved...", i) for i in range(4)})
    vessel.crash()
    worst = max(vessel.disk.position(b"saved...", i) or 0 for i in range(4))
    assert vessel.releases_until_gone(b"saved...") <= PARAMS.release_bound(worst)
    assert sorted(_sent_reports(vessel.disk.sent)) == [b"saved..."] * 4


def test_power_cut_between_sending_and_making_fresh_rows() -> None:
    """The release's rows left but the agent died before making their replacements: the
    next start makes up the count, and nothing is lost."""
    vessel = Vessel(PARAMS)
    vessel.file(b"report..", 5)
    release = vessel.planner.plan_release(vessel.ids)
    vessel.write_release(release, replace=False)
    assert len(vessel.disk.rows) == 7
    vessel.crash()
    assert vessel.planner.row_count == 7 + 8
    vessel.releases_until_gone(b"report..")
    assert sorted(_sent_reports(vessel.disk.sent)) == [b"report.."] * 5


def test_restarting_every_period_never_starves_an_old_report() -> None:
    """An owner (or a bad power supply) restarts the agent after every period for a
    month: a report filed before it leaves within the proved bound, and the reservoir
    never grows past its ceiling (so right after the storm a report must wait for room,
    and is told how long)."""
    vessel = Vessel(PARAMS)
    vessel.release()
    vessel.file(b"stuck?..", 8)
    vessel.crash()
    positions = [vessel.disk.position(b"stuck?..", i) or 0 for i in range(8)]
    bound = PARAMS.release_bound(max(positions))
    for _ in range(120):
        vessel.release()
        vessel.crash()
        assert vessel.planner.row_count <= PARAMS.max_rows
    assert vessel.disk.fragments() == []
    storm = vessel.disk.sent[1:]  # one block a period, from the first restart on
    assert sorted(c for c in storm if c[0] == "frag") == [
        ("frag", b"stuck?..", i) for i in range(8)
    ]
    last = max(number for number, c in enumerate(storm, start=1) if c[0] == "frag")
    assert last <= bound
    # at its ceiling the reservoir has no room right after a restart: the crew member is
    # told when to try again, and then it fits and leaves within the bound
    with pytest.raises(LaneFull) as refused:
        vessel.file(b"during..", 2)
    for _ in range(refused.value.releases_until_room):
        vessel.release()
    vessel.file(b"during..", 2)
    worst = max(vessel.disk.position(b"during..", i) or 0 for i in range(2))
    assert vessel.releases_until_gone(b"during..") <= PARAMS.release_bound(worst)


def test_a_report_filed_right_after_a_restart_leaves_within_2k_releases() -> None:
    """With full credit, k fresh rows sit between the oldest unknown rows: a report of k
    blocks (k = 5, one block a period) is gone within 2k releases."""
    vessel = Vessel(ReservoirParams(1, 8, 8, 24))
    for _ in range(30):
        vessel.release()
    vessel.crash()
    vessel.file(b"urgent..", 5)
    assert vessel.releases_until_gone(b"urgent..") <= 10


def test_two_blocks_a_period_halve_the_wait() -> None:
    """With two blocks a period, the same report (k = 5) leaves within ceil(2k/2) = 5."""
    vessel = Vessel(ReservoirParams(2, 8, 8, 24))
    vessel.crash()
    vessel.file(b"urgent..", 5)
    assert vessel.releases_until_gone(b"urgent..") <= 5


# --- misuse ---------------------------------------------------------------------------------


def test_plans_must_be_committed_in_order() -> None:
    """A plan made before another step committed is stale: the planner refuses it."""
    vessel = Vessel(PARAMS)
    stale = vessel.planner.plan_placement(b"report..", 2)
    vessel.release()
    with pytest.raises(LanePlanMisuse, match="version 0, which is now 1"):
        vessel.planner.placement_committed(stale)
    release = vessel.planner.plan_release(vessel.ids)
    vessel.file(b"other...", 1)
    with pytest.raises(LanePlanMisuse, match="plan, commit and report"):
        vessel.planner.release_committed(release)


def test_ids_must_be_fresh_and_reports_unique() -> None:
    """A report id queued twice, an id generator that repeats, a zero-block report, and
    an unknown row id are bugs, refused loudly."""
    vessel = Vessel(PARAMS)
    vessel.file(b"report..", 1)
    with pytest.raises(LanePlanMisuse, match="already queued"):
        vessel.planner.plan_placement(b"report..", 1)
    with pytest.raises(LanePlanMisuse, match="at least one fragment"):
        vessel.planner.plan_placement(b"empty...", 0)
    taken = vessel.planner.row_ids()[-1]
    with pytest.raises(LanePlanMisuse, match="already in use"):
        vessel.planner.plan_release(lambda: taken)
    with pytest.raises(LanePlanMisuse, match="already in use"):
        LanePlanner.start([], PARAMS, credit_halves=None, new_row_id=lambda: b"same")
    with pytest.raises(LanePlanMisuse, match="twice"):
        LanePlanner.start([(b"a", 1), (b"a", 2)], PARAMS, credit_halves=None, new_row_id=Ids())
    with pytest.raises(LanePlanMisuse, match="no row"):
        vessel.planner.status(b"nowhere.")
