"""Weekly access in the compliance report (issue 23): per crew member, the weeks of the
month in which they could use the system (it was reachable) and did (signed in on board,
sent, received), beside the Thai rule's test, so a weekly requirement such as Taiwan's can
be shown. Sign-ins are known only on board: they come up in the agent's signed statement.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.codebooks import default_codebook
from common.signins import SignInGuard
from protocol.compliance import (
    AgentStatement,
    ComplianceReport,
    CrewWeeks,
    verify_report,
    weekly_access,
)
from protocol.languages import Language
from protocol.topics import uplink_topic
from shipboard.crew import CrewRegister
from shipboard.downlink import apply_downlink_payload
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS
from shipboard.report import build_statement
from shipboard.signin import CrewSignIn
from shore.downlink import Downlink, DownlinkConfig
from shore.ingest import Ingestor
from shore.report_render import render_csv, render_html
from shore.reports import build_report
from shore.store import SqliteStore, VesselInfo
from tests.kit.clock import FakeClock
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from vessel_relay.cli import app

VESSEL = 4242
MONTH = 202610  # 1 October 2026 is a Thursday: ISO weeks 40 to 44 overlap the month
WEEKS = (202640, 202641, 202642, 202643, 202644)
FIRST_DAY = datetime(2026, 10, 1, 9, tzinfo=UTC).timestamp()
DAY_S = 86_400.0


@dataclass
class Vessel:
    """The vessel's real outbox and crew register, and the real relay store, on one clock."""

    outbox: Outbox
    register: CrewRegister
    store: SqliteStore
    clock: FakeClock
    signins: CrewSignIn

    async def session(self) -> None:
        """A link session: what is queued goes up and is stored; the downlink comes back
        and is applied (and is acknowledged by the next session's batch)."""
        codebook = default_codebook()
        pending = [p.message_seq for p in self.outbox.pending_messages(self.clock.now)]
        batch_seq, data = self.outbox.make_batch(pending, codebook, VESSEL_KEY, self.clock.now)
        self.outbox.mark_sent(batch_seq, self.clock.now)
        await Ingestor(self.store, codebook, clock=self.clock).handle(uplink_topic(VESSEL), data)
        published: list[bytes] = []

        async def publish(topic: str, payload: bytes) -> None:
            published.append(payload)

        config = DownlinkConfig(slots=False, tick_s=1.0)
        await Downlink(self.store, SHORE_KEY, codebook, config, clock=self.clock).publish_due(
            publish
        )
        for payload in published:
            apply_downlink_payload(
                self.outbox,
                payload,
                vessel_id=VESSEL,
                shore_verify_key=SHORE_KEY.verify_key,
                codebook=codebook,
                now=self.clock.now,
            )


@pytest.fixture
async def vessel(tmp_path: Path) -> AsyncIterator[Vessel]:
    clock = FakeClock(FIRST_DAY - 3 * DAY_S)
    outbox = Outbox.open(tmp_path / "outbox.sqlite3", VESSEL)
    store = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star 42", "TW", "CT7-0042", "Keelung Fishing Co", (1,))
    await store.add_vessel(info, VESSEL_KEY.verify_key.key, clock.now - 3600, VESSEL)
    register = CrewRegister(outbox)
    signins = CrewSignIn(register, SignInGuard(clock=clock), clock)
    try:
        yield Vessel(outbox, register, store, clock, signins)
    finally:
        await store.close()
        outbox.close()


