"""Union inbox: the union's own SQLite record of cases, opened locally, with their evidence.

Reports are fetched sealed and opened here, with the union's private key, into
``union.db`` in the union's directory (0600, WAL, ``synchronous=FULL``, ``secure_delete``).
A report whose receipt code matches an open case is an *addition* to that case. Every
event of a case is an entry of its signed evidence chain (:mod:`protocol.evidence`); the
text the reporter wrote is kept exactly as it arrived (the original, in their language).

Status changes and replies are stored first (entry + sealed note in ``outgoing``), then
posted to the relay; a note that could not be posted is sent by the next ``fetch``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from protocol.cases import (
    STAGE_WORDS,
    CaseNote,
    case_number,
    check_transition,
    indicative_due_minutes,
    parse_case_number,
    seal_case_note,
)
from protocol.codebook import Codebook
from protocol.envelopes import CaseStatus
from protocol.errors import ProtocolError
from protocol.evidence import (
    EntryKind,
    EvidenceEntry,
    EvidenceInvalid,
    entry_from_bytes,
    fingerprint,
    make_entry,
    verify_chain,
)
from protocol.languages import Language
from protocol.sealing import GrievancePlaintext, ReporterSignatureInvalid, open_grievance
from protocol.slots import open_slot, slot_header
from shore.union.client import RelayClient, RelayUnreachable
from shore.union.keys import UnionIdentity

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "vessel-relay case export v1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    vessel INTEGER NOT NULL,
    message_seq INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    accepted_at REAL NOT NULL,
    case_number TEXT,
    problem TEXT,
    PRIMARY KEY (vessel, message_seq)
);
CREATE TABLE IF NOT EXISTS cases (
    case_number TEXT PRIMARY KEY,
    vessel INTEGER NOT NULL,
    message_seq INTEGER NOT NULL,
    receipt_code TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    lang TEXT NOT NULL,
    status INTEGER NOT NULL,
    status_minutes INTEGER NOT NULL,
    reply_key BLOB,
    crew_name TEXT,
    crew_document TEXT,
    opened_minutes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    case_number TEXT NOT NULL REFERENCES cases (case_number),
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (case_number, idx)
);
CREATE TABLE IF NOT EXISTS outgoing (
    note_id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_number TEXT NOT NULL REFERENCES cases (case_number),
    status INTEGER NOT NULL,
    sealed_note BLOB NOT NULL,
    posted_at REAL
);
"""


class InboxError(Exception):
    """A case operation that cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class CaseSummary:
    """One line of ``union list``."""

    case_number: str
    vessel: int
    category: str
    lang: str
    status: CaseStatus
    opened_minutes: int
    status_minutes: int
    additions: int

    @property
    def due_minutes(self) -> int | None:
        """When the case is indicatively moved on from its stage (None: final)."""
        return indicative_due_minutes(self.status, self.status_minutes)


@dataclass(frozen=True, slots=True)
class CaseView:
    """One case in full (``union show``): summary, reporter, and every evidence entry."""

    summary: CaseSummary
    receipt_code: str
    crew_name: str | None
    crew_document: str | None
    can_reply: bool
    entries: tuple[EvidenceEntry, ...]
    #: Mode A: the reporter's phone key (Ed25519) that signed the report; None: mode B.
    reporter_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What ``union fetch`` did."""

    new_cases: int
    additions: int
    unreadable: int
    notes_posted: int


@dataclass(frozen=True, slots=True)
class VerifiedExport:
    """An export that verified: its case, entries and who signed them."""

    case_number: str
    entries: tuple[EvidenceEntry, ...]
    union_id: int
    union_name: str
    signing_fingerprint: str
    head: bytes


