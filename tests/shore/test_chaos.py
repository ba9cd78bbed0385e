"""Relay chaos: the relay process (``vessel-relay shore run``) is SIGKILLed at random moments
while it ingests and delivers; the vessel publishes every batch ten times in a random order
and resends what is not acknowledged. Every message reaches the family's smarthost (a real
aiosmtpd sink) under its own Message-ID, a repeat only after a kill mid-send and always
with the same Message-ID, and every DELIVERED receipt reaches the vessel.

Size: ``VR_RELAY_CHAOS_MESSAGES`` (default 600); the issue's full size is 5,000.

Status: marked slow and FAILING on the shared tree of 2026-11-23 (see the report): after
the first SIGKILL the restarted relay ingested nothing more and the 20 deliveries claimed
by the killed worker waited for their 600 s lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from protocol.envelopes import ReceiptStage
from tests.kit.mosquitto import MosquittoBroker
from tests.shore.test_ingest import (
    VESSEL,
    RelayProcess,
    Vessel,
    make_batches,
    register_vessel,
    vessel_link,
    write_relay,
)
from tests.shore.test_mail import SmtpSink
from vessel_relay.keyfiles import write_secret

MESSAGES = int(os.environ.get("VR_RELAY_CHAOS_MESSAGES", "600"))
PER_BATCH = 20
#: A worker sends at most this many mails at once: the most repeats one kill can cause.
CONCURRENCY = 8


def delivered(vessel: Vessel) -> set[int]:
    return {seq for seq, stage in vessel.receipts if stage is ReceiptStage.DELIVERED}


@pytest.mark.slow
async def test_relay_sigkilled_during_ingest_and_delivery_delivers_each_message_once(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Batches of a vessel, each published ten times in random order, while the relay is
    killed (SIGKILL) and restarted several times: every message is mailed to the family
    under its own Message-ID, repeats are only what kills mid-send can cause, and the
    vessel receives DELIVERED for every message."""
    rng = random.Random(int(os.environ.get("VR_CHAOS_SEED", "5")))
    batches = make_batches(MESSAGES // PER_BATCH, PER_BATCH)
    total = len(batches) * PER_BATCH
    kills = 3
    with SmtpSink() as sink:
        extra = f"[delivery]\nenabled = true\nsmtp_host = '127.0.0.1'\nsmtp_port = {sink.port}\n"
        config = write_relay(tmp_path, fresh_mosquitto, extra=extra)
        write_secret(tmp_path / "reply.key", b"r" * 32)
        await register_vessel(tmp_path)
        relay = RelayProcess(config, tmp_path / "relay.log")
        try:
            await relay.start()
            async with vessel_link(fresh_mosquitto) as v:
                copies = [data for data in batches for _ in range(10)]
                rng.shuffle(copies)
                # The contact book rides in batch 1; a message that arrives before it waits
                # (transient) for a minute or more: announce it first to keep the run short.
                copies.insert(0, batches[0])
                publisher = asyncio.create_task(_publish_all(v, copies))
                for round_ in range(kills):
                    # Kill while work is under way: after some more mails went out.
                    target = len(sink.handler.received) + rng.randint(1, max(1, total // 6))
                    async with asyncio.timeout(120):
                        goal = total * (round_ + 1) // (kills + 1)
                        while not _busy_enough(sink, v, min(target, total), goal):  # noqa: ASYNC110
                            await asyncio.sleep(0.05)  # the sink fills from its own thread
                    relay.kill()
                    await relay.start()
                await publisher
                # The vessel resends whatever is unacknowledged, as its outbox does.
                async with asyncio.timeout(240):
                    while len(delivered(v)) < total:
                        for seq, data in enumerate(batches, start=1):
                            if seq not in v.acked:
                                await v.publish(data)
                        with contextlib.suppress(TimeoutError):
                            await v.wait_for(lambda: len(delivered(v)) >= total, timeout_s=3)
                await asyncio.sleep(0.5)  # a duplicate receipt, if one were sent, lands
            assert relay.terminate() == 0
        finally:
            relay.ensure_stopped()
        received = list(sink.handler.received)
    ids = Counter(
        str(message_from_bytes(raw, policy=policy.default)["Message-ID"]) for _, _, raw in received
    )
    expected = {f"<{VESSEL}.{seq}@relay.example.org>" for seq in range(1, total + 1)}
    assert set(ids) == expected
    repeats = sum(count - 1 for count in ids.values())
    assert repeats <= kills * CONCURRENCY
    assert delivered(v) == set(range(1, total + 1))


def _busy_enough(sink: SmtpSink, vessel: Vessel, mails: int, receipts: int) -> bool:
    return len(sink.handler.received) >= mails or len(delivered(vessel)) >= receipts


async def _publish_all(vessel: Vessel, copies: list[bytes]) -> None:
    for data in copies:
        await vessel.publish(data)
