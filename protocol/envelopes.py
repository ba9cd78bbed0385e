"""Envelopes: one frozen type per kind of thing that travels between vessel and shore.

On the wire an envelope is a compact CBOR map with small integer keys (one byte each):
``{0: kind, 1: seq, 2: crew, ...}``. Times travel as minutes relative to the batch time;
contacts as their index in the vessel's contact book (a new contact travels once, in a
:class:`ContactBookChange`). The human text of an envelope (a message, a reply, a failure
reason) does *not* sit in the map: the map holds ``{5: language}`` and the text itself
travels in that language's compressed frame (see :mod:`protocol.batch`), in order.

Each envelope validates itself when built: a negative sequence number, an over-long text,
a text without a language or a time outside :data:`~protocol.limits.MAX_MINUTES` raises
:class:`~protocol.errors.InvalidEnvelope` before the envelope exists (and a decoded one
that does, :class:`~protocol.errors.MalformedBatch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import ClassVar

from protocol.errors import InvalidEnvelope, MalformedBatch
from protocol.languages import Language
from protocol.limits import (
    DEFAULT_LIMITS,
    MAX_LANE_BLOCK_BYTES,
    MIN_LANE_BLOCK_BYTES,
    MINUTES_RANGE,
    minutes_in_range,
)
from protocol.voice import MAX_VOICE_NOTE_MS, VoiceMode, frames_for

#: Sequence numbers, crew and contact indexes are unsigned and below this bound.
MAX_UINT = 2**53


class Kind(IntEnum):
    """The kind of an envelope; the value is its wire id (never renumber)."""

    CREW_MESSAGE = 1
    GRIEVANCE_REPORT = 2
    SOS = 3
    DELIVERY_RECEIPT = 4
    DELIVERY_FAILURE = 5
    REPLY = 6
    CASE_STATUS = 7
    BATCH_ACK = 8
    QUOTA_NOTICE = 9
    CONTACT_BOOK_CHANGE = 10
    DICTIONARY_UPDATE = 11
    LANE_BLOCK = 12
    VOICE_NOTE = 13
    VOICE_REPLY = 14


class ReceiptStage(IntEnum):
    """How far a message has come, as told back to the crew member."""

    ACCEPTED_ASHORE = 1
    DELIVERED = 2


class FailureReason(IntEnum):
    """Why a message could not be delivered (the crew member is told in their language)."""

    ADDRESS_INVALID = 1
    RECIPIENT_REFUSED = 2
    DEADLINE_PASSED = 3
    UNKNOWN_CONTACT = 4
    REJECTED_BY_RELAY = 5
    PROVIDER_ERROR = 6


class CaseStatus(IntEnum):
    """Stages of a grievance case, as the union moves it."""

    RECEIVED = 1
    ACKNOWLEDGED = 2
    IN_PROGRESS = 3
    REFERRED = 4
    RESOLVED = 5
    CLOSED = 6


class Channel(IntEnum):
    """How a family contact is reached ashore."""

    EMAIL = 1
    SMS = 2


class _T(Enum):
    """Wire types of envelope fields."""

    UINT = "uint"
    INT = "int"
    TEXT = "text"  # human text: travels in the language frame; key holds the language id
    STR = "str"  # short string kept in the skeleton (an address, a name)
    BYTES = "bytes"
    BOOL = "bool"
    LANGUAGE = "language"
    POSITION = "position"  # (latitude, longitude) in 1e-5 degrees
    RANGES = "ranges"  # ((first, last), ...) inclusive
    PAIRS = "pairs"  # ((seq, reason), ...)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    key: int
    wire: _T
    enum: type[IntEnum] | None = None
    optional: bool = False


#: Skeleton key of the kind, and of relative time (batch minutes minus written minutes).
KIND_KEY = 0
AGE_KEY = 4
TEXT_KEY = 5


def _check_uint(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_UINT:
        raise InvalidEnvelope(f"{name} must be a whole number from 0 to 2**53, not {value!r}")


def _check_minutes(name: str, value: int) -> None:
    if not minutes_in_range(value):
        raise InvalidEnvelope(
            f"{name} is {value!r}, not a time from {MINUTES_RANGE}; check the sender's clock"
        )


def _check_text(name: str, text: str, max_chars: int) -> None:
    if not isinstance(text, str):
        raise InvalidEnvelope(f"{name} must be text, not {type(text).__name__}")
    if not text:
        raise InvalidEnvelope(f"{name} is empty; leave it out instead")
    if len(text) > max_chars:
        raise InvalidEnvelope(f"{name} has {len(text)} characters, over the limit of {max_chars}")
    if "\x00" in text:
        raise InvalidEnvelope(f"{name} contains a NUL character; normalise the text at intake")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEnvelope(
            f"{name} holds a lone surrogate at character {exc.start}; normalise the text at intake"
        ) from None


class Envelope:
    """Base of all envelope types (each is a frozen, slotted dataclass)."""

    __slots__ = ()
    KIND: ClassVar[Kind]
    FIELDS: ClassVar[tuple[_Field, ...]]
    #: The name of the attribute holding the envelope's human text, if it has one.
    TEXT_FIELD: ClassVar[str | None] = None

    written_minutes: int

    def _validate(self) -> None:
        _check_minutes("written_minutes", self.written_minutes)
        for spec in self.FIELDS:
            value = getattr(self, spec.name)
            if value is None:
                if not spec.optional:
                    raise InvalidEnvelope(f"{type(self).__name__}.{spec.name} is required")
                continue
            _validate_value(f"{type(self).__name__}.{spec.name}", spec, value)
        text_field = self.TEXT_FIELD
        if text_field is not None:
            has_text = getattr(self, text_field) is not None
            lang = getattr(self, "lang")  # noqa: B009 - every text-carrying envelope has lang
            if has_text and lang is None:
                raise InvalidEnvelope(f"{type(self).__name__} has text but no language")
            if lang is not None and not isinstance(lang, Language):
                raise InvalidEnvelope(
                    f"{type(self).__name__}.lang must be a Language, not {lang!r}"
                )
            if not has_text and lang is not None:
                # The language travels only with a text (it names the text's frame): a
                # quick-message code is expanded ashore in the contact's language. Drop it
                # here, so that the envelope equals what the peer decodes.
                object.__setattr__(self, "lang", None)

    @property
    def text(self) -> str | None:
        """The envelope's human text, if it carries one."""
        if self.TEXT_FIELD is None:
            return None
        value = getattr(self, self.TEXT_FIELD)
        return value if isinstance(value, str) else None


