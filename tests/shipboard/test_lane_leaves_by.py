"""When a report leaves the vessel: what the crew member is told is what the lane does.

The lane's reservoir keeps rows from before a restart in front of the rows this run knows
(its credit lets the first restart in a while interleave fresh rows with them; a second
restart soon after cannot). A report filed after two quick restarts therefore waits for
hundreds of rows to leave first, a block every six hours: about a hundred days. The crew
API (``leaves_by``) and the crew page must say so, not "about a day and a half", and what
they say must be when the block is in fact released (plus the grievance latency, within
which a session carries it).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nacl.public

from common.codebooks import default_codebook
from protocol.lane import LaneShape, open_up_block
from protocol.languages import Language
from shipboard.http_api import create_app
from shipboard.intake import USUAL_DEPARTURE_S, Intake
from shipboard.lane import LaneProgress
from shipboard.outbox import Outbox
from shipboard.states import MessageKind
from shipboard.web import local, pages
from shipboard.web.i18n import Translations
from tests.kit.lane import lane_blocks_of
from tests.kit.voyage import CODEBOOK
from tests.shipboard.test_lane import DAY, HOUR, UNION, Board
from tests.shore.store_fixtures import VESSEL_KEY

SHAPE = LaneShape()  # six hours, one block each
WORDS = Translations()


def _restart(board: Board) -> None:
    """The agent restarts at the board's clock: a new process on the same database."""
    board.outbox.close()
    board.outbox = Outbox.open(board.config.database_path, board.config.vessel.vessel_id)
    board.intake = Intake(board.config, board.outbox, default_codebook(), clock=board.clock)
    board.intake.start_lane()


def _local(seconds: float, board: Board) -> str:
    """A moment as the Khmer crew member reads it (the vessel's time zone, Khmer digits)."""
    moment = datetime.fromtimestamp(seconds, UTC).astimezone(board.config.time_zone)
    return local.moment(moment, Language.KHM)


