"""Relay configuration: TOML into frozen dataclasses, with embedded defaults.

Every key has a default, so an empty file (or none) runs a relay on loopback with an
SQLite store in the data directory. An error names the file, the key and what to write::

    relay.toml: [store] backend = 'mysql': expected "sqlite" or "postgres"

Example (``vessel-relay shore init --data DIR`` writes one)::

    [relay]
    data_dir = "/var/lib/vessel-relay"
    worker = 1                      # MQTT client id relay-1
    shore_key = "shore.key"         # relative to data_dir
    decode_processes = 1            # processes decoding batches beside this one (0: none)
    fleet_gauges_worker = 1         # the worker whose /metrics has the store's gauges
    event_loop = "uvloop"           # or "asyncio" (the standard library's loop)

    [store]
    backend = "sqlite"              # or "postgres"
    path = "relay.db"               # sqlite, relative to data_dir
    dsn = ""                        # postgres: postgresql://user@host/db

    [mqtt]
    url = "mqtt://127.0.0.1:1883"   # or "mqtts://broker.example.org:8883" (TLS, port 8883
                                    # unless given); credentials in the URL
                                    # (mqtt://relay:PASSWORD@host) still work, but prefer:
    username = "relay"              # the broker login of relay workers (deploy/mosquitto/acl)
    password_file = "mqtt.password" # a 0600 file holding the password, relative to data_dir;
                                    # refused with mqtt:// to a host other than loopback
    ca_file = "broker-ca.pem"       # mqtts:// only: the CA that signed the broker's
                                    # certificate (the system's CAs if empty)
    client_cert = "relay-cert.pem"  # mqtts:// only: log in with a client certificate (PEM),
    client_key = "relay-key.pem"    # its key in a 0600 file; both or neither
    protocol = "5"                  # or "3.1.1" (then one worker only)
    session_expiry_s = 604800

    [broker]                        # which broker the vessels' batches come through
    kind = "mqtt"                   # "mqtt": the [mqtt] broker (Mosquitto, EMQX), as above;
                                    # "nats": a NATS cluster (JetStream + its MQTT gateway):
    nats_urls = ["tls://10.0.0.1:4222", "tls://10.0.0.2:4222", "tls://10.0.0.3:4222"]
                                    # tls://: TLS, each node's certificate and host name
                                    # checked (nats://: in clear; not both kinds at once)
    nats_ca_file = "broker-ca.pem"  # tls:// only: the CA that signed the nodes' client-port
                                    # certificates (the system's CAs if empty)
    mqtt_urls = ["mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1883", "mqtt://10.0.0.3:1883"]
                                    # the nodes' MQTT gateways (3.1.1), for the downlink;
                                    # [mqtt]'s login and TLS keys apply to each
    stream = "VR_UPLINK"            # the JetStream stream on vr.*.u (made if missing)
    replicas = 3                    # its replicas (the cluster's size, at most 5)
    durable = "relay"               # the durable pull consumer every relay worker shares
    ack_wait_s = 30.0               # a batch a worker took but did not ack goes to another
    fetch_batch = 16                # batches pulled at once

    [downlink]
    tick_s = 5.0
    resend_after_s = 3600.0
    resend_max_s = 86400.0
    max_items = 200

    [delivery]                      # family e-mail / SMS workers (shore.delivery)
    enabled = false
    workers = 4                     # delivery loops in this process, each claiming its
                                    # own batch (one waits on SMTP while another claims)
    smtp_host = "localhost"         # the smarthost (provider or own MTA) taking family mail
    smtp_port = 25                  # 587 with "starttls", 465 with "implicit"
    smtp_tls = "when-offered"       # "starttls" (required), "implicit" (TLS from the first
                                    # byte), "when-offered" (STARTTLS if the smarthost offers
                                    # it) or "none"; the certificate is always verified
    smtp_username = ""              # the smarthost login (AUTH), needs "starttls" or "implicit"
    smtp_password_file = ""         # a 0600 file holding its password, relative to data_dir
    smtp_ca_file = ""               # the CA that signed the smarthost's certificate (PEM;
                                    # the system's CAs if empty)
    smtp_connections = 8            # SMTP sessions kept open (mails in flight), 1 to 256
    smtp_pipelining = true          # MAIL, RCPT, DATA in one write when the smarthost
                                    # offers PIPELINING (RFC 2920); false: one at a time
    smtp_timeout_s = 60.0
    relay_domain = "relay.example.org"
    from_address = "relay@relay.example.org"
    reply_domain = "reply.example.org"
    reply_key = "reply.key"         # relative to data_dir

    [replies]                       # the SMTP server for families' answers
    enabled = false
    host = "127.0.0.1"
    port = 2525
    voice_vessels = []              # vessels whose agents read spoken replies (kind 14):
                                    #   a family's voice memo goes down to them in Codec2
    voice_max_seconds = 30          # a longer memo is refused (the family told), not cut
    voice_mode = "1200"             # the Codec2 mode of spoken replies (10 s = 1.5 KB)

    [sms]                           # the SMS provider (Twilio-shaped REST API)
    enabled = false
    account_sid = "AC..."
    auth_token = "sms.token"        # a 0600 file holding the token, relative to data_dir
    from_number = "+6620000000"
    base_url = "https://api.twilio.com"
    webhook = false                 # also take families' SMS replies on the webhook:
    webhook_url = "https://relay.example.org/sms/inbound"   # as configured at the provider
    webhook_host = "127.0.0.1"
    webhook_port = 8031
    voice_link_days = 7             # a voice message reaches SMS contacts as a link to a
                                    #   page on the webhook's server, playing for this long

    [alerts]                        # SOS alerts to rescue and union contacts (shore.alerts)
    enabled = false
    emails = ["mrcc@rescue.example.org"]
    sms = ["+6621234567"]
    retry_max_s = 300.0

    [union_api]                     # the unions' authenticated API (shore.union_api)
    enabled = false
    host = "127.0.0.1"
    port = 8040
    vessel_silent_after_s = 86400.0 # "vessel silent" alert after this long without a sync
    lane_silent_after_s = 129600.0  # "lane silent" when a vessel syncs this long after its
                                    # last grievance lane block (latency target + lane period)
    lane_queue_blocks = 64          # a union's blocks waiting per vessel's downlink lane
    [[union_api.unions]]            # one table per union (``vessel-relay union init`` prints
    id = 7                          # the union's id and its Ed25519 signing key)
    name = "Fishers' Union"
    public_key = "3b6a...e1"        # 64 hex digits

    [retention]                     # time to live and retention (shore.retention)
    message_ttl_days = 30.0         # a family message not delivered this long after it was
                                    # written fails; the crew member is told
    content_days = 30.0             # a family message's text and speech are purged this
                                    # long after its delivery ended (metadata stays)
    tick_s = 3600.0                 # how often the relay looks for what to purge
    [retention.vessel_message_ttl_days]
    7 = 14.0                        # vessel id = days, for vessels that differ

    [sbd]                           # Iridium SBD through RockBLOCK (shore.sbd)
    enabled = false
    webhook_host = "127.0.0.1"      # the MO webhook (/sbd/rockblock/mo) behind your proxy
    webhook_port = 8032
    provider_public_key_file = "rockblock.pem"  # Rock Seven's published RSA key (PEM):
                                    #   every post's JWT is verified with it (RS256 only)
    webhook_auth = ""               # "jwt", "secret" (?secret= in the URL, for providers
                                    #   without JWT) or "both"; "": jwt when a key is set
    webhook_secret_file = "sbd.secret"          # 0600, read when the secret is asked for
    jwt_max_age_s = 259200.0        # a JWT signed longer ago is refused
    provider_url = "https://rockblock.rock7.com"
    username = "relay@example.org"  # the provider account (MT messages)
    password_file = "sbd.password"
    vessels = ["300234010753370=42"]    # each modem's IMEI = vessel id
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

from common.exits import EX_CONFIG
from common.keyfiles import published_key_name, signing_key_file_name
from protocol.errors import InvalidEnvelope
from protocol.lane import LaneShape
from protocol.voice import DEFAULT_VOICE_MODE, MAX_VOICE_NOTE_MS, VoiceMode


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file, key and fix."""

    #: A command ending in this error exits 78 (common.exits).
    exit_code = EX_CONFIG


