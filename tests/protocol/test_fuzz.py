"""Fuzz: mutated batches either decode or raise the protocol's own remote errors, nothing else.

This is h11's fuzz invariant for our wire format. Real batches (every codec, up and down,
mixed languages and kinds) are mutated by bit flips, truncations, splices of two batches,
byte insertions and deletions, and CBOR-level edits (header fields, frame codec and
dictionary ids, frame payload bytes, skeleton columns re-coded with the frame's own
codec). Half of the mutants are signed again with the right key *after* mutation, so the
mutations get past the signature into the decompressors (zstd and the context coder) and
the CBOR and envelope validators.

The default run decodes 2,000 mutants; ``-m slow`` decodes 100,000 and prints the time
and where it went (by codec of the base batch).

Compact frames (:mod:`protocol.compact`) get the same invariant: real frames (every codec,
one to all uplink envelopes) mutated on the wire, and half of the mutants made from
the frame's *plaintext* (bit flips, cuts, splices, edited rows, frame codes and payloads)
sealed again with the right link keys, so they get past the tag into the row and text
decoders.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable

import cbor2
import pytest

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch, encode_batch
from protocol.cbor import dumps
from protocol.codebook import Codec
from protocol.compact import LinkKeys, decode_compact, encode_compact, open_compact, seal_compact
from protocol.compression import Frame, decode_frame, encode_frame
from protocol.envelopes import (
    BatchAck,
    CaseStatus,
    CaseStatusUpdate,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryFailure,
    DeliveryReceipt,
    DictionaryUpdate,
    Envelope,
    FailureReason,
    GrievanceReport,
    QuotaNotice,
    ReceiptStage,
    Reply,
    Sos,
)
from protocol.errors import RemoteProtocolError
from protocol.languages import Language
from protocol.signing import SIGNATURE_BYTES
from tests.protocol.test_envelopes import SHORE_KEY, VESSEL_KEY

CODEBOOK = default_codebook()
M = 29_000_000


def _message(seq: int, lang: Language, body: str) -> CrewMessage:
    return CrewMessage(
        message_seq=seq,
        crew=seq % 4,
        contact=seq % 3,
        written_minutes=M - seq,
        lang=lang,
        body=body,
    )


UPLINK = [
    ContactBookChange(
        2, 1, Channel.EMAIL, "mother@example.org", M, name="Mae", contact_lang=Language.THA
    ),
    _message(1, Language.MYA, "မင်္ဂလာပါ အမေ၊ ကျွန်တော် နေကောင်းပါတယ်"),
    _message(2, Language.THA, "สวัสดีครับแม่ ผมสบายดี"),
    _message(3, Language.ENG, "the net is torn, we come back on friday"),
    CrewMessage(message_seq=4, crew=1, contact=2, written_minutes=M, quick=17),
    GrievanceReport(message_seq=5, union=3, written_minutes=M, sealed=bytes(range(180)) * 2),
    Sos(
        message_seq=6,
        crew=1,
        written_minutes=M,
        lang=Language.KHM,
        note="ជួយផង",
        position=(1_300_000, 10_300_000),
    ),
    BatchAck(up_to=12, written_minutes=M, ranges=((14, 20),), rejected=((13, 4),)),
    _message(7, Language.MYA, "ငါးဖမ်းတာ ကောင်းပါတယ်"),
]
DOWNLINK: list[Envelope] = [
    DeliveryReceipt(1, ReceiptStage.DELIVERED, M),
    DeliveryFailure(3, FailureReason.DEADLINE_PASSED, M, Language.ENG, "no answer"),
    Reply(9, 1, 2, M - 5, Language.THA, "แม่สบายดี คิดถึงลูกนะ", True),
    CaseStatusUpdate(5, CaseStatus.ACKNOWLEDGED, M, sealed_note=b"\x05" * 80),
    QuotaNotice(crew=1, month=202611, used_bytes=900, quota_bytes=10_240, written_minutes=M),
    DictionaryUpdate(
        dictionary_id=40, codec=1, part=0, parts=3, data=b"\x37" * 200, written_minutes=M
    ),
    Reply(10, 2, 1, M - 1, Language.VIE, "Con khỏe không? Mẹ nhớ con lắm"),
]


def _base_batches() -> list[tuple[str, Direction, bytes]]:
    """Real batches to mutate: each codec alone and the best-of, up and down."""
    out = []
    for codecs, label in (
        ((Codec.STORED,), "stored"),
        ((Codec.ZSTD,), "zstd"),
        ((Codec.CONTEXT,), "context"),
        ((Codec.STORED, Codec.ZSTD, Codec.CONTEXT), "best"),
    ):
        for direction, envelopes in ((Direction.UPLINK, UPLINK), (Direction.DOWNLINK, DOWNLINK)):
            key = VESSEL_KEY if direction is Direction.UPLINK else SHORE_KEY
            for size in (1, 3, len(envelopes)):
                data = encode_batch(
                    envelopes[:size],
                    direction=direction,
                    vessel_id=77,
                    batch_seq=size,
                    batch_minutes=M,
                    signing_key=key,
                    codebook=CODEBOOK,
                    codecs=codecs,
                )
                out.append((label, direction, data))
    return out


# --- mutators: bytes -> bytes ---------------------------------------------------------------


def _flip(rng: random.Random, data: bytes, _: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 4, 16))):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(rng: random.Random, data: bytes, _: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def _splice(rng: random.Random, data: bytes, other: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


def _insert(rng: random.Random, data: bytes, _: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    extra = bytes(rng.randrange(256) for _ in range(rng.choice((1, 1, 2, 8, 64))))
    return data[:at] + extra + data[at:]


def _delete(rng: random.Random, data: bytes, _: bytes) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.choice((1, 1, 2, 9)) :]


_INTERESTING = [0, 1, 2, 3, 16, 17, 23, 24, 255, 256, 65_535, 65_536, 2**32, 2**53, -1, -(2**40)]


def _mutate_value(rng: random.Random, value: object) -> object:
    choice = rng.randrange(9)
    if choice == 0:
        return rng.choice(_INTERESTING)
    if choice == 1:
        return b"" if rng.random() < 0.5 else bytes(rng.randrange(256) for _ in range(9))
    if choice == 2:
        return "x" * rng.choice((0, 1, 100))
    if choice == 3:
        return [value]
    if choice == 4:
        return {0: value}
    if choice == 5:
        return None
    if choice == 6:
        return True
    if choice == 7 and isinstance(value, int) and not isinstance(value, bool):
        return value + rng.choice((-1, 1, 1000))
    return value


def _cbor_header(rng: random.Random, data: bytes, _: bytes) -> bytes:
    """Edit the decoded header: a field, a frame's codec/dictionary/payload, frames order."""
    header = cbor2.loads(data[1:-SIGNATURE_BYTES])
    target = rng.randrange(len(header))
    action = rng.randrange(6)
    if action == 0:
        header[target] = _mutate_value(rng, header[target])
    elif action == 1 and isinstance(header[target], list):
        frame = header[target]
        index = rng.randrange(len(frame))
        if index == 2 and isinstance(frame[2], bytes) and frame[2]:
            payload = bytearray(frame[2])
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
            frame[2] = bytes(payload)
        else:
            frame[index] = _mutate_value(rng, frame[index])
    elif action == 2:
        header.insert(rng.randrange(3, len(header) + 1), header[rng.randrange(3, len(header))])
    elif action == 3 and len(header) > 4:
        del header[rng.randrange(3, len(header))]
    elif action == 4:
        frames = header[3:]
        rng.shuffle(frames)
        header[3:] = frames
    else:
        header.append(bytes(rng.randrange(2) for _ in range(rng.randrange(40))))
    return data[:1] + dumps(header) + data[-SIGNATURE_BYTES:]


