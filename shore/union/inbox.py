"""Union inbox: the union's own SQLite record of cases, opened locally, with their evidence.

Reports are fetched sealed and opened here, with the union's private key, into
``union.db`` in the union's directory (0600, WAL, ``synchronous=FULL``, ``secure_delete``).
A report whose receipt code matches an open case is an *addition* to that case. Every
event of a case is an entry of its signed evidence chain (:mod:`protocol.evidence`); the
text the reporter wrote is kept exactly as it arrived (the original, in their language).

Status changes and replies are stored first (entry + sealed note in ``outgoing``), then
posted to the relay; a note that could not be posted is sent by the next ``fetch``.

**The grievance lane** (:mod:`protocol.lane`, :mod:`shore.union.lane`). ``fetch`` also reads
every uplink lane block of the union's vessels (``/union/v1/lane``, from where it stopped),
trial-decrypts each with the union's key, keeps the fragments of its reports in
``union.db`` and files each report that completes as a case, numbered from inside its
seal. Such a case's notes go down the vessel's downlink lane: the note is kept as it is
(``outgoing.note_content``), sealed to the reporter's reply key as blocks of the relay's
downlink size when first posted, and those same blocks are posted again after a failure
(the relay queues a block once). Cases that came in whole (``/union/v1/reports``: slots and
older vessels) keep their route.
"""

from __future__ import annotations

import base64
import hashlib
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
from protocol.lane import (
    MAX_NOTE_BYTES,
    FragmentConflict,
    MalformedLaneBlock,
    ReassemblyLimit,
    note_content,
    open_up_block,
)
from protocol.languages import Language
from protocol.sealing import (
    GrievancePlaintext,
    ReporterSignatureInvalid,
    open_grievance,
    open_grievance_any,
)
from protocol.slots import open_slot, slot_header
from shore.union.client import (
    LaneUpBlock,
    RelayClient,
    RelayLaneShape,
    RelayUnreachable,
    RouteMissing,
)
from shore.union.keys import UnionIdentity
from shore.union.lane import (
    LANE_PAGE,
    STALE_AFTER_S,
    LaneAssembly,
    fallback_case_number,
    lane_case_number,
    lane_note_blocks,
)
from shore.union.schema import migrate

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "vessel-relay case export v1"


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
    """What ``union fetch`` did (lane reports counted with the others)."""

    new_cases: int
    additions: int
    unreadable: int
    notes_posted: int
    #: uplink lane blocks read (cover and other unions' included)
    lane_blocks: int = 0
    #: lane reports of which some pieces came and others have not yet
    lane_incomplete: int = 0


