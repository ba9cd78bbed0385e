"""The SQLite store's database thread: calls in order, errors to their caller, cancellation
never reorders or loses a statement, and a transaction cancelled mid-way is rolled back."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from shore.store.errors import StoreUnavailable
from shore.store.sqlite import SqliteDatabase


async def test_calls_run_in_order_and_errors_reach_their_caller(tmp_path: Path) -> None:
    """Statements queued by several tasks run one after another in the order given; a
    failing one raises in the task that made it and the next ones still run."""
    db = await SqliteDatabase.open(tmp_path / "relay.db")
    try:
        seen: list[int] = []

        def step(n: int) -> int:
            if n == 3:
                raise sqlite3.IntegrityError("refused on purpose")
            seen.append(n)
            return n * 10

        results = await asyncio.gather(
            *(db.run(lambda n=n: step(n)) for n in range(6)), return_exceptions=True
        )
        assert seen == [0, 1, 2, 4, 5]
        assert results[:3] == [0, 10, 20]
        assert isinstance(results[3], sqlite3.IntegrityError)
        assert results[4:] == [40, 50]
    finally:
        await db.close()


async def test_a_cancelled_caller_does_not_skip_or_reorder_its_call(tmp_path: Path) -> None:
    """A task cancelled while its statement is queued: the statement still runs, in its
    place, and the calls after it see its effect (the thread never drops work)."""
    db = await SqliteDatabase.open(tmp_path / "relay.db")
    try:
        conn = db.connection
        await db.run(lambda: conn.execute("CREATE TABLE t (n INTEGER)"))
        first = asyncio.ensure_future(db.run(lambda: conn.execute("INSERT INTO t VALUES (1)")))
        await asyncio.sleep(0)  # one turn of the loop: the task queues its call and waits
        first.cancel()
        count = await db.run(lambda: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        assert count == 1
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await db.close()


async def test_a_transaction_cancelled_mid_way_is_rolled_back(tmp_path: Path) -> None:
    """A write transaction whose task is cancelled between statements leaves nothing: the
    rollback is queued behind the statements already sent, and the next transaction runs."""
    db = await SqliteDatabase.open(tmp_path / "relay.db")
    try:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE t (n INTEGER)")
        inside, gate = asyncio.Event(), asyncio.Event()

        async def writer() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ($1)", 1)
                inside.set()
                await gate.wait()
                await tx.execute("INSERT INTO t VALUES ($1)", 2)

        task = asyncio.ensure_future(writer())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.transaction() as tx:
            rows = await tx.fetch("SELECT n FROM t")
        assert rows == []
    finally:
        await db.close()


async def test_a_transaction_cancelled_while_it_begins_is_rolled_back(tmp_path: Path) -> None:
    """A task cancelled while its ``BEGIN`` waits in the thread's queue (the broker link
    fell and the task group cancelled ingest and downlink): the ``BEGIN`` still runs, and
    is rolled back, so the next transaction starts (it used to fail for good with "cannot
    start a transaction within a transaction", and the relay stored nothing more)."""
    db = await SqliteDatabase.open(tmp_path / "relay.db")
    try:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE t (n INTEGER)")
        release = threading.Event()
        busy = asyncio.ensure_future(db.run(lambda: release.wait(10)))

        async def writer() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ($1)", 1)

        task = asyncio.ensure_future(writer())
        for _ in range(3):  # the task takes the lock and queues its BEGIN behind the busy call
            await asyncio.sleep(0)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await busy
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES ($1)", 2)
        async with db.transaction() as tx:
            rows = await tx.fetch("SELECT n FROM t")
        assert [tuple(row) for row in rows] == [(2,)]
    finally:
        await db.close()


async def test_a_failing_disk_is_store_unavailable(tmp_path: Path) -> None:
    """A statement that fails because the database failed (here: opened read-only) is a
    StoreUnavailable naming the file, not sqlite3's bare error."""
    path = tmp_path / "relay.db"
    db = await SqliteDatabase.open(path)
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE t (n INTEGER)")
    await db.close()
    db = await SqliteDatabase.open(path)
    try:
        conn = db.connection
        await db.run(lambda: conn.execute("PRAGMA query_only = ON"))
        with pytest.raises(StoreUnavailable, match=r"relay\.db"):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ($1)", 1)
    finally:
        await db.close()
