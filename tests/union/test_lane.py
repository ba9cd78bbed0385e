"""The grievance lane end to end: a vessel's blocks, the relay's ingest and store, the union's
app over the real union API, and the union's answers back down the vessel's downlink lane.

The vessel's side is built from ``protocol`` alone (``tests/shore/lane_fixtures.py``): each
report sealed to its union, cut into blocks each sealed to the union, one block per lane
period, cover when nothing waits, several periods per signed uplink batch. The relay is
the real :class:`~shore.ingest.Ingestor` on a real SQLite store, its union API served by
uvicorn on loopback; the union runs ``vessel-relay union ...`` (signed requests), and the
relay's real :class:`~shore.downlink.Downlink` makes the signed downlink batches, which the
vessel decodes and reads with the reporter's reply key (:func:`protocol.lane.read_notes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nacl.public
import pytest
import uvicorn
from typer.testing import CliRunner

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch
from protocol.cases import make_receipt_code, reporter_reply_keys
from protocol.envelopes import BatchAck, CaseStatus, CrewMessage, LaneBlock
from protocol.lane import Fragment, LaneShape, open_down_block, read_notes, seal_up_block
from protocol.languages import Language
from protocol.sealing import GrievancePlaintext
from protocol.signing import SigningKey
from shore.downlink import Downlink, DownlinkConfig
from shore.ingest import Ingestor
from shore.store import IngestOutcome, SqliteStore, VesselInfo
from shore.union.cli import PASSPHRASE_FILE_ENV
from shore.union.client import RelayClient
from shore.union.inbox import UnionInbox, create_encrypted_store
from shore.union.keys import UnionIdentity, init_union, load_union
from shore.union.lane import fallback_case_number, lane_case_number
from shore.union_api import UnionAccount, make_union_api, silence_alert_source
from tests.kit.clock import FakeClock
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.ports import free_port
from tests.kit.wait import until_started
from tests.shore.lane_fixtures import (
    CAPACITY,
    LONGEST_TEXT,
    LaneVessel,
    plaintext,
    seal,
    seal_on_phone,
    text_sealing_to,
)
from tests.shore.test_ingest import VESSEL as RELAY_VESSEL
from tests.shore.test_ingest import Vessel, relay_in_process, vessel_link
from vessel_relay.cli import app

CODEBOOK = default_codebook()
PASSPHRASE = "net mender's lantern"
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
OTHER_VESSEL_KEY = SigningKey.from_seed(bytes(range(3, 35)))
SHORE_KEY = SigningKey.from_seed(bytes(range(1, 33)))
SHAPE = LaneShape()
DAY = 86_400
#: The relay's clock starts on a day boundary some days back (received times, periods).
BASE = (int(time.time()) // DAY - 20) * DAY
PERIOD0 = SHAPE.period_of(BASE)
runner = CliRunner()


@dataclasses.dataclass
class World:
    store: SqliteStore
    vessel_id: int
    ship: LaneVessel
    union: UnionIdentity
    other: UnionIdentity
    port: int
    clock: FakeClock  # the relay's
    next_period: int = PERIOD0

    def ingestor(self) -> Ingestor:
        return Ingestor(self.store, CODEBOOK, clock=self.clock)

    async def send_periods(self, periods: int, per_batch: int = 4) -> None:
        """The vessel releases ``periods`` lane periods and sends them, ``per_batch``
        periods a batch (as a daily session carries four); the relay ingests each."""
        ingestor = self.ingestor()
        left = periods
        while left:
            count = min(per_batch, left)
            blocks: list[LaneBlock] = []
            for _ in range(count):
                blocks += self.ship.release(self.next_period)
                self.next_period += 1
            left -= count
            self.clock.now += 3600
            data = self.ship.batch(blocks, int(self.clock.now // 60))
            outcome = await ingestor.handle(f"vr/{self.vessel_id}/u", data)
            assert outcome is IngestOutcome.STORED

    async def send_all(self, per_batch: int = 4) -> None:
        """Every waiting block, and the rest of the last batch's periods as cover."""
        await self.send_periods(max(1, len(self.ship.waiting)), per_batch)


