"""Escalations repository: a union's case passed on to its second organisation.

Table ``union_escalations`` (migration set ``escalations``): one row per (from union, to
union, case number), so a union that posts the same escalation again changes nothing. The
relay never opens a package: it is sealed on the first union's machine to the second
organisation's key (the report itself only if the reporter agreed at filing, else a notice
without content), and handed to the second organisation by id.
"""

from __future__ import annotations

from shore.store.database import Tx
from shore.store.migrations import Migration, MigrationSet

MIGRATIONS = MigrationSet(
    "escalations",
    (
        Migration(
            "0001_union_escalations",
            """
        CREATE TABLE union_escalations (
            escalation_id {serial_pk},
            from_union {int} NOT NULL,
            to_union {int} NOT NULL,
            case_number TEXT NOT NULL,
            package {blob} NOT NULL,
            received_at {real} NOT NULL,
            UNIQUE (from_union, to_union, case_number)
        );
        CREATE INDEX union_escalations_to ON union_escalations (to_union, escalation_id);
        """,
        ),
    ),
)


class Escalations:
    """The escalations' SQL; every method runs in the transaction it is given."""

    async def put(
        self, tx: Tx, from_union: int, to_union: int, case_number: str, package: bytes, now: float
    ) -> None:
        """Keep an escalation for ``to_union`` (once per from, to and case)."""
        await tx.execute(
            "INSERT INTO union_escalations (from_union, to_union, case_number, package, "
            "received_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            from_union,
            to_union,
            case_number,
            package,
            float(now),
        )

    async def for_union(
        self, tx: Tx, to_union: int, after: int, limit: int
    ) -> list[tuple[int, int, str, bytes, float]]:
        """(id, from union, case number, package, received at) for ``to_union``, by id."""
        rows = await tx.fetch(
            "SELECT escalation_id, from_union, case_number, package, received_at "
            "FROM union_escalations WHERE to_union = $1 AND escalation_id > $2 "
            "ORDER BY escalation_id LIMIT $3",
            to_union,
            after,
            limit,
        )
        return [(int(r[0]), int(r[1]), str(r[2]), bytes(r[3]), float(r[4])) for r in rows]
