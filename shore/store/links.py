"""Vessel links repository: each vessel's link state, the row its transactions lock first.

Table ``vessel_link`` (migration set ``vessel_links``), one row per registered vessel:

- the **replay window**: the uplink batch numbers accepted (or refused for good), as a
  cumulative ``up_to`` plus ranges above it; every ``BatchAck`` is made from it;
- **what the shore owes** the vessel: no acknowledgement, one with the next downlink batch
  (only acknowledgement-only batches came), or one at once; the changes are
  :data:`protocol.exchange.SHORE_TRANSITIONS`, the same table the pure
  :class:`~protocol.exchange.ShoreExchange` runs on (stored as 0, 1, 2);
- the next downlink batch number and the next reply number;
- when the vessel was last heard from (its last authentic batch).

Per-vessel serialisation: every unit of work that changes a vessel's link state first
locks its row with :meth:`VesselLinks.lock` (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so two relay workers never
interleave the ingest of one vessel's batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.exchange import SHORE_TRANSITIONS, ShoreInput, ShoreState
from protocol.replay import RangeSet
from shore.store.database import Dialect, Tx, optional_float
from shore.store.errors import RegistryError
from shore.store.migrations import Migration, MigrationSet

MIGRATIONS = MigrationSet(
    "vessel_links",
    (
        Migration(
            "0001_vessel_link",
            """
        CREATE TABLE vessel_link (
            vessel_id {int} PRIMARY KEY REFERENCES vessels (vessel_id),
            uplink_up_to {int} NOT NULL DEFAULT 0,
            uplink_ranges TEXT NOT NULL DEFAULT '',
            next_downlink_seq {int} NOT NULL DEFAULT 1,
            next_reply_seq {int} NOT NULL DEFAULT 1,
            ack_pending {int} NOT NULL DEFAULT 0,
            last_heard_at {real}
        );
        """,
        ),
    ),
)

#: What the shore owes, as stored in ``vessel_link.ack_pending``.
ACK_LEVELS: dict[ShoreState, int] = {
    ShoreState.NOTHING_OWED: 0,
    ShoreState.ACK_OWED: 1,
    ShoreState.ACK_DUE: 2,
}
_ACK_STATES = {level: state for state, level in ACK_LEVELS.items()}


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """Uplink batch numbers accepted from a vessel: all up to ``up_to``, plus ``ranges``."""

    up_to: int
    ranges: tuple[tuple[int, int], ...] = ()

    def covers(self, seq: int) -> bool:
        """Whether batch ``seq`` was accepted (or refused for good)."""
        return seq <= self.up_to or any(a <= seq <= b for a, b in self.ranges)


def add_to_window(window: ReplayWindow, seq: int) -> ReplayWindow:
    """The window with ``seq`` added, ranges merged into ``up_to`` where they touch it."""
    if window.covers(seq):
        return window
    seen = RangeSet(window.up_to, window.ranges)
    seen.add(seq)
    return ReplayWindow(seen.up_to, seen.ranges)


def format_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    """Ranges as stored: ``"5-7,9-9"``."""
    return ",".join(f"{a}-{b}" for a, b in ranges)


def parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """Ranges from :func:`format_ranges`."""
    if not text:
        return ()
    pairs = (part.split("-") for part in text.split(","))
    return tuple((int(a), int(b)) for a, b in pairs)


@dataclass(frozen=True, slots=True)
class LinkState:
    """One vessel's link state, as locked by a transaction."""

    vessel_id: int
    window: ReplayWindow
    next_downlink_seq: int
    next_reply_seq: int
    owed: ShoreState
    last_heard_at: float | None


