"""Sealing: grievance reports compressed, padded and sealed to the union's key.

A report is sealed on board (or on the crew member's phone) to the chosen union's
X25519 public key with a libsodium *sealed box*: only the holder of the union's private
key can open it. The owner, the captain and the shore operator see ciphertext whose size
is one of a few buckets, so its length says little about what was written.

Sealed content, before padding, is ``MAGIC || frame`` where the frame is a
:mod:`protocol.compression` frame of the report's language: its skeleton is a CBOR map
of the report's fields, its one text the report itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import nacl.exceptions
import nacl.public

from protocol.cbor import dumps, strict_loads
from protocol.codebook import Codebook, Codec
from protocol.compression import Frame, decode_frame, encode_frame
from protocol.errors import InvalidEnvelope, LimitExceeded, SealedBoxInvalid
from protocol.languages import Language

#: Sizes a sealed report's plaintext is padded to (the ciphertext adds 48 bytes).
PADDING_BUCKETS: tuple[int, ...] = (256, 1024, 4096, 16384, 65536 - 64)
_MAGIC = b"VRG1"
_SEAL_OVERHEAD = 48  # ephemeral public key (32) + MAC (16)


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
class GrievancePlaintext:
    """What the crew member wrote, and who they are unless they chose anonymity."""

    category: GrievanceCategory
    text: str
    lang: Language
    receipt_code: str
    written_minutes: int
    crew_name: str | None = None
    crew_document: str | None = None  # Seabook or work-permit number
    reply_key: bytes | None = field(default=None, repr=False)  # X25519, for sealed replies

    def __post_init__(self) -> None:
        if not self.text:
            raise InvalidEnvelope("a grievance report needs some text")
        if "\x00" in self.text:
            raise InvalidEnvelope("grievance text contains NUL; normalise it at intake")
        if not self.receipt_code:
            raise InvalidEnvelope("a grievance report needs its receipt code")
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
    frame = encode_frame(codebook, report.lang, dumps(meta), [report.text])
    content = _MAGIC + dumps([int(frame.codec), frame.dictionary_id, frame.payload])
    try:
        box = nacl.public.SealedBox(nacl.public.PublicKey(union_public_key))
    except (nacl.exceptions.TypeError, nacl.exceptions.ValueError) as exc:
        raise InvalidEnvelope(f"the union's public key is not a valid X25519 key: {exc}") from exc
    return box.encrypt(pad(content))


def open_grievance(
    sealed: bytes, union_private_key: bytes, codebook: Codebook
) -> GrievancePlaintext:
    """Open a sealed report with the union's private key (only the union can)."""
    if len(sealed) - _SEAL_OVERHEAD not in PADDING_BUCKETS:
        raise SealedBoxInvalid(f"sealed report of {len(sealed)} bytes has no valid size")
    try:
        box = nacl.public.SealedBox(nacl.public.PrivateKey(union_private_key))
        padded = box.decrypt(sealed)
    except nacl.exceptions.CryptoError as exc:
        raise SealedBoxInvalid(
            "sealed report does not open with this union's key: it was sealed to another "
            "union, or corrupted"
        ) from exc
    content = unpad(padded)
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
    if not isinstance(meta, dict) or len(texts) != 1:
        raise SealedBoxInvalid("sealed report fields are malformed")
    expected: dict[int, tuple[type, ...]] = {
        1: (int,),
        2: (int,),
        3: (str,),
        4: (int,),
        5: (str,),
        6: (str,),
        7: (bytes,),
    }
    for key, value in meta.items():
        types = expected.get(key)
        if types is None or isinstance(value, bool) or not isinstance(value, types):
            raise SealedBoxInvalid(f"sealed report field {key!r} holds {type(value).__name__}")
    if meta.get(4, -1) < 0:
        raise SealedBoxInvalid("sealed report has no valid time")
    try:
        return GrievancePlaintext(
            category=GrievanceCategory(meta[1]),
            lang=Language(meta[2]),
            receipt_code=meta[3],
            written_minutes=meta[4],
            crew_name=meta.get(5),
            crew_document=meta.get(6),
            reply_key=meta.get(7),
            text=texts[0],
        )
    except (KeyError, ValueError, TypeError, InvalidEnvelope) as exc:
        raise SealedBoxInvalid(f"sealed report fields are malformed ({exc})") from exc
