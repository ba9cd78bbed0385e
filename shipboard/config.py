"""Config: one TOML file read into frozen dataclasses and validated before anything starts.

Every error names the file, the key and the fix. Paths in the file are relative to the
file's own directory. There are no embedded keys: ``vessel-relay ship init`` writes a file
(:func:`ship_document`) with the shore's key it is given and the unions it is given, and
the demo's defaults live in :mod:`vessel_relay.demo.defaults`.

Keys anyone can derive (the demo's published keys, :data:`common.keyfiles.
PUBLISHED_DEMO_KEYS`) are refused as the shore's key, a union's key or the vessel's
signing key, unless the caller passes ``allow_demo_keys=True`` (the demo and tests only;
``ship run`` never does). A file with no ``[[unions]]`` yet can be read by the owner's
commands (``require_union=False``), but the agent does not start without a union:
grievance reports cannot be turned off.

Some settings are refused outright because they would let the owner weaken the grievance
channel: lowering the reserved grievance/SOS budget below its floor, turning grievances
off, making them wait longer than family messages, or giving anyone on board a copy.

Grievance latency with the lane (always on): a report is cut into the vessel's grievance
lane, whose blocks leave at the end of each lane period (``[grievances] slot_period_s``,
six hours by default, :class:`protocol.lane.LaneShape`), reports and cover alike; each
released block then goes within ``latency_minutes.grievance`` (a day by default) like any
released item. So a short report waits at most a period and a day (30 hours by default),
the price of nobody seeing whether, when or by whom it was filed. Both may be shortened
(costlier), never lengthened: a longer period, or a grievance latency over a day, is
refused at load. Quota, budget and the family messages' latency do not touch the lane.

Example file::

    [vessel]
    id = 42
    name = "Sea Star 7"
    signing_key = "keys/vessel.key"

    [shore]
    broker = "mqtts://relay.example.org:8883"
    public_key = "64 hex digits"
    mqtt_version = "5"            # or "3.1.1"
    ca_file = "shore-ca.pem"      # optional: a private CA for mqtts:// (system CAs if unset)
    tls_minimum = "1.3"           # or "1.2" for a broker without TLS 1.3 (costs ~270 B a session)
    relay_reads_subjects = false  # true once the relay keeps mails' Subject lines (2026-12):
                                  # an older relay refuses a batch that carries one

    [link]
    profile = "iridium-certus"
    monthly_budget_bytes = 40_000_000

    [quota]
    crew_text_bytes = 1_048_576   # never below the rule's 1 MB

    [grievances]
    reserve_bytes = 262_144       # may be raised, never lowered below the floor
    slot_period_s = 21600         # the lane period (divides a day): shortened, never
                                  # lengthened; its blocks leave when it ends, then within
                                  # latency_minutes.grievance
    daily_slots = true            # always on; false is refused (it makes grievances traceable)
    slot_bytes = 2048             # the old daily slots' size (read, no longer used)

    [latency_minutes]
    message = 360
    grievance = 1440              # lowered, never raised

    [time]
    zone = "Asia/Bangkok"

    [[unions]]
    id = 1
    name = "Fishers' Rights Network"
    public_key = "64 hex digits (X25519)"
    languages = ["tha", "mya"]

    [data]
    directory = "/var/lib/vessel-relay"

    [intake]
    smtp_host = "0.0.0.0"
    smtp_port = 587
    http_host = "0.0.0.0"
    http_port = 8080

    [voice]
    max_seconds = 30              # the longest voice note, in seconds of speech (1 to 120)
    mode = "1200"                 # the Codec2 mode (benchmarks/voice.py); 10 s = 1.5 KB
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import nacl.public
import tomli_w

from common.keyfiles import published_key_name, signing_key_file_name
from protocol.errors import InvalidEnvelope
from protocol.evidence import fingerprint
from protocol.lane import LaneShape, check_period
from protocol.languages import Language
from protocol.slots import DEFAULT_SLOT_BYTES, MAX_SLOT_BYTES
from protocol.voice import DEFAULT_VOICE_MODE, MAX_VOICE_NOTE_MS, VoiceMode
from shipboard.errors import ConfigError

#: Link profiles known when shipboard/profiles.py is not there yet (it defines the real ones).
_FALLBACK_PROFILES: tuple[str, ...] = ("iridium-certus", "fleetbroadband", "vsat")

#: The Thai rule: at least 1 MB of text per person per month (used if protocol.quota is absent).
_FALLBACK_RULE_MONTHLY_TEXT_BYTES = 1_000_000

DEFAULT_CREW_TEXT_BYTES = 1024 * 1024
#: Bytes a month kept for grievance reports and SOS, outside every crew quota and budget.
DEFAULT_GRIEVANCE_RESERVE_BYTES = 256 * 1024
#: The longest voice note by default: 30 s of speech (about 4.5 KB in mode 1200).
DEFAULT_VOICE_MAX_SECONDS = 30
#: The floor: a config may raise the reserve, never put it below this.
MIN_GRIEVANCE_RESERVE_BYTES = 64 * 1024
#: Latest a released grievance lane block may wait for a session, and the latest an SOS
#: may wait (minutes). The grievance default is its maximum: an idle vessel on Iridium
#: Certus then opens one session a day, and lowering it costs sessions, never secrecy.
MAX_GRIEVANCE_LATENCY_MINUTES = 24 * 60
MAX_SOS_LATENCY_MINUTES = 5
#: The lane period by default (``[grievances] slot_period_s``), also its longest.
DEFAULT_LANE_PERIOD_S = LaneShape().period_s

#: ``[shore] tls_minimum`` values.
TLS_MINIMUMS = ("1.3", "1.2")

DEFAULT_LATENCY_MINUTES: Mapping[str, int] = {
    "sos": 0,
    "grievance": MAX_GRIEVANCE_LATENCY_MINUTES,
    "message": 360,
}

#: Keys that would give someone on board grievance content or switch the channel off.
_FORBIDDEN_GRIEVANCE_KEYS: Mapping[str, str] = {
    "enabled": "grievance reports cannot be turned off",
    "disabled": "grievance reports cannot be turned off",
    "owner_copy": "nobody on board may receive a copy of grievance reports",
    "copy_to": "nobody on board may receive a copy of grievance reports",
    "cc": "nobody on board may receive a copy of grievance reports",
    "owner_key": "grievance reports are sealed to the union's key only",
    "escrow_key": "grievance reports are sealed to the union's key only",
    "store_plaintext": "grievance reports are sealed before they are stored",
    "log_content": "grievance content is never logged",
    "quota": "grievance reports are outside every quota",
    "max_per_month": "grievance reports cannot be limited in number",
}


def rule_monthly_text_bytes() -> int:
    """The rule's monthly minimum of text per crew member (from protocol.quota if present)."""
    try:
        quota = importlib.import_module("protocol.quota")
    except ImportError:
        return _FALLBACK_RULE_MONTHLY_TEXT_BYTES
    value = getattr(quota, "RULE_MONTHLY_TEXT_BYTES", _FALLBACK_RULE_MONTHLY_TEXT_BYTES)
    return int(value)