@dataclass
class _Tally:
    new_cases: int = 0
    additions: int = 0
    unreadable: int = 0
    blocks: int = 0


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
        migrate(self._db)
        self._lane = LaneAssembly(self._db)
        self._lane_shape: RelayLaneShape | None = None

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
                        db, report.vessel, plain, report.sealed, seq=report.message_seq
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
        lane = self._fetch_lane()
        posted = self.post_pending()
        logger.info(
            "fetched: %d new cases, %d additions, %d unreadable, %d cover slots, %d lane "
            "blocks (%d lane reports incomplete), %d notes posted",
            new_cases + lane.new_cases,
            additions + lane.additions,
            unreadable + lane.unreadable,
            covers,
            lane.blocks,
            self.lane_incomplete(),
            posted,
        )
        return FetchResult(
            new_cases + lane.new_cases,
            additions + lane.additions,
            unreadable + lane.unreadable,
            posted,
            lane.blocks,
            self.lane_incomplete(),
        )

    # the grievance lane ------------------------------------------------------------------

    def _fetch_lane(self) -> _Tally:
        """Read the uplink lane blocks after the cursor, page by page, each page in one
        transaction with the cursor moved past it; file what completes."""
        relay = self._relay()
        tally = _Tally()
        try:
            with self._tx() as db:
                for vessel, report_id, whole in self._lane.recovered:
                    self._lane.forget(db, vessel, report_id)
                    self._file_lane(db, vessel, report_id, whole, self.clock(), tally)
                self._lane.recovered = []
                for vessel, report_id in self._lane.expire(db, self.clock() - STALE_AFTER_S):
                    self._lane_problem(
                        db, vessel, report_id, "incomplete: gave up waiting for its other pieces"
                    )
            while True:
                row = self._db.execute("SELECT after FROM lane_cursor WHERE id = 1").fetchone()
                after = int(row[0])
                try:
                    page = relay.lane_blocks(after, LANE_PAGE)
                except RouteMissing:
                    logger.warning(
                        "the relay has no grievance lane (/union/v1/lane): it is older than "
                        "this app; reports that come whole are fetched, upgrade the relay"
                    )
                    return tally
                with self._tx() as db:
                    for block in page.blocks:
                        self._take_lane_block(db, block, tally)
                    db.execute("UPDATE lane_cursor SET after = ? WHERE id = 1", (page.next,))
                if len(page.blocks) < LANE_PAGE or page.next <= after:
                    return tally
        except BaseException:
            self._lane.reload(self._db)  # a page rolled back: the memory follows the table
            raise

    def _take_lane_block(self, db: sqlite3.Connection, block: LaneUpBlock, tally: _Tally) -> None:
        tally.blocks += 1
        try:
            fragment = open_up_block(block.block, self.identity.box_private)
        except MalformedLaneBlock as exc:
            tally.unreadable += 1
            logger.warning(
                "lane block %d of vessel %d opens with this union's key but is not a lane "
                "block: %s",
                block.block_id,
                block.vessel,
                exc,
            )
            return
        if fragment is None:
            return  # cover, or another union's
        if db.execute(
            "SELECT 1 FROM lane_reports WHERE vessel = ? AND report_id = ?",
            (block.vessel, fragment.item_id),
        ).fetchone():
            return  # a piece of a report filed already (sent again)
        try:
            whole = self._lane.take(db, block.vessel, fragment, block.received_at)
        except (FragmentConflict, ReassemblyLimit) as exc:
            tally.unreadable += 1
            logger.warning(
                "lane block %d of vessel %d not kept: %s", block.block_id, block.vessel, exc
            )
            return
        if whole is not None:
            self._file_lane(db, block.vessel, fragment.item_id, whole, block.received_at, tally)

    def _file_lane(
        self,
        db: sqlite3.Connection,
        vessel: int,
        report_id: bytes,
        sealed: bytes,
        received_at: float,
        tally: _Tally,
    ) -> None:
        """File a complete lane report as a case (or an addition), or record why not."""
        number: str | None = None
        problem: str | None = None
        try:
            plain = open_grievance_any(sealed, self.identity.box_private, self.codebook)
            self._check_pinned_key(db, vessel, plain)
        except ProtocolError as exc:
            problem = str(exc)
            tally.unreadable += 1
            logger.warning(
                "lane report %s of vessel %d does not open: %s", report_id.hex(), vessel, exc
            )
        else:
            wanted = lane_case_number(vessel, report_id, plain)
            db.execute("SAVEPOINT lane_file")
            try:
                number, added = self._file(
                    db, vessel, plain, sealed, number=wanted, lane_report_id=report_id
                )
            except sqlite3.IntegrityError as exc:
                # e.g. a receipt code that another vessel's case holds: the report is kept
                # (sealed) with the reason, and the lane goes on
                db.execute("ROLLBACK TO lane_file")
                number, problem = None, f"not filed: {exc}"
                tally.unreadable += 1
                logger.warning(
                    "lane report %s of vessel %d cannot be filed: %s", report_id.hex(), vessel, exc
                )
            else:
                tally.additions += added
                tally.new_cases += not added
            finally:
                db.execute("RELEASE lane_file")
        db.execute(
            "INSERT INTO lane_reports (vessel, report_id, sealed, received_at, case_number, "
            "problem) VALUES (?, ?, ?, ?, ?, ?)",
            (vessel, report_id, sealed, received_at, number, problem),
        )

    def _lane_problem(
        self, db: sqlite3.Connection, vessel: int, report_id: bytes, problem: str
    ) -> None:
        logger.warning("lane report %s of vessel %d: %s", report_id.hex(), vessel, problem)
        db.execute(
            "INSERT OR IGNORE INTO lane_reports (vessel, report_id, sealed, received_at, "
            "case_number, problem) VALUES (?, ?, ?, ?, NULL, ?)",
            (vessel, report_id, b"", self.clock(), problem),
        )

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
        plain: GrievancePlaintext,
        sealed: bytes,
        *,
        seq: int | None = None,
        number: str | None = None,
        lane_report_id: bytes | None = None,
    ) -> tuple[str, bool]:
        """File a report as a new case or an addition (same receipt code, same vessel);
        returns (case number, whether an addition). A report that came whole has the
        relay's ``seq``; a lane report has its ``number`` (from its seal) and its
        ``lane_report_id``, and its case's notes go down the lane."""
        carrier = "case" if lane_report_id is None else "lane"
        row = db.execute(
            "SELECT case_number FROM cases WHERE receipt_code = ? AND vessel = ?",
            (plain.receipt_code, vessel),
        ).fetchone()
        taken = (
            number is not None
            and row is None
            and db.execute("SELECT 1 FROM cases WHERE case_number = ?", (number,)).fetchone()
        )
        if taken and lane_report_id is not None:
            logger.warning(
                "lane report %s of vessel %d names case %s, which is another case: filed "
                "under its report id",
                lane_report_id.hex(),
                vessel,
                number,
            )
            number = fallback_case_number(vessel, lane_report_id)
        if number is not None:
            seq = parse_case_number(number)[1]
        assert seq is not None
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
        if plain.voice is not None:
            # a spoken report: its Codec2 speech is the evidence, as the vessel sealed it
            fields["voice_mode"] = int(plain.voice.mode)
            fields["voice_ms"] = plain.voice.duration_ms
            fields["voice"] = plain.voice.frames
        if lane_report_id is not None:
            fields["carrier"] = "lane"
            fields["lane_report_id"] = lane_report_id
        if plain.signer_key is not None and plain.signature and plain.signed_message:
            # mode A: the reporter's own signature travels in the evidence, checkable offline
            fields["reporter_key"] = plain.signer_key
            fields["reporter_signature"] = plain.signature
            fields["reporter_signed"] = plain.signed_message
        if row is not None:
            number = str(row[0])
            self._append(db, number, EntryKind.ADDITION, now_minutes, fields)
            if plain.reply_key is not None:
                db.execute(
                    "UPDATE cases SET reply_key = ? WHERE case_number = ?",
                    (plain.reply_key, number),
                )
            if carrier == "lane":  # the vessel is on the lane now: so are the notes
                db.execute("UPDATE cases SET carrier = 'lane' WHERE case_number = ?", (number,))
            return number, True
        number = number or case_number(vessel, seq)
        db.execute(
            "INSERT INTO cases (case_number, vessel, message_seq, receipt_code, category, lang, "
            "status, status_minutes, reply_key, crew_name, crew_document, opened_minutes, "
            "carrier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                carrier,
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
            "(SELECT COUNT(*) FROM reports r WHERE r.case_number = c.case_number) "
            "+ (SELECT COUNT(*) FROM lane_reports l WHERE l.case_number = c.case_number) - 1 "
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
        (carrier,) = db.execute(
            "SELECT carrier FROM cases WHERE case_number = ?", (number,)
        ).fetchone()
        if carrier == "lane":
            if not reply_key:
                logger.warning(
                    "case %s: its report carries no reply key; the reporter cannot be told "
                    "on board (recorded in the evidence only)",
                    number,
                )
                return
            content = note_content(note)
            if len(content) > MAX_NOTE_BYTES:
                raise InboxError(
                    f"this note is {len(content):,} bytes once encoded; the grievance lane "
                    f"carries notes of at most {MAX_NOTE_BYTES:,}: shorten the reply or send "
                    "it in parts"
                )
            db.execute(
                "INSERT INTO outgoing (case_number, status, sealed_note, carrier, note_content) "
                "VALUES (?, ?, ?, 'lane', ?)",
                (number, int(note.status), b"", content),
            )
            return
        sealed = seal_case_note(note, reply_key) if reply_key else b""
        db.execute(
            "INSERT INTO outgoing (case_number, status, sealed_note) VALUES (?, ?, ?)",
            (number, int(note.status), sealed),
        )

    def post_pending(self) -> int:
        """Post notes not yet posted to the relay, oldest first; returns how many went.

        A lane note is sealed into downlink blocks the first time it is posted (the relay's
        block size), and those blocks are kept: a retry posts the same blocks, which the
        relay queues once."""
        if self.client is None:
            return 0
        rows = self._db.execute(
            "SELECT note_id, o.case_number, o.status, o.sealed_note, o.carrier, c.vessel "
            "FROM outgoing o JOIN cases c ON c.case_number = o.case_number "
            "WHERE posted_at IS NULL ORDER BY note_id"
        ).fetchall()
        posted = 0
        for note_id, number, status, sealed, carrier, vessel in rows:
            try:
                if carrier == "lane":
                    self.client.post_lane_notes(int(vessel), self._lane_blocks(note_id, number))
                else:
                    case_vessel, seq = parse_case_number(number)
                    self.client.post_note(case_vessel, seq, CaseStatus(status), bytes(sealed))
            except RelayUnreachable as exc:
                logger.warning("note %d for case %s not posted yet: %s", note_id, number, exc)
                break
            self._db.execute(
                "UPDATE outgoing SET posted_at = ? WHERE note_id = ?", (self.clock(), note_id)
            )
            posted += 1
        return posted

    def _lane_blocks(self, note_id: int, number: str) -> list[bytes]:
        """A lane note's downlink blocks: those made before if the relay's block size is
        unchanged, else sealed now (to the case's reply key) and kept."""
        assert self.client is not None
        if self._lane_shape is None:
            self._lane_shape = self.client.lane_shape()
        size = self._lane_shape.down_block_bytes
        content, made, made_size, reply_key = self._db.execute(
            "SELECT o.note_content, o.lane_blocks, o.lane_block_bytes, c.reply_key "
            "FROM outgoing o JOIN cases c ON c.case_number = o.case_number WHERE note_id = ?",
            (note_id,),
        ).fetchone()
        if made is None or made_size != size:
            try:
                blocks = lane_note_blocks(bytes(content), bytes(reply_key), size)
            except ProtocolError as exc:
                raise RelayUnreachable(
                    f"case {number}'s note cannot go down the relay's lane ({exc})"
                ) from exc
            made = b"".join(blocks)
            with self._tx() as db:
                db.execute(
                    "UPDATE outgoing SET lane_blocks = ?, lane_block_bytes = ? WHERE note_id = ?",
                    (made, size, note_id),
                )
        made = bytes(made)
        return [made[at : at + size] for at in range(0, len(made), size)]

    def lane_incomplete(self) -> int:
        """Lane reports of which some pieces have arrived and others not yet."""
        return self._lane.open_items

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
