"""Canary scan (issue 8): after a run with crashes, no canary report is found in clear
anywhere the owner or the shore operator can look, on board above all.

Mosquitto, the relay (``vessel-relay shore run``) and the vessel's agent are separate
processes, the agent and the relay with their own ``TMPDIR``; the vessel reaches the broker
through the link emulator, whose capture hook keeps every byte that crosses, both ways.
Crew members file canary grievance reports (intake mode B: the agent's HTTP API) in
Burmese (Unicode and Zawgyi), Khmer, Thai, Lao and English, each with its own serial; the
agent is SIGKILLed a third of the way through and the relay two thirds of the way, both
restarted. Reports go into the vessel's grievance lane (one block a lane period leaves,
report or cover), so most are still on board, sealed, when the test looks, which is the
point: the test waits until the lane's blocks of a few periods have been acknowledged by
the relay and the family control message is stored there, copies the databases as they
are while running (with -wal and -shm), SIGKILLs both (a power cut: what a crash leaves),
then searches (:mod:`tests.kit.canary`) every file under the agent's and the relay's
directories and those copies, their logs and temp dirs, the shore's mail sink and the
broker's directory, and every MQTT byte captured (whole streams, then each PUBLISH payload
raw, decoded as a batch: texts and sealed blobs), each also decompressed (zstd frames and
zlib streams found in it): zero hits. The union's own directory holds the reports by design
and is left out. A report the lane could not take at the moment (HTTP 503, "send it again
after ...") is counted: its words must leave no trace either.

That the scan covers real reports: with the union's key, every report that got a 201
opens whole, under the case number it was given, from the blocks on board and in the
captured uplink.

Positive control: a crew member's family message carries a canary-like text of its own
(words and serial not among the reports'); the same scanner must find it in the decoded
uplink payloads and in the relay's store, so a scan that finds nothing is shown to look.

Default run: 300 reports (about 60 s on 2 cores). The 1,000-report run of the issue is
``test_canary_scan_1000`` (marked slow), or set ``CANARY_REPORTS=1000``: one vessel's lane
then takes a few hundred of them and tells the crew to send the rest again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import sqlite3
import sys
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import zstandard

from common.codebooks import default_codebook
from protocol.batch import Direction as BatchDirection
from protocol.batch import decode_batch
from protocol.envelopes import LaneBlock
from protocol.errors import ProtocolError
from protocol.languages import Language
from shore.union.keys import UnionIdentity, init_union
from tests.kit.canary import (
    Canary,
    MqttStreams,
    Needles,
    Scan,
    canaries,
    digits,
    scan_files,
)
from tests.kit.lane import union_reads
from tests.kit.mosquitto import find_mosquitto
from tests.kit.wait import eventually
from vessel_relay import link_emulator
from vessel_relay.demo.brokers import MosquittoBroker, free_port, wait_listening
from vessel_relay.demo.setup import (
    RelaySetup,
    Tuning,
    VesselSetup,
    numbered_crew,
    prepare_relay,
    prepare_vessel,
    register_vessels,
)
from vessel_relay.demo.sinks import MaildirSink
from vessel_relay.demo.system import Child

DEFAULT_REPORTS = int(os.environ.get("CANARY_REPORTS", "300"))
CONTROL_MARKER = "ထိန်းချုပ်စမ်းသပ် မိသားစုစာ"  # no word of it is a report canary's
CONTROL_SERIAL = 9001
CONTROL_TEXT = f"{CONTROL_MARKER} {digits(CONTROL_SERIAL, chr(0x1040))}"


@dataclass
class Run:
    work: Path
    union: UnionIdentity
    relay_setup: RelaySetup
    vessel: VesselSetup
    relay: Child
    agent: Child
    capture: MqttStreams
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.vessel.http_port}"


@contextlib.asynccontextmanager
async def canary_system(work: Path) -> AsyncIterator[Run]:
    """Broker, capturing link emulator, relay and one vessel's agent, as processes."""
    find_mosquitto()
    union = init_union(
        work / "union",
        1,
        "Fishers' Union",
        f"http://127.0.0.1:{free_port()}",
        (Language.MYA, Language.KHM, Language.THA, Language.LAO, Language.ENG),
    )
    broker = MosquittoBroker(work / "broker", persistence=False)
    await broker.start()
    sink = MaildirSink(work / "maildir")
    sink.start()
    tmp = work / "tmp"
    tmp.mkdir()
    capture = MqttStreams()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sink.stop)
        stack.push_async_callback(broker.stop)
        relay_setup = prepare_relay(
            work / "relay",
            broker_url=broker.client_url(),
            mqtt_version="5",
            smtp_host=sink.host,
            smtp_port=sink.port,
            fast=True,
        )
        link = link_emulator.LinkEmulator(
            "127.0.0.1",
            0,
            broker.host,
            broker.port,
            link_emulator.UNLIMITED,
            capture=capture,
            seed=1,
        )
        await stack.enter_async_context(link)
        tuning = Tuning(
            idle_poll_s=0.5, min_gap_s=0.2, resend_after_s=3.0, ack_wait_s=4.0, min_timeout_s=4.0
        )
        vessel = await asyncio.to_thread(
            prepare_vessel,
            work / "vessel-1",
            vessel_id=1,
            broker_url=f"mqtt://{link.host}:{link.port}",
            mqtt_version="5",
            shore_public_key=relay_setup.shore_public_key,
            union=union.card,
            crew=numbered_crew(3, 1),
            http_port=free_port(),
            smtp_port=free_port(),
            tuning=tuning,
        )
        await register_vessels(relay_setup, [vessel])
        env = {"TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}
        relay = Child(
            [
                str(Path(sys.executable).parent / "vessel-relay"),
                "shore",
                "run",
                "--config",
                str(relay_setup.config_path),
                "--verbose",  # log each batch: more for the scan to look through
            ],
            work / "relay.log",
            env=env,
        )
        agent = Child(
            [sys.executable, "-m", "vessel_relay.demo.agent_main", str(vessel.data_dir)],
            work / "agent.log",
            env=env,
        )
        relay.start()
        stack.callback(relay.stop)
        agent.start()
        stack.callback(agent.stop)
        run = Run(work, union, relay_setup, vessel, relay, agent, capture, tmp)
        await _agent_listening(run)
        yield run


async def _agent_listening(run: Run) -> None:
    if not await wait_listening("127.0.0.1", run.vessel.http_port, timeout_s=60):
        raise RuntimeError(f"the agent did not start:\n{run.agent.log()}")


async def _login(http: httpx.AsyncClient, crew: int, pin: str) -> dict[str, str]:
    response = await http.post("/api/login", json={"crew": crew, "pin": pin})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _relay_messages(relay_db: Path) -> set[int]:
    """Message numbers of the family messages the relay's store holds."""
    if not relay_db.exists():
        return set()
    db = sqlite3.connect(f"file:{relay_db}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute(
            "SELECT message_seq FROM messages WHERE vessel_id = 1 AND kind = 'message'"
        ).fetchall()
    except sqlite3.OperationalError:
        return set()  # the relay has not made its tables yet
    finally:
        db.close()
    return {int(row[0]) for row in rows}


def _lane_acknowledged(vessel_db: Path) -> int:
    """Lane blocks the relay has acknowledged, read beside the running agent."""
    db = sqlite3.connect(f"file:{vessel_db}?mode=ro", uri=True, timeout=30)
    try:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM messages WHERE kind = 'lane' AND state = 'acknowledged'"
        ).fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
    return int(count)


