"""Downlink repository: what waits to go down to vessels, and the batches that carry it.

Tables (migration set ``downlink``):

- ``downlink_items``: envelopes queued for a vessel (receipts, replies, case updates,
  downlink slot items), each at most once per ``dedupe`` key, until a batch carries it;
  ``urgent`` marks one that must not wait behind a batch in flight (an SOS's outcome);
- ``downlink_batches``: the signed downlink batches, byte-identical on every resend, until
  the vessel's ``BatchAck`` covers them;
- ``slot_notes``: union case notes waiting for the reporter's next downlink slot.

When a batch is resent is one rule, :func:`resend_due`, and when waiting items are put
into batches another, :func:`protocol.exchange.downlink_release_due` (the pure
:class:`~protocol.exchange.ShoreExchange` follows both): :meth:`DownlinkQueue.waiting`
and :meth:`DownlinkQueue.in_flight` give it what it weighs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocol.cbor import dumps, strict_loads
from protocol.envelopes import (
    BatchAck,
    Envelope,
    Kind,
    Reply,
    VoiceReply,
    from_skeleton,
    to_skeleton,
)
from protocol.errors import Reason
from protocol.exchange import downlink_resend_at
from shore.store.database import Row, Tx, insert_many, optional_float
from shore.store.migrations import Migration, MigrationSet

log = logging.getLogger(__name__)

MIGRATIONS = MigrationSet(
    "downlink",
    (
        Migration(
            "0001_downlink_queue",
            """
        CREATE TABLE downlink_items (
            item_id {serial_pk},
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            kind {int} NOT NULL,
            skeleton {blob} NOT NULL,
            text TEXT,
            dedupe TEXT,
            created_at {real} NOT NULL,
            downlink_seq {int},
            UNIQUE (vessel_id, dedupe)
        );
        CREATE INDEX downlink_items_pending ON downlink_items (vessel_id, item_id)
            WHERE downlink_seq IS NULL;
        CREATE TABLE downlink_batches (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            downlink_seq {int} NOT NULL,
            data {blob} NOT NULL,
            items {int} NOT NULL,
            made_at {real} NOT NULL,
            last_sent_at {real},
            send_count {int} NOT NULL DEFAULT 0,
            acked_at {real},
            PRIMARY KEY (vessel_id, downlink_seq)
        );
        CREATE INDEX downlink_batches_open ON downlink_batches (vessel_id, downlink_seq)
            WHERE acked_at IS NULL;
        """,
        ),
        Migration(
            "0002_slot_notes",
            """
        CREATE TABLE slot_notes (
            note_id {serial_pk},
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            crew {int} NOT NULL,
            sealed_note {blob} NOT NULL,
            queued_at {real} NOT NULL,
            carried_period {int}
        );
        CREATE INDEX slot_notes_waiting ON slot_notes (vessel_id, crew, note_id)
            WHERE carried_period IS NULL;
        """,
        ),
        Migration(
            "0003_urgent_items",
            "ALTER TABLE downlink_items ADD COLUMN urgent {int} NOT NULL DEFAULT 0",
        ),
        # Retention (issue 23): an acknowledged batch's bytes and its replies' text are
        # purged after the retention; ``link_bytes`` keeps the batch's size for the link
        # figures, ``purged_at`` says when.
        Migration(
            "0004_content_retention",
            """
        ALTER TABLE downlink_batches ADD COLUMN link_bytes {int};
        ALTER TABLE downlink_batches ADD COLUMN purged_at {real};
        CREATE INDEX downlink_batches_unpurged ON downlink_batches (acked_at)
            WHERE acked_at IS NOT NULL AND purged_at IS NULL
        """,
        ),
    ),
)

#: The skeleton key of a reply's crew number (read without its text, which may be purged).
_REPLY_CREW_KEY = next(spec.key for spec in Reply.FIELDS if spec.name == "crew")
#: The skeleton key of a spoken reply's Codec2 frames (purged with the replies' text).
_VOICE_FRAMES_KEY = next(spec.key for spec in VoiceReply.FIELDS if spec.name == "frames")

#: Encodes and signs one downlink batch: ``encode(downlink_seq, envelopes) -> bytes``.
DownlinkEncoder = Callable[[int, Sequence[Envelope]], bytes]
#: Makes one crew member's downlink slot item: ``make(crew, sealed_note or None)``.
SlotItemMaker = Callable[[int, "bytes | None"], Envelope]


@dataclass(frozen=True, slots=True)
class DownlinkBatch:
    """A signed downlink batch, resent byte-identical until the vessel acknowledges it."""

    vessel_id: int
    downlink_seq: int
    data: bytes
    items: int
    made_at: float
    last_sent_at: float | None
    send_count: int
    acked_at: float | None


@dataclass(frozen=True, slots=True)
class Waiting:
    """What waits for one vessel outside any batch."""

    items: int
    #: One of them must not wait behind a batch in flight (an SOS's outcome).
    urgent: bool


@dataclass(frozen=True, slots=True)
class QueuedItem:
    """An envelope waiting in the downlink queue."""

    item_id: int
    envelope: Envelope


def resend_due(
    last_sent_at: float | None,
    items: int,
    last_heard_at: float | None,
    now: float,
    resend_after_s: float,
    resend_max_s: float,
) -> bool:
    """Whether an unacknowledged batch (``items`` envelopes besides its ``BatchAck``) is to
    be (re)sent at ``now`` (the rule is :func:`protocol.exchange.downlink_resend_at`, which
    the pure :class:`~protocol.exchange.ShoreExchange` follows too).

    Never sent: at once. Sent, with items: after ``resend_after_s`` if the vessel was heard
    from since it was last sent (it had its chance), after ``resend_max_s`` in any case
    (the broker may have lost it). A batch that only acknowledges goes once: a lost one
    makes the vessel resend its batch, which is acknowledged again."""
    if last_sent_at is not None and items == 0:
        return False
    return now >= downlink_resend_at(last_sent_at, last_heard_at, resend_after_s, resend_max_s)


@dataclass(frozen=True, slots=True)
class OpenBatch:
    """An unacknowledged batch, without its bytes (what :func:`resend_due` needs)."""

    vessel_id: int
    downlink_seq: int
    items: int
    last_sent_at: float | None


def envelope_to_row(envelope: Envelope) -> tuple[int, bytes, str | None]:
    """(kind, skeleton CBOR, text) of an envelope, as the downlink queue keeps it."""
    return int(envelope.KIND), dumps(to_skeleton(envelope, 0)), envelope.text


def envelope_from_row(skeleton: bytes, text: str | None) -> Envelope:
    """The envelope that :func:`envelope_to_row` stored."""
    entry = strict_loads(skeleton, max_depth=5, max_length=4096, what="queued envelope")
    return from_skeleton(entry, 0, text)


def _reason_name(code: int) -> str:
    """A reason code's name (``LIMIT_EXCEEDED``), or the code if this version lacks it."""
    try:
        return Reason(code).name
    except ValueError:
        return f"reason {code}"


