"""A small fleet in a real store, as an operator would find it on a Monday morning.

Vessel 7 (Sea Star 7) talks every day: 20 days of batches in 26 sessions, six messages:
three delivered, one failed for good (address invalid), one retrying (the smarthost said
451), one queued; one forged payload in quarantine. Vessel 8 was last heard five days
ago; vessel 9 never.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.envelopes import Channel, ContactBookChange, CrewMessage, Envelope, FailureReason
from protocol.errors import Reason
from protocol.languages import Language
from shore.store import DeliveryKey, RelayStore, VesselInfo
from tests.shore.store_fixtures import VESSEL_KEY, decoded_uplink, uplink

TEXT = "SECRET-TEXT ကျန်းမာပါစေ"
ADDRESS = "mother-secret@example.com"
DAY = 86400.0


@dataclass(frozen=True)
class Fleet:
    now: float
    busy: int = 7
    quiet: int = 8
    never: int = 9
    failed_seq: int = 4
    retrying_seq: int = 5


async def populate(store: RelayStore, now: float) -> Fleet:
    """Fill ``store`` as the module docstring says; times relative to ``now``."""
    public = VESSEL_KEY.verify_key.key
    for vessel_id, name in ((7, "Sea Star 7"), (8, "Andaman Pearl"), (9, "Ocean Trust 3")):
        info = VesselInfo(name, "TH", f"TH-{vessel_id:04d}", "Andaman Fishing Co", (1,))
        await store.add_vessel(info, public, now - 40 * DAY, vessel_id)
    contact = ContactBookChange(
        crew=3,
        contact=1,
        channel=Channel.EMAIL,
        address=ADDRESS,
        written_minutes=int((now - 20 * DAY) // 60),
        contact_lang=Language.MYA,
    )
    seq = 0
    message_seq = 0
    for day in range(20, 0, -1):
        at = now - day * DAY + 3600.0 * (day % 5)
        envelopes: list[Envelope] = [contact] if seq == 0 else []
        if day <= 6:
            message_seq += 1
            envelopes.append(
                CrewMessage(
                    message_seq=message_seq,
                    crew=3,
                    contact=1,
                    written_minutes=int(at // 60),
                    lang=Language.MYA,
                    body=f"{TEXT} {message_seq}",
                )
            )
        for k in range(1 + day % 3):
            seq += 1
            # every fourth day each batch goes in a session of its own, six hours apart
            sent_at = at + (k * 6 * 3600 if day % 4 == 0 else k * 60)
            data = uplink(7, seq, envelopes or [contact], minutes=int(sent_at // 60))
            await store.ingest_batch(decoded_uplink(data), data, sent_at)
            envelopes = []
    quiet = uplink(8, 1, [contact], minutes=int((now - 5 * DAY) // 60))
    await store.ingest_batch(decoded_uplink(quiet), quiet, now - 5 * DAY)
    claimed = await store.claim_due_deliveries(now, 10, "relay-1-d1")
    assert [d.message_seq for d in claimed] == [1, 2, 3, 4, 5, 6]
    for delivery in claimed[:5]:
        await store.record_attempt(delivery.key, now - 600, "relay-1-d1")
    for seq_done in (1, 2, 3):
        await store.finish_delivery(DeliveryKey(7, seq_done), "delivered", None, now - 500)
    await store.finish_delivery(DeliveryKey(7, 4), "failed", FailureReason.ADDRESS_INVALID, now)
    await store.reschedule_delivery(
        DeliveryKey(7, 5), now + 3600, "451 4.3.0 mailbox temporarily unavailable", now - 400
    )
    await store.quarantine(
        b"\x00forged payload",
        Reason.SIGNATURE_INVALID,
        "the signature of vessel 7 batch 99 matches none of the vessel's valid keys",
        now - 3 * 3600,
        7,
        99,
    )
    return Fleet(now)
