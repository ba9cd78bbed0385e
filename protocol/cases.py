"""Cases: grievance case numbers, receipt codes, stages and the notes sent back to reporters.

A grievance report becomes a **case** the moment it is filed on board. The reporter is
shown, once, a **case number** (``<vessel>-<number>``: it is also what the union and the
relay call the case; the number is the report's message number for a report that
travelled on its own, and a random 12-digit **report number** for one carried by the
grievance lane, where it travels inside the seal) and a **receipt code** (16 digits, the
last a Luhn check digit, so it reads like a phone number and a mistyped digit is caught).
The receipt code travels only inside the sealed report: the reporter, or their family
ashore, can quote it to the union to check on the case; a later report carrying the same
receipt code is an *addition* to the case.

Stages move as :data:`TRANSITIONS` says (received -> acknowledged -> in progress ->
referred -> resolved, or closed with a reason from any open stage), and each open stage
has an indicative time (:data:`INDICATIVE_DAYS`) that the crew page and the union inbox
show (UN Guiding Principle 31: predictable).

What goes back to the reporter (a status change, a reply from the union) is a
:class:`CaseNote`, sealed to the reporter's **reply key**: an X25519 key derived from the
case key that the crew member's PIN unlocks at sign-in (:func:`reporter_reply_keys`), so
the vessel's disk holds only ciphertext that opens when the reporter signs in.

Pure: no I/O, no clock; the caller passes times and randomness in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.public

from protocol.cbor import dumps, strict_loads
from protocol.envelopes import CaseStatus
from protocol.errors import InvalidEnvelope, NotAllowedInState, SealedBoxInvalid
from protocol.languages import Language
from protocol.sealing import pad, unpad

#: Stages a case may move to from each stage (one table: everything about stages is here).
TRANSITIONS: Mapping[CaseStatus, frozenset[CaseStatus]] = {
    CaseStatus.RECEIVED: frozenset({CaseStatus.ACKNOWLEDGED, CaseStatus.CLOSED}),
    CaseStatus.ACKNOWLEDGED: frozenset({CaseStatus.IN_PROGRESS, CaseStatus.CLOSED}),
    CaseStatus.IN_PROGRESS: frozenset(
        {CaseStatus.REFERRED, CaseStatus.RESOLVED, CaseStatus.CLOSED}
    ),
    CaseStatus.REFERRED: frozenset(
        {CaseStatus.IN_PROGRESS, CaseStatus.RESOLVED, CaseStatus.CLOSED}
    ),
    CaseStatus.RESOLVED: frozenset(),
    CaseStatus.CLOSED: frozenset(),
}

#: Indicative days a case stays at each open stage before the union moves it on.
INDICATIVE_DAYS: Mapping[CaseStatus, int] = {
    CaseStatus.RECEIVED: 2,
    CaseStatus.ACKNOWLEDGED: 7,
    CaseStatus.IN_PROGRESS: 30,
    CaseStatus.REFERRED: 60,
}

#: Words for stages, as CLI and web pages write them ("in progress", not IN_PROGRESS).
STAGE_WORDS: Mapping[CaseStatus, str] = {
    status: status.name.lower().replace("_", " ") for status in CaseStatus
}

RECEIPT_DIGITS = 16
#: Digits of a lane report number (the first is never 0, so every one has all 12).
REPORT_NUMBER_DIGITS = 12
#: The smallest lane report number (100000000000).
FIRST_REPORT_NUMBER: int = 10 ** (REPORT_NUMBER_DIGITS - 1)
#: How many lane report numbers there are: draw ``secrets.randbelow(REPORT_NUMBER_CHOICES)``.
REPORT_NUMBER_CHOICES: int = 9 * FIRST_REPORT_NUMBER
_CASE_NUMBER = re.compile(r"^([0-9]{1,9})-([0-9]{1,15})$")
_NOTE_MAGIC = b"VRN1"


def parse_stage(text: str) -> CaseStatus:
    """A stage from its word ("in progress", "in_progress", "IN-PROGRESS" all work)."""
    key = re.sub(r"[\s\-]+", "_", text.strip()).upper()
    try:
        return CaseStatus[key]
    except KeyError:
        words = ", ".join(STAGE_WORDS.values())
        raise InvalidEnvelope(f"{text!r} is not a case stage; use one of: {words}") from None


def check_transition(current: CaseStatus, new: CaseStatus, reason: str | None) -> None:
    """Raise :class:`NotAllowedInState` unless a case may move from ``current`` to ``new``."""
    if new not in TRANSITIONS[current]:
        allowed = ", ".join(STAGE_WORDS[s] for s in sorted(TRANSITIONS[current])) or "none"
        raise NotAllowedInState(
            f"a case that is {STAGE_WORDS[current]} cannot become {STAGE_WORDS[new]} "
            f"(allowed next: {allowed})"
        )
    if new is CaseStatus.CLOSED and not (reason and reason.strip()):
        raise NotAllowedInState("closing a case needs a reason the reporter will read")


def indicative_due_minutes(status: CaseStatus, since_minutes: int) -> int | None:
    """When the union indicatively moves a case on from ``status`` (None: final stage)."""
    days = INDICATIVE_DAYS.get(status)
    return None if days is None else since_minutes + days * 24 * 60


# --- case numbers and receipt codes -------------------------------------------------------


def case_number(vessel_id: int, message_seq: int) -> str:
    """The case number shown to the reporter and used by the union: ``<vessel>-<seq>``."""
    return f"{vessel_id}-{message_seq}"


def lane_report_number(drawn: int) -> int:
    """The report number of a lane-carried report, from a number the caller drew uniformly
    below :data:`REPORT_NUMBER_CHOICES`: exactly :data:`REPORT_NUMBER_DIGITS` digits, so
    it never equals the (small) message number of a report that travelled on its own."""
    if (
        isinstance(drawn, bool)
        or not isinstance(drawn, int)
        or not 0 <= drawn < REPORT_NUMBER_CHOICES
    ):
        raise InvalidEnvelope(f"a report number is drawn from 0 to {REPORT_NUMBER_CHOICES - 1}")
    return FIRST_REPORT_NUMBER + drawn


def parse_case_number(text: str) -> tuple[int, int]:
    """(vessel id, message_seq) of a case number such as ``42-17``."""
    match = _CASE_NUMBER.match(text.strip())
    if match is None:
        raise InvalidEnvelope(
            f"{text!r} is not a case number; it looks like 42-17 (vessel, then report number)"
        )
    return int(match.group(1)), int(match.group(2))


def _luhn_digit(digits: str) -> str:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def make_receipt_code(random_digits: str) -> str:
    """A receipt code from 15 random digits the caller drew (a Luhn digit is appended)."""
    if len(random_digits) != RECEIPT_DIGITS - 1 or not random_digits.isdigit():
        raise InvalidEnvelope(f"a receipt code is made from {RECEIPT_DIGITS - 1} random digits")
    return random_digits + _luhn_digit(random_digits)


def is_receipt_code(text: str) -> bool:
    """Whether ``text`` (spaces and dashes ignored) is a well-formed receipt code."""
    digits = re.sub(r"[\s\-]", "", text)
    return (
        len(digits) == RECEIPT_DIGITS
        and digits.isdigit()
        and _luhn_digit(digits[:-1]) == digits[-1]
    )


def format_receipt_code(code: str) -> str:
    """A receipt code in groups of four, as shown to the reporter (1234 5678 9012 3456)."""
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


# --- reporter reply keys and case notes ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReporterKeys:
    """The reporter's X25519 reply key pair, derived from their case key (never stored)."""

    private_key: bytes = field(repr=False)
    public_key: bytes


