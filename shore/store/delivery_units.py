"""Units of work of deliveries: claims, attempts, final outcomes and their receipts.

A final outcome is one transaction: the delivery's outcome, the message's state and the
receipt queued down to the vessel (:func:`shore.vocabulary.receipt_for`), so the three are
never apart; a second outcome for the same delivery changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from protocol.envelopes import Envelope, FailureReason
from shore.store.database import Tx
from shore.store.deliveries import Claim, Delivery, DeliveryKey, DeliveryRecord, delivery_of
from shore.store.parts import StoreParts
from shore.store.uplink import KEYS_PER_STATEMENT, MessageToDeliver
from shore.vocabulary import (
    CONTACT_NOT_KNOWN_YET,
    DeliveryEnd,
    DeliveryOutcome,
    MessageState,
    receipt_for,
)

_log = logging.getLogger(__name__)

#: Family messages failed for their time to live by one pass (the next pass takes the rest).
_EXPIRED_PER_PASS = 500


class DeliveryUnits(StoreParts):
    """The deliveries' units of work (``shore.delivery.DeliveryStore`` and the operator's)."""

    async def claim_due_deliveries(self, now: float, limit: int, worker: str) -> Sequence[Delivery]:
        """Take up to ``limit`` due deliveries for ``worker`` under a lease."""
        async with self.db.transaction() as tx:
            claims = await self._due_in_time(tx, now, limit)
            await self.delivery_queue.take(tx, claims, now, worker, attempt=False)
            messages = await self.uplink.to_deliver(tx, [claim.key for claim in claims])
        return [delivery_of(claim, messages[claim.key], self.phrases) for claim in claims]

    async def claim_deliveries(self, now: float, limit: int, worker: str) -> Sequence[Delivery]:
        """Take up to ``limit`` due deliveries for ``worker`` under a lease and record an
        attempt on each, in ONE transaction (one commit for the lot; every attempt is on
        record before anything is sent). A worker that dies before sending some of them
        leaves those as unfinished attempts: they are resent later, counted as repeats.

        A family message among them that is past its time to live fails instead, in the
        same transaction and before any attempt is recorded, so none is ever handed out
        (the others wait for :meth:`expire_undelivered`, the retention keeper's pass)."""
        async with self.db.transaction() as tx:
            claims = await self._due_in_time(tx, now, limit)
            await self.delivery_queue.take(tx, claims, now, worker, attempt=True)
            messages = await self.uplink.to_deliver(tx, [claim.key for claim in claims])
        return [delivery_of(claim, messages[claim.key], self.phrases) for claim in claims]

    async def _due_in_time(self, tx: Tx, now: float, limit: int) -> list[Claim]:
        """Up to ``limit`` due deliveries, less the family messages among them that are past
        their time to live (those fail here). The cost is that of the claims, whatever
        the number of messages stored or waiting."""
        claims = await self.delivery_queue.due(tx, now, limit)
        if not claims:
            return claims
        ended = set(await self._expire_undelivered(tx, now, among=[c.key for c in claims]))
        return [claim for claim in claims if claim.key not in ended]

    async def expire_undelivered(self, now: float) -> list[DeliveryKey]:
        """Fail, with ``DEADLINE_PASSED`` and their receipts queued to the vessel, the family
        messages still undelivered at ``now`` although they were written longer ago than
        their vessel's time to live (``message_ttl``); up to 500 a call, in ONE transaction.
        A message's age counts at most from the vessel's registration with this relay.
        Returns their keys (each is also logged, without content)."""
        async with self.db.transaction() as tx:
            return await self._expire_undelivered(tx, now)

    async def _expire_undelivered(
        self, tx: Tx, now: float, among: Sequence[DeliveryKey] | None = None
    ) -> list[DeliveryKey]:
        """:meth:`expire_undelivered` in ``tx``; ``among``: only those messages."""
        ttl = self.message_ttl
        found: list[tuple[int, int, float]] = []
        if among is not None:
            found = [
                (vessel, seq, at)
                for vessel, seq, at in await self.uplink.undelivered_written_at(tx, among)
                if at + ttl.for_vessel(vessel) <= now
            ]
        else:
            for vessel_id, ttl_s in ttl.by_vessel:
                found += await self.uplink.undelivered_messages_older_than(
                    tx, now - ttl_s, _EXPIRED_PER_PASS, vessel_id=vessel_id
                )
            found += await self.uplink.undelivered_messages_older_than(
                tx,
                now - ttl.default_s,
                _EXPIRED_PER_PASS,
                excluding=[vessel_id for vessel_id, _ in ttl.by_vessel],
            )
        if not found:
            return []
        # A message cannot have waited on board since before the vessel was registered
        # here: a vessel clock that was wrong when it was written makes it no older.
        registered = await self.registry.added_times(tx)
        written = {
            DeliveryKey(vessel, seq): max(at, registered.get(vessel, at))
            for vessel, seq, at in found
        }
        written = {
            key: at for key, at in written.items() if at + ttl.for_vessel(key.vessel_id) <= now
        }
        if not written:
            return []
        ended = await self._finish_many(
            tx, list(written), DeliveryOutcome.FAILED, FailureReason.DEADLINE_PASSED, now
        )
        for key in ended:
            days = ttl.for_vessel(key.vessel_id) / 86400
            age_days = (now - written[key]) / 86400
            await self.delivery_queue.note(
                tx,
                [key],
                f"time to live passed: written {age_days:.1f} days ago (TTL {days:g} days)",
            )
            _log.info(
                "vessel %d message %d: not delivered within its time to live (%g days; "
                "written %.1f days ago): failed %s, the crew member is told",
                key.vessel_id,
                key.message_seq,
                days,
                age_days,
                FailureReason.DEADLINE_PASSED.name,
            )
        return ended

    async def finish_deliveries(self, ends: Sequence[DeliveryEnd], now: float) -> None:
        """The attempts' ends, in ONE transaction: final outcomes with the message's state
        and its receipt to the vessel; transient failures rescheduled. A delivery that had
        its outcome already changes nothing."""
        if not ends:
            return
        # Final outcomes go a few statements per (outcome, reason), not per delivery.
        final: dict[tuple[DeliveryOutcome, FailureReason | None], list[DeliveryKey]] = {}
        for end in ends:
            if end.outcome is not None:
                final.setdefault((end.outcome, end.reason), []).append(DeliveryKey.of(end.key))
        # Attempts that found no contact: their vessels' link rows are locked first, as
        # ingest does, so a contact book change stored at the same time either is seen by
        # ``reschedule`` (then they are due now) or sees them rescheduled (ingest makes
        # them due now): never both missed, whatever worker stores it.
        waiting = sorted(
            {
                DeliveryKey.of(end.key).vessel_id
                for end in ends
                if end.outcome is None and end.detail == CONTACT_NOT_KNOWN_YET
            }
        )
        async with self.db.transaction() as tx:
            for vessel_id in waiting:
                await self.links.lock(tx, vessel_id)
            for (outcome, reason), keys in final.items():
                await self._finish_many(tx, keys, outcome, reason, now)
            for end in ends:
                if end.outcome is None:
                    assert end.retry_at is not None  # DeliveryEnd checks it
                    await self.delivery_queue.reschedule(
                        tx,
                        DeliveryKey.of(end.key),
                        end.retry_at,
                        end.detail,
                        maybe_sent=end.maybe_sent,
                        now=now,
                    )

    async def _finish_many(
        self,
        tx: Tx,
        keys: Sequence[DeliveryKey],
        outcome: DeliveryOutcome,
        reason: FailureReason | None,
        now: float,
    ) -> list[DeliveryKey]:
        """:meth:`_finish_delivery` for several deliveries with one outcome; those that
        ended now (the others had an outcome already)."""
        all_ended: list[DeliveryKey] = []
        for start in range(0, len(keys), KEYS_PER_STATEMENT):
            ended = await self.delivery_queue.finish_many(
                tx, keys[start : start + KEYS_PER_STATEMENT], outcome, reason, now
            )
            await self.uplink.set_messages_state(tx, ended, outcome.message_state, now)
            by_vessel: dict[int, list[tuple[Envelope, str | None]]] = {}
            for key in sorted(ended):
                receipt = receipt_for(key.message_seq, outcome, reason, now)
                by_vessel.setdefault(key.vessel_id, []).append((receipt, f"f{key.message_seq}"))
            for vessel_id, receipts in by_vessel.items():
                await self.downlink_queue.queue_many(tx, vessel_id, receipts, now)
            all_ended += ended
        return all_ended

    async def voice_note(self, vessel_id: int, message_seq: int) -> MessageToDeliver | None:
        """A stored voice message with its contact (None for another kind, or unknown):
        what a voice link plays (:mod:`shore.voice_links`)."""
        async with self.db.transaction() as tx:
            found = await self.uplink.to_deliver(tx, [(vessel_id, message_seq)])
        message = found.get((vessel_id, message_seq))
        return message if message is not None and message.voice is not None else None

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
        retry, or when its content was purged after the retention. The vessel already heard
        "failed" and hears of it again only if it is delivered (its receipt key is spent)."""
        key = DeliveryKey(vessel_id, message_seq)
        async with self.db.transaction() as tx:
            if await self.uplink.is_purged(tx, vessel_id, message_seq):
                return False  # its content is gone (retention): nothing left to send
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
