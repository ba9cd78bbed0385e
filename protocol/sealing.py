"""Sealing: grievance reports compressed, padded and sealed to the union's key.

A report is sealed on board (or on the crew member's phone) to the chosen union's
X25519 public key with a libsodium *sealed box*: only the holder of the union's private
key can open it. The owner, the captain and the shore operator see ciphertext whose size
is one of a few buckets, so its length says little about what was written.

Sealed content, before padding, is ``MAGIC || frame`` where the frame is a
:mod:`protocol.compression` frame of the report's language: its skeleton is a CBOR map
of the report's fields, its one text the report itself.

Intake mode A (sealed on the crew member's phone, :func:`seal_grievance_a1`) has its own
content, ``b"VRA1" || signature (64) || message``: the message is UTF-8 JSON (``"v":
"A1"``, category, text, language code, receipt code, written minutes, anonymity, name and
document unless anonymous, reply key, and the phone's Ed25519 public key ``"signer"``),
and the signature is Ed25519 by that key over ``A1_DOMAIN || message``, the exact bytes
sent (no re-encoding, so the page's JavaScript and Python agree byte for byte).
:func:`open_grievance` recognises both and returns who signed an A1 report.

A spoken report (mode B, :class:`SpokenReport`) carries its Codec2 frames in the same
fields: 9 the mode, 10 the duration in milliseconds, 11 the frames; its text may be
empty (the frame then holds no text). Nothing of it exists unsealed outside memory.

Reports carried by the grievance lane (:mod:`protocol.lane`) already travel in fixed-size
blocks, so mode B there seals them unpadded (:func:`seal_grievance_unpadded`, content
``b"VRGU" || frame``); :func:`open_grievance_any` opens both forms.

A lane-carried report has no message number on the wire, so its **case number** (drawn on
board, :func:`protocol.cases.new_case_number`) travels inside the seal: field 8 of the
mode-B fields, ``"case"`` in an A1 message. Both are optional: reports sealed before
(without one) still open, with ``case_number`` None.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from enum import IntEnum

import nacl.exceptions
import nacl.public
import nacl.signing

from protocol.cbor import dumps, strict_loads
from protocol.codebook import Codebook, Codec
from protocol.compression import Frame, decode_frame, encode_frame
from protocol.errors import InvalidEnvelope, LimitExceeded, SealedBoxInvalid, SignatureInvalid
from protocol.languages import Language
from protocol.limits import MINUTES_RANGE, minutes_in_range
from protocol.voice import MAX_VOICE_NOTE_MS, VoiceMode, frames_for

#: Sizes a sealed report's plaintext is padded to (the ciphertext adds 48 bytes).
PADDING_BUCKETS: tuple[int, ...] = (256, 1024, 4096, 16384, 65536 - 64)
_MAGIC = b"VRG1"
#: Unpadded content (lane-carried mode B): ``VRGU`` then what follows ``VRG1``.
_MAGIC_UNPADDED = b"VRGU"
#: Bytes a sealed box adds: ephemeral public key (32) + MAC (16).
SEAL_OVERHEAD = 48
_SEAL_OVERHEAD = SEAL_OVERHEAD
#: A case number inside a seal: ``<vessel>-<report number>`` (protocol.cases' format).
_CASE_NUMBER = re.compile(r"^[0-9]{1,9}-[0-9]{1,15}$")


class GrievanceCategory(IntEnum):
    """What a report is about: the ILO forced-labour indicators and common complaints."""

    ABUSE_OF_VULNERABILITY = 1
    DECEPTION = 2
    RESTRICTION_OF_MOVEMENT = 3
    ISOLATION = 4
    PHYSICAL_OR_SEXUAL_VIOLENCE = 5
    INTIMIDATION_AND_THREATS = 6
    RETENTION_OF_DOCUMENTS = 7
    WITHHOLDING_OF_WAGES = 8
    DEBT_BONDAGE = 9
    ABUSIVE_CONDITIONS = 10
    EXCESSIVE_OVERTIME = 11
    UNPAID_OR_UNSENT_WAGES = 12
    INJURY_OR_ILLNESS = 13
    CANNOT_CONTACT_FAMILY = 14
    FOOD_AND_WATER = 15
    OTHER = 16


@dataclass(frozen=True, slots=True)
class SpokenReport:
    """A report spoken rather than written: Codec2 frames (:mod:`protocol.voice`), sealed
    with the rest of the report and never kept or sent unsealed."""

    mode: VoiceMode
    duration_ms: int
    frames: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.duration_ms <= MAX_VOICE_NOTE_MS:
            raise InvalidEnvelope(
                f"a spoken report lasts 1 to {MAX_VOICE_NOTE_MS} ms, not {self.duration_ms}"
            )
        expected = frames_for(self.mode, self.duration_ms) * self.mode.bytes_per_frame
        if len(self.frames) != expected:
            raise InvalidEnvelope(
                f"{self.duration_ms} ms of Codec2 {self.mode.label} is {expected} bytes of "
                f"frames, not {len(self.frames)}"
            )


@dataclass(frozen=True, slots=True)
class GrievancePlaintext:
    """What the crew member wrote (or said: ``voice``), and who they are unless they
    chose anonymity."""

    category: GrievanceCategory
    text: str
    lang: Language
    receipt_code: str
    written_minutes: int
    crew_name: str | None = None
    crew_document: str | None = None  # Seabook or work-permit number
    reply_key: bytes | None = field(default=None, repr=False)  # X25519, for sealed replies
    #: Mode A only: the phone's Ed25519 public key, its signature and the signed message.
    signer_key: bytes | None = field(default=None, repr=False)
    signature: bytes | None = field(default=None, repr=False)
    signed_message: bytes | None = field(default=None, repr=False)
    #: The case number drawn on board (lane-carried reports); None in older reports.
    case_number: str | None = None
    #: The reporter agreed at filing that, if the union does not acknowledge the report in
    #: time, the union may pass it (sealed again) to its second organisation. Field 12 of
    #: the sealed fields, written only when True (a report without it reads as before).
    consent_to_escalate: bool = False
    #: A spoken report's speech (mode B only; ``text`` may then be empty). Fields 9-11.
    voice: SpokenReport | None = None

    def __post_init__(self) -> None:
        if self.case_number is not None and not _CASE_NUMBER.match(self.case_number):
            raise InvalidEnvelope(
                f"{self.case_number!r} is not a case number (vessel, a dash, report number)"
            )
        if not self.text and self.voice is None:
            raise InvalidEnvelope("a grievance report needs some text or a recording")
        if "\x00" in self.text:
            raise InvalidEnvelope("grievance text contains NUL; normalise it at intake")
        if not self.receipt_code:
            raise InvalidEnvelope("a grievance report needs its receipt code")
        if not minutes_in_range(self.written_minutes):
            raise InvalidEnvelope(
                f"a grievance report's time is {self.written_minutes!r}, not a time from "
                f"{MINUTES_RANGE}"
            )
        if self.reply_key is not None and len(self.reply_key) != 32:
            raise InvalidEnvelope("a reply key is a 32-byte X25519 public key")


def pad(content: bytes) -> bytes:
    """ISO/IEC 7816-4 padding (0x80 then zeros) up to the smallest bucket that fits."""
    for bucket in PADDING_BUCKETS:
        if len(content) + 1 <= bucket:
            return content + b"\x80" + bytes(bucket - len(content) - 1)
    raise LimitExceeded(
        f"report is {len(content)} bytes compressed, over the largest size "
        f"({PADDING_BUCKETS[-1]}); shorten it or split it"
    )


def unpad(padded: bytes) -> bytes:
    """Undo :func:`pad`; raise :class:`SealedBoxInvalid` for bad padding."""
    end = padded.rstrip(b"\x00")
    if not end or end[-1] != 0x80 or len(padded) not in PADDING_BUCKETS:
        raise SealedBoxInvalid("sealed report has bad padding")
    return end[:-1]


def seal_grievance(
    report: GrievancePlaintext, union_public_key: bytes, codebook: Codebook
) -> bytes:
    """Compress, pad and seal a report to the union's X25519 public key."""
    return _seal_content(pad(_content(report, codebook)), union_public_key)


