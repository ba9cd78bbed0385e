"""Replay window: which batch sequence numbers of a vessel the shore has already accepted.

Batch sequence numbers start at 1 (0 is never a batch). The shore keeps, per vessel,
the set of accepted numbers as a :class:`RangeSet`: "everything up to ``up_to``, plus
these ranges" (inclusive ``(first, last)`` pairs, sorted, disjoint and not adjacent).
The same shape is a cumulative receipt (:class:`protocol.envelopes.BatchAck`), so a
receipt is ``BatchAck(up_to=s.up_to, ranges=s.ranges or None, ...)``.

:class:`ReplayWindow` adds the high-water mark (the highest accepted number) and a
window below it, :data:`DEFAULT_WINDOW` = 2^20 numbers: a batch may arrive up to a
year late (a vessel back in port, a lost satellite session) and still be accepted. Its
answer for a number is a :class:`Verdict`:

* ``DUPLICATE``: accepted before, at any age. The shore acknowledges it again (to the
  sender a duplicate counts as done) and stores nothing.
* ``TOO_OLD``: never accepted, and more than the window below the high-water mark;
  the shore can no longer tell, so it refuses the batch.
* ``NEW``: accept it.

A vessel sends its batches in order and resends lost ones, so the set stays a handful
of ranges; it is stored compactly (CBOR, ranges as small deltas, a few bytes in all).
Every operation is pure in-memory arithmetic: no clock, no storage.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from enum import Enum

from protocol.cbor import dumps, strict_loads
from protocol.errors import LimitExceeded, MalformedBatch, ReplayedBatch

__all__ = ["DEFAULT_WINDOW", "MAX_RANGES", "RangeSet", "ReplayWindow", "Verdict"]

#: How far below the high-water mark a never-seen number is still accepted.
DEFAULT_WINDOW = 1 << 20
#: Most separate ranges kept (each one is a gap: batches lost and not yet resent).
MAX_RANGES = 4096

_FORMAT_VERSION = 1


class RangeSet:
    """A set of positive integers: all of ``1..up_to``, plus inclusive ranges above it.

    ``ranges`` is always sorted, disjoint and not adjacent, and starts above
    ``up_to + 1`` (a range touching ``up_to`` is folded into it). Mutable: :meth:`add`
    and :meth:`add_range` change the set in place.
    """

    __slots__ = ("_firsts", "_lasts", "_up_to")

    def __init__(self, up_to: int = 0, ranges: Iterable[tuple[int, int]] = ()) -> None:
        if up_to < 0:
            raise ValueError(f"up_to must not be negative, not {up_to}")
        self._up_to = up_to
        self._firsts: list[int] = []
        self._lasts: list[int] = []
        for first, last in ranges:
            self.add_range(first, last)

    # --- reading -----------------------------------------------------------------------

    @property
    def up_to(self) -> int:
        """Every number from 1 to ``up_to`` is in the set (0: none of them)."""
        return self._up_to

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """The inclusive ranges above ``up_to + 1``, in order."""
        return tuple(zip(self._firsts, self._lasts, strict=True))

    @property
    def highest(self) -> int:
        """The highest number in the set (0 when it is empty)."""
        return self._lasts[-1] if self._lasts else self._up_to

    def __contains__(self, seq: object) -> bool:
        return isinstance(seq, int) and self.contains(seq)

    def contains(self, seq: int) -> bool:
        """Whether ``seq`` is in the set."""
        if seq < 1:
            return False
        if seq <= self._up_to:
            return True
        i = bisect_right(self._firsts, seq) - 1
        return i >= 0 and seq <= self._lasts[i]

    def __len__(self) -> int:
        return self._up_to + sum(
            last - first + 1 for first, last in zip(self._firsts, self._lasts, strict=True)
        )

    def gaps(self) -> tuple[tuple[int, int], ...]:
        """The missing inclusive ranges between 1 and :attr:`highest` (what to resend)."""
        missing: list[tuple[int, int]] = []
        previous = self._up_to
        for first, last in zip(self._firsts, self._lasts, strict=True):
            missing.append((previous + 1, first - 1))
            previous = last
        return tuple(missing)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return (self._up_to, self._firsts, self._lasts) == (
            other._up_to,
            other._firsts,
            other._lasts,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"RangeSet(up_to={self._up_to}, ranges={self.ranges!r})"

    def copy(self) -> RangeSet:
        """An independent copy."""
        twin = RangeSet(self._up_to)
        twin._firsts = list(self._firsts)
        twin._lasts = list(self._lasts)
        return twin

    # --- changing ------------------------------------------------------------------------

    def add(self, seq: int) -> bool:
        """Add ``seq`` (at least 1); whether it was new."""
        if seq < 1:
            raise ValueError(f"sequence numbers start at 1, not {seq}")
        if self.contains(seq):
            return False
        self.add_range(seq, seq)
        return True

    def add_range(self, first: int, last: int) -> None:
        """Add every number from ``first`` to ``last`` inclusive (``1 <= first <= last``)."""
        if first < 1 or last < first:
            raise ValueError(f"a range is 1 <= first <= last, not ({first}, {last})")
        if last <= self._up_to:
            return
        first = max(first, self._up_to + 1)
        # Ranges that overlap or touch [first, last] are merged with it.
        low = bisect_left(self._lasts, first - 1)
        high = bisect_right(self._firsts, last + 1)
        if low < high:
            first = min(first, self._firsts[low])
            last = max(last, self._lasts[high - 1])
        self._firsts[low:high] = [first]
        self._lasts[low:high] = [last]
        if self._firsts[0] == self._up_to + 1:
            self._up_to = self._lasts[0]
            del self._firsts[0], self._lasts[0]

    def update(self, other: RangeSet) -> None:
        """Add every number of ``other`` (for example a cumulative receipt)."""
        if other.up_to:
            self.add_range(1, other.up_to)
        for first, last in other.ranges:
            self.add_range(first, last)

    # --- bytes ---------------------------------------------------------------------------

    def _to_wire(self) -> list[int]:
        """``[up_to, gap, length, gap, length, ...]``: each range as the count of missing
        numbers before it, less one, and its length less one (both small, never negative)."""
        wire = [self._up_to]
        previous = self._up_to
        for first, last in zip(self._firsts, self._lasts, strict=True):
            wire += [first - previous - 2, last - first]
            previous = last
        return wire

    @classmethod
    def _from_wire(cls, wire: object, what: str, max_ranges: int) -> RangeSet:
        if not isinstance(wire, list) or not wire or len(wire) % 2 != 1:
            raise MalformedBatch(f"{what}: ranges are not [up_to, gap, length, ...]")
        if not all(type(value) is int and value >= 0 for value in wire):
            raise MalformedBatch(f"{what}: ranges hold something other than whole numbers")
        if (len(wire) - 1) // 2 > max_ranges:
            raise LimitExceeded(
                f"{what}: {(len(wire) - 1) // 2} ranges, over the limit of {max_ranges}"
            )
        numbers = [int(value) for value in wire]  # type narrowing for mypy
        result = cls(numbers[0])
        previous = numbers[0]
        for i in range(1, len(numbers), 2):
            first = previous + numbers[i] + 2
            last = first + numbers[i + 1]
            result._firsts.append(first)
            result._lasts.append(last)
            previous = last
        return result

    def to_bytes(self) -> bytes:
        """Compact CBOR bytes, read back by :meth:`from_bytes`."""
        return dumps([_FORMAT_VERSION, self._to_wire()])

    @classmethod
    def from_bytes(cls, data: bytes, *, max_ranges: int = MAX_RANGES) -> RangeSet:
        """Read :meth:`to_bytes` output; raises :class:`MalformedBatch` or
        :class:`LimitExceeded` for bytes that are not one within ``max_ranges``."""
        what = "stored range set"
        decoded = strict_loads(data, max_depth=2, max_length=2 * max_ranges + 1, what=what)
        if not (isinstance(decoded, list) and len(decoded) == 2):
            raise MalformedBatch(f"{what}: not [version, ranges]")
        if decoded[0] != _FORMAT_VERSION:
            raise MalformedBatch(f"{what}: version {decoded[0]!r}, this code reads 1")
        return cls._from_wire(decoded[1], what, max_ranges)


class Verdict(Enum):
    """What the replay window says about a batch sequence number."""

    NEW = "new"
    DUPLICATE = "duplicate"
    TOO_OLD = "too old"


class ReplayWindow:
    """A vessel's accepted batch numbers: the high-water mark and a window below it.

    ``vessel`` only names the vessel in error messages (for example ``"TH-0042"``).
    """

    __slots__ = ("_seen", "max_ranges", "vessel", "window")

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        seen: RangeSet | None = None,
        *,
        vessel: str | None = None,
        max_ranges: int = MAX_RANGES,
    ) -> None:
        if window < 1:
            raise ValueError(f"the window must be at least 1, not {window}")
        if max_ranges < 1:
            raise ValueError(f"max_ranges must be at least 1, not {max_ranges}")
        self.window = window
        self.vessel = vessel
        self.max_ranges = max_ranges
        self._seen = RangeSet() if seen is None else seen.copy()

    @property
    def seen(self) -> RangeSet:
        """A copy of the accepted numbers (the shape of a cumulative receipt)."""
        return self._seen.copy()

    @property
    def high_water(self) -> int:
        """The highest accepted number (0 before the first)."""
        return self._seen.highest

    @property
    def floor(self) -> int:
        """Numbers at or below this that were never accepted are ``TOO_OLD``."""
        return max(0, self.high_water - self.window)

    def check(self, seq: int) -> Verdict:
        """The verdict on ``seq``, without changing anything (0 or less is ``TOO_OLD``)."""
        if self._seen.contains(seq):
            return Verdict.DUPLICATE
        if seq <= self.floor or seq < 1:
            return Verdict.TOO_OLD
        return Verdict.NEW

    def accept(self, seq: int) -> None:
        """Record ``seq`` as accepted; raises :class:`ReplayedBatch` unless it is ``NEW``.

        Raises :class:`LimitExceeded` (and records nothing) when accepting it would leave
        more than ``max_ranges`` separate ranges.
        """
        verdict = self.check(seq)
        name = self._name(seq)
        if verdict is Verdict.DUPLICATE:
            raise ReplayedBatch(f"{name} was already accepted: acknowledge it again, store nothing")
        if verdict is Verdict.TOO_OLD:
            raise ReplayedBatch(
                f"{name} is more than {self.window:,} below the highest accepted batch "
                f"({self.high_water}), too old to tell whether it was seen: refuse it"
            )
        trial = self._seen.copy()
        trial.add(seq)
        if len(trial.ranges) > self.max_ranges:
            raise LimitExceeded(
                f"{name} would leave {len(trial.ranges)} gaps in the accepted batches, over "
                f"the limit of {self.max_ranges}; the vessel must resend the missing ones"
            )
        self._seen = trial

    def _name(self, seq: int) -> str:
        return f"batch {seq}" + (f" from vessel {self.vessel}" if self.vessel else "")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplayWindow):
            return NotImplemented
        return (self.window, self._seen) == (other.window, other._seen)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ReplayWindow(window={self.window}, seen={self._seen!r})"

    def to_bytes(self) -> bytes:
        """Compact CBOR bytes: ``[1, window, [up_to, gap, length, ...]]``."""
        return dumps([_FORMAT_VERSION, self.window, self._seen._to_wire()])

    @classmethod
    def from_bytes(
        cls, data: bytes, *, vessel: str | None = None, max_ranges: int = MAX_RANGES
    ) -> ReplayWindow:
        """Read :meth:`to_bytes` output; raises :class:`MalformedBatch` or
        :class:`LimitExceeded` for bytes that are not a window within ``max_ranges``."""
        what = "stored replay window" + (f" of vessel {vessel}" if vessel else "")
        decoded = strict_loads(data, max_depth=2, max_length=2 * max_ranges + 1, what=what)
        if not (isinstance(decoded, list) and len(decoded) == 3):
            raise MalformedBatch(f"{what}: not [version, window, ranges]")
        version, window, wire = decoded
        if version != _FORMAT_VERSION:
            raise MalformedBatch(f"{what}: version {version!r}, this code reads 1")
        if not (type(window) is int and window >= 1):
            raise MalformedBatch(f"{what}: window {window!r} is not a positive whole number")
        seen = RangeSet._from_wire(wire, what, max_ranges)
        result = cls(window, vessel=vessel, max_ranges=max_ranges)
        result._seen = seen
        return result
