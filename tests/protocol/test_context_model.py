"""The context-model codec: a trained character model per language driving a range coder.

Every frame must round-trip exactly, whatever the text; garbage must raise only our own
errors; limits are enforced while decoding; models and payloads are reproducible bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import context_model
from protocol.context_model import (
    ContextModel,
    decode_frame,
    encode_frame,
    ideal_code_length_bits,
    train_context_model,
)
from protocol.errors import LimitExceeded, MalformedBatch, ProtocolError, UnknownDictionary
from protocol.languages import TRAINED_LANGUAGES, Language
from tests.kit.corpus import CORPUS

LIMITS = {"max_texts": 4096, "max_chars": 16_384, "max_skeleton_bytes": 65_536}

#: A small fixed corpus for golden vectors: changing the model or coder breaks them.
GOLDEN_CORPUS = [
    "the net is torn, we come back on friday",
    "we are safe, the sea is calm today",
    "please send money to my mother",
    "the captain says we come back next week",
    "no fish today, the engine is broken",
]
GOLDEN_SKELETON = bytes.fromhex("a200820101018201")
GOLDEN_TEXTS = ["we are safe", "the net is torn 🎣", ""]


def _lines(language: Language, split: str) -> list[str]:
    text = (CORPUS / f"{language.code}.{split}.txt").read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line]


@pytest.fixture(scope="module")
def models() -> dict[Language, ContextModel]:
    """One model per trained language, from the train split (a few seconds in all)."""
    return {lang: train_context_model(_lines(lang, "train")) for lang in TRAINED_LANGUAGES}


@pytest.fixture(scope="module")
def golden_model() -> ContextModel:
    """A tiny model trained on a fixed corpus, for golden vectors."""
    return train_context_model(GOLDEN_CORPUS, order=3)


def _decode(model: ContextModel, payload: bytes, **limits: int) -> tuple[bytes, list[str]]:
    return decode_frame(model, payload, **{**LIMITS, **limits})


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("language", TRAINED_LANGUAGES, ids=lambda lang: lang.code)
def test_every_dev_line_round_trips_in_batches_of_20(
    models: dict[Language, ContextModel], language: Language
) -> None:
    """Every line of the dev split, sent in batches of 20, arrives exactly as written."""
    model = models[language]
    dev = _lines(language, "dev")
    for start in range(0, len(dev), 20):
        batch = dev[start : start + 20]
        payload = encode_frame(model, b"", batch)
        assert _decode(model, payload) == (b"", batch)


@pytest.mark.parametrize("language", TRAINED_LANGUAGES, ids=lambda lang: lang.code)
def test_dev_batches_cost_close_to_the_ideal_code_length(
    models: dict[Language, ContextModel], language: Language
) -> None:
    """A batch of 20 dev messages costs at most 1.1x the model's ideal code length."""
    model = models[language]
    dev = _lines(language, "dev")
    coded = ideal = 0.0
    for start in range(0, len(dev), 20):
        batch = dev[start : start + 20]
        coded += 8 * len(encode_frame(model, b"", batch))
        ideal += ideal_code_length_bits(model, batch)
    assert coded <= 1.1 * ideal


# Text in every script our crews write, plus emoji, astral and odd code points.
SCRIPTS = st.sampled_from(
    [
        (0x1000, 0x109F),  # Myanmar (Burmese, Shan)
        (0x0E00, 0x0E7F),  # Thai
        (0x1780, 0x17FF),  # Khmer
        (0x0E80, 0x0EFF),  # Lao
        (0x0020, 0x007E),  # Latin
        (0x00C0, 0x01B0),  # Latin with diacritics
        (0x1EA0, 0x1EF9),  # Vietnamese
        (0x1F300, 0x1FAFF),  # emoji
        (0x10000, 0x10FFFF),  # astral
        (0x0000, 0x001F),  # control characters
        (0xD800, 0xDFFF),  # lone surrogates: still a Python str
    ]
)


