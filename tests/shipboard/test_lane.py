"""The grievance lane on board, through intake, the outbox, the link loop and the doors.

What a crew member and a union must be able to rely on:

* a report of any length leaves in the lane's blocks, period after period, and the union
  puts it back together from them (its key opens them; cover opens for nobody);
* two crew members' reports leave side by side (round-robin), not one behind the other;
* quota spent and a budget of zero hold family messages, never the lane; an idle vessel
  on Iridium Certus opens one session a day, and a report filed in the month changes
  neither when sessions open nor how big their batches are;
* a report the lane cannot take now, or ever, is refused with a sentence in the crew
  member's language, nothing half stored;
* the union's notes come down as lane blocks among cover, and only the reporter's key
  finds them (``GET /api/cases/{seq}``); nobody else's, not the duress PIN's;
* periods missed while the agent was off leave at once, in order, when it is back; the
  slots of the release before the lane still go out as they are.

The relay of this branch stores no lane blocks yet (its ingest acknowledges the batches
that carry them): the scenarios read the lane blocks from the fake link's uplink record
and open them with the union's key, as the union's app will.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import nacl.public
import pytest

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch
from protocol.cases import CaseNote, parse_case_number, reporter_reply_keys
from protocol.envelopes import CaseStatus, GrievanceReport, LaneBlock
from protocol.lane import (
    LaneShape,
    cover_down_block,
    open_up_block,
    seal_down_blocks,
)
from protocol.languages import Language
from protocol.quota import crew_quota
from protocol.sealing import GrievanceCategory
from protocol.slots import SlotHeader, SlotKind, seal_slot
from shipboard.config import ShipConfig, UnionConfig
from shipboard.crew import SignedIn
from shipboard.errors import LaneBusy, ReportTooLongForLane
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.lane import LaneProgress, VesselLane
from shipboard.lane_plan import ReservoirParams
from shipboard.link import LinkStatistics, SessionReport, run_link, run_session
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS
from shipboard.scheduler import SchedulerSettings
from shipboard.states import MessageKind
from tests.kit.clock import FakeClock
from tests.kit.fakelink import UP
from tests.kit.lane import SentBlock, lane_blocks_of, union_reads
from tests.kit.model_shore import ModelShore
from tests.kit.voyage import CODEBOOK, VESSEL, voyage
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from vessel_relay.demo.defaults import demo_ship_config

UNION = nacl.public.PrivateKey(bytes(range(60, 92)))
OTHER_UNION = nacl.public.PrivateKey(bytes(range(92, 124)))
START = 1_790_006_400.0  # a lane period's start (2026-09-22 00:00 UTC)
DAY = 86_400.0
HOUR = 3_600.0


def ship_config(tmp_path: Path, *, period_s: int = 21_600, vessel_id: int = 1) -> ShipConfig:
    """The demo vessel with two unions whose private keys this test holds."""
    base = demo_ship_config(tmp_path)
    return dataclasses.replace(
        base,
        vessel=dataclasses.replace(base.vessel, vessel_id=vessel_id),
        quota=dataclasses.replace(base.quota, slot_period_s=period_s),
        unions=(
            UnionConfig(7, "Fishers' Union", bytes(UNION.public_key), (Language.MYA,)),
            UnionConfig(8, "Seafarers' Aid", bytes(OTHER_UNION.public_key), (Language.ENG,)),
        ),
    )


class Board:
    """A vessel's intake and outbox on a fake clock, with crew members signed in."""

    def __init__(
        self, tmp_path: Path, crew: int = 2, params: ReservoirParams | None = None
    ) -> None:
        self.clock = FakeClock(START)
        self.config = ship_config(tmp_path)
        self.outbox = Outbox.open(self.config.database_path, self.config.vessel.vessel_id)
        lane = None
        if params is not None:  # a reservoir of another size than the lane's own
            shape = self.config.quota.lane_shape()
            lane = VesselLane.start(self.outbox, self.outbox, shape, self.clock(), params=params)
        self.intake = Intake(
            self.config, self.outbox, default_codebook(), clock=self.clock, lane=lane
        )
        self.signed: list[SignedIn] = []
        self.pins: list[str] = []
        for n in range(crew):
            member, pin = self.intake.register.add(
                name=f"Crew {n}",
                document=f"SB-{n}",
                nationality="MM",
                language=Language.KHM if n == 0 else Language.MYA,
                now=self.clock(),
            )
            self.signed.append(self.intake.register.sign_in(member.crew, pin))
            self.pins.append(pin)
        self.sent: list[SentBlock] = []
        #: The relay's downlink, signed and numbered as the relay does.
        self.shore = ModelShore.for_keys(
            CODEBOOK, VESSEL_KEY, SHORE_KEY, self.config.vessel.vessel_id
        )
        self.intake.release_lane(self.clock())  # the agent starts its lane

    def file(self, who: int, text: str, union: int = 7) -> int:
        """Crew member ``who`` files a report (mode B); its report number."""
        return self.intake.file_grievance(
            self.signed[who],
            union_id=union,
            category=GrievanceCategory.WITHHOLDING_OF_WAGES,
            text=text,
            lang=Language.ENG,
            anonymous=False,
        ).message_seq

    def next_period(self) -> list[SentBlock]:
        """The clock moves to the next period's end: the lane releases, a session carries
        what is pending; the blocks that went up."""
        assert self.intake.lane is not None
        self.clock.now = self.intake.lane.next_release_at()
        assert self.intake.release_lane(self.clock()) == 1
        pending = [p.message_seq for p in self.outbox.pending_messages(self.clock())]
        _, data = self.outbox.make_batch(pending, CODEBOOK, VESSEL_KEY, self.clock())
        blocks = lane_blocks_of([data], VESSEL_KEY.verify_key, CODEBOOK)
        self.sent += blocks
        return blocks

    def close(self) -> None:
        self.outbox.close()


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    made = Board(tmp_path)
    yield made
    made.close()


