"""SBD fragments repository: pieces of payloads a vessel sent over SBD, until all are in.

Table ``sbd_fragments`` (migration set ``sbd_fragments``): one row per fragment held,
keyed by (vessel, payload kind, tag, count, index) as :mod:`protocol.fragments` names a
piece, with when its payload was first seen. A payload in progress is the rows sharing
(vessel, kind, tag, count); it survives a relay restart, so a vessel whose relay restarted
mid-message need not resend what already came (each SBD message costs credits).

Nothing here is trusted: the pieces are authenticated only when the whole payload is
(the batch's signature and replay window, after reassembly). The units of work
(:mod:`shore.store.sbd_units`) bound the rows per vessel (:class:`protocol.fragments.
ReassemblyLimits`), purge them when too old, and delete a payload's rows once it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from shore.store.database import Tx
from shore.store.migrations import Migration, MigrationSet

MIGRATIONS = MigrationSet(
    "sbd_fragments",
    (
        Migration(
            "0001_sbd_fragments",
            """
        CREATE TABLE sbd_fragments (
            fragment_id {serial_pk},
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            payload_kind {int} NOT NULL,
            tag {blob} NOT NULL,
            piece_count {int} NOT NULL,
            piece_index {int} NOT NULL,
            piece {blob} NOT NULL,
            first_seen {real} NOT NULL,
            UNIQUE (vessel_id, payload_kind, tag, piece_count, piece_index)
        );
        CREATE INDEX sbd_fragments_first_seen ON sbd_fragments (first_seen);
        """,
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class PartialKey:
    """Names one payload in progress of a vessel (as its fragments name it)."""

    kind: int
    tag: bytes
    count: int


@dataclass(frozen=True, slots=True)
class Partial:
    """A payload in progress: its pieces held and when it was first seen."""

    key: PartialKey
    first_seen: float
    held_bytes: int
    pieces: int


_KEY = "vessel_id = $1 AND payload_kind = $2 AND tag = $3 AND piece_count = $4"


class SbdFragments:
    """The fragments' SQL; every method runs in the transaction it is given."""

    async def pieces(
        self, tx: Tx, vessel_id: int, key: PartialKey
    ) -> tuple[dict[int, bytes], float]:
        """The pieces held of one payload (index -> piece) and when it was first seen
        (``inf`` when nothing is held)."""
        rows = await tx.fetch(
            f"SELECT piece_index, piece, first_seen FROM sbd_fragments WHERE {_KEY}",
            vessel_id,
            key.kind,
            key.tag,
            key.count,
        )
        first_seen = min((float(r[2]) for r in rows), default=float("inf"))
        return {int(r[0]): bytes(r[1]) for r in rows}, first_seen

    async def put(
        self, tx: Tx, vessel_id: int, key: PartialKey, index: int, piece: bytes, first_seen: float
    ) -> None:
        """Hold one piece (a piece already held under its index is left as it is);
        ``first_seen`` is its payload's (the same on every piece of it)."""
        await tx.execute(
            "INSERT INTO sbd_fragments (vessel_id, payload_kind, tag, piece_count, piece_index, "
            "piece, first_seen) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            vessel_id,
            key.kind,
            key.tag,
            key.count,
            index,
            piece,
            float(first_seen),
        )

    async def drop(self, tx: Tx, vessel_id: int, key: PartialKey) -> None:
        """Forget one payload in progress (kept, contradicted, garbled or evicted)."""
        await tx.execute(
            f"DELETE FROM sbd_fragments WHERE {_KEY}", vessel_id, key.kind, key.tag, key.count
        )

    async def partials(self, tx: Tx, vessel_id: int) -> list[Partial]:
        """A vessel's payloads in progress, oldest first."""
        rows = await tx.fetch(
            "SELECT payload_kind, tag, piece_count, MIN(first_seen), SUM(LENGTH(piece)), "
            "COUNT(*) FROM sbd_fragments WHERE vessel_id = $1 "
            "GROUP BY payload_kind, tag, piece_count ORDER BY MIN(first_seen), MIN(fragment_id)",
            vessel_id,
        )
        return [
            Partial(
                PartialKey(int(r[0]), bytes(r[1]), int(r[2])), float(r[3]), int(r[4]), int(r[5])
            )
            for r in rows
        ]

    async def purge_older(self, tx: Tx, before: float) -> int:
        """Drop every vessel's payloads in progress first seen before ``before``; how many.

        Every piece of a payload carries the payload's ``first_seen``, so the rows go by
        that alone: a piece another worker adds meanwhile (a payload started anew, seen
        now) is never caught by this purge."""
        row = await tx.fetchrow(
            "SELECT COUNT(*) FROM (SELECT DISTINCT vessel_id, payload_kind, tag, piece_count "
            "FROM sbd_fragments WHERE first_seen < $1) AS expired",
            float(before),
        )
        expired = int(row[0]) if row is not None else 0
        if expired:
            await tx.execute("DELETE FROM sbd_fragments WHERE first_seen < $1", float(before))
        return expired
