"""Demo set-up: the files a shore relay, a union and its vessels need, in one directory.

Nothing runs here; :mod:`vessel_relay.demo.stack` (in one process) and the end-to-end
tests (agent and relay as separate processes) start what these files describe::

    WORKDIR/relay/relay.toml, shore.key, reply.key, relay.db   (vessel registered)
    WORKDIR/union/union.toml, box.key, sign.key, union-card.json
    WORKDIR/vessel-N/ship.toml, vessel.key, outbox.sqlite3     (crew and contacts added)
    WORKDIR/vessel-N/tuning.json                               (link + scheduler timing)

``tuning.json`` holds what the TOML files cannot say (the scheduler's minimum gap and
idle poll, the link's ack wait): a demo must not wait six hours for a "latency due"
session, nor twelve hours for the poll that brings the delivery receipts down.

Keys: every key is made fresh in the work directory (none is one of the published keys of
:mod:`vessel_relay.demo.keys`), so ``ship run`` and ``shore run`` accept these files. Run
again on the same directory, each ``prepare_*`` keeps the keys, the stores and the crew it
finds (crew members get new PINs, since PINs are never kept) and rewrites only the config
files, whose ports change from run to run. :func:`claim_workdir` makes sure a directory
given to ``vessel-relay demo`` is the demo's own before anything is written into it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from common.codebooks import default_codebook
from common.exits import UsageError
from common.keyfiles import new_signing_key, read_secret, write_secret
from protocol.languages import Language
from protocol.signing import SigningKey
from protocol.union_card import UnionCard
from shipboard.config import (
    PortConfig,
    ShipConfig,
    load_config,
    ship_document,
    to_toml,
    union_table,
)
from shipboard.crew import CrewRegister
from shipboard.outbox import Outbox
from shipboard.profiles import profile_named
from shipboard.scheduler import SchedulerSettings
from shore.store import SqliteStore, VesselInfo
from shore.union.inbox import UnionInbox
from shore.union.keys import SETTINGS as UNION_SETTINGS
from shore.union.keys import init_union, load_union

if TYPE_CHECKING:
    from shipboard.links import PortCarrier
    from shipboard.transport import LinkSettings

logger = logging.getLogger(__name__)

RELAY_WORKER = 1
#: The file that marks a directory as a demo's work directory (see :func:`claim_workdir`).
MARKER = "vessel-relay-demo.json"
#: The demo union's id (the vessels' [[unions]] id and the relay registry's union).
DEMO_UNION_ID = 1
#: The demo vessels' grievance lane period (a real vessel keeps six hours): a grievance
#: filed in the demo leaves one lane block every this many seconds, report or cover.
DEMO_SLOT_PERIOD_S = 20


@dataclass(frozen=True, slots=True)
class DemoCrewMember:
    """A demo crew member and their one family contact (an e-mail address)."""

    name: str
    document: str
    nationality: str
    language: Language
    family_address: str
    family_name: str


#: A small crew in several languages (the demo's vessel).
DEMO_CREW: tuple[DemoCrewMember, ...] = (
    DemoCrewMember(
        "Aung Min", "SB-0012345", "MM", Language.MYA, "daw.khin@family.example", "Mother"
    ),
    DemoCrewMember("Somchai Dee", "TH-P-88213", "TH", Language.THA, "malee@family.example", "Wife"),
    DemoCrewMember(
        "Nguyen Van An", "VN-SB-4471", "VN", Language.VIE, "me.an@family.example", "Mother"
    ),
    DemoCrewMember(
        "Budi Santoso", "ID-SB-9902", "ID", Language.IND, "sari@family.example", "Sister"
    ),
    DemoCrewMember(
        "Sok Dara", "KH-WP-1203", "KH", Language.KHM, "sok.family@family.example", "Father"
    ),
)


#: The languages ``numbered_crew`` gives its crew members in turn, unless told otherwise.
NUMBERED_CREW_LANGUAGES = (Language.MYA, Language.THA, Language.VIE, Language.IND, Language.ENG)


def numbered_crew(
    count: int, vessel_id: int, languages: Sequence[Language] | None = None
) -> tuple[DemoCrewMember, ...]:
    """``count`` crew members for vessel ``vessel_id`` (the chaos suite's larger crews).

    ``languages``: crew member ``n``'s language is ``languages[n - 1]`` (a benchmark whose
    crew write in known languages: the agent tags, and compresses, each message in its
    writer's language); by default :data:`NUMBERED_CREW_LANGUAGES` in turn."""
    if languages is not None and len(languages) < count:
        raise ValueError(f"{count} crew members need {count} languages, not {len(languages)}")
    return tuple(
        DemoCrewMember(
            f"Crew {vessel_id}-{n}",
            f"SB-{vessel_id:03d}-{n:04d}",
            "MM",
            NUMBERED_CREW_LANGUAGES[n % len(NUMBERED_CREW_LANGUAGES)]
            if languages is None
            else languages[n - 1],
            f"family.{vessel_id}.{n}@family.example",
            "Family",
        )
        for n in range(1, count + 1)
    )


@dataclass(frozen=True, slots=True)
class Tuning:
    """Timing that the TOML files do not hold (see the module docstring)."""

    #: Shipboard link profile name (billing); its idle poll is replaced by ``idle_poll_s``.
    profile: str = "iridium-certus"
    idle_poll_s: float = 5.0
    min_gap_s: float = 1.0
    resend_after_s: float = 10.0
    ack_wait_s: float = 10.0
    min_timeout_s: float = 10.0
    latency_s: dict[str, float] = field(
        default_factory=lambda: {"sos": 0.0, "grievance": 0.0, "message": 0.0}
    )
    #: The grievance lane's period, for agent and relay alike (a demo day is short).
    slot_period_s: int = DEMO_SLOT_PERIOD_S
    #: The relay's downlink lane period (``[downlink] slot_period_s``); None: the same as
    #: ``slot_period_s`` (a benchmark keeps the defaults' ratio: a day down, six hours up).
    down_period_s: int | None = None
    #: How long a session's TLS ticket is offered again, on the agent's clock (None: as
    #: long as the broker's ticket lifetime; a time-compressed run divides that lifetime
    #: by its compression, the broker's clock being real).
    tls_ticket_max_age_s: float | None = None
    #: How long a silence ends a session's downlink drain (None: from the link profile,
    #: four one-way latencies plus half a second; a time-compressed run shortens it).
    downlink_quiet_s: float | None = None
    #: The main link counts as down after this many seconds of failed sessions (None:
    #: ``[sbd] after_down_minutes``); a time-compressed run divides it.
    after_down_s: float | None = None
    #: The link loop's reconnect backoff after failed sessions (None: ``run_link``'s, 15 s
    #: doubling up to 30 minutes on the main link, 5 minutes on SBD).
    reconnect_base_s: float | None = None
    reconnect_cap_s: float | None = None
    fallback_reconnect_cap_s: float | None = None
    #: An SBD session's downlink drain quiet time and wait for the shore's BatchAck, and
    #: the SBD link's mailbox check interval (None: ``run_link``'s and ``SbdCarrier``'s).
    sbd_quiet_s: float | None = None
    sbd_ack_wait_s: float | None = None
    sbd_mailbox_poll_s: float | None = None
    #: The port link's idle poll (None: ``shipboard.links.PORT_4G``'s five minutes).
    port_idle_poll_s: float | None = None
    #: Where the port carrier reads ``[port] interface``'s operstate (None: the system's
    #: ``/sys/class/net``): a directory ``NAME/operstate`` whose contents a benchmark
    #: switches between "up" and "down" to bring the vessel into port and out again.
    port_sysfs: str | None = None

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Tuning:
        """Read what :meth:`save` wrote."""
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cls(**raw)

    def link_options(self, config: ShipConfig) -> dict[str, object]:
        """Keywords for ``shipboard.link.run_link`` (through ``run_agent(link_options=)``)."""
        from shipboard.link import LinkSettings

        profile = replace(profile_named(self.profile), idle_poll_s=self.idle_poll_s)
        settings = LinkSettings.from_config(
            config,
            profile=profile,
            ack_wait_s=self.ack_wait_s,
            min_timeout_s=self.min_timeout_s,
            downlink_quiet_s=self.downlink_quiet_s,
        )
        scheduler = SchedulerSettings(
            latency_s=dict(self.latency_s),
            min_gap_s=self.min_gap_s,
            resend_after_s=self.resend_after_s,
        )
        options: dict[str, object] = {"link_settings": settings, "scheduler_settings": scheduler}
        tls_context = None
        if config.shore.tls and self.tls_ticket_max_age_s is not None:
            from shipboard.mqtt_link import client_tls_context

            tls_context = client_tls_context(
                config.shore.ca_file,
                config.shore.tls_minimum,
                ticket_max_age_s=self.tls_ticket_max_age_s,
            )
            options["tls_context"] = tls_context
        for name in ("reconnect_base_s", "reconnect_cap_s", "fallback_reconnect_cap_s"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        if self.after_down_s is not None:
            from shipboard.links import MqttCarrier

            options["main"] = MqttCarrier(
                settings,
                tls_context=tls_context,
                paused=lambda: config.link.paused,
                after_down_s=self.after_down_s,
            )
        if config.sbd is not None:
            options.update(self._sbd_options(config.sbd.device, settings))
        if config.port is not None and self.port_sysfs is not None:
            options["port"] = self._port_carrier(config, config.port, Path(self.port_sysfs))
        return options

    def _sbd_options(self, device: str, settings: LinkSettings) -> dict[str, object]:
        """``fallback`` and ``fallback_settings`` for ``[sbd] device`` with this tuning's
        waits."""
        from shipboard.links import IRIDIUM_SBD, SbdCarrier
        from shipboard.sbd_modem import SbdModem

        options: dict[str, object] = {}
        if self.sbd_mailbox_poll_s is not None:
            options["fallback"] = SbdCarrier(
                lambda: SbdModem(device), mailbox_poll_s=self.sbd_mailbox_poll_s
            )
        if self.sbd_quiet_s is not None or self.sbd_ack_wait_s is not None:
            options["fallback_settings"] = replace(
                settings,
                profile=IRIDIUM_SBD,
                downlink_quiet_s=5.0 if self.sbd_quiet_s is None else self.sbd_quiet_s,
                ack_wait_s=180.0 if self.sbd_ack_wait_s is None else self.sbd_ack_wait_s,
            )
        return options

    def _port_carrier(self, config: ShipConfig, port: PortConfig, sysfs: Path) -> PortCarrier:
        """The port carrier of ``[port]``, its reach read under ``sysfs``."""
        from shipboard.link import LinkSettings
        from shipboard.links import PORT_4G, PortCarrier, interface_up
        from shipboard.mqtt_link import client_tls_context

        profile = PORT_4G
        if self.port_idle_poll_s is not None:
            profile = replace(PORT_4G, idle_poll_s=self.port_idle_poll_s)
        settings = LinkSettings.from_config(
            config,
            host=port.host,
            port=port.port,
            profile=profile,
            ack_wait_s=self.ack_wait_s,
            min_timeout_s=self.min_timeout_s,
            downlink_quiet_s=self.downlink_quiet_s,
        )
        tls = None
        if port.tls:
            tls = client_tls_context(
                config.shore.ca_file,
                config.shore.tls_minimum,
                ticket_max_age_s=self.tls_ticket_max_age_s,
            )
        interface = port.interface
        return PortCarrier(settings, lambda: interface_up(interface, sysfs), tls_context=tls)


@dataclass(frozen=True, slots=True)
class CrewLogin:
    """What a crew member needs to sign in (web page or e-mail app) and their contact."""

    crew: int
    name: str
    language: str
    pin: str
    contact: int
    family_address: str


@dataclass(frozen=True, slots=True)
class VesselSetup:
    """A prepared vessel: where its files are and who is on board."""

    vessel_id: int
    data_dir: Path
    config_path: Path
    public_key_hex: str
    http_port: int
    smtp_port: int
    crew: tuple[CrewLogin, ...]


def prepare_vessel(
    data_dir: Path,
    *,
    vessel_id: int,
    broker_url: str,
    mqtt_version: str,
    shore_public_key: str,
    union: UnionCard,
    crew: tuple[DemoCrewMember, ...],
    http_port: int,
    smtp_port: int,
    tuning: Tuning,
    username: str | None = None,
    ca_file: Path | None = None,
    sbd_device: str | None = None,
    port_broker_url: str | None = None,
    port_interface: str = "vrport0",
) -> VesselSetup:
    """Write ship.toml, a vessel key and tuning.json; register the crew and contacts.

    ``shore_public_key`` is the relay's (:attr:`RelaySetup.shore_public_key`) and ``union``
    the card of the union grievances are sealed to (:func:`prepare_union`). Run again on
    the same directory, it keeps the vessel key and the outbox and gives the crew new PINs.
    ``sbd_device``: the SBD modem's serial port (``[sbd] device``; an emulated modem's
    pty); ``port_broker_url``: the broker as reached in port (``[port] broker``, with
    ``port_interface`` as its interface).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    languages = tuple(language.code for language in union.languages) or ("eng",)
    document = ship_document(
        data_dir,
        vessel_id=vessel_id,
        name=f"Demo Vessel {vessel_id}",
        broker=broker_url,
        shore_public_key=shore_public_key,
        unions=(union_table(union.union_id, union.name, union.report_key, languages),),
    )
    document["shore"]["mqtt_version"] = mqtt_version
    document["shore"]["relay_reads_subjects"] = True  # the demo's relay is of this release
    if ca_file is not None:  # mqtts:// to a broker certified by the demo's private CA
        document["shore"]["ca_file"] = str(ca_file)
    if username is not None:
        document["shore"].update(username=username, password=secrets.token_hex(8))
    document["link"]["profile"] = tuning.profile
    document["latency_minutes"] = {"sos": 0, "grievance": 0, "message": 0}
    # The grievance lane is always on; a demo day is short: a block every
    # tuning.slot_period_s.
    document["grievances"]["slot_period_s"] = tuning.slot_period_s
    document["intake"].update(http_port=http_port, smtp_port=smtp_port)
    if sbd_device is not None:
        document["sbd"] = {"device": sbd_device}
    if port_broker_url is not None:
        document["port"] = {"broker": port_broker_url, "interface": port_interface}
    config_path = data_dir / "ship.toml"
    config_path.write_text(to_toml(document), encoding="utf-8")
    config = load_config(config_path)
    key_path = config.vessel.signing_key_path
    if key_path.exists():
        key = SigningKey.from_seed(read_secret(key_path))
    else:
        key = new_signing_key(key_path)
    tuning.save(data_dir / "tuning.json")
    outbox = Outbox.open(config.database_path, vessel_id)
    try:
        logins = _register_crew(CrewRegister(outbox), crew)
    finally:
        outbox.close()
    return VesselSetup(
        vessel_id,
        data_dir,
        config_path,
        key.verify_key.hex(),
        http_port,
        smtp_port,
        tuple(logins),
    )


def _register_crew(register: CrewRegister, crew: tuple[DemoCrewMember, ...]) -> list[CrewLogin]:
    """Add each demo crew member and contact, or (a restart) find them and renew the PIN."""
    now = time.time()
    on_board = {member.document: member for member in register.members()}
    logins: list[CrewLogin] = []
    for person in crew:
        known = on_board.get(person.document)
        if known is None:
            member, pin = register.add(
                name=person.name,
                document=person.document,
                nationality=person.nationality,
                language=person.language,
                now=now,
            )
            contact = None
        else:
            member, renewed = register.update(known.crew, reset_pin=True)
            assert renewed is not None
            pin = renewed
            contact = next(
                (c for c in register.contacts(member.crew) if c.address == person.family_address),
                None,
            )
        if contact is None:
            contact = register.add_contact(
                member.crew,
                channel="email",
                address=person.family_address,
                name=person.family_name,
                language=person.language,
                now=now,
            )
        logins.append(
            CrewLogin(
                member.crew,
                person.name,
                person.language.code,
                pin,
                contact.contact,
                person.family_address,
            )
        )
    return logins


#: The demo union's store passphrase, a file (0600) in the demo's work directory beside
#: the union's directory, so the demo runs unattended; after it, ``union fetch`` reads it
#: from ``VESSEL_RELAY_UNION_PASSPHRASE_FILE``.
UNION_PASSPHRASE = "union-passphrase.txt"


def union_passphrase_path(directory: Path) -> Path:
    """Where the demo keeps the passphrase of the union in ``directory``."""
    return directory.parent / UNION_PASSPHRASE


def _union_passphrase(path: Path) -> str:
    """The demo union's passphrase: made (random, 0600) the first time, then read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").splitlines()[0]
    passphrase = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(passphrase + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return passphrase


def prepare_union(directory: Path, *, relay_url: str = "http://127.0.0.1:8040") -> UnionCard:
    """The demo union's keys, card and store in ``directory`` (kept if they are there
    already); its store encrypted at rest under the passphrase in
    :func:`union_passphrase_path` (a store of an older demo run is encrypted now)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    passphrase = _union_passphrase(union_passphrase_path(directory))
    if (directory / UNION_SETTINGS).exists():
        identity = load_union(directory)
    else:
        identity = init_union(
            directory,
            DEMO_UNION_ID,
            "Demo Union",
            relay_url,
            (Language.ENG, Language.THA, Language.MYA),
        )
    inbox = UnionInbox(identity, default_codebook())
    try:
        if not inbox.encrypted:
            inbox.encrypt_store(passphrase)
    finally:
        inbox.close()
    return identity.card


@dataclass(frozen=True, slots=True)
class RelaySbd:
    """The relay's SBD door for a demo or benchmark (``[sbd]`` in relay.toml): where its
    MO webhook listens, the fake provider's MT API and account, each modem's vessel."""

    webhook_port: int
    provider_url: str
    username: str
    password: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    #: IMEI (15 digits) -> vessel id.
    vessels: dict[str, int] = field(default_factory=dict)
    downlink_window_s: float = 3600.0


def _write_private(path: Path, text: str) -> None:
    """``text`` in a 0600 file (replaced if there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


@dataclass(frozen=True, slots=True)
class RelaySetup:
    """A prepared relay: its config file, data directory and public key (hex)."""

    data_dir: Path
    config_path: Path
    shore_public_key: str


def prepare_relay(
    data_dir: Path,
    *,
    broker_url: str,
    mqtt_version: str,
    smtp_host: str,
    smtp_port: int,
    fast: bool,
    slot_period_s: int = DEMO_SLOT_PERIOD_S,
    sbd: RelaySbd | None = None,
) -> RelaySetup:
    """Write relay.toml (SQLite store, delivery to the SMTP sink) and the relay's keys;
    with ``sbd``, the relay's ``[sbd]`` section and its two secret files.

    Run again on the same directory, it keeps the keys and the store.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = data_dir / "shore.key"
    if key_path.exists():
        shore_key = SigningKey.from_seed(read_secret(key_path))
    else:
        shore_key = new_signing_key(key_path)
    if not (data_dir / "reply.key").exists():
        write_secret(data_dir / "reply.key", os.urandom(32))
    tick_s, resend_s = (0.2, 3.0) if fast else (1.0, 10.0)
    config_path = data_dir / "relay.toml"
    document = {
        "relay": {"data_dir": str(data_dir), "worker": RELAY_WORKER, "shore_key": "shore.key"},
        # A relay killed mid-send holds its claims until the lease ends: keep it short
        # here (the local sink answers in milliseconds); production keeps the default.
        "store": {"backend": "sqlite", "path": "relay.db", "lease_s": 10.0 if fast else 30.0},
        "mqtt": {
            "url": broker_url,
            "protocol": mqtt_version,
            "keepalive_s": 30,
            "publish_timeout_s": 20.0,
            "reconnect_max_s": 2.0,
        },
        "downlink": {
            "tick_s": tick_s,
            "resend_after_s": resend_s,
            "resend_max_s": resend_s * 4,
            "slot_period_s": slot_period_s,
        },
        "delivery": {
            "enabled": True,
            "workers": 1,
            "smtp_host": smtp_host,
            "smtp_port": smtp_port,
            "relay_domain": "relay.demo.example",
            "from_address": "relay@relay.demo.example",
            "reply_domain": "reply.demo.example",
            "reply_key": "reply.key",
        },
    }
    if sbd is not None:
        for name, text in (("sbd.secret", sbd.webhook_secret), ("sbd.password", sbd.password)):
            _write_private(data_dir / name, text)
        document["sbd"] = {
            "enabled": True,
            "webhook_port": sbd.webhook_port,
            "provider_url": sbd.provider_url,
            "username": sbd.username,
            "vessels": [f"{imei}={vessel}" for imei, vessel in sorted(sbd.vessels.items())],
            "downlink_window_s": sbd.downlink_window_s,
        }
    config_path.write_text(
        "# vessel-relay demo relay, written by vessel-relay's demo (timing tuned for a demo)\n"
        + tomli_w.dumps(document),
        encoding="utf-8",
    )
    return RelaySetup(data_dir, config_path, shore_key.verify_key.hex())


async def register_vessels(relay: RelaySetup, vessels: list[VesselSetup]) -> None:
    """Register each vessel (and its public key) in the relay's SQLite store.

    A vessel registered already (a restart) keeps its registration; its key is added if
    the relay does not know it yet.
    """
    store = await SqliteStore.open(relay.data_dir / "relay.db")
    try:
        for vessel in vessels:
            key = bytes.fromhex(vessel.public_key_hex)
            known = await store.get_vessel(vessel.vessel_id)
            if known is not None:
                if key not in {k.public_key for k in known.keys}:
                    now = time.time()
                    await store.add_vessel_key(vessel.vessel_id, key, now - 60, now)
                continue
            info = VesselInfo(
                f"Demo Vessel {vessel.vessel_id}",
                "TH",
                f"DEMO-{vessel.vessel_id:04d}",
                "Demo Fishing Co",
                (DEMO_UNION_ID,),
            )
            await store.add_vessel(
                info, bytes.fromhex(vessel.public_key_hex), time.time() - 60, vessel.vessel_id
            )
    finally:
        await store.close()


def register_vessels_sync(relay: RelaySetup, vessels: list[VesselSetup]) -> None:
    """:func:`register_vessels` for callers outside an event loop."""
    asyncio.run(register_vessels(relay, vessels))


class DemoDirectoryRefused(UsageError):
    """A work directory that holds something other than a demo's files."""


def claim_workdir(workdir: Path) -> bool:
    """Make sure ``workdir`` is the demo's: new or empty (then marked), or marked before.

    Returns whether it holds an earlier run (keys and stores are then reused). Raises
    :class:`DemoDirectoryRefused` for anything else: the demo never writes into a
    directory it did not make, such as a real relay's or vessel's data directory.
    """
    marker = workdir / MARKER
    if workdir.exists() and not workdir.is_dir():
        raise DemoDirectoryRefused(f"{workdir} is not a directory; give a new or empty one")
    if marker.is_file():
        try:
            made: object = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DemoDirectoryRefused(
                f"{marker} cannot be read ({exc}); give a new directory"
            ) from exc
        if not (isinstance(made, dict) and made.get("kind") == "vessel-relay demo work directory"):
            raise DemoDirectoryRefused(f"{marker} is not the demo's marker; give a new directory")
        return True
    if workdir.exists() and any(workdir.iterdir()):
        raise DemoDirectoryRefused(
            f"{workdir} is not empty and was not made by 'vessel-relay demo' (it has no "
            f"{MARKER}); the demo does not write into it. Give a new or empty directory "
            "(a work directory of an older demo version cannot be reused: delete it)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        json.dumps({"kind": "vessel-relay demo work directory", "version": 1}) + "\n",
        encoding="utf-8",
    )
    return False
