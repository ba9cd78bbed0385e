"""The grievance lane on the compliance report: the shore checks, from the slots' clear
headers only, that every crew member's daily slot arrived on every day of the month."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import nacl.public

from protocol.compliance import ComplianceReport, GrievanceLane, verify_report
from protocol.envelopes import GrievanceReport
from protocol.slots import SlotHeader, SlotKind, day_of, seal_slot
from shore.report_render import render_html
from shore.reports import build_report, grievance_lane
from shore.store import SqliteStore, VesselInfo
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY, decoded_uplink, uplink

VESSEL = 4242
OCTOBER = 202610
OCT_1 = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
AFTER = datetime(2026, 11, 2, tzinfo=UTC).timestamp()


async def _store_with_slots(tmp_path: Path, dropped: dict[int, set[int]]) -> SqliteStore:
    """Crew members 1 and 2 send a slot for each day of October, except ``dropped`` days."""
    store = await SqliteStore.open(tmp_path / "relay.db")
    await store.add_vessel(
        VesselInfo("Sea Star 7", "TH", "TH-4242", "Owner"),
        VESSEL_KEY.verify_key.key,
        OCT_1,
        vessel_id=VESSEL,
    )
    union_key = nacl.public.PrivateKey.generate().public_key.encode()
    seq = 0
    for day in range(31):
        released = OCT_1 + (day + 1) * 86_400
        for crew in (1, 2):
            if day in dropped.get(crew, set()):
                continue
            seq += 1
            sealed = seal_slot(
                SlotHeader(crew, day_of(OCT_1) + day), SlotKind.COVER, b"", union_key
            )
            minutes = int(released // 60)
            report = GrievanceReport(
                message_seq=seq, union=1, written_minutes=minutes, sealed=sealed
            )
            data = uplink(VESSEL, seq, [report], minutes=minutes)
            await store.ingest_batch(decoded_uplink(data), data, released + 600)
    return store


async def test_every_slot_arrived(tmp_path: Path) -> None:
    """All 31 days of both crew members' slots arrived: the lane was open every day."""
    store = await _store_with_slots(tmp_path, {})
    try:
        lane = await grievance_lane(store, VESSEL, OCTOBER, None, AFTER)
        assert lane == GrievanceLane(day_of(OCT_1), 31, ())
        assert lane is not None
        assert lane.open_every_day
    finally:
        await store.close()


async def test_dropped_slots_show_on_the_signed_report(tmp_path: Path) -> None:
    """The owner's agent dropped crew member 2's slots on 3 days, and crew member 3 (on the
    vessel's list) never had one: the report says the lane was not open every day, names
    the days missing per crew member, verifies offline and shows it on the page."""
    store = await _store_with_slots(tmp_path, {2: {4, 5, 20}})
    try:
        lane = await grievance_lane(store, VESSEL, OCTOBER, [1, 2, 3], AFTER)
        assert lane == GrievanceLane(day_of(OCT_1), 31, ((2, 3), (3, 31)))
        # made on 10 October: only the 9 days that are over are checked
        early = await grievance_lane(store, VESSEL, OCTOBER, [1, 2], OCT_1 + 9.5 * 86_400)
        assert early == GrievanceLane(day_of(OCT_1), 9, ((2, 2),))
        report = await build_report(store, VESSEL, OCTOBER, SHORE_KEY, AFTER)
    finally:
        await store.close()
    assert report.lane == GrievanceLane(day_of(OCT_1), 31, ((2, 3),))
    again = ComplianceReport.from_json(report.to_json())
    assert again == report
    assert verify_report(again, shore_key=SHORE_KEY.verify_key.key) == []
    assert report.leaves == ()  # slots carry no crew text: no leaf counts them
    html = render_html(report)
    assert 'crew member 2 <span class="th">ลูกเรือ</span>: 3 days without a slot' in html


async def test_a_vessel_without_slots_is_not_measured(tmp_path: Path) -> None:
    """A vessel that sends no daily slots: the lane is 'not measured', not 'open'."""
    store = await _store_with_slots(tmp_path, {1: set(range(31)), 2: set(range(31))})
    try:
        assert await grievance_lane(store, VESSEL, OCTOBER, [1, 2], AFTER) is None
        report = await build_report(store, VESSEL, OCTOBER, SHORE_KEY, AFTER)
    finally:
        await store.close()
    assert report.lane is None
    assert any("grievance lane open every day: not measured" in n for n in report.notes)
