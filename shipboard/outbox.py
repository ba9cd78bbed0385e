"""Outbox: the vessel's durable record of crew, contacts, messages, batches and inbox.

Durability, stated once: every public method that writes is one SQLite transaction
(``BEGIN IMMEDIATE`` ... ``COMMIT``) on a database in WAL mode with ``synchronous=FULL``,
so when a method returns, its change survives a power cut or a SIGKILL. Intake answers a
crew member (SMTP 250, HTTP 201) only after ``accept_*`` returned. If the disk is full,
read-only or broken, the method raises :class:`~shipboard.errors.OutboxUnavailable` and
nothing was stored.

Concurrency: the outbox is synchronous and thread-safe (one connection behind a lock).
Async code calls it through ``await asyncio.to_thread(outbox.method, ...)`` so the event
loop never waits on the disk.

Time: every ``now`` is wall-clock seconds since 1970-01-01 UTC (``time.time()``); on the
wire, times become whole minutes (``int(now // 60)``).

Message states and their changes live in :mod:`shipboard.states`; this module asks
:func:`~shipboard.states.next_state` before it writes any new state.

Grievance reports are stored only sealed (to the union's key). The row does not name the
crew member: it carries a ``reporter_tag`` (an HMAC keyed by a secret derived from the
crew member's PIN at sign-in) so that only the signed-in reporter finds their cases.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

from protocol.batch import Batch, Direction, encode_batch
from protocol.codebook import Codebook
from protocol.envelopes import (
    BatchAck,
    CaseStatusUpdate,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryFailure,
    DeliveryReceipt,
    Envelope,
    FailureReason,
    GrievanceReport,
    QuotaNotice,
    ReceiptStage,
    Reply,
    Sos,
    acknowledges_only,
)
from protocol.errors import MalformedBatch, Reason
from protocol.languages import Language
from protocol.months import Month
from protocol.replay import RangeSet
from protocol.signing import SigningKey
from protocol.slots import SlotHeader, downlink_slot_notes
from shipboard.errors import NothingToSend, OutboxUnavailable, QuotaExceeded
from shipboard.sessions_log import SESSIONS_MIGRATION, LinkSession, record_session, sessions_in
from shipboard.states import TRANSITIONS, MessageEvent, MessageState, next_state

logger = logging.getLogger(__name__)

#: Message kinds as stored; the scheduler treats "grievance" and "sos" as the reserved lane.
KINDS = ("message", "grievance", "sos")
#: What a quick message (a code for a fixed sentence) counts against the quota.
QUICK_MESSAGE_BYTES = 2

# --- schema and migrations ---------------------------------------------------------------

_MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE crew (
            crew INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            document TEXT NOT NULL,
            nationality TEXT NOT NULL,
            language TEXT NOT NULL,
            pin_salt BLOB NOT NULL,
            pin_hash BLOB NOT NULL,
            case_salt BLOB NOT NULL,
            added_at REAL NOT NULL,
            signed_off_at REAL
        );
        CREATE UNIQUE INDEX crew_document_on_board ON crew(document)
            WHERE signed_off_at IS NULL;
        CREATE TABLE contacts (
            contact INTEGER PRIMARY KEY AUTOINCREMENT,
            crew INTEGER NOT NULL REFERENCES crew(crew),
            channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
            address TEXT NOT NULL,
            name TEXT,
            language TEXT,
            added_at REAL NOT NULL,
            announced_in_batch INTEGER
        );
        CREATE UNIQUE INDEX contacts_address ON contacts(crew, channel, address);
        CREATE TABLE batches (
            batch_seq INTEGER PRIMARY KEY AUTOINCREMENT,
            data BLOB NOT NULL,
            link_bytes INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('made', 'sent', 'acked', 'rejected')),
            made_at REAL NOT NULL,
            first_sent_at REAL,
            last_sent_at REAL,
            send_count INTEGER NOT NULL DEFAULT 0,
            acked_at REAL,
            reject_reason INTEGER
        );
        CREATE TABLE messages (
            message_seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('message', 'grievance', 'sos')),
            crew INTEGER REFERENCES crew(crew),
            contact INTEGER REFERENCES contacts(contact),
            union_id INTEGER,
            reporter_tag BLOB,
            lang TEXT,
            body TEXT,
            quick INTEGER,
            sealed BLOB,
            latitude INTEGER,
            longitude INTEGER,
            text_bytes INTEGER NOT NULL,
            month INTEGER NOT NULL,
            state TEXT NOT NULL,
            accepted_at REAL NOT NULL,
            batched_at REAL,
            sent_at REAL,
            acknowledged_at REAL,
            delivered_at REAL,
            failed_at REAL,
            failure_reason INTEGER,
            failure_detail TEXT
        );
        CREATE INDEX messages_state ON messages(state);
        CREATE INDEX messages_crew_month ON messages(crew, month);
        CREATE TABLE batch_messages (
            batch_seq INTEGER NOT NULL REFERENCES batches(batch_seq),
            message_seq INTEGER NOT NULL UNIQUE REFERENCES messages(message_seq),
            PRIMARY KEY (batch_seq, message_seq)
        );
        CREATE TABLE inbox (
            entry INTEGER PRIMARY KEY AUTOINCREMENT,
            crew INTEGER REFERENCES crew(crew),
            message_seq INTEGER,
            case_seq INTEGER,
            kind TEXT NOT NULL,
            stage TEXT,
            code INTEGER,
            contact INTEGER,
            lang TEXT,
            body TEXT,
            truncated INTEGER,
            sealed_note BLOB,
            written_minutes INTEGER NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX inbox_crew ON inbox(crew);
        CREATE TABLE reply_seen (reply_seq INTEGER PRIMARY KEY);
        CREATE TABLE downlink_seen (first INTEGER PRIMARY KEY, last INTEGER NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta (key, value) VALUES ('downlink_ack_pending', 0)
        """,
    ),
    SESSIONS_MIGRATION,  # link sessions, for the compliance report (shipboard.sessions_log)
    (
        "0003_ack_only_batches",
        # 1 for a batch that carries only a BatchAck; batches made before stay 0 (waited for).
        "ALTER TABLE batches ADD COLUMN ack_only INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "0004_downlink_refused",
        # Authentic downlink batches refused for good (Outbox.refuse_downlink): counted as
        # seen, so the next BatchAck covers them, and named with their reason in its
        # ``rejected`` list once (announced_in_batch: the uplink batch that told the shore).
        """
        CREATE TABLE downlink_refused (
            batch_seq INTEGER PRIMARY KEY,
            reason INTEGER NOT NULL,
            refused_at REAL NOT NULL,
            announced_in_batch INTEGER
        )
        """,
    ),
    (
        "0005_sos_without_pin",
        # An SOS sent without a PIN keeps crew NULL (nobody proved who sent it) and the
        # crew number that was typed here (no foreign key: a mistyped number still goes).
        "ALTER TABLE messages ADD COLUMN typed_crew INTEGER",
    ),
)