def seal_grievance_unpadded(
    report: GrievancePlaintext, union_public_key: bytes, codebook: Codebook
) -> bytes:
    """Compress and seal a report without padding, for a carrier that already hides its
    length (the grievance lane, :mod:`protocol.lane`: fixed blocks whatever they hold).
    Open it with :func:`open_grievance_any`. Never send it any other way: its size is
    the compressed report's size."""
    content = _content(report, codebook)
    if len(content) > PADDING_BUCKETS[-1]:
        raise LimitExceeded(
            f"report is {len(content)} bytes compressed, over the largest size "
            f"({PADDING_BUCKETS[-1]}); shorten it or split it"
        )
    return _seal_content(_MAGIC_UNPADDED + content[len(_MAGIC) :], union_public_key)


def _content(report: GrievancePlaintext, codebook: Codebook) -> bytes:
    meta: dict[int, object] = {
        1: int(report.category),
        2: int(report.lang),
        3: report.receipt_code,
        4: report.written_minutes,
    }
    if report.crew_name is not None:
        meta[5] = report.crew_name
    if report.crew_document is not None:
        meta[6] = report.crew_document
    if report.reply_key is not None:
        meta[7] = report.reply_key
    if report.case_number is not None:
        meta[8] = report.case_number
    if report.voice is not None:
        meta[9] = int(report.voice.mode)
        meta[10] = report.voice.duration_ms
        meta[11] = report.voice.frames
    if report.consent_to_escalate:
        meta[12] = 1
    texts = [report.text] if report.text else []
    frame = encode_frame(codebook, report.lang, dumps(meta), texts)
    return _MAGIC + dumps([int(frame.codec), frame.dictionary_id, frame.payload])


