"""Units of work of the grievance lane: what unions read and queue, and the downlink lane's
blocks queued once per (vessel, period).

The uplink blocks are stored by the ingest, in the batch's own transaction
(:meth:`~shore.store.ingest_units.IngestUnits.ingest_batch`). Everything here that changes
a vessel's lane first locks the vessel's link row (:meth:`~shore.store.links.VesselLinks.lock`),
as the rest of the downlink does, so two relay workers never queue one period twice and a
union's queue never goes over its cap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocol.compliance import SignedTreeHead
from protocol.envelopes import LaneBlock
from shore.store.errors import LaneQueueFull, RegistryError
from shore.store.lane import LaneUpBlock
from shore.store.parts import StoreParts

#: Makes one downlink cover block (a sealed box to a fresh throwaway key).
CoverMaker = Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class LanePeriodsQueued:
    """What one vessel's downlink lane got in one pass (counts only)."""

    periods: int = 0
    #: union blocks carried (the rest of the ``periods * blocks_per_period`` are cover)
    notes: int = 0
    #: union blocks still waiting afterwards
    waiting: int = 0


def lane_item_key(period: int, index: int) -> str:
    """The downlink queue's dedupe key of a downlink lane block."""
    return f"lane/{period}/{index}"


class LaneUnits(StoreParts):
    """The lane's units of work (``shore.union_api.UnionApiStore`` and
    ``shore.downlink.DownlinkStore`` use them)."""

    async def lane_blocks(
        self, after: int, limit: int, vessels: Sequence[int] | None
    ) -> Sequence[LaneUpBlock]:
        """Up to ``limit`` uplink lane blocks with ids above ``after``, by id (of
        ``vessels`` only, unless None)."""
        async with self.db.transaction() as tx:
            return await self.lane.up_blocks_after(tx, after, limit, vessels)

    async def escalate(
        self, from_union: int, to_union: int, case_number: str, package: bytes, now: float
    ) -> None:
        """Keep a union's escalation for its second organisation (once per case)."""
        async with self.db.transaction() as tx:
            await self.escalations.put(tx, from_union, to_union, case_number, package, now)

    async def log_statistics(
        self, union: int, document_sha256: bytes, now: float
    ) -> tuple[int, bytes, bool]:
        """Log a union's signed aggregate in the transparency log (once); (leaf index, leaf
        bytes, whether new)."""
        async with self.db.transaction() as tx:
            return await self.log.log_statistics(tx, union, document_sha256, now)

    async def statistics_receipt(
        self, union: int, index: int
    ) -> tuple[bytes, SignedTreeHead, list[bytes]] | None:
        """(leaf, the latest signed head, the leaf's inclusion proof in it) for leaf
        ``index`` if it is one of ``union``'s statistics and that head covers it; else
        None (:class:`RegistryError` if the leaf is not this union's statistics)."""
        async with self.db.transaction() as tx:
            found = await self.log.leaf_at(tx, index)
            if found is None or found[0] != -union:
                raise RegistryError(f"leaf {index} is not statistics of union {union}")
            head = await self.log.latest_head(tx)
            if head is None or head.head.tree_size <= index:
                return None
            proof = await self.log.inclusion_proof(tx, index, head.head.tree_size)
            return found[1], head, proof

    async def escalations_for(
        self, to_union: int, after: int, limit: int
    ) -> Sequence[tuple[int, int, str, bytes, float]]:
        """Escalations handed to ``to_union`` with ids above ``after`` (by id)."""
        async with self.db.transaction() as tx:
            return await self.escalations.for_union(tx, to_union, after, limit)

    async def lane_last_received(self) -> dict[int, float]:
        """When each vessel's latest uplink lane block arrived (vessels on the lane)."""
        async with self.db.transaction() as tx:
            return await self.lane.last_received(tx)

    async def lane_vessels(self, since: float) -> Sequence[int]:
        """Vessels whose uplink lane blocks arrived since ``since``."""
        async with self.db.transaction() as tx:
            return await self.lane.vessels_since(tx, since)

    async def queue_lane_notes(
        self, vessel_id: int, union: int, blocks: Sequence[bytes], now: float, cap: int
    ) -> int:
        """Queue a union's blocks (a case note sealed to a reporter) on the vessel's
        downlink lane, all or none; how many were new (blocks queued before count once).

        Raises :class:`~shore.store.errors.LaneQueueFull` when the union's waiting blocks
        for the vessel would go over ``cap``, and
        :class:`~shore.store.errors.RegistryError` for a vessel that is not registered."""
        async with self.db.transaction() as tx:
            await self.links.lock(tx, vessel_id)
            fresh = len(set(blocks)) - await self.lane.known_blocks(tx, vessel_id, blocks)
            waiting = await self.lane.waiting(tx, vessel_id, union)
            if waiting + fresh > cap:
                raise LaneQueueFull(vessel_id, union, waiting, fresh, cap)
            return await self.lane.queue_down(tx, vessel_id, union, blocks, now)

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
        """Queue the vessel's downlink lane blocks of every period up to ``last_period``
        not queued yet (at most the last ``catch_up`` of them), in ONE transaction:
        exactly ``blocks_per_period`` ``LaneBlock`` envelopes per period, the union blocks
        waiting longest first, cover (``cover()``) for the rest.

        Once per (vessel, period), also across restarts and several workers: the vessel's
        last queued period is read and moved under its link lock, and a period whose
        first block is in the downlink queue already is skipped."""
        async with self.db.transaction() as tx:
            await self.links.lock(tx, vessel_id)
            last = await self.lane.last_down_period(tx, vessel_id)
            if last is None or last > last_period:
                # new on the lane: from the period just over; or the period moved back (a
                # longer [downlink] slot_period_s, or the clock): go on from now, skipping
                # what the queue holds already
                first = last_period
            else:
                first = max(last + 1, last_period - catch_up + 1)
            periods = notes = 0
            for period in range(first, last_period + 1):
                if await self.downlink_queue.has_item(tx, vessel_id, lane_item_key(period, 0)):
                    continue
                waiting = await self.lane.next_down(tx, vessel_id, blocks_per_period)
                minutes = (period + 1) * period_s // 60
                for index in range(blocks_per_period):
                    block = waiting[index].block if index < len(waiting) else cover()
                    envelope = LaneBlock(
                        period=period, index=index, block=block, written_minutes=minutes
                    )
                    key = lane_item_key(period, index)
                    await self.downlink_queue.queue(tx, vessel_id, envelope, now, key)
                    if index < len(waiting):
                        await self.lane.carried(tx, waiting[index].entry_id, period, index)
                        notes += 1
                periods += 1
            if last is None or last != last_period:
                await self.lane.set_last_down_period(tx, vessel_id, last_period)
            left = await self.lane.down_waiting(tx, vessel_id)
        return LanePeriodsQueued(periods, notes, left)
