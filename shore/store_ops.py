"""Operator queries: what the dashboard and the metrics gauges read from the store.

Read-only summaries (fleet, one vessel, failing deliveries, silent vessels) and the two
operator actions on a delivery (retry now, give up), in the portable SQL of
:mod:`shore.store_sql`, so they run on SQLite and PostgreSQL alike. Nothing here returns
message text, grievance content, addresses or names of crew members; a vessel's name is
the registry's (the operator typed it).

Give up goes through :meth:`~shore.store_sql.SqlStore.finish_delivery`, so the vessel is
told (``DeliveryFailure``) in the same transaction, as with any final outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from protocol.envelopes import FailureReason
from protocol.errors import Reason
from protocol.months import BILLING_ZONE, Month
from shore.store import DeliveryKey, StoreError
from shore.store_sql import SqlStore

#: Batches received less than this apart belong to one satellite session.
SESSION_GAP_S = 600.0
#: A vessel not heard from for this long is listed as silent (a Certus vessel polls 12 h apart).
DEFAULT_SILENT_AFTER_S = 36 * 3600.0


class DeliveryNotFound(StoreError):
    """The delivery named is not there, or not in a state the action applies to."""


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One vessel in the fleet view."""

    vessel_id: int
    name: str
    flag: str
    last_heard_at: float | None
    uplink_bytes_month: int
    downlink_bytes_month: int
    queued_deliveries: int
    failed_deliveries: int
    quarantined: int
    silent: bool


@dataclass(frozen=True, slots=True)
class DayActivity:
    """One UTC day of a vessel's uplink: sessions, batches received, their bytes.

    The relay does not see a vessel's MQTT connections, so a *session* is counted from the
    batches: those received less than ``SESSION_GAP_S`` apart are one session.
    """

    day: str
    sessions: int
    batches: int
    link_bytes: int


@dataclass(frozen=True, slots=True)
class FailingDelivery:
    """A delivery that failed for good, or whose attempts so far failed (retrying)."""

    vessel_id: int
    message_seq: int
    destination_kind: str  # "message" or "grievance"
    attempts: int
    outcome: str | None  # None: still retrying
    reason: str | None
    detail: str | None
    due_at: float
    deadline_at: float


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """A quarantined payload of one vessel (reason and the relay's explanation)."""

    quarantine_id: int
    reason: str
    message: str
    batch_seq: int | None
    link_bytes: int
    first_at: float
    last_at: float
    times: int


@dataclass(frozen=True, slots=True)
class OpsSummary:
    """Fleet-wide gauges (for metrics)."""

    vessels: int
    vessels_silent: int
    deliveries_queued: int
    deliveries_retrying: int
    deliveries_failed: int
    downlink_unacknowledged: int
    quarantine_entries: int