@dataclass(frozen=True, slots=True)
class RelaySection:
    data_dir: str = "."
    worker: int = 1
    shore_key: str = "shore.key"
    #: Processes that decode the vessels' batches beside this worker's own (0: decode in
    #: this process; ``shore.decoding``). One uses a second core; more help only with
    #: more cores than workers.
    decode_processes: int = 1
    #: The worker (``worker``) whose /metrics carries the fleet gauges read from the shared
    #: store; the others leave them out, so they are not counted once per worker.
    fleet_gauges_worker: int = 1
    #: The event loop ``shore run`` runs on: "uvloop" (libuv; less CPU a message) or
    #: "asyncio" (the standard library's).
    event_loop: str = "uvloop"


@dataclass(frozen=True, slots=True)
class StoreSection:
    backend: str = "sqlite"
    path: str = "relay.db"
    dsn: str = ""
    #: A claimed delivery whose worker died returns to the queue after this long.
    lease_s: float = 600.0


@dataclass(frozen=True, slots=True)
class MqttSection:
    url: str = "mqtt://127.0.0.1:1883"
    #: The broker login (empty: the user name in the URL, if any).
    username: str = ""
    #: A 0600 file holding the broker password, relative to data_dir (empty: none, or the
    #: password in the URL). Read at start by ``shore.broker_login``.
    password_file: str = ""
    #: mqtts:// only. The CA certificate (PEM) that signed the broker's certificate; empty
    #: trusts the system's CAs.
    ca_file: str = ""
    #: mqtts:// only. A client certificate and its 0600 key (PEM), both or neither.
    client_cert: str = ""
    client_key: str = ""
    protocol: str = "5"
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 60
    publish_timeout_s: float = 60.0
    reconnect_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class BrokerSection:
    """Where the vessels' batches come from: the ``[mqtt]`` broker, or a NATS cluster whose
    JetStream stream every relay worker pulls from through one durable consumer."""

    kind: str = "mqtt"
    #: kind = "nats": the cluster's client URLs, any order: all tls://HOST:PORT (TLS, the
    #: node's certificate and host name checked) or all nats://HOST:PORT (in clear).
    nats_urls: tuple[str, ...] = ()
    #: tls:// nats_urls only. The CA certificate (PEM) that signed the nodes' client-port
    #: certificates; empty trusts the system's CAs.
    nats_ca_file: str = ""
    #: kind = "nats": the nodes' MQTT gateways (mqtt:// or mqtts://), for the downlink.
    mqtt_urls: tuple[str, ...] = ()
    stream: str = "VR_UPLINK"
    replicas: int = 3
    durable: str = "relay"
    #: A batch pulled but not acknowledged within this long is given to another worker.
    ack_wait_s: float = 30.0
    fetch_batch: int = 16


