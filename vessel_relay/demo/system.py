"""The whole system as separate processes, for the chaos suite and the benchmark.

Mosquitto, the relay (``vessel-relay shore run``) and each vessel's agent
(:mod:`vessel_relay.demo.agent_main`) are child processes that can be SIGKILLed and
restarted; each vessel reaches the broker through its own link emulator (in this
process), and the relay delivers family mail to a :class:`MaildirSink` (in this process)::

    agent 1 ─▶ link 1 ─┐
    agent 2 ─▶ link 2 ─┴▶ Mosquitto ◀─ relay ─▶ SMTP sink (Maildir)

With ``sbd``, each vessel also has an Iridium SBD modem (:class:`~vessel_relay.
sbd_emulator.ModemEmulator` on a pty, its ``[sbd] device``) whose gateway is a fake
RockBLOCK provider (:class:`shore.fake_rockblock.FakeRockBlock`, in this process) posting
MO messages to the relay's SBD webhook and taking its MT messages. With ``port_profile``,
each vessel also has a port link (``[port]``: a second link emulator to the same broker),
in reach while :meth:`Vessel.set_in_port` says so (the agent reads the interface's
operstate under the tuning's ``port_sysfs``, a directory of this run)::

    agent ─▶ pty ─▶ modem emulator ─▶ fake provider ─▶ relay's SBD webhook (MO)
                                     ◀──────────────── relay's MT sender
    agent ─▶ port link ─▶ Mosquitto

A "power cut" on an agent is a SIGKILL followed by restoring its data directory to what
was fsynced: the chaos suite starts agents with ``agent_environment`` set to preload the
power-cut shim (``tests/kit/powercut``), which keeps that durable image. Without the shim,
:func:`power_cut_files` is the weaker stand-in (it keeps unsynced writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from protocol.languages import Language
from shore.fake_rockblock import FakeRockBlock
from shore.sbd import MO_WEBHOOK_PATH
from vessel_relay import link_emulator
from vessel_relay.demo.brokers import MosquittoBroker, free_port, wait_listening
from vessel_relay.demo.setup import (
    RelaySbd,
    RelaySetup,
    Tuning,
    VesselSetup,
    numbered_crew,
    prepare_relay,
    prepare_union,
    prepare_vessel,
    register_vessels,
)
from vessel_relay.demo.sinks import MaildirSink
from vessel_relay.demo.tls import DEPLOYED_KEY_TYPE, KeyType, make_broker_tls
from vessel_relay.sbd_emulator import ModemEmulator

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Child:
    """A child process we start, kill and restart by PID, its output in a log file."""

    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to this process's environment (e.g. ``LD_PRELOAD`` for the power-cut shim)."""

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


#: The port link's interface name in the demo vessels' ``[port]``.
PORT_INTERFACE = "vrport0"


def write_operstate(sysfs: Path, interface: str, state: str) -> None:
    """Write ``sysfs/interface/operstate`` (``/sys/class/net``'s layout) atomically."""
    directory = sysfs / interface
    directory.mkdir(parents=True, exist_ok=True)
    staged = directory / "operstate.new"
    staged.write_text(state + "\n", encoding="ascii")
    os.replace(staged, directory / "operstate")


def imei_for(vessel_id: int) -> str:
    """The emulated SBD modem's IMEI for a demo vessel (15 digits)."""
    return f"300234010{vessel_id:06d}"


def power_cut_files(data_dir: Path) -> None:
    """What a power cut leaves of the outbox once the process is dead: the -shm index is
    shared memory in all but name, so it goes (SQLite rebuilds it from the WAL)."""
    for name in ("outbox.sqlite3-shm",):
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).unlink()


