"""Scale-out: three relay worker processes share one MQTT subscription and one PostgreSQL;
one is SIGKILLed mid-run; every family e-mail still reaches the SMTP sink once per message
(a resend after the kill carries the same Message-ID and is counted as a repeat)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.keyfiles import write_secret
from protocol.envelopes import Channel, ContactBookChange, CrewMessage, Envelope
from protocol.languages import Language
from shore.store import VesselInfo
from shore.store.postgres import PostgresStore
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.ports import free_port
from tests.kit.relay_process import RelayProcess
from tests.kit.wait import eventually
from tests.shore.store_fixtures import SHORE_KEY, T0, VESSEL_KEY, PostgresServer, uplink
from tests.shore.test_ingest import Vessel, vessel_link
from tests.shore.test_mail import SmtpSink
from tests.shore.test_store import postgres  # noqa: F401 (the session's PostgreSQL fixture)

ROOT = Path(__file__).resolve().parents[2]
VESSELS = (101, 102, 103, 104, 105)
BATCHES, PER_BATCH = 8, 10
MINUTES = int(T0 // 60)
RELAY_DOMAIN = "relay.example.org"


def vessel_batches(vessel_id: int) -> list[bytes]:
    """A vessel's day: BATCHES signed batches of PER_BATCH messages to one family address."""
    contact = ContactBookChange(
        crew=1,
        contact=1,
        channel=Channel.EMAIL,
        address=f"family-{vessel_id}@example.org",
        written_minutes=MINUTES,
        contact_lang=Language.ENG,
    )
    batches = []
    for index in range(BATCHES):
        envelopes: list[Envelope] = [contact] if index == 0 else []
        for seq in range(index * PER_BATCH + 1, (index + 1) * PER_BATCH + 1):
            envelopes.append(
                CrewMessage(
                    message_seq=seq,
                    crew=1,
                    contact=1,
                    written_minutes=MINUTES,
                    lang=Language.ENG,
                    body=f"hello from the sea {seq}",
                )
            )
        batches.append(uplink(vessel_id, index + 1, envelopes))
    return batches


class Worker(RelayProcess):
    """``vessel-relay shore run`` for one worker number, with /metrics; stopped by PID."""

    def __init__(self, data: Path, number: int, dsn: str, broker: MosquittoBroker, smtp: int):
        self.number = number
        self.metrics_port = free_port()
        data.mkdir(parents=True, exist_ok=True)
        write_secret(data / "shore.key", SHORE_KEY.seed)
        write_secret(data / "reply.key", b"r" * 32)
        self.config = data / "relay.toml"
        self.config.write_text(
            f'[relay]\ndata_dir = "{data}"\nworker = {number}\n'
            f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nlease_s = 4.0\n'
            f'[mqtt]\nurl = "mqtt://{broker.host}:{broker.port}"\nreconnect_max_s = 2.0\n'
            "[downlink]\ntick_s = 0.3\nresend_after_s = 2.0\nresend_max_s = 10.0\n"
            f'[delivery]\nenabled = true\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp}\n'
            f'relay_domain = "{RELAY_DOMAIN}"\n',
            encoding="utf-8",
        )
        super().__init__(
            self.config,
            data / "relay.log",
            [
                "--log-format",
                "json",
                "--log-level",
                "info",
                "--metrics-port",
                str(self.metrics_port),
            ],
        )

    def scrape_repeats(self) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "vessel_relay_delivery_repeats_total"
        )


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@contextlib.asynccontextmanager
async def fleet_links(broker: MosquittoBroker) -> AsyncIterator[dict[int, Vessel]]:
    async with contextlib.AsyncExitStack() as stack:
        links = {v: await stack.enter_async_context(vessel_link(broker, v)) for v in VESSELS}
        yield links


def message_ids(sink: SmtpSink) -> Counter[str]:
    return Counter(str(message["Message-ID"]) for message in sink.handler.messages())


async def open_deliveries(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        count: int = await connection.fetchval(
            "SELECT COUNT(*) FROM deliveries WHERE outcome IS NULL"
        )
        return count
    finally:
        await connection.close()


async def test_three_workers_one_killed_every_family_mail_once_per_message(
    fresh_mosquitto: MosquittoBroker,
    sink: SmtpSink,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Five vessels send 400 messages to their families through three relay workers that
    share the broker subscription and the database. Worker 2 is SIGKILLed once a fifth of
    the mail is out; vessels resend what is unacknowledged. In the end every message was
    stored once and delivered, the sink holds exactly the 400 expected Message-IDs, and any
    copy beyond one per Message-ID is a resend the surviving workers counted as a repeat."""
    server: PostgresServer = request.getfixturevalue("postgres")
    dsn = server.create_database()
    store = await PostgresStore.open(dsn)
    try:
        for vessel_id in VESSELS:
            info = VesselInfo(f"Vessel {vessel_id}", "TH", f"TH-{vessel_id}", "Co", ())
            await store.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, vessel_id)
    finally:
        await store.close()
    workers = [Worker(tmp_path / f"w{n}", n, dsn, fresh_mosquitto, sink.port) for n in (1, 2, 3)]
    expected = {
        f"<{v}.{seq}@{RELAY_DOMAIN}>" for v in VESSELS for seq in range(1, BATCHES * PER_BATCH + 1)
    }
    batches = {v: vessel_batches(v) for v in VESSELS}
    try:
        await asyncio.gather(*(worker.start() for worker in workers))
        async with fleet_links(fresh_mosquitto) as links, asyncio.timeout(240):
            for index in range(BATCHES):
                for vessel_id, link in links.items():
                    await link.publish(batches[vessel_id][index], vessel_id)
            # polling the sink (filled from its own thread): it has no event to wait on
            await eventually(
                lambda: len(message_ids(sink)) >= len(expected) // 5,
                240,
                what="a fifth of the family mail",
            )
            workers[1].kill()
            # Vessels resend what is unacknowledged, as their outboxes do, until all is acked.
            while any(len(links[v].acked) < BATCHES for v in VESSELS):
                await asyncio.sleep(3)
                for vessel_id, link in links.items():
                    for seq, data in enumerate(batches[vessel_id], start=1):
                        if seq not in link.acked:
                            await link.publish(data, vessel_id)

            async def all_closed() -> bool:
                return await open_deliveries(dsn) == 0

            await eventually(all_closed, 240, 0.5, what="no delivery left open in the database")
        received = message_ids(sink)
        repeats = workers[0].scrape_repeats() + workers[2].scrape_repeats()
        assert workers[0].terminate() == 0
        assert workers[2].terminate() == 0
    finally:
        for worker in workers:
            worker.ensure_stopped()

    assert set(received) == expected
    extra_copies = sum(received.values()) - len(received)
    assert extra_copies <= repeats
    connection = await asyncpg.connect(dsn)
    try:
        stored = await connection.fetchval("SELECT COUNT(*) FROM messages")
        delivered = await connection.fetchval(
            "SELECT COUNT(*) FROM deliveries WHERE outcome = 'delivered'"
        )
        claimed_by = {
            row[0]
            for row in await connection.fetch(
                "SELECT DISTINCT split_part(claimed_by, '-d', 1) FROM deliveries"
            )
        }
    finally:
        await connection.close()
    assert stored == delivered == len(expected)
    assert {"relay-1", "relay-3"} <= claimed_by  # the survivors shared the work
    print(
        f"\nscale-out: {sum(received.values())} mails, {extra_copies} repeats at the sink, "
        f"{repeats:.0f} counted by the survivors"
    )
