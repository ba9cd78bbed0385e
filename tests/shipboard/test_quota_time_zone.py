"""Quota months in the vessel's time zone, and the intake's two readings of unsure Zawgyi.

A crew member's quota renews at midnight on the first of the month where the vessel keeps
its time (``time_zone`` in the agent's configuration), not at midnight UTC. Intake keeps the
text as typed and the other reading when the Zawgyi detector is unsure, so that the page can
show both.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from protocol.codebook import Codebook
from protocol.languages import Language
from protocol.months import Month
from shipboard.config import ShipConfig
from shipboard.errors import BadText, QuotaExceeded
from shipboard.intake import Intake, read_text
from shipboard.outbox import Outbox, month_of
from tests.kit.clock import FakeClock
from tests.shipboard.conftest import Crew

BANGKOK = ZoneInfo("Asia/Bangkok")  # UTC+7, no daylight saving
#: 2026-10-31 23:30 in Bangkok = 2026-10-31 16:30 UTC: still October on both clocks.
BEFORE = datetime(2026, 10, 31, 23, 30, tzinfo=BANGKOK).timestamp()
#: 2026-11-01 00:30 in Bangkok = 2026-10-31 17:30 UTC: November on board, October in UTC.
AFTER = datetime(2026, 11, 1, 0, 30, tzinfo=BANGKOK).timestamp()


def test_month_of_follows_the_vessel_time_zone() -> None:
    """Half past midnight on 1 November in Bangkok is November on board, though UTC still
    says October; the outbox's month agrees with protocol.quota's for every zone."""
    assert month_of(AFTER) == 202610  # UTC, the default
    assert month_of(AFTER, BANGKOK) == 202611
    assert month_of(BEFORE, BANGKOK) == 202610
    start = Month(2026, 11).start_utc_minutes(BANGKOK) * 60
    assert month_of(start - 60, BANGKOK) == 202610
    assert month_of(start, BANGKOK) == 202611


@pytest.fixture
def bangkok(ship_config: ShipConfig) -> ShipConfig:
    return dataclasses.replace(ship_config, time_zone=BANGKOK)


def test_quota_renews_at_midnight_in_bangkok(
    bangkok: ShipConfig, outbox: Outbox, codebook: Codebook, crew: Crew
) -> None:
    """A crew member who spent their whole quota in October (Bangkok time) may write again
    at 00:30 on 1 November on board, seven hours before the UTC month turns; what they
    wrote in October still counts to October."""
    quota = 40
    config = dataclasses.replace(
        bangkok, quota=dataclasses.replace(bangkok.quota, crew_text_bytes=quota)
    )
    clock = FakeClock(BEFORE)
    intake = Intake(config, outbox, codebook, clock=clock)
    who, mother = crew.member.crew, crew.mother.contact
    intake.send_message(who, mother, "a" * quota, Language.ENG)
    with pytest.raises(QuotaExceeded):
        intake.send_message(who, mother, "one more", Language.ENG)
    assert intake.quota(who).month == 202610
    assert intake.quota(who).remaining_bytes == 0

    clock.now = AFTER
    status = intake.quota(who)
    assert (status.month, status.used_bytes, status.remaining_bytes) == (202611, 0, quota)
    intake.send_message(who, mother, "November", Language.ENG)
    assert intake.quota(who).used_bytes == len("November")
    assert outbox.quota_ledger(AFTER) == {who: len("November")}
    # Under UTC months it would still be October, and refused:
    assert month_of(AFTER) == 202610


def test_intake_keeps_both_readings_when_zawgyi_detection_is_unsure(
    ship_config: ShipConfig, outbox: Outbox, codebook: Codebook, crew: Crew
) -> None:
    """Correct Unicode Burmese that the detector takes for Zawgyi is sent as typed; the
    Zawgyi reading comes back with the acceptance, for the page to offer."""
    line = "မိုးရွာမလိုပဲ။"  # Unicode ("it does not look like rain") that looks like Zawgyi
    reading = read_text(line, Language.MYA)
    assert reading.unsure
    assert reading.text == line
    assert reading.alternative is not None
    assert reading.alternative != line
    intake = Intake(ship_config, outbox, codebook, clock=FakeClock(BEFORE))
    accepted = intake.send_message(crew.member.crew, crew.mother.contact, line, Language.MYA)
    assert accepted.alternative == reading.alternative
    assert accepted.text_bytes == len(line.encode("utf-8"))


def test_intake_asks_nothing_when_the_text_is_plain() -> None:
    """Clean text in any script, or Zawgyi the detector is sure of, keeps no second
    reading; a text with a control character is refused with a sentence."""
    plain = read_text("Mother, I am well.\r\n", Language.ENG)
    assert (plain.text, plain.unsure, plain.original, plain.alternative) == (
        "Mother, I am well.",
        False,
        None,
        None,
    )
    thai = read_text("แม่สบายดีไหม", Language.THA)
    assert not thai.unsure
    assert thai.alternative is None
    assert read_text("   ", Language.ENG).text == ""
    with pytest.raises(BadText, match="cannot be read"):
        read_text("hello\x07there", Language.ENG)
