"""Replay window: the shore accepts each batch once, even a year late, and acks duplicates."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol.cbor import dumps
from protocol.envelopes import BatchAck
from protocol.errors import LimitExceeded, MalformedBatch, ProtocolError, ReplayedBatch
from protocol.replay import DEFAULT_WINDOW, RangeSet, ReplayWindow, Verdict

SEQ = st.integers(min_value=1, max_value=60)


def check_shape(ranges: RangeSet) -> None:
    """The representation invariants every RangeSet keeps."""
    previous = ranges.up_to
    for first, last in ranges.ranges:
        assert first <= last
        assert first >= previous + 2  # sorted, disjoint, not adjacent, above up_to + 1
        previous = last


class RangeSetMachine(RuleBasedStateMachine):
    """A RangeSet behaves exactly like a Python set of positive integers."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges = RangeSet()
        self.model: set[int] = set()

    @rule(seq=SEQ)
    def add(self, seq: int) -> None:
        assert self.ranges.add(seq) == (seq not in self.model)
        self.model.add(seq)

    @rule(first=SEQ, length=st.integers(0, 10))
    def add_range(self, first: int, length: int) -> None:
        self.ranges.add_range(first, first + length)
        self.model.update(range(first, first + length + 1))

    @rule(other=st.lists(SEQ, max_size=8))
    def update(self, other: list[int]) -> None:
        incoming = RangeSet()
        for seq in other:
            incoming.add(seq)
        self.ranges.update(incoming)
        self.model.update(other)

    @rule(seq=st.integers(min_value=-2, max_value=75))
    def contains(self, seq: int) -> None:
        assert (seq in self.ranges) == (seq in self.model)

    @rule()
    def round_trip(self) -> None:
        assert RangeSet.from_bytes(self.ranges.to_bytes()) == self.ranges

    @rule()
    def rebuild_from_receipt(self) -> None:
        copy = RangeSet(self.ranges.up_to, self.ranges.ranges)
        assert copy == self.ranges

    @invariant()
    def same_as_model(self) -> None:
        check_shape(self.ranges)
        members = set(range(1, self.ranges.up_to + 1))
        for first, last in self.ranges.ranges:
            members.update(range(first, last + 1))
        assert members == self.model
        assert len(self.ranges) == len(self.model)
        assert self.ranges.highest == max(self.model, default=0)
        missing = {seq for first, last in self.ranges.gaps() for seq in range(first, last + 1)}
        assert missing == set(range(1, self.ranges.highest + 1)) - self.model


TestRangeSetMachine = RangeSetMachine.TestCase
TestRangeSetMachine.settings = settings(max_examples=300, stateful_step_count=40)


class ReplayWindowMachine(RuleBasedStateMachine):
    """A ReplayWindow gives the verdicts of a simple model: a set and a high-water mark."""

    WINDOW = 8

    def __init__(self) -> None:
        super().__init__()
        self.window = ReplayWindow(self.WINDOW, vessel="TH-0042")
        self.accepted: set[int] = set()

    def expected(self, seq: int) -> Verdict:
        if seq in self.accepted:
            return Verdict.DUPLICATE
        if seq < 1 or seq <= max(self.accepted, default=0) - self.WINDOW:
            return Verdict.TOO_OLD
        return Verdict.NEW

    @rule(seq=st.integers(min_value=-1, max_value=40))
    def accept(self, seq: int) -> None:
        verdict = self.expected(seq)
        assert self.window.check(seq) is verdict
        if verdict is Verdict.NEW:
            self.window.accept(seq)
            self.accepted.add(seq)
        else:
            with pytest.raises(ReplayedBatch, match=f"batch {seq} from vessel TH-0042"):
                self.window.accept(seq)

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def resend_old(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.accepted)))
        assert self.window.check(seq) is Verdict.DUPLICATE

    @rule()
    def reload(self) -> None:
        self.window = ReplayWindow.from_bytes(self.window.to_bytes(), vessel="TH-0042")

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.window.high_water == max(self.accepted, default=0)
        for seq in range(-1, 45):
            assert self.window.check(seq) is self.expected(seq)


