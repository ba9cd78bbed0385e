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

**The caseworker tool.** Each action on a case by a caseworker (``by``: their login name,
or ``cli:<user>`` for the union's own commands) is written to the append-only access log
(:mod:`shore.union.access_log`) in the action's transaction: opened, exported, replied to,
stage changed, assigned, note added. A case may be assigned to a caseworker; caseworkers
keep internal notes on it (``case_notes``), which are never sealed for the reporter, never
put in the evidence chain and never exported.

**Deadlines and escalation** (:mod:`shore.union.escalation`). A union names a second
organisation (another union at the relay, by its card) per vessel or per flag state, with
a deadline in days (the acknowledgement's indicative time by default). At each ``fetch``,
a case still "received" past its deadline is escalated: a package sealed to the second
organisation (the report only if the reporter agreed at filing, else a notice without
content) goes to the relay's ``/union/v1/escalations``; then, in one transaction, the
case moves to "referred" (an evidence entry saying to whom and whether with content), the
reporter is told on board (the stage, which the crew page shows in their language), and
the access log records it. ``fetch`` also collects what other unions escalated to this
one (:meth:`UnionInbox.received_escalations`: the history, and the report if consented).

**Retention.** A case closed or resolved longer ago than the union's retention
(:meth:`UnionInbox.set_retention_days`, none by default) is purged at the next ``fetch`` (or
``union purge``): its evidence entries, notes, replies waiting, the reporter's name,
document, reply key and receipt code, and the sealed copies of its reports are deleted, and
the file is rewritten without free pages and its WAL emptied (:meth:`UnionInbox.scrub`).
What stays: the case number, vessel, category, stage times (statistics), the access log,
and the head hash of its evidence chain, so an export made before the purge still verifies
offline and can be matched to the case.

**At rest** (:mod:`shore.union.vault`). Once the union has encrypted its store
(:meth:`UnionInbox.encrypt_store`), every text someone wrote (evidence entries, the
reporter's name and document, replies waiting to be posted, internal notes, the sealed
reports as fetched) is sealed under a key derived from the union's passphrase; until
:meth:`UnionInbox.unlock` no report can be read or filed (:class:`StoreLocked`). A store
not encrypted yet still works (older unions), and says so (:attr:`UnionInbox.encrypted`).
``vessel-relay union init`` makes the store encrypted from the start
(:func:`create_encrypted_store`), before its first report.
"""

from __future__ import annotations

import base64
import datetime
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
    INDICATIVE_DAYS,
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
from protocol.grievance_stats import CaseFacts
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
    GrievanceCategory,
    GrievancePlaintext,
    ReporterSignatureInvalid,
    open_grievance,
    open_grievance_any,
)
from protocol.slots import open_slot, slot_header
from protocol.union_card import UnionCard
from shore.union.access_log import AccessAction, AccessRecord, record_access, records
from shore.union.client import (
    LaneUpBlock,
    RelayClient,
    RelayLaneShape,
    RelayUnreachable,
    RouteMissing,
)
from shore.union.escalation import EscalationInvalid, open_package, seal_package
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
from shore.union.vault import (
    MIN_PASSPHRASE_CHARS,
    KdfSettings,
    StoreKey,
    StoreLocked,
    ValueDamaged,
    VaultError,
    WrongPassphrase,
    derive_key,
    is_sealed,
)

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "vessel-relay case export v1"
#: Who acts when a command of the union's own machine does (the CLI adds the OS user).
LOCAL_ACTOR = "cli"
#: Longest internal note, in characters.
NOTE_MAX_CHARS = 4000


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
    #: The caseworker the case is assigned to (None: nobody yet).
    assignee: str | None = None

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
class InternalNote:
    """A caseworker's note on a case: for caseworkers only, never for the reporter."""

    note_id: int
    caseworker: str
    at: float
    text: str


@dataclass(frozen=True, slots=True)
class ReceivedCase:
    """A case another union escalated to this one: its history, the report if consented."""

    escalation_id: int
    from_union: int
    case_number: str
    signer_fingerprint: str
    received_at: float
    body: dict[str, object]

    @property
    def report(self) -> dict[str, object] | None:
        found = self.body.get("report")
        return found if isinstance(found, dict) else None


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
        self._key: StoreKey | None = None
        self._vault: tuple[KdfSettings, bytes] | None = self._read_vault()

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

    # the store key ------------------------------------------------------------------------

    def _read_vault(self) -> tuple[KdfSettings, bytes] | None:
        row = self._db.execute(
            "SELECT salt, time_cost, memory_kib, parallelism, check_value FROM vault WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        settings = KdfSettings(bytes(row[0]), int(row[1]), int(row[2]), int(row[3]))
        return settings, bytes(row[4])

    @property
    def encrypted(self) -> bool:
        """Whether the store's texts are encrypted at rest (a passphrase was set)."""
        return self._vault is not None

    @property
    def locked(self) -> bool:
        """Whether reports cannot be read now (encrypted, passphrase not entered yet)."""
        return self._vault is not None and self._key is None

    def unlock(self, passphrase: str) -> None:
        """Derive the store key from ``passphrase`` (Argon2id, ~0.2 s); :class:`WrongPassphrase`."""
        if self._vault is None:
            raise VaultError(
                "this union's store is not encrypted yet: run vessel-relay union encrypt"
            )
        settings, check = self._vault
        key = derive_key(passphrase, settings)
        if not key.opens_check(check):
            logger.warning("union store: a wrong passphrase was entered")
            raise WrongPassphrase("that passphrase does not open this union's store; try again")
        self._key = key
        logger.info("union store unlocked")

    def lock(self) -> None:
        """Forget the store key (reports unreadable until :meth:`unlock` again)."""
        self._key = None

    def encrypt_store(self, passphrase: str) -> int:
        """Encrypt the store's texts at rest under ``passphrase`` (once); returns how many
        values were sealed. The old plain copies are wiped from the file, its free pages
        and its WAL (:meth:`scrub`)."""
        if self._vault is not None:
            raise VaultError("this union's store is encrypted already")
        if len(passphrase) < MIN_PASSPHRASE_CHARS:
            raise VaultError(
                f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters; a few "
                "unrelated words are easy to remember and hard to guess"
            )
        settings = KdfSettings.fresh()
        key = derive_key(passphrase, settings)
        check = key.check_value()
        sealed = 0
        with self._tx() as db:
            db.execute(
                "INSERT INTO vault (id, salt, time_cost, memory_kib, parallelism, check_value, "
                "made_at) VALUES (1, ?, ?, ?, ?, ?, ?)",
                (
                    settings.salt,
                    settings.time_cost,
                    settings.memory_kib,
                    settings.parallelism,
                    check,
                    self.clock(),
                ),
            )
            for sql, update, place in _SEALED_COLUMNS:
                for row in db.execute(sql).fetchall():
                    *ids, value = row
                    if value is None or not len(value):
                        continue
                    plain = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                    if is_sealed(plain):
                        continue
                    db.execute(update, (key.seal(plain, place(*ids)), *ids))
                    sealed += 1
        self._vault, self._key = (settings, check), key
        self.scrub()
        logger.info("union store encrypted: %d values sealed", sealed)
        return sealed

    def scrub(self) -> None:
        """Rewrite ``union.db`` without free pages and empty its WAL (``secure_delete`` is on):
        nothing deleted or replaced stays readable in the files."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _seal(self, value: bytes | None, place: str) -> bytes | None:
        if value is None or self._vault is None:
            return value
        if self._key is None:
            raise StoreLocked("the union's store is locked: enter the passphrase first")
        return self._key.seal(value, place)

    def _open(self, value: bytes | str | None, place: str) -> bytes | None:
        if value is None:
            return None
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if self._vault is None or not raw:
            return raw
        if self._key is None:
            raise StoreLocked("the union's store is locked: enter the passphrase first")
        if not is_sealed(raw):
            raise ValueDamaged(f"{place}: a plain value in an encrypted store (changed?)")
        return self._key.open(raw, place)

    def _open_text(self, value: bytes | str | None, place: str) -> str | None:
        opened = self._open(value, place)
        return None if opened is None else opened.decode("utf-8")

    def _seal_text(self, value: str | None, place: str) -> bytes | str | None:
        if value is None or self._vault is None:
            return value
        return self._seal(value.encode("utf-8"), place)

    def _require_unlocked(self) -> None:
        if self.locked:
            raise StoreLocked("the union's store is locked: enter the passphrase first")

    def _relay(self) -> RelayClient:
        if self.client is None:
            raise InboxError("no relay client: this command needs the relay (relay_url)")
        return self.client

    # fetching ----------------------------------------------------------------------------

    def fetch(self) -> FetchResult:
        """Fetch sealed reports, open the new ones here, and post notes not yet posted."""
        self._require_unlocked()
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
                        self._seal(
                            report.sealed, f"reports.sealed:{report.vessel}:{report.message_seq}"
                        ),
                        report.accepted_at,
                        number,
                        problem,
                    ),
                )
        lane = self._fetch_lane()
        posted = self.post_pending()
        self.escalate_due()
        self._fetch_escalations()
        self.purge_due()
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
            (
                vessel,
                report_id,
                self._seal(sealed, f"lane_reports.sealed:{vessel}:{report_id.hex()}"),
                received_at,
                number,
                problem,
            ),
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
            "carrier, consent_to_escalate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                self._seal_text(plain.crew_name, f"cases.crew_name:{number}"),
                self._seal_text(plain.crew_document, f"cases.crew_document:{number}"),
                now_minutes,
                carrier,
                int(plain.consent_to_escalate),
            ),
        )
        self._append(db, number, EntryKind.REPORT, now_minutes, fields)
        db.execute(
            "INSERT INTO case_stages (case_number, idx, status, minutes) VALUES (?, 0, ?, ?)",
            (number, int(CaseStatus.RECEIVED), now_minutes),
        )
        return number, False

    def _chain(self, db: sqlite3.Connection, number: str) -> list[EvidenceEntry]:
        rows = db.execute(
            "SELECT idx, data FROM entries WHERE case_number = ? ORDER BY idx", (number,)
        ).fetchall()
        chain: list[EvidenceEntry] = []
        for idx, data in rows:
            opened = self._open(data, f"entries.data:{number}:{idx}")
            assert opened is not None
            chain.append(entry_from_bytes(opened))
        return chain

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
            (
                number,
                entry.index,
                self._seal(entry.to_bytes(), f"entries.data:{number}:{entry.index}"),
            ),
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
        assignee: str | None = None,
    ) -> list[CaseSummary]:
        """Cases, newest first, filtered by vessel, category, age (days since opened), stage
        and the caseworker they are assigned to."""
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
        if assignee is not None:
            where.append("assignee = ?")
            args.append(assignee)
        if older_than_days is not None:
            where.append("opened_minutes <= ?")
            args.append(now_minutes - older_than_days * 1440)
        if newer_than_days is not None:
            where.append("opened_minutes >= ?")
            args.append(now_minutes - newer_than_days * 1440)
        rows = self._db.execute(
            "SELECT case_number, vessel, category, lang, status, opened_minutes, status_minutes, "
            "(SELECT COUNT(*) FROM reports r WHERE r.case_number = c.case_number) "
            "+ (SELECT COUNT(*) FROM lane_reports l WHERE l.case_number = c.case_number) - 1, "
            f"assignee FROM cases c WHERE {' AND '.join(where)} "
            "ORDER BY opened_minutes DESC, case_number",
            args,
        ).fetchall()
        return [
            CaseSummary(r[0], r[1], r[2], r[3], CaseStatus(r[4]), r[5], r[6], max(0, r[7]), r[8])
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

    def show(self, case_or_receipt: str, *, by: str = LOCAL_ACTOR) -> CaseView:
        """One case in full, its evidence chain verified; the opening is logged as ``by``'s."""
        view = self._view(case_or_receipt)
        with self._tx() as db:
            record_access(
                db,
                at=self.clock(),
                caseworker=by,
                case_number=view.summary.case_number,
                action=AccessAction.OPEN,
            )
        return view

    def _view(self, case_or_receipt: str) -> CaseView:
        self._require_unlocked()
        number = self.find(case_or_receipt)
        purged = self._db.execute(
            "SELECT purged_minutes, purged_head FROM cases WHERE case_number = ?", (number,)
        ).fetchone()
        if purged[0] is not None:
            raise InboxError(
                f"case {number} was purged on {_day(int(purged[0]))} under the union's "
                f"retention; its evidence head was {bytes(purged[1]).hex()}: an export made "
                "before still verifies with `vessel-relay union verify`"
            )
        (summary,) = [c for c in self.cases() if c.case_number == number]
        row = self._db.execute(
            "SELECT receipt_code, crew_name, crew_document, reply_key FROM cases "
            "WHERE case_number = ?",
            (number,),
        ).fetchone()
        chain = self._chain(self._db, number)
        verify_chain(chain, {self.identity.signing_key.verify_key.key: "union"})
        return CaseView(
            summary,
            row[0],
            self._open_text(row[1], f"cases.crew_name:{number}"),
            self._open_text(row[2], f"cases.crew_document:{number}"),
            row[3] is not None,
            tuple(chain),
            reporter_key(chain),
        )

    # the caseworker tool -----------------------------------------------------------------

    def assign(self, case_or_receipt: str, caseworker: str | None, *, by: str = LOCAL_ACTOR) -> str:
        """Assign a case to ``caseworker`` (None: to nobody); returns the case number."""
        number = self.find(case_or_receipt)
        with self._tx() as db:
            db.execute("UPDATE cases SET assignee = ? WHERE case_number = ?", (caseworker, number))
            record_access(
                db,
                at=self.clock(),
                caseworker=by,
                case_number=number,
                action=AccessAction.ASSIGN,
                detail=f"to {caseworker}" if caseworker else "to nobody",
            )
        logger.info("case %s assigned", number)
        return number

    def add_note(self, case_or_receipt: str, text: str, *, by: str = LOCAL_ACTOR) -> int:
        """Keep an internal note on a case (caseworkers only; never sent to the reporter)."""
        text = text.strip()
        if not text:
            raise InboxError("the note is empty; write something for your colleagues")
        if len(text) > NOTE_MAX_CHARS:
            raise InboxError(f"a note may have at most {NOTE_MAX_CHARS:,} characters")
        self._require_unlocked()
        number = self.find(case_or_receipt)
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO case_notes (case_number, caseworker, at, text) VALUES (?, ?, ?, ?)",
                (number, by, self.clock(), b""),
            )
            note_id = int(cursor.lastrowid or 0)
            db.execute(
                "UPDATE case_notes SET text = ? WHERE note_id = ?",
                (
                    self._seal(text.encode("utf-8"), f"case_notes.text:{number}:{note_id}")
                    if self._vault is not None
                    else text.encode("utf-8"),
                    note_id,
                ),
            )
            record_access(
                db,
                at=self.clock(),
                caseworker=by,
                case_number=number,
                action=AccessAction.NOTE,
                detail=f"note {note_id}",
            )
        return note_id

    def notes(self, case_or_receipt: str) -> list[InternalNote]:
        """A case's internal notes, oldest first (read with the case: its opening is logged)."""
        self._require_unlocked()
        number = self.find(case_or_receipt)
        rows = self._db.execute(
            "SELECT note_id, caseworker, at, text FROM case_notes WHERE case_number = ? "
            "ORDER BY note_id",
            (number,),
        ).fetchall()
        return [
            InternalNote(
                int(r[0]),
                str(r[1]),
                float(r[2]),
                self._open_text(r[3], f"case_notes.text:{number}:{r[0]}") or "",
            )
            for r in rows
        ]

    # deadlines and escalation -------------------------------------------------------------

    def set_escalation_route(
        self,
        *,
        card: UnionCard,
        vessel: int | None = None,
        flag: str | None = None,
        deadline_days: int | None = None,
    ) -> str:
        """Name the second organisation for a vessel or a flag state; returns the scope."""
        if (vessel is None) == (flag is None):
            raise InboxError("name either a vessel or a flag state for the second organisation")
        if card.union_id == self.identity.union_id:
            raise InboxError("the second organisation must be another union, not this one")
        days = deadline_days or INDICATIVE_DAYS[CaseStatus.RECEIVED]
        if not 1 <= days <= 365:
            raise InboxError("the deadline is from 1 to 365 days")
        if flag is not None:
            flag = flag.strip().upper()
            if len(flag) != 2 or not flag.isascii() or not flag.isalpha():
                raise InboxError(f"flag {flag!r}: give the two-letter code, e.g. TH")
        scope = f"vessel:{vessel}" if vessel is not None else f"flag:{flag}"
        with self._tx() as db:
            db.execute(
                "INSERT INTO escalation_routes (scope, org_union_id, org_name, org_box_public, "
                "deadline_days) VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope) DO UPDATE SET "
                "org_union_id = excluded.org_union_id, org_name = excluded.org_name, "
                "org_box_public = excluded.org_box_public, deadline_days = excluded.deadline_days",
                (scope, card.union_id, card.name, card.report_key, days),
            )
        return scope

    def escalation_routes(self) -> list[tuple[str, int, str, int]]:
        """(scope, second organisation's union id, its name, deadline days), by scope."""
        rows = self._db.execute(
            "SELECT scope, org_union_id, org_name, deadline_days FROM escalation_routes "
            "ORDER BY scope"
        ).fetchall()
        return [(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]

    def _route_for(self, vessel: int) -> tuple[int, str, bytes, int] | None:
        """The vessel's own route, else its flag state's (None: no second organisation)."""
        for scope in (f"vessel:{vessel}", f"flag:{self.vessel_flag(vessel)}"):
            row = self._db.execute(
                "SELECT org_union_id, org_name, org_box_public, deadline_days "
                "FROM escalation_routes WHERE scope = ?",
                (scope,),
            ).fetchone()
            if row is not None:
                return int(row[0]), str(row[1]), bytes(row[2]), int(row[3])
        return None

    def escalate_due(self) -> list[str]:
        """Escalate the cases not acknowledged within their deadline (see the module
        docstring); returns their numbers. A relay that cannot be reached leaves them for
        the next fetch."""
        now_minutes = int(self.clock() // 60)
        rows = self._db.execute(
            "SELECT case_number, vessel, opened_minutes, consent_to_escalate, category, "
            "crew_name, crew_document FROM cases WHERE status = ? AND escalated_minutes IS "
            "NULL AND purged_minutes IS NULL ORDER BY opened_minutes, case_number",
            (int(CaseStatus.RECEIVED),),
        ).fetchall()
        done: list[str] = []
        for number, vessel, opened, consent, category, name, document in rows:
            route = self._route_for(int(vessel))
            if route is None:
                continue
            org_id, org_name, box_public, days = route
            if int(opened) + days * 1440 > now_minutes:
                continue
            self._require_unlocked()
            chain = self._chain(self._db, number)
            stages = self._db.execute(
                "SELECT status, minutes FROM case_stages WHERE case_number = ? ORDER BY idx",
                (number,),
            ).fetchall()
            report: dict[str, object] | None = None
            if consent:
                first = chain[0].fields
                report = {
                    "category": category,
                    "lang": first.get("lang"),
                    "text": first.get("text"),
                    "written_minutes": first.get("written_minutes"),
                    "crew_name": self._open_text(name, f"cases.crew_name:{number}"),
                    "crew_document": self._open_text(document, f"cases.crew_document:{number}"),
                }
            body: dict[str, object] = {
                "from": {"id": self.identity.union_id, "name": self.identity.name},
                "case": number,
                "vessel": int(vessel),
                "deadline_days": days,
                "escalated_minutes": now_minutes,
                "consent": bool(consent),
                "history": [
                    {"stage": STAGE_WORDS[CaseStatus(s)], "minutes": int(m)} for s, m in stages
                ],
                "report": report,
            }
            package = seal_package(body, self.identity.signing_key, box_public)
            try:
                self._relay().escalate(org_id, number, package)
            except RelayUnreachable as exc:
                logger.warning("case %s not escalated yet: %s", number, exc)
                break
            with self._tx() as db:
                how = (
                    "with the report (the reporter agreed at filing)"
                    if consent
                    else "as a notice without content (the reporter did not agree to share it)"
                )
                entry = self._append(
                    db,
                    number,
                    EntryKind.STATUS,
                    now_minutes,
                    {
                        "status": STAGE_WORDS[CaseStatus.REFERRED],
                        "reason": f"escalated: not acknowledged within {days} days; passed to "
                        f"{org_name} (union {org_id}) {how}",
                    },
                )
                db.execute(
                    "UPDATE cases SET status = ?, status_minutes = ?, escalated_minutes = ?, "
                    "escalated_to = ? WHERE case_number = ?",
                    (int(CaseStatus.REFERRED), now_minutes, now_minutes, org_id, number),
                )
                db.execute(
                    "INSERT INTO case_stages (case_number, idx, status, minutes) VALUES (?, "
                    "(SELECT COALESCE(MAX(idx), -1) + 1 FROM case_stages WHERE case_number = ?),"
                    " ?, ?)",
                    (number, number, int(CaseStatus.REFERRED), now_minutes),
                )
                self._queue_note(
                    db,
                    number,
                    CaseNote(number, CaseStatus.REFERRED, now_minutes, entry_hash=entry.entry_hash),
                )
                record_access(
                    db,
                    at=self.clock(),
                    caseworker="deadline",
                    case_number=number,
                    action=AccessAction.ESCALATE,
                    detail=f"to union {org_id}, " + ("with content" if consent else "no content"),
                )
            logger.info(
                "case %s escalated to union %d (%s)",
                number,
                org_id,
                "content" if consent else "notice",
            )
            done.append(number)
        if done:
            self.post_pending()
        return done

    def _fetch_escalations(self) -> int:
        """Collect what other unions escalated to this one, page by page."""
        relay = self._relay()
        count = 0
        while True:
            after = int(
                self._db.execute("SELECT after FROM escalation_cursor WHERE id = 1").fetchone()[0]
            )
            try:
                found, following = relay.escalations(after)
            except RouteMissing:
                logger.warning("the relay has no /union/v1/escalations: upgrade the relay")
                return count
            with self._tx() as db:
                for item in found:
                    try:
                        opened = open_package(item.package, self.identity.box_private)
                    except EscalationInvalid as exc:
                        logger.warning(
                            "escalation %d from union %d not kept: %s",
                            item.escalation_id,
                            item.from_union,
                            exc,
                        )
                        continue
                    origin = opened.body.get("from")
                    if not isinstance(origin, dict) or origin.get("id") != item.from_union:
                        logger.warning(
                            "escalation %d names another union than the one that sent it: not kept",
                            item.escalation_id,
                        )
                        continue
                    data = json.dumps(opened.body, ensure_ascii=False).encode("utf-8")
                    db.execute(
                        "INSERT OR IGNORE INTO escalations_in (escalation_id, from_union, "
                        "case_number, signer_key, received_at, body) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            item.escalation_id,
                            item.from_union,
                            item.case_number,
                            opened.signer_key,
                            item.received_at,
                            self._seal(data, f"escalations_in.body:{item.escalation_id}"),
                        ),
                    )
                    count += 1
                db.execute("UPDATE escalation_cursor SET after = ? WHERE id = 1", (following,))
            if not found or following <= after:
                return count

    def received_escalations(self) -> list[ReceivedCase]:
        """Cases other unions passed to this one, newest first (history; the report only
        if its reporter agreed)."""
        rows = self._db.execute(
            "SELECT escalation_id, from_union, case_number, signer_key, received_at, body "
            "FROM escalations_in ORDER BY escalation_id DESC"
        ).fetchall()
        found: list[ReceivedCase] = []
        for row_id, from_union, number, signer, received_at, body in rows:
            opened = self._open(body, f"escalations_in.body:{row_id}")
            assert opened is not None
            found.append(
                ReceivedCase(
                    int(row_id),
                    int(from_union),
                    str(number),
                    fingerprint(bytes(signer)),
                    float(received_at),
                    json.loads(opened),
                )
            )
        return found

    # retention ---------------------------------------------------------------------------

    def set_retention_days(self, days: int | None) -> None:
        """Keep closed and resolved cases ``days`` after their last stage (None: for ever)."""
        if days is not None and not 1 <= days <= 36_600:
            raise InboxError("the retention is from 1 day to 100 years (or none: keep for ever)")
        with self._tx() as db:
            if days is None:
                db.execute("DELETE FROM union_settings WHERE name = 'retention_days'")
            else:
                db.execute(
                    "INSERT INTO union_settings (name, value) VALUES ('retention_days', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (str(days),),
                )

    def retention_days(self) -> int | None:
        """The union's retention for closed cases, in days (None: kept for ever)."""
        row = self._db.execute(
            "SELECT value FROM union_settings WHERE name = 'retention_days'"
        ).fetchone()
        return None if row is None else int(row[0])

    def purge_due(self, *, by: str = "retention") -> list[str]:
        """Purge the closed cases past the retention (see the module docstring); returns
        their numbers. Needs the store unlocked only to read the evidence heads it keeps."""
        days = self.retention_days()
        if days is None:
            return []
        cutoff = int(self.clock() // 60) - days * 1440
        due = [
            str(row[0])
            for row in self._db.execute(
                "SELECT case_number FROM cases WHERE purged_minutes IS NULL "
                "AND status IN (?, ?) AND status_minutes <= ? ORDER BY case_number",
                (int(CaseStatus.RESOLVED), int(CaseStatus.CLOSED), cutoff),
            )
        ]
        if not due:
            return []
        self._require_unlocked()
        now_minutes = int(self.clock() // 60)
        for number in due:
            with self._tx() as db:
                chain = self._chain(db, number)
                head = verify_chain(chain, {self.identity.signing_key.verify_key.key: "union"})
                for table in ("entries", "outgoing", "case_notes"):
                    db.execute(f"DELETE FROM {table} WHERE case_number = ?", (number,))
                db.execute("UPDATE reports SET sealed = x'' WHERE case_number = ?", (number,))
                db.execute("UPDATE lane_reports SET sealed = x'' WHERE case_number = ?", (number,))
                db.execute(
                    "UPDATE cases SET crew_name = NULL, crew_document = NULL, reply_key = NULL, "
                    "receipt_code = 'purged ' || case_number, purged_minutes = ?, "
                    "purged_head = ? WHERE case_number = ?",
                    (now_minutes, head, number),
                )
                record_access(
                    db,
                    at=self.clock(),
                    caseworker=by,
                    case_number=number,
                    action=AccessAction.PURGE,
                    detail=f"{len(chain)} entries, head {head.hex()}",
                )
        self.scrub()
        logger.info("purged %d closed cases past the retention of %d days", len(due), days)
        return due

    # outcomes ----------------------------------------------------------------------------

    def set_vessel(self, vessel: int, *, name: str = "", owner: str = "", flag: str = "") -> None:
        """Record a vessel's name, owner and flag state (for statistics and escalation)."""
        flag = flag.strip().upper()
        if flag and (len(flag) != 2 or not flag.isascii() or not flag.isalpha()):
            raise InboxError(f"flag {flag!r}: give the flag state's two-letter code, e.g. TH")
        with self._tx() as db:
            db.execute(
                "INSERT INTO vessels (vessel, name, owner, flag) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (vessel) DO UPDATE SET name = excluded.name, "
                "owner = excluded.owner, flag = excluded.flag",
                (vessel, name.strip(), owner.strip(), flag),
            )

    def vessel_flag(self, vessel: int) -> str:
        """The vessel's flag state as recorded ('' when not)."""
        row = self._db.execute("SELECT flag FROM vessels WHERE vessel = ?", (vessel,)).fetchone()
        return "" if row is None else str(row[0])

    def case_facts(self) -> list[CaseFacts]:
        """One anonymous :class:`CaseFacts` per case (purged ones too): no text, no reporter."""
        stages: dict[str, list[tuple[CaseStatus, int]]] = {}
        for number, status, minutes in self._db.execute(
            "SELECT case_number, status, minutes FROM case_stages ORDER BY case_number, idx"
        ):
            stages.setdefault(number, []).append((CaseStatus(status), int(minutes)))
        rows = self._db.execute(
            "SELECT c.case_number, c.vessel, c.category, c.escalated_minutes, "
            "COALESCE(v.owner, ''), COALESCE(v.flag, '') "
            "FROM cases c LEFT JOIN vessels v ON v.vessel = c.vessel ORDER BY c.case_number"
        ).fetchall()
        return [
            CaseFacts(
                vessel=int(vessel),
                owner=str(owner),
                flag=str(flag),
                category=GrievanceCategory[str(category).upper()],
                stages=tuple(stages[number]),
                escalated=escalated is not None,
            )
            for number, vessel, category, escalated, owner, flag in rows
            if number in stages
        ]

    def access_log(self, case_or_receipt: str | None = None) -> list[AccessRecord]:
        """The access log: one case's rows, or every row, oldest first."""
        number = None if case_or_receipt is None else self.find(case_or_receipt)
        return records(self._db, number)

    def log_access(
        self, case_or_receipt: str, action: AccessAction, *, by: str, detail: str = ""
    ) -> None:
        """Record an access made outside the inbox's own calls (e.g. an access-log export)."""
        number = self.find(case_or_receipt)
        with self._tx() as db:
            record_access(
                db, at=self.clock(), caseworker=by, case_number=number, action=action, detail=detail
            )

    # answering ---------------------------------------------------------------------------

    def reply(
        self,
        case_or_receipt: str,
        text: str,
        lang: Language | None = None,
        *,
        by: str = LOCAL_ACTOR,
    ) -> EvidenceEntry:
        """Write to the reporter (in their language unless told); sealed to their reply key."""
        if not text.strip():
            raise InboxError("the reply is empty; write something for the reporter")
        self._require_unlocked()
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
            record_access(
                db,
                at=self.clock(),
                caseworker=by,
                case_number=number,
                action=AccessAction.REPLY,
                detail=f"entry {entry.index}",
            )
        self.post_pending()
        return entry

    def set_status(
        self,
        case_or_receipt: str,
        stage: CaseStatus,
        reason: str | None = None,
        *,
        by: str = LOCAL_ACTOR,
    ) -> EvidenceEntry:
        """Move a case to ``stage`` (closing needs a reason); the reporter is told."""
        self._require_unlocked()
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
            db.execute(
                "INSERT INTO case_stages (case_number, idx, status, minutes) VALUES "
                "(?, (SELECT COALESCE(MAX(idx), -1) + 1 FROM case_stages WHERE case_number = ?), "
                "?, ?)",
                (number, number, int(stage), minutes),
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
            record_access(
                db,
                at=self.clock(),
                caseworker=by,
                case_number=number,
                action=AccessAction.STATUS,
                detail=f"{STAGE_WORDS[current]} -> {STAGE_WORDS[stage]}",
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
                (number, int(note.status), b"", self._seal(content, f"outgoing.note:{number}")),
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
            opened = self._open(content, f"outgoing.note:{number}")
            assert opened is not None
            try:
                blocks = lane_note_blocks(opened, bytes(reply_key), size)
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

    def export(self, case_or_receipt: str, path: Path, *, by: str = LOCAL_ACTOR) -> int:
        """Write a case's evidence (signed entries + the union's public key) to ``path``."""
        view = self._view(case_or_receipt)
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
        with self._tx() as db:
            record_access(
                db,
                at=self.clock(),
                caseworker=by,
                case_number=view.summary.case_number,
                action=AccessAction.EXPORT,
                detail=f"{len(view.entries)} entries",
            )
        return len(view.entries)


#: The columns that hold what someone wrote: (select ids + value, update, place of a row).
_SEALED_COLUMNS: tuple[tuple[str, str, Callable[..., str]], ...] = (
    (
        "SELECT case_number, idx, data FROM entries",
        "UPDATE entries SET data = ? WHERE case_number = ? AND idx = ?",
        lambda number, idx: f"entries.data:{number}:{idx}",
    ),
    (
        "SELECT case_number, crew_name FROM cases",
        "UPDATE cases SET crew_name = ? WHERE case_number = ?",
        lambda number: f"cases.crew_name:{number}",
    ),
    (
        "SELECT case_number, crew_document FROM cases",
        "UPDATE cases SET crew_document = ? WHERE case_number = ?",
        lambda number: f"cases.crew_document:{number}",
    ),
    (
        "SELECT vessel, message_seq, sealed FROM reports",
        "UPDATE reports SET sealed = ? WHERE vessel = ? AND message_seq = ?",
        lambda vessel, seq: f"reports.sealed:{vessel}:{seq}",
    ),
    (
        "SELECT vessel, report_id, sealed FROM lane_reports",
        "UPDATE lane_reports SET sealed = ? WHERE vessel = ? AND report_id = ?",
        lambda vessel, report_id: f"lane_reports.sealed:{vessel}:{bytes(report_id).hex()}",
    ),
    (
        "SELECT note_id, case_number, note_content FROM outgoing",
        "UPDATE outgoing SET note_content = ? WHERE note_id = ? AND case_number = ?",
        lambda _note_id, number: f"outgoing.note:{number}",
    ),
    (
        "SELECT escalation_id, body FROM escalations_in",
        "UPDATE escalations_in SET body = ? WHERE escalation_id = ?",
        lambda row_id: f"escalations_in.body:{row_id}",
    ),
    (
        "SELECT note_id, case_number, text FROM case_notes",
        "UPDATE case_notes SET text = ? WHERE note_id = ? AND case_number = ?",
        lambda note_id, number: f"case_notes.text:{number}:{note_id}",
    ),
)


def create_encrypted_store(identity: UnionIdentity, codebook: Codebook, passphrase: str) -> None:
    """Make the union's store (``union.db``), encrypted under ``passphrase`` before any
    report is in it; :class:`VaultError` if it exists encrypted already or the passphrase
    is too short."""
    inbox = UnionInbox(identity, codebook)
    try:
        inbox.encrypt_store(passphrase)
    finally:
        inbox.close()


def _day(minutes: int) -> str:
    return datetime.datetime.fromtimestamp(minutes * 60, datetime.UTC).strftime("%Y-%m-%d")


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