def _validate_value(name: str, spec: _Field, value: object) -> None:
    wire = spec.wire
    if wire is _T.UINT:
        if spec.enum is not None:
            if not isinstance(value, spec.enum):
                raise InvalidEnvelope(f"{name} must be a {spec.enum.__name__}, not {value!r}")
        else:
            _check_uint(name, value)  # type: ignore[arg-type]
    elif wire is _T.INT:
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= MAX_UINT:
            raise InvalidEnvelope(f"{name} must be a whole number, not {value!r}")
    elif wire is _T.TEXT:
        _check_text(name, value, DEFAULT_LIMITS.max_text_chars)  # type: ignore[arg-type]
    elif wire is _T.STR:
        _check_text(name, value, 320)  # type: ignore[arg-type]
    elif wire is _T.BYTES:
        if not isinstance(value, bytes) or not value:
            raise InvalidEnvelope(f"{name} must be non-empty bytes")
        if len(value) > DEFAULT_LIMITS.max_blob_bytes:
            raise InvalidEnvelope(
                f"{name} is {len(value)} bytes, over the limit of {DEFAULT_LIMITS.max_blob_bytes}"
            )
    elif wire is _T.BOOL:
        if not isinstance(value, bool):
            raise InvalidEnvelope(f"{name} must be true or false, not {value!r}")
    elif wire is _T.LANGUAGE:
        if not isinstance(value, Language):
            raise InvalidEnvelope(f"{name} must be a Language, not {value!r}")
    elif wire is _T.POSITION:
        _validate_position(name, value)
    elif wire is _T.RANGES:
        _validate_ranges(name, value)
    elif wire is _T.PAIRS:
        _validate_pairs(name, value)


