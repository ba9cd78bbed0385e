"""Store logic in portable SQL, shared by the SQLite and PostgreSQL backends.

Queries are written once, with ``$1``-style parameters (asyncpg's; the SQLite backend
turns them into ``?1``). A backend provides :meth:`SqlStore._transaction`, yielding a
:class:`Tx`, and a :class:`Dialect` (column types for the schema, row locks). Migrations
are named, recorded in ``schema_migrations`` and each runs in one transaction.

Per-vessel serialisation: every transaction that changes a vessel's link state first
locks its ``vessel_link`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serialises writers), so two relay workers never interleave
the ingest of one vessel's batches.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.batch import Batch
from protocol.cbor import dumps, strict_loads
from protocol.envelopes import (
    BatchAck,
    CaseStatus,
    CaseStatusUpdate,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    FailureReason,
    GrievanceReport,
    ReceiptStage,
    Reply,
    Sos,
    acknowledges_only,
    from_skeleton,
    to_skeleton,
)
from protocol.errors import Reason
from protocol.languages import Language
from protocol.replay import RangeSet
from protocol.slots import SLOT_MAGIC, slot_header
from shore.delivery import Destination, FinalOutcome, receipt_for
from shore.store import (
    ContactRecord,
    Delivery,
    DeliveryKey,
    DeliveryRecord,
    DownlinkBatch,
    DownlinkEncoder,
    IngestOutcome,
    IngestResult,
    MessageRecord,
    PhraseLookup,
    QuarantineEntry,
    RegistryError,
    ReplayWindow,
    SlotItemMaker,
    VesselInfo,
    VesselKey,
    VesselRecord,
)
from shore.transparency import LOG_MIGRATION, append_leaf

log = logging.getLogger(__name__)

Row = tuple[Any, ...]

#: Raw bytes kept of a refused payload (an oversized one is cut; its hash and size stay).
QUARANTINE_KEEP_BYTES = 64 * 1024
#: A claimed delivery returns to the queue after this long without an outcome.
DEFAULT_LEASE_S = 600.0
#: How long a delivery may take, from acceptance ashore (shore.retry's policy decides too).
DEFAULT_DEADLINE_S = 3 * 24 * 3600.0
#: Ack levels in vessel_link.ack_pending: none, with the next batch, send one now.
ACK_NONE, ACK_LAZY, ACK_URGENT = 0, 1, 2


class Tx(Protocol):
    """One open transaction (rows come back as tuples)."""

    async def execute(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the backends."""

    name: str
    int_type: str
    real_type: str
    blob_type: str
    serial_pk: str
    #: Appended to a SELECT that locks the rows it reads ("" where writers are serialised).
    for_update: str
    #: Appended to the delivery claim so that workers skip each other's rows.
    skip_locked: str


MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE vessels (
            vessel_id {int} PRIMARY KEY,
            name TEXT NOT NULL,
            flag TEXT NOT NULL,
            registration TEXT NOT NULL,
            owner TEXT NOT NULL,
            added_at {real} NOT NULL,
            UNIQUE (flag, registration)
        );
        CREATE TABLE vessel_keys (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            public_key {blob} NOT NULL,
            valid_from {real} NOT NULL,
            revoked_at {real},
            PRIMARY KEY (vessel_id, public_key)
        );
        CREATE TABLE vessel_unions (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            union_id {int} NOT NULL,
            PRIMARY KEY (vessel_id, union_id)
        );
        CREATE TABLE vessel_link (
            vessel_id {int} PRIMARY KEY REFERENCES vessels (vessel_id),
            uplink_up_to {int} NOT NULL DEFAULT 0,
            uplink_ranges TEXT NOT NULL DEFAULT '',
            next_downlink_seq {int} NOT NULL DEFAULT 1,
            next_reply_seq {int} NOT NULL DEFAULT 1,
            ack_pending {int} NOT NULL DEFAULT 0,
            last_heard_at {real}
        );
        CREATE TABLE batches (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            batch_seq {int} NOT NULL,
            sha256 {blob} NOT NULL,
            link_bytes {int} NOT NULL,
            batch_minutes {int} NOT NULL,
            envelopes {int} NOT NULL,
            has_content {int} NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('stored', 'rejected')),
            received_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, batch_seq)
        );
        CREATE TABLE messages (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            message_seq {int} NOT NULL,
            batch_seq {int} NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('message', 'grievance', 'sos')),
            crew {int},
            contact {int},
            union_id {int},
            lang {int},
            body TEXT,
            quick {int},
            sealed {blob},
            latitude {int},
            longitude {int},
            written_minutes {int} NOT NULL,
            accepted_at {real} NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('accepted', 'delivered', 'failed', 'alert')),
            state_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, message_seq)
        );
        CREATE TABLE contacts (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            crew {int} NOT NULL,
            contact {int} NOT NULL,
            channel {int} NOT NULL,
            address TEXT NOT NULL,
            name TEXT,
            lang {int},
            crew_name TEXT,
            changed_minutes {int} NOT NULL,
            updated_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, crew, contact)
        );
        CREATE INDEX contacts_by_address ON contacts (channel, address);
        CREATE TABLE quarantine (
            quarantine_id {serial_pk},
            sha256 {blob} NOT NULL UNIQUE,
            raw {blob} NOT NULL,
            link_bytes {int} NOT NULL,
            reason {int} NOT NULL,
            message TEXT NOT NULL,
            vessel_id {int},
            batch_seq {int},
            first_at {real} NOT NULL,
            last_at {real} NOT NULL,
            times {int} NOT NULL DEFAULT 1
        );
        CREATE TABLE uplink_rejections (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            batch_seq {int} NOT NULL,
            reason {int} NOT NULL,
            carried_in {int},
            PRIMARY KEY (vessel_id, batch_seq)
        );
        CREATE TABLE deliveries (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            due_at {real} NOT NULL,
            deadline_at {real} NOT NULL,
            claimed_by TEXT,
            lease_until {real},
            unfinished {int} NOT NULL DEFAULT 0,
            last_attempt_at {real},
            outcome TEXT CHECK (outcome IN ('delivered', 'failed')),
            reason {int},
            detail TEXT,
            finished_at {real},
            PRIMARY KEY (vessel_id, message_seq),
            FOREIGN KEY (vessel_id, message_seq) REFERENCES messages (vessel_id, message_seq)
        );
        CREATE INDEX deliveries_due ON deliveries (due_at) WHERE outcome IS NULL;
        CREATE TABLE union_inbox (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            union_id {int} NOT NULL,
            sealed {blob} NOT NULL,
            received_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, message_seq)
        );
        CREATE TABLE downlink_items (
            item_id {serial_pk},
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            kind {int} NOT NULL,
            skeleton {blob} NOT NULL,
            text TEXT,
            dedupe TEXT,
            created_at {real} NOT NULL,
            downlink_seq {int},
            UNIQUE (vessel_id, dedupe)
        );
        CREATE INDEX downlink_items_pending ON downlink_items (vessel_id, item_id)
            WHERE downlink_seq IS NULL;
        CREATE TABLE downlink_batches (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            downlink_seq {int} NOT NULL,
            data {blob} NOT NULL,
            items {int} NOT NULL,
            made_at {real} NOT NULL,
            last_sent_at {real},
            send_count {int} NOT NULL DEFAULT 0,
            acked_at {real},
            PRIMARY KEY (vessel_id, downlink_seq)
        );
        CREATE INDEX downlink_batches_open ON downlink_batches (vessel_id, downlink_seq)
            WHERE acked_at IS NULL;
        """,
    ),
    (
        "0002_sos_alerts",
        """
        CREATE TABLE sos_alerts (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            contact TEXT NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            due_at {real} NOT NULL,
            outcome TEXT CHECK (outcome IN ('delivered', 'failed')),
            detail TEXT,
            finished_at {real},
            PRIMARY KEY (vessel_id, message_seq, contact),
            FOREIGN KEY (vessel_id, message_seq) REFERENCES messages (vessel_id, message_seq)
        );
        CREATE INDEX sos_alerts_due ON sos_alerts (due_at) WHERE outcome IS NULL;
        CREATE INDEX messages_sos_open ON messages (vessel_id, message_seq)
            WHERE kind = 'sos' AND state = 'alert';
        """,
    ),
    LOG_MIGRATION,  # the transparency log of compliance reports (shore.transparency)
    (
        "0004_downlink_slot_notes",
        """
        CREATE TABLE slot_notes (
            note_id {serial_pk},
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            crew {int} NOT NULL,
            sealed_note {blob} NOT NULL,
            queued_at {real} NOT NULL,
            carried_period {int}
        );
        CREATE INDEX slot_notes_waiting ON slot_notes (vessel_id, crew, note_id)
            WHERE carried_period IS NULL;
        """,
    ),
    (
        "0005_sos_unauthenticated",
        # 1 for an SOS sent without a PIN (protocol.envelopes.Sos.unauthenticated): its
        # crew number is only what was typed, and the alert says so
        "ALTER TABLE messages ADD COLUMN unauthenticated {int}",
    ),
)


def schema_statements(sql: str, dialect: Dialect) -> list[str]:
    """One migration's statements, with the dialect's column types filled in."""
    text = sql.format(
        int=dialect.int_type,
        real=dialect.real_type,
        blob=dialect.blob_type,
        serial_pk=dialect.serial_pk,
    )
    return [part.strip() for part in text.split(";") if part.strip()]


# --- the replay window's ranges (protocol.replay.RangeSet), as stored -----------------------


def add_to_window(window: ReplayWindow, seq: int) -> ReplayWindow:
    """The window with ``seq`` added, ranges merged into ``up_to`` where they touch it."""
    if window.covers(seq):
        return window
    seen = RangeSet(window.up_to, window.ranges)
    seen.add(seq)
    return ReplayWindow(seen.up_to, seen.ranges)


def format_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    """Ranges as stored: ``"5-7,9-9"``."""
    return ",".join(f"{a}-{b}" for a, b in ranges)


def parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """Ranges from :func:`format_ranges`."""
    if not text:
        return ()
    pairs = (part.split("-") for part in text.split(","))
    return tuple((int(a), int(b)) for a, b in pairs)


# --- envelopes kept in the downlink queue --------------------------------------------------


def envelope_to_row(envelope: Envelope) -> tuple[int, bytes, str | None]:
    """(kind, skeleton CBOR, text) of an envelope, as the downlink queue keeps it."""
    return int(envelope.KIND), dumps(to_skeleton(envelope, 0)), envelope.text


def envelope_from_row(skeleton: bytes, text: str | None) -> Envelope:
    """The envelope that :func:`envelope_to_row` stored."""
    entry = strict_loads(skeleton, max_depth=5, max_length=4096, what="queued envelope")
    return from_skeleton(entry, 0, text)


def _reason_name(code: int) -> str:
    """A reason code's name (``LIMIT_EXCEEDED``), or the code if this version lacks it."""
    try:
        return Reason(code).name
    except ValueError:
        return f"reason {code}"


