"""Transparency log repository: leaves, hash tiles, signed tree heads and co-signatures.

Tables (migration set ``transparency_log``): ``log_state`` (one row: the tree size and how
many leaves the tiles hold; the row every append locks), ``log_leaves``, ``log_tiles`` (the
Merkle tree as C2SP tlog-tiles hash tiles, :mod:`protocol.tiles`: one row per level and
tile index, the rightmost of each level growing), ``log_heads`` (checkpoints; ``origin``
NULL for an older relay's heads), ``log_cosignatures`` (``cosigned_at`` NULL for an older
relay's witness signatures) and ``log_signing`` (one row: taken only to store a day's
head, never by appends). Leaves and heads are never updated or deleted.

Each append extends the tiles in the same transaction (a few rows: the rightmost tile of
each level it completes), so a root or a proof reads O(log n) tiles, never the leaves.
A log made before the tiles existed gets them from its leaves when the store opens
(:meth:`TransparencyLog.build_tiles`, in steps, with progress logged); until then its
appends build them first.

Every stored uplink batch becomes a leaf (:func:`leaf_for`), appended by the ingest in the
SAME transaction that stores the batch (:meth:`TransparencyLog.append_leaf` takes that
transaction), so a batch is stored if and only if its leaf is in the log. The leaf holds
the vessel, the batch number, the batch's time window, the real text bytes per crew
member and month (new crew messages only: a resent batch or a repeated message adds
nothing; grievance reports and SOS are not counted) and the SHA-256 of the batch bytes. No
text, no recipients. Leaves are numbered from 0 in one log for all vessels (as in
Certificate Transparency). The tasks that sign heads are :mod:`shore.transparency`.

A union's published grievance statistics is a leaf too
(:class:`protocol.statistics_log.StatisticsLeaf`, :meth:`TransparencyLog.log_statistics`),
kept in ``log_leaves`` with ``vessel_id`` the union's id negated (no vessel has one) and
``batch_seq`` counting that union's statistics from 0, so a vessel's leaves never include
it. The same signed aggregate posted again keeps its first leaf.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from protocol.batch import Batch
from protocol.compliance import (
    Cosignature,
    CrewBytes,
    LogLeaf,
    SignedTreeHead,
    TreeHead,
    message_text_bytes,
)
from protocol.envelopes import CrewMessage, Envelope, VoiceNote
from protocol.errors import LimitExceeded
from protocol.limits import MINUTES_RANGE, minutes_in_range
from protocol.merkle import (
    EMPTY_ROOT,
    Plan,
    combine,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    root_plan,
)
from protocol.months import LOG_ZONE, Month
from protocol.statistics_log import StatisticsLeaf
from protocol.tiles import TileBuilder, TileId, edge_tile_ids, subtree_hash, tiles_for
from shore.store.database import Dialect, Tx
from shore.store.migrations import Migration, MigrationSet

log = logging.getLogger(__name__)

MIGRATIONS = MigrationSet(
    "transparency_log",
    (
        Migration(
            "0001_transparency_log",
            """
    CREATE TABLE log_state (
        id {int} PRIMARY KEY,
        tree_size {int} NOT NULL
    );
    INSERT INTO log_state (id, tree_size) VALUES (1, 0);
    CREATE TABLE log_leaves (
        leaf_index {int} PRIMARY KEY,
        vessel_id {int} NOT NULL,
        batch_seq {int} NOT NULL,
        leaf {blob} NOT NULL,
        leaf_hash {blob} NOT NULL,
        appended_at {real} NOT NULL,
        UNIQUE (vessel_id, batch_seq)
    );
    CREATE TABLE log_heads (
        tree_size {int} NOT NULL,
        timestamp_minutes {int} NOT NULL,
        root {blob} NOT NULL,
        day TEXT NOT NULL,
        signature {blob} NOT NULL,
        PRIMARY KEY (tree_size, timestamp_minutes)
    );
    CREATE TABLE log_cosignatures (
        tree_size {int} NOT NULL,
        timestamp_minutes {int} NOT NULL,
        witness TEXT NOT NULL,
        public_key {blob} NOT NULL,
        signature {blob} NOT NULL,
        PRIMARY KEY (tree_size, timestamp_minutes, witness)
    )
    """,
        ),
        Migration(
            "0002_tiles_and_checkpoints",
            """
    CREATE TABLE log_tiles (
        level {int} NOT NULL,
        tile_index {int} NOT NULL,
        hashes {blob} NOT NULL,
        PRIMARY KEY (level, tile_index)
    );
    ALTER TABLE log_state ADD COLUMN tiled_size {int} NOT NULL DEFAULT 0;
    ALTER TABLE log_heads ADD COLUMN origin TEXT;
    ALTER TABLE log_heads ADD COLUMN key_id {blob};
    ALTER TABLE log_cosignatures ADD COLUMN cosigned_at {int};
    CREATE TABLE log_signing (
        id {int} PRIMARY KEY
    );
    INSERT INTO log_signing (id) VALUES (1)
    """,
        ),
    ),
)

#: Tiles read per query (two parameters each, well below both backends' limits).
TILES_PER_QUERY = 400
#: Leaves read per transaction when a log made before the tiles gets its tiles.
BUILD_STEP_LEAVES = 65_536


class TransparencyError(Exception):
    """A log operation that cannot be done as asked (the message says why and what to do)."""


def month_of_minutes(minutes: int) -> int:
    """The UTC month (``YYYYMM``) of a time in UTC minutes.

    Raises :class:`~protocol.errors.LimitExceeded` for a time outside the wire's range
    (:data:`protocol.limits.MAX_MINUTES`): decoding refuses such a batch already, so this
    only guards against a caller that skipped it (the ingest then refuses the batch, typed).
    """
    if not minutes_in_range(minutes):
        raise LimitExceeded(f"time {minutes!r} is not a time from {MINUTES_RANGE}")
    return Month.of_minutes(minutes, LOG_ZONE).key


def leaf_for(batch: Batch, batch_sha256: bytes, now: float, new: Sequence[Envelope]) -> LogLeaf:
    """The log leaf of a stored batch; ``new`` are the envelopes stored for the first time."""
    counts: dict[tuple[int, int], int] = {}
    written: list[int] = []
    for envelope in new:
        if isinstance(envelope, CrewMessage):
            key = (envelope.crew, month_of_minutes(envelope.written_minutes))
            counts[key] = counts.get(key, 0) + message_text_bytes(
                envelope.body, envelope.quick, subject=envelope.subject
            )
            written.append(envelope.written_minutes)
        elif isinstance(envelope, VoiceNote):
            key = (envelope.crew, month_of_minutes(envelope.written_minutes))
            counts[key] = counts.get(key, 0) + message_text_bytes(None, None, envelope.frames)
            written.append(envelope.written_minutes)
    crew = tuple(sorted(CrewBytes(c, m, b) for (c, m), b in counts.items()))
    return LogLeaf(
        vessel_id=batch.vessel_id,
        batch_seq=batch.batch_seq,
        first_minutes=min(written, default=batch.batch_minutes),
        last_minutes=batch.batch_minutes,
        received_minutes=int(now // 60),
        crew_bytes=crew,
        batch_sha256=batch_sha256,
    )


def day_of_minutes(minutes: int) -> str:
    """The UTC day of a time in minutes, as ``log_heads.day`` holds it."""
    return datetime.fromtimestamp(minutes * 60, UTC).strftime("%Y-%m-%d")


class TransparencyLog:
    """The log's SQL; every method runs in the transaction it is given."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    async def lock(self, tx: Tx) -> int:
        """Hold the log's state row until ``tx`` ends (no leaf is appended and no head
        signed meanwhile); returns the tree size."""
        return (await self._lock_sizes(tx))[0]

    async def _lock_sizes(self, tx: Tx) -> tuple[int, int]:
        """:meth:`lock`, returning (tree size, leaves in the tiles)."""
        row = await tx.fetchrow(
            f"SELECT tree_size, tiled_size FROM log_state WHERE id = 1{self.dialect.for_update}"
        )
        if row is None:
            raise TransparencyError("the transparency log is not set up; run the store migrations")
        return int(row[0]), int(row[1])

    async def sizes(self, tx: Tx) -> tuple[int, int]:
        """(tree size, leaves in the tiles), without locking anything."""
        row = await tx.fetchrow("SELECT tree_size, tiled_size FROM log_state WHERE id = 1")
        if row is None:
            raise TransparencyError("the transparency log is not set up; run the store migrations")
        return int(row[0]), int(row[1])

    async def append_leaf(
        self, tx: Tx, batch: Batch, batch_sha256: bytes, now: float, new: Sequence[Envelope]
    ) -> int:
        """Append the batch's leaf inside the ingest transaction ``tx``; returns its index."""
        leaf = leaf_for(batch, batch_sha256, now, new)
        index = await self.append_encoded(tx, batch.vessel_id, batch.batch_seq, leaf.encode(), now)
        log.info("vessel %d batch %d logged as leaf %d", batch.vessel_id, batch.batch_seq, index)
        return index

    async def append_encoded(
        self, tx: Tx, vessel_id: int, batch_seq: int, data: bytes, now: float
    ) -> int:
        """Append one encoded leaf (:class:`~protocol.compliance.LogLeaf` bytes) and extend
        the tiles, in ``tx``; returns its index. :meth:`append_leaf` is the ingest's way."""
        index, tiled = await self._lock_sizes(tx)
        hashed = leaf_hash(data)
        await tx.execute(
            "INSERT INTO log_leaves (leaf_index, vessel_id, batch_seq, leaf, leaf_hash, "
            "appended_at) VALUES ($1, $2, $3, $4, $5, $6)",
            index,
            vessel_id,
            batch_seq,
            data,
            hashed,
            float(now),
        )
        if tiled < index:  # a log made before the tiles, not yet built at start-up
            while tiled < index:
                tiled = await self.build_tiles(tx, index)
        await self.extend_tiles(tx, index, [hashed])
        await tx.execute(
            "UPDATE log_state SET tree_size = $1, tiled_size = $1 WHERE id = 1", index + 1
        )
        return index

    async def extend_tiles(self, tx: Tx, size: int, hashes: Sequence[bytes]) -> None:
        """Add leaf hashes to the tiles of a tree of ``size`` leaves (the caller holds
        :meth:`lock` and records the new size)."""
        edge = await self.tiles(tx, edge_tile_ids(size))
        builder = TileBuilder.resume(size, edge)
        builder.extend(hashes)
        await self.put_tiles(tx, builder.changed())

    async def put_tiles(self, tx: Tx, tiles: dict[TileId, bytes]) -> None:
        """Store tiles, replacing the stored version of each (a tile only grows)."""
        await tx.executemany(
            "INSERT INTO log_tiles (level, tile_index, hashes) VALUES ($1, $2, $3) "
            "ON CONFLICT (level, tile_index) DO UPDATE SET hashes = excluded.hashes",
            [(level, index, data) for (level, index), data in tiles.items()],
        )

    async def build_tiles(self, tx: Tx, size: int, *, step: int | None = None) -> int:
        """Extend the tiles from the stored leaves towards ``size`` leaves, at most ``step``
        of them (default :data:`BUILD_STEP_LEAVES`); returns the leaves the tiles then hold
        (the caller holds :meth:`lock`)."""
        _, tiled = await self.sizes(tx)
        end = min(size, tiled + (BUILD_STEP_LEAVES if step is None else step))
        if end <= tiled:
            return tiled
        rows = await tx.fetch(
            "SELECT leaf_index, leaf_hash FROM log_leaves WHERE leaf_index >= $1 "
            "AND leaf_index < $2 ORDER BY leaf_index",
            tiled,
            end,
        )
        if [int(r[0]) for r in rows] != list(range(tiled, end)):
            raise TransparencyError(
                f"the log's leaves {tiled} to {end - 1} are not all stored; the log is damaged"
            )
        await self.extend_tiles(tx, tiled, [bytes(r[1]) for r in rows])
        await tx.execute("UPDATE log_state SET tiled_size = $1 WHERE id = 1", end)
        return end

    async def tiles(self, tx: Tx, ids: Sequence[TileId] | set[TileId]) -> dict[TileId, bytes]:
        """The stored tiles among ``ids`` (one query)."""
        wanted = sorted(ids)
        if not wanted:
            return {}
        where = " OR ".join(
            f"(level = ${2 * n + 1} AND tile_index = ${2 * n + 2})" for n in range(len(wanted))
        )
        rows = await tx.fetch(
            f"SELECT level, tile_index, hashes FROM log_tiles WHERE {where}",
            *(value for tile in wanted for value in tile),
        )
        return {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}

    async def hashes(self, tx: Tx, plan: Plan, tree_size: int) -> list[bytes]:
        """The hashes of ``plan`` (a root or a proof) in the tree of ``tree_size`` leaves,
        from the few tiles that hold its subtrees."""
        [found] = await self.hashes_of(tx, [plan], tree_size)
        return found

    async def hashes_of(self, tx: Tx, plans: Sequence[Plan], tree_size: int) -> list[list[bytes]]:
        """The hashes of several plans (a report's proofs) with the tiles read once."""
        size, tiled = await self.sizes(tx)
        if tree_size > size:
            raise TransparencyError(f"the log has {size} leaves, not {tree_size}")
        if tree_size > tiled:
            raise TransparencyError(
                f"the log's tiles hold {tiled} of its {size} leaves; they are built when the "
                "relay's store opens: start the relay (or any 'shore' command) once"
            )
        nodes = {node for plan in plans for step in plan for node in step}
        wanted = sorted(tiles_for(nodes))
        tiles: dict[TileId, bytes] = {}
        for start in range(0, len(wanted), TILES_PER_QUERY):
            tiles.update(await self.tiles(tx, wanted[start : start + TILES_PER_QUERY]))
        try:
            cache: dict[tuple[TileId, int, int], bytes] = {}
            subtrees = {node: subtree_hash(node, tiles, cache) for node in nodes}
            return [combine(plan, subtrees) for plan in plans]
        except (KeyError, ValueError) as exc:
            raise TransparencyError(f"the log's tiles are damaged: {exc}") from exc

    async def root(self, tx: Tx, tree_size: int) -> bytes:
        """The root hash of the tree of the first ``tree_size`` leaves."""
        found = await self.hashes(tx, root_plan(tree_size), tree_size)
        return found[0] if found else EMPTY_ROOT

    async def inclusion_proof(self, tx: Tx, index: int, tree_size: int) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of ``tree_size`` leaves."""
        return await self.hashes(tx, inclusion_plan(index, tree_size), tree_size)

    async def inclusion_proofs(
        self, tx: Tx, indexes: Sequence[int], tree_size: int
    ) -> list[list[bytes]]:
        """The audit paths of several leaves in the tree of ``tree_size`` leaves."""
        plans = [inclusion_plan(index, tree_size) for index in indexes]
        return await self.hashes_of(tx, plans, tree_size)

    async def consistency_proofs(
        self, tx: Tx, first_sizes: Sequence[int], tree_size: int
    ) -> list[list[bytes]]:
        """Consistency proofs from each of ``first_sizes`` to ``tree_size`` leaves."""
        plans = [consistency_plan(first, tree_size) for first in first_sizes]
        return await self.hashes_of(tx, plans, tree_size)

    async def consistency_proof(self, tx: Tx, first_size: int, tree_size: int) -> list[bytes]:
        """The proof that the tree of ``tree_size`` leaves extends that of ``first_size``."""
        return await self.hashes(tx, consistency_plan(first_size, tree_size), tree_size)

    async def leaf_hashes(self, tx: Tx) -> list[bytes]:
        """The leaf hashes of the whole log, in order (linear: for checks and tests)."""
        rows = await tx.fetch("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
        return [bytes(r[0]) for r in rows]

    async def vessel_leaves(self, tx: Tx, vessel_id: int) -> list[tuple[int, bytes]]:
        """(index, leaf bytes) of every leaf of one vessel, oldest first."""
        rows = await tx.fetch(
            "SELECT leaf_index, leaf FROM log_leaves WHERE vessel_id = $1 ORDER BY leaf_index",
            vessel_id,
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def log_statistics(
        self, tx: Tx, union_id: int, document_sha256: bytes, now: float
    ) -> tuple[int, bytes, bool]:
        """Append the leaf of a union's signed aggregate (its SHA-256), unless that union
        logged it already; returns (index, leaf bytes, whether it is new)."""
        await self.lock(tx)  # one append at a time: the check and the count stay true
        earlier = await self.vessel_leaves(tx, -union_id)
        for index, data in earlier:
            if StatisticsLeaf.decode(data).document_sha256 == document_sha256:
                return index, data, False
        leaf = StatisticsLeaf(union_id, int(now // 60), document_sha256).encode()
        index = await self.append_encoded(tx, -union_id, len(earlier), leaf, now)
        log.info("union %d statistics logged as leaf %d", union_id, index)
        return index, leaf, True

    async def latest_head(self, tx: Tx) -> SignedTreeHead | None:
        """The most recent signed head (the largest at that minute), or None."""
        minutes = await self.latest_head_minutes(tx)
        if minutes is None:
            return None
        return (await self.heads(tx, minutes, minutes))[-1]

    async def leaf_at(self, tx: Tx, index: int) -> tuple[int, bytes] | None:
        """(vessel id as stored, leaf bytes) of leaf ``index``, or None."""
        row = await tx.fetchrow(
            "SELECT vessel_id, leaf FROM log_leaves WHERE leaf_index = $1", index
        )
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def lock_signing(self, tx: Tx) -> None:
        """Hold the signing row until ``tx`` ends (two workers storing a day's head take
        turns; appends never take it)."""
        await tx.fetchrow(f"SELECT id FROM log_signing WHERE id = 1{self.dialect.for_update}")

    async def store_head(self, tx: Tx, head: SignedTreeHead) -> None:
        """Keep a signed head (signed by the caller, outside any lock)."""
        await tx.execute(
            "INSERT INTO log_heads (tree_size, timestamp_minutes, root, day, signature, origin, "
            "key_id) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            head.head.tree_size,
            head.head.timestamp_minutes,
            head.head.root,
            day_of_minutes(head.head.timestamp_minutes),
            head.shore_signature,
            head.head.origin,
            head.key_id or None,
        )

    async def signed_on(self, tx: Tx, day: str) -> bool:
        """Whether a head was signed on the UTC day ``day`` (``YYYY-MM-DD``)."""
        return await tx.fetchrow("SELECT 1 FROM log_heads WHERE day = $1", day) is not None

    async def latest_head_minutes(self, tx: Tx) -> int | None:
        """When the most recent head was signed (minutes since the epoch), or None."""
        row = await tx.fetchrow("SELECT MAX(timestamp_minutes) FROM log_heads")
        return None if row is None or row[0] is None else int(row[0])

    async def heads(self, tx: Tx, from_minutes: int, to_minutes: int) -> list[SignedTreeHead]:
        """Signed heads dated in [from_minutes, to_minutes], oldest first, with their
        co-signatures."""
        rows = await tx.fetch(
            "SELECT tree_size, timestamp_minutes, root, signature, origin, key_id FROM log_heads "
            "WHERE timestamp_minutes >= $1 AND timestamp_minutes <= $2 "
            "ORDER BY timestamp_minutes, tree_size",
            from_minutes,
            to_minutes,
        )
        cosignatures = await tx.fetch(
            "SELECT tree_size, timestamp_minutes, witness, public_key, signature, cosigned_at "
            "FROM log_cosignatures ORDER BY witness"
        )
        found: list[SignedTreeHead] = []
        for size, minutes, root, signature, origin, key_id in rows:
            witnesses = tuple(
                Cosignature(
                    str(c[2]), bytes(c[3]), bytes(c[4]), None if c[5] is None else int(c[5])
                )
                for c in cosignatures
                if int(c[0]) == int(size) and int(c[1]) == int(minutes)
            )
            head = TreeHead(
                int(size), bytes(root), int(minutes), None if origin is None else str(origin)
            )
            key = b"" if key_id is None else bytes(key_id)
            found.append(SignedTreeHead(head, bytes(signature), witnesses, key))
        return found

    async def signed_head(self, tx: Tx, tree_size: int, minutes: int) -> TreeHead | None:
        """The head the shore signed at that size and minute, or None."""
        row = await tx.fetchrow(
            "SELECT root, origin FROM log_heads WHERE tree_size = $1 AND timestamp_minutes = $2",
            tree_size,
            minutes,
        )
        if row is None:
            return None
        return TreeHead(tree_size, bytes(row[0]), minutes, None if row[1] is None else str(row[1]))

    async def add_cosignature(self, tx: Tx, head: TreeHead, cosignature: Cosignature) -> None:
        """Keep a witness's co-signature (checked by the caller) of a head the shore signed."""
        await tx.execute(
            "INSERT INTO log_cosignatures (tree_size, timestamp_minutes, witness, public_key, "
            "signature, cosigned_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            head.tree_size,
            head.timestamp_minutes,
            cosignature.witness,
            cosignature.public_key,
            cosignature.signature,
            cosignature.timestamp_s,
        )
