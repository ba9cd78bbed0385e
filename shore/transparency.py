"""Transparency log tasks: sign tree heads daily, keep witnesses' co-signatures, read proofs.

The log is the shore's promise to inspectors that a compliance report was not written after
the fact. Its leaves are appended by the ingest, in the same transaction that stores each
batch (:meth:`shore.store.transparency_log.TransparencyLog.append_leaf`). Once a day the
relay's task :func:`run_daily_heads` signs a tree head (size, root, time) with the shore
key; a union or labour office co-signs heads as a witness (``vessel-relay shore log heads
--json``, then ``vessel-relay report cosign`` by the witness, then ``vessel-relay shore log
add-cosignature``: :func:`add_cosignature`).

Each function here is one unit of work: one transaction of the store's database, asking
its transparency log repository (:class:`LogStore` is all they need of the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from protocol.compliance import Cosignature, SignedTreeHead, TreeHead, witness_message
from protocol.errors import ProtocolError
from protocol.signing import SigningKey, VerifyKey
from shore.store.database import Database
from shore.store.errors import StoreError
from shore.store.transparency_log import TransparencyError, TransparencyLog, day_of_minutes

log = logging.getLogger(__name__)


class LogStore(Protocol):
    """What the log's tasks need of the store: its transaction seam and its log."""

    @property
    def db(self) -> Database:
        """The database (its ``transaction()``)."""

    @property
    def log(self) -> TransparencyLog:
        """The transparency log repository."""


async def leaf_hashes(store: LogStore, tree_size: int | None = None) -> list[bytes]:
    """The leaf hashes of the log, in order (the first ``tree_size`` if given)."""
    async with store.db.transaction() as tx:
        hashes = await store.log.leaf_hashes(tx)
    return hashes if tree_size is None else hashes[:tree_size]


async def vessel_leaves(store: LogStore, vessel_id: int) -> list[tuple[int, bytes]]:
    """(index, leaf bytes) of every leaf of one vessel, oldest first."""
    async with store.db.transaction() as tx:
        return await store.log.vessel_leaves(tx, vessel_id)


async def sign_head(store: LogStore, shore_key: SigningKey, now: float) -> SignedTreeHead:
    """Sign a tree head over the whole log as it is now, and keep it."""
    minutes = int(now // 60)
    async with store.db.transaction() as tx:
        await store.log.lock(tx)
        head = await store.log.sign(tx, shore_key, minutes)
    log.info("tree head signed: %d leaves at minute %d", head.head.tree_size, minutes)
    return head


async def sign_daily_head(
    store: LogStore, shore_key: SigningKey, now: float
) -> SignedTreeHead | None:
    """Sign today's tree head (UTC day) unless one exists; the relay calls this daily.

    Idempotent across relay workers and restarts: the check and the signature are one
    transaction holding the log's state row, so of two workers asking at once, one signs
    and the other finds that head. Any head signed that day (a report's fresh head too)
    counts as the day's head.
    """
    minutes = int(now // 60)
    async with store.db.transaction() as tx:
        await store.log.lock(tx)
        signed = await store.log.signed_on(tx, day_of_minutes(minutes))
        head = None if signed else await store.log.sign(tx, shore_key, minutes)
    if head is not None:
        log.info("daily tree head signed: %d leaves at minute %d", head.head.tree_size, minutes)
    return head


def seconds_to_next_day(now: float, *, after_s: float = 60.0) -> float:
    """Seconds from ``now`` until ``after_s`` past the next UTC midnight."""
    moment = datetime.fromtimestamp(now, UTC)
    midnight = datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp() + 86_400
    return midnight + after_s - now


async def run_daily_heads(
    store: LogStore,
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
    store: LogStore, *, from_minutes: int = 0, to_minutes: int | None = None
) -> list[SignedTreeHead]:
    """Signed heads dated in [from_minutes, to_minutes], oldest first, with co-signatures."""
    upper = 2**62 if to_minutes is None else to_minutes
    async with store.db.transaction() as tx:
        return await store.log.heads(tx, from_minutes, upper)


async def latest_head(store: LogStore) -> SignedTreeHead | None:
    """The most recent signed head, or None before the first."""
    found = await heads(store)
    return found[-1] if found else None


async def add_cosignature(store: LogStore, head: TreeHead, cosignature: Cosignature) -> None:
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
    async with store.db.transaction() as tx:
        root = await store.log.signed_root(tx, head.tree_size, head.timestamp_minutes)
        if root != head.root:
            raise TransparencyError(
                f"the shore never signed a head of size {head.tree_size} at minute "
                f"{head.timestamp_minutes} with that root; co-sign a head from 'shore log heads'"
            )
        await store.log.add_cosignature(tx, head, cosignature)
    log.info("witness %s co-signed the head of size %d", cosignature.witness, head.tree_size)
