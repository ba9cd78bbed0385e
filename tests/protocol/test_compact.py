"""Compact frames: round trips, keys both ends agree on, padding, forgery and replay.

A compact frame is a batch of one or a few envelopes under an 8-byte tag instead of a
64-byte signature (:mod:`protocol.compact`). These tests hold what it must keep of a
batch: every kind travels, anything changed on the way is refused before it is read,
frames made under another key or sent down are refused, and its batch
number meets the same replay window as batches.
"""

from __future__ import annotations

import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codebooks import default_codebook
from protocol.batch import Direction, encode_batch
from protocol.cbor import dumps
from protocol.codebook import Codec
from protocol.compact import (
    COMPACT_DOWNLINK_RESERVED,
    COMPACT_UPLINK,
    PAD_QUANTUM,
    TAG_BYTES,
    LinkKeys,
    decode_compact,
    encode_compact,
    is_compact,
    open_compact,
    read_compact_header,
    seal_compact,
)
from protocol.envelopes import (
    Channel,
    ContactBookChange,
    CrewMessage,
    Envelope,
    Kind,
    LaneBlock,
    Sos,
)
from protocol.errors import (
    LimitExceeded,
    LocalProtocolError,
    MalformedBatch,
    RemoteProtocolError,
    ReplayedBatch,
    SignatureInvalid,
)
from protocol.exchange import ShoreExchange, ShoreSettings, UplinkBatchReceived, UplinkRefused
from protocol.languages import Language
from protocol.replay import ReplayWindow, Verdict
from protocol.signing import SigningKey
from tests.kit.corpus import CORPUS
from tests.protocol.test_envelopes import (
    SHORE_KEY,
    STRATEGIES,
    VESSEL_KEY,
    minutes,
)
from tests.protocol.test_fuzz import DOWNLINK, UPLINK

CODEBOOK = default_codebook()
M = 29_400_000
VESSEL = 77
VESSEL_SIDE = LinkKeys.for_vessel(VESSEL, VESSEL_KEY, SHORE_KEY.verify_key)
SHORE_SIDE = LinkKeys.for_shore(VESSEL, SHORE_KEY, VESSEL_KEY.verify_key)


def _message(seq: int, body: str, lang: Language = Language.ENG) -> CrewMessage:
    return CrewMessage(
        message_seq=seq, crew=seq % 30, contact=seq % 3, written_minutes=M - 7, lang=lang, body=body
    )


def _frame(
    envelopes: list[Envelope] | tuple[Envelope, ...],
    *,
    keys: LinkKeys = VESSEL_SIDE,
    seq: int = 5,
    pad_quantum: int | None = PAD_QUANTUM,
) -> bytes:
    return encode_compact(
        envelopes,
        keys=keys,
        batch_seq=seq,
        batch_minutes=M,
        codebook=CODEBOOK,
        pad_quantum=pad_quantum,
    )


# --- keys --------------------------------------------------------------------------------


def test_vessel_and_shore_derive_the_same_keys_from_what_they_already_hold() -> None:
    """No new enrolment step: the vessel's key pair and the shore's public key on board,
    the shore's key pair and the vessel's public key ashore give the same link keys."""
    assert VESSEL_SIDE == SHORE_SIDE
    assert VESSEL_SIDE.mac != VESSEL_SIDE.enc