@dataclass
class Vessel:
    """One vessel of the system: its files, agent process and link."""

    setup: VesselSetup
    agent: Child
    link: link_emulator.LinkEmulator
    #: The emulated SBD modem (``ProcessSystem.sbd``), its IMEI at the provider.
    modem: ModemEmulator | None = None
    #: The port link (``ProcessSystem.port_profile``) and where its reach is written.
    port_link: link_emulator.LinkEmulator | None = None
    port_sysfs: Path | None = None
    port_interface: str = PORT_INTERFACE

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.setup.http_port}"

    def set_in_port(self, in_reach: bool) -> None:
        """Bring the vessel into port reach (its port interface up) or out of it, as the
        agent sees it (the interface's operstate, written whole: never half a word)."""
        if self.port_sysfs is None:
            raise RuntimeError("this vessel has no port link (ProcessSystem.port_profile)")
        write_operstate(self.port_sysfs, self.port_interface, "up" if in_reach else "down")

    def outbox_counts(self) -> dict[str, int]:
        """Crew messages home per state, read from the outbox file (read-only, beside the
        agent). Grievance-lane items are left out: the lane releases a block every period,
        report or cover, so some always wait for a session."""
        path = self.setup.data_dir / "outbox.sqlite3"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return {
                str(state): int(count)
                for state, count in db.execute(
                    "SELECT state, COUNT(*) FROM messages WHERE kind = 'message' GROUP BY state"
                )
            }
        finally:
            db.close()

    def undelivered_receipts(self) -> list[int]:
        """Messages without a "delivered" receipt in their crew member's inbox."""
        path = self.setup.data_dir / "outbox.sqlite3"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute(
                "SELECT m.message_seq FROM messages m WHERE m.kind = 'message' AND NOT EXISTS "
                "(SELECT 1 FROM inbox i WHERE i.message_seq = m.message_seq "
                "AND i.crew = m.crew AND i.kind = 'stage' AND i.stage = 'delivered')"
            ).fetchall()
            return [int(row[0]) for row in rows]
        finally:
            db.close()


