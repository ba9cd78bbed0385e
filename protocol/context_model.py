"""Context model: a trained character model per language that codes texts near their entropy.

The model is static PPM over Unicode code points (orders ``order`` down to 0, escape
method D, with exclusions), trained by counting the corpus once:

* A symbol is a character of the training alphabet or END (the end of a text). Each text
  is predicted from its last ``order`` symbols, padded with a start symbol (BOS).
* To code a symbol we start in the longest context seen in training. If the symbol
  followed that context in training it costs ``(2c - 1) / 2N``; otherwise we code an
  escape (``T / 2N``, T successors seen) and move to the next shorter context, leaving
  out the symbols already refused (exclusion). Past order 0 comes the raw code point
  (about 20 bits), so every string round-trips, lone surrogates included.
* Every step's probabilities are integer weights, so encoder and decoder compute the same
  tables on any platform; :mod:`protocol.context_coder` turns them into range-coder
  models and trims the output.

Frame layout (all inside one range-coded stream, nothing in the clear): skeleton length,
skeleton bytes (adaptive byte model), then for each text a "more" flag and its symbols
up to END, then a final "no more" flag. The payload is decodable from itself and the model.

Model bytes: ``b"VRCM"``, a format version byte, then one zstd frame holding the order, the
alphabet and, per order, the sorted context keys with their successors and counts. The
same lines always give the same bytes (:attr:`ContextModel.model_hash` pins them).
"""

from __future__ import annotations

import hashlib
import math
import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import zstandard

from protocol.context_coder import (
    LIBRARY_ERRORS,
    MORE_TEXTS,
    RAW_BITS,
    ByteModel,
    FrameDecoder,
    FrameEncoder,
    categorical,
)
from protocol.errors import LimitExceeded, LocalProtocolError, MalformedBatch, UnknownDictionary

MAGIC = b"VRCM"
FORMAT_VERSION = 1
MAX_ORDER = 6
#: Largest alphabet kept (rarer characters are coded raw); keys must fit in int64.
MAX_ALPHABET = 4000
_ZSTD_LEVEL = 19
#: Largest model body accepted (the shipped ones are at most 6 MB).
_MAX_MODEL_BYTES = 64 * 1024 * 1024
_INFLATE_STEP = 1 << 20
#: Cached coding steps per model before the cache is emptied (bounds memory on a shore).
_CACHE_LIMIT = 1 << 14
#: Successor tables up to this size are filtered in Python, larger ones with numpy.
_SMALL_TABLE = 24

IntArray = npt.NDArray[np.int64]
_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class _Step:
    """One coding decision: the symbols it can name, their weights, and an escape."""

    __slots__ = ("escape", "model", "symbols", "weights")

    def __init__(self, symbols: list[int], weights: list[int], model: object) -> None:
        self.symbols = symbols
        self.weights = weights  # one per symbol, then the escape's
        self.escape = len(symbols)
        self.model = model

    def index_of(self, symbol: int) -> int:
        """Index of ``symbol`` in this step, or the escape's when it is not there.

        A step's symbols are ascending (the model stores successors sorted and
        exclusion keeps their order), so a bisection finds them without an index map.
        """
        symbols = self.symbols
        at = bisect_left(symbols, symbol)
        return at if at < self.escape and symbols[at] == symbol else self.escape

    def bits(self, index: int) -> float:
        """Ideal cost of ``index`` (unquantized), in bits."""
        return math.log2(sum(self.weights)) - math.log2(self.weights[index])


def _inflate(packed: bytes) -> bytes:
    """A model body, read in bounded steps: a corrupt frame header that declares a huge
    size allocates nothing, and output past ``_MAX_MODEL_BYTES`` is refused."""
    parts: list[bytes] = []
    total = 0
    with zstandard.ZstdDecompressor().stream_reader(packed) as reader:
        while chunk := reader.read(_INFLATE_STEP):
            total += len(chunk)
            if total > _MAX_MODEL_BYTES:
                raise ValueError(f"model body is over {_MAX_MODEL_BYTES} bytes")
            parts.append(chunk)
    return b"".join(parts)


