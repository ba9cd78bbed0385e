"""Agent chaos: 30 crew members write over SMTP and HTTP while the agent process is SIGKILLed
and restarted at random moments, the satellite link is cut mid-publish and Mosquitto
(persistence off) is SIGKILLed. The shore is the real relay (in this process) behind the
link emulator; an observer on the broker decodes every uplink copy.

Promises checked at the end: every message that got a 250 / 201 is in the outbox; every
message in the outbox reached the shore under the same (vessel, message_seq) key, none lost
and none stored twice; every copy seen on the wire carries the same key for the same words.

CI size: ``VR_CHAOS_MESSAGES`` (default 2,000) messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import aiomqtt
import aiosmtplib
import httpx

from common.keyfiles import new_signing_key
from protocol.languages import Language
from protocol.signing import VerifyKey
from shipboard.config import load_config, to_toml
from shipboard.crew import CrewRegister
from shipboard.outbox import Outbox
from shore.config import parse_config
from shore.relay import run_relay
from shore.store import SqliteStore, VesselInfo
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.mqtt import persistent_client
from tests.kit.ports import accepts_connections, free_port
from tests.kit.ship_config import own_keys_document
from tests.kit.wait import eventually
from tests.shore.store_fixtures import SHORE_KEY
from tests.shore.test_ingest import write_relay
from vessel_relay.link_emulator import LinkEmulator

VESSEL = 11
CREW = 30
MESSAGES = int(os.environ.get("VR_CHAOS_MESSAGES", "2000"))
ROOT = Path(__file__).resolve().parents[2]


def agent_main() -> None:
    """The agent process (``python -c 'from tests.shipboard.test_chaos import agent_main;
    agent_main()' CONFIG``): the real agent with a link scheduled for a test's pace."""
    from shipboard.agent import run_agent
    from shipboard.link import LinkSettings
    from shipboard.scheduler import SchedulerSettings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = load_config(Path(sys.argv[1]))
    scheduler = SchedulerSettings(
        latency_s={"sos": 0.0, "grievance": 0.0, "message": 0.0},
        min_gap_s=0.2,
        resend_after_s=3.0,
    )
    link = LinkSettings.from_config(
        config, ack_wait_s=5.0, min_timeout_s=3.0, downlink_quiet_s=0.3, keepalive_s=5
    )
    options = {"scheduler_settings": scheduler, "link_settings": link, "outbox_retry_s": 1.0}
    asyncio.run(run_agent(config, stopping=asyncio.Event(), link_options=options))


@dataclass
class Member:
    crew: int
    pin: str
    contact: int
    address: str


@dataclass
class Ship:
    config: Path
    data: Path
    smtp_port: int
    http_port: int
    members: list[Member]
    public_key: bytes
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        code = "from tests.shipboard.test_chaos import agent_main; agent_main()"
        with (self.data / "agent.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=ROOT,
            )
        self.starts += 1

    async def wait_ready(self) -> None:
        def listening() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, self.log_tail()  # it exited: it never will
            return accepts_connections("127.0.0.1", self.smtp_port) and accepts_connections(
                "127.0.0.1", self.http_port
            )

        await eventually(listening, 30, what="the agent's doors", explain=self.log_tail)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_tail(self) -> str:
        return (self.data / "agent.log").read_text(errors="replace")[-3000:]

    def outbox_rows(self) -> dict[str, int]:
        """Words -> message_seq of every crew message the outbox holds."""
        with contextlib.closing(
            sqlite3.connect(f"file:{self.data}/outbox.sqlite3?mode=ro", uri=True, timeout=10)
        ) as db:
            rows = db.execute("SELECT body, message_seq FROM messages WHERE kind = 'message'")
            return {str(body): int(seq) for body, seq in rows}


def make_ship(data: Path, broker_port: int) -> Ship:
    data.mkdir(parents=True)
    document = own_keys_document(data)
    smtp_port, http_port = free_port(), free_port()
    document["vessel"]["id"] = VESSEL
    document["shore"].update(
        broker=f"mqtt://127.0.0.1:{broker_port}", public_key=SHORE_KEY.verify_key.key.hex()
    )
    document["link"]["profile"] = "vsat"
    document["intake"].update(smtp_port=smtp_port, http_port=http_port)
    config_path = data / "ship.toml"
    config_path.write_text(to_toml(document), encoding="utf-8")
    config = load_config(config_path)
    key = new_signing_key(config.vessel.signing_key_path)
    outbox = Outbox.open(config.database_path, VESSEL)
    members = []
    try:
        register = CrewRegister(outbox)
        for index in range(CREW):
            member, pin = register.add(
                name=f"Crew {index}",
                document=f"SB-{index:06d}",
                nationality="MM",
                language=Language.ENG,
                now=time.time(),
            )
            address = f"home{index}@example.org"
            contact = register.add_contact(
                member.crew,
                channel="email",
                address=address,
                name="Home",
                language=None,
                now=time.time(),
            )
            members.append(Member(member.crew, pin, contact.contact, address))
    finally:
        outbox.close()
    return Ship(config_path, data, smtp_port, http_port, members, key.verify_key.key)


@dataclass
class Tally:
    confirmed: dict[str, int] = field(default_factory=dict)  # words -> crew
    refused: int = 0
    broken: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def confirm(self, text: str, crew: int) -> None:
        self.confirmed[text] = crew
        if len(self.confirmed) >= MESSAGES:
            self.enough.set()


async def smtp_writer(
    ship: Ship, member: Member, tally: Tally, numbers: itertools.count[int]
) -> None:
    tls = ssl.create_default_context(cafile=str(ship.data / "intake-cert.pem"))
    while not tally.enough.is_set():
        try:
            async with aiosmtplib.SMTP(
                hostname="127.0.0.1",
                port=ship.smtp_port,
                timeout=10,
                start_tls=True,
                tls_context=tls,
            ) as client:
                await client.login(str(member.crew), member.pin)
                while not tally.enough.is_set():
                    text = f"smtp crew {member.crew} note {next(numbers)}"
                    message = EmailMessage()
                    message["To"] = member.address
                    message["Subject"] = "x"
                    message.set_content(text)
                    await client.send_message(
                        message, sender="crew@vessel", recipients=[member.address]
                    )
                    tally.confirm(text, member.crew)  # only after the 250
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError):
            tally.broken += 1
            await asyncio.sleep(0.2)


async def http_writer(
    ship: Ship, member: Member, tally: Tally, numbers: itertools.count[int]
) -> None:
    base = f"http://127.0.0.1:{ship.http_port}"
    while not tally.enough.is_set():
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                login = await client.post(
                    "/api/login", json={"crew": member.crew, "pin": member.pin}
                )
                login.raise_for_status()
                auth = {"authorization": f"Bearer {login.json()['token']}"}
                while not tally.enough.is_set():
                    text = f"http crew {member.crew} note {next(numbers)}"
                    sent = await client.post(
                        "/api/messages",
                        json={"contact": member.contact, "text": text, "lang": "eng"},
                        headers=auth,
                    )
                    if sent.status_code == 201:
                        tally.confirm(text, member.crew)
                    else:
                        tally.refused += 1
                        sent.raise_for_status()
        except (httpx.HTTPError, OSError):
            tally.broken += 1
            await asyncio.sleep(0.2)


@dataclass
class Observer:
    """Every uplink copy the broker carries: words -> the message_seqs they came under."""

    key: VerifyKey
    keys: dict[str, set[int]] = field(default_factory=dict)
    copies: int = 0

    async def run(self, broker: MosquittoBroker, ready: asyncio.Event) -> None:
        while True:
            try:
                client = persistent_client(broker.host, broker.port, "chaos-observer")
                async with client:
                    await client.subscribe(f"vr/{VESSEL}/u", qos=1)
                    ready.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self.record(message.payload)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.3)

    def record(self, data: bytes) -> None:
        from common.codebooks import default_codebook
        from protocol.batch import Direction, decode_batch
        from protocol.envelopes import CrewMessage

        batch = decode_batch(
            data, codebook=default_codebook(), direction=Direction.UPLINK, verify_key=self.key
        )
        for envelope in batch.envelopes:
            if isinstance(envelope, CrewMessage) and envelope.body is not None:
                self.copies += 1
                self.keys.setdefault(envelope.body, set()).add(envelope.message_seq)


@contextlib.asynccontextmanager
async def running_relay(data: Path, broker: MosquittoBroker, ship: Ship) -> AsyncIterator[Path]:
    config_path = write_relay(data, broker)
    store = await SqliteStore.open(data / "relay.db")
    try:
        info = VesselInfo("Chaos Star", "TH", "TH-0011", "Test Fishing Co")
        await store.add_vessel(info, ship.public_key, time.time() - 3600, VESSEL)
    finally:
        await store.close()
    config = parse_config(tomllib.loads(config_path.read_text()), str(config_path))
    stopping, subscribed = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_relay(config, stopping, subscribed.set))
    try:
        async with asyncio.timeout(10):
            await subscribed.wait()
        yield data / "relay.db"
    finally:
        stopping.set()
        async with asyncio.timeout(20):
            await task


def shore_rows(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        rows = db.execute(
            "SELECT body, message_seq FROM messages WHERE vessel_id = ? AND kind = 'message'",
            (VESSEL,),
        )
        return {str(body): int(seq) for body, seq in rows}


async def test_agent_sigkills_link_cuts_and_a_broker_crash_lose_nothing(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """30 crew members write (half by e-mail, half through the page) while the agent is
    SIGKILLed and restarted, the satellite link is cut mid-publish, and the broker dies
    without persistence: every confirmed message is kept on board, every kept message
    reaches the shore once under its own key, and a repeat never changes the key."""
    rng = random.Random(int(os.environ.get("VR_CHAOS_SEED", "11")))
    broker = fresh_mosquitto
    tally = Tally()
    async with LinkEmulator("127.0.0.1", 0, broker.host, broker.port, seed=3) as link:
        ship = make_ship(tmp_path / "vessel", link.port)
        observer = Observer(VerifyKey(ship.public_key))
        observed = asyncio.Event()
        observing = asyncio.create_task(observer.run(broker, observed))
        await observed.wait()
        async with running_relay(tmp_path / "relay", broker, ship) as relay_db:
            ship.start()
            await ship.wait_ready()
            numbers = itertools.count(1)
            writers = [
                asyncio.create_task(
                    (smtp_writer if index % 2 == 0 else http_writer)(ship, member, tally, numbers)
                )
                for index, member in enumerate(ship.members)
            ]
            kills = cuts = broker_kills = 0
            try:
                while not tally.enough.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(rng.uniform(0.5, 2.5)):
                            await tally.enough.wait()
                    if tally.enough.is_set():
                        break
                    roll = rng.random()
                    if roll < 0.45 or kills == 0:
                        ship.kill()
                        kills += 1
                        ship.start()
                        await ship.wait_ready()
                    elif roll < 0.9 or broker_kills > 0:
                        link.cut()
                        cuts += 1
                    else:
                        broker.kill()
                        broker.start()
                        broker_kills += 1
                if broker_kills == 0:
                    broker.kill()
                    broker.start()
                    broker_kills += 1
                if cuts == 0:
                    link.cut()
                    cuts += 1
            finally:
                for writer in writers:
                    writer.cancel()
                await asyncio.gather(*writers, return_exceptions=True)
            # Drain: the agent resends whatever no receipt covers.
            await eventually(
                lambda: shore_rows(relay_db).keys() >= ship.outbox_rows().keys(),
                180,
                0.5,
                what="every message on board to be ashore",
            )
            ship.stop()
            on_board = ship.outbox_rows()
            ashore = shore_rows(relay_db)
        observing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observing
    logging.getLogger(__name__).warning(
        "chaos: %d confirmed, %d on board, %d copies seen, %d agent kills, %d cuts, "
        "%d broker kills, %d broken intake sessions",
        len(tally.confirmed),
        len(on_board),
        observer.copies,
        kills,
        cuts,
        broker_kills,
        tally.broken,
    )
    assert len(tally.confirmed) >= MESSAGES
    assert len({crew for crew in tally.confirmed.values()}) == CREW
    assert [text for text in tally.confirmed if text not in on_board] == []
    assert ashore == on_board  # same words under the same key, nothing missing or extra
    assert {words: seqs for words, seqs in observer.keys.items() if len(seqs) > 1} == {}
    assert all(
        observer.keys[words] == {seq} for words, seq in on_board.items() if words in observer.keys
    )
    assert kills >= 1
    assert cuts >= 1
    assert broker_kills >= 1
