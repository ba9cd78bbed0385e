"""deploy/'s Mosquitto configuration, run as shipped (only paths and ports rewritten, and
its optional client-certificate listener switched on): TLS with a CA made here, passwords
for every client, the per-vessel ACL, and the relay's own login (TLS with a password
file, or a client certificate) against it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from common.keyfiles import write_secret
from shore.config import RelayConfig, parse_config
from shore.relay import _login_hint, make_client, run_relay
from tests.kit.mosquitto import find_mosquitto
from tests.kit.mqtt import next_message
from tests.kit.ports import accepts_connections, free_port
from tests.kit.tls import make_client_certificate, make_test_ca
from tests.kit.wait import eventually
from tests.shore.store_fixtures import SHORE_KEY
from tests.shore.test_ingest import Vessel, make_batches, register_vessel
from vessel_relay.demo.brokers import BROKER_OPENSSL_CNF

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "mosquitto"
PASSWORDS = {"7": "seven-secret", "8": "eight-secret", "relay": "relay-secret"}


OPTIONAL_LISTENER = "# --- optional: relay workers with client certificates"


def _uncomment_optional_listener(text: str) -> str:
    """The shipped config with its optional client-certificate listener switched on, as
    its comment tells the operator to do (directive lines lose their leading ``#``)."""
    assert OPTIONAL_LISTENER in text, "the optional client-certificate listener is gone"
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith(OPTIONAL_LISTENER):
            inside = True
        elif line.startswith("# --- end"):
            inside = False
        elif inside and line.startswith("#") and not line.startswith("# "):
            line = line[1:]
        lines.append(line)
    return "\n".join(lines) + "\n"


class DeployedBroker:
    """Mosquitto with deploy/mosquitto/mosquitto.conf and acl, on free loopback ports."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.etc = directory / "etc"
        self.etc.mkdir(parents=True)
        self.ca = make_test_ca(self.etc)
        shutil.copy(DEPLOY / "acl", self.etc / "acl")
        shutil.copy(DEPLOY / "openssl-broker.cnf", self.etc / "openssl-broker.cnf")
        passwords = self.etc / "passwords"
        passwords.touch()
        for user, password in PASSWORDS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
        # The optional listener for relay workers with client certificates: its own CA.
        clients = directory / "relay-clients"
        clients.mkdir()
        shutil.copy(make_test_ca(clients), self.etc / "relay-clients-ca.pem")
        self.relay_cert, self.relay_key = make_client_certificate(clients, "relay")
        self.tls_port, self.plain_port, self.cert_port = free_port(), free_port(), free_port()
        text = _uncomment_optional_listener((DEPLOY / "mosquitto.conf").read_text())
        for shipped, here in (
            ("/etc/mosquitto/vessel-relay/", f"{self.etc}/"),
            ("/var/lib/mosquitto/", f"{directory / 'persistence'}/"),
            ("listener 8883", f"listener {self.tls_port} 127.0.0.1"),
            ("listener 1883 127.0.0.1", f"listener {self.plain_port} 127.0.0.1"),
            ("listener 8884", f"listener {self.cert_port} 127.0.0.1"),
            ("log_dest syslog", "log_dest stderr"),
        ):
            assert shipped in text, f"deploy/mosquitto/mosquitto.conf no longer has {shipped!r}"
            text = text.replace(shipped, here)
        (directory / "persistence").mkdir()
        if os.geteuid() == 0:
            text += "user root\n"
        self.config = directory / "mosquitto.conf"
        self.config.write_text(text)
        self.log = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [find_mosquitto(), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OPENSSL_CONF": str(self.etc / "openssl-broker.cnf")},
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def vessel(self, user: str, password: str | None = None) -> aiomqtt.Client:
        context = ssl.create_default_context(cafile=str(self.ca))
        return aiomqtt.Client(
            "127.0.0.1",
            self.tls_port,
            identifier=f"v{user}",
            username=user,
            password=PASSWORDS.get(user) if password is None else password,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=context,
            timeout=10,
        )

    def relay(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            "127.0.0.1",
            self.plain_port,
            identifier="relay-1",
            username="relay",
            password=PASSWORDS["relay"],
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=10,
        )


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[DeployedBroker]:
    find_mosquitto()
    broker = DeployedBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def _wait_up(broker: DeployedBroker) -> None:
    for port in (broker.tls_port, broker.plain_port, broker.cert_port):

        async def listening(port: int = port) -> bool:
            return await asyncio.to_thread(accepts_connections, "127.0.0.1", port)

        await eventually(
            listening,
            10,
            what=f"mosquitto with the deploy config to listen on {port}",
            explain=broker.log.read_text,
        )


async def test_a_vessel_cannot_use_another_vessels_topics(deployed: DeployedBroker) -> None:
    """Vessel 7 signs in over TLS. Its publish into vessel 8's uplink never reaches the
    relay, while its own uplink does; the relay's downlink for vessel 8 never reaches it
    (its subscription is refused, or granted and every message withheld), while its own
    downlink does."""
    await _wait_up(deployed)
    async with deployed.relay() as relay, deployed.vessel("7") as vessel:
        await relay.subscribe("$share/relay/vr/+/u", qos=1)
        await vessel.publish("vr/8/u", b"forged batch for vessel 8", qos=1)
        await vessel.publish("vr/7/u", b"vessel 7's own batch", qos=1)
        arrived = await next_message(relay)
        assert (str(arrived.topic), arrived.payload) == ("vr/7/u", b"vessel 7's own batch")

        refused = await vessel.subscribe("vr/8/d", qos=1)
        granted = await vessel.subscribe("vr/7/d", qos=1)
        refused_codes = [getattr(code, "value", code) for code in refused]
        granted_codes = [getattr(code, "value", code) for code in granted]
        # Mosquitto 2.0's acl_file may grant the subscription and then withhold every
        # message on it (the read check runs per message); either way nothing may arrive.
        print(f"SUBACK vr/8/d: {refused_codes}; vr/7/d: {granted_codes}")
        assert all(code < 0x80 for code in granted_codes)
        await relay.publish("vr/8/d", b"receipts for vessel 8", qos=1)
        await relay.publish("vr/7/d", b"receipts for vessel 7", qos=1)
        down = await next_message(vessel)  # in order: vessel 8's would have come first
        assert (str(down.topic), down.payload) == ("vr/7/d", b"receipts for vessel 7")
        with pytest.raises(TimeoutError):
            await next_message(vessel, timeout_s=1.0)


async def test_wrong_password_and_anonymous_vessels_are_refused(deployed: DeployedBroker) -> None:
    """A vessel with a wrong password, or with no user name at all, cannot connect."""
    await _wait_up(deployed)
    with pytest.raises(aiomqtt.MqttError):
        async with deployed.vessel("7", password="guess"):
            pass
    context = ssl.create_default_context(cafile=str(deployed.ca))
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", deployed.tls_port, tls_context=context, timeout=10):
            pass


async def test_plain_mqtt_is_not_offered_to_vessels(deployed: DeployedBroker) -> None:
    """The vessel port speaks only TLS: a plain MQTT connection gets nowhere."""
    await _wait_up(deployed)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", deployed.tls_port, username="7", password=PASSWORDS["7"], timeout=3
        ):
            pass


def _settings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_demo_broker_uses_the_shipped_openssl_settings() -> None:
    """The demo's and benchmarks' broker runs with deploy/'s OpenSSL settings, so their
    figures are the deployed broker's."""
    shipped = (DEPLOY / "openssl-broker.cnf").read_text(encoding="utf-8")
    assert _settings(shipped) == _settings(BROKER_OPENSSL_CNF)
    drop_in = ROOT / "deploy" / "systemd" / "mosquitto.service.d" / "openssl.conf"
    assert "OPENSSL_CONF=/etc/mosquitto/vessel-relay/openssl-broker.cnf" in drop_in.read_text()


async def test_a_full_handshake_brings_one_session_ticket(deployed: DeployedBroker) -> None:
    """With deploy/'s OpenSSL settings the broker sends one TLS 1.3 session ticket after a
    full handshake, not OpenSSL's default two (~271 bytes each over the satellite); the
    vessel keeps only one."""
    await _wait_up(deployed)
    openssl = shutil.which("openssl")
    assert openssl is not None, "install openssl (apt-get install openssl)"
    connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"  # an MQTT 3.1.1 CONNECT
    done = await asyncio.to_thread(
        subprocess.run,
        [
            openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{deployed.tls_port}",
            "-tls1_3",
            "-CAfile",
            str(deployed.ca),
            "-msg",
            "-ign_eof",
        ],
        input=connect,
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.stdout.count(b"NewSessionTicket") == 1, done.stdout[-2000:]


# --- the relay's own login (shore.broker_login) against the shipped broker ------------


def relay_config(data: Path, broker: DeployedBroker, **mqtt: object) -> RelayConfig:
    """A relay worker's configuration in ``data`` (shore key, 0600 password file), its
    [mqtt] section as given."""
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "shore.key").exists():
        write_secret(data / "shore.key", SHORE_KEY.seed)
    password = data / "mqtt.password"
    password.write_text(PASSWORDS["relay"] + "\n", encoding="utf-8")
    password.chmod(0o600)
    document = {
        "relay": {"data_dir": str(data), "worker": 1},
        # A refused TLS 1.3 certificate shows only as silence: give up after 5 s, not 60.
        "mqtt": {"publish_timeout_s": 5.0, **mqtt},
        "downlink": {"tick_s": 0.2, "resend_after_s": 2.0, "resend_max_s": 10.0},
    }
    return parse_config(document, str(data / "relay.toml"))


def tls_login(broker: DeployedBroker) -> dict[str, str]:
    """[mqtt] for a relay worker on another machine: TLS to 8883, user relay, password file."""
    return {
        "url": f"mqtts://127.0.0.1:{broker.tls_port}",
        "ca_file": str(broker.ca),
        "username": "relay",
        "password_file": "mqtt.password",
    }


@contextlib.asynccontextmanager
async def running_relay(config: RelayConfig) -> AsyncIterator[None]:
    """The relay supervisor in this event loop, subscribed, until the block ends."""
    stopping, subscribed = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_relay(config, stopping, subscribed.set))
    try:
        async with asyncio.timeout(15):
            await subscribed.wait()
        yield
    finally:
        stopping.set()
        async with asyncio.timeout(15):
            await task


