"""Mutants: real batches taken apart, made hostile, and signed again with the sender's key.

Issue 18: a vessel-signed batch whose envelope said ``written_minutes = 2**32 - 1`` stopped
the relay. Whoever holds a vessel's (or the shore's) key can sign anything, so the
receivers must survive *authentic* hostile batches. This module makes them, for the fuzz
tests of the relay's ingest (``tests/shore/test_hostile_batches.py``) and of the agent's
downlink (``tests/shipboard/test_hostile_downlink.py``):

- :class:`OpenBatch` is a batch taken apart: its header fields, its skeleton columns
  (the decoded CBOR, see :mod:`protocol.skeleton`) and its texts per language.
  :meth:`OpenBatch.seal` puts it back together with any codec and signs it.
- Structural mutators change the decoded content: extreme and negative integers in
  every field and header slot, times out of range, wrong types, deep nesting, unknown
  keys, columns too short or too long, duplicated and swapped envelopes, and texts with
  lone surrogates, NUL, bidi controls or over the length limit; grievance lane blocks of
  another size, at an edge of their place, or twice in one place. A lone surrogate cannot
  be encoded by cbor2, so a marker character is swapped for its surrogate bytes after
  encoding (:data:`SURROGATE_MARK`).
- Byte mutators (flips, truncation, splices ...) are the ones of ``test_fuzz``; every
  mutant is signed again *after* mutation, so it reaches the decoders and the store.

Each mutant gets a fresh batch number (and fresh message numbers), unless the mutation
is of the number itself, so that it is judged on its content rather than refused as a
replay of an earlier one.
"""

from __future__ import annotations

import collections
import copy
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cbor2

from protocol.batch import Direction
from protocol.codebook import Codebook, Codec
from protocol.compression import Frame, decode_frame, encode_frame
from protocol.envelopes import AGE_KEY, KIND_KEY, TEXT_KEY, Kind, text_language
from protocol.languages import Language
from protocol.limits import MAX_MINUTES
from protocol.signing import SIGNATURE_BYTES, SigningKey
from protocol.skeleton import PRESENCE_KEY, from_columns, to_columns
from tests.protocol import test_fuzz

#: Integers at the edges: of CBOR's widths, of 2**53, of the wire time range, and below 0.
EXTREME_INTS: tuple[int, ...] = (
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53 - 1,
    2**53,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**31),
    -(2**53),
    -(2**63),
    -(2**64),
    MAX_MINUTES - 1,
    MAX_MINUTES,
)
#: Times (minutes since 1970) an envelope or a batch may be made to claim.
EXTREME_MINUTES: tuple[int, ...] = (
    -1,
    0,
    MAX_MINUTES - 1,
    MAX_MINUTES,
    2**32 - 1,  # the tester's find: the year 10136
    2**53 - 1,
    -(2**53) + 1,
)
#: Stands for a lone surrogate (U+D800) in CBOR text: swapped for its bytes after encoding.
SURROGATE_MARK = "\ue000"
_MARK_BYTES = SURROGATE_MARK.encode("utf-8")
_SURROGATE_BYTES = "\ud800".encode("utf-8", "surrogatepass")
HOSTILE_TEXTS: tuple[str, ...] = (
    "\ud800",
    "a\udfffb",
    "x\x00y",
    "",
    "\u202eevil\u202c",
    "line\r\nBcc: someone@example.org",
    "e\u0301" * 3000,
    "x" * 16_385,
    "\x1b[2J\x07",
    "\ufeff\u200b",
    "မ" * 5000,
)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def hostile_value(rng: random.Random) -> object:
    """A value of any kind that a field should refuse, or accept and survive."""
    choice = rng.randrange(12)
    if choice < 4:
        return rng.choice(EXTREME_INTS)
    if choice == 4:
        return rng.choice((SURROGATE_MARK, "x" * 400, "", "a\r\nb", "\u202e"))
    if choice == 5:
        return rng.choice((b"", bytes(70_000), b"\xff" * 9))
    if choice == 6:
        return _nested(rng.choice((2, 6, 40, 300)))
    if choice == 7:
        return {rng.choice((0, 1, -1, 99)): rng.choice(EXTREME_INTS)}
    if choice == 8:
        return rng.choice((None, True, False))
    if choice == 9:
        return rng.choice((0.5, float("nan"), float("inf")))
    if choice == 10:
        return [rng.choice(EXTREME_INTS) for _ in range(rng.choice((0, 1, 2, 3, 5000)))]
    return [[rng.choice(EXTREME_INTS), rng.choice(EXTREME_INTS)] for _ in range(3)]


# --- a batch taken apart and put back together ----------------------------------------------


