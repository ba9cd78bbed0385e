"""deploy/nats: the shipped NATS node configuration and its users (the Mosquitto ACL
translated to NATS permissions) run as written, only addresses, paths and password hashes
rewritten: on one node with TLS on the vessels' MQTT door and on the relay workers' client
port (its certificate made by deploy/README.md's commands), and as a cluster of three whose
routes run over mutual TLS. Passwords are stored as bcrypt hashes, as users.conf says."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import subprocess
import textwrap
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import bcrypt
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from common.keyfiles import write_secret
from shore.config import parse_config
from shore.relay import run_relay
from tests.kit.nats import (
    INSTALL_HINT,
    RouteTls,
    find_nats_server,
    publish_until_received,
    route_greeting,
)
from tests.kit.ports import accepts_connections
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


def distinct_ports(count: int) -> list[int]:
    """``count`` different TCP ports of 127.0.0.1 that were free a moment ago (all held at
    once while chosen, so no two are the same)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def readme_block(marker: str) -> str:
    """The shell block of deploy/README.md that holds ``marker``, dedented."""
    readme = (DEPLOY.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL)
    (block,) = [block for block in blocks if marker in block]
    return textwrap.dedent(block)


def run_shell(script: str, directory: Path) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=directory, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def readme_client_port_certificate(directory: Path, number: int) -> tuple[Path, Path]:
    """Node ``number``'s client-port certificate for 127.0.0.1 and its key, made by the
    openssl commands deploy/README.md gives, run as written with the test CA of
    ``directory`` (ca.pem, ca-key.pem) as the broker CA."""
    block = readme_block("client-port-key")
    assert "N=1 ADDRESS=10.0.0.1\n" in block
    shutil.copyfile(directory / "ca.pem", directory / "broker-ca.pem")
    shutil.copyfile(directory / "ca-key.pem", directory / "broker-ca-key.pem")
    run_shell(block.replace("N=1 ADDRESS=10.0.0.1\n", f"N={number} ADDRESS=127.0.0.1\n"), directory)
    return directory / f"client-port-{number}.pem", directory / f"client-port-key-{number}.pem"


