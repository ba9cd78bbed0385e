"""Refusals repository: what the relay refused, kept for the operator and told to vessels.

Tables (migration set ``refusals``):

- ``quarantine``: bytes refused (forged, malformed, unknown vessel, refused for good...),
  with the reason; the same bytes again make no second entry, they count up;
- ``uplink_rejections``: authentic batches refused for good, told to the vessel in
  ``BatchAck.rejected`` until it acknowledges a downlink batch that carried them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import Reason
from shore.store.database import Tx, optional_int
from shore.store.migrations import Migration, MigrationSet

MIGRATIONS = MigrationSet(
    "refusals",
    (
        Migration(
            "0001_quarantine_and_rejections",
            """
        CREATE TABLE quarantine (
            quarantine_id {serial_pk},
            sha256 {blob} NOT NULL UNIQUE,
            raw {blob} NOT NULL,
            link_bytes {int} NOT NULL,
            reason {int} NOT NULL,
            message TEXT NOT NULL,
            vessel_id {int},
            batch_seq {int},
            first_at {real} NOT NULL,
            last_at {real} NOT NULL,
            times {int} NOT NULL DEFAULT 1
        );
        CREATE TABLE uplink_rejections (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            batch_seq {int} NOT NULL,
            reason {int} NOT NULL,
            carried_in {int},
            PRIMARY KEY (vessel_id, batch_seq)
        );
        """,
        ),
    ),
)

#: Raw bytes kept of a refused payload (an oversized one is cut; its hash and size stay).
QUARANTINE_KEEP_BYTES = 64 * 1024
#: Most refusals told in one acknowledgement.
MAX_REJECTIONS_TOLD = 500


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """Bytes the relay refused, kept for the operator (same bytes: one entry, counted)."""

    quarantine_id: int
    sha256: bytes
    raw: bytes
    link_bytes: int
    reason: Reason
    message: str
    vessel_id: int | None
    batch_seq: int | None
    first_at: float
    last_at: float
    times: int


@dataclass(frozen=True, slots=True)
class QuarantinedPayload:
    """A vessel's quarantine entry as the operator sees it (the reason as its code: an
    older or newer relay's code still shows)."""

    quarantine_id: int
    reason_code: int
    message: str
    batch_seq: int | None
    link_bytes: int
    first_at: float
    last_at: float
    times: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """An authentic batch refused for good, and the downlink batch that last told it."""

    batch_seq: int
    reason: int
    carried_in: int | None