def _cbor_skeleton(rng: random.Random, data: bytes, _: bytes) -> bytes:
    """Decode frame 0, edit its skeleton columns or texts, re-code it with the same codec."""
    header = cbor2.loads(data[1:-SIGNATURE_BYTES])
    frames = [item for item in header[3:] if isinstance(item, list)]
    first = Frame(Codec(frames[0][0]), frames[0][1], frames[0][2])
    skeleton, texts = decode_frame(
        CODEBOOK, first, has_skeleton=True, budget=1 << 20, max_texts=4096, max_chars=16_384
    )
    columns = cbor2.loads(skeleton)
    action = rng.randrange(5)
    keys = list(columns)
    key = rng.choice(keys)
    column = columns[key]
    if action == 0 and column:
        index = rng.randrange(len(column))
        column[index] = _mutate_value(rng, column[index])
    elif action == 1 and column:
        column.pop(rng.randrange(len(column)))
    elif action == 2:
        columns[rng.choice((*keys, 5, 7, 30, 31, 99))] = [_mutate_value(rng, 1)]
    elif action == 3 and texts:
        texts = texts[:-1] if rng.random() < 0.5 else [*texts, "extra"]
    else:
        column.append(rng.choice(column) if column else 0)
    language = _frame_language(first)
    recoded = encode_frame(CODEBOOK, language, dumps(columns), texts, codecs=(first.codec,))
    header[3] = [int(recoded.codec), recoded.dictionary_id, recoded.payload]
    return data[:1] + dumps(header) + data[-SIGNATURE_BYTES:]


