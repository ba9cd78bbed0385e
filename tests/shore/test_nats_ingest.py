"""Ingest from a NATS cluster's JetStream consumer: a batch is acknowledged to the stream
only once it is stored, so a worker that dies holding it loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from pathlib import Path

import aiomqtt
import nats
import pytest

from common.keyfiles import write_secret
from protocol.errors import Reason
from shore.config import parse_config
from shore.ingest import Ingestor
from shore.metrics import RelayMetrics
from shore.nats_broker import consumer_config, ensure_stream, ingest_one
from shore.relay import run_relay
from shore.store.errors import StoreUnavailable
from shore.store.uplink import IngestOutcome
from tests.kit.mqtt import persistent_client
from tests.kit.nats import NatsCluster
from tests.shore.store_fixtures import SHORE_KEY
from tests.shore.test_ingest import VESSEL, Vessel, make_batches, register_vessel


class FakeMessage:
    """A JetStream message as ``ingest_one`` sees it; records how it was settled."""

    def __init__(self, subject: str, data: bytes) -> None:
        self.subject = subject
        self.data = data
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(f"nak {delay}")

    async def term(self) -> None:
        self.settled.append("term")


class FakeIngestor(Ingestor):
    """An ingestor whose ``handle`` returns or raises what the test says."""

    def __init__(self, outcome: IngestOutcome | Reason | Exception) -> None:
        super().__init__(store=None, codebook=None)  # type: ignore[arg-type]
        self.outcome = outcome
        self.topics: list[str] = []

    async def handle(self, topic: str, data: bytes) -> IngestOutcome | Reason:
        self.topics.append(topic)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize(
    ("outcome", "settled"),
    [
        (IngestOutcome.STORED, ["ack"]),
        (IngestOutcome.DUPLICATE, ["ack"]),
        (IngestOutcome.REJECTED, ["ack"]),
        (Reason.SIGNATURE_INVALID, ["ack"]),
        (StoreUnavailable("database down"), ["nak 5.0"]),
        (RuntimeError("a bug"), ["term"]),
    ],
)
async def test_a_batch_is_settled_with_the_stream_only_after_ingest_decided(
    outcome: IngestOutcome | Reason | Exception, settled: list[str]
) -> None:
    """A batch stored, repeated, refused or quarantined is final: acknowledged to the
    stream. When the database fails, it is handed back for another try; when ingest hits a
    bug, it is dropped from the stream (logged; the vessel resends it)."""
    ingestor = FakeIngestor(outcome)
    message = FakeMessage("vr.7.u", b"batch")
    await ingest_one(ingestor, message)  # type: ignore[arg-type]
    assert ingestor.topics == ["vr/7/u"]
    assert message.settled == settled
    if isinstance(outcome, StoreUnavailable):
        assert ingestor.stats.store_errors == 1
    if isinstance(outcome, RuntimeError):
        assert ingestor.stats.handler_failures == 1


async def test_a_batch_taken_by_a_worker_that_died_is_stored_by_the_next(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """A vessel on node 2's MQTT gateway publishes a batch. A relay worker pulls it from the
    shared consumer and dies before storing it (its connection closes, no ack). Another
    worker, started on the same consumer, gets the batch once the ack wait is over, stores
    it, and the vessel (still on node 2) receives the BatchAck through the cluster; the
    stream holds nothing afterwards (acknowledged once stored)."""
    data = tmp_path / "relay"
    data.mkdir()
    write_secret(data / "shore.key", SHORE_KEY.seed)
    await register_vessel(data)
    nats_urls = ", ".join(f'"{url}"' for url in nats_cluster.nats_urls)
    mqtt_urls = ", ".join(f'"mqtt://{h}:{p}"' for h, p in nats_cluster.mqtt_endpoints)
    config_path = data / "relay.toml"
    config_path.write_text(
        f'[relay]\ndata_dir = "{data}"\nworker = 1\n'
        f'[broker]\nkind = "nats"\nnats_urls = [{nats_urls}]\nmqtt_urls = [{mqtt_urls}]\n'
        "ack_wait_s = 1.0\n"
        "[downlink]\ntick_s = 0.2\nresend_after_s = 2.0\nresend_max_s = 10.0\n",
        encoding="utf-8",
    )
    config = parse_config(tomllib.loads(config_path.read_text()), str(config_path))
    # the worker that dies: it makes the stream and consumer, pulls, and never acks
    dying = await nats.connect(nats_cluster.nats_urls)
    js = dying.jetstream()
    await ensure_stream(js, config.broker)
    taken = await js.pull_subscribe(
        "vr.*.u", durable="relay", stream="VR_UPLINK", config=consumer_config(config.broker)
    )
    host, port = nats_cluster.mqtt_endpoints[1]
    client = persistent_client(host, port, f"v{VESSEL}", protocol=aiomqtt.ProtocolVersion.V311)
    async with client:
        await client.subscribe(f"vr/{VESSEL}/d", qos=1)
        vessel = Vessel(client)
        listener = asyncio.create_task(vessel.listen())
        try:
            (batch,) = make_batches(1, 3)
            await vessel.publish(batch)
            (pulled,) = await taken.fetch(1, timeout=10)
            assert pulled.data == batch
            await dying.close()  # died holding it: no ack, no nak
            stopping, subscribed = asyncio.Event(), asyncio.Event()
            relay = asyncio.create_task(run_relay(config, stopping, subscribed.set))
            try:
                await vessel.wait_for(lambda: 1 in vessel.acked, 30)
            finally:
                stopping.set()
                async with asyncio.timeout(15):
                    await relay
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    assert subscribed.is_set()
    # acknowledged once stored: the work-queue stream holds nothing any more
    checker = await nats.connect(nats_cluster.nats_urls)
    try:
        info = await checker.jetstream().stream_info("VR_UPLINK")
        assert info.state.messages == 0
    finally:
        await checker.close()


class PendingSeen(RelayMetrics):
    """Relay metrics that remember every backlog figure the worker reported."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[int] = []

    def observe_ingest_pending(self, batches: int) -> None:
        super().observe_ingest_pending(batches)
        self.pending.append(batches)


