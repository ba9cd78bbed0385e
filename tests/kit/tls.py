"""Certificates for tests: a CA, a broker certificate for loopback, client certificates,
cluster node certificates (EC P-256, valid one day). Keys are written 0600, as the relay,
Mosquitto and nats-server expect."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM
CA_NAME = "vessel-relay test CA"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return ca, key


def _issue(
    directory: Path,
    common_name: str,
    stem: str,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> tuple[Path, Path]:
    ca, ca_key = _load_ca(directory)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(PEM))
    _write_key(directory / f"{stem}-key.pem", key)
    return directory / f"{stem}.pem", directory / f"{stem}-key.pem"


def make_test_ca(directory: Path) -> Path:
    """A CA (ca.pem, ca-key.pem) and a broker certificate for 127.0.0.1/localhost
    (server.pem, server-key.pem) in ``directory``; returns the CA certificate's path."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_NAME))
        .issuer_name(_name(CA_NAME))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(PEM))
    _write_key(directory / "ca-key.pem", ca_key)
    names = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    _issue(directory, "relay.test", "server", [(names, False)])
    return directory / "ca.pem"


def make_client_certificate(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A client certificate for ``common_name`` signed by ``directory``'s test CA:
    (``<name>.pem``, ``<name>-key.pem``)."""
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    return _issue(directory, common_name, f"client-{common_name}", [(usage, False)])


def make_node_certificate(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A cluster node's route certificate for 127.0.0.1/localhost signed by ``directory``'s
    test CA, usable both ways (a route is a TLS server to the nodes that dial it and a TLS
    client to those it dials): (``node-<name>.pem``, ``node-<name>-key.pem``)."""
    names = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    usage = x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    return _issue(directory, common_name, f"node-{common_name}", [(names, False), (usage, False)])
