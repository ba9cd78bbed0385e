"""Relay chaos: the relay process (``vessel-relay shore run``) is SIGKILLed at random moments
while it ingests and delivers; the vessel publishes every batch ten times in a random order
and, like its outbox, resends what no ``BatchAck`` covers and acknowledges the downlink it
received (the relay holds new receipts while a downlink batch is unacknowledged and the
vessel away: ``protocol.exchange.downlink_release_due``). Every message reaches the
family's smarthost (a real aiosmtpd sink) under its own Message-ID, a repeat only after a
kill mid-send and always with the same Message-ID, and every DELIVERED receipt reaches the
vessel.

Size: ``VR_RELAY_CHAOS_MESSAGES`` (default 1,000 in the default run; the issue's full size is
5,000, run with ``VR_RELAY_CHAOS_MESSAGES=5000``), ``VR_RELAY_CHAOS_KILLS`` (default 3),
``VR_CHAOS_SEED``.

Why a killed relay needs the vessel's resends. aiomqtt PUBACKs uplink batches as soon as they
reach its in-memory queue, so the batches a relay had taken from the broker but not yet
committed die with it and the broker will not hand them out again: the restarted relay sees
nothing of them. Only the vessel's resend of every unacknowledged batch brings them back
(FIELD-NOTES, aiomqtt). A test vessel that published each batch once and then waited, as an
earlier version of this test did, therefore saw "nothing ingested after the first kill".

Why the lease is short. Deliveries the killed worker had claimed but not yet attempted are
given back when the same worker starts again (``release_claims``); a short ``[store]
lease_s`` also bounds the wait when that worker never comes back.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path

from common.keyfiles import write_secret
from protocol.envelopes import ReceiptStage
from shore.config import DeliverySection
from shore.delivery import DeliveryConfig
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.wait import eventually
from tests.shore.store_fixtures import SHORE_KEY, uplink
from tests.shore.test_ingest import (
    VESSEL,
    RelayProcess,
    Vessel,
    make_batches,
    register_vessel,
    vessel_link,
)
from tests.shore.test_mail import SmtpSink

MESSAGES = int(os.environ.get("VR_RELAY_CHAOS_MESSAGES", "1000"))
KILLS = int(os.environ.get("VR_RELAY_CHAOS_KILLS", "3"))
SEED = int(os.environ.get("VR_CHAOS_SEED", "5"))
PER_BATCH = 20
#: Each of a worker's delivery loops claims this many deliveries at once, records their
#: attempts together and their outcomes together after sending them; the relay runs
#: ``[delivery] workers`` such loops: the most repeats one kill can cause.
CLAIMED_AT_ONCE = DeliveryConfig().batch_size * DeliverySection().workers
#: How long a claim of a dead worker holds a delivery (short, so the run stays short).
LEASE_S = 3.0
#: The vessel's outbox resends unacknowledged batches this often.
RESEND_S = 2.0


def delivered(vessel: Vessel) -> set[int]:
    return {seq for seq, stage in vessel.receipts if stage is ReceiptStage.DELIVERED}


def write_chaos_relay(data: Path, broker: MosquittoBroker, smtp_port: int) -> Path:
    """Relay config: one worker, delivery to the sink, a short lease, a calm downlink."""
    data.mkdir(parents=True, exist_ok=True)
    write_secret(data / "shore.key", SHORE_KEY.seed)
    write_secret(data / "reply.key", b"r" * 32)
    config = data / "relay.toml"
    config.write_text(
        f'[relay]\ndata_dir = "{data}"\nworker = 1\n'
        f"[store]\nlease_s = {LEASE_S}\n"
        f'[mqtt]\nurl = "mqtt://{broker.host}:{broker.port}"\n'
        "[downlink]\ntick_s = 0.2\nresend_after_s = 5.0\nresend_max_s = 20.0\n"
        f"[delivery]\nenabled = true\nsmtp_host = '127.0.0.1'\nsmtp_port = {smtp_port}\n",
        encoding="utf-8",
    )
    return config


async def vessel_outbox(
    vessel: Vessel, batches: list[bytes], copies: list[bytes], rng: random.Random
) -> None:
    """Publish the shuffled copies in small bursts, and every ``RESEND_S`` resend each batch
    no BatchAck covers yet and acknowledge the downlink received since the last time (an
    acknowledgement-only batch, offered again until a BatchAck covers it, as the outbox
    does), until every message has its DELIVERED receipt."""
    total = len(batches) * PER_BATCH
    pending = list(copies)
    loop = asyncio.get_running_loop()
    next_resend = loop.time() + RESEND_S
    next_seq = len(batches) + 1
    acknowledged: frozenset[int] = frozenset()
    ack_batch: tuple[int, bytes] | None = None
    while len(delivered(vessel)) < total:
        for _ in range(min(len(pending), rng.randint(1, 10))):
            await vessel.publish(pending.pop())
        if loop.time() >= next_resend:
            for seq, data in enumerate(batches, start=1):
                if seq not in vessel.acked:
                    await vessel.publish(data)
            seen = frozenset(vessel.downlink_seqs)
            if seen != acknowledged:
                ack_batch = (next_seq, uplink(VESSEL, next_seq, [vessel.downlink_ack()]))
                next_seq += 1
                acknowledged = seen
            if ack_batch is not None and ack_batch[0] not in vessel.acked:
                await vessel.publish(ack_batch[1])
            next_resend = loop.time() + RESEND_S
        await asyncio.sleep(0.02 if pending else 0.2)


async def test_relay_sigkilled_during_ingest_and_delivery_delivers_each_message_once(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Batches of a vessel, each published ten times in random order, while the relay is
    killed (SIGKILL) at random moments of ingest and delivery and restarted: every message
    is mailed to the family under its own Message-ID, repeats are only what kills mid-send
    can cause, and the vessel receives DELIVERED for every message."""
    rng = random.Random(SEED)
    batches = make_batches(MESSAGES // PER_BATCH, PER_BATCH)
    total = len(batches) * PER_BATCH
    kills_done = 0
    with SmtpSink() as sink:
        config = write_chaos_relay(tmp_path, fresh_mosquitto, sink.port)
        await register_vessel(tmp_path)
        relay = RelayProcess(config, tmp_path / "relay.log")
        try:
            await relay.start()
            async with vessel_link(fresh_mosquitto) as v:
                copies = [data for data in batches for _ in range(10)]
                rng.shuffle(copies)
                # The contact book rides in batch 1; a message that arrives before it waits
                # (transient) for a minute or more: announce it first to keep the run short.
                copies.append(batches[0])  # popped first
                outbox = asyncio.create_task(vessel_outbox(v, batches, copies, rng))
                async with asyncio.timeout(120 + total * 0.1):
                    for round_ in range(KILLS):
                        # Kill at a random moment while work is under way: after a random
                        # share of this round's mails, or of its receipts, arrived.
                        share = total * (round_ + rng.random()) / (KILLS + 1)

                        # the sink fills from its own thread: poll it
                        def busy(share: float = share) -> bool:
                            return _busy_enough(sink, v, share) or outbox.done()

                        await eventually(busy, 120, 0.02, what=f"{share:.0f} mails or receipts")
                        if outbox.done():
                            break
                        relay.kill()
                        kills_done += 1
                        await relay.start()
                    await outbox
                await asyncio.sleep(0.5)  # a duplicate receipt, if one were sent, lands
            assert relay.terminate() == 0
        finally:
            relay.ensure_stopped()
        received = list(sink.handler.received)
    assert kills_done == KILLS, "the run ended before every kill; raise the size"
    ids = Counter(
        str(message_from_bytes(raw, policy=policy.default)["Message-ID"]) for _, _, raw in received
    )
    expected = {f"<{VESSEL}.{seq}@relay.example.org>" for seq in range(1, total + 1)}
    assert set(ids) == expected
    repeats = sum(count - 1 for count in ids.values())
    assert repeats <= kills_done * CLAIMED_AT_ONCE
    assert delivered(v) == set(range(1, total + 1))


def _busy_enough(sink: SmtpSink, vessel: Vessel, share: float) -> bool:
    return len(sink.handler.received) >= share or len(delivered(vessel)) >= share