def link_profile_names() -> tuple[str, ...]:
    """Names of the built-in link profiles (from shipboard.profiles if present)."""
    try:
        profiles = importlib.import_module("shipboard.profiles")
    except ImportError:
        return _FALLBACK_PROFILES
    for attribute in ("PROFILES", "LINK_PROFILES", "PROFILE_NAMES"):
        value = getattr(profiles, attribute, None)
        if isinstance(value, Mapping):
            return tuple(str(name) for name in value)
        if isinstance(value, (tuple, list, frozenset, set)):
            return tuple(sorted(str(name) for name in value))
    return _FALLBACK_PROFILES


# --- the dataclasses ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VesselConfig:
    """Who this vessel is."""

    vessel_id: int
    name: str
    signing_key_path: Path


@dataclass(frozen=True, slots=True)
class ShoreConfig:
    """Where the shore relay's broker is and how we know the shore."""

    broker_url: str
    public_key_hex: str
    mqtt_version: str  # "5" or "3.1.1"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The CA certificate (PEM) that signed the broker's certificate, for a private CA
    #: (deploy/mosquitto); None trusts the system's CAs. Only with ``mqtts://``.
    ca_file: Path | None = None
    #: The oldest TLS version offered: "1.3" (the default: a TLS 1.3-only hello is about
    #: 270 bytes smaller, every full handshake) or "1.2" for a broker without TLS 1.3.
    tls_minimum: str = "1.3"
    #: Whether the relay reads a crew message's subject (``protocol.envelopes.CrewMessage.
    #: subject``, added 2026-12). An older relay refuses a whole batch that carries one, so
    #: the SMTP door keeps a mail's Subject line only when this says the relay reads it.
    relay_reads_subjects: bool = False

    @property
    def tls(self) -> bool:
        """Whether the broker URL asks for TLS (``mqtts://``)."""
        return urlsplit(self.broker_url).scheme == "mqtts"

    @property
    def host(self) -> str:
        """The broker's host name."""
        return urlsplit(self.broker_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """The broker's port (1883 for mqtt://, 8883 for mqtts:// unless given)."""
        return urlsplit(self.broker_url).port or (8883 if self.tls else 1883)


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """The satellite link: its profile (see shipboard.profiles) and the monthly budget."""

    profile: str
    monthly_budget_bytes: int
    #: The owner paused the main link: no session opens on it. SOS and the grievance lane
    #: then go over the SBD fallback if the vessel has one (``[sbd]``), which cannot be paused.
    paused: bool = False


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """Per crew member text quota, and the reserve kept for grievances and SOS."""

    crew_text_bytes: int = DEFAULT_CREW_TEXT_BYTES
    grievance_reserve_bytes: int = DEFAULT_GRIEVANCE_RESERVE_BYTES
    #: The old daily slots' size (protocol.slots): still read and checked, no longer used.
    slot_bytes: int = DEFAULT_SLOT_BYTES
    #: Whether reports go through the grievance lane (always, from a config file: false is
    #: refused). Only tests switch it off in code: each report then travels on its own as
    #: a ``GrievanceReport``, visibly, as before the lane.
    daily_slots: bool = True
    #: The grievance lane's uplink period in seconds (six hours by default, the longest
    #: allowed; divides a day; demos and tests may set 10-60).
    slot_period_s: int = DEFAULT_LANE_PERIOD_S

    def lane_shape(self) -> LaneShape:
        """The grievance lane's shape on this vessel: the protocol's block sizes (a vessel
        and its relay must agree on them) with this vessel's uplink period."""
        return LaneShape(period_s=self.slot_period_s)


@dataclass(frozen=True, slots=True)
class UnionConfig:
    """A union or NGO that receives grievance reports (sealed to its X25519 key)."""

    union_id: int
    name: str
    public_key: bytes
    languages: tuple[Language, ...]


@dataclass(frozen=True, slots=True)
class IntakeConfig:
    """Where crew members' phones reach the agent on the vessel LAN."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    """Voice notes: how long one may be, and the Codec2 mode they travel in."""

    max_seconds: int = DEFAULT_VOICE_MAX_SECONDS
    mode: VoiceMode = DEFAULT_VOICE_MODE


#: ``[sbd] after_down_minutes``: by default, and the most it may be raised to.
DEFAULT_SBD_AFTER_DOWN_MINUTES = 15
MAX_SBD_AFTER_DOWN_MINUTES = 60

#: Keys that would let the owner switch the SBD fallback off for SOS and grievances.
_FORBIDDEN_SBD_KEYS: Mapping[str, str] = {
    key: "the SBD fallback for SOS and grievance reports cannot be switched off"
    for key in ("enabled", "disabled", "paused", "sos", "grievances", "reserved", "lane")
}


@dataclass(frozen=True, slots=True)
class SbdConfig:
    """The Iridium SBD modem that carries SOS and the grievance lane when the main link is
    paused or down (``shipboard.links``)."""

    #: The modem's serial port (e.g. "/dev/ttyUSB0").
    device: str
    #: The main link counts as down after this many minutes of failed sessions.
    after_down_minutes: int = DEFAULT_SBD_AFTER_DOWN_MINUTES
    #: The owner's choice (None, the default: never): a family message that has waited
    #: this many minutes while the main link is down (not while the owner paused it) may
    #: go over SBD, billed against the owner's monthly budget at SBD's price
    #: (``shipboard.links.route``).
    family_after_minutes: int | None = None


@dataclass(frozen=True, slots=True)
class PortConfig:
    """A cheap link in port (4G, harbour Wi-Fi): the broker as reached over it, and the
    network interface whose state says whether it is in reach (``shipboard.links``)."""

    broker_url: str
    interface: str

    @property
    def host(self) -> str:
        """The broker's host name over the port link."""
        return urlsplit(self.broker_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """The broker's port over the port link."""
        parts = urlsplit(self.broker_url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        """Whether the port link's broker URL asks for TLS."""
        return urlsplit(self.broker_url).scheme == "mqtts"


@dataclass(frozen=True, slots=True)
class ShipConfig:
    """Everything the shipboard agent needs, validated."""

    vessel: VesselConfig
    shore: ShoreConfig
    link: LinkConfig
    quota: QuotaConfig
    latency_minutes: Mapping[str, int]
    time_zone: ZoneInfo
    unions: tuple[UnionConfig, ...]
    data_dir: Path
    intake: IntakeConfig
    source: str = "<defaults>"
    voice: VoiceConfig = VoiceConfig()
    #: The SBD fallback (None: the vessel has no SBD modem).
    sbd: SbdConfig | None = None
    #: The cheap link in port (None: the vessel has none).
    port: PortConfig | None = None

    @property
    def database_path(self) -> Path:
        """The outbox database file."""
        return self.data_dir / "outbox.sqlite3"

    @property
    def shore_verify_key_hex(self) -> str:
        """The shore's Ed25519 public key, hex."""
        return self.shore.public_key_hex

    def union(self, union_id: int) -> UnionConfig | None:
        """The union with this id, if the vessel knows it."""
        for union in self.unions:
            if union.union_id == union_id:
                return union
        return None

    def tls_paths(self) -> tuple[Path, Path]:
        """The intake's TLS certificate and key (made at ``ship init`` if not configured)."""
        cert = self.intake.tls_cert_path or self.data_dir / "intake-cert.pem"
        key = self.intake.tls_key_path or self.data_dir / "intake-key.pem"
        return cert, key


# --- reading and checking ----------------------------------------------------------------


class _Table:
    """One TOML table being read: tracks used keys so unknown ones are reported."""

    def __init__(self, source: str, name: str, raw: object) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, not {type(raw).__name__}")
        self.source = source
        self.name = name
        self.raw: dict[str, Any] = raw
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.source}: {self.name}.{key}"

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, fix: str = ""
    ) -> Any:
        self.used.add(key)
        if key not in self.raw:
            if default is ...:
                raise ConfigError(f"{self.where(key)} is missing; {fix or 'add it'}")
            return default
        value = self.raw[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{self.where(key)} must be a whole number, not {value!r}")
        if kind is not int and not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise ConfigError(f"{self.where(key)} must be a {names}, not {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise ConfigError(
                f"{self.where(unknown[0])} is not a known setting; "
                f"known keys in [{self.name}]: {known}"
            )


def _hex_key(where: str, value: str, what: str) -> bytes:
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{where} must be the {what} as 64 hex digits, not {value[:20]!r}")
    return key


def _positive(table: _Table, key: str, default: Any = ..., *, fix: str = "") -> int:
    value: int = table.get(key, int, default, fix=fix)
    if value <= 0:
        raise ConfigError(f"{table.where(key)} must be above zero, not {value}")
    return value


def _port(table: _Table, key: str, default: int) -> int:
    value: int = table.get(key, int, default)
    if not 0 < value < 65536:
        raise ConfigError(f"{table.where(key)} must be a TCP port from 1 to 65535, not {value}")
    return value


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _read_vessel(table: _Table, base: Path) -> VesselConfig:
    vessel_id = table.get("id", int, fix="the vessel id the shore registry gave (e.g. id = 42)")
    if not 0 < vessel_id < 2**53:
        raise ConfigError(f"{table.where('id')} must be a positive whole number, not {vessel_id}")
    name = table.get("name", str, fix='e.g. name = "Sea Star 7"')
    key = table.get("signing_key", str, fix='run "vessel-relay ship init" or set a key path')
    table.finish()
    return VesselConfig(vessel_id, name, _path(base, key))


def _read_shore(table: _Table, base: Path) -> ShoreConfig:
    url = table.get("broker", str, fix='e.g. broker = "mqtts://relay.example.org:8883"')
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            f"{table.where('broker')} = {url!r} is not a broker URL; write "
            '"mqtt://HOST:PORT" or "mqtts://HOST:PORT"'
        )
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"{table.where('broker')} has a bad port in {url!r}") from None
    if parts.username or parts.password:
        raise ConfigError(
            f"{table.where('broker')} must not hold credentials; use shore.username and "
            "shore.password"
        )
    public_key = table.get("public_key", str, fix="the shore's Ed25519 public key, 64 hex digits")
    _hex_key(table.where("public_key"), public_key, "shore's Ed25519 public key")
    version = table.get("mqtt_version", (str, int), "5")
    version = str(version)
    if version not in ("5", "3.1.1"):
        raise ConfigError(f'{table.where("mqtt_version")} must be "5" or "3.1.1", not {version!r}')
    username = table.get("username", str, None)
    password = table.get("password", str, None)
    if (username is None) != (password is None):
        raise ConfigError(
            f"{table.where('username')}: give both shore.username and shore.password, or neither"
        )
    ca_name = table.get("ca_file", str, None)
    ca_file = _path(base, ca_name) if ca_name else None
    if ca_file is not None and parts.scheme != "mqtts":
        raise ConfigError(
            f"{table.where('ca_file')} is only used with TLS; write the broker as "
            '"mqtts://HOST:PORT" or remove ca_file'
        )
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(
            f"{table.where('ca_file')}: {ca_file} is not a file; give the PEM certificate "
            "of the CA that signed the shore broker's certificate"
        )
    tls_minimum = str(table.get("tls_minimum", (str, float), "1.3"))
    if tls_minimum not in TLS_MINIMUMS:
        raise ConfigError(
            f'{table.where("tls_minimum")} must be "1.3" or "1.2", not {tls_minimum!r}'
        )
    relay_reads_subjects = table.get("relay_reads_subjects", bool, False)
    table.finish()
    return ShoreConfig(
        url,
        public_key.strip().lower(),
        version,
        username,
        password,
        ca_file,
        tls_minimum,
        relay_reads_subjects,
    )