class UnionInbox:
    """The union's cases (see the module docstring)."""

    def __init__(
        self,
        identity: UnionIdentity,
        codebook: Codebook,
        *,
        client: RelayClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.codebook = codebook
        self.client = client
        self.clock = clock
        path = identity.database
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            "busy_timeout=10000",
            "secure_delete=ON",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _relay(self) -> RelayClient:
        if self.client is None:
            raise InboxError("no relay client: this command needs the relay (relay_url)")
        return self.client

    # fetching ----------------------------------------------------------------------------

    def fetch(self) -> FetchResult:
        """Fetch sealed reports, open the new ones here, and post notes not yet posted."""
        reports = self._relay().reports()
        new_cases = additions = unreadable = covers = 0
        for report in reports:
            with self._tx() as db:
                known = db.execute(
                    "SELECT 1 FROM reports WHERE vessel = ? AND message_seq = ?",
                    (report.vessel, report.message_seq),
                ).fetchone()
                if known:
                    continue
                problem: str | None = None
                number: str | None = None
                try:
                    inner = report.sealed
                    if slot_header(report.sealed) is not None:
                        opened = open_slot(report.sealed, self.identity.box_private)
                        if opened is None:  # cover: sealed to a key nobody kept
                            covers += 1
                            db.execute(
                                "INSERT INTO reports (vessel, message_seq, sealed, accepted_at, "
                                "case_number, problem) VALUES (?, ?, ?, ?, NULL, 'cover')",
                                (report.vessel, report.message_seq, b"", report.accepted_at),
                            )
                            continue
                        inner = opened.payload
                    plain = open_grievance(inner, self.identity.box_private, self.codebook)
                    self._check_pinned_key(db, report.vessel, plain)
                except ProtocolError as exc:
                    problem = str(exc)
                    unreadable += 1
                    logger.warning(
                        "report %d-%d does not open: %s", report.vessel, report.message_seq, exc
                    )
                else:
                    number, added = self._file(
                        db, report.vessel, report.message_seq, plain, report.sealed
                    )
                    if added:
                        additions += 1
                    else:
                        new_cases += 1
                db.execute(
                    "INSERT INTO reports (vessel, message_seq, sealed, accepted_at, case_number, "
                    "problem) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        report.vessel,
                        report.message_seq,
                        report.sealed,
                        report.accepted_at,
                        number,
                        problem,
                    ),
                )
        posted = self.post_pending()
        logger.info(
            "fetched: %d new cases, %d additions, %d unreadable, %d cover slots, %d notes posted",
            new_cases,
            additions,
            unreadable,
            covers,
            posted,
        )
        return FetchResult(new_cases, additions, unreadable, posted)

    def _check_pinned_key(
        self, db: sqlite3.Connection, vessel: int, plain: GrievancePlaintext
    ) -> None:
        """An addition to a case first signed on the reporter's phone (mode A) must be
        signed by that same phone key; anything else did not come from the reporter's
        phone (a modified agent, another phone) and is refused, not filed."""
        row = db.execute(
            "SELECT case_number FROM cases WHERE receipt_code = ? AND vessel = ?",
            (plain.receipt_code, vessel),
        ).fetchone()
        if row is None:
            return
        pinned = reporter_key(self._chain(db, str(row[0])))
        if pinned is not None and plain.signer_key != pinned:
            signer = "no phone key" if plain.signer_key is None else fingerprint(plain.signer_key)
            raise ReporterSignatureInvalid(
                f"an addition to case {row[0]} is signed by {signer}, not by the reporter's "
                f"phone key {fingerprint(pinned)} pinned when the case was opened: not filed; "
                "ask the reporter (receipt code) before acting on it"
            )

    def _file(
        self,
        db: sqlite3.Connection,
        vessel: int,
        seq: int,
        plain: GrievancePlaintext,
        sealed: bytes,
    ) -> tuple[str, bool]:
        import hashlib

        now_minutes = int(self.clock() // 60)
        fields: dict[str, str | int | bytes] = {
            "vessel": vessel,
            "message_seq": seq,
            "category": plain.category.name.lower(),
            "lang": plain.lang.code,
            "text": plain.text,
            "written_minutes": plain.written_minutes,
            "sealed_sha256": hashlib.sha256(sealed).digest(),
        }
        if plain.signer_key is not None and plain.signature and plain.signed_message:
            # mode A: the reporter's own signature travels in the evidence, checkable offline
            fields["reporter_key"] = plain.signer_key
            fields["reporter_signature"] = plain.signature
            fields["reporter_signed"] = plain.signed_message
        row = db.execute(
            "SELECT case_number FROM cases WHERE receipt_code = ? AND vessel = ?",
            (plain.receipt_code, vessel),
        ).fetchone()
        if row is not None:
            number = str(row[0])
            self._append(db, number, EntryKind.ADDITION, now_minutes, fields)
            if plain.reply_key is not None:
                db.execute(
                    "UPDATE cases SET reply_key = ? WHERE case_number = ?",
                    (plain.reply_key, number),
                )
            return number, True
        number = case_number(vessel, seq)
        db.execute(
            "INSERT INTO cases (case_number, vessel, message_seq, receipt_code, category, lang, "
            "status, status_minutes, reply_key, crew_name, crew_document, opened_minutes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                number,
                vessel,
                seq,
                plain.receipt_code,
                plain.category.name.lower(),
                plain.lang.code,
                int(CaseStatus.RECEIVED),
                now_minutes,
                plain.reply_key,
                plain.crew_name,
                plain.crew_document,
                now_minutes,
            ),
        )
        self._append(db, number, EntryKind.REPORT, now_minutes, fields)
        return number, False

    def _chain(self, db: sqlite3.Connection, number: str) -> list[EvidenceEntry]:
        rows = db.execute(
            "SELECT data FROM entries WHERE case_number = ? ORDER BY idx", (number,)
        ).fetchall()
        return [entry_from_bytes(bytes(row[0])) for row in rows]

    def _append(
        self,
        db: sqlite3.Connection,
        number: str,
        kind: EntryKind,
        minutes: int,
        fields: dict[str, str | int | bytes],
    ) -> EvidenceEntry:
        chain = self._chain(db, number)
        entry = make_entry(
            case=number,
            previous=chain[-1] if chain else None,
            kind=kind,
            author=self.identity.signing_key,
            at_minutes=minutes,
            fields=fields,
        )
        db.execute(
            "INSERT INTO entries (case_number, idx, data) VALUES (?, ?, ?)",
            (number, entry.index, entry.to_bytes()),
        )
        return entry

    # reading -----------------------------------------------------------------------------

    def cases(
        self,
        *,
        vessel: int | None = None,
        category: str | None = None,
        older_than_days: float | None = None,
        newer_than_days: float | None = None,
        status: CaseStatus | None = None,
    ) -> list[CaseSummary]:
        """Cases, newest first, filtered by vessel, category, age (days since opened), stage."""
        now_minutes = self.clock() / 60
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if vessel is not None:
            where.append("vessel = ?")
            args.append(vessel)
        if category is not None:
            where.append("category = ?")
            args.append(category.strip().lower().replace(" ", "_").replace("-", "_"))
        if status is not None:
            where.append("status = ?")
            args.append(int(status))
        if older_than_days is not None:
            where.append("opened_minutes <= ?")
            args.append(now_minutes - older_than_days * 1440)
        if newer_than_days is not None:
            where.append("opened_minutes >= ?")
            args.append(now_minutes - newer_than_days * 1440)
        rows = self._db.execute(
            "SELECT case_number, vessel, category, lang, status, opened_minutes, status_minutes, "
            "(SELECT COUNT(*) FROM reports r WHERE r.case_number = c.case_number) - 1 "
            f"FROM cases c WHERE {' AND '.join(where)} ORDER BY opened_minutes DESC, case_number",
            args,
        ).fetchall()
        return [
            CaseSummary(r[0], r[1], r[2], r[3], CaseStatus(r[4]), r[5], r[6], max(0, r[7]))
            for r in rows
        ]

    def find(self, case_or_receipt: str) -> str:
        """The case number of a case named by its number or its receipt code."""
        text = case_or_receipt.strip()
        digits = text.replace(" ", "").replace("-", "")
        row = self._db.execute(
            "SELECT case_number FROM cases WHERE case_number = ? OR receipt_code = ?",
            (text, digits),
        ).fetchone()
        if row is None:
            raise InboxError(
                f"no case {text!r} here; run `vessel-relay union fetch`, or check the number "
                "(42-17) or the 16-digit receipt code"
            )
        return str(row[0])

    def show(self, case_or_receipt: str) -> CaseView:
        """One case in full, its evidence chain verified."""
        number = self.find(case_or_receipt)
        (summary,) = [c for c in self.cases() if c.case_number == number]
        row = self._db.execute(
            "SELECT receipt_code, crew_name, crew_document, reply_key FROM cases "
            "WHERE case_number = ?",
            (number,),
        ).fetchone()
        chain = self._chain(self._db, number)
        verify_chain(chain, {self.identity.signing_key.verify_key.key: "union"})
        return CaseView(
            summary, row[0], row[1], row[2], row[3] is not None, tuple(chain), reporter_key(chain)
        )

    # answering ---------------------------------------------------------------------------

    def reply(self, case_or_receipt: str, text: str, lang: Language | None = None) -> EvidenceEntry:
        """Write to the reporter (in their language unless told); sealed to their reply key."""
        if not text.strip():
            raise InboxError("the reply is empty; write something for the reporter")
        number = self.find(case_or_receipt)
        with self._tx() as db:
            status, reporter_lang, _ = self._case_state(db, number)
            language = lang or Language.from_code(reporter_lang)
            entry = self._append(
                db,
                number,
                EntryKind.REPLY,
                int(self.clock() // 60),
                {"text": text.strip(), "lang": language.code},
            )
            self._queue_note(
                db,
                number,
                CaseNote(
                    number,
                    status,
                    entry.at_minutes,
                    text.strip(),
                    language,
                    entry_hash=entry.entry_hash,
                ),
            )
        self.post_pending()
        return entry

    def set_status(
        self, case_or_receipt: str, stage: CaseStatus, reason: str | None = None
    ) -> EvidenceEntry:
        """Move a case to ``stage`` (closing needs a reason); the reporter is told."""
        number = self.find(case_or_receipt)
        with self._tx() as db:
            current, _, _ = self._case_state(db, number)
            try:
                check_transition(current, stage, reason)
            except ProtocolError as exc:
                raise InboxError(f"case {number}: {exc}") from exc
            minutes = int(self.clock() // 60)
            fields: dict[str, str | int | bytes] = {"status": STAGE_WORDS[stage]}
            if reason:
                fields["reason"] = reason.strip()
            entry = self._append(db, number, EntryKind.STATUS, minutes, fields)
            db.execute(
                "UPDATE cases SET status = ?, status_minutes = ? WHERE case_number = ?",
                (int(stage), minutes, number),
            )
            self._queue_note(
                db,
                number,
                CaseNote(
                    number,
                    stage,
                    minutes,
                    reason=reason.strip() if reason else None,
                    entry_hash=entry.entry_hash,
                ),
            )
        self.post_pending()
        return entry

    def _case_state(self, db: sqlite3.Connection, number: str) -> tuple[CaseStatus, str, bytes]:
        row = db.execute(
            "SELECT status, lang, reply_key FROM cases WHERE case_number = ?", (number,)
        ).fetchone()
        return CaseStatus(row[0]), str(row[1]), b"" if row[2] is None else bytes(row[2])

    def _queue_note(self, db: sqlite3.Connection, number: str, note: CaseNote) -> None:
        _, _, reply_key = self._case_state(db, number)
        sealed = seal_case_note(note, reply_key) if reply_key else b""
        db.execute(
            "INSERT INTO outgoing (case_number, status, sealed_note) VALUES (?, ?, ?)",
            (number, int(note.status), sealed),
        )

    def post_pending(self) -> int:
        """Post notes not yet posted to the relay, oldest first; returns how many went."""
        if self.client is None:
            return 0
        rows = self._db.execute(
            "SELECT note_id, o.case_number, o.status, sealed_note FROM outgoing o "
            "WHERE posted_at IS NULL ORDER BY note_id"
        ).fetchall()
        posted = 0
        for note_id, number, status, sealed in rows:
            vessel, seq = parse_case_number(number)
            try:
                self.client.post_note(vessel, seq, CaseStatus(status), bytes(sealed))
            except RelayUnreachable as exc:
                logger.warning("note %d for case %s not posted yet: %s", note_id, number, exc)
                break
            self._db.execute(
                "UPDATE outgoing SET posted_at = ? WHERE note_id = ?", (self.clock(), note_id)
            )
            posted += 1
        return posted

    def pending_notes(self) -> int:
        """Notes stored but not yet posted to the relay."""
        row = self._db.execute("SELECT COUNT(*) FROM outgoing WHERE posted_at IS NULL").fetchone()
        return int(row[0])

    # export and verify -------------------------------------------------------------------

    def export(self, case_or_receipt: str, path: Path) -> int:
        """Write a case's evidence (signed entries + the union's public key) to ``path``."""
        view = self.show(case_or_receipt)
        verify = self.identity.signing_key.verify_key.key
        document = {
            "format": EXPORT_FORMAT,
            "case": view.summary.case_number,
            "union": {
                "id": self.identity.union_id,
                "name": self.identity.name,
                "signing_key": verify.hex(),
                "fingerprint": fingerprint(verify),
            },
            "entries": [base64.b64encode(e.to_bytes()).decode("ascii") for e in view.entries],
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return len(view.entries)


def reporter_key(chain: list[EvidenceEntry] | tuple[EvidenceEntry, ...]) -> bytes | None:
    """The phone key that signed a case's first report (mode A), or None (mode B)."""
    for entry in chain:
        if entry.kind is EntryKind.REPORT:
            key = entry.fields.get("reporter_key")
            return key if isinstance(key, bytes) else None
    return None


def verify_export(path: Path, expected_fingerprint: str | None = None) -> VerifiedExport:
    """Check an exported case offline (no network, no private key)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != EXPORT_FORMAT:
            raise InboxError(f"{path} is not a vessel-relay case export")
        union = document["union"]
        key = bytes.fromhex(union["signing_key"])
        entries: Sequence[EvidenceEntry] = [
            entry_from_bytes(base64.b64decode(item)) for item in document["entries"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InboxError(f"{path} cannot be read as a case export ({exc})") from exc
    except EvidenceInvalid as exc:
        raise InboxError(f"{path}: {exc}") from exc
    seen = fingerprint(key)
    if expected_fingerprint is not None and (
        expected_fingerprint.replace(" ", "") != seen.replace(" ", "")
    ):
        raise InboxError(
            f"{path} is signed by key {seen}, not by the fingerprint you were given "
            f"({expected_fingerprint}): it does not come from that union"
        )
    try:
        head = verify_chain(entries, {key: "union"})
    except EvidenceInvalid as exc:
        raise InboxError(f"{path} does not verify: {exc}") from exc
    if entries[0].case != document.get("case"):
        raise InboxError(f"{path} says case {document.get('case')} but holds another case")
    return VerifiedExport(
        entries[0].case, tuple(entries), int(union["id"]), str(union.get("name", "")), seen, head
    )
