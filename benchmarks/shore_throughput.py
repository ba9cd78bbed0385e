"""Shore throughput: signed batches through a real Mosquitto to relay workers that ingest and
deliver to a local SMTP sink; messages per second and latency from publish to SMTP delivery.

For each run (SQLite with one worker; PostgreSQL with 1 and 2 workers by default) a fresh
store is made, the vessels registered, and that many ``vessel-relay shore run`` processes
started with delivery on (one shared subscription ``$share/relay/vr/+/u``; with SQLite one
process, the embedded default). This process then publishes every vessel's signed batches
(``--batches`` per vessel of ``--messages`` crew messages each, real corpus texts, the
contact book in batch 1) QoS 1 to ``vr/{vessel}/u``, all at once (``--rate 0``, the relay's
saturated throughput) or paced at ``--rate`` messages per second (latency under a load it
can carry). The workers deliver to an SMTP sink on loopback (``--sink``), which stamps each
mail's first arrival by its Message-ID ``<{vessel}.{seq}@relay...>``:

- ``smtp-sink`` (the default): Postfix's smtp-sink, a small C server built for
  benchmarking, in its own process (``tests/kit/smtp_sink.py``; fetched into ``.tools/``
  by ``scripts/install-smtp-sink`` when missing, and if that fails the benchmark stops and
  says so). It dumps each mail to a file of its own on tmpfs, written out and closed at the
  end of DATA just before its 250 reply: the arrival is the file's mtime (wall clock; the
  kernel may stamp it up to one tick, 4 ms here, early), the publish times are taken on the
  same clock. It costs the two cores ~0.1 CPU ms per mail, as a smarthost elsewhere would
  cost them nothing;
- ``aiosmtpd``: an aiosmtpd sink in a thread of this process (on uvloop), stamping
  ``time.monotonic`` in its DATA handler; ~0.3-0.5 CPU ms per mail of the same two cores
  (the figures before smtp-sink, for comparison).

Before the measured batches, the workers deliver ``--warmup-batches`` batches of other
vessels (20 by default), so the figures are those of a relay that has been running (pools
open, statements prepared, the codec's caches filled), not of its first second; they are
not counted.

Measured per run:

- **msgs_per_s**: messages mailed / wall time from the first publish to the last first
  arrival at the sink (ingest, verify, commit, claim, SMTP);
- **p50_ms / p99_ms**: per message, first arrival at the sink minus the moment its batch
  was handed to the MQTT client (publish);
- **relay_cpu_ms_per_msg**: CPU time (user + system, from ``/proc``) of the relay worker
  processes from their subscription (start-up not counted) to just before they are
  stopped, per message mailed (the sink's and the publisher's CPU are not in it);
  **db_cpu_ms_per_msg** the same for the PostgreSQL server's processes (0 for SQLite,
  which runs inside the relay); **sink_cpu_ms_per_msg** the same for the sink: the
  smtp-sink process, or with aiosmtpd this process (the sink's thread and the
  publisher, which can't be told apart). On a shared machine msgs/s falls with the other
  load; CPU per message much less; **load** is the machine's 1-minute load average at the
  end of the run (``os.getloadavg``), to read msgs/s by; **sink** names the sink.

Every measured mail must arrive once: **undelivered** counts those that did not,
**repeats** the mails taken beyond one per Message-ID; the warm-up's are not counted.

The sink must not be what limits the figure: before the runs, the JSON's top-level
``sink`` measures it alone (``--sink-messages`` mails from 8 kept aiosmtplib sessions in
this process, so a lower bound of what it takes): its msgs/s and CPU per message, the
client's included (this process's, plus smtp-sink's process).

``--profile DIR`` runs each relay worker under ``py-spy record`` (PyPI ``py-spy``; a
flame graph ``DIR/{store}-{workers}-w{n}.svg`` per worker, or ``--profile-format
speedscope``) to see where the time goes.

Usage::

    python benchmarks/shore_throughput.py                    # table
    python benchmarks/shore_throughput.py --json             # {"runs": [...], "sink": {...}}
    python benchmarks/shore_throughput.py --sink aiosmtpd    # the in-process sink
    python benchmarks/shore_throughput.py --vessels 2 --batches 2 --runs sqlite:1   # quick

Needs Mosquitto and PostgreSQL installed (``scripts/install-system-deps``). Reuses the relay
worker process handling of ``benchmarks/fleet.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import aiosmtplib  # noqa: E402
import uvloop  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402

from benchmarks.fleet import Worker, _pct, corpus_texts  # noqa: E402
from common.keyfiles import write_secret  # noqa: E402
from protocol.envelopes import Channel, ContactBookChange, CrewMessage, Envelope  # noqa: E402
from protocol.languages import Language  # noqa: E402
from shore.store import RelayStore, SqliteStore, VesselInfo  # noqa: E402
from shore.store.postgres import PostgresStore  # noqa: E402
from tests.kit.mosquitto import MosquittoBroker  # noqa: E402
from tests.kit.ports import free_port  # noqa: E402
from tests.kit.smtp_sink import SmtpSink, SmtpSinkMissing  # noqa: E402
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY, PostgresServer, uplink  # noqa: E402

FIRST_VESSEL = 2000
#: The warm-up's vessels (``--warmup-batches``), numbered apart from the measured ones.
FIRST_WARMUP_VESSEL = 1000
CREW, CONTACT = 3, 1
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<(\d+)\.(\d+)@", re.MULTILINE | re.IGNORECASE)


class StampingSink:
    """aiosmtpd handler: the first arrival time (``time.monotonic``) of each Message-ID."""

    def __init__(self) -> None:
        self.first: dict[tuple[int, int], float] = {}
        self.mails = 0
        self.lock = threading.Lock()
        self.changed = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        now = time.monotonic()
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        found = _MESSAGE_ID.search(content)
        with self.lock:
            self.mails += 1
            if found is not None:
                self.first.setdefault((int(found.group(1)), int(found.group(2))), now)
        return "250 2.0.0 OK queued"

    def reset(self) -> None:
        with self.lock:
            self.first.clear()
            self.mails = 0

    def count(self) -> int:
        with self.lock:
            return len(self.first)


class SinkUnavailable(RuntimeError):
    """The chosen sink cannot be run here (its message says what to do instead)."""


class Sink(Protocol):
    """What a run needs of the SMTP sink the relay delivers into."""

    #: ``--sink``'s name for it, reported with the runs.
    name: str
    port: int
    #: Whether it runs in this process (its CPU then shares ``time.process_time``).
    in_process: bool

    def clock(self) -> float:
        """Now, on the clock the sink's arrival times are on (publish times are taken on it)."""
        ...

    def reset(self) -> None:
        """Forget the mails so far (the warm-up's, the capacity measurement's)."""
        ...

    def count(self) -> int:
        """Distinct Message-IDs arrived since the last reset (progress while waiting)."""
        ...

    def arrivals(self) -> tuple[dict[tuple[int, int], float], int]:
        """Since the last reset: the first arrival of each Message-ID, and mails taken."""
        ...

    def cpu_s(self) -> float:
        """CPU seconds so far of what the sink column counts."""
        ...