def _read_link(table: _Table) -> LinkConfig:
    names = link_profile_names()
    profile = table.get("profile", str, "iridium-certus")
    if profile not in names:
        raise ConfigError(
            f"{table.where('profile')} = {profile!r} is not a known link profile; "
            f"choose one of: {', '.join(names)}"
        )
    budget = _positive(table, "monthly_budget_bytes", 40_000_000)
    paused: bool = table.get("paused", bool, False)
    table.finish()
    return LinkConfig(profile, budget, paused)


def _read_quota(quota: _Table, grievances: _Table) -> QuotaConfig:
    rule = rule_monthly_text_bytes()
    crew_text = _positive(quota, "crew_text_bytes", DEFAULT_CREW_TEXT_BYTES)
    if crew_text < rule:
        raise ConfigError(
            f"{quota.where('crew_text_bytes')} = {crew_text} is below the legal minimum of "
            f"{rule} bytes of text per crew member per month; set it to {rule} or more"
        )
    if "grievance_reserve_bytes" in quota.raw:
        raise ConfigError(
            f"{quota.where('grievance_reserve_bytes')}: the reserve belongs in "
            "[grievances] reserve_bytes"
        )
    quota.finish()
    for key, why in _FORBIDDEN_GRIEVANCE_KEYS.items():
        if key in grievances.raw:
            raise ConfigError(
                f"{grievances.where(key)} is refused: {why}. Remove this line; the grievance "
                "channel cannot be weakened from the vessel"
            )
    reserve = _positive(grievances, "reserve_bytes", DEFAULT_GRIEVANCE_RESERVE_BYTES)
    if reserve < MIN_GRIEVANCE_RESERVE_BYTES:
        raise ConfigError(
            f"{grievances.where('reserve_bytes')} = {reserve} is refused: the grievance and SOS "
            f"reserve cannot be lowered below {MIN_GRIEVANCE_RESERVE_BYTES} bytes a month; "
            "raise it or remove the line"
        )
    slot_bytes = _positive(grievances, "slot_bytes", DEFAULT_SLOT_BYTES)
    if not DEFAULT_SLOT_BYTES <= slot_bytes <= MAX_SLOT_BYTES:
        raise ConfigError(
            f"{grievances.where('slot_bytes')} = {slot_bytes} is refused: each crew member's "
            f"daily slot is from {DEFAULT_SLOT_BYTES} to {MAX_SLOT_BYTES} bytes (it may be "
            "raised, never lowered); raise it or remove the line"
        )
    daily_slots: bool = grievances.get("daily_slots", bool, True)
    if not daily_slots:
        raise ConfigError(
            f"{grievances.where('daily_slots')} = false is refused: without the grievance "
            "lane an owner can see when a crew member files a grievance and whose it is; "
            "remove the line (the lane is always on; tests switch it off in code, "
            "QuotaConfig.daily_slots)"
        )
    period: int = grievances.get("slot_period_s", int, DEFAULT_LANE_PERIOD_S)
    try:
        check_period(period)
    except InvalidEnvelope as exc:
        raise ConfigError(f"{grievances.where('slot_period_s')} = {period}: {exc}") from exc
    if period > DEFAULT_LANE_PERIOD_S:
        raise ConfigError(
            f"{grievances.where('slot_period_s')} = {period} is refused: a longer lane period "
            f"would delay every grievance report; choose {DEFAULT_LANE_PERIOD_S} s (six hours) "
            "or a shorter divisor of a day, or remove the line"
        )
    grievances.finish()
    return QuotaConfig(crew_text, reserve, slot_bytes, daily_slots, period)


