"""Compression: coding one frame (a skeleton and the texts of one language) as bytes.

A batch carries one frame per language. Frame 0 also carries the batch's envelope
skeleton (CBOR). Every codec maps ``(skeleton, texts)`` to a payload and back:

* ``STORED``: ``uvarint(len(skeleton)) skeleton text0 NUL text1 NUL ...`` (UTF-8; texts
  never contain NUL: intake removes it, envelopes refuse it).
* ``ZSTD``: the same bytes as one zstd frame with the language's trained dictionary, with
  every optional byte dropped (magicless, no content size, no checksum, no dictionary id:
  the batch signature already covers integrity, and the header names the dictionary).
* ``CONTEXT``: a character context model driving a range coder
  (:mod:`protocol.context_model`).

The encoder tries each codec available for the language and keeps the smallest payload,
except that a frame whose skeleton is over :data:`CONTEXT_SKELETON_LIMIT` bytes is not
tried with ``CONTEXT`` (see there). Decoders accept every codec for every frame.
Decoding never trusts a declared size: zstd output is pulled in small steps and refused
as soon as it passes the remaining budget, so a decompression bomb costs no memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import zstandard

from protocol.codebook import Codebook, CodebookEntry, Codec
from protocol.errors import LimitExceeded, MalformedBatch, UnknownDictionary
from protocol.languages import Language

ZSTD_LEVEL = 19
#: Bytes of compressed input fed to zstd per step while decoding. Four RLE blocks can
#: fit in 16 bytes, so one step yields at most 512 KiB past the budget before we stop.
_ZSTD_STEP = 16
_SEPARATOR = b"\x00"
#: Skeleton bytes above which the encoder does not try the context codec for a frame. Its
#: adaptive skeleton model costs tens of microseconds per byte of ciphertext in Python and
#: cannot shrink it, and a skeleton is this big only when it carries sealed grievance
#: reports or slot items: a batch with 60 sealed 2 KiB slot items took 4 s to encode (and
#: as long to decode ashore) to lose a few bytes to zstd. Structured skeletons of a few
#: hundred messages stay under it and keep the choice.
CONTEXT_SKELETON_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Frame:
    """One coded frame of a batch: codec, dictionary id (0 for none) and payload."""

    codec: Codec
    dictionary_id: int
    payload: bytes


# --- uvarint (LEB128), for the skeleton length -------------------------------------------


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_uvarint(data: bytes) -> tuple[int, int]:
    value = 0
    for index, byte in enumerate(data[:4]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, index + 1
    raise MalformedBatch("frame starts with a bad skeleton length")


# --- plain layout shared by STORED and ZSTD ----------------------------------------------


def _join(skeleton: bytes | None, texts: Sequence[str]) -> bytes:
    body = _SEPARATOR.join(text.encode("utf-8") for text in texts)
    if skeleton is None:
        return body
    return _uvarint(len(skeleton)) + skeleton + body


def _split(
    content: bytes, *, has_skeleton: bool, max_texts: int, max_chars: int
) -> tuple[bytes, list[str]]:
    skeleton = b""
    if has_skeleton:
        length, used = _read_uvarint(content)
        if used + length > len(content):
            raise MalformedBatch(
                f"frame declares a skeleton of {length} bytes but holds {len(content) - used}"
            )
        skeleton = content[used : used + length]
        content = content[used + length :]
    if not content:
        return skeleton, []
    if content.count(_SEPARATOR) >= max_texts:
        raise LimitExceeded(f"frame holds more than {max_texts} texts")
    try:
        texts = content.decode("utf-8").split("\x00")
    except UnicodeDecodeError as exc:
        raise MalformedBatch(f"frame text is not valid UTF-8 at byte {exc.start}") from exc
    for text in texts:
        if len(text) > max_chars:
            raise LimitExceeded(f"a text has {len(text)} characters, over the limit of {max_chars}")
    return skeleton, texts


# --- zstd --------------------------------------------------------------------------------


def _zstd_params() -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_content_size=False,
        write_checksum=False,
        write_dict_id=False,
    )


def _zstd_dictionary(codebook: Codebook, entry: CodebookEntry) -> zstandard.ZstdCompressionDict:
    cached = codebook.prepared(entry.dictionary_id)
    if isinstance(cached, zstandard.ZstdCompressionDict):
        return cached
    dictionary = zstandard.ZstdCompressionDict(entry.content)
    dictionary.precompute_compress(compression_params=_zstd_params())
    codebook.remember(entry.dictionary_id, dictionary)
    return dictionary


def _zstd_compress(content: bytes, dictionary: zstandard.ZstdCompressionDict | None) -> bytes:
    if dictionary is None:
        compressor = zstandard.ZstdCompressor(compression_params=_zstd_params())
    else:
        compressor = zstandard.ZstdCompressor(
            dict_data=dictionary, compression_params=_zstd_params()
        )
    return compressor.compress(content)


def zstd_decompress(
    payload: bytes, dictionary: zstandard.ZstdCompressionDict | None, budget: int
) -> bytes:
    """Decompress one magicless zstd frame, refusing output past ``budget`` bytes.

    Raises :class:`LimitExceeded` for too much output and :class:`MalformedBatch` for a
    truncated frame, trailing bytes or anything zstd cannot decode.
    """
    if dictionary is None:
        decompressor = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    else:
        decompressor = zstandard.ZstdDecompressor(
            dict_data=dictionary, format=zstandard.FORMAT_ZSTD1_MAGICLESS
        )
    stream = decompressor.decompressobj(read_across_frames=False)
    out: list[bytes] = []
    produced = 0
    try:
        for start in range(0, len(payload), _ZSTD_STEP):
            chunk = stream.decompress(payload[start : start + _ZSTD_STEP])
            produced += len(chunk)
            if produced > budget:
                raise LimitExceeded(
                    f"frame decompresses to more than {budget} bytes (a decompression bomb?)"
                )
            out.append(chunk)
            if stream.eof:
                if stream.unused_data or payload[start + _ZSTD_STEP :]:
                    raise MalformedBatch("frame has bytes after its end")
                return b"".join(out)
    except zstandard.ZstdError as exc:
        raise MalformedBatch(f"frame is not valid zstd data ({exc})") from exc
    raise MalformedBatch("frame is truncated (the zstd frame does not end)")


# --- context model -------------------------------------------------------------------------


def _context_model(codebook: Codebook, entry: CodebookEntry) -> object:
    from protocol import context_model

    cached = codebook.prepared(entry.dictionary_id)
    if isinstance(cached, context_model.ContextModel):
        return cached
    try:
        model = context_model.ContextModel.from_bytes(entry.content)
    except Exception as exc:  # a corrupt model file is our own bug: say which one
        raise UnknownDictionary(
            f"context model {entry.dictionary_id} ({entry.language.code}) does not load: {exc}"
        ) from exc
    codebook.remember(entry.dictionary_id, model)
    return model


# --- frames ---------------------------------------------------------------------------------


def encode_frame(
    codebook: Codebook,
    language: Language,
    skeleton: bytes | None,
    texts: Sequence[str],
    *,
    codecs: Sequence[Codec] = (Codec.STORED, Codec.ZSTD, Codec.CONTEXT),
) -> Frame:
    """Code one frame with whichever allowed codec gives the fewest bytes.

    ``skeleton`` is given for frame 0 only (``None`` for the others). ``CONTEXT`` is not
    tried for a skeleton over :data:`CONTEXT_SKELETON_LIMIT` bytes. When none of ``codecs``
    applies (``CONTEXT`` alone, and no model for the language or a skeleton over the
    limit), the frame is stored.
    """
    candidates: list[Frame] = []
    plain = _join(skeleton, texts)
    if Codec.STORED in codecs:
        candidates.append(Frame(Codec.STORED, 0, plain))
    if Codec.ZSTD in codecs:
        entry = codebook.newest(language, Codec.ZSTD)
        dictionary = _zstd_dictionary(codebook, entry) if entry else None
        payload = _zstd_compress(plain, dictionary)
        candidates.append(Frame(Codec.ZSTD, entry.dictionary_id if entry else 0, payload))
    if Codec.CONTEXT in codecs and len(skeleton or b"") <= CONTEXT_SKELETON_LIMIT:
        entry = codebook.newest(language, Codec.CONTEXT)
        if entry is not None:
            from protocol import context_model

            model = _context_model(codebook, entry)
            assert isinstance(model, context_model.ContextModel)
            payload = context_model.encode_frame(model, skeleton or b"", texts)
            candidates.append(Frame(Codec.CONTEXT, entry.dictionary_id, payload))
    if not candidates:
        # No allowed codec has a dictionary or model for this language: stored always works.
        candidates.append(Frame(Codec.STORED, 0, plain))
    return min(candidates, key=lambda frame: (len(frame.payload), frame.codec))


def decode_frame(
    codebook: Codebook,
    frame: Frame,
    *,
    has_skeleton: bool,
    budget: int,
    max_texts: int,
    max_chars: int,
    where: str = "this batch",
) -> tuple[bytes, list[str]]:
    """Decode one frame into its skeleton (``b""`` unless ``has_skeleton``) and texts.

    ``budget`` bounds the decoded bytes; only :mod:`protocol.errors` types are raised.
    """
    if frame.codec is Codec.STORED:
        if frame.dictionary_id != 0:
            raise MalformedBatch(f"{where}: a stored frame names dictionary {frame.dictionary_id}")
        if len(frame.payload) > budget:
            raise LimitExceeded(f"{where}: stored frame is over the {budget}-byte budget")
        return _split(
            frame.payload, has_skeleton=has_skeleton, max_texts=max_texts, max_chars=max_chars
        )
    if frame.codec is Codec.ZSTD:
        dictionary = None
        if frame.dictionary_id:
            entry = codebook.get(frame.dictionary_id, Codec.ZSTD, where=where)
            dictionary = _zstd_dictionary(codebook, entry)
        content = zstd_decompress(frame.payload, dictionary, budget)
        return _split(content, has_skeleton=has_skeleton, max_texts=max_texts, max_chars=max_chars)
    from protocol import context_model

    entry = codebook.get(frame.dictionary_id, Codec.CONTEXT, where=where)
    model = _context_model(codebook, entry)
    assert isinstance(model, context_model.ContextModel)
    skeleton, texts = context_model.decode_frame(
        model,
        frame.payload,
        max_texts=max_texts,
        max_chars=min(max_chars, budget),
        max_skeleton_bytes=budget if has_skeleton else 0,
        max_total_chars=budget,  # a character is at least one byte: a bound while decoding
    )
    if skeleton and not has_skeleton:
        raise MalformedBatch(f"{where}: only the first frame may carry the skeleton")
    decoded_bytes = len(skeleton) + sum(
        len(text.encode("utf-8", "surrogatepass")) + 1 for text in texts
    )
    if decoded_bytes > budget + 1:  # like _join: no separator after the last text
        raise LimitExceeded(
            f"{where}: frame decodes to {decoded_bytes} bytes, over the {budget}-byte budget"
        )
    return skeleton, texts
