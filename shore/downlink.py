"""Downlink: receipts, replies, case updates and BatchAcks, batched, signed and published.

Per vessel, pending downlink items (and a cumulative ``BatchAck`` when one is due) are put
into a signed ``Direction.DOWNLINK`` batch inside one store transaction
(:meth:`~shore.store.RelayStore.make_downlink_batch`): the batch number, its bytes and the items
it carries are committed together, and the bytes never change afterwards. Batches are then
published QoS 1 to ``vr/{vessel}/d`` on the relay's persistent session, so a vessel that
comes online after days finds them queued at the broker.

Several relay workers pass over the same vessels: a batch due to go is claimed before it
is published (counted as sent in the store, :meth:`DownlinkStore.claim_downlink_sends`), so
one worker publishes it and the vessel pays for one copy; a publish that fails gives the
claim back.

The broker is a carrier, not a record: a batch stays "unacknowledged" until the vessel's
own ``BatchAck`` (in an uplink batch) covers it, and is resent on a timer — after
``resend_after_s`` if the vessel was heard from since it was last sent (it had its chance
and did not acknowledge), after ``resend_max_s`` in any case (a broker restart may have
lost it). Resending only then keeps the broker's queue for an offline vessel from filling
with copies the vessel would pay to download.

**Coalescing.** A pass does not put everything pending into a batch: whether a vessel's
waiting items go down now is :func:`protocol.exchange.downlink_release_due`, weighed in
the store under the vessel's link lock. While a batch with items is unacknowledged and the
vessel is away, what is queued for it (DELIVERED receipts, families' replies, case
updates, lane blocks) waits in the store; the vessel's next uplink (a batch with content,
whose BatchAck is due at once, or its acknowledgement of that batch) releases it all in
one batch, split only at ``max_items`` (:meth:`Downlink.make_batches` goes on with
``continuing`` until nothing waits). An SOS's outcome never waits. A Certus vessel that
connects a few times a day so gets one batch of news at the broker and the rest with the
answer to its uplink, instead of a batch from every pass, each paying its own header,
signature and MQTT/TLS/TCP framing.

**Downlink slots.** Union case notes do not go down on their own (that would tell the owner
that someone on board has a case, and its stage). At the end of every slot period
(``slot_period_s``, a day by default: set it to the vessels' ``[grievances] slot_period_s``)
every crew member whose uplink slots the relay has seen (in the last ``slot_crew_window_s``)
gets exactly one fixed-size item (:func:`protocol.slots.downlink_slot`, carried as a
``CaseStatusUpdate`` with ``report_seq`` 0 and a constant stage): the earliest case note
waiting for them, or cover. Several notes in one period go in the next periods' slots, one
per period. A note too long for a slot, or for a report that came without a slot, still goes
on its own (visibly; see docs/threat-model.md).

**The downlink lane** (:mod:`protocol.lane`) replaces the slots for vessels that send
grievance lane blocks: at the end of every downlink lane period (the same
``slot_period_s``), every vessel whose lane blocks arrived in the last
``lane_vessel_window_s`` gets exactly ``down_blocks_per_period`` ``LaneBlock`` envelopes of
``down_block_bytes``, numbered (period, index): the blocks unions queued for it, oldest
first (each a piece of a case note sealed to a reporter's reply key), and cover for the
rest, made here as a real sealed box to a fresh throwaway key each time
(:func:`protocol.lane.cover_down_block`), never random bytes. Once per (vessel, period),
also across restarts and several workers (the store records each vessel's last period
under its link lock); periods missed while the relay was down are queued when it is back
(at most ``lane_catch_up`` of them). Vessels still on slots keep their slot items.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import nacl.public

from common.logs import batch_scope
from protocol.batch import Direction, encode_batch
from protocol.codebook import Codebook
from protocol.envelopes import CaseStatus, CaseStatusUpdate, Envelope
from protocol.errors import LimitExceeded
from protocol.lane import LaneShape, cover_down_block
from protocol.signing import SigningKey
from protocol.slots import (
    DEFAULT_SLOT_PERIOD_S,
    DOWNLINK_NOTE_BYTES,
    SECONDS_PER_DAY,
    SlotHeader,
    check_slot_period,
    cover_note,
    day_of,
    downlink_slot,
    period_of,
)
from protocol.topics import downlink_topic
from shore.store.downlink import DownlinkBatch, DownlinkEncoder, SlotItemMaker
from shore.store.errors import StoreError
from shore.store.lane_units import CoverMaker, LanePeriodsQueued

log = logging.getLogger(__name__)


class DownlinkStore(Protocol):
    """What the downlink needs of the store (``shore.store.RelayStore`` has it)."""

    async def vessels_with_downlink_work(
        self, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[int]:
        """Vessels with items or an acknowledgement to send, or batches due for resending."""

    async def make_downlink_batch(
        self,
        vessel_id: int,
        now: float,
        encode: DownlinkEncoder,
        max_items: int,
        *,
        continuing: bool = False,
        ack_within: int | None = None,
    ) -> DownlinkBatch | None:
        """Put pending items (and a BatchAck owed) in a new batch when
        :func:`protocol.exchange.downlink_release_due` says so (``continuing``: this pass
        made one already and more wait); None when nothing goes. ``ack_within``: a batch
        with the BatchAck bigger than this carries the BatchAck alone."""

    async def claim_downlink_sends(
        self, vessel_id: int, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[DownlinkBatch]:
        """Unacknowledged batches never sent, or due for resending, oldest first, each
        counted as sent at ``now`` and taken by this worker alone (another worker passing
        over the vessel does not get it); returned as they were before the claim."""

    async def downlink_send_failed(self, batch: DownlinkBatch) -> None:
        """A claimed batch did not reach the broker: as before the claim."""

    async def slot_crews(self, since: float) -> Sequence[tuple[int, int]]:
        """(vessel, crew) of every crew member whose uplink slot arrived since ``since``."""

    async def queue_slot_items(
        self, vessel_id: int, period: int, crews: Sequence[int], make: SlotItemMaker, now: float
    ) -> int:
        """Queue one downlink slot item per crew member for ``period``; how many."""

    async def lane_vessels(self, since: float) -> Sequence[int]:
        """Vessels whose uplink lane blocks arrived since ``since``."""

    async def queue_lane_periods(
        self,
        vessel_id: int,
        last_period: int,
        *,
        blocks_per_period: int,
        period_s: int,
        cover: CoverMaker,
        now: float,
        catch_up: int,
    ) -> LanePeriodsQueued:
        """Queue the vessel's downlink lane blocks of the periods up to ``last_period``
        not queued yet, once per (vessel, period)."""


#: Publishes one payload QoS 1 to a topic and returns after the broker's PUBACK.
Publish = Callable[[str, bytes], Awaitable[None]]


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
    #: The slot period of the vessels (their ``[grievances] slot_period_s``).
    slot_period_s: int = DEFAULT_SLOT_PERIOD_S
    #: A crew member gets downlink slots while their uplink slots arrived this recently.
    slot_crew_window_s: float = 30 * SECONDS_PER_DAY
    #: Downlink slots on (tests of the old behaviour switch them off).
    slots: bool = True
    #: The downlink lane on (for vessels that send lane blocks).
    lane: bool = True
    #: A vessel gets its downlink lane while its uplink lane blocks arrived this recently.
    lane_vessel_window_s: float = 30 * SECONDS_PER_DAY
    #: Most downlink lane periods queued at once for periods missed while the relay was down.
    lane_catch_up: int = 30

    def __post_init__(self) -> None:
        check_slot_period(self.slot_period_s)
        self.lane_shape  # noqa: B018 -- refuses a period the lane does not take
        if self.lane_vessel_window_s <= 0 or self.lane_catch_up < 1:
            raise ValueError("need lane_vessel_window_s > 0 and lane_catch_up >= 1")
        if self.slot_crew_window_s <= 0:
            raise ValueError("slot_crew_window_s must be positive")
        if not (self.tick_s > 0 and 0 < self.resend_after_s <= self.resend_max_s):
            raise ValueError("need tick_s > 0 and 0 < resend_after_s <= resend_max_s")
        if self.max_items < 1:
            raise ValueError("max_items must be at least 1")

    @property
    def lane_shape(self) -> LaneShape:
        """The lane's shape as this relay sends it: the protocol's blocks, the downlink
        period ``slot_period_s``."""
        return LaneShape(down_period_s=self.slot_period_s)


@dataclass
class DownlinkStatistics:
    """Counters since start."""

    batches_made: int = 0
    batches_published: int = 0
    batches_resent: int = 0
    link_bytes: int = 0
    publish_errors: int = 0
    slot_items: int = 0
    #: downlink lane blocks queued (union blocks and cover)
    lane_blocks: int = 0
    #: of those, blocks unions queued (pieces of case notes)
    lane_notes: int = 0
    #: Passes in which making one vessel's batches failed (logged; the others went on).
    vessel_failures: int = 0
    #: Passes over the fleet (the tick, or asked for) and over rung vessels only.
    full_passes: int = 0
    rung_passes: int = 0


class DownlinkBell:
    """What wakes the downlink between its full passes (every ``tick_s``): ``ring(vessel)``
    when a vessel's state changed in this worker (ingest stored or refused one of its
    batches: an acknowledgement is owed), ``set()`` for a full pass over the fleet.

    A rung pass looks only at the vessels rung since the last pass. Every worker of a
    relay rings for the batches it ingested, so the workers share the vessels' downlink
    work instead of each scanning the whole fleet after every batch (the scan and the
    look at every vessel it names were most of the downlink's cost, and with two workers
    each vessel was looked at twice). The full pass on the tick finds the rest: receipts
    of deliveries, families' replies, case notes, resends.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._vessels: set[int] = set()
        self._full = False

    def ring(self, vessel_id: int) -> None:
        """A vessel has downlink work (its acknowledgement, at least)."""
        self._vessels.add(vessel_id)
        self._event.set()

    def set(self) -> None:
        """Ask for a full pass over every vessel."""
        self._full = True
        self._event.set()

    def is_set(self) -> bool:
        """Whether a pass was asked for since the last :meth:`take`."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Until a pass is asked for."""
        await self._event.wait()

    def take(self) -> tuple[bool, frozenset[int]]:
        """What was asked for since the last take: (a full pass, the vessels rung)."""
        full, vessels = self._full, frozenset(self._vessels)
        self._full = False
        self._vessels.clear()
        self._event.clear()
        return full, vessels