#: Items put in a batch by one statement (one parameter each, well under the backends'
#: limits on parameters).
_ITEMS_PER_STATEMENT = 1000

_BATCH_COLUMNS = "vessel_id, downlink_seq, data, items, made_at, last_sent_at, send_count, acked_at"


def _batch(r: Row) -> DownlinkBatch:
    return DownlinkBatch(
        int(r[0]),
        int(r[1]),
        bytes(r[2]),
        int(r[3]),
        float(r[4]),
        optional_float(r[5]),
        int(r[6]),
        optional_float(r[7]),
    )


class DownlinkQueue:
    """The downlink's SQL; every method runs in the transaction it is given."""

    # items --------------------------------------------------------------------------------

    async def replies_acknowledged_between(
        self, tx: Tx, vessel_id: int, start_s: float, end_s: float
    ) -> list[tuple[int, float]]:
        """(crew, acknowledged at) of the families' replies that reached the vessel in
        [start, end): their downlink batch was acknowledged then (the relay's clock)."""
        rows = await tx.fetch(
            "SELECT i.skeleton, b.acked_at FROM downlink_items i "
            "JOIN downlink_batches b ON b.vessel_id = i.vessel_id "
            "AND b.downlink_seq = i.downlink_seq WHERE i.vessel_id = $1 AND i.kind = $2 "
            "AND b.acked_at >= $3 AND b.acked_at < $4",
            vessel_id,
            int(Kind.REPLY),
            float(start_s),
            float(end_s),
        )
        found: list[tuple[int, float]] = []
        for skeleton, acked_at in rows:
            # the skeleton alone: the reply's text may have been purged (retention)
            entry = strict_loads(bytes(skeleton), max_depth=5, max_length=4096, what="reply")
            crew = entry.get(_REPLY_CREW_KEY) if isinstance(entry, dict) else None
            if isinstance(crew, int) and not isinstance(crew, bool):
                found.append((crew, float(acked_at)))
        return found

    async def purge_acknowledged(
        self, tx: Tx, before: float, now: float, limit: int
    ) -> list[tuple[int, int, int]]:
        """Purge, for up to ``limit`` downlink batches the vessel acknowledged before
        ``before``, the batch's bytes (its size kept as ``link_bytes``), the text of the
        families' replies it carried and the speech of their spoken replies; receipts,
        case updates and every id stay. Returns
        (vessel, downlink_seq, bytes purged) of the batches purged now."""
        rows = await tx.fetch(
            "SELECT vessel_id, downlink_seq, LENGTH(data) FROM downlink_batches "
            "WHERE acked_at IS NOT NULL AND purged_at IS NULL AND acked_at < $1 "
            "ORDER BY acked_at, vessel_id, downlink_seq LIMIT $2",
            float(before),
            limit,
        )
        purged = [(int(r[0]), int(r[1]), int(r[2])) for r in rows]
        await tx.executemany(
            "UPDATE downlink_batches SET link_bytes = $3, data = $4, purged_at = $5 "
            "WHERE vessel_id = $1 AND downlink_seq = $2 AND purged_at IS NULL",
            [(vessel, seq, size, b"", float(now)) for vessel, seq, size in purged],
        )
        await tx.executemany(
            "UPDATE downlink_items SET text = NULL WHERE vessel_id = $1 AND downlink_seq = $2 "
            "AND kind = $3",
            [(vessel, seq, int(Kind.REPLY)) for vessel, seq, _ in purged],
        )
        await self._purge_spoken(tx, purged)
        return purged

    async def _purge_spoken(self, tx: Tx, purged: Sequence[tuple[int, int, int]]) -> None:
        """Drop the speech (Codec2 frames) of the spoken replies these batches carried;
        their skeletons keep the ids, crew, contact, mode and duration."""
        for vessel, seq, _ in purged:
            rows = await tx.fetch(
                "SELECT item_id, skeleton FROM downlink_items "
                "WHERE vessel_id = $1 AND downlink_seq = $2 AND kind = $3",
                vessel,
                seq,
                int(Kind.VOICE_REPLY),
            )
            for item_id, skeleton in rows:
                entry = strict_loads(bytes(skeleton), max_depth=5, max_length=4096, what="reply")
                if isinstance(entry, dict) and _VOICE_FRAMES_KEY in entry:
                    del entry[_VOICE_FRAMES_KEY]
                    await tx.execute(
                        "UPDATE downlink_items SET skeleton = $2 WHERE item_id = $1",
                        int(item_id),
                        dumps(entry),
                    )

    async def queue(
        self,
        tx: Tx,
        vessel_id: int,
        envelope: Envelope,
        now: float,
        dedupe: str | None,
        *,
        urgent: bool = False,
    ) -> None:
        """Queue an envelope for the vessel (with ``dedupe``: at most once per key;
        ``urgent``: it must not wait behind a batch in flight)."""
        kind, skeleton, text = envelope_to_row(envelope)
        await tx.execute(
            "INSERT INTO downlink_items "
            "(vessel_id, kind, skeleton, text, dedupe, created_at, urgent) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            vessel_id,
            kind,
            skeleton,
            text,
            dedupe,
            float(now),
            1 if urgent else 0,
        )

    async def queue_many(
        self, tx: Tx, vessel_id: int, items: Sequence[tuple[Envelope, str | None]], now: float
    ) -> None:
        """:meth:`queue` for several envelopes ``(envelope, dedupe)``, in one statement."""
        rows = []
        for envelope, dedupe in items:
            kind, skeleton, text = envelope_to_row(envelope)
            rows.append((vessel_id, kind, skeleton, text, dedupe, float(now), 0))
        await insert_many(
            tx,
            "INSERT INTO downlink_items "
            "(vessel_id, kind, skeleton, text, dedupe, created_at, urgent)",
            rows,
            " ON CONFLICT DO NOTHING",
        )

    async def has_item(self, tx: Tx, vessel_id: int, dedupe: str) -> bool:
        """Whether an item with this ``dedupe`` key was ever queued for the vessel."""
        row = await tx.fetchrow(
            "SELECT 1 FROM downlink_items WHERE vessel_id = $1 AND dedupe = $2",
            vessel_id,
            dedupe,
        )
        return row is not None

    async def pending(self, tx: Tx, vessel_id: int, limit: int) -> list[QueuedItem]:
        """Up to ``limit`` items not yet in a batch, oldest first."""
        rows = await tx.fetch(
            "SELECT item_id, skeleton, text FROM downlink_items "
            "WHERE vessel_id = $1 AND downlink_seq IS NULL ORDER BY item_id LIMIT $2",
            vessel_id,
            limit,
        )
        return [QueuedItem(int(r[0]), envelope_from_row(bytes(r[1]), r[2])) for r in rows]

    async def waiting(self, tx: Tx, vessel_id: int | None = None) -> dict[int, Waiting]:
        """What waits outside any batch, per vessel with something waiting (or the one)."""
        query = (
            "SELECT vessel_id, COUNT(*), MAX(urgent) FROM downlink_items WHERE downlink_seq IS NULL"
        )
        if vessel_id is None:
            rows = await tx.fetch(query + " GROUP BY vessel_id")
        else:
            rows = await tx.fetch(query + " AND vessel_id = $1 GROUP BY vessel_id", vessel_id)
        return {int(r[0]): Waiting(int(r[1]), bool(r[2])) for r in rows}

    async def in_flight(self, tx: Tx, vessel_id: int) -> int:
        """The vessel's unacknowledged batches that carry items (an ack-only batch goes
        once and never counts)."""
        row = await tx.fetchrow(
            "SELECT COUNT(*) FROM downlink_batches "
            "WHERE vessel_id = $1 AND acked_at IS NULL AND items > 0",
            vessel_id,
        )
        assert row is not None
        return int(row[0])

    # batches ------------------------------------------------------------------------------

    async def add_batch(
        self,
        tx: Tx,
        vessel_id: int,
        downlink_seq: int,
        data: bytes,
        items: Sequence[QueuedItem],
        now: float,
    ) -> DownlinkBatch:
        """Keep a new signed batch and mark its items carried."""
        await tx.execute(
            "INSERT INTO downlink_batches (vessel_id, downlink_seq, data, items, made_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            vessel_id,
            downlink_seq,
            data,
            len(items),
            float(now),
        )
        ids = [item.item_id for item in items]
        for start in range(0, len(ids), _ITEMS_PER_STATEMENT):
            chunk = ids[start : start + _ITEMS_PER_STATEMENT]
            marks = ", ".join(f"${i + 2}" for i in range(len(chunk)))
            await tx.execute(
                f"UPDATE downlink_items SET downlink_seq = $1 WHERE item_id IN ({marks})",
                downlink_seq,
                *chunk,
            )
        return DownlinkBatch(vessel_id, downlink_seq, data, len(items), float(now), None, 0, None)

    async def apply_ack(self, tx: Tx, vessel_id: int, ack: BatchAck, now: float) -> int:
        """The vessel's ``BatchAck``: the open batches it covers are acknowledged; how many.
        A batch it refused for good (``rejected``) is covered too, and logged."""
        rows = await tx.fetch(
            "SELECT downlink_seq FROM downlink_batches WHERE vessel_id = $1 AND acked_at IS NULL",
            vessel_id,
        )
        covered = [(vessel_id, int(r[0]), float(now)) for r in rows if ack.covers(int(r[0]))]
        open_seqs = {int(r[0]) for r in rows}
        for seq, reason in ack.rejected or ():
            if seq in open_seqs:
                log.warning(
                    "vessel %d refused downlink batch %d for good: %s",
                    vessel_id,
                    seq,
                    _reason_name(reason),
                )
        await tx.executemany(
            "UPDATE downlink_batches SET acked_at = $3 WHERE vessel_id = $1 AND downlink_seq = $2",
            covered,
        )
        return len(covered)

    async def unacknowledged(self, tx: Tx, vessel_id: int) -> list[DownlinkBatch]:
        """The vessel's batches not acknowledged yet, by number."""
        rows = await tx.fetch(
            f"SELECT {_BATCH_COLUMNS} FROM downlink_batches WHERE vessel_id = $1 "
            "AND acked_at IS NULL ORDER BY downlink_seq",
            vessel_id,
        )
        return [_batch(r) for r in rows]

    async def open_batches(self, tx: Tx) -> list[OpenBatch]:
        """Every unacknowledged batch of the fleet, without its bytes."""
        rows = await tx.fetch(
            "SELECT vessel_id, downlink_seq, items, last_sent_at FROM downlink_batches "
            "WHERE acked_at IS NULL"
        )
        return [OpenBatch(int(r[0]), int(r[1]), int(r[2]), optional_float(r[3])) for r in rows]

    async def unacknowledged_seqs(self, tx: Tx, vessel_id: int) -> list[int]:
        """The numbers of the vessel's batches not acknowledged yet."""
        rows = await tx.fetch(
            "SELECT downlink_seq FROM downlink_batches WHERE vessel_id = $1 AND acked_at IS NULL",
            vessel_id,
        )
        return [int(r[0]) for r in rows]

    async def batches(self, tx: Tx, vessel_id: int) -> list[DownlinkBatch]:
        """All downlink batches of a vessel, by number."""
        rows = await tx.fetch(
            f"SELECT {_BATCH_COLUMNS} FROM downlink_batches WHERE vessel_id = $1 "
            "ORDER BY downlink_seq",
            vessel_id,
        )
        return [_batch(r) for r in rows]

    async def claim_send(self, tx: Tx, batch: DownlinkBatch, now: float) -> bool:
        """Take ``batch`` (as read in this transaction) to publish now: counted as sent at
        ``now`` unless another worker sent it since it was read (its send count moved);
        whether this worker took it. The row lock makes a second claimer wait and then
        see the new count, on either database."""
        rows = await tx.fetch(
            "UPDATE downlink_batches SET last_sent_at = $4, send_count = send_count + 1 "
            "WHERE vessel_id = $1 AND downlink_seq = $2 AND send_count = $3 "
            "AND acked_at IS NULL RETURNING downlink_seq",
            batch.vessel_id,
            batch.downlink_seq,
            batch.send_count,
            float(now),
        )
        return bool(rows)

    async def give_back_send(self, tx: Tx, batch: DownlinkBatch) -> None:
        """A claimed batch whose publish failed: as it was before the claim (``batch`` as
        it was read then), so the next pass sends it again."""
        await tx.execute(
            "UPDATE downlink_batches SET last_sent_at = $4, send_count = $3 "
            "WHERE vessel_id = $1 AND downlink_seq = $2 AND send_count = $3 + 1",
            batch.vessel_id,
            batch.downlink_seq,
            batch.send_count,
            batch.last_sent_at,
        )

    async def link_bytes_sent_since(
        self, tx: Tx, since: float, ids: tuple[int, int] = (0, 2**62)
    ) -> dict[int, int]:
        """Downlink link bytes per vessel (of those with ids in the closed range ``ids``) of
        batches last sent since ``since`` (every send of a batch counted)."""
        rows = await tx.fetch(
            "SELECT vessel_id, SUM(COALESCE(link_bytes, LENGTH(data)) * send_count) "
            "FROM downlink_batches "
            "WHERE last_sent_at >= $1 AND vessel_id >= $2 AND vessel_id <= $3 "
            "GROUP BY vessel_id",
            float(since),
            *ids,
        )
        return {int(r[0]): int(r[1]) for r in rows}

    async def count_unacknowledged(self, tx: Tx) -> int:
        """Downlink batches of the whole fleet not acknowledged yet."""
        row = await tx.fetchrow("SELECT COUNT(*) FROM downlink_batches WHERE acked_at IS NULL")
        assert row is not None
        return int(row[0])

    # slot notes ---------------------------------------------------------------------------

    async def keep_slot_note(
        self, tx: Tx, vessel_id: int, crew: int, sealed_note: bytes, now: float
    ) -> None:
        """Keep a case note for the crew member's next downlink slot."""
        await tx.execute(
            "INSERT INTO slot_notes (vessel_id, crew, sealed_note, queued_at) "
            "VALUES ($1, $2, $3, $4)",
            vessel_id,
            crew,
            sealed_note,
            float(now),
        )

    async def next_slot_note(self, tx: Tx, vessel_id: int, crew: int) -> tuple[int, bytes] | None:
        """(note_id, sealed note) of the crew member's earliest waiting note, or None."""
        row = await tx.fetchrow(
            "SELECT note_id, sealed_note FROM slot_notes WHERE vessel_id = $1 "
            "AND crew = $2 AND carried_period IS NULL ORDER BY note_id LIMIT 1",
            vessel_id,
            crew,
        )
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def slot_note_carried(self, tx: Tx, note_id: int, period: int) -> None:
        """The note goes in the slot item of ``period``."""
        await tx.execute(
            "UPDATE slot_notes SET carried_period = $2 WHERE note_id = $1", note_id, period
        )
