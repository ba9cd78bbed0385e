"""The weeks in which each crew member signed in on board (issue 23): recorded by every
door's one sign-in check, a row a week and nothing finer, for the agent's statement."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.signins import SignInGuard
from protocol.languages import Language
from shipboard.crew import CrewRegister
from shipboard.errors import OutboxUnavailable
from shipboard.outbox import Outbox
from shipboard.signin import CrewSignIn
from tests.kit.clock import FakeClock

MONDAY = 1_790_553_600.0  # Monday 2026-09-28 00:00 UTC, ISO week 2026-W40
DAY_S = 86_400.0


def test_each_week_with_a_sign_in_is_recorded_once_whichever_pin(tmp_path: Path) -> None:
    """A crew member signs in three times in one week (once with the duress PIN, which
    must look like the real one), then once two weeks later; their shipmate never does.
    The register holds two weeks for the first and none for the second, and no time of
    day."""
    clock = FakeClock(MONDAY + 3600)
    outbox = Outbox.open(tmp_path / "outbox.sqlite3", 1)
    try:
        register = CrewRegister(outbox)
        member, _ = register.add(
            name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA,
            now=clock.now,
        )  # fmt: skip
        other, _ = register.add(
            name="Budi", document="SB-2", nationality="ID", language=Language.IND, now=clock.now
        )
        register.choose_pin(member.crew, "80808080", "13572468", clock.now)
        signins = CrewSignIn(register, SignInGuard(clock=clock), clock)
        signins.sign_in(member.crew, "80808080")
        clock.advance(2 * DAY_S)
        assert signins.sign_in(member.crew, "13572468").duress
        clock.advance(2 * DAY_S)
        signins.sign_in(member.crew, "80808080")
        clock.advance(10 * DAY_S)  # Monday of week 42
        signins.sign_in(member.crew, "80808080")
        assert register.signed_in_weeks((202640, 202641, 202642)) == {member.crew: (202640, 202642)}
        assert register.signed_in_weeks((202641,)) == {}
        with outbox.database.reading() as db:
            rows = db.execute("SELECT * FROM crew_signed_in_weeks ORDER BY week").fetchall()
        assert rows == [(member.crew, 202640), (member.crew, 202642)]
        assert other.crew not in register.signed_in_weeks((202640, 202641, 202642))
    finally:
        outbox.close()


def test_a_disk_that_cannot_record_the_week_does_not_stop_the_sign_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The vessel's disk is full: the crew member still signs in (reading needs no space),
    the week is not recorded, and the operator's log says so without the PIN."""
    clock = FakeClock(MONDAY)
    outbox = Outbox.open(tmp_path / "outbox.sqlite3", 1)
    try:
        register = CrewRegister(outbox)
        member, pin = register.add(
            name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA,
            now=clock.now,
        )  # fmt: skip

        def full(crew: int, now: float) -> bool:
            raise OutboxUnavailable("the disk is full")

        monkeypatch.setattr(register, "note_signed_in", full)
        signed_in = CrewSignIn(register, SignInGuard(clock=clock), clock).sign_in(member.crew, pin)
        assert signed_in.member.crew == member.crew
        assert register.signed_in_weeks((202640,)) == {}
        assert "week of this sign-in could not be recorded" in caplog.text
        assert pin not in caplog.text
    finally:
        outbox.close()
