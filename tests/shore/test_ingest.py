"""Ingest and downlink against a real Mosquitto: a vessel publishes signed batches and gets
its BatchAcks and receipts; bad bytes are quarantined; replays store nothing twice; a relay
killed with SIGKILL mid-ingest loses nothing once the vessel resends.

The vessel here is a small simulator made of ``protocol`` calls (the shipboard agent is
not imported: the sides meet only through the bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import tomllib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from common.keyfiles import write_secret
from protocol.envelopes import (
    BatchAck,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    LaneBlock,
    ReceiptStage,
)
from protocol.errors import Reason
from protocol.languages import Language
from protocol.replay import RangeSet
from protocol.signing import SigningKey
from shore.config import parse_config
from shore.relay import run_relay
from shore.store import SqliteStore, VesselInfo
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.mqtt import persistent_client
from tests.kit.relay_process import RelayProcess
from tests.shore.store_fixtures import (
    OTHER_KEY,
    SHORE_KEY,
    T0,
    VESSEL_KEY,
    decoded_downlink,
    uplink,
)
from tests.shore.test_mail import SmtpSink

VESSEL = 7
MINUTES = int(T0 // 60)
ROOT = Path(__file__).resolve().parents[2]


def _contact() -> ContactBookChange:
    return ContactBookChange(
        crew=3,
        contact=1,
        channel=Channel.EMAIL,
        address="mother@example.com",
        written_minutes=MINUTES,
        contact_lang=Language.MYA,
    )


def _message(seq: int) -> CrewMessage:
    return CrewMessage(
        message_seq=seq,
        crew=3,
        contact=1,
        written_minutes=MINUTES,
        lang=Language.MYA,
        body=f"နေကောင်းလား {seq}",
    )


def make_batches(count: int, per_batch: int) -> list[bytes]:
    """``count`` signed batches of ``per_batch`` messages each (the first with the contact)."""
    batches = []
    for index in range(count):
        envelopes: list[Envelope] = [_contact()] if index == 0 else []
        first = index * per_batch + 1
        envelopes += [_message(seq) for seq in range(first, first + per_batch)]
        batches.append(uplink(VESSEL, index + 1, envelopes))
    return batches


@dataclass
class Vessel:
    """A vessel's link as seen from the shore: publish uplink, collect what comes down."""

    client: aiomqtt.Client
    acked: set[int] = field(default_factory=set)
    rejected: dict[int, int] = field(default_factory=dict)
    receipts: list[tuple[int, ReceiptStage]] = field(default_factory=list)
    downlink_seqs: list[int] = field(default_factory=list)
    #: grievance lane blocks that came down, by downlink batch (a resent batch once)
    lane: dict[int, list[LaneBlock]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, data: bytes, vessel_id: int = VESSEL) -> None:
        await self.client.publish(f"vr/{vessel_id}/u", data, qos=1)

    def downlink_ack(self) -> BatchAck:
        """The cumulative BatchAck of the downlink batches received so far."""
        window = RangeSet()
        for seq in self.downlink_seqs:
            window.add(seq)
        return BatchAck(up_to=window.up_to, written_minutes=MINUTES, ranges=window.ranges or None)

    async def acknowledge(
        self, batch_seq: int, vessel_id: int = VESSEL, key: SigningKey = VESSEL_KEY
    ) -> None:
        """Publish uplink batch ``batch_seq`` carrying only :meth:`downlink_ack`, as the
        vessel's next session does (the relay holds what it queues later until the vessel
        has collected its downlink batch: ``protocol.exchange.downlink_release_due``)."""
        data = uplink(vessel_id, batch_seq, [self.downlink_ack()], key=key)
        await self.publish(data, vessel_id)

    async def listen(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            batch = decoded_downlink(message.payload)
            self.downlink_seqs.append(batch.batch_seq)
            blocks = [e for e in batch.envelopes if isinstance(e, LaneBlock)]
            if blocks:
                self.lane[batch.batch_seq] = blocks
            for envelope in batch.envelopes:
                if isinstance(envelope, BatchAck):
                    top = max([envelope.up_to, *(b for _, b in envelope.ranges or ())])
                    self.acked.update(s for s in range(1, top + 1) if envelope.covers(s))
                    self.rejected.update(dict(envelope.rejected or ()))
                elif isinstance(envelope, DeliveryReceipt):
                    self.receipts.append((envelope.message_seq, envelope.stage))
            self.changed.set()

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def wait_collecting(
        self,
        condition: Callable[[], bool],
        ack_batch: Callable[[BatchAck], bytes],
        timeout_s: float = 20.0,
        vessel_id: int = VESSEL,
    ) -> None:
        """Wait for ``condition`` as a vessel that collects its downlink as it comes: each
        time new downlink batches arrived, their :meth:`downlink_ack` goes up at once in
        the uplink batch ``ack_batch`` makes (the relay holds what it queues later until
        the vessel has collected its batch in flight)."""
        acknowledged = 0
        async with asyncio.timeout(timeout_s):
            while True:
                self.changed.clear()
                if condition():
                    return
                if len(self.downlink_seqs) > acknowledged:
                    acknowledged = len(self.downlink_seqs)
                    await self.publish(ack_batch(self.downlink_ack()), vessel_id)
                await self.changed.wait()


@contextlib.asynccontextmanager
async def vessel_link(broker: MosquittoBroker, vessel_id: int = VESSEL) -> AsyncIterator[Vessel]:
    """A connected vessel subscribed to its downlink topic (persistent session)."""
    client = persistent_client(broker.host, broker.port, f"v{vessel_id}")
    async with client:
        await client.subscribe(f"vr/{vessel_id}/d", qos=1)
        vessel = Vessel(client)
        listener = asyncio.create_task(vessel.listen())
        try:
            yield vessel
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


def write_relay(
    data: Path, broker: MosquittoBroker, worker: int = 1, extra: str = "", downlink: str = ""
) -> Path:
    """A relay data directory: config and shore key (see :func:`register_vessel`);
    ``downlink`` holds more ``[downlink]`` keys, ``extra`` more tables."""
    data.mkdir(parents=True, exist_ok=True)
    write_secret(data / "shore.key", SHORE_KEY.seed)
    config = data / "relay.toml"
    config.write_text(
        f'[relay]\ndata_dir = "{data}"\nworker = {worker}\n'
        f'[mqtt]\nurl = "mqtt://{broker.host}:{broker.port}"\n'
        "[downlink]\ntick_s = 0.2\nresend_after_s = 2.0\nresend_max_s = 10.0\n" + downlink + extra,
        encoding="utf-8",
    )
    return config


async def register_vessel(data: Path) -> None:
    store = await SqliteStore.open(data / "relay.db")
    try:
        info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
        await store.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, VESSEL)
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def relay_in_process(
    data: Path, broker: MosquittoBroker, extra: str = "", downlink: str = ""
) -> AsyncIterator[None]:
    """The relay supervisor running in this event loop until the block ends."""
    config_path = write_relay(data, broker, extra=extra, downlink=downlink)
    write_secret(data / "reply.key", b"r" * 32)
    await register_vessel(data)
    config = parse_config(tomllib.loads(config_path.read_text()), str(config_path))
    stopping = asyncio.Event()
    subscribed = asyncio.Event()
    task = asyncio.create_task(run_relay(config, stopping, subscribed.set))
    try:
        async with asyncio.timeout(10):
            await subscribed.wait()
        yield
    finally:
        stopping.set()
        async with asyncio.timeout(10):
            await task