@dataclass(frozen=True, slots=True)
class DownlinkSection:
    tick_s: float = 5.0
    resend_after_s: float = 3600.0
    resend_max_s: float = 24 * 3600.0
    max_items: int = 200
    #: The vessels' [grievances] slot_period_s: one downlink slot per crew member per period;
    #: and the downlink grievance lane's period (``protocol.lane.LaneShape.down_period_s``).
    slot_period_s: int = 86_400


#: ``[delivery] smtp_tls``: the values and their (``starttls``, ``use_tls``) for
#: ``shore.mail.SmtpConfig`` (``starttls`` None: STARTTLS when offered).
SMTP_TLS_MODES: dict[str, tuple[bool | None, bool]] = {
    "starttls": (True, False),
    "implicit": (False, True),
    "when-offered": (None, False),
    "none": (False, False),
}
MAX_SMTP_CONNECTIONS = 256


@dataclass(frozen=True, slots=True)
class DeliverySection:
    enabled: bool = False
    #: Delivery loops in this relay process, each claiming its own batch of due
    #: deliveries: while one waits on SMTP or the store, another claims or sends.
    workers: int = 4
    smtp_host: str = "localhost"
    smtp_port: int = 25
    #: How the session to the smarthost is protected (``SMTP_TLS_MODES``): "starttls"
    #: (required), "implicit" (TLS from the first byte, port 465), "when-offered" (STARTTLS
    #: when the smarthost offers it) or "none". Certificates are always verified.
    smtp_tls: str = "when-offered"
    #: The smarthost login (AUTH), with ``smtp_password_file``; empty: no login.
    smtp_username: str = ""
    #: A 0600 file holding the smarthost password, relative to data_dir; read at start.
    smtp_password_file: str = ""
    #: The CA certificate (PEM) that signed the smarthost's certificate; empty trusts the
    #: system's CAs.
    smtp_ca_file: str = ""
    #: SMTP sessions kept open to the smarthost: at most this many mails in flight in this
    #: process (its delivery workers and reply notices share them; SOS alerts have their own).
    smtp_connections: int = 8
    #: Send MAIL, RCPT and DATA in one write when the smarthost offers PIPELINING (RFC
    #: 2920): two round trips a mail instead of four. false: one command at a time, for a
    #: smarthost that offers it but mishandles it.
    smtp_pipelining: bool = True
    smtp_timeout_s: float = 60.0
    relay_domain: str = "relay.example.org"
    from_address: str = "relay@relay.example.org"
    reply_domain: str = "reply.example.org"
    reply_key: str = "reply.key"

    @property
    def smtp_tls_flags(self) -> tuple[bool | None, bool]:
        """``smtp_tls`` as ``shore.mail.SmtpConfig``'s (``starttls``, ``use_tls``)."""
        return SMTP_TLS_MODES[self.smtp_tls]


@dataclass(frozen=True, slots=True)
class RepliesSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 2525
    #: Vessels whose agents read spoken replies (an older agent refuses a batch holding one).
    voice_vessels: tuple[int, ...] = ()
    voice_max_seconds: int = 30
    voice_mode: str = DEFAULT_VOICE_MODE.label


@dataclass(frozen=True, slots=True)
class SmsSection:
    enabled: bool = False
    account_sid: str = ""
    auth_token: str = "sms.token"
    from_number: str = ""
    base_url: str = "https://api.twilio.com"
    timeout_s: float = 30.0
    webhook: bool = False
    webhook_url: str = ""
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8031
    #: Days a voice message's link plays for an SMS contact (shore.voice_links).
    voice_link_days: int = 7


@dataclass(frozen=True, slots=True)
class AlertsSection:
    enabled: bool = False
    emails: tuple[str, ...] = ()
    sms: tuple[str, ...] = ()
    retry_max_s: float = 300.0
    tick_s: float = 5.0


@dataclass(frozen=True, slots=True)
class UnionAccountSection:
    """A union registered for the union API: its id and Ed25519 public key (32 bytes)."""

    union_id: int
    public_key: bytes
    name: str = ""


@dataclass(frozen=True, slots=True)
class UnionApiSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8040
    #: "vessel silent" when a vessel has not synced for this long (its link profile's
    #: expected gap between sessions, with margin).
    vessel_silent_after_s: float = 24 * 3600.0
    unions: tuple[UnionAccountSection, ...] = ()
    #: "lane silent" when a vessel syncs this long after its latest grievance lane block
    #: arrived (the vessels' grievance latency target plus one lane period, with margin).
    lane_silent_after_s: float = 36 * 3600.0
    #: Blocks a union may have waiting for one vessel's downlink lane (at least what the
    #: largest case note takes; more is refused with 429).
    lane_queue_blocks: int = 64


