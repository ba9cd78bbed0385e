"""Demo set-up: the files a shore relay and its vessels need, written into one directory.

Nothing runs here; :mod:`vessel_relay.demo.stack` (in one process) and the end-to-end
tests (agent and relay as separate processes) start what these files describe::

    WORKDIR/relay/relay.toml, shore.key, reply.key, relay.db   (vessel registered)
    WORKDIR/vessel-N/ship.toml, vessel.key, outbox.sqlite3     (crew and contacts added)
    WORKDIR/vessel-N/tuning.json                               (link + scheduler timing)

``tuning.json`` holds what the TOML files cannot say (the scheduler's minimum gap and
idle poll, the link's ack wait): a demo must not wait six hours for a "latency due"
session, nor twelve hours for the poll that brings the delivery receipts down.
Demo keys only: the shore key is the public demo seed of :mod:`shipboard.config`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.config import (
    DEMO_SHORE_SEED,
    ShipConfig,
    default_document,
    load_config,
    to_toml,
)
from shipboard.crew import CrewRegister
from shipboard.outbox import Outbox
from shipboard.profiles import profile_named
from shipboard.scheduler import SchedulerSettings
from shore.store import VesselInfo
from shore.store_sqlite import SqliteStore
from vessel_relay.keyfiles import new_signing_key, write_secret

logger = logging.getLogger(__name__)

RELAY_WORKER = 1
#: The demo vessels' slot period (a real vessel keeps the default day): a grievance filed in
#: the demo leaves within this many seconds, with every crew member's cover slot.
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


def numbered_crew(count: int, vessel_id: int) -> tuple[DemoCrewMember, ...]:
    """``count`` crew members for vessel ``vessel_id`` (the chaos suite's larger crews)."""
    languages = (Language.MYA, Language.THA, Language.VIE, Language.IND, Language.ENG)
    return tuple(
        DemoCrewMember(
            f"Crew {vessel_id}-{n}",
            f"SB-{vessel_id:03d}-{n:04d}",
            "MM",
            languages[n % len(languages)],
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
    #: The daily grievance slots' period, for agent and relay alike (a demo day is short).
    slot_period_s: int = DEMO_SLOT_PERIOD_S
    #: How long a silence ends a session's downlink drain (None: from the link profile,
    #: four one-way latencies plus half a second; a time-compressed run shortens it).
    downlink_quiet_s: float | None = None

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
        return {"link_settings": settings, "scheduler_settings": scheduler}


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
    crew: tuple[DemoCrewMember, ...],
    http_port: int,
    smtp_port: int,
    tuning: Tuning,
    username: str | None = None,
) -> VesselSetup:
    """Write ship.toml, a vessel key and tuning.json; register the crew and contacts."""
    data_dir.mkdir(parents=True, exist_ok=True)
    document = default_document(data_dir)
    document["vessel"].update(id=vessel_id, name=f"Demo Vessel {vessel_id}")
    document["shore"].update(broker=broker_url, mqtt_version=mqtt_version)
    if username is not None:
        document["shore"].update(username=username, password=secrets.token_hex(8))
    document["link"]["profile"] = tuning.profile
    document["latency_minutes"] = {"sos": 0, "grievance": 0, "message": 0}
    # Daily slots are on by default; a demo day is short: a slot every tuning.slot_period_s.
    document["grievances"]["slot_period_s"] = tuning.slot_period_s
    document["intake"].update(http_port=http_port, smtp_port=smtp_port)
    config_path = data_dir / "ship.toml"
    config_path.write_text(to_toml(document), encoding="utf-8")
    config = load_config(config_path)
    key = new_signing_key(config.vessel.signing_key_path)
    tuning.save(data_dir / "tuning.json")
    logins: list[CrewLogin] = []
    outbox = Outbox.open(config.database_path, vessel_id)
    try:
        register = CrewRegister(outbox)
        now = time.time()
        for person in crew:
            member, pin = register.add(
                name=person.name,
                document=person.document,
                nationality=person.nationality,
                language=person.language,
                now=now,
            )
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


@dataclass(frozen=True, slots=True)
class RelaySetup:
    """A prepared relay: its config file and data directory."""

    data_dir: Path
    config_path: Path


def prepare_relay(
    data_dir: Path,
    *,
    broker_url: str,
    mqtt_version: str,
    smtp_host: str,
    smtp_port: int,
    fast: bool,
    slot_period_s: int = DEMO_SLOT_PERIOD_S,
) -> RelaySetup:
    """Write relay.toml (SQLite store, delivery to the SMTP sink) and the relay's keys."""
    data_dir.mkdir(parents=True, exist_ok=True)
    write_secret(data_dir / "shore.key", SigningKey.from_seed(DEMO_SHORE_SEED).seed)
    write_secret(data_dir / "reply.key", os.urandom(32))
    tick_s, resend_s = (0.2, 3.0) if fast else (1.0, 10.0)
    config_path = data_dir / "relay.toml"
    config_path.write_text(
        "# vessel-relay demo relay (demo keys: not for real use)\n"
        f'[relay]\ndata_dir = "{data_dir}"\nworker = {RELAY_WORKER}\nshore_key = "shore.key"\n\n'
        '[store]\nbackend = "sqlite"\npath = "relay.db"\n'
        # A relay killed mid-send holds its claims until the lease ends: keep it short
        # here (the local sink answers in milliseconds); production keeps the default.
        f"lease_s = {10.0 if fast else 30.0}\n\n"
        f'[mqtt]\nurl = "{broker_url}"\nprotocol = "{mqtt_version}"\n'
        "keepalive_s = 30\npublish_timeout_s = 20.0\nreconnect_max_s = 2.0\n\n"
        f"[downlink]\ntick_s = {tick_s}\nresend_after_s = {resend_s}\n"
        f"resend_max_s = {resend_s * 4}\nslot_period_s = {slot_period_s}\n\n"
        "[delivery]\nenabled = true\nworkers = 1\n"
        f'smtp_host = "{smtp_host}"\nsmtp_port = {smtp_port}\n'
        'relay_domain = "relay.demo.example"\nfrom_address = "relay@relay.demo.example"\n'
        'reply_domain = "reply.demo.example"\nreply_key = "reply.key"\n',
        encoding="utf-8",
    )
    return RelaySetup(data_dir, config_path)


async def register_vessels(relay: RelaySetup, vessels: list[VesselSetup]) -> None:
    """Register each vessel (and its public key) in the relay's SQLite store."""
    store = await SqliteStore.open(relay.data_dir / "relay.db")
    try:
        for vessel in vessels:
            info = VesselInfo(
                f"Demo Vessel {vessel.vessel_id}",
                "TH",
                f"DEMO-{vessel.vessel_id:04d}",
                "Demo Fishing Co",
                (1,),
            )
            await store.add_vessel(
                info, bytes.fromhex(vessel.public_key_hex), time.time() - 60, vessel.vessel_id
            )
    finally:
        await store.close()


def register_vessels_sync(relay: RelaySetup, vessels: list[VesselSetup]) -> None:
    """:func:`register_vessels` for callers outside an event loop."""
    asyncio.run(register_vessels(relay, vessels))
