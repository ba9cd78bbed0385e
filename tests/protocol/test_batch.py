"""Batches: signed, compressed, padded envelopes in; the same envelopes out, or a typed error.

Round trips (hypothesis) over mixed kinds, languages, directions and codecs; then every
way a batch from the link can be wrong: truncated, bit-flipped, forged, over each hard
limit, naming a dictionary we lack, replayed, or a decompression bomb. Every refusal is
one of :mod:`protocol.errors`' types with a message that says what to do.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence
from dataclasses import replace

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch, encode_batch, read_batch_header
from protocol.cbor import dumps
from protocol.codebook import Codebook, Codec
from protocol.envelopes import (
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    GrievanceReport,
    ReceiptStage,
    Reply,
)
from protocol.errors import (
    LimitExceeded,
    LocalProtocolError,
    MalformedBatch,
    ProtocolError,
    RemoteProtocolError,
    ReplayedBatch,
    SignatureInvalid,
    UnknownDictionary,
)
from protocol.languages import Language
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.padding import is_padme
from protocol.replay import ReplayWindow, Verdict
from protocol.signing import SigningKey
from tests.protocol.test_envelopes import (
    DOWNLINK_KINDS,
    SHORE_KEY,
    STRATEGIES,
    UPLINK_KINDS,
    VESSEL_KEY,
    texts,
)

CODEBOOK = default_codebook()
ALL_CODECS = (Codec.STORED, Codec.ZSTD, Codec.CONTEXT)
CODEC_CHOICES = [(Codec.STORED,), (Codec.ZSTD,), (Codec.CONTEXT,), ALL_CODECS]


def _encode(envelopes: Sequence[Envelope], **options: object) -> bytes:
    settings_: dict[str, object] = {
        "direction": Direction.UPLINK,
        "vessel_id": 42,
        "batch_seq": 1831,
        "batch_minutes": 29_000_000,
        "signing_key": VESSEL_KEY,
        "codebook": CODEBOOK,
    }
    settings_.update(options)
    return encode_batch(envelopes, **settings_)  # type: ignore[arg-type]


def _decode(data: bytes, **options: object) -> tuple[Envelope, ...]:
    settings_: dict[str, object] = {"codebook": CODEBOOK, "verify_key": VESSEL_KEY.verify_key}
    settings_.update(options)
    return decode_batch(data, **settings_).envelopes  # type: ignore[arg-type]


def _message(seq: int, lang: Language, body: str, minutes: int = 28_999_990) -> CrewMessage:
    return CrewMessage(
        message_seq=seq,
        crew=seq % 5,
        contact=seq % 3,
        written_minutes=minutes,
        lang=lang,
        body=body,
    )


MIXED = [
    _message(1, Language.MYA, "မင်္ဂလာပါ အမေ၊ ကျွန်တော် နေကောင်းပါတယ်"),
    _message(2, Language.THA, "สวัสดีครับแม่ ผมสบายดี"),
    _message(3, Language.ENG, "the net is torn, we come back on friday"),
    CrewMessage(message_seq=4, crew=1, contact=2, written_minutes=28_999_999, quick=17),
    GrievanceReport(message_seq=5, union=3, written_minutes=28_999_999, sealed=bytes(304)),
    _message(6, Language.MYA, "ငါးဖမ်းတာ ကောင်းပါတယ်"),
    _message(7, Language.KHM, "ខ្ញុំសុខសប្បាយទេ"),
]


# --- round trips ---------------------------------------------------------------------------


@st.composite
def batches(draw: st.DrawFn) -> tuple[Direction, list[Envelope]]:
    """A direction and 1-12 envelopes of that direction's kinds, texts in any languages."""
    direction = draw(st.sampled_from(list(Direction)))
    kinds = UPLINK_KINDS if direction is Direction.UPLINK else DOWNLINK_KINDS
    strategy = st.one_of(*(STRATEGIES[kind] for kind in kinds))
    return direction, draw(st.lists(strategy, min_size=1, max_size=12))