@dataclass
class OpenBatch:
    """A batch taken apart; every part may be changed to anything before :meth:`seal`."""

    direction: int
    header: list[object]  # [vessel_id, batch_seq, batch_minutes]
    columns: object  # the skeleton columns: {key: [values ...]}
    texts: dict[Language, list[str]]  # the texts of each language frame, in frame order
    codec: Codec = Codec.STORED
    padded: bool = True
    extra_frames: list[object] = field(default_factory=list)

    @classmethod
    def open(cls, data: bytes, codebook: Codebook) -> OpenBatch:
        """Take apart a well-formed batch (as ``encode_batch`` made it)."""
        header = cbor2.loads(data[1:-SIGNATURE_BYTES])
        items = header[3:]
        padded = bool(items) and isinstance(items[-1], bytes)
        if padded:
            items = items[:-1]
        frames = [Frame(Codec(raw[0]), raw[1], raw[2]) for raw in items]
        budget, limit = 1 << 22, 1 << 16
        skeleton, first = decode_frame(
            codebook, frames[0], has_skeleton=True, budget=budget, max_texts=limit, max_chars=limit
        )
        columns = cbor2.loads(skeleton)
        entries = from_columns(columns, max_envelopes=limit)
        languages = sorted({lang for e in entries if (lang := text_language(e)) is not None})
        texts: dict[Language, list[str]] = {}
        if languages:
            texts[languages[0]] = first
        for language, frame in zip(languages[1:], frames[1:], strict=True):
            texts[language] = decode_frame(
                codebook, frame, has_skeleton=False, budget=budget, max_texts=limit, max_chars=limit
            )[1]
        return cls(data[0], header[:3], columns, texts, frames[0].codec, padded)

    def entries(self) -> list[dict[int, object]]:
        """The envelope maps (absolute values); only for well-formed columns."""
        return from_columns(self.columns, max_envelopes=1 << 16)

    def set_entries(self, entries: Sequence[dict[int, object]]) -> None:
        """Replace the envelopes by these maps (integers in the sequence and time keys)."""
        self.columns = to_columns(entries)

    def seal(self, codebook: Codebook, key: SigningKey) -> bytes:
        """The batch's bytes, signed with ``key``, whatever its parts now hold."""
        skeleton = _dumps(self.columns)
        languages = list(self.texts) or [Language.UND]
        frames = [
            _frame(
                codebook,
                language,
                skeleton if i == 0 else None,
                self.texts.get(language, []),
                self.codec,
            )
            for i, language in enumerate(languages)
        ]
        items: list[object] = [[int(f.codec), f.dictionary_id, f.payload] for f in frames]
        items += self.extra_frames
        if self.padded:
            items.append(bytes(7))
        signed = bytes([self.direction]) + _dumps([*self.header, *items])
        return signed + key.sign(signed)


def _dumps(value: object) -> bytes:
    data = cbor2.dumps(value, canonical=True)
    return data.replace(_MARK_BYTES, _SURROGATE_BYTES) if _has_mark(value) else data