#: Most ranges of applied downlink batches that one BatchAck names (the shore resends
#: what a BatchAck does not cover; a protocol BatchAck holds at most 4,096).
MAX_ACK_RANGES = 1000
#: Most refused downlink batches that one BatchAck names (the rest go in the next one).
MAX_ACK_REJECTED = 256


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


# --- values handed out -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """One message waiting for a batch, as the scheduler sees it (no text, no content)."""

    message_seq: int
    kind: str  # "message", "grievance" or "sos"
    crew: int | None  # None for a grievance report: the outbox does not know the reporter
    text_bytes: int  # what counts against the crew member's quota (0 outside quota)
    payload_bytes: int  # bytes of text or sealed report that will travel
    accepted_at: float
    lang: str | None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A batch whose bytes are stored and which the shore has not acknowledged yet."""

    batch_seq: int
    data: bytes
    made_at: float
    send_count: int
    #: It carries only a ``BatchAck`` (no message, no contact change): the shore
    #: acknowledges such a batch lazily, with its next downlink, so no session waits for it.
    ack_only: bool = False


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """What intake tells the crew member once their message is committed."""

    message_seq: int
    accepted_at: float
    text_bytes: int
    #: When Zawgyi detection was unsure (shipboard.intake.read_text): the text as typed,
    #: and the other reading, for the crew member to compare with what is sent.
    original: str | None = None
    alternative: str | None = None


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """A crew member's text quota for one month (month as YYYYMM, in the vessel's time zone)."""

    crew: int
    month: int
    used_bytes: int
    quota_bytes: int

    @property
    def remaining_bytes(self) -> int:
        """Bytes of text left this month (never negative)."""
        return max(0, self.quota_bytes - self.used_bytes)


@dataclass(frozen=True, slots=True)
class DownlinkResult:
    """What one downlink batch changed."""

    batch_seq: int
    duplicate: bool
    acknowledged_batches: tuple[int, ...] = ()
    rejected_batches: tuple[int, ...] = ()
    receipts: int = 0
    inbox_entries: int = 0
    ignored: int = 0


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    """Counters for the status page and the logs (no content, no names)."""

    messages_by_state: Mapping[str, int]
    batches_unacknowledged: int
    batches_total: int
    link_bytes_made: int
    downlink_batches_applied: int
    downlink_ack_pending: bool
    ignored_downlink_envelopes: int = 0


@dataclass
class _Counters:
    ignored: int = 0
    extra: dict[str, int] = field(default_factory=dict)


#: The quota month's time zone until the vessel's is set (:meth:`Outbox.use_time_zone`).
UTC_ZONE = ZoneInfo("UTC")


def month_of(now: float, time_zone: ZoneInfo = UTC_ZONE) -> int:
    """The quota month (YYYYMM) of a wall-clock time, in the vessel's ``time_zone``
    (the rule is :mod:`protocol.months`'; UTC until the vessel's zone is set)."""
    return Month.of(now, time_zone).key


def reporter_tag(case_key: bytes, message_seq: int) -> bytes:
    """The tag that lets the signed-in reporter (and no one else) find their case."""
    return hmac.new(case_key, b"case:%d" % message_seq, hashlib.sha256).digest()


# --- downlink batch numbers seen (protocol.replay.RangeSet), as rows of the table ---------


def _seen_rows(db: sqlite3.Connection) -> RangeSet:
    """The downlink batch numbers already applied (table ``downlink_seen``)."""
    seen = RangeSet()
    for first, last in db.execute("SELECT first, last FROM downlink_seen"):
        seen.add_range(int(first), int(last))
    return seen


def _range_rows(seen: RangeSet) -> list[tuple[int, int]]:
    """The rows of ``downlink_seen`` for ``seen``: ``(1, up_to)`` first, then its ranges."""
    return ([(1, seen.up_to)] if seen.up_to else []) + list(seen.ranges)


# --- the outbox --------------------------------------------------------------------------


class Outbox:
    """The durable outbox of one vessel (see the module docstring for its promises)."""

    def __init__(self, db: sqlite3.Connection, path: Path, vessel_id: int) -> None:
        self._db = db
        self._lock = threading.RLock()
        self.path = path
        self.vessel_id = vessel_id
        self._counters = _Counters()
        #: The zone whose calendar months the quotas count in (:meth:`use_time_zone`).
        self.time_zone: ZoneInfo = UTC_ZONE
        #: Called with ``now`` before pending messages are read: intake makes the daily
        #: slots there (:meth:`shipboard.intake.Intake.ensure_slots`).
        self.before_pending: Callable[[float], object] | None = None

    def use_time_zone(self, time_zone: ZoneInfo) -> None:
        """Count quota months in ``time_zone`` (the vessel's; intake sets it from the config).

        Messages already accepted keep the month they were charged to."""
        self.time_zone = time_zone

    def _month(self, now: float) -> int:
        return month_of(now, self.time_zone)

    # opening, closing, transactions ------------------------------------------------------

    @classmethod
    def open(cls, path: Path, vessel_id: int, *, extra_pragmas: Sequence[str] = ()) -> Outbox:
        """Open (or create) the outbox at ``path`` and run any pending migrations.

        ``extra_pragmas`` are run after the standard ones; tests use them to simulate a
        full disk (``max_page_count``) or a read-only one (``query_only``).
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxUnavailable(f"cannot open the outbox {path}: {exc}") from exc
        outbox = cls(db, path, vessel_id)
        try:
            outbox._configure(extra_pragmas)
            outbox._migrate()
        except sqlite3.Error as exc:
            db.close()
            raise OutboxUnavailable(f"cannot prepare the outbox {path}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        return outbox

    def _configure(self, extra_pragmas: Sequence[str]) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxUnavailable(f"the outbox {self.path} cannot use WAL mode (got {mode})")
        for pragma in (
            "synchronous=FULL",  # a commit survives a power cut (NORMAL may lose the last ones)
            "foreign_keys=ON",
            "busy_timeout=5000",
            "secure_delete=ON",  # deleted texts are overwritten (with wal_checkpoint(TRUNCATE))
        ):
            db.execute(f"PRAGMA {pragma}")
        for pragma in extra_pragmas:
            db.execute(f"PRAGMA {pragma}")

    def _migrate(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        done = {row[0] for row in db.execute("SELECT name FROM migrations")}
        for name, script in _MIGRATIONS:
            if name in done:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO migrations (name, applied_at) VALUES (?, julianday('now'))",
                    (name,),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            logger.info("outbox migration %s applied", name)

    def close(self) -> None:
        """Checkpoint the WAL (so deleted rows leave no trace there) and close."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("outbox checkpoint at close failed", exc_info=True)
            self._db.close()

    def checkpoint(self) -> None:
        """Move the WAL into the database file and truncate the WAL to zero bytes."""
        with self._lock, self._translate("checkpoint"):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            logger.error("outbox cannot %s: %s", what, exc)
            raise OutboxUnavailable(
                f"the outbox cannot {what} ({exc}); check free disk space and that "
                f"{self.path.parent} is writable"
            ) from exc

    @contextmanager
    def transaction(self, what: str = "store this") -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on a clean exit, rolled back on any error.

        Storage failures become :class:`OutboxUnavailable` (nothing was stored).
        """
        with self._lock, self._translate(what):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads (under the lock, storage errors translated)."""
        with self._lock, self._translate("read"):
            yield self._db

    # intake ------------------------------------------------------------------------------

    def quota_status(self, crew: int, quota_bytes: int, now: float) -> QuotaStatus:
        """How much of this month's text quota the crew member has used."""
        month = self._month(now)
        with self.reading() as db:
            used = self._used_bytes(db, crew, month)
        return QuotaStatus(crew, month, used, quota_bytes)

    @staticmethod
    def _used_bytes(db: sqlite3.Connection, crew: int, month: int) -> int:
        row = db.execute(
            "SELECT COALESCE(SUM(text_bytes), 0) FROM messages "
            "WHERE crew = ? AND month = ? AND kind = 'message'",
            (crew, month),
        ).fetchone()
        return int(row[0])

    def quota_ledger(self, now: float) -> dict[int, int]:
        """Text bytes used this month per crew member (the scheduler's quota ledger)."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT crew, SUM(text_bytes) FROM messages "
                "WHERE month = ? AND kind = 'message' GROUP BY crew",
                (self._month(now),),
            ).fetchall()
        return {int(crew): int(used) for crew, used in rows}

    def accept_message(
        self,
        *,
        crew: int,
        contact: int,
        lang: Language,
        now: float,
        quota_bytes: int,
        body: str | None = None,
        quick: int | None = None,
    ) -> AcceptedMessage:
        """Commit a crew member's message to a family contact, within their monthly quota.

        Raises :class:`QuotaExceeded` (nothing stored) when the quota does not cover it.
        """
        (accepted,) = self.accept_messages(
            crew=crew,
            contacts=[contact],
            lang=lang,
            now=now,
            quota_bytes=quota_bytes,
            body=body,
            quick=quick,
        )
        return accepted

    def accept_messages(
        self,
        *,
        crew: int,
        contacts: Sequence[int],
        lang: Language,
        now: float,
        quota_bytes: int,
        body: str | None = None,
        quick: int | None = None,
    ) -> list[AcceptedMessage]:
        """Commit one message to several contacts in one transaction (all or nothing).

        Each contact gets its own message number; the quota must cover all of them.
        """
        if (body is None) == (quick is None):
            raise ValueError("a message has either a text body or a quick code")
        if not contacts:
            raise ValueError("a message needs at least one contact")
        text_bytes = len(body.encode("utf-8")) if body is not None else QUICK_MESSAGE_BYTES
        needed = text_bytes * len(contacts)
        month = self._month(now)
        with self.transaction("save the message") as db:
            used = self._used_bytes(db, crew, month)
            if used + needed > quota_bytes:
                remaining = max(0, quota_bytes - used)
                raise QuotaExceeded(
                    f"Not enough of this month's quota is left: {remaining} bytes left, this "
                    f"message needs {needed}. Write a shorter message or wait for next month.",
                    remaining_bytes=remaining,
                    needed_bytes=needed,
                )
            seqs = [
                self._insert(
                    db,
                    kind="message",
                    crew=crew,
                    contact=contact,
                    lang=lang.code,
                    body=body,
                    quick=quick,
                    text_bytes=text_bytes,
                    month=month,
                    now=now,
                )
                for contact in contacts
            ]
        for seq in seqs:
            logger.info("message %d accepted (%d text bytes)", seq, text_bytes)
        return [AcceptedMessage(seq, now, text_bytes) for seq in seqs]

    def accept_grievance(
        self, *, union_id: int, sealed: bytes, case_key: bytes, now: float
    ) -> AcceptedMessage:
        """Commit a sealed grievance report (outside every quota; the reporter is not named)."""
        with self.transaction("save the report") as db:
            seq = self._insert(
                db,
                kind="grievance",
                union_id=union_id,
                sealed=sealed,
                text_bytes=0,
                month=self._month(now),
                now=now,
            )
            db.execute(
                "UPDATE messages SET reporter_tag = ? WHERE message_seq = ?",
                (reporter_tag(case_key, seq), seq),
            )
        logger.info("grievance report %d accepted (%d sealed bytes)", seq, len(sealed))
        return AcceptedMessage(seq, now, 0)

    # daily slots (protocol.slots) ------------------------------------------------------

    def slot_rows(self, since: float) -> list[tuple[int, str, int, bytes]]:
        """Grievance-lane rows released from ``since`` on: (seq, state, union, sealed)."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT message_seq, state, union_id, sealed FROM messages "
                "WHERE kind = 'grievance' AND accepted_at >= ? AND sealed IS NOT NULL "
                "ORDER BY message_seq",
                (since,),
            ).fetchall()
        return [(int(a), str(b), int(c), bytes(d)) for a, b, c, d in rows]

    def slot_releases(self, since: float) -> list[tuple[int, str, int, bytes, float]]:
        """As :meth:`slot_rows`, with each row's release time: (seq, state, union, sealed, at)."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT message_seq, state, union_id, sealed, accepted_at FROM messages "
                "WHERE kind = 'grievance' AND accepted_at >= ? AND sealed IS NOT NULL "
                "ORDER BY message_seq",
                (since,),
            ).fetchall()
        return [(int(a), str(b), int(c), bytes(d), float(e)) for a, b, c, d, e in rows]

    def accept_slots(self, slots: Sequence[tuple[int, bytes, float]]) -> list[int]:
        """Commit cover slots ``(union, sealed, release_at)`` in one transaction.

        A slot row looks like a grievance row (same kind, size and a reporter tag under a
        key nobody keeps); it is released (``accepted_at``) when its day is over."""
        seqs: list[int] = []
        with self.transaction("save the daily slots") as db:
            for union_id, sealed, release_at in slots:
                seq = self._insert(
                    db,
                    kind="grievance",
                    union_id=union_id,
                    sealed=sealed,
                    text_bytes=0,
                    month=month_of(release_at),
                    now=release_at,
                )
                db.execute(
                    "UPDATE messages SET reporter_tag = ? WHERE message_seq = ?",
                    (reporter_tag(os.urandom(32), seq), seq),
                )
                seqs.append(seq)
        return seqs

    def fill_slot(self, seq: int, sealed: bytes, case_key: bytes) -> bool:
        """Put a grievance in place of the cover in slot row ``seq`` (same size; the old
        bytes are overwritten: secure_delete). False if that slot has left meanwhile, or
        already holds a report of this reporter (its tag is theirs; a cover's tag is made
        with a key nobody keeps, so on disk a filled slot still looks like any other)."""
        tag = reporter_tag(case_key, seq)
        with self.transaction("save the report") as db:
            changed = db.execute(
                "UPDATE messages SET sealed = ?, reporter_tag = ? WHERE message_seq = ? "
                "AND kind = 'grievance' AND state = 'accepted' AND LENGTH(sealed) = ? "
                "AND (reporter_tag IS NULL OR reporter_tag != ?)",
                (sealed, tag, seq, len(sealed), tag),
            ).rowcount
        if changed:
            logger.info("grievance report %d accepted into a slot", seq)
        return bool(changed)

    def accept_sos(
        self,
        *,
        crew: int,
        now: float,
        lang: Language | None = None,
        note: str | None = None,
        position: tuple[int, int] | None = None,
        signed_in: bool = True,
    ) -> AcceptedMessage:
        """Commit an SOS (outside every quota; the scheduler sends it at once).

        ``signed_in=False``: sent without a PIN; ``crew`` is only the number typed (it
        travels flagged as unauthenticated and is in nobody's inbox on board)."""
        latitude, longitude = position if position is not None else (None, None)
        with self.transaction("save the SOS") as db:
            seq = self._insert(
                db,
                kind="sos",
                crew=crew if signed_in else None,
                typed_crew=None if signed_in else crew,
                lang=(lang or Language.UND).code if note else None,
                body=note,
                latitude=latitude,
                longitude=longitude,
                text_bytes=0,
                month=self._month(now),
                now=now,
            )
        logger.warning("SOS %d accepted", seq)
        return AcceptedMessage(seq, now, 0)

    @staticmethod
    def _insert(db: sqlite3.Connection, *, now: float, **columns: object) -> int:
        columns["state"] = MessageState.ACCEPTED.value
        columns["accepted_at"] = now
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        cursor = db.execute(
            f"INSERT INTO messages ({names}) VALUES ({marks})", tuple(columns.values())
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    # what the scheduler and the link call ------------------------------------------------

    def pending_messages(self, now: float) -> tuple[PendingMessage, ...]:
        """Messages waiting for a batch, oldest first (a snapshot for the scheduler).

        A daily slot waits until its day is over (its ``accepted_at`` is its release time):
        every crew member's slot of a day leaves together, whatever it holds."""
        if self.before_pending is not None:
            self.before_pending(now)
        with self.reading() as db:
            rows = db.execute(
                "SELECT message_seq, kind, crew, text_bytes, accepted_at, lang, "
                "COALESCE(LENGTH(CAST(body AS BLOB)), 0) + COALESCE(LENGTH(sealed), 0) "
                "FROM messages WHERE state = 'accepted' "
                "AND NOT (kind = 'grievance' AND accepted_at > ?) ORDER BY message_seq",
                (now,),
            ).fetchall()
        return tuple(
            PendingMessage(
                message_seq=row[0],
                kind=row[1],
                crew=row[2],
                text_bytes=row[3],
                accepted_at=row[4],
                lang=row[5],
                payload_bytes=row[6],
            )
            for row in rows
        )

    def has_downlink_ack_pending(self) -> bool:
        """Whether downlink batches arrived that no uplink batch has acknowledged yet."""
        with self.reading() as db:
            return bool(self._meta(db, "downlink_ack_pending"))

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def make_batch(
        self,
        message_seqs: Sequence[int],
        codebook: Codebook,
        signing_key: SigningKey,
        now: float,
    ) -> tuple[int, bytes]:
        """Put these accepted messages in a new signed batch and store its bytes.

        The batch also carries every contact-book change the shore has not heard yet and,
        when downlink batches arrived since the last one, a cumulative ``BatchAck``. The
        batch number is allocated in the same transaction that moves the messages to
        ``batched``. Raises :class:`NothingToSend` when there is nothing at all to say,
        :class:`~shipboard.errors.IllegalTransition` for a message that is not ``accepted``,
        and ``protocol.errors.LimitExceeded`` when the batch would be too big (nothing is
        stored then: ask for fewer messages).
        """
        minutes = int(now // 60)
        with self.transaction("make a batch") as db:
            messages = self._load_for_batch(db, message_seqs)
            contacts = db.execute(
                "SELECT contacts.contact, contacts.crew, channel, address, contacts.name, "
                "contacts.language, crew.name FROM contacts JOIN crew USING (crew) "
                "WHERE announced_in_batch IS NULL ORDER BY contacts.contact"
            ).fetchall()
            ack = (
                self._downlink_ack(db, minutes) if self._meta(db, "downlink_ack_pending") else None
            )
            if not messages and not contacts and ack is None:
                raise NothingToSend("no message, contact change or acknowledgement to send")
            cursor = db.execute(
                "INSERT INTO batches (data, link_bytes, state, made_at) VALUES (x'', 0, 'made', ?)",
                (now,),
            )
            batch_seq = cursor.lastrowid
            assert batch_seq is not None
            envelopes: list[Envelope] = [
                ContactBookChange(
                    crew=crew,
                    contact=contact,
                    channel=Channel.EMAIL if channel == "email" else Channel.SMS,
                    address=address,
                    written_minutes=minutes,
                    name=name or None,
                    contact_lang=Language.from_code(language) if language else None,
                    crew_name=crew_name,
                )
                for contact, crew, channel, address, name, language, crew_name in contacts
            ]
            if ack is not None:
                envelopes.append(ack)
            envelopes.extend(envelope for _, envelope in messages)
            data = encode_batch(
                envelopes,
                direction=Direction.UPLINK,
                vessel_id=self.vessel_id,
                batch_seq=batch_seq,
                batch_minutes=minutes,
                signing_key=signing_key,
                codebook=codebook,
            )
            db.execute(
                "UPDATE batches SET data = ?, link_bytes = ?, ack_only = ? WHERE batch_seq = ?",
                (data, len(data), int(acknowledges_only(envelopes)), batch_seq),
            )
            for seq, _ in messages:
                self._step(db, seq, MessageEvent.BATCH, now)
                db.execute(
                    "INSERT INTO batch_messages (batch_seq, message_seq) VALUES (?, ?)",
                    (batch_seq, seq),
                )
            db.executemany(
                "UPDATE contacts SET announced_in_batch = ? WHERE contact = ?",
                [(batch_seq, row[0]) for row in contacts],
            )
            if ack is not None:
                db.execute("UPDATE meta SET value = 0 WHERE key = 'downlink_ack_pending'")
                db.executemany(
                    "UPDATE downlink_refused SET announced_in_batch = ? WHERE batch_seq = ?",
                    [(batch_seq, seq) for seq, _ in ack.rejected or ()],
                )
        logger.info(
            "batch %d made: %d messages, %d contact changes, ack %s, %d bytes",
            batch_seq,
            len(messages),
            len(contacts),
            "yes" if ack else "no",
            len(data),
        )
        return batch_seq, data

    def _load_for_batch(
        self, db: sqlite3.Connection, message_seqs: Sequence[int]
    ) -> list[tuple[int, Envelope]]:
        loaded: list[tuple[int, Envelope]] = []
        for seq in dict.fromkeys(message_seqs):
            row = db.execute(
                "SELECT kind, crew, contact, union_id, lang, body, quick, sealed, latitude, "
                "longitude, accepted_at, state, typed_crew FROM messages WHERE message_seq = ?",
                (seq,),
            ).fetchone()
            if row is None:
                raise KeyError(f"message {seq} is not in the outbox")
            kind, crew, contact, union_id, lang, body, quick, sealed, lat, lon, at, state = row[:12]
            typed_crew = row[12]
            next_state(MessageState(state), MessageEvent.BATCH, seq)
            written = int(at // 60)
            language = Language.from_code(lang) if lang else None
            envelope: Envelope
            if kind == "message":
                envelope = CrewMessage(
                    message_seq=seq,
                    crew=crew,
                    contact=contact,
                    written_minutes=written,
                    lang=language,
                    body=body,
                    quick=quick,
                )
            elif kind == "grievance":
                envelope = GrievanceReport(
                    message_seq=seq, union=union_id, written_minutes=written, sealed=sealed
                )
            else:
                envelope = Sos(
                    message_seq=seq,
                    crew=crew if crew is not None else typed_crew,
                    written_minutes=written,
                    lang=language if body else None,
                    note=body,
                    position=(lat, lon) if lat is not None else None,
                    unauthenticated=True if crew is None else None,
                )
            loaded.append((seq, envelope))
        return loaded

    def _downlink_ack(self, db: sqlite3.Connection, minutes: int) -> BatchAck | None:
        seen = _seen_rows(db)
        if not seen.highest:
            return None
        refused = db.execute(
            "SELECT batch_seq, reason FROM downlink_refused WHERE announced_in_batch IS NULL "
            "ORDER BY batch_seq LIMIT ?",
            (MAX_ACK_REJECTED,),
        ).fetchall()
        return BatchAck(
            up_to=seen.up_to,
            written_minutes=minutes,
            ranges=seen.ranges[:MAX_ACK_RANGES] or None,
            rejected=tuple((int(seq), int(reason)) for seq, reason in refused) or None,
        )

    def unacknowledged_batches(self) -> tuple[StoredBatch, ...]:
        """Batches the shore has not acknowledged, oldest first: resend them byte-identical."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT batch_seq, data, made_at, send_count, ack_only FROM batches "
                "WHERE state IN ('made', 'sent') ORDER BY batch_seq"
            ).fetchall()
        return tuple(
            StoredBatch(row[0], bytes(row[1]), row[2], row[3], ack_only=bool(row[4]))
            for row in rows
        )

    def mark_sent(self, batch_seq: int, now: float) -> None:
        """Record that the broker took batch ``batch_seq`` (PUBACK): not yet the shore's ack."""
        with self.transaction("record the send") as db:
            row = db.execute(
                "SELECT state FROM batches WHERE batch_seq = ?", (batch_seq,)
            ).fetchone()
            if row is None:
                raise KeyError(f"batch {batch_seq} is not in the outbox")
            if row[0] in ("made", "sent"):
                db.execute(
                    "UPDATE batches SET state = 'sent', send_count = send_count + 1, "
                    "first_sent_at = COALESCE(first_sent_at, ?), last_sent_at = ? "
                    "WHERE batch_seq = ?",
                    (now, now, batch_seq),
                )
            for seq in self._batch_messages(db, batch_seq):
                self._step(db, seq, MessageEvent.SEND, now)
        logger.info("batch %d sent", batch_seq)

    @staticmethod
    def _batch_messages(db: sqlite3.Connection, batch_seq: int) -> list[int]:
        return [
            row[0]
            for row in db.execute(
                "SELECT message_seq FROM batch_messages WHERE batch_seq = ? ORDER BY message_seq",
                (batch_seq,),
            )
        ]

    _STEP_TIME: ClassVar[Mapping[MessageState, str]] = {
        MessageState.BATCHED: "batched_at",
        MessageState.SENT: "sent_at",
        MessageState.ACKNOWLEDGED: "acknowledged_at",
        MessageState.DELIVERED: "delivered_at",
        MessageState.FAILED: "failed_at",
    }

    def _step(
        self,
        db: sqlite3.Connection,
        seq: int,
        event: MessageEvent,
        now: float,
        *,
        reason: int | None = None,
        detail: str | None = None,
    ) -> MessageState | None:
        """Apply one event to one message; None if the message is not in the outbox."""
        row = db.execute("SELECT state FROM messages WHERE message_seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        old = MessageState(row[0])
        new = next_state(old, event, seq)
        if new is not old:
            column = self._STEP_TIME[new]
            db.execute(
                f"UPDATE messages SET state = ?, {column} = COALESCE({column}, ?) "
                "WHERE message_seq = ?",
                (new.value, now, seq),
            )
            if new is MessageState.FAILED:
                db.execute(
                    "UPDATE messages SET failure_reason = ?, failure_detail = ? "
                    "WHERE message_seq = ?",
                    (reason, detail, seq),
                )
        if new in (MessageState.DELIVERED, MessageState.ACKNOWLEDGED) and old in (
            MessageState.BATCHED,
        ):
            db.execute(
                "UPDATE messages SET sent_at = COALESCE(sent_at, ?) WHERE message_seq = ?",
                (now, seq),
            )
        return new

    def record_link_session(self, session: LinkSession) -> int:
        """Keep one link session for the monthly report (see shipboard.sessions_log)."""
        return record_session(self, session)

    def link_sessions_in(self, month: int) -> list[LinkSession]:
        """The link sessions that started in ``month`` (YYYYMM, UTC), oldest first."""
        return sessions_in(self, month)

    # downlink ----------------------------------------------------------------------------

    def apply_downlink(self, batch: Batch, now: float) -> DownlinkResult:
        """Apply a verified downlink batch in one transaction (duplicates change nothing).

        The caller decoded it with the shore's key. A batch for another vessel or in the
        wrong direction raises ``protocol.errors.MalformedBatch``. Any other error leaves
        nothing changed (the transaction rolls back); the caller may then refuse the batch
        for good with :meth:`refuse_downlink` (``shipboard.link`` does).
        """
        if batch.direction is not Direction.DOWNLINK or batch.vessel_id != self.vessel_id:
            raise MalformedBatch(
                f"batch {batch.batch_seq} to vessel {batch.vessel_id} "
                f"({batch.direction.name.lower()}) is not a downlink batch for vessel "
                f"{self.vessel_id}"
            )
        with self.transaction("apply a downlink batch") as db:
            seen = _seen_rows(db)
            db.execute("UPDATE meta SET value = 1 WHERE key = 'downlink_ack_pending'")
            if batch.batch_seq in seen:
                result = DownlinkResult(batch.batch_seq, duplicate=True)
            else:
                result = self._apply_envelopes(db, batch, now)
                seen.add(batch.batch_seq)
                db.execute("DELETE FROM downlink_seen")
                db.executemany(
                    "INSERT INTO downlink_seen (first, last) VALUES (?, ?)", _range_rows(seen)
                )
        logger.info(
            "downlink batch %d applied%s: %d batches acknowledged, %d receipts, %d inbox, "
            "%d ignored",
            batch.batch_seq,
            " (duplicate)" if result.duplicate else "",
            len(result.acknowledged_batches),
            result.receipts,
            result.inbox_entries,
            result.ignored,
        )
        return result

    def refuse_downlink(self, batch_seq: int, reason: Reason, now: float) -> bool:
        """Refuse authentic downlink batch ``batch_seq`` for good; whether it was new.

        The shore signed it, but it cannot be applied (it does not decode, or applying it
        failed). It counts as seen, so the next ``BatchAck`` covers it and the shore stops
        resending it, and that ``BatchAck`` names it with ``reason`` in its ``rejected``
        list. Nothing of it is applied. A batch already applied or refused is left as it
        is (False). Only call this for a batch whose signature verified: a forger must not
        be able to make the vessel skip a batch number the shore will use.
        """
        if batch_seq < 1:
            raise ValueError(f"downlink batches are numbered from 1, not {batch_seq}")
        with self.transaction("refuse a downlink batch") as db:
            seen = _seen_rows(db)
            if batch_seq in seen:
                return False
            seen.add(batch_seq)
            db.execute("DELETE FROM downlink_seen")
            db.executemany(
                "INSERT INTO downlink_seen (first, last) VALUES (?, ?)", _range_rows(seen)
            )
            db.execute(
                "INSERT INTO downlink_refused (batch_seq, reason, refused_at) VALUES (?, ?, ?)",
                (batch_seq, int(reason), now),
            )
            db.execute("UPDATE meta SET value = 1 WHERE key = 'downlink_ack_pending'")
        logger.info("downlink batch %d refused for good: %s", batch_seq, reason.name)
        return True

    def _apply_envelopes(self, db: sqlite3.Connection, batch: Batch, now: float) -> DownlinkResult:
        acknowledged: list[int] = []
        rejected: list[int] = []
        receipts = inbox = ignored = 0
        for envelope in batch.envelopes:
            if isinstance(envelope, BatchAck):
                acked, refused = self._apply_ack(db, envelope, now)
                acknowledged += acked
                rejected += refused
            elif isinstance(envelope, DeliveryReceipt):
                event = (
                    MessageEvent.DELIVERED
                    if envelope.stage is ReceiptStage.DELIVERED
                    else MessageEvent.ACCEPTED_ASHORE
                )
                if self._receipt(db, envelope.message_seq, event, now, envelope):
                    receipts += 1
                    inbox += 1
                else:
                    ignored += 1
            elif isinstance(envelope, DeliveryFailure):
                if self._receipt(db, envelope.message_seq, MessageEvent.FAILED, now, envelope):
                    receipts += 1
                    inbox += 1
                else:
                    ignored += 1
            elif isinstance(envelope, Reply):
                if self._reply(db, envelope, now):
                    inbox += 1
                else:
                    ignored += 1
            elif isinstance(envelope, CaseStatusUpdate) and (slot := _downlink_slot_of(envelope)):
                # a downlink slot: a case note or cover, nobody on board can tell which; kept
                # for the crew member it names, opened only with their reply key
                self._inbox(
                    db,
                    now,
                    envelope.written_minutes,
                    kind="slot",
                    crew=slot.crew if self._crew_exists(db, slot.crew) else None,
                    sealed_note=envelope.sealed_note,
                )
            elif isinstance(envelope, CaseStatusUpdate):
                self._inbox(
                    db,
                    now,
                    envelope.written_minutes,
                    kind="case",
                    case_seq=envelope.report_seq,
                    code=int(envelope.status),
                    stage=envelope.status.name.lower(),
                    sealed_note=envelope.sealed_note,
                )
                inbox += 1
            elif isinstance(envelope, QuotaNotice):
                self._inbox(
                    db,
                    now,
                    envelope.written_minutes,
                    kind="quota",
                    crew=envelope.crew if self._crew_exists(db, envelope.crew) else None,
                    code=envelope.month,
                    body=f"{envelope.used_bytes}/{envelope.quota_bytes}",
                )
                inbox += 1
            else:
                ignored += 1  # DictionaryUpdate and uplink kinds: not handled on board yet
        self._counters.ignored += ignored
        return DownlinkResult(
            batch.batch_seq,
            duplicate=False,
            acknowledged_batches=tuple(acknowledged),
            rejected_batches=tuple(rejected),
            receipts=receipts,
            inbox_entries=inbox,
            ignored=ignored,
        )

    @staticmethod
    def _crew_exists(db: sqlite3.Connection, crew: int) -> bool:
        return db.execute("SELECT 1 FROM crew WHERE crew = ?", (crew,)).fetchone() is not None

    def _apply_ack(
        self, db: sqlite3.Connection, ack: BatchAck, now: float
    ) -> tuple[list[int], list[int]]:
        refused = {int(seq): int(reason) for seq, reason in ack.rejected or ()}
        open_batches = [
            row[0]
            for row in db.execute("SELECT batch_seq FROM batches WHERE state IN ('made', 'sent')")
        ]
        acknowledged: list[int] = []
        rejected: list[int] = []
        for batch_seq in open_batches:
            if batch_seq in refused:
                code = refused[batch_seq]
                db.execute(
                    "UPDATE batches SET state = 'rejected', acked_at = ?, reject_reason = ? "
                    "WHERE batch_seq = ?",
                    (now, code, batch_seq),
                )
                detail = f"batch {batch_seq} refused by the relay: {_reason_name(code)}"
                for seq in self._batch_messages(db, batch_seq):
                    if not self._may_fail_with_batch(db, seq, batch_seq):
                        continue
                    self._step(
                        db,
                        seq,
                        MessageEvent.REJECTED,
                        now,
                        reason=int(FailureReason.REJECTED_BY_RELAY),
                        detail=detail,
                    )
                    self._stage_entry(
                        db, seq, now, int(now // 60), "failed", FailureReason.REJECTED_BY_RELAY
                    )
                # What the refused batch announced is announced again in the next one.
                db.execute(
                    "UPDATE contacts SET announced_in_batch = NULL WHERE announced_in_batch = ?",
                    (batch_seq,),
                )
                db.execute(
                    "UPDATE downlink_refused SET announced_in_batch = NULL "
                    "WHERE announced_in_batch = ?",
                    (batch_seq,),
                )
                logger.warning(
                    "batch %d refused by the relay (%s): its messages failed",
                    batch_seq,
                    _reason_name(code),
                )
                rejected.append(batch_seq)
            elif ack.covers(batch_seq):
                db.execute(
                    "UPDATE batches SET state = 'acked', acked_at = ? WHERE batch_seq = ?",
                    (now, batch_seq),
                )
                for seq in self._batch_messages(db, batch_seq):
                    self._step(db, seq, MessageEvent.SHORE_ACK, now)
                acknowledged.append(batch_seq)
        return acknowledged, rejected

    @staticmethod
    def _may_fail_with_batch(db: sqlite3.Connection, seq: int, batch_seq: int) -> bool:
        """Whether a message of refused batch ``batch_seq`` fails with it.

        Not when the shore already told us it has the message (acknowledged, delivered):
        its own receipt is better news than the refusal of the batch that carried it.
        """
        row = db.execute("SELECT state FROM messages WHERE message_seq = ?", (seq,)).fetchone()
        if row is None:
            return False
        state = MessageState(row[0])
        if (state, MessageEvent.REJECTED) in TRANSITIONS:
            return True
        logger.warning(
            "message %d of refused batch %d is %s already; left so", seq, batch_seq, state.value
        )
        return False

    def _receipt(
        self,
        db: sqlite3.Connection,
        seq: int,
        event: MessageEvent,
        now: float,
        envelope: DeliveryReceipt | DeliveryFailure,
    ) -> bool:
        row = db.execute(
            "SELECT state, contact FROM messages WHERE message_seq = ?", (seq,)
        ).fetchone()
        if row is None:
            logger.warning("receipt for unknown message %d ignored", seq)
            return False
        state = MessageState(row[0])
        if state is MessageState.ACCEPTED:
            # The shore cannot have it: a receipt for a message never batched is ignored.
            logger.warning("receipt for message %d that was never sent ignored", seq)
            return False
        reason = int(envelope.reason) if isinstance(envelope, DeliveryFailure) else None
        detail = envelope.detail if isinstance(envelope, DeliveryFailure) else None
        self._step(db, seq, event, now, reason=reason, detail=detail)
        if isinstance(envelope, DeliveryFailure):
            if envelope.reason is FailureReason.UNKNOWN_CONTACT and row[1] is not None:
                db.execute(
                    "UPDATE contacts SET announced_in_batch = NULL WHERE contact = ?", (row[1],)
                )
            self._stage_entry(
                db, seq, now, envelope.written_minutes, "failed", envelope.reason, detail
            )
        else:
            stage = "delivered" if event is MessageEvent.DELIVERED else "accepted_ashore"
            self._stage_entry(db, seq, now, envelope.written_minutes, stage, None)
        return True

    def _stage_entry(
        self,
        db: sqlite3.Connection,
        seq: int,
        now: float,
        written_minutes: int,
        stage: str,
        reason: FailureReason | None,
        detail: str | None = None,
    ) -> None:
        row = db.execute("SELECT crew FROM messages WHERE message_seq = ?", (seq,)).fetchone()
        self._inbox(
            db,
            now,
            written_minutes,
            kind="stage",
            crew=row[0] if row else None,
            message_seq=seq,
            stage=stage,
            code=int(reason) if reason is not None else None,
            body=detail,
        )

    def _reply(self, db: sqlite3.Connection, reply: Reply, now: float) -> bool:
        if db.execute(
            "SELECT 1 FROM reply_seen WHERE reply_seq = ?", (reply.reply_seq,)
        ).fetchone():
            return False
        db.execute("INSERT INTO reply_seen (reply_seq) VALUES (?)", (reply.reply_seq,))
        if not self._crew_exists(db, reply.crew):
            logger.warning("reply %d for unknown crew member ignored", reply.reply_seq)
            return False
        self._inbox(
            db,
            now,
            reply.written_minutes,
            kind="reply",
            crew=reply.crew,
            contact=reply.contact,
            lang=reply.lang.code,
            body=reply.body,
            truncated=1 if reply.truncated else 0,
            code=reply.reply_seq,
        )
        return True

    @staticmethod
    def _inbox(db: sqlite3.Connection, now: float, written_minutes: int, **columns: object) -> None:
        columns["written_minutes"] = written_minutes
        columns["at"] = now
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        db.execute(f"INSERT INTO inbox ({names}) VALUES ({marks})", tuple(columns.values()))

    # what the crew web page reads --------------------------------------------------------

    def my_cases(self, case_key: bytes) -> list[int]:
        """Message numbers of the grievance reports filed by the holder of ``case_key``."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT message_seq, reporter_tag FROM messages WHERE kind = 'grievance'"
            ).fetchall()
        return [
            seq
            for seq, tag in rows
            if tag is not None and hmac.compare_digest(bytes(tag), reporter_tag(case_key, seq))
        ]

    def inbox(self, crew: int, case_seqs: Sequence[int] = ()) -> list[dict[str, object]]:
        """The crew member's inbox (receipts, replies, quota notices, their cases), newest first."""
        marks = ", ".join("?" for _ in case_seqs) or "NULL"
        with self.reading() as db:
            db.row_factory = sqlite3.Row
            try:
                rows = db.execute(
                    "SELECT entry, kind, message_seq, case_seq, stage, code, contact, lang, "
                    "body, truncated, written_minutes, at FROM inbox "
                    f"WHERE kind != 'slot' AND (crew = ? OR case_seq IN ({marks}) "
                    f"OR message_seq IN ({marks})) "
                    "ORDER BY entry DESC LIMIT 500",
                    (crew, *case_seqs, *case_seqs),
                ).fetchall()
            finally:
                db.row_factory = None
        return [dict(row) for row in rows]

    def slot_items(self, crew: int) -> list[tuple[bytes, float]]:
        """The downlink slot items for a crew member, oldest first: (item, at). Each holds a
        case note sealed to their reply key, or cover (which opens for nobody)."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT sealed_note, at FROM inbox WHERE kind = 'slot' AND crew = ? ORDER BY entry",
                (crew,),
            ).fetchall()
        return [(bytes(item), float(at)) for item, at in rows if item is not None]

    def case_notes(self, case_seq: int) -> list[tuple[int, bytes, float]]:
        """A case's updates from the union, oldest first: (stage code, sealed note, at).

        The notes are sealed to the reporter's reply key; only they open them."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT code, sealed_note, at FROM inbox WHERE kind = 'case' AND case_seq = ? "
                "ORDER BY entry",
                (case_seq,),
            ).fetchall()
        return [(int(code), bytes(note or b""), float(at)) for code, note, at in rows]

    def message_stages(self, seq: int) -> dict[str, object] | None:
        """One message's state, the time of each step and any failure (no text)."""
        with self.reading() as db:
            db.row_factory = sqlite3.Row
            try:
                row = db.execute(
                    "SELECT message_seq, kind, crew, contact, state, text_bytes, accepted_at, "
                    "batched_at, sent_at, acknowledged_at, delivered_at, failed_at, "
                    "failure_reason, failure_detail, reporter_tag FROM messages "
                    "WHERE message_seq = ?",
                    (seq,),
                ).fetchone()
            finally:
                db.row_factory = None
        return dict(row) if row is not None else None

    def statistics(self) -> OutboxStatistics:
        """Counters for the status page (no content, no names)."""
        with self.reading() as db:
            by_state = {
                str(state): int(count)
                for state, count in db.execute(
                    "SELECT state, COUNT(*) FROM messages GROUP BY state"
                )
            }
            unacked, total, link_bytes = db.execute(
                "SELECT COALESCE(SUM(state IN ('made', 'sent')), 0), COUNT(*), "
                "COALESCE(SUM(link_bytes), 0) FROM batches"
            ).fetchone()
            applied = db.execute(
                "SELECT COALESCE(SUM(last - first + 1), 0) FROM downlink_seen"
            ).fetchone()[0]
            pending = self._meta(db, "downlink_ack_pending")
        return OutboxStatistics(
            messages_by_state=by_state,
            batches_unacknowledged=int(unacked),
            batches_total=int(total),
            link_bytes_made=int(link_bytes),
            downlink_batches_applied=int(applied),
            downlink_ack_pending=bool(pending),
            ignored_downlink_envelopes=self._counters.ignored,
        )


def _reason_name(code: int) -> str:
    """The name of a refusal's reason code (``LIMIT_EXCEEDED``), or the code if unknown."""
    try:
        return Reason(code).name
    except ValueError:
        return f"reason {code}"


def _downlink_slot_of(envelope: CaseStatusUpdate) -> SlotHeader | None:
    """The header of a downlink slot item (``report_seq`` 0), else None."""
    if envelope.report_seq != 0 or envelope.sealed_note is None:
        return None
    found = downlink_slot_notes(envelope.sealed_note)
    return None if found is None else found[0]