@given(
    batch=batches(),
    codecs=st.sampled_from(CODEC_CHOICES),
    seq=st.integers(min_value=1, max_value=2**53 - 1),
    vessel=st.integers(min_value=0, max_value=2**53 - 1),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_batches_round_trip(
    batch: tuple[Direction, list[Envelope]], codecs: tuple[Codec, ...], seq: int, vessel: int
) -> None:
    """Any batch, up or down, with any codec choice, decodes verified to the same envelopes,
    and its length on the wire is a Padmé size class."""
    direction, envelopes = batch
    key = VESSEL_KEY if direction is Direction.UPLINK else SHORE_KEY
    data = _encode(
        envelopes,
        direction=direction,
        vessel_id=vessel,
        batch_seq=seq,
        signing_key=key,
        codecs=codecs,
    )
    assert is_padme(len(data))
    decoded = decode_batch(data, codebook=CODEBOOK, verify_key=key.verify_key, direction=direction)
    assert decoded.envelopes == tuple(envelopes)
    assert (decoded.direction, decoded.vessel_id, decoded.batch_seq) == (direction, vessel, seq)
    # A language without a model for the one allowed codec falls back to stored.
    assert all(frame.codec in (*codecs, Codec.STORED) for frame in decoded.frames)


@given(
    bodies=st.lists(st.tuples(st.sampled_from(list(Language)), texts), min_size=2, max_size=20),
    codecs=st.sampled_from(CODEC_CHOICES),
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mixed_language_batches_carry_one_frame_per_language(
    bodies: list[tuple[Language, str]], codecs: tuple[Codec, ...]
) -> None:
    """Messages in several languages travel in one frame per language, in order."""
    envelopes = [_message(seq, lang, body) for seq, (lang, body) in enumerate(bodies)]
    data = _encode(envelopes, codecs=codecs)
    decoded = decode_batch(data, codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key)
    assert decoded.envelopes == tuple(envelopes)
    assert len(decoded.frames) == len({lang for lang, _ in bodies})


def test_same_input_gives_the_same_bytes() -> None:
    """A retransmission is byte-identical (Ed25519 and the codecs are deterministic)."""
    assert _encode(MIXED) == _encode(MIXED)


def test_mixed_batch_uses_the_trained_codecs() -> None:
    """A realistic batch picks a dictionary or model codec for its text frames."""
    header = read_batch_header(_encode(MIXED))
    assert len(header.frames) == 4  # eng, mya, tha, khm
    assert {frame.codec for frame in header.frames} <= {Codec.ZSTD, Codec.CONTEXT}


# --- padding -------------------------------------------------------------------------------


def test_unpadded_batches_still_decode() -> None:
    """pad=False (measuring, older peers) gives a shorter batch that decodes the same."""
    padded, bare = _encode(MIXED), _encode(MIXED, pad=False)
    assert len(bare) < len(padded)
    assert _decode(bare) == _decode(padded) == tuple(MIXED)
    assert read_batch_header(bare).padding_bytes == 0
    assert read_batch_header(padded).padding_bytes == len(padded) - len(bare) - 1 - (
        len(padded) - len(bare) - 1 > 23
    )


def test_padding_is_inside_the_signature() -> None:
    """Stripping the padding breaks the signature: nobody on the path can unpad a batch."""
    data = _encode(MIXED)
    padding = read_batch_header(data).padding_bytes
    assert padding > 0
    # Shrink the padding item to empty (0x40) and drop its zeros: valid CBOR, bad signature.
    head = 1 if padding < 24 else 2
    stripped = data[: -64 - padding - head] + b"\x40" + data[-64:]
    assert read_batch_header(stripped).padding_bytes == 0
    with pytest.raises(SignatureInvalid):
        _decode(stripped)


def test_padding_that_is_not_zeros_is_refused_even_when_signed() -> None:
    """A sender that hides data in the padding (signed or not) is refused."""
    data = bytearray(_encode(MIXED))
    data[-65] = 0x01
    signed = bytes(data[:-64])
    with pytest.raises(MalformedBatch, match="padding holds bytes other than zeros"):
        _decode(signed + VESSEL_KEY.sign(signed))


def test_padding_never_passes_the_batch_limit() -> None:
    """Near max_batch_bytes the padding stops at the limit instead of going over it."""
    body = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1200))  # incompressible
    envelopes = [_message(1, Language.UND, body)]
    bare = _encode(envelopes, pad=False, codecs=(Codec.STORED,))
    limits = Limits(max_batch_bytes=len(bare) + 3)
    data = _encode(envelopes, codecs=(Codec.STORED,), limits=limits)
    assert len(bare) < len(data) <= limits.max_batch_bytes
    assert _decode(data, limits=limits) == tuple(envelopes)


# --- truncated, flipped, forged ----------------------------------------------------------------


def _assert_refused(data: bytes, **options: object) -> RemoteProtocolError:
    with pytest.raises(ProtocolError) as caught:
        _decode(data, **options)
    error = caught.value
    assert isinstance(error, RemoteProtocolError), f"{type(error).__name__}: {error}"
    assert len(str(error)) > 20
    return error


