"""Units of work of SOS alerts: every SOS gets one alert per configured contact, sent until
one gets through or all fail; the vessel is told in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.envelopes import FailureReason
from shore.store.parts import StoreParts
from shore.store.sos import SosAlertDue, SosAlertRecord
from shore.vocabulary import DeliveryOutcome, MessageState, receipt_for


class SosUnits(StoreParts):
    """The SOS alerts' units of work (``shore.alerts.SosStore``)."""

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
        SOS is ``failed`` and the vessel gets a ``DeliveryFailure``. Either is urgent: it
        goes down at once, never held behind a downlink batch in flight
        (:func:`protocol.exchange.downlink_release_due`).
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
            await self.downlink_queue.queue(
                tx, vessel_id, receipt, now, f"f{message_seq}", urgent=True
            )

    async def sos_alerts(self, vessel_id: int) -> Sequence[SosAlertRecord]:
        """A vessel's SOS alerts, by sequence number and contact."""
        async with self.db.transaction() as tx:
            return await self.sos.records(tx, vessel_id)