def _kind_of(envelope: Envelope) -> str | None:
    if isinstance(envelope, CrewMessage):
        return "message"
    if isinstance(envelope, GrievanceReport):
        return "grievance"
    if isinstance(envelope, Sos):
        return "sos"
    return None


def _lang(value: object) -> Language | None:
    return None if value is None else Language(int(str(value)))


def _f(value: object) -> float | None:
    return None if value is None else float(str(value))


@dataclass(frozen=True, slots=True)
class SosAlertDue:
    """One SOS alert to send to one rescue or union contact (``contact``: "email:ADDR" or
    "sms:NUMBER"), with what the alert says."""

    vessel_id: int
    message_seq: int
    contact: str
    attempts: int
    vessel_name: str
    flag: str
    registration: str
    crew: int | None
    crew_name: str | None
    note: str | None
    lang: Language | None
    position: tuple[int, int] | None
    written_minutes: int
    accepted_at: float
    #: Sent without a PIN: ``crew`` is only the number typed (0: none), nobody proved it.
    unauthenticated: bool = False


@dataclass(frozen=True, slots=True)
class SosAlertRecord:
    """An SOS alert's state, for the operator and tests."""

    vessel_id: int
    message_seq: int
    contact: str
    attempts: int
    outcome: str | None
    detail: str | None


# --- the store ---------------------------------------------------------------------------


