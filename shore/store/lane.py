"""Lane repository: each vessel's grievance lane as the relay keeps it, up and down.

The lane (:mod:`protocol.lane`) is a constant-rate channel per vessel of fixed-size sealed
blocks; the relay opens none of them. Tables (migration set ``lane``):

- ``lane_up_blocks``: every uplink ``LaneBlock`` once per (vessel, period, index), with
  when it arrived; a resent copy changes nothing (the first one stays). Unions read them
  in ``block_id`` order and find theirs by trial decryption.
- ``lane_state``: one row, the next ``block_id``. Ids are handed out under this row's lock
  (held until the ingest commits), so a union that has read up to id N never misses a
  block committed later with a smaller id (two PostgreSQL workers ingesting at once).
- ``lane_down_queue``: blocks a union sealed to a reporter's reply key, waiting for the
  vessel's downlink lane, first in first out; at most once per (vessel, block bytes), so
  a union that posts the same blocks again (a retry) queues nothing twice.
- ``lane_down_periods``: per vessel, the last downlink lane period whose blocks were
  queued: the record that makes "exactly once per (vessel, period)" hold across relay
  restarts and several workers (read and written under the vessel's link lock).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.envelopes import LaneBlock
from shore.store.database import Dialect, Tx
from shore.store.migrations import Migration, MigrationSet

MIGRATIONS = MigrationSet(
    "lane",
    (
        Migration(
            "0001_lane",
            """
        CREATE TABLE lane_state (
            id {int} PRIMARY KEY,
            next_block_id {int} NOT NULL
        );
        INSERT INTO lane_state (id, next_block_id) VALUES (1, 1);
        CREATE TABLE lane_up_blocks (
            block_id {int} PRIMARY KEY,
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            period {int} NOT NULL,
            idx {int} NOT NULL,
            block {blob} NOT NULL,
            batch_seq {int} NOT NULL,
            received_at {real} NOT NULL,
            UNIQUE (vessel_id, period, idx)
        );
        CREATE INDEX lane_up_blocks_by_vessel ON lane_up_blocks (vessel_id, received_at);
        CREATE TABLE lane_down_queue (
            entry_id {serial_pk},
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            union_id {int} NOT NULL,
            block {blob} NOT NULL,
            block_sha256 {blob} NOT NULL,
            queued_at {real} NOT NULL,
            carried_period {int},
            carried_index {int},
            UNIQUE (vessel_id, block_sha256)
        );
        CREATE INDEX lane_down_waiting ON lane_down_queue (vessel_id, entry_id)
            WHERE carried_period IS NULL;
        CREATE TABLE lane_down_periods (
            vessel_id {int} PRIMARY KEY REFERENCES vessels (vessel_id),
            last_period {int} NOT NULL
        );
        """,
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class LaneUpBlock:
    """An uplink lane block as the relay keeps it (what a union reads)."""

    block_id: int
    vessel_id: int
    period: int
    index: int
    block: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class LaneStored:
    """What became of one batch's uplink lane blocks (counts only: fit for a log line)."""

    new: int = 0
    #: the same block again (a resent batch, or a block sent twice): nothing changed
    repeated: int = 0
    #: another block for a place already filled: the first one stays
    conflicting: int = 0


@dataclass(frozen=True, slots=True)
class QueuedDownBlock:
    """A union's block waiting for the vessel's downlink lane."""

    entry_id: int
    block: bytes


