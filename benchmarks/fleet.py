"""Fleet capacity: hundreds of vessels through a real broker to 1, 2 and 4 relay workers.

For each worker count a fresh PostgreSQL database is made, the vessels registered, and
that many ``vessel-relay shore run`` processes started (one database). The broker is a
Mosquitto (``--broker mosquitto``, the default: one shared subscription
``$share/relay/vr/+/u``, vessels on MQTT 5) or a three-node NATS cluster (``--broker
nats-cluster``: JetStream with three replicas, the workers sharing one durable consumer
(``[broker] kind = "nats"``), vessels on MQTT 3.1.1 spread over the nodes' gateways).
Then every simulated vessel, each with its own persistent MQTT session (fixed client id,
no clean start), lives a *compressed day*: ``--sessions`` satellite sessions, each one
connect, publish one signed batch of ``--messages`` crew messages (real texts from the
repository's ``corpus/``, real encoder and codebook), wait for the shore's signed
``BatchAck``, disconnect. Sessions start at random moments within ``--day-s`` seconds, so
the offered load is ``vessels x sessions x messages / day_s`` messages per second; with the
default, more than two cores can take, so the figures are the relay's saturated throughput.

Measured per run:

- **messages/s**: messages acknowledged / wall time from the first publish to the last ack;
- **latency**: PUBACK of the batch to arrival of the ``BatchAck`` that covers it (ingest,
  verify, commit, downlink), p50 / p99 / max;
- **CPU** (seconds of user + system time from ``/proc/PID/stat``, and as a share of one
  core over the run) of the broker (Mosquitto, or the three NATS nodes), of all PostgreSQL
  processes, of the relay workers, and of this process (the simulated vessels; on a 2-core
  machine it competes with the rest);
- **rows/s**: PostgreSQL ``tup_inserted + tup_updated`` of the database over the run.

Usage::

    python benchmarks/fleet.py                       # 300 vessels, workers 1, 2, 4; a table
    python benchmarks/fleet.py --json                # the same as JSON
    python benchmarks/fleet.py --vessels 20 --workers 1 --sessions 2   # a quick look
    python benchmarks/fleet.py --broker nats-cluster    # the same over a NATS cluster

Needs Mosquitto (or nats-server) and PostgreSQL installed (``scripts/install-system-deps``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import asyncpg  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from common.codebooks import default_codebook  # noqa: E402
from common.keyfiles import write_secret  # noqa: E402
from protocol.batch import Direction, decode_batch  # noqa: E402
from protocol.envelopes import BatchAck, Channel, ContactBookChange, CrewMessage, Envelope  # noqa: E402
from protocol.languages import Language  # noqa: E402
from shore.store import VesselInfo  # noqa: E402
from shore.store.postgres import PostgresStore  # noqa: E402
from tests.kit.mosquitto import MosquittoBroker  # noqa: E402
from tests.kit.nats import NatsCluster  # noqa: E402
from tests.shore.store_fixtures import (  # noqa: E402
    SHORE_KEY,
    VESSEL_KEY,
    PostgresServer,
    uplink,
)
from vessel_relay.corpus import CorpusMissing, corpus_dir  # noqa: E402

LANGUAGES = (("mya", Language.MYA), ("tha", Language.THA), ("khm", Language.KHM),
             ("eng", Language.ENG), ("ind", Language.IND), ("vie", Language.VIE))  # fmt: skip
FIRST_VESSEL = 1000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def corpus_texts(per_language: int = 200) -> list[tuple[Language, str]]:
    """Crew-like texts: short lines of the corpus dev split (a fixed fallback if absent)."""
    texts: list[tuple[Language, str]] = []
    fallback = [(Language.ENG, "All well on board, we land the catch on Friday.")]
    try:
        corpus = corpus_dir()
    except CorpusMissing:
        return fallback
    for code, lang in LANGUAGES:
        path = corpus / f"{code}.dev.txt"
        if path.exists():
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            texts += [(lang, line) for line in lines if 0 < len(line) <= 160][:per_language]
    return texts or fallback


def make_day(
    vessel_id: int,
    sessions: int,
    messages: int,
    rng: random.Random,
    texts: Sequence[tuple[Language, str]],
) -> list[bytes]:
    """A vessel's day: ``sessions`` signed batches of ``messages`` crew messages each."""
    minutes = int(time.time() // 60)
    batches = []
    seq = 0
    for index in range(sessions):
        envelopes: list[Envelope] = []
        if index == 0:
            for crew in range(1, 21):
                envelopes.append(
                    ContactBookChange(
                        crew=crew, contact=1, channel=Channel.EMAIL,
                        address=f"family{crew}@example.org", written_minutes=minutes,
                    )
                )  # fmt: skip
        for _ in range(messages):
            seq += 1
            lang, text = rng.choice(texts)
            envelopes.append(
                CrewMessage(
                    message_seq=seq, crew=rng.randint(1, 20), contact=1,
                    written_minutes=minutes, lang=lang, body=text,
                )
            )  # fmt: skip
        batches.append(uplink(vessel_id, index + 1, envelopes, minutes=minutes))
    return batches


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of processes (those that vanished count as 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def machine_busy_s() -> float:
    """Seconds of CPU spent by the whole machine (all cores, all processes, not idle)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def postmaster_pid(pg: PostgresServer) -> int:
    """The PostgreSQL server's main process (first line of postmaster.pid)."""
    return int((pg.data / "postmaster.pid").read_text().split()[0])


def children_of(parent: int) -> list[int]:
    """``parent`` and its direct children (PostgreSQL's backends and helpers)."""
    pids = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                pids.append(int(entry.name))
    return pids


class Broker:
    """Where vessels connect and what a relay worker's config says about it."""

    #: MQTT protocol of the vessels' sessions
    protocol: aiomqtt.ProtocolVersion

    def endpoint(self, vessel_id: int) -> tuple[str, int]:
        """The MQTT host and port vessel ``vessel_id`` connects to."""
        raise NotImplementedError

    def relay_config(self) -> str:
        """The relay config's tables naming the broker."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The broker's processes (for their CPU time)."""
        raise NotImplementedError


class OneMosquitto(Broker):
    """A single Mosquitto; vessels on MQTT 5, workers on one shared subscription."""

    protocol = aiomqtt.ProtocolVersion.V5

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker

    def endpoint(self, vessel_id: int) -> tuple[str, int]:
        return self.broker.host, self.broker.port

    def relay_config(self) -> str:
        return f'[mqtt]\nurl = "mqtt://{self.broker.host}:{self.broker.port}"\n'

    def pids(self) -> list[int]:
        return [self.broker.pid or 0]


class ThreeNatsNodes(Broker):
    """A three-node NATS cluster; vessels on MQTT 3.1.1 spread over the nodes' gateways,
    workers pulling from one durable JetStream consumer (stream with three replicas)."""

    protocol = aiomqtt.ProtocolVersion.V311

    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster

    def endpoint(self, vessel_id: int) -> tuple[str, int]:
        endpoints = self.cluster.mqtt_endpoints
        return endpoints[vessel_id % len(endpoints)]

    def relay_config(self) -> str:
        nats_urls = ", ".join(f'"{url}"' for url in self.cluster.nats_urls)
        mqtt_urls = ", ".join(f'"mqtt://{h}:{p}"' for h, p in self.cluster.mqtt_endpoints)
        return (
            f'[broker]\nkind = "nats"\nnats_urls = [{nats_urls}]\nmqtt_urls = [{mqtt_urls}]\n'
            "replicas = 3\n"
        )

    def pids(self) -> list[int]:
        return [node.pid or 0 for node in self.cluster.nodes]


@dataclass
class RunResult:
    workers: int
    vessels: int
    batches: int
    messages: int
    wall_s: float
    messages_per_s: float
    batches_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_share: dict[str, float] = field(default_factory=dict)
    db_rows_per_s: float = 0.0
    db_bytes_per_message: float = 0.0
    unacknowledged: int = 0


class Worker:
    def __init__(self, data: Path, number: int, dsn: str, broker: Broker) -> None:
        data.mkdir(parents=True, exist_ok=True)
        write_secret(data / "shore.key", SHORE_KEY.seed)
        self.config = data / "relay.toml"
        self.config.write_text(
            f'[relay]\ndata_dir = "{data}"\nworker = {number}\n'
            f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\n'
            + broker.relay_config()
            + "[downlink]\ntick_s = 0.5\nresend_after_s = 30.0\nresend_max_s = 600.0\n",
            encoding="utf-8",
        )
        self.log = data / "relay.log"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from vessel_relay.cli import main; main()",
                 "shore", "run", "-c", str(self.config)],
                stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
            )  # fmt: skip

    async def wait_subscribed(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        stdout = self.process.stdout
        while (line := await asyncio.to_thread(stdout.readline)).strip() != b"subscribed":
            if not line:
                raise RuntimeError(f"relay worker exited: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class SimulatedVessel:
    """One vessel with its own persistent MQTT session; runs its day's sessions."""

    def __init__(self, vessel_id: int, batches: list[bytes], broker: Broker) -> None:
        self.vessel_id = vessel_id
        self.batches = batches
        self.broker = broker
        self.codebook = default_codebook()
        self.latencies_s: list[float] = []
        self.acked: set[int] = set()
        self.first_publish: float | None = None
        self.last_ack: float | None = None

    def client(self) -> aiomqtt.Client:
        host, port = self.broker.endpoint(self.vessel_id)
        if self.broker.protocol is aiomqtt.ProtocolVersion.V311:
            return aiomqtt.Client(
                host, port, identifier=f"v{self.vessel_id}", protocol=self.broker.protocol,
                clean_session=False, keepalive=600, timeout=60,
            )  # fmt: skip
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        return aiomqtt.Client(
            host, port, identifier=f"v{self.vessel_id}",
            protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=properties,
            keepalive=600, timeout=60,
        )  # fmt: skip

    def _apply(self, payload: bytes) -> None:
        batch = decode_batch(
            payload, codebook=self.codebook, verify_key=SHORE_KEY.verify_key,
            direction=Direction.DOWNLINK,
        )  # fmt: skip
        for envelope in batch.envelopes:
            if isinstance(envelope, BatchAck):
                top = max([envelope.up_to, *(b for _, b in envelope.ranges or ())])
                self.acked.update(s for s in range(1, top + 1) if envelope.covers(s))

    async def session(self, index: int, ack_wait_s: float) -> None:
        seq = index + 1
        async with self.client() as client:
            if index == 0:
                await client.subscribe(f"vr/{self.vessel_id}/d", qos=1)
            sent = time.perf_counter()
            await client.publish(f"vr/{self.vessel_id}/u", self.batches[index], qos=1)
            published = time.perf_counter()
            self.first_publish = self.first_publish or sent
            async with asyncio.timeout(ack_wait_s):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    self._apply(message.payload)
                    if seq in self.acked:
                        now = time.perf_counter()
                        self.latencies_s.append(now - published)
                        self.last_ack = now
                        return

    async def live_day(self, starts: list[float], t0: float, ack_wait_s: float) -> None:
        for index, start in enumerate(starts):
            delay = t0 + start - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            with contextlib.suppress(TimeoutError, aiomqtt.MqttError):
                await self.session(index, ack_wait_s)


async def run_once(
    workers: int, args: argparse.Namespace, broker: Broker, pg: PostgresServer,
    days: dict[int, list[bytes]], work: Path,
) -> RunResult:  # fmt: skip
    dsn = pg.create_database()
    store = await PostgresStore.open(dsn)
    try:
        for vessel_id in days:
            info = VesselInfo(f"Vessel {vessel_id}", "TH", f"TH-{vessel_id}", "Co", ())
            await store.add_vessel(info, VESSEL_KEY.verify_key.key, time.time() - 3600, vessel_id)
    finally:
        await store.close()
    relay = [Worker(work / f"w{workers}-{n}", n, dsn, broker) for n in range(1, workers + 1)]
    rng = random.Random(args.seed)
    try:
        for worker in relay:
            worker.spawn()
        await asyncio.gather(*(worker.wait_subscribed() for worker in relay))
        vessels = [SimulatedVessel(v, batches, broker) for v, batches in days.items()]
        # connect each vessel once first (persistent session and subscription exist)
        schedule = {
            vessel.vessel_id: sorted(rng.uniform(0, args.day_s) for _ in range(args.sessions))
            for vessel in vessels
        }
        connection = await asyncpg.connect(dsn)
        rows_before = await _db_rows(connection)
        size_before = int(await connection.fetchval("SELECT pg_database_size(current_database())"))
        pg_pids = children_of(postmaster_pid(pg))
        pids = {
            "broker": broker.pids(),
            "postgres": pg_pids,
            "relay": [w.process.pid for w in relay if w.process is not None],
            "vessels (this process)": [os.getpid()],
        }
        cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
        machine_before = machine_busy_s()
        t0 = time.perf_counter()
        await asyncio.gather(
            *(v.live_day(schedule[v.vessel_id], t0, args.ack_wait_s) for v in vessels)
        )
        wall = time.perf_counter() - t0
        pg_pids = children_of(postmaster_pid(pg))
        pids["postgres"] = pg_pids
        cpu = {name: cpu_seconds(p) - cpu_before[name] for name, p in pids.items()}
        machine = machine_busy_s() - machine_before
        cpu["other processes on the machine"] = max(0.0, machine - sum(cpu.values()))
        size_after = int(await connection.fetchval("SELECT pg_database_size(current_database())"))
        db_bytes = size_after - size_before
    finally:
        for worker in relay:
            worker.stop()
    rows = await _db_rows_when_workers_gone(connection) - rows_before
    await connection.close()
    latencies = sorted(s for v in vessels for s in v.latencies_s)
    acked_batches = len(latencies)
    first = min((v.first_publish for v in vessels if v.first_publish), default=t0)
    last = max((v.last_ack for v in vessels if v.last_ack), default=t0 + wall)
    busy_s = max(1e-9, last - first)
    messages = acked_batches * args.messages
    return RunResult(
        workers=workers,
        vessels=len(vessels),
        batches=acked_batches,
        messages=messages,
        wall_s=round(busy_s, 2),
        messages_per_s=round(messages / busy_s, 1),
        batches_per_s=round(acked_batches / busy_s, 1),
        latency_p50_ms=round(_pct(latencies, 50) * 1000, 1),
        latency_p99_ms=round(_pct(latencies, 99) * 1000, 1),
        latency_max_ms=round((latencies[-1] if latencies else 0.0) * 1000, 1),
        cpu_s={k: round(v, 2) for k, v in cpu.items()},
        cpu_share={k: round(v / wall, 2) for k, v in cpu.items()},
        db_rows_per_s=round(rows / busy_s, 1),
        db_bytes_per_message=round(db_bytes / max(1, messages)),
        unacknowledged=len(vessels) * args.sessions - acked_batches,
    )


async def _db_rows(connection: asyncpg.Connection) -> int:
    row = await connection.fetchrow(
        "SELECT tup_inserted + tup_updated FROM pg_stat_database WHERE datname = current_database()"
    )
    await connection.execute("SELECT pg_stat_clear_snapshot()")
    return int(row[0]) if row else 0


async def _db_rows_when_workers_gone(connection: asyncpg.Connection) -> int:
    """:func:`_db_rows` once the relay workers' connections have ended: a PostgreSQL 15
    backend reports its counts at most once a second while busy and up to 10 s after it
    went idle, but always when it exits (waits at most 10 s for that)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        others = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        if not others:
            break
        await asyncio.sleep(0.05)
    return await _db_rows(connection)


def _pct(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


async def main_async(args: argparse.Namespace) -> list[RunResult]:
    texts = corpus_texts()
    rng = random.Random(args.seed)
    days = {
        FIRST_VESSEL + i: make_day(FIRST_VESSEL + i, args.sessions, args.messages, rng, texts)
        for i in range(args.vessels)
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        work = Path(tmp)
        os.chmod(tmp, 0o755)
        pg = PostgresServer(work / "pg")
        pg.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                broker: Broker
                if args.broker == "nats-cluster":
                    cluster = stack.enter_context(NatsCluster(work / "nats"))
                    broker = ThreeNatsNodes(cluster)
                else:
                    mosquitto = stack.enter_context(
                        MosquittoBroker(
                            work / "mosquitto", extra_config=("max_inflight_messages 100",)
                        )
                    )
                    broker = OneMosquitto(mosquitto)
                for workers in args.workers:
                    results.append(await run_once(workers, args, broker, pg, days, work))
                    if not args.json:
                        print(f"  ... {workers} worker(s) done", file=sys.stderr)
        finally:
            pg.stop()
    return results


def table(results: Sequence[RunResult], args: argparse.Namespace) -> str:
    offered = args.vessels * args.sessions * args.messages / args.day_s
    lines = [
        f"{args.vessels} vessels x {args.sessions} sessions x {args.messages} messages, "
        f"day compressed to {args.day_s:.0f} s (offered {offered:,.0f} messages/s), "
        f"{os.cpu_count()} cores, broker {args.broker}",
        "",
        "| workers | messages/s | batches/s | p50 ms | p99 ms | max ms | CPU broker | "
        "CPU postgres | CPU relay | CPU vessels | CPU others | DB rows/s | DB B/message | "
        "unacked |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        share = r.cpu_share
        lines.append(
            f"| {r.workers} | {r.messages_per_s:,.0f} | {r.batches_per_s:,.1f} | "
            f"{r.latency_p50_ms:,.0f} | {r.latency_p99_ms:,.0f} | {r.latency_max_ms:,.0f} | "
            f"{share.get('broker', 0):.2f} | {share.get('postgres', 0):.2f} | "
            f"{share.get('relay', 0):.2f} | {share.get('vessels (this process)', 0):.2f} | "
            f"{share.get('other processes on the machine', 0):.2f} | "
            f"{r.db_rows_per_s:,.0f} | {r.db_bytes_per_message:,.0f} | {r.unacknowledged} |"
        )
    lines.append("")
    lines.append(
        "CPU: cores busy on average over the run (1.00 = one core all the time); "
        '"others" is what the rest of the machine used meanwhile.'
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vessels", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=4, help="sessions per vessel per day")
    parser.add_argument("--messages", type=int, default=10, help="messages per batch")
    parser.add_argument("--day-s", type=float, default=20.0, help="the day compressed to")
    parser.add_argument("--ack-wait-s", type=float, default=60.0)
    parser.add_argument(
        "--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4]
    )
    parser.add_argument(
        "--broker",
        choices=("mosquitto", "nats-cluster"),
        default="mosquitto",
        help="one Mosquitto (MQTT 5, shared subscription) or three NATS nodes (JetStream)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(main_async(args))
    if args.json:
        report = {
            "vessels": args.vessels,
            "sessions_per_vessel": args.sessions,
            "messages_per_batch": args.messages,
            "day_s": args.day_s,
            "cores": os.cpu_count(),
            "broker": args.broker,
            "runs": [asdict(r) for r in results],
        }
        print(json.dumps(report, indent=2))
    else:
        print(table(results, args))


if __name__ == "__main__":
    main()
