"""Transparency log: every stored uplink batch becomes a leaf of an append-only Merkle log.

The log is the shore's promise to inspectors that a compliance report was not written after
the fact. :func:`append_leaf` runs inside :meth:`shore.store_sql.SqlStore.ingest_batch`, in
the SAME transaction that stores the batch, so a batch is stored if and only if its leaf is
in the log. The leaf (:class:`protocol.compliance.LogLeaf`) holds the vessel, the batch
number, the batch's time window, the real text bytes per crew member and month (new crew
messages only: a resent batch or a repeated message adds nothing; grievance reports and SOS
are not counted) and the SHA-256 of the batch bytes. No text, no recipients.

Leaves are numbered from 0 in one log for all vessels (as in Certificate Transparency);
appends are serialised by locking the single ``log_state`` row. Rows are never updated or
deleted. Once a day the relay's task :func:`run_daily_heads` signs a tree head (size,
root, time) with the shore key; a union or labour office co-signs heads as a witness
(``vessel-relay shore log heads --json``, then ``vessel-relay report cosign`` by the
witness, then ``vessel-relay shore log add-cosignature``: :func:`add_cosignature`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from protocol.batch import Batch
from protocol.compliance import (
    Cosignature,
    CrewBytes,
    LogLeaf,
    SignedTreeHead,
    TreeHead,
    message_text_bytes,
    sign_tree_head,
    witness_message,
)
from protocol.envelopes import CrewMessage, Envelope
from protocol.errors import LimitExceeded, ProtocolError
from protocol.limits import MINUTES_RANGE, minutes_in_range
from protocol.merkle import leaf_hash, root_hash
from protocol.months import LOG_ZONE, Month
from protocol.signing import SigningKey, VerifyKey

if TYPE_CHECKING:
    from shore.store_sql import SqlStore, Tx

log = logging.getLogger(__name__)

#: The log's tables (run by the store's migrations; see shore.store_sql.MIGRATIONS).
LOG_MIGRATION = (
    "0003_transparency_log",
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


async def append_leaf(
    tx: Tx,
    for_update: str,
    batch: Batch,
    batch_sha256: bytes,
    now: float,
    new: Sequence[Envelope],
) -> int:
    """Append the batch's leaf inside the ingest transaction ``tx``; returns its index."""
    leaf = leaf_for(batch, batch_sha256, now, new)
    row = await tx.fetchrow(f"SELECT tree_size FROM log_state WHERE id = 1{for_update}")
    if row is None:
        raise TransparencyError("the transparency log is not set up; run the store migrations")
    index = int(row[0])
    data = leaf.encode()
    await tx.execute(
        "INSERT INTO log_leaves (leaf_index, vessel_id, batch_seq, leaf, leaf_hash, appended_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
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


# --- reading the log -------------------------------------------------------------------------


async def leaf_hashes(store: SqlStore, tree_size: int | None = None) -> list[bytes]:
    """The leaf hashes of the log, in order (the first ``tree_size`` if given)."""
    async with store._transaction() as tx:
        rows = await tx.fetch("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
    hashes = [bytes(r[0]) for r in rows]
    return hashes if tree_size is None else hashes[:tree_size]


async def vessel_leaves(store: SqlStore, vessel_id: int) -> list[tuple[int, bytes]]:
    """(index, leaf bytes) of every leaf of one vessel, oldest first."""
    async with store._transaction() as tx:
        rows = await tx.fetch(
            "SELECT leaf_index, leaf FROM log_leaves WHERE vessel_id = $1 ORDER BY leaf_index",
            vessel_id,
        )
    return [(int(r[0]), bytes(r[1])) for r in rows]


def _day(minutes: int) -> str:
    return datetime.fromtimestamp(minutes * 60, UTC).strftime("%Y-%m-%d")


async def _sign_in(tx: Tx, shore_key: SigningKey, minutes: int) -> SignedTreeHead:
    """Sign and keep a head over the log as ``tx`` sees it (the caller holds log_state)."""
    rows = await tx.fetch("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
    hashes = [bytes(r[0]) for r in rows]
    head = sign_tree_head(TreeHead(len(hashes), root_hash(hashes), minutes), shore_key)
    await tx.execute(
        "INSERT INTO log_heads (tree_size, timestamp_minutes, root, day, signature) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        head.head.tree_size,
        minutes,
        head.head.root,
        _day(minutes),
        head.shore_signature,
    )
    return head


async def _lock_log(store: SqlStore, tx: Tx) -> None:
    """Hold the log's state row: no leaf is appended and no head signed meanwhile."""
    row = await tx.fetchrow(
        f"SELECT tree_size FROM log_state WHERE id = 1{store.dialect.for_update}"
    )
    if row is None:
        raise TransparencyError("the transparency log is not set up; run the store migrations")


async def sign_head(store: SqlStore, shore_key: SigningKey, now: float) -> SignedTreeHead:
    """Sign a tree head over the whole log as it is now, and keep it."""
    minutes = int(now // 60)
    async with store._transaction() as tx:
        await _lock_log(store, tx)
        head = await _sign_in(tx, shore_key, minutes)
    log.info("tree head signed: %d leaves at minute %d", head.head.tree_size, minutes)
    return head


async def sign_daily_head(
    store: SqlStore, shore_key: SigningKey, now: float
) -> SignedTreeHead | None:
    """Sign today's tree head (UTC day) unless one exists; the relay calls this daily.

    Idempotent across relay workers and restarts: the check and the signature are one
    transaction holding the log's state row, so of two workers asking at once, one signs
    and the other finds that head. Any head signed that day (a report's fresh head too)
    counts as the day's head.
    """
    minutes = int(now // 60)
    async with store._transaction() as tx:
        await _lock_log(store, tx)
        row = await tx.fetchrow("SELECT 1 FROM log_heads WHERE day = $1", _day(minutes))
        head = None if row is not None else await _sign_in(tx, shore_key, minutes)
    if head is not None:
        log.info("daily tree head signed: %d leaves at minute %d", head.head.tree_size, minutes)
    return head


def seconds_to_next_day(now: float, *, after_s: float = 60.0) -> float:
    """Seconds from ``now`` until ``after_s`` past the next UTC midnight."""
    moment = datetime.fromtimestamp(now, UTC)
    midnight = datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp() + 86_400
    return midnight + after_s - now


async def run_daily_heads(
    store: SqlStore,
    shore_key: SigningKey,
    stopping: asyncio.Event,
    *,
    clock: Callable[[], float] = time.time,
    check_s: float = 3600.0,
) -> None:
    """The relay's task: sign each UTC day's tree head, until ``stopping`` is set.

    It tries at start, every ``check_s`` and just after each UTC midnight, so a relay that
    was down at midnight signs the day's head when it comes back. A store that cannot be
    reached is logged and tried again at the next check.
    """
    from shore.store import StoreError

    while not stopping.is_set():
        try:
            await sign_daily_head(store, shore_key, clock())
        except (StoreError, TransparencyError) as exc:
            log.error("daily tree head not signed (%s); trying again in %.0f s", exc, check_s)
        wait_s = min(check_s, seconds_to_next_day(clock()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, wait_s)):
                await stopping.wait()


async def heads(
    store: SqlStore, *, from_minutes: int = 0, to_minutes: int | None = None
) -> list[SignedTreeHead]:
    """Signed heads dated in [from_minutes, to_minutes], oldest first, with co-signatures."""
    upper = 2**62 if to_minutes is None else to_minutes
    async with store._transaction() as tx:
        rows = await tx.fetch(
            "SELECT tree_size, timestamp_minutes, root, signature FROM log_heads "
            "WHERE timestamp_minutes >= $1 AND timestamp_minutes <= $2 "
            "ORDER BY timestamp_minutes, tree_size",
            from_minutes,
            upper,
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


async def latest_head(store: SqlStore) -> SignedTreeHead | None:
    """The most recent signed head, or None before the first."""
    found = await heads(store)
    return found[-1] if found else None


async def add_cosignature(store: SqlStore, head: TreeHead, cosignature: Cosignature) -> None:
    """Keep a witness's co-signature of a head the shore signed (checked first)."""
    try:
        VerifyKey(cosignature.public_key).verify(
            witness_message(head), cosignature.signature, what="witness co-signature"
        )
    except ProtocolError as exc:
        raise TransparencyError(
            f"the co-signature of {cosignature.witness!r} does not sign the head of size "
            f"{head.tree_size}: {exc.message}"
        ) from exc
    async with store._transaction() as tx:
        row = await tx.fetchrow(
            "SELECT root FROM log_heads WHERE tree_size = $1 AND timestamp_minutes = $2",
            head.tree_size,
            head.timestamp_minutes,
        )
        if row is None or bytes(row[0]) != head.root:
            raise TransparencyError(
                f"the shore never signed a head of size {head.tree_size} at minute "
                f"{head.timestamp_minutes} with that root; co-sign a head from 'shore log heads'"
            )
        await tx.execute(
            "INSERT INTO log_cosignatures (tree_size, timestamp_minutes, witness, public_key, "
            "signature) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            head.tree_size,
            head.timestamp_minutes,
            cosignature.witness,
            cosignature.public_key,
            cosignature.signature,
        )
    log.info("witness %s co-signed the head of size %d", cosignature.witness, head.tree_size)
