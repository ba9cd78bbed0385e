"""The relay's connection to a NATS cluster over TLS (``tls://`` nats_urls, ``[broker]
nats_ca_file``): ingest works when the nodes' client ports require TLS, and a relay whose
settings and the node disagree (another CA, nats:// to a TLS port, tls:// to a node that
offers none) connects to nothing, ingests nothing, sends no password, and says why."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import nats
import pytest

from common.keyfiles import write_secret
from shore.broker_login import BrokerLogin, nats_tls_context
from shore.config import RelayConfig, parse_config
from shore.ingest import Ingestor
from shore.nats_broker import RelayNatsClient, ensure_stream, jetstream_ingest
from shore.relay import run_relay
from tests.kit.mqtt import persistent_client
from tests.kit.nats import NatsCluster, find_nats_server
from tests.kit.tls import make_test_ca
from tests.shore.store_fixtures import SHORE_KEY
from tests.shore.test_ingest import VESSEL, Vessel, make_batches, register_vessel

RELAY_PASSWORD = "relay-secret-5521"


class LogWatch(logging.Handler):
    """Records of ``shore.nats_broker``; :meth:`wait_for` returns once one holds a text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._arrived.set()

    async def wait_for(self, text: str, timeout_s: float) -> str:
        async with asyncio.timeout(timeout_s):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                self._arrived.clear()
                await self._arrived.wait()


@pytest.fixture
def watch() -> Iterator[LogWatch]:
    handler = LogWatch()
    logger = logging.getLogger("shore.nats_broker")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nodes whose client ports require TLS (routes over mutual TLS, as always)."""
    find_nats_server()
    with NatsCluster(tmp_path / "nats", client_tls=True) as cluster:
        yield cluster


def write_relay_config(
    directory: Path, cluster: NatsCluster, nats_urls: list[str], extra: str = ""
) -> RelayConfig:
    """A relay worker's data directory (its shore key) and configuration on ``cluster``
    (its MQTT gateways for the downlink), ingesting from ``nats_urls``; ``extra``: more
    lines of ``[broker]``."""
    directory.mkdir()
    write_secret(directory / "shore.key", SHORE_KEY.seed)
    urls = ", ".join(f'"{url}"' for url in nats_urls)
    mqtt_urls = ", ".join(f'"mqtt://{h}:{p}"' for h, p in cluster.mqtt_endpoints)
    path = directory / "relay.toml"
    path.write_text(
        f'[relay]\ndata_dir = "{directory}"\nworker = 1\n'
        f'[broker]\nkind = "nats"\nnats_urls = [{urls}]\nmqtt_urls = [{mqtt_urls}]\n{extra}'
        "[downlink]\ntick_s = 0.2\nresend_after_s = 2.0\nresend_max_s = 10.0\n",
        encoding="utf-8",
    )
    return parse_config(tomllib.loads(path.read_text()), str(path))


async def relay_config(
    directory: Path, cluster: NatsCluster, nats_urls: list[str], extra: str = ""
) -> RelayConfig:
    """:func:`write_relay_config`, with the test vessel registered in its store."""
    config = write_relay_config(directory, cluster, nats_urls, extra)
    await register_vessel(directory)
    return config


async def stream_messages(cluster: NatsCluster) -> tuple[int, list[str]]:
    """How many batches the uplink stream holds, and its consumers' names."""
    checker = await nats.connect(cluster.nats_urls, tls=cluster.client_context())
    try:
        js = checker.jetstream()
        info = await js.stream_info("VR_UPLINK")
        consumers = [consumer.name for consumer in await js.consumers_info("VR_UPLINK")]
        return info.state.messages, consumers
    finally:
        await checker.close()


