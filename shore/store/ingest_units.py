"""Units of work of the uplink: a batch stored (or refused) with all it brings, in ONE
transaction; and what was stored, read back.

:meth:`IngestUnits.ingest_batch` is the heart of the relay's promise: the batch row, its
contacts, its messages, a delivery and an ``ACCEPTED_ASHORE`` receipt per new message, the
downlink batches its ``BatchAck`` covers, its leaf in the transparency log, the replay
window and what the shore owes the vessel are committed together or not at all. The
``BatchAck`` itself is made later from the replay window
(:meth:`~shore.store.downlink_units.DownlinkUnits.make_downlink_batch`), so an
acknowledgement never exists without the commit it speaks for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from protocol.batch import Batch
from protocol.envelopes import (
    BatchAck,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    GrievanceReport,
    LaneBlock,
    ReceiptStage,
    Sos,
    VoiceNote,
    acknowledges_only,
)
from protocol.errors import Reason
from protocol.exchange import ShoreInput
from shore.store.database import Tx
from shore.store.links import ReplayWindow
from shore.store.parts import StoreParts
from shore.store.refusals import QuarantineEntry
from shore.store.uplink import ContactRecord, IngestOutcome, IngestResult, MessageRecord


class IngestUnits(StoreParts):
    """The uplink's units of work (``shore.ingest.IngestStore`` and the reads of tests)."""

    async def stored_batch_hash(self, vessel_id: int, batch_seq: int) -> bytes | None:
        """The SHA-256 of the stored batch (vessel, batch_seq), or None if not stored."""
        async with self.db.transaction() as tx:
            stored = await self.uplink.stored_batch(tx, vessel_id, batch_seq)
        return None if stored is None else stored.sha256

    async def ingest_batch(self, batch: Batch, data: bytes, now: float) -> IngestResult:
        """Store one verified uplink batch and everything it brings, in ONE transaction.

        New batch: the batch row, its contacts, its messages (a replayed message is not
        stored twice), a delivery row and an ``ACCEPTED_ASHORE`` receipt for each new
        message, its grievance lane blocks (once per vessel, period and index; a place
        already filled keeps its first block), downlink batches its ``BatchAck`` covers
        marked acknowledged, its leaf in the transparency log, the replay window advanced
        and an acknowledgement owed (at once for content, lazily for acknowledgements
        only). Same bytes again: only the
        acknowledgement is owed again (DUPLICATE). Other bytes under a stored batch
        number: quarantined and refused (REJECTED, REPLAYED).
        """
        vessel_id, batch_seq = batch.vessel_id, batch.batch_seq
        digest = hashlib.sha256(data).digest()
        has_content = not acknowledges_only(batch.envelopes)
        async with self.db.transaction() as tx:
            link = await self.links.lock(tx, vessel_id)
            if not await self.uplink.store_batch(tx, batch, digest, len(data), has_content, now):
                stored = await self.uplink.stored_batch(tx, vessel_id, batch_seq)
                assert stored is not None  # under the vessel's lock: it is still there
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
            contacts = 0
            for envelope in batch.envelopes:
                if isinstance(envelope, ContactBookChange):
                    await self.uplink.upsert_contact(tx, vessel_id, envelope, now)
                    contacts += 1
            if contacts:  # messages that came before their contact go now
                await self.delivery_queue.due_now_for_contacts(tx, vessel_id, now)
            acked = 0
            messages: list[CrewMessage | GrievanceReport | Sos | VoiceNote] = []
            lane_blocks: list[LaneBlock] = []
            for envelope in batch.envelopes:
                if isinstance(envelope, LaneBlock):
                    lane_blocks.append(envelope)
                elif isinstance(envelope, BatchAck):
                    acked += await self.downlink_queue.apply_ack(tx, vessel_id, envelope, now)
                elif isinstance(envelope, CrewMessage | GrievanceReport | Sos | VoiceNote):
                    messages.append(envelope)
            stored_now: list[Envelope] = list(
                await self._accept_messages(tx, vessel_id, batch_seq, messages, now)
            )
            new, duplicate = len(stored_now), len(messages) - len(stored_now)
            lane = await self.lane.store_up_blocks(tx, vessel_id, batch_seq, lane_blocks, now)
            await self.links.see_batch(tx, link, batch_seq)
            await self.links.heard(tx, link, _stored(has_content), now)
            # Same transaction: the batch is stored if and only if its leaf is in the log.
            # Last, because the log's head is locked from here to the commit for every
            # vessel's ingest (the leaves are numbered in commit order).
            await self.log.append_leaf(tx, batch, digest, now, stored_now)
        return IngestResult(
            IngestOutcome.STORED,
            vessel_id,
            batch_seq,
            new_messages=new,
            duplicate_messages=duplicate,
            contacts=contacts,
            downlink_acked=acked,
            lane_blocks=lane.new,
            lane_conflicts=lane.conflicting,
        )

    async def _accept_messages(
        self,
        tx: Tx,
        vessel_id: int,
        batch_seq: int,
        envelopes: Sequence[CrewMessage | GrievanceReport | Sos | VoiceNote],
        now: float,
    ) -> Sequence[CrewMessage | GrievanceReport | Sos | VoiceNote]:
        """The batch's messages new to the shore, stored, their deliveries queued (not for
        an SOS: that raises alerts) and their ``ACCEPTED_ASHORE`` receipts queued, a
        statement each for the lot; the new ones, in order (messages seen before are not)."""
        new = await self.uplink.insert_messages(tx, vessel_id, batch_seq, envelopes, now)
        await self.delivery_queue.enqueue_many(
            tx, vessel_id, [e.message_seq for e in new if not isinstance(e, Sos)], now
        )
        minutes = int(now // 60)
        receipts: list[tuple[Envelope, str | None]] = [
            (
                DeliveryReceipt(e.message_seq, ReceiptStage.ACCEPTED_ASHORE, minutes),
                f"a{e.message_seq}",
            )
            for e in new
        ]
        await self.downlink_queue.queue_many(tx, vessel_id, receipts, now)
        return new

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


def _stored(has_content: bool) -> ShoreInput:
    """What storing (or seeing again) a batch means for the acknowledgement owed."""
    return ShoreInput.STORED if has_content else ShoreInput.STORED_ACK_ONLY