def _text(rng: random.Random, length: int) -> str:
    """``length`` characters that compress poorly (so a report's size is its length)."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.ကခဂဃငစဆဇ"
    return "".join(rng.choice(letters) for _ in range(length))


# --- the uplink lane --------------------------------------------------------------------


def test_reports_of_every_length_spread_over_periods_and_reassemble(board: Board) -> None:
    """Reports from a few words to 16 KiB, each alone in the lane: every period one block of
    384 bytes leaves, whatever it holds; a report takes as many periods as it has blocks,
    and the union puts each back together from the blocks its key opens, case number and
    all."""
    rng = random.Random(20)
    shape = LaneShape()
    taken: list[int] = []
    for length in (1, 250, 300, 1_500, 6_000, 16_000):
        text = _text(rng, length) if length > 1 else "x"
        if len(text.encode()) > 16_384:
            text = text.encode()[:16_384].decode("utf-8", "ignore")
        number = board.file(0, text)
        case = f"{board.config.vessel.vessel_id}-{number}"
        released: list[SentBlock] = []
        while board.intake.case_progress(number) is LaneProgress.QUEUED:
            blocks = board.next_period()
            assert [len(b.block) for b in blocks] == [shape.block_bytes]  # one, always
            released += blocks
        (report,) = union_reads([b.block for b in released], bytes(UNION), CODEBOOK)
        assert report.text == text
        assert report.case_number == case
        counts = {getattr(open_up_block(b.block, bytes(UNION)), "count", None) for b in released}
        assert counts == {len(released)}  # it had the lane alone: every block is its own
        taken.append(len(released))
    assert taken[0] == 1
    assert taken[-1] > 28  # 16 KiB of text: more than a week of lane periods
    periods = [block.period for block in board.sent]
    assert periods == list(range(periods[0], periods[0] + len(periods)))  # none skipped
    assert {block.index for block in board.sent} == {0}
    assert union_reads([b.block for b in board.sent], bytes(OTHER_UNION), CODEBOOK) == []


def test_two_reporters_reports_leave_round_robin(board: Board) -> None:
    """A crew member files a long report; another files a short one just after: the short
    one does not wait behind the long one. Blocks alternate between them while both are
    queued (their counts of blocks sent never differ by more than one), and each union
    reads its own report whole."""
    rng = random.Random(21)
    long_text, short_text = _text(rng, 3_000), _text(rng, 800)
    first = board.file(0, long_text, union=7)
    second = board.file(1, short_text, union=8)
    owners: list[str] = []
    while LaneProgress.QUEUED in {
        board.intake.case_progress(first),
        board.intake.case_progress(second),
    }:
        for block in board.next_period():
            if open_up_block(block.block, bytes(UNION)) is not None:
                owners.append("long")
            elif open_up_block(block.block, bytes(OTHER_UNION)) is not None:
                owners.append("short")
            else:
                owners.append("cover")
    short_blocks = owners.count("short")
    assert short_blocks >= 3
    assert owners[: 2 * short_blocks] == ["long", "short"] * short_blocks
    assert owners.count("cover") == 0
    for done in range(1, len(owners) + 1):  # the round-robin bound, step by step
        seen = owners[:done]
        if seen.count("short") < short_blocks:
            assert abs(seen.count("long") - seen.count("short")) <= 1
    (long_report,) = union_reads([b.block for b in board.sent], bytes(UNION), CODEBOOK)
    (short_report,) = union_reads([b.block for b in board.sent], bytes(OTHER_UNION), CODEBOOK)
    assert (long_report.text, short_report.text) == (long_text, short_text)


def test_a_report_the_lane_cannot_take_is_refused_with_a_sentence_and_nothing_stored(
    tmp_path: Path,
) -> None:
    """The lane is full (reports filed just before fill every free row): the next report
    is refused, saying until when, and is stored nowhere; after the release it names, it
    goes. A report longer than the lane ever carries is refused with the limit."""
    small = ReservoirParams(blocks_per_period=1, pool_rows=3, min_rows=3, max_rows=9)
    board = Board(tmp_path, params=small)
    try:
        lane = board.intake.lane
        assert isinstance(lane, VesselLane)
        for _ in range(3):  # three short reports, a block each: every free row
            board.file(0, "no wages")
        with board.outbox.reading() as db:
            before = list(db.execute("SELECT row_id, block FROM lane_reservoir ORDER BY row_id"))
        with pytest.raises(LaneBusy) as refused:
            board.file(1, "they took our passports")
        assert refused.value.retry_at == lane.next_release_at()  # room after one release
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", str(refused.value.fields["time"]))
        with board.outbox.reading() as db:
            after = list(db.execute("SELECT row_id, block FROM lane_reservoir ORDER BY row_id"))
        assert after == before
        nobody = board.signed[1]
        assert board.intake.view.casebook(nobody.member.crew, nobody.case_key) == []
        board.next_period()
        assert board.file(1, "they took our passports")
        with pytest.raises(ReportTooLongForLane) as too_long:
            board.file(0, _text(random.Random(22), 1_500))
        assert too_long.value.fields == {"limit": 1}  # three blocks: 948 bytes, about 1 KB
    finally:
        board.close()


# --- owner settings, quota and budget, session timing -----------------------------------


async def _month_on_certus(
    tmp_path: Path, *, report_at: float | None, days: int
) -> tuple[list[float], list[int], list[SentBlock], float | None, LinkStatistics]:
    """An idle vessel on Iridium Certus runs its link loop for ``days`` days with a
    monthly budget of zero and a family message held for it; a crew member files a report
    at ``report_at`` (None: never). Returns the sessions' start times, their uplink bytes,
    the lane blocks that went up, the report's case number and the link statistics."""
    async with voyage(tmp_path) as (vessel, _shore, pair, clock):
        clock.now = START
        base = ship_config(tmp_path, vessel_id=VESSEL)
        config = dataclasses.replace(
            base,
            shore=dataclasses.replace(base.shore, public_key_hex=SHORE_KEY.verify_key.hex()),
            link=dataclasses.replace(base.link, monthly_budget_bytes=0),
        )
        intake = Intake(config, vessel.outbox, CODEBOOK, clock=clock)
        member, pin = intake.register.add(
            name="Sok", document="KH-1", nationality="KH", language=Language.KHM, now=clock()
        )
        reporter = intake.register.sign_in(member.crew, pin)
        held = vessel.write(1)  # the owner's budget is zero: it waits; the lane does not
        stopping = asyncio.Event()
        end = START + days * DAY
        filed: list[str] = []
        starts: list[float] = []
        uplink: list[int] = []
        assert intake.lane is not None

        class Lane:
            """The agent's lane, with the scenario's moments hooked in."""

            def release_due(self, now: float) -> int:
                if report_at is not None and not filed and now >= report_at:
                    filed.append(
                        intake.file_grievance(
                            reporter,
                            union_id=7,
                            category=GrievanceCategory.RETENTION_OF_DOCUMENTS,
                            text="The captain keeps our passports.",
                            lang=Language.ENG,
                            anonymous=True,
                        ).case_number
                    )
                if now >= end:
                    stopping.set()
                return intake.release_lane(now)

            def next_release_at(self) -> float:
                return intake.lane.next_release_at()  # type: ignore[union-attr]

        async def session(*args: object, **kwargs: object) -> SessionReport:
            starts.append(clock())
            report = await run_session(
                *args,  # type: ignore[arg-type]
                link=pair.vessel_link(),
                timers=clock,
                **kwargs,  # type: ignore[arg-type]
            )
            uplink.append(report.uplink_payload_bytes)
            return report

        stats = LinkStatistics()
        settings = dataclasses.replace(vessel.settings, profile=IRIDIUM_CERTUS)
        await run_link(
            config=config,
            outbox=vessel.outbox,
            signing_key=VESSEL_KEY,
            codebook=CODEBOOK,
            stopping=stopping,
            doorbell=asyncio.Event(),
            clock=clock,
            link_settings=settings,
            scheduler_settings=SchedulerSettings(
                latency_s={k: m * 60.0 for k, m in config.latency_minutes.items()}
            ),
            session_runner=session,
            statistics=stats,
            lane=Lane(),
            timers=clock,
        )
        assert vessel.states(held) == ["accepted"]  # held for the budget all along
        sent = lane_blocks_of(pair.sent_payloads(UP), VESSEL_KEY.verify_key, CODEBOOK)
        return starts, uplink, sent, filed[0] if filed else None, stats