def _read_latency(table: _Table) -> dict[str, int]:
    latency = dict(DEFAULT_LATENCY_MINUTES)
    for kind in DEFAULT_LATENCY_MINUTES:
        value: int = table.get(kind, int, latency[kind])
        if value < 0:
            raise ConfigError(f"{table.where(kind)} must be zero or more minutes, not {value}")
        latency[kind] = value
    table.finish()
    if latency["sos"] > MAX_SOS_LATENCY_MINUTES:
        raise ConfigError(
            f"{table.where('sos')} = {latency['sos']} is refused: an SOS goes out within "
            f"{MAX_SOS_LATENCY_MINUTES} minutes; remove the line"
        )
    if latency["grievance"] > MAX_GRIEVANCE_LATENCY_MINUTES:
        raise ConfigError(
            f"{table.where('grievance')} = {latency['grievance']} is refused: grievance reports "
            f"may not wait longer than {MAX_GRIEVANCE_LATENCY_MINUTES} minutes (a day) once "
            "their lane period ends; lower it or remove the line"
        )
    return latency


def _read_unions(source: str, raw: object, *, require_union: bool) -> tuple[UnionConfig, ...]:
    if raw is None and not require_union:
        return ()
    if not isinstance(raw, list) or (not raw and require_union):
        raise ConfigError(
            f"{source}: [[unions]] must list at least one union that receives grievance "
            "reports (id, name, public_key, languages); grievances cannot be turned off. "
            "Add the crew's union from its card: vessel-relay ship union add --card "
            f"union-card.json -c {source}"
        )
    unions: list[UnionConfig] = []
    for index, item in enumerate(raw):
        table = _Table(source, f"unions[{index}]", item)
        union_id = table.get("id", int, fix="a small number that names the union on the link")
        if not 0 < union_id < 2**16:
            raise ConfigError(f"{table.where('id')} must be from 1 to 65535, not {union_id}")
        name = table.get("name", str, fix='e.g. name = "Fishers\' Rights Network"')
        key_hex = table.get("public_key", str, fix="the union's X25519 public key, 64 hex digits")
        key = _hex_key(table.where("public_key"), key_hex, "union's X25519 public key")
        try:
            nacl.public.PublicKey(key)
        except Exception as exc:
            raise ConfigError(f"{table.where('public_key')} is not an X25519 key") from exc
        codes = table.get("languages", list, ["eng"])
        try:
            languages = tuple(Language.from_code(str(code)) for code in codes)
        except ValueError as exc:
            raise ConfigError(f"{table.where('languages')}: {exc}") from None
        table.finish()
        if any(union.union_id == union_id for union in unions):
            raise ConfigError(f"{table.where('id')}: union id {union_id} is listed twice")
        unions.append(UnionConfig(union_id, name, key, languages))
    return tuple(unions)


