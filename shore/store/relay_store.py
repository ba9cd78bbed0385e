"""The relay's store: one database, its repositories, and the units of work over them.

:class:`RelayStore` holds the :class:`~shore.store.database.Database` (``db``) and one
repository per idea, each owning its tables and migration set::

    registry        vessels, keys, unions                   shore.store.registry
    links           per-vessel link state (replay window,   shore.store.links
                    acknowledgement owed, counters, heard)
    uplink          batches, messages, contacts             shore.store.uplink
    refusals        quarantine, batches refused for good    shore.store.refusals
    delivery_queue  deliveries, leases, attempts, outcomes  shore.store.deliveries
    union_inboxes   sealed reports handed to unions         shore.store.union_inbox
    downlink_queue  downlink items, batches, slot notes     shore.store.downlink
    sos             SOS alerts                              shore.store.sos
    log             the transparency log                    shore.store.transparency_log

Each method below is one *unit of work*: ONE transaction (``db.transaction()``) in which
it asks the repositories it needs, handing each the transaction. No repository touches
another's tables; what crosses them happens here. Every service depends only on a small
protocol of its own (``shore.ingest.IngestStore``, ``shore.delivery.DeliveryStore``,
``shore.downlink.DownlinkStore``, ``shore.alerts.SosStore``, ...), which this class
satisfies.

Durability, stated once: every method that writes is one transaction; when it returns, its
change is committed (SQLite: WAL, ``synchronous=FULL``). Every insert of something that
came over the link is idempotent: a resent batch, a replayed message or a second
``finish_delivery`` changes nothing.

Acknowledgement: :meth:`RelayStore.ingest_batch` commits a batch, its envelopes, the
delivery queue rows, the ``ACCEPTED_ASHORE`` receipts, the transparency-log leaf, the
replay window and what the shore now owes the vessel in one transaction; the ``BatchAck``
itself is built from the replay window when the next downlink batch is made, so an
acknowledgement can never exist without the commit it speaks for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from protocol.batch import Batch
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
)
from protocol.errors import Reason
from protocol.exchange import ShoreInput, ShoreState
from protocol.languages import Language
from protocol.slots import slot_header
from shore.store.database import Database, Tx
from shore.store.deliveries import (
    DEFAULT_DEADLINE_S,
    DEFAULT_LEASE_S,
    Delivery,
    DeliveryKey,
    DeliveryQueue,
    DeliveryRecord,
    PhraseLookup,
    delivery_of,
)
from shore.store.deliveries import MIGRATIONS as DELIVERY_MIGRATIONS
from shore.store.downlink import MIGRATIONS as DOWNLINK_MIGRATIONS
from shore.store.downlink import (
    DownlinkBatch,
    DownlinkEncoder,
    DownlinkQueue,
    SlotItemMaker,
    resend_due,
)
from shore.store.links import MIGRATIONS as LINK_MIGRATIONS
from shore.store.links import ReplayWindow, VesselLinks
from shore.store.migrations import MigrationSet, migrate
from shore.store.refusals import MIGRATIONS as REFUSAL_MIGRATIONS
from shore.store.refusals import QuarantineEntry, Refusals
from shore.store.registry import MIGRATIONS as REGISTRY_MIGRATIONS
from shore.store.registry import Registry, VesselInfo, VesselRecord
from shore.store.sos import MIGRATIONS as SOS_MIGRATIONS
from shore.store.sos import SosAlertDue, SosAlertRecord, SosAlerts
from shore.store.transparency_log import MIGRATIONS as LOG_MIGRATIONS
from shore.store.transparency_log import TransparencyLog
from shore.store.union_inbox import MIGRATIONS as UNION_INBOX_MIGRATIONS
from shore.store.union_inbox import UnionInbox
from shore.store.uplink import MIGRATIONS as UPLINK_MIGRATIONS
from shore.store.uplink import (
    ContactRecord,
    IngestOutcome,
    IngestResult,
    MessageRecord,
    Uplink,
)
from shore.vocabulary import DeliveryOutcome, MessageKind, MessageState, receipt_for

__all__ = ["MIGRATION_SETS", "PhraseLookup", "RelayStore"]

#: Every repository's migration set, in the order they apply (tables referenced by
#: foreign keys first).
MIGRATION_SETS: tuple[MigrationSet, ...] = (
    REGISTRY_MIGRATIONS,
    LINK_MIGRATIONS,
    UPLINK_MIGRATIONS,
    REFUSAL_MIGRATIONS,
    DELIVERY_MIGRATIONS,
    UNION_INBOX_MIGRATIONS,
    DOWNLINK_MIGRATIONS,
    SOS_MIGRATIONS,
    LOG_MIGRATIONS,
)


class RelayStore:
    """The relay's store over one open database (see the module docstring).

    Open one with :meth:`shore.store.sqlite.SqliteStore.open` or
    :meth:`shore.store.postgres.PostgresStore.open`; ``phrases`` expands quick-message
    codes for deliveries, ``lease_s`` is how long a delivery claim lasts, ``deadline_s``
    how long a delivery may take from acceptance ashore.
    """

    def __init__(
        self,
        db: Database,
        *,
        phrases: PhraseLookup | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.db = db
        self.phrases = phrases
        dialect = db.dialect
        self.registry = Registry()
        self.links = VesselLinks(dialect)
        self.uplink = Uplink()
        self.refusals = Refusals()
        self.delivery_queue = DeliveryQueue(dialect, lease_s=lease_s, deadline_s=deadline_s)
        self.union_inboxes = UnionInbox()
        self.downlink_queue = DownlinkQueue()
        self.sos = SosAlerts(dialect)
        self.log = TransparencyLog(dialect)

    @property
    def lease_s(self) -> float:
        """How long a delivery claim lasts without an outcome."""
        return self.delivery_queue.lease_s

    @property
    def deadline_s(self) -> float:
        """How long a delivery may take, from acceptance ashore."""
        return self.delivery_queue.deadline_s

    async def migrate(self) -> list[tuple[str, str]]:
        """Apply pending migrations of every repository; (set, name) of those applied."""
        return await migrate(self.db, MIGRATION_SETS)

    async def close(self) -> None:
        """Close the database; the store is unusable afterwards."""
        await self.db.close()

    # registry ------------------------------------------------------------------------------

    async def add_vessel(
        self, info: VesselInfo, public_key: bytes, now: float, vessel_id: int | None = None
    ) -> int:
        """Register a vessel with its first key; returns its vessel id (assigned if None)."""
        async with self.db.transaction() as tx:
            vessel_id = await self.registry.add(tx, info, public_key, now, vessel_id)
            await self.links.open(tx, vessel_id)
        return vessel_id

    async def get_vessel(self, vessel_id: int) -> VesselRecord | None:
        """A registered vessel, or None."""
        found = await self._vessels(vessel_id)
        return found[0] if found else None

    async def list_vessels(self) -> Sequence[VesselRecord]:
        """Every registered vessel, by id."""
        return await self._vessels(None)

    async def _vessels(self, vessel_id: int | None) -> list[VesselRecord]:
        async with self.db.transaction() as tx:
            vessels = await self.registry.vessels(tx, vessel_id)
            heard = await self.links.last_heard(tx, vessel_id)
        return [v.with_last_heard(heard[v.vessel_id]) for v in vessels if v.vessel_id in heard]

    async def add_vessel_key(
        self, vessel_id: int, public_key: bytes, valid_from: float, now: float
    ) -> None:
        """Add a key (rotation): batches verify with it from ``valid_from``."""
        async with self.db.transaction() as tx:
            await self.registry.add_key(tx, vessel_id, public_key, valid_from)

    async def revoke_vessel_key(self, vessel_id: int, public_key: bytes, at: float) -> None:
        """Revoke a key from ``at``: batches received later do not verify with it."""
        async with self.db.transaction() as tx:
            await self.registry.revoke_key(tx, vessel_id, public_key, at)

    async def set_vessel_unions(self, vessel_id: int, unions: Sequence[int]) -> None:
        """Replace the unions of a vessel's crew."""
        async with self.db.transaction() as tx:
            await self.registry.set_unions(tx, vessel_id, unions)

    # ingest ----------------------------------------------------------------------------------

    async def stored_batch_hash(self, vessel_id: int, batch_seq: int) -> bytes | None:
        """The SHA-256 of the stored batch (vessel, batch_seq), or None if not stored."""
        async with self.db.transaction() as tx:
            stored = await self.uplink.stored_batch(tx, vessel_id, batch_seq)
        return None if stored is None else stored.sha256

    async def ingest_batch(self, batch: Batch, data: bytes, now: float) -> IngestResult:
        """Store one verified uplink batch and everything it brings, in ONE transaction.

        New batch: the batch row, its contacts, its messages (a replayed message is not
        stored twice), a delivery row and an ``ACCEPTED_ASHORE`` receipt for each new
        message, downlink batches its ``BatchAck`` covers marked acknowledged, its leaf in
        the transparency log, the replay window advanced and an acknowledgement owed (at
        once for content, lazily for acknowledgements only). Same bytes again: only the
        acknowledgement is owed again (DUPLICATE). Other bytes under a stored batch
        number: quarantined and refused (REJECTED, REPLAYED).
        """
        vessel_id, batch_seq = batch.vessel_id, batch.batch_seq
        digest = hashlib.sha256(data).digest()
        has_content = not acknowledges_only(batch.envelopes)
        async with self.db.transaction() as tx:
            link = await self.links.lock(tx, vessel_id)
            stored = await self.uplink.stored_batch(tx, vessel_id, batch_seq)
            if stored is not None:
                if stored.sha256 == digest:
                    await self.links.heard(tx, link, _stored(stored.has_content), now)
                    await self.refusals.tell_rejection_again(tx, vessel_id, batch_seq)
                    return IngestResult(IngestOutcome.DUPLICATE, vessel_id, batch_seq)
                message = (
                    f"batch {batch_seq} from vessel {vessel_id} reuses a stored batch number "
                    "with other bytes (did the vessel lose its outbox?)"
                )
                await self.refusals.quarantine(
                    tx, data, Reason.REPLAYED, message, now, vessel_id, batch_seq
                )
                await self.refusals.reject(tx, vessel_id, batch_seq, Reason.REPLAYED)
                await self.links.heard(tx, link, ShoreInput.REJECTED, now)
                return IngestResult(
                    IngestOutcome.REJECTED, vessel_id, batch_seq, reason=Reason.REPLAYED
                )
            await self.uplink.store_batch(tx, batch, digest, len(data), has_content, now)
            contacts = 0
            for envelope in batch.envelopes:
                if isinstance(envelope, ContactBookChange):
                    await self.uplink.upsert_contact(tx, vessel_id, envelope, now)
                    contacts += 1
            new = duplicate = acked = 0
            stored_now: list[Envelope] = []
            for envelope in batch.envelopes:
                if isinstance(envelope, BatchAck):
                    acked += await self.downlink_queue.apply_ack(tx, vessel_id, envelope, now)
                elif isinstance(envelope, CrewMessage | GrievanceReport | Sos):
                    if await self._accept_message(tx, vessel_id, batch_seq, envelope, now):
                        new += 1
                        stored_now.append(envelope)
                    else:
                        duplicate += 1
            # Same transaction: the batch is stored if and only if its leaf is in the log.
            await self.log.append_leaf(tx, batch, digest, now, stored_now)
            await self.links.see_batch(tx, link, batch_seq)
            await self.links.heard(tx, link, _stored(has_content), now)
        return IngestResult(
            IngestOutcome.STORED,
            vessel_id,
            batch_seq,
            new_messages=new,
            duplicate_messages=duplicate,
            contacts=contacts,
            downlink_acked=acked,
        )

    async def _accept_message(
        self,
        tx: Tx,
        vessel_id: int,
        batch_seq: int,
        envelope: CrewMessage | GrievanceReport | Sos,
        now: float,
    ) -> bool:
        """A message new to the shore: stored, its delivery queued (not for an SOS: that
        raises alerts) and its ``ACCEPTED_ASHORE`` receipt queued; False if seen before."""
        kind = await self.uplink.insert_message(tx, vessel_id, batch_seq, envelope, now)
        if kind is None:
            return False
        seq = envelope.message_seq
        if kind is not MessageKind.SOS:
            await self.delivery_queue.enqueue(tx, vessel_id, seq, now)
        receipt = DeliveryReceipt(seq, ReceiptStage.ACCEPTED_ASHORE, int(now // 60))
        await self.downlink_queue.queue(tx, vessel_id, receipt, now, f"a{seq}")
        return True

    async def reject_batch(
        self, vessel_id: int, batch_seq: int, reason: Reason, message: str, data: bytes, now: float
    ) -> None:
        """An authentic batch that cannot be accepted: quarantine it and tell the vessel
        (``BatchAck.rejected``) so it stops resending, in one transaction."""
        async with self.db.transaction() as tx:
            link = await self.links.lock(tx, vessel_id)
            await self.refusals.quarantine(tx, data, reason, message, now, vessel_id, batch_seq)
            # Refused for good counts as seen: the cumulative acknowledgement moves past it.
            await self.links.see_batch(tx, link, batch_seq)
            if not await self.refusals.reject(tx, vessel_id, batch_seq, reason):
                await self.refusals.tell_rejection_again(tx, vessel_id, batch_seq)
            await self.links.heard(tx, link, ShoreInput.REJECTED, now)

    async def quarantine(
        self,
        data: bytes,
        reason: Reason,
        message: str,
        now: float,
        vessel_id: int | None = None,
        batch_seq: int | None = None,
    ) -> None:
        """Keep refused bytes for the operator (the same bytes again only count up)."""
        async with self.db.transaction() as tx:
            await self.refusals.quarantine(tx, data, reason, message, now, vessel_id, batch_seq)

    async def quarantined(self, limit: int = 100) -> Sequence[QuarantineEntry]:
        """The most recent quarantine entries, newest first."""
        async with self.db.transaction() as tx:
            return await self.refusals.quarantined(tx, limit)

    async def replay_window(self, vessel_id: int) -> ReplayWindow:
        """The uplink batches accepted from a vessel."""
        async with self.db.transaction() as tx:
            return await self.links.window(tx, vessel_id)

    async def messages(self, vessel_id: int) -> Sequence[MessageRecord]:
        """A vessel's stored messages, by sequence number."""
        async with self.db.transaction() as tx:
            return await self.uplink.messages(tx, vessel_id)

    async def count_messages(self, vessel_id: int | None = None) -> int:
        """How many messages are stored (for one vessel, or all)."""
        async with self.db.transaction() as tx:
            return await self.uplink.count_messages(tx, vessel_id)

    async def contact(self, vessel_id: int, crew: int, contact: int) -> ContactRecord | None:
        """A crew member's contact, or None when the vessel never announced it."""
        async with self.db.transaction() as tx:
            return await self.uplink.contact(tx, vessel_id, crew, contact)

    async def contacts_with_address(
        self, channel: Channel, address: str
    ) -> Sequence[ContactRecord]:
        """Contacts with this address (newest change first): routes family SMS replies."""
        async with self.db.transaction() as tx:
            return await self.uplink.contacts_with_address(tx, channel, address)

    # deliveries --------------------------------------------------------------------------------

    async def claim_due_deliveries(self, now: float, limit: int, worker: str) -> Sequence[Delivery]:
        """Take up to ``limit`` due deliveries for ``worker`` under a lease."""
        async with self.db.transaction() as tx:
            claims = await self.delivery_queue.claim(tx, now, limit, worker)
            messages = await self.uplink.to_deliver(tx, [claim.key for claim in claims])
        return [delivery_of(claim, messages[claim.key], self.phrases) for claim in claims]

    async def release_claims(self, worker: str) -> int:
        """End the leases ``worker`` holds on unfinished deliveries; how many."""
        async with self.db.transaction() as tx:
            return await self.delivery_queue.release(tx, worker)

    async def record_attempt(self, key: object, now: float, worker: str) -> bool:
        """Record an attempt BEFORE anything is sent (a crash then shows as a repeat).

        False (nothing recorded, send nothing) when the claim is no longer ``worker``'s:
        its lease lapsed and another worker claimed the delivery.
        """
        async with self.db.transaction() as tx:
            return await self.delivery_queue.record_attempt(tx, DeliveryKey.of(key), now, worker)

    async def finish_delivery(
        self,
        key: object,
        outcome: DeliveryOutcome | str,
        reason: FailureReason | None,
        now: float,
    ) -> None:
        """Record the final outcome, the message's state, and queue its receipt to the
        vessel, in one transaction (a second call changes nothing)."""
        delivery = DeliveryKey.of(key)
        try:
            ended = DeliveryOutcome(outcome)
        except ValueError:
            raise ValueError(f"a delivery ends 'delivered' or 'failed', not {outcome!r}") from None
        async with self.db.transaction() as tx:
            await self._finish_delivery(tx, delivery, ended, reason, now)

    async def _finish_delivery(
        self,
        tx: Tx,
        key: DeliveryKey,
        outcome: DeliveryOutcome,
        reason: FailureReason | None,
        now: float,
    ) -> None:
        if not await self.delivery_queue.finish(tx, key, outcome, reason, now):
            return  # already finished: its receipt is queued already
        await self.uplink.set_message_state(
            tx, key.vessel_id, key.message_seq, outcome.message_state, now
        )
        receipt = receipt_for(key.message_seq, outcome, reason, now)
        await self.downlink_queue.queue(tx, key.vessel_id, receipt, now, f"f{key.message_seq}")

    async def reschedule_delivery(
        self, key: object, due_at: float, detail: str, now: float
    ) -> None:
        """A transient failure: try again at ``due_at``."""
        async with self.db.transaction() as tx:
            await self.delivery_queue.reschedule(tx, DeliveryKey.of(key), due_at, detail)

    async def deliver_to_union_inbox(
        self, union: int, vessel_id: int, message_seq: int, sealed: bytes, now: float
    ) -> None:
        """Put a sealed report in the union's inbox (idempotent per vessel and sequence)."""
        async with self.db.transaction() as tx:
            await self.union_inboxes.put(tx, union, vessel_id, message_seq, sealed, now)

    async def deliveries(self, vessel_id: int) -> Sequence[DeliveryRecord]:
        """A vessel's delivery rows, by sequence number."""
        async with self.db.transaction() as tx:
            return await self.delivery_queue.records(tx, vessel_id)

    async def retry_delivery(self, vessel_id: int, message_seq: int, now: float) -> bool:
        """Try a delivery again now: a retrying one is made due, a failed one reopened with
        a fresh deadline and its message ``ACCEPTED`` again. False when there is none to
        retry. The vessel already heard "failed" and hears of it again only if it is
        delivered (its receipt key is spent)."""
        key = DeliveryKey(vessel_id, message_seq)
        async with self.db.transaction() as tx:
            if not await self.delivery_queue.reopen(tx, key, now):
                return False
            await self.uplink.set_message_state(
                tx,
                vessel_id,
                message_seq,
                MessageState.ACCEPTED,
                now,
                only_from=MessageState.FAILED,
            )
        return True

    async def give_up_delivery(
        self, vessel_id: int, message_seq: int, reason: FailureReason, now: float
    ) -> bool:
        """Stop retrying an open delivery: it fails for good and the vessel is told, in one
        transaction. False when there is no open delivery."""
        key = DeliveryKey(vessel_id, message_seq)
        async with self.db.transaction() as tx:
            if not await self.delivery_queue.is_open(tx, key):
                return False
            await self._finish_delivery(tx, key, DeliveryOutcome.FAILED, reason, now)
        return True

    async def union_inbox(self, union: int) -> Sequence[tuple[int, int, bytes]]:
        """(vessel, message_seq, sealed) of the union's reports, in order of arrival."""
        async with self.db.transaction() as tx:
            return await self.union_inboxes.reports(tx, union)

    async def union_reports(self, union: int) -> Sequence[tuple[int, int, bytes, float]]:
        """(vessel, message_seq, sealed, accepted_at) of every report sealed to ``union``,
        as ingested (whether or not the delivery worker runs), in order of arrival."""
        async with self.db.transaction() as tx:
            return await self.uplink.union_reports(tx, union)

    # downlink --------------------------------------------------------------------------------

    async def queue_downlink(
        self, vessel_id: int, envelopes: Sequence[Envelope], now: float, dedupe: str | None = None
    ) -> None:
        """Queue envelopes down to a vessel (with ``dedupe``, at most once per key)."""
        async with self.db.transaction() as tx:
            await self.registry.require(tx, vessel_id)
            for index, envelope in enumerate(envelopes):
                key = None if dedupe is None else f"{dedupe}/{index}"
                await self.downlink_queue.queue(tx, vessel_id, envelope, now, key)

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
        """Queue a family's reply to a crew member; returns its ``reply_seq``."""
        async with self.db.transaction() as tx:
            link = await self.links.lock(tx, vessel_id)
            reply_seq = await self.links.take_reply_seq(tx, link)
            reply = Reply(
                reply_seq=reply_seq,
                crew=crew,
                contact=contact,
                written_minutes=int(now // 60),
                lang=lang,
                body=text,
                truncated=True if truncated else None,
            )
            await self.downlink_queue.queue(tx, vessel_id, reply, now, f"r{reply_seq}")
        return reply_seq

    async def queue_case_update(
        self,
        vessel_id: int,
        report_seq: int,
        status: CaseStatus,
        sealed_note: bytes | None,
        now: float,
    ) -> None:
        """Queue a grievance case's new status down to the vessel."""
        update = CaseStatusUpdate(report_seq, status, int(now // 60), sealed_note or None)
        await self.queue_downlink(vessel_id, [update], now)

    async def queue_slot_note(
        self, vessel_id: int, report_seq: int, sealed_note: bytes, now: float
    ) -> int | None:
        """Keep a case note for the reporter's next downlink slot: the crew number comes from
        the report's uplink slot header. None (nothing kept) if the report came without a
        slot: the caller sends the note on its own."""
        async with self.db.transaction() as tx:
            sealed = await self.uplink.report_sealed(tx, vessel_id, report_seq)
            header = None if sealed is None else slot_header(sealed)
            if header is None:
                return None
            await self.downlink_queue.keep_slot_note(tx, vessel_id, header.crew, sealed_note, now)
        return header.crew

    async def slot_crews(self, since: float) -> Sequence[tuple[int, int]]:
        """(vessel, crew) of every crew member whose uplink slot arrived since ``since``."""
        async with self.db.transaction() as tx:
            return await self.uplink.slot_crews(tx, since)

    async def queue_slot_items(
        self, vessel_id: int, period: int, crews: Sequence[int], make: SlotItemMaker, now: float
    ) -> int:
        """Queue one downlink slot item per crew member for ``period`` (at most once per
        crew member and period), each carrying their earliest waiting note or cover, in one
        transaction; how many were queued."""
        made = 0
        async with self.db.transaction() as tx:
            await self.links.lock(tx, vessel_id)
            for crew in crews:
                key = f"slot/{period}/{crew}"
                if await self.downlink_queue.has_item(tx, vessel_id, key):
                    continue
                note = await self.downlink_queue.next_slot_note(tx, vessel_id, crew)
                envelope = make(crew, None if note is None else note[1])
                await self.downlink_queue.queue(tx, vessel_id, envelope, now, key)
                if note is not None:
                    await self.downlink_queue.slot_note_carried(tx, note[0], period)
                made += 1
        return made

    async def vessels_with_downlink_work(
        self, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[int]:
        """Vessels with items or an acknowledgement to send, or batches due for resending."""
        async with self.db.transaction() as tx:
            owing = await self.links.owing_ack_now(tx)
            pending = await self.downlink_queue.vessels_with_pending(tx)
            open_batches = await self.downlink_queue.open_batches(tx)
            heard = await self.links.last_heard(tx) if open_batches else {}
        due = {
            batch.vessel_id
            for batch in open_batches
            if batch.vessel_id in heard
            and resend_due(
                batch.last_sent_at,
                batch.items,
                heard[batch.vessel_id],
                now,
                resend_after_s,
                resend_max_s,
            )
        }
        return sorted({*owing, *pending, *due})

    async def make_downlink_batch(
        self, vessel_id: int, now: float, encode: DownlinkEncoder, max_items: int
    ) -> DownlinkBatch | None:
        """Put pending items (and a cumulative ``BatchAck``, if one is owed) in a new downlink
        batch, encoded by ``encode`` inside the transaction; None when there is nothing.

        An acknowledgement owed lazily rides along with items; alone it waits."""
        async with self.db.transaction() as tx:
            link = await self.links.lock(tx, vessel_id)
            items = await self.downlink_queue.pending(tx, vessel_id, max_items)
            if not items and link.owed is not ShoreState.ACK_DUE:
                return None
            envelopes: list[Envelope] = []
            told: list[int] = []
            carries_ack = link.owed is not ShoreState.NOTHING_OWED
            if carries_ack:
                unacknowledged = await self.downlink_queue.unacknowledged_seqs(tx, vessel_id)
                rejections = await self.refusals.rejections_to_tell(tx, vessel_id, unacknowledged)
                told = [r.batch_seq for r in rejections]
                envelopes.append(
                    BatchAck(
                        up_to=link.window.up_to,
                        written_minutes=int(now // 60),
                        ranges=link.window.ranges[:1000] or None,
                        rejected=tuple((r.batch_seq, r.reason) for r in rejections) or None,
                    )
                )
            envelopes.extend(item.envelope for item in items)
            downlink_seq = link.next_downlink_seq
            data = encode(downlink_seq, envelopes)
            await self.links.downlink_batch_made(tx, link, carries_ack)
            made = await self.downlink_queue.add_batch(
                tx, vessel_id, downlink_seq, data, items, now
            )
            await self.refusals.rejections_told(tx, vessel_id, told, downlink_seq)
        return made

    async def downlink_batches_to_send(
        self, vessel_id: int, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[DownlinkBatch]:
        """Unacknowledged batches never sent, or due for resending, oldest first
        (:func:`shore.store.downlink.resend_due`)."""
        async with self.db.transaction() as tx:
            batches = await self.downlink_queue.unacknowledged(tx, vessel_id)
            heard = await self.links.last_heard(tx, vessel_id)
        if vessel_id not in heard:
            return []
        return [
            batch
            for batch in batches
            if resend_due(
                batch.last_sent_at,
                batch.items,
                heard[vessel_id],
                now,
                resend_after_s,
                resend_max_s,
            )
        ]

    async def mark_downlink_sent(self, vessel_id: int, downlink_seq: int, now: float) -> None:
        """The broker took the batch (PUBACK); that is not the vessel's acknowledgement."""
        async with self.db.transaction() as tx:
            await self.downlink_queue.mark_sent(tx, vessel_id, downlink_seq, now)

    async def downlink_batches(self, vessel_id: int) -> Sequence[DownlinkBatch]:
        """All downlink batches of a vessel, by number."""
        async with self.db.transaction() as tx:
            return await self.downlink_queue.batches(tx, vessel_id)

    # SOS alerts --------------------------------------------------------------------------------

    async def claim_sos_alerts(
        self, now: float, contacts: Sequence[str], limit: int, lease_s: float = 60.0
    ) -> Sequence[SosAlertDue]:
        """SOS alerts due to be sent: one per (SOS, contact); claimed for ``lease_s``.

        Every SOS still in state ``alert`` first gets an alert for each configured contact,
        in this transaction, so an alert is never forgotten across a crash.
        """
        found: list[SosAlertDue] = []
        async with self.db.transaction() as tx:
            if contacts:
                await self.sos.start(tx, await self.uplink.open_sos(tx), contacts)
            claims = await self.sos.claim(tx, now, limit, lease_s)
            vessels = await self.registry.vessel_names(tx, [c.vessel_id for c in claims])
            for claim in claims:
                message = await self.uplink.sos(tx, claim.vessel_id, claim.message_seq)
                vessel = vessels.get(claim.vessel_id)
                if message is None or vessel is None:
                    continue  # not possible by the foreign keys; nothing to say in an alert
                found.append(
                    SosAlertDue(
                        vessel_id=claim.vessel_id,
                        message_seq=claim.message_seq,
                        contact=claim.contact,
                        attempts=claim.attempts,
                        vessel_name=vessel.name,
                        flag=vessel.flag,
                        registration=vessel.registration,
                        crew=message.crew,
                        crew_name=message.crew_name,
                        note=message.note,
                        lang=message.lang,
                        position=message.position,
                        written_minutes=message.written_minutes,
                        accepted_at=message.accepted_at,
                        unauthenticated=message.unauthenticated,
                    )
                )
        return found

    async def retry_sos_alert(
        self, vessel_id: int, message_seq: int, contact: str, due_at: float, detail: str
    ) -> None:
        """An attempt failed for now: count it and try again at ``due_at``."""
        async with self.db.transaction() as tx:
            await self.sos.retry(tx, vessel_id, message_seq, contact, due_at, detail)

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
        outcome = DeliveryOutcome.DELIVERED if delivered else DeliveryOutcome.FAILED
        async with self.db.transaction() as tx:
            if not await self.sos.finish(tx, vessel_id, message_seq, contact, outcome, detail, now):
                return
            delivered_count, still_open = await self.sos.standing(tx, vessel_id, message_seq)
            if not delivered_count and still_open > 0:
                return  # others may still get through
            ended = DeliveryOutcome.DELIVERED if delivered_count else DeliveryOutcome.FAILED
            if not await self.uplink.set_message_state(
                tx, vessel_id, message_seq, ended.message_state, now, only_from=MessageState.ALERT
            ):
                return  # the vessel was told already
            reason = None if ended is DeliveryOutcome.DELIVERED else FailureReason.PROVIDER_ERROR
            receipt = receipt_for(message_seq, ended, reason, now)
            await self.downlink_queue.queue(tx, vessel_id, receipt, now, f"f{message_seq}")

    async def sos_alerts(self, vessel_id: int) -> Sequence[SosAlertRecord]:
        """A vessel's SOS alerts, by sequence number and contact."""
        async with self.db.transaction() as tx:
            return await self.sos.records(tx, vessel_id)


def _stored(has_content: bool) -> ShoreInput:
    """What storing (or seeing again) a batch means for the acknowledgement owed."""
    return ShoreInput.STORED if has_content else ShoreInput.STORED_ACK_ONLY
