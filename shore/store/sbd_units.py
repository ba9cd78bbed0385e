"""Units of work of SBD reassembly: a vessel's fragments held in the store until its
payload is whole and kept, so a relay restart loses none of them (``shore.sbd``).

Each fragment is one transaction that first locks the vessel's link row (two relay
workers never interleave one vessel's fragments), purges payloads in progress older than
the limits allow (every vessel's), and then does what :class:`protocol.fragments.
Reassembler` does in memory, by the same rules (:func:`~protocol.fragments.join_fragments`)
and the same :class:`~protocol.fragments.ReassemblyLimits`, per vessel. A payload made
whole stays held until :meth:`SbdUnits.sbd_payload_kept` (the ingest kept it): if the
ingest fails, the provider's retry of any of its fragments gives it again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocol.errors import MalformedBatch
from protocol.fragments import (
    LinkFragment,
    Reassembled,
    ReassemblyLimits,
    join_fragments,
    payload_tag,
)
from shore.store.database import Tx
from shore.store.parts import StoreParts
from shore.store.sbd_fragments import PartialKey


class FragmentOutcome(enum.Enum):
    """What became of one fragment."""

    #: Held; its payload still lacks pieces.
    HELD = "held"
    #: Its payload is whole (now, or again: not yet kept).
    COMPLETE = "complete"
    #: The same piece was held already.
    DUPLICATE = "duplicate"
    #: Other bytes under an index held: the payload in progress is dropped.
    CONTRADICTED = "contradicted"
    #: The pieces do not hash to their tag: the payload in progress is dropped.
    GARBLED = "garbled"


@dataclass(frozen=True, slots=True)
class FragmentTaken:
    """One fragment's outcome, the whole payload when complete, and what was dropped to
    stay within the limits (payloads in progress expired, evicted)."""

    outcome: FragmentOutcome
    whole: Reassembled | None = None
    expired: int = 0
    evicted: int = 0


@dataclass(frozen=True, slots=True)
class HeldFragments:
    """A vessel's payloads in progress and the pieces and bytes they hold."""

    partials: int
    pieces: int
    held_bytes: int


def _key(kind: int, tag: bytes, count: int) -> PartialKey:
    return PartialKey(int(kind), bytes(tag), int(count))


class SbdUnits(StoreParts):
    """The SBD reassembly's units of work (``shore.sbd.SbdFragmentStore``)."""

    async def take_sbd_fragment(
        self, vessel_id: int, fragment: LinkFragment, now: float, limits: ReassemblyLimits
    ) -> FragmentTaken:
        """Hold one fragment of a registered vessel's payload; the payload when whole.

        :class:`~shore.store.errors.RegistryError` for a vessel that is not registered."""
        key = _key(fragment.kind, fragment.tag, fragment.count)
        async with self.db.transaction() as tx:
            await self.links.lock(tx, vessel_id)
            expired = await self.sbd_fragments.purge_older(tx, now - limits.max_age_s)
            pieces, first_seen = await self.sbd_fragments.pieces(tx, vessel_id, key)
            held = pieces.get(fragment.index)
            if held is not None and held != fragment.piece:
                await self.sbd_fragments.drop(tx, vessel_id, key)
                return FragmentTaken(FragmentOutcome.CONTRADICTED, expired=expired)
            if held is None:
                first_seen = first_seen if pieces else now  # one first_seen per payload
                await self.sbd_fragments.put(
                    tx, vessel_id, key, fragment.index, fragment.piece, first_seen
                )
                pieces[fragment.index] = fragment.piece
            if len(pieces) < fragment.count:
                if held is not None:
                    return FragmentTaken(FragmentOutcome.DUPLICATE, expired=expired)
                evicted = await self._bound(tx, vessel_id, limits)
                return FragmentTaken(FragmentOutcome.HELD, expired=expired, evicted=evicted)
            try:
                whole = join_fragments(fragment.kind, fragment.tag, pieces)
            except MalformedBatch:
                await self.sbd_fragments.drop(tx, vessel_id, key)
                return FragmentTaken(FragmentOutcome.GARBLED, expired=expired)
        return FragmentTaken(FragmentOutcome.COMPLETE, whole, expired=expired)

    async def sbd_payload_kept(self, vessel_id: int, whole: Reassembled) -> None:
        """The ingest kept ``whole``: its fragments are no longer held."""
        key = _key(whole.kind, payload_tag(whole.payload), whole.fragments)
        async with self.db.transaction() as tx:
            await self.sbd_fragments.drop(tx, vessel_id, key)

    async def sbd_fragments_held(self, vessel_id: int) -> HeldFragments:
        """What a vessel's payloads in progress hold (status, tests)."""
        async with self.db.transaction() as tx:
            partials = await self.sbd_fragments.partials(tx, vessel_id)
        return HeldFragments(
            len(partials), sum(p.pieces for p in partials), sum(p.held_bytes for p in partials)
        )

    async def _bound(self, tx: Tx, vessel_id: int, limits: ReassemblyLimits) -> int:
        """Drop the vessel's oldest payloads in progress until within ``limits``; how many."""
        partials = await self.sbd_fragments.partials(tx, vessel_id)
        held_bytes = sum(p.held_bytes for p in partials)
        evicted = 0
        for oldest in partials:
            if (
                len(partials) - evicted <= limits.max_partial
                and held_bytes <= limits.max_held_bytes
            ):
                break
            await self.sbd_fragments.drop(tx, vessel_id, oldest.key)
            held_bytes -= oldest.held_bytes
            evicted += 1
        return evicted
