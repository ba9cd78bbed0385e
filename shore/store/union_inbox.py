"""Union inbox repository: sealed grievance reports handed to their union.

Table ``union_inbox`` (migration set ``union_inbox``): one row per report the delivery
worker handed over, keyed by the report's idempotency key (vessel, message_seq), so a
repeated hand-over changes nothing. The relay never opens a report: it keeps the sealed
bytes as they came.
"""

from __future__ import annotations

from shore.store.database import Tx
from shore.store.migrations import Migration, MigrationSet

MIGRATIONS = MigrationSet(
    "union_inbox",
    (
        Migration(
            "0001_union_inbox",
            """
        CREATE TABLE union_inbox (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            union_id {int} NOT NULL,
            sealed {blob} NOT NULL,
            received_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, message_seq)
        );
        """,
        ),
    ),
)


class UnionInbox:
    """The union inbox's SQL; every method runs in the transaction it is given."""

    async def put(
        self, tx: Tx, union: int, vessel_id: int, message_seq: int, sealed: bytes, now: float
    ) -> None:
        """Put a sealed report in the union's inbox (once per vessel and sequence)."""
        await tx.execute(
            "INSERT INTO union_inbox (vessel_id, message_seq, union_id, sealed, received_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            vessel_id,
            message_seq,
            union,
            sealed,
            float(now),
        )

    async def reports(self, tx: Tx, union: int) -> list[tuple[int, int, bytes]]:
        """(vessel, message_seq, sealed) of the union's reports, in order of arrival."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, sealed FROM union_inbox WHERE union_id = $1 "
            "ORDER BY received_at, vessel_id, message_seq",
            union,
        )
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]