async def test_an_idle_month_on_certus_is_a_session_a_day_and_a_report_changes_nothing(
    tmp_path: Path,
) -> None:
    """Two vessels on Iridium Certus, budget zero and a family message held: on one, a
    crew member files a report on day 9. Both open their sessions at the same moments (one
    a day, about 30 a month: the lane's blocks fall due a day after their period) with
    batches of the same sizes; every period's block goes up once, in order; the report
    reaches the union within a lane period and a day of being filed."""
    days = 30
    report_at = START + 8 * DAY + 7 * HOUR
    quiet = await _month_on_certus(tmp_path / "quiet", report_at=None, days=days)
    busy = await _month_on_certus(tmp_path / "busy", report_at=report_at, days=days)
    starts, uplink, sent, case, stats = busy
    print(
        f"\n{days} days on Iridium Certus, idle: {len(quiet[0])} sessions, "
        f"{quiet[4].estimated_billed_bytes:,} billed bytes (estimated); with a report: "
        f"{len(starts)} sessions, {stats.estimated_billed_bytes:,}"
    )
    assert starts == quiet[0]
    assert uplink == quiet[1]
    assert days <= len(starts) <= days + 1
    assert all(b - a >= 23 * HOUR for a, b in itertools.pairwise(starts[1:]))
    assert stats.failures == 0
    periods = [block.period for block in sent]
    assert periods == list(range(periods[0], periods[0] + len(periods)))
    assert len(sent) >= 4 * (days - 1)
    assert [len(block.block) for block in sent] == [len(block.block) for block in quiet[2]]
    (report,) = union_reads([block.block for block in sent], bytes(UNION), CODEBOOK)
    assert report.case_number == case
    arrived = next(
        at
        for at, carried in zip(starts, _blocks_per_session(sent, starts), strict=True)
        if any(open_up_block(b, bytes(UNION)) for b in carried)
    )
    assert arrived - report_at <= LaneShape().period_s + DAY


