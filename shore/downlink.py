"""Downlink: receipts, replies, case updates and BatchAcks, batched, signed and published.

Per vessel, pending downlink items (and a cumulative ``BatchAck`` when one is due) are put
into a signed ``Direction.DOWNLINK`` batch inside one store transaction
(:meth:`~shore.store.Store.make_downlink_batch`): the batch number, its bytes and the items
it carries are committed together, and the bytes never change afterwards. Batches are then
published QoS 1 to ``vr/{vessel}/d`` on the relay's persistent session, so a vessel that
comes online after days finds them queued at the broker.

The broker is a carrier, not a record: a batch stays "unacknowledged" until the vessel's
own ``BatchAck`` (in an uplink batch) covers it, and is resent on a timer — after
``resend_after_s`` if the vessel was heard from since it was last sent (it had its chance
and did not acknowledge), after ``resend_max_s`` in any case (a broker restart may have
lost it). Resending only then keeps the broker's queue for an offline vessel from filling
with copies the vessel would pay to download.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from protocol.batch import Direction, encode_batch
from protocol.codebook import Codebook
from protocol.envelopes import Envelope
from protocol.errors import LimitExceeded
from protocol.signing import SigningKey
from shore.store import Store
from vessel_relay.logs import batch_scope

log = logging.getLogger(__name__)

#: Publishes one payload QoS 1 to a topic and returns after the broker's PUBACK.
Publish = Callable[[str, bytes], Awaitable[None]]


def downlink_topic(vessel_id: int) -> str:
    """The vessel's downlink topic."""
    return f"vr/{vessel_id}/d"


@dataclass(frozen=True, slots=True)
class DownlinkConfig:
    """Pacing of the downlink."""

    #: Longest wait between passes (the doorbell wakes the task sooner).
    tick_s: float = 5.0
    #: Resend an unacknowledged batch after this long if the vessel was heard from since.
    resend_after_s: float = 3600.0
    #: Resend an unacknowledged batch after this long in any case.
    resend_max_s: float = 24 * 3600.0
    #: Most items in one downlink batch.
    max_items: int = 200

    def __post_init__(self) -> None:
        if not (self.tick_s > 0 and 0 < self.resend_after_s <= self.resend_max_s):
            raise ValueError("need tick_s > 0 and 0 < resend_after_s <= resend_max_s")
        if self.max_items < 1:
            raise ValueError("max_items must be at least 1")


@dataclass
class DownlinkStatistics:
    """Counters since start."""

    batches_made: int = 0
    batches_published: int = 0
    batches_resent: int = 0
    link_bytes: int = 0
    publish_errors: int = 0


class Downlink:
    """Makes and publishes downlink batches; ``await run(publish, stopping, doorbell)``."""

    def __init__(
        self,
        store: Store,
        shore_key: SigningKey,
        codebook: Codebook,
        config: DownlinkConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.shore_key = shore_key
        self.codebook = codebook
        self.config = config or DownlinkConfig()
        self.clock = clock
        self.stats = DownlinkStatistics()

    def _encoder(self, vessel_id: int, now: float) -> Callable[[int, Sequence[Envelope]], bytes]:
        def encode(downlink_seq: int, envelopes: Sequence[Envelope]) -> bytes:
            return encode_batch(
                envelopes,
                direction=Direction.DOWNLINK,
                vessel_id=vessel_id,
                batch_seq=downlink_seq,
                batch_minutes=int(now // 60),
                signing_key=self.shore_key,
                codebook=self.codebook,
            )

        return encode

    async def make_batches(self, vessel_id: int) -> int:
        """Put every pending item of a vessel into downlink batches; how many were made."""
        made = 0
        max_items = self.config.max_items
        while True:
            now = self.clock()
            try:
                batch = await self.store.make_downlink_batch(
                    vessel_id, now, self._encoder(vessel_id, now), max_items
                )
            except LimitExceeded:
                if max_items == 1:
                    raise
                max_items = max(1, max_items // 2)
                continue
            if batch is None:
                return made
            made += 1
            self.stats.batches_made += 1
            with batch_scope(vessel_id, batch.downlink_seq, "d"):
                log.info(
                    "vessel %d downlink batch %d made: %d items, %d bytes",
                    vessel_id,
                    batch.downlink_seq,
                    batch.items,
                    len(batch.data),
                )

    async def publish_due(self, publish: Publish) -> int:
        """One pass: make batches and publish what is due, for every vessel; how many sent."""
        config = self.config
        sent = 0
        now = self.clock()
        vessels = await self.store.vessels_with_downlink_work(
            now, config.resend_after_s, config.resend_max_s
        )
        for vessel_id in vessels:
            await self.make_batches(vessel_id)
            batches = await self.store.downlink_batches_to_send(
                vessel_id, self.clock(), config.resend_after_s, config.resend_max_s
            )
            for batch in batches:
                await publish(downlink_topic(vessel_id), batch.data)
                await self.store.mark_downlink_sent(vessel_id, batch.downlink_seq, self.clock())
                sent += 1
                self.stats.batches_published += 1
                self.stats.link_bytes += len(batch.data)
                if batch.send_count:
                    self.stats.batches_resent += 1
                with batch_scope(vessel_id, batch.downlink_seq, "d"):
                    log.info(
                        "vessel %d downlink batch %d published (%d bytes, send %d)",
                        vessel_id,
                        batch.downlink_seq,
                        len(batch.data),
                        batch.send_count + 1,
                    )
        return sent

    async def run(
        self, publish: Publish, stopping: asyncio.Event, doorbell: asyncio.Event | None = None
    ) -> None:
        """Publish until ``stopping`` is set; the doorbell (rung by ingest and delivery)
        wakes it before ``tick_s``. A failed publish propagates (the link is down: the
        supervisor reconnects); the batch stays unsent and goes out after reconnecting."""
        bell = doorbell or asyncio.Event()
        while not stopping.is_set():
            bell.clear()
            await self.publish_due(publish)
            await _wait_any(stopping, bell, self.config.tick_s)


async def _wait_any(stopping: asyncio.Event, bell: asyncio.Event, timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(bell.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