def reporter_reply_keys(case_key: bytes) -> ReporterKeys:
    """Derive the reply key pair from the case key that the reporter's PIN unlocks."""
    if len(case_key) < 16:
        raise InvalidEnvelope("a case key has at least 16 bytes")
    seed = hashlib.blake2b(case_key, digest_size=32, person=b"vr-reply-x25519").digest()
    private = nacl.public.PrivateKey(seed)
    return ReporterKeys(bytes(private), bytes(private.public_key))


@dataclass(frozen=True, slots=True)
class CaseNote:
    """What the union tells the reporter: the case's stage, and perhaps a reply or reason.

    ``entry_hash`` names the evidence-chain entry this note reports (so the reporter's
    inbox and the union's export can be matched up).
    """

    case: str
    status: CaseStatus
    written_minutes: int
    text: str | None = None
    lang: Language | None = None
    reason: str | None = None
    entry_hash: bytes | None = None

    def __post_init__(self) -> None:
        parse_case_number(self.case)
        if self.text is not None and (not self.text or self.lang is None):
            raise InvalidEnvelope("a case note's text must be non-empty and have a language")
        if self.written_minutes < 0:
            raise InvalidEnvelope("a case note's time is in minutes since 1970, not negative")


def seal_case_note(note: CaseNote, reply_public_key: bytes) -> bytes:
    """Seal a case note to the reporter's reply key, padded to a sealing bucket."""
    fields: dict[int, object] = {
        1: note.case,
        2: int(note.status),
        3: note.written_minutes,
    }
    if note.text is not None and note.lang is not None:
        fields[4] = note.text
        fields[5] = int(note.lang)
    if note.reason is not None:
        fields[6] = note.reason
    if note.entry_hash is not None:
        fields[7] = note.entry_hash
    try:
        box = nacl.public.SealedBox(nacl.public.PublicKey(reply_public_key))
    except (nacl.exceptions.TypeError, nacl.exceptions.ValueError) as exc:
        raise InvalidEnvelope(f"the reporter's reply key is not an X25519 key: {exc}") from exc
    return box.encrypt(pad(_NOTE_MAGIC + dumps(fields)))