def _blocks_per_session(sent: list[SentBlock], starts: list[float]) -> list[list[bytes]]:
    """The lane blocks each session carried (a period's block goes in the first session
    at or after its end)."""
    shape = LaneShape()
    carried: list[list[bytes]] = [[] for _ in starts]
    for block in sent:
        released = shape.period_start(block.period + 1)
        index = next(i for i, at in enumerate(starts) if at >= released)
        carried[index].append(block.block)
    return carried


def test_the_quota_of_every_crew_member_spent_holds_messages_never_the_lane(
    board: Board,
) -> None:
    """With every crew member's quota spent and the budget zero, the scheduler holds
    family messages but sends every released lane block once it is due, a report's as
    any cover's: the plan is the same whether a report was filed or not."""
    from protocol.quota import QuotaLedger
    from shipboard.link import build_snapshot
    from shipboard.profiles import profile_named
    from shipboard.scheduler import plan

    crew = board.signed[1].member.crew
    mother = board.intake.register.add_contact(
        crew, channel="sms", address="+959123456789", name=None, language=None, now=START
    )
    message = board.outbox.accept_message(
        crew=crew,
        contact=mother.contact,
        lang=Language.MYA,
        now=START,
        quota_bytes=1 << 20,
        body="all is well",
    )
    board.file(0, "no wages for three months")
    for _ in range(4):
        board.clock.now = board.intake.lane.next_release_at()  # type: ignore[union-attr]
        board.intake.release_lane(board.clock())
    due = board.clock() + DAY
    quota = crew_quota()
    snapshot = build_snapshot(
        board.outbox,
        now=due,
        quota_bytes=quota,
        remaining_budget_bytes=0,
        last_session_at=due - 2 * HOUR,
    )
    spent = {(crew, snapshot.month): quota for crew in range(1, 10)}
    snapshot = dataclasses.replace(snapshot, ledger=QuotaLedger(quota, spent))
    settings = SchedulerSettings(latency_s={"sos": 0.0, "grievance": DAY, "message": 6 * HOUR})
    decided = plan(snapshot, profile_named("iridium-certus"), settings, due)
    lane_items = [p.message_seq for p in snapshot.pending if p.kind == MessageKind.LANE]
    assert decided.open_session
    assert str(decided.reason) == "grievance_due"
    assert sorted(decided.send) == sorted(lane_items)
    assert len(lane_items) == 4
    assert [(h.message_seq, str(h.reason)) for h in decided.held] == [
        (message.message_seq, "quota")
    ]


