"""Fragments: a batch cut into Iridium SBD messages comes back whole, once, in any order."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.compact import COMPACT_UPLINK
from protocol.errors import LocalProtocolError, MalformedBatch, ProtocolError
from protocol.fragments import (
    FRAGMENT_HEADER_BYTES,
    SBD_MO_BYTES,
    SBD_MT_BYTES,
    PayloadKind,
    Reassembler,
    fragment,
)


def test_a_short_payload_costs_one_byte_of_framing() -> None:
    """A lone compact message of 49 bytes goes in one SBD message of 50 (one credit)."""
    messages = fragment(b"x" * 49, PayloadKind.COMPACT, SBD_MO_BYTES)
    assert messages == [bytes([PayloadKind.COMPACT]) + b"x" * 49]
    assert len(messages[0]) == 50


def test_every_message_fits_the_link() -> None:
    """A 2 KB batch becomes MO messages of at most 340 bytes and MT ones of at most 270."""
    payload = random.Random(1).randbytes(2048)
    for mtu in (SBD_MO_BYTES, SBD_MT_BYTES):
        messages = fragment(payload, PayloadKind.BATCH, mtu)
        assert all(len(m) <= mtu for m in messages)
        assert sum(len(m) - FRAGMENT_HEADER_BYTES for m in messages) == len(payload)
        assert len(messages) == -(-len(payload) // (mtu - FRAGMENT_HEADER_BYTES))


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=3000),
    mtu=st.sampled_from([SBD_MO_BYTES, SBD_MT_BYTES, 50]),
    seed=st.integers(0, 2**32),
    duplicates=st.integers(0, 5),
)
def test_any_order_with_duplicates_gives_the_payload_once(
    payload: bytes, mtu: int, seed: int, duplicates: int
) -> None:
    """Fragments arriving shuffled, some twice, give the payload exactly once to a receiver
    that remembers what it completed, and never anything but the payload to one that does
    not (a duplicate of the last piece may then hand it on again: idempotent receivers)."""
    messages = fragment(payload, PayloadKind.BATCH, mtu)
    rng = random.Random(seed)
    arriving = messages + [rng.choice(messages) for _ in range(duplicates)]
    rng.shuffle(arriving)
    remembering = Reassembler(remember=16)
    out = [r for m in arriving if (r := remembering.add(m, 0.0)) is not None]
    assert len(out) == 1
    assert out[0].payload == payload
    assert out[0].kind is PayloadKind.BATCH
    assert remembering.in_progress == 0
    forgetful = Reassembler()
    again = [r for m in arriving if (r := forgetful.add(m, 0.0)) is not None]
    assert 1 <= len(again) <= 1 + duplicates
    assert {r.payload for r in again} == {payload}


def test_a_resend_after_completion_is_dropped_when_asked() -> None:
    """A receiver that is not idempotent remembers what it completed: a whole resend is
    then not handed out twice."""
    messages = fragment(bytes(1000), PayloadKind.BATCH, SBD_MO_BYTES)
    reassembler = Reassembler(remember=16)
    done = [reassembler.add(m, 0.0) for m in messages]
    assert done[-1] is not None
    assert all(reassembler.add(m, 1.0) is None for m in messages)
    assert reassembler.statistics.duplicates_dropped == len(messages)


def test_pieces_of_two_payloads_never_mix() -> None:
    """A fragment whose bytes were garbled in transit makes the whole fail, not a wrong batch."""
    payload = random.Random(2).randbytes(900)
    messages = fragment(payload, PayloadKind.BATCH, SBD_MO_BYTES)
    garbled = bytearray(messages[1])
    garbled[-1] ^= 0x01
    reassembler = Reassembler()
    reassembler.add(messages[0], 0.0)
    reassembler.add(bytes(garbled), 0.0)
    with pytest.raises(MalformedBatch, match="tag"):
        reassembler.add(messages[2], 0.0)
    # the sender's resend (byte-identical) then completes it
    out = [reassembler.add(m, 1.0) for m in messages]
    assert out[-1] is not None
    assert out[-1].payload == payload


def test_a_contradicting_duplicate_drops_the_payload_in_progress() -> None:
    """Two different pieces claiming the same place: refused, the partial payload dropped."""
    messages = fragment(bytes(700), PayloadKind.BATCH, SBD_MO_BYTES)
    reassembler = Reassembler()
    reassembler.add(messages[0], 0.0)
    forged = messages[0][:-1] + b"\x01"
    with pytest.raises(MalformedBatch, match="twice"):
        reassembler.add(forged, 0.0)
    assert reassembler.in_progress == 0


def test_memory_is_bounded_and_old_partials_expire() -> None:
    """A peer sending first fragments only cannot make the reassembler grow without end."""
    reassembler = Reassembler(max_partial=4, max_age_s=100.0)
    for n in range(10):
        first = fragment(n.to_bytes(2, "big") * 400, PayloadKind.BATCH, SBD_MO_BYTES)[0]
        reassembler.add(first, float(n))
    assert reassembler.in_progress == 4
    assert reassembler.statistics.evicted == 6
    lone = fragment(bytes(700), PayloadKind.BATCH, SBD_MO_BYTES)[0]
    reassembler.add(lone, 500.0)
    assert reassembler.in_progress == 1
    assert reassembler.statistics.expired == 4


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_reassemble_or_raise_our_error(data: bytes) -> None:
    """Whatever the provider hands over either is taken or raises a ProtocolError."""
    reassembler = Reassembler()
    with contextlib.suppress(ProtocolError):
        reassembler.add(data, 0.0)


def test_misuse_is_local() -> None:
    """An empty payload, a tiny MTU or a payload too big for 255 fragments is our bug."""
    with pytest.raises(LocalProtocolError):
        fragment(b"", PayloadKind.BATCH, SBD_MO_BYTES)
    with pytest.raises(LocalProtocolError):
        fragment(b"x", PayloadKind.BATCH, FRAGMENT_HEADER_BYTES)
    with pytest.raises(LocalProtocolError, match="smaller batches"):
        fragment(bytes(256 * 333 + 1), PayloadKind.BATCH, SBD_MO_BYTES)


def test_a_payload_the_receiver_could_not_keep_is_taken_again() -> None:
    """The relay's store failed after reassembly: the vessel's resend is rebuilt, not dropped."""
    messages = fragment(bytes(range(256)) * 3, PayloadKind.BATCH, SBD_MO_BYTES)
    reassembler = Reassembler(remember=16)
    done = [r for m in messages if (r := reassembler.add(m, 0.0)) is not None]
    reassembler.forget(done[0])
    again = [r for m in messages if (r := reassembler.add(m, 1.0)) is not None]
    assert [r.payload for r in again] == [done[0].payload]


def test_a_whole_resend_is_handed_on_again_by_default() -> None:
    """The vessel resends a batch whose acknowledgement it never got: the relay must see
    it again (its ingest is idempotent and acknowledges duplicates), or the vessel would
    wait for an acknowledgement forever."""
    messages = fragment(bytes(1000), PayloadKind.BATCH, SBD_MO_BYTES)
    reassembler = Reassembler()
    first = [r for m in messages if (r := reassembler.add(m, 0.0)) is not None]
    again = [r for m in messages if (r := reassembler.add(m, 1.0)) is not None]
    assert len(first) == len(again) == 1
    assert reassembler.in_progress == 0


def test_a_compact_frame_of_one_credit_goes_bare_and_stays_one_credit() -> None:
    """A lone SOS as a 50-byte compact frame (first byte 0x03) leaves as exactly those 50
    bytes: one SBD credit, not two for one byte of framing; the receiver knows it by that
    first byte and hands it on whole as a compact frame."""
    frame = bytes([COMPACT_UPLINK]) + random.Random(5).randbytes(49)
    messages = fragment(frame, PayloadKind.COMPACT, SBD_MO_BYTES)
    assert messages == [frame]
    whole = Reassembler().add(messages[0], 0.0)
    assert whole is not None
    assert (whole.kind, whole.payload, whole.fragments) == (PayloadKind.COMPACT, frame, 1)


def test_a_bare_compact_frame_sent_again_is_handed_on_again_or_dropped_if_remembered() -> None:
    """The vessel resends a compact frame whose acknowledgement was lost: a receiver that
    is idempotent gets it again (to acknowledge it again); one that remembers drops it."""
    frame = bytes([COMPACT_UPLINK]) + b"\x2a" + random.Random(6).randbytes(98)
    forgetful, remembering = Reassembler(), Reassembler(remember=8)
    assert forgetful.add(frame, 0.0) is not None
    assert forgetful.add(frame, 1.0) is not None
    assert remembering.add(frame, 0.0) is not None
    assert remembering.add(frame, 1.0) is None
    assert remembering.statistics.duplicates_dropped == 1


def test_a_compact_frame_longer_than_a_message_goes_as_compact_fragments() -> None:
    """A compact frame of 400 bytes does not fit one 340-byte message: it is cut into
    fragments of kind COMPACT, which come back whole in any order."""
    frame = bytes([COMPACT_UPLINK]) + random.Random(7).randbytes(399)
    messages = fragment(frame, PayloadKind.COMPACT, SBD_MO_BYTES)
    assert len(messages) == 2
    assert all(m[0] == PayloadKind.COMPACT | 0x80 for m in messages)
    reassembler = Reassembler()
    assert reassembler.add(messages[1], 0.0) is None
    whole = reassembler.add(messages[0], 0.0)
    assert whole is not None
    assert (whole.kind, whole.payload) == (PayloadKind.COMPACT, frame)
