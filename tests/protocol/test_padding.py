"""Padmé padding: every batch's length on the wire is a size class, at a few percent cost.

A batch padded to its class must still decode exactly, the padding must sit inside the
signed part, and a padding item that holds anything but zeros is refused.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cbor import strict_loads
from protocol.errors import LocalProtocolError
from protocol.padding import is_padme, padme, zero_padding_item

#: Padmé's classes for small lengths, worked out by hand from the definition.
KNOWN = {
    0: 0,
    1: 1,
    2: 2,
    3: 3,
    7: 7,
    8: 8,
    9: 10,
    17: 18,
    33: 36,
    100: 104,
    255: 256,
    257: 272,
    1000: 1024,
    1025: 1088,
    65_537: 67_584,
}


@pytest.mark.parametrize(("length", "padded"), sorted(KNOWN.items()))
def test_known_classes(length: int, padded: int) -> None:
    """Hand-checked classes: 100 bytes go to 104, 1,000 to 1,024, 65,537 to 67,584."""
    assert padme(length) == padded


@given(st.integers(min_value=0, max_value=2**40))
def test_class_is_smallest_fitting_and_idempotent(length: int) -> None:
    """The class is at least the length, is its own class, and nothing between fits."""
    padded = padme(length)
    assert padded >= length
    assert padme(padded) == padded
    assert is_padme(padded)
    # Padmé keeps the top bits: everything below the class is a lower class or the length.
    if length > 0:
        assert padme(length - 1) <= padded


@given(st.integers(min_value=2, max_value=2**40))
def test_overhead_is_a_few_percent(length: int) -> None:
    """Overhead is below 1/(2 log2 L) + rounding: under 12% from 100 B, 6.3% from 1 KB."""
    overhead = (padme(length) - length) / length
    if length >= 100:
        assert overhead < 0.12
    if length >= 1000:
        assert overhead < 0.063
    if length >= 100_000:
        assert overhead < 0.04


def test_classes_are_few() -> None:
    """Between 1 KiB and 2 KiB there are 16 classes (4 bits after the top one), not 1,024."""
    classes = {padme(n) for n in range(1025, 2049)}
    assert len(classes) == 16


@pytest.mark.parametrize("bad", [-1, True, 1.5, "10"])
def test_bad_lengths_refused(bad: object) -> None:
    """A negative or non-integer length is our own bug: a typed local error."""
    with pytest.raises(LocalProtocolError, match="whole number of bytes"):
        padme(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [*range(1, 300), 65_537, 65_538, 65_539, 70_000])
def test_padding_item_takes_exactly_its_size(size: int) -> None:
    """Every size is reachable, including 25 and 258 where the short CBOR head jumps."""
    item = zero_padding_item(size)
    assert len(item) == size
    value = strict_loads(item, max_depth=1, max_length=1, what="padding")
    assert value == bytes(len(value))  # type: ignore[arg-type]


def test_padding_item_of_zero_bytes_refused() -> None:
    """A padding item is at least its one-byte head."""
    with pytest.raises(LocalProtocolError, match="at least 1 byte"):
        zero_padding_item(0)