def test_another_vessel_or_a_new_key_gets_other_link_keys() -> None:
    """Keys are bound to the vessel id and both public keys: a vessel id or key changed
    gives unrelated keys, so a frame of one vessel never checks under another's."""
    other_id = LinkKeys.for_vessel(VESSEL + 1, VESSEL_KEY, SHORE_KEY.verify_key)
    new_key = LinkKeys.for_vessel(VESSEL, SigningKey(bytes(range(1, 33))), SHORE_KEY.verify_key)
    other_shore = LinkKeys.for_vessel(VESSEL, VESSEL_KEY, SigningKey(bytes(32)).verify_key)
    for keys in (other_id, new_key, other_shore):
        assert keys.mac != VESSEL_SIDE.mac
        assert keys.enc != VESSEL_SIDE.enc


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind), ids=lambda kind: kind.name.lower())
@given(data=st.data())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_kind_round_trips_through_a_compact_frame(kind: Kind, data: st.DataObject) -> None:
    """A compact frame of one envelope of each kind opens ashore to the same envelope,
    batch number and time (an uplink batch), its length a whole number of credits. (The
    relay's checks, not the format, say which kinds a vessel may send.)"""
    envelope = data.draw(STRATEGIES[kind])
    batch_minutes = data.draw(minutes)
    seq = data.draw(st.integers(1, 2**53 - 1))
    wire = encode_compact(
        [envelope], keys=VESSEL_SIDE, batch_seq=seq, batch_minutes=batch_minutes, codebook=CODEBOOK
    )
    assert len(wire) % PAD_QUANTUM == 0
    batch = decode_compact(wire, keys=SHORE_SIDE, codebook=CODEBOOK)
    assert batch.envelopes == (envelope,)
    assert (batch.vessel_id, batch.batch_seq, batch.batch_minutes) == (VESSEL, seq, batch_minutes)
    assert batch.direction is Direction.UPLINK


@pytest.mark.parametrize("envelopes", [UPLINK, DOWNLINK], ids=["uplink-kinds", "downlink-kinds"])
def test_a_few_messages_of_mixed_kinds_and_languages_round_trip(
    envelopes: list[Envelope],
) -> None:
    """The envelopes of the fuzz tests' batches (every kind, five scripts) go as one compact
    frame and come back equal and in order."""
    wire = _frame(envelopes)
    batch = decode_compact(wire, keys=SHORE_SIDE, codebook=CODEBOOK)
    assert batch.envelopes == tuple(envelopes)


def test_the_same_frame_always_has_the_same_bytes() -> None:
    """A resent compact frame is byte-identical (the relay recognises it by its hash)."""
    one = _frame([_message(3, "back on friday")])
    assert one == _frame([_message(3, "back on friday")])
    assert one != _frame([_message(3, "back on friday")], seq=6)


def test_text_and_kind_are_not_readable_on_the_link() -> None:
    """Only the first byte and the vessel id are in the clear: no word of the text, and
    an SOS differs from a family message nowhere but in bytes that look random."""
    body = "the captain took our passports"
    wire = _frame([_message(3, body)], pad_quantum=None)
    assert body.encode() not in wire
    assert b"passports" not in wire
    header = read_compact_header(wire)
    assert wire[0] == COMPACT_UPLINK
    assert header.vessel_id == VESSEL
    sos = _frame([Sos(message_seq=3, crew=3, written_minutes=M)])
    family = _frame([_message(3, "ok")])
    sealed_at = header.tag_at + TAG_BYTES
    assert sos[: sealed_at - TAG_BYTES] == family[: sealed_at - TAG_BYTES]
    # padding is zeros inside the encryption: not visible as zeros on the wire
    assert bytes(8) not in family[sealed_at:]


def test_compact_frames_and_batches_are_told_apart_by_their_first_byte() -> None:
    """The relay dispatches on byte 0; a batch is never mistaken for a compact frame."""
    batch = encode_batch(
        [_message(1, "hi")],
        direction=Direction.UPLINK,
        vessel_id=VESSEL,
        batch_seq=1,
        batch_minutes=M,
        signing_key=VESSEL_KEY,
        codebook=CODEBOOK,
    )
    assert not is_compact(batch)
    assert is_compact(_frame([_message(1, "hi")]))
    assert not is_compact(b"")


# --- padding -----------------------------------------------------------------------------


def test_an_sos_a_lane_block_and_a_family_message_of_one_credit_look_alike() -> None:
    """Padding to whole SBD credits: a short SOS, a short family message and an ack-sized
    frame are all 50 bytes; lane blocks (384-byte sealed boxes) always have one length."""
    family = _frame([_message(3, "fish is good, home in may")])
    sos = _frame([Sos(message_seq=4, crew=2, written_minutes=M)])
    sos_with_position = _frame(
        [Sos(message_seq=4, crew=2, written_minutes=M, position=(1_300_000, 10_300_000))]
    )
    assert len(family) == len(sos) == len(sos_with_position) == PAD_QUANTUM
    blocks = {
        len(_frame([LaneBlock(period=p, index=i, block=bytes([p % 256]) * 384, written_minutes=M)]))
        for p in (1, 200, 40_000)
        for i in (0, 3)
    }
    assert len(blocks) == 1
    assert blocks.pop() % PAD_QUANTUM == 0