class Refusals:
    """The refusals' SQL; every method runs in the transaction it is given."""

    async def reject(self, tx: Tx, vessel_id: int, batch_seq: int, reason: Reason) -> bool:
        """Refuse a batch for good: told to the vessel with the next acknowledgement.
        Whether this is news (False: it was refused before and keeps its first reason)."""
        inserted = await tx.fetchrow(
            "INSERT INTO uplink_rejections (vessel_id, batch_seq, reason) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING batch_seq",
            vessel_id,
            batch_seq,
            int(reason),
        )
        return inserted is not None

    async def tell_rejection_again(self, tx: Tx, vessel_id: int, batch_seq: int) -> None:
        """The vessel sent a refused batch again: tell it again (if it was refused)."""
        await tx.execute(
            "UPDATE uplink_rejections SET carried_in = NULL "
            "WHERE vessel_id = $1 AND batch_seq = $2",
            vessel_id,
            batch_seq,
        )

    async def rejections_to_tell(
        self, tx: Tx, vessel_id: int, unacknowledged: Sequence[int]
    ) -> list[Rejection]:
        """The refusals the vessel has not acknowledged hearing: never told, or told in one
        of the ``unacknowledged`` downlink batches; at most :data:`MAX_REJECTIONS_TOLD`,
        by batch number."""
        open_seqs = set(unacknowledged)
        rows = await tx.fetch(
            "SELECT batch_seq, reason, carried_in FROM uplink_rejections WHERE vessel_id = $1 "
            "AND (carried_in IS NULL OR carried_in >= $2) ORDER BY batch_seq",
            vessel_id,
            min(open_seqs, default=2**62),
        )
        found = [
            Rejection(int(r[0]), int(r[1]), optional_int(r[2]))
            for r in rows
            if r[2] is None or int(r[2]) in open_seqs
        ]
        return found[:MAX_REJECTIONS_TOLD]

    async def rejections_told(
        self, tx: Tx, vessel_id: int, batch_seqs: Sequence[int], downlink_seq: int
    ) -> None:
        """These refusals travel in downlink batch ``downlink_seq``."""
        await tx.executemany(
            "UPDATE uplink_rejections SET carried_in = $3 WHERE vessel_id = $1 AND batch_seq = $2",
            [(vessel_id, seq, downlink_seq) for seq in batch_seqs],
        )

    # quarantine ------------------------------------------------------------------------------

    async def quarantine(
        self,
        tx: Tx,
        data: bytes,
        reason: Reason,
        message: str,
        now: float,
        vessel_id: int | None,
        batch_seq: int | None,
    ) -> None:
        """Keep refused bytes for the operator (the same bytes again only count up)."""
        await tx.execute(
            "INSERT INTO quarantine (sha256, raw, link_bytes, reason, message, vessel_id, "
            "batch_seq, first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) "
            "ON CONFLICT (sha256) DO UPDATE SET times = quarantine.times + 1, "
            "last_at = excluded.last_at",
            hashlib.sha256(data).digest(),
            data[:QUARANTINE_KEEP_BYTES],
            len(data),
            int(reason),
            message[:1000],
            vessel_id,
            batch_seq,
            float(now),
        )

    async def quarantined(self, tx: Tx, limit: int) -> list[QuarantineEntry]:
        """The most recent quarantine entries, newest first."""
        rows = await tx.fetch(
            "SELECT quarantine_id, sha256, raw, link_bytes, reason, message, vessel_id, "
            "batch_seq, first_at, last_at, times FROM quarantine "
            "ORDER BY quarantine_id DESC LIMIT $1",
            limit,
        )
        return [
            QuarantineEntry(
                int(r[0]),
                bytes(r[1]),
                bytes(r[2]),
                int(r[3]),
                Reason(int(r[4])),
                str(r[5]),
                optional_int(r[6]),
                optional_int(r[7]),
                float(r[8]),
                float(r[9]),
                int(r[10]),
            )
            for r in rows
        ]

    async def vessel_quarantine(
        self, tx: Tx, vessel_id: int, limit: int
    ) -> list[QuarantinedPayload]:
        """A vessel's quarantine entries, the most recently seen first (without the bytes)."""
        rows = await tx.fetch(
            "SELECT quarantine_id, reason, message, batch_seq, link_bytes, first_at, "
            "last_at, times FROM quarantine WHERE vessel_id = $1 "
            "ORDER BY last_at DESC LIMIT $2",
            vessel_id,
            limit,
        )
        return [
            QuarantinedPayload(
                int(r[0]),
                int(r[1]),
                str(r[2]),
                optional_int(r[3]),
                int(r[4]),
                float(r[5]),
                float(r[6]),
                int(r[7]),
            )
            for r in rows
        ]

    async def quarantine_counts(self, tx: Tx) -> tuple[int, dict[int, int]]:
        """Quarantine entries in all, and per vessel named."""
        rows = await tx.fetch(
            "SELECT vessel_id, COUNT(*) FROM quarantine GROUP BY vessel_id",
        )
        per_vessel = {int(r[0]): int(r[1]) for r in rows if r[0] is not None}
        return sum(int(r[1]) for r in rows), per_vessel

    async def quarantine_counts_of(self, tx: Tx, ids: tuple[int, int]) -> dict[int, int]:
        """Quarantine entries per vessel, for the vessels with ids in the closed range."""
        rows = await tx.fetch(
            "SELECT vessel_id, COUNT(*) FROM quarantine WHERE vessel_id >= $1 "
            "AND vessel_id <= $2 GROUP BY vessel_id",
            *ids,
        )
        return {int(r[0]): int(r[1]) for r in rows}
