"""Units of work of retention (issue 23): a family message's content is purged some time
after its delivery ended, and what the relay's files still hold of it is erased.

What goes: the text, the quick-message code and the speech of family messages whose
delivery ended (delivered, or failed for good) before the retention; and the bytes of
downlink batches the vessel acknowledged before it, with the text of the families'
replies they carried. What stays: every other column of the message (vessel, crew number,
contact number, times, state, sizes, the text bytes the compliance report counts), its
delivery's record, each downlink item's envelope without its text (who a reply was for,
when it reached the vessel) and each batch's size, and the transparency log, whose leaves
never held content. Grievance reports and case notes are sealed to their union or the
reporter and the relay cannot read them; they are not purged here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shore.store.parts import StoreParts

#: Messages purged by one transaction (the next call takes the rest).
PURGE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class PurgedVessel:
    """One vessel's share of a purge: how many messages, their numbers' range, bytes."""

    messages: int
    first_seq: int
    last_seq: int
    content_bytes: int


@dataclass(frozen=True, slots=True)
class Purge:
    """What one purge did (ids and sizes only: fit for a log line)."""

    #: Content of deliveries that ended before this moment was purged.
    ended_before: float
    messages: int
    content_bytes: int
    by_vessel: dict[int, PurgedVessel] = field(default_factory=dict)
    #: Acknowledged downlink batches purged (with their replies' text), and their bytes.
    downlink_batches: int = 0
    downlink_bytes: int = 0
    #: Per vessel: (batches, first downlink_seq, last, bytes) as a PurgedVessel.
    downlink_by_vessel: dict[int, PurgedVessel] = field(default_factory=dict)

    @property
    def anything(self) -> bool:
        """Whether this purge removed anything."""
        return bool(self.messages or self.downlink_batches)


class RetentionUnits(StoreParts):
    """Retention's units of work."""

    async def purge_content(self, now: float, retention_s: float) -> Purge:
        """Purge, in ONE transaction, the content of up to :data:`PURGE_LIMIT` family
        messages whose delivery ended more than ``retention_s`` before ``now`` (oldest
        first). Call :meth:`erase_purged_content` afterwards so the files forget it too."""
        if not retention_s > 0:
            raise ValueError(f"the retention must be positive, not {retention_s}")
        before = now - retention_s
        async with self.db.transaction() as tx:
            keys = await self.uplink.content_ended_before(tx, before, PURGE_LIMIT)
            purged = await self.uplink.purge_content(tx, keys, now)
            batches = await self.downlink_queue.purge_acknowledged(tx, before, now, PURGE_LIMIT)
        return Purge(
            before,
            len(purged),
            sum(content for _, _, content in purged),
            _by_vessel(purged),
            len(batches),
            sum(size for _, _, size in batches),
            _by_vessel(batches),
        )

    async def erase_purged_content(self) -> None:
        """Make what the backend can of purged content unrecoverable from its files
        (:meth:`shore.store.database.Database.erase_freed`: on SQLite, nothing is left in
        the file or its WAL; on PostgreSQL, see its limits there)."""
        await self.db.erase_freed(("messages", "downlink_batches", "downlink_items"))


def _by_vessel(purged: list[tuple[int, int, int]]) -> dict[int, PurgedVessel]:
    """(vessel, number, bytes) rows summed per vessel."""
    by_vessel: dict[int, PurgedVessel] = {}
    for vessel_id, seq, size in purged:
        seen = by_vessel.get(vessel_id)
        if seen is None:
            by_vessel[vessel_id] = PurgedVessel(1, seq, seq, size)
        else:
            by_vessel[vessel_id] = PurgedVessel(
                seen.messages + 1,
                min(seen.first_seq, seq),
                max(seen.last_seq, seq),
                seen.content_bytes + size,
            )
    return by_vessel