def _read_intake(table: _Table, base: Path) -> IntakeConfig:
    cert = table.get("tls_cert", str, None)
    key = table.get("tls_key", str, None)
    if (cert is None) != (key is None):
        raise ConfigError(
            f"{table.where('tls_cert')}: give both intake.tls_cert and intake.tls_key, or "
            "neither (a self-signed pair is made at ship init)"
        )
    intake = IntakeConfig(
        smtp_host=table.get("smtp_host", str, "127.0.0.1"),
        smtp_port=_port(table, "smtp_port", 2525),
        tls_cert_path=_path(base, cert) if cert else None,
        tls_key_path=_path(base, key) if key else None,
        http_host=table.get("http_host", str, "127.0.0.1"),
        http_port=_port(table, "http_port", 8080),
    )
    table.finish()
    return intake


_TOP_LEVEL = (
    "vessel",
    "shore",
    "link",
    "quota",
    "grievances",
    "latency_minutes",
    "time",
    "unions",
    "data",
    "intake",
    "voice",
    "sbd",
    "port",
)


def _read_port(table: _Table) -> PortConfig | None:
    if not table.raw:
        return None
    url = table.get("broker", str, fix='the broker as reached in port, e.g. "mqtt://10.8.0.1:1883"')
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.username:
        raise ConfigError(
            f"{table.where('broker')} = {url!r} is not a broker URL; write "
            '"mqtt://HOST:PORT" or "mqtts://HOST:PORT" (no credentials in it)'
        )
    interface = table.get("interface", str, fix='the 4G or Wi-Fi interface, e.g. "wwan0"')
    if (
        not interface
        or len(interface) > 15
        or not all(c.isalnum() or c in "._-" for c in interface)
    ):
        raise ConfigError(f"{table.where('interface')} = {interface!r} is not an interface name")
    table.finish()
    return PortConfig(url, interface)


