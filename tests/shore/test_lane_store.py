"""The grievance lane's store contract, on SQLite and on a real PostgreSQL 15.

Uplink lane blocks are kept once per (vessel, period, index) in the batch's own
transaction, read by unions in id order; unions' blocks wait first in first out under a
per-union cap; the downlink lane gets exactly one period's blocks per vessel and period,
also when several relay workers (several stores on one database) queue at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.public
import pytest

from common.codebooks import default_codebook
from protocol.envelopes import BatchAck, Envelope, LaneBlock
from protocol.lane import LaneShape, cover_down_block
from shore.downlink import Downlink, DownlinkConfig
from shore.store import (
    IngestOutcome,
    IngestResult,
    LanePeriodsQueued,
    LaneQueueFull,
    RegistryError,
    RelayStore,
    SqliteStore,
    VesselInfo,
)
from shore.store.lane_units import lane_item_key
from shore.store.postgres import PostgresStore
from tests.shore.lane_fixtures import LaneVessel
from tests.shore.store_fixtures import (
    OTHER_KEY,
    SHORE_KEY,
    T0,
    VESSEL_KEY,
    PostgresServer,
    decoded_downlink,
    decoded_uplink,
    shore_encoder,
)
from tests.shore.test_store import postgres  # noqa: F401 (the session's PostgreSQL server)

MINUTES = int(T0 // 60)
SHAPE = LaneShape()
PERIOD = SHAPE.period_of(T0)
DOWN_PERIOD = int(T0 // SHAPE.down_period_s)
UNION = bytes(nacl.public.PrivateKey(bytes(range(9, 41))).public_key)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RelayStore]:
    """A fresh store of each backend."""
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


async def _vessels(store: RelayStore) -> tuple[int, int]:
    first = await store.add_vessel(
        VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (7,)),
        VESSEL_KEY.verify_key.key,
        T0,
    )
    second = await store.add_vessel(
        VesselInfo("Ocean 8", "TH", "TH-0043", "Another Owner", (8,)),
        OTHER_KEY.verify_key.key,
        T0,
    )
    return first, second


async def _send(
    store: RelayStore, vessel: LaneVessel, envelopes: list[Envelope], at: float
) -> IngestResult:
    data = vessel.batch(envelopes, int(at // 60))
    return await store.ingest_batch(decoded_uplink(data, vessel.key), data, at)


def _cover() -> bytes:
    throwaway = bytes(nacl.public.PrivateKey.generate().public_key)
    return cover_down_block(throwaway, SHAPE.down_block_bytes)


def _note_block(n: int) -> bytes:
    """A union's block (what the relay queues; it cannot tell one from cover)."""
    return _cover()[:-2] + n.to_bytes(2, "big")


async def _lane_items(
    store: RelayStore, vessel_id: int, collector: LaneVessel | None = None
) -> list[LaneBlock]:
    """The LaneBlocks the vessel's downlink batches carry, in batch order; with
    ``collector`` (the vessel) the vessel then acknowledges the batch, as in its next
    session (until then, what is queued later waits ashore)."""
    made = await store.make_downlink_batch(vessel_id, T0 + 1, shore_encoder(vessel_id), 500)
    if made is None:
        return []
    if collector is not None:
        ack = BatchAck(up_to=made.downlink_seq, written_minutes=MINUTES)
        await _send(store, collector, [ack], T0 + 1)
    return [e for e in decoded_downlink(made.data).envelopes if isinstance(e, LaneBlock)]


