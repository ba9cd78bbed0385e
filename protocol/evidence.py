"""Evidence: a per-case hash chain, each entry signed by its author, checkable offline.

Every event of a grievance case (the report as received, each addition by the reporter,
each status change, each reply) is an :class:`EvidenceEntry`. An entry names its case,
its index, the hash of the entry before it, its kind, its author's Ed25519 public key,
its time (minutes since 1970) and a small map of string fields; it is encoded as
canonical CBOR, signed by its author, and the entry's hash (SHA-256 over the encoding and
the signature) is what the next entry points at. Removing, reordering or changing an
entry breaks the chain; adding one needs an author's private key.

An inspector verifies an exported case with :func:`verify_chain` (``vessel-relay union
verify FILE``) without any network: it needs only the file and, to know *who* signed, the
union's public key obtained from the union itself (its fingerprint is printed).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from protocol.cbor import dumps, strict_loads
from protocol.errors import (
    InvalidEnvelope,
    ProtocolError,
    Reason,
    RemoteProtocolError,
    SignatureInvalid,
)
from protocol.sealing import open_a1_content, verify_a1_signature
from protocol.signing import SigningKey, VerifyKey

#: Hash of "no previous entry" (the first entry of every case points here).
GENESIS = bytes(32)
_DOMAIN = b"vessel-relay evidence v1\x00"

FieldValue = str | int | bytes


class EntryKind(Enum):
    """What an evidence entry records (the value is what is signed: never rename)."""

    REPORT = "report"  # the report as received and decrypted by the union
    ADDITION = "addition"  # a later report from the same reporter (same receipt code)
    STATUS = "status"  # the union moved the case to a stage
    REPLY = "reply"  # the union wrote to the reporter


class EvidenceInvalid(RemoteProtocolError):
    """An evidence chain that does not verify (tampered, reordered, or signed by a stranger)."""

    reason = Reason.SIGNATURE_INVALID


@dataclass(frozen=True, slots=True)
class EvidenceEntry:
    """One signed link of a case's chain (see the module docstring)."""

    case: str
    index: int
    previous: bytes
    kind: EntryKind
    author: bytes
    at_minutes: int
    fields: Mapping[str, FieldValue]
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if self.index < 0 or self.at_minutes < 0:
            raise InvalidEnvelope("evidence index and time are whole numbers from 0")
        if len(self.previous) != 32 or len(self.author) != 32:
            raise InvalidEnvelope("evidence hashes and author keys are 32 bytes")
        for key, value in self.fields.items():
            if not isinstance(key, str) or not isinstance(value, str | int | bytes):
                raise InvalidEnvelope(f"evidence field {key!r} must be text, a number or bytes")
            if isinstance(value, bool):
                raise InvalidEnvelope(f"evidence field {key!r} must not be true/false")

    def signed_bytes(self) -> bytes:
        """The canonical encoding that the author signs."""
        return _DOMAIN + dumps(
            [
                self.case,
                self.index,
                self.previous,
                self.kind.value,
                self.author,
                self.at_minutes,
                dict(sorted(self.fields.items())),
            ]
        )

    @property
    def entry_hash(self) -> bytes:
        """SHA-256 of the signed encoding and its signature: what the next entry names."""
        return hashlib.sha256(self.signed_bytes() + self.signature).digest()

    def to_bytes(self) -> bytes:
        """The entry with its signature, as stored and exported (CBOR)."""
        return dumps([self.signed_bytes()[len(_DOMAIN) :], self.signature])


def entry_from_bytes(data: bytes) -> EvidenceEntry:
    """Decode an entry written by :meth:`EvidenceEntry.to_bytes` (signature not yet checked)."""
    try:
        return _entry_from_bytes(data)
    except EvidenceInvalid:
        raise
    except ProtocolError as exc:
        raise EvidenceInvalid(f"evidence entry is malformed: {exc}") from exc