def _encrypted(identity: UnionIdentity, monkeypatch: pytest.MonkeyPatch) -> UnionIdentity:
    """``identity``'s store encrypted at rest as 'union init' makes it, the passphrase in
    the file the union's commands read (every union here shares one)."""
    create_encrypted_store(identity, CODEBOOK, PASSPHRASE)
    secret = identity.directory.parent / "union-passphrase"
    if not secret.exists():
        secret.write_text(PASSPHRASE + "\n", encoding="utf-8")
        secret.chmod(0o600)
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(secret))
    return identity


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    union = init_union(tmp_path / "union", 7, "Fishers' Union", url, (Language.MYA,))
    other = init_union(tmp_path / "other", 8, "Other Union", url)
    _encrypted(union, monkeypatch)
    _encrypted(other, monkeypatch)
    store = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star", "TH", "TH-0042", "Owner Co", unions=(7, 8))
    vessel_id = await store.add_vessel(info, VESSEL_KEY.verify_key.key, BASE - DAY)
    accounts = [
        UnionAccount(7, union.signing_key.verify_key),
        UnionAccount(8, other.signing_key.verify_key),
    ]
    api = make_union_api(store, accounts, alerts=silence_alert_source(store, 2 * DAY))
    server = uvicorn.Server(
        uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await until_started(server, task)
    try:
        yield World(
            store, vessel_id, LaneVessel(vessel_id, VESSEL_KEY), union, other, port, FakeClock(BASE)
        )
    finally:
        server.should_exit = True
        await task
        await store.close()


async def _cli(*args: str) -> str:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    assert result.exit_code == 0, result.output + str(result.exception)
    return result.output


@contextlib.contextmanager
def _inbox(identity: UnionIdentity) -> Iterator[UnionInbox]:
    """The union's app over the relay (closed afterwards, its HTTP client too)."""
    client = RelayClient(identity)
    inbox = UnionInbox(load_union(identity.directory), CODEBOOK, client=client)
    try:
        if inbox.encrypted:
            inbox.unlock(PASSPHRASE)
        yield inbox
    finally:
        inbox.close()
        client.close()


@contextlib.contextmanager
def _client(identity: UnionIdentity) -> Iterator[RelayClient]:
    client = RelayClient(identity)
    try:
        yield client
    finally:
        client.close()


def _texts(inbox: UnionInbox) -> dict[str, str]:
    """Case number -> the reporter's words as filed."""
    found = {}
    for case in inbox.cases():
        entry = inbox.show(case.case_number).entries[0]
        text = entry.fields["text"]
        assert isinstance(text, str)
        found[case.case_number] = text
    return found


async def test_reports_of_every_length_reach_the_union_as_cases(world: World) -> None:
    """Reports of every length (one character; exactly one, two and three blocks full and
    one byte over; a few kilobytes; the longest any intake makes), a report sealed on the
    phone (mode A) and another union's report are filed on board; their blocks leave one a
    period, interleaved and out of order, between cover. After every few sessions the
    union fetches: each of its reports becomes a case once complete, its words exactly as
    written, numbered by its report id (reports sealed before the in-seal case number);
    the other union files only its own."""
    union_key, other_key = world.union.box_public, world.other.box_public
    sizes = [CAPACITY * k + extra for k in (1, 2, 3) for extra in (0, 1)]
    texts = ["ဟ", *(text_sealing_to(size) for size in sizes), "ค่าจ้าง " * 400, LONGEST_TEXT]
    assert len(seal(plaintext(LONGEST_TEXT), union_key)) > 64_000
    ids: dict[bytes, str] = {}
    for n, text in enumerate(texts):
        report = plaintext(text, receipt=make_receipt_code(f"{n:015d}"))
        ids[world.ship.file(seal(report, union_key), union_key)] = text
    phone = plaintext("They keep my passport.", receipt="4417000000000006", name="Ko Aung")
    ids[world.ship.file(seal_on_phone(phone, union_key), union_key)] = phone.text
    elsewhere = plaintext("for the other union", receipt="9999000000000007")
    world.ship.file(seal(elsewhere, other_key), other_key)
    random.Random(5).shuffle(world.ship.waiting)  # interleaved, out of order
    total = len(world.ship.waiting)
    assert total > 200

    with _inbox(world.union) as inbox:
        filed = 0
        while world.ship.waiting:
            await world.send_periods(min(40, len(world.ship.waiting)))
            result = await asyncio.to_thread(inbox.fetch)
            assert result.unreadable == 0
            filed += result.new_cases
        await world.send_periods(3)  # cover only
        assert (await asyncio.to_thread(inbox.fetch)).new_cases == 0
        assert filed == len(ids)
        expected = {fallback_case_number(world.vessel_id, rid): text for rid, text in ids.items()}
        assert _texts(inbox) == expected
        mode_a = inbox.show(fallback_case_number(world.vessel_id, list(ids)[-1]))
        assert mode_a.reporter_key is not None
        assert mode_a.crew_name == "Ko Aung"
    listed = await _cli("union", "list", "--dir", str(world.union.directory))
    assert all(number in listed for number in expected)
    with _inbox(world.other) as other:
        assert (await asyncio.to_thread(other.fetch)).new_cases == 1
        assert list(_texts(other).values()) == ["for the other union"]


async def test_the_union_app_restarts_in_the_middle_of_a_long_report(world: World) -> None:
    """Half of a long report's blocks have arrived when the union's app fetches and is
    closed; its pieces are in union.db. The rest arrive, a new app fetches, and the report
    is filed whole. A fetch that fails in the middle of a page (a bug while filing) rolls
    back that page, and the next fetch files the report."""
    union_key = world.union.box_public
    text = text_sealing_to(12 * CAPACITY + 5)
    world.ship.file(seal(plaintext(text, receipt="4417000000000006"), union_key), union_key)
    await world.send_periods(7)
    with _inbox(world.union) as first:
        result = await asyncio.to_thread(first.fetch)
        assert (result.new_cases, result.lane_incomplete, result.lane_blocks) == (0, 1, 7)
    with sqlite3.connect(world.union.database) as db:
        assert db.execute("SELECT COUNT(*) FROM lane_fragments").fetchone() == (7,)
    db.close()

    await world.send_all()
    with _inbox(world.union) as second:
        assert second.lane_incomplete() == 1  # rebuilt from union.db
        result = await asyncio.to_thread(second.fetch)
        assert (result.new_cases, result.lane_incomplete) == (1, 0)
        assert list(_texts(second).values()) == [text]

    world.ship.file(seal(plaintext("second", receipt="4417000000000014"), union_key), union_key)
    await world.send_all()
    with _inbox(world.union) as broken, pytest.MonkeyPatch.context() as patch:

        def failing(*args: object, **kwargs: object) -> tuple[str, bool]:
            raise ZeroDivisionError("a bug while filing")

        patch.setattr(UnionInbox, "_file", failing)
        with pytest.raises(ZeroDivisionError):
            await asyncio.to_thread(broken.fetch)
        patch.undo()
        result = await asyncio.to_thread(broken.fetch)
        assert result.new_cases == 1
        assert sorted(_texts(broken).values()) == ["second", text]


async def _downlink_days(world: World, days: int, start: float) -> list[LaneBlock]:
    """The relay's downlink over ``days`` downlink periods (two passes at the start of
    each) while the vessel is away, then the vessel's session: the LaneBlocks of the signed
    batches it receives, as it decodes them (a batch resent counted once, as the vessel
    does). In the session the vessel acknowledges what waited at the broker, and the relay
    answers with what it held meanwhile (``protocol.exchange.downlink_release_due``); the
    vessel acknowledges that too, in its next session."""
    clock = FakeClock(start)
    downlink = Downlink(
        world.store, SHORE_KEY, CODEBOOK, DownlinkConfig(slot_period_s=DAY), clock=clock
    )
    published: list[bytes] = []

    async def publish(topic: str, data: bytes) -> None:
        assert topic == f"vr/{world.vessel_id}/d"
        published.append(data)

    for day in range(days):
        clock.now = start + day * DAY + 60
        await downlink.publish_due(publish)
        await downlink.publish_due(publish)  # a second pass in the same period adds nothing
    blocks = []
    seen: set[int] = set()
    for _ in range(2):  # what waited at the broker, then the relay's answer in the session
        for data in published:
            batch = decode_batch(
                data,
                codebook=CODEBOOK,
                verify_key=SHORE_KEY.verify_key,
                direction=Direction.DOWNLINK,
            )
            if batch.batch_seq in seen:
                continue  # resent before the vessel acknowledged it: the vessel keeps one
            seen.add(batch.batch_seq)
            blocks += [e for e in batch.envelopes if isinstance(e, LaneBlock)]
        published.clear()
        if seen:  # the vessel acknowledges what it got
            ack = BatchAck(up_to=max(seen), written_minutes=int(clock.now // 60))
            data = world.ship.batch([ack], int(clock.now // 60))
            assert await world.ingestor().handle(f"vr/{world.vessel_id}/u", data) in (
                IngestOutcome.STORED,
            )
            await downlink.publish_due(publish)
    return blocks


async def test_replies_go_down_the_vessels_lane_one_block_a_period(world: World) -> None:
    """The union acknowledges a lane case and writes to the reporter; the notes go down the
    vessel's downlink lane as blocks sealed to the reporter's reply key, one block a day,
    with relay-made cover on the days nothing waits. The reporter's key reads both notes;
    another crew member's key reads nothing; every block is the lane's size."""
    keys = reporter_reply_keys(b"the reporter's case key, from the PIN")
    union_key = world.union.box_public
    report = plaintext("ကျွန်ုပ်တို့ လစာ သုံးလ မရသေးပါ။", lang=Language.MYA, reply_key=keys.public_key)
    report_id = world.ship.file(seal(report, union_key), union_key)
    await world.send_all()
    union = ["--dir", str(world.union.directory)]
    assert "1 new cases" in await _cli("union", "fetch", *union)
    number = fallback_case_number(world.vessel_id, report_id)
    assert number in await _cli("union", "show", *union, number)
    answer = "ကျွန်ုပ်တို့ အေဂျင်စီကို ဖုန်းဆက်ပါမည်။ " * 3
    await _cli("union", "status", *union, number, "acknowledged")
    assert "sent to the relay" in await _cli("union", "reply", *union, number, answer)

    start = (world.clock.now // DAY + 1) * DAY
    blocks = await _downlink_days(world, 8, start)
    periods = [(b.period, b.index) for b in blocks]
    first = int(start // DAY) - 1
    assert periods == [(first + day, 0) for day in range(8)]  # exactly one a period
    assert {len(b.block) for b in blocks} == {SHAPE.down_block_bytes}
    found = read_notes([b.block for b in blocks], keys.private_key, SHAPE.down_block_bytes)
    assert [n.status for n in found.notes] == [CaseStatus.ACKNOWLEDGED, CaseStatus.ACKNOWLEDGED]
    assert found.notes[1].text == answer.strip()
    assert {n.case for n in found.notes} == {number}
    assert (found.incomplete, found.malformed) == (0, 0)
    stranger = reporter_reply_keys(b"another crew member's case key")
    assert read_notes([b.block for b in blocks], stranger.private_key).notes == ()
    theirs = [open_down_block(b.block, keys.private_key) is not None for b in blocks]
    notes = sum(theirs)
    assert notes >= 2  # the stage change, then the reply (more than one block)
    assert theirs == [True] * notes + [False] * (8 - notes)  # first in, then cover
    covers = [b.block for b, mine in zip(blocks, theirs, strict=True) if not mine]
    # cover is a real sealed box: it starts with an X25519 key (top bit clear), each its own
    assert all(cover[31] & 0x80 == 0 for cover in covers)
    assert len({cover[:32] for cover in covers}) == len(covers)
    too_long = await asyncio.to_thread(
        runner.invoke, app, ["union", "reply", *union, number, "ဟ" * 3000]
    )
    assert too_long.exit_code == 1
    assert "the grievance lane carries notes of at most 8,192" in too_long.output
    # posting again (a retry) queues nothing twice: the inbox keeps the blocks it made
    with _inbox(world.union) as inbox:
        assert inbox.pending_notes() == 0
        with sqlite3.connect(world.union.database) as db:
            db.execute("UPDATE outgoing SET posted_at = NULL")
        db.close()
        assert await asyncio.to_thread(inbox.post_pending) == 2
    again = await _downlink_days(world, 3, start + 8 * DAY)
    assert read_notes([b.block for b in again], keys.private_key).notes == ()


async def test_a_union_full_of_waiting_blocks_is_told_and_retries(world: World) -> None:
    """A union's answers for a vessel fill its queue (the relay's cap): the next note is
    refused with a sentence, stays pending in the union's app, and goes once the lane has
    carried some."""
    keys = reporter_reply_keys(b"a reporter whose union writes a lot")
    union_key = world.union.box_public
    report_id = world.ship.file(
        seal(plaintext("wages", reply_key=keys.public_key), union_key), union_key
    )
    await world.send_all()
    union = ["--dir", str(world.union.directory)]
    await _cli("union", "fetch", *union)
    number = fallback_case_number(world.vessel_id, report_id)
    with _client(world.union) as client:
        shape = await asyncio.to_thread(client.lane_shape)
    assert shape.down_block_bytes == SHAPE.down_block_bytes
    assert shape.down_period_s == DAY
    long_reply = "x" * (shape.down_block_bytes * 20)  # 25 blocks once sealed
    assert shape.max_queued_blocks == 64
    for _ in range(2):
        assert "sent to the relay" in await _cli("union", "reply", *union, number, long_reply)
    said = await _cli("union", "reply", *union, number, long_reply)
    assert "notes wait for the relay" in said
    with _inbox(world.union) as inbox:
        assert inbox.pending_notes() == 1
    await _downlink_days(world, 30, (world.clock.now // DAY + 1) * DAY)
    assert "0 new cases" in await _cli("union", "fetch", *union)
    with _inbox(world.union) as inbox:
        assert inbox.pending_notes() == 0


async def test_hostile_blocks_are_counted_and_nothing_stops(world: World) -> None:
    """Among the vessel's blocks: random bytes of the lane's size (not the union's: skipped),
    a block sealed to the union that is no lane block, a piece of a report sent again with
    other bytes (that report cannot be trusted: dropped), and a piece of a filed report sent
    again. The union's fetch counts the two bad ones unreadable, files the honest reports,
    and goes on; nothing crashes."""
    union_key = world.union.box_public
    box = nacl.public.SealedBox(nacl.public.PublicKey(union_key))
    inner = SHAPE.block_bytes - 48
    # magic, version, kind "fragment", id, then "fragment 5 of 2"
    malformed = box.encrypt(b"VRLU\x01\x01" + bytes(8) + b"\x00\x05\x00\x02" + bytes(inner - 18))
    twice = seal(plaintext(text_sealing_to(2 * CAPACITY), receipt="4417000000000006"), union_key)
    dropped = world.ship.file(twice, union_key)
    other_bytes = seal_up_block(Fragment(dropped, 0, 2, b"other bytes"), union_key, 384)
    world.ship.waiting.insert(1, other_bytes)
    world.ship.waiting.extend([random.Random(1).randbytes(SHAPE.block_bytes), malformed])
    world.ship.file(twice, union_key)  # the same report again, under another id
    again = world.ship.waiting[-2]
    honest = plaintext("honest report", receipt="4417000000000014")
    world.ship.file(seal(honest, union_key), union_key)
    world.ship.waiting.append(again)  # after its report was filed
    await world.send_all()
    with _inbox(world.union) as inbox:
        result = await asyncio.to_thread(inbox.fetch)
        assert (result.unreadable, result.new_cases, result.lane_incomplete) == (2, 2, 1)
        assert sorted(_texts(inbox).values()) == sorted([honest.text, text_sealing_to(632)])


async def test_lane_silent_is_told_when_a_syncing_vessel_stops_its_lane(world: World) -> None:
    """A vessel sends its lane blocks, then only messages for two days while it syncs
    every six hours: the union's alerts say "lane silent" since its last block; a vessel
    whose lane keeps coming is not named."""
    ingestor = world.ingestor()
    now = time.time()
    world.clock.now = now - 3 * DAY
    await world.send_periods(4)
    for hour in range(0, 60, 6):
        world.clock.now = now - 2.5 * DAY + hour * 3600
        message = CrewMessage(
            message_seq=hour + 1,
            crew=3,
            contact=1,
            written_minutes=int(world.clock.now // 60),
            lang=Language.ENG,
            body="all well",
        )
        data = world.ship.batch([message], int(world.clock.now // 60))
        assert await ingestor.handle(f"vr/{world.vessel_id}/u", data) is IngestOutcome.STORED
    other_id = await world.store.add_vessel(
        VesselInfo("Ocean 8", "TH", "TH-0043", "Owner", (7,)), OTHER_VESSEL_KEY.verify_key.key, 0
    )
    other = LaneVessel(other_id, OTHER_VESSEL_KEY)
    world.clock.now = now - 600
    data = other.batch(other.release(PERIOD0), int(world.clock.now // 60))
    assert await ingestor.handle(f"vr/{other_id}/u", data) is IngestOutcome.STORED
    said = await _cli("union", "alerts", "--dir", str(world.union.directory))
    lines = [line for line in said.strip().splitlines() if line.startswith("kind=")]
    assert len(lines) == 1, said
    assert f"kind=lane silent vessel={world.vessel_id}" in lines[0]
    with _client(world.union) as client:
        alerts = await asyncio.to_thread(client.alerts)
    assert alerts[0]["since"] == pytest.approx(now - 3 * DAY + 3600)
    # union 8 serves only the first vessel: it is told of that one alone
    other_said = await _cli("union", "alerts", "--dir", str(world.other.directory))
    assert f"kind=lane silent vessel={world.vessel_id}" in other_said
    assert f"vessel={other_id}" not in other_said


async def test_the_whole_relay_carries_the_lane_both_ways(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay as ``shore run`` starts it (Mosquitto, ingest, downlink, union API from its
    config; a 10-second downlink lane period): a vessel publishes its lane batches, the
    union fetches its report as a case and answers; the vessel's downlink lane brings one
    block a period, cover while nothing waits, and then the answer, which the reporter's
    key reads (the vessel collecting its downlink as it comes)."""
    api_port = free_port()
    union = init_union(tmp_path / "union", 1, "Fishers' Union", f"http://127.0.0.1:{api_port}")
    _encrypted(union, monkeypatch)
    extra = (
        f"[union_api]\nenabled = true\nport = {api_port}\n"
        f"[[union_api.unions]]\nid = 1\npublic_key = '{union.signing_key.verify_key.key.hex()}'\n"
    )
    keys = reporter_reply_keys(b"the reporter's case key, from the PIN")
    ship = LaneVessel(RELAY_VESSEL, VESSEL_KEY)
    report_id = ship.file(
        seal(plaintext("ค่าจ้างไม่ได้จ่าย", reply_key=keys.public_key), union.box_public),
        union.box_public,
    )
    period = SHAPE.period_of(time.time())
    async with (
        relay_in_process(tmp_path / "relay", fresh_mosquitto, extra, "slot_period_s = 10\n"),
        vessel_link(fresh_mosquitto, RELAY_VESSEL) as vessel,
    ):
        await vessel.publish(ship.batch(ship.release(period), int(time.time() // 60)))
        await vessel.wait_for(lambda: 1 in vessel.acked)
        union_dir = ["--dir", str(union.directory)]
        assert "1 new cases" in await _cli("union", "fetch", *union_dir)
        await vessel.wait_for(lambda: len(_lane_of(vessel)) >= 1, timeout_s=30)  # cover
        number = fallback_case_number(RELAY_VESSEL, report_id)
        assert "sent to the relay" in await _cli("union", "reply", *union_dir, number, "ok")

        def answered() -> bool:
            blocks = [b.block for b in _lane_of(vessel)]
            return bool(read_notes(blocks, keys.private_key).notes)

        def ack_batch(ack: BatchAck) -> bytes:
            return ship.batch([ack], int(time.time() // 60))

        await vessel.wait_collecting(answered, ack_batch, timeout_s=60, vessel_id=RELAY_VESSEL)
    blocks = _lane_of(vessel)
    places = [(b.period, b.index) for b in blocks]
    assert places == [(places[0][0] + n, 0) for n in range(len(places))]  # one a period
    (note,) = read_notes([b.block for b in blocks], keys.private_key).notes
    assert (note.case, note.text) == (number, "ok")


def _lane_of(vessel: Vessel) -> list[LaneBlock]:
    """The lane blocks that came down, in downlink batch order."""
    return [block for seq in sorted(vessel.lane) for block in vessel.lane[seq]]


def test_a_union_app_newer_than_its_relay_still_fetches(tmp_path: Path) -> None:
    """The union upgrades its app before the relay operator upgrades the relay (no lane
    or escalation routes yet): fetch still takes the reports that come whole, and says the
    relay is older instead of failing."""
    identity = init_union(tmp_path / "union", 7, "Fishers' Union", "http://relay.invalid")
    asked: list[str] = []

    def old_relay(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/union/v1/reports":
            return httpx.Response(200, json={"reports": []})
        return httpx.Response(404, json={"error": "no such route", "code": "bad-route"})

    client = RelayClient(identity, transport=httpx.MockTransport(old_relay))
    inbox = UnionInbox(identity, CODEBOOK, client=client)
    try:
        result = inbox.fetch()
    finally:
        inbox.close()
        client.close()
    assert (result.new_cases, result.lane_blocks) == (0, 0)
    # escalations, newer still, are asked for too and their absence is said, not fatal
    assert asked == ["/union/v1/reports", "/union/v1/lane", "/union/v1/escalations"]


async def test_a_report_that_cannot_be_filed_is_kept_with_its_reason(world: World) -> None:
    """Another vessel's changed agent files a lane report under a receipt code that a case
    of the first vessel holds: it is kept sealed with the reason, counted unreadable, and
    the lane goes on (the next honest report is filed)."""
    union_key = world.union.box_public
    world.ship.file(seal(plaintext("first", receipt="4417000000000006"), union_key), union_key)
    await world.send_all()
    other_id = await world.store.add_vessel(
        VesselInfo("Ocean 8", "TH", "TH-0043", "Owner", (7,)), OTHER_VESSEL_KEY.verify_key.key, 0
    )
    other = LaneVessel(other_id, OTHER_VESSEL_KEY)
    other.file(seal(plaintext("copied receipt", receipt="4417000000000006"), union_key), union_key)
    other.file(seal(plaintext("honest", receipt="4417000000000014"), union_key), union_key)
    ingestor = world.ingestor()
    data = other.batch([*other.release(PERIOD0), *other.release(PERIOD0 + 1)], int(BASE // 60))
    assert await ingestor.handle(f"vr/{other_id}/u", data) is IngestOutcome.STORED
    with _inbox(world.union) as inbox:
        result = await asyncio.to_thread(inbox.fetch)
        assert (result.new_cases, result.unreadable) == (2, 1)
        assert sorted(_texts(inbox).values()) == ["first", "honest"]
    with sqlite3.connect(world.union.database) as db:
        problems = db.execute("SELECT problem FROM lane_reports WHERE problem IS NOT NULL")
        (problem,) = problems.fetchall()
    db.close()
    assert "UNIQUE" in problem[0]


def test_the_case_number_comes_from_inside_the_seal_when_it_names_the_vessel() -> None:
    """A lane report's case number is the one sealed in it (the report's ``case`` field)
    when it names the vessel whose blocks carried it; one naming another vessel, or no
    case number, or a malformed one, gives the number made from the report id."""
    report_id = bytes.fromhex("00000000000004d2")  # 1234: fewer than 12 digits
    long_id = bytes.fromhex("ffffffffffffffff")  # 18446744073709551615
    assert fallback_case_number(4, report_id) == "4-1234"
    assert fallback_case_number(4, long_id) == "4-184467440737"

    def sealed_with(case: str | None) -> GrievancePlaintext:
        return dataclasses.replace(plaintext("wages unpaid"), case_number=case)

    assert lane_case_number(4, long_id, sealed_with("4-000123456789")) == "4-000123456789"
    for other in ("5-000123456789", None):
        assert lane_case_number(4, long_id, sealed_with(other)) == "4-184467440737"
    # a number the decoder would refuse never reaches here; if one did, it is not trusted
    odd = sealed_with(None)
    for malformed in ("4-", "nonsense"):
        object.__setattr__(odd, "case_number", malformed)
        assert lane_case_number(4, long_id, odd) == "4-184467440737"
    assert lane_case_number(4, long_id, plaintext("no case field")) == "4-184467440737"