def _validate_position(name: str, value: object) -> None:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise InvalidEnvelope(f"{name} must be (latitude, longitude) in 1e-5 degrees")
    lat, lon = value
    if not (isinstance(lat, int) and isinstance(lon, int)):
        raise InvalidEnvelope(f"{name} must hold whole numbers (1e-5 degrees)")
    if not (-9_000_000 <= lat <= 9_000_000 and -18_000_000 <= lon <= 18_000_000):
        raise InvalidEnvelope(f"{name} {value!r} is not a position on Earth")


def _validate_ranges(name: str, value: object) -> None:
    if not isinstance(value, tuple) or len(value) > DEFAULT_LIMITS.max_container_length:
        raise InvalidEnvelope(f"{name} must be a tuple of (first, last) ranges")
    previous = -2
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise InvalidEnvelope(f"{name} must hold (first, last) pairs, not {item!r}")
        first, last = item
        _check_uint(name, first)
        _check_uint(name, last)
        if first > last or first <= previous + 1:
            raise InvalidEnvelope(f"{name} ranges must be sorted, disjoint and not adjacent")
        previous = last


def _validate_pairs(name: str, value: object) -> None:
    if not isinstance(value, tuple) or len(value) > DEFAULT_LIMITS.max_container_length:
        raise InvalidEnvelope(f"{name} must be a tuple of (sequence, reason) pairs")
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise InvalidEnvelope(f"{name} must hold (sequence, reason) pairs, not {item!r}")
        _check_uint(name, item[0])
        _check_uint(name, item[1])


# --- the envelope kinds ----------------------------------------------------------------


#: The most characters of a crew message's subject (a mail's Subject line).
MAX_SUBJECT_CHARS = 200


@dataclass(frozen=True, slots=True)
class CrewMessage(Envelope):
    """A crew member's message to a family contact: free text or a quick-message code.

    ``subject`` (key 34, optional, added 2026-12) is the Subject line of a text that came
    in by mail: one line of at most :data:`MAX_SUBJECT_CHARS` characters, which the relay
    uses as the family mail's Subject. It travels in the skeleton, and only with a text
    body. It is the last field, so batches made before it still decode (their presence
    masks are unchanged) and a message without one encodes byte for byte as before. A
    relay older than this key refuses a batch that holds one (an unknown presence bit):
    a vessel sends it only when its config says the relay reads it
    (``[shore] relay_reads_subjects``).
    """

    KIND: ClassVar[Kind] = Kind.CREW_MESSAGE
    TEXT_FIELD: ClassVar[str | None] = "body"
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("message_seq", 1, _T.UINT),
        _Field("crew", 2, _T.UINT),
        _Field("contact", 3, _T.UINT),
        _Field("body", TEXT_KEY, _T.TEXT, optional=True),
        _Field("quick", 6, _T.UINT, optional=True),
        _Field("subject", 34, _T.STR, optional=True),  # last: old masks stay valid
    )

    message_seq: int
    crew: int
    contact: int
    written_minutes: int
    lang: Language | None = None
    body: str | None = None
    quick: int | None = None
    subject: str | None = None

    def __post_init__(self) -> None:
        self._validate()
        if (self.body is None) == (self.quick is None):
            raise InvalidEnvelope("a crew message has either a text body or a quick code, not both")
        if self.subject is not None:
            if self.body is None:
                raise InvalidEnvelope("a crew message's subject goes with a text body only")
            if len(self.subject) > MAX_SUBJECT_CHARS:
                raise InvalidEnvelope(
                    f"CrewMessage.subject has {len(self.subject)} characters, over the limit "
                    f"of {MAX_SUBJECT_CHARS}"
                )
            if any(c in self.subject for c in "\r\n"):
                raise InvalidEnvelope("CrewMessage.subject is one line: it holds a line break")


