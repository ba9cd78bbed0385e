"""Frame codecs: stored, zstd with trained dictionaries, and the context model.

Each codec round-trips a frame exactly; the encoder keeps the smallest payload; zstd
frames carry no magic, size, checksum or dictionary id; bad payloads raise only typed
errors; the decoder never trusts a declared size.
"""

from __future__ import annotations

import tracemalloc

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch, encode_batch
from protocol.codebook import Codebook, CodebookEntry, Codec
from protocol.compression import (
    CONTEXT_SKELETON_LIMIT,
    Frame,
    decode_frame,
    encode_frame,
    zstd_decompress,
)
from protocol.envelopes import CrewMessage, GrievanceReport
from protocol.errors import LimitExceeded, MalformedBatch, UnknownDictionary
from protocol.languages import Language
from tests.protocol.test_envelopes import VESSEL_KEY, texts

CODEBOOK = default_codebook()
SKELETON = bytes.fromhex("a3008101048100018105")
LIMITS = {"budget": 1 << 20, "max_texts": 4096, "max_chars": 16_384}


@pytest.mark.parametrize("codec", list(Codec), ids=lambda codec: codec.name.lower())
@given(
    language=st.sampled_from(list(Language)),
    frame_texts=st.lists(texts, max_size=8),
    with_skeleton=st.booleans(),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_each_codec_round_trips(
    codec: Codec, language: Language, frame_texts: list[str], with_skeleton: bool
) -> None:
    """Any texts in any language, with or without a skeleton, come back exactly."""
    skeleton = SKELETON if with_skeleton else None
    frame = encode_frame(CODEBOOK, language, skeleton, frame_texts, codecs=(codec,))
    got_skeleton, got_texts = decode_frame(CODEBOOK, frame, has_skeleton=with_skeleton, **LIMITS)
    assert got_texts == frame_texts
    assert got_skeleton == (skeleton or b"")


def test_encoder_keeps_the_smallest_payload() -> None:
    """With every codec allowed, the chosen frame is no larger than any single codec's."""
    lines = ["สวัสดีครับแม่ ผมสบายดี", "ส่งเงินให้แม่แล้วนะครับ", "ปลาเยอะมาก"]
    best = encode_frame(CODEBOOK, Language.THA, SKELETON, lines)
    for codec in Codec:
        alone = encode_frame(CODEBOOK, Language.THA, SKELETON, lines, codecs=(codec,))
        assert len(best.payload) <= len(alone.payload)
    assert best.codec is not Codec.STORED


def test_zstd_frames_drop_every_optional_byte() -> None:
    """No magic number, no content size, no checksum, no dictionary id in a zstd frame."""
    frame = encode_frame(CODEBOOK, Language.ENG, SKELETON, ["we are safe"], codecs=(Codec.ZSTD,))
    assert frame.dictionary_id == CODEBOOK.newest(Language.ENG, Codec.ZSTD).dictionary_id  # type: ignore[union-attr]
    assert not frame.payload.startswith(b"\x28\xb5\x2f\xfd")
    params = zstandard.get_frame_parameters(b"\x28\xb5\x2f\xfd" + frame.payload)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert params.dict_id == 0
    assert not params.has_checksum


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "truncated"),
        (b"\x00\x01\x02\x03\x04\x05", "not valid zstd|truncated"),
        (b"\xff" * 40, "not valid zstd"),
    ],
)
def test_bad_zstd_payloads(payload: bytes, words: str) -> None:
    """Garbage and cut frames raise MalformedBatch with a plain sentence."""
    with pytest.raises(MalformedBatch, match=words):
        zstd_decompress(payload, None, 1 << 20)


def test_zstd_trailing_bytes_are_refused() -> None:
    """Bytes after the end of the zstd frame are refused (nothing may hide there)."""
    frame = encode_frame(CODEBOOK, Language.UND, SKELETON, ["hello"], codecs=(Codec.ZSTD,))
    with pytest.raises(MalformedBatch, match="bytes after its end"):
        decode_frame(
            CODEBOOK, Frame(Codec.ZSTD, 0, frame.payload + b"\x00"), has_skeleton=True, **LIMITS
        )


