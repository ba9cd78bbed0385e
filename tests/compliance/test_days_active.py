"""Days at sea on the compliance report, measured as days with activity on board.

The agent cannot tell sea from port, so the statement counts the days of the month (UTC)
with a satellite session or a crew member's message or SOS recorded on board, and the
report says so in those words. The sample page in docs/screenshots is drawn from the
simulated month:

    VR_UPDATE_SCREENSHOTS=1 .venv/bin/pytest tests/compliance/test_days_active.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pypdfium2
import pytest

from protocol.languages import Language
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from shipboard.crew import CrewRegister
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS
from shipboard.report import build_statement, days_active
from shipboard.sessions_log import LinkSession
from shore.report_render import render_html, render_pdf
from tests.compliance.month import Month
from tests.shore.store_fixtures import VESSEL_KEY

VESSEL = 4344
OCTOBER = 202610
ROOT = Path(__file__).resolve().parents[2]


def _at(day: int, hour: int, month: int = 10) -> float:
    return datetime(2026, month, day, hour, tzinfo=UTC).timestamp()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.sqlite3", VESSEL)
    try:
        yield box
    finally:
        box.close()


def _session(at: float, outcome: str) -> LinkSession:
    return LinkSession(
        started_at=at,
        ended_at=at + 30,
        outcome="done" if outcome == "done" else "failed",
        uplink_payload_bytes=100,
        downlink_payload_bytes=10,
        overhead_bytes=2600,
        profile=IRIDIUM_CERTUS.name,
    )


def test_days_at_sea_are_days_with_sessions_or_crew_messages(outbox: Outbox) -> None:
    """In October: sessions on the 2nd (two) and the 3rd (one broke off), a crew message on
    the 3rd and the 9th, an SOS on the 20th; a grievance report on the 25th and a session on
    1 November do not count. The statement says 4 days."""
    register = CrewRegister(outbox)
    member, _pin = register.add(
        name="Budi", document="ID-1", nationality="ID", language=Language.IND, now=_at(1, 0)
    )
    home = register.add_contact(
        member.crew, channel="sms", address="+6281234567", name="Ibu", language=None, now=0.0
    )
    for at, outcome in (
        (_at(2, 1), "done"),
        (_at(2, 23), "done"),
        (_at(3, 4), "failed"),
        (_at(1, 0, month=11), "done"),
    ):
        outbox.record_link_session(_session(at, outcome))
    for at in (_at(3, 12), _at(9, 8)):
        outbox.accept_message(
            crew=member.crew,
            contact=home.contact,
            lang=Language.IND,
            now=at,
            quota_bytes=RULE_MONTHLY_TEXT_BYTES,
            body="sehat",
        )
    outbox.accept_sos(crew=member.crew, now=_at(20, 5))
    outbox.accept_grievance(union_id=1, sealed=b"s" * 64, case_key=b"k" * 32, now=_at(25, 5))

    assert days_active(outbox, OCTOBER) == 4
    assert days_active(outbox, 202611) == 1
    statement = build_statement(
        outbox,
        OCTOBER,
        quota_bytes=RULE_MONTHLY_TEXT_BYTES,
        profile=IRIDIUM_CERTUS,
        vessel_key=VESSEL_KEY,
        now=_at(1, 6, month=11),
    )
    assert statement.days_at_sea == 4


def test_the_report_says_how_days_at_sea_were_counted(month: Month) -> None:
    """The simulated month's report gives the days with activity on board and says what
    they are, in English and Thai; the page is rendered to PNG (and, when asked, kept as
    the README's sample page)."""
    statement = month.report.statement
    assert statement is not None
    assert statement.days_at_sea is not None
    assert 1 <= statement.days_at_sea <= 31
    html = render_html(month.report)
    assert "days with a satellite session or a crew message" in html
    assert "cannot tell sea from port" in html
    assert "not measured" not in html.split("days at sea", 1)[1].split(";", 1)[0]
    document = pypdfium2.PdfDocument(render_pdf(month.report))
    try:
        text = "".join(
            document[number].get_textpage().get_text_range() for number in range(len(document))
        )
        assert "activity on board" in text
        image = document[0].render(scale=1.5).to_pil()
    finally:
        document.close()
    artefacts = ROOT / "tests" / "compliance" / "artifacts"
    artefacts.mkdir(exist_ok=True)
    image.save(artefacts / "compliance-report.png")
    if os.environ.get("VR_UPDATE_SCREENSHOTS"):
        image.save(ROOT / "docs" / "screenshots" / "compliance-report.png")
