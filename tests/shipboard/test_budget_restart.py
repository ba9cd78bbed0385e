"""The monthly satellite budget survives an agent restart, even a SIGKILL.

The link loop checks the owner's monthly budget against a tally of billed bytes. The tally
starts from the link-sessions log in the outbox (each session is committed when it ends), so
an agent killed and restarted mid-month goes on from what it had spent, instead of granting
itself a fresh budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.languages import Language
from protocol.quota import Month
from protocol.signing import SigningKey
from shipboard.config import ShipConfig, default_config
from shipboard.crew import CrewRegister
from shipboard.link import LinkStatistics, SessionReport, billed_so_far, run_link
from shipboard.outbox import Outbox
from shipboard.profiles import FLEETBROADBAND
from shipboard.scheduler import HoldReason, SchedulerSettings
from vessel_relay.codebooks import default_codebook

NOW = 1_790_000_000.0  # 2026-09-21 UTC: both lives run in the same month
SEPTEMBER = 202609
UPLINK_BYTES = 400_000  # what each session of the first life carried up
OVERHEAD_BYTES = SchedulerSettings().session_overhead_bytes
SESSION_BILLED = FLEETBROADBAND.billed_bytes(OVERHEAD_BYTES + UPLINK_BYTES)
BUDGET_BYTES = 1_000_000  # the first life's three sessions spend more than this
ROOT = Path(__file__).resolve().parents[2]


def _config(data: Path) -> ShipConfig:
    base = default_config(data)
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