def test_every_truncation_is_refused() -> None:
    """A batch cut at any byte is refused with a typed error (never a traceback)."""
    data = _encode(MIXED[:3])
    for end in range(len(data)):
        error = _assert_refused(data[:end])
        assert isinstance(error, MalformedBatch | SignatureInvalid)


def test_every_bit_flip_is_refused() -> None:
    """Flipping any bit of a signed batch makes it fail: signature first, then the rest."""
    data = _encode(MIXED[:2])
    for index in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[index] ^= 1 << bit
            _assert_refused(bytes(flipped))


def test_forged_batch_is_refused_naming_the_key() -> None:
    """A batch signed with another key says so, and what to check."""
    forged = _encode(MIXED, signing_key=SigningKey(b"\x07" * 32))
    with pytest.raises(SignatureInvalid, match="does not match the key we hold") as caught:
        _decode(forged)
    assert "batch 1831 from vessel 42" in str(caught.value)


def test_shore_key_cannot_sign_for_a_vessel_direction_mixup() -> None:
    """An uplink batch offered as downlink is refused before any key is tried."""
    data = _encode(MIXED)
    with pytest.raises(MalformedBatch, match="travels uplink, not downlink"):
        _decode(data, direction=Direction.DOWNLINK)


def test_decoding_without_a_key_is_our_own_mistake() -> None:
    """No key and no explicit --no-verify: a local error, never a silent skip."""
    with pytest.raises(LocalProtocolError, match="verify_key"):
        _decode(_encode(MIXED), verify_key=None)
    assert _decode(_encode(MIXED), verify_key=None, insecure_skip_verify=True) == tuple(MIXED)


def test_not_a_batch_at_all() -> None:
    """Bytes from something else (JSON, a newer version) are refused with a hint."""
    with pytest.raises(MalformedBatch, match="not a vessel-relay batch, or a newer version"):
        _decode(b"{" + bytes(100))
    with pytest.raises(MalformedBatch, match="a batch is bytes"):
        _decode("text")  # type: ignore[arg-type]


# --- crafted, validly signed batches ----------------------------------------------------------


def _signed(header: list[object], direction: Direction = Direction.UPLINK) -> bytes:
    body = bytes([direction]) + dumps(header)
    return body + VESSEL_KEY.sign(body)


def _stored(skeleton: object, texts: Sequence[str] = ()) -> list[object]:
    raw = dumps(skeleton)
    payload = (
        bytes([len(raw)]) if len(raw) < 128 else bytes([len(raw) & 0x7F | 0x80, len(raw) >> 7])
    )
    payload += raw + b"\x00".join(text.encode() for text in texts)
    return [int(Codec.STORED), 0, payload]


RECEIPT_COLUMNS = {0: [4], 4: [0], 1: [9], 9: [1]}


def test_crafted_batch_helper_decodes() -> None:
    """The hand-built batches below differ from a good one only where they say."""
    envelopes = _decode(_signed([42, 1, 100, _stored(RECEIPT_COLUMNS)]))
    assert envelopes == (DeliveryReceipt(9, ReceiptStage.ACCEPTED_ASHORE, 100),)


@pytest.mark.parametrize(
    ("header", "error", "words"),
    [
        ([42, 1, 100], MalformedBatch, "not \\[vessel, sequence, minutes, frames"),
        ([42, -1, 100, _stored(RECEIPT_COLUMNS)], MalformedBatch, "batch sequence is -1"),
        ([42, 1, 100, [9, 0, b""]], MalformedBatch, "codec 9, unknown here"),
        ([42, 1, 100, [1, 70000, b""]], MalformedBatch, "dictionary 70000, out of range"),
        ([42, 1, 100, [0, 3, b"\x00"]], MalformedBatch, "stored frame names dictionary 3"),
        ([42, 1, 100, [1, 999, b"\x00"]], UnknownDictionary, "zstd dictionary 999"),
        ([42, 1, 100, [2, 999, b"\x00"]], UnknownDictionary, "context dictionary 999"),
        ([42, 1, 100, [1, 17, b"\x00"]], UnknownDictionary, "is a context entry here"),
        ([42, 1, 100, _stored(RECEIPT_COLUMNS), b""], MalformedBatch, ""),
        ([42, 1, 100, b""], MalformedBatch, "padding but no frame"),
        ([42, 1, 100, _stored(RECEIPT_COLUMNS), b"\x00", b"\x00"], MalformedBatch, "frame is not"),
        ([42, 1, 100, _stored({0: [4], 4: [0], 1: [9]})], MalformedBatch, "column 9 is too short"),
        ([42, 1, 100, _stored({0: [], 4: []})], MalformedBatch, "no envelopes"),
        ([42, 1, 100, _stored([1, 2])], MalformedBatch, "not a map of columns"),
        (
            [42, 1, 100, _stored(RECEIPT_COLUMNS, ["stray"])],
            MalformedBatch,
            "texts that no envelope uses",
        ),
        (
            [42, 1, 100, _stored({0: [1], 4: [0], 1: [1], 2: [0], 3: [0], 5: [1], 31: [1]})],
            MalformedBatch,
            "fewer eng texts than envelopes",
        ),
        (
            [
                42,
                1,
                100,
                _stored({0: [1], 4: [0], 1: [1], 2: [0], 3: [0], 5: [1], 31: [1]}, ["a"]),
                _stored({}),
            ],
            MalformedBatch,
            "2 frames but its envelopes use 1",
        ),
    ],
)
def test_signed_but_malformed_batches(header: list[object], error: type, words: str) -> None:
    """A correctly signed batch from a buggy vessel is still refused, naming the fault."""
    data = _signed(header)
    if words == "":  # the empty padding item is fine: this one must decode
        assert len(_decode(data)) == 1
        return
    with pytest.raises(error, match=words):
        _decode(data)