# --- the doors --------------------------------------------------------------------------


async def test_lane_full_is_said_in_the_crew_members_language_and_their_text_kept(
    tmp_path: Path,
) -> None:
    """The crew page (Khmer) and the API refuse a report the lane cannot take now with a
    sentence in the crew member's language saying until when; the page keeps the text
    they wrote in the form; nothing is stored."""
    small = ReservoirParams(blocks_per_period=1, pool_rows=2, min_rows=2, max_rows=6)
    board = Board(tmp_path, params=small)
    try:
        board.file(1, "no wages")
        board.file(1, "no food")  # both free rows hold a report
        app = create_app(board.intake)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://vessel", follow_redirects=True
        ) as client:
            login = await client.post(
                "/api/login", json={"crew": board.signed[0].member.crew, "pin": board.pins[0]}
            )
            auth = {"authorization": f"Bearer {login.json()['token']}"}
            refused = await client.post(
                "/api/grievances",
                json={"union": 7, "category": 8, "text": "unpaid", "lang": "eng"},
                headers=auth,
            )
            assert refused.status_code == 503
            problem = refused.json()
            assert problem["type"].endswith("lane-full")
            assert "{time}" not in problem["detail"]
            assert "ផ្លូវសម្រាប់រាយការណ៍ពេញ" in problem["detail"]  # Khmer: the channel is full
            form = await client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf
            page = await client.post(
                "/login",
                data={
                    "crew": str(board.signed[0].member.crew),
                    "pin": board.pins[0],
                    "csrf": csrf.group(1),
                },
            )
            chosen = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert chosen
            home = await client.post(
                "/pin", data={"pin": "80808080", "pin2": "80808080", "csrf": chosen.group(1)}
            )
            token = re.search(r'name="csrf" value="([^"]+)"', home.text)
            assert token
            written = "ប្រាក់ខែមិនបានបង់ បីខែហើយ"
            report = await client.post(
                "/report",
                data={"category": "8", "union": "7", "text": written, "csrf": token.group(1)},
            )
            assert report.status_code == 400
            assert "ផ្លូវសម្រាប់រាយការណ៍ពេញ" in report.text
            assert written in report.text  # kept in the form: nothing they wrote is lost
        reporter = board.signed[0]
        assert board.intake.view.casebook(reporter.member.crew, reporter.case_key) == []
    finally:
        board.close()


