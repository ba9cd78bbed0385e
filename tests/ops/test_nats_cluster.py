"""The relay on a three-node NATS cluster: vessels on MQTT 3.1.1 to any node, three relay
workers sharing one durable JetStream consumer; a node and a worker SIGKILLed mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path

import aiomqtt
import asyncpg
import pytest

from common.keyfiles import write_secret
from shore.store import VesselInfo
from shore.store.postgres import PostgresStore
from tests.kit.mqtt import persistent_client
from tests.kit.nats import NatsCluster
from tests.kit.ports import free_port
from tests.kit.relay_process import RelayProcess
from tests.kit.wait import eventually
from tests.ops.test_scale_out import (
    RELAY_DOMAIN,
    Worker,
    message_ids,
    open_deliveries,
    sink,  # noqa: F401 (the test's SMTP sink fixture)
    vessel_batches,
)
from tests.shore.store_fixtures import SHORE_KEY, T0, VESSEL_KEY, PostgresServer
from tests.shore.test_ingest import Vessel
from tests.shore.test_mail import SmtpSink
from tests.shore.test_store import postgres  # noqa: F401 (the session's PostgreSQL fixture)

log = logging.getLogger(__name__)

VESSELS = (201, 202)
BATCHES, PER_BATCH = 8, 10


class ClusterVessel:
    """A vessel on MQTT 3.1.1 with a persistent session, connected to one node of the
    cluster; when that node goes, it connects to the next (its session follows it)."""

    def __init__(self, vessel_id: int, cluster: NatsCluster, first_node: int) -> None:
        self.vessel_id = vessel_id
        self.cluster = cluster
        self.node = first_node
        self.link: Vessel | None = None
        self.connected = asyncio.Event()
        self.moves = 0
        self.published = 0  # publishes the broker took (PUBACK)

    @property
    def acked(self) -> set[int]:
        return set() if self.link is None else self.link.acked

    async def run(self) -> None:
        """Stay connected (to the next running node after a loss) until cancelled."""
        acked: set[int] = set()
        while True:
            host, port = self.cluster.mqtt_endpoints[self.node]
            client = persistent_client(
                host, port, f"v{self.vessel_id}", protocol=aiomqtt.ProtocolVersion.V311
            )
            try:
                async with client:
                    await client.subscribe(f"vr/{self.vessel_id}/d", qos=1)
                    self.link = Vessel(client, acked=acked)
                    self.connected.set()
                    await self.link.listen()
            except aiomqtt.MqttError as exc:
                log.info("vessel %d lost node %d (%s)", self.vessel_id, self.node, exc)
            self.connected.clear()
            self.node = (self.node + 1) % len(self.cluster.nodes)
            self.moves += 1
            await asyncio.sleep(0.2)  # a vessel's reconnect pause, not a wait for an event

    async def publish(self, data: bytes) -> None:
        """Publish one uplink batch at QoS 1, once the vessel is connected; a publish cut
        by a lost node is simply left for the next resend round."""
        await self.connected.wait()
        assert self.link is not None
        with contextlib.suppress(aiomqtt.MqttError):
            await self.link.publish(data, self.vessel_id)
            self.published += 1


class NatsWorker(Worker):
    """A relay worker process whose broker is the NATS cluster: JetStream for the uplink,
    the nodes' MQTT gateways for the downlink (ack_wait 3 s, so a batch taken by a killed
    worker comes back quickly); /metrics and the SMTP sink as in the scale-out test."""

    def __init__(self, data: Path, number: int, dsn: str, cluster: NatsCluster, smtp: int):
        self.number = number
        self.metrics_port = free_port()
        data.mkdir(parents=True, exist_ok=True)
        write_secret(data / "shore.key", SHORE_KEY.seed)
        write_secret(data / "reply.key", b"r" * 32)
        nats_urls = ", ".join(f'"{url}"' for url in cluster.nats_urls)
        mqtt_urls = ", ".join(f'"mqtt://{host}:{port}"' for host, port in cluster.mqtt_endpoints)
        self.config = data / "relay.toml"
        self.config.write_text(
            f'[relay]\ndata_dir = "{data}"\nworker = {number}\n'
            f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nlease_s = 4.0\n'
            "[mqtt]\nreconnect_max_s = 2.0\npublish_timeout_s = 5.0\n"
            f'[broker]\nkind = "nats"\nnats_urls = [{nats_urls}]\nmqtt_urls = [{mqtt_urls}]\n'
            "ack_wait_s = 3.0\nfetch_batch = 1\n"
            "[downlink]\ntick_s = 0.3\nresend_after_s = 2.0\nresend_max_s = 10.0\n"
            f'[delivery]\nenabled = true\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp}\n'
            f'relay_domain = "{RELAY_DOMAIN}"\n',
            encoding="utf-8",
        )
        RelayProcess.__init__(
            self,
            self.config,
            data / "relay.log",
            [
                "--log-format",
                "json",
                "--log-level",
                "info",
                "--metrics-port",
                str(self.metrics_port),
            ],
        )


async def test_nats_cluster_node_and_worker_killed_every_message_once(
    nats_cluster: NatsCluster,
    sink: SmtpSink,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Two vessels, each on its own node of a three-node NATS cluster (MQTT 3.1.1), send 160
    messages to their families through three relay workers that pull from one shared
    JetStream consumer. Once a fifth of the family mail is out, the node vessel 201 and
    worker 1's downlink use is SIGKILLed; once two fifths are out, worker 2 is SIGKILLed.
    Vessel 201 moves to another node with its session; vessels resend what is not
    acknowledged. In the end every message was stored once and delivered, the sink holds
    exactly the 160 expected Message-IDs (none under two), and any copy beyond one per
    Message-ID is a resend the surviving workers counted as a repeat."""
    server: PostgresServer = request.getfixturevalue("postgres")
    dsn = server.create_database()
    store = await PostgresStore.open(dsn)
    try:
        for vessel_id in VESSELS:
            info = VesselInfo(f"Vessel {vessel_id}", "TH", f"TH-{vessel_id}", "Co", ())
            await store.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, vessel_id)
    finally:
        await store.close()
    workers = [NatsWorker(tmp_path / f"w{n}", n, dsn, nats_cluster, sink.port) for n in (1, 2, 3)]
    expected = {
        f"<{v}.{seq}@{RELAY_DOMAIN}>" for v in VESSELS for seq in range(1, BATCHES * PER_BATCH + 1)
    }
    batches = {v: vessel_batches(v)[:BATCHES] for v in VESSELS}
    vessels = {v: ClusterVessel(v, nats_cluster, index) for index, v in enumerate(VESSELS)}
    try:
        await asyncio.gather(*(worker.start(60) for worker in workers))
        async with asyncio.TaskGroup() as group, asyncio.timeout(300):
            tasks = [group.create_task(vessel.run()) for vessel in vessels.values()]
            for index in range(BATCHES):
                for vessel_id, vessel in vessels.items():
                    await vessel.publish(batches[vessel_id][index])
            # polling the sink (filled from its own thread): it has no event to wait on
            await eventually(
                lambda: len(message_ids(sink)) >= len(expected) // 5, 240, what="a fifth"
            )
            nats_cluster.nodes[0].kill()
            await eventually(
                lambda: len(message_ids(sink)) >= 2 * len(expected) // 5, 240, what="2/5"
            )
            workers[1].kill()
            # Vessels resend what is unacknowledged, as their outboxes do, until all is acked.
            while any(len(vessels[v].acked) < BATCHES for v in VESSELS):
                await asyncio.sleep(3)
                for vessel_id, vessel in vessels.items():
                    for seq, data in enumerate(batches[vessel_id], start=1):
                        if seq not in vessel.acked:
                            await vessel.publish(data)

            async def all_closed() -> bool:
                return await open_deliveries(dsn) == 0

            await eventually(all_closed, 240, 0.5, what="no delivery left open in the database")
            for task in tasks:
                task.cancel()
        received = message_ids(sink)
        repeats = workers[0].scrape_repeats() + workers[2].scrape_repeats()
        assert workers[0].terminate() == 0
        assert workers[2].terminate() == 0
    finally:
        for worker in workers:
            worker.ensure_stopped()

    assert vessels[VESSELS[0]].moves >= 1  # vessel 201 lost its node and moved
    stored_by = [batches_stored(worker.log) for worker in workers]
    # The consumer is shared: each publish reaches ONE worker (plus the few redelivered
    # after a kill), where plain subscriptions would hand every publish to all three.
    # (How the batches spread over the workers is the server's choice: under load one
    # worker may take them all, so that is not asserted.)
    handled = sum(batches_handled(worker.log) for worker in workers)
    published = sum(vessel.published for vessel in vessels.values())
    assert handled < 2 * published, (handled, published)
    assert set(received) == expected
    extra_copies = sum(received.values()) - len(received)
    assert extra_copies <= repeats
    connection = await asyncpg.connect(dsn)
    try:
        stored = await connection.fetchval("SELECT COUNT(*) FROM messages")
        delivered = await connection.fetchval(
            "SELECT COUNT(*) FROM deliveries WHERE outcome = 'delivered'"
        )
        claimed_by = {
            row[0]
            for row in await connection.fetch(
                "SELECT DISTINCT split_part(claimed_by, '-d', 1) FROM deliveries"
            )
        }
    finally:
        await connection.close()
    assert stored == delivered == len(expected)
    # deliveries were claimed by workers of this relay only; which of them claimed is a
    # race the survivors may settle either way on a loaded machine
    assert claimed_by
    assert claimed_by <= {"relay-1", "relay-2", "relay-3"}, claimed_by
    print(
        f"\nnats cluster: {sum(received.values())} mails, {extra_copies} repeats at the sink, "
        f"{repeats:.0f} counted by the survivors; batches stored by workers 1-3: {stored_by}"
    )


def batches_handled(log_path: Path) -> int:
    """How many uplink publishes a worker ingested (stored or found duplicate)."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return sum(1 for line in lines if re.search(r"vessel \d+ batch \d+ (stored|duplicate)", line))


def batches_stored(log_path: Path) -> int:
    """How many batches a worker stored, from its JSON log ("vessel V batch B stored")."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return sum(1 for line in lines if re.search(r"vessel \d+ batch \d+ stored", line))