class Downlink:
    """Makes and publishes downlink batches; ``await run(publish, stopping, doorbell)``.

    ``ack_within(vessel_id)``: the most bytes a batch carrying that vessel's acknowledgement
    may have, or None (a vessel on its SBD fallback, ``shore.sbd.SbdDownlink.ack_within``:
    its BatchAck must fit in its MT messages even when a long reply or a lane block waits,
    or the vessel resends, and pays for, what the shore already has). A bigger batch
    carries the acknowledgement alone; the items follow in the next one.
    """

    def __init__(
        self,
        store: DownlinkStore,
        shore_key: SigningKey,
        codebook: Codebook,
        config: DownlinkConfig | None = None,
        clock: Callable[[], float] = time.time,
        ack_within: Callable[[int], int | None] | None = None,
    ) -> None:
        self.ack_within = ack_within
        self.store = store
        self.shore_key = shore_key
        self.codebook = codebook
        self.config = config or DownlinkConfig()
        self.clock = clock
        self.stats = DownlinkStatistics()
        self._slots_done = -1
        self._lane_done = -1

    def _encoder(self, vessel_id: int, now: float) -> DownlinkEncoder:
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
        """Put every pending item of a vessel into downlink batches, if they are to go now
        (:func:`protocol.exchange.downlink_release_due`); how many batches were made."""
        made = 0
        max_items = self.config.max_items
        continuing = False  # after a batch of items, the rest of the release goes too
        limit = None if self.ack_within is None else self.ack_within(vessel_id)
        while True:
            now = self.clock()
            try:
                batch = await self.store.make_downlink_batch(
                    vessel_id,
                    now,
                    self._encoder(vessel_id, now),
                    max_items,
                    continuing=continuing,
                    ack_within=None if continuing else limit,
                )
            except LimitExceeded:
                if max_items == 1:
                    raise
                max_items = max(1, max_items // 2)
                continue
            if batch is None:
                return made
            made += 1
            continuing = True
            self.stats.batches_made += 1
            with batch_scope(vessel_id, batch.downlink_seq, "d"):
                log.info(
                    "vessel %d downlink batch %d made: %d items, %d bytes",
                    vessel_id,
                    batch.downlink_seq,
                    batch.items,
                    len(batch.data),
                )
            if 0 < batch.items < max_items:
                return made  # it took every item pending: no need to ask again

    def _slot_item(self, period: int) -> SlotItemMaker:
        period_s = self.config.slot_period_s
        minutes = int((period + 1) * period_s // 60)
        day = day_of(period * period_s)

        def make(crew: int, sealed_note: bytes | None) -> Envelope:
            if sealed_note is None:
                throwaway = bytes(nacl.public.PrivateKey.generate().public_key)
                sealed_note = cover_note(throwaway)
            item = downlink_slot(
                SlotHeader(crew, day), sealed_note, os.urandom(DOWNLINK_NOTE_BYTES)
            )
            return CaseStatusUpdate(0, CaseStatus.RECEIVED, minutes, item)

        return make

    async def queue_slots(self, now: float) -> int:
        """Queue the downlink slot items of the last finished slot period (once per period
        and crew member, also across restarts); how many were queued."""
        config = self.config
        if not config.slots:
            return 0
        period = period_of(now, config.slot_period_s) - 1
        if period <= self._slots_done:
            return 0
        by_vessel: dict[int, list[int]] = {}
        for vessel_id, crew in await self.store.slot_crews(now - config.slot_crew_window_s):
            by_vessel.setdefault(vessel_id, []).append(crew)
        queued = 0
        for vessel_id, crews in sorted(by_vessel.items()):
            made = await self.store.queue_slot_items(
                vessel_id, period, crews, self._slot_item(period), now
            )
            queued += made
            if made:
                log.info(
                    "vessel %d: %d downlink slot items queued for slot period %d",
                    vessel_id,
                    made,
                    period,
                )
        self._slots_done = period
        self.stats.slot_items += queued
        return queued

    def _lane_cover(self) -> bytes:
        """A downlink lane cover block: a sealed box to a throwaway key made for it alone
        (its private half is dropped here), so it looks like every block a union sealed."""
        throwaway = bytes(nacl.public.PrivateKey.generate().public_key)
        return cover_down_block(throwaway, self.config.lane_shape.down_block_bytes)

    async def queue_lane(self, now: float) -> int:
        """Queue the downlink lane blocks of the last finished lane period (and of periods
        missed before it) for every vessel on the lane; how many blocks were queued. Once per
        (vessel, period), also across restarts and several workers."""
        config = self.config
        if not config.lane:
            return 0
        shape = config.lane_shape
        period = int(now // shape.down_period_s) - 1
        if period <= self._lane_done:
            return 0
        queued = 0
        failed = False
        for vessel_id in await self.store.lane_vessels(now - config.lane_vessel_window_s):
            try:
                done = await self.store.queue_lane_periods(
                    vessel_id,
                    period,
                    blocks_per_period=shape.down_blocks_per_period,
                    period_s=shape.down_period_s,
                    cover=self._lane_cover,
                    now=now,
                    catch_up=config.lane_catch_up,
                )
            except StoreError:
                raise  # the database failed: the whole fleet's problem
            except Exception:
                # one vessel's lane must not stop the fleet's: logged, tried again next pass
                failed = True
                self.stats.vessel_failures += 1
                log.exception("vessel %d: queueing its downlink lane failed", vessel_id)
                continue
            blocks = done.periods * shape.down_blocks_per_period
            queued += blocks
            self.stats.lane_blocks += blocks
            self.stats.lane_notes += done.notes
            if done.periods:
                log.info(
                    "vessel %d: downlink lane up to period %d queued (%d periods, %d blocks; "
                    "%d union blocks wait)",
                    vessel_id,
                    period,
                    done.periods,
                    blocks,
                    done.waiting,
                )
        if not failed:
            self._lane_done = period
        return queued

    async def publish_due(self, publish: Publish, vessels: Collection[int] | None = None) -> int:
        """One pass: make batches and publish what is due, for every vessel with downlink
        work (or only for ``vessels``, those rung: :class:`DownlinkBell`); how many sent."""
        config = self.config
        sent = 0
        now = self.clock()
        await self.queue_slots(now)
        await self.queue_lane(now)
        if vessels is None:
            vessels = await self.store.vessels_with_downlink_work(
                now, config.resend_after_s, config.resend_max_s
            )
        for vessel_id in sorted(vessels):
            try:
                await self.make_batches(vessel_id)
            except StoreError:
                raise  # the database failed: the whole fleet's problem, not this vessel's
            except Exception:
                # One vessel's data (or a bug it triggers) must not stop the fleet's downlink:
                # log it once per pass, send what was made before, go on with the others.
                self.stats.vessel_failures += 1
                log.exception(
                    "vessel %d: making its downlink batches failed; other vessels go on",
                    vessel_id,
                )
            batches = await self.store.claim_downlink_sends(
                vessel_id, self.clock(), config.resend_after_s, config.resend_max_s
            )
            for index, batch in enumerate(batches):
                try:
                    await publish(downlink_topic(vessel_id), batch.data)
                except BaseException:
                    await self._give_back(batches[index:])
                    raise
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

    async def _give_back(self, unsent: Sequence[DownlinkBatch]) -> None:
        """Batches claimed but not published (the link failed, or the relay is stopping):
        back to unsent, so the next pass (here or at another worker) sends them; if that
        fails too, the resend timer does."""
        for batch in unsent:
            try:
                await asyncio.shield(self.store.downlink_send_failed(batch))
            except (Exception, asyncio.CancelledError):
                log.warning(
                    "vessel %d downlink batch %d: not published and not given back; "
                    "it goes when its resend is due",
                    batch.vessel_id,
                    batch.downlink_seq,
                    exc_info=True,
                )

    async def run(
        self,
        publish: Publish,
        stopping: asyncio.Event,
        doorbell: DownlinkBell | asyncio.Event | None = None,
    ) -> None:
        """Publish until ``stopping`` is set: a full pass every ``tick_s``, and between them
        a pass over the vessels rung on the doorbell (:class:`DownlinkBell`; a plain event,
        or ``set()``, asks for a full pass). A failed publish propagates (the link is down:
        the supervisor reconnects); the batch stays unsent and goes out after reconnecting."""
        bell = doorbell or DownlinkBell()
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while not stopping.is_set():
            if isinstance(bell, DownlinkBell):
                full, rung = bell.take()
            else:
                bell.clear()
                full, rung = True, frozenset()
            if full or loop.time() >= next_full:
                next_full = loop.time() + self.config.tick_s
                await self.publish_due(publish)
                self.stats.full_passes += 1
            elif rung:
                await self.publish_due(publish, rung)
                self.stats.rung_passes += 1
            await _wait_any(stopping, bell, max(0.0, next_full - loop.time()))


async def _wait_any(
    stopping: asyncio.Event, bell: DownlinkBell | asyncio.Event, timeout_s: float
) -> None:
    waiters = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(bell.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