def bcrypt_hash(password: str) -> str:
    """The value users.conf takes for ``password`` ("$2b$..."). Cost 4, bcrypt's least:
    the same format nats-server reads at any cost; a higher one only slows each login."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


class DeployedNode:
    """deploy/nats/nats-node.conf and users.conf on loopback, the shipped users and
    permissions (vessels 7 and 43 added as the file says to add one), every password as a
    bcrypt hash. Alone (``route_ports`` None: the cluster block removed), or node ``index``
    (1 to 3) of a cluster whose nodes' route ports are ``route_ports``, its route
    certificate ``route_tls`` taking the place of /etc/nats/route*.pem; ``ports``: its
    client, MQTT and monitoring ports (free ones if not given)."""

    def __init__(
        self,
        directory: Path,
        *,
        index: int = 1,
        route_ports: list[int] | None = None,
        route_tls: RouteTls | None = None,
        ports: list[int] | None = None,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.client_port, self.mqtt_port, self.monitor_port = ports or distinct_ports(3)
        self.ca = make_test_ca(directory)
        door_cert, door_key = readme_client_port_certificate(directory, index)
        self.route_port = None if route_ports is None else route_ports[index - 1]
        self.route_tls = route_tls
        node = (DEPLOY / "nats-node.conf").read_text(encoding="utf-8")
        node = node.replace('server_name: "nats-1"', f'server_name: "nats-{index}"')
        node = node.replace('listen: "10.0.0.1:4222"', f'listen: "127.0.0.1:{self.client_port}"')
        node = node.replace('http: "127.0.0.1:8222"', f'http: "127.0.0.1:{self.monitor_port}"')
        node = node.replace("/var/lib/nats/jetstream", str(directory / "jetstream"))
        if route_ports is None:
            node = re.sub(r"\ncluster \{.*?\n\}\n", "\n", node, flags=re.DOTALL)  # one node
        else:
            assert route_tls is not None, "the shipped cluster block names route certificates"
            own = f"127.0.0.1:{route_ports[index - 1]}"
            node = node.replace('listen: "10.0.0.1:6222"', f'listen: "{own}"')
            for number, port in enumerate(route_ports, start=1):
                node = node.replace(
                    f"nats-route://10.0.0.{number}:6222", f"nats-route://127.0.0.1:{port}"
                )
            node = node.replace("/etc/nats/route-key.pem", str(route_tls.key_file))
            node = node.replace("/etc/nats/route-ca.pem", str(route_tls.ca_file))
            node = node.replace("/etc/nats/route.pem", str(route_tls.cert_file))
        node = node.replace('listen: "0.0.0.0:8883"', f'listen: "127.0.0.1:{self.mqtt_port}"')
        node = node.replace("/etc/nats/client-port-key.pem", str(door_key))
        node = node.replace("/etc/nats/client-port.pem", str(door_cert))
        node = node.replace("/etc/nats/server.pem", str(directory / "server.pem"))
        node = node.replace("/etc/nats/server-key.pem", str(directory / "server-key.pem"))
        live = [line for line in node.splitlines() if not line.lstrip().startswith("#")]
        left = [line for line in live if "10.0.0." in line or "/etc/" in line or "/var/" in line]
        assert not left, f"nats-node.conf has addresses or paths the test does not rewrite: {left}"
        users = (DEPLOY / "users.conf").read_text(encoding="utf-8")
        users = users.replace("RELAY_PASSWORD_BCRYPT", bcrypt_hash(RELAY_PASSWORD))
        example = re.search(r'    \{ user: "42".*?\} \} \}\n', users, flags=re.DOTALL)
        assert example is not None, "users.conf lost its example vessel"
        added = "".join(
            example[0]
            .replace('"42"', f'"{vessel_id}"')
            .replace("vr.42.", f"vr.{vessel_id}.")
            .replace("VESSEL_42_PASSWORD_BCRYPT", bcrypt_hash(password))
            for vessel_id, password in PASSWORDS.items()
        )
        users = users.replace(example[0], example[0] + added)
        users = users.replace("VESSEL_42_PASSWORD_BCRYPT", bcrypt_hash(EXAMPLE_PASSWORD))
        live = [line for line in users.splitlines() if not line.lstrip().startswith("#")]
        left = [line for line in live if "_BCRYPT" in line]
        assert not left, f"users.conf has password placeholders the test misses: {left}"
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

    @property
    def nats_url(self) -> str:
        return f"tls://127.0.0.1:{self.client_port}"

    def client_tls(self) -> ssl.SSLContext:
        """A NATS client's TLS context for this node's client port (trusting its CA)."""
        return ssl.create_default_context(cafile=str(self.ca))

    def monitor(self, endpoint: str) -> tuple[int, dict[str, object]]:
        """The node's monitoring answer at ``/endpoint``: (HTTP status, its JSON)."""
        url = f"http://127.0.0.1:{self.monitor_port}/{endpoint}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as answer:
                return int(answer.status), json.load(answer)
        except urllib.error.HTTPError as exc:  # /healthz answers 503 until JetStream is up
            exc.close()
            return exc.code, {}
        except (urllib.error.URLError, OSError):
            return 0, {}

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
    password file over TLS (tls:// and nats_ca_file; the node shows its connection as
    TLS), makes the stream and the consumer, ingests vessel 7's batch, and the BatchAck
    reaches vessel 7 (and only vessel 7) through the gateway. A wrong password is
    refused."""
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
        f'[broker]\nkind = "nats"\nnats_urls = ["{node.nats_url}"]\nnats_ca_file = "{node.ca}"\n'
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
            connections = node.monitor("connz")[1]["connections"]
            assert isinstance(connections, list)
            (relay_connection,) = [c for c in connections if c.get("name") == "relay-1"]
            assert relay_connection.get("tls_version") in ("1.2", "1.3"), relay_connection
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


async def test_the_shipped_users_hold_bcrypt_hashes_and_check_passwords_against_them(
    node: DeployedNode,
) -> None:
    """users.conf as deployed holds bcrypt hashes, not one of the passwords. The relay
    signs in to NATS with its plain password and a vessel to the MQTT gateway with its
    own; the same users with a wrong password, or with the hash itself as the password,
    are refused on both doors. The relay's door (the client port) greets in clear only
    to say it requires TLS."""
    users = (node.directory / "users.conf").read_text(encoding="utf-8")
    for password in (RELAY_PASSWORD, EXAMPLE_PASSWORD, *PASSWORDS.values()):
        assert password not in users
    assert len(re.findall(r'password: "\$2b\$04\$[./A-Za-z0-9]{53}"', users)) == 4
    relay_hash = re.search(r'user: "relay", password: "([^"]+)"', users)
    assert relay_hash is not None

    greeting = route_greeting("127.0.0.1", node.client_port, None)
    assert greeting.startswith(b"INFO "), greeting
    assert json.loads(greeting[5:])["tls_required"] is True
    client = await nats.connect(
        node.nats_url, user="relay", password=RELAY_PASSWORD, allow_reconnect=False,
        tls=node.client_tls(),
    )  # fmt: skip
    try:
        assert client.is_connected
    finally:
        await client.close()
    for wrong in ("relay-secret-7732", relay_hash[1]):
        refused = NatsClient()
        try:
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await refused.connect(
                    node.nats_url, user="relay", password=wrong, allow_reconnect=False,
                    connect_timeout=5, tls=node.client_tls(),
                )  # fmt: skip
        finally:
            await refused.close()  # a refused connect leaves its socket open until closed
    async with node.vessel_client(VESSEL) as vessel:
        await vessel.subscribe(f"vr/{VESSEL}/d", qos=1)
    for wrong in ("vessel-7-secret-2209", ""):
        with pytest.raises(aiomqtt.MqttCodeError, match=r"Not authorized|Bad user name"):
            async with node.vessel_client(VESSEL, wrong):
                pass
    log = node.log.read_text()
    for secret in (RELAY_PASSWORD, PASSWORDS[VESSEL]):
        assert secret not in log


def readme_route_certificates(directory: Path, count: int) -> list[RouteTls]:
    """Route certificates for ``count`` nodes on 127.0.0.1, made by the openssl commands
    deploy/README.md gives (its shell block that makes route-ca.pem), run as written: the
    CA part once, the per-node part once per node with N and ADDRESS set."""
    block = readme_block("route-ca-key.pem")
    ca_part, per_node = block.split("N=1 ADDRESS=10.0.0.1\n")
    directory.mkdir(parents=True, exist_ok=True)
    script = ca_part + "".join(
        f"N={number} ADDRESS=127.0.0.1\n{per_node}" for number in range(1, count + 1)
    )
    run_shell(script, directory)
    return [
        RouteTls(
            directory / f"route-{n}.pem",
            directory / f"route-key-{n}.pem",
            directory / "route-ca.pem",
        )
        for n in range(1, count + 1)
    ]


@pytest.fixture
def deployed_cluster(tmp_path: Path) -> Iterator[list[DeployedNode]]:
    """Three nodes from the shipped files, routes over mutual TLS with one certificate per
    node made as deploy/README.md says; healthy (JetStream has a meta leader)."""
    if shutil.which("nats-server") is None and not Path("/usr/sbin/nats-server").exists():
        pytest.fail(f"nats-server is not installed: {INSTALL_HINT}", pytrace=False)
    ports = distinct_ports(12)
    route_ports = ports[9:]
    certificates = readme_route_certificates(tmp_path / "route-ca", 3)
    nodes = [
        DeployedNode(
            tmp_path / f"nats-{index}",
            index=index,
            route_ports=route_ports,
            route_tls=certificates[index - 1],
            ports=ports[3 * index - 3 : 3 * index],
        )
        for index in (1, 2, 3)
    ]
    try:
        for deployed in nodes:
            deployed.start()

        def healthy() -> bool:
            return all(deployed.monitor("healthz")[0] == 200 for deployed in nodes)

        eventually_blocking(healthy, 30, 0.1)
        yield nodes
    finally:
        for deployed in nodes:
            deployed.stop()


async def test_the_shipped_cluster_routes_over_mutual_tls_and_carries_a_downlink_across(
    deployed_cluster: list[DeployedNode],
) -> None:
    """Three nodes run from deploy/nats (only addresses, paths and hashes rewritten), with
    route certificates made by deploy/README.md's openssl commands, form a cluster over
    their TLS routes: each has a route to the other two, and every route
    port asks for TLS and a client certificate. The relay, signed in to node 1 with its
    password, publishes vessel 42's downlink; vessel 42, signed in to node 3 with its own,
    receives it."""
    first, _, third = deployed_cluster
    for deployed in deployed_cluster:
        routez = deployed.monitor("routez")[1]
        assert routez["num_routes"] == 2, routez
        assert deployed.route_port is not None
        assert deployed.route_tls is not None
        own = route_greeting("127.0.0.1", deployed.route_port, deployed.route_tls.client_context())
        assert own.startswith(b"INFO "), own
        info = json.loads(own[5:])
        assert (info["tls_required"], info["tls_verify"]) == (True, True), info
        assert route_greeting("127.0.0.1", deployed.route_port, None) == b""
        anonymous = ssl.create_default_context(cafile=str(deployed.route_tls.ca_file))
        try:
            refused = route_greeting("127.0.0.1", deployed.route_port, anonymous)
        except ssl.SSLError as exc:
            refused = str(exc).encode()
        assert not refused.startswith(b"INFO"), refused
    vessel = await nats.connect(
        third.nats_url, user="42", password=EXAMPLE_PASSWORD, allow_reconnect=False,
        tls=third.client_tls(),
    )  # fmt: skip
    relay = await nats.connect(
        first.nats_url, user="relay", password=RELAY_PASSWORD, allow_reconnect=False,
        tls=first.client_tls(),
    )  # fmt: skip
    try:
        inbox = await vessel.subscribe("vr.42.d")
        await vessel.flush()
        await publish_until_received(relay, inbox, "vr.42.d", b"batch-ack")
    finally:
        await relay.close()
        await vessel.close()