def _shift5(keys: list[int], symbol: int, base: int) -> tuple[int, int, int, int, int]:
    """Order-1..5 context keys after ``symbol``, from the keys before it (order 5 only)."""
    return (
        symbol + base * keys[0],
        symbol + base * keys[1],
        symbol + base * keys[2],
        symbol + base * keys[3],
        symbol + base * keys[4],
    )


def _evict(cache: dict[_Key, _Value]) -> None:
    """Drop the older half of a full cache (dicts keep insertion order): recent entries,
    which the next texts of a batch are likely to need again, survive."""
    for key in list(islice(cache, len(cache) // 2)):
        del cache[key]


if array("I").itemsize != 4:  # pragma: no cover - no supported platform differs
    raise ImportError("protocol.context_model needs 32-bit unsigned ints in array('I')")

_NOTHING = object()  # cache value: every symbol of the context was excluded


class ContextModel:
    """A trained, immutable character model for one language (see the module docstring)."""

    def __init__(
        self,
        order: int,
        alphabet: Sequence[int],
        keys: Sequence[IntArray],
        starts: Sequence[IntArray],
        symbols: Sequence[IntArray],
        counts: Sequence[IntArray],
    ) -> None:
        self.order = order
        self.alphabet = tuple(alphabet)
        size = len(self.alphabet)
        self.bos = size + 1
        self.novel = size + 2
        self.base = size + 3
        self._char_id = {cp: index + 1 for index, cp in enumerate(self.alphabet)}
        # Compact tables: sorted context keys per order; successors of all orders in one
        # run, a context numbered by its place in that run (order 0 first).
        # Plain arrays (not numpy) because the hot loop indexes them one item at a time;
        # keys are found with ``bisect``, which is several times cheaper than a numpy call.
        self._keys = [array("q", np.asarray(k, dtype=np.int64).tobytes()) for k in keys]
        self._first = [0]
        for k in range(order + 1):
            self._first.append(self._first[-1] + len(self._keys[k]))
        offsets = np.cumsum([0] + [len(symbols[k]) for k in range(order)], dtype=np.int64)
        self._start = array(
            "q",
            np.concatenate(
                [np.zeros(1, np.int64)]
                + [np.asarray(starts[k][1:], np.int64) + offsets[k] for k in range(order + 1)]
            ).tobytes(),
        )
        successors = np.concatenate([np.asarray(s, np.int64) for s in symbols])
        self._symbol = array("H", successors.astype(np.uint16).tobytes())
        weights = 2 * np.concatenate([np.asarray(c, np.int64) for c in counts]) - 1
        self._weight = array("I", weights.astype(np.uint32).tobytes())
        # Zero-copy numpy views for the few vectorised steps (the arrays never grow).
        self._symbol_np: npt.NDArray[np.uint16] = np.frombuffer(self._symbol, dtype=np.uint16)
        self._weight_np: npt.NDArray[np.uint32] = np.frombuffer(self._weight, dtype=np.uint32)
        self.context_count = self._first[-1]
        self._bos_keys = [sum(self.bos * self.base**j for j in range(k)) for k in range(order + 1)]
        # Caches of derived data only (bounded): coding steps, small shared range-coder
        # models. (Context keys are not cached: an inlined bisect is about as fast.)
        self._fresh: dict[int, _Step] = {}
        self._escaped: dict[int, _Step | object] = {}
        self._models: dict[tuple[int, ...], object] = {}
        self._bytes: bytes | None = None

    def _find(self, k: int, key: int) -> int:
        """Context number of ``key`` at order ``k``, or -1 if training never saw it."""
        order_keys = self._keys[k]
        at = bisect_left(order_keys, key)
        if at == len(order_keys) or order_keys[at] != key:
            return -1
        return self._first[k] + at

    # --- identity and serialisation ----------------------------------------------------

    @property
    def model_hash(self) -> str:
        """Hex SHA-256 of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def to_bytes(self) -> bytes:
        """The versioned, compressed model (deterministic)."""
        if self._bytes is None:
            parts = [struct.pack("<BI", self.order, len(self.alphabet))]
            parts.append(np.array(self.alphabet, dtype="<u4").tobytes())
            start = np.frombuffer(self._start, dtype=np.int64)
            symbol = np.frombuffer(self._symbol, dtype=np.uint16)
            weight = np.frombuffer(self._weight, dtype=self._weight.typecode)
            for k in range(self.order + 1):
                keys = np.frombuffer(self._keys[k], dtype=np.int64)
                first, last = self._first[k], self._first[k + 1]
                pairs = slice(int(start[first]), int(start[last]))
                parts.append(struct.pack("<II", len(keys), pairs.stop - pairs.start))
                parts.append(np.diff(keys, prepend=np.int64(0)).astype("<i8").tobytes())
                parts.append(np.diff(start[first : last + 1]).astype("<u4").tobytes())
                parts.append(symbol[pairs].astype("<u2").tobytes())
                parts.append(((weight[pairs] + 1) // 2).astype("<u4").tobytes())
            body = b"".join(parts)
            compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, threads=0)
            self._bytes = MAGIC + bytes([FORMAT_VERSION]) + compressor.compress(body)
        return self._bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> ContextModel:
        """Load a model; raises :class:`UnknownDictionary` for anything but a valid model."""
        if data[:4] != MAGIC:
            raise UnknownDictionary("these bytes are not a context model (bad magic)")
        if data[4:5] != bytes([FORMAT_VERSION]):
            raise UnknownDictionary(
                f"context model format {data[4:5].hex() or 'missing'} is not supported "
                f"(this build reads version {FORMAT_VERSION}); update vessel-relay"
            )
        try:
            return cls._parse(_inflate(data[5:]))
        except (zstandard.ZstdError, struct.error, *LIBRARY_ERRORS) as exc:
            raise UnknownDictionary(f"context model bytes are corrupt ({exc})") from exc

    @classmethod
    def _parse(cls, body: bytes) -> ContextModel:
        view = memoryview(body)
        at = 0

        def take(count: int, dtype: str) -> npt.NDArray[np.int64]:
            nonlocal at
            size = count * np.dtype(dtype).itemsize
            if at + size > len(view):
                raise ValueError("model is truncated")
            array = np.frombuffer(view[at : at + size], dtype=dtype).astype(np.int64)
            at += size
            return array

        order, alphabet_size = struct.unpack_from("<BI", view, 0)
        at = 5
        if (
            not 1 <= order <= MAX_ORDER
            or alphabet_size > MAX_ALPHABET
            or (alphabet_size + 3) ** order >= 1 << 60
        ):
            raise ValueError(f"order {order} or alphabet of {alphabet_size} out of range")
        alphabet = take(alphabet_size, "<u4")
        if np.any(alphabet >= 0x110000) or np.any(np.diff(alphabet) <= 0):
            raise ValueError("alphabet is not sorted distinct code points")
        base = alphabet_size + 3
        keys, starts, symbols, counts = [], [], [], []
        for k in range(order + 1):
            context_count, pair_count = struct.unpack_from("<II", view, at)
            at += 8
            order_keys = np.cumsum(take(context_count, "<i8"))
            sizes = take(context_count, "<u4")
            order_symbols = take(pair_count, "<u2")
            order_counts = take(pair_count, "<u4")
            order_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            if (
                order_starts[-1] != pair_count
                or np.any(sizes < 1)
                or np.any(np.diff(order_keys) <= 0)
                or (context_count and (int(order_keys[0]) < 0 or int(order_keys[-1]) >= base**k))
                or np.any(order_symbols > alphabet_size)
                or np.any(order_counts < 1)
                or np.any(order_counts >= 1 << 30)
                or not _ascending_within(order_symbols, order_starts)
            ):
                raise ValueError(f"order-{k} tables are inconsistent")
            keys.append(order_keys)
            starts.append(order_starts)
            symbols.append(order_symbols)
            counts.append(order_counts)
        if at != len(view):
            raise ValueError("model has trailing bytes")
        model = cls(order, alphabet.tolist(), keys, starts, symbols, counts)
        model._bytes = None
        return model

    # --- coding steps -----------------------------------------------------------------

    def _model(self, weights: list[int]) -> object:
        if len(weights) > 4:
            return categorical(weights)
        key = tuple(weights)  # small tables repeat across contexts: share their models
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = categorical(weights)
        return model

    def _fresh_step(self, context: int) -> _Step:
        step = self._fresh.get(context)
        if step is None:
            if len(self._fresh) > _CACHE_LIMIT:
                _evict(self._fresh)
            start, end = self._start[context], self._start[context + 1]
            weights = self._weight[start:end].tolist()
            weights.append(end - start)
            step = _Step(self._symbol[start:end].tolist(), weights, self._model(weights))
            self._fresh[context] = step
        return step

    def _escaped_step(self, previous: int, context: int) -> _Step | None:
        key = previous * self.context_count + context
        step = self._escaped.get(key)
        if step is None:
            if len(self._escaped) > _CACHE_LIMIT:
                _evict(self._escaped)
            symbols, weights = self._unexcluded(previous, context)
            start, end = self._start[context], self._start[context + 1]
            if symbols:
                weights.append(end - start)
                step = _Step(symbols, weights, self._model(weights))
            else:
                step = _NOTHING
            self._escaped[key] = step
        return step if isinstance(step, _Step) else None

    def _unexcluded(self, previous: int, context: int) -> tuple[list[int], list[int]]:
        """Successors of ``context`` (with their weights) that ``previous`` did not offer.

        Successors are stored in ascending order, so a large table is filtered with one
        vectorised search instead of a Python loop; both ways keep the stored order.
        """
        low, high = self._start[previous], self._start[previous + 1]
        start, end = self._start[context], self._start[context + 1]
        if end - start <= _SMALL_TABLE:
            excluded = set(self._symbol[low:high])
            symbols: list[int] = []
            weights: list[int] = []
            pairs = zip(self._symbol[start:end], self._weight[start:end], strict=True)
            for symbol, weight in pairs:
                if symbol not in excluded:
                    symbols.append(symbol)
                    weights.append(weight)
            return symbols, weights
        table = self._symbol_np[start:end]
        refused = self._symbol_np[low:high]
        at = np.minimum(table.searchsorted(refused), len(table) - 1)
        keep = np.ones(len(table), dtype=bool)
        keep[at[table[at] == refused]] = False
        return table[keep].tolist(), self._weight_np[start:end][keep].tolist()

    def _steps(self, keys: list[int]) -> Iterator[_Step]:
        """The coding steps for one position, longest context first."""
        previous = -1
        for k in range(self.order, -1, -1):
            context = self._find(k, keys[k])
            if context < 0:
                continue
            if previous < 0:
                step: _Step | None = self._fresh.get(context) or self._fresh_step(context)
            else:
                step = self._escaped_step(previous, context)
            previous = context
            if step is not None:
                yield step

    def _symbol_of(self, char: str) -> int:
        return self._char_id.get(ord(char), self.novel)

    def _next_keys(self, keys: list[int], symbol: int) -> list[int]:
        base = self.base
        return [0, *(symbol + base * key for key in keys[:-1])]

    # --- texts --------------------------------------------------------------------------

    def encode_text(self, encoder: FrameEncoder, text: str) -> None:
        """Code one text and its END (the hot loop: :meth:`_steps`, inlined)."""
        encode = encoder.encode
        fresh, base, char_id = self._fresh, self.base, self._char_id
        tables, first = self._keys, self._first
        five = self.order == 5
        orders = range(self.order, -1, -1)
        keys = list(self._bos_keys)
        for char in (*text, None):
            symbol = 0 if char is None else char_id.get(ord(char), self.novel)
            previous = -1
            for k in orders:
                key, table = keys[k], tables[k]
                at = bisect_left(table, key)
                if at == len(table) or table[at] != key:
                    continue
                context = first[k] + at
                if previous < 0:
                    step: _Step | None = fresh.get(context) or self._fresh_step(context)
                else:
                    step = self._escaped_step(previous, context)
                previous = context
                if step is not None:
                    index = step.index_of(symbol)
                    encode(index, step.model)
                    if index < step.escape:
                        break
            else:
                encoder.encode_raw(0 if char is None else ord(char) + 1)
            if five:  # the shipped order, unrolled: a third of the cost of the general form
                keys = [0, *_shift5(keys, symbol, base)]
            else:
                keys = [0, *[symbol + base * key for key in keys[:-1]]]

    def decode_text(self, decoder: FrameDecoder, max_chars: int) -> str:
        """Decode one text, refusing it as soon as it passes ``max_chars`` characters."""
        try:
            return self._decode_text(decoder, max_chars, decoder.unchecked_decode())
        except LIBRARY_ERRORS as exc:  # only the range decoder raises these here
            raise MalformedBatch(f"context-coded frame does not decode ({exc})") from exc

    def _decode_text(
        self, decoder: FrameDecoder, max_chars: int, decode: Callable[[object], int]
    ) -> str:
        """:meth:`decode_text` (the hot loop: :meth:`_steps`, inlined)."""
        fresh, base, alphabet = self._fresh, self.base, self.alphabet
        tables, first = self._keys, self._first
        five = self.order == 5
        orders = range(self.order, -1, -1)
        keys = list(self._bos_keys)
        chars: list[str] = []
        while True:
            symbol = -1
            previous = -1
            for k in orders:
                key, table = keys[k], tables[k]
                at = bisect_left(table, key)
                if at == len(table) or table[at] != key:
                    continue
                context = first[k] + at
                if previous < 0:
                    step: _Step | None = fresh.get(context) or self._fresh_step(context)
                else:
                    step = self._escaped_step(previous, context)
                previous = context
                if step is not None:
                    index = decode(step.model)
                    if index < step.escape:
                        symbol = step.symbols[index]
                        break
            if symbol == 0:
                return "".join(chars)
            if symbol > 0:
                char = chr(alphabet[symbol - 1])
            else:
                raw = decoder.decode_raw()
                if raw == 0:
                    return "".join(chars)
                char = chr(raw - 1)
                symbol = self._symbol_of(char)
            if len(chars) >= max_chars:
                raise LimitExceeded(f"a text has more than {max_chars} characters")
            chars.append(char)
            if five:  # the shipped order, unrolled: a third of the cost of the general form
                keys = [0, *_shift5(keys, symbol, base)]
            else:
                keys = [0, *[symbol + base * key for key in keys[:-1]]]

    def text_bits(self, text: str) -> float:
        """Ideal code length of ``text`` and its END under this model, in bits."""
        bits = 0.0
        keys = list(self._bos_keys)
        for char in (*text, None):
            symbol = 0 if char is None else self._symbol_of(char)
            for step in self._steps(keys):
                index = step.index_of(symbol)
                bits += step.bits(index)
                if index < step.escape:
                    break
            else:
                bits += RAW_BITS
            keys = self._next_keys(keys, symbol)
        return bits


def _ascending_within(symbols: IntArray, starts: IntArray) -> bool:
    """Whether each context's successors are strictly ascending (as training stores them)."""
    rising = np.diff(symbols) > 0
    if len(starts) > 2:
        rising[starts[1:-1] - 1] = True  # a new context may start anywhere
    return bool(np.all(rising))


# --- training ---------------------------------------------------------------------------


def train_context_model(
    lines: Iterable[str],
    *,
    order: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> ContextModel:
    """Count a corpus (one text per line) into a model; the same lines give the same bytes.

    ``progress(done, total)`` is called as work advances: one unit per line read, then
    one per order counted.
    """
    if not 1 <= order <= MAX_ORDER:
        raise LocalProtocolError(f"context order {order} is out of range (1 to {MAX_ORDER})")
    texts = [line.rstrip("\r\n") for line in lines]
    texts = [text for text in texts if text]
    total_work = len(texts) + order + 1
    frequency: dict[int, int] = {}
    for text in texts:
        for char in text:
            cp = ord(char)
            frequency[cp] = frequency.get(cp, 0) + 1
    largest = min(MAX_ALPHABET, int(2 ** (60 / order)) - 3)
    kept = sorted(frequency, key=lambda cp: (-frequency[cp], cp))[:largest]
    alphabet = sorted(kept)
    char_id = {cp: index + 1 for index, cp in enumerate(alphabet)}
    bos, novel, base = len(alphabet) + 1, len(alphabet) + 2, len(alphabet) + 3

    sequence: list[int] = []
    targets: list[int] = []
    for done, text in enumerate(texts, 1):
        sequence.extend([bos] * order)
        for char in text:
            targets.append(len(sequence))
            sequence.append(char_id.get(ord(char), novel))
        targets.append(len(sequence))
        sequence.append(0)
        if progress is not None and (done % 256 == 0 or done == len(texts)):
            progress(done, total_work)
    seq: IntArray = np.array(sequence, dtype=np.int64)
    where: IntArray = np.array(targets, dtype=np.int64)
    if len(where):
        where = where[seq[where] != novel]  # characters outside the alphabet are coded raw
    following = seq[where]

    keys, starts, symbols, counts = [], [], [], []
    context: IntArray = np.zeros(len(where), dtype=np.int64)
    for k in range(order + 1):
        if k:
            context = context + seq[where - k] * np.int64(base ** (k - 1))
        order_keys, order_starts, order_symbols, order_counts = _count_pairs(context, following)
        keys.append(order_keys)
        starts.append(order_starts)
        symbols.append(order_symbols)
        counts.append(order_counts)
        if progress is not None:
            progress(len(texts) + k + 1, total_work)
    return ContextModel(order, alphabet, keys, starts, symbols, counts)


def _count_pairs(
    context: IntArray, following: IntArray
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Sorted distinct contexts with their successors and counts (sorting is deterministic)."""
    if not len(context):
        empty: IntArray = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(1, dtype=np.int64), empty, empty
    by = np.lexsort((following, context))
    ctx, nxt = context[by], following[by]
    new_pair = np.ones(len(ctx), dtype=bool)
    new_pair[1:] = (ctx[1:] != ctx[:-1]) | (nxt[1:] != nxt[:-1])
    pair_at = np.flatnonzero(new_pair)
    pair_counts = np.diff(np.append(pair_at, len(ctx))).astype(np.int64)
    pair_ctx, pair_next = ctx[pair_at], nxt[pair_at]
    new_ctx = np.ones(len(pair_ctx), dtype=bool)
    new_ctx[1:] = pair_ctx[1:] != pair_ctx[:-1]
    ctx_at = np.flatnonzero(new_ctx)
    return (
        pair_ctx[ctx_at].astype(np.int64),
        np.append(ctx_at, len(pair_ctx)).astype(np.int64),
        pair_next.astype(np.int64),
        pair_counts,
    )


# --- frames -----------------------------------------------------------------------------


def encode_frame(model: ContextModel, skeleton: bytes, texts: Sequence[str]) -> bytes:
    """Code an (optional) skeleton and the texts of one language as one payload."""
    encoder = FrameEncoder()
    encoder.encode_length(len(skeleton))
    ByteModel().encode(encoder, skeleton)
    for text in texts:
        encoder.encode(1, MORE_TEXTS)
        model.encode_text(encoder, text)
    return encoder.finish(0, MORE_TEXTS)


def decode_frame(
    model: ContextModel,
    payload: bytes,
    *,
    max_texts: int,
    max_chars: int,
    max_skeleton_bytes: int,
    max_total_chars: int | None = None,
) -> tuple[bytes, list[str]]:
    """Decode a payload of :func:`encode_frame` into its skeleton and texts.

    ``max_chars`` bounds each text, ``max_total_chars`` (default: no bound beyond
    ``max_texts * max_chars``) all texts together. Raises only :mod:`protocol.errors`
    types: :class:`LimitExceeded` as soon as a limit is passed (before allocating past
    it), :class:`MalformedBatch` for bytes that do not decode.
    """
    decoder = FrameDecoder(payload)
    length = decoder.decode_length(max_skeleton_bytes)
    skeleton = ByteModel().decode(decoder, length)
    texts: list[str] = []
    left = max_total_chars
    while decoder.decode(MORE_TEXTS):
        if len(texts) >= max_texts:
            raise LimitExceeded(f"frame holds more than {max_texts} texts")
        limit = max_chars if left is None else min(max_chars, left)
        try:
            text = model.decode_text(decoder, limit)
        except LimitExceeded:
            if left is not None and left < max_chars:
                raise LimitExceeded(
                    f"frame texts hold more than {max_total_chars} characters"
                ) from None
            raise
        if left is not None:
            left -= len(text)
        texts.append(text)
    return skeleton, texts


def ideal_code_length_bits(model: ContextModel, texts: Iterable[str]) -> float:
    """Sum of ``-log2 p`` of every character and END of ``texts`` under ``model``."""
    return sum(model.text_bits(text) for text in texts)
