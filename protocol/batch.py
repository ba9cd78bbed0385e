"""Batch framing: envelopes in, signed bytes out, and back (``encode_batch``/``decode_batch``).

Wire format, version 1::

    byte 0      direction and version: 0x01 vessel to shore, 0x02 shore to vessel
    CBOR array  [vessel_id, batch_seq, batch_minutes, frame, frame, ..., padding]
                frame = [codec, dictionary_id, payload]
                padding = a byte string of zeros (optional, last)
    64 bytes    Ed25519 signature over everything before it

``batch_seq`` starts at 1; ``batch_minutes`` (and every envelope's time) lies in
``[0, MAX_MINUTES)`` (:mod:`protocol.limits`, before the year 3000). A batch that breaks
either is malformed, even when its signature verifies.

Padding: by default every batch (uplink and downlink) is padded to its Padmé size class
(:mod:`protocol.padding`) by a trailing CBOR byte string of zeros *inside* the signed part,
so a batch's length on the wire says nothing beyond its class and nobody on the path can
strip or change the padding unnoticed. Decoders skip it after checking it is all zeros.

The envelope *skeleton* (a CBOR array of integer-keyed maps, see
:mod:`protocol.envelopes`) travels in frame 0. There is one frame per language that has
text, in ascending language id; frame 0 also carries the texts of the first language. A
batch without any text has one frame, holding only the skeleton. Each text-carrying
envelope names its language, and its text is the next one in that language's frame.

Decoding checks the size, parses the small header, verifies the signature *before* it
decompresses anything, decompresses within a shared byte budget, and checks every count
against :class:`~protocol.limits.Limits`. Only :mod:`protocol.errors` types escape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from protocol.cbor import dumps, strict_loads
from protocol.codebook import Codebook, Codec
from protocol.compression import Frame, decode_frame, encode_frame
from protocol.envelopes import Envelope, from_skeleton, text_language, to_skeleton
from protocol.errors import LimitExceeded, LocalProtocolError, MalformedBatch
from protocol.languages import Language
from protocol.limits import DEFAULT_LIMITS, MINUTES_RANGE, Limits, minutes_in_range
from protocol.padding import padme, zero_padding_item
from protocol.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from protocol.skeleton import from_columns, to_columns

_MIN_BATCH_BYTES = 1 + 5 + SIGNATURE_BYTES


class Direction(IntEnum):
    """Which way a batch travels; the value is the first byte of the batch (version 1)."""

    UPLINK = 0x01  # vessel to shore, signed by the vessel
    DOWNLINK = 0x02  # shore to vessel, signed by the shore


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """What a batch says about itself before anything is verified or decompressed."""

    direction: Direction
    vessel_id: int
    batch_seq: int
    batch_minutes: int
    frames: tuple[Frame, ...]
    #: Zero bytes of padding (its 1 to 5 bytes of CBOR head not counted; 0 if unpadded).
    padding_bytes: int = 0

    @property
    def where(self) -> str:
        """Names the batch in error messages: ``batch 1831 from vessel 42``."""
        side = "from" if self.direction is Direction.UPLINK else "to"
        return f"batch {self.batch_seq} {side} vessel {self.vessel_id}"


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch: header fields and envelopes in their original order."""

    direction: Direction
    vessel_id: int
    batch_seq: int
    batch_minutes: int
    envelopes: tuple[Envelope, ...]
    frames: tuple[Frame, ...] = ()
    #: Zero bytes of padding (its 1 to 5 bytes of CBOR head not counted; 0 if unpadded).
    padding_bytes: int = 0


def _text_bytes(texts: Sequence[str]) -> int:
    return sum(len(text.encode("utf-8", "surrogatepass")) + 1 for text in texts)


