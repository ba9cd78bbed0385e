"""Retention: a union keeps closed cases for the time it sets; then their texts and the
reporter's details are purged from ``union.db`` (free pages and WAL included), while an
export made before still verifies and the statistics still count the case.

Reports go through the real intake, outbox, relay store and union API (uvicorn on loopback).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.codebooks import default_codebook
from protocol.envelopes import CaseStatus
from shore.union.client import RelayClient
from shore.union.inbox import InboxError, UnionInbox, verify_export
from shore.union.keys import load_union
from tests.union.test_caseworker_tool import _file_report, _found_on_disk
from tests.union.test_union_inbox import NOW, World, _uplink, world
from vessel_relay.cli import app as cli_app

__all__ = ["world"]  # the fixture, imported for these tests

DAY_S = 86_400.0
GONE = "PURGE-CANARY the bosun beat Ko Htet"
KEPT = "KEEP-CANARY no drinking water for two days"
REASON = "PURGE-CANARY-REASON settled: wages paid in full"


async def test_a_closed_case_is_purged_after_the_retention_and_its_export_still_verifies(
    world: World, tmp_path: Path
) -> None:
    """Retention 30 days. One case is closed (with a reason) and exported; another stays
    open. 31 days later `fetch` purges the closed one: its report text, reason, reporter's
    name and receipt code are gone from union.db, its WAL and its free pages; the open
    case's text is still there (the scan works). The earlier export verifies offline with
    the evidence head kept for the case; the statistics still count both; the access log
    records the purge."""
    now = [NOW]
    identity = load_union(world.union_dir)
    inbox = UnionInbox(
        identity, default_codebook(), client=RelayClient(identity), clock=lambda: now[0]
    )
    try:
        closed = _file_report(world, GONE, name="PURGE-CANARY-NAME Ko Htet")
        still_open = _file_report(world, KEPT, name="Keep Name")
        await _uplink(world)
        assert (await asyncio.to_thread(inbox.fetch)).new_cases == 2
        await asyncio.to_thread(inbox.set_status, closed, CaseStatus.CLOSED, REASON)
        export = tmp_path / "closed.json"
        inbox.export(closed, export)
        receipt = inbox.show(closed).receipt_code
        inbox.set_retention_days(30)
        assert _found_on_disk(identity.database, GONE) == [GONE]  # unencrypted: in clear

        now[0] += 29 * DAY_S
        await asyncio.to_thread(inbox.fetch)
        assert inbox.show(closed).summary.status is CaseStatus.CLOSED  # not yet
        now[0] += 2 * DAY_S
        await asyncio.to_thread(inbox.fetch)

        database = identity.database
        assert _found_on_disk(database, GONE, REASON, "PURGE-CANARY-NAME", receipt) == []
        assert _found_on_disk(database, KEPT) == [KEPT]
        with pytest.raises(InboxError, match="was purged"):
            inbox.show(closed)
        verified = verify_export(export)
        assert verified.case_number == closed
        purge = [r for r in inbox.access_log(closed) if r.action == "purge"]
        assert len(purge) == 1
        assert purge[0].caseworker == "retention"
        assert verified.head.hex() in purge[0].detail
        assert {f.outcome for f in inbox.case_facts()} == {"closed", "open"}
        assert inbox.show(still_open).entries[0].fields["text"] == KEPT
        assert inbox.purge_due() == []  # once
    finally:
        if inbox.client is not None:
            inbox.client.close()
        inbox.close()


def test_retention_is_set_and_shown_from_the_command_line(world: World) -> None:
    """`union retention` shows "for ever" until set; takes days or 'none'; refuses words."""
    runner = CliRunner()
    union = ["--dir", str(world.union_dir)]
    assert "kept for ever" in runner.invoke(cli_app, ["union", "retention", *union]).output
    set_days = runner.invoke(cli_app, ["union", "retention", *union, "365"])
    assert "purged 365 days after" in set_days.output
    wrong = runner.invoke(cli_app, ["union", "retention", *union, "a year"])
    assert wrong.exit_code != 0
    assert "kept for ever" in runner.invoke(cli_app, ["union", "retention", *union, "none"]).output
    assert "nothing to purge" in runner.invoke(cli_app, ["union", "purge", *union]).output