def test_unpadded_frames_are_for_measuring_and_a_bad_quantum_is_a_bug() -> None:
    """``pad_quantum=None`` gives the bare length; a quantum below one byte is refused."""
    bare = _frame([_message(3, "ok")], pad_quantum=None)
    assert len(bare) < PAD_QUANTUM
    with pytest.raises(LocalProtocolError):
        _frame([_message(3, "ok")], pad_quantum=0)


def test_a_lone_short_english_line_fits_one_credit() -> None:
    """The issue's figure on real crew lines: most English dev lines of at most 40
    characters, alone in a compact frame, take one 50-byte credit (median 50)."""
    lines = [
        line
        for line in (CORPUS / "eng.dev.txt").read_text(encoding="utf-8").split("\n")
        if line.strip() and len(line) <= 40
    ][:60]
    sizes = [len(_frame([_message(i + 1, line)], seq=i + 1)) for i, line in enumerate(lines)]
    assert statistics.median(sizes) == PAD_QUANTUM
    assert sum(size == PAD_QUANTUM for size in sizes) >= 0.9 * len(sizes)


# --- forgery -----------------------------------------------------------------------------


def test_every_single_bit_flip_is_refused() -> None:
    """Flip each bit of a frame in turn: none decodes; the clear header's flips are refused
    as malformed or as not matching, everything after it by the tag."""
    wire = _frame([_message(3, "send money to mother")])
    for index in range(len(wire)):
        for bit in range(8):
            forged = bytearray(wire)
            forged[index] ^= 1 << bit
            with pytest.raises(RemoteProtocolError):
                decode_compact(bytes(forged), keys=SHORE_SIDE, codebook=CODEBOOK)


def test_a_frame_under_another_key_is_refused() -> None:
    """Another vessel's keys, a revoked vessel key, or a forger who knows every public key
    but no private one: the tag does not match."""
    wire = _frame([_message(3, "all is fine")])
    forger = SigningKey(bytes(range(7, 39)))
    for keys in (
        LinkKeys.for_vessel(VESSEL, forger, SHORE_KEY.verify_key),
        LinkKeys.for_shore(VESSEL, SHORE_KEY, forger.verify_key),
    ):
        with pytest.raises(SignatureInvalid):
            decode_compact(wire, keys=keys, codebook=CODEBOOK)
    forged = _frame(
        [_message(3, "all is fine")], keys=LinkKeys.for_vessel(VESSEL, forger, SHORE_KEY.verify_key)
    )
    with pytest.raises(SignatureInvalid):
        decode_compact(forged, keys=SHORE_SIDE, codebook=CODEBOOK)
    other = LinkKeys.for_shore(VESSEL + 1, SHORE_KEY, VESSEL_KEY.verify_key)
    with pytest.raises(SignatureInvalid, match="keys of vessel 78"):
        decode_compact(wire, keys=other, codebook=CODEBOOK)


def test_compact_frames_never_travel_down() -> None:
    """Whoever holds the vessel key (the owner, from the vessel computer's disk) can derive
    the link keys: a compact frame "from the shore" could be made on board. So the reserved
    downlink byte is refused, even on a frame whose tag checks."""
    wire = _frame([_message(3, "hello")])
    reflected = bytes([COMPACT_DOWNLINK_RESERVED]) + wire[1:]
    assert is_compact(reflected)
    with pytest.raises(MalformedBatch, match="never applied on the downlink"):
        decode_compact(reflected, keys=VESSEL_SIDE, codebook=CODEBOOK)


def test_truncated_tags_and_frames_are_refused() -> None:
    """A frame cut anywhere (in the header, the tag or the sealed part) never decodes, and
    a frame re-sealed with a tag of fewer bytes does not either."""
    wire = _frame([_message(3, "hello mother")])
    header = read_compact_header(wire)
    for end in range(len(wire)):
        with pytest.raises((MalformedBatch, SignatureInvalid)):
            decode_compact(wire[:end], keys=SHORE_SIDE, codebook=CODEBOOK)
    short_tag = wire[: header.tag_at + 4] + wire[header.tag_at + TAG_BYTES :]
    with pytest.raises(SignatureInvalid):
        decode_compact(short_tag, keys=SHORE_SIDE, codebook=CODEBOOK)