async def _batch_acknowledged_through(broker: DeployedBroker, config: RelayConfig) -> None:
    """Vessel 7 publishes a signed batch over TLS; the relay stores it and its signed
    BatchAck comes back down to the vessel."""
    await register_vessel(config.data_dir)
    async with running_relay(config), broker.vessel("7") as client:
        await client.subscribe("vr/7/d", qos=1)
        vessel = Vessel(client)
        listener = asyncio.create_task(vessel.listen())
        try:
            (batch,) = make_batches(1, 3)
            await vessel.publish(batch)
            await vessel.wait_for(lambda: 1 in vessel.acked)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    assert vessel.rejected == {}


async def test_the_relay_logs_into_the_tls_broker_and_ingests_a_vessels_batch(
    deployed: DeployedBroker, tmp_path: Path
) -> None:
    """A relay worker on another machine signs in to the shipped broker over TLS (the
    operator's CA, user relay, its password from a 0600 file), receives vessel 7's batch
    through the ACL's relay rules and acknowledges it back to the vessel."""
    await _wait_up(deployed)
    config = relay_config(tmp_path / "relay", deployed, **tls_login(deployed))
    assert config.mqtt_tls
    await _batch_acknowledged_through(deployed, config)


async def test_the_relay_logs_in_with_a_client_certificate(
    deployed: DeployedBroker, tmp_path: Path
) -> None:
    """With the config's optional listener switched on, a relay worker presents a client
    certificate for "relay" instead of a password, and ingests vessel 7's batch."""
    await _wait_up(deployed)
    config = relay_config(
        tmp_path / "relay",
        deployed,
        url=f"mqtts://127.0.0.1:{deployed.cert_port}",
        ca_file=str(deployed.ca),
        client_cert=str(deployed.relay_cert),
        client_key=str(deployed.relay_key),
    )
    assert config.mqtt_username is None  # the broker takes "relay" from the certificate
    await _batch_acknowledged_through(deployed, config)