TestReplayWindowMachine = ReplayWindowMachine.TestCase
TestReplayWindowMachine.settings = settings(max_examples=200, stateful_step_count=30)


# --- exhaustive over small universes ----------------------------------------------------------


def test_every_subset_of_twelve_numbers_in_both_orders() -> None:
    """For every pattern of lost and received batches among the first twelve, in sending
    order and in reverse, the set holds exactly what arrived."""
    universe = range(1, 13)
    for mask in range(1 << 12):
        chosen = [seq for seq in universe if mask >> (seq - 1) & 1]
        for order in (chosen, chosen[::-1]):
            ranges = RangeSet()
            for seq in order:
                ranges.add(seq)
            check_shape(ranges)
            assert [seq for seq in range(0, 14) if seq in ranges] == chosen
            assert RangeSet.from_bytes(ranges.to_bytes()) == ranges


def test_every_arrival_order_of_seven_batches() -> None:
    """Seven batches arriving in any order end as "everything up to 7", with each
    verdict right along the way."""
    for order in itertools.permutations(range(1, 8)):
        window = ReplayWindow(window=3)
        seen: set[int] = set()
        for seq in order:
            high = max(seen, default=0)
            expected = Verdict.TOO_OLD if seq <= high - 3 else Verdict.NEW
            assert window.check(seq) is expected
            if expected is Verdict.NEW:
                window.accept(seq)
                seen.add(seq)
        assert window.seen.up_to == max(seen) or window.seen.ranges
        if seen == set(range(1, 8)):
            assert window.seen == RangeSet(7)


def test_every_range_added_to_every_small_set() -> None:
    """Adding any range to any set of numbers up to ten gives their union."""
    for mask in range(1 << 10):
        chosen = {seq for seq in range(1, 11) if mask >> (seq - 1) & 1}
        for first in range(1, 12):
            for last in range(first, 12):
                ranges = RangeSet(0, [(seq, seq) for seq in chosen])
                ranges.add_range(first, last)
                check_shape(ranges)
                expected = chosen | set(range(first, last + 1))
                assert {seq for seq in range(0, 13) if seq in ranges} == expected


# --- scenarios ----------------------------------------------------------------------------------


def test_a_batch_lost_for_a_year_is_still_accepted_once() -> None:
    """A vessel's batch 5 is lost in a storm; ten batches a day later, a year on, it is
    resent from port and accepted, and a second resend is acknowledged as a duplicate."""
    window = ReplayWindow()
    for seq in range(1, 3651):
        if seq != 5:
            window.accept(seq)
    assert window.seen.ranges == ((6, 3650),)
    assert window.check(5) is Verdict.NEW
    window.accept(5)
    assert window.seen == RangeSet(3650)
    assert window.check(5) is Verdict.DUPLICATE
    with pytest.raises(ReplayedBatch, match="already accepted"):
        window.accept(5)


def test_a_duplicate_is_recognised_at_any_age() -> None:
    """A batch accepted long ago and resent after the window has moved on is still a
    duplicate (acknowledged again), not "too old"."""
    window = ReplayWindow(window=100)
    window.accept(1)
    window.accept(10_000)
    assert window.check(1) is Verdict.DUPLICATE
    assert window.check(2) is Verdict.TOO_OLD
    assert window.check(9_900) is Verdict.TOO_OLD
    assert window.check(9_901) is Verdict.NEW
    with pytest.raises(ReplayedBatch, match="too old"):
        window.accept(500)


def test_batch_zero_is_never_new() -> None:
    """Sequence numbers start at 1: a batch numbered 0 is refused, and cannot be added."""
    window = ReplayWindow()
    assert window.check(0) is Verdict.TOO_OLD
    assert window.check(-3) is Verdict.TOO_OLD
    with pytest.raises(ValueError, match="start at 1"):
        RangeSet().add(0)
    with pytest.raises(ValueError, match="first <= last"):
        RangeSet().add_range(3, 2)
    with pytest.raises(ValueError, match="negative"):
        RangeSet(-1)