class AiosmtpdSink:
    """``--sink aiosmtpd``: StampingSink under aiosmtpd in its own thread of this process, on
    uvloop as the relay; arrival is ``time.monotonic`` in its DATA handler. Its CPU can't be
    told apart from the publisher's: the column is this whole process's."""

    name = "aiosmtpd"
    in_process = True

    def __init__(self) -> None:
        self.handler = StampingSink()
        self.port = free_port()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, loop=uvloop.new_event_loop()
        )

    @classmethod
    @contextlib.contextmanager
    def started(cls) -> Iterator[AiosmtpdSink]:
        sink = cls()
        sink.controller.start()
        try:
            yield sink
        finally:
            sink.controller.stop()

    def clock(self) -> float:
        return time.monotonic()

    def reset(self) -> None:
        self.handler.reset()

    def count(self) -> int:
        return self.handler.count()

    def arrivals(self) -> tuple[dict[tuple[int, int], float], int]:
        with self.handler.lock:
            return dict(self.handler.first), self.handler.mails

    def cpu_s(self) -> float:
        return time.process_time()


class DumpingSink:
    """``--sink smtp-sink``: Postfix's smtp-sink (``tests/kit/smtp_sink.py``), a process of
    its own that dumps each mail to a file of ``dump_dir``.

    smtp-sink creates the file at MAIL FROM, buffers DATA in 4 KiB writes and writes the
    rest and closes the file when the final dot arrives, before its 250 reply: the file's
    mtime is when the mail was taken, on the wall clock (``time.time``, which publish times
    are then taken on). The kernel may stamp it from its coarse clock, up to one tick
    (``time.clock_getres(5)``, 4 ms here) before the true moment. A file still empty is a
    transaction not yet (or never) finished, not a mail. The column is smtp-sink's process
    CPU (``/proc``): the publisher, in this process, is not in it.

    The files go on tmpfs (``/dev/shm``) where there is one: on this machine's ext4 each
    file made cost smtp-sink ~0.7 ms of kernel time, twice aiosmtpd's whole cost per mail,
    where on tmpfs it is a tenth of that; a smarthost elsewhere spends neither here."""

    name = "smtp-sink"
    in_process = False

    def __init__(self, sink: SmtpSink, dump_dir: Path) -> None:
        self.sink = sink
        self.port = sink.port
        self.dump_dir = dump_dir
        #: Files of mails before the last reset.
        self.ignored: set[str] = set()
        #: Message-ID of each file read since the last reset.
        self.seen: dict[str, tuple[int, int]] = {}

    @classmethod
    @contextlib.contextmanager
    def started(cls) -> Iterator[DumpingSink]:
        """smtp-sink running on loopback; SinkUnavailable when it cannot be had."""
        shm = Path("/dev/shm")
        on_tmpfs = shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)
        with (
            tempfile.TemporaryDirectory(
                prefix="shore-bench-sink-", dir=shm if on_tmpfs else None
            ) as tmp,
            cls._running(Path(tmp) / "mails") as sink,
        ):
            yield sink

    @classmethod
    @contextlib.contextmanager
    def _running(cls, dump_dir: Path) -> Iterator[DumpingSink]:
        sink = SmtpSink(dump_dir)
        try:
            sink.start()  # fetches it with scripts/install-smtp-sink when missing
        except (SmtpSinkMissing, OSError, RuntimeError) as error:
            raise SinkUnavailable(
                f"smtp-sink cannot be run ({error}): run scripts/install-smtp-sink (it "
                "fetches Postfix's smtp-sink into .tools/), or measure with --sink aiosmtpd"
            ) from error
        try:
            yield cls(sink, dump_dir)
        finally:
            sink.stop()

    def clock(self) -> float:
        return time.time()

    def _mails(self) -> Iterator[tuple[str, bytes]]:
        """Name and content of each file taken since the last reset (non-empty)."""
        with os.scandir(self.dump_dir) as entries:
            for entry in entries:
                if entry.name not in self.ignored:
                    content = Path(entry.path).read_bytes()
                    if content:
                        yield entry.name, content

    def reset(self) -> None:
        self.ignored.update(name for name, _content in self._mails())
        self.seen.clear()

    def count(self) -> int:
        with os.scandir(self.dump_dir) as entries:
            names = [entry.name for entry in entries]
        for name in names:
            if name in self.ignored or name in self.seen:
                continue
            # A file being written may lack its Message-ID yet: read again at the next count.
            found = _MESSAGE_ID.search((self.dump_dir / name).read_bytes())
            if found is not None:
                self.seen[name] = (int(found.group(1)), int(found.group(2)))
        return len(set(self.seen.values()))

    def arrivals(self) -> tuple[dict[tuple[int, int], float], int]:
        """Read afresh (every file is complete once the relay workers are stopped)."""
        first: dict[tuple[int, int], float] = {}
        mails = 0
        for name, content in self._mails():
            mails += 1
            found = _MESSAGE_ID.search(content)
            if found is not None:
                key = (int(found.group(1)), int(found.group(2)))
                taken = (self.dump_dir / name).stat().st_mtime_ns / 1e9
                first[key] = min(taken, first.get(key, taken))
        return first, mails

    def cpu_s(self) -> float:
        return _cpu_s(self.sink.pid)


