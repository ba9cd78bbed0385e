"""The vessel's journal says nothing of the grievance lane.

The owner reads the agent's journal (systemd's, or wherever ``--log-format`` sends it),
and our threat model counts the owner among those a reporter must be hidden from. So a
day on board in which crew members file reports (through the crew API and the crew page,
sealed by the agent or on the phone, one refused as too long, one refused because the lane
is full, a case looked at, a stale form) must leave the same journal, line for line and
at every level down to DEBUG, as the same day with family messages only. Sign-ins stay in
the journal: they happen for family messages too.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import httpx
import nacl.public

from protocol.languages import Language
from shipboard.http_api import create_app
from shipboard.lane_plan import ReservoirParams
from tests.shipboard.test_lane import UNION, Board

#: Loggers of the test's own HTTP client (not the agent's).
CLIENT_LOGGERS = ("httpx", "httpcore")
#: Words no journal line may carry.
LANE_WORDS = re.compile(r"griev|report|case|casebook|seal|lane|union", re.IGNORECASE)
#: Unicode Burmese that the Zawgyi detector is unsure of ("it does not look like rain").
UNSURE_BURMESE = "မိုးရွာမလိုပဲ။"


class Journal(logging.Handler):
    """Every record the root logger sees, kept as it was emitted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(CLIENT_LOGGERS):
            self.records.append(record)

    def lines(self) -> list[tuple[str, str, str, str]]:
        """Each record as logger, level, message template and its arguments (no time)."""
        return [(r.name, r.levelname, str(r.msg), repr(r.args)) for r in self.records]


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


async def _a_day_on_board(tmp_path: Path, *, reports: bool) -> tuple[list[str], Journal]:
    """Two crew members use the API and the crew page; with ``reports`` they also file
    reports every way there is. What the doorbell heard, and the journal."""
    small = ReservoirParams(blocks_per_period=1, pool_rows=4, min_rows=4, max_rows=12)
    board = Board(tmp_path, params=small)  # the lane is started, as the agent does first
    rings: list[str] = []
    board.intake.on_accept = rings.append
    api_crew, page_crew = (signed.member.crew for signed in board.signed)
    mother = board.intake.register.add_contact(
        api_crew, channel="sms", address="+959250000001", name="Mother",
        language=Language.MYA, now=board.clock(),
    ).contact  # fmt: skip
    brother = board.intake.register.add_contact(
        page_crew, channel="email", address="brother@example.org", name="Brother",
        language=Language.MYA, now=board.clock(),
    ).contact  # fmt: skip
    journal = Journal()
    root = logging.getLogger()
    level = root.level
    root.addHandler(journal)
    root.setLevel(logging.DEBUG)
    try:
        transport = httpx.ASGITransport(app=create_app(board.intake))
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://vessel", follow_redirects=True
            ) as api,
            httpx.AsyncClient(
                transport=transport, base_url="http://vessel", follow_redirects=True
            ) as phone,
        ):
            # the crew API
            login = await api.post("/api/login", json={"crew": api_crew, "pin": board.pins[0]})
            auth = {"authorization": f"Bearer {login.json()['token']}"}
            sent = await api.post(
                "/api/messages", json={"contact": mother, "text": "All is well."}, headers=auth
            )
            assert sent.status_code == 201
            if reports:
                filed = await api.post(
                    "/api/grievances",
                    json={"union": 7, "category": "withholding_of_wages", "lang": "mya",
                          "text": f"{UNSURE_BURMESE} no wages for three months"},
                    headers=auth,
                )  # fmt: skip
                assert filed.status_code == 201
                letters = "abcdefghijklmnopqrstuvwxyz0123456789"
                rng = random.Random(5)
                too_long = await api.post(
                    "/api/grievances",
                    json={"union": 7, "category": 8, "lang": "eng",
                          "text": "".join(rng.choice(letters) for _ in range(1_500))},
                    headers=auth,
                )  # fmt: skip
                assert too_long.status_code >= 400
                case = await api.get(f"/api/cases/{filed.json()['message_seq']}", headers=auth)
                assert case.status_code == 200
            assert (await api.get("/api/inbox", headers=auth)).status_code == 200
            # the crew page
            form = await phone.get("/login")
            chosen = await phone.post(
                "/login",
                data={"crew": str(page_crew), "pin": board.pins[1], "csrf": _csrf(form)},
            )
            home = await phone.post(
                "/pin", data={"pin": "80808080", "pin2": "80808080", "csrf": _csrf(chosen)}
            )
            token = _csrf(home)
            written = await phone.post(
                "/write", data={"contact": str(brother), "text": "Rice is good.", "csrf": token}
            )
            assert written.status_code == 200
            if reports:
                assert (await phone.get("/report")).status_code == 200
                report = await phone.post(
                    "/report",
                    data={"category": "8", "union": "7", "text": "they kept my passport",
                          "csrf": token},
                )  # fmt: skip
                assert report.status_code == 201
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
                fourth = await api.post(
                    "/api/grievances",
                    json={"union": 8, "category": 3, "text": "beaten", "lang": "eng"},
                    headers=auth,
                )
                assert fourth.status_code == 201
                full = await api.post(
                    "/api/grievances",
                    json={"union": 8, "category": 3, "text": "beaten again", "lang": "eng"},
                    headers=auth,
                )
                assert full.status_code == 503  # every row of the small lane holds a report
                stale = await phone.post(
                    "/report/phone/sealed?union=7", content=sealed, headers={"x-csrf-token": "x"}
                )
            else:
                stale = await phone.post(
                    "/write", data={"contact": str(brother), "text": "Rice.", "csrf": "x"}
                )
            assert stale.status_code == 403
            assert (await phone.get("/inbox")).status_code == 200
    finally:
        root.removeHandler(journal)
        root.setLevel(level)
        board.close()
    return rings, journal


async def test_reports_leave_no_line_in_the_journal(tmp_path: Path) -> None:
    """A day on board with reports filed every way (API and page, sealed by the agent and
    on the phone, one too long, one refused because the lane is full, a case looked at, a
    stale report form) leaves exactly the journal, logger by logger and line by line at
    DEBUG, of the same day with family messages only; no line of either names a report,
    a case, a casebook or the lane, and a report never rings the link's doorbell."""
    quiet_rings, quiet = await _a_day_on_board(tmp_path / "messages", reports=False)
    rings, journal = await _a_day_on_board(tmp_path / "reports", reports=True)
    assert quiet.records, "the journal captured nothing: the test would prove nothing"
    assert any("signed in" in record.getMessage() for record in journal.records)
    assert journal.lines() == quiet.lines()
    said = [record.getMessage() for record in journal.records]
    assert [line for line in said if LANE_WORDS.search(line)] == []
    assert rings == quiet_rings
