"""deploy/'s Mosquitto configuration, run as shipped (only paths and ports rewritten):
TLS for vessels with a CA made here, passwords, and the per-vessel ACL."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.kit.mosquitto import find_mosquitto
from tests.kit.mqtt import next_message
from tests.kit.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "mosquitto"
PASSWORDS = {"7": "seven-secret", "8": "eight-secret", "relay": "relay-secret"}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_test_ca(directory: Path) -> Path:
    """A CA and a broker certificate for 127.0.0.1/localhost (EC P-256); returns the CA."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("vessel-relay test CA"))
        .issuer_name(_name("vessel-relay test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("relay.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(cert.public_bytes(pem))
    (directory / "server-key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / "ca.pem"


class DeployedBroker:
    """Mosquitto with deploy/mosquitto/mosquitto.conf and acl, on free loopback ports."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.etc = directory / "etc"
        self.etc.mkdir(parents=True)
        self.ca = make_test_ca(self.etc)
        shutil.copy(DEPLOY / "acl", self.etc / "acl")
        passwords = self.etc / "passwords"
        passwords.touch()
        for user, password in PASSWORDS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
        self.tls_port, self.plain_port = free_port(), free_port()
        text = (DEPLOY / "mosquitto.conf").read_text()
        for shipped, here in (
            ("/etc/mosquitto/vessel-relay/", f"{self.etc}/"),
            ("/var/lib/mosquitto/", f"{directory / 'persistence'}/"),
            ("listener 8883", f"listener {self.tls_port} 127.0.0.1"),
            ("listener 1883 127.0.0.1", f"listener {self.plain_port} 127.0.0.1"),
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
                [find_mosquitto(), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
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
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", broker.tls_port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    pytest.fail(f"mosquitto with the deploy config did not start:\n{broker.log.read_text()}")


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