async def test_the_report_shows_one_crew_member_using_it_every_week_and_one_never(
    vessel: Vessel,
) -> None:
    """October on a distant-water vessel: the link is up every week. Aung Min signs in on
    the crew page, writes home and gets his family's answers every week; Budi is on board
    all month but never signs in. The owner's report lists the month's five ISO weeks as
    reachable, shows that both could use the system every week, that Aung Min did in all
    five and Budi in none, and it verifies offline with the shore's and the vessel's keys;
    the Thai rule's test is there as before."""
    aung, aung_pin = vessel.register.add(
        name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA,
        now=vessel.clock.now,
    )  # fmt: skip
    budi, _ = vessel.register.add(
        name="Budi", document="SB-2", nationality="ID", language=Language.IND,
        now=vessel.clock.now,
    )  # fmt: skip
    home = vessel.register.add_contact(
        aung.crew, channel="email", address="family@example.org", name="Mother",
        language=Language.MYA, now=vessel.clock.now,
    )  # fmt: skip
    for week in range(5):
        vessel.clock.now = FIRST_DAY + week * 7 * DAY_S
        vessel.signins.sign_in(aung.crew, aung_pin)
        vessel.outbox.accept_message(
            crew=aung.crew, contact=home.contact, lang=Language.ENG, now=vessel.clock.now,
            quota_bytes=1 << 20, body=f"week {week + 1}: all well on board",
        )  # fmt: skip
        await vessel.session()
        await vessel.store.queue_reply(
            VESSEL, aung.crew, home.contact, f"answer {week + 1}", Language.ENG, False,
            vessel.clock.now + 60,
        )  # fmt: skip
        vessel.clock.advance(3600)
        await vessel.session()  # the reply comes down
        vessel.clock.advance(3600)
        await vessel.session()  # and its batch is acknowledged
    vessel.clock.now = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    statement = build_statement(
        vessel.outbox, MONTH, quota_bytes=1 << 20, profile=IRIDIUM_CERTUS,
        vessel_key=VESSEL_KEY, now=vessel.clock.now,
    )  # fmt: skip
    assert statement.signed_in() == {aung.crew: WEEKS, budi.crew: ()}
    report = await build_report(
        vessel.store, VESSEL, MONTH, SHORE_KEY, vessel.clock.now, statement=statement
    )

    weekly = report.weekly
    assert weekly is not None
    assert weekly.weeks == WEEKS
    assert weekly.reachable == WEEKS
    assert weekly.reachable_every_week
    lines = {line.crew: line for line in weekly.crew}
    assert lines[aung.crew] == CrewWeeks(aung.crew, WEEKS, WEEKS, WEEKS, WEEKS, WEEKS)
    assert lines[budi.crew] == CrewWeeks(budi.crew, WEEKS, (), (), (), ())
    assert weekly.used_every_week(aung.crew)
    assert not weekly.used_every_week(budi.crew)
    assert report.rule.crew_count == 2  # the Thai rule's test stands beside it

    data = report.to_json()
    assert b'"weekly_access"' in data
    assert b'"version": 3' in data
    read = ComplianceReport.from_json(data)
    keys = {"shore_key": SHORE_KEY.verify_key.key, "vessel_key": VESSEL_KEY.verify_key.key}
    assert verify_report(read, **keys) == []
    # a shore that claims Budi used it is caught, even when it signs its claim
    claimed = replace(lines[budi.crew], did=WEEKS)
    forged = replace(report, weekly=replace(weekly, crew=(lines[aung.crew], claimed))).signed(
        SHORE_KEY
    )
    problems = verify_report(ComplianceReport.from_json(forged.to_json()), **keys)
    assert any(f"crew member {budi.crew}" in p for p in problems)

    # the owner's printout and spreadsheet show it too
    html = render_html(report)
    assert "Weekly access" in html
    assert "การเข้าถึงรายสัปดาห์" in html
    rows = re.findall(
        r"<tr><td>(\d+)</td><td class=\"l\">([^<]*)</td>\s*((?:<td>[^<]*</td>)+)", html
    )
    cells = {int(crew): (name, re.findall(r"<td>([^<]*)</td>", tds)) for crew, name, tds in rows}
    assert cells[aung.crew][0] == "Aung Min"
    assert cells[aung.crew][1][:5] == ["U"] * 5
    assert cells[budi.crew][1][:5] == ["c"] * 5
    table = {int(row["crew"]): row for row in csv.DictReader(io.StringIO(render_csv(report)))}
    assert (table[aung.crew]["weeks_in_month"], table[aung.crew]["weeks_used"]) == ("5", "5")
    assert table[aung.crew]["weeks_used_list"] == " ".join(map(str, WEEKS))
    assert (table[budi.crew]["weeks_could"], table[budi.crew]["weeks_used"]) == ("5", "0")
    # and the inspector's offline check says it in one line
    path = vessel.outbox.database.path.parent / "report.json"
    path.write_bytes(data)
    checked = CliRunner().invoke(
        app, ["report", "verify", str(path), "--shore-key", SHORE_KEY.verify_key.hex()]
    )
    assert checked.exit_code == 0, checked.output
    assert (
        "weekly:  reachable in 5 of 5 weeks (every week); 1 of 2 crew members used it every week"
        in checked.stdout
    )


def test_a_week_without_a_link_session_is_one_they_could_not_use_it() -> None:
    """The vessel's link is down for all of week 42 and nothing reaches the shore: the
    report says the system was not reachable that week, so nobody could use it then and
    the vessel fails the every-week test; a crew member who signed in on board that week
    still counts as having used the page."""
    reachable = [202640, 202641, 202643, 202644, 202645]  # 202645 is November's
    found = weekly_access(MONTH, [1, 2], reachable, {1: [202640]}, {}, {1: [202642], 2: []})
    assert found.reachable == (202640, 202641, 202643, 202644)
    assert not found.reachable_every_week
    one, two = found.crew
    assert one.could == (202640, 202641, 202643, 202644)
    assert one.did == (202640, 202642)
    assert two.did == ()
    assert two.could == one.could


def test_a_statement_without_sign_ins_still_verifies_and_says_nothing_about_them() -> None:
    """An agent of the release before writes no sign-in weeks: its statement keeps its
    signature (nothing is added to what it signed), and the report says sign-ins were not
    measured rather than that nobody signed in."""
    from protocol.compliance import LinkFigures

    older = AgentStatement(
        vessel_id=VESSEL, month=MONTH, made_minutes=1, crew=(),
        link=LinkFigures("vsat", 0, 0, 0, 0), days_at_sea=None, grievance_lane_daily=None,
        batches=(),
    ).signed(VESSEL_KEY)  # fmt: skip
    assert b"signed_in_weeks" not in older.signed_bytes()
    again = AgentStatement.from_obj(older.to_obj())
    assert again == older
    assert again.signed_in() is None
    found = weekly_access(MONTH, [1], WEEKS, {}, {1: [202641]}, again.signed_in())
    assert found.crew[0].signed_in is None
    assert found.crew[0].did == (202641,)