def _seal_content(plain: bytes, union_public_key: bytes) -> bytes:
    try:
        box = nacl.public.SealedBox(nacl.public.PublicKey(union_public_key))
    except (nacl.exceptions.TypeError, nacl.exceptions.ValueError) as exc:
        raise InvalidEnvelope(f"the union's public key is not a valid X25519 key: {exc}") from exc
    return box.encrypt(plain)


def open_grievance(
    sealed: bytes, union_private_key: bytes, codebook: Codebook
) -> GrievancePlaintext:
    """Open a sealed report with the union's private key (only the union can)."""
    if len(sealed) - _SEAL_OVERHEAD not in PADDING_BUCKETS:
        raise SealedBoxInvalid(f"sealed report of {len(sealed)} bytes has no valid size")
    return _read_content(unpad(_decrypt(sealed, union_private_key)), codebook)


def open_grievance_any(
    sealed: bytes, union_private_key: bytes, codebook: Codebook
) -> GrievancePlaintext:
    """Open a report that came through the grievance lane: unpadded
    (:func:`seal_grievance_unpadded`) or padded (mode B before the lane, mode A)."""
    if not len(_MAGIC_UNPADDED) < len(sealed) - _SEAL_OVERHEAD <= PADDING_BUCKETS[-1]:
        raise SealedBoxInvalid(f"sealed report of {len(sealed)} bytes has no valid size")
    plain = _decrypt(sealed, union_private_key)
    if plain.startswith(_MAGIC_UNPADDED):
        return _read_content(_MAGIC + plain[len(_MAGIC_UNPADDED) :], codebook)
    if len(plain) not in PADDING_BUCKETS:
        raise SealedBoxInvalid(f"sealed report of {len(sealed)} bytes has no valid size")
    return _read_content(unpad(plain), codebook)


def _decrypt(sealed: bytes, union_private_key: bytes) -> bytes:
    try:
        box = nacl.public.SealedBox(nacl.public.PrivateKey(union_private_key))
        return box.decrypt(sealed)
    except nacl.exceptions.CryptoError as exc:
        raise SealedBoxInvalid(
            "sealed report does not open with this union's key: it was sealed to another "
            "union, or corrupted"
        ) from exc


