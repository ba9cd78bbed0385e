"""Lane plan under random histories: reports of random lengths, releases, power cuts at
every point of every transaction, and restarts, on the model disk of test_lane_plan.

Two vessels live the same history of time and restarts; only one has crew filing
reports. Invariants after every step:

* what the owner sees of the reservoir (row ids, order keys, how many, which left, the
  credit) is identical on both vessels: it never depends on reports;
* no fragment of a committed report is ever overwritten or lost: each is on disk or
  sent, exactly once;
* the reservoir never exceeds its ceiling;
* every fragment leaves within ``release_bound(position)`` releases of its last move,
  whatever restarts happen (position counted when it was placed or moved);
* within one run, two queued reports' counts of fragments sent since both were queued
  differ by at most one (round-robin);
* at the end, with the power steady, every committed report leaves completely.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from shipboard.lane_plan import LaneFull, ReportTooLong, ReservoirParams, RowStatus
from tests.shipboard.test_lane_plan import Vessel


@st.composite
def reservoir_params(draw: st.DrawFn) -> ReservoirParams:
    n = draw(st.integers(1, 3))
    pool = draw(st.integers(max(1, n - 1), 10))
    floor = draw(st.integers(n, pool + 4))
    ceiling = max(floor, pool) + pool + draw(st.integers(0, 8))
    return ReservoirParams(n, pool, floor, ceiling)


@dataclass
class _Tracked:
    """A fragment on disk: when it last moved (release count) and its position then."""

    since: int
    position: int


class LaneMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.serial = 0
        self.accepted: dict[bytes, int] = {}  # report id -> fragments (committed)
        self.tracked: dict[tuple[bytes, int], _Tracked] = {}
        self.run_log: list[bytes] = []  # reports of fragments sent in this run, in order
        self.joined: dict[bytes, int] = {}  # report filed in this run -> len(run_log) then

    @initialize(params=reservoir_params())
    def build(self, params: ReservoirParams) -> None:
        self.params = params
        self.crew = Vessel(params)
        self.quiet = Vessel(params)

    # --- steps ----------------------------------------------------------------------------

    def _new_id(self) -> bytes:
        self.serial += 1
        return self.serial.to_bytes(8, "big")

    def _where(self) -> dict[tuple[bytes, int], bytes]:
        return {
            (content[1], content[2]): row_id
            for row_id, (_, content) in self.crew.disk.rows.items()
            if content[0] == "frag"
        }

    def _track_moves(self, before: dict[tuple[bytes, int], bytes]) -> None:
        for fragment, row_id in self._where().items():
            if before.get(fragment) != row_id:
                position = self.crew.disk.position(*fragment)
                assert position is not None
                self.tracked[fragment] = _Tracked(self.crew.releases, position)

    def _restart_both(self) -> None:
        self.crew.crash()
        self.quiet.crash()
        self.run_log = []
        self.joined = {}

    @rule(fragments=st.integers(1, 3) | st.integers(1, 12))
    def file_report(self, fragments: int) -> None:
        """A crew member files a report; it fits, or they are told why not."""
        report_id = self._new_id()
        free = self.crew.planner.count(RowStatus.FREE)
        before = self._where()
        try:
            self.crew.file(report_id, fragments)
        except ReportTooLong:
            assert fragments > self.params.pool_rows
            return
        except LaneFull:
            assert fragments > free
            assert self.crew.planner.releases_until_room(fragments) >= 1
            return
        assert fragments <= free
        self.accepted[report_id] = fragments
        self.joined[report_id] = len(self.run_log)
        self._track_moves(before)

    @rule(fragments=st.integers(1, 6))
    def power_cut_before_placement_commits(self, fragments: int) -> None:
        """The placement was planned, the power went before its transaction committed."""
        with contextlib.suppress(LaneFull, ReportTooLong):
            self.crew.planner.plan_placement(self._new_id(), fragments)
        self._restart_both()

    @rule(fragments=st.integers(1, 6))
    def power_cut_after_placement_commits(self, fragments: int) -> None:
        """The placement committed, the power went before the planner heard of it."""
        report_id = self._new_id()
        try:
            placement = self.crew.planner.plan_placement(report_id, fragments)
        except (LaneFull, ReportTooLong):
            self._restart_both()
            return
        before = self._where()
        contents = {index: ("frag", report_id, index) for index in range(fragments)}
        self.crew.write_placement(placement, contents)
        self.accepted[report_id] = fragments
        self._track_moves(before)
        self._restart_both()

    @rule()
    def period_ends(self) -> None:
        """A lane period ends on both vessels."""
        gone = self.crew.release()
        self.quiet.release()
        self._sent(gone)

    @rule()
    def power_cut_between_sending_and_making_cover(self) -> None:
        """The rows left and were deleted; the power went before fresh rows were made."""
        release = self.crew.planner.plan_release(self.crew.ids)
        gone = self.crew.write_release(release, replace=False)
        self.quiet.write_release(self.quiet.planner.plan_release(self.quiet.ids), replace=False)
        self._sent(gone)
        self._restart_both()

    @rule()
    def agent_restarts(self) -> None:
        """A clean restart (or a power cut between transactions)."""
        self._restart_both()

    def _sent(self, gone: list[tuple[str, bytes, int]]) -> None:
        for content in gone:
            if content[0] == "frag":
                self.tracked.pop((content[1], content[2]))
                if content[1] in self.joined:
                    self.run_log.append(content[1])

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def the_owner_sees_the_same_reservoir_with_or_without_reports(self) -> None:
        if not hasattr(self, "crew"):
            return
        assert self.crew.disk.shape() == self.quiet.disk.shape()
        assert self.crew.disk.credit == self.quiet.disk.credit
        assert len(self.crew.disk.sent) == len(self.quiet.disk.sent)
        assert self.crew.planner.row_count <= self.params.max_rows

    @invariant()
    def no_fragment_is_lost_or_doubled(self) -> None:
        if not hasattr(self, "crew"):
            return
        on_disk = self.crew.disk.fragments()
        sent = [(c[1], c[2]) for c in self.crew.disk.sent if c[0] == "frag"]
        expected = [(report, i) for report, k in self.accepted.items() for i in range(k)]
        assert sorted(on_disk + sent) == sorted(expected)
        assert set(self.tracked) == set(on_disk)

    @invariant()
    def every_fragment_leaves_within_its_bound(self) -> None:
        if not hasattr(self, "crew"):
            return
        for fragment, seen in self.tracked.items():
            waited = self.crew.releases - seen.since
            assert waited < self.params.release_bound(seen.position), fragment

    @invariant()
    def queued_reports_take_turns(self) -> None:
        if not hasattr(self, "crew"):
            return
        pending = [r for r in self.joined if self.crew.planner.pending(r)]
        for a in pending:
            for b in pending:
                start = max(self.joined[a], self.joined[b])
                since = self.run_log[start:]
                assert abs(since.count(a) - since.count(b)) <= 1

    def teardown(self) -> None:
        if not hasattr(self, "crew"):
            return
        # the power stays on: everything committed leaves, and the reservoir settles
        for _ in range(self.params.release_bound(self.params.max_rows) + 2):
            self.period_ends()
        assert self.crew.disk.fragments() == []
        settled = max(self.params.min_rows, self.params.pool_rows)
        assert self.crew.planner.row_count == settled
        assert self.crew.planner.count(RowStatus.FREE) == settled


TestLaneMachine = LaneMachine.TestCase
TestLaneMachine.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- a report filed right after a restart ------------------------------------------------

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("file"), st.integers(1, 8)),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("crash"), st.just(0)),
    ),
    max_size=40,
)


@given(params=reservoir_params(), history=_steps, fragments=st.integers(1, 10))
@settings(max_examples=300, deadline=None)
def test_after_a_restart_a_new_report_leaves_within_2k_over_n_releases(
    params: ReservoirParams, history: list[tuple[str, int]], fragments: int
) -> None:
    """Whatever happened before (reports queued, power cuts), if a start interleaves at
    least k fresh rows (it has the credit and the room for them), a report of k blocks
    filed right after it, with no other report filed and no restart, is gone within
    ceil(2k / n) releases."""
    vessel = Vessel(params)
    serial = 0
    for step, size in history:
        if step == "file":
            serial += 1
            with contextlib.suppress(LaneFull, ReportTooLong):
                vessel.file(serial.to_bytes(8, "big"), size)
        elif step == "release":
            vessel.release()
        else:
            vessel.crash()
    credit = vessel.disk.credit
    assert credit is not None
    rows_before = len(vessel.disk.rows)
    vessel.crash()
    made = len(vessel.disk.rows) - rows_before
    if fragments > params.pool_rows or credit // 2 < fragments or made < fragments:
        return
    vessel.file(b"urgent..", fragments)
    n = params.blocks_per_period
    assert vessel.releases_until_gone(b"urgent..") <= -(-2 * fragments // n)
