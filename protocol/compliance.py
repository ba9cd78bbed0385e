"""Compliance: the monthly report's data model, log leaves, signed tree heads and verification.

A compliance report shows an inspector, for one vessel and one month, how much text each
crew member could send and did send, and whether the Thai rule ("1 MB of text a month for
at least a quarter of the crew") was met. It is built from three sources that check one
another:

- **log leaves**: for each uplink batch the shore stored, a leaf in an append-only Merkle
  log (:mod:`protocol.merkle`): vessel, batch number, time window, the real text bytes per
  crew member and month, and the SHA-256 of the batch bytes. Padding, cover traffic and
  retransmissions put nothing in a leaf; grievance reports and SOS are not counted at all;
- a **signed tree head** (size, root, time) signed by the shore, which a union or labour
  office may co-sign as a witness; earlier heads of the month come with consistency proofs;
- the **agent's statement**, signed with the vessel key: its own figures per crew member
  (offered, sent, delivered, failed, quota granted), the link sessions and bytes, the
  batches the shore acknowledged, and (since report version 3) the weeks in which each
  crew member signed in on board, which only the vessel can know; optionally the link use
  per link and each crew member's bytes per link (:class:`CrewLink`: family messages
  only; SOS, reports and lane blocks are attributed to nobody), fields a statement
  carries only when measured, so older statements keep verifying.

Beside the Thai rule's test, a report of version 3 shows **weekly access**
(:class:`WeeklyAccess`, issue 23): for each ISO week of the month (:meth:`Month.weeks`),
whether the system was reachable (the shore stored a batch from the vessel that week), and
per crew member the weeks they could use it (reachable) and did (signed in, sent a message
or received a reply), so that a weekly requirement (Taiwan's: crew can use the link at
least 5 minutes a week) can be shown as well.

:func:`verify_report` checks all of it offline with public keys only and lists every
problem it finds; :func:`disagreements` lists where the agent's and the shore's figures
differ, and a report must list exactly those. No message content, no recipients and no
grievance counts ever enter a report. Months are calendar months in UTC (``YYYYMM``), the
months the vessel's outbox charges quotas in. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from protocol.cbor import dumps, strict_loads
from protocol.errors import LocalProtocolError, MalformedBatch, ProtocolError, Reason
from protocol.evidence import fingerprint
from protocol.merkle import (
    ProofInvalid,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from protocol.months import Month
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from protocol.signing import SigningKey, VerifyKey

__all__ = [
    "LEAF_VERSION",
    "REPORT_VERSION",
    "AgentCrew",
    "AgentStatement",
    "ComplianceReport",
    "Cosignature",
    "CrewBytes",
    "CrewLine",
    "CrewLink",
    "CrewWeeks",
    "Disagreement",
    "EarlierHead",
    "GrievanceLane",
    "HeadAltered",
    "LinkFigures",
    "LogLeaf",
    "ProvenLeaf",
    "ReportInvalid",
    "RuleTest",
    "ShoreCrew",
    "SignedTreeHead",
    "TreeHead",
    "WeeklyAccess",
    "cosign",
    "cosignature_valid",
    "disagreements",
    "log_origin",
    "message_text_bytes",
    "note_cosignatures",
    "note_key_id",
    "parse_checkpoint",
    "rule_test",
    "sign_tree_head",
    "signer_problem",
    "verify_report",
    "weekly_access",
    "witness_message",
]

LEAF_VERSION = 1
#: Reports with weekly access (issue 23); versions 1 (older relays' tree heads) and 2
#: (C2SP checkpoints, no weekly access) still verify.
REPORT_VERSION = 3
#: The report versions this code reads.
READ_VERSIONS = (1, 2, 3)
_HEAD_CONTEXT = b"vessel-relay tree head v1\x00"
_WITNESS_CONTEXT = b"vessel-relay witness cosignature v1\x00"
_REPORT_CONTEXT = b"vessel-relay compliance report v1\x00"
_STATEMENT_CONTEXT = b"vessel-relay agent statement v1\x00"


class ReportInvalid(LocalProtocolError):
    """A report file that cannot be read as a compliance report (the message says where)."""

    reason = Reason.MALFORMED


#: What a quick message (a code for a fixed sentence) counts, as the vessel's quota counts it.
QUICK_MESSAGE_TEXT_BYTES = 2


def message_text_bytes(
    body: str | None, quick: int | None, voice: bytes | None = None, subject: str | None = None
) -> int:
    """Real text bytes of a crew message: UTF-8 bytes of its text (and of its subject, a
    mail's Subject line), 2 for a quick message, or the Codec2 bytes of a voice message (a
    voice note counts like text, issue 24)."""
    if voice is not None:
        return len(voice)
    if body is not None:
        return len(body.encode("utf-8")) + len((subject or "").encode("utf-8"))
    return QUICK_MESSAGE_TEXT_BYTES if quick is not None else 0


# --- reading JSON objects --------------------------------------------------------------------


def _field(obj: object, key: str) -> object:
    if not isinstance(obj, dict) or key not in obj:
        raise ReportInvalid(f"the report has no {key!r} where one is expected")
    value: object = obj[key]
    return value


def _int(obj: object, key: str) -> int:
    value = _field(obj, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportInvalid(f"{key!r} must be a whole number, not {value!r}")
    return value


def _opt_int(obj: object, key: str) -> int | None:
    value = _field(obj, key)
    return None if value is None else _int(obj, key)


def _str(obj: object, key: str) -> str:
    value = _field(obj, key)
    if not isinstance(value, str):
        raise ReportInvalid(f"{key!r} must be text, not {value!r}")
    return value


def _hex(obj: object, key: str) -> bytes:
    try:
        return bytes.fromhex(_str(obj, key))
    except ValueError as exc:
        raise ReportInvalid(f"{key!r} must be hexadecimal") from exc


def _list(obj: object, key: str) -> list[object]:
    value = _field(obj, key)
    if not isinstance(value, list):
        raise ReportInvalid(f"{key!r} must be a list")
    return list(value)


def _opt_bool(obj: object, key: str) -> bool | None:
    value = _field(obj, key)
    if value is not None and not isinstance(value, bool):
        raise ReportInvalid(f"{key!r} must be true, false or null")
    return value


def canonical_json(obj: object) -> bytes:
    """The one byte form of a JSON value that signatures cover (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- log leaves ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class CrewBytes:
    """Real text bytes one crew member sent in one batch, for messages written in ``month``."""

    crew: int
    month: int  # YYYYMM, UTC
    text_bytes: int

    def __post_init__(self) -> None:
        if self.crew < 0 or self.text_bytes < 0 or not 100001 <= self.month <= 999912:
            raise ValueError(f"impossible crew byte count {self}")


@dataclass(frozen=True, slots=True)
class LogLeaf:
    """One leaf of the transparency log: a batch the shore verified and stored."""

    vessel_id: int
    batch_seq: int
    #: Time window: the earliest message written in the batch and the batch time (UTC minutes).
    first_minutes: int
    last_minutes: int
    #: When the shore committed the batch (UTC minutes).
    received_minutes: int
    crew_bytes: tuple[CrewBytes, ...]
    batch_sha256: bytes

    def __post_init__(self) -> None:
        if len(self.batch_sha256) != 32:
            raise ValueError("a leaf's batch hash is 32 bytes")
        if list(self.crew_bytes) != sorted(self.crew_bytes):
            raise ValueError("a leaf's crew byte counts are sorted by crew member and month")

    def encode(self) -> bytes:
        """The leaf's canonical bytes (CBOR array), which the log hashes."""
        return dumps(
            [
                LEAF_VERSION,
                self.vessel_id,
                self.batch_seq,
                self.first_minutes,
                self.last_minutes,
                self.received_minutes,
                [[c.crew, c.month, c.text_bytes] for c in self.crew_bytes],
                self.batch_sha256,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> LogLeaf:
        """A leaf from its canonical bytes; :class:`ReportInvalid` for anything else."""
        try:
            value = strict_loads(data, max_depth=4, max_length=100_000, what="log leaf")
        except ProtocolError as exc:
            raise ReportInvalid(f"a log leaf is not readable: {exc.message}") from exc
        try:
            if not isinstance(value, list) or len(value) != 8 or value[0] != LEAF_VERSION:
                raise ValueError("not a version 1 leaf")
            ints = [int(v) for v in value[1:6] if isinstance(v, int)]
            entries = value[6]
            if len(ints) != 5 or not isinstance(entries, list) or not isinstance(value[7], bytes):
                raise ValueError("wrong field types")
            crew = tuple(CrewBytes(int(e[0]), int(e[1]), int(e[2])) for e in entries)
            leaf = cls(ints[0], ints[1], ints[2], ints[3], ints[4], crew, value[7])
        except (ValueError, TypeError, IndexError) as exc:
            raise ReportInvalid(f"a log leaf is malformed: {exc}") from exc
        if leaf.encode() != data:
            raise ReportInvalid("a log leaf is not in canonical form")
        return leaf

    def text_bytes_in(self, month: int) -> dict[int, int]:
        """Text bytes per crew member for messages written in ``month``."""
        counts: dict[int, int] = {}
        for entry in self.crew_bytes:
            if entry.month == month:
                counts[entry.crew] = counts.get(entry.crew, 0) + entry.text_bytes
        return counts


@dataclass(frozen=True, slots=True)
class ProvenLeaf:
    """A leaf with its index in the log and its inclusion proof against the report's head."""

    index: int
    leaf: bytes
    proof: tuple[bytes, ...]

    def to_obj(self) -> dict[str, object]:
        return {
            "index": self.index,
            "leaf": self.leaf.hex(),
            "proof": [p.hex() for p in self.proof],
        }

    @classmethod
    def from_obj(cls, obj: object) -> ProvenLeaf:
        proof = tuple(_hex({"p": p}, "p") for p in _list(obj, "proof"))
        return cls(_int(obj, "index"), _hex(obj, "leaf"), proof)


class HeadAltered(ReportInvalid):
    """A head whose checkpoint text and fields differ: one of them was changed."""


# --- tree heads ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The log's state: ``tree_size`` leaves with root ``root``, as of ``timestamp_minutes``.

    With an ``origin`` it is a C2SP ``tlog-checkpoint``: the signed bytes are the
    checkpoint's note text (origin, size, base64 root, and one extension line ``time``
    with the head's time in POSIX seconds, so the date a report relies on is signed).
    Without one it is a head of an older relay (:data:`_HEAD_CONTEXT`, CBOR), still
    verified as such.
    """

    tree_size: int
    root: bytes
    timestamp_minutes: int
    origin: str | None = None

    def __post_init__(self) -> None:
        if self.origin is not None and not _ORIGIN.fullmatch(self.origin):
            raise ReportInvalid(
                f"log origin {self.origin!r} must be one line without spaces or '+'"
            )

    def signed_bytes(self) -> bytes:
        """What the shore signs: the checkpoint's note text (or an older relay's CBOR)."""
        if self.origin is None:
            return _HEAD_CONTEXT + dumps([self.tree_size, self.root, self.timestamp_minutes])
        root = base64.b64encode(self.root).decode("ascii")
        return (
            f"{self.origin}\n{self.tree_size}\n{root}\n{_TIME_LINE}{self.timestamp_minutes * 60}\n"
        ).encode()

    def digest(self) -> bytes:
        """SHA-256 of the signed bytes: what the report's QR code carries."""
        return hashlib.sha256(self.signed_bytes()).digest()


_ORIGIN = re.compile(r"[^\s+]+")
#: The checkpoint extension line carrying the head's time (POSIX seconds).
_TIME_LINE = "time "
#: Signature types of C2SP signed-note key ids: Ed25519, and tlog-cosignature's Ed25519.
NOTE_ED25519 = 0x01
NOTE_COSIGNATURE_V1 = 0x04


def note_key_id(name: str, public_key: bytes, signature_type: int) -> bytes:
    """The 4-byte key id of a C2SP signed-note signer: SHA-256(name \\n type key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()[:4]


def log_origin(shore_public_key: bytes) -> str:
    """The checkpoint origin of the log a shore key signs (one log per key)."""
    return f"vessel-relay.log/{hashlib.sha256(shore_public_key).hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A witness's signature over a tree head (a union or labour office).

    With ``timestamp_s`` it is a C2SP ``tlog-cosignature`` (cosignature/v1, Ed25519) over
    the checkpoint; without, an older relay's witness signature (:data:`_WITNESS_CONTEXT`).
    """

    witness: str
    public_key: bytes
    signature: bytes
    timestamp_s: int | None = None

    def to_obj(self) -> dict[str, object]:
        return {
            "witness": self.witness,
            "public_key": self.public_key.hex(),
            "signature": self.signature.hex(),
            **({} if self.timestamp_s is None else {"timestamp": self.timestamp_s}),
        }

    @classmethod
    def from_obj(cls, obj: object) -> Cosignature:
        stamped = isinstance(obj, dict) and "timestamp" in obj
        return cls(
            _str(obj, "witness"),
            _hex(obj, "public_key"),
            _hex(obj, "signature"),
            _int(obj, "timestamp") if stamped else None,
        )

    def note_line(self) -> str:
        """The co-signature as a signed-note signature line (tlog-cosignature format)."""
        if self.timestamp_s is None:
            raise ValueError("an older relay's witness signature has no note form")
        key_id = note_key_id(self.witness, self.public_key, NOTE_COSIGNATURE_V1)
        blob = key_id + self.timestamp_s.to_bytes(8, "big") + self.signature
        return f"\u2014 {self.witness} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A tree head with the shore's signature and any witnesses' co-signatures."""

    head: TreeHead
    shore_signature: bytes
    witnesses: tuple[Cosignature, ...] = ()
    #: The shore key's signed-note key id (checkpoints only).
    key_id: bytes = b""

    def note(self) -> str:
        """The head as a C2SP signed note: the checkpoint, the shore's signature line and
        each witness's tlog-cosignature line (older witness signatures are left out)."""
        if self.head.origin is None:
            raise ValueError("a head of an older relay is not a checkpoint")
        blob = base64.b64encode(self.key_id + self.shore_signature).decode("ascii")
        lines = [f"\u2014 {self.head.origin} {blob}\n"]
        lines += [w.note_line() for w in self.witnesses if w.timestamp_s is not None]
        return self.head.signed_bytes().decode() + "\n" + "".join(lines)

    def to_obj(self) -> dict[str, object]:
        obj: dict[str, object] = {
            "tree_size": self.head.tree_size,
            "root": self.head.root.hex(),
            "timestamp_minutes": self.head.timestamp_minutes,
            "digest": self.head.digest().hex(),
            "shore_signature": self.shore_signature.hex(),
            "witnesses": [w.to_obj() for w in self.witnesses],
        }
        if self.head.origin is not None:
            obj["origin"] = self.head.origin
            obj["key_id"] = self.key_id.hex()
            obj["checkpoint"] = self.note()
        return obj

    @classmethod
    def from_obj(cls, obj: object) -> SignedTreeHead:
        origin = _str(obj, "origin") if isinstance(obj, dict) and "origin" in obj else None
        head = TreeHead(
            _int(obj, "tree_size"), _hex(obj, "root"), _int(obj, "timestamp_minutes"), origin
        )
        witnesses = tuple(Cosignature.from_obj(w) for w in _list(obj, "witnesses"))
        key_id = _hex(obj, "key_id") if origin is not None else b""
        signed = cls(head, _hex(obj, "shore_signature"), witnesses, key_id)
        if origin is not None and _str(obj, "checkpoint") != signed.note():
            raise HeadAltered(
                f"the head of size {head.tree_size} does not match "
                "its checkpoint text (it was altered)"
            )
        return signed


def sign_tree_head(head: TreeHead, shore_key: SigningKey) -> SignedTreeHead:
    """The head signed with the shore key (no witnesses yet)."""
    key_id = (
        b""
        if head.origin is None
        else note_key_id(head.origin, shore_key.verify_key.key, NOTE_ED25519)
    )
    return SignedTreeHead(head, shore_key.sign(head.signed_bytes()), (), key_id)


def witness_message(head: TreeHead, timestamp_s: int | None = None) -> bytes:
    """What a witness signs: tlog-cosignature/v1 over a checkpoint (``cosignature/v1``, the
    time, the note text), or, for an older relay's head, its witness context."""
    if head.origin is None:
        return _WITNESS_CONTEXT + head.signed_bytes()
    if timestamp_s is None or not 0 <= timestamp_s < 2**63:
        raise ValueError("a checkpoint's co-signature needs its POSIX time")
    return b"cosignature/v1\ntime %d\n" % timestamp_s + head.signed_bytes()


def cosign(
    head: SignedTreeHead, witness: str, witness_key: SigningKey, *, now_s: int | None = None
) -> Cosignature:
    """A witness's co-signature of ``head`` at ``now_s`` (default: the head's own time)."""
    if head.head.origin is None:
        signature = witness_key.sign(witness_message(head.head))
        return Cosignature(witness, witness_key.verify_key.key, signature)
    if not _ORIGIN.fullmatch(witness):
        raise ReportInvalid(f"witness name {witness!r} must be one word (no spaces or '+')")
    stamp = head.head.timestamp_minutes * 60 if now_s is None else now_s
    signature = witness_key.sign(witness_message(head.head, stamp))
    return Cosignature(witness, witness_key.verify_key.key, signature, stamp)


def parse_checkpoint(body: bytes) -> TreeHead:
    """A checkpoint's note text (as :meth:`TreeHead.signed_bytes` writes it) as a head;
    :class:`ReportInvalid` names what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportInvalid("a checkpoint is UTF-8 text") from exc
    lines = text.split("\n")
    if len(lines) != 5 or lines[4] != "" or not lines[3].startswith(_TIME_LINE):
        raise ReportInvalid(
            "a vessel-relay checkpoint is four lines: origin, size, root, 'time SECONDS'"
        )
    origin, size, root, stamp = lines[0], lines[1], lines[2], lines[3][len(_TIME_LINE) :]
    if not (size.isdigit() and stamp.isdigit()) or (size != "0" and size.startswith("0")):
        raise ReportInvalid("the checkpoint's size and time must be decimal numbers")
    try:
        root_hash = base64.b64decode(root, validate=True)
    except ValueError as exc:
        raise ReportInvalid("the checkpoint's root is not base64") from exc
    if len(root_hash) != 32 or int(stamp) % 60:
        raise ReportInvalid("the checkpoint's root or time is not one vessel-relay signs")
    head = TreeHead(int(size), root_hash, int(stamp) // 60, origin)
    if head.signed_bytes() != body:
        raise ReportInvalid("the checkpoint is not written the way vessel-relay writes it")
    return head


def note_cosignatures(
    note: bytes, witness_keys: Mapping[str, bytes]
) -> tuple[TreeHead, list[Cosignature]]:
    """The checkpoint of a signed note and the tlog-cosignature lines in it of the
    witnesses named in ``witness_keys`` (name -> Ed25519 public key): what witness
    software hands back. Other signature lines are ignored, as signed-note says; the
    co-signatures are not checked here (:func:`cosignature_valid`)."""
    body, separator, signatures = note.partition(b"\n\n")
    if not separator:
        raise ReportInvalid("a signed note has its text, a blank line, then signature lines")
    head = parse_checkpoint(body + b"\n")
    found: list[Cosignature] = []
    for line in signatures.decode("utf-8", errors="replace").splitlines():
        name, _, blob = line.removeprefix("\u2014 ").partition(" ")
        key = witness_keys.get(name)
        if not line.startswith("\u2014 ") or key is None:
            continue
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError as exc:
            raise ReportInvalid(f"the signature line of {name!r} is not base64") from exc
        if len(raw) != 4 + 8 + 64 or raw[:4] != note_key_id(name, key, NOTE_COSIGNATURE_V1):
            continue  # another key or signature type of that name
        found.append(Cosignature(name, key, raw[12:], int.from_bytes(raw[4:12], "big")))
    return head, found


def cosignature_valid(head: TreeHead, cosignature: Cosignature) -> bool:
    """Whether ``cosignature`` is its witness's valid co-signature of ``head``."""
    if (head.origin is None) != (cosignature.timestamp_s is None):
        return False
    try:
        message = witness_message(head, cosignature.timestamp_s)
    except ValueError:
        return False
    return _signature_ok(cosignature.public_key, message, cosignature.signature)


@dataclass(frozen=True, slots=True)
class EarlierHead:
    """An earlier signed head of the month, with the consistency proof to the report's head."""

    head: SignedTreeHead
    proof: tuple[bytes, ...]

    def to_obj(self) -> dict[str, object]:
        return {"head": self.head.to_obj(), "proof": [p.hex() for p in self.proof]}

    @classmethod
    def from_obj(cls, obj: object) -> EarlierHead:
        proof = tuple(_hex({"p": p}, "p") for p in _list(obj, "proof"))
        return cls(SignedTreeHead.from_obj(_field(obj, "head")), proof)


# --- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkFigures:
    """A month of satellite link use as one side counted it.

    ``batch_bytes`` are the uplink batch bytes (on board: each send counted, so
    retransmissions cost; ashore: each stored batch once), the figure both sides can
    compare. ``link_bytes`` are all bytes of the month's link sessions (payloads both ways
    and the session overhead) where the vessel recorded its sessions, else the batch bytes.
    ``billed_bytes`` and the cost apply the vessel's link profile to each session.
    """

    profile: str
    sessions: int | None
    link_bytes: int
    billed_bytes: int | None
    cost_micro_usd: int | None
    batch_bytes: int | None = None
    failed_sessions: int | None = None

    def compared_bytes(self) -> int:
        """The bytes the agent's and the shore's figures are compared on."""
        return self.link_bytes if self.batch_bytes is None else self.batch_bytes

    def to_obj(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "sessions": self.sessions,
            "failed_sessions": self.failed_sessions,
            "link_bytes": self.link_bytes,
            "batch_bytes": self.batch_bytes,
            "billed_bytes": self.billed_bytes,
            "cost_micro_usd": self.cost_micro_usd,
        }

    @classmethod
    def from_obj(cls, obj: object) -> LinkFigures:
        return cls(
            _str(obj, "profile"),
            _opt_int(obj, "sessions"),
            _int(obj, "link_bytes"),
            _opt_int(obj, "billed_bytes"),
            _opt_int(obj, "cost_micro_usd"),
            _opt_int(obj, "batch_bytes"),
            _opt_int(obj, "failed_sessions"),
        )


@dataclass(frozen=True, slots=True)
class AgentCrew:
    """The agent's figures for one crew member (text bytes; quick messages count 2)."""

    crew: int
    name: str
    document: str  # Seabook or work-permit number
    nationality: str
    offered_bytes: int
    sent_bytes: int  # in batches the shore acknowledged (each message once)
    delivered_bytes: int
    failed_bytes: int
    quota_bytes: int

    def to_obj(self) -> dict[str, object]:
        return {
            "crew": self.crew,
            "name": self.name,
            "document": self.document,
            "nationality": self.nationality,
            "offered_bytes": self.offered_bytes,
            "sent_bytes": self.sent_bytes,
            "delivered_bytes": self.delivered_bytes,
            "failed_bytes": self.failed_bytes,
            "quota_bytes": self.quota_bytes,
        }

    @classmethod
    def from_obj(cls, obj: object) -> AgentCrew:
        return cls(
            _int(obj, "crew"),
            _str(obj, "name"),
            _str(obj, "document"),
            _str(obj, "nationality"),
            *(
                _int(obj, key)
                for key in (
                    "offered_bytes",
                    "sent_bytes",
                    "delivered_bytes",
                    "failed_bytes",
                    "quota_bytes",
                )
            ),
        )


@dataclass(frozen=True, slots=True, order=True)
class CrewLink:
    """One crew member's bytes over one link in a month (the agent's count, issue 25).

    ``text_bytes``: text bytes of their family messages the shore acknowledged, under the
    link that carried the acknowledged send. ``wire_bytes``: their share of the batch
    bytes the link carried: each acknowledged batch's bytes (every send counted) split
    among the messages in it in proportion to their payload bytes (text bytes for family
    messages), rounded down. ``billed_bytes``: their share of the link's billed bytes, in
    proportion to ``wire_bytes`` among all batch bytes sent over the link that month,
    rounded down (None: the link's sessions were not recorded). SOS, grievance reports
    and lane blocks are attributed to nobody: their shares stay with the link's totals.
    """

    crew: int
    profile: str
    text_bytes: int
    wire_bytes: int
    billed_bytes: int | None

    def __post_init__(self) -> None:
        if min(self.crew, self.text_bytes, self.wire_bytes, self.billed_bytes or 0) < 0:
            raise ValueError(f"impossible bytes per crew member and link {self}")

    def to_obj(self) -> dict[str, object]:
        return {
            "crew": self.crew,
            "profile": self.profile,
            "text_bytes": self.text_bytes,
            "wire_bytes": self.wire_bytes,
            "billed_bytes": self.billed_bytes,
        }

    @classmethod
    def from_obj(cls, obj: object) -> CrewLink:
        try:
            return cls(
                _int(obj, "crew"),
                _str(obj, "profile"),
                _int(obj, "text_bytes"),
                _int(obj, "wire_bytes"),
                _opt_int(obj, "billed_bytes"),
            )
        except ValueError as exc:
            raise ReportInvalid(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class AgentStatement:
    """The vessel agent's own figures for a month, signed with the vessel key."""

    vessel_id: int
    month: int
    made_minutes: int
    crew: tuple[AgentCrew, ...]
    link: LinkFigures
    days_at_sea: int | None
    #: Whether the grievance lane's daily slot was open every day (None: not measured).
    grievance_lane_daily: bool | None
    #: Batches with crew text of the month that the shore acknowledged: (batch_seq, sha256).
    batches: tuple[tuple[int, bytes], ...]
    signature: bytes = b""
    #: (crew, ISO weeks ``YYYYWW`` of the month in which they signed in on board), for
    #: every crew member of the statement; None: an agent that does not record sign-ins.
    signed_in_weeks: tuple[tuple[int, tuple[int, ...]], ...] | None = None
    #: The month's link use per link (main link, SBD fallback, port link), each under its
    #: own tariff; ``link`` is their total. None: an agent that does not break it down.
    links: tuple[LinkFigures, ...] | None = None
    #: Each crew member's bytes per link (:class:`CrewLink`), by crew then link; family
    #: messages only. None: an agent that does not count them (or a statement for a relay
    #: of the release before them).
    crew_links: tuple[CrewLink, ...] | None = None

    def body_obj(self) -> dict[str, object]:
        return {
            "vessel_id": self.vessel_id,
            "month": self.month,
            "made_minutes": self.made_minutes,
            "crew": [c.to_obj() for c in self.crew],
            "link": self.link.to_obj(),
            "days_at_sea": self.days_at_sea,
            "grievance_lane_daily": self.grievance_lane_daily,
            "batches": [[seq, digest.hex()] for seq, digest in self.batches],
            # only when measured, so statements made before it existed still verify
            **(
                {}
                if self.signed_in_weeks is None
                else {
                    "signed_in_weeks": [[crew, list(weeks)] for crew, weeks in self.signed_in_weeks]
                }
            ),
            # likewise: statements made before the figures per link still verify
            **({} if self.links is None else {"links": [link.to_obj() for link in self.links]}),
            # likewise for the bytes per crew member and link
            **(
                {}
                if self.crew_links is None
                else {"crew_links": [entry.to_obj() for entry in self.crew_links]}
            ),
        }

    def links_of(self, crew: int) -> tuple[CrewLink, ...]:
        """The crew member's bytes per link (none: not counted, or no link carried theirs)."""
        return tuple(entry for entry in self.crew_links or () if entry.crew == crew)

    def signed_in(self) -> dict[int, tuple[int, ...]] | None:
        """crew -> the weeks they signed in on board (None: not measured)."""
        if self.signed_in_weeks is None:
            return None
        return dict(self.signed_in_weeks)

    def signed_bytes(self) -> bytes:
        return _STATEMENT_CONTEXT + canonical_json(self.body_obj())

    def signed(self, vessel_key: SigningKey) -> AgentStatement:
        """This statement signed with the vessel key."""
        return replace(self, signature=vessel_key.sign(self.signed_bytes()))

    def to_obj(self) -> dict[str, object]:
        return {**self.body_obj(), "signature": self.signature.hex()}

    @classmethod
    def from_obj(cls, obj: object) -> AgentStatement:
        batches: list[tuple[int, bytes]] = []
        for entry in _list(obj, "batches"):
            if not isinstance(entry, list) or len(entry) != 2:
                raise ReportInvalid("an acknowledged batch is [batch_seq, sha256]")
            batches.append((_int({"b": entry[0]}, "b"), _hex({"h": entry[1]}, "h")))
        return cls(
            _int(obj, "vessel_id"),
            _int(obj, "month"),
            _int(obj, "made_minutes"),
            tuple(AgentCrew.from_obj(c) for c in _list(obj, "crew")),
            LinkFigures.from_obj(_field(obj, "link")),
            _opt_int(obj, "days_at_sea"),
            _opt_bool(obj, "grievance_lane_daily"),
            tuple(batches),
            _hex(obj, "signature"),
            _signed_in_weeks(obj),
            (
                tuple(LinkFigures.from_obj(link) for link in _list(obj, "links"))
                if isinstance(obj, dict) and "links" in obj
                else None
            ),
            (
                tuple(CrewLink.from_obj(entry) for entry in _list(obj, "crew_links"))
                if isinstance(obj, dict) and "crew_links" in obj
                else None
            ),
        )


def _weeks(obj: object, key: str) -> tuple[int, ...]:
    values = _list(obj, key)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ReportInvalid(f"{key!r} must be a list of weeks written YYYYWW")
    return tuple(int(v) for v in values)  # type: ignore[call-overload]


def _signed_in_weeks(obj: object) -> tuple[tuple[int, tuple[int, ...]], ...] | None:
    if not isinstance(obj, dict) or "signed_in_weeks" not in obj:
        return None
    found: list[tuple[int, tuple[int, ...]]] = []
    for entry in _list(obj, "signed_in_weeks"):
        if not isinstance(entry, list) or len(entry) != 2:
            raise ReportInvalid("a crew member's sign-in weeks are [crew, [YYYYWW, ...]]")
        found.append((_int({"c": entry[0]}, "c"), _weeks({"w": entry[1]}, "w")))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class ShoreCrew:
    """The shore's figures for one crew member: from the log and the delivery records."""

    crew: int
    sent_bytes: int  # received ashore (the leaves' sum for the month)
    delivered_bytes: int
    failed_bytes: int

    def to_obj(self) -> dict[str, object]:
        return {
            "crew": self.crew,
            "sent_bytes": self.sent_bytes,
            "delivered_bytes": self.delivered_bytes,
            "failed_bytes": self.failed_bytes,
        }

    @classmethod
    def from_obj(cls, obj: object) -> ShoreCrew:
        return cls(
            _int(obj, "crew"),
            _int(obj, "sent_bytes"),
            _int(obj, "delivered_bytes"),
            _int(obj, "failed_bytes"),
        )


@dataclass(frozen=True, slots=True)
class GrievanceLane:
    """Whether every crew member's daily slot (:mod:`protocol.slots`) reached the shore.

    Days are UTC days since 1970; ``days`` days from ``first_day`` were checked. A crew
    member is checked from the first of those days on which any slot of theirs arrived
    (a crew member who joined mid-month), or on every day if none arrived. ``missing``
    lists only the crew members with days without a slot, and how many: a slot arrives
    every day whatever it holds, so this says nothing about grievances.
    """

    first_day: int
    days: int
    missing: tuple[tuple[int, int], ...]

    @property
    def open_every_day(self) -> bool:
        return self.days > 0 and not self.missing

    def to_obj(self) -> dict[str, object]:
        return {
            "first_day": self.first_day,
            "days": self.days,
            "missing": [[crew, days] for crew, days in self.missing],
        }

    @classmethod
    def from_obj(cls, obj: object) -> GrievanceLane:
        missing: list[tuple[int, int]] = []
        for entry in _list(obj, "missing"):
            if not isinstance(entry, list) or len(entry) != 2:
                raise ReportInvalid("a crew member's missing slot days are [crew, days]")
            missing.append((_int({"c": entry[0]}, "c"), _int({"d": entry[1]}, "d")))
        return cls(_int(obj, "first_day"), _int(obj, "days"), tuple(missing))


@dataclass(frozen=True, slots=True)
class CrewLine:
    """One crew member's line of the report: the agent's and the shore's figures side by side."""

    crew: int
    agent: AgentCrew | None
    shore: ShoreCrew | None


@dataclass(frozen=True, slots=True, order=True)
class Disagreement:
    """One figure on which the agent and the shore differ (crew -1: the vessel as a whole)."""

    crew: int
    figure: str
    agent: int | None
    shore: int | None

    def __str__(self) -> str:
        who = "the vessel" if self.crew < 0 else f"crew member {self.crew}"
        return f"{who}: {self.figure} is {self.agent} on board but {self.shore} ashore"

    def to_obj(self) -> dict[str, object]:
        return {"crew": self.crew, "figure": self.figure, "agent": self.agent, "shore": self.shore}

    @classmethod
    def from_obj(cls, obj: object) -> Disagreement:
        return cls(
            _int(obj, "crew"), _str(obj, "figure"), _opt_int(obj, "agent"), _opt_int(obj, "shore")
        )


@dataclass(frozen=True, slots=True)
class RuleTest:
    """The rule's test: at least the rule's bytes granted to at least a quarter of the crew."""

    crew_count: int
    crew_needed: int
    crew_granted: int  # crew members granted at least the rule's monthly bytes
    crew_used: int  # crew members who sent any text this month
    granted_bytes: int  # capacity granted, all crew members together
    used_bytes: int  # text bytes sent (shore count), all crew members together
    rule_bytes: int
    met: bool

    def to_obj(self) -> dict[str, object]:
        return {
            "crew_count": self.crew_count,
            "crew_needed": self.crew_needed,
            "crew_granted": self.crew_granted,
            "crew_used": self.crew_used,
            "granted_bytes": self.granted_bytes,
            "used_bytes": self.used_bytes,
            "rule_bytes": self.rule_bytes,
            "met": self.met,
        }

    @classmethod
    def from_obj(cls, obj: object) -> RuleTest:
        met = _opt_bool(obj, "met")
        if met is None:
            raise ReportInvalid("the rule's result must be true or false")
        return cls(
            crew_count=_int(obj, "crew_count"),
            crew_needed=_int(obj, "crew_needed"),
            crew_granted=_int(obj, "crew_granted"),
            crew_used=_int(obj, "crew_used"),
            granted_bytes=_int(obj, "granted_bytes"),
            used_bytes=_int(obj, "used_bytes"),
            rule_bytes=_int(obj, "rule_bytes"),
            met=met,
        )


def rule_test(
    quota_bytes: Mapping[int, int],
    sent_bytes: Mapping[int, int],
    *,
    rule_bytes: int = RULE_MONTHLY_TEXT_BYTES,
) -> RuleTest:
    """The rule's test from the quota granted and the text sent, per crew member.

    The crew is everyone in ``quota_bytes`` (a crew member with no quota row is granted 0).
    """
    crew_count = len(quota_bytes)
    needed = math.ceil(crew_count / 4)
    granted = sum(1 for value in quota_bytes.values() if value >= rule_bytes)
    used = sum(1 for crew in quota_bytes if sent_bytes.get(crew, 0) > 0)
    return RuleTest(
        crew_count=crew_count,
        crew_needed=needed,
        crew_granted=granted,
        crew_used=used,
        granted_bytes=sum(quota_bytes.values()),
        used_bytes=sum(sent_bytes.get(crew, 0) for crew in quota_bytes),
        rule_bytes=rule_bytes,
        met=crew_count > 0 and granted >= needed,
    )


def disagreements(
    statement: AgentStatement | None, shore: Sequence[ShoreCrew], shore_link: LinkFigures
) -> tuple[Disagreement, ...]:
    """Every figure on which the agent's statement and the shore's figures differ."""
    if statement is None:
        return ()
    found: list[Disagreement] = []
    agents = {c.crew: c for c in statement.crew}
    shores = {c.crew: c for c in shore}
    for crew in sorted(set(agents) | set(shores)):
        a, s = agents.get(crew), shores.get(crew)
        for figure in ("sent_bytes", "delivered_bytes", "failed_bytes"):
            av = None if a is None else int(getattr(a, figure))
            sv = None if s is None else int(getattr(s, figure))
            if (av or 0) != (sv or 0):
                found.append(Disagreement(crew, figure, av, sv))
    agent_bytes, shore_bytes = statement.link.compared_bytes(), shore_link.compared_bytes()
    if agent_bytes < shore_bytes:  # the shore cannot have received more than the vessel sent
        found.append(Disagreement(-1, "batch_bytes", agent_bytes, shore_bytes))
    return tuple(sorted(found))


# --- weekly access ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrewWeeks:
    """One crew member's weeks: could use the system (it was reachable), did use it (signed
    in, sent, or received), and each way of using it on its own (ISO weeks ``YYYYWW``).
    ``signed_in`` is None when the agent's statement did not say (no statement, or an
    agent that does not record sign-ins)."""

    crew: int
    could: tuple[int, ...]
    did: tuple[int, ...]
    signed_in: tuple[int, ...] | None
    sent: tuple[int, ...]
    received: tuple[int, ...]

    def to_obj(self) -> dict[str, object]:
        return {
            "crew": self.crew,
            "could": list(self.could),
            "did": list(self.did),
            "signed_in": None if self.signed_in is None else list(self.signed_in),
            "sent": list(self.sent),
            "received": list(self.received),
        }

    @classmethod
    def from_obj(cls, obj: object) -> CrewWeeks:
        signed_in = _field(obj, "signed_in")
        return cls(
            _int(obj, "crew"),
            _weeks(obj, "could"),
            _weeks(obj, "did"),
            None if signed_in is None else _weeks(obj, "signed_in"),
            _weeks(obj, "sent"),
            _weeks(obj, "received"),
        )


@dataclass(frozen=True, slots=True)
class WeeklyAccess:
    """Weekly access for the month: its ISO weeks, those in which the system was reachable
    (the shore stored a batch from the vessel), and each crew member's weeks.

    ``reachable_every_week`` is the weekly test's answer for the vessel: the link was up in
    every week of the month (a week partly in the neighbouring month counts by its days in
    this one and the other alike: a batch in any of its days counts)."""

    weeks: tuple[int, ...]
    reachable: tuple[int, ...]
    crew: tuple[CrewWeeks, ...]

    @property
    def reachable_every_week(self) -> bool:
        """Whether the system was reachable in every week of the month."""
        return bool(self.weeks) and set(self.weeks) <= set(self.reachable)

    def used_every_week(self, crew: int) -> bool:
        """Whether ``crew`` used the system in every week of the month."""
        found = {c.crew: c for c in self.crew}.get(crew)
        return found is not None and bool(self.weeks) and set(self.weeks) <= set(found.did)

    def to_obj(self) -> dict[str, object]:
        return {
            "weeks": list(self.weeks),
            "reachable": list(self.reachable),
            "reachable_every_week": self.reachable_every_week,
            "crew": [c.to_obj() for c in self.crew],
        }

    @classmethod
    def from_obj(cls, obj: object) -> WeeklyAccess:
        found = cls(
            _weeks(obj, "weeks"),
            _weeks(obj, "reachable"),
            tuple(CrewWeeks.from_obj(c) for c in _list(obj, "crew")),
        )
        if _opt_bool(obj, "reachable_every_week") != found.reachable_every_week:
            raise ReportInvalid("reachable_every_week does not follow from the weeks listed")
        return found


def weekly_access(
    month: int,
    crew: Sequence[int],
    reachable: Sequence[int],
    sent: Mapping[int, Sequence[int]],
    received: Mapping[int, Sequence[int]],
    signed_in: Mapping[int, Sequence[int]] | None,
) -> WeeklyAccess:
    """Weekly access for ``month`` (``YYYYMM``) from the weeks (``YYYYWW``) in which the
    system was reachable, and per crew member the weeks they sent, received and (when the
    agent recorded it) signed in. ``crew`` are the crew members to list (the statement's,
    or those seen ashore); weeks outside the month are left out.

    A crew member *could* use the system in a week when it was reachable; they *did* when
    they signed in, sent or received in it (signing in on board counts even in a week the
    link was down: the crew page works without it)."""
    weeks = Month.from_key(month).weeks()
    inside = set(weeks)

    def only(values: Sequence[int]) -> tuple[int, ...]:
        return tuple(sorted(set(values) & inside))

    up = only(reachable)
    lines: list[CrewWeeks] = []
    for number in sorted(set(crew)):
        member_sent = only(sent.get(number, ()))
        member_received = only(received.get(number, ()))
        member_in = None if signed_in is None else only(signed_in.get(number, ()))
        did = only([*member_sent, *member_received, *(member_in or ())])
        lines.append(CrewWeeks(number, up, did, member_in, member_sent, member_received))
    return WeeklyAccess(weeks, up, tuple(lines))


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    """One vessel's compliance report for one month, counter-signed by the shore."""

    vessel_id: int
    vessel_name: str
    month: int  # YYYYMM, UTC
    made_minutes: int
    statement: AgentStatement | None
    shore_crew: tuple[ShoreCrew, ...]
    shore_link: LinkFigures
    rule: RuleTest
    disagreements: tuple[Disagreement, ...]
    leaves: tuple[ProvenLeaf, ...]
    head: SignedTreeHead
    earlier_heads: tuple[EarlierHead, ...] = ()
    shore_signature: bytes = b""
    notes: tuple[str, ...] = field(default=())
    #: The shore's check of the daily slots (None: the vessel sends no slots).
    lane: GrievanceLane | None = None
    #: The public key the shore signed with, named inside the signed body so an inspector
    #: is told which key signed (None: a report made before reports named their signer).
    #: Naming it proves nothing by itself: the inspector's own copy of the key decides.
    shore_public_key: bytes | None = None
    #: Weekly access (version 3 on; None: a report made before it existed).
    weekly: WeeklyAccess | None = None

    def crew_lines(self) -> list[CrewLine]:
        """The agent's and the shore's figures per crew member, by crew number."""
        agents = {c.crew: c for c in self.statement.crew} if self.statement else {}
        shores = {c.crew: c for c in self.shore_crew}
        return [
            CrewLine(crew, agents.get(crew), shores.get(crew))
            for crew in sorted(set(agents) | set(shores))
        ]

    @property
    def version(self) -> int:
        """3 for a report with weekly access, 2 for one whose tree head is a C2SP
        checkpoint without it, 1 for an older relay's."""
        if self.head.head.origin is None:
            return 1
        return 2 if self.weekly is None else REPORT_VERSION

    def body_obj(self) -> dict[str, object]:
        return {
            "kind": "vessel-relay compliance report",
            "version": self.version,
            "vessel_id": self.vessel_id,
            "vessel_name": self.vessel_name,
            "month": self.month,
            "made_minutes": self.made_minutes,
            "statement": None if self.statement is None else self.statement.to_obj(),
            "shore_crew": [c.to_obj() for c in self.shore_crew],
            "shore_link": self.shore_link.to_obj(),
            "rule": self.rule.to_obj(),
            "disagreements": [d.to_obj() for d in self.disagreements],
            "leaves": [leaf.to_obj() for leaf in self.leaves],
            "head": self.head.to_obj(),
            "earlier_heads": [h.to_obj() for h in self.earlier_heads],
            "notes": list(self.notes),
            "grievance_lane": None if self.lane is None else self.lane.to_obj(),
            # only when set, so reports made before the field existed still verify
            **(
                {}
                if self.shore_public_key is None
                else {"shore_public_key": self.shore_public_key.hex()}
            ),
            **({} if self.weekly is None else {"weekly_access": self.weekly.to_obj()}),
        }

    def signed_bytes(self) -> bytes:
        return _REPORT_CONTEXT + canonical_json(self.body_obj())

    def signed(self, shore_key: SigningKey) -> ComplianceReport:
        """This report counter-signed with the shore key (which it names as its signer)."""
        named = replace(self, shore_public_key=shore_key.verify_key.key)
        return replace(named, shore_signature=shore_key.sign(named.signed_bytes()))

    def to_json(self) -> bytes:
        """The report as a JSON document (the file ``report verify`` reads)."""
        obj = {**self.body_obj(), "shore_signature": self.shore_signature.hex()}
        return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> ComplianceReport:
        """Read a report; :class:`ReportInvalid` names what is missing or malformed."""
        try:
            obj: object = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ReportInvalid(f"the file is not a JSON compliance report: {exc}") from exc
        if _field(obj, "kind") != "vessel-relay compliance report":
            raise ReportInvalid("the file is not a vessel-relay compliance report")
        version = _int(obj, "version")
        if version > REPORT_VERSION:
            raise ReportInvalid(
                f"the report is of version {version}, made by a newer vessel-relay than this "
                f"one (which reads versions 1 to {REPORT_VERSION}); update vessel-relay to "
                "verify it"
            )
        if version not in READ_VERSIONS:
            raise ReportInvalid(f"the report's version {version} is not one vessel-relay made")
        statement_obj = _field(obj, "statement")
        notes = tuple(str(n) for n in _list(obj, "notes"))
        lane_obj = _field(obj, "grievance_lane")
        named = isinstance(obj, dict) and "shore_public_key" in obj
        signer = _hex(obj, "shore_public_key") if named else None
        if signer is not None and len(signer) != 32:
            raise ReportInvalid(f"shore_public_key must be 32 bytes, not {len(signer)}")
        report = cls(
            vessel_id=_int(obj, "vessel_id"),
            vessel_name=_str(obj, "vessel_name"),
            month=_int(obj, "month"),
            made_minutes=_int(obj, "made_minutes"),
            statement=None if statement_obj is None else AgentStatement.from_obj(statement_obj),
            shore_crew=tuple(ShoreCrew.from_obj(c) for c in _list(obj, "shore_crew")),
            shore_link=LinkFigures.from_obj(_field(obj, "shore_link")),
            rule=RuleTest.from_obj(_field(obj, "rule")),
            disagreements=tuple(Disagreement.from_obj(d) for d in _list(obj, "disagreements")),
            leaves=tuple(ProvenLeaf.from_obj(p) for p in _list(obj, "leaves")),
            head=SignedTreeHead.from_obj(_field(obj, "head")),
            earlier_heads=tuple(EarlierHead.from_obj(h) for h in _list(obj, "earlier_heads")),
            shore_signature=_hex(obj, "shore_signature"),
            notes=notes,
            lane=None if lane_obj is None else GrievanceLane.from_obj(lane_obj),
            shore_public_key=signer,
            weekly=(
                WeeklyAccess.from_obj(obj["weekly_access"])
                if isinstance(obj, dict) and "weekly_access" in obj
                else None
            ),
        )
        if report.version != version:
            needs = {
                1: "an older tree head and no weekly access",
                2: "a checkpoint tree head and no weekly access",
                3: "a checkpoint tree head and weekly access",
            }
            raise ReportInvalid(f"a version {version} report must carry {needs[version]}")
        return report


# --- verification ----------------------------------------------------------------------------


def _signature_ok(key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(key).verify(message, signature, what="report")
    except ProtocolError:
        return False
    return True


def _check_head(
    head: SignedTreeHead, shore_key: bytes, witness_keys: Mapping[str, bytes], what: str
) -> list[str]:
    problems: list[str] = []
    if not _signature_ok(shore_key, head.head.signed_bytes(), head.shore_signature):
        problems.append(f"{what} (size {head.head.tree_size}): the shore's signature is invalid")
    for witness in head.witnesses:
        trusted = witness_keys.get(witness.witness)
        if trusted is not None and trusted != witness.public_key:
            problems.append(f"{what}: witness {witness.witness!r} signed with a key not theirs")
        if not cosignature_valid(head.head, witness):
            problems.append(f"{what}: witness {witness.witness!r}'s co-signature is invalid")
    for name in witness_keys:
        if name not in {w.witness for w in head.witnesses} and what == "the tree head":
            problems.append(f"{what} is not co-signed by witness {name!r}")
    return problems


def signer_problem(report: ComplianceReport, shore_key: bytes) -> str | None:
    """If the report names a signer other than ``shore_key``, that problem in one sentence."""
    named = report.shore_public_key
    if named is None or named == shore_key:
        return None
    return (
        f"the report is signed by the key with fingerprint {fingerprint(named)}, not by the "
        f"shore key you trust (fingerprint {fingerprint(shore_key)})"
    )


def verify_report(
    report: ComplianceReport,
    *,
    shore_key: bytes,
    vessel_key: bytes | None = None,
    witness_keys: Mapping[str, bytes] | None = None,
    known_heads: Sequence[SignedTreeHead] = (),
) -> list[str]:
    """Every problem found in ``report``, each one sentence; an empty list means it verifies.

    ``shore_key`` (and ``vessel_key``, ``witness_keys`` when given) are the public keys the
    inspector trusts. ``known_heads`` are other signed heads the inspector has seen (from a
    witness, or an earlier report): one of the same size with another root is a split view.
    """
    witnesses = dict(witness_keys or {})
    problems: list[str] = []
    mismatch = signer_problem(report, shore_key)
    if mismatch is not None:
        problems.append(mismatch)
    if not _signature_ok(shore_key, report.signed_bytes(), report.shore_signature):
        problems.append("the shore's signature over the report does not match its contents")
    head = report.head.head
    problems += _check_head(report.head, shore_key, witnesses, "the tree head")
    heads = [report.head, *(h.head for h in report.earlier_heads), *known_heads]
    for number, earlier in enumerate(report.earlier_heads, 1):
        what = f"earlier tree head {number}"
        problems += _check_head(earlier.head, shore_key, {}, what)
        e = earlier.head.head
        if e.timestamp_minutes > head.timestamp_minutes:
            problems.append(f"{what} is dated after the report's tree head")
        try:
            verify_consistency(e.tree_size, head.tree_size, e.root, head.root, earlier.proof)
        except ProofInvalid as exc:
            problems.append(f"{what}: {exc.message}")
    by_size: dict[int, bytes] = {}
    for signed in heads:
        other = by_size.setdefault(signed.head.tree_size, signed.head.root)
        if other != signed.head.root:
            problems.append(
                f"two different tree heads for size {signed.head.tree_size}: the log "
                "showed different histories (split view)"
            )
    # the leaves
    month_bytes: dict[int, int] = {}
    seen_batches: dict[int, bytes] = {}
    seen_indexes: set[int] = set()
    last_received = -1
    for proven in report.leaves:
        where = f"leaf {proven.index}"
        try:
            leaf = LogLeaf.decode(proven.leaf)
        except ReportInvalid as exc:
            problems.append(f"{where}: {exc.message}")
            continue
        where = f"leaf {proven.index} (batch {leaf.batch_seq})"
        if proven.index in seen_indexes:
            problems.append(f"{where} appears twice")
        seen_indexes.add(proven.index)
        if leaf.vessel_id != report.vessel_id:
            problems.append(
                f"{where} belongs to vessel {leaf.vessel_id}, not to vessel {report.vessel_id}"
            )
        if leaf.batch_seq in seen_batches:
            problems.append(f"{where}: batch {leaf.batch_seq} has two leaves")
        seen_batches[leaf.batch_seq] = leaf.batch_sha256
        try:
            verify_inclusion(
                leaf_hash(proven.leaf), proven.index, head.tree_size, proven.proof, head.root
            )
        except ProofInvalid as exc:
            problems.append(f"{where}: {exc.message}")
        last_received = max(last_received, leaf.received_minutes)
        counts = leaf.text_bytes_in(report.month)
        if not counts:
            problems.append(f"{where} has no text of month {report.month}")
        for crew, text_bytes in counts.items():
            month_bytes[crew] = month_bytes.get(crew, 0) + text_bytes
    if last_received > head.timestamp_minutes:
        problems.append(
            "the tree head is dated before the leaves it includes were logged (back-dated head)"
        )
    # the shore's figures against the leaves
    shore_sent = {c.crew: c.sent_bytes for c in report.shore_crew}
    for crew in sorted(set(shore_sent) | set(month_bytes)):
        if shore_sent.get(crew, 0) != month_bytes.get(crew, 0):
            problems.append(
                f"crew member {crew}: the shore's figure of {shore_sent.get(crew, 0):,} text "
                f"bytes sent differs from the {month_bytes.get(crew, 0):,} the log's leaves show"
            )
    # the agent's statement
    statement = report.statement
    if statement is not None:
        if statement.vessel_id != report.vessel_id or statement.month != report.month:
            problems.append("the agent's statement is for another vessel or month")
        if vessel_key is not None and not _signature_ok(
            vessel_key, statement.signed_bytes(), statement.signature
        ):
            problems.append("the vessel's signature over the agent's statement is invalid")
        for batch_seq, digest in statement.batches:
            if batch_seq not in seen_batches:
                problems.append(
                    f"batch {batch_seq}, which the vessel says the shore acknowledged, has no "
                    "leaf in the report"
                )
            elif seen_batches[batch_seq] != digest:
                problems.append(f"batch {batch_seq}: the leaf's hash differs from the vessel's")
        problems += _crew_link_problems(statement)
        quota = {c.crew: c.quota_bytes for c in statement.crew}
    else:
        quota = {}
    expected_rule = rule_test(quota, month_bytes, rule_bytes=report.rule.rule_bytes)
    if report.rule.rule_bytes < RULE_MONTHLY_TEXT_BYTES:
        problems.append(f"the rule is stated as {report.rule.rule_bytes:,} bytes, below the law's")
    if expected_rule != report.rule:
        problems.append(
            f"the rule's test says {'met' if report.rule.met else 'not met'} with "
            f"{report.rule.crew_granted} of {report.rule.crew_count} crew members granted, but "
            f"the figures give {expected_rule.crew_granted} of {expected_rule.crew_count} "
            f"({'met' if expected_rule.met else 'not met'})"
        )
    listed = set(report.disagreements)
    actual = set(disagreements(statement, report.shore_crew, report.shore_link))
    problems += [f"a disagreement is not listed: {d}" for d in sorted(actual - listed)]
    problems += [
        f"a listed disagreement is not in the figures: {d}" for d in sorted(listed - actual)
    ]
    if report.weekly is not None:
        problems += _weekly_problems(report.month, report.weekly, statement)
    return problems


def _crew_link_problems(statement: AgentStatement) -> list[str]:
    """Where the statement's bytes per crew member and link contradict its own figures: a
    crew member it does not list, a link twice, or more text over the links than the crew
    member sent (the links may show less: batches sent before links were recorded)."""
    if statement.crew_links is None:
        return []
    problems: list[str] = []
    sent = {c.crew: c.sent_bytes for c in statement.crew}
    seen: set[tuple[int, str]] = set()
    over: dict[int, int] = {}
    for entry in statement.crew_links:
        if entry.crew not in sent:
            problems.append(
                f"the statement counts bytes per link for crew member {entry.crew}, whom it "
                "does not list"
            )
            continue
        if (entry.crew, entry.profile) in seen:
            problems.append(
                f"the statement counts crew member {entry.crew}'s bytes on {entry.profile} twice"
            )
        seen.add((entry.crew, entry.profile))
        over[entry.crew] = over.get(entry.crew, 0) + entry.text_bytes
    for crew, text_bytes in sorted(over.items()):
        if text_bytes > sent[crew]:
            problems.append(
                f"crew member {crew}: {text_bytes:,} text bytes over the links, more than the "
                f"{sent[crew]:,} the statement says were sent"
            )
    return problems


def _weekly_problems(
    month: int, weekly: WeeklyAccess, statement: AgentStatement | None
) -> list[str]:
    """Where the weekly access does not follow from its own weeks and the statement."""
    problems: list[str] = []
    if weekly.weeks != Month.from_key(month).weeks():
        problems.append("the weekly access lists other weeks than the month's")
    signed_in = statement.signed_in() if statement is not None else None
    for line in weekly.crew:
        expected = weekly_access(
            month,
            [line.crew],
            weekly.reachable,
            {line.crew: line.sent},
            {line.crew: line.received},
            None if signed_in is None else {line.crew: signed_in.get(line.crew, ())},
        ).crew[0]
        if expected != line:
            problems.append(
                f"crew member {line.crew}: the weeks they could and did use the system do "
                "not follow from the weeks reachable, sent, received and signed in (the "
                "agent's statement)"
            )
    return problems


def parse_error(exc: ProtocolError) -> str:
    """One line for a report that could not even be read."""
    if isinstance(exc, MalformedBatch | ReportInvalid):
        return exc.message
    return str(exc)