def test_authentic_garbage_is_refused_with_our_own_errors() -> None:
    """Plaintexts sealed with the right keys but not built by the encoder (what a changed
    agent could send) are refused as malformed or over a limit, never anything else."""
    good = open_compact(_frame([_message(3, "hi")], pad_quantum=None), SHORE_SIDE)[1]
    cases: dict[bytes, type[RemoteProtocolError]] = {
        b"": MalformedBatch,  # no batch number
        b"\x00\x01": MalformedBatch,  # batch 0
        b"\x01\xff\xff\xff\xff\x7f": MalformedBatch,  # a time past the year 3000
        b"\x01\x01\x05\x80": MalformedBatch,  # rows longer than the frame
        b"\x01\x01\x01\x80": MalformedBatch,  # an empty list of rows
        good + b"\x01": MalformedBatch,  # a byte other than zero after the last frame
        b"\x01\x01\x03\x81\x81\x63": MalformedBatch,  # a row of an unknown kind
        b"\x01\x80\x00": MalformedBatch,  # a number not in its shortest form
    }
    too_many = dumps([[int(Kind.SOS)]] * 65)
    assert len(too_many) == 132
    cases[b"\x01\x01\x84\x01" + too_many] = LimitExceeded  # 65 envelopes
    for plaintext, error in cases.items():
        wire = seal_compact(plaintext, keys=VESSEL_SIDE)
        with pytest.raises(error):
            decode_compact(wire, keys=SHORE_SIDE, codebook=CODEBOOK)


def test_bad_local_input_is_a_local_error() -> None:
    """Batch 0, no envelope, too many envelopes or a time past the year 3000 are bugs of
    the caller: refused before anything is made."""
    with pytest.raises(LocalProtocolError):
        _frame([_message(3, "hi")], seq=0)
    with pytest.raises(LocalProtocolError):
        _frame([])
    with pytest.raises(LimitExceeded):
        _frame([_message(i + 1, "hi") for i in range(65)])


# --- replay ------------------------------------------------------------------------------


def test_a_replayed_compact_frame_meets_the_batches_replay_window() -> None:
    """Compact frames carry batch numbers from the vessel's one sequence: a frame recorded
    and sent again is a duplicate, and a batch of the same number after it is too."""
    window = ReplayWindow(vessel="77")
    first = decode_compact(_frame([_message(3, "hi")], seq=1), keys=SHORE_SIDE, codebook=CODEBOOK)
    window.accept(first.batch_seq)
    replayed = decode_compact(
        _frame([_message(3, "hi")], seq=1), keys=SHORE_SIDE, codebook=CODEBOOK
    )
    assert window.check(replayed.batch_seq) is Verdict.DUPLICATE
    with pytest.raises(ReplayedBatch):
        window.accept(replayed.batch_seq)
    second = decode_compact(_frame([_message(4, "ok")], seq=2), keys=SHORE_SIDE, codebook=CODEBOOK)
    assert window.check(second.batch_seq) is Verdict.NEW


def test_the_batch_number_cannot_be_changed_without_the_key() -> None:
    """The batch number is inside the sealed part: an attacker who wants to pass a recorded
    frame off as a new batch number has to forge the tag."""
    wire = _frame([_message(3, "hi")], seq=1)
    header = read_compact_header(wire)
    sealed_at = header.tag_at + TAG_BYTES
    for delta in range(1, 256):
        forged = wire[:sealed_at] + bytes([wire[sealed_at] ^ delta]) + wire[sealed_at + 1 :]
        with pytest.raises(SignatureInvalid):
            decode_compact(forged, keys=SHORE_SIDE, codebook=CODEBOOK)


# --- golden vectors ----------------------------------------------------------------------

