"""Lane blocks: fixed-size sealed blocks up (report fragments) and down (case notes).

A union opens only the blocks sealed to it, whatever else rides the lane; a report of any
length comes back whole from its blocks in any order, duplicated or mixed with cover;
any bytes either open to a valid fragment, return None, or raise our own errors; cover
and real blocks have one length and no byte that tells them apart.
"""

from __future__ import annotations

import random

import nacl.public
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import lane
from protocol.cases import CaseNote, reporter_reply_keys, seal_case_note
from protocol.envelopes import CaseStatus
from protocol.errors import (
    InvalidEnvelope,
    LimitExceeded,
    ProtocolError,
    RemoteProtocolError,
    SealedBoxInvalid,
)
from protocol.lane import (
    BLOCK_OVERHEAD,
    MAX_FRAGMENTS,
    MAX_REPORT_BYTES,
    Fragment,
    FragmentConflict,
    LaneShape,
    MalformedLaneBlock,
    Reassembler,
    ReassemblyLimit,
)
from protocol.languages import Language
from protocol.sealing import unpad

UNION = nacl.public.PrivateKey(bytes(range(1, 33)))
OTHER_UNION = nacl.public.PrivateKey(bytes(range(33, 65)))
BLOCK_SIZES = (128, 384, 480, 1024)
REPORT_ID = bytes.fromhex("0011223344556677")


def _throwaway() -> bytes:
    """A cover key: its private half is dropped at once, as the agent and relay do."""
    return bytes(nacl.public.PrivateKey.generate().public_key)


def _report(length: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(length)


# --- shape ---------------------------------------------------------------------------------


def test_default_shape_costs_and_carries_what_it_says() -> None:
    """The default lane: one 384-byte block up every six hours, one down a day."""
    shape = LaneShape()
    assert shape.up_blocks_per_day() == 4
    assert shape.down_blocks_per_day() == 1
    assert shape.up_bytes_per_day() == 4 * 384
    assert shape.down_bytes_per_day() == 384
    assert shape.up_payload_bytes == 384 - 48 - 20
    assert shape.capacity_bytes_per_day() == 4 * (384 - 68)
    assert shape.down_capacity_bytes_per_day() == 384 - 68
    assert shape.up_fragments(1) == 1
    assert shape.up_fragments(316) == 1
    assert shape.up_fragments(317) == 2
    assert shape.periods_to_send(317) == 2
    assert shape.period_of(21_599.9) == 0
    assert shape.period_of(21_600) == 1
    assert shape.period_start(3) == 64_800
    two = LaneShape(period_s=43_200, blocks_per_period=3, block_bytes=1024)
    assert two.up_blocks_per_day() == 6
    assert two.periods_to_send(3 * (1024 - 68) + 1) == 2


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("period_s", 7, "divisor of 86400"),
        ("period_s", 1000, "divisor of 86400"),
        ("period_s", 172_800, "divisor of 86400"),
        ("period_s", True, "whole number"),
        ("down_period_s", 0, "divisor of 86400"),
        ("block_bytes", 127, "128 to 8192"),
        ("block_bytes", 8193, "128 to 8192"),
        ("down_block_bytes", 64, "128 to 8192"),
        ("blocks_per_period", 0, "from 1 to 64"),
        ("down_blocks_per_period", 65, "from 1 to 64"),
    ],
)
def test_shapes_that_cannot_work_are_refused(field: str, value: int, words: str) -> None:
    """A lane period must divide a day; blocks and counts stay within bounds."""
    with pytest.raises(InvalidEnvelope, match=words):
        LaneShape(**{field: value})


# --- one block -----------------------------------------------------------------------------


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
def test_a_block_opens_only_for_its_union_and_cover_for_nobody(block_bytes: int) -> None:
    """A fragment sealed to one union opens for it alone; cover opens for no union."""
    fragment = Fragment(REPORT_ID, 2, 5, b"part of a report")
    block = lane.seal_up_block(fragment, bytes(UNION.public_key), block_bytes)
    cover = lane.cover_up_block(_throwaway(), block_bytes)
    assert len(block) == len(cover) == block_bytes
    assert lane.open_up_block(block, bytes(UNION), block_bytes) == fragment
    assert lane.open_up_block(block, bytes(OTHER_UNION)) is None
    assert lane.open_up_block(cover, bytes(UNION)) is None
    assert lane.open_up_block(cover, bytes(OTHER_UNION), block_bytes) is None