@pytest.mark.broker
async def test_a_relay_ingests_over_tls_from_a_cluster_whose_client_ports_require_it(
    tls_cluster: NatsCluster, tmp_path: Path
) -> None:
    """The nodes' client ports take TLS only. A relay worker with tls:// URLs and the
    nodes' CA as nats_ca_file connects, ingests a vessel's batch (sent to node 2's MQTT
    gateway) and the vessel gets its BatchAck; the node the relay is on shows its
    connection as TLS 1.2 or newer."""
    config = await relay_config(
        tmp_path / "relay",
        tls_cluster,
        tls_cluster.nats_urls,
        f'nats_ca_file = "{tls_cluster.client_ca}"\n',
    )
    assert all(url.startswith("tls://") for url in config.broker.nats_urls)
    host, port = tls_cluster.mqtt_endpoints[1]
    client = persistent_client(host, port, f"v{VESSEL}", protocol=aiomqtt.ProtocolVersion.V311)
    async with client:
        await client.subscribe(f"vr/{VESSEL}/d", qos=1)
        vessel = Vessel(client)
        listener = asyncio.create_task(vessel.listen())
        stopping, subscribed = asyncio.Event(), asyncio.Event()
        relay = asyncio.create_task(run_relay(config, stopping, subscribed.set))
        try:
            async with asyncio.timeout(30):
                await subscribed.wait()
            relay_connections = [
                connection
                for node in tls_cluster.nodes
                for connection in node.connz()["connections"]
                if connection.get("name") == config.client_id
            ]
            (batch,) = make_batches(1, 2)
            await vessel.publish(batch)
            await vessel.wait_for(lambda: 1 in vessel.acked, 30)
        finally:
            stopping.set()
            async with asyncio.timeout(15):
                await relay
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    assert len(relay_connections) == 1, relay_connections
    assert relay_connections[0].get("tls_version") in ("1.2", "1.3"), relay_connections
    assert await stream_messages(tls_cluster) == (0, ["relay"])


@pytest.mark.broker
async def test_a_relay_trusting_another_ca_refuses_the_nodes_and_ingests_nothing(
    tls_cluster: NatsCluster, tmp_path: Path, watch: LogWatch
) -> None:
    """A vessel's batch waits in the stream. A relay worker whose nats_ca_file holds a CA
    that did not sign the nodes' certificates (a machine posing as the cluster would look
    the same) refuses every node: its log names the refused certificate and the
    nats_ca_file to fix, it never reports ready, and the batch stays in the stream with
    no consumer made."""
    setup = await nats.connect(tls_cluster.nats_urls, tls=tls_cluster.client_context())
    try:
        js = setup.jetstream()
        (batch,) = make_batches(1, 2)
        config = await relay_config(tmp_path / "relay", tls_cluster, tls_cluster.nats_urls)
        await ensure_stream(js, config.broker)
        await js.publish(f"vr.{VESSEL}.u", batch)
    finally:
        await setup.close()
    other = tmp_path / "other-ca"
    other.mkdir()
    stranger = make_test_ca(other)
    config = await relay_config(
        tmp_path / "relay-2",
        tls_cluster,
        tls_cluster.nats_urls,
        f'nats_ca_file = "{stranger}"\n',
    )
    stopping, subscribed = asyncio.Event(), asyncio.Event()
    relay = asyncio.create_task(run_relay(config, stopping, subscribed.set))
    try:
        line = await watch.wait_for("TLS certificate is refused", 20)
    finally:
        stopping.set()
        async with asyncio.timeout(15):
            await relay
    # OpenSSL's reason: here "certificate signature failure" (the two test CAs share a name)
    assert "TLS certificate is refused (certificate " in line, line
    assert any(f"{url}'s TLS certificate" in line for url in tls_cluster.nats_urls), line
    assert f"nats_ca_file {stranger}" in line, line
    assert not subscribed.is_set()
    assert await stream_messages(tls_cluster) == (1, [])