@dataclass(frozen=True, slots=True)
class GrievanceReport(Envelope):
    """A grievance report, sealed to the union's key before it enters a batch."""

    KIND: ClassVar[Kind] = Kind.GRIEVANCE_REPORT
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("message_seq", 1, _T.UINT),
        _Field("union", 8, _T.UINT),
        _Field("sealed", 7, _T.BYTES),
    )

    message_seq: int
    union: int
    written_minutes: int
    sealed: bytes

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True, slots=True)
class Sos(Envelope):
    """An SOS from a crew member: goes out at once, outside every quota.

    ``unauthenticated`` (key 28, optional, added 2026-12) is true for an SOS sent without
    a PIN (from the sign-in page): ``crew`` is then only the number that was typed, which
    nobody proved. It is left out (None) for a signed-in SOS, so those encode as before.
    """

    KIND: ClassVar[Kind] = Kind.SOS
    TEXT_FIELD: ClassVar[str | None] = "note"
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("message_seq", 1, _T.UINT),
        _Field("crew", 2, _T.UINT),
        _Field("note", TEXT_KEY, _T.TEXT, optional=True),
        _Field("position", 10, _T.POSITION, optional=True),
        _Field("unauthenticated", 28, _T.BOOL, optional=True),  # last: old masks stay valid
    )

    message_seq: int
    crew: int
    written_minutes: int
    lang: Language | None = None
    note: str | None = None
    position: tuple[int, int] | None = None
    unauthenticated: bool | None = None

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True, slots=True)
class DeliveryReceipt(Envelope):
    """Shore to vessel: a message reached a stage (accepted ashore, delivered)."""

    KIND: ClassVar[Kind] = Kind.DELIVERY_RECEIPT
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("message_seq", 1, _T.UINT),
        _Field("stage", 9, _T.UINT, ReceiptStage),
    )

    message_seq: int
    stage: ReceiptStage
    written_minutes: int

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True, slots=True)
class DeliveryFailure(Envelope):
    """Shore to vessel: a message could not be delivered, and why."""

    KIND: ClassVar[Kind] = Kind.DELIVERY_FAILURE
    TEXT_FIELD: ClassVar[str | None] = "detail"
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("message_seq", 1, _T.UINT),
        _Field("reason", 9, _T.UINT, FailureReason),
        _Field("detail", TEXT_KEY, _T.TEXT, optional=True),
    )

    message_seq: int
    reason: FailureReason
    written_minutes: int
    lang: Language | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True, slots=True)
class Reply(Envelope):
    """Shore to vessel: a family's answer to a crew member."""

    KIND: ClassVar[Kind] = Kind.REPLY
    TEXT_FIELD: ClassVar[str | None] = "body"
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("reply_seq", 1, _T.UINT),
        _Field("crew", 2, _T.UINT),
        _Field("contact", 3, _T.UINT),
        _Field("body", TEXT_KEY, _T.TEXT),
        _Field("truncated", 22, _T.BOOL, optional=True),
    )

    reply_seq: int
    crew: int
    contact: int
    written_minutes: int
    lang: Language
    body: str
    truncated: bool | None = None

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True, slots=True)
class CaseStatusUpdate(Envelope):
    """Shore to vessel: a grievance case moved on; the note is sealed to the reporter."""

    KIND: ClassVar[Kind] = Kind.CASE_STATUS
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("report_seq", 1, _T.UINT),
        _Field("status", 9, _T.UINT, CaseStatus),
        _Field("sealed_note", 7, _T.BYTES, optional=True),
    )

    report_seq: int
    status: CaseStatus
    written_minutes: int
    sealed_note: bytes | None = None

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True, slots=True)
class BatchAck(Envelope):
    """A cumulative application receipt: batches up to ``up_to`` plus ``ranges`` are stored.

    ``rejected`` lists batches that were refused for good, with a
    :class:`~protocol.errors.Reason` code, so that the sender stops resending them and
    tells the crew members concerned.
    """

    KIND: ClassVar[Kind] = Kind.BATCH_ACK
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("up_to", 11, _T.UINT),
        _Field("ranges", 12, _T.RANGES, optional=True),
        _Field("rejected", 23, _T.PAIRS, optional=True),
    )

    up_to: int
    written_minutes: int
    ranges: tuple[tuple[int, int], ...] | None = None
    rejected: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        self._validate()
        if self.ranges and self.ranges[0][0] <= self.up_to + 1:
            raise InvalidEnvelope("BatchAck ranges must start above up_to + 1")

    def covers(self, seq: int) -> bool:
        """Whether batch ``seq`` is acknowledged by this receipt."""
        if seq <= self.up_to:
            return True
        return any(first <= seq <= last for first, last in self.ranges or ())