@dataclass
class ProcessSystem:
    """Everything started by :meth:`start`, stopped by :meth:`stop`."""

    workdir: Path
    vessel_count: int = 2
    crew_per_vessel: int = 15
    #: Crew member ``n``'s language is ``crew_languages[n - 1]`` (None: the demo's turn of
    #: languages, ``numbered_crew``'s default).
    crew_languages: Sequence[Language] | None = None
    profile: link_emulator.LinkProfile = link_emulator.UNLIMITED
    tuning: Tuning = field(default_factory=Tuning)
    shipboard_profile: str = "iridium-certus"
    #: Vessels reach the broker over TLS, as deployed (``vessel_relay.demo.tls``); the
    #: relay stays on the plain loopback listener, as on the broker's own host.
    tls: bool = False
    tls_key_type: KeyType = DEPLOYED_KEY_TYPE
    agent_environment: Callable[[VesselSetup], Mapping[str, str]] | None = None
    """Called once per vessel after its files are prepared and before its agent first
    starts; what it returns is added to that agent's environment on every start."""
    #: Each vessel gets an emulated SBD modem and the relay its SBD door (module docstring).
    sbd: bool = False
    #: The relay's ``[sbd] downlink_window_s`` (a time-compressed run divides it).
    sbd_downlink_window_s: float = 3600.0
    #: Each vessel gets a port link shaped so, out of reach until ``set_in_port(True)``.
    port_profile: link_emulator.LinkProfile | None = None
    provider: FakeRockBlock | None = None
    broker: MosquittoBroker | None = None
    relay: Child | None = None
    relay_setup: RelaySetup | None = None
    sink: MaildirSink | None = None
    vessels: list[Vessel] = field(default_factory=list)
    _exit: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def start(self) -> None:
        work = self.workdir
        work.mkdir(parents=True, exist_ok=True)
        broker_tls = make_broker_tls(work / "tls", self.tls_key_type) if self.tls else None
        self.broker = MosquittoBroker(work / "broker", persistence=False, tls=broker_tls)
        await self.broker.start()
        self.sink = MaildirSink(work / "maildir")
        self.sink.start()
        sbd = await self._start_provider() if self.sbd else None
        self.relay_setup = prepare_relay(
            work / "relay",
            broker_url=self.broker.client_url(),
            mqtt_version="5",
            smtp_host=self.sink.host,
            smtp_port=self.sink.port,
            fast=True,
            slot_period_s=self.tuning.down_period_s or self.tuning.slot_period_s,
            sbd=sbd,
        )
        union = await asyncio.to_thread(prepare_union, work / "union")
        setups = []
        for n in range(1, self.vessel_count + 1):
            target_port = self.broker.tls_port if broker_tls is not None else self.broker.port
            link = link_emulator.LinkEmulator(
                "127.0.0.1", 0, self.broker.host, target_port, self.profile, seed=n
            )
            scheme = "mqtts" if broker_tls is not None else "mqtt"
            await self._exit.enter_async_context(link)
            modem = None
            if self.provider is not None:
                modem = self._exit.enter_context(ModemEmulator(self.provider, imei_for(n)))
            port_link = port_sysfs = None
            tuning = self.tuning
            if self.port_profile is not None:
                port_link = link_emulator.LinkEmulator(
                    "127.0.0.1", 0, self.broker.host, target_port, self.port_profile, seed=100 + n
                )
                await self._exit.enter_async_context(port_link)
                port_sysfs = work / f"vessel-{n}-net"
                write_operstate(port_sysfs, PORT_INTERFACE, "down")
                tuning = replace(tuning, port_sysfs=str(port_sysfs))
            setup = await asyncio.to_thread(
                prepare_vessel,
                work / f"vessel-{n}",
                vessel_id=n,
                broker_url=f"{scheme}://{link.host}:{link.port}",
                mqtt_version="5",
                shore_public_key=self.relay_setup.shore_public_key,
                union=union,
                crew=numbered_crew(self.crew_per_vessel, n, self.crew_languages),
                http_port=free_port(),
                smtp_port=free_port(),
                tuning=tuning,
                ca_file=broker_tls.ca_file if broker_tls is not None else None,
                sbd_device=modem.device if modem is not None else None,
                port_broker_url=(
                    None if port_link is None else f"{scheme}://{port_link.host}:{port_link.port}"
                ),
                port_interface=PORT_INTERFACE,
            )
            setups.append(setup)
            agent = Child(
                [sys.executable, "-m", "vessel_relay.demo.agent_main", str(setup.data_dir)],
                work / f"agent-{n}.log",
                env=dict(self.agent_environment(setup)) if self.agent_environment else {},
            )
            self.vessels.append(Vessel(setup, agent, link, modem, port_link, port_sysfs))
        await register_vessels(self.relay_setup, setups)
        self.relay = Child(
            [
                str(Path(sys.executable).parent / "vessel-relay"),
                "shore",
                "run",
                "--config",
                str(self.relay_setup.config_path),
            ],
            work / "relay.log",
        )
        self.relay.start()
        await self.wait_subscribed(self.relay)
        for vessel in self.vessels:
            await self.start_agent(vessel)

    async def _start_provider(self) -> RelaySbd:
        """Start the fake SBD provider (posting to the relay's webhook, which listens once
        the relay runs); the relay's ``[sbd]`` for it."""
        webhook_port = free_port()
        secret = secrets.token_hex(16)
        password = secrets.token_hex(12)
        vessels = {imei_for(n): n for n in range(1, self.vessel_count + 1)}
        self.provider = FakeRockBlock(
            f"http://127.0.0.1:{webhook_port}{MO_WEBHOOK_PATH}?secret={secret}",
            set(vessels),
            username="demo-relay",
            password=password,
        )
        await self.provider.start()
        return RelaySbd(
            webhook_port=webhook_port,
            provider_url=self.provider.base_url,
            username="demo-relay",
            password=password,
            webhook_secret=secret,
            vessels=vessels,
            downlink_window_s=self.sbd_downlink_window_s,
        )

    async def wait_subscribed(self, relay: Child, timeout_s: float = 60.0) -> None:
        """Wait until ``relay`` (just started) has subscribed to the vessels' uplinks, as
        it says on its output: a vessel's first batch must not reach a broker with nobody
        subscribed yet (it would wait a whole acknowledgement time to be sent again)."""
        before = ("\n" + relay.log()).count("\nsubscribed\n")
        deadline = time.monotonic() + timeout_s
        while ("\n" + relay.log()).count("\nsubscribed\n") <= before:
            if not relay.running:
                raise RuntimeError(f"the relay stopped before it subscribed:\n{relay.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the relay did not subscribe in {timeout_s:.0f} s:\n{relay.log()}"
                )
            await asyncio.sleep(0.05)  # polling another process's output

    async def start_agent(self, vessel: Vessel) -> None:
        """Start (or restart) a vessel's agent and wait until its HTTP API listens."""
        vessel.agent.start()
        if not await wait_listening("127.0.0.1", vessel.setup.http_port, timeout_s=60):
            raise RuntimeError(
                f"agent {vessel.setup.vessel_id} did not start:\n{vessel.agent.log()}"
            )

    async def stop(self) -> None:
        for vessel in self.vessels:
            await asyncio.to_thread(vessel.agent.stop)
        if self.relay is not None:
            await asyncio.to_thread(self.relay.stop)
        await self._exit.aclose()
        if self.provider is not None:
            await self.provider.stop()
        if self.broker is not None:
            await self.broker.stop()
        if self.sink is not None:
            self.sink.stop()