def test_unknown_dictionary_when_the_peer_lacks_it() -> None:
    """A batch coded with dictionaries this relay does not hold fails clearly, not garbled."""
    data = _encode(MIXED, codecs=(Codec.ZSTD,))
    with pytest.raises(UnknownDictionary, match="update the dictionaries on both sides"):
        _decode(data, codebook=Codebook())


# --- limits ------------------------------------------------------------------------------------


def test_limit_max_batch_bytes() -> None:
    """Too long on the wire: refused before parsing; too much to send: refused to encode."""
    data = _encode(MIXED)
    with pytest.raises(LimitExceeded, match="over the limit of 100"):
        _decode(data, limits=Limits(max_batch_bytes=100))
    with pytest.raises(LimitExceeded, match="send fewer envelopes per batch"):
        _encode(MIXED, limits=Limits(max_batch_bytes=100))


@pytest.mark.parametrize("codecs", CODEC_CHOICES[:3], ids=lambda c: c[0].name.lower())
def test_limit_max_decompressed_bytes(codecs: tuple[Codec, ...]) -> None:
    """Frames decoding to more than the budget are refused, whatever the codec."""
    envelopes = [_message(i, Language.ENG, "we are safe, the sea is calm " * 4) for i in range(30)]
    data = _encode(envelopes, codecs=codecs)
    with pytest.raises(LimitExceeded):
        _decode(data, limits=Limits(max_decompressed_bytes=500))


def test_limit_max_frames() -> None:
    """A batch with more frames than allowed is refused from its header."""
    data = _encode(MIXED)
    with pytest.raises(LimitExceeded, match=r"batch header: .* over the limit of 6"):
        _decode(data, limits=Limits(max_frames=2))  # 3 fields, 2 frames and padding: 6
    with pytest.raises(LimitExceeded, match="4 frames, over the limit of 3"):
        _decode(_encode(MIXED, pad=False), limits=Limits(max_frames=3))


def test_limit_max_envelopes() -> None:
    """Too many envelopes: refused to encode, and refused to decode."""
    envelopes = [DeliveryReceipt(i, ReceiptStage.DELIVERED, 0) for i in range(10)]
    data = _encode(envelopes, direction=Direction.DOWNLINK, signing_key=SHORE_KEY)
    with pytest.raises(LimitExceeded, match="over the limit of 5"):
        _decode(data, verify_key=SHORE_KEY.verify_key, limits=Limits(max_envelopes=5))
    with pytest.raises(LimitExceeded, match="do not fit one batch"):
        _encode(envelopes, limits=Limits(max_envelopes=5))


@pytest.mark.parametrize("codecs", CODEC_CHOICES[:3], ids=lambda c: c[0].name.lower())
def test_limit_max_text_chars(codecs: tuple[Codec, ...]) -> None:
    """A text longer than allowed is refused while decoding, in every codec."""
    data = _encode([_message(1, Language.THA, "สวัสดี" * 20)], codecs=codecs)
    with pytest.raises(LimitExceeded, match="characters"):
        _decode(data, limits=Limits(max_text_chars=50))


def test_limit_max_blob_bytes() -> None:
    """A sealed report bigger than this peer accepts is refused."""
    report = GrievanceReport(message_seq=1, union=1, written_minutes=0, sealed=bytes(2000))
    data = _encode([report])
    with pytest.raises(LimitExceeded, match="2000-byte field"):
        _decode(data, limits=Limits(max_blob_bytes=1000))