@dataclass(frozen=True, slots=True)
class QuotaNotice(Envelope):
    """Control: a crew member's text quota and use this month (``month`` as YYYYMM)."""

    KIND: ClassVar[Kind] = Kind.QUOTA_NOTICE
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("crew", 2, _T.UINT),
        _Field("month", 24, _T.UINT),
        _Field("used_bytes", 16, _T.UINT),
        _Field("quota_bytes", 17, _T.UINT),
    )

    crew: int
    month: int
    used_bytes: int
    quota_bytes: int
    written_minutes: int

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True, slots=True)
class ContactBookChange(Envelope):
    """Control: a crew member's family contact added or changed (travels once)."""

    KIND: ClassVar[Kind] = Kind.CONTACT_BOOK_CHANGE
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("crew", 2, _T.UINT),
        _Field("contact", 3, _T.UINT),
        _Field("channel", 14, _T.UINT, Channel),
        _Field("address", 13, _T.STR),
        _Field("name", 15, _T.STR, optional=True),
        _Field("contact_lang", 26, _T.LANGUAGE, optional=True),
        _Field("crew_name", 27, _T.STR, optional=True),
    )

    crew: int
    contact: int
    channel: Channel
    address: str
    written_minutes: int
    name: str | None = None
    contact_lang: Language | None = None
    crew_name: str | None = None

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True, slots=True)
class DictionaryUpdate(Envelope):
    """Control: one part of a new compression dictionary or model, sent down to a vessel."""

    KIND: ClassVar[Kind] = Kind.DICTIONARY_UPDATE
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("dictionary_id", 18, _T.UINT),
        _Field("codec", 25, _T.UINT),
        _Field("part", 19, _T.UINT),
        _Field("parts", 20, _T.UINT),
        _Field("data", 21, _T.BYTES),
    )

    dictionary_id: int
    codec: int
    part: int
    parts: int
    data: bytes
    written_minutes: int

    def __post_init__(self) -> None:
        self._validate()
        if not self.part < self.parts:
            raise InvalidEnvelope(f"DictionaryUpdate part {self.part} is not below {self.parts}")


@dataclass(frozen=True, slots=True)
class LaneBlock(Envelope):
    """One block of a vessel's grievance lane (:mod:`protocol.lane`), up or down.

    Every lane period the vessel sends, and the relay sends it, the same number of blocks
    of the same size whatever they hold: a fragment of a report or a case note sealed to
    its reader, or cover. ``period`` is the period's number (seconds since 1970 divided by
    the lane period), ``index`` the block's place in it (receivers keep one block per
    place: a resent copy changes nothing); ``block`` is the sealed box, nothing in the
    clear. Reserved lane: outside every quota and budget.
    """

    KIND: ClassVar[Kind] = Kind.LANE_BLOCK
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("period", 29, _T.UINT),
        _Field("index", 30, _T.UINT),
        _Field("block", 7, _T.BYTES),
    )

    period: int
    index: int
    block: bytes
    written_minutes: int

    def __post_init__(self) -> None:
        self._validate()
        if not MIN_LANE_BLOCK_BYTES <= len(self.block) <= MAX_LANE_BLOCK_BYTES:
            raise InvalidEnvelope(
                f"LaneBlock.block is {len(self.block)} bytes; a lane block has "
                f"{MIN_LANE_BLOCK_BYTES} to {MAX_LANE_BLOCK_BYTES}"
            )
        if self.index >= 64:
            raise InvalidEnvelope(f"LaneBlock.index {self.index} is over 63 blocks a period")


@dataclass(frozen=True, slots=True)
class VoiceNote(Envelope):
    """A crew member's spoken message to a family contact: Codec2 frames, no text.

    ``frames`` holds ``frames_for(mode, duration_ms)`` frames of ``mode``, each
    ``mode.bytes_per_frame`` long, back to back (:mod:`protocol.voice`); the last frame's
    speech is padded with silence beyond ``duration_ms``. It counts against the crew
    member's monthly quota like a text message's bytes. Added 2026-12 as kind 13: a relay
    of an older version refuses a batch holding one as malformed ("kind 13 is not known
    to this version"), so vessels send voice notes only to relays that read them.
    """

    KIND: ClassVar[Kind] = Kind.VOICE_NOTE
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("message_seq", 1, _T.UINT),
        _Field("crew", 2, _T.UINT),
        _Field("contact", 3, _T.UINT),
        _Field("mode", 32, _T.UINT, VoiceMode),
        _Field("duration_ms", 33, _T.UINT),
        _Field("frames", 7, _T.BYTES),
    )

    message_seq: int
    crew: int
    contact: int
    mode: VoiceMode
    duration_ms: int
    frames: bytes
    written_minutes: int

    def __post_init__(self) -> None:
        self._validate()
        _check_voice_frames("VoiceNote", self.mode, self.duration_ms, self.frames)

    @property
    def voice_bytes(self) -> int:
        """The bytes of speech, as counted against the crew member's quota."""
        return len(self.frames)


