"""Units of work of the downlink: envelopes queued for vessels, and the signed batches made
and resent.

A downlink batch is made in one transaction with the vessel's link row locked: its
number, its ``BatchAck`` (from the replay window, with the refusals still to tell, when an
acknowledgement is owed: :data:`protocol.exchange.SHORE_TRANSITIONS`), its items and its
bytes are committed together and never change afterwards. When a batch is resent is one
rule, :func:`shore.store.downlink.resend_due`; whether waiting items go into batches at
all is another, :func:`protocol.exchange.downlink_release_due`, weighed under the same
lock: while the vessel is away and a batch with items is unacknowledged, what is queued
for it waits in the store, and goes down in one release when its uplink comes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from protocol.envelopes import (
    BatchAck,
    CaseStatus,
    CaseStatusUpdate,
    Envelope,
    Reply,
    VoiceReply,
)
from protocol.exchange import ShoreState, downlink_release_due
from protocol.languages import Language
from protocol.slots import slot_header
from shore.store.database import Tx
from shore.store.downlink import DownlinkBatch, DownlinkEncoder, SlotItemMaker, resend_due
from shore.store.parts import StoreParts

if TYPE_CHECKING:  # the store never codes speech: it keeps the frames it is given
    from common.speech import CodedSpeech


class DownlinkUnits(StoreParts):
    """The downlink's units of work (``shore.downlink.DownlinkStore``, the union API's
    case notes, families' replies)."""

    async def queue_downlink(
        self,
        vessel_id: int,
        envelopes: Sequence[Envelope],
        now: float,
        dedupe: str | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        """Queue envelopes down to a vessel (with ``dedupe``, at most once per key;
        ``urgent``: they must not wait behind a batch in flight)."""
        async with self.db.transaction() as tx:
            await self.registry.require(tx, vessel_id)
            for index, envelope in enumerate(envelopes):
                key = None if dedupe is None else f"{dedupe}/{index}"
                await self.downlink_queue.queue(tx, vessel_id, envelope, now, key, urgent=urgent)

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

    async def queue_spoken_reply(
        self,
        vessel_id: int,
        crew: int,
        contact: int,
        text: str | None,
        lang: Language,
        truncated: bool,
        speech: CodedSpeech,
        now: float,
    ) -> int:
        """Queue a family's spoken reply, and its mail's text if it had any, in one
        transaction (each with its own ``reply_seq``, the text first); returns the voice
        reply's ``reply_seq``. Only for vessels whose agents read voice replies."""
        minutes = int(now // 60)
        async with self.db.transaction() as tx:
            link = await self.links.lock(tx, vessel_id)
            if text:
                text_seq = await self.links.take_reply_seq(tx, link)
                reply = Reply(
                    reply_seq=text_seq,
                    crew=crew,
                    contact=contact,
                    written_minutes=minutes,
                    lang=lang,
                    body=text,
                    truncated=True if truncated else None,
                )
                await self.downlink_queue.queue(tx, vessel_id, reply, now, f"r{text_seq}")
                link = await self.links.lock(tx, vessel_id)  # read the number taken again
            reply_seq = await self.links.take_reply_seq(tx, link)
            voice = VoiceReply(
                reply_seq=reply_seq,
                crew=crew,
                contact=contact,
                mode=speech.mode,
                duration_ms=speech.duration_ms,
                frames=speech.frames,
                written_minutes=minutes,
            )
            await self.downlink_queue.queue(tx, vessel_id, voice, now, f"r{reply_seq}")
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
        """Vessels with an acknowledgement due, items to release
        (:func:`protocol.exchange.downlink_release_due`), or batches due for resending."""
        async with self.db.transaction() as tx:
            owing = await self.links.owing_ack_now(tx)
            waiting = await self.downlink_queue.waiting(tx)
            open_batches = await self.downlink_queue.open_batches(tx)
            heard = await self.links.last_heard(tx) if open_batches else {}
        in_flight = Counter(batch.vessel_id for batch in open_batches if batch.items)
        # An acknowledgement due is in ``owing``; here the rest of the rule decides.
        release = {
            vessel_id
            for vessel_id, what in waiting.items()
            if downlink_release_due(
                ShoreState.NOTHING_OWED,
                waiting=what.items,
                urgent=what.urgent,
                in_flight=in_flight[vessel_id],
            )
        }
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
        return sorted({*owing, *release, *due})

    async def make_downlink_batch(
        self,
        vessel_id: int,
        now: float,
        encode: DownlinkEncoder,
        max_items: int,
        *,
        continuing: bool = False,
        ack_within: int | None = None,
    ) -> DownlinkBatch | None:
        """Put pending items (and a cumulative ``BatchAck``, if one is owed) in a new downlink
        batch, encoded by ``encode`` inside the transaction; None when there is nothing, or
        when the items wait (:func:`protocol.exchange.downlink_release_due`: the vessel is
        away and has not collected the batch in flight).

        ``continuing``: this pass already made a batch for the vessel and more items wait
        than ``max_items`` took: they go too (a release is split only at the size limit).
        An acknowledgement owed lazily rides along with items; alone it waits.

        ``ack_within``: a batch carrying the acknowledgement must not be bigger than this
        (a vessel on its SBD fallback: what fits its MT messages); if it would be, the
        acknowledgement goes alone and the items stay queued for the next batch."""
        async with self.db.transaction() as tx:
            link = await self.links.lock(tx, vessel_id)
            if not continuing:
                waiting = (await self.downlink_queue.waiting(tx, vessel_id)).get(vessel_id)
                in_flight = await self.downlink_queue.in_flight(tx, vessel_id)
                if not downlink_release_due(
                    link.owed,
                    waiting=0 if waiting is None else waiting.items,
                    urgent=waiting is not None and waiting.urgent,
                    in_flight=in_flight,
                ):
                    return None
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
            acknowledgement = list(envelopes)
            envelopes.extend(item.envelope for item in items)
            downlink_seq = link.next_downlink_seq
            data = encode(downlink_seq, envelopes)
            if (
                ack_within is not None
                and carries_ack
                and items
                and len(data) > ack_within
                and link.owed is ShoreState.ACK_DUE
            ):
                items = []  # they wait for the next batch
                data = encode(downlink_seq, acknowledgement)
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
            return await self._due_to_send(tx, vessel_id, now, resend_after_s, resend_max_s)

    async def claim_downlink_sends(
        self, vessel_id: int, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[DownlinkBatch]:
        """The batches :meth:`downlink_batches_to_send` names, each taken by this worker to
        publish now: counted as sent at ``now`` in the same transaction, so another worker
        of the relay passing over the same vessel does not publish it too (the vessel would
        pay for every copy). Returned as they were before the claim (``send_count``: the
        sends before this one). A publish that fails gives its batch back
        (:meth:`downlink_send_failed`); a worker killed between claim and publish leaves
        the batch to the resend timer."""
        async with self.db.transaction() as tx:
            due = await self._due_to_send(tx, vessel_id, now, resend_after_s, resend_max_s)
            return [batch for batch in due if await self.downlink_queue.claim_send(tx, batch, now)]

    async def downlink_send_failed(self, batch: DownlinkBatch) -> None:
        """A batch claimed by :meth:`claim_downlink_sends` did not reach the broker: it is
        as before the claim, and goes on the next pass."""
        async with self.db.transaction() as tx:
            await self.downlink_queue.give_back_send(tx, batch)

    async def _due_to_send(
        self, tx: Tx, vessel_id: int, now: float, resend_after_s: float, resend_max_s: float
    ) -> list[DownlinkBatch]:
        batches = await self.downlink_queue.unacknowledged(tx, vessel_id)
        if not batches:
            return []
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

    async def downlink_batches(self, vessel_id: int) -> Sequence[DownlinkBatch]:
        """All downlink batches of a vessel, by number."""
        async with self.db.transaction() as tx:
            return await self.downlink_queue.batches(tx, vessel_id)
