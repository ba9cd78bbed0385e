"""deploy/nats: the shipped NATS node configuration and its users (the Mosquitto ACL
translated to NATS permissions) run as written, only addresses, paths and passwords
rewritten, on one node with TLS on the vessels' MQTT door."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from common.keyfiles import write_secret
from shore.config import parse_config
from shore.relay import run_relay
from tests.kit.nats import INSTALL_HINT, find_nats_server
from tests.kit.ports import accepts_connections, free_port
from tests.kit.tls import make_test_ca
from tests.kit.wait import eventually_blocking
from tests.shore.store_fixtures import SHORE_KEY
from tests.shore.test_ingest import VESSEL, Vessel, make_batches, register_vessel

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "nats"
RELAY_PASSWORD = "relay-secret-7731"
EXAMPLE_PASSWORD = "vessel-42-secret-0915"
#: vessels added as users.conf says to add one (the test relay's vessel, and a spy)
PASSWORDS = {VESSEL: "vessel-7-secret-2208", 43: "vessel-43-secret-4410"}

pytestmark = pytest.mark.broker  # a real NATS node, like the conftest's broker fixtures


class DeployedNode:
    """deploy/nats/nats-node.conf and users.conf on loopback: one node, no routes, the
    shipped users and permissions (vessels 7 and 43 added as the file says to add one)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.client_port, self.mqtt_port, self.monitor_port = (free_port() for _ in range(3))
        self.ca = make_test_ca(directory)
        node = (DEPLOY / "nats-node.conf").read_text(encoding="utf-8")
        node = node.replace('listen: "10.0.0.1:4222"', f'listen: "127.0.0.1:{self.client_port}"')
        node = node.replace('http: "127.0.0.1:8222"', f'http: "127.0.0.1:{self.monitor_port}"')
        node = node.replace("/var/lib/nats/jetstream", str(directory / "jetstream"))
        node = re.sub(r"\ncluster \{.*?\n\}\n", "\n", node, flags=re.DOTALL)  # one node
        node = node.replace('listen: "0.0.0.0:8883"', f'listen: "127.0.0.1:{self.mqtt_port}"')
        node = node.replace("/etc/nats/server.pem", str(directory / "server.pem"))
        node = node.replace("/etc/nats/server-key.pem", str(directory / "server-key.pem"))
        users = (DEPLOY / "users.conf").read_text(encoding="utf-8")
        users = users.replace("RELAY_PASSWORD_BCRYPT", RELAY_PASSWORD)
        example = re.search(r'    \{ user: "42".*?\} \} \}\n', users, flags=re.DOTALL)
        assert example is not None, "users.conf lost its example vessel"
        added = "".join(
            example[0]
            .replace('"42"', f'"{vessel_id}"')
            .replace("vr.42.", f"vr.{vessel_id}.")
            .replace("VESSEL_42_PASSWORD_BCRYPT", password)
            for vessel_id, password in PASSWORDS.items()
        )
        users = users.replace(example[0], example[0] + added)
        users = users.replace("VESSEL_42_PASSWORD_BCRYPT", EXAMPLE_PASSWORD)
        (directory / "nats-node.conf").write_text(node, encoding="utf-8")
        (directory / "users.conf").write_text(users, encoding="utf-8")
        self.log = directory / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [find_nats_server(), "-c", str(self.directory / "nats-node.conf")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        process = self.process

        def listening() -> bool:
            assert process.poll() is None, self.log.read_text()
            return accepts_connections("127.0.0.1", self.mqtt_port)

        eventually_blocking(listening, 20, 0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def vessel_client(self, vessel_id: int, password: str | None = None) -> aiomqtt.Client:
        context = ssl.create_default_context(cafile=str(self.ca))
        return aiomqtt.Client(
            "127.0.0.1", self.mqtt_port, identifier=f"v{vessel_id}", username=str(vessel_id),
            password=PASSWORDS[vessel_id] if password is None else password,
            protocol=aiomqtt.ProtocolVersion.V311, clean_session=False, tls_context=context,
        )  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DeployedNode]:
    if shutil.which("nats-server") is None and not Path("/usr/sbin/nats-server").exists():
        pytest.fail(f"nats-server is not installed: {INSTALL_HINT}", pytrace=False)
    deployed = DeployedNode(tmp_path / "nats")
    deployed.start()
    try:
        yield deployed
    finally:
        deployed.stop()


async def test_the_shipped_nats_users_confine_vessels_and_let_the_relay_work(
    node: DeployedNode, tmp_path: Path
) -> None:
    """On a node run from deploy/nats, over TLS: vessel 43 cannot subscribe to vessel 7's
    downlink (nor to everything, nor to the gateway's delivery subjects), and what it
    publishes on vessel 7's uplink is refused. A relay worker signs in as "relay" with its
    password file, makes the stream and the consumer, ingests vessel 7's batch, and the
    BatchAck reaches vessel 7 (and only vessel 7) through the gateway. A wrong password
    is refused."""
    data = tmp_path / "relay"
    data.mkdir()
    write_secret(data / "shore.key", SHORE_KEY.seed)
    password_file = data / "mqtt.password"
    password_file.write_text(RELAY_PASSWORD + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    await register_vessel(data)
    config_path = data / "relay.toml"
    config_path.write_text(
        f'[relay]\ndata_dir = "{data}"\nworker = 1\n'
        f'[mqtt]\nusername = "relay"\npassword_file = "mqtt.password"\nca_file = "{node.ca}"\n'
        f'[broker]\nkind = "nats"\nnats_urls = ["nats://127.0.0.1:{node.client_port}"]\n'
        f'mqtt_urls = ["mqtts://127.0.0.1:{node.mqtt_port}"]\nreplicas = 1\n'
        "[downlink]\ntick_s = 0.2\nresend_after_s = 2.0\nresend_max_s = 10.0\n",
        encoding="utf-8",
    )
    config = parse_config(tomllib.loads(config_path.read_text()), str(config_path))
    (batch,) = make_batches(1, 2)
    with pytest.raises(aiomqtt.MqttError):
        async with node.vessel_client(VESSEL, "wrong password"):
            pass
    async with node.vessel_client(VESSEL) as own, node.vessel_client(43) as spy:
        refused = [
            (await spy.subscribe(topic, qos=1))[0]
            for topic in (f"vr/{VESSEL}/d", "#", "$MQTT/sub/#", "vr/+/d")
        ]
        assert all(code.is_failure for code in refused), refused
        await spy.subscribe("vr/43/d", qos=1)
        await own.subscribe(f"vr/{VESSEL}/d", qos=1)
        stopping, subscribed = asyncio.Event(), asyncio.Event()
        relay = asyncio.create_task(run_relay(config, stopping, subscribed.set))
        try:
            async with asyncio.timeout(20):
                await subscribed.wait()
            # a copy on vessel 7's uplink from vessel 43's login is refused by NATS
            await spy.publish(f"vr/{VESSEL}/u", batch, qos=1)
            vessel = Vessel(own)
            listener = asyncio.create_task(vessel.listen())
            try:
                await vessel.publish(batch)
                await vessel.wait_for(lambda: 1 in vessel.acked, 30)
            finally:
                listener.cancel()
        finally:
            stopping.set()
            async with asyncio.timeout(15):
                await relay
        spied = []
        try:
            async with asyncio.timeout(1.0):  # anything queued for the spy arrives at once
                async for message in spy.messages:
                    spied.append(str(message.topic))
        except TimeoutError:
            pass
    assert spied == []
    log = node.log.read_text()
    assert f'Publish Violation - User "43", Subject "vr.{VESSEL}.u"' in log
    assert f'Subscription Violation - User "43", Subject "vr.{VESSEL}.d"' in log
    assert 'Violation - User "relay"' not in log