def test_zstd_bomb_stops_at_the_budget() -> None:
    """64 MiB of zeros in a few KB: refused near the budget, memory stays small."""
    params = zstandard.ZstdCompressionParameters.from_level(
        1, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False
    )
    bomb = zstandard.ZstdCompressor(compression_params=params).compress(bytes(64 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded, match="more than 100000 bytes"):
            zstd_decompress(bomb, None, 100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"peak {peak} bytes"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"\xff\xff\xff\xff\xff", "bad skeleton length"),
        (b"\x20abc", "declares a skeleton of 32 bytes"),
        (b"\x00\xff\xfe", "not valid UTF-8 at byte 0"),
    ],
)
def test_bad_stored_frames(payload: bytes, words: str) -> None:
    """Stored frames with a bad length prefix or bad UTF-8 are malformed."""
    with pytest.raises(MalformedBatch, match=words):
        decode_frame(CODEBOOK, Frame(Codec.STORED, 0, payload), has_skeleton=True, **LIMITS)


def test_stored_frame_limits() -> None:
    """Too many texts, a text too long, or over the budget: LimitExceeded."""
    frame = Frame(Codec.STORED, 0, b"\x00" + b"\x00".join([b"ab"] * 10))
    with pytest.raises(LimitExceeded, match="more than 5 texts"):
        decode_frame(CODEBOOK, frame, has_skeleton=True, budget=1000, max_texts=5, max_chars=99)
    with pytest.raises(LimitExceeded, match="over the limit of 1"):
        decode_frame(CODEBOOK, frame, has_skeleton=True, budget=1000, max_texts=99, max_chars=1)
    with pytest.raises(LimitExceeded, match="budget"):
        decode_frame(CODEBOOK, frame, has_skeleton=True, budget=10, max_texts=99, max_chars=99)


def test_context_frame_with_a_skeleton_outside_frame_0() -> None:
    """Only the first frame may carry the skeleton, in the context codec too."""
    frame = encode_frame(CODEBOOK, Language.ENG, SKELETON, ["hi"], codecs=(Codec.CONTEXT,))
    assert frame.codec is Codec.CONTEXT
    with pytest.raises((MalformedBatch, LimitExceeded), match="skeleton"):
        decode_frame(CODEBOOK, frame, has_skeleton=False, **LIMITS)


def test_context_frame_is_bounded_by_the_budget() -> None:
    """A context frame whose texts add up past the budget is refused."""
    frame = encode_frame(
        CODEBOOK, Language.ENG, None, ["the sea is calm"] * 40, codecs=(Codec.CONTEXT,)
    )
    with pytest.raises(LimitExceeded):
        decode_frame(CODEBOOK, frame, has_skeleton=False, budget=200, max_texts=99, max_chars=99)


def test_unknown_and_corrupt_dictionaries() -> None:
    """A frame naming an id we lack, or a model that does not load: UnknownDictionary."""
    frame = encode_frame(CODEBOOK, Language.MYA, None, ["မင်္ဂလာပါ"], codecs=(Codec.CONTEXT,))
    with pytest.raises(UnknownDictionary, match=f"dictionary {frame.dictionary_id}"):
        decode_frame(Codebook(), frame, has_skeleton=False, **LIMITS)
    broken = Codebook([CodebookEntry(frame.dictionary_id, Codec.CONTEXT, Language.MYA, b"VRCMxx")])
    with pytest.raises(UnknownDictionary):
        decode_frame(broken, frame, has_skeleton=False, **LIMITS)


def test_no_model_for_the_language_falls_back_to_stored() -> None:
    """Context alone for a language without a model: the frame is stored, not an error."""
    frame = encode_frame(CODEBOOK, Language.UND, None, ["hello"], codecs=(Codec.CONTEXT,))
    assert frame == Frame(Codec.STORED, 0, b"hello")