def _lane_blocks_in(vessel_db: Path) -> list[bytes]:
    """Every uplink lane block in a copy of the vessel's database: released, then waiting."""
    db = sqlite3.connect(f"file:{vessel_db}?mode=ro", uri=True, timeout=30)
    try:
        released = db.execute(
            "SELECT sealed FROM messages WHERE kind = 'lane' ORDER BY message_seq"
        ).fetchall()
        waiting = db.execute("SELECT block FROM lane_reservoir ORDER BY order_key").fetchall()
    finally:
        db.close()
    return [bytes(row[0]) for row in (*released, *waiting)]


@dataclass
class Filed:
    """What the agent answered the reports: case numbers, and how many it could not take."""

    cases: list[str]
    refused: int
    control_seq: int


async def _file_reports(run: Run, reports: list[Canary]) -> Filed:
    """File every report, crew members in turn; SIGKILL and restart the agent after a
    third and the relay after two thirds; then send the control message. A report the
    lane cannot take now (503 with its sentence) is counted, not retried."""
    cases: list[str] = []
    refused = 0
    crew = run.vessel.crew
    async with httpx.AsyncClient(base_url=run.url, timeout=30) as http:
        tokens: dict[int, dict[str, str]] = {}
        for n, canary in enumerate(reports):
            if n == len(reports) // 3:
                run.agent.kill()
                run.agent.start()
                await _agent_listening(run)
                tokens.clear()  # sessions live in the agent's memory only
            if n == 2 * len(reports) // 3:
                run.relay.kill()
                run.relay.start()
            member = crew[n % len(crew)]
            if member.crew not in tokens:
                tokens[member.crew] = await _login(http, member.crew, member.pin)
            filed = await http.post(
                "/api/grievances",
                json={
                    "union": 1,
                    "category": "withholding_of_wages",
                    "text": canary.text,
                    "lang": canary.kind.lang.code,
                    "anonymous": n % 2 == 0,
                },
                headers=tokens[member.crew],
            )
            if filed.status_code == 503 and filed.json()["type"].endswith("lane-full"):
                refused += 1
                continue
            assert filed.status_code == 201, filed.text
            cases.append(str(filed.json()["case_number"]))
        # the positive control: a family message, readable by design at the relay
        sent = await http.post(
            "/api/messages", json={"contact": 1, "text": CONTROL_TEXT}, headers=tokens[crew[0].crew]
        )
        assert sent.status_code == 201, sent.text
    return Filed(cases, refused, int(sent.json()["message_seq"]))