def test_limit_max_cbor_depth() -> None:
    """A skeleton nested deeper than allowed is refused before cbor2 builds it."""
    deep: object = 1
    for _ in range(8):
        deep = [deep]
    data = _signed([42, 1, 100, _stored({0: [4], 4: [0], 1: [9], 9: deep})])
    with pytest.raises(LimitExceeded, match="nesting is deeper than 5"):
        _decode(data)


def test_limit_max_container_length() -> None:
    """A skeleton column longer than allowed is refused before it is built."""
    envelopes = [DeliveryReceipt(i, ReceiptStage.DELIVERED, 0) for i in range(20)]
    data = _encode(envelopes, direction=Direction.DOWNLINK, signing_key=SHORE_KEY)
    with pytest.raises(LimitExceeded, match="20 items, over the limit of 10"):
        _decode(data, verify_key=SHORE_KEY.verify_key, limits=Limits(max_container_length=10))


def test_every_limit_field_is_tested() -> None:
    """A new Limits field needs its own test above."""
    tested = {
        "max_batch_bytes",
        "max_decompressed_bytes",
        "max_frames",
        "max_envelopes",
        "max_text_chars",
        "max_blob_bytes",
        "max_cbor_depth",
        "max_container_length",
    }
    assert set(Limits.__slots__) == tested
    assert replace(DEFAULT_LIMITS) == DEFAULT_LIMITS


# --- decompression bomb -------------------------------------------------------------------------


def _zstd_bomb(inflated_bytes: int) -> bytes:
    """A magicless zstd frame with no content size that inflates to ``inflated_bytes``."""
    skeleton = dumps({0: [1], 4: [0], 1: [1], 2: [0], 3: [0], 5: [1], 31: [1]})
    params = zstandard.ZstdCompressionParameters.from_level(
        3, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False
    )
    compressor = zstandard.ZstdCompressor(compression_params=params)
    writer = compressor.compressobj()
    out = [writer.compress(bytes([len(skeleton)]) + skeleton)]
    chunk = b"a" * (1 << 20)
    for _ in range(inflated_bytes >> 20):
        out.append(writer.compress(chunk))
    out.append(writer.flush())
    return b"".join(out)


def test_decompression_bomb_is_refused_without_allocating_its_output() -> None:
    """A validly signed batch whose zstd frame inflates to 256 MiB is refused while
    memory stays within a few MiB of the 1 MiB budget (tracemalloc peak, not time)."""
    bomb = _zstd_bomb(256 << 20)
    assert len(bomb) < 64 * 1024
    data = _signed([42, 1, 100, [int(Codec.ZSTD), 0, bomb]])
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded, match="decompression bomb"):
            _decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * DEFAULT_LIMITS.max_decompressed_bytes, f"peak {peak} bytes"


def test_decompression_bomb_with_a_dictionary() -> None:
    """The same bomb naming a real dictionary id is refused the same way."""
    bomb = _zstd_bomb(8 << 20)
    data = _signed([42, 1, 100, [int(Codec.ZSTD), 0, bomb]])
    with pytest.raises(LimitExceeded):
        _decode(data)


# --- replay ------------------------------------------------------------------------------------


def test_replayed_batch_is_detected_by_the_window() -> None:
    """The shore's window says DUPLICATE for a batch seen before, TOO_OLD for one far below."""
    window = ReplayWindow(window=1000, vessel="TH-0042")
    for seq in (1831, 1832, 5000):
        batch = decode_batch(
            _encode(MIXED[:1], batch_seq=seq),
            codebook=CODEBOOK,
            verify_key=VESSEL_KEY.verify_key,
        )
        assert window.check(batch.batch_seq) is Verdict.NEW
        window.accept(batch.batch_seq)
    again = decode_batch(_encode(MIXED[:1]), codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key)
    assert window.check(again.batch_seq) is Verdict.DUPLICATE
    with pytest.raises(ReplayedBatch, match="already accepted: acknowledge it again"):
        window.accept(again.batch_seq)
    assert window.check(3000) is Verdict.TOO_OLD
    with pytest.raises(ReplayedBatch, match="too old to tell"):
        window.accept(3000)


def test_reply_downlink_round_trip_with_shore_key() -> None:
    """A family's reply goes down signed by the shore and is verified with its key."""
    reply = Reply(
        reply_seq=3, crew=1, contact=2, written_minutes=5, lang=Language.MYA, body="နေကောင်းလား"
    )
    data = _encode([reply], direction=Direction.DOWNLINK, signing_key=SHORE_KEY)
    assert _decode(data, verify_key=SHORE_KEY.verify_key) == (reply,)
    with pytest.raises(SignatureInvalid):
        _decode(data)  # the vessel's own key does not verify the shore's batches