def open_case_note(sealed: bytes, reply_private_key: bytes) -> CaseNote:
    """Open a case note with the reporter's reply private key."""
    try:
        box = nacl.public.SealedBox(nacl.public.PrivateKey(reply_private_key))
        padded = box.decrypt(sealed)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError) as exc:
        raise SealedBoxInvalid(
            "case note does not open with this reply key: it was meant for another reporter"
        ) from exc
    content = unpad(padded)
    if not content.startswith(_NOTE_MAGIC):
        raise SealedBoxInvalid("case note has an unknown format")
    raw = strict_loads(content[len(_NOTE_MAGIC) :], max_depth=1, max_length=8, what="case note")
    if not isinstance(raw, dict):
        raise SealedBoxInvalid("case note is not a map")
    try:
        case, status, minutes = raw[1], CaseStatus(raw[2]), raw[3]
        text, lang_id, reason, entry_hash = raw.get(4), raw.get(5), raw.get(6), raw.get(7)
        if not (isinstance(case, str) and isinstance(minutes, int)):
            raise SealedBoxInvalid("case note fields have the wrong types")
        if not (text is None or isinstance(text, str)):
            raise SealedBoxInvalid("case note text is not text")
        if not (reason is None or isinstance(reason, str)):
            raise SealedBoxInvalid("case note reason is not text")
        if not (entry_hash is None or isinstance(entry_hash, bytes)):
            raise SealedBoxInvalid("case note entry hash is not bytes")
        lang = None if lang_id is None else Language(lang_id)
        return CaseNote(case, status, minutes, text, lang, reason, entry_hash)
    except (KeyError, ValueError, InvalidEnvelope) as exc:
        raise SealedBoxInvalid(f"case note fields are malformed ({exc})") from exc