def _has_mark(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and SURROGATE_MARK in item:
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


def _frame(
    codebook: Codebook, language: Language, skeleton: bytes | None, texts: list[str], codec: Codec
) -> Frame:
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate: only a stored frame can carry it (as the bytes a buggy or
        # hostile encoder would write); the receiver must refuse it
        body = b"\x00".join(text.encode("utf-8", "surrogatepass") for text in texts)
        head = b"" if skeleton is None else _uvarint(len(skeleton)) + skeleton
        return Frame(Codec.STORED, 0, head + body)
    return encode_frame(codebook, language, skeleton, texts, codecs=(codec,))


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


# --- renumbering: each mutant is judged on its content, not refused as a replay -------------


_SEQUENCED = {Kind.CREW_MESSAGE, Kind.GRIEVANCE_REPORT, Kind.SOS, Kind.REPLY}


def renumber(batch: OpenBatch, batch_seq: int, message_offset: int) -> None:
    """Give the batch number ``batch_seq`` and shift its message numbers by ``message_offset``."""
    batch.header[1] = batch_seq
    entries = batch.entries()
    for entry in entries:
        seq = entry.get(1)
        kind = Kind(int(entry[KIND_KEY]))  # type: ignore[call-overload]
        # numbers at the top edge stay there
        if kind in _SEQUENCED and isinstance(seq, int) and seq + message_offset < 2**53:
            entry[1] = seq + message_offset
    batch.set_entries(entries)


# --- structural mutators: OpenBatch -> None (in place) ---------------------------------------


def _header_field(rng: random.Random, batch: OpenBatch) -> None:
    index = rng.choice((1, 2, 2, 0))
    batch.header[index] = (
        rng.choice(EXTREME_MINUTES) if index == 2 and rng.random() < 0.5 else hostile_value(rng)
    )


def _time(rng: random.Random, batch: OpenBatch) -> None:
    """An envelope claims an extreme time (the tester's find is one of them)."""
    entries = batch.entries()
    entry = rng.choice(entries)
    minutes = batch.header[2]
    assert isinstance(minutes, int)
    entry[AGE_KEY] = minutes - rng.choice(EXTREME_MINUTES)
    batch.set_entries(entries)


def _extreme_field(rng: random.Random, batch: OpenBatch) -> None:
    """An integer field (ids, counts, codes, sequence numbers) at an edge."""
    entries = batch.entries()
    entry = rng.choice(entries)
    keys = [k for k in entry if k not in (KIND_KEY, TEXT_KEY)]
    if keys:
        key = rng.choice(keys)
        value = entry[key]
        if key in (1, AGE_KEY) or isinstance(value, int):
            entry[key] = rng.choice(EXTREME_INTS)
        else:
            entry[key] = hostile_value(rng)
    batch.set_entries(entries)


def _wrong_type(rng: random.Random, batch: OpenBatch) -> None:
    """Any column value replaced by a value of another type (or nested deep)."""
    columns = batch.columns
    assert isinstance(columns, dict)
    key = rng.choice(list(columns))
    column = columns[key]
    if isinstance(column, list) and column:
        column[rng.randrange(len(column))] = hostile_value(rng)
    else:
        columns[key] = hostile_value(rng)


def _column_shape(rng: random.Random, batch: OpenBatch) -> None:
    """A column too short or too long, a new unknown key, a column that is not a list."""
    columns = batch.columns
    assert isinstance(columns, dict)
    key = rng.choice(list(columns))
    column = columns[key]
    action = rng.randrange(5)
    if action == 0 and isinstance(column, list) and column:
        column.pop(rng.randrange(len(column)))
    elif action == 1 and isinstance(column, list):
        column.append(rng.choice(column) if column else 0)
    elif action == 2:
        columns[rng.choice((3, 7, 28, 30, 32, 99, -1, 2**32))] = [hostile_value(rng)]
    elif action == 3:
        columns[key] = hostile_value(rng)
    else:
        columns[PRESENCE_KEY] = [rng.choice(EXTREME_INTS)]


def _duplicate(rng: random.Random, batch: OpenBatch) -> None:
    """An envelope twice in one batch (same message number), or many copies of one."""
    entries = batch.entries()
    entry = rng.choice(entries)
    copies = rng.choice((1, 1, 2, 50))
    if entry.get(TEXT_KEY) is not None:
        language = text_language(entry)
        assert language is not None
        index = [text_language(e) for e in entries[: entries.index(entry) + 1]].count(language) - 1
        texts = batch.texts[language]
        texts[index + 1 : index + 1] = [texts[index]] * copies
    at = entries.index(entry) + 1
    entries[at:at] = [dict(entry) for _ in range(copies)]
    batch.set_entries(entries)


def _swap_kind(rng: random.Random, batch: OpenBatch) -> None:
    """An envelope of one kind relabelled as another (an uplink batch of downlink kinds)."""
    columns = batch.columns
    assert isinstance(columns, dict)
    kinds = columns[KIND_KEY]
    assert isinstance(kinds, list)
    kinds[rng.randrange(len(kinds))] = int(rng.choice(list(Kind)))


def _text(rng: random.Random, batch: OpenBatch) -> None:
    """A text replaced by a hostile one, or a text added or taken away."""
    if not batch.texts:
        batch.texts[rng.choice(list(Language))] = [rng.choice(HOSTILE_TEXTS)]
        return
    language = rng.choice(list(batch.texts))
    texts = batch.texts[language]
    action = rng.randrange(4)
    if action < 2 and texts:
        texts[rng.randrange(len(texts))] = rng.choice(HOSTILE_TEXTS)
    elif action == 2 and texts:
        texts.pop()
    else:
        texts.append(rng.choice(HOSTILE_TEXTS))


#: Skeleton keys of a ``LaneBlock``: its period, its place in the period, its sealed block.
_LANE_PERIOD, _LANE_INDEX, _LANE_BLOCK = 29, 30, 7


def _lane_block(rng: random.Random, batch: OpenBatch) -> None:
    """A grievance lane block made hostile: another size (none, a byte short or over, the
    protocol's edges, far over), a place (period, index) at an edge, or its place twice
    in the batch with other bytes or the same."""
    entries = batch.entries()
    lanes = [n for n, e in enumerate(entries) if e.get(KIND_KEY) == int(Kind.LANE_BLOCK)]
    if not lanes:
        raise LookupError("no lane block in this batch")
    at = rng.choice(lanes)
    entry = entries[at]
    block = entry[_LANE_BLOCK]
    assert isinstance(block, bytes)
    action = rng.randrange(4)
    if action == 0:
        size = rng.choice((0, 1, 127, 128, len(block) - 1, len(block) + 1, 8192, 8193, 70_000))
        entry[_LANE_BLOCK] = bytes(size)
    elif action == 1:
        entry[_LANE_INDEX] = rng.choice((63, 64, 255, 2**16, 2**53 - 1, -1))
    elif action == 2:
        entry[_LANE_PERIOD] = rng.choice(EXTREME_INTS)
    else:
        twin = dict(entry)
        if rng.random() < 0.5:
            twin[_LANE_BLOCK] = bytes(reversed(block))
        entries.insert(at + 1, twin)
    batch.set_entries(entries)


def _frames(rng: random.Random, batch: OpenBatch) -> None:
    """An extra frame, unpadded, or another codec for every frame."""
    action = rng.randrange(3)
    if action == 0:
        batch.extra_frames.append([rng.choice((0, 1, 2, 7)), rng.choice(EXTREME_INTS[:6]), b"\x00"])
    elif action == 1:
        batch.padded = not batch.padded
    else:
        batch.codec = rng.choice(list(Codec))


STRUCTURAL: list[Callable[[random.Random, OpenBatch], None]] = [
    _header_field,
    _time,
    _time,
    _extreme_field,
    _extreme_field,
    _wrong_type,
    _wrong_type,
    _column_shape,
    _duplicate,
    _swap_kind,
    _text,
    _text,
    _frames,
    _lane_block,
]


# --- one mutant -----------------------------------------------------------------------------


@dataclass
class MutantMaker:
    """Makes signed mutants of ``bases``; each gets fresh batch and message numbers."""

    bases: Sequence[bytes]
    key: SigningKey
    codebook: Codebook
    seed: int
    next_seq: int = 1_000
    rng: random.Random = field(init=False)
    opened: list[OpenBatch] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.opened = [OpenBatch.open(data, self.codebook) for data in self.bases]

    def make(self) -> tuple[str, bytes]:
        """(what was done, the signed mutant)."""
        rng = self.rng
        base = copy.deepcopy(rng.choice(self.opened))
        self.next_seq += 1
        renumber(base, self.next_seq, self.next_seq * 1_000)
        # the context codec is the slowest by far (pure Python): one mutant in six uses it
        base.codec = rng.choice((Codec.STORED,) * 3 + (Codec.ZSTD,) * 2 + (Codec.CONTEXT,))
        if rng.random() < 0.25:
            # bytes: the existing fuzzer's mutators, on a renumbered batch, signed again
            data = base.seal(self.codebook, self.key)
            other = rng.choice(self.bases)
            mutator = rng.choice(test_fuzz.MUTATORS)
            try:
                mutant = mutator(rng, data, other)
            except Exception:  # a CBOR-level edit that does not apply to this batch
                return "unchanged", data
            if len(mutant) <= SIGNATURE_BYTES:
                return mutator.__name__, mutant
            body = mutant[:-SIGNATURE_BYTES]
            return mutator.__name__, body + self.key.sign(body)
        names = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            mutator = rng.choice(STRUCTURAL)
            try:
                mutator(rng, base)
            except Exception:  # e.g. columns already too broken to be read as envelopes
                continue
            names.append(mutator.__name__)
        try:
            return "+".join(names) or "unchanged", base.seal(self.codebook, self.key)
        except Exception:  # a value cbor2 cannot encode at all: nothing to send
            return "unencodable", b""


def direction_of(data: bytes) -> Direction:
    """The direction byte of a batch."""
    return Direction(data[0])


# --- what a fuzz run found ------------------------------------------------------------------


@dataclass
class FuzzReport:
    """What the mutants became, and how far a run has come."""

    cases: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    mutations: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    #: a line on stderr every so many mutants, so a run of hours shows how far it is (``-s``)
    progress_every: int = 50_000

    def counted(self) -> None:
        """One more mutant passed every check; say so every ``progress_every`` of them."""
        if self.cases % self.progress_every == 0:
            elapsed = time.perf_counter() - self.started
            print(
                f"fuzz: {self.cases:,} mutants, none escaped, {elapsed:.0f} s "
                f"({self.cases / max(elapsed, 1e-9):.0f}/s)",
                file=sys.stderr,
                flush=True,
            )

    def finish(self) -> None:
        """The run is over: its duration."""
        self.seconds = time.perf_counter() - self.started
