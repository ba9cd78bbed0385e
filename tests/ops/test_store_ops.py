"""Operator queries on both store backends: fleet, silence, activity, outcomes, actions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol.envelopes import DeliveryFailure
from shore.store import RelayStore, SqliteStore, VesselInfo
from shore.store.ops import DeliveryNotFound, OperatorQueries
from shore.store.postgres import PostgresStore
from shore.transparency import sign_daily_head
from tests.ops.fleet_data import ADDRESS, DAY, TEXT, populate
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY, PostgresServer
from tests.shore.test_store import postgres  # noqa: F401 (the session's PostgreSQL fixture)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RelayStore]:
    opened: RelayStore
    if request.param == "sqlite":
        opened = await SqliteStore.open(tmp_path / "relay.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        opened = await PostgresStore.open(server.create_database())
    try:
        yield opened
    finally:
        await opened.close()


async def test_fleet_view_silence_activity_and_outcomes(store: RelayStore) -> None:
    """The operator sees each vessel's last contact, this month's bytes, its queue and
    failures; the vessel silent for five days and the one never heard are listed silent."""
    now = time.time()
    fleet = await populate(store, now)
    queries = OperatorQueries(store, silent_after_s=36 * 3600)
    rows = {row.vessel_id: row for row in await queries.fleet(now)}
    assert set(rows) == {7, 8, 9}
    busy = rows[fleet.busy]
    assert not busy.silent
    assert busy.last_heard_at is not None
    assert now - busy.last_heard_at < 2 * DAY
    assert busy.queued_deliveries == 2  # one retrying, one never tried
    assert busy.failed_deliveries == 1
    assert busy.quarantined == 1
    assert busy.uplink_bytes_month > 0
    assert rows[fleet.quiet].silent
    assert rows[fleet.never].silent
    assert [row.vessel_id for row in await queries.silent_vessels(now)] == [9, 8]
    days = await queries.activity(fleet.busy, now)
    assert len(days) == 30
    assert sum(day.batches for day in days) == sum(1 + d % 3 for d in range(1, 21))
    assert sum(day.sessions for day in days) == 26  # 15 days of one, 5 of 3, 2, 1, 3, 2
    assert await queries.delivery_outcomes(fleet.busy) == {
        "delivered": 3,
        "failed: ADDRESS_INVALID": 1,
        "queued": 2,
    }
    (quarantined,) = await queries.quarantined(fleet.busy)
    assert quarantined.reason == "SIGNATURE_INVALID"
    assert quarantined.batch_seq == 99
    heard = await queries.last_heard()
    assert set(heard) == {7, 8}
    assert heard[7] == busy.last_heard_at
    summary = await queries.summary(now)
    assert (summary.vessels, summary.vessels_silent) == (3, 2)
    assert (summary.deliveries_queued, summary.deliveries_retrying) == (2, 1)
    assert (summary.deliveries_failed, summary.quarantine_entries) == (1, 1)
    for row in await queries.failing_deliveries():
        assert TEXT not in repr(row)
        assert ADDRESS not in repr(row)


async def test_fleet_pages_hold_the_same_rows_as_the_whole_fleet(store: RelayStore) -> None:
    """An operator with a large fleet pages through it by vessel id: pages of two, then one,
    hold exactly the rows (and figures) of the whole fleet view, each page says where the
    next starts, and the last says there is none; an id past the end is an empty page."""
    now = time.time()
    await populate(store, now)
    for extra in (11, 12):  # registered, never heard, no deliveries: zeros, silent
        info = VesselInfo(f"Extra {extra}", "TH", f"TH-{extra:04d}", "Co", (1,))
        await store.add_vessel(info, VESSEL_KEY.verify_key.key, now - 3600, extra)
    queries = OperatorQueries(store, silent_after_s=36 * 3600)
    whole = await queries.fleet(now)
    first = await queries.fleet_page(now, size=2)
    assert (first.vessels, first.after, first.next_after) == (5, None, 8)
    second = await queries.fleet_page(now, after=first.next_after, size=2)
    assert [row.vessel_id for row in second.rows] == [9, 11]
    assert second.next_after == 11
    last = await queries.fleet_page(now, after=second.next_after, size=2)
    assert [row.vessel_id for row in last.rows] == [12]
    assert last.next_after is None
    assert first.rows + second.rows + last.rows == whole
    exact = await queries.fleet_page(now, size=5)
    assert exact.rows == whole
    assert exact.next_after is None
    beyond = await queries.fleet_page(now, after=12, size=2)
    assert (beyond.rows, beyond.next_after, beyond.vessels) == ([], None, 5)
    with pytest.raises(ValueError, match="at least one vessel"):
        await queries.fleet_page(now, size=0)


async def test_give_up_tells_the_vessel_and_retry_reopens(store: RelayStore) -> None:
    """Giving up a retrying delivery fails it and queues the failure receipt to the vessel;
    retrying a failed one makes it due again at once with a fresh deadline."""
    now = time.time()
    fleet = await populate(store, now)
    queries = OperatorQueries(store)
    failing = {(d.message_seq, d.outcome) for d in await queries.failing_deliveries(fleet.busy)}
    assert failing == {(fleet.failed_seq, "failed"), (fleet.retrying_seq, None)}

    await queries.give_up_delivery(fleet.busy, fleet.retrying_seq, now)
    records = {r.key.message_seq: r for r in await store.deliveries(fleet.busy)}
    assert records[fleet.retrying_seq].outcome == "failed"
    batch = await store.make_downlink_batch(fleet.busy, now, _keep, 200)
    assert batch is not None
    assert any(
        isinstance(e, DeliveryFailure) and e.message_seq == fleet.retrying_seq for e in _KEPT
    )
    with pytest.raises(DeliveryNotFound):
        await queries.give_up_delivery(fleet.busy, fleet.retrying_seq, now)

    await queries.retry_delivery(fleet.busy, fleet.failed_seq, now + 10)
    records = {r.key.message_seq: r for r in await store.deliveries(fleet.busy)}
    reopened = records[fleet.failed_seq]
    assert reopened.outcome is None
    assert reopened.due_at == now + 10
    assert reopened.deadline_at > now + DAY
    due = await store.claim_due_deliveries(now + 11, 10, "relay-2-d1")
    assert fleet.failed_seq in {d.message_seq for d in due}
    with pytest.raises(DeliveryNotFound):
        await queries.retry_delivery(fleet.busy, 1, now)  # delivered: nothing to retry


_KEPT: list[object] = []


def _keep(downlink_seq: int, envelopes: object) -> bytes:
    assert isinstance(envelopes, list | tuple)
    _KEPT.clear()
    _KEPT.extend(envelopes)
    return b"x"


async def test_a_worker_whose_lease_lapsed_does_not_send_what_another_claimed(
    store: RelayStore,
) -> None:
    """Worker 1 claims a delivery and stalls past its lease; worker 2 claims it. Worker 1
    may then not record an attempt (so it sends nothing); worker 2 may."""
    now = time.time()
    await populate(store, now)
    first = now + store.lease_s + 2  # populate's claims have lapsed
    (due,) = await store.claim_due_deliveries(first, 1, "relay-1-d1")
    assert due.message_seq == 6  # the one never tried
    later = first + store.lease_s + 1
    (again,) = await store.claim_due_deliveries(later, 1, "relay-2-d1")
    assert again.key == due.key
    assert await store.record_attempt(due.key, later, "relay-1-d1") is False
    assert await store.record_attempt(again.key, later, "relay-2-d1") is True
    records = {r.key.message_seq: r for r in await store.deliveries(7)}
    assert records[6].attempts == 1


async def test_the_latest_tree_head_time_is_read_for_the_alert(store: RelayStore) -> None:
    """Before any tree head is signed there is no time to report; once the day's head is
    signed, the operators' gauge reads the minute it was signed."""
    queries = OperatorQueries(store)
    assert await queries.latest_head_at() is None
    now = time.time()
    head = await sign_daily_head(store, SHORE_KEY, now)
    assert head is not None
    assert await queries.latest_head_at() == int(now // 60) * 60.0