SINKS = ("smtp-sink", "aiosmtpd")
#: What the sink CPU column counts, per sink.
SINK_CPU = {
    "smtp-sink": "the smtp-sink process",
    "aiosmtpd": "this process (the aiosmtpd sink's thread and the publisher)",
}


def relay_tuning(tuning: str) -> str:
    """``[relay]`` lines for ``--decode-processes`` (none: the relay's default)."""
    found = dict(part.split("=") for part in tuning.split(",") if part)
    return f"decode_processes = {found['decode']}\n" if "decode" in found else ""


def delivery_tuning(tuning: str) -> str:
    """``[delivery]`` lines for ``--delivery-workers`` (none: the relay's default)."""
    found = dict(part.split("=") for part in tuning.split(",") if part)
    return f"workers = {found['delivery']}\n" if "delivery" in found else ""


class RelayWorker(Worker):
    """A ``vessel-relay shore run`` process with delivery to the sink (fleet.Worker's
    spawn / wait_subscribed / stop, another configuration)."""

    def __init__(
        self,
        data: Path,
        number: int,
        store: str,
        broker: MosquittoBroker,
        smtp_port: int,
        tuning: str = "",
    ) -> None:
        data.mkdir(parents=True, exist_ok=True)
        write_secret(data / "shore.key", SHORE_KEY.seed)
        write_secret(data / "reply.key", b"r" * 32)
        self.config = data / "relay.toml"
        self.config.write_text(
            f'[relay]\ndata_dir = "{data}"\nworker = {number}\n{relay_tuning(tuning)}'
            f"[store]\n{store}\n"
            f'[mqtt]\nurl = "mqtt://{broker.host}:{broker.port}"\n'
            "[downlink]\ntick_s = 0.5\nresend_after_s = 30.0\nresend_max_s = 600.0\n"
            f"[delivery]\nenabled = true\nsmtp_host = '127.0.0.1'\nsmtp_port = {smtp_port}\n"
            f"{delivery_tuning(tuning)}",
            encoding="utf-8",
        )
        self.log = data / "relay.log"
        self.process = None
        self.profile: Path | None = None
        self.profile_format = "flamegraph"

    def spawn(self) -> None:
        if self.profile is None:
            super().spawn()
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [py_spy, "record", "--format", self.profile_format, "-o", str(self.profile),
                 "--rate", "200", "--", sys.executable, "-c",
                 "from vessel_relay.cli import main; main()",
                 "shore", "run", "-c", str(self.config)],
                stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
            )  # fmt: skip

    def stop(self) -> None:
        if self.profile is not None and self.process is not None and self.process.poll() is None:
            # SIGTERM the relay under py-spy: it stops gracefully, and py-spy, seeing it end,
            # writes the profile.
            for pid in _process_tree(self.process.pid)[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(60)
        super().stop()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the worker's log, for an error message."""
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the worker (and, under py-spy, its child) used."""
        if self.process is None:
            return 0.0
        return sum(_cpu_s(pid) for pid in _process_tree(self.process.pid))


async def _store_state(
    backend: str, pg: PostgresServer | None, data: Path, dsn: str | None
) -> dict[str, int]:
    """Counts of the relay's messages by state and deliveries by where they stand (for a
    stalled run's error)."""
    store: RelayStore
    if dsn is not None:
        store = await PostgresStore.open(dsn)
    else:
        store = await SqliteStore.open(data / "relay.db")
    try:
        async with store.db.transaction() as tx:
            rows = await tx.fetch("SELECT 'message ' || state, COUNT(*) FROM messages GROUP BY 1")
            rows += await tx.fetch(
                "SELECT 'delivery ' || COALESCE(outcome, CASE WHEN lease_until IS NOT NULL "
                "THEN 'being sent' WHEN attempts = 0 THEN 'due' ELSE 'retrying' END), "
                "COUNT(*) FROM deliveries GROUP BY 1"
            )
    finally:
        await store.close()
    return {str(r[0]): int(r[1]) for r in rows}


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``)."""
    found = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += _process_tree(int(child))
    return found


def _postgres_cpu_s(pg: PostgresServer | None) -> float:
    """CPU seconds of the PostgreSQL server (postmaster and its backends) so far."""
    if pg is None:
        return 0.0
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    return sum(_cpu_s(pid) for pid in _process_tree(postmaster))


def _cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (Linux ``/proc``); 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    store: str
    workers: int
    messages: int
    msgs_per_s: float
    p50_ms: float
    p99_ms: float
    wall_s: float = 0.0
    max_ms: float = 0.0
    undelivered: int = 0
    repeats: int = 0
    relay_cpu_ms_per_msg: float = 0.0
    db_cpu_ms_per_msg: float = 0.0
    sink_cpu_ms_per_msg: float = 0.0
    load: float = 0.0
    #: The SMTP sink delivered into (``--sink``).
    sink: str = ""


@dataclass
class SinkCapacity:
    messages: int
    msgs_per_s: float
    cpu_ms_per_msg: float


async def sink_capacity(sink: Sink, messages: int) -> SinkCapacity:
    """How fast the sink takes mail on its own: ``messages`` small mails from 8 kept
    sessions in this process (the client's CPU counted with the sink's: a lower bound)."""
    template = (
        "From: relay@relay.example.org\r\nTo: family@example.com\r\nSubject: capacity\r\n"
        "Message-ID: <1.{seq}@relay.example.org>\r\nContent-Type: text/plain; "
        'charset="utf-8"\r\n\r\n' + "All well on board, we land the catch on Friday.\r\n" * 4
    )
    sink.reset()
    sessions = [aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port) for _ in range(8)]
    for session in sessions:
        await session.connect()
    pending = iter(range(messages))

    async def send(session: aiosmtplib.SMTP) -> None:
        for seq in pending:
            data = template.format(seq=seq).encode("ascii")
            await session.sendmail("relay@relay.example.org", ["family@example.com"], data)

    def cpu_s() -> float:
        """This process's CPU (the client; with aiosmtpd the sink too), and smtp-sink's."""
        return time.process_time() + (0.0 if sink.in_process else sink.cpu_s())

    started, cpu_started = time.monotonic(), cpu_s()
    try:
        await asyncio.gather(*(send(session) for session in sessions))
    finally:
        wall, cpu = time.monotonic() - started, cpu_s() - cpu_started
        for session in sessions:
            await session.quit()
    sink.reset()
    return SinkCapacity(messages, round(messages / wall, 1), round(cpu * 1000 / messages, 3))


def make_batches(vessel_id: int, batches: int, per_batch: int, rng: random.Random) -> list[bytes]:
    """A vessel's signed uplink batches; batch 1 carries the contact book."""
    texts = corpus_texts()
    # Written now, as a vessel with a right clock writes them (see the relay's time to live).
    minutes = int(time.time() // 60)
    out = []
    for index in range(batches):
        envelopes: list[Envelope] = []
        if index == 0:
            envelopes.append(
                ContactBookChange(
                    crew=CREW, contact=CONTACT, channel=Channel.EMAIL,
                    address=f"family{vessel_id}@example.com", written_minutes=minutes,
                    contact_lang=Language.MYA,
                )
            )  # fmt: skip
        for n in range(per_batch):
            lang, text = rng.choice(texts)
            seq = index * per_batch + n + 1
            envelopes.append(
                CrewMessage(message_seq=seq, crew=CREW, contact=CONTACT,
                            written_minutes=minutes, lang=lang, body=text)
            )  # fmt: skip
        out.append(uplink(vessel_id, index + 1, envelopes, minutes=minutes))
    return out


async def register(store: RelayStore, vessels: Sequence[int]) -> None:
    try:
        for vessel_id in vessels:
            info = VesselInfo(f"Vessel {vessel_id}", "TH", f"TH-{vessel_id}", "Co", ())
            await store.add_vessel(info, VESSEL_KEY.verify_key.key, time.time() - 3600, vessel_id)
    finally:
        await store.close()


async def publish_all(
    broker: MosquittoBroker,
    plan: list[tuple[int, int, bytes]],
    per_batch: int,
    rate: float,
    clock: Callable[[], float] = time.monotonic,
) -> dict[tuple[int, int], float]:
    """Publish ``(vessel, batch_seq, bytes)`` in order; when each message was published (on
    ``clock``, the sink's)."""
    published: dict[tuple[int, int], float] = {}
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-fleet") as client:
        start = time.monotonic()
        for index, (vessel_id, batch_seq, data) in enumerate(plan):
            if rate > 0:
                delay = start + index * per_batch / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = clock()
            await client.publish(f"vr/{vessel_id}/u", data, qos=1)
            first = (batch_seq - 1) * per_batch + 1
            for seq in range(first, first + per_batch):
                published[(vessel_id, seq)] = sent
    return published


async def run_once(
    backend: str,
    workers: int,
    args: argparse.Namespace,
    broker: MosquittoBroker,
    pg: PostgresServer | None,
    sink: Sink,
    work: Path,
) -> Run:
    vessels = [FIRST_VESSEL + i for i in range(args.vessels)]
    rng = random.Random(args.seed)
    batches = {v: make_batches(v, args.batches, args.messages, rng) for v in vessels}
    # The warm-up: other vessels' batches, delivered before the measured ones are published
    # (a relay that has been running: its pools open, statements prepared, caches filled).
    warm_vessels = [FIRST_WARMUP_VESSEL + i for i in range(min(args.vessels, args.warmup_batches))]
    warm_plan = [
        (v, seq, data)
        for v in warm_vessels
        for seq, data in enumerate(
            make_batches(v, -(-args.warmup_batches // len(warm_vessels)), args.messages, rng), 1
        )
    ][: args.warmup_batches]
    data = work / f"{backend}-{workers}"
    repeat = 1
    while data.exists():  # the same run asked for again
        repeat += 1
        data = work / f"{backend}-{workers}-{repeat}"
    data.mkdir(parents=True)
    dsn: str | None = None
    if backend == "postgres":
        assert pg is not None
        dsn = pg.create_database()
        await register(await PostgresStore.open(dsn), vessels + warm_vessels)
        store = f'backend = "postgres"\ndsn = "{dsn}"'
    else:
        await register(await SqliteStore.open(data / "relay.db"), vessels + warm_vessels)
        store = f'backend = "sqlite"\npath = "{data / "relay.db"}"'
    relay = [
        RelayWorker(data / f"w{n}", n, store, broker, sink.port, tuning(args))
        for n in range(1, workers + 1)
    ]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        suffix = "svg" if args.profile_format == "flamegraph" else "json"
        for n, worker in enumerate(relay, 1):
            worker.profile = args.profile.resolve() / f"{backend}-{workers}-w{n}.{suffix}"
            worker.profile_format = args.profile_format
    # Contact books first (batch 1 of every vessel), then the rest interleaved by vessel.
    plan = [(v, 1, batches[v][0]) for v in vessels]
    plan += [(v, seq, batches[v][seq - 1]) for seq in range(2, args.batches + 1) for v in vessels]
    total = len(plan) * args.messages
    sink.reset()
    # The aiosmtpd sink shares this process with the publisher's heap (encoders' caches, the
    # signed batches): frozen, the collector's passes during the run scan only what the run
    # makes, so the sink's replies don't wait on them.
    gc.collect()
    gc.freeze()
    cpu_at_start = db_cpu_at_start = sink_cpu_at_start = 0.0
    try:
        for worker in relay:
            worker.spawn()
        await asyncio.gather(*(worker.wait_subscribed() for worker in relay))
        if warm_plan:
            await publish_all(broker, warm_plan, args.messages, 0.0)
            expected = len(warm_plan) * args.messages
            try:
                async with asyncio.timeout(args.timeout_s):
                    while sink.count() < expected:  # noqa: ASYNC110 - as below
                        await asyncio.sleep(0.05)
            except TimeoutError:
                tails = "\n".join(worker.log_tail() for worker in relay)
                raise RuntimeError(
                    f"{backend} x{workers}: the warm-up's {expected} mails did not all reach "
                    f"the sink in {args.timeout_s:.0f} s ({sink.count()} did); the store "
                    f"holds {await _store_state(backend, pg, data, dsn)}; the workers "
                    f"said:\n{tails}"
                ) from None
            sink.reset()
        cpu_at_start = sum(worker.cpu_s() for worker in relay)  # start-up (imports) not counted
        db_cpu_at_start = _postgres_cpu_s(pg) if backend == "postgres" else 0.0
        sink_cpu_at_start = sink.cpu_s()
        published = await publish_all(broker, plan, args.messages, args.rate, sink.clock)
        async with asyncio.timeout(args.timeout_s):
            while sink.count() < total:  # noqa: ASYNC110 - the sink fills from its own thread
                # (or process)
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    finally:
        cpu_s = sum(worker.cpu_s() for worker in relay) - cpu_at_start
        sink_cpu_s = sink.cpu_s() - sink_cpu_at_start
        db_cpu_s = _postgres_cpu_s(pg) - db_cpu_at_start if backend == "postgres" else 0.0
        for worker in relay:
            worker.stop()
        gc.unfreeze()
    arrived, mails = sink.arrivals()
    latencies = sorted(arrived[key] - published[key] for key in arrived if key in published)
    first = min(published.values())
    last = max(arrived.values(), default=first)
    wall = max(1e-9, last - first)
    return Run(
        store=backend,
        workers=workers,
        messages=len(arrived),
        msgs_per_s=round(len(arrived) / wall, 1),
        p50_ms=round(_pct(latencies, 50) * 1000, 1),
        p99_ms=round(_pct(latencies, 99) * 1000, 1),
        wall_s=round(wall, 2),
        max_ms=round((latencies[-1] if latencies else 0.0) * 1000, 1),
        undelivered=total - len(arrived),
        repeats=mails - len(arrived),
        relay_cpu_ms_per_msg=round(cpu_s * 1000 / max(1, len(arrived)), 2),
        db_cpu_ms_per_msg=round(db_cpu_s * 1000 / max(1, len(arrived)), 2),
        sink_cpu_ms_per_msg=round(sink_cpu_s * 1000 / max(1, len(arrived)), 2),
        load=round(os.getloadavg()[0], 2),
        sink=sink.name,
    )


def parse_runs(text: str) -> list[tuple[str, int]]:
    runs = []
    for part in text.split(","):
        backend, _, workers = part.partition(":")
        if backend not in ("sqlite", "postgres") or not workers.isdigit():
            raise argparse.ArgumentTypeError(
                f"a run is sqlite:N or postgres:N (like postgres:2), not {part!r}"
            )
        runs.append((backend, int(workers)))
    return runs


def started_sink(name: str) -> contextlib.AbstractContextManager[Sink]:
    """The ``--sink`` named, running (SinkUnavailable when smtp-sink cannot be had)."""
    if name == "aiosmtpd":
        return AiosmtpdSink.started()
    return DumpingSink.started()


async def main_async(args: argparse.Namespace) -> tuple[SinkCapacity | None, list[Run]]:
    results = []
    capacity = None
    with (
        started_sink(args.sink) as sink,
        tempfile.TemporaryDirectory(prefix="shore-bench-") as tmp,
    ):
        work = Path(tmp)
        os.chmod(tmp, 0o755)
        if args.sink_messages > 0:
            capacity = await sink_capacity(sink, args.sink_messages)
        pg = None
        if any(backend == "postgres" for backend, _ in args.runs):
            pg = PostgresServer(work / "pg")
            pg.start()
        try:
            for backend, workers in args.runs:
                # A broker of its own per run: a run's persistent sessions (a worker that a
                # later run with fewer workers does not start is still in the shared
                # subscription, and Mosquitto would queue it every other batch) stay behind.
                with MosquittoBroker(
                    Path(tempfile.mkdtemp(prefix="mosquitto-", dir=work)),
                    extra_config=("max_inflight_messages 100",),
                ) as broker:
                    run = await run_once(backend, workers, args, broker, pg, sink, work)
                results.append(run)
                if not args.json:
                    print(f"  ... {backend} x{workers} done", file=sys.stderr)
        finally:
            if pg is not None:
                pg.stop()
    return capacity, results


def table(
    results: Sequence[Run], args: argparse.Namespace, capacity: SinkCapacity | None = None
) -> str:
    offered = "all at once" if args.rate <= 0 else f"paced at {args.rate:,.0f} messages/s"
    lines = [
        f"{args.vessels} vessels x {args.batches} batches x {args.messages} messages, "
        f"published {offered}, delivered into {args.sink}, {os.cpu_count()} cores",
        "",
        "| store | workers | messages | msgs/s | p50 ms | p99 ms | max ms | undelivered | "
        "repeats | relay CPU ms/msg | db CPU ms/msg | sink CPU ms/msg | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.store} | {r.workers} | {r.messages:,} | {r.msgs_per_s:,.0f} | "
            f"{r.p50_ms:,.0f} | {r.p99_ms:,.0f} | {r.max_ms:,.0f} | {r.undelivered} | "
            f"{r.repeats} | {r.relay_cpu_ms_per_msg:.2f} | {r.db_cpu_ms_per_msg:.2f} | "
            f"{r.sink_cpu_ms_per_msg:.2f} | {r.load:.1f} |"
        )
    lines.append("")
    lines.append(
        f"Latency: publish of the batch to the mail's first arrival at the SMTP sink "
        f"({args.sink}). Sink CPU: {SINK_CPU[args.sink]}."
    )
    if capacity is not None:
        lines.append(
            f"The sink alone ({args.sink}): {capacity.msgs_per_s:,.0f} msgs/s, "
            f"{capacity.cpu_ms_per_msg:.2f} CPU ms/msg with its client's in this process "
            f"({capacity.messages:,} mails)."
        )
    return "\n".join(lines)


def tuning(args: argparse.Namespace) -> str:
    """The relay settings the command line overrides, as ``key=value,...``."""
    parts = []
    if args.decode_processes is not None:
        parts.append(f"decode={args.decode_processes}")
    if args.delivery_workers is not None:
        parts.append(f"delivery={args.delivery_workers}")
    return ",".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--vessels", type=int, default=10)
    parser.add_argument("--batches", type=int, default=10, help="batches per vessel")
    parser.add_argument("--messages", type=int, default=20, help="messages per batch")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="offered messages/s (0: all at once)"
    )
    parser.add_argument(
        "--runs",
        type=parse_runs,
        default=[("sqlite", 1), ("postgres", 1), ("postgres", 2)],
        help="comma-separated store:workers (default sqlite:1,postgres:1,postgres:2)",
    )
    parser.add_argument(
        "--warmup-batches",
        type=int,
        default=20,
        help="batches of other vessels delivered before the measured ones (0: none)",
    )
    parser.add_argument(
        "--sink",
        choices=SINKS,
        default="smtp-sink",
        help="the SMTP sink delivered into: Postfix's smtp-sink, its own process (fetched by "
        "scripts/install-smtp-sink when missing), or aiosmtpd in a thread of this process",
    )
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--sink-messages",
        type=int,
        default=4000,
        help="mails to measure the sink alone with before the runs (0: don't)",
    )
    parser.add_argument(
        "--decode-processes",
        type=int,
        default=None,
        help="[relay] decode_processes of each worker (default: the relay's default)",
    )
    parser.add_argument(
        "--delivery-workers",
        type=int,
        default=None,
        help="[delivery] workers of each relay worker (default: the relay's default)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--profile", type=Path, default=None, help="run each worker under py-spy; output here"
    )
    parser.add_argument(
        "--profile-format", choices=("flamegraph", "speedscope", "raw"), default="flamegraph"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        capacity, results = asyncio.run(main_async(args))
    except SinkUnavailable as error:
        sys.exit(f"shore_throughput: {error}")
    if args.json:
        out: dict[str, Any] = {"runs": [asdict(r) for r in results]}
        if capacity is not None:
            out["sink"] = asdict(capacity)
        print(json.dumps(out, indent=2))
    else:
        print(table(results, args, capacity))


if __name__ == "__main__":
    main()