def _read_sbd(table: _Table) -> SbdConfig | None:
    if not table.raw:
        return None
    for key, why in _FORBIDDEN_SBD_KEYS.items():
        if key in table.raw:
            raise ConfigError(
                f"{table.where(key)} is refused: {why}. Remove this line; pause the main link "
                "with [link] paused = true instead"
            )
    device = table.get("device", str, fix='the modem\'s serial port, e.g. device = "/dev/ttyUSB0"')
    after = _positive(table, "after_down_minutes", DEFAULT_SBD_AFTER_DOWN_MINUTES)
    if after > MAX_SBD_AFTER_DOWN_MINUTES:
        raise ConfigError(
            f"{table.where('after_down_minutes')} = {after} is refused: SOS and grievance "
            f"reports may not wait more than {MAX_SBD_AFTER_DOWN_MINUTES} minutes for a main "
            "link that is down; lower it or remove the line"
        )
    family_after = table.get("family_after_minutes", int, None)
    if family_after is not None and family_after <= 0:
        raise ConfigError(
            f"{table.where('family_after_minutes')} must be above zero, not {family_after}; "
            "remove the line to keep family messages off SBD"
        )
    table.finish()
    return SbdConfig(device, after, family_after)


def _read_voice(table: _Table) -> VoiceConfig:
    max_seconds = table.get("max_seconds", int, DEFAULT_VOICE_MAX_SECONDS)
    longest = MAX_VOICE_NOTE_MS // 1000
    if not 1 <= max_seconds <= longest:
        raise ConfigError(
            f"{table.where('max_seconds')} = {max_seconds} is not from 1 to {longest} seconds"
        )
    label = table.get("mode", str, DEFAULT_VOICE_MODE.label)
    try:
        mode = VoiceMode.from_label(label)
    except ValueError as exc:
        raise ConfigError(f"{table.where('mode')}: {exc}") from None
    table.finish()
    return VoiceConfig(max_seconds=max_seconds, mode=mode)