def test_cover_sealed_to_a_real_key_is_still_cover() -> None:
    """Even a cover block sealed to the union by mistake never becomes a report."""
    block = lane.cover_up_block(bytes(UNION.public_key), 384)
    assert lane.open_up_block(block, bytes(UNION)) is None


def test_a_full_block_and_an_overfull_fragment() -> None:
    """A block carries exactly its capacity; one byte more is refused when sealing."""
    capacity = 384 - BLOCK_OVERHEAD
    full = Fragment(REPORT_ID, 0, 1, bytes(range(256)) + bytes(capacity - 256))
    block = lane.seal_up_block(full, bytes(UNION.public_key), 384)
    assert lane.open_up_block(block, bytes(UNION)) == full
    with pytest.raises(LimitExceeded, match="at most 316 bytes"):
        lane.seal_up_block(
            Fragment(REPORT_ID, 0, 1, bytes(capacity + 1)), bytes(UNION.public_key), 384
        )


def test_fragments_are_checked_when_built() -> None:
    """Our own code cannot build a fragment with a bad id, index, count or no payload."""
    with pytest.raises(InvalidEnvelope, match="8 bytes"):
        Fragment(b"short", 0, 1, b"x")
    with pytest.raises(InvalidEnvelope, match="out of range"):
        Fragment(REPORT_ID, 1, 1, b"x")
    with pytest.raises(InvalidEnvelope, match="out of range"):
        Fragment(REPORT_ID, 0, MAX_FRAGMENTS + 1, b"x")
    with pytest.raises(InvalidEnvelope, match="at least one byte"):
        Fragment(REPORT_ID, 0, 1, b"")
    with pytest.raises(InvalidEnvelope, match="X25519"):
        lane.seal_up_block(Fragment(REPORT_ID, 0, 1, b"x"), b"short", 384)
    with pytest.raises(InvalidEnvelope, match="X25519"):
        lane.open_up_block(bytes(384), b"short")


def test_blocks_of_the_wrong_size_are_refused_as_remote_errors() -> None:
    """A block of another deployment's size, or of no lane size, is the sender's fault."""
    block = lane.seal_up_block(Fragment(REPORT_ID, 0, 1, b"x"), bytes(UNION.public_key), 384)
    with pytest.raises(MalformedLaneBlock, match="this deployment"):
        lane.open_up_block(block, bytes(UNION), 480)
    for size in (0, 47, 127, 8193):
        with pytest.raises(MalformedLaneBlock, match="no lane block size"):
            lane.open_up_block(bytes(size), bytes(UNION))


def _inner_fields(block_bytes: int = 384) -> bytearray:
    """A valid uplink inner: fragment 1 of 3, 5 payload bytes."""
    fragment = Fragment(REPORT_ID, 1, 3, b"hello")
    return bytearray(lane._inner(lane.UP_MAGIC, lane.BlockKind.FRAGMENT, fragment, block_bytes))


def _seal_inner(inner: bytes | bytearray) -> bytes:
    return nacl.public.SealedBox(UNION.public_key).encrypt(bytes(inner))


@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [
        (0, ord("X"), "not a lane block"),
        (3, ord("D"), "not a lane block"),  # a downlink block offered as uplink
        (4, 2, "lane version 2"),
        (5, 7, "unknown kind 7"),
        (15, 3, "fragment 3 of 3"),  # index low byte == count
        (17, 0, "fragment 1 of 0"),  # count low byte
        (19, 0, "says 0 payload bytes"),  # length low byte
        (18, 2, "says 517 payload bytes"),  # length high byte
        (40, 1, "bytes after its payload"),
        (335, 1, "bytes after its payload"),
    ],
)
def test_blocks_that_open_but_are_malformed_raise_typed_errors(
    offset: int, value: int, words: str
) -> None:
    """Each header field is checked after the block opens; padding must be zeros."""
    inner = _inner_fields()
    inner[offset] = value
    with pytest.raises(MalformedLaneBlock, match=words):
        lane.open_up_block(_seal_inner(inner), bytes(UNION))


def test_a_sealed_box_too_small_for_a_lane_header_is_refused_by_size() -> None:
    """A genuine sealed box to the union holding less than a lane header is no block."""
    with pytest.raises(MalformedLaneBlock, match="no lane block size"):
        lane.open_up_block(_seal_inner(b"VRLU\x01\x01"), bytes(UNION))


