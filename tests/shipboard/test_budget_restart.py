"""The link loop's months: the satellite budget survives a restart, quotas follow the zone.

The link loop checks the owner's monthly budget against a tally of billed bytes. The tally
starts from the link-sessions log in the outbox (each session is committed when it ends), so
an agent killed and restarted mid-month goes on from what it had spent, instead of granting
itself a fresh budget.

Quota months are the vessel's: the agent and the ``ship`` commands tell the outbox the time
zone of ``[time] zone``, and the link's scheduler counts quotas in the outbox's months.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common.codebooks import default_codebook
from common.keyfiles import new_signing_key
from protocol.languages import Language
from protocol.months import Month
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from protocol.signing import SigningKey
from shipboard.agent import run_agent
from shipboard.cli import _open
from shipboard.config import ShipConfig, to_toml
from shipboard.crew import CrewRegister
from shipboard.link import LinkStatistics, SessionReport, billed_so_far, run_link
from shipboard.outbox import Outbox
from shipboard.profiles import FLEETBROADBAND
from shipboard.scheduler import HoldReason, SchedulerSettings
from tests.kit.ports import free_port
from tests.kit.ship_config import own_keys_document
from vessel_relay.demo.defaults import demo_ship_config

NOW = 1_790_000_000.0  # 2026-09-21 UTC: both lives run in the same month
SEPTEMBER = 202609
UPLINK_BYTES = 400_000  # what each session of the first life carried up
OVERHEAD_BYTES = SchedulerSettings().session_overhead_bytes
SESSION_BILLED = FLEETBROADBAND.billed_bytes(OVERHEAD_BYTES + UPLINK_BYTES)
BUDGET_BYTES = 1_000_000  # the first life's three sessions spend more than this
ROOT = Path(__file__).resolve().parents[2]


def _config(data: Path) -> ShipConfig:
    base = demo_ship_config(data)
    return dataclasses.replace(
        base,
        link=dataclasses.replace(
            base.link, profile=FLEETBROADBAND.name, monthly_budget_bytes=BUDGET_BYTES
        ),
    )


def _policy() -> SchedulerSettings:
    return SchedulerSettings(latency_s={"sos": 0.0, "grievance": 0.0, "message": 0.0})


def _report(uplink_bytes: int) -> SessionReport:
    return SessionReport(
        published=(),
        acknowledged=(),
        rejected=(),
        unacknowledged_after=0,
        downlink_applied=0,
        downlink_duplicates=0,
        downlink_refused=0,
        uplink_payload_bytes=uplink_bytes,
        downlink_payload_bytes=0,
        tls_resumed=None,
    )


async def _first_life(data: Path) -> None:
    """Three sessions of 400 KB each, then the fourth hangs until the process is killed."""
    config = _config(data)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    calls = 0

    async def runner(*args: Any, **kwargs: Any) -> SessionReport:
        nonlocal calls
        calls += 1
        if calls > 3:
            print("parked", flush=True)
            await asyncio.Event().wait()
        print(f"session {calls}", flush=True)
        return _report(UPLINK_BYTES)

    await run_link(
        config=config,
        outbox=outbox,
        signing_key=SigningKey.from_seed(bytes(32)),
        codebook=default_codebook(),
        stopping=asyncio.Event(),
        doorbell=asyncio.Event(),
        clock=lambda: NOW,
        scheduler_settings=_policy(),
        session_runner=runner,
    )


def first_life(data: str) -> None:
    """Entry point of the agent process that gets killed (run by the test below)."""
    asyncio.run(_first_life(Path(data)))


def _prepare(data: Path) -> tuple[int, int]:
    """A crew member with a family contact, and an SOS that keeps sessions opening."""
    config = _config(data)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    try:
        member, _pin = CrewRegister(outbox).add(
            name="Somchai", document="WP-1", nationality="TH", language=Language.THA, now=NOW
        )
        home = CrewRegister(outbox).add_contact(
            member.crew,
            channel="email",
            address="home@example.org",
            name="Home",
            language=None,
            now=NOW,
        )
        outbox.accept_sos(crew=member.crew, now=NOW)
    finally:
        outbox.close()
    return member.crew, home.contact


def _kill_after_three_sessions(data: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from tests.shipboard.test_budget_restart import first_life; "
            "first_life(sys.argv[1])",
            str(data),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for raw in process.stdout:
            lines.append(raw.decode().strip())
            if lines[-1] == "parked":
                break
        assert lines == ["session 1", "session 2", "session 3", "parked"], (
            process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else lines
        )
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL


async def test_the_budget_tally_continues_after_the_agent_is_killed(tmp_path: Path) -> None:
    """An agent that spent more than the owner's monthly budget in three sessions is killed
    (SIGKILL) and started again the same month: the restarted agent knows the budget is
    spent, holds a crew member's family message for the budget (the SOS still goes, outside
    the budget), and its tally goes on growing from there."""
    data = tmp_path / "vessel"
    crew, contact = _prepare(data)
    _kill_after_three_sessions(data)

    config = _config(data)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    try:
        assert len(outbox.link_sessions_in(SEPTEMBER)) == 3  # the killed agent's sessions
        assert await billed_so_far(outbox, FLEETBROADBAND, Month(2026, 9)) == 3 * SESSION_BILLED
        message = outbox.accept_message(
            crew=crew,
            contact=contact,
            lang=Language.ENG,
            now=NOW,
            quota_bytes=config.quota.crew_text_bytes,
            body="home in May",
        )
        stopping = asyncio.Event()
        stats = LinkStatistics()
        sent: list[Sequence[int]] = []
        tally_at_start: list[int] = []

        async def runner(*args: Any, message_seqs: Sequence[int], **kwargs: Any) -> SessionReport:
            sent.append(tuple(message_seqs))
            tally_at_start.append(stats.billed_this_month_bytes)
            stopping.set()
            return _report(1000)

        async with asyncio.timeout(30):
            await run_link(
                config=config,
                outbox=outbox,
                signing_key=SigningKey.from_seed(bytes(32)),
                codebook=default_codebook(),
                stopping=stopping,
                doorbell=asyncio.Event(),
                clock=lambda: NOW,
                scheduler_settings=_policy(),
                statistics=stats,
                session_runner=runner,
            )
        assert tally_at_start == [3 * SESSION_BILLED]
        assert stats.last_plan is not None
        held = stats.last_plan.held_for(HoldReason.BUDGET)
        assert [h.message_seq for h in held] == [message.message_seq]
        [first] = sent
        assert message.message_seq not in first
        assert len(first) == 1  # the SOS
        after = 3 * SESSION_BILLED + FLEETBROADBAND.billed_bytes(OVERHEAD_BYTES + 1000)
        assert stats.billed_this_month_bytes == after
        assert len(outbox.link_sessions_in(SEPTEMBER)) == 4
    finally:
        outbox.close()


BANGKOK = ZoneInfo("Asia/Bangkok")
#: 2026-10-31 23:30 in Bangkok: October on board and in UTC.
BEFORE = datetime(2026, 10, 31, 23, 30, tzinfo=BANGKOK).timestamp()
#: 2026-11-01 00:30 in Bangkok = 2026-10-31 17:30 UTC: November on board, October in UTC.
AFTER = datetime(2026, 11, 1, 0, 30, tzinfo=BANGKOK).timestamp()


async def test_the_running_agent_counts_quotas_in_the_vessel_time_zone(tmp_path: Path) -> None:
    """A crew member spent their whole quota on a message written late on 31 October
    (Bangkok time) that is still waiting on board. At 00:30 on 1 November on board, still
    October in UTC, they write again: the agent's link sends both, the new one within
    November's quota (counted in UTC months it would be held as over quota)."""
    data = tmp_path / "vessel"
    base = demo_ship_config(data)
    assert base.time_zone == BANGKOK  # the default [time] zone
    quota = RULE_MONTHLY_TEXT_BYTES  # the least a crew member may be granted
    config = dataclasses.replace(
        base,
        quota=dataclasses.replace(base.quota, crew_text_bytes=quota, daily_slots=False),
        intake=dataclasses.replace(base.intake, smtp_port=free_port(), http_port=free_port()),
    )
    new_signing_key(config.vessel.signing_key_path)
    crew, contact = _prepare(data)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    try:
        with outbox.transaction() as db:  # the SOS is not this test's business
            db.execute("DELETE FROM messages WHERE kind = 'sos'")
        outbox.use_time_zone(BANGKOK)
        october, november = (
            outbox.accept_message(
                crew=crew, contact=contact, lang=Language.ENG, now=now, quota_bytes=quota, body=text
            )
            for now, text in ((BEFORE, "a" * quota), (AFTER, "November"))
        )
    finally:
        outbox.close()

    stopping = asyncio.Event()
    sent: list[tuple[int, ...]] = []

    async def runner(*args: Any, message_seqs: Sequence[int], **kwargs: Any) -> SessionReport:
        sent.append(tuple(message_seqs))
        stopping.set()
        return _report(100)

    async with asyncio.timeout(30):
        await run_agent(
            config,
            stopping=stopping,
            link_options={
                "clock": lambda: AFTER,
                "session_runner": runner,
                "scheduler_settings": dataclasses.replace(
                    _policy(), max_session_payload_bytes=4 * quota
                ),
            },
        )
    assert sent == [(october.message_seq, november.message_seq)]


def test_ship_commands_open_the_outbox_in_the_vessel_time_zone(tmp_path: Path) -> None:
    """The crew and contact commands see the same quota months as the agent."""
    data = tmp_path / "vessel"
    document = own_keys_document(data)
    document["time"] = {"zone": "Asia/Manila"}
    path = tmp_path / "ship.toml"
    path.write_text(to_toml(document), encoding="utf-8")
    config, outbox = _open(path)
    try:
        assert outbox.time_zone == ZoneInfo("Asia/Manila") == config.time_zone
    finally:
        outbox.close()