def test_the_default_window_is_a_million_batches() -> None:
    """The window reaches 2^20 batches back: years of sessions for any vessel."""
    assert DEFAULT_WINDOW == 1 << 20
    window = ReplayWindow()
    window.accept(DEFAULT_WINDOW + 10)
    assert window.check(11) is Verdict.NEW
    assert window.check(10) is Verdict.TOO_OLD


def test_stored_window_is_a_few_bytes() -> None:
    """A year of a vessel's batches, with three gaps still open, stores in under 32 bytes."""
    window = ReplayWindow()
    for seq in range(1, 3651):
        if seq not in (100, 2000, 2001, 3000):
            window.accept(seq)
    stored = window.to_bytes()
    assert len(stored) < 32
    assert ReplayWindow.from_bytes(stored) == window


def test_too_many_gaps_are_refused_not_forgotten() -> None:
    """A vessel whose lost batches leave more gaps than the limit gets a clear refusal;
    nothing already recorded is forgotten."""
    window = ReplayWindow(max_ranges=3)
    for seq in (1, 3, 5, 7):
        window.accept(seq)
    before = window.seen
    with pytest.raises(LimitExceeded, match="over the limit of 3"):
        window.accept(9)
    assert window.seen == before
    window.accept(2)  # filling a gap is always possible
    window.accept(9)


def test_range_set_is_a_cumulative_receipt() -> None:
    """The shore's receipt "everything up to N plus these ranges" says the same as the set."""
    ranges = RangeSet(0, [(1, 4), (7, 9), (12, 12)])
    receipt = BatchAck(up_to=ranges.up_to, written_minutes=0, ranges=ranges.ranges or None)
    for seq in range(0, 15):
        assert receipt.covers(seq) == (seq in ranges) or seq == 0


def test_range_set_copy_and_equality() -> None:
    """A copy is independent; sets compare by members; the window hands out copies."""
    ranges = RangeSet(3, [(5, 6)])
    twin = ranges.copy()
    twin.add(4)
    assert ranges == RangeSet(3, [(5, 6)])
    assert twin == RangeSet(6)
    assert ranges != twin
    assert ranges != "RangeSet"
    assert "RangeSet(up_to=3" in repr(ranges)
    window = ReplayWindow()
    window.seen.add(5)
    assert window.check(5) is Verdict.NEW
    assert "ReplayWindow(window=" in repr(window)
    assert window != 3


def test_window_arguments_are_checked() -> None:
    """A window of zero or no room for gaps is a configuration bug, refused at once."""
    with pytest.raises(ValueError, match="window"):
        ReplayWindow(0)
    with pytest.raises(ValueError, match="max_ranges"):
        ReplayWindow(max_ranges=0)


# --- stored bytes that are not a window -------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        dumps([2, 1, [0]]),
        dumps([1, 0, [0]]),
        dumps([1, True, [0]]),
        dumps([1, 5, [0, 1]]),
        dumps([1, 5, []]),
        dumps([1, 5, [-1]]),
        dumps([1, 5, [0, False, 1]]),
        dumps([1, 5]),
        dumps({"up_to": 3}),
        dumps([1, 5, [0]]) + b"\x00",
    ],
)
def test_corrupt_stored_window_is_refused(data: bytes) -> None:
    """A damaged row in the shore's store is reported as unreadable, never half-read."""
    with pytest.raises(MalformedBatch, match="stored replay window of vessel TH-0042"):
        ReplayWindow.from_bytes(data, vessel="TH-0042")


def test_stored_range_set_is_checked() -> None:
    """Stored range sets are checked the same way, including the limit on gaps."""
    with pytest.raises(MalformedBatch):
        RangeSet.from_bytes(dumps([9, [0]]))
    with pytest.raises(MalformedBatch):
        RangeSet.from_bytes(dumps([1]))
    with pytest.raises(LimitExceeded):
        RangeSet.from_bytes(RangeSet(0, [(2, 2), (4, 4), (6, 6)]).to_bytes(), max_ranges=2)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_any_stored_bytes_read_or_raise_a_protocol_error(data: bytes) -> None:
    """Whatever bytes a broken disk returns, reading them gives a window or our own error."""
    for reader in (ReplayWindow.from_bytes, RangeSet.from_bytes):
        with contextlib.suppress(ProtocolError):
            reader(data)