async def _file(board: Board, text: str) -> dict[str, object]:
    """Crew member 0 files a report through the crew API; the API's answer."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(board.intake)), base_url="http://vessel"
    ) as api:
        login = await api.post(
            "/api/login", json={"crew": board.signed[0].member.crew, "pin": board.pins[0]}
        )
        filed = await api.post(
            "/api/grievances",
            json={"union": 7, "category": "withholding_of_wages", "text": text, "lang": "eng"},
            headers={"authorization": f"Bearer {login.json()['token']}"},
        )
    assert filed.status_code == 201
    answer: dict[str, object] = filed.json()
    return answer


async def test_a_report_after_two_quick_restarts_is_told_when_it_really_leaves(
    tmp_path: Path,
) -> None:
    """The agent restarts twice, an hour apart; then a crew member files a one-block
    report. The API says it leaves about a hundred days later, and the lane, driven
    period by period on a fake clock, releases its block at exactly the period that makes
    that time: the grievance latency after the block enters the outbox."""
    board = Board(tmp_path)
    try:
        for _ in range(2):
            board.clock.advance(HOUR)
            _restart(board)
        answer = await _file(board, "no wages for three months")
        leaves_by = answer["leaves_by"]
        assert isinstance(leaves_by, int)
        number = answer["message_seq"]
        assert isinstance(number, int)
        latency_s = 60 * board.config.latency_minutes["grievance"]
        assert 95 * DAY < leaves_by - board.clock() < 110 * DAY
        lane = board.intake.lane
        assert lane is not None
        released = 0
        while board.intake.case_progress(number) is LaneProgress.QUEUED:
            board.clock.now = lane.next_release_at()
            released += board.intake.release_lane(board.clock())
        assert released > 300  # hundreds of rows from before the restarts went first
        assert board.clock() + latency_s == leaves_by  # released when it said
        (last,) = [
            p
            for p in board.outbox.pending_messages(board.clock())
            if p.accepted_at == board.clock()
        ]
        assert last.kind == MessageKind.LANE
        _, data = board.outbox.make_batch([last.message_seq], CODEBOOK, VESSEL_KEY, board.clock())
        (block,) = lane_blocks_of([data], VESSEL_KEY.verify_key, CODEBOOK)
        assert open_up_block(block.block, bytes(UNION)) is not None  # the report's block
    finally:
        board.close()


async def test_a_report_on_a_lane_that_ran_is_told_about_a_day_and_a_half(tmp_path: Path) -> None:
    """On a lane that has run without restarts, a short report leaves within about a day
    and a half (the end of this lane period, then the grievance latency): the API says a
    time within that, and the page says the usual sentence, no date."""
    board = Board(tmp_path)
    try:
        period = SHAPE.period_of(board.clock()) + 1
        board.clock.now = SHAPE.period_start(period) + 1.0  # a period begins: the longest wait
        answer = await _file(board, "no wages for three months")
        leaves_by = answer["leaves_by"]
        assert isinstance(leaves_by, int)
        latency_s = 60 * board.config.latency_minutes["grievance"]
        assert leaves_by == SHAPE.period_start(period + 1) + latency_s
        assert leaves_by - board.clock() <= USUAL_DEPARTURE_S
        page = await _file_on_the_page(board)
        assert WORDS.gettext(Language.KHM, pages.LEAVES_USUALLY) in page
        assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", page)
    finally:
        board.close()


async def test_the_page_says_the_date_in_the_crew_members_language(tmp_path: Path) -> None:
    """After two quick restarts, the crew page's "report saved" says by when the report
    leaves, in the crew member's language (Khmer here), with the vessel's local time; the
    report sealed on the phone is answered the same way."""
    board = Board(tmp_path)
    try:
        for _ in range(2):
            board.clock.advance(HOUR)
            _restart(board)
        page = await _file_on_the_page(board, sealed_too=True)
        assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", page)  # no ISO date
        assert WORDS.gettext(Language.KHM, pages.LEAVES_USUALLY) not in page
        late = WORDS.gettext(Language.KHM, pages.LEAVES_LATE)
        assert "ប្រហែលត្រឹម" in late  # Khmer: "by about"
        before, after = late.split("{time}")
        said = re.search(re.escape(before) + "(.+?)" + re.escape(after), page)
        assert said, page
        # the time said is one of the next 110 days' hours, written the Khmer way
        hours = {_local(board.clock() + hour * HOUR, board): hour for hour in range(110 * 24 + 1)}
        assert said.group(1) in hours
        assert 95 * DAY < hours[said.group(1)] * HOUR < 110 * DAY + HOUR
    finally:
        board.close()


async def _file_on_the_page(board: Board, *, sealed_too: bool = False) -> str:
    """Crew member 0 (Khmer) signs in on the crew page and files a report there; the text
    of the "report saved" page (with ``sealed_too``, a report sealed on the phone is filed
    as well and its answer must carry the same date)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(board.intake)),
        base_url="http://vessel",
        follow_redirects=True,
    ) as phone:
        form = await phone.get("/login")
        chosen = await phone.post(
            "/login",
            data={
                "crew": str(board.signed[0].member.crew),
                "pin": board.pins[0],
                "csrf": _csrf(form),
            },
        )
        home = await phone.post(
            "/pin", data={"pin": "80808080", "pin2": "80808080", "csrf": _csrf(chosen)}
        )
        token = _csrf(home)
        saved = await phone.post(
            "/report",
            data={"category": "8", "union": "7", "text": "they kept my passport", "csrf": token},
        )
        assert saved.status_code == 201
        if sealed_too:
            sealing = await phone.get("/report/phone")
            drawn = re.search(r'data-case="([^"]+)"', sealing.text)
            assert drawn
            sealed = nacl.public.SealedBox(UNION.public_key).encrypt(bytes(256))
            on_phone = await phone.post(
                f"/report/phone/sealed?union=7&case={drawn.group(1)}",
                content=sealed,
                headers={"x-csrf-token": token},
            )
            assert on_phone.status_code == 201
            answer = on_phone.json()
            assert isinstance(answer["leaves_by"], int)
            assert _local(answer["leaves_by"], board) in answer["leaves"]
    return saved.text


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)