def _down_batch(board: Board, blocks: list[bytes]) -> None:
    """The relay sends lane blocks down in its next downlink batch; the vessel applies it."""
    minutes = int(board.clock() // 60)
    period = 30_000 + board.shore.next_downlink
    lane = [
        LaneBlock(period=period, index=i, block=block, written_minutes=minutes)
        for i, block in enumerate(blocks)
    ]
    board.outbox.apply_downlink(board.shore.downlink(lane, minutes), board.clock())


async def test_notes_come_down_the_lane_and_only_the_reporter_finds_them(board: Board) -> None:
    """The union answers a report; its note comes down as lane blocks among cover.
    ``GET /api/cases/{seq}`` shows it to the reporter, with the report's receipt code;
    another crew member and the reporter's own duress PIN get 404 and no case; the blocks
    are kept on board without any crew number."""
    crew = board.signed[0].member.crew
    board.signed[0] = board.intake.register.choose_pin(crew, "80808080", "70707070", 0.0)
    filed = board.intake.file_grievance(
        board.signed[0],
        union_id=7,
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text="no wages",
        lang=Language.ENG,
        anonymous=False,
    )
    reply = reporter_reply_keys(board.signed[0].case_key).public_key
    size = LaneShape().down_block_bytes
    cover = [cover_down_block(bytes(nacl.public.PrivateKey.generate().public_key), size)]
    note = CaseNote(
        filed.case_number, CaseStatus.ACKNOWLEDGED, 30_000_003, "Received.", Language.ENG
    )
    _down_batch(board, [*cover, *seal_down_blocks(note, reply, size, b"\x03" * 8), *cover])
    with board.outbox.reading() as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(lane_down)")]
    assert "crew" not in columns
    app = create_app(board.intake)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vessel") as client:

        async def sign_in(crew: int, pin: str) -> dict[str, str]:
            answer = await client.post("/api/login", json={"crew": crew, "pin": pin})
            assert answer.status_code == 200
            return {"authorization": f"Bearer {answer.json()['token']}"}

        reporter = await sign_in(crew, "80808080")
        shown = await client.get(f"/api/cases/{filed.message_seq}", headers=reporter)
        assert shown.status_code == 200
        body = shown.json()
        assert body["case_number"] == filed.case_number
        assert body["receipt_code"] == filed.receipt_code
        assert body["stage"] == "acknowledged"
        assert [n["text"] for n in body["notes"]] == ["Received."]
        assert (await client.get("/api/inbox", headers=reporter)).json()["cases"] == [
            filed.message_seq
        ]
        other = await sign_in(board.signed[1].member.crew, board.pins[1])
        assert (
            await client.get(f"/api/cases/{filed.message_seq}", headers=other)
        ).status_code == 404
        assert (await client.get("/api/inbox", headers=other)).json()["cases"] == []
        duress = await sign_in(crew, "70707070")
        assert (
            await client.get(f"/api/cases/{filed.message_seq}", headers=duress)
        ).status_code == 404
        assert (await client.get("/api/inbox", headers=duress)).json()["cases"] == []


def test_the_first_notes_open_with_the_key_of_the_pin_that_filed(board: Board) -> None:
    """Notes to a report, long (several blocks, split over two downlink batches) and
    short, open in order with the reporter's key; cover and notes to someone else do not
    show."""
    from shipboard.case_view import Reader, show_case

    number = board.file(0, "no wages")
    case = f"{board.config.vessel.vessel_id}-{number}"
    reply = reporter_reply_keys(board.signed[0].case_key).public_key
    stranger = reporter_reply_keys(board.signed[1].case_key).public_key
    size = LaneShape().down_block_bytes
    cover = [cover_down_block(bytes(nacl.public.PrivateKey.generate().public_key), size)]
    first = CaseNote(case, CaseStatus.ACKNOWLEDGED, 30_000_001)
    second = CaseNote(
        case, CaseStatus.IN_PROGRESS, 30_000_002, "We called the owner. " * 30, Language.ENG
    )
    long_note = seal_down_blocks(second, reply, size, b"\x02" * 8)
    assert len(long_note) > 1
    _down_batch(board, cover + seal_down_blocks(first, reply, size, b"\x01" * 8))
    _down_batch(board, [long_note[0], *seal_down_blocks(first, stranger, size, b"\x05" * 8)])
    _down_batch(board, long_note[1:])
    shown = show_case(Reader(board.intake.view, board.signed[0]), number)
    assert shown is not None
    assert [note.stage for note in shown.notes] == [CaseStatus.ACKNOWLEDGED, CaseStatus.IN_PROGRESS]
    assert shown.notes[1].text == "We called the owner. " * 30
    assert shown.stage is CaseStatus.IN_PROGRESS
    assert show_case(Reader(board.intake.view, board.signed[1]), number) is None


# --- restarts and the release before the lane -------------------------------------------


def test_periods_missed_while_the_agent_was_off_leave_at_once_in_order(tmp_path: Path) -> None:
    """The agent is off for two days and a half: at its return the ten periods it missed
    are released at once, in order, each the end of its own period, and a report filed
    before it stopped is among them, whole."""
    board = Board(tmp_path)
    try:
        number = board.file(0, "they took our passports")
        board.outbox.close()
        board.clock.advance(2.5 * DAY)
        board.outbox = Outbox.open(board.config.database_path, board.config.vessel.vessel_id)
        board.intake = Intake(board.config, board.outbox, default_codebook(), clock=board.clock)
        assert board.intake.release_lane(board.clock()) == 10
        pending = board.outbox.pending_messages(board.clock())
        assert [p.kind for p in pending] == [MessageKind.LANE] * 10
        ends = [p.accepted_at for p in pending]
        assert ends == sorted(ends)
        assert [b - a for a, b in itertools.pairwise(ends)] == [21_600.0] * 9
        _, data = board.outbox.make_batch(
            [p.message_seq for p in pending], CODEBOOK, VESSEL_KEY, board.clock()
        )
        sent = lane_blocks_of([data], VESSEL_KEY.verify_key, CODEBOOK)
        assert [b.period for b in sent] == list(range(sent[0].period, sent[0].period + 10))
        (report,) = union_reads([b.block for b in sent], bytes(UNION), CODEBOOK)
        assert parse_case_number(str(report.case_number))[1] == number
    finally:
        board.close()


def test_slots_of_the_release_before_still_go_out_as_they_are(board: Board) -> None:
    """A vessel updated with daily slots still on board (one holding a report): they leave
    when their day is over, byte for byte, as the envelopes they were; no new slot is made."""
    from shipboard.states import MessageState

    union = bytes(UNION.public_key)
    release = board.clock() + HOUR
    sealed = seal_slot(SlotHeader(1, 20_000), SlotKind.GRIEVANCE, b"old report", union, 2048)
    with board.outbox.transaction("a slot of the release before") as db:
        db.execute(
            "INSERT INTO messages (kind, union_id, sealed, text_bytes, month, state, "
            "accepted_at, reporter_tag) VALUES ('grievance', 7, ?, 0, 202609, ?, ?, ?)",
            (sealed, MessageState.ACCEPTED, release, b"t" * 32),
        )
    assert [p.kind for p in board.outbox.pending_messages(board.clock())] == []
    due = board.outbox.pending_messages(release + 1)
    assert [p.kind for p in due] == [MessageKind.GRIEVANCE]
    _, data = board.outbox.make_batch([p.message_seq for p in due], CODEBOOK, VESSEL_KEY, release)
    batch = decode_batch(
        data, codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key, direction=Direction.UPLINK
    )
    (old,) = [e for e in batch.envelopes if isinstance(e, GrievanceReport)]
    assert old.sealed == sealed
    with board.outbox.reading() as db:
        kinds = {row[0] for row in db.execute("SELECT DISTINCT kind FROM messages")}
    assert kinds == {"grievance"}
