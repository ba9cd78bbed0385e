"""Link sessions on the compliance report: the agent records each session it runs, and the
monthly statement counts and prices them, each under the tariff of the link it ran on, in
total and per link."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from protocol.codebook import Codebook
from protocol.compliance import AgentStatement
from protocol.languages import Language
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from shipboard.config import ShipConfig
from shipboard.crew import CrewRegister
from shipboard.link import LinkDown, SessionReport, run_link, run_session
from shipboard.outbox import Outbox
from shipboard.profiles import FLEETBROADBAND, IRIDIUM_CERTUS
from shipboard.report import build_statement
from shipboard.sessions_log import LinkSession, SessionOutcome, price_month, sessions_in
from tests.kit.model_shore import ModelShore
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.ports import free_port
from tests.shipboard.test_link import NOW, link_settings, shore_running
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from vessel_relay.demo.defaults import demo_ship_config

VESSEL = 4343
OCTOBER = 202610
OCT_5 = datetime(2026, 10, 5, 6, tzinfo=UTC).timestamp()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.sqlite3", VESSEL)
    try:
        yield box
    finally:
        box.close()


def _session(at: float, up: int, down: int, outcome: str = "done") -> LinkSession:
    return LinkSession(
        started_at=at,
        ended_at=at + 20,
        outcome="done" if outcome == "done" else "failed",
        uplink_payload_bytes=up,
        downlink_payload_bytes=down,
        overhead_bytes=2600 if outcome == "done" else 0,
        profile="iridium-certus",
    )


def test_statement_prices_each_session_under_the_profile(outbox: Outbox) -> None:
    """Two Iridium Certus sessions in October (2,750 B and 6,800 B on the link), one that
    broke off and one in November: the October statement shows 2 sessions and 1 failed,
    9,550 link bytes, 5,120 + 7,168 billed bytes (5 KB minimum, 1 KB steps) and US$0.12288
    at $10 per MB."""
    outbox.record_link_session(_session(OCT_5, 100, 50))
    outbox.record_link_session(_session(OCT_5 + 86_400, 4000, 200))
    outbox.record_link_session(_session(OCT_5 + 2 * 86_400, 0, 0, "failed"))
    outbox.record_link_session(_session(datetime(2026, 11, 1, tzinfo=UTC).timestamp(), 10, 10))
    statement = build_statement(
        outbox,
        OCTOBER,
        quota_bytes=RULE_MONTHLY_TEXT_BYTES,
        profile=IRIDIUM_CERTUS,
        vessel_key=VESSEL_KEY,
        now=OCT_5 + 30 * 86_400,
    )
    link = statement.link
    assert (link.profile, link.sessions, link.failed_sessions) == ("iridium-certus", 2, 1)
    assert link.link_bytes == 2750 + 6800
    assert link.billed_bytes == 5120 + 7168
    assert link.cost_micro_usd == 122_880
    assert link.batch_bytes == 0  # no batch was made
    # the same sessions on FleetBroadband: no minimum, 1 KB steps, $18.78 per MB
    priced = price_month(sessions_in(outbox, OCTOBER), FLEETBROADBAND)
    assert priced.billed_bytes == 3072 + 7168
    assert priced.cost_micro_usd == round(10_240 * 18.78)


def test_statement_without_recorded_sessions_says_not_recorded(outbox: Outbox) -> None:
    """An outbox with no session in the month: sessions, billed bytes and cost are unknown
    (None, shown as 'not recorded'), not zero."""
    statement = build_statement(
        outbox,
        OCTOBER,
        quota_bytes=RULE_MONTHLY_TEXT_BYTES,
        profile=IRIDIUM_CERTUS,
        vessel_key=VESSEL_KEY,
        now=OCT_5,
    )
    assert statement.link.sessions is None
    assert statement.link.billed_bytes is None
    assert statement.link.cost_micro_usd is None


def _config(tmp_path: Path) -> ShipConfig:
    base = demo_ship_config(tmp_path)
    return dataclasses.replace(
        base, shore=dataclasses.replace(base.shore, public_key_hex=SHORE_KEY.verify_key.hex())
    )


async def test_the_link_loop_records_its_sessions(
    fresh_mosquitto: MosquittoBroker, outbox: Outbox, tmp_path: Path
) -> None:
    """The agent's link loop over the real outbox and Mosquitto sends an SOS; the session
    it ran is in the sessions log with the payload bytes the session counted, and the
    month's statement bills it at the Certus minimum."""
    codebook: Codebook = default_codebook()
    register = CrewRegister(outbox)
    member, _ = register.add(
        name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA, now=NOW
    )
    outbox.accept_sos(crew=member.crew, now=NOW, position=(1_300_000, 10_050_000))
    settings = link_settings(
        VESSEL, fresh_mosquitto.host, fresh_mosquitto.port, profile=IRIDIUM_CERTUS
    )
    reports: list[SessionReport] = []
    stopping = asyncio.Event()

    async def once(*args: object, **kwargs: object) -> SessionReport:
        report = await run_session(*args, **kwargs)  # type: ignore[arg-type]
        reports.append(report)
        stopping.set()  # the loop records this session, then stops
        return report

    shore = ModelShore.for_keys(codebook, VESSEL_KEY, SHORE_KEY, VESSEL)
    async with shore_running(shore, fresh_mosquitto), asyncio.timeout(60):
        await run_link(
            config=_config(tmp_path),
            outbox=outbox,
            signing_key=VESSEL_KEY,
            codebook=codebook,
            stopping=stopping,
            doorbell=asyncio.Event(),
            clock=lambda: NOW,
            link_settings=settings,
            session_runner=once,
        )
    [report] = reports
    month = datetime.fromtimestamp(NOW, UTC).year * 100 + datetime.fromtimestamp(NOW, UTC).month
    [session] = sessions_in(outbox, month)
    assert session.outcome == "done"
    assert session.uplink_payload_bytes == report.uplink_payload_bytes
    assert session.uplink_payload_bytes == sum(len(r.data) for r in shore.received)
    assert session.downlink_payload_bytes == report.downlink_payload_bytes > 0
    assert session.overhead_bytes > 0
    statement = build_statement(
        outbox,
        month,
        quota_bytes=RULE_MONTHLY_TEXT_BYTES,
        profile=IRIDIUM_CERTUS,
        vessel_key=VESSEL_KEY,
        now=NOW,
    )
    assert statement.link.sessions == 1
    assert statement.link.link_bytes == session.link_bytes
    assert statement.link.billed_bytes == max(5120, -(-session.link_bytes // 1024) * 1024)


async def test_a_session_that_breaks_off_is_recorded_as_failed(
    outbox: Outbox, tmp_path: Path
) -> None:
    """No broker listens: the session fails, and the log keeps it as failed, with no bytes
    (its cost is unknown and not guessed)."""
    settings = link_settings(VESSEL, "127.0.0.1", free_port(), profile=IRIDIUM_CERTUS)
    register = CrewRegister(outbox)
    member, _ = register.add(
        name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA, now=NOW
    )
    outbox.accept_sos(crew=member.crew, now=NOW, position=(1_300_000, 10_050_000))
    stopping = asyncio.Event()
    failures: list[LinkDown] = []

    async def once(*args: object, **kwargs: object) -> SessionReport:
        stopping.set()
        try:
            return await run_session(*args, **kwargs)  # type: ignore[arg-type]
        except LinkDown as exc:
            failures.append(exc)
            raise

    async with asyncio.timeout(60):
        await run_link(
            config=_config(tmp_path),
            outbox=outbox,
            signing_key=VESSEL_KEY,
            codebook=default_codebook(),
            stopping=stopping,
            doorbell=asyncio.Event(),
            clock=lambda: NOW,
            link_settings=settings,
            session_runner=once,
        )
    assert len(failures) == 1
    month = datetime.fromtimestamp(NOW, UTC).year * 100 + datetime.fromtimestamp(NOW, UTC).month
    [session] = sessions_in(outbox, month)
    assert session.outcome == "failed"
    assert session.link_bytes == 0


def _on(profile: str, at: float, up: int, down: int, overhead: int = 0) -> LinkSession:
    return LinkSession(
        started_at=at,
        ended_at=at + 20,
        outcome=SessionOutcome.DONE,
        uplink_payload_bytes=up,
        downlink_payload_bytes=down,
        overhead_bytes=overhead,
        profile=profile,
    )


def test_statement_prices_sbd_and_port_sessions_under_their_own_tariffs(outbox: Outbox) -> None:
    """In October the vessel used its Certus terminal once, the SBD fallback twice (the
    owner had paused the main link) and the harbour's 4G once. The statement shows each
    link on its own line, billed under its own tariff (SBD: 50-byte credits at $3,200 per
    MB; port 4G: no minimum, $0.50 per MB), where it used to bill all four as Certus
    sessions with their 5 KB minimum; the total is the sum of the links."""
    outbox.record_link_session(_on("iridium-certus", OCT_5, 100, 50, 2600))
    outbox.record_link_session(_on("iridium-sbd", OCT_5 + 3600, 50, 0))
    outbox.record_link_session(_on("iridium-sbd", OCT_5 + 7200, 120, 60))
    outbox.record_link_session(_on("port-4g", OCT_5 + 86_400, 40_000, 2_000, 2600))
    outbox.record_link_session(_session(OCT_5 + 2 * 86_400, 0, 0, "failed"))
    statement = build_statement(
        outbox,
        OCTOBER,
        quota_bytes=RULE_MONTHLY_TEXT_BYTES,
        profile=IRIDIUM_CERTUS,
        vessel_key=VESSEL_KEY,
        now=OCT_5 + 30 * 86_400,
    )
    assert statement.links is not None
    by_name = {link.profile: link for link in statement.links}
    assert list(by_name) == ["iridium-certus", "iridium-sbd", "port-4g"]
    certus, sbd, port = by_name.values()
    assert (certus.sessions, certus.failed_sessions, certus.billed_bytes) == (1, 1, 5120)
    assert (sbd.sessions, sbd.link_bytes, sbd.billed_bytes) == (2, 230, 50 + 200)
    assert sbd.cost_micro_usd == round(250 * 3200.0)
    assert (port.sessions, port.link_bytes, port.billed_bytes) == (1, 44_600, 44_600)
    assert port.cost_micro_usd == round(44_600 * 0.5)
    assert all(link.batch_bytes is None for link in statement.links)  # not attributed
    total = statement.link
    assert total.profile == "iridium-certus"  # the main link's name, as before
    assert (total.sessions, total.failed_sessions) == (4, 1)
    assert total.link_bytes == 2750 + 230 + 44_600
    assert total.billed_bytes == 5120 + 250 + 44_600
    assert total.cost_micro_usd == sum(link.cost_micro_usd or 0 for link in statement.links)
    VESSEL_KEY.verify_key.verify(statement.signed_bytes(), statement.signature, what="statement")
    again = AgentStatement.from_obj(json.loads(json.dumps(statement.to_obj())))
    assert again == statement


def test_a_statement_without_figures_per_link_still_verifies(outbox: Outbox) -> None:
    """A statement written by an agent of the release before (or with --no-per-link for an
    older relay) has no "links": it keeps its signature and reads back as None, not as
    "no link was used"."""
    outbox.record_link_session(_on("iridium-sbd", OCT_5, 50, 0))
    older = build_statement(
        outbox,
        OCTOBER,
        quota_bytes=RULE_MONTHLY_TEXT_BYTES,
        profile=IRIDIUM_CERTUS,
        vessel_key=VESSEL_KEY,
        now=OCT_5 + 86_400,
        per_link=False,
    )
    assert b'"links"' not in older.signed_bytes()
    again = AgentStatement.from_obj(older.to_obj())
    assert again.links is None
    VESSEL_KEY.verify_key.verify(again.signed_bytes(), again.signature, what="statement")
    assert again.link.billed_bytes == 50  # the SBD session under SBD's tariff
