"""Strict CBOR: only our subset gets to cbor2, within the depth and length limits.

Integers, byte and text strings, arrays, maps, false/true/null, definite lengths, exactly
one item: everything else (tags, floats, indefinite lengths, trailing bytes, strings
claiming more bytes than there are) is refused with a typed error before decoding.
"""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cbor import check_cbor, dumps, strict_loads
from protocol.errors import LimitExceeded, MalformedBatch, ProtocolError

scalars = (
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=40)
    | st.booleans()
    | st.none()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.integers(min_value=-50, max_value=50), inner, max_size=6)
    ),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


@given(values)
def test_our_subset_round_trips(value: object) -> None:
    """Anything built from our subset decodes back to itself."""
    assert strict_loads(dumps(value), max_depth=_depth(value), max_length=6, what="t") == value


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_our_errors(data: bytes) -> None:
    """Random bytes never raise anything but a protocol error."""
    with contextlib.suppress(ProtocolError):
        strict_loads(data, max_depth=4, max_length=16, what="random")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (cbor2.dumps(1.5), "float or simple value"),
        (bytes.fromhex("c11a514b67b0"), "tag"),  # a date
        (bytes.fromhex("d81c80"), "tag"),  # a shared reference
        (bytes.fromhex("9f01ff"), "indefinite"),
        (bytes.fromhex("5f41004100ff"), "indefinite"),
        (bytes.fromhex("0102"), "stray bytes"),
        (bytes.fromhex("5a00010000"), "claims more bytes"),
        (bytes.fromhex("83"), "cut short"),
        (bytes.fromhex("19"), "cut short"),
        (bytes.fromhex("f7"), "simple value"),  # undefined
        (bytes.fromhex("1c"), "reserved"),
        (b"", "cut short"),
    ],
)
def test_outside_the_subset_is_malformed(data: bytes, words: str) -> None:
    """Each refusal names what was found."""
    with pytest.raises(MalformedBatch, match=words):
        strict_loads(data, max_depth=5, max_length=100, what="test data")


def test_depth_and_length_limits() -> None:
    """Nesting deeper than allowed, or a container longer, raises LimitExceeded first."""
    with pytest.raises(LimitExceeded, match="deeper than 2"):
        check_cbor(dumps([[[1]]]), max_depth=2, max_length=10)
    check_cbor(dumps([[1]]), max_depth=2, max_length=10)
    with pytest.raises(LimitExceeded, match="11 items, over the limit of 10"):
        check_cbor(dumps(list(range(11))), max_depth=2, max_length=10)
    with pytest.raises(LimitExceeded, match="over the limit of 10"):
        check_cbor(dumps({i: i for i in range(11)}), max_depth=2, max_length=10)


def test_huge_declared_container_is_refused_before_allocating() -> None:
    """An array header claiming 2**32 items costs nothing: refused from its head."""
    with pytest.raises(LimitExceeded):
        check_cbor(bytes.fromhex("9b0000000100000000"), max_depth=2, max_length=4096)


def test_duplicate_map_keys_are_refused() -> None:
    """A map with the same key twice is ambiguous: refused."""
    with pytest.raises(MalformedBatch):
        strict_loads(bytes.fromhex("a2010201 03"), max_depth=2, max_length=4, what="map")


def test_dumps_is_canonical() -> None:
    """Shortest integer heads, sorted map keys: the same value always gives the same bytes."""
    assert dumps({2: 1, 1: 2}) == bytes.fromhex("a201020201")
    assert dumps(23) == b"\x17"
    assert dumps(24) == b"\x18\x18"