def _frame_language(frame: Frame) -> Language:
    for entry in CODEBOOK.entries():
        if entry.dictionary_id == frame.dictionary_id:
            return entry.language
    return Language.UND


MUTATORS: list[Callable[[random.Random, bytes, bytes], bytes]] = [
    _flip,
    _flip,
    _truncate,
    _splice,
    _insert,
    _delete,
    _cbor_header,
    _cbor_header,
    _cbor_skeleton,
    _cbor_skeleton,
]


def run_fuzz(cases: int, seed: int) -> tuple[Counter[str], Counter[str], dict[str, float]]:
    """Decode ``cases`` mutants; return error counts, outcomes and seconds per base codec."""
    rng = random.Random(seed)
    bases = _base_batches()
    errors: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    seconds: dict[str, float] = {}
    for case in range(cases):
        label, direction, data = rng.choice(bases)
        _, _, other = rng.choice(bases)
        mutator = rng.choice(MUTATORS)
        mutant = mutator(rng, data, other)
        key = VESSEL_KEY if direction is Direction.UPLINK else SHORE_KEY
        resigned = rng.random() < 0.5 and len(mutant) > SIGNATURE_BYTES
        if resigned:
            body = mutant[:-SIGNATURE_BYTES]
            mutant = body + key.sign(body)
        started = time.perf_counter()
        try:
            decode_batch(mutant, codebook=CODEBOOK, verify_key=key.verify_key)
        except RemoteProtocolError as exc:
            errors[type(exc).__name__] += 1
            if not str(exc):  # every refusal must say what is wrong
                errors["no message"] += 1
        except Exception as exc:  # the invariant under test: nothing else may escape
            raise AssertionError(
                f"case {case} (seed {seed}, {mutator.__name__}, base {label}, resigned "
                f"{resigned}): {type(exc).__name__}: {exc}\nmutant: {mutant.hex()}"
            ) from exc
        else:
            errors["decoded"] += 1
        seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started
        outcomes[f"{mutator.__name__}{'+signed' if resigned else ''}"] += 1
    return errors, outcomes, seconds


def test_fuzz_small() -> None:
    """2,000 mutants (a fixed seed): only remote protocol errors, some reach the codecs."""
    errors, _, _ = run_fuzz(2_000, seed=1)
    assert sum(errors.values()) == 2_000
    assert errors["no message"] == 0
    # Re-signed mutants get past the signature: other errors than SignatureInvalid appear.
    assert errors["MalformedBatch"] > 100
    assert errors["SignatureInvalid"] > 100


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fuzz_100k() -> None:
    """100,000 mutants: only remote protocol errors. Prints the time and where it went."""
    started = time.perf_counter()
    errors, outcomes, seconds = run_fuzz(100_000, seed=20261123)
    elapsed = time.perf_counter() - started
    print(f"\nfuzz: 100,000 mutants in {elapsed:.1f} s")
    print("errors:", dict(errors.most_common()))
    print("mutators:", dict(outcomes.most_common()))
    print("decode seconds by base codec:", {k: round(v, 1) for k, v in seconds.items()})
    assert sum(errors.values()) == 100_000
    assert errors["no message"] == 0


# --- compact frames ----------------------------------------------------------------------

LINK_KEYS = LinkKeys.for_vessel(77, VESSEL_KEY, SHORE_KEY.verify_key)


def _base_compact_frames() -> list[tuple[str, bytes]]:
    """Real compact frames to mutate: each codec alone and the best-of (they travel up only)."""
    out = []
    for codecs, label in (
        ((Codec.STORED,), "stored"),
        ((Codec.ZSTD,), "zstd"),
        ((Codec.CONTEXT,), "context"),
        ((Codec.STORED, Codec.ZSTD, Codec.CONTEXT), "best"),
    ):
        for size in (1, 2, len(UPLINK)):
            data = encode_compact(
                UPLINK[:size],
                keys=LINK_KEYS,
                batch_seq=size,
                batch_minutes=M,
                codebook=CODEBOOK,
                codecs=codecs,
            )
            out.append((label, data))
    return out


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return value, pos