@dataclass(frozen=True, slots=True)
class RetentionSection:
    """Time to live of family messages and retention of their content (issue 23)."""

    message_ttl_days: float = 30.0
    content_days: float = 30.0
    tick_s: float = 3600.0
    #: (vessel id, days): vessels whose family messages live longer or shorter.
    vessel_message_ttl_days: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class SbdSection:
    """Iridium SBD through a RockBLOCK-shaped provider (``shore.sbd``)."""

    enabled: bool = False
    #: Where the MO webhook listens (the provider posts to the public URL of this door).
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8032
    #: File holding the secret the webhook URL carries (``?secret=...``); read only when
    #: ``webhook_auth`` asks for the secret.
    webhook_secret_file: str = "sbd.secret"
    #: What an MO post must carry: "jwt" (the provider's RS256 JWT), "secret" (the URL's
    #: secret) or "both"; "" picks "jwt" when provider_public_key_file is set, else "secret".
    webhook_auth: str = ""
    #: The provider's RSA public key (PEM) its JWTs are verified with (RockBLOCK: Rock
    #: Seven's published key), relative to data_dir; "" for a provider without JWT.
    provider_public_key_file: str = ""
    #: The ``iss`` claim the provider's JWTs carry.
    provider_jwt_issuer: str = "Rock 7"
    #: A JWT signed longer ago than this is refused.
    jwt_max_age_s: float = 3 * 86_400.0
    provider_url: str = "https://rockblock.rock7.com"
    username: str = ""
    #: File holding the provider account's password.
    password_file: str = "sbd.password"
    #: Each vessel's modem: "IMEI=VESSEL" (15 digits = vessel id).
    vessels: tuple[str, ...] = ()
    #: A vessel heard over SBD this recently gets its small downlink batches over SBD too.
    downlink_window_s: float = 3600.0
    downlink_max_bytes: int = 540


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """The whole relay configuration (``source`` names the file, for messages)."""

    relay: RelaySection = field(default_factory=RelaySection)
    store: StoreSection = field(default_factory=StoreSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    downlink: DownlinkSection = field(default_factory=DownlinkSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    replies: RepliesSection = field(default_factory=RepliesSection)
    sms: SmsSection = field(default_factory=SmsSection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    union_api: UnionApiSection = field(default_factory=UnionApiSection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    sbd: SbdSection = field(default_factory=SbdSection)
    source: str = "<defaults>"

    @property
    def data_dir(self) -> Path:
        """The directory that relative paths are taken from."""
        return Path(self.relay.data_dir)

    def path(self, value: str) -> Path:
        """A configured path, relative to the data directory unless absolute."""
        candidate = Path(value)
        return candidate if candidate.is_absolute() else self.data_dir / candidate

    @property
    def lane_shape(self) -> LaneShape:
        """The grievance lane as this relay runs it: the protocol's block sizes, the
        downlink period ``[downlink] slot_period_s``."""
        return LaneShape(down_period_s=self.downlink.slot_period_s)

    @property
    def exports_fleet_gauges(self) -> bool:
        """Whether this worker's /metrics carries the gauges read from the shared store."""
        return self.relay.worker == self.relay.fleet_gauges_worker

    @property
    def client_id(self) -> str:
        """The relay worker's MQTT client id."""
        return f"relay-{self.relay.worker}"

    @property
    def mqtt_tls(self) -> bool:
        """Whether the broker URL asks for TLS (``mqtts://``)."""
        return urlsplit(self.mqtt.url).scheme == "mqtts"

    @property
    def mqtt_host_port(self) -> tuple[str, int]:
        """Host and port of the broker URL (1883 for mqtt://, 8883 for mqtts:// unless given)."""
        parts = urlsplit(self.mqtt.url)
        return parts.hostname or "127.0.0.1", parts.port or (8883 if self.mqtt_tls else 1883)

    @property
    def mqtt_broker(self) -> str:
        """The broker URL without credentials, for logs and messages."""
        host, port = self.mqtt_host_port
        shown = f"[{host}]" if ":" in host else host
        return f"{urlsplit(self.mqtt.url).scheme}://{shown}:{port}"

    @property
    def nats_tls(self) -> bool:
        """Whether ``[broker] nats_urls`` ask for TLS (``tls://``; validation refuses a mix)."""
        return any(urlsplit(url).scheme == "tls" for url in self.broker.nats_urls)

    @property
    def mqtt_username(self) -> str | None:
        """The broker user name: ``[mqtt] username``, else the URL's, else None."""
        return self.mqtt.username or urlsplit(self.mqtt.url).username or None


_SECTIONS: dict[str, type[Any]] = {
    "relay": RelaySection,
    "store": StoreSection,
    "mqtt": MqttSection,
    "broker": BrokerSection,
    "downlink": DownlinkSection,
    "delivery": DeliverySection,
    "replies": RepliesSection,
    "sms": SmsSection,
    "alerts": AlertsSection,
    "union_api": UnionApiSection,
    "retention": RetentionSection,
    "sbd": SbdSection,
}


def _section(source: str, name: str, raw: object, cls: type[Any]) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(
                f"{source}: [{name}] has no key {key!r}; known keys: {', '.join(sorted(known))}"
            )
        default = getattr(cls(), key)
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple and isinstance(value, list):
            of_ints = "int" in str(known[key].type)
            item_type = int if of_ints else str
            if not all(
                isinstance(item, item_type) and not isinstance(item, bool) for item in value
            ):
                kind = "whole numbers" if of_ints else "strings"
                raise ConfigError(f"{source}: [{name}] {key} must be a list of {kind}")
            value = tuple(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{source}: [{name}] {key} = {value!r}: expected a {expected.__name__} "
                f"like {default!r}"
            )
        values[key] = value
    return cls(**values)


def parse_config(document: dict[str, Any], source: str = "<text>") -> RelayConfig:
    """Check a parsed TOML document and build the configuration."""
    sections: dict[str, Any] = {}
    for name, raw in document.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{name}]; known: {', '.join(sorted(_SECTIONS))}"
            )
        if name == "union_api":
            sections[name] = _union_api_section(source, raw)
            continue
        if name == "retention":
            sections[name] = _retention_section(source, raw)
            continue
        sections[name] = _section(source, name, raw, _SECTIONS[name])
    config = RelayConfig(**sections, source=source)
    _validate(config)
    return config


def _union_api_section(source: str, raw: object) -> UnionApiSection:
    """``[union_api]`` with its ``[[union_api.unions]]`` tables (ids and Ed25519 keys)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [union_api] must be a table")
    listed = raw.get("unions", [])
    plain = _section(
        source, "union_api", {k: v for k, v in raw.items() if k != "unions"}, UnionApiSection
    )
    if not isinstance(listed, list):
        raise ConfigError(
            f"{source}: [union_api] unions must be tables: write [[union_api.unions]] "
            "with id, name and public_key"
        )
    unions: list[UnionAccountSection] = []
    for index, item in enumerate(listed):
        where = f"{source}: [[union_api.unions]] #{index + 1}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table with id, name and public_key")
        unknown = set(item) - {"id", "name", "public_key"}
        if unknown:
            raise ConfigError(
                f"{where} has no key {sorted(unknown)[0]!r}; known keys: id, name, public_key"
            )
        union_id = item.get("id")
        if not isinstance(union_id, int) or isinstance(union_id, bool) or not 0 < union_id < 2**16:
            raise ConfigError(
                f"{where} id = {union_id!r}: expected the union's id, a number from 1 to 65535"
            )
        name = item.get("name", "")
        if not isinstance(name, str):
            raise ConfigError(f"{where} name = {name!r}: expected a string")
        key_hex = item.get("public_key")
        try:
            key = bytes.fromhex(key_hex) if isinstance(key_hex, str) else b""
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError(
                f"{where} public_key = {key_hex!r}: expected the union's Ed25519 signing key, "
                "64 hex digits, as printed by 'vessel-relay union init' (\"signing key\" line)"
            )
        if any(known.union_id == union_id for known in unions):
            raise ConfigError(f"{where}: union id {union_id} is listed twice; keep one table")
        unions.append(UnionAccountSection(union_id, key, name))
    if plain.vessel_silent_after_s <= 0:
        raise ConfigError(
            f"{source}: [union_api] vessel_silent_after_s must be positive, like 86400.0"
        )
    if plain.lane_silent_after_s <= 0:
        raise ConfigError(
            f"{source}: [union_api] lane_silent_after_s must be positive, like 129600.0"
        )
    if not 1 <= plain.lane_queue_blocks <= 4096:
        raise ConfigError(
            f"{source}: [union_api] lane_queue_blocks = {plain.lane_queue_blocks}: expected "
            "1 to 4096 (64 is the default)"
        )
    return UnionApiSection(
        enabled=plain.enabled,
        host=plain.host,
        port=plain.port,
        vessel_silent_after_s=plain.vessel_silent_after_s,
        unions=tuple(unions),
        lane_silent_after_s=plain.lane_silent_after_s,
        lane_queue_blocks=plain.lane_queue_blocks,
    )


def _retention_section(source: str, raw: object) -> RetentionSection:
    """``[retention]`` with its ``[retention.vessel_message_ttl_days]`` table (vessel id =
    days)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [retention] must be a table")
    by_vessel = raw.get("vessel_message_ttl_days", {})
    plain = _section(
        source,
        "retention",
        {k: v for k, v in raw.items() if k != "vessel_message_ttl_days"},
        RetentionSection,
    )
    for key in ("message_ttl_days", "content_days", "tick_s"):
        if not getattr(plain, key) > 0:
            raise ConfigError(f"{source}: [retention] {key} must be positive, like 30.0")
    if not isinstance(by_vessel, dict):
        raise ConfigError(
            f"{source}: [retention] vessel_message_ttl_days must be a table of vessel id = "
            "days, like [retention.vessel_message_ttl_days] with 7 = 14.0"
        )
    ttls: list[tuple[int, float]] = []
    for key, days in by_vessel.items():
        where = f"{source}: [retention.vessel_message_ttl_days] {key}"
        if not str(key).isdigit():
            raise ConfigError(f"{where}: expected a vessel id (a number), as 'shore vessel list'")
        if isinstance(days, bool) or not isinstance(days, int | float) or not days > 0:
            raise ConfigError(f"{where} = {days!r}: expected a positive number of days, like 14.0")
        ttls.append((int(key), float(days)))
    return RetentionSection(
        message_ttl_days=plain.message_ttl_days,
        content_days=plain.content_days,
        tick_s=plain.tick_s,
        vessel_message_ttl_days=tuple(sorted(ttls)),
    )


def _validate(config: RelayConfig) -> None:
    source = config.source
    if config.relay.event_loop not in ("uvloop", "asyncio"):
        raise ConfigError(
            f"{source}: [relay] event_loop = {config.relay.event_loop!r}: expected "
            '"uvloop" or "asyncio"'
        )
    if config.relay.decode_processes < 0:
        raise ConfigError(
            f"{source}: [relay] decode_processes = {config.relay.decode_processes}: expected "
            "0 (decode in the worker) or more"
        )
    if config.store.backend not in ("sqlite", "postgres"):
        raise ConfigError(
            f'{source}: [store] backend = {config.store.backend!r}: expected "sqlite" or "postgres"'
        )
    if config.store.backend == "postgres" and not config.store.dsn:
        raise ConfigError(
            f'{source}: [store] dsn is empty; write dsn = "postgresql://user@host/db"'
        )
    if config.mqtt.protocol not in ("5", "3.1.1"):
        raise ConfigError(
            f'{source}: [mqtt] protocol = {config.mqtt.protocol!r}: expected "5" or "3.1.1"'
        )
    if config.broker.kind == "mqtt":
        _validate_mqtt(config)
    # with kind = "nats", [mqtt]'s login and TLS keys are checked with each of mqtt_urls
    _validate_broker(config)
    if config.store.lease_s <= 0:
        raise ConfigError(f"{source}: [store] lease_s must be more than 0 seconds")
    if config.relay.worker < 1:
        raise ConfigError(f"{source}: [relay] worker must be 1 or more")
    _validate_sms_and_alerts(config)
    _validate_sbd(config)
    _validate_delivery(config)
    api = config.union_api
    if api.enabled and not api.unions:
        raise ConfigError(
            f"{source}: [union_api] enabled = true but no union is registered; add a "
            "[[union_api.unions]] table with id, name and public_key"
        )
    if not 0 <= api.port < 65536:
        raise ConfigError(f"{source}: [union_api] port = {api.port}: expected 0 to 65535")
    down = config.downlink
    if not (down.tick_s > 0 and 0 < down.resend_after_s <= down.resend_max_s):
        raise ConfigError(
            f"{source}: [downlink] needs tick_s > 0 and 0 < resend_after_s <= resend_max_s"
        )
    try:
        config.lane_shape  # noqa: B018 -- builds the shape, which checks the period
    except InvalidEnvelope as exc:
        raise ConfigError(f"{source}: [downlink] slot_period_s: {exc}") from exc


def _validate_sbd(config: RelayConfig) -> None:
    """``[sbd]``: the webhook's authentication fits the keys given (files are read at start)."""
    where, sbd = f"{config.source}: [sbd]", config.sbd
    if sbd.webhook_auth not in ("", "jwt", "secret", "both"):
        raise ConfigError(
            f'{where} webhook_auth = {sbd.webhook_auth!r}: expected "jwt", "secret" or "both" '
            "(or leave it out: jwt when provider_public_key_file is set, else secret)"
        )
    if sbd.webhook_auth in ("jwt", "both") and not sbd.provider_public_key_file:
        raise ConfigError(
            f'{where} webhook_auth = "{sbd.webhook_auth}" needs provider_public_key_file (the '
            "provider's RSA public key, PEM; RockBLOCK publishes Rock Seven's)"
        )
    if sbd.jwt_max_age_s <= 0:
        raise ConfigError(f"{where} jwt_max_age_s must be more than 0 seconds")
    if not sbd.provider_jwt_issuer:
        raise ConfigError(f'{where} provider_jwt_issuer is empty; RockBLOCK\'s is "Rock 7"')


def _validate_delivery(config: RelayConfig) -> None:
    """``[delivery]``: the smarthost's TLS, login and pool fit together (its password and CA
    files are read at start, by ``shore.relay.smtp_config``)."""
    where, section = f"{config.source}: [delivery]", config.delivery
    if section.smtp_tls not in SMTP_TLS_MODES:
        raise ConfigError(
            f'{where} smtp_tls = {section.smtp_tls!r}: expected "starttls" (port 587), '
            '"implicit" (port 465), "when-offered" or "none"'
        )
    if not 0 < section.smtp_port < 65536:
        raise ConfigError(f"{where} smtp_port = {section.smtp_port}: expected 1 to 65535")
    if section.smtp_username and not section.smtp_password_file:
        raise ConfigError(
            f"{where} smtp_username needs smtp_password_file: a 0600 file holding the "
            "smarthost password, relative to data_dir"
        )
    if section.smtp_password_file and not section.smtp_username:
        raise ConfigError(
            f"{where} smtp_password_file needs smtp_username: the smarthost login the "
            "password belongs to"
        )
    if section.smtp_username and section.smtp_tls in ("none", "when-offered"):
        raise ConfigError(
            f'{where} smtp_username with smtp_tls = "{section.smtp_tls}": the password could '
            "cross the network in clear (a smarthost, or someone on the way, that does not "
            'offer STARTTLS gets it); write smtp_tls = "starttls" (port 587) or '
            '"implicit" (port 465)'
        )
    if section.smtp_ca_file and section.smtp_tls == "none":
        raise ConfigError(
            f'{where} smtp_ca_file is only used with TLS; write smtp_tls = "starttls" or '
            '"implicit", or remove smtp_ca_file'
        )
    if not 1 <= section.smtp_connections <= MAX_SMTP_CONNECTIONS:
        raise ConfigError(
            f"{where} smtp_connections = {section.smtp_connections}: expected 1 to "
            f"{MAX_SMTP_CONNECTIONS} (SMTP sessions kept open to the smarthost)"
        )
    if not section.smtp_timeout_s > 0:
        raise ConfigError(f"{where} smtp_timeout_s must be more than 0 seconds, like 60.0")


_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (a password sent there never crosses a network)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_mqtt(config: RelayConfig) -> None:
    """The ``[mqtt]`` URL, login and TLS keys fit together (files are read at start)."""
    source, mqtt = config.source, config.mqtt
    where = f"{source}: [mqtt]"
    parts = urlsplit(mqtt.url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            f"{where} url = {mqtt.url!r}: expected mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS"
        )
    try:
        parts.port  # noqa: B018 -- urlsplit checks the port only when asked
    except ValueError:
        raise ConfigError(f"{where} url = {mqtt.url!r} has a bad port") from None
    if mqtt.username and parts.username:
        raise ConfigError(
            f"{where} url holds a user name and username is set too; keep username = "
            f"{mqtt.username!r} and write the URL without credentials"
        )
    if mqtt.password_file and parts.password:
        raise ConfigError(
            f"{where} url holds a password and password_file is set too; remove the "
            "password from the URL"
        )
    if mqtt.password_file and not config.mqtt_username:
        raise ConfigError(
            f'{where} password_file needs a user name: write username = "relay" (the '
            "broker account of the relay workers)"
        )
    if not config.mqtt_tls:
        for key in ("ca_file", "client_cert", "client_key"):
            if getattr(mqtt, key):
                raise ConfigError(
                    f"{where} {key} is only used with TLS; write url = "
                    f'"mqtts://{parts.hostname}:8883" or remove {key}'
                )
        if mqtt.password_file and not is_loopback(parts.hostname):
            raise ConfigError(
                f"{where} password_file: the password would cross the network in clear to "
                f'{parts.hostname}; write url = "mqtts://{parts.hostname}:8883" (with ca_file '
                "for a private CA) or use a broker listener on loopback"
            )
    if bool(mqtt.client_cert) != bool(mqtt.client_key):
        raise ConfigError(f"{where} give both client_cert and client_key (PEM files), or neither")


_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _validate_broker(config: RelayConfig) -> None:
    """``[broker]``: the MQTT default, or a NATS cluster with its URLs and stream."""
    where, broker = f"{config.source}: [broker]", config.broker
    if broker.kind not in ("mqtt", "nats"):
        raise ConfigError(f'{where} kind = {broker.kind!r}: expected "mqtt" or "nats"')
    if broker.kind == "mqtt":
        return
    if not broker.nats_urls:
        raise ConfigError(
            f'{where} kind = "nats" needs nats_urls = ["nats://HOST:4222", ...] (every node)'
        )
    for url in broker.nats_urls:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ConfigError(
                f"{where} nats_urls: {url!r}: expected tls://HOST:PORT (TLS) or nats://HOST:PORT"
            )
        if parts.password:
            raise ConfigError(
                f"{where} nats_urls: {parts.hostname} holds a password; use [mqtt] username "
                "and password_file (the same login serves both gateways)"
            )
    schemes = {urlsplit(url).scheme for url in broker.nats_urls}
    if len(schemes) > 1:
        raise ConfigError(
            f"{where} nats_urls mixes nats:// and tls://: the relay would send its password "
            "and the vessels' batches in clear to some nodes; write every node as "
            "tls://HOST:PORT (with nats_ca_file for a private CA)"
        )
    if broker.nats_ca_file and schemes == {"nats"}:
        raise ConfigError(
            f"{where} nats_ca_file is only used with TLS; write nats_urls as "
            '["tls://HOST:4222", ...] or remove nats_ca_file'
        )
    if not broker.mqtt_urls:
        raise ConfigError(
            f'{where} kind = "nats" needs mqtt_urls = ["mqtt://HOST:1883", ...] (the '
            "nodes' MQTT gateways, for the downlink)"
        )
    for url in broker.mqtt_urls:
        try:
            _validate_mqtt(replace(config, mqtt=replace(config.mqtt, url=url)))
        except ConfigError as exc:
            detail = str(exc).removeprefix(f"{config.source}: ")
            raise ConfigError(f"{where} mqtt_urls: {detail}") from None
    if not _NAME.fullmatch(broker.stream) or not _NAME.fullmatch(broker.durable):
        raise ConfigError(
            f"{where} stream and durable are names of letters, digits, - and _, like "
            '"VR_UPLINK" and "relay"'
        )
    if not 1 <= broker.replicas <= 5:
        raise ConfigError(f"{where} replicas = {broker.replicas}: expected 1 to 5 (JetStream)")
    if broker.ack_wait_s <= 0:
        raise ConfigError(f"{where} ack_wait_s must be positive, like 30.0")
    if not 1 <= broker.fetch_batch <= 256:
        raise ConfigError(f"{where} fetch_batch = {broker.fetch_batch}: expected 1 to 256")


def _validate_sms_and_alerts(config: RelayConfig) -> None:
    source, sms, alerts = config.source, config.sms, config.alerts
    if sms.enabled:
        if not sms.account_sid or "/" in sms.account_sid:
            raise ConfigError(f'{source}: [sms] account_sid is empty; write account_sid = "AC..."')
        if not sms.from_number.startswith("+"):
            raise ConfigError(
                f"{source}: [sms] from_number = {sms.from_number!r}: expected the relay's "
                'number in E.164 form, like "+6620000000"'
            )
        if sms.webhook and "://" not in sms.webhook_url:
            raise ConfigError(
                f"{source}: [sms] webhook_url = {sms.webhook_url!r}: expected the full public "
                "URL configured at the provider, like https://relay.example.org/sms/inbound"
            )
    elif sms.webhook:
        raise ConfigError(f"{source}: [sms] webhook = true needs enabled = true")
    replies = config.replies
    if any(vessel < 1 for vessel in replies.voice_vessels):
        raise ConfigError(
            f"{source}: [replies] voice_vessels = {list(replies.voice_vessels)}: expected "
            "vessel ids (whole numbers from 1)"
        )
    longest = MAX_VOICE_NOTE_MS // 1000
    if not 1 <= replies.voice_max_seconds <= longest:
        raise ConfigError(
            f"{source}: [replies] voice_max_seconds = {replies.voice_max_seconds} is not "
            f"from 1 to {longest} seconds"
        )
    try:
        VoiceMode.from_label(replies.voice_mode)
    except ValueError as exc:
        raise ConfigError(f"{source}: [replies] voice_mode: {exc}") from None
    if not 1 <= sms.voice_link_days <= 90:
        raise ConfigError(
            f"{source}: [sms] voice_link_days = {sms.voice_link_days} is not from 1 to 90 days"
        )
    if alerts.enabled:
        if not (alerts.emails or alerts.sms):
            raise ConfigError(
                f"{source}: [alerts] has no contacts; write emails = [...] and/or sms = [...]"
            )
        if alerts.sms and not sms.enabled:
            raise ConfigError(
                f"{source}: [alerts] sms needs the SMS provider: set [sms] enabled = true"
            )
        if alerts.emails and not config.delivery.enabled:
            raise ConfigError(
                f"{source}: [alerts] emails need the smarthost: set [delivery] enabled = true"
            )
        if alerts.retry_max_s <= 0 or alerts.tick_s <= 0:
            raise ConfigError(f"{source}: [alerts] retry_max_s and tick_s must be positive")


def load_config(path: Path, *, allow_demo_keys: bool = False) -> RelayConfig:
    """Read and check a TOML file.

    The demo's published keys are refused (:func:`refuse_demo_keys`) unless
    ``allow_demo_keys`` (the demo and tests only; ``shore run`` never passes it).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}; make one with 'shore init'"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    config = parse_config(document, str(path))
    if not allow_demo_keys:
        refuse_demo_keys(config)
    return config


def default_document(data_dir: Path) -> str:
    """The TOML that ``shore init`` writes (tomli-w quotes and escapes the path)."""
    document = {
        "relay": {"data_dir": str(data_dir), "worker": 1, "shore_key": "shore.key"},
        "store": {"backend": "sqlite", "path": "relay.db"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "protocol": "5"},
    }
    return (
        "# vessel-relay shore relay; every key has a default (see shore/config.py)\n"
        + tomli_w.dumps(document)
    )


def refuse_demo_keys(config: RelayConfig) -> None:
    """Refuse a shore key file or a union's key that is one of the demo's published keys.

    A missing or unreadable key file is left to whoever loads it (``shore run`` reports it).
    """
    key_path = config.path(config.relay.shore_key)
    name = signing_key_file_name(key_path)
    if name is not None:
        raise ConfigError(
            f"{config.source}: [relay] shore_key {key_path} holds {name}, whose private half "
            "is published with vessel-relay: anyone could sign receipts, replies and "
            "compliance reports as this relay. Move it away, make a new one with "
            f"'vessel-relay shore keygen -o {key_path}' and give its public key to every "
            "vessel; demo keys run only inside 'vessel-relay demo'"
        )
    for union in config.union_api.unions:
        name = published_key_name(union.public_key)
        if name is not None:
            raise ConfigError(
                f"{config.source}: [[union_api.unions]] id {union.union_id} public_key is "
                f"{name}, whose private half is published: anyone could act as that union. "
                "Write the union's own signing key (printed by 'vessel-relay union init')"
            )