@given(data=st.binary(min_size=0, max_size=1200))
@settings(max_examples=300, deadline=None)
def test_any_bytes_open_to_nothing_or_a_typed_error(data: bytes) -> None:
    """Fuzz (h11's invariant): arbitrary bytes never open, and never raise anything but
    our own remote errors."""
    try:
        assert lane.open_up_block(data, bytes(UNION)) is None
        assert lane.open_down_block(data, bytes(UNION)) is None
    except RemoteProtocolError:
        pass


@given(
    inner=st.binary(min_size=0, max_size=600),
    structured=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 335), st.integers(0, 255)), max_size=4),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_content_sealed_to_the_union_opens_canonically_or_raises_typed_errors(
    inner: bytes, structured: bool, edits: list[tuple[int, int]]
) -> None:
    """Fuzz past the seal: whatever was sealed to the union either reads as a fragment
    (which seals back to the very same content), or as nothing, or raises our errors."""
    content = _inner_fields() if structured else bytearray(inner)
    for offset, value in edits:
        if offset < len(content):
            content[offset] = value
    block = _seal_inner(bytes(content))
    try:
        fragment = lane.open_up_block(block, bytes(UNION))
    except RemoteProtocolError:
        return
    if fragment is None:
        assert content[5] == lane.BlockKind.COVER
        return
    again = lane._inner(lane.UP_MAGIC, lane.BlockKind.FRAGMENT, fragment, len(block))
    assert again == bytes(content)


# --- reports of any length -----------------------------------------------------------------