@dataclass(frozen=True, slots=True)
class VoiceReply(Envelope):
    """Shore to vessel: a family's spoken answer to a crew member, as Codec2 frames.

    The frames are laid out as in :class:`VoiceNote` (``frames_for(mode, duration_ms)``
    frames of ``mode``); ``reply_seq`` is taken from the same counter as a text
    :class:`Reply`'s, so the vessel keeps each reply once whichever kind it is. Added
    2026-12 as kind 14: an agent of an older version refuses a downlink batch holding one
    as malformed ("kind 14 is not known to this version"), so the relay sends voice
    replies only to vessels whose agents read them, and keeps the spoken part of a
    family's answer otherwise (the text goes down as a :class:`Reply`).
    """

    KIND: ClassVar[Kind] = Kind.VOICE_REPLY
    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("reply_seq", 1, _T.UINT),
        _Field("crew", 2, _T.UINT),
        _Field("contact", 3, _T.UINT),
        _Field("mode", 32, _T.UINT, VoiceMode),
        _Field("duration_ms", 33, _T.UINT),
        _Field("frames", 7, _T.BYTES),
    )

    reply_seq: int
    crew: int
    contact: int
    mode: VoiceMode
    duration_ms: int
    frames: bytes
    written_minutes: int

    def __post_init__(self) -> None:
        self._validate()
        _check_voice_frames("VoiceReply", self.mode, self.duration_ms, self.frames)

    @property
    def voice_bytes(self) -> int:
        """The bytes of speech, as the vessel's downlink figures count them."""
        return len(self.frames)


def _check_voice_frames(owner: str, mode: VoiceMode, duration_ms: int, frames: bytes) -> None:
    if not 0 < duration_ms <= MAX_VOICE_NOTE_MS:
        raise InvalidEnvelope(
            f"{owner}.duration_ms is {duration_ms}; speech lasts from 1 to {MAX_VOICE_NOTE_MS} ms"
        )
    expected = frames_for(mode, duration_ms) * mode.bytes_per_frame
    if len(frames) != expected:
        raise InvalidEnvelope(
            f"{owner}.frames is {len(frames)} bytes, but {duration_ms} ms in "
            f"Codec2 {mode.label} take {expected}"
        )


ENVELOPE_TYPES: Mapping[Kind, type[Envelope]] = {
    cls.KIND: cls
    for cls in (
        CrewMessage,
        GrievanceReport,
        Sos,
        DeliveryReceipt,
        DeliveryFailure,
        Reply,
        CaseStatusUpdate,
        BatchAck,
        QuotaNotice,
        ContactBookChange,
        DictionaryUpdate,
        LaneBlock,
        VoiceNote,
        VoiceReply,
    )
}


def acknowledges_only(envelopes: Sequence[Envelope]) -> bool:
    """Whether a batch of these envelopes says nothing but "I got your batches".

    The receiving side acknowledges such a batch lazily, with the next batch it has a
    reason to send (acknowledging acknowledgements would never end), so the sender does
    not wait for that answer. Vessel and shore decide this with this one rule.
    """
    return all(isinstance(envelope, BatchAck) for envelope in envelopes)


# --- skeleton maps ---------------------------------------------------------------------


def to_skeleton(envelope: Envelope, batch_minutes: int) -> dict[int, object]:
    """The envelope's CBOR map without its text (the text travels in its language frame)."""
    entry: dict[int, object] = {KIND_KEY: int(envelope.KIND)}
    entry[AGE_KEY] = batch_minutes - envelope.written_minutes
    for spec in envelope.FIELDS:
        value = getattr(envelope, spec.name)
        if value is None:
            continue
        entry[spec.key] = _to_wire(spec, value, envelope)
    return entry