def _entry_from_bytes(data: bytes) -> EvidenceEntry:
    outer = strict_loads(data, max_depth=2, max_length=8, what="evidence entry")
    if not (isinstance(outer, list) and len(outer) == 2):
        raise EvidenceInvalid("evidence entry is not [body, signature]")
    body, signature = outer
    if not (isinstance(body, bytes) and isinstance(signature, bytes)):
        raise EvidenceInvalid("evidence entry parts are not bytes")
    raw = strict_loads(body, max_depth=2, max_length=64, what="evidence entry body")
    if not (isinstance(raw, list) and len(raw) == 7 and isinstance(raw[6], dict)):
        raise EvidenceInvalid("evidence entry body is malformed")
    case, index, previous, kind, author, at_minutes, fields = raw
    checked: dict[str, FieldValue] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not isinstance(value, str | int | bytes):
            raise EvidenceInvalid(f"evidence field {key!r} has a bad value")
        checked[key] = value
    if not (
        isinstance(case, str)
        and isinstance(index, int)
        and isinstance(previous, bytes)
        and isinstance(kind, str)
        and isinstance(author, bytes)
        and isinstance(at_minutes, int)
    ):
        raise EvidenceInvalid("evidence entry fields have the wrong types")
    try:
        entry = EvidenceEntry(
            case, index, previous, EntryKind(kind), author, at_minutes, checked, signature
        )
    except (ValueError, InvalidEnvelope) as exc:
        raise EvidenceInvalid(f"evidence entry is malformed ({exc})") from exc
    if entry.signed_bytes()[len(_DOMAIN) :] != body:
        raise EvidenceInvalid(f"evidence entry {index} is not in canonical form")
    return entry


def make_entry(
    *,
    case: str,
    previous: EvidenceEntry | None,
    kind: EntryKind,
    author: SigningKey,
    at_minutes: int,
    fields: Mapping[str, FieldValue],
) -> EvidenceEntry:
    """The next entry of a case's chain, signed by ``author``."""
    if previous is not None and previous.case != case:
        raise InvalidEnvelope(f"entry for case {case} cannot follow one of case {previous.case}")
    unsigned = EvidenceEntry(
        case=case,
        index=0 if previous is None else previous.index + 1,
        previous=GENESIS if previous is None else previous.entry_hash,
        kind=kind,
        author=author.verify_key.key,
        at_minutes=at_minutes,
        fields=dict(fields),
    )
    signature = author.sign(unsigned.signed_bytes())
    return EvidenceEntry(
        unsigned.case,
        unsigned.index,
        unsigned.previous,
        unsigned.kind,
        unsigned.author,
        unsigned.at_minutes,
        unsigned.fields,
        signature,
    )


def verify_chain(entries: Sequence[EvidenceEntry], authors: Mapping[bytes, str]) -> bytes:
    """Check a whole case chain; return the hash of its last entry (its head).

    ``authors`` maps each trusted Ed25519 public key to a name ("union", "reporter"); an
    entry signed by any other key is refused. Raises :class:`EvidenceInvalid` naming the
    first entry that fails.
    """
    if not entries:
        raise EvidenceInvalid("the evidence chain is empty")
    case = entries[0].case
    previous = GENESIS
    for position, entry in enumerate(entries):
        where = f"entry {position} of case {case}"
        if entry.case != case:
            raise EvidenceInvalid(f"{where} belongs to case {entry.case}")
        if entry.index != position:
            raise EvidenceInvalid(f"{where} says it is entry {entry.index}: removed or reordered")
        if entry.previous != previous:
            raise EvidenceInvalid(f"{where} does not follow the entry before it: changed")
        if entry.author not in authors:
            raise EvidenceInvalid(f"{where} is signed by an unknown key {entry.author.hex()[:16]}")
        try:
            VerifyKey(entry.author).verify(
                entry.signed_bytes(), entry.signature, what=f"evidence {where}"
            )
        except SignatureInvalid as exc:
            raise EvidenceInvalid(f"{where}: {exc}") from exc
        _verify_reporter(entry, where)
        previous = entry.entry_hash
    return previous


#: Fields of a report entry that carry the reporter's own signature (intake mode A).
REPORTER_FIELDS = ("reporter_key", "reporter_signature", "reporter_signed")


def _verify_reporter(entry: EvidenceEntry, where: str) -> None:
    """A report signed on the reporter's phone (mode A) carries the phone's key, its
    signature and the signed message; check that signature too, and that the text the
    union recorded is the text the phone signed."""
    present = [name for name in REPORTER_FIELDS if name in entry.fields]
    if not present:
        return
    key, signature, signed = (entry.fields.get(name) for name in REPORTER_FIELDS)
    if not (isinstance(key, bytes) and isinstance(signature, bytes) and isinstance(signed, bytes)):
        raise EvidenceInvalid(f"{where} carries part of a reporter's signature, not all of it")
    try:
        verify_a1_signature(key, signature, signed)
        signed_report = open_a1_content(b"VRA1" + signature + signed)
    except ProtocolError as exc:
        raise EvidenceInvalid(f"{where}: the reporter's signature: {exc}") from exc
    if "text" in entry.fields and entry.fields["text"] != signed_report.text:
        raise EvidenceInvalid(f"{where}: the recorded text is not the text the reporter signed")


def fingerprint(public_key: bytes) -> str:
    """A short, readable fingerprint of a public key (to compare over the phone)."""
    digest = hashlib.sha256(public_key).hexdigest()[:24]
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))