def parse_config(
    document: Mapping[str, Any],
    *,
    source: str,
    base: Path,
    allow_demo_keys: bool = False,
    require_union: bool = True,
) -> ShipConfig:
    """Validate a parsed TOML document; ``base`` is where relative paths start.

    ``allow_demo_keys``: accept the demo's published keys (the demo and tests only).
    ``require_union``: refuse a file without ``[[unions]]`` (the agent needs one; the
    owner's crew commands do not).
    """
    unknown = sorted(set(document) - set(_TOP_LEVEL))
    if unknown:
        if unknown[0] in _FORBIDDEN_GRIEVANCE_KEYS:
            raise ConfigError(
                f"{source}: {unknown[0]} is refused: {_FORBIDDEN_GRIEVANCE_KEYS[unknown[0]]}"
            )
        raise ConfigError(
            f"{source}: [{unknown[0]}] is not a known section; known: {', '.join(_TOP_LEVEL)}"
        )

    def table(name: str, required: bool = False) -> _Table:
        if required and name not in document:
            raise ConfigError(f"{source}: the [{name}] section is missing")
        return _Table(source, name, document.get(name, {}))

    vessel = _read_vessel(table("vessel", required=True), base)
    shore = _read_shore(table("shore", required=True), base)
    link = _read_link(table("link"))
    quota = _read_quota(table("quota"), table("grievances"))
    if link.monthly_budget_bytes < quota.grievance_reserve_bytes:
        raise ConfigError(
            f"{source}: link.monthly_budget_bytes ({link.monthly_budget_bytes}) is below the "
            f"grievance reserve ({quota.grievance_reserve_bytes}); raise the budget"
        )
    latency = _read_latency(table("latency_minutes"))
    time_table = table("time")
    zone_name = time_table.get("zone", str, "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{time_table.where('zone')} = {zone_name!r} is not a time zone; "
            'write an IANA name such as "Asia/Bangkok"'
        ) from None
    time_table.finish()
    unions = _read_unions(source, document.get("unions"), require_union=require_union)
    data_table = table("data")
    data_dir = _path(base, data_table.get("directory", str, "data"))
    data_table.finish()
    intake = _read_intake(table("intake"), base)
    voice = _read_voice(table("voice"))
    sbd = _read_sbd(table("sbd"))
    port = _read_port(table("port"))
    if not allow_demo_keys:
        _refuse_demo_keys(source, vessel, shore, unions)
    return ShipConfig(
        vessel=vessel,
        shore=shore,
        link=link,
        quota=quota,
        latency_minutes=latency,
        time_zone=zone,
        unions=unions,
        data_dir=data_dir,
        intake=intake,
        source=source,
        voice=voice,
        sbd=sbd,
        port=port,
    )


def _refuse_demo_keys(
    source: str, vessel: VesselConfig, shore: ShoreConfig, unions: tuple[UnionConfig, ...]
) -> None:
    """Refuse the demo's published keys: their private halves are known to everyone."""
    name = published_key_name(bytes.fromhex(shore.public_key_hex))
    if name is not None:
        raise ConfigError(
            f"{source}: shore.public_key is {name}, whose private half is published with "
            "vessel-relay: anyone could pose as the shore to this vessel. Write the real "
            "shore's public key (printed by 'vessel-relay shore init' on the relay); demo "
            "keys run only inside 'vessel-relay demo'"
        )
    for index, union in enumerate(unions):
        name = published_key_name(union.public_key)
        if name is not None:
            raise ConfigError(
                f"{source}: unions[{index}].public_key ({union.name!r}) is {name}, whose "
                "private half is published with vessel-relay: anyone could open the grievance "
                "reports sealed to it. Remove that [[unions]] table and add the crew's real "
                f"union from its card: vessel-relay ship union add --card union-card.json -c "
                f"{source}"
            )
    name = signing_key_file_name(vessel.signing_key_path)
    if name is not None:
        path = vessel.signing_key_path
        raise ConfigError(
            f"{source}: vessel.signing_key {path} holds {name}, whose private half is "
            "published with vessel-relay: anyone could sign batches as this vessel. Move it "
            f"away, run 'vessel-relay ship keygen -o {path}' and register the new public key "
            "with the shore ('vessel-relay shore vessel rotate-key')"
        )