def _check_uint(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise LocalProtocolError(f"{name} must be a whole number from 0 to 2**53, not {value!r}")


def encode_batch(
    envelopes: Sequence[Envelope],
    *,
    direction: Direction,
    vessel_id: int,
    batch_seq: int,
    batch_minutes: int,
    signing_key: SigningKey,
    codebook: Codebook,
    codecs: Sequence[Codec] = (Codec.STORED, Codec.ZSTD, Codec.CONTEXT),
    limits: Limits = DEFAULT_LIMITS,
    pad: bool = True,
) -> bytes:
    """Encode, compress and sign a batch. The same input always gives the same bytes.

    With ``pad`` (the default) the batch is padded to its Padmé size class (capped at
    ``limits.max_batch_bytes``); ``pad=False`` is for measuring and for tests.
    """
    _check_uint("vessel_id", vessel_id)
    _check_uint("batch_seq", batch_seq)
    if batch_seq == 0:
        raise LocalProtocolError("batch_seq starts at 1; 0 is never a batch")
    if not minutes_in_range(batch_minutes):
        raise LocalProtocolError(
            f"batch_minutes is {batch_minutes!r}, not a time from {MINUTES_RANGE}; check the clock"
        )
    if not envelopes:
        raise LocalProtocolError("a batch needs at least one envelope")
    if len(envelopes) > limits.max_envelopes:
        raise LimitExceeded(
            f"{len(envelopes)} envelopes do not fit one batch (limit {limits.max_envelopes})"
        )
    skeleton_entries = []
    texts: dict[Language, list[str]] = {}
    for envelope in envelopes:
        entry = to_skeleton(envelope, batch_minutes)
        skeleton_entries.append(entry)
        language = text_language(entry)
        if language is not None:
            text = envelope.text
            assert text is not None
            texts.setdefault(language, []).append(text)
    skeleton = dumps(to_columns(skeleton_entries))
    languages = sorted(texts) or [Language.UND]
    frames = [
        encode_frame(
            codebook,
            language,
            skeleton if index == 0 else None,
            texts.get(language, []),
            codecs=codecs,
        )
        for index, language in enumerate(languages)
    ]
    header: list[object] = [vessel_id, batch_seq, batch_minutes]
    header += [[int(frame.codec), frame.dictionary_id, frame.payload] for frame in frames]
    if pad:
        header.append(b"")  # the padding item; its one byte (0x40) ends the CBOR
    signed = bytes([direction]) + dumps(header)
    unpadded_bytes = len(signed) + SIGNATURE_BYTES
    if unpadded_bytes > limits.max_batch_bytes:
        raise LimitExceeded(
            f"batch {batch_seq} is {unpadded_bytes} bytes, over the limit of "
            f"{limits.max_batch_bytes}; send fewer envelopes per batch"
        )
    if pad:
        target = min(padme(unpadded_bytes), limits.max_batch_bytes)
        signed = signed[:-1] + zero_padding_item(1 + target - unpadded_bytes)
    return signed + signing_key.sign(signed)


def read_batch_header(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> BatchHeader:
    """Parse a batch's header without verifying or decompressing (to pick the right key)."""
    if not isinstance(data, bytes):
        raise MalformedBatch(f"a batch is bytes, not {type(data).__name__}")
    if len(data) > limits.max_batch_bytes:
        raise LimitExceeded(
            f"batch is {len(data)} bytes, over the limit of {limits.max_batch_bytes}"
        )
    if len(data) < _MIN_BATCH_BYTES:
        raise MalformedBatch(f"batch is only {len(data)} bytes: truncated or not a batch")
    try:
        direction = Direction(data[0])
    except ValueError:
        raise MalformedBatch(
            f"batch starts with 0x{data[0]:02x}: not a vessel-relay batch, or a newer version"
        ) from None
    header = strict_loads(
        data[1:-SIGNATURE_BYTES],
        max_depth=2,
        max_length=4 + limits.max_frames,
        what="batch header",
    )
    if not isinstance(header, list) or len(header) < 4:
        raise MalformedBatch("batch header is not [vessel, sequence, minutes, frames...]")
    fields = header[:3]
    for name, value in zip(("vessel id", "batch sequence", "batch time"), fields, strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
            raise MalformedBatch(f"batch header {name} is {value!r}, not a whole number")
    if fields[1] == 0:
        raise MalformedBatch("batch header names batch 0; batches are numbered from 1")
    if not minutes_in_range(fields[2]):
        raise MalformedBatch(
            f"batch header time is {fields[2]} minutes, not a time from {MINUTES_RANGE}"
        )
    frames = []
    items = header[3:]
    padding_bytes = 0
    if isinstance(items[-1], bytes):
        padding = items.pop()
        if padding.count(0) != len(padding):
            raise MalformedBatch("batch padding holds bytes other than zeros")
        padding_bytes = len(padding)
    if not items:
        raise MalformedBatch("batch header has padding but no frame")
    for raw in items:
        if not (
            isinstance(raw, list)
            and len(raw) == 3
            and isinstance(raw[0], int)
            and isinstance(raw[1], int)
            and isinstance(raw[2], bytes)
        ):
            raise MalformedBatch("batch frame is not [codec, dictionary, payload]")
        try:
            codec = Codec(raw[0])
        except ValueError:
            raise MalformedBatch(f"batch frame names codec {raw[0]}, unknown here") from None
        if not 0 <= raw[1] < 2**16:
            raise MalformedBatch(f"batch frame names dictionary {raw[1]}, out of range")
        frames.append(Frame(codec, raw[1], raw[2]))
    if len(frames) > limits.max_frames:
        raise LimitExceeded(
            f"batch has {len(frames)} frames, over the limit of {limits.max_frames}"
        )
    vessel_id, batch_seq, batch_minutes = fields
    return BatchHeader(direction, vessel_id, batch_seq, batch_minutes, tuple(frames), padding_bytes)


def decode_batch(
    data: bytes,
    *,
    codebook: Codebook,
    verify_key: VerifyKey | None,
    direction: Direction | None = None,
    insecure_skip_verify: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> Batch:
    """Verify, decompress and decode a batch.

    ``verify_key`` is the sender's public key (the vessel's for uplink, the shore's for
    downlink). Passing ``None`` is refused unless ``insecure_skip_verify`` is set, which
    only debugging tools do. ``direction``, when given, must match the batch's.
    """
    header = read_batch_header(data, limits=limits)
    where = header.where
    if direction is not None and header.direction is not direction:
        raise MalformedBatch(
            f"{where} travels {header.direction.name.lower()}, not {direction.name.lower()}"
        )
    if verify_key is not None:
        verify_key.verify(data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:], what=where)
    elif not insecure_skip_verify:
        raise LocalProtocolError("decode_batch needs the sender's verify_key")
    budget = limits.max_decompressed_bytes
    skeleton_bytes, first_texts = decode_frame(
        codebook,
        header.frames[0],
        has_skeleton=True,
        budget=budget,
        max_texts=limits.max_envelopes,
        max_chars=limits.max_text_chars,
        where=where,
    )
    budget -= len(skeleton_bytes) + _text_bytes(first_texts)
    columns = strict_loads(
        skeleton_bytes,
        max_depth=limits.max_cbor_depth,
        max_length=limits.max_container_length,
        what=f"{where} skeleton",
    )
    skeleton = from_columns(columns, max_envelopes=limits.max_envelopes)
    for entry in skeleton:
        for value in entry.values():
            if isinstance(value, bytes) and len(value) > limits.max_blob_bytes:
                raise LimitExceeded(
                    f"{where} holds a {len(value)}-byte field (a sealed report or a "
                    f"dictionary part), over the limit of {limits.max_blob_bytes}"
                )
    # ``is not None``: Language.UND is 0, and a text in it still has a frame.
    languages = sorted({lang for entry in skeleton if (lang := text_language(entry)) is not None})
    expected_frames = max(1, len(languages))
    if len(header.frames) != expected_frames:
        raise MalformedBatch(
            f"{where} has {len(header.frames)} frames but its envelopes use {expected_frames}"
        )
    texts: dict[Language, list[str]] = {}
    if languages:
        texts[languages[0]] = first_texts
    elif first_texts:
        raise MalformedBatch(f"{where} carries texts that no envelope uses")
    for language, frame in zip(languages[1:], header.frames[1:], strict=True):
        _, frame_texts = decode_frame(
            codebook,
            frame,
            has_skeleton=False,
            budget=budget,
            max_texts=limits.max_envelopes,
            max_chars=limits.max_text_chars,
            where=where,
        )
        budget -= _text_bytes(frame_texts)
        texts[language] = frame_texts
    envelopes = join_texts(skeleton, texts, header.batch_minutes, where)
    return Batch(
        direction=header.direction,
        vessel_id=header.vessel_id,
        batch_seq=header.batch_seq,
        batch_minutes=header.batch_minutes,
        envelopes=tuple(envelopes),
        frames=header.frames,
        padding_bytes=header.padding_bytes,
    )


def join_texts(
    entries: Sequence[dict[int, object]],
    texts: dict[Language, list[str]],
    batch_minutes: int,
    where: str,
) -> list[Envelope]:
    """The envelopes of skeleton ``entries``, each text-bearing one given the next text of
    its language's frame, in order; a frame with fewer or more texts than its envelopes is
    :class:`MalformedBatch` (the one rule for signed batches and compact frames)."""
    cursors = dict.fromkeys(texts, 0)
    envelopes: list[Envelope] = []
    for entry in entries:
        text = None
        entry_language = text_language(entry)
        if entry_language is not None:
            index = cursors[entry_language]
            if index >= len(texts[entry_language]):
                raise MalformedBatch(
                    f"{where} has fewer {entry_language.code} texts than envelopes"
                )
            text = texts[entry_language][index]
            cursors[entry_language] = index + 1
        envelopes.append(from_skeleton(entry, batch_minutes, text))
    for language, index in cursors.items():
        if index != len(texts[language]):
            raise MalformedBatch(f"{where} has more {language.code} texts than envelopes")
    return envelopes
