"""Wire bounds (issue 18): times from 1970 to before the year 3000, batches numbered from 1.

A batch that breaks them is refused as malformed even when its signature verifies, so no
receiver ever computes a date from a time ``datetime`` cannot hold (the tester's batch
said ``written_minutes = 2**32 - 1``: the year 10136) or files a batch under number 0.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch, encode_batch
from protocol.envelopes import AGE_KEY, CrewMessage
from protocol.errors import LocalProtocolError, MalformedBatch
from protocol.languages import Language
from protocol.limits import MAX_MINUTES, minutes_in_range
from tests.protocol.mutants import OpenBatch
from tests.protocol.test_envelopes import VESSEL_KEY

CODEBOOK = default_codebook()
M = 29_000_000


def _batch(batch_seq: int = 5, minutes: int = M) -> bytes:
    message = CrewMessage(
        message_seq=1, crew=2, contact=3, written_minutes=M, lang=Language.ENG, body="hello"
    )
    return encode_batch(
        [message],
        direction=Direction.UPLINK,
        vessel_id=42,
        batch_seq=batch_seq,
        batch_minutes=minutes,
        signing_key=VESSEL_KEY,
        codebook=CODEBOOK,
    )


def _decode(data: bytes) -> object:
    return decode_batch(data, codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key)


def test_the_bound_is_the_year_3000_and_every_time_below_it_is_a_date() -> None:
    """MAX_MINUTES is 3000-01-01 00:00 UTC; the last minute before it, in any time zone,
    and the month after it, are dates ``datetime`` can hold (what receivers compute)."""
    assert datetime.fromtimestamp(MAX_MINUTES * 60, UTC) == datetime(3000, 1, 1, tzinfo=UTC)
    last = datetime.fromtimestamp((MAX_MINUTES - 1) * 60, UTC)
    for hours in (-12, 14):
        last.astimezone(timezone(timedelta(hours=hours)))
    assert datetime(last.year + 1, 1, 1, tzinfo=UTC).year == 3000
    assert datetime.fromtimestamp(0, UTC).year == 1970
    assert minutes_in_range(0)
    assert minutes_in_range(MAX_MINUTES - 1)
    for outside in (-1, MAX_MINUTES, 2**32 - 1, 2**53, True, 1.5, "7"):
        assert not minutes_in_range(outside)


@pytest.mark.parametrize(
    ("batch_seq", "minutes", "words"),
    [
        (0, M, "batch_seq starts at 1"),
        (1, MAX_MINUTES, "before the year 3000"),
        (1, 2**32 - 1, "check the clock"),
    ],
)
def test_encoder_refuses_batch_numbers_and_times_off_the_wire(
    batch_seq: int, minutes: int, words: str
) -> None:
    """Our own side never makes such a batch: it is a local error naming the field."""
    with pytest.raises(LocalProtocolError, match=words):
        _batch(batch_seq, minutes)


@pytest.mark.parametrize(
    ("index", "value", "words"),
    [
        (1, 0, "batch 0"),
        (2, MAX_MINUTES, "not a time from 0 to"),
        (2, 2**32 - 1, "before the year 3000"),
    ],
)
def test_signed_header_with_batch_zero_or_an_impossible_time_is_malformed(
    index: int, value: int, words: str
) -> None:
    """The sender signed it (a changed agent can): still malformed, with the reason."""
    batch = OpenBatch.open(_batch(), CODEBOOK)
    batch.header[index] = value
    with pytest.raises(MalformedBatch, match=words):
        _decode(batch.seal(CODEBOOK, VESSEL_KEY))


@pytest.mark.parametrize("written", [-1, MAX_MINUTES, 2**32 - 1, 2**53 - 1])
def test_signed_envelope_written_outside_the_range_is_malformed(written: int) -> None:
    """The tester's batch and its neighbours: an envelope "written" in the year 10136 (or
    before 1970) makes the batch malformed, naming the field; nothing else escapes."""
    batch = OpenBatch.open(_batch(), CODEBOOK)
    entries = batch.entries()
    entries[0][AGE_KEY] = M - written
    batch.set_entries(entries)
    with pytest.raises(MalformedBatch, match="written_minutes"):
        _decode(batch.seal(CODEBOOK, VESSEL_KEY))


@pytest.mark.parametrize("written", [0, MAX_MINUTES - 1])
def test_signed_envelope_at_the_edges_of_the_range_decodes(written: int) -> None:
    """1970-01-01 00:00 and 2999-12-31 23:59 are still times a batch may carry."""
    batch = OpenBatch.open(_batch(), CODEBOOK)
    entries = batch.entries()
    entries[0][AGE_KEY] = M - written
    batch.set_entries(entries)
    decoded = decode_batch(
        batch.seal(CODEBOOK, VESSEL_KEY), codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key
    )
    assert decoded.envelopes[0].written_minutes == written