def load_config(
    path: Path, *, allow_demo_keys: bool = False, require_union: bool = True
) -> ShipConfig:
    """Read and validate the TOML file at ``path``; raise :class:`ConfigError` naming the fix.

    The keywords are :func:`parse_config`'s.
    """
    document = _read_document(path)
    return parse_config(
        document,
        source=str(path),
        base=path.resolve().parent,
        allow_demo_keys=allow_demo_keys,
        require_union=require_union,
    )


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; run 'vessel-relay ship init --data DIR' to make one"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


# --- writing a config ---------------------------------------------------------------------


def ship_document(
    data_dir: Path,
    *,
    vessel_id: int,
    name: str,
    broker: str,
    shore_public_key: str,
    unions: tuple[Mapping[str, Any], ...] = (),
) -> dict[str, Any]:
    """What ``ship init`` writes: the given vessel, shore and unions, the rest defaults.

    No key is made up here: the shore's key and each union's key are the ones given.
    """
    document: dict[str, Any] = {
        "vessel": {"id": vessel_id, "name": name, "signing_key": "vessel.key"},
        "shore": {"broker": broker, "public_key": shore_public_key, "mqtt_version": "5"},
        "link": {"profile": "iridium-certus", "monthly_budget_bytes": 40_000_000},
        "quota": {"crew_text_bytes": DEFAULT_CREW_TEXT_BYTES},
        "grievances": {"reserve_bytes": DEFAULT_GRIEVANCE_RESERVE_BYTES},
        "latency_minutes": dict(DEFAULT_LATENCY_MINUTES),
        "time": {"zone": "Asia/Bangkok"},
    }
    if unions:
        document["unions"] = [dict(union) for union in unions]
    document["data"] = {"directory": str(data_dir)}
    document["intake"] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": 2525,
        "http_host": "127.0.0.1",
        "http_port": 8080,
    }
    return document


def union_table(
    union_id: int, name: str, public_key: bytes, languages: tuple[str, ...] = ("eng",)
) -> dict[str, Any]:
    """One ``[[unions]]`` table (checked when the file is read back)."""
    return {
        "id": union_id,
        "name": name,
        "public_key": public_key.hex(),
        "languages": list(languages or ("eng",)),
    }


def union_fingerprint(union: UnionConfig) -> str:
    """The fingerprint of the union's report key, to compare with the union's printed card."""
    return fingerprint(union.public_key)


def add_union(path: Path, table: Mapping[str, Any]) -> ShipConfig:
    """Append a ``[[unions]]`` table to the config file at ``path`` (comments are kept).

    The file with the new table is validated (demo keys refused, ids unique) before it
    replaces the old one atomically; on any error the file is unchanged.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; run 'vessel-relay ship init --data DIR' to make one"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from exc
    document = _read_document(path)
    if "unions" in document and not (
        isinstance(document["unions"], list)
        and all(isinstance(item, dict) for item in document["unions"])
    ):
        raise ConfigError(f"{path}: unions must be [[unions]] tables to add one")
    separator = "" if text.endswith("\n") or not text else "\n"
    updated = text + separator + "\n" + to_toml({"unions": [dict(table)]})
    try:
        new_document = tomllib.loads(updated)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: the union cannot be appended ({exc}); write its [[unions]] table by hand"
        ) from exc
    config = parse_config(new_document, source=str(path), base=path.resolve().parent)
    _replace_file(path, updated)
    return config


def _replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: temporary file, fsync, rename, fsync the folder."""
    temporary = path.with_name(path.name + ".tmp")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_new_config(path: Path, document: Mapping[str, Any]) -> None:
    """Write a new config file (refuses to overwrite one), durably."""
    if path.exists():
        raise ConfigError(f"{path} already exists; edit it, or move it away")
    _replace_file(path, to_toml(document))


def to_toml(document: Mapping[str, Any]) -> str:
    """A config document (tables of strings, numbers and lists) as TOML text (tomli-w:
    every string quoted and escaped, so any name reads back as it was given)."""
    return tomli_w.dumps(document)