class VesselLinks:
    """The link state's SQL; every method runs in the transaction it is given."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    async def open(self, tx: Tx, vessel_id: int) -> None:
        """The link state of a newly registered vessel (nothing seen, nothing owed)."""
        await tx.execute("INSERT INTO vessel_link (vessel_id) VALUES ($1)", vessel_id)

    async def lock(self, tx: Tx, vessel_id: int) -> LinkState:
        """The vessel's link state, locked until ``tx`` ends; :class:`RegistryError` for a
        vessel that is not registered."""
        row = await tx.fetchrow(
            "SELECT uplink_up_to, uplink_ranges, next_downlink_seq, next_reply_seq, ack_pending, "
            f"last_heard_at FROM vessel_link WHERE vessel_id = $1{self.dialect.for_update}",
            vessel_id,
        )
        if row is None:
            raise RegistryError(f"vessel {vessel_id} is not registered")
        return LinkState(
            vessel_id,
            ReplayWindow(int(row[0]), parse_ranges(row[1])),
            int(row[2]),
            int(row[3]),
            _ACK_STATES[int(row[4])],
            optional_float(row[5]),
        )

    async def window(self, tx: Tx, vessel_id: int) -> ReplayWindow:
        """The uplink batches accepted from a vessel (none for an unknown vessel)."""
        row = await tx.fetchrow(
            "SELECT uplink_up_to, uplink_ranges FROM vessel_link WHERE vessel_id = $1",
            vessel_id,
        )
        return ReplayWindow(0) if row is None else ReplayWindow(int(row[0]), parse_ranges(row[1]))

    async def see_batch(self, tx: Tx, link: LinkState, batch_seq: int) -> None:
        """Add ``batch_seq`` to the replay window (stored, or refused for good)."""
        window = add_to_window(link.window, batch_seq)
        await tx.execute(
            "UPDATE vessel_link SET uplink_up_to = $2, uplink_ranges = $3 WHERE vessel_id = $1",
            link.vessel_id,
            window.up_to,
            format_ranges(window.ranges),
        )

    async def heard(self, tx: Tx, link: LinkState, event: ShoreInput, now: float) -> None:
        """The vessel was heard from at ``now`` with an uplink batch that was stored
        (``STORED`` / ``STORED_ACK_ONLY``) or refused (``REJECTED``): what the shore owes
        changes by :data:`~protocol.exchange.SHORE_TRANSITIONS` from ``link.owed``."""
        owed = SHORE_TRANSITIONS[(link.owed, event)]
        await tx.execute(
            "UPDATE vessel_link SET ack_pending = $2, last_heard_at = $3 WHERE vessel_id = $1",
            link.vessel_id,
            ACK_LEVELS[owed],
            float(now),
        )

    async def downlink_batch_made(self, tx: Tx, link: LinkState, carried_ack: bool) -> None:
        """A downlink batch numbered ``link.next_downlink_seq`` was made (carrying the
        acknowledgement owed, if ``carried_ack``)."""
        owed = SHORE_TRANSITIONS[(link.owed, ShoreInput.ACK_SENT)] if carried_ack else link.owed
        await tx.execute(
            "UPDATE vessel_link SET next_downlink_seq = $2, ack_pending = $3 WHERE vessel_id = $1",
            link.vessel_id,
            link.next_downlink_seq + 1,
            ACK_LEVELS[owed],
        )

    async def take_reply_seq(self, tx: Tx, link: LinkState) -> int:
        """The next reply number of the (locked) vessel, used up."""
        await tx.execute(
            "UPDATE vessel_link SET next_reply_seq = $2 WHERE vessel_id = $1",
            link.vessel_id,
            link.next_reply_seq + 1,
        )
        return link.next_reply_seq

    async def owing_ack_now(self, tx: Tx) -> list[int]:
        """Vessels owed an acknowledgement at once."""
        rows = await tx.fetch(
            "SELECT vessel_id FROM vessel_link WHERE ack_pending >= $1",
            ACK_LEVELS[ShoreState.ACK_DUE],
        )
        return [int(r[0]) for r in rows]

    async def last_heard(
        self, tx: Tx, vessel_id: int | None = None, ids: tuple[int, int] | None = None
    ) -> dict[int, float | None]:
        """When each vessel (or the one, or those with ids in the closed range ``ids``) was
        last heard from (None: never)."""
        if ids is not None:
            rows = await tx.fetch(
                "SELECT vessel_id, last_heard_at FROM vessel_link "
                "WHERE vessel_id >= $1 AND vessel_id <= $2",
                *ids,
            )
        elif vessel_id is None:
            rows = await tx.fetch("SELECT vessel_id, last_heard_at FROM vessel_link")
        else:
            rows = await tx.fetch(
                "SELECT vessel_id, last_heard_at FROM vessel_link WHERE vessel_id = $1",
                vessel_id,
            )
        return {int(r[0]): optional_float(r[1]) for r in rows}