@dataclass
class PayloadScan:
    reports: Scan
    control: Scan
    publishes: int = 0
    decoded: dict[str, int] = dataclasses.field(default_factory=dict)
    undecodable: int = 0
    texts: int = 0
    blobs: int = 0


def _scan_payloads(capture: MqttStreams, needles: Needles, control: Needles) -> PayloadScan:
    """Every PUBLISH payload raw and decompressed, then decoded as a batch: its texts and
    byte fields. The control is looked for in the decoded forms."""
    codebook = default_codebook()
    scan = PayloadScan(Scan(), Scan())
    for (session, direction), stream in capture.streams.items():
        # whole streams too: CONNECT, SUBSCRIBE, topics and properties, not only payloads
        scan.reports.bytes_(f"session {session} {direction.value} stream", bytes(stream), needles)
    for publish in capture.publishes():
        scan.publishes += 1
        where = f"session {publish.session} {publish.direction.value} {publish.topic}"
        scan.reports.bytes_(where, publish.payload, needles)
        try:
            batch = decode_batch(
                publish.payload, codebook=codebook, verify_key=None, insecure_skip_verify=True
            )
        except ProtocolError:
            scan.undecodable += 1
            continue
        side = "up" if batch.direction is BatchDirection.UPLINK else "down"
        scan.decoded[side] = scan.decoded.get(side, 0) + 1
        for envelope in batch.envelopes:
            for value in _values(envelope):
                label = f"{where} batch {batch.batch_seq} {type(envelope).__name__}"
                data = value.encode("utf-8") if isinstance(value, str) else value
                if isinstance(value, str):
                    scan.texts += 1
                else:
                    scan.blobs += 1
                scan.reports.bytes_(label, data, needles)
                scan.control.bytes_(label, data, control)
    return scan