@pytest.mark.broker
async def test_a_plain_nats_relay_facing_a_tls_only_client_port_says_to_use_tls(
    tls_cluster: NatsCluster, tmp_path: Path, watch: LogWatch
) -> None:
    """An operator turned on TLS on the nodes but left the relay's nats_urls as nats://.
    The relay does not hang and does not quietly switch to TLS with other settings: within
    seconds its log says the node requires TLS and to write tls:// URLs, and it ingests
    nothing."""
    plain = [url.replace("tls://", "nats://") for url in tls_cluster.nats_urls]
    config = await relay_config(tmp_path / "relay", tls_cluster, plain)
    stopping, subscribed = asyncio.Event(), asyncio.Event()
    relay = asyncio.create_task(run_relay(config, stopping, subscribed.set))
    try:
        line = await watch.wait_for("requires TLS", 10)
    finally:
        stopping.set()
        async with asyncio.timeout(15):
            await relay
    assert "write every node as tls://HOST:PORT" in line, line
    assert not subscribed.is_set()


class FakeNode:
    """A TCP server on loopback greeting like a NATS node that offers no TLS and asks for a
    password; keeps every byte a client sends it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.greeted = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {
            "server_id": "FAKE",
            "version": "2.9.10",
            "proto": 1,
            "max_payload": 1048576,
            "auth_required": True,
            "tls_required": False,
        }
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        await writer.drain()
        self.greeted.set()
        try:
            while chunk := await reader.read(4096):
                self.received += chunk
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


async def test_a_tls_relay_sends_no_password_to_a_node_that_offers_no_tls(
    tmp_path: Path, watch: LogWatch
) -> None:
    """Someone between the relay and the cluster answers in clear, saying no TLS is
    needed (nats-py would then send the login in clear). The relay, configured with
    tls://, sends it nothing at all, not its password, and its log says the node offers no
    TLS; asked to stop, it stops although no node ever accepted it."""
    fake = FakeNode()
    port = await fake.start()
    assert fake.server is not None
    try:
        config = parse_config(
            {
                "broker": {
                    "kind": "nats",
                    "nats_urls": [f"tls://127.0.0.1:{port}"],
                    "mqtt_urls": ["mqtt://127.0.0.1:1883"],
                },
            }
        )
        login = BrokerLogin("relay", RELAY_PASSWORD)
        tls = nats_tls_context(config, login)
        assert tls is not None
        stopping, ready = asyncio.Event(), asyncio.Event()
        ingest = asyncio.create_task(
            jetstream_ingest(
                config,
                Ingestor(None, None),
                stopping,
                ready,
                login,
                tls=tls,  # type: ignore[arg-type]
            )
        )
        try:
            line = await watch.wait_for("offers no TLS", 10)
        finally:
            stopping.set()
            async with asyncio.timeout(10):  # it stops though no node ever accepted it
                await ingest
        assert fake.greeted.is_set()
        assert f"tls://127.0.0.1:{port}" in line, line
        assert bytes(fake.received) == b"", bytes(fake.received)
        assert not ready.is_set()
    finally:
        fake.server.close()
        await fake.server.wait_closed()


async def test_a_failure_that_repeats_every_second_is_logged_once(watch: LogWatch) -> None:
    """nats-py tries each node about every second while none accepts the relay. Each kind
    of failure is logged once, in a sentence with its fix (not a traceback a second), and
    a different one is logged when it comes."""
    config = parse_config(
        {
            "broker": {
                "kind": "nats",
                "nats_urls": ["tls://127.0.0.1:4222"],
                "mqtt_urls": ["mqtt://127.0.0.1:1883"],
                "nats_ca_file": "ca.pem",
            }
        }
    )
    client = RelayNatsClient(config)
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 4222)")
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "unable to get local issuer certificate"
    for failure in (refused, refused, untrusted, refused, untrusted):
        await client.report(failure)
    assert len(watch.lines) == 2, watch.lines
    assert "a node cannot be reached" in watch.lines[0]
    assert "4222" in watch.lines[0]
    assert "TLS certificate is refused (unable to get local issuer certificate)" in (watch.lines[1])
    assert "nats_ca_file" in watch.lines[1]
