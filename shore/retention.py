"""Retention: the relay forgets family messages' content some time after their delivery
ended, and fails those that outlived their time to live (issue 23).

:class:`RetentionKeeper` runs inside the relay's task group. Every ``[retention] tick_s``
it (1) fails the family messages past their vessel's time to live (the delivery workers
do the same before each claim, so none is ever sent late; this pass covers a relay
without delivery workers and deliveries waiting for a retry), and (2) purges the content
of family messages whose delivery ended, and the bytes of downlink batches (with the
families' replies' text) that the vessel acknowledged, more than ``[retention]
content_days`` ago
(:meth:`shore.store.retention_units.RetentionUnits.purge_content`), then has the store
erase what its files hold of it. Each purge is one log line with ids and sizes, never
content, and is counted in the metrics (``vessel_relay_purge*``).

A purge changes no compliance figure: the text bytes a report counts are kept, the
transparency log never held content, and a report or export signed before the purge
verifies as it did (``tests/shore/test_retention.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shore.store.deliveries import DeliveryKey
from shore.store.errors import StoreError
from shore.store.retention_units import PURGE_LIMIT, Purge

log = logging.getLogger(__name__)

DAY_S = 86_400.0


class RetentionStore(Protocol):
    """What the keeper needs of the store (``shore.store.RelayStore`` has it)."""

    async def expire_undelivered(self, now: float) -> Sequence[DeliveryKey]:
        """Fail the family messages past their time to live; their keys."""

    async def purge_content(self, now: float, retention_s: float) -> Purge:
        """Purge the content of messages whose delivery ended before the retention."""

    async def erase_purged_content(self) -> None:
        """Erase what the files still hold of purged content."""


class RetentionObserver(Protocol):
    """Where purges and expiries are counted (``shore.metrics.RelayMetrics``)."""

    def observe_purge(
        self, messages: int, content_bytes: int, downlink_batches: int, downlink_bytes: int
    ) -> None: ...
    def observe_expired(self, messages: int) -> None: ...


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long content is kept after a delivery ended, and how often to look."""

    content_retention_s: float = 30 * DAY_S
    tick_s: float = 3600.0

    def __post_init__(self) -> None:
        if not (self.content_retention_s > 0 and self.tick_s > 0):
            raise ValueError("the content retention and the tick must be positive")


@dataclass(frozen=True, slots=True)
class RetentionStatistics:
    """Counters since start, for the status page."""

    purges: int
    purged_messages: int
    purged_content_bytes: int
    expired_messages: int
    errors: int
    purged_downlink_batches: int = 0


class RetentionKeeper:
    """Expires and purges on a timer; ``await run(stopping)`` in the relay's task group."""

    def __init__(
        self,
        store: RetentionStore,
        config: RetentionConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        metrics: RetentionObserver | None = None,
    ) -> None:
        self.store = store
        self.config = config or RetentionConfig()
        self.clock = clock
        self.metrics = metrics
        self._purges = self._purged = self._purged_bytes = self._expired = self._errors = 0
        self._purged_batches = 0
        #: A purge committed whose erasure from the files has not succeeded yet.
        self._erase_owed = False

    def statistics(self) -> RetentionStatistics:
        """Counters since start."""
        return RetentionStatistics(
            self._purges,
            self._purged,
            self._purged_bytes,
            self._expired,
            self._errors,
            self._purged_batches,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """One pass every ``tick_s`` until ``stopping``; a failed pass is logged, counted
        and tried again at the next tick (nothing it committed is undone)."""
        while not stopping.is_set():
            try:
                await self.pass_once()
            except StoreError:
                self._errors += 1
                log.exception("retention pass failed; trying again in %.0f s", self.config.tick_s)
            try:
                async with asyncio.timeout(self.config.tick_s):
                    await stopping.wait()
            except TimeoutError:
                pass

    async def pass_once(self) -> list[Purge]:
        """Expire, then purge until nothing is left to purge, then erase; the purges."""
        expired = await self.store.expire_undelivered(self.clock())
        if expired:
            self._expired += len(expired)
            if self.metrics is not None:
                self.metrics.observe_expired(len(expired))
        purges: list[Purge] = []
        while True:
            purge = await self.store.purge_content(self.clock(), self.config.content_retention_s)
            if not purge.anything:
                break
            purges.append(purge)
            self._erase_owed = True
            self._count(purge)
            if max(purge.messages, purge.downlink_batches) < PURGE_LIMIT:
                break
        if self._erase_owed:
            await self.store.erase_purged_content()
            self._erase_owed = False
            if purges:
                log.info("retention: purged content erased from the store's files")
        return purges

    def _count(self, purge: Purge) -> None:
        self._purges += 1
        self._purged += purge.messages
        self._purged_bytes += purge.content_bytes
        self._purged_batches += purge.downlink_batches
        if self.metrics is not None:
            self.metrics.observe_purge(
                purge.messages, purge.content_bytes, purge.downlink_batches, purge.downlink_bytes
            )
        ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(purge.ended_before))
        for vessel_id, share in sorted(purge.downlink_by_vessel.items()):
            log.info(
                "retention purge: vessel %d downlink batches %d-%d: bytes of %d batches (%d "
                "bytes) acknowledged before %s and their replies' text removed; ids kept",
                vessel_id,
                share.first_seq,
                share.last_seq,
                share.messages,
                share.content_bytes,
                ended,
            )
        for vessel_id, share in sorted(purge.by_vessel.items()):
            log.info(
                "retention purge: vessel %d messages %d-%d: content of %d family messages "
                "(%d bytes) whose delivery ended before %s removed; metadata kept",
                vessel_id,
                share.first_seq,
                share.last_seq,
                share.messages,
                share.content_bytes,
                ended,
            )
