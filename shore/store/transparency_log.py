"""Transparency log repository: leaves, signed tree heads and witnesses' co-signatures.

Tables (migration set ``transparency_log``): ``log_state`` (one row: the tree size; the
row appends and signatures lock), ``log_leaves``, ``log_heads``, ``log_cosignatures``.
Rows are never updated or deleted, except the tree size.

Every stored uplink batch becomes a leaf (:func:`leaf_for`), appended by the ingest in the
SAME transaction that stores the batch (:meth:`TransparencyLog.append_leaf` takes that
transaction), so a batch is stored if and only if its leaf is in the log. The leaf holds
the vessel, the batch number, the batch's time window, the real text bytes per crew
member and month (new crew messages only: a resent batch or a repeated message adds
nothing; grievance reports and SOS are not counted) and the SHA-256 of the batch bytes. No
text, no recipients. Leaves are numbered from 0 in one log for all vessels (as in
Certificate Transparency). The tasks that sign heads are :mod:`shore.transparency`.
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
    sign_tree_head,
)
from protocol.envelopes import CrewMessage, Envelope, VoiceNote
from protocol.errors import LimitExceeded
from protocol.limits import MINUTES_RANGE, minutes_in_range
from protocol.merkle import leaf_hash, root_hash
from protocol.months import LOG_ZONE, Month
from protocol.signing import SigningKey
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
    ),
)


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
            counts[key] = counts.get(key, 0) + message_text_bytes(envelope.body, envelope.quick)
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
        row = await tx.fetchrow(
            f"SELECT tree_size FROM log_state WHERE id = 1{self.dialect.for_update}"
        )
        if row is None:
            raise TransparencyError("the transparency log is not set up; run the store migrations")
        return int(row[0])

    async def append_leaf(
        self, tx: Tx, batch: Batch, batch_sha256: bytes, now: float, new: Sequence[Envelope]
    ) -> int:
        """Append the batch's leaf inside the ingest transaction ``tx``; returns its index."""
        leaf = leaf_for(batch, batch_sha256, now, new)
        index = await self.lock(tx)
        data = leaf.encode()
        await tx.execute(
            "INSERT INTO log_leaves (leaf_index, vessel_id, batch_seq, leaf, leaf_hash, "
            "appended_at) VALUES ($1, $2, $3, $4, $5, $6)",
            index,
            batch.vessel_id,
            batch.batch_seq,
            data,
            leaf_hash(data),
            float(now),
        )
        await tx.execute("UPDATE log_state SET tree_size = $1 WHERE id = 1", index + 1)
        log.info("vessel %d batch %d logged as leaf %d", batch.vessel_id, batch.batch_seq, index)
        return index

    async def leaf_hashes(self, tx: Tx) -> list[bytes]:
        """The leaf hashes of the whole log, in order."""
        rows = await tx.fetch("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
        return [bytes(r[0]) for r in rows]

    async def vessel_leaves(self, tx: Tx, vessel_id: int) -> list[tuple[int, bytes]]:
        """(index, leaf bytes) of every leaf of one vessel, oldest first."""
        rows = await tx.fetch(
            "SELECT leaf_index, leaf FROM log_leaves WHERE vessel_id = $1 ORDER BY leaf_index",
            vessel_id,
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def sign(self, tx: Tx, shore_key: SigningKey, minutes: int) -> SignedTreeHead:
        """Sign and keep a head over the log as ``tx`` sees it (the caller holds
        :meth:`lock`)."""
        hashes = await self.leaf_hashes(tx)
        head = sign_tree_head(TreeHead(len(hashes), root_hash(hashes), minutes), shore_key)
        await tx.execute(
            "INSERT INTO log_heads (tree_size, timestamp_minutes, root, day, signature) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            head.head.tree_size,
            minutes,
            head.head.root,
            day_of_minutes(minutes),
            head.shore_signature,
        )
        return head

    async def signed_on(self, tx: Tx, day: str) -> bool:
        """Whether a head was signed on the UTC day ``day`` (``YYYY-MM-DD``)."""
        return await tx.fetchrow("SELECT 1 FROM log_heads WHERE day = $1", day) is not None

    async def heads(self, tx: Tx, from_minutes: int, to_minutes: int) -> list[SignedTreeHead]:
        """Signed heads dated in [from_minutes, to_minutes], oldest first, with their
        co-signatures."""
        rows = await tx.fetch(
            "SELECT tree_size, timestamp_minutes, root, signature FROM log_heads "
            "WHERE timestamp_minutes >= $1 AND timestamp_minutes <= $2 "
            "ORDER BY timestamp_minutes, tree_size",
            from_minutes,
            to_minutes,
        )
        cosignatures = await tx.fetch(
            "SELECT tree_size, timestamp_minutes, witness, public_key, signature "
            "FROM log_cosignatures ORDER BY witness"
        )
        found: list[SignedTreeHead] = []
        for size, minutes, root, signature in rows:
            witnesses = tuple(
                Cosignature(str(c[2]), bytes(c[3]), bytes(c[4]))
                for c in cosignatures
                if int(c[0]) == int(size) and int(c[1]) == int(minutes)
            )
            head = TreeHead(int(size), bytes(root), int(minutes))
            found.append(SignedTreeHead(head, bytes(signature), witnesses))
        return found

    async def signed_root(self, tx: Tx, tree_size: int, minutes: int) -> bytes | None:
        """The root of the head the shore signed at that size and minute, or None."""
        row = await tx.fetchrow(
            "SELECT root FROM log_heads WHERE tree_size = $1 AND timestamp_minutes = $2",
            tree_size,
            minutes,
        )
        return None if row is None else bytes(row[0])

    async def add_cosignature(self, tx: Tx, head: TreeHead, cosignature: Cosignature) -> None:
        """Keep a witness's co-signature (checked by the caller) of a head the shore signed."""
        await tx.execute(
            "INSERT INTO log_cosignatures (tree_size, timestamp_minutes, witness, public_key, "
            "signature) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            head.tree_size,
            head.timestamp_minutes,
            cosignature.witness,
            cosignature.public_key,
            cosignature.signature,
        )