def _read_content(content: bytes, codebook: Codebook) -> GrievancePlaintext:
    if content.startswith(_MAGIC_A1):
        return open_a1_content(content)
    if not content.startswith(_MAGIC):
        raise SealedBoxInvalid("sealed report has an unknown format")
    raw = strict_loads(content[len(_MAGIC) :], max_depth=1, max_length=3, what="sealed report")
    if not (
        isinstance(raw, list)
        and len(raw) == 3
        and isinstance(raw[0], int)
        and isinstance(raw[1], int)
        and isinstance(raw[2], bytes)
    ):
        raise SealedBoxInvalid("sealed report frame is malformed")
    try:
        frame = Frame(Codec(raw[0]), raw[1], raw[2])
    except ValueError as exc:
        raise SealedBoxInvalid(f"sealed report names unknown codec {raw[0]}") from exc
    skeleton, texts = decode_frame(
        codebook, frame, has_skeleton=True, budget=256 * 1024, max_texts=1, max_chars=65536
    )
    meta = strict_loads(skeleton, max_depth=1, max_length=16, what="sealed report fields")
    if not isinstance(meta, dict) or len(texts) > 1 or (not texts and 11 not in meta):
        raise SealedBoxInvalid("sealed report fields are malformed")
    expected: dict[int, tuple[type, ...]] = {
        1: (int,),
        2: (int,),
        3: (str,),
        4: (int,),
        5: (str,),
        6: (str,),
        7: (bytes,),
        8: (str,),
        9: (int,),
        10: (int,),
        11: (bytes,),
        12: (int,),
    }
    for key, value in meta.items():
        types = expected.get(key)
        if types is None or isinstance(value, bool) or not isinstance(value, types):
            raise SealedBoxInvalid(f"sealed report field {key!r} holds {type(value).__name__}")
    if meta.get(4, -1) < 0:
        raise SealedBoxInvalid("sealed report has no valid time")
    if meta.get(12, 1) != 1:
        raise SealedBoxInvalid("sealed report field 12 (consent to escalate) is not 1")
    spoken = [key for key in (9, 10, 11) if key in meta]
    if spoken and spoken != [9, 10, 11]:
        raise SealedBoxInvalid("sealed report has part of a recording")
    try:
        voice = SpokenReport(VoiceMode(meta[9]), meta[10], meta[11]) if spoken else None
        return GrievancePlaintext(
            category=GrievanceCategory(meta[1]),
            lang=Language(meta[2]),
            receipt_code=meta[3],
            written_minutes=meta[4],
            crew_name=meta.get(5),
            crew_document=meta.get(6),
            reply_key=meta.get(7),
            text=texts[0] if texts else "",
            case_number=meta.get(8),
            consent_to_escalate=meta.get(12) == 1,
            voice=voice,
        )
    except (KeyError, ValueError, TypeError, InvalidEnvelope) as exc:
        raise SealedBoxInvalid(f"sealed report fields are malformed ({exc})") from exc


# --- intake mode A: sealed and signed on the crew member's phone --------------------------

_MAGIC_A1 = b"VRA1"
#: What the phone's signature covers, before the message bytes (domain separation).
A1_DOMAIN = b"vessel-relay grievance A1\x00"
_A1_FIELDS: dict[str, tuple[type, ...]] = {
    "v": (str,),
    "category": (int,),
    "text": (str,),
    "lang": (str,),
    "receipt": (str,),
    "case": (str,),
    "written": (int,),
    "anonymous": (bool,),
    "name": (str,),
    "document": (str,),
    "reply_key": (str,),
    "signer": (str,),
}
_A1_REQUIRED = ("v", "category", "text", "lang", "receipt", "written", "anonymous", "signer")


class ReporterSignatureInvalid(SignatureInvalid):
    """A mode-A report whose signature does not match the phone key it names: it was
    changed after the phone signed it, or made by someone without that phone's key.
    Do not act on it as the reporter's words; ask the reporter through the union."""


def a1_message(report: GrievancePlaintext, signer_key: bytes) -> bytes:
    """The A1 message bytes for ``report`` as the page's script writes them (compact JSON,
    UTF-8, keys in this order; ``"case"``, after ``"receipt"``, only when the report has
    a case number); the bytes are signed as they are, never re-encoded."""
    fields: dict[str, object] = {
        "v": "A1",
        "category": int(report.category),
        "text": report.text,
        "lang": report.lang.code,
        "receipt": report.receipt_code,
    }
    if report.case_number is not None:
        fields["case"] = report.case_number
    fields |= {
        "written": report.written_minutes,
        "anonymous": report.crew_name is None,
    }
    if report.crew_name is not None:
        fields["name"] = report.crew_name
    if report.crew_document is not None:
        fields["document"] = report.crew_document
    if report.reply_key is not None:
        fields["reply_key"] = base64.b64encode(report.reply_key).decode("ascii")
    fields["signer"] = base64.b64encode(signer_key).decode("ascii")
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def seal_grievance_a1(
    report: GrievancePlaintext, signing_seed: bytes, union_public_key: bytes
) -> bytes:
    """Sign and seal a report as the crew member's phone does (mode A), in Python: what
    ``shipboard/web/static/phone-keys.js`` does in the browser, for tests and tools."""
    signer = nacl.signing.SigningKey(signing_seed)
    message = a1_message(report, bytes(signer.verify_key))
    signature = signer.sign(A1_DOMAIN + message).signature
    try:
        box = nacl.public.SealedBox(nacl.public.PublicKey(union_public_key))
    except (nacl.exceptions.TypeError, nacl.exceptions.ValueError) as exc:
        raise InvalidEnvelope(f"the union's public key is not a valid X25519 key: {exc}") from exc
    return box.encrypt(pad(_MAGIC_A1 + signature + message))