def _edit_rows(rng: random.Random, plaintext: bytes, _: bytes) -> bytes:
    """Edit the decoded rows (a value, a row dropped or repeated, a kind changed)."""
    seq, pos = _read_uvarint(plaintext, 0)
    minutes, pos = _read_uvarint(plaintext, pos)
    length, pos = _read_uvarint(plaintext, pos)
    rows = cbor2.loads(plaintext[pos : pos + length])
    rest = plaintext[pos + length :]
    row = rows[rng.randrange(len(rows))]
    action = rng.randrange(5)
    if action == 0:
        index = rng.randrange(len(row))
        row[index] = _mutate_value(rng, row[index])
    elif action == 1 and len(rows) > 1:
        rows.pop(rng.randrange(len(rows)))
    elif action == 2:
        rows.append(rng.choice(rows))
    elif action == 3:
        row.pop(rng.randrange(len(row)))
    else:
        row.append(_mutate_value(rng, 1))
    if rng.random() < 0.2:
        minutes = rng.choice([*_INTERESTING, M])
        minutes = max(minutes, 0)
    edited = dumps(rows)
    return _uvarint(seq) + _uvarint(minutes) + _uvarint(len(edited)) + edited + rest


def _edit_frames(rng: random.Random, plaintext: bytes, _: bytes) -> bytes:
    """Change a frame's codec and dictionary code, its length, or a byte of its payload."""
    _, pos = _read_uvarint(plaintext, 0)
    _, pos = _read_uvarint(plaintext, pos)
    length, pos = _read_uvarint(plaintext, pos)
    pos += length
    if pos >= len(plaintext):
        return plaintext + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    head, rest = plaintext[:pos], plaintext[pos:]
    code, at = _read_uvarint(rest, 0)
    size, at = _read_uvarint(rest, at)
    payload = bytearray(rest[at:])
    action = rng.randrange(3)
    if action == 0:
        code = rng.choice((0, 1, 2, 3, 4, 17 * 4 + 2, 40 * 4 + 1, 2**16 * 4, code + 4))
    elif action == 1:
        size = rng.choice((0, 1, size - 1, size + 1, 2**20))
        size = max(size, 0)
    elif payload:
        payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
    return head + _uvarint(code) + _uvarint(size) + bytes(payload)


COMPACT_WIRE_MUTATORS: list[Callable[[random.Random, bytes, bytes], bytes]] = [
    _flip,
    _truncate,
    _splice,
    _insert,
    _delete,
]
COMPACT_PLAINTEXT_MUTATORS: list[Callable[[random.Random, bytes, bytes], bytes]] = [
    _flip,
    _truncate,
    _splice,
    _insert,
    _delete,
    _edit_rows,
    _edit_rows,
    _edit_frames,
    _edit_frames,
]


def run_compact_fuzz(cases: int, seed: int) -> Counter[str]:
    """Decode ``cases`` mutated compact frames; the count of each error (or "decoded")."""
    rng = random.Random(seed)
    bases = _base_compact_frames()
    errors: Counter[str] = Counter()
    for case in range(cases):
        label, data = rng.choice(bases)
        _, other = rng.choice(bases)
        resealed = rng.random() < 0.5
        if resealed:
            plaintext = open_compact(data, LINK_KEYS)[1]
            other_plaintext = open_compact(other, LINK_KEYS)[1]
            mutator = rng.choice(COMPACT_PLAINTEXT_MUTATORS)
            mutant = seal_compact(mutator(rng, plaintext, other_plaintext), keys=LINK_KEYS)
        else:
            mutator = rng.choice(COMPACT_WIRE_MUTATORS)
            mutant = mutator(rng, data, other)
        try:
            decode_compact(mutant, keys=LINK_KEYS, codebook=CODEBOOK)
        except RemoteProtocolError as exc:
            errors[type(exc).__name__] += 1
            if not str(exc):
                errors["no message"] += 1
        except Exception as exc:  # the invariant under test: nothing else may escape
            raise AssertionError(
                f"compact case {case} (seed {seed}, {mutator.__name__}, base {label}, resealed "
                f"{resealed}): {type(exc).__name__}: {exc}\nmutant: {mutant.hex()}"
            ) from exc
        else:
            errors["decoded"] += 1
    return errors


def test_compact_fuzz_small() -> None:
    """2,000 mutated compact frames (a fixed seed): only remote protocol errors; forged
    ones fail the tag, re-sealed ones reach the row and text decoders and fail there."""
    errors = run_compact_fuzz(2_000, seed=2)
    assert sum(errors.values()) == 2_000
    assert errors["no message"] == 0
    assert errors["SignatureInvalid"] > 300
    assert errors["MalformedBatch"] > 300


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_compact_fuzz_100k() -> None:
    """100,000 mutated compact frames: only remote protocol errors."""
    started = time.perf_counter()
    errors = run_compact_fuzz(100_000, seed=20261207)
    print(f"\ncompact fuzz: 100,000 mutants in {time.perf_counter() - started:.1f} s")
    print("errors:", dict(errors.most_common()))
    assert sum(errors.values()) == 100_000
    assert errors["no message"] == 0