async def test_lane_blocks_are_kept_once_per_place_and_read_in_order(store: RelayStore) -> None:
    """Two vessels send lane blocks; a resent batch stores nothing again; a later batch
    with the same block in a place changes nothing, and another block for a filled place
    is not stored (counted). Unions read every block by id, from where they stopped, a
    vessel's only when asked for that vessel."""
    first, second = await _vessels(store)
    ship = LaneVessel(first, VESSEL_KEY)
    other = LaneVessel(second, OTHER_KEY)
    blocks = [*ship.release(PERIOD), *ship.release(PERIOD + 1)]
    data = ship.batch(blocks, MINUTES)
    result = await store.ingest_batch(decoded_uplink(data), data, T0)
    assert (result.outcome, result.lane_blocks) == (IngestOutcome.STORED, 2)
    again = await store.ingest_batch(decoded_uplink(data), data, T0 + 5)
    assert again.outcome is IngestOutcome.DUPLICATE
    their_blocks = other.release(PERIOD)
    theirs = await _send(store, other, list(their_blocks), T0 + 10)
    assert theirs.lane_blocks == 1
    replaced = LaneBlock(PERIOD, 0, other.release(PERIOD)[0].block, MINUTES)
    mixed = await _send(store, ship, [blocks[1], replaced], T0 + 20)
    assert (mixed.lane_blocks, mixed.lane_conflicts) == (0, 1)

    everything = await store.lane_blocks(0, 100, None)
    assert [(b.vessel_id, b.period, b.index, b.block) for b in everything] == [
        (first, PERIOD, 0, blocks[0].block),
        (first, PERIOD + 1, 0, blocks[1].block),
        (second, PERIOD, 0, their_blocks[0].block),
    ]
    ids = [b.block_id for b in everything]
    assert ids == sorted(set(ids))
    assert [b.received_at for b in everything] == [T0, T0, T0 + 10]
    assert await store.lane_blocks(ids[0], 1, None) == everything[1:2]
    assert await store.lane_blocks(ids[-1], 100, None) == []
    assert [b.vessel_id for b in await store.lane_blocks(0, 100, [second])] == [second]
    assert await store.lane_blocks(0, 100, []) == []
    assert await store.lane_last_received() == {first: T0, second: T0 + 10}
    assert await store.lane_vessels(T0 + 1) == [second]