def verify_a1_signature(signer_key: bytes, signature: bytes, message: bytes) -> None:
    """Raise :class:`ReporterSignatureInvalid` unless the phone key signed ``message``
    (an inspector checks an exported case's report entry with this, offline)."""
    try:
        nacl.signing.VerifyKey(signer_key).verify(A1_DOMAIN + message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
        raise ReporterSignatureInvalid(
            f"the report's signature does not match the phone key it names "
            f"({signer_key.hex()[:12]}...): it was changed after the phone signed it, or it "
            "was not made on that phone; do not treat it as the reporter's words"
        ) from exc


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise SealedBoxInvalid(f"A1 report names field {key!r} twice")
        result[key] = value
    return result


def _no_constant(name: str) -> object:
    raise SealedBoxInvalid(f"A1 report holds {name}, which is not JSON")


def _b64_key(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SealedBoxInvalid(f"A1 report's {what} is not base64") from exc
    if len(raw) != 32:
        raise SealedBoxInvalid(f"A1 report's {what} is not a 32-byte key")
    return raw


def open_a1_content(content: bytes) -> GrievancePlaintext:
    """Check and read unpadded A1 content (``VRA1 || signature || message``)."""
    if len(content) < len(_MAGIC_A1) + 64 + 2 or not content.startswith(_MAGIC_A1):
        raise SealedBoxInvalid("A1 report is too short")
    signature = content[len(_MAGIC_A1) : len(_MAGIC_A1) + 64]
    message = content[len(_MAGIC_A1) + 64 :]
    try:
        raw = json.loads(
            message.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SealedBoxInvalid(f"A1 report is not UTF-8 JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise SealedBoxInvalid("A1 report is not a JSON object")
    fields: dict[str, object] = raw
    for key, value in fields.items():
        types = _A1_FIELDS.get(key)
        if types is None:
            raise SealedBoxInvalid(f"A1 report has an unknown field {key!r}")
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise SealedBoxInvalid(f"A1 report field {key!r} holds {type(value).__name__}")
    missing = [key for key in _A1_REQUIRED if key not in fields]
    if missing:
        raise SealedBoxInvalid(f"A1 report lacks {', '.join(missing)}")
    if fields["v"] != "A1":
        raise SealedBoxInvalid(f"A1 report says version {fields['v']!r}")
    signer = _b64_key(str(fields["signer"]), "signer key")
    verify_a1_signature(signer, signature, message)
    reply = fields.get("reply_key")
    category = fields["category"]
    written = fields["written"]
    if not isinstance(category, int) or not isinstance(written, int) or written < 0:
        raise SealedBoxInvalid("A1 report has no valid time")
    anonymous = fields["anonymous"] is True
    name = fields.get("name")
    document = fields.get("document")
    case = fields.get("case")
    try:
        return GrievancePlaintext(
            category=GrievanceCategory(category),
            text=str(fields["text"]),
            lang=Language.from_code(str(fields["lang"])),
            receipt_code=str(fields["receipt"]),
            written_minutes=written,
            crew_name=None if anonymous or not isinstance(name, str) else name,
            crew_document=None if anonymous or not isinstance(document, str) else document,
            reply_key=None if reply is None else _b64_key(str(reply), "reply key"),
            signer_key=signer,
            signature=signature,
            signed_message=message,
            case_number=case if isinstance(case, str) else None,
        )
    except (ValueError, InvalidEnvelope) as exc:
        raise SealedBoxInvalid(f"A1 report fields are malformed ({exc})") from exc
