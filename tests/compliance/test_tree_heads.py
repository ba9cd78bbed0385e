"""Daily signed tree heads on both store backends: once a day across relay workers and
restarts, consistent with every later head, and the relay's task that signs them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protocol.compliance import cosign, log_origin
from protocol.envelopes import CrewMessage
from protocol.languages import Language
from protocol.merkle import (
    ProofInvalid,
    consistency_proof,
    inclusion_proof,
    root_hash,
    verify_consistency,
)
from protocol.signing import SigningKey, VerifyKey
from shore.store import RelayStore, SqliteStore, VesselInfo, transparency_log
from shore.store.postgres import PostgresStore
from shore.transparency import (
    TransparencyError,
    add_cosignature,
    consistency_proofs,
    heads,
    inclusion_proofs,
    leaf_hashes,
    root,
    run_daily_heads,
    seconds_to_next_day,
    sign_daily_head,
)
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY, PostgresServer, decoded_uplink, uplink

VESSEL = 4242
DAY = datetime(2026, 10, 3, 9, 30, tzinfo=UTC).timestamp()
WITNESS = SigningKey.from_seed(bytes(range(100, 132)))


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[RelayStore, RelayStore]]:
    """Two relay workers' stores on one database (SQLite file or PostgreSQL database)."""
    first: RelayStore
    second: RelayStore
    if request.param == "sqlite":
        first = await SqliteStore.open(tmp_path / "relay.db")
        second = await SqliteStore.open(tmp_path / "relay.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        dsn = server.create_database()
        first = await PostgresStore.open(dsn)
        second = await PostgresStore.open(dsn)
    await first.add_vessel(
        VesselInfo("Sea Star 7", "TH", "TH-4242", "Owner"),
        VESSEL_KEY.verify_key.key,
        DAY,
        vessel_id=VESSEL,
    )
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _ingest(store: RelayStore, batch_seq: int, now: float) -> None:
    minutes = int(now // 60)
    message = CrewMessage(
        message_seq=batch_seq,
        crew=1,
        contact=1,
        written_minutes=minutes,
        lang=Language.ENG,
        body=f"message {batch_seq}",
    )
    data = uplink(VESSEL, batch_seq, [message], minutes=minutes)
    await store.ingest_batch(decoded_uplink(data), data, now)


async def test_one_head_a_day_across_workers_and_restarts(
    stores: tuple[RelayStore, RelayStore],
) -> None:
    """Two relay workers ask for the day's head at the same moment, four times over: the
    log has one head for the day. The next day (after a restart) there is a second one,
    and it is consistent with the first."""
    first, second = stores
    await _ingest(first, 1, DAY)
    await _ingest(second, 2, DAY + 60)
    signed = await asyncio.gather(
        *(sign_daily_head(s, SHORE_KEY, DAY + 120 + i) for i, s in enumerate([first, second] * 2))
    )
    assert sum(head is not None for head in signed) == 1
    [today] = await heads(second)
    assert today.head.tree_size == 2
    assert await sign_daily_head(second, SHORE_KEY, DAY + 3600) is None
    await _ingest(second, 3, DAY + 7200)
    tomorrow = await sign_daily_head(first, SHORE_KEY, DAY + 86_400)
    assert tomorrow is not None
    assert tomorrow.head.tree_size == 3
    assert [h.head.tree_size for h in await heads(first)] == [2, 3]
    hashes = await leaf_hashes(first)
    assert root_hash(hashes[:2]) == today.head.root
    verify_consistency(2, 3, today.head.root, tomorrow.head.root, consistency_proof(hashes, 2, 3))
    with pytest.raises(ProofInvalid):
        verify_consistency(
            2, 3, tomorrow.head.root, tomorrow.head.root, consistency_proof(hashes, 2, 3)
        )


async def test_witness_cosignature_is_kept_once_checked(
    stores: tuple[RelayStore, RelayStore],
) -> None:
    """A witness's co-signature of a real head is kept and comes back with the head; one
    over a head the shore never signed, or a forged one, is refused."""
    first, _ = stores
    await _ingest(first, 1, DAY)
    head = await sign_daily_head(first, SHORE_KEY, DAY + 60)
    assert head is not None
    cosignature = cosign(head, "ILO", WITNESS)
    await add_cosignature(first, head.head, cosignature)
    await add_cosignature(first, head.head, cosignature)  # twice: kept once
    [back] = await heads(first)
    assert back.witnesses == (cosignature,)
    other = replace(head.head, root=bytes(32))
    with pytest.raises(TransparencyError, match="does not sign the head"):
        await add_cosignature(first, other, cosignature)
    forged = type(head)(other, head.shore_signature)
    with pytest.raises(TransparencyError, match="never signed a head"):
        await add_cosignature(first, other, cosign(forged, "ILO", WITNESS))


async def test_the_relay_task_signs_the_day_head_then_waits(
    stores: tuple[RelayStore, RelayStore],
) -> None:
    """The relay's daily task signs the day's head when it starts, then waits for the next
    check (here: stopping is set when it asks the time the second time)."""
    first, _ = stores
    await _ingest(first, 1, DAY)
    stopping = asyncio.Event()
    asked: list[float] = []

    def clock() -> float:
        asked.append(DAY + 60)
        if len(asked) == 2:
            stopping.set()
        return DAY + 60

    async with asyncio.timeout(30):
        await run_daily_heads(first, SHORE_KEY, stopping, clock=clock)
    [head] = await heads(first)
    assert head.head.tree_size == 1
    assert head.head.timestamp_minutes == int((DAY + 60) // 60)


def test_next_check_is_just_after_utc_midnight() -> None:
    """At 09:30 UTC the next day starts in 14.5 hours; the task wakes a minute after it."""
    assert seconds_to_next_day(DAY) == 14.5 * 3600 + 60


async def test_ingest_never_waits_on_signing(stores: tuple[RelayStore, RelayStore]) -> None:
    """While the day's head is being signed (here a signer that waits, as a remote key
    may), two batches arrive and are stored and logged at once; the head then signed is
    the checkpoint of the log as it was when signing began, and the next head extends it."""
    first, second = stores
    await _ingest(first, 1, DAY)
    await _ingest(first, 2, DAY + 1)
    asked = asyncio.Event()
    release = asyncio.Event()

    async def slow_signer(message: bytes) -> bytes:
        asked.set()
        await release.wait()
        return SHORE_KEY.sign(message)

    async with asyncio.timeout(60):
        signing = asyncio.create_task(
            sign_daily_head(first, SHORE_KEY, DAY + 120, signer=slow_signer)
        )
        await asked.wait()  # the signature is being made now
        await _ingest(second, 3, DAY + 130)  # another worker's ingest: not blocked
        await _ingest(first, 4, DAY + 140)  # nor this worker's
        assert not signing.done()
        release.set()
        head = await signing
    assert head is not None
    assert head.head.tree_size == 2
    hashes = await leaf_hashes(first)
    assert len(hashes) == 4
    assert head.head.root == root_hash(hashes[:2])
    assert head.head.origin == log_origin(SHORE_KEY.verify_key.key)
    VerifyKey(SHORE_KEY.verify_key.key).verify(
        head.head.signed_bytes(), head.shore_signature, what="checkpoint"
    )
    later = await sign_daily_head(second, SHORE_KEY, DAY + 86_400)
    assert later is not None
    assert later.head.tree_size == 4
    verify_consistency(2, 4, head.head.root, later.head.root, consistency_proof(hashes, 2, 4))


async def test_tiled_proofs_match_the_leaves_on_both_backends(
    stores: tuple[RelayStore, RelayStore],
) -> None:
    """After appends by two workers, the store's root and proofs (read from its tiles) are
    those of the linear RFC 9162 code over the stored leaf hashes, for every size."""
    first, second = stores
    for seq in range(1, 12):
        await _ingest(first if seq % 2 else second, seq, DAY + seq)
    hashes = await leaf_hashes(first)
    assert len(hashes) == 11
    for size in range(1, 12):
        assert await root(second, size) == (size, root_hash(hashes[:size]))
        [path] = await inclusion_proofs(first, [size // 2], size)
        assert path == inclusion_proof(hashes, size // 2, size)
        [proof] = await consistency_proofs(second, [size // 3], size)
        assert proof == consistency_proof(hashes, size // 3, size)


async def test_a_log_made_before_the_tiles_gets_them(
    stores: tuple[RelayStore, RelayStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A relay upgraded from before the tiles has leaves but no tiles: proofs say to start
    the relay once; an ingest meanwhile still logs its batch (building the tiles first);
    opening the store builds the rest in steps, logging its progress, and the roots are
    those of the leaves."""
    first, second = stores
    for seq in range(1, 8):
        await _ingest(first, seq, DAY + seq)
    async with first.db.transaction() as tx:  # the state an upgraded log starts in
        await tx.execute("DELETE FROM log_tiles")
        await tx.execute("UPDATE log_state SET tiled_size = 0 WHERE id = 1")
    with pytest.raises(TransparencyError, match="tiles hold 0 of its 7 leaves"):
        await root(second)
    monkeypatch.setattr(transparency_log, "BUILD_STEP_LEAVES", 3)
    await _ingest(second, 8, DAY + 8)  # catches the tiles up, then appends
    hashes = await leaf_hashes(first)
    assert await root(first) == (8, root_hash(hashes))
    async with first.db.transaction() as tx:
        await tx.execute("DELETE FROM log_tiles")
        await tx.execute("UPDATE log_state SET tiled_size = 0 WHERE id = 1")
    with caplog.at_level(logging.INFO, logger="shore.store.relay_store"):
        assert await second.build_log_tiles() == 8
    steps = [r.getMessage() for r in caplog.records if "tiles:" in r.getMessage()]
    assert steps == [
        "transparency log tiles: 3 of 8 leaves built (38%)",
        "transparency log tiles: 6 of 8 leaves built (75%)",
        "transparency log tiles: 8 of 8 leaves built (100%)",
    ]
    for size in range(1, 9):
        assert await root(first, size) == (size, root_hash(hashes[:size]))