async def stored_seqs(data: Path) -> list[int]:
    store = await SqliteStore.open(data / "relay.db")
    try:
        return [m.message_seq for m in await store.messages(VESSEL)]
    finally:
        await store.close()


async def test_vessel_gets_batch_acks_and_receipts(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A vessel publishes three signed batches: the shore stores every message, acknowledges
    all three batches and sends an ACCEPTED_ASHORE receipt per message, signed, downlink."""
    async with relay_in_process(tmp_path, fresh_mosquitto), vessel_link(fresh_mosquitto) as v:
        for data in make_batches(3, 4):
            await v.publish(data)
        await v.wait_for(lambda: v.acked >= {1, 2, 3} and len(v.receipts) >= 12)
    assert sorted(v.receipts) == [(seq, ReceiptStage.ACCEPTED_ASHORE) for seq in range(1, 13)]
    assert await stored_seqs(tmp_path) == list(range(1, 13))


async def test_bad_batches_are_quarantined_and_nothing_else_disturbed(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Forged (wrong key), truncated, oversized, unknown-vessel and wrong-topic batches are
    quarantined with their reasons; none reaches the replay window or BatchAck.rejected; the
    vessel's good batches before and after are stored and acknowledged as usual."""
    good = make_batches(3, 2)
    forged = uplink(VESSEL, 2, [_message(100)], key=OTHER_KEY)
    async with relay_in_process(tmp_path, fresh_mosquitto), vessel_link(fresh_mosquitto) as v:
        await v.publish(good[0])
        await v.publish(forged)
        await v.publish(good[1][:-10])  # truncated: frames and signature cut
        await v.publish(good[1][:20])  # truncated: header cut
        await v.publish(os.urandom(300 * 1024))  # oversized
        await v.publish(uplink(99, 1, [_message(1)]), vessel_id=99)  # unknown vessel
        await v.publish(uplink(8, 9, [_message(1)]))  # vessel 8's batch on vessel 7's topic
        await v.publish(good[1])
        await v.publish(good[2])
        await v.wait_for(lambda: v.acked >= {1, 2, 3} and len(v.receipts) >= 6)
    assert v.rejected == {}
    assert await stored_seqs(tmp_path) == [1, 2, 3, 4, 5, 6]
    store = await SqliteStore.open(tmp_path / "relay.db")
    try:
        reasons = sorted(entry.reason.name for entry in await store.quarantined())
        window = await store.replay_window(VESSEL)
    finally:
        await store.close()
    assert reasons == sorted(
        [
            Reason.SIGNATURE_INVALID.name,
            Reason.MALFORMED.name,
            Reason.MALFORMED.name,
            Reason.LIMIT_EXCEEDED.name,
            Reason.UNKNOWN_VESSEL.name,
            Reason.MALFORMED.name,
        ]
    )
    assert (window.up_to, window.ranges) == (3, ())


async def test_every_batch_replayed_ten_times_in_random_order_stores_each_message_once(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Twenty batches, each published ten times in a random order: every message is stored
    once, has one delivery row, and gets exactly one ACCEPTED_ASHORE receipt."""
    batches = make_batches(20, 5)
    copies = [data for data in batches for _ in range(10)]
    random.Random(5).shuffle(copies)
    async with relay_in_process(tmp_path, fresh_mosquitto), vessel_link(fresh_mosquitto) as v:
        for data in copies:
            await v.publish(data)
        await v.wait_for(lambda: v.acked >= set(range(1, 21)) and len(v.receipts) >= 100)
        await asyncio.sleep(0.5)  # let any duplicate receipt arrive, if one were sent
    assert sorted(v.receipts) == [(seq, ReceiptStage.ACCEPTED_ASHORE) for seq in range(1, 101)]
    store = await SqliteStore.open(tmp_path / "relay.db")
    try:
        assert await store.count_messages(VESSEL) == 100
        assert len(await store.deliveries(VESSEL)) == 100
    finally:
        await store.close()


async def test_family_gets_the_mail_and_the_vessel_the_delivered_receipt(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """With delivery on, a crew member's message reaches the family's smarthost once, and
    the vessel gets ACCEPTED_ASHORE with the BatchAck, then DELIVERED once its next uplink
    acknowledged that downlink batch."""
    with SmtpSink() as sink:
        extra = f"[delivery]\nenabled = true\nsmtp_host = '127.0.0.1'\nsmtp_port = {sink.port}\n"
        async with (
            relay_in_process(tmp_path, fresh_mosquitto, extra) as _,
            vessel_link(fresh_mosquitto) as v,
        ):
            await v.publish(make_batches(1, 2)[0])
            await v.wait_for(lambda: len(v.receipts) >= 2)
            await v.wait_for(lambda: len(sink.handler.received) >= 2)
            await v.acknowledge(2)
            await v.wait_for(lambda: len(v.receipts) >= 4)
        received = list(sink.handler.received)
    assert sorted(v.receipts) == [
        (1, ReceiptStage.ACCEPTED_ASHORE),
        (1, ReceiptStage.DELIVERED),
        (2, ReceiptStage.ACCEPTED_ASHORE),
        (2, ReceiptStage.DELIVERED),
    ]
    assert [recipients for _, recipients, _ in received] == [["mother@example.com"]] * 2


# --- the relay as a process, killed -----------------------------------------------------------


def _acked_at_least(vessel: Vessel, count: int) -> bool:
    return len(vessel.acked) >= count


async def _kill_during_ingest(
    broker: MosquittoBroker, data: Path, batches: Sequence[bytes], kills: int, seed: int
) -> None:
    config = write_relay(data, broker)
    await register_vessel(data)
    rng = random.Random(seed)
    relay = RelayProcess(config, data / "relay.log")
    total = sum(1 for _ in batches)
    try:
        await relay.start()
        async with vessel_link(broker) as v:
            for round_ in range(kills):
                for data_bytes in batches:
                    await v.publish(data_bytes)
                # Kill while batches are still being ingested: once some are acknowledged.
                threshold = rng.randint(1, max(1, total // 2)) * (round_ + 1) // kills
                await v.wait_for(functools.partial(_acked_at_least, v, threshold), 60)
                relay.kill()
                await relay.start()
            # The vessel resends whatever is unacknowledged, as its outbox does.
            async with asyncio.timeout(120):
                while len(v.acked) < total:
                    for seq, data_bytes in enumerate(batches, start=1):
                        if seq not in v.acked:
                            await v.publish(data_bytes)
                    with contextlib.suppress(TimeoutError):
                        await v.wait_for(lambda: len(v.acked) >= total, timeout_s=3)
        assert relay.terminate() == 0
    finally:
        relay.ensure_stopped()


async def test_sigkill_during_ingest_loses_nothing_the_vessel_resends(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """500 messages in 50 batches; the relay process is SIGKILLed while ingesting and
    restarted; the vessel resends what is unacknowledged: every message ends up stored
    exactly once and every batch acknowledged, and the relay then stops cleanly on SIGTERM."""
    batches = make_batches(50, 10)
    await _kill_during_ingest(fresh_mosquitto, tmp_path, batches, kills=1, seed=1)
    assert await stored_seqs(tmp_path) == list(range(1, 501))


@pytest.mark.slow
async def test_repeated_sigkills_during_ingest_of_5000_messages(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """5,000 messages in 250 batches, the relay SIGKILLed three times during ingest: every
    message stored exactly once, every batch acknowledged."""
    batches = make_batches(250, 20)
    await _kill_during_ingest(fresh_mosquitto, tmp_path, batches, kills=3, seed=2)
    assert await stored_seqs(tmp_path) == list(range(1, 5001))
