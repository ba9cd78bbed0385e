"""TLS for the demo's broker: a private CA and a broker certificate for loopback.

The benchmarks and the demo put TLS on the vessels' link as ``deploy/`` does (TLS 1.3 on
Mosquitto, a private CA, an Ed25519 broker certificate: :data:`DEPLOYED_KEY_TYPE`), so
every byte figure includes the handshake a real vessel pays. An Ed25519 certificate and
its handshake signature are 72 bytes smaller than EC P-256's (a full handshake 2,603 B
instead of 2,675 B in ``test_tls_resumption_measured``, Mosquitto 2.0.11), and a full
handshake is what most FleetBroadband and Certus sessions pay (their sessions are more
than the tickets' two hours apart); ``"ec-p256"`` remains for a CA that cannot sign
Ed25519. Both are accepted by Python's ``ssl`` and by Mosquitto; both give ~128-bit
security.

Keys are written 0600; the CA's private key stays in the same directory (a demo CA, valid
for a year, for ``127.0.0.1`` and ``localhost`` only).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

__all__ = ["DEPLOYED_KEY_TYPE", "BrokerTls", "KeyType", "make_broker_tls"]

KeyType = Literal["ec-p256", "ed25519"]
#: The broker key type deploy/ uses; the demo, the benchmarks and the byte measurements
#: use it too, so that their figures are a deployed vessel's.
DEPLOYED_KEY_TYPE: KeyType = "ed25519"
_PEM = serialization.Encoding.PEM


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """The files a TLS listener and its clients need."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _key(key_type: KeyType) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> None:
    data = key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_broker_tls(directory: Path, key_type: KeyType = DEPLOYED_KEY_TYPE) -> BrokerTls:
    """A CA and a broker certificate for 127.0.0.1/localhost in ``directory`` (made once:
    an existing set is reused, so a restarted demo keeps trusting its broker)."""
    files = BrokerTls(directory / "ca.pem", directory / "broker.pem", directory / "broker-key.pem")
    if all(path.exists() for path in (files.ca_file, files.cert_file, files.key_file)):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=365))
    # Ed25519 signatures take no hash algorithm; ECDSA uses SHA-256.
    digest = None if key_type == "ed25519" else hashes.SHA256()
    ca_key = _key(key_type)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vessel-relay demo CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, digest)
    )
    key = _key(key_type)
    names = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(names, critical=False)
        .sign(ca_key, digest)
    )
    _write_key(directory / "ca-key.pem", ca_key)
    _write_key(files.key_file, key)
    files.cert_file.write_bytes(cert.public_bytes(_PEM))
    files.ca_file.write_bytes(ca.public_bytes(_PEM))
    return files
