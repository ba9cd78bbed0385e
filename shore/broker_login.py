"""The relay's login to the MQTT broker: user name, password file, TLS and client certificate.

``[mqtt]`` in the relay's configuration (``shore.config``) names the files; this module
reads them once, when the relay starts, and refuses what would be unsafe or cannot work::

    broker_login(config) -> BrokerLogin(username, password, tls_context)
      password_file   0600, one line, not the CHANGE-ME placeholder of deploy/compose
      ca_file         a PEM CA certificate (empty: the system's CAs), mqtts:// only
      client_cert/key a PEM certificate and its 0600 key, mqtts:// only

``nats_tls_context(config, login)`` is the TLS context of the relay's connection to a NATS
cluster (``[broker] nats_urls`` as tls://, ``nats_ca_file``); the login is the same.

Every refusal is a :class:`BrokerLoginError` naming the key and the fix. It is
a :class:`~common.keyfiles.KeyFileError`, so ``vessel-relay shore run`` reports it in
one line like an unreadable shore key.

The TLS context is built once and reused for every reconnection. The shipboard agent's
``shipboard.link.client_tls_context`` also resumes TLS sessions to save satellite bytes; the
relay sits on a cheap shore link with one long-lived connection, so a full handshake on
reconnect costs nothing worth the extra state. The two builders are a few lines each and
stay apart because ``shore`` and ``shipboard`` never import each other.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common.keyfiles import KeyFileError
from shore.config import RelayConfig, is_loopback

log = logging.getLogger(__name__)

#: The placeholder deploy/compose ships in its secret files; a relay never logs in with it.
PLACEHOLDER = "CHANGE-ME"


class BrokerLoginError(KeyFileError):
    """A file named in ``[mqtt]`` is missing, too open, empty or not what it should be."""


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """What the relay presents to the broker (the password stays out of ``repr``)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_context: ssl.SSLContext | None = None


def _owner_only(path: Path, key: str, source: str) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise BrokerLoginError(
            f"{source}: [mqtt] {key}: cannot read {path}: {exc.strerror}"
        ) from exc
    if mode & 0o077:
        raise BrokerLoginError(
            f"{source}: [mqtt] {key}: {path} is readable by others; run: chmod 600 {path}"
        )


def read_password(path: Path, source: str = "relay.toml") -> str:
    """The broker password from a 0600 file (one line; surrounding white space dropped)."""
    _owner_only(path, "password_file", source)
    try:
        password = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BrokerLoginError(
            f"{source}: [mqtt] password_file: cannot read {path}: {reason}"
        ) from exc
    if not password:
        raise BrokerLoginError(
            f"{source}: [mqtt] password_file: {path} is empty; write the relay's broker "
            "password in it"
        )
    if "\n" in password:
        raise BrokerLoginError(
            f"{source}: [mqtt] password_file: {path} holds several lines; keep only the password"
        )
    if password == PLACEHOLDER:
        raise BrokerLoginError(
            f"{source}: [mqtt] password_file: {path} still holds the placeholder "
            f"{PLACEHOLDER}; write a real password (the same as the broker's account)"
        )
    return password


def verifying_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A TLS client context of the relay's (to a broker, a NATS node or the smarthost): TLS
    1.2 or newer, the server's certificate and host name always checked, against
    ``ca_file`` (a PEM CA bundle) or, if None, the system's CAs. Raises ``OSError`` or
    ``ssl.SSLError`` when ``ca_file`` cannot be read or holds no certificate
    (:func:`unusable_ca` says which, for the caller's error)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is None:
        context.load_default_certs()
    else:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def unusable_ca(exc: OSError | ssl.SSLError) -> str:
    """Why :func:`verifying_context` could not use a CA file, in a few words."""
    return getattr(exc, "strerror", None) or "not a PEM certificate"


def client_tls_context(
    ca_file: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    source: str = "relay.toml",
    ca_key: str = "[mqtt] ca_file",
) -> ssl.SSLContext:
    """A TLS client context: TLS 1.2 or newer, the broker's certificate and host name checked.

    ``ca_file``: the broker's CA (None: the system's CAs). ``client_cert`` and
    ``client_key``: a certificate to log in with (the key must be a 0600 file). ``ca_key``:
    the configuration key that named ``ca_file``, for the error.
    """
    try:
        context = verifying_context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerLoginError(
            f"{source}: {ca_key}: cannot use {ca_file} ({unusable_ca(exc)}); give the PEM "
            "certificate of the CA that signed the broker's certificate"
        ) from exc
    if client_cert is not None and client_key is not None:
        _owner_only(client_key, "client_key", source)
        try:
            context.load_cert_chain(certfile=str(client_cert), keyfile=str(client_key))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or "not a matching PEM certificate and key"
            raise BrokerLoginError(
                f"{source}: [mqtt] client_cert / client_key: cannot use {client_cert} with "
                f"{client_key} ({reason}); give the relay's PEM certificate and its "
                "unencrypted key"
            ) from exc
    return context


def broker_login(config: RelayConfig) -> BrokerLogin:
    """Read the files ``[mqtt]`` names and build what the relay presents to the broker."""
    mqtt, source = config.mqtt, config.source
    url = urlsplit(mqtt.url)
    password = url.password
    if mqtt.password_file:
        password = read_password(config.path(mqtt.password_file), source)
    host, _ = config.mqtt_host_port
    if url.password and not config.mqtt_tls and not is_loopback(host):
        log.warning(
            "%s: [mqtt] url sends the broker password in clear to %s; use mqtts:// and "
            "password_file",
            source,
            host,
        )
    context = None
    if config.mqtt_tls:

        def named(value: str) -> Path | None:
            return config.path(value) if value else None

        context = client_tls_context(
            named(mqtt.ca_file), named(mqtt.client_cert), named(mqtt.client_key), source
        )
    return BrokerLogin(config.mqtt_username, password, context)


def nats_tls_context(config: RelayConfig, login: BrokerLogin) -> ssl.SSLContext | None:
    """The TLS context of the relay's NATS connection: None with nats:// ``nats_urls``; with
    tls:// ones, the nodes' certificates checked against ``[broker] nats_ca_file`` (empty:
    the system's CAs) and against the host in each URL. Built once, at start; warns when
    ``login``'s password would cross the network in clear (nats:// to a host not on
    loopback)."""
    broker, source = config.broker, config.source
    if not config.nats_tls:
        remote = [
            host
            for url in broker.nats_urls
            if (host := urlsplit(url).hostname) is not None and not is_loopback(host)
        ]
        if remote and login.password:
            log.warning(
                "%s: [broker] nats_urls sends the relay's NATS password and the vessels' "
                "batches in clear to %s; write tls://HOST:4222 with nats_ca_file (the nodes "
                "need a tls block: deploy/nats/nats-node.conf)",
                source,
                ", ".join(remote),
            )
        return None
    ca_file = config.path(broker.nats_ca_file) if broker.nats_ca_file else None
    return client_tls_context(ca_file, source=source, ca_key="[broker] nats_ca_file")