@st.composite
def crew_text(draw: st.DrawFn) -> str:
    """A text mixing runs of several scripts."""
    parts = []
    for low, high in draw(st.lists(SCRIPTS, min_size=0, max_size=4)):
        alphabet = st.characters(min_codepoint=low, max_codepoint=high, exclude_categories=())
        parts.append(draw(st.text(alphabet=alphabet, max_size=30)))
    return "".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    language=st.sampled_from(TRAINED_LANGUAGES),
    skeleton=st.binary(max_size=300),
    texts=st.lists(crew_text(), max_size=8),
)
def test_any_text_in_any_script_round_trips(
    models: dict[Language, ContextModel], language: Language, skeleton: bytes, texts: list[str]
) -> None:
    """Any texts (any script, emoji, astral, surrogates, empty) and skeleton round-trip."""
    payload = encode_frame(models[language], skeleton, texts)
    assert _decode(models[language], payload) == (skeleton, texts)


def test_skeleton_round_trips_and_costs_less_than_its_length(
    models: dict[Language, ContextModel],
) -> None:
    """A 200-byte CBOR-like skeleton comes back exactly and costs clearly under 200 bytes."""
    columns = bytearray(b"\xa5\x00\x94")
    columns += bytes([0x01]) * 20
    columns += b"\x01\x94" + bytes([0x00, 0x01] * 10)
    columns += b"\x04\x94" + bytes([0x18, 0x3C] * 10)
    columns += b"\x05\x94" + b"".join(bytes([0x19, 0x01, i]) for i in range(20))
    columns += b"\x1f\x94" + bytes(range(20))
    skeleton = bytes(columns[:200])
    model = models[Language.ENG]
    alone = encode_frame(model, skeleton, [])
    assert _decode(model, alone) == (skeleton, [])
    assert len(alone) < 0.75 * len(skeleton)
    with_texts = encode_frame(model, skeleton, ["we are safe"])
    assert _decode(model, with_texts) == (skeleton, ["we are safe"])


def test_empty_frame_is_empty_bytes(models: dict[Language, ContextModel]) -> None:
    """A frame with no skeleton and no texts costs nothing and decodes back to nothing."""
    model = models[Language.THA]
    assert encode_frame(model, b"", []) == b""
    assert _decode(model, b"") == (b"", [])


# --- golden vectors -------------------------------------------------------------------------


def test_golden_model_bytes(golden_model: ContextModel) -> None:
    """Training on a fixed corpus gives the same model bytes on every platform and release."""
    assert golden_model.model_hash == GOLDEN_MODEL_HASH
    assert golden_model.model_hash == hashlib.sha256(golden_model.to_bytes()).hexdigest()


def test_golden_payload_decodes(golden_model: ContextModel) -> None:
    """A payload coded once (fixed bytes) still decodes, and coding gives those bytes again."""
    assert _decode(golden_model, GOLDEN_PAYLOAD) == (GOLDEN_SKELETON, GOLDEN_TEXTS)
    assert encode_frame(golden_model, GOLDEN_SKELETON, GOLDEN_TEXTS) == GOLDEN_PAYLOAD


def test_golden_payload_with_a_real_model(models: dict[Language, ContextModel]) -> None:
    """A Thai batch coded with the model trained on the corpus gives fixed bytes."""
    texts = ["เรือจะกลับวันศุกร์", "ปลอดภัยดี"]
    payload = encode_frame(models[Language.THA], b"", texts)
    assert payload.hex() == GOLDEN_THAI_PAYLOAD
    assert _decode(models[Language.THA], payload) == (b"", texts)


# The model hash covers zstd's output too: it pins zstandard's version along with ours.
GOLDEN_MODEL_HASH = "f87acc63e2d1aa3b1538a3a9869d554a573680fddf96f661682ba8fd9d805fe4"
GOLDEN_PAYLOAD = bytes.fromhex("2e1319492158d11b92af778de745985e2749fb1a")
GOLDEN_THAI_PAYLOAD = "1c717c18cd3f5d3ce728ba32099690c9ce904e1d"


# --- models ---------------------------------------------------------------------------------


def test_training_twice_gives_identical_bytes() -> None:
    """The same corpus always trains to byte-identical models (reproducible shipping)."""
    lines = _lines(Language.VIE, "train")
    first = train_context_model(lines)
    second = train_context_model(list(reversed(list(reversed(lines)))))
    assert first.to_bytes() == second.to_bytes()
    assert first.model_hash == second.model_hash