class LaneRepository:
    """The lane's SQL; every method runs in the transaction it is given."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    # uplink -------------------------------------------------------------------------------

    async def store_up_blocks(
        self, tx: Tx, vessel_id: int, batch_seq: int, blocks: Sequence[LaneBlock], now: float
    ) -> LaneStored:
        """Keep a batch's uplink blocks once per (vessel, period, index); ids are taken
        under ``lane_state``'s lock, which ``tx`` holds until it ends."""
        if not blocks:
            return LaneStored()
        row = await tx.fetchrow(
            f"SELECT next_block_id FROM lane_state WHERE id = 1{self.dialect.for_update}"
        )
        assert row is not None  # made by the migration
        next_id = int(row[0])
        new = repeated = conflicting = 0
        for envelope in blocks:
            inserted = await tx.fetchrow(
                "INSERT INTO lane_up_blocks (block_id, vessel_id, period, idx, block, "
                "batch_seq, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT DO NOTHING RETURNING block_id",
                next_id,
                vessel_id,
                envelope.period,
                envelope.index,
                envelope.block,
                batch_seq,
                float(now),
            )
            if inserted is not None:
                new += 1
                next_id += 1
                continue
            stored = await tx.fetchrow(
                "SELECT block FROM lane_up_blocks WHERE vessel_id = $1 AND period = $2 "
                "AND idx = $3",
                vessel_id,
                envelope.period,
                envelope.index,
            )
            if stored is not None and bytes(stored[0]) == envelope.block:
                repeated += 1
            else:
                conflicting += 1
        await tx.execute("UPDATE lane_state SET next_block_id = $1 WHERE id = 1", next_id)
        return LaneStored(new, repeated, conflicting)

    async def up_blocks_after(
        self, tx: Tx, after: int, limit: int, vessels: Sequence[int] | None
    ) -> list[LaneUpBlock]:
        """Up to ``limit`` uplink blocks with ids above ``after``, by id (of ``vessels``
        only, unless None)."""
        where, args = "block_id > $1", [after, limit]
        if vessels is not None:
            if not vessels:
                return []
            marks = ", ".join(f"${n}" for n in range(3, 3 + len(vessels)))
            where += f" AND vessel_id IN ({marks})"
            args += [int(v) for v in vessels]
        rows = await tx.fetch(
            "SELECT block_id, vessel_id, period, idx, block, received_at FROM lane_up_blocks "
            f"WHERE {where} ORDER BY block_id LIMIT $2",
            *args,
        )
        return [
            LaneUpBlock(int(r[0]), int(r[1]), int(r[2]), int(r[3]), bytes(r[4]), float(r[5]))
            for r in rows
        ]

    async def last_received(self, tx: Tx) -> dict[int, float]:
        """When each vessel's latest uplink lane block arrived (vessels that sent one)."""
        rows = await tx.fetch(
            "SELECT vessel_id, MAX(received_at) FROM lane_up_blocks GROUP BY vessel_id"
        )
        return {int(r[0]): float(r[1]) for r in rows}

    async def vessels_since(self, tx: Tx, since: float) -> list[int]:
        """Vessels whose uplink lane blocks arrived since ``since``."""
        rows = await tx.fetch(
            "SELECT DISTINCT vessel_id FROM lane_up_blocks WHERE received_at >= $1 "
            "ORDER BY vessel_id",
            float(since),
        )
        return [int(r[0]) for r in rows]

    # downlink -----------------------------------------------------------------------------

    async def waiting(self, tx: Tx, vessel_id: int, union: int) -> int:
        """How many of ``union``'s blocks wait for the vessel's downlink lane."""
        row = await tx.fetchrow(
            "SELECT COUNT(*) FROM lane_down_queue WHERE vessel_id = $1 AND union_id = $2 "
            "AND carried_period IS NULL",
            vessel_id,
            union,
        )
        assert row is not None
        return int(row[0])

    async def known_blocks(self, tx: Tx, vessel_id: int, blocks: Sequence[bytes]) -> int:
        """How many of ``blocks`` were queued for the vessel before (carried or not)."""
        count = 0
        for block in set(blocks):
            row = await tx.fetchrow(
                "SELECT 1 FROM lane_down_queue WHERE vessel_id = $1 AND block_sha256 = $2",
                vessel_id,
                hashlib.sha256(block).digest(),
            )
            count += row is not None
        return count

    async def queue_down(
        self, tx: Tx, vessel_id: int, union: int, blocks: Sequence[bytes], now: float
    ) -> int:
        """Queue blocks, in order, for the vessel's downlink lane; how many were new."""
        new = 0
        for block in blocks:
            inserted = await tx.fetchrow(
                "INSERT INTO lane_down_queue (vessel_id, union_id, block, block_sha256, "
                "queued_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING "
                "RETURNING entry_id",
                vessel_id,
                union,
                block,
                hashlib.sha256(block).digest(),
                float(now),
            )
            new += inserted is not None
        return new

    async def next_down(self, tx: Tx, vessel_id: int, limit: int) -> list[QueuedDownBlock]:
        """The oldest ``limit`` blocks waiting for the vessel's downlink lane."""
        rows = await tx.fetch(
            "SELECT entry_id, block FROM lane_down_queue WHERE vessel_id = $1 "
            "AND carried_period IS NULL ORDER BY entry_id LIMIT $2",
            vessel_id,
            limit,
        )
        return [QueuedDownBlock(int(r[0]), bytes(r[1])) for r in rows]

    async def carried(self, tx: Tx, entry_id: int, period: int, index: int) -> None:
        """The block goes down in downlink lane period ``period`` at ``index``."""
        await tx.execute(
            "UPDATE lane_down_queue SET carried_period = $2, carried_index = $3 "
            "WHERE entry_id = $1",
            entry_id,
            period,
            index,
        )

    async def down_waiting(self, tx: Tx, vessel_id: int) -> int:
        """How many blocks (of every union) wait for the vessel's downlink lane."""
        row = await tx.fetchrow(
            "SELECT COUNT(*) FROM lane_down_queue WHERE vessel_id = $1 AND carried_period IS NULL",
            vessel_id,
        )
        assert row is not None
        return int(row[0])

    async def last_down_period(self, tx: Tx, vessel_id: int) -> int | None:
        """The last downlink lane period queued for the vessel (None: never)."""
        row = await tx.fetchrow(
            "SELECT last_period FROM lane_down_periods WHERE vessel_id = $1", vessel_id
        )
        return None if row is None else int(row[0])

    async def set_last_down_period(self, tx: Tx, vessel_id: int, period: int) -> None:
        """Record that the vessel's downlink lane is queued up to ``period``."""
        await tx.execute(
            "INSERT INTO lane_down_periods (vessel_id, last_period) VALUES ($1, $2) "
            "ON CONFLICT (vessel_id) DO UPDATE SET last_period = excluded.last_period",
            vessel_id,
            period,
        )