class OperatorQueries:
    """Operator reads and actions over an open :class:`SqlStore`."""

    def __init__(self, store: SqlStore, silent_after_s: float = DEFAULT_SILENT_AFTER_S) -> None:
        self.store = store
        self.silent_after_s = silent_after_s

    async def fleet(self, now: float) -> list[FleetRow]:
        """Every vessel with last heard, link bytes this month, queue and failures."""
        start = Month.of(now, BILLING_ZONE).start_s(BILLING_ZONE)
        async with self.store._transaction() as tx:
            rows = await tx.fetch(
                "SELECT v.vessel_id, v.name, v.flag, l.last_heard_at, "
                "(SELECT COALESCE(SUM(b.link_bytes), 0) FROM batches b "
                " WHERE b.vessel_id = v.vessel_id AND b.received_at >= $1), "
                "(SELECT COALESCE(SUM(LENGTH(d.data) * d.send_count), 0) FROM downlink_batches d"
                " WHERE d.vessel_id = v.vessel_id AND d.last_sent_at >= $1), "
                "(SELECT COUNT(*) FROM deliveries q "
                " WHERE q.vessel_id = v.vessel_id AND q.outcome IS NULL), "
                "(SELECT COUNT(*) FROM deliveries f "
                " WHERE f.vessel_id = v.vessel_id AND f.outcome = 'failed'), "
                "(SELECT COUNT(*) FROM quarantine z WHERE z.vessel_id = v.vessel_id) "
                "FROM vessels v LEFT JOIN vessel_link l ON l.vessel_id = v.vessel_id "
                "ORDER BY v.vessel_id",
                float(start),
            )
        return [
            FleetRow(
                vessel_id=int(r[0]),
                name=str(r[1]),
                flag=str(r[2]),
                last_heard_at=None if r[3] is None else float(r[3]),
                uplink_bytes_month=int(r[4]),
                downlink_bytes_month=int(r[5]),
                queued_deliveries=int(r[6]),
                failed_deliveries=int(r[7]),
                quarantined=int(r[8]),
                silent=self._silent(r[3], now),
            )
            for r in rows
        ]

    def _silent(self, last_heard_at: object, now: float) -> bool:
        if last_heard_at is None:
            return True
        return now - float(last_heard_at) > self.silent_after_s  # type: ignore[arg-type]

    async def silent_vessels(self, now: float) -> list[FleetRow]:
        """Vessels not heard from for ``silent_after_s`` (or never), longest silent first."""
        rows = [row for row in await self.fleet(now) if row.silent]
        return sorted(rows, key=lambda row: row.last_heard_at or 0.0)

    async def activity(self, vessel_id: int, now: float, days: int = 30) -> list[DayActivity]:
        """The vessel's sessions and uplink per UTC day over the last ``days`` days."""
        first_day = int(now // 86400) - days + 1
        async with self.store._transaction() as tx:
            rows = await tx.fetch(
                "SELECT received_at, link_bytes FROM batches "
                "WHERE vessel_id = $1 AND received_at >= $2 ORDER BY received_at",
                vessel_id,
                float(first_day * 86400),
            )
        sessions = [0] * days
        batches = [0] * days
        link_bytes = [0] * days
        previous: float | None = None
        for received_at, size in rows:
            at = float(received_at)
            index = int(at // 86400) - first_day
            if 0 <= index < days:
                if previous is None or at - previous > SESSION_GAP_S:
                    sessions[index] += 1
                batches[index] += 1
                link_bytes[index] += int(size)
            previous = at
        return [
            DayActivity(
                datetime.fromtimestamp((first_day + i) * 86400, UTC).strftime("%Y-%m-%d"),
                sessions[i],
                batches[i],
                link_bytes[i],
            )
            for i in range(days)
        ]

    async def delivery_outcomes(self, vessel_id: int) -> dict[str, int]:
        """Counts of a vessel's deliveries: delivered, queued, and failed by reason."""
        async with self.store._transaction() as tx:
            rows = await tx.fetch(
                "SELECT outcome, reason, COUNT(*) FROM deliveries WHERE vessel_id = $1 "
                "GROUP BY outcome, reason",
                vessel_id,
            )
        counts: dict[str, int] = {}
        for outcome, reason, count in rows:
            if outcome is None:
                label = "queued"
            elif outcome == "failed":
                label = f"failed: {_reason_name(reason)}"
            else:
                label = str(outcome)
            counts[label] = counts.get(label, 0) + int(count)
        return dict(sorted(counts.items()))

    async def quarantined(self, vessel_id: int, limit: int = 50) -> list[QuarantineRow]:
        """The vessel's quarantined payloads, newest first."""
        async with self.store._transaction() as tx:
            rows = await tx.fetch(
                "SELECT quarantine_id, reason, message, batch_seq, link_bytes, first_at, "
                "last_at, times FROM quarantine WHERE vessel_id = $1 "
                "ORDER BY last_at DESC LIMIT $2",
                vessel_id,
                limit,
            )
        return [
            QuarantineRow(
                int(r[0]),
                _quarantine_reason(r[1]),
                str(r[2]),
                None if r[3] is None else int(r[3]),
                int(r[4]),
                float(r[5]),
                float(r[6]),
                int(r[7]),
            )
            for r in rows
        ]

    async def failing_deliveries(
        self, vessel_id: int | None = None, limit: int = 200
    ) -> list[FailingDelivery]:
        """Deliveries failed for good, and those still retrying after a failed attempt."""
        where = "(d.outcome = 'failed' OR (d.outcome IS NULL AND d.detail IS NOT NULL))"
        args: list[object] = [limit]
        if vessel_id is not None:
            where += " AND d.vessel_id = $2"
            args.append(vessel_id)
        async with self.store._transaction() as tx:
            rows = await tx.fetch(
                "SELECT d.vessel_id, d.message_seq, m.kind, d.attempts, d.outcome, d.reason, "
                "d.detail, d.due_at, d.deadline_at FROM deliveries d JOIN messages m "
                "ON m.vessel_id = d.vessel_id AND m.message_seq = d.message_seq "
                f"WHERE {where} ORDER BY d.vessel_id, d.message_seq LIMIT $1",
                *args,
            )
        return [
            FailingDelivery(
                vessel_id=int(r[0]),
                message_seq=int(r[1]),
                destination_kind=str(r[2]),
                attempts=int(r[3]),
                outcome=r[4],
                reason=None if r[5] is None else _reason_name(r[5]),
                detail=None if r[6] is None else str(r[6]),
                due_at=float(r[7]),
                deadline_at=float(r[8]),
            )
            for r in rows
        ]

    async def retry_delivery(self, vessel_id: int, message_seq: int, now: float) -> None:
        """Try a delivery again now: a retrying one is made due, a failed one reopened.

        A reopened delivery gets a fresh deadline; the vessel already heard "failed" and
        will not hear of it again unless it is delivered (its receipt key is spent).
        """
        async with self.store._transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE deliveries SET due_at = $3, lease_until = NULL, claimed_by = NULL, "
                "outcome = NULL, reason = NULL, finished_at = NULL, "
                "deadline_at = CASE WHEN outcome = 'failed' THEN $4 ELSE deadline_at END "
                "WHERE vessel_id = $1 AND message_seq = $2 "
                "AND (outcome IS NULL OR outcome = 'failed') RETURNING message_seq",
                vessel_id,
                message_seq,
                float(now),
                float(now) + self.store.deadline_s,
            )
            if row is None:
                raise DeliveryNotFound(
                    f"vessel {vessel_id} message {message_seq} has no delivery to retry "
                    "(delivered already, or never queued)"
                )
            await tx.execute(
                "UPDATE messages SET state = 'accepted', state_at = $3 "
                "WHERE vessel_id = $1 AND message_seq = $2 AND state = 'failed'",
                vessel_id,
                message_seq,
                float(now),
            )

    async def give_up_delivery(
        self,
        vessel_id: int,
        message_seq: int,
        now: float,
        reason: FailureReason = FailureReason.PROVIDER_ERROR,
    ) -> None:
        """Stop retrying: the delivery fails for good and the vessel is told (receipt)."""
        async with self.store._transaction() as tx:
            row = await tx.fetchrow(
                "SELECT outcome FROM deliveries WHERE vessel_id = $1 AND message_seq = $2",
                vessel_id,
                message_seq,
            )
        if row is None or row[0] is not None:
            raise DeliveryNotFound(
                f"vessel {vessel_id} message {message_seq} has no open delivery to give up"
            )
        await self.store.finish_delivery(DeliveryKey(vessel_id, message_seq), "failed", reason, now)

    async def last_heard(self) -> dict[int, float]:
        """When each vessel was last heard from (vessels never heard are left out)."""
        async with self.store._transaction() as tx:
            rows = await tx.fetch(
                "SELECT vessel_id, last_heard_at FROM vessel_link WHERE last_heard_at IS NOT NULL"
            )
        return {int(r[0]): float(r[1]) for r in rows}

    async def summary(self, now: float) -> OpsSummary:
        """Fleet-wide counts for the metrics gauges."""
        threshold = float(now) - self.silent_after_s
        async with self.store._transaction() as tx:
            row = await tx.fetchrow(
                "SELECT (SELECT COUNT(*) FROM vessels), "
                "(SELECT COUNT(*) FROM vessels v LEFT JOIN vessel_link l "
                " ON l.vessel_id = v.vessel_id "
                " WHERE l.last_heard_at IS NULL OR l.last_heard_at < $1), "
                "(SELECT COUNT(*) FROM deliveries WHERE outcome IS NULL), "
                "(SELECT COUNT(*) FROM deliveries WHERE outcome IS NULL AND detail IS NOT NULL), "
                "(SELECT COUNT(*) FROM deliveries WHERE outcome = 'failed'), "
                "(SELECT COUNT(*) FROM downlink_batches WHERE acked_at IS NULL), "
                "(SELECT COUNT(*) FROM quarantine)",
                threshold,
            )
        values = [int(v) for v in (row or (0,) * 7)]
        return OpsSummary(*values)


def _reason_name(value: object) -> str:
    try:
        return FailureReason(int(value)).name  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(value)


def _quarantine_reason(value: object) -> str:
    try:
        return Reason(int(value)).name  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(value)


def delivery_keys(rows: Sequence[FailingDelivery]) -> list[DeliveryKey]:
    """The keys of listed deliveries (for tests and bulk actions)."""
    return [DeliveryKey(row.vessel_id, row.message_seq) for row in rows]
