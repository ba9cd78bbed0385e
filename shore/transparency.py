"""Transparency log tasks: sign tree heads daily, keep witnesses' co-signatures, read proofs.

The log is the shore's promise to inspectors that a compliance report was not written after
the fact. Its leaves are appended by the ingest, in the same transaction that stores each
batch (:meth:`shore.store.transparency_log.TransparencyLog.append_leaf`). Once a day the
relay's task :func:`run_daily_heads` signs a tree head with the shore key: a C2SP
``tlog-checkpoint`` (origin :func:`~protocol.compliance.log_origin` of the shore key, size,
base64 root, and a ``time`` line), as a C2SP signed note with an Ed25519 signature. A union
or labour office co-signs heads as a witness in the C2SP ``tlog-cosignature`` format
(``vessel-relay shore log heads --json``, then ``vessel-relay report cosign`` by the
witness, then ``vessel-relay shore log add-cosignature``: :func:`add_cosignature`).

Signing never holds the lock appends take: the size is read, the root computed from the
tiles (a tiled tree only grows, so the root of a size never changes), the head signed
(``signer``, which may take its time, e.g. a remote key), and only then stored in a short
transaction. Ingest goes on appending meanwhile.

Each function here is one unit of work: one transaction of the store's database, asking
its transparency log repository (:class:`LogStore` is all they need of the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from protocol.compliance import (
    NOTE_ED25519,
    Cosignature,
    SignedTreeHead,
    TreeHead,
    cosignature_valid,
    log_origin,
    note_key_id,
)
from protocol.signing import SigningKey
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


#: Signs a head's note text with the shore key (may be slow: a remote or hardware key).
HeadSigner = Callable[[bytes], Awaitable[bytes]]


def key_signer(shore_key: SigningKey) -> HeadSigner:
    """A :data:`HeadSigner` for a key held in this process."""

    async def sign(message: bytes) -> bytes:
        return shore_key.sign(message)

    return sign


async def leaf_hashes(store: LogStore, tree_size: int | None = None) -> list[bytes]:
    """The leaf hashes of the log, in order (the first ``tree_size`` if given). Linear in
    the log's size: for checks and tests, never for reports."""
    async with store.db.transaction() as tx:
        hashes = await store.log.leaf_hashes(tx)
    return hashes if tree_size is None else hashes[:tree_size]


async def inclusion_proofs(
    store: LogStore, indexes: Sequence[int], tree_size: int
) -> list[list[bytes]]:
    """The inclusion proof of each leaf in ``indexes`` in the tree of ``tree_size`` leaves."""
    async with store.db.transaction() as tx:
        return await store.log.inclusion_proofs(tx, indexes, tree_size)


async def consistency_proofs(
    store: LogStore, first_sizes: Sequence[int], tree_size: int
) -> list[list[bytes]]:
    """The consistency proof from each of ``first_sizes`` to ``tree_size`` leaves."""
    async with store.db.transaction() as tx:
        return await store.log.consistency_proofs(tx, first_sizes, tree_size)


async def root(store: LogStore, tree_size: int | None = None) -> tuple[int, bytes]:
    """(size, root hash) of the log now, or of its first ``tree_size`` leaves."""
    async with store.db.transaction() as tx:
        size = (await store.log.sizes(tx))[0] if tree_size is None else tree_size
        return size, await store.log.root(tx, size)


async def vessel_leaves(store: LogStore, vessel_id: int) -> list[tuple[int, bytes]]:
    """(index, leaf bytes) of every leaf of one vessel, oldest first."""
    async with store.db.transaction() as tx:
        return await store.log.vessel_leaves(tx, vessel_id)


async def _make_head(
    store: LogStore, origin: str, key_id: bytes, signer: HeadSigner, minutes: int
) -> SignedTreeHead:
    async with store.db.transaction() as tx:  # a short read; no lock held
        size, _ = await store.log.sizes(tx)
        tree_root = await store.log.root(tx, size)
    head = TreeHead(size, tree_root, minutes, origin)
    return SignedTreeHead(head, await signer(head.signed_bytes()), (), key_id)


def _signer_of(shore_key: SigningKey, signer: HeadSigner | None) -> tuple[str, bytes, HeadSigner]:
    public = shore_key.verify_key.key
    origin = log_origin(public)
    return origin, note_key_id(origin, public, NOTE_ED25519), signer or key_signer(shore_key)


async def sign_head(
    store: LogStore, shore_key: SigningKey, now: float, *, signer: HeadSigner | None = None
) -> SignedTreeHead:
    """Sign a checkpoint over the whole log as it is now, and keep it.

    ``shore_key`` names the log (its origin and key id); ``signer`` signs with it (default:
    in this process). No lock is held while the root is computed or the head signed.
    """
    minutes = int(now // 60)
    origin, key_id, sign = _signer_of(shore_key, signer)
    head = await _make_head(store, origin, key_id, sign, minutes)
    async with store.db.transaction() as tx:
        await store.log.store_head(tx, head)
    log.info("tree head signed: %d leaves at minute %d", head.head.tree_size, minutes)
    return head


async def sign_daily_head(
    store: LogStore, shore_key: SigningKey, now: float, *, signer: HeadSigner | None = None
) -> SignedTreeHead | None:
    """Sign today's tree head (UTC day) unless one exists; the relay calls this daily.

    Idempotent across relay workers and restarts: the head is signed outside any lock,
    then stored in a transaction holding the signing row (never the row appends take)
    that first checks for the day's head, so of two workers asking at once, one stores
    its head and the other finds that head. Any head signed that day (a report's fresh
    head too) counts as the day's head.
    """
    minutes = int(now // 60)
    day = day_of_minutes(minutes)
    async with store.db.transaction() as tx:
        if await store.log.signed_on(tx, day):
            return None
    origin, key_id, sign = _signer_of(shore_key, signer)
    head = await _make_head(store, origin, key_id, sign, minutes)
    async with store.db.transaction() as tx:
        await store.log.lock_signing(tx)
        if await store.log.signed_on(tx, day):
            return None
        await store.log.store_head(tx, head)
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
    if not cosignature_valid(head, cosignature):
        kind = "an older relay's" if head.origin is None else "a tlog-cosignature/v1"
        raise TransparencyError(
            f"the co-signature of {cosignature.witness!r} does not sign the head of size "
            f"{head.tree_size} ({kind} head); ask the witness to co-sign that head again"
        )
    async with store.db.transaction() as tx:
        signed = await store.log.signed_head(tx, head.tree_size, head.timestamp_minutes)
        if signed != head:
            raise TransparencyError(
                f"the shore never signed a head of size {head.tree_size} at minute "
                f"{head.timestamp_minutes} with that root; co-sign a head from 'shore log heads'"
            )
        await store.log.add_cosignature(tx, head, cosignature)
    log.info("witness %s co-signed the head of size %d", cosignature.witness, head.tree_size)
