"""Skeleton columns: envelope maps stored column by column, with delta-coded numbers.

Transposing and back gives the same maps for any mix of kinds; columns that do not add
up (too short, too long, bad masks, bad deltas) are malformed batches.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.envelopes import Envelope, to_skeleton
from protocol.errors import LimitExceeded, MalformedBatch
from protocol.skeleton import PRESENCE_KEY, from_columns, to_columns
from tests.protocol.test_envelopes import any_envelope, minutes


@given(envelopes=st.lists(any_envelope, min_size=1, max_size=15), batch_minutes=minutes)
@settings(max_examples=150, deadline=None)
def test_columns_round_trip(envelopes: list[Envelope], batch_minutes: int) -> None:
    """Any mix of kinds transposes to columns and back to the same maps."""
    entries = [to_skeleton(envelope, batch_minutes) for envelope in envelopes]
    columns = to_columns(entries)
    assert from_columns(columns, max_envelopes=100) == entries
    assert all(len(column) <= len(entries) for column in columns.values())


def test_sequence_numbers_and_times_travel_as_small_deltas() -> None:
    """Consecutive message numbers cost one small integer each: the delta 1."""
    entries = [{0: 4, 4: 0, 1: 1000 + i, 9: 1} for i in range(5)]
    columns = to_columns(entries)
    assert columns[1] == [1000, 1, 1, 1, 1]
    assert columns[4] == [0, 0, 0, 0, 0]
    assert PRESENCE_KEY not in columns  # receipts have no optional fields


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        ({0: [4], 4: [0], 1: [1]}, "column 9 is too short"),
        ({0: [4], 4: [0], 1: [1], 9: [1, 2]}, "column 9 has values no envelope uses"),
        ({0: [4], 4: [0], 1: ["x"], 9: [1]}, "not a number"),
        ({0: [4], 4: [0], 1: [2**53], 9: [1]}, "runs out of range"),
        ({0: [4, 4], 4: [0, 0], 1: [2**52, 2**52], 9: [1, 1]}, "runs out of range"),
        ({0: [1], 4: [0], 1: [1], 2: [0], 3: [0], 6: [1], 31: [-1]}, "not a bit mask"),
        ({0: [1], 4: [0], 1: [1], 2: [0], 3: [0], 6: [1], 31: [16]}, "names fields"),
        ({0: [1], 4: [0], 1: [1], 2: [0], 3: [0], 6: [1]}, "column 31 is too short"),
        ({0: [True], 4: [0]}, "not a number"),
        ({0: [99]}, "not known to this version"),
        ({0: []}, "no envelopes"),
        ({}, "no envelopes"),
        ({0: 4}, "not a map of columns"),
        ({"0": [4]}, "not a map of columns"),
        ([4], "not a map of columns"),
    ],
)
def test_columns_that_do_not_add_up(columns: object, words: str) -> None:
    """Every mismatch is a MalformedBatch naming the column or value."""
    with pytest.raises(MalformedBatch, match=words):
        from_columns(columns, max_envelopes=100)


def test_envelope_count_limit() -> None:
    """More envelopes than allowed is a LimitExceeded, before any is rebuilt."""
    with pytest.raises(LimitExceeded, match="3 envelopes, over the limit of 2"):
        from_columns({0: [4, 4, 4]}, max_envelopes=2)
