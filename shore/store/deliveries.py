"""Deliveries repository: the delivery queue, its leases, attempts and outcomes.

Table ``deliveries`` (migration set ``deliveries``): one row per crew message or grievance
report to deliver, keyed by the message's idempotency key (vessel, message_seq), with the
attempts recorded, when it is next due, its deadline, the worker holding a lease on it,
and, once it ended, the outcome (delivered, or failed with a reason). An attempt is
recorded *before* anything is sent (``unfinished``), so a worker that dies mid-send leaves
a trace: the next attempt is a counted repeat, with the same Message-ID.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from protocol.envelopes import FailureReason
from protocol.languages import Language
from shore.store.database import Dialect, Tx, insert_many
from shore.store.migrations import Migration, MigrationSet
from shore.store.uplink import CodedVoice, MessageToDeliver, keys_filter, keys_filters
from shore.vocabulary import CONTACT_NOT_KNOWN_YET, DeliveryOutcome, Destination, MessageKind

MIGRATIONS = MigrationSet(
    "deliveries",
    (
        Migration(
            "0001_delivery_queue",
            """
        CREATE TABLE deliveries (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            due_at {real} NOT NULL,
            deadline_at {real} NOT NULL,
            claimed_by TEXT,
            lease_until {real},
            unfinished {int} NOT NULL DEFAULT 0,
            last_attempt_at {real},
            outcome TEXT CHECK (outcome IN ('delivered', 'failed')),
            reason {int},
            detail TEXT,
            finished_at {real},
            PRIMARY KEY (vessel_id, message_seq),
            FOREIGN KEY (vessel_id, message_seq) REFERENCES messages (vessel_id, message_seq)
        );
        CREATE INDEX deliveries_due ON deliveries (due_at) WHERE outcome IS NULL;
        """,
        ),
    ),
)

#: A claimed delivery returns to the queue after this long without an outcome.
DEFAULT_LEASE_S = 600.0
#: How long a delivery may take, from acceptance ashore (shore.retry's policy decides too).
DEFAULT_DEADLINE_S = 3 * 24 * 3600.0

#: How long a family message may wait for its delivery by default (issue 23): 30 days.
DEFAULT_MESSAGE_TTL_S = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class MessageTtl:
    """How long a family message may wait, from when the crew member wrote it, before it
    fails with ``DEADLINE_PASSED`` (its time to live): ``default_s`` for every vessel but
    those of ``by_vessel`` ((vessel id, seconds), the relay's ``[retention]`` settings).

    Whether it waited on board (a link down for weeks) or ashore (an address that keeps
    refusing) makes no difference: the family would get news older than the TTL."""

    default_s: float = DEFAULT_MESSAGE_TTL_S
    by_vessel: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        for vessel_id, ttl_s in ((None, self.default_s), *self.by_vessel):
            if not ttl_s > 0:
                where = "the default" if vessel_id is None else f"vessel {vessel_id}'s"
                raise ValueError(f"{where} message time to live must be positive, not {ttl_s}")
        vessels = [vessel_id for vessel_id, _ in self.by_vessel]
        if len(set(vessels)) != len(vessels):
            raise ValueError(f"a vessel has two message times to live in {self.by_vessel!r}")

    def for_vessel(self, vessel_id: int) -> float:
        """The time to live of ``vessel_id``'s family messages, in seconds."""
        return dict(self.by_vessel).get(vessel_id, self.default_s)


#: Turns a quick-message code into text in a language (None: no such phrase).
PhraseLookup = Callable[[int, "Language | None"], "str | None"]


class DeliveryKey(NamedTuple):
    """The store's key of a delivery: the message's idempotency key."""

    vessel_id: int
    message_seq: int

    @classmethod
    def of(cls, key: object) -> DeliveryKey:
        """The key a worker passed back (``TypeError`` for anything else)."""
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"a delivery key is (vessel_id, message_seq), not {key!r}")
        return cls(int(key[0]), int(key[1]))


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery (satisfies ``shore.delivery.DueDelivery``)."""

    key: DeliveryKey
    vessel_id: int
    message_seq: int
    destination: Destination
    crew: int | None
    contact: int | None
    crew_name: str | None
    contact_lang: Language | None
    address: str | None
    text: str | None
    union: int | None
    sealed: bytes | None
    accepted_at: float
    attempts: int
    unfinished_attempt: bool
    deadline_at: float
    quick: int | None = None
    #: A voice message's speech (None for text).
    voice: CodedVoice | None = None
    #: The crew member's Subject line (a mail from the SMTP door), if any.
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery's state, for the operator and tests."""

    key: DeliveryKey
    attempts: int
    due_at: float
    deadline_at: float
    outcome: DeliveryOutcome | None
    reason: FailureReason | None
    detail: str | None
    unfinished_attempt: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery as the queue hands it out (the message comes from the uplink)."""

    key: DeliveryKey
    attempts: int
    unfinished_attempt: bool
    deadline_at: float


@dataclass(frozen=True, slots=True)
class FailingRow:
    """A delivery that failed for good, or whose attempts so far failed (still retrying)."""

    key: DeliveryKey
    attempts: int
    outcome: DeliveryOutcome | None
    reason_code: int | None
    detail: str | None
    due_at: float
    deadline_at: float


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """The whole queue: waiting for an outcome, of those retrying, and failed for good."""

    queued: int
    retrying: int
    failed: int


def delivery_of(claim: Claim, message: MessageToDeliver, phrases: PhraseLookup | None) -> Delivery:
    """A claimed delivery with what the worker sends: where to, and the text (a quick
    message expanded by ``phrases`` in the contact's language, else the crew member's)."""
    if message.kind is MessageKind.GRIEVANCE:
        destination = Destination.UNION
    elif message.channel is not None:
        destination = Destination.for_channel(message.channel)
    else:
        destination = Destination.EMAIL  # unknown contact: fails UNKNOWN_CONTACT
    text = message.body
    if text is None and message.quick is not None and phrases is not None:
        text = phrases(message.quick, message.contact_lang or message.lang)
    return Delivery(
        key=claim.key,
        vessel_id=claim.key.vessel_id,
        message_seq=claim.key.message_seq,
        destination=destination,
        crew=message.crew,
        contact=message.contact,
        crew_name=message.crew_name,
        contact_lang=message.contact_lang,
        address=message.address,
        text=text,
        union=message.union,
        sealed=message.sealed,
        accepted_at=message.accepted_at,
        attempts=claim.attempts,
        unfinished_attempt=claim.unfinished_attempt,
        deadline_at=claim.deadline_at,
        quick=message.quick,
        voice=message.voice,
        subject=message.subject,
    )


class DeliveryQueue:
    """The delivery queue's SQL; every method runs in the transaction it is given."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.dialect = dialect
        self.lease_s = lease_s
        self.deadline_s = deadline_s

    async def enqueue(self, tx: Tx, vessel_id: int, message_seq: int, now: float) -> None:
        """Queue a new message's delivery: due at once, deadline ``deadline_s`` from now."""
        await tx.execute(
            "INSERT INTO deliveries (vessel_id, message_seq, due_at, deadline_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            vessel_id,
            message_seq,
            float(now),
            float(now) + self.deadline_s,
        )

    async def enqueue_many(
        self, tx: Tx, vessel_id: int, message_seqs: Sequence[int], now: float
    ) -> None:
        """:meth:`enqueue` for several of a vessel's new messages, in one statement."""
        await insert_many(
            tx,
            "INSERT INTO deliveries (vessel_id, message_seq, due_at, deadline_at)",
            [(vessel_id, seq, float(now), float(now) + self.deadline_s) for seq in message_seqs],
            " ON CONFLICT DO NOTHING",
        )

    async def due(self, tx: Tx, now: float, limit: int) -> list[Claim]:
        """Up to ``limit`` due deliveries nobody holds a lease on (oldest due first),
        locked for this transaction (other workers' claims skip them); :meth:`take` them
        before the transaction ends. The claims say what was known before this attempt
        (its ``attempts``, and whether the one before never finished)."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, attempts, unfinished, deadline_at FROM deliveries "
            "WHERE outcome IS NULL AND due_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) "
            f"ORDER BY due_at, vessel_id, message_seq LIMIT $2{self.dialect.skip_locked}",
            float(now),
            limit,
        )
        return [
            Claim(DeliveryKey(int(r[0]), int(r[1])), int(r[2]), bool(r[3]), float(r[4]))
            for r in rows
        ]

    async def take(
        self, tx: Tx, claims: Sequence[Claim], now: float, worker: str, *, attempt: bool
    ) -> None:
        """Put ``claims`` (from :meth:`due`) under ``worker``'s lease of ``lease_s``; with
        ``attempt``, record an attempt on each too (unfinished until its outcome), so every
        attempt is on record before anything leaves."""
        lease = float(now) + self.lease_s
        for where, args in keys_filters([claim.key for claim in claims]):
            n = len(args)
            attempted = (
                f", attempts = attempts + 1, unfinished = 1, last_attempt_at = ${n + 3}"
                if attempt
                else ""
            )
            await tx.execute(
                f"UPDATE deliveries SET claimed_by = ${n + 1}, lease_until = ${n + 2}{attempted} "
                f"WHERE {where}",
                *args,
                worker,
                lease,
                *([float(now)] if attempt else []),
            )

    async def release(self, tx: Tx, worker: str) -> int:
        """End the leases ``worker`` holds on unfinished deliveries; how many."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq FROM deliveries "
            "WHERE claimed_by = $1 AND outcome IS NULL AND lease_until IS NOT NULL",
            worker,
        )
        await tx.executemany(
            "UPDATE deliveries SET lease_until = NULL "
            "WHERE vessel_id = $1 AND message_seq = $2 AND claimed_by = $3",
            [(r[0], r[1], worker) for r in rows],
        )
        return len(rows)

    async def record_attempt(self, tx: Tx, key: DeliveryKey, now: float, worker: str) -> bool:
        """Record an attempt (unfinished until its outcome), only while the claim is still
        ``worker``'s: after a lapsed lease another worker may have claimed it, and then it
        is that worker's to send. Whether it was recorded."""
        row = await tx.fetchrow(
            "UPDATE deliveries SET attempts = attempts + 1, unfinished = 1, "
            "last_attempt_at = $3, claimed_by = $4, lease_until = $5 "
            "WHERE vessel_id = $1 AND message_seq = $2 AND outcome IS NULL "
            "AND claimed_by = $4 RETURNING message_seq",
            key.vessel_id,
            key.message_seq,
            float(now),
            worker,
            float(now) + self.lease_s,
        )
        return row is not None

    async def finish(
        self,
        tx: Tx,
        key: DeliveryKey,
        outcome: DeliveryOutcome,
        reason: FailureReason | None,
        now: float,
    ) -> bool:
        """Record the final outcome; False when it had one already (nothing changed)."""
        done = await tx.fetchrow(
            "UPDATE deliveries SET outcome = $3, reason = $4, unfinished = 0, "
            "finished_at = $5, lease_until = NULL "
            "WHERE vessel_id = $1 AND message_seq = $2 AND outcome IS NULL "
            "RETURNING message_seq",
            key.vessel_id,
            key.message_seq,
            outcome.value,
            None if reason is None else int(reason),
            float(now),
        )
        return done is not None

    async def finish_many(
        self,
        tx: Tx,
        keys: Sequence[DeliveryKey],
        outcome: DeliveryOutcome,
        reason: FailureReason | None,
        now: float,
    ) -> list[DeliveryKey]:
        """:meth:`finish` for several deliveries with one outcome, in one statement; those
        that had no outcome yet (the others are left as they were)."""
        if not keys:
            return []
        where, args = keys_filter(keys)
        n = len(args)
        rows = await tx.fetch(
            f"UPDATE deliveries SET outcome = ${n + 1}, reason = ${n + 2}, unfinished = 0, "
            f"finished_at = ${n + 3}, lease_until = NULL WHERE {where} AND outcome IS NULL "
            "RETURNING vessel_id, message_seq",
            *args,
            outcome.value,
            None if reason is None else int(reason),
            float(now),
        )
        return [DeliveryKey(int(r[0]), int(r[1])) for r in rows]

    async def reschedule(
        self,
        tx: Tx,
        key: DeliveryKey,
        due_at: float,
        detail: str,
        *,
        maybe_sent: bool = False,
        now: float | None = None,
    ) -> None:
        """A transient failure: due again at ``due_at``, the lease ended. ``maybe_sent``
        (the message may have arrived) leaves the attempt unfinished: the next one is then
        counted as a repeat. One that waited for its contact is due at ``now`` if the
        contact is known by now."""
        await tx.execute(
            "UPDATE deliveries SET due_at = $3, detail = $4, unfinished = $5, "
            "lease_until = NULL WHERE vessel_id = $1 AND message_seq = $2 AND outcome IS NULL",
            key.vessel_id,
            key.message_seq,
            float(due_at),
            detail[:500],
            1 if maybe_sent else 0,
        )
        if detail == CONTACT_NOT_KNOWN_YET and now is not None:
            # Its contact may have been stored since the attempt read it (a batch ingested
            # meanwhile, here or at another worker): then it is due at once. A contact
            # stored after this is seen by :meth:`due_now_for_contacts`.
            await tx.execute(
                "UPDATE deliveries SET due_at = $3 WHERE vessel_id = $1 AND message_seq = $2 "
                "AND outcome IS NULL AND EXISTS (SELECT 1 FROM messages m JOIN contacts c "
                "ON c.vessel_id = m.vessel_id AND c.crew = m.crew AND c.contact = m.contact "
                "WHERE m.vessel_id = $1 AND m.message_seq = $2)",
                key.vessel_id,
                key.message_seq,
                float(now),
            )

    async def due_now_for_contacts(self, tx: Tx, vessel_id: int, now: float) -> None:
        """A contact book change of the vessel was stored: its deliveries waiting for a
        contact (:data:`~shore.vocabulary.CONTACT_NOT_KNOWN_YET`) are due now instead of
        after their backoff (those whose contact is still unknown wait again). Reads the
        retry queue only (``deliveries_due``), not the vessel's delivered history."""
        await tx.execute(
            "UPDATE deliveries SET due_at = $2 WHERE outcome IS NULL AND due_at > $2 "
            "AND vessel_id = $1 AND lease_until IS NULL AND detail = $3",
            vessel_id,
            float(now),
            CONTACT_NOT_KNOWN_YET,
        )

    async def reopen(self, tx: Tx, key: DeliveryKey, now: float) -> bool:
        """Make a retrying delivery due now, or reopen a failed one with a fresh deadline;
        False when there is none to retry (delivered already, or never queued)."""
        row = await tx.fetchrow(
            "UPDATE deliveries SET due_at = $3, lease_until = NULL, claimed_by = NULL, "
            "outcome = NULL, reason = NULL, finished_at = NULL, "
            "deadline_at = CASE WHEN outcome = $5 THEN $4 ELSE deadline_at END "
            "WHERE vessel_id = $1 AND message_seq = $2 "
            "AND (outcome IS NULL OR outcome = $5) RETURNING message_seq",
            key.vessel_id,
            key.message_seq,
            float(now),
            float(now) + self.deadline_s,
            DeliveryOutcome.FAILED.value,
        )
        return row is not None

    async def is_open(self, tx: Tx, key: DeliveryKey) -> bool:
        """Whether the delivery is queued without a final outcome."""
        row = await tx.fetchrow(
            "SELECT outcome FROM deliveries WHERE vessel_id = $1 AND message_seq = $2",
            key.vessel_id,
            key.message_seq,
        )
        return row is not None and row[0] is None

    async def records(self, tx: Tx, vessel_id: int) -> list[DeliveryRecord]:
        """A vessel's deliveries, by sequence number."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, attempts, due_at, deadline_at, outcome, reason, "
            "detail, unfinished FROM deliveries WHERE vessel_id = $1 ORDER BY message_seq",
            vessel_id,
        )
        return [
            DeliveryRecord(
                DeliveryKey(int(r[0]), int(r[1])),
                int(r[2]),
                float(r[3]),
                float(r[4]),
                None if r[5] is None else DeliveryOutcome(r[5]),
                None if r[6] is None else FailureReason(int(r[6])),
                r[7],
                bool(r[8]),
            )
            for r in rows
        ]

    async def note(self, tx: Tx, keys: Sequence[DeliveryKey], detail: str) -> None:
        """Write ``detail`` (for the operator: no content) on the deliveries ``keys``."""
        await tx.executemany(
            "UPDATE deliveries SET detail = $3 WHERE vessel_id = $1 AND message_seq = $2",
            [(key.vessel_id, key.message_seq, detail[:500]) for key in keys],
        )

    async def outcomes(
        self, tx: Tx, vessel_id: int, first_seq: int, last_seq: int
    ) -> dict[int, DeliveryOutcome | None]:
        """message_seq -> outcome (None: still open) of the vessel's deliveries numbered
        from ``first_seq`` to ``last_seq``."""
        rows = await tx.fetch(
            "SELECT message_seq, outcome FROM deliveries WHERE vessel_id = $1 "
            "AND message_seq >= $2 AND message_seq <= $3",
            vessel_id,
            first_seq,
            last_seq,
        )
        return {int(r[0]): None if r[1] is None else DeliveryOutcome(r[1]) for r in rows}

    async def outcome_counts(
        self, tx: Tx, vessel_id: int
    ) -> list[tuple[DeliveryOutcome | None, int | None, int]]:
        """(outcome, reason code, count) of a vessel's deliveries."""
        rows = await tx.fetch(
            "SELECT outcome, reason, COUNT(*) FROM deliveries WHERE vessel_id = $1 "
            "GROUP BY outcome, reason",
            vessel_id,
        )
        return [
            (
                None if r[0] is None else DeliveryOutcome(r[0]),
                None if r[1] is None else int(r[1]),
                int(r[2]),
            )
            for r in rows
        ]

    async def failing(self, tx: Tx, vessel_id: int | None, limit: int) -> list[FailingRow]:
        """Deliveries failed for good, and those still retrying after a failed attempt."""
        where = "(outcome = $2 OR (outcome IS NULL AND detail IS NOT NULL))"
        args: list[object] = [limit, DeliveryOutcome.FAILED.value]
        if vessel_id is not None:
            where += " AND vessel_id = $3"
            args.append(vessel_id)
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, attempts, outcome, reason, detail, due_at, "
            f"deadline_at FROM deliveries WHERE {where} ORDER BY vessel_id, message_seq LIMIT $1",
            *args,
        )
        return [
            FailingRow(
                DeliveryKey(int(r[0]), int(r[1])),
                int(r[2]),
                None if r[3] is None else DeliveryOutcome(r[3]),
                None if r[4] is None else int(r[4]),
                None if r[5] is None else str(r[5]),
                float(r[6]),
                float(r[7]),
            )
            for r in rows
        ]

    async def counts_by_vessel(
        self, tx: Tx, ids: tuple[int, int] = (0, 2**62)
    ) -> dict[int, tuple[int, int]]:
        """vessel -> (deliveries waiting for an outcome, deliveries failed for good), for the
        vessels with ids in the closed range ``ids``."""
        rows = await tx.fetch(
            "SELECT vessel_id, SUM(CASE WHEN outcome IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN outcome = $1 THEN 1 ELSE 0 END) FROM deliveries "
            "WHERE vessel_id >= $2 AND vessel_id <= $3 GROUP BY vessel_id",
            DeliveryOutcome.FAILED.value,
            *ids,
        )
        return {int(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in rows}

    async def counts(self, tx: Tx) -> QueueCounts:
        """The whole queue's counts."""
        row = await tx.fetchrow(
            "SELECT SUM(CASE WHEN outcome IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN outcome IS NULL AND detail IS NOT NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN outcome = $1 THEN 1 ELSE 0 END) FROM deliveries",
            DeliveryOutcome.FAILED.value,
        )
        assert row is not None
        return QueueCounts(*(int(value or 0) for value in row))