def _shuffled_with_noise(blocks: list[bytes], block_bytes: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    mixed = blocks + rng.sample(blocks, k=min(len(blocks), 3))  # duplicates
    mixed += [lane.cover_up_block(_throwaway(), block_bytes) for _ in range(3)]
    other = Fragment(bytes(8), 0, 1, b"for another union")
    mixed.append(lane.seal_up_block(other, bytes(OTHER_UNION.public_key), block_bytes))
    rng.shuffle(mixed)
    return mixed


def _reassemble(blocks: list[bytes], block_bytes: int) -> list[bytes]:
    reassembler = Reassembler()
    done = []
    for block in blocks:
        fragment = lane.open_up_block(block, bytes(UNION), block_bytes)
        if fragment is not None:
            whole = reassembler.add(fragment, source=42)
            if whole is not None:
                done.append(whole)
    assert reassembler.open_items == 0
    assert reassembler.held_bytes == 0
    return done


@given(
    length=st.one_of(
        st.integers(1, 2_000), st.integers(2_000, MAX_REPORT_BYTES), st.just(MAX_REPORT_BYTES)
    ),
    block_bytes=st.sampled_from(BLOCK_SIZES),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_reports_of_every_length_come_back_whole(length: int, block_bytes: int, seed: int) -> None:
    """A sealed report of 1 byte to the largest allowed, cut into blocks, shuffled,
    duplicated and mixed with cover and another union's blocks, is put back together
    exactly once, byte for byte."""
    report = _report(length, seed)
    report_id = random.Random(seed).randbytes(8)
    blocks = lane.seal_up_blocks(report, report_id, bytes(UNION.public_key), block_bytes)
    assert len(blocks) == lane.fragments_needed(length, block_bytes)
    assert {len(block) for block in blocks} == {block_bytes}
    assert _reassemble(_shuffled_with_noise(blocks, block_bytes, seed), block_bytes) == [report]


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
def test_lengths_at_block_boundaries(block_bytes: int) -> None:
    """Reports of exactly one block's capacity, one byte more, and the largest, round trip."""
    capacity = block_bytes - BLOCK_OVERHEAD
    for length in (1, capacity - 1, capacity, capacity + 1, 2 * capacity):
        report = _report(length, length)
        blocks = lane.seal_up_blocks(report, REPORT_ID, bytes(UNION.public_key), block_bytes)
        assert len(blocks) == -(-length // capacity)
        assert _reassemble(blocks[::-1], block_bytes) == [report]


def test_reports_over_the_largest_are_refused() -> None:
    """Nothing larger than the largest sealed report (or empty) is cut into blocks."""
    with pytest.raises(LimitExceeded, match="over the lane's 65520"):
        lane.fragment_report(bytes(MAX_REPORT_BYTES + 1), 384)
    with pytest.raises(InvalidEnvelope, match="nothing to send"):
        lane.fragment_report(b"", 384)
    assert len(lane.fragment_report(bytes(MAX_REPORT_BYTES), 128)) == -(-MAX_REPORT_BYTES // 60)


# --- the relay's view: cover and real blocks alike -----------------------------------------

_P = 2**255 - 19


def _looks_like_a_sealed_box(block: bytes) -> bool:
    """What an eavesdropper can check without a key: the first 32 bytes are an X25519
    public key, i.e. the top bit is clear and u is on Curve25519 (u^3 + A u^2 + u is a
    square mod p), not on its twist."""
    if block[31] & 0x80:
        return False
    u = int.from_bytes(block[:32], "little")
    v = (u * u * u + 486_662 * u * u + u) % _P
    return v == 0 or pow(v, (_P - 1) // 2, _P) == 1


def _chi_square(first: list[bytes], second: list[bytes]) -> float:
    """Two-sample chi-square of the byte-value histograms (255 degrees of freedom)."""
    a = [0] * 256
    b = [0] * 256
    for block in first:
        for byte in block:
            a[byte] += 1
    for block in second:
        for byte in block:
            b[byte] += 1
    return sum((x - y) ** 2 / (x + y) for x, y in zip(a, b, strict=True) if x + y)


# For 255 degrees of freedom, 420 is beyond the 1e-9 tail: a false alarm never happens.
_CHI_LIMIT = 420.0


def test_uplink_cover_and_reports_look_alike_to_the_relay() -> None:
    """200 cover blocks and 200 report blocks: one length, every one starts with a valid
    X25519 key, and their byte histograms agree; the same statistic catches plain bytes
    (so it can fail)."""
    cover = [lane.cover_up_block(_throwaway(), 384) for _ in range(200)]
    real = lane.seal_up_blocks(_report(200 * 316, 1), REPORT_ID, bytes(UNION.public_key), 384)
    assert len(real) == 200
    assert {len(block) for block in cover + real} == {384}
    assert all(_looks_like_a_sealed_box(block) for block in cover + real)
    assert _chi_square(cover, real) < _CHI_LIMIT
    zeros_inside = [lane._inner(lane.UP_MAGIC, lane.BlockKind.COVER, None, 384) for _ in cover]
    assert _chi_square(cover, zeros_inside) > 10 * _CHI_LIMIT


def test_random_bytes_would_give_cover_away() -> None:
    """Why cover is a sealed box to a throwaway key, never random bytes: half of random
    32-byte strings fail the public-key test, so a relay's random cover would be told
    apart from notes by anyone."""
    rng = random.Random(7)
    random_blocks = [rng.randbytes(384) for _ in range(64)]
    failing = sum(not _looks_like_a_sealed_box(block) for block in random_blocks)
    assert failing >= 32


# --- downlink: case notes ------------------------------------------------------------------

REPORTER = reporter_reply_keys(b"case key of the reporter 0001")
STRANGER = reporter_reply_keys(b"case key of another reporter")
SHORT_NOTE = CaseNote("42-17", CaseStatus.ACKNOWLEDGED, 29_000_100)
LONG_NOTE = CaseNote(
    "42-17",
    CaseStatus.IN_PROGRESS,
    29_000_200,
    text="เราได้รับรายงานของคุณแล้ว เจ้าหน้าที่จะติดต่อเจ้าของเรือในสัปดาห์นี้ " * 6,
    lang=Language.THA,
    reason=None,
    entry_hash=bytes(range(32)),
)


def test_a_short_note_takes_one_block_and_a_long_one_several() -> None:
    """A stage change fits one block; a reply spreads over as many as it needs."""
    short = lane.seal_down_blocks(SHORT_NOTE, REPORTER.public_key, 384, bytes(8))
    long = lane.seal_down_blocks(LONG_NOTE, REPORTER.public_key, 384, bytes(range(8)))
    assert len(short) == 1
    assert len(long) == lane.fragments_needed(len(lane.note_content(LONG_NOTE)), 384) > 3
    assert {len(block) for block in short + long} == {384}


def test_the_reporter_reads_their_notes_among_everything_stored() -> None:
    """On board every downlink block is stored; the reporter's key finds their notes, in
    whatever order the blocks came, and nobody else's; cover and strangers' notes are
    skipped without saying which was which."""
    mine = lane.seal_down_blocks(LONG_NOTE, REPORTER.public_key, 384, b"note-one")
    mine += lane.seal_down_blocks(SHORT_NOTE, REPORTER.public_key, 384, b"note-two")
    theirs = lane.seal_down_blocks(SHORT_NOTE, STRANGER.public_key, 384, b"note-thr")
    cover = [lane.cover_down_block(_throwaway(), 384) for _ in range(5)]
    stored = mine + theirs + cover
    random.Random(3).shuffle(stored)
    found = lane.read_notes(stored + stored[:4], REPORTER.private_key, 384)
    assert sorted(found.notes, key=lambda note: note.written_minutes) == [SHORT_NOTE, LONG_NOTE]
    assert (found.incomplete, found.malformed) == (0, 0)
    assert lane.read_notes(stored, STRANGER.private_key).notes == (SHORT_NOTE,)
    nobody = reporter_reply_keys(b"case key of a crew member with no case")
    assert lane.read_notes(stored, nobody.private_key) == lane.NotesRead((), 0, 0)


def test_a_note_still_on_its_way_and_a_malformed_block_are_counted() -> None:
    """A note whose last block has not come yet is incomplete, not shown; a block that
    opens with the reporter's key but is malformed is counted and skipped."""
    blocks = lane.seal_down_blocks(LONG_NOTE, REPORTER.public_key, 384, b"note-one")
    bad_inner = bytearray(lane._inner(lane.DOWN_MAGIC, lane.BlockKind.COVER, None, 384))
    bad_inner[5] = 9
    bad = nacl.public.SealedBox(nacl.public.PublicKey(REPORTER.public_key)).encrypt(
        bytes(bad_inner)
    )
    found = lane.read_notes([*blocks[1:], bad], REPORTER.private_key)
    assert found == lane.NotesRead((), 1, 1)


def test_an_uplink_block_is_no_downlink_block() -> None:
    """Domain separation: a report fragment sealed to a reply key does not read as a note."""
    block = lane.seal_up_block(Fragment(REPORT_ID, 0, 1, b"x"), REPORTER.public_key, 384)
    with pytest.raises(MalformedLaneBlock, match="VRLD"):
        lane.open_down_block(block, REPORTER.private_key)


def test_downlink_cover_and_notes_look_alike_to_the_vessel() -> None:
    """The relay's cover and the union's note blocks: one length, a valid X25519 key in
    front of each, and the same byte histogram."""
    cover = [lane.cover_down_block(_throwaway(), 384) for _ in range(200)]
    note_blocks: list[bytes] = []
    while len(note_blocks) < 200:
        note_blocks += lane.seal_down_blocks(LONG_NOTE, REPORTER.public_key, 384, bytes(8))
    note_blocks = note_blocks[:200]
    assert {len(block) for block in cover + note_blocks} == {384}
    assert all(_looks_like_a_sealed_box(block) for block in cover + note_blocks)
    assert _chi_square(cover, note_blocks) < _CHI_LIMIT


def test_a_note_too_long_for_the_lane_is_refused_at_the_union() -> None:
    """The union's caseworker is told to shorten a reply over the lane's note size."""
    huge = CaseNote("42-17", CaseStatus.IN_PROGRESS, 1, text="x" * 9000, lang=Language.ENG)
    with pytest.raises(LimitExceeded, match="shorten it"):
        lane.seal_down_blocks(huge, REPORTER.public_key, 384, bytes(8))


case_notes = st.builds(
    CaseNote,
    case=st.builds(lambda v, s: f"{v}-{s}", st.integers(0, 10**9 - 1), st.integers(0, 10**15 - 1)),
    status=st.sampled_from(list(CaseStatus)),
    written_minutes=st.integers(0, 2**40),
    text=st.none(),
    reason=st.none() | st.text(min_size=1, max_size=200),
    entry_hash=st.none() | st.binary(min_size=32, max_size=32),
) | st.builds(
    CaseNote,
    case=st.just("7-1"),
    status=st.sampled_from(list(CaseStatus)),
    written_minutes=st.integers(0, 2**40),
    text=st.text(min_size=1, max_size=1500),
    lang=st.sampled_from(list(Language)),
)


@given(note=case_notes, block_bytes=st.sampled_from(BLOCK_SIZES), seed=st.integers(0, 2**32))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_notes_round_trip_through_blocks_in_any_order(
    note: CaseNote, block_bytes: int, seed: int
) -> None:
    """Any case note comes back whole from its downlink blocks, shuffled and duplicated;
    its content is byte for byte what protocol.cases seals (one encoder of notes)."""
    content = lane.note_content(note)
    box = nacl.public.SealedBox(nacl.public.PrivateKey(REPORTER.private_key))
    assert unpad(box.decrypt(seal_case_note(note, REPORTER.public_key))) == content
    blocks = lane.seal_down_blocks(note, REPORTER.public_key, block_bytes, bytes(8))
    rng = random.Random(seed)
    blocks = blocks + rng.sample(blocks, k=min(2, len(blocks)))
    rng.shuffle(blocks)
    assert lane.read_notes(blocks, REPORTER.private_key, block_bytes).notes == (note,)


@given(data=st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_any_note_content_reads_or_raises_typed_errors(data: bytes) -> None:
    """Fuzz the note decoder behind the seal: our errors only."""
    try:
        note = lane.read_note_content(b"VRN1" + data)
    except ProtocolError:
        return
    assert lane.read_note_content(lane.note_content(note)) == note


# --- reassembly bounds ---------------------------------------------------------------------


def _fragment(
    index: int = 0, count: int = 2, payload: bytes = b"ab", item: bytes = REPORT_ID
) -> Fragment:
    return Fragment(item, index, count, payload)


def test_duplicates_are_ignored_even_after_completion() -> None:
    """A fragment seen twice changes nothing, also once its report is complete."""
    reassembler = Reassembler()
    assert reassembler.add(_fragment(1)) is None
    assert reassembler.add(_fragment(1)) is None
    assert reassembler.add(_fragment(0)) == b"abab"
    assert reassembler.add(_fragment(0)) is None
    assert reassembler.add(_fragment(1)) is None
    assert (reassembler.open_items, reassembler.held_bytes) == (0, 0)


def test_vessels_never_mix_fragments() -> None:
    """The same report id from two vessels makes two reports."""
    reassembler = Reassembler()
    assert reassembler.add(_fragment(0, 1, b"one"), source=1) == b"one"
    assert reassembler.add(_fragment(0, 1, b"two"), source=2) == b"two"


def test_conflicting_fragments_drop_the_report() -> None:
    """Another count, or other bytes at one index: the report is dropped, typed error."""
    reassembler = Reassembler()
    reassembler.add(_fragment(0, 3))
    with pytest.raises(FragmentConflict, match="was 3 fragments and is now 2"):
        reassembler.add(_fragment(1, 2))
    assert reassembler.open_items == 0
    reassembler.add(_fragment(0, 3))
    with pytest.raises(FragmentConflict, match="two different fragments 0"):
        reassembler.add(_fragment(0, 3, b"zz"))
    assert (reassembler.open_items, reassembler.held_bytes) == (0, 0)
    assert issubclass(FragmentConflict, SealedBoxInvalid)


def test_memory_bounds_raise_and_keep_nothing() -> None:
    """Open reports in all and per vessel, bytes held, and bytes per report are bounded;
    over a bound the fragment is refused with a typed error."""
    small = Reassembler(max_open=2, max_open_per_source=1, max_bytes=10, max_item_bytes=6)
    small.add(_fragment(item=b"aaaaaaaa"), source=1)
    with pytest.raises(ReassemblyLimit, match="source 1 has 1 items open"):
        small.add(_fragment(item=b"bbbbbbbb"), source=1)
    small.add(_fragment(0, 9, b"1234", item=b"cccccccc"), source=2)
    with pytest.raises(ReassemblyLimit, match="2 items are open"):
        small.add(_fragment(item=b"dddddddd"), source=3)
    with pytest.raises(ReassemblyLimit, match="grows over 6 bytes"):
        small.add(_fragment(1, 9, b"12345", item=b"cccccccc"), source=2)
    assert small.open_items == 1
    small.add(_fragment(1, 2, b"1234", item=b"aaaaaaaa"), source=1)
    small.add(_fragment(0, 3, b"12345", item=b"eeeeeeee"), source=4)
    with pytest.raises(ReassemblyLimit, match="near its bound"):
        small.add(_fragment(0, 3, b"123456", item=b"ffffffff"), source=5)
    assert small.held_bytes == 5
    assert issubclass(ReassemblyLimit, LimitExceeded)


def test_stale_reports_expire() -> None:
    """A report whose other fragments never come is dropped after the caller's cutoff."""
    reassembler = Reassembler()
    reassembler.add(_fragment(0), source=9, now=100.0)
    reassembler.add(_fragment(0, item=b"newer..."), source=9, now=200.0)
    assert reassembler.expire(150.0) == [(9, REPORT_ID)]
    assert reassembler.open_items == 1
    assert reassembler.held_bytes == 2


def test_reassembler_bounds_must_be_positive() -> None:
    """A zero bound is a configuration mistake, refused at once."""
    with pytest.raises(InvalidEnvelope, match="max_open must be positive"):
        Reassembler(max_open=0)