def test_sealed_grievance_beside_a_burmese_message() -> None:
    """A batch with a Burmese message and a 4 KiB sealed grievance report encodes and decodes.

    The sealed report is ciphertext: after a few KB every byte value has been seen, which
    drives the context codec's skeleton byte model to its last symbol. The batch encoder no
    longer tries the context codec on a skeleton that big, so the frame is also coded with
    the context codec alone, below the batch layer.
    """
    sealed = bytes((i * 167 + i // 256) % 256 for i in range(4144))
    envelopes = [
        CrewMessage(
            message_seq=1,
            crew=1,
            contact=1,
            written_minutes=0,
            lang=Language.MYA,
            body="မင်္ဂလာပါ အမေ",
        ),
        GrievanceReport(message_seq=2, union=1, written_minutes=0, sealed=sealed),
    ]
    try:
        data = encode_batch(
            envelopes,
            direction=Direction.UPLINK,
            vessel_id=1,
            batch_seq=1,
            batch_minutes=0,
            signing_key=VESSEL_KEY,
            codebook=CODEBOOK,
        )
    except BaseException as exc:  # constriction's PanicException is a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        pytest.fail(f"the context codec panicked: {exc}")
    batch = decode_batch(data, codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key)
    assert batch.envelopes == tuple(envelopes)

    from protocol import context_model

    model = context_model.ContextModel.from_bytes(
        CODEBOOK.newest(Language.MYA, Codec.CONTEXT).content  # type: ignore[union-attr]
    )
    skeleton = b"\xa1" + sealed  # every byte value, as in the batch's skeleton
    payload = context_model.encode_frame(model, skeleton, ["မင်္ဂလာပါ အမေ"])
    assert context_model.decode_frame(
        model, payload, max_texts=4, max_chars=100, max_skeleton_bytes=1 << 16
    ) == (skeleton, ["မင်္ဂလာပါ အမေ"])


def test_a_skeleton_full_of_sealed_reports_is_not_context_coded() -> None:
    """Past CONTEXT_SKELETON_LIMIT the context codec is not tried (it is slow on ciphertext
    and cannot shrink it); the frame still round-trips, and a smaller skeleton keeps the
    choice."""
    lines = ["မင်္ဂလာပါ အမေ", "နေကောင်းလား"]
    big = bytes(range(256)) * (CONTEXT_SKELETON_LIMIT // 256) + b"\x00"
    frame = encode_frame(CODEBOOK, Language.MYA, big, lines)
    assert frame.codec is not Codec.CONTEXT
    assert decode_frame(CODEBOOK, frame, has_skeleton=True, **LIMITS) == (big, lines)
    alone = encode_frame(CODEBOOK, Language.MYA, big, lines, codecs=(Codec.CONTEXT,))
    assert alone.codec is Codec.STORED
    at_limit = big[:CONTEXT_SKELETON_LIMIT]
    assert (
        encode_frame(CODEBOOK, Language.MYA, at_limit, lines, codecs=(Codec.CONTEXT,)).codec
        is Codec.CONTEXT
    )
    small = encode_frame(CODEBOOK, Language.MYA, SKELETON, lines)
    assert small.codec is Codec.CONTEXT


#: 64 random bytes that, as a context frame of the English model (id 17), decode a long
#: skeleton until the byte model has seen 255 values, then hit Uniform(1).
PANIC_PAYLOAD = bytes.fromhex(
    "f542e98e0aa628a0a665c28de4a8439b38c07cfe4f2efb8b3cd34b2892b1ddc9"
    "3c1a0b9e6fe832c74ce0891766673006295d327dfa0b4f714d96db34c55528fd"
)


def test_random_context_frame_raises_only_protocol_errors() -> None:
    """A signed but random context frame must decode or raise a protocol error, nothing else."""
    frame = Frame(Codec.CONTEXT, 17, PANIC_PAYLOAD)
    try:
        decode_frame(CODEBOOK, frame, has_skeleton=True, **LIMITS)
    except (MalformedBatch, LimitExceeded):
        pass
    except BaseException as exc:  # constriction's PanicException is a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        pytest.fail(f"the context decoder panicked: {exc}")