async def _refused(config: RelayConfig) -> aiomqtt.MqttError:
    with pytest.raises(aiomqtt.MqttError) as caught:
        async with make_client(config):
            pass
    return caught.value


async def test_a_relay_without_the_right_credentials_is_refused(
    deployed: DeployedBroker, tmp_path: Path
) -> None:
    """The shipped broker lets no relay in without its login: no user name (over TLS, and
    on the loopback listener), a wrong password, or no client certificate on the
    certificate listener. Each refusal of a login points the operator at [mqtt]."""
    await _wait_up(deployed)
    data = tmp_path / "relay"
    no_login = relay_config(
        data, deployed, url=f"mqtts://127.0.0.1:{deployed.tls_port}", ca_file=str(deployed.ca)
    )
    plain_no_login = relay_config(data, deployed, url=f"mqtt://127.0.0.1:{deployed.plain_port}")
    wrong = relay_config(data, deployed, **tls_login(deployed))
    (data / "mqtt.password").write_text("guess", encoding="utf-8")
    for config in (no_login, plain_no_login, wrong):
        error = await _refused(config)
        assert "the broker refused the login; check [mqtt]" in _login_hint(error), error
    no_certificate = relay_config(
        data,
        deployed,
        url=f"mqtts://127.0.0.1:{deployed.cert_port}",
        ca_file=str(deployed.ca),
        username="relay",
        password_file="mqtt.password",
    )
    (data / "mqtt.password").write_text(PASSWORDS["relay"], encoding="utf-8")
    await _refused(no_certificate)  # the TLS handshake fails: no certificate, no password
    right = relay_config(data, deployed, **tls_login(deployed))
    async with make_client(right):
        pass  # and with its login the same relay gets in
