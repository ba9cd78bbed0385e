"""Context coder: the range-coder plumbing under :mod:`protocol.context_model`.

This module knows nothing about languages. It wraps ``constriction``'s range coder
(0.5.0, 32-bit words, ``perfect=False`` categorical models) so that:

* probabilities go in as *integer weights*, which are exact in float64; constriction
  then quantizes them with its own fixed-order arithmetic, so encoder and decoder build
  bit-identical tables on every platform (no numpy reductions anywhere);
* the coded bytes are the coder's 32-bit words in big-endian order, cut after the last
  byte that the final decode still needs (:meth:`FrameEncoder.finish`); the decoder
  reads missing bytes as zeros;
* decoding failures of the library surface as :class:`~protocol.errors.MalformedBatch`.

It also holds the two small models a frame needs besides the text model: a length code
and an adaptive byte model (PPM orders 2, 1, 0 with exclusions, method D) for the CBOR
skeleton of a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import constriction
import numpy as np
import numpy.typing as npt

from protocol.errors import LimitExceeded, LocalProtocolError, MalformedBatch

_MODEL = constriction.stream.model
_QUEUE = constriction.stream.queue

#: Errors constriction (or numpy underneath it) may raise for data that is not ours.
LIBRARY_ERRORS = (AssertionError, ValueError, RuntimeError, OverflowError, IndexError)

#: Raw symbols: 0 is the end of a text, ``cp + 1`` is code point ``cp``.
RAW_SIZE = 0x110001
_RAW_LOW_BITS = 11
_RAW_HIGH_SIZE = (RAW_SIZE - 1 >> _RAW_LOW_BITS) + 1
_RAW_HIGH = _MODEL.Uniform(_RAW_HIGH_SIZE)
_RAW_LOW = _MODEL.Uniform(1 << _RAW_LOW_BITS)
#: Ideal cost of one raw symbol, in bits.
RAW_BITS = math.log2(_RAW_HIGH_SIZE) + _RAW_LOW_BITS

#: Longest skeleton a frame can carry (bytes); its length is coded in at most 20 bits.
MAX_SKELETON_BYTES = (1 << 20) - 1
_LENGTH_BITS = _MODEL.Categorical(
    # weights for the bit length 0..20 of a skeleton length: empty and a few hundred
    # bytes are the usual cases
    np.array([8, 1, 1, 1, 2, 3, 4, 6, 8, 8, 6, 4, 2, 1, 1, 1, 1, 1, 1, 1, 1], np.float64),
    perfect=False,
)
_CHUNK_BITS = 10
_CHUNK = _MODEL.Uniform(1 << _CHUNK_BITS)

#: "Another text follows?" 0 = no (weight 1), 1 = yes (weight 31). Zeros past the end of
#: the data decode as "no", so garbage ends soon.
MORE_TEXTS = _MODEL.Categorical(np.array([1.0, 31.0]), perfect=False)


def categorical(weights: Sequence[int]) -> object:
    """A constriction categorical model from positive integer weights (exact in float64)."""
    table: npt.NDArray[np.float64] = np.array(weights, dtype=np.float64)
    return _MODEL.Categorical(table, perfect=False)


class FrameEncoder:
    """A range encoder whose output is trimmed to the bytes the decoder needs."""

    def __init__(self) -> None:
        self._coder = _QUEUE.RangeEncoder()

    def encode(self, index: int, model: object) -> None:
        """Code ``index`` under ``model``."""
        self._coder.encode(index, model)

    def encode_raw(self, value: int) -> None:
        """Code a raw symbol (0 to ``RAW_SIZE - 1``) uniformly, in about 20.1 bits."""
        self._coder.encode(value >> _RAW_LOW_BITS, _RAW_HIGH)
        self._coder.encode(value & ((1 << _RAW_LOW_BITS) - 1), _RAW_LOW)

    def encode_length(self, length: int) -> None:
        """Code a skeleton length: its bit length, then the bits below the leading one."""
        if not 0 <= length <= MAX_SKELETON_BYTES:
            raise LocalProtocolError(
                f"a skeleton of {length} bytes is too long for one frame "
                f"(at most {MAX_SKELETON_BYTES})"
            )
        bits = length.bit_length()
        self._coder.encode(bits, _LENGTH_BITS)
        rest = bits - 1
        while rest > 0:
            take = min(rest, _CHUNK_BITS)
            rest -= take
            self._coder.encode((length >> rest) & ((1 << take) - 1), _MODEL.Uniform(1 << take))

    def finish(self, final_index: int, final_model: object) -> bytes:
        """Code the last symbol and return the shortest bytes that still decode.

        The coder's words are written big-endian and the decoder reads missing bytes as
        zeros, so dropping trailing bytes only lowers the decoder's point. All symbols
        decode right exactly when that point stays inside the final interval, which
        decoding the last symbol from a checkpoint taken before it tests in a few
        microseconds. Once a cut fails every shorter cut fails too, so we stop there.
        """
        position, state = self._coder.pos()
        self._coder.encode(final_index, final_model)
        full = bytes(self._coder.get_compressed().astype(">u4").tobytes())
        length = len(full)
        while length > 0 and _decodes_at(
            full[: length - 1], position, state, final_index, final_model
        ):
            length -= 1
        return full[:length]


def _words(payload: bytes, at_least: int) -> npt.NDArray[np.uint32]:
    """Big-endian bytes as native uint32 words, zero-padded to ``at_least`` words."""
    padded = payload + bytes(-len(payload) % 4)
    words: npt.NDArray[np.uint32] = np.frombuffer(padded, dtype=">u4").astype(np.uint32)
    if len(words) < at_least:
        words = np.concatenate([words, np.zeros(at_least - len(words), dtype=np.uint32)])
    return words


def _decodes_at(
    payload: bytes, position: int, state: tuple[int, int], index: int, model: object
) -> bool:
    decoder = _QUEUE.RangeDecoder(_words(payload, position + 2))
    decoder.seek(position, state)
    try:
        return bool(decoder.decode(model) == index)
    except LIBRARY_ERRORS:
        return False


class FrameDecoder:
    """A range decoder over untrusted bytes: library errors become ``MalformedBatch``."""

    def __init__(self, payload: bytes) -> None:
        self._coder = _QUEUE.RangeDecoder(_words(payload, 0))

    def unchecked_decode(self) -> Callable[[object], int]:
        """The library's own decode (no error translation), for a hot loop that catches
        :data:`LIBRARY_ERRORS` itself and raises :class:`MalformedBatch` for them."""
        decode: Callable[[object], int] = self._coder.decode
        return decode

    def decode(self, model: object) -> int:
        """The next index under ``model``."""
        try:
            return int(self._coder.decode(model))
        except LIBRARY_ERRORS as exc:
            raise MalformedBatch(f"context-coded frame does not decode ({exc})") from exc

    def decode_raw(self) -> int:
        """The next raw symbol; refuses values past the last code point."""
        value = (self.decode(_RAW_HIGH) << _RAW_LOW_BITS) | self.decode(_RAW_LOW)
        if value >= RAW_SIZE:
            raise MalformedBatch(f"context-coded frame holds code point {value - 1:#x}")
        return value

    def decode_length(self, limit: int) -> int:
        """A skeleton length, refused (before anything is allocated) past ``limit``."""
        bits = self.decode(_LENGTH_BITS)
        if bits == 0:
            return 0
        length = 1
        rest = bits - 1
        while rest > 0:
            take = min(rest, _CHUNK_BITS)
            rest -= take
            length = (length << take) | self.decode(_MODEL.Uniform(1 << take))
        if length > limit:
            raise LimitExceeded(
                f"frame declares a skeleton of {length} bytes, over the limit of {limit}"
            )
        return length


# --- adaptive byte model for the skeleton ----------------------------------------------------


class ByteModel:
    """Adaptive PPM over bytes (orders 2, 1, 0, then uniform), escape method D, exclusions.

    Starts empty for every frame and learns as it codes, so encoder and decoder stay in
    step by construction. A few hundred bytes of CBOR cost well under their length.
    """

    _ORDER = 2

    def __init__(self) -> None:
        # (order, context) -> {byte: count}; dicts keep insertion order, which both
        # sides share, so the symbol order of each table is the same on both sides.
        self._tables: dict[tuple[int, int], dict[int, int]] = {}
        self._history = 0
        self._seen = 0

    def _contexts(self) -> list[tuple[int, int]]:
        depth = min(self._seen, self._ORDER)
        return [(k, self._history & ((1 << (8 * k)) - 1)) for k in range(depth, -1, -1)]

    def _update(self, byte: int) -> None:
        for context in self._contexts():
            table = self._tables.setdefault(context, {})
            table[byte] = table.get(byte, 0) + 1
        self._history = ((self._history << 8) | byte) & 0xFFFF
        self._seen += 1

    def encode(self, encoder: FrameEncoder, data: bytes) -> None:
        """Code ``data`` (its length is coded separately)."""
        for byte in data:
            excluded: set[int] = set()
            found = False
            for context in self._contexts():
                table = self._tables.get(context)
                if not table:
                    continue
                symbols = [b for b in table if b not in excluded]
                if not symbols:
                    continue
                weights = [2 * table[b] - 1 for b in symbols]
                weights.append(len(table))  # escape
                model = categorical(weights)
                if byte in table:
                    encoder.encode(symbols.index(byte), model)
                    found = True
                    break
                encoder.encode(len(symbols), model)
                excluded.update(symbols)
            if not found:
                rest = [b for b in range(256) if b not in excluded]
                if len(rest) > 1:  # one value left: it costs nothing (and Uniform(1) panics)
                    encoder.encode(rest.index(byte), _MODEL.Uniform(len(rest)))
            self._update(byte)

    def decode(self, decoder: FrameDecoder, length: int) -> bytes:
        """Decode ``length`` bytes."""
        out = bytearray()
        for _ in range(length):
            excluded: set[int] = set()
            byte = -1
            for context in self._contexts():
                table = self._tables.get(context)
                if not table:
                    continue
                symbols = [b for b in table if b not in excluded]
                if not symbols:
                    continue
                weights = [2 * table[b] - 1 for b in symbols]
                weights.append(len(table))
                index = decoder.decode(categorical(weights))
                if index < len(symbols):
                    byte = symbols[index]
                    break
                excluded.update(symbols)
            if byte < 0:
                rest = [b for b in range(256) if b not in excluded]
                if not rest:
                    raise MalformedBatch(
                        "context-coded frame escapes past every byte value in its skeleton"
                    )
                byte = (
                    rest[0] if len(rest) == 1 else rest[decoder.decode(_MODEL.Uniform(len(rest)))]
                )
            out.append(byte)
            self._update(byte)
        return bytes(out)