GOLDEN_VESSEL_KEY = SigningKey(bytes.fromhex("11" * 32))
GOLDEN_SHORE_KEY = SigningKey(bytes.fromhex("22" * 32))
GOLDEN_MINUTES = 29_123_456
#: Compact frames of wire version 1 (vessel 4242, batch 1831), made 2026-12-07. Never
#: regenerate them silently: frames in outboxes and on the link must stay readable.
GOLDEN: dict[str, tuple[list[Envelope], tuple[Codec, ...], str]] = {
    "lone-thai-context": (
        [CrewMessage(21, 3, 1, GOLDEN_MINUTES - 4, Language.THA, "ส่งเงินให้แม่แล้วนะครับ")],
        (Codec.CONTEXT,),
        "039221e3858bbb3e1d5a028f16f84c3eea0a1c7313954fc6003aaf5d857ff4f2765caa622071df8071"
        "969228316fd07d2738",
    ),
    "sos-position-stored": (
        [
            Sos(
                message_seq=22,
                crew=3,
                written_minutes=GOLDEN_MINUTES,
                position=(1_234_567, 10_098_765),
            )
        ],
        (Codec.STORED,),
        "039221a8c3b925a1624fce1094cd1d18e8ff6856deca30c7c43e8567cffa628b651750dde6ede921"
        "1dfd1cb6f6cd94064aee",
    ),
    "contact-and-message-zstd": (
        [
            ContactBookChange(
                3,
                1,
                Channel.SMS,
                "+66812345678",
                GOLDEN_MINUTES,
                name="Mother",
                contact_lang=Language.THA,
            ),
            CrewMessage(23, 3, 1, GOLDEN_MINUTES, Language.ENG, "home in May"),
        ],
        (Codec.ZSTD,),
        "039221177914d3efe2e4d84357f77ec0ec46623599fd708cc4512f90eeda233c2a06943581736320"
        "ceadf82b87f3672a07bd4be08f34633ffda22da13f3afa340b9e103593b9db074cd93b07733182b1"
        "86c9c1352af66e0b2b815d9a5aa2debbe6a3f182",
    ),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_compact_frames_encode_and_decode_byte_for_byte(name: str) -> None:
    """Fixed keys and content give exactly the stored frame (a change of key derivation,
    layout, padding or model fails here), and the stored frame still opens to the same
    envelopes."""
    envelopes, codecs, hex_frame = GOLDEN[name]
    keys = LinkKeys.for_vessel(4242, GOLDEN_VESSEL_KEY, GOLDEN_SHORE_KEY.verify_key)
    frame = bytes.fromhex(hex_frame)
    made = encode_compact(
        envelopes,
        keys=keys,
        batch_seq=1831,
        batch_minutes=GOLDEN_MINUTES,
        codebook=CODEBOOK,
        codecs=codecs,
    )
    assert made.hex() == hex_frame
    shore = LinkKeys.for_shore(4242, GOLDEN_SHORE_KEY, GOLDEN_VESSEL_KEY.verify_key)
    batch = decode_compact(frame, keys=shore, codebook=CODEBOOK)
    assert batch.envelopes == tuple(envelopes)
    assert (batch.vessel_id, batch.batch_seq, batch.batch_minutes) == (4242, 1831, GOLDEN_MINUTES)
    assert [f.codec for f in batch.frames] == [codecs[0]] * len(batch.frames)


def test_the_shore_exchange_takes_a_compact_frame_on_the_uplink_and_refuses_a_forged_one() -> None:
    """A lone message arrives as a compact frame where a signed batch used to: the shore's
    exchange checks its tag under the link keys of the two keys it already holds and hands
    the batch out like a signed one; a frame made with another key is refused, not
    stored."""
    exchange = ShoreExchange(ShoreSettings(VESSEL, VESSEL_KEY.verify_key, SHORE_KEY, CODEBOOK))
    wire = _frame([_message(3, "all is fine")], seq=1)
    exchange.receive(wire, 0.0)
    event = exchange.next_event()
    assert isinstance(event, UplinkBatchReceived)
    assert (event.batch.vessel_id, event.batch.batch_seq, event.data) == (VESSEL, 1, wire)
    assert [e.body for e in event.batch.envelopes if isinstance(e, CrewMessage)] == ["all is fine"]
    forger = SigningKey(bytes(range(7, 39)))
    forged = _frame(
        [_message(4, "send money")],
        seq=2,
        keys=LinkKeys.for_vessel(VESSEL, forger, SHORE_KEY.verify_key),
    )
    exchange.receive(forged, 0.0)
    refused = exchange.next_event()
    assert isinstance(refused, UplinkRefused)
    assert exchange.next_event() is None