def test_model_survives_serialisation(models: dict[Language, ContextModel]) -> None:
    """A model loaded from its bytes codes exactly like the original and has the same hash."""
    model = models[Language.MYA]
    loaded = ContextModel.from_bytes(model.to_bytes())
    assert loaded.to_bytes() == model.to_bytes()
    texts = _lines(Language.MYA, "dev")[:20]
    assert encode_frame(loaded, b"", texts) == encode_frame(model, b"", texts)
    assert ideal_code_length_bits(loaded, texts) == ideal_code_length_bits(model, texts)


def test_round_trip_stays_exact_when_caches_overflow(
    models: dict[Language, ContextModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With tiny caches (evicted all the time) coding gives the same bytes and round-trips."""
    model = models[Language.LAO]
    batches = [_lines(Language.LAO, "dev")[start : start + 20] for start in (0, 20, 40)]
    expected = [encode_frame(model, b"", batch) for batch in batches]
    monkeypatch.setattr(context_model, "_CACHE_LIMIT", 4)
    cramped = ContextModel.from_bytes(model.to_bytes())
    for batch, payload in zip(batches, expected, strict=True):
        assert encode_frame(cramped, b"", batch) == payload
        assert _decode(cramped, payload) == (b"", batch)


def test_model_with_unsorted_successors_is_refused(golden_model: ContextModel) -> None:
    """Successors must be ascending within a context (coding relies on it): else refused."""
    body = bytearray(zstandard.ZstdDecompressor().decompress(golden_model.to_bytes()[5:]))
    order, alphabet_size = struct.unpack_from("<BI", body, 0)
    at = 5 + 4 * alphabet_size
    for _ in range(order + 1):  # find a context with two successors, in any order
        contexts, pairs = struct.unpack_from("<II", body, at)
        at += 8 + 8 * contexts
        sizes = struct.unpack_from(f"<{contexts}I", body, at)
        at += 4 * contexts
        symbols_at, first = at, 0
        for size in sizes:
            if size >= 2:
                where = symbols_at + 2 * first
                body[where : where + 4] = body[where + 2 : where + 4] + body[where : where + 2]
                data = golden_model.to_bytes()[:5] + zstandard.ZstdCompressor().compress(
                    bytes(body)
                )
                with pytest.raises(UnknownDictionary, match="inconsistent"):
                    ContextModel.from_bytes(data)
                return
            first += size
        at += 6 * pairs
    pytest.fail("the golden model has no context with two successors")


def test_training_reports_progress() -> None:
    """Training calls progress with growing work counts, ending at the total."""
    seen: list[tuple[int, int]] = []
    train_context_model(GOLDEN_CORPUS * 100, order=4, progress=lambda d, t: seen.append((d, t)))
    assert seen
    assert seen[-1][0] == seen[-1][1]
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


@pytest.mark.parametrize(
    "data",
    [b"", b"VRCM", b"VRCM\x09" + b"x" * 10, b"XXXX\x01", b"VRCM\x01not zstd at all"],
)
def test_bad_model_bytes_are_refused(data: bytes) -> None:
    """Bytes that are not a model of our format are refused with UnknownDictionary."""
    with pytest.raises(UnknownDictionary):
        ContextModel.from_bytes(data)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000), flip=st.integers(0, 255))
def test_corrupt_model_bytes_are_refused(golden_model: ContextModel, cut: int, flip: int) -> None:
    """A truncated or altered model file loads as a model or raises UnknownDictionary."""
    data = bytearray(golden_model.to_bytes())
    at = cut % len(data)
    data[at] ^= flip
    for candidate in (bytes(data), bytes(data[:at])):
        with contextlib.suppress(UnknownDictionary):
            ContextModel.from_bytes(candidate)


# --- limits ---------------------------------------------------------------------------------


def test_limits_are_enforced(models: dict[Language, ContextModel]) -> None:
    """Too many texts, too long a text, too long a skeleton: each raises LimitExceeded."""
    model = models[Language.ENG]
    payload = encode_frame(model, b"\x01" * 50, ["abc", "defgh", "ij"])
    assert _decode(model, payload, max_texts=3, max_chars=5, max_skeleton_bytes=50)[1] == [
        "abc",
        "defgh",
        "ij",
    ]
    with pytest.raises(LimitExceeded):
        _decode(model, payload, max_texts=2)
    with pytest.raises(LimitExceeded):
        _decode(model, payload, max_chars=4)
    with pytest.raises(LimitExceeded):
        _decode(model, payload, max_skeleton_bytes=49)
    with pytest.raises(LimitExceeded):
        decode_frame(model, payload, **LIMITS, max_total_chars=9)
    assert decode_frame(model, payload, **LIMITS, max_total_chars=10)[1] == ["abc", "defgh", "ij"]


def test_a_long_text_stops_at_the_limit(models: dict[Language, ContextModel]) -> None:
    """A text longer than the character limit is refused while it is being decoded."""
    model = models[Language.ENG]
    payload = encode_frame(model, b"", [" ".join(_lines(Language.ENG, "dev"))])
    with pytest.raises(LimitExceeded):
        _decode(model, payload, max_chars=1000)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=64), max_chars=st.integers(0, 50), max_texts=st.integers(0, 5))
def test_any_short_payload_stays_within_the_limits(
    models: dict[Language, ContextModel], payload: bytes, max_chars: int, max_texts: int
) -> None:
    """Whatever a short payload holds, decoding yields no more than the limits allow."""
    try:
        skeleton, texts = decode_frame(
            models[Language.KHM],
            payload,
            max_texts=max_texts,
            max_chars=max_chars,
            max_skeleton_bytes=16,
        )
    except (MalformedBatch, LimitExceeded):
        return
    assert len(skeleton) <= 16
    assert len(texts) <= max_texts
    assert all(len(text) <= max_chars for text in texts)


# --- garbage --------------------------------------------------------------------------------


def _real_payloads(models: dict[Language, ContextModel]) -> list[tuple[Language, bytes]]:
    payloads = []
    for language in (Language.ENG, Language.MYA, Language.THA, Language.VIE):
        dev = _lines(language, "dev")[:20]
        payloads.append((language, encode_frame(models[language], b"\xa1\x00\x81\x01", dev)))
    return payloads


def _only_protocol_errors(model: ContextModel, payload: bytes) -> None:
    with contextlib.suppress(MalformedBatch, LimitExceeded):
        decode_frame(model, payload, max_texts=64, max_chars=512, max_skeleton_bytes=1024)


mutations = st.tuples(
    st.integers(0, 3),  # which real payload
    st.sampled_from(["flip", "cut", "insert", "random"]),
    st.integers(0, 2**16),
    st.binary(min_size=1, max_size=8),
)


def _mutate(payload: bytes, kind: str, where: int, data: bytes) -> bytes:
    at = where % (len(payload) + 1)
    if kind == "flip":
        if not payload:
            return data
        at %= len(payload)
        return payload[:at] + bytes([payload[at] ^ (data[0] or 1)]) + payload[at + 1 :]
    if kind == "cut":
        return payload[:at]
    if kind == "insert":
        return payload[:at] + data + payload[at:]
    return data * (1 + where % 64)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations)
def test_mutated_payloads_raise_only_protocol_errors(
    models: dict[Language, ContextModel], mutation: tuple[int, str, int, bytes]
) -> None:
    """Flipped, cut, extended or random payloads decode or raise only protocol errors."""
    which, kind, where, data = mutation
    language, payload = _real_payloads_cached(models)[which]
    _only_protocol_errors(models[language], _mutate(payload, kind, where, data))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@settings(max_examples=100_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations)
def test_mutated_payloads_raise_only_protocol_errors_long(
    models: dict[Language, ContextModel], mutation: tuple[int, str, int, bytes]
) -> None:
    """The same fuzz invariant over 100,000 mutated payloads."""
    which, kind, where, data = mutation
    language, payload = _real_payloads_cached(models)[which]
    _only_protocol_errors(models[language], _mutate(payload, kind, where, data))


_PAYLOADS: list[tuple[Language, bytes]] = []


def _real_payloads_cached(models: dict[Language, ContextModel]) -> list[tuple[Language, bytes]]:
    if not _PAYLOADS:
        _PAYLOADS.extend(_real_payloads(models))
    return _PAYLOADS


def test_errors_are_protocol_errors() -> None:
    """The decode errors the codec raises belong to the protocol hierarchy."""
    assert issubclass(MalformedBatch, ProtocolError)
    assert issubclass(LimitExceeded, ProtocolError)