async def test_the_backlog_waiting_in_the_stream_is_reported(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """A vessel's five batches wait in the stream while no relay worker runs. A worker that
    starts, pulling one batch at a time, reports four still waiting after its first one (the
    figure the "ingest backlog" alert watches; five while the first one's acknowledgement is
    on its way), and all five are acknowledged to the vessel."""
    data = tmp_path / "relay"
    data.mkdir()
    write_secret(data / "shore.key", SHORE_KEY.seed)
    await register_vessel(data)
    nats_urls = ", ".join(f'"{url}"' for url in nats_cluster.nats_urls)
    mqtt_urls = ", ".join(f'"mqtt://{h}:{p}"' for h, p in nats_cluster.mqtt_endpoints)
    config_path = data / "relay.toml"
    config_path.write_text(
        f'[relay]\ndata_dir = "{data}"\nworker = 1\n'
        f'[broker]\nkind = "nats"\nnats_urls = [{nats_urls}]\nmqtt_urls = [{mqtt_urls}]\n'
        "fetch_batch = 1\n"
        "[downlink]\ntick_s = 0.2\nresend_after_s = 2.0\nresend_max_s = 10.0\n",
        encoding="utf-8",
    )
    config = parse_config(tomllib.loads(config_path.read_text()), str(config_path))
    setup = await nats.connect(nats_cluster.nats_urls)
    await ensure_stream(setup.jetstream(), config.broker)  # the stream exists before the day
    await setup.close()
    host, port = nats_cluster.mqtt_endpoints[0]
    client = persistent_client(host, port, f"v{VESSEL}", protocol=aiomqtt.ProtocolVersion.V311)
    metrics = PendingSeen()
    async with client:
        await client.subscribe(f"vr/{VESSEL}/d", qos=1)
        vessel = Vessel(client)
        listener = asyncio.create_task(vessel.listen())
        try:
            for batch in make_batches(5, 2):
                await vessel.publish(batch)
            stopping = asyncio.Event()
            relay = asyncio.create_task(run_relay(config, stopping, metrics=metrics))
            try:
                await vessel.wait_for(lambda: {1, 2, 3, 4, 5} <= vessel.acked, 30)
            finally:
                stopping.set()
                async with asyncio.timeout(15):
                    await relay
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    # four waiting, plus the first one while its acknowledgement is still on its way
    assert metrics.pending[0] in (4, 5)