def _to_wire(spec: _Field, value: object, envelope: Envelope) -> object:
    wire = spec.wire
    if wire is _T.TEXT:
        return int(getattr(envelope, "lang"))  # noqa: B009 - checked by _validate
    if wire is _T.BOOL:
        return 1 if value else 0
    if wire in (_T.RANGES, _T.PAIRS, _T.POSITION):
        assert isinstance(value, tuple)
        if wire is _T.POSITION:
            return list(value)
        return [list(pair) for pair in value]
    if isinstance(value, IntEnum):
        return int(value)
    return value


def text_language(entry: Mapping[int, object]) -> Language | None:
    """The language frame that holds this skeleton entry's text, if it has text."""
    value = entry.get(TEXT_KEY)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedBatch(f"envelope text key holds {value!r}, not a language id")
    try:
        return Language(value)
    except ValueError:
        raise MalformedBatch(f"envelope names language {value}, which is not known") from None


def from_skeleton(entry: object, batch_minutes: int, text: str | None) -> Envelope:
    """Build an envelope from a decoded skeleton map and its text (from the frame).

    Raises :class:`MalformedBatch` for anything that does not fit the envelope's schema.
    """
    if not isinstance(entry, dict):
        raise MalformedBatch(f"envelope is a {type(entry).__name__}, not a map")
    kind_value = entry.get(KIND_KEY)
    if isinstance(kind_value, bool) or not isinstance(kind_value, int):
        raise MalformedBatch(f"envelope kind {kind_value!r} is not a number")
    try:
        cls = ENVELOPE_TYPES[Kind(kind_value)]
    except ValueError:
        raise MalformedBatch(f"envelope kind {kind_value} is not known to this version") from None
    known = {KIND_KEY, AGE_KEY} | {spec.key for spec in cls.FIELDS}
    unknown = set(entry) - known
    if unknown:
        raise MalformedBatch(f"{cls.__name__} has unknown keys {sorted(map(repr, unknown))}")
    age = entry.get(AGE_KEY, 0)
    if isinstance(age, bool) or not isinstance(age, int) or abs(age) >= MAX_UINT:
        raise MalformedBatch(f"{cls.__name__} has a bad relative time {age!r}")
    kwargs: dict[str, object] = {"written_minutes": batch_minutes - age}
    for spec in cls.FIELDS:
        if spec.key not in entry:
            continue
        raw = entry[spec.key]
        if spec.wire is _T.TEXT:
            kwargs["lang"] = text_language(entry)
            kwargs[spec.name] = text
        else:
            kwargs[spec.name] = _from_wire(cls.__name__, spec, raw)
    try:
        return cls(**kwargs)
    except InvalidEnvelope as exc:
        raise MalformedBatch(f"bad {cls.__name__}: {exc.message}") from exc
    except TypeError as exc:
        raise MalformedBatch(f"{cls.__name__} is missing a required field ({exc})") from exc


def _from_wire(owner: str, spec: _Field, raw: object) -> object:
    where = f"{owner}.{spec.name}"
    wire = spec.wire
    if wire is _T.UINT and spec.enum is not None:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise MalformedBatch(f"{where} is {raw!r}, not a code")
        try:
            return spec.enum(raw)
        except ValueError:
            raise MalformedBatch(f"{where} code {raw} is not known") from None
    if wire is _T.LANGUAGE:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise MalformedBatch(f"{where} is {raw!r}, not a language id")
        try:
            return Language(raw)
        except ValueError:
            raise MalformedBatch(f"{where} language {raw} is not known") from None
    if wire is _T.BOOL:
        if raw not in (0, 1) or isinstance(raw, bool):
            raise MalformedBatch(f"{where} is {raw!r}, not 0 or 1")
        return raw == 1
    if wire is _T.POSITION:
        if not isinstance(raw, list):
            raise MalformedBatch(f"{where} is not a list")
        return tuple(raw)
    if wire in (_T.RANGES, _T.PAIRS):
        if not isinstance(raw, list) or not all(isinstance(pair, list) for pair in raw):
            raise MalformedBatch(f"{where} is not a list of pairs")
        return tuple(tuple(pair) for pair in raw)
    return raw