async def test_lane_blocks_roll_back_with_their_batch(
    store: RelayStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing the batch fails after its lane blocks were written (the transparency log
    raises): nothing of it stays, and the resent batch is stored whole."""
    first, _ = await _vessels(store)
    ship = LaneVessel(first, VESSEL_KEY)
    data = ship.batch(ship.release(PERIOD), MINUTES)

    async def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug in the log")

    monkeypatch.setattr(store.log, "append_leaf", broken)
    with pytest.raises(ZeroDivisionError):
        await store.ingest_batch(decoded_uplink(data), data, T0)
    assert await store.lane_blocks(0, 10, None) == []
    monkeypatch.undo()
    result = await store.ingest_batch(decoded_uplink(data), data, T0 + 1)
    assert result.lane_blocks == 1
    (block,) = await store.lane_blocks(0, 10, None)
    assert block.block_id == 1  # the rolled-back id was not used up


async def test_concurrent_ingest_gives_every_lane_block_its_own_id(store: RelayStore) -> None:
    """Two vessels' lane batches arrive at once at four workers: every block is kept once,
    under distinct ids, and a union reading by id gets them all."""
    first, second = await _vessels(store)
    ships = [LaneVessel(first, VESSEL_KEY), LaneVessel(second, OTHER_KEY)]
    batches = []
    for n in range(8):
        ship = ships[n % 2]
        data = ship.batch(ship.release(PERIOD + n), MINUTES)
        batches.append((ship, data))
    results = await asyncio.gather(
        *(
            store.ingest_batch(decoded_uplink(data, ship.key), data, T0 + n)
            for n, (ship, data) in enumerate(batches)
        )
    )
    assert sum(r.lane_blocks for r in results) == 8
    read = await store.lane_blocks(0, 100, None)
    assert [b.block_id for b in read] == list(range(1, 9))


async def test_unions_queue_blocks_first_in_first_out_under_their_cap(store: RelayStore) -> None:
    """Two unions queue blocks for one vessel: each may have at most its cap waiting (a
    request over it queues nothing), the same block posted again is queued once, an
    unknown vessel is refused; the downlink lane carries them oldest first, one period at
    a time (the vessel collecting each), and cover when nothing waits."""
    first, _ = await _vessels(store)
    a = [_note_block(n) for n in range(3)]
    b = [_note_block(100 + n) for n in range(2)]
    assert await store.queue_lane_notes(first, 7, a, T0, cap=3) == 3
    assert await store.queue_lane_notes(first, 7, a, T0 + 1, cap=3) == 0  # a retry
    with pytest.raises(LaneQueueFull, match="union 7 has 3 blocks waiting"):
        await store.queue_lane_notes(first, 7, [_note_block(9)], T0 + 2, cap=3)
    assert await store.queue_lane_notes(first, 8, b, T0 + 3, cap=3) == 2
    with pytest.raises(RegistryError):
        await store.queue_lane_notes(999, 7, [_note_block(10)], T0 + 4, cap=3)

    carried: list[bytes] = []
    ship = LaneVessel(first, VESSEL_KEY)
    for period in range(DOWN_PERIOD, DOWN_PERIOD + 7):
        done = await store.queue_lane_periods(
            first,
            period,
            blocks_per_period=1,
            period_s=SHAPE.down_period_s,
            cover=_cover,
            now=T0,
            catch_up=30,
        )
        assert done.periods == 1
        items = await _lane_items(store, first, ship)
        assert [(i.period, i.index) for i in items] == [(period, 0)]
        assert items[0].written_minutes == (period + 1) * SHAPE.down_period_s // 60
        carried.append(items[0].block)
    assert carried[:5] == [*a, *b]
    assert all(block not in a + b for block in carried[5:])  # cover, each its own
    assert len(set(carried)) == 7
    # after being carried, a union's blocks no longer count against its cap
    assert await store.queue_lane_notes(first, 7, [_note_block(11)], T0 + 5, cap=3) == 1


async def test_missed_periods_are_caught_up_once_and_a_period_moved_back_is_not_repeated(
    store: RelayStore,
) -> None:
    """The relay was down for five periods: the next pass queues each missed one (at most
    ``catch_up``), one period's blocks each; a second pass queues nothing; a downlink
    period made longer (period numbers go back) queues the current one only once."""
    first, _ = await _vessels(store)

    async def queue(last: int, catch_up: int = 3) -> int:
        done = await store.queue_lane_periods(
            first,
            last,
            blocks_per_period=2,
            period_s=SHAPE.down_period_s,
            cover=_cover,
            now=T0,
            catch_up=catch_up,
        )
        return done.periods

    assert await queue(DOWN_PERIOD) == 1  # new on the lane: the period just over only
    assert await queue(DOWN_PERIOD + 5) == 3  # down for five: the last three
    assert await queue(DOWN_PERIOD + 5) == 0
    items = await _lane_items(store, first)
    places = [(i.period, i.index) for i in items]
    expected = [DOWN_PERIOD, DOWN_PERIOD + 3, DOWN_PERIOD + 4, DOWN_PERIOD + 5]
    assert places == [(p, i) for p in expected for i in (0, 1)]
    assert await queue(DOWN_PERIOD + 4) == 0  # moved back onto a queued period: skipped
    assert await queue(DOWN_PERIOD + 6) == 1


@pytest.fixture(params=["sqlite", "postgres"])
async def two_workers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[RelayStore, RelayStore]]:
    """Two relay workers' stores on one database."""
    opened: list[RelayStore] = []
    try:
        if request.param == "sqlite":
            for _ in range(2):
                opened.append(await SqliteStore.open(tmp_path / "relay.db"))
        else:
            server: PostgresServer = request.getfixturevalue("postgres")
            dsn = server.create_database()
            for _ in range(2):
                opened.append(await PostgresStore.open(dsn))
        yield opened[0], opened[1]
    finally:
        for each in opened:
            await each.close()


async def test_two_workers_queue_each_vessel_and_period_exactly_once(
    two_workers: tuple[RelayStore, RelayStore],
) -> None:
    """Two relay workers (two connections to one database) queue the downlink lane of the
    same periods at once, several times over: every (vessel, period) gets exactly its
    blocks, each union block is carried once, and cover fills the rest."""
    one, two = two_workers
    first, second = await _vessels(one)
    notes = [_note_block(n) for n in range(3)]
    await one.queue_lane_notes(first, 7, notes, T0, cap=64)

    async def queue(worker: RelayStore, vessel_id: int, period: int) -> LanePeriodsQueued:
        return await worker.queue_lane_periods(
            vessel_id,
            period,
            blocks_per_period=1,
            period_s=SHAPE.down_period_s,
            cover=_cover,
            now=T0,
            catch_up=30,
        )

    for period in range(DOWN_PERIOD, DOWN_PERIOD + 4):
        results = await asyncio.gather(
            *(
                queue(worker, vessel_id, period)
                for worker in (one, two, one, two)
                for vessel_id in (first, second)
            )
        )
        assert sum(r.periods for r in results) == 2  # one per vessel
    for vessel_id in (first, second):
        items = await _lane_items(one, vessel_id)
        assert [(i.period, i.index) for i in items] == [
            (p, 0) for p in range(DOWN_PERIOD, DOWN_PERIOD + 4)
        ]
        if vessel_id == first:
            assert [i.block for i in items[:3]] == notes
        async with one.db.transaction() as tx:
            later = lane_item_key(DOWN_PERIOD + 4, 0)
            assert not await one.downlink_queue.has_item(tx, vessel_id, later)


async def test_a_batch_with_lane_blocks_is_acknowledged_like_content(store: RelayStore) -> None:
    """A batch carrying only lane blocks is content: the shore owes its acknowledgement at
    once (a downlink batch is made for it)."""
    first, _ = await _vessels(store)
    ship = LaneVessel(first, VESSEL_KEY)
    await _send(store, ship, list(ship.release(PERIOD)), T0)
    made = await store.make_downlink_batch(first, T0 + 1, shore_encoder(first), 10)
    assert made is not None
    (ack,) = decoded_downlink(made.data).envelopes
    assert isinstance(ack, BatchAck)
    assert ack.up_to == 1


async def test_a_week_away_brings_each_periods_lane_block_once_in_two_batches(
    store: RelayStore,
) -> None:
    """A vessel on the lane goes away for seven downlink periods while the relay passes
    every few minutes. Each period's block is queued exactly once; the first goes down at
    once, the other six wait in the store behind it, and the vessel's next uplink (which
    acknowledges the first) brings them all in one batch: seven blocks, one per period, in
    two batches. Passes after that add nothing."""
    first, _ = await _vessels(store)
    ship = LaneVessel(first, VESSEL_KEY)
    period_s = 3600
    clock = [T0]
    downlink = Downlink(
        store,
        SHORE_KEY,
        default_codebook(),
        DownlinkConfig(slots=False, slot_period_s=period_s),
        clock=lambda: clock[0],
    )
    published: list[bytes] = []

    async def publish(topic: str, data: bytes) -> None:
        published.append(data)

    await _send(store, ship, list(ship.release(PERIOD)), T0)
    start = (T0 // period_s + 1) * period_s
    for step in range(7 * 12):  # every five minutes for seven periods
        clock[0] = start + step * 300 + 1
        await downlink.publish_due(publish)
    batches = [decoded_downlink(data) for data in published]
    assert len(batches) == 1
    ack = BatchAck(up_to=batches[0].batch_seq, written_minutes=int(clock[0] // 60))
    await _send(store, ship, [ack], clock[0])
    for _ in range(3):
        await downlink.publish_due(publish)
    batches = [decoded_downlink(data) for data in published]
    assert len(batches) == 2
    blocks = [e for b in batches for e in b.envelopes if isinstance(e, LaneBlock)]
    first_period = int(start // period_s) - 1
    assert [(b.period, b.index) for b in blocks] == [(first_period + n, 0) for n in range(7)]
    assert [len([e for e in b.envelopes if isinstance(e, LaneBlock)]) for b in batches] == [1, 6]