class SqlStore:
    """The store over any backend that provides transactions (see the module docstring)."""

    dialect: Dialect

    def __init__(
        self,
        *,
        phrases: PhraseLookup | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.phrases = phrases
        self.lease_s = lease_s
        self.deadline_s = deadline_s

    def _transaction(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _migrate(self) -> None:
        async with self._transaction() as tx:
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                f"(name TEXT PRIMARY KEY, applied_at {self.dialect.real_type} NOT NULL)"
            )
        for name, sql in MIGRATIONS:
            async with self._transaction() as tx:
                await self._lock_migrations(tx)
                done = await tx.fetchrow("SELECT 1 FROM schema_migrations WHERE name = $1", name)
                if done is not None:
                    continue
                for statement in schema_statements(sql, self.dialect):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)",
                    name,
                    time.time(),
                )
                log.info("store migration %s applied", name)

    async def _lock_migrations(self, tx: Tx) -> None:
        """Keep two processes from migrating at once (PostgreSQL overrides this)."""

    # registry ----------------------------------------------------------------------------

    async def add_vessel(
        self, info: VesselInfo, public_key: bytes, now: float, vessel_id: int | None = None
    ) -> int:
        async with self._transaction() as tx:
            clash = await tx.fetchrow(
                "SELECT vessel_id FROM vessels WHERE flag = $1 AND registration = $2",
                info.flag,
                info.registration,
            )
            if clash is not None:
                raise RegistryError(
                    f"a vessel with flag {info.flag} and registration {info.registration} "
                    f"is already registered as vessel {clash[0]}"
                )
            if vessel_id is None:
                row = await tx.fetchrow("SELECT COALESCE(MAX(vessel_id), 0) + 1 FROM vessels")
                assert row is not None
                vessel_id = int(row[0])
            elif await tx.fetchrow("SELECT 1 FROM vessels WHERE vessel_id = $1", vessel_id):
                raise RegistryError(f"vessel id {vessel_id} is already taken")
            await tx.execute(
                "INSERT INTO vessels (vessel_id, name, flag, registration, owner, added_at) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                vessel_id,
                info.name,
                info.flag,
                info.registration,
                info.owner,
                float(now),
            )
            await tx.execute(
                "INSERT INTO vessel_keys (vessel_id, public_key, valid_from) VALUES ($1, $2, $3)",
                vessel_id,
                public_key,
                float(now),
            )
            await tx.execute("INSERT INTO vessel_link (vessel_id) VALUES ($1)", vessel_id)
            await tx.executemany(
                "INSERT INTO vessel_unions (vessel_id, union_id) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                [(vessel_id, union) for union in info.unions],
            )
        return vessel_id

    async def get_vessel(self, vessel_id: int) -> VesselRecord | None:
        found = await self._vessels("WHERE v.vessel_id = $1", vessel_id)
        return found[0] if found else None

    async def list_vessels(self) -> Sequence[VesselRecord]:
        return await self._vessels("")

    async def _vessels(self, where: str, *args: Any) -> list[VesselRecord]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT v.vessel_id, name, flag, registration, owner, added_at, last_heard_at "
                f"FROM vessels v JOIN vessel_link l ON l.vessel_id = v.vessel_id {where} "
                "ORDER BY v.vessel_id",
                *args,
            )
            records = []
            for vid, name, flag, registration, owner, added_at, heard in rows:
                keys = await tx.fetch(
                    "SELECT public_key, valid_from, revoked_at FROM vessel_keys "
                    "WHERE vessel_id = $1 ORDER BY valid_from, public_key",
                    vid,
                )
                unions = await tx.fetch(
                    "SELECT union_id FROM vessel_unions WHERE vessel_id = $1 ORDER BY union_id",
                    vid,
                )
                records.append(
                    VesselRecord(
                        vessel_id=int(vid),
                        info=VesselInfo(
                            name, flag, registration, owner, tuple(int(u[0]) for u in unions)
                        ),
                        added_at=float(added_at),
                        keys=tuple(
                            VesselKey(bytes(k), float(since), _f(revoked))
                            for k, since, revoked in keys
                        ),
                        last_heard_at=_f(heard),
                    )
                )
        return records

    async def _require_vessel(self, tx: Tx, vessel_id: int) -> None:
        if await tx.fetchrow("SELECT 1 FROM vessels WHERE vessel_id = $1", vessel_id) is None:
            raise RegistryError(f"vessel {vessel_id} is not registered; see 'shore vessel list'")

    async def add_vessel_key(
        self, vessel_id: int, public_key: bytes, valid_from: float, now: float
    ) -> None:
        async with self._transaction() as tx:
            await self._require_vessel(tx, vessel_id)
            await tx.execute(
                "INSERT INTO vessel_keys (vessel_id, public_key, valid_from) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                vessel_id,
                public_key,
                float(valid_from),
            )

    async def revoke_vessel_key(self, vessel_id: int, public_key: bytes, at: float) -> None:
        async with self._transaction() as tx:
            await self._require_vessel(tx, vessel_id)
            row = await tx.fetchrow(
                "SELECT revoked_at FROM vessel_keys WHERE vessel_id = $1 AND public_key = $2",
                vessel_id,
                public_key,
            )
            if row is None:
                raise RegistryError(
                    f"vessel {vessel_id} has no key {public_key.hex()[:12]}...; "
                    "see 'shore vessel show'"
                )
            if row[0] is None or float(row[0]) > at:
                await tx.execute(
                    "UPDATE vessel_keys SET revoked_at = $3 "
                    "WHERE vessel_id = $1 AND public_key = $2",
                    vessel_id,
                    public_key,
                    float(at),
                )

    async def set_vessel_unions(self, vessel_id: int, unions: Sequence[int]) -> None:
        async with self._transaction() as tx:
            await self._require_vessel(tx, vessel_id)
            await tx.execute("DELETE FROM vessel_unions WHERE vessel_id = $1", vessel_id)
            await tx.executemany(
                "INSERT INTO vessel_unions (vessel_id, union_id) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                [(vessel_id, int(u)) for u in unions],
            )

    # ingest --------------------------------------------------------------------------------

    async def stored_batch_hash(self, vessel_id: int, batch_seq: int) -> bytes | None:
        async with self._transaction() as tx:
            row = await tx.fetchrow(
                "SELECT sha256 FROM batches WHERE vessel_id = $1 AND batch_seq = $2",
                vessel_id,
                batch_seq,
            )
        return None if row is None else bytes(row[0])

    async def _lock_link(self, tx: Tx, vessel_id: int) -> Row:
        row = await tx.fetchrow(
            "SELECT uplink_up_to, uplink_ranges, next_downlink_seq, next_reply_seq, ack_pending, "
            f"last_heard_at FROM vessel_link WHERE vessel_id = $1{self.dialect.for_update}",
            vessel_id,
        )
        if row is None:
            raise RegistryError(f"vessel {vessel_id} is not registered")
        return row

    async def _want_ack(self, tx: Tx, vessel_id: int, level: int, now: float) -> None:
        await tx.execute(
            "UPDATE vessel_link SET ack_pending = CASE WHEN ack_pending > $2 "
            "THEN ack_pending ELSE $2 END, last_heard_at = $3 WHERE vessel_id = $1",
            vessel_id,
            level,
            float(now),
        )

    async def _see_batch(self, tx: Tx, vessel_id: int, link: Row, batch_seq: int) -> None:
        window = add_to_window(ReplayWindow(int(link[0]), parse_ranges(link[1])), batch_seq)
        await tx.execute(
            "UPDATE vessel_link SET uplink_up_to = $2, uplink_ranges = $3 WHERE vessel_id = $1",
            vessel_id,
            window.up_to,
            format_ranges(window.ranges),
        )

    async def ingest_batch(self, batch: Batch, data: bytes, now: float) -> IngestResult:
        vessel_id, batch_seq = batch.vessel_id, batch.batch_seq
        digest = hashlib.sha256(data).digest()
        has_content = not acknowledges_only(batch.envelopes)
        async with self._transaction() as tx:
            link = await self._lock_link(tx, vessel_id)
            stored = await tx.fetchrow(
                "SELECT sha256, has_content FROM batches WHERE vessel_id = $1 AND batch_seq = $2",
                vessel_id,
                batch_seq,
            )
            if stored is not None:
                if bytes(stored[0]) == digest:
                    level = ACK_URGENT if stored[1] else ACK_LAZY
                    await self._want_ack(tx, vessel_id, level, now)
                    await self._repeat_rejection(tx, vessel_id, batch_seq)
                    return IngestResult(IngestOutcome.DUPLICATE, vessel_id, batch_seq)
                message = (
                    f"batch {batch_seq} from vessel {vessel_id} reuses a stored batch number "
                    "with other bytes (did the vessel lose its outbox?)"
                )
                await self._quarantine(
                    tx, data, Reason.REPLAYED, message, now, vessel_id, batch_seq
                )
                await self._reject(tx, vessel_id, batch_seq, Reason.REPLAYED)
                await self._want_ack(tx, vessel_id, ACK_URGENT, now)
                return IngestResult(
                    IngestOutcome.REJECTED, vessel_id, batch_seq, reason=Reason.REPLAYED
                )
            await tx.execute(
                "INSERT INTO batches (vessel_id, batch_seq, sha256, link_bytes, batch_minutes, "
                "envelopes, has_content, state, received_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, 'stored', $8) ON CONFLICT DO NOTHING",
                vessel_id,
                batch_seq,
                digest,
                len(data),
                batch.batch_minutes,
                len(batch.envelopes),
                1 if has_content else 0,
                float(now),
            )
            contacts = 0
            for envelope in batch.envelopes:
                if isinstance(envelope, ContactBookChange):
                    await self._upsert_contact(tx, vessel_id, envelope, now)
                    contacts += 1
            new = duplicate = acked = 0
            stored_now: list[Envelope] = []
            for envelope in batch.envelopes:
                if isinstance(envelope, BatchAck):
                    acked += await self._apply_downlink_ack(tx, vessel_id, envelope, now)
                elif _kind_of(envelope) is not None:
                    if await self._insert_message(tx, vessel_id, batch_seq, envelope, now):
                        new += 1
                        stored_now.append(envelope)
                    else:
                        duplicate += 1
            # Same transaction: the batch is stored if and only if its leaf is in the log.
            await append_leaf(tx, self.dialect.for_update, batch, digest, now, stored_now)
            await self._see_batch(tx, vessel_id, link, batch_seq)
            await self._want_ack(tx, vessel_id, ACK_URGENT if has_content else ACK_LAZY, now)
        return IngestResult(
            IngestOutcome.STORED,
            vessel_id,
            batch_seq,
            new_messages=new,
            duplicate_messages=duplicate,
            contacts=contacts,
            downlink_acked=acked,
        )

    async def _upsert_contact(
        self, tx: Tx, vessel_id: int, change: ContactBookChange, now: float
    ) -> None:
        # An older change (a batch replayed late) never overwrites a newer one.
        await tx.execute(
            "INSERT INTO contacts (vessel_id, crew, contact, channel, address, name, lang, "
            "crew_name, changed_minutes, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (vessel_id, crew, contact) DO UPDATE SET channel = excluded.channel, "
            "address = excluded.address, name = excluded.name, lang = excluded.lang, "
            "crew_name = excluded.crew_name, changed_minutes = excluded.changed_minutes, "
            "updated_at = excluded.updated_at "
            "WHERE contacts.changed_minutes <= excluded.changed_minutes",
            vessel_id,
            change.crew,
            change.contact,
            int(change.channel),
            change.address,
            change.name,
            None if change.contact_lang is None else int(change.contact_lang),
            change.crew_name,
            change.written_minutes,
            float(now),
        )

    async def _insert_message(
        self, tx: Tx, vessel_id: int, batch_seq: int, envelope: Envelope, now: float
    ) -> bool:
        kind = _kind_of(envelope)
        crew = contact = union = lang = quick = lat = lon = unauthenticated = None
        body: str | None = None
        sealed: bytes | None = None
        if isinstance(envelope, CrewMessage):
            seq, crew, contact, quick = (
                envelope.message_seq,
                envelope.crew,
                envelope.contact,
                envelope.quick,
            )
            body, lang = envelope.body, envelope.lang
        elif isinstance(envelope, GrievanceReport):
            seq, union, sealed = envelope.message_seq, envelope.union, envelope.sealed
        else:
            assert isinstance(envelope, Sos)
            seq, crew, body, lang = (
                envelope.message_seq,
                envelope.crew,
                envelope.note,
                envelope.lang,
            )
            if envelope.position is not None:
                lat, lon = envelope.position
            unauthenticated = 1 if envelope.unauthenticated else None
        state = "alert" if kind == "sos" else "accepted"
        inserted = await tx.fetchrow(
            "INSERT INTO messages (vessel_id, message_seq, batch_seq, kind, crew, contact, "
            "union_id, lang, body, quick, sealed, latitude, longitude, written_minutes, "
            "accepted_at, state, state_at, unauthenticated) VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $15, $17) "
            "ON CONFLICT DO NOTHING RETURNING message_seq",
            vessel_id,
            seq,
            batch_seq,
            kind,
            crew,
            contact,
            union,
            None if lang is None else int(lang),
            body,
            quick,
            sealed,
            lat,
            lon,
            envelope.written_minutes,
            float(now),
            state,
            unauthenticated,
        )
        if inserted is None:
            return False
        if kind != "sos":
            await tx.execute(
                "INSERT INTO deliveries (vessel_id, message_seq, due_at, deadline_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                vessel_id,
                seq,
                float(now),
                float(now) + self.deadline_s,
            )
        receipt = DeliveryReceipt(seq, ReceiptStage.ACCEPTED_ASHORE, int(now // 60))
        await self._queue(tx, vessel_id, receipt, now, f"a{seq}")
        return True

    async def _apply_downlink_ack(self, tx: Tx, vessel_id: int, ack: BatchAck, now: float) -> int:
        rows = await tx.fetch(
            "SELECT downlink_seq FROM downlink_batches WHERE vessel_id = $1 AND acked_at IS NULL",
            vessel_id,
        )
        covered = [(vessel_id, int(r[0]), float(now)) for r in rows if ack.covers(int(r[0]))]
        open_seqs = {int(r[0]) for r in rows}
        for seq, reason in ack.rejected or ():
            if seq in open_seqs:  # the vessel refused it for good; its BatchAck covers it
                log.warning(
                    "vessel %d refused downlink batch %d for good: %s",
                    vessel_id,
                    seq,
                    _reason_name(reason),
                )
        await tx.executemany(
            "UPDATE downlink_batches SET acked_at = $3 WHERE vessel_id = $1 AND downlink_seq = $2",
            covered,
        )
        return len(covered)

    async def _reject(self, tx: Tx, vessel_id: int, batch_seq: int, reason: Reason) -> None:
        await tx.execute(
            "INSERT INTO uplink_rejections (vessel_id, batch_seq, reason) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            vessel_id,
            batch_seq,
            int(reason),
        )

    async def _repeat_rejection(self, tx: Tx, vessel_id: int, batch_seq: int) -> None:
        await tx.execute(
            "UPDATE uplink_rejections SET carried_in = NULL "
            "WHERE vessel_id = $1 AND batch_seq = $2",
            vessel_id,
            batch_seq,
        )

    async def reject_batch(
        self, vessel_id: int, batch_seq: int, reason: Reason, message: str, data: bytes, now: float
    ) -> None:
        async with self._transaction() as tx:
            link = await self._lock_link(tx, vessel_id)
            await self._quarantine(tx, data, reason, message, now, vessel_id, batch_seq)
            # Refused for good counts as seen: the cumulative acknowledgement moves past it.
            await self._see_batch(tx, vessel_id, link, batch_seq)
            existing = await tx.fetchrow(
                "SELECT 1 FROM uplink_rejections WHERE vessel_id = $1 AND batch_seq = $2",
                vessel_id,
                batch_seq,
            )
            if existing is not None:
                await self._repeat_rejection(tx, vessel_id, batch_seq)
            else:
                await self._reject(tx, vessel_id, batch_seq, reason)
            await self._want_ack(tx, vessel_id, ACK_URGENT, now)

    async def quarantine(
        self,
        data: bytes,
        reason: Reason,
        message: str,
        now: float,
        vessel_id: int | None = None,
        batch_seq: int | None = None,
    ) -> None:
        async with self._transaction() as tx:
            await self._quarantine(tx, data, reason, message, now, vessel_id, batch_seq)

    async def _quarantine(
        self,
        tx: Tx,
        data: bytes,
        reason: Reason,
        message: str,
        now: float,
        vessel_id: int | None,
        batch_seq: int | None,
    ) -> None:
        await tx.execute(
            "INSERT INTO quarantine (sha256, raw, link_bytes, reason, message, vessel_id, "
            "batch_seq, first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) "
            "ON CONFLICT (sha256) DO UPDATE SET times = quarantine.times + 1, "
            "last_at = excluded.last_at",
            hashlib.sha256(data).digest(),
            data[:QUARANTINE_KEEP_BYTES],
            len(data),
            int(reason),
            message[:1000],
            vessel_id,
            batch_seq,
            float(now),
        )

    async def quarantined(self, limit: int = 100) -> Sequence[QuarantineEntry]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT quarantine_id, sha256, raw, link_bytes, reason, message, vessel_id, "
                "batch_seq, first_at, last_at, times FROM quarantine "
                "ORDER BY quarantine_id DESC LIMIT $1",
                limit,
            )
        return [
            QuarantineEntry(
                int(r[0]),
                bytes(r[1]),
                bytes(r[2]),
                int(r[3]),
                Reason(int(r[4])),
                str(r[5]),
                None if r[6] is None else int(r[6]),
                None if r[7] is None else int(r[7]),
                float(r[8]),
                float(r[9]),
                int(r[10]),
            )
            for r in rows
        ]

    async def replay_window(self, vessel_id: int) -> ReplayWindow:
        async with self._transaction() as tx:
            row = await tx.fetchrow(
                "SELECT uplink_up_to, uplink_ranges FROM vessel_link WHERE vessel_id = $1",
                vessel_id,
            )
        if row is None:
            return ReplayWindow(0)
        return ReplayWindow(int(row[0]), parse_ranges(row[1]))

    async def messages(self, vessel_id: int) -> Sequence[MessageRecord]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT vessel_id, message_seq, batch_seq, kind, crew, contact, union_id, lang, "
                "body, quick, sealed, latitude, longitude, written_minutes, accepted_at, state "
                "FROM messages WHERE vessel_id = $1 ORDER BY message_seq",
                vessel_id,
            )
        return [
            MessageRecord(
                vessel_id=int(r[0]),
                message_seq=int(r[1]),
                batch_seq=int(r[2]),
                kind=str(r[3]),
                crew=r[4],
                contact=r[5],
                union=r[6],
                lang=_lang(r[7]),
                body=r[8],
                quick=r[9],
                sealed=None if r[10] is None else bytes(r[10]),
                position=None if r[11] is None else (int(r[11]), int(r[12])),
                written_minutes=int(r[13]),
                accepted_at=float(r[14]),
                state=str(r[15]),
            )
            for r in rows
        ]

    async def count_messages(self, vessel_id: int | None = None) -> int:
        async with self._transaction() as tx:
            if vessel_id is None:
                row = await tx.fetchrow("SELECT COUNT(*) FROM messages")
            else:
                row = await tx.fetchrow(
                    "SELECT COUNT(*) FROM messages WHERE vessel_id = $1", vessel_id
                )
        assert row is not None
        return int(row[0])

    def _contact(self, vessel_id: int, r: Row) -> ContactRecord:
        return ContactRecord(
            vessel_id, int(r[0]), int(r[1]), Channel(int(r[2])), r[3], r[4], _lang(r[5]), r[6]
        )

    async def contact(self, vessel_id: int, crew: int, contact: int) -> ContactRecord | None:
        async with self._transaction() as tx:
            row = await tx.fetchrow(
                "SELECT crew, contact, channel, address, name, lang, crew_name FROM contacts "
                "WHERE vessel_id = $1 AND crew = $2 AND contact = $3",
                vessel_id,
                crew,
                contact,
            )
        return None if row is None else self._contact(vessel_id, row)

    async def contacts_with_address(
        self, channel: Channel, address: str
    ) -> Sequence[ContactRecord]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT crew, contact, channel, address, name, lang, crew_name, vessel_id "
                "FROM contacts WHERE channel = $1 AND address = $2 ORDER BY updated_at DESC",
                int(channel),
                address,
            )
        return [self._contact(int(r[7]), r) for r in rows]

    # deliveries ----------------------------------------------------------------------------

    async def claim_due_deliveries(self, now: float, limit: int, worker: str) -> Sequence[Delivery]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT d.vessel_id, d.message_seq, m.kind, m.crew, m.contact, m.union_id, "
                "m.lang, m.body, m.quick, m.sealed, m.accepted_at, d.attempts, d.unfinished, "
                "d.deadline_at, c.channel, c.address, c.lang, c.crew_name "
                "FROM deliveries d JOIN messages m "
                "ON m.vessel_id = d.vessel_id AND m.message_seq = d.message_seq "
                "LEFT JOIN contacts c ON c.vessel_id = m.vessel_id AND c.crew = m.crew "
                "AND c.contact = m.contact "
                "WHERE d.outcome IS NULL AND d.due_at <= $1 "
                "AND (d.lease_until IS NULL OR d.lease_until <= $1) "
                f"ORDER BY d.due_at, d.vessel_id, d.message_seq LIMIT $2{self.dialect.skip_locked}",
                float(now),
                limit,
            )
            await tx.executemany(
                "UPDATE deliveries SET claimed_by = $3, lease_until = $4 "
                "WHERE vessel_id = $1 AND message_seq = $2",
                [(r[0], r[1], worker, float(now) + self.lease_s) for r in rows],
            )
        return [self._delivery(r) for r in rows]

    async def release_claims(self, worker: str) -> int:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT vessel_id, message_seq FROM deliveries "
                "WHERE claimed_by = $1 AND outcome IS NULL AND lease_until IS NOT NULL",
                worker,
            )
            await tx.executemany(
                "UPDATE deliveries SET lease_until = NULL "
                "WHERE vessel_id = $1 AND message_seq = $2 AND claimed_by = $3",
                [(r[0], r[1], worker) for r in rows],
            )
        return len(rows)

    def _delivery(self, r: Row) -> Delivery:
        vessel_id, seq, kind = int(r[0]), int(r[1]), r[2]
        lang, body, quick = _lang(r[6]), r[7], r[8]
        channel, address, contact_lang, crew_name = r[14], r[15], _lang(r[16]), r[17]
        if kind == "grievance":
            destination = Destination.UNION
        elif channel is not None:
            destination = Destination.for_channel(Channel(int(channel)))
        else:
            destination = Destination.EMAIL  # unknown contact: fails UNKNOWN_CONTACT
        text = body
        if text is None and quick is not None and self.phrases is not None:
            text = self.phrases(int(quick), contact_lang or lang)
        return Delivery(
            key=DeliveryKey(vessel_id, seq),
            vessel_id=vessel_id,
            message_seq=seq,
            destination=destination,
            crew=r[3],
            contact=r[4],
            crew_name=crew_name,
            contact_lang=contact_lang,
            address=address,
            text=text,
            union=r[5],
            sealed=None if r[9] is None else bytes(r[9]),
            accepted_at=float(r[10]),
            attempts=int(r[11]),
            unfinished_attempt=bool(r[12]),
            deadline_at=float(r[13]),
            quick=quick,
        )

    @staticmethod
    def _key(key: object) -> DeliveryKey:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"a delivery key is (vessel_id, message_seq), not {key!r}")
        return DeliveryKey(int(key[0]), int(key[1]))

    async def record_attempt(self, key: object, now: float, worker: str) -> bool:
        k = self._key(key)
        async with self._transaction() as tx:
            # Only while the claim is still this worker's: after a lapsed lease another
            # worker may have claimed it, and then it is that worker's to send.
            row = await tx.fetchrow(
                "UPDATE deliveries SET attempts = attempts + 1, unfinished = 1, "
                "last_attempt_at = $3, claimed_by = $4, lease_until = $5 "
                "WHERE vessel_id = $1 AND message_seq = $2 AND outcome IS NULL "
                "AND claimed_by = $4 RETURNING message_seq",
                k.vessel_id,
                k.message_seq,
                float(now),
                worker,
                float(now) + self.lease_s,
            )
        return row is not None

    async def finish_delivery(
        self, key: object, outcome: FinalOutcome, reason: FailureReason | None, now: float
    ) -> None:
        k = self._key(key)
        if outcome not in ("delivered", "failed"):
            raise ValueError(f"a delivery ends 'delivered' or 'failed', not {outcome!r}")
        async with self._transaction() as tx:
            done = await tx.fetchrow(
                "UPDATE deliveries SET outcome = $3, reason = $4, unfinished = 0, "
                "finished_at = $5, lease_until = NULL "
                "WHERE vessel_id = $1 AND message_seq = $2 AND outcome IS NULL "
                "RETURNING message_seq",
                k.vessel_id,
                k.message_seq,
                outcome,
                None if reason is None else int(reason),
                float(now),
            )
            if done is None:
                return  # already finished: its receipt is queued already
            await tx.execute(
                "UPDATE messages SET state = $3, state_at = $4 "
                "WHERE vessel_id = $1 AND message_seq = $2",
                k.vessel_id,
                k.message_seq,
                outcome,
                float(now),
            )
            receipt = receipt_for(k.message_seq, outcome, reason, now)
            await self._queue(tx, k.vessel_id, receipt, now, f"f{k.message_seq}")

    async def reschedule_delivery(
        self, key: object, due_at: float, detail: str, now: float
    ) -> None:
        k = self._key(key)
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE deliveries SET due_at = $3, detail = $4, unfinished = 0, "
                "lease_until = NULL WHERE vessel_id = $1 AND message_seq = $2 AND outcome IS NULL",
                k.vessel_id,
                k.message_seq,
                float(due_at),
                detail[:500],
            )

    async def deliver_to_union_inbox(
        self, union: int, vessel_id: int, message_seq: int, sealed: bytes, now: float
    ) -> None:
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO union_inbox (vessel_id, message_seq, union_id, sealed, received_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                vessel_id,
                message_seq,
                union,
                sealed,
                float(now),
            )

    async def deliveries(self, vessel_id: int) -> Sequence[DeliveryRecord]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT vessel_id, message_seq, attempts, due_at, deadline_at, outcome, reason, "
                "detail, unfinished FROM deliveries WHERE vessel_id = $1 ORDER BY message_seq",
                vessel_id,
            )
        return [
            DeliveryRecord(
                DeliveryKey(int(r[0]), int(r[1])),
                int(r[2]),
                float(r[3]),
                float(r[4]),
                r[5],
                None if r[6] is None else FailureReason(int(r[6])),
                r[7],
                bool(r[8]),
            )
            for r in rows
        ]

    async def union_inbox(self, union: int) -> Sequence[tuple[int, int, bytes]]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT vessel_id, message_seq, sealed FROM union_inbox WHERE union_id = $1 "
                "ORDER BY received_at, vessel_id, message_seq",
                union,
            )
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    async def union_reports(self, union: int) -> Sequence[tuple[int, int, bytes, float]]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT vessel_id, message_seq, sealed, accepted_at FROM messages "
                "WHERE kind = 'grievance' AND union_id = $1 AND sealed IS NOT NULL "
                "ORDER BY accepted_at, vessel_id, message_seq",
                union,
            )
        return [(int(r[0]), int(r[1]), bytes(r[2]), float(r[3])) for r in rows]

    # downlink ----------------------------------------------------------------------------

    async def _queue(
        self, tx: Tx, vessel_id: int, envelope: Envelope, now: float, dedupe: str | None
    ) -> None:
        kind, skeleton, text = envelope_to_row(envelope)
        await tx.execute(
            "INSERT INTO downlink_items (vessel_id, kind, skeleton, text, dedupe, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            vessel_id,
            kind,
            skeleton,
            text,
            dedupe,
            float(now),
        )

    async def queue_downlink(
        self, vessel_id: int, envelopes: Sequence[Envelope], now: float, dedupe: str | None = None
    ) -> None:
        async with self._transaction() as tx:
            await self._require_vessel(tx, vessel_id)
            for index, envelope in enumerate(envelopes):
                key = None if dedupe is None else f"{dedupe}/{index}"
                await self._queue(tx, vessel_id, envelope, now, key)

    async def queue_reply(
        self,
        vessel_id: int,
        crew: int,
        contact: int,
        text: str,
        lang: Language,
        truncated: bool,
        now: float,
    ) -> int:
        async with self._transaction() as tx:
            link = await self._lock_link(tx, vessel_id)
            reply_seq = int(link[3])
            await tx.execute(
                "UPDATE vessel_link SET next_reply_seq = $2 WHERE vessel_id = $1",
                vessel_id,
                reply_seq + 1,
            )
            reply = Reply(
                reply_seq=reply_seq,
                crew=crew,
                contact=contact,
                written_minutes=int(now // 60),
                lang=lang,
                body=text,
                truncated=True if truncated else None,
            )
            await self._queue(tx, vessel_id, reply, now, f"r{reply_seq}")
        return reply_seq

    async def queue_case_update(
        self,
        vessel_id: int,
        report_seq: int,
        status: CaseStatus,
        sealed_note: bytes | None,
        now: float,
    ) -> None:
        update = CaseStatusUpdate(report_seq, status, int(now // 60), sealed_note or None)
        await self.queue_downlink(vessel_id, [update], now)

    # downlink slots (protocol.slots.downlink_slot; shore.downlink makes the items) -------
    async def queue_slot_note(
        self, vessel_id: int, report_seq: int, sealed_note: bytes, now: float
    ) -> int | None:
        async with self._transaction() as tx:
            row = await tx.fetchrow(
                "SELECT sealed FROM messages WHERE vessel_id = $1 AND message_seq = $2 "
                "AND kind = 'grievance'",
                vessel_id,
                report_seq,
            )
            header = None if row is None or row[0] is None else slot_header(bytes(row[0]))
            if header is None:
                return None
            await tx.execute(
                "INSERT INTO slot_notes (vessel_id, crew, sealed_note, queued_at) "
                "VALUES ($1, $2, $3, $4)",
                vessel_id,
                header.crew,
                sealed_note,
                float(now),
            )
        return header.crew

    async def slot_crews(self, since: float) -> Sequence[tuple[int, int]]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT DISTINCT vessel_id, substr(sealed, 1, 6) FROM messages "
                "WHERE kind = 'grievance' AND sealed IS NOT NULL AND accepted_at >= $1",
                float(since),
            )
        found: set[tuple[int, int]] = set()
        for vessel, head in rows:
            head = bytes(head)
            if len(head) == 6 and head.startswith(SLOT_MAGIC):
                found.add((int(vessel), int.from_bytes(head[4:6], "big")))
        return sorted(found)

    async def queue_slot_items(
        self, vessel_id: int, period: int, crews: Sequence[int], make: SlotItemMaker, now: float
    ) -> int:
        made = 0
        async with self._transaction() as tx:
            await self._lock_link(tx, vessel_id)
            for crew in crews:
                key = f"slot/{period}/{crew}"
                if await tx.fetchrow(
                    "SELECT 1 FROM downlink_items WHERE vessel_id = $1 AND dedupe = $2",
                    vessel_id,
                    key,
                ):
                    continue
                note = await tx.fetchrow(
                    "SELECT note_id, sealed_note FROM slot_notes WHERE vessel_id = $1 "
                    "AND crew = $2 AND carried_period IS NULL ORDER BY note_id LIMIT 1",
                    vessel_id,
                    crew,
                )
                envelope = make(crew, None if note is None else bytes(note[1]))
                await self._queue(tx, vessel_id, envelope, now, key)
                if note is not None:
                    await tx.execute(
                        "UPDATE slot_notes SET carried_period = $2 WHERE note_id = $1",
                        note[0],
                        period,
                    )
                made += 1
        return made

    @staticmethod
    def _resend(now: str, after: str, longest: str) -> str:
        """Condition on ``downlink_batches`` (joined to ``vessel_link l``): due to (re)send."""
        return (
            f"acked_at IS NULL AND (last_sent_at IS NULL OR (items > 0 AND ("
            f"({now} - last_sent_at >= {after} AND l.last_heard_at > last_sent_at) "
            f"OR {now} - last_sent_at >= {longest})))"
        )

    async def vessels_with_downlink_work(
        self, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[int]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT vessel_id FROM vessel_link WHERE ack_pending >= $1 "
                "UNION SELECT DISTINCT vessel_id FROM downlink_items WHERE downlink_seq IS NULL "
                "UNION SELECT b.vessel_id FROM downlink_batches b JOIN vessel_link l "
                f"ON l.vessel_id = b.vessel_id WHERE {self._resend('$2', '$3', '$4')}",
                ACK_URGENT,
                float(now),
                float(resend_after_s),
                float(resend_max_s),
            )
        return sorted({int(r[0]) for r in rows})

    async def make_downlink_batch(
        self, vessel_id: int, now: float, encode: DownlinkEncoder, max_items: int
    ) -> DownlinkBatch | None:
        async with self._transaction() as tx:
            link = await self._lock_link(tx, vessel_id)
            items = await tx.fetch(
                "SELECT item_id, skeleton, text FROM downlink_items "
                "WHERE vessel_id = $1 AND downlink_seq IS NULL ORDER BY item_id LIMIT $2",
                vessel_id,
                max_items,
            )
            ack_level = int(link[4])
            if not items and ack_level < ACK_URGENT:
                return None
            envelopes: list[Envelope] = []
            minutes = int(now // 60)
            rejections: list[Row] = []
            if ack_level > ACK_NONE:
                rejections = await tx.fetch(
                    "SELECT r.batch_seq, r.reason FROM uplink_rejections r "
                    "LEFT JOIN downlink_batches b ON b.vessel_id = r.vessel_id "
                    "AND b.downlink_seq = r.carried_in WHERE r.vessel_id = $1 "
                    "AND (r.carried_in IS NULL OR b.acked_at IS NULL) ORDER BY r.batch_seq "
                    "LIMIT 500",
                    vessel_id,
                )
                window = ReplayWindow(int(link[0]), parse_ranges(link[1]))
                envelopes.append(
                    BatchAck(
                        up_to=window.up_to,
                        written_minutes=minutes,
                        ranges=window.ranges[:1000] or None,
                        rejected=tuple((int(s), int(r)) for s, r in rejections) or None,
                    )
                )
            envelopes.extend(envelope_from_row(bytes(r[1]), r[2]) for r in items)
            downlink_seq = int(link[2])
            data = encode(downlink_seq, envelopes)
            await tx.execute(
                "UPDATE vessel_link SET next_downlink_seq = $2, ack_pending = 0 "
                "WHERE vessel_id = $1",
                vessel_id,
                downlink_seq + 1,
            )
            await tx.execute(
                "INSERT INTO downlink_batches (vessel_id, downlink_seq, data, items, made_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                vessel_id,
                downlink_seq,
                data,
                len(items),
                float(now),
            )
            await tx.executemany(
                "UPDATE downlink_items SET downlink_seq = $2 WHERE item_id = $1",
                [(r[0], downlink_seq) for r in items],
            )
            await tx.executemany(
                "UPDATE uplink_rejections SET carried_in = $3 "
                "WHERE vessel_id = $1 AND batch_seq = $2",
                [(vessel_id, r[0], downlink_seq) for r in rejections],
            )
        return DownlinkBatch(vessel_id, downlink_seq, data, len(items), float(now), None, 0, None)

    async def downlink_batches_to_send(
        self, vessel_id: int, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[DownlinkBatch]:
        return await self._downlink_batches(
            f"AND {self._resend('$2', '$3', '$4')}",
            vessel_id,
            float(now),
            float(resend_after_s),
            float(resend_max_s),
        )

    async def downlink_batches(self, vessel_id: int) -> Sequence[DownlinkBatch]:
        return await self._downlink_batches("", vessel_id)

    async def _downlink_batches(self, where: str, *args: Any) -> list[DownlinkBatch]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT b.vessel_id, downlink_seq, data, items, made_at, last_sent_at, "
                "send_count, acked_at FROM downlink_batches b JOIN vessel_link l "
                f"ON l.vessel_id = b.vessel_id WHERE b.vessel_id = $1 {where} "
                "ORDER BY downlink_seq",
                *args,
            )
        return [
            DownlinkBatch(
                int(r[0]),
                int(r[1]),
                bytes(r[2]),
                int(r[3]),
                float(r[4]),
                _f(r[5]),
                int(r[6]),
                _f(r[7]),
            )
            for r in rows
        ]

    async def mark_downlink_sent(self, vessel_id: int, downlink_seq: int, now: float) -> None:
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE downlink_batches SET last_sent_at = $3, send_count = send_count + 1 "
                "WHERE vessel_id = $1 AND downlink_seq = $2",
                vessel_id,
                downlink_seq,
                float(now),
            )

    # SOS alerts (shore.alerts) ---------------------------------------------------------------

    async def claim_sos_alerts(
        self, now: float, contacts: Sequence[str], limit: int, lease_s: float = 60.0
    ) -> Sequence[SosAlertDue]:
        """SOS alerts due to be sent: one per (SOS, contact); claimed for ``lease_s``.

        Every SOS still in state ``alert`` first gets a row for each configured contact, in
        this transaction, so an alert is never forgotten across a crash.
        """
        async with self._transaction() as tx:
            if contacts:
                fresh = await tx.fetch(
                    "SELECT m.vessel_id, m.message_seq, m.accepted_at FROM messages m "
                    "WHERE m.kind = 'sos' AND m.state = 'alert' AND NOT EXISTS "
                    "(SELECT 1 FROM sos_alerts a WHERE a.vessel_id = m.vessel_id "
                    "AND a.message_seq = m.message_seq)",
                )
                await tx.executemany(
                    "INSERT INTO sos_alerts (vessel_id, message_seq, contact, due_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    [(r[0], r[1], contact, float(r[2])) for r in fresh for contact in contacts],
                )
            rows = await tx.fetch(
                "SELECT a.vessel_id, a.message_seq, a.contact, a.attempts, v.name, v.flag, "
                "v.registration, m.crew, m.body, m.lang, m.latitude, m.longitude, "
                "m.written_minutes, m.accepted_at, (SELECT c.crew_name FROM contacts c "
                "WHERE c.vessel_id = m.vessel_id AND c.crew = m.crew "
                "AND c.crew_name IS NOT NULL ORDER BY c.updated_at DESC LIMIT 1), "
                "m.unauthenticated "
                "FROM sos_alerts a JOIN messages m ON m.vessel_id = a.vessel_id "
                "AND m.message_seq = a.message_seq JOIN vessels v ON v.vessel_id = a.vessel_id "
                "WHERE a.outcome IS NULL AND a.due_at <= $1 "
                f"ORDER BY a.due_at, a.vessel_id, a.message_seq LIMIT $2{self.dialect.skip_locked}",
                float(now),
                limit,
            )
            await tx.executemany(
                "UPDATE sos_alerts SET due_at = $4 "
                "WHERE vessel_id = $1 AND message_seq = $2 AND contact = $3",
                [(r[0], r[1], r[2], float(now) + lease_s) for r in rows],
            )
        return [
            SosAlertDue(
                vessel_id=int(r[0]),
                message_seq=int(r[1]),
                contact=str(r[2]),
                attempts=int(r[3]),
                vessel_name=str(r[4]),
                flag=str(r[5]),
                registration=str(r[6]),
                crew=None if r[7] is None else int(r[7]),
                crew_name=r[14],
                note=r[8],
                lang=_lang(r[9]),
                position=None if r[10] is None else (int(r[10]), int(r[11])),
                written_minutes=int(r[12]),
                accepted_at=float(r[13]),
                unauthenticated=bool(r[15]),
            )
            for r in rows
        ]

    async def retry_sos_alert(
        self, vessel_id: int, message_seq: int, contact: str, due_at: float, detail: str
    ) -> None:
        """An attempt failed for now: count it and try again at ``due_at``."""
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE sos_alerts SET attempts = attempts + 1, due_at = $4, detail = $5 "
                "WHERE vessel_id = $1 AND message_seq = $2 AND contact = $3 "
                "AND outcome IS NULL",
                vessel_id,
                message_seq,
                contact,
                float(due_at),
                detail[:500],
            )

    async def finish_sos_alert(
        self,
        vessel_id: int,
        message_seq: int,
        contact: str,
        delivered: bool,
        detail: str,
        now: float,
    ) -> None:
        """Record an alert's final outcome; tell the vessel in the same transaction.

        The first alert delivered marks the SOS ``delivered`` and queues a ``DELIVERED``
        receipt down to the vessel (someone ashore knows); when every alert failed, the
        SOS is ``failed`` and the vessel gets a ``DeliveryFailure``.
        """
        outcome = "delivered" if delivered else "failed"
        async with self._transaction() as tx:
            done = await tx.fetchrow(
                "UPDATE sos_alerts SET attempts = attempts + 1, outcome = $4, detail = $5, "
                "finished_at = $6 WHERE vessel_id = $1 AND message_seq = $2 AND contact = $3 "
                "AND outcome IS NULL RETURNING message_seq",
                vessel_id,
                message_seq,
                contact,
                outcome,
                detail[:500],
                float(now),
            )
            if done is None:
                return
            counts = await tx.fetchrow(
                "SELECT SUM(CASE WHEN outcome = 'delivered' THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN outcome IS NULL THEN 1 ELSE 0 END) FROM sos_alerts "
                "WHERE vessel_id = $1 AND message_seq = $2",
                vessel_id,
                message_seq,
            )
            assert counts is not None
            any_delivered, open_alerts = int(counts[0] or 0), int(counts[1] or 0)
            if not any_delivered and open_alerts > 0:
                return  # others may still get through
            state: FinalOutcome = "delivered" if any_delivered else "failed"
            changed = await tx.fetchrow(
                "UPDATE messages SET state = $3, state_at = $4 "
                "WHERE vessel_id = $1 AND message_seq = $2 AND state = 'alert' "
                "RETURNING message_seq",
                vessel_id,
                message_seq,
                state,
                float(now),
            )
            if changed is None:
                return  # the vessel was told already
            reason = None if state == "delivered" else FailureReason.PROVIDER_ERROR
            receipt = receipt_for(message_seq, state, reason, now)
            await self._queue(tx, vessel_id, receipt, now, f"f{message_seq}")

    async def sos_alerts(self, vessel_id: int) -> Sequence[SosAlertRecord]:
        """A vessel's SOS alerts, by sequence number and contact."""
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "SELECT vessel_id, message_seq, contact, attempts, outcome, detail "
                "FROM sos_alerts WHERE vessel_id = $1 ORDER BY message_seq, contact",
                vessel_id,
            )
        return [
            SosAlertRecord(int(r[0]), int(r[1]), str(r[2]), int(r[3]), r[4], r[5]) for r in rows
        ]
