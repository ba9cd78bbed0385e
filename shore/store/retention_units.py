"""Units of work of retention (issue 23): a family message's content is purged some time
after its delivery ended, and what the relay's files still hold of it is erased.

What goes: the text, the quick-message code and the speech of family messages whose
delivery ended (delivered, or failed for good) before the retention. What stays: every
other column of the message (vessel, crew number, contact number, times, state, sizes,
the text bytes the compliance report counts), its delivery's record, and the
transparency log, whose leaves never held content. Grievance reports are sealed to their
union and the relay cannot read them; they are not purged here.
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
        by_vessel: dict[int, PurgedVessel] = {}
        for vessel_id, seq, content_bytes in purged:
            seen = by_vessel.get(vessel_id)
            if seen is None:
                by_vessel[vessel_id] = PurgedVessel(1, seq, seq, content_bytes)
            else:
                by_vessel[vessel_id] = PurgedVessel(
                    seen.messages + 1,
                    min(seen.first_seq, seq),
                    max(seen.last_seq, seq),
                    seen.content_bytes + content_bytes,
                )
        return Purge(before, len(purged), sum(content for _, _, content in purged), by_vessel)

    async def erase_purged_content(self) -> None:
        """Make what the backend can of purged content unrecoverable from its files
        (:meth:`shore.store.database.Database.erase_freed`: on SQLite, nothing is left in
        the file or its WAL; on PostgreSQL, see its limits there)."""
        await self.db.erase_freed(("messages",))