def _values(envelope: object) -> list[str | bytes]:
    found: list[str | bytes] = []
    if not dataclasses.is_dataclass(envelope):
        return found
    for item in dataclasses.fields(envelope):
        value = getattr(envelope, item.name)
        values = value if isinstance(value, tuple | list) else (value,)
        found += [v for v in values if isinstance(v, str | bytes)]
    return found


async def _canary_run(tmp_path: Path, count: int) -> None:
    reports = canaries(count)
    needles = Needles.for_canaries(reports)
    control = Needles.of([(CONTROL_MARKER, CONTROL_SERIAL, chr(0x1040))])
    async with canary_system(tmp_path) as run:
        filed = await _file_reports(run, reports)
        # one vessel's lane holds a few hundred blocks at once (the rest are told to send
        # again later): enough filed for the scan to look at many reports on board
        assert len(filed.cases) >= min(count // 2, 150), f"the lane took {len(filed.cases)}"
        relay_db = run.relay_setup.data_dir / "relay.db"
        vessel_db = run.vessel.data_dir / "outbox.sqlite3"

        async def settled() -> bool:  # polling other processes' files
            stored = await asyncio.to_thread(_relay_messages, relay_db)
            return filed.control_seq in stored and (
                await asyncio.to_thread(_lane_acknowledged, vessel_db) >= 3
            )

        await eventually(
            settled,
            180,
            0.5,
            what="the relay to acknowledge lane blocks of three periods and the control message",
            explain=lambda: run.relay.log()[-3000:],
        )
        assert run.agent.starts == 2
        assert run.relay.starts == 2
        # the databases as they are while running (with -wal and -shm), then a power cut
        # of both: what is left on disk after a crash is scanned too
        for source, name in ((run.vessel.data_dir, "agent"), (run.relay_setup.data_dir, "relay")):
            await asyncio.to_thread(shutil.copytree, source, tmp_path / "running-copy" / name)
        run.agent.kill()
        run.relay.kill()
    # everything stopped: the files are what an owner or an operator would find
    files = await asyncio.to_thread(scan_files, [tmp_path], needles, [tmp_path / "union"])
    payloads = await asyncio.to_thread(_scan_payloads, run.capture, needles, control)
    control_files = await asyncio.to_thread(
        scan_files, [run.relay_setup.data_dir], control, [tmp_path / "union"]
    )
    tmp_files = sum(1 for path in run.tmp.rglob("*") if path.is_file())
    wal_files = await asyncio.to_thread(_wal_files, tmp_path)
    # the scan covered real reports: the union opens every one that was filed, whole,
    # from the blocks on board (the copy taken while running) and in the uplink
    box = bytes(run.union.box_private)
    sent = [
        block
        for publish in run.capture.publishes()
        if publish.direction.value == "up"
        for block in _lane_blocks(publish.payload)
    ]
    on_board = _lane_blocks_in(tmp_path / "running-copy" / "agent" / "outbox.sqlite3")
    opened = union_reads([*sent, *on_board], box, default_codebook())
    print(
        f"\ncanary scan: {count} reports ({len(filed.cases)} filed, {filed.refused} the lane "
        f"could not take then; {len(opened)} opened by the union from {len(sent)} blocks "
        f"sent and {len(on_board)} on board), "
        f"{needles.count} needle forms; "
        f"{files.files} files ({files.file_bytes} bytes, {tmp_files} in TMPDIR, "
        f"WAL/SHM: {', '.join(wal_files)}, "
        f"{files.decompressed_regions} decompressed regions); "
        f"{payloads.publishes} MQTT payloads ({run.capture.total_bytes} bytes captured, "
        f"batches decoded {payloads.decoded}, {payloads.undecodable} not batches, "
        f"{payloads.texts} texts and {payloads.blobs} blobs scanned, "
        f"{payloads.reports.decompressed_regions} decompressed regions); "
        f"hits: files {len(files.hits)}, payloads {len(payloads.reports.hits)}; "
        f"control found: payloads {len(payloads.control.hits)}, "
        f"relay store {len(control_files.hits)}"
    )
    assert sorted(str(report.case_number) for report in opened) == sorted(filed.cases)
    assert files.hits == [], files.hits[:20]
    assert any(name.endswith("-wal") for name in wal_files), wal_files
    assert payloads.reports.hits == [], payloads.reports.hits[:20]
    # the scanner looks: the family message's words are found where they must be
    assert payloads.decoded.get("up", 0) >= 1
    assert payloads.decoded.get("down", 0) >= 1
    assert any("Message" in hit for hit in payloads.control.hits), payloads.control.hits
    assert any("relay.db" in hit for hit in control_files.hits), control_files.hits
    assert any(f"serial {CONTROL_SERIAL}" in hit for hit in payloads.control.hits)


def _lane_blocks(payload: bytes) -> list[bytes]:
    """The lane blocks of an uplink batch (its signature is not what this checks)."""
    try:
        batch = decode_batch(
            payload, codebook=default_codebook(), verify_key=None, insecure_skip_verify=True
        )
    except ProtocolError:
        return []
    return [e.block for e in batch.envelopes if isinstance(e, LaneBlock)]


def _wal_files(root: Path) -> list[str]:
    found = [*root.rglob("*.sqlite3-*"), *root.rglob("*.db-*")]
    return sorted(str(path.relative_to(root)) for path in found)


@pytest.mark.timeout(600)
async def test_canary_scan(tmp_path: Path) -> None:
    """Canary reports through crashes leave no trace in files, logs, temp files or traffic."""
    await _canary_run(tmp_path, DEFAULT_REPORTS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_canary_scan_1000(tmp_path: Path) -> None:
    """The issue's full size: 1,000 canary reports."""
    await _canary_run(tmp_path, 1000)


def test_two_reports_in_one_lane_period_are_both_kept(tmp_path: Path) -> None:
    """Two reports by one crew member in one lane period get two case numbers, and both
    are whole in the lane."""
    from protocol.languages import Language
    from protocol.sealing import GrievanceCategory
    from tests.kit.lane import blocks_on_board
    from tests.union.test_daily_slots import UNION, _vessel

    outbox, intake, _, signed = _vessel(tmp_path, 1, crew=1)
    try:
        filed = [
            intake.file_grievance(
                signed[0],
                union_id=7,
                category=GrievanceCategory.OTHER,
                text=text,
                lang=Language.ENG,
                anonymous=True,
            )
            for text in ("first report", "second report")
        ]
        opened = union_reads(blocks_on_board(outbox), bytes(UNION), default_codebook())
    finally:
        outbox.close()
    assert filed[0].message_seq != filed[1].message_seq
    assert sorted(r.text for r in opened) == ["first report", "second report"]


def test_the_scanner_finds_canaries_in_every_form() -> None:
    """Each canary, in each encoding, raw, in a zstd frame or a zlib stream amid other
    bytes, is found; other serials and other texts are not."""
    reports = canaries(12)
    needles = Needles.for_canaries(reports[:6])
    for canary in reports[:6]:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            data = canary.text.encode(encoding)
            for form in (
                data,
                b"\x00junk" + zstandard.ZstdCompressor().compress(b"pre" + data) + b"tail",
                b"\x78junk" + zlib.compress(b"pre" + data) + b"\x00",
            ):
                scan = Scan()
                scan.bytes_("form", form, needles)
                assert scan.hits, (canary, encoding, form)
        serial_only = canary.text.split()[-1]
        if canary.kind.zero != "0":
            assert needles.find_text(f"x {serial_only} y")
    assert not needles.find_text("ordinary words 1234 ၁၂၃၄ " + CONTROL_TEXT)
    # a serial not filed is not a hit
    other = Needles.for_canaries([reports[0]])
    assert not other.find_text(reports[6].text.split()[-1])
    # Zawgyi as typed and as converted at intake
    zawgyi = next(c for c in reports if c.kind.name == "zawgyi")
    from protocol.text import zawgyi_to_unicode

    assert needles.find_text(zawgyi_to_unicode(zawgyi.kind.marker))
