"""Operator queries: what the dashboard and the metrics gauges read from the store.

Read-only summaries (fleet, one vessel, failing deliveries, silent vessels) and the two
operator actions on a delivery (retry now, give up), on SQLite and PostgreSQL alike. Each
read is one transaction that asks the repositories of :class:`~shore.store.RelayStore`
(none reaches into another's tables). Nothing here returns message text, grievance
content, addresses or names of crew members; a vessel's name is the registry's (the
operator typed it).

Give up goes through the store's unit of work for a final outcome, so the vessel is told
(``DeliveryFailure``) in the same transaction, as with any final outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from protocol.envelopes import FailureReason
from protocol.errors import Reason
from protocol.months import BILLING_ZONE, Month
from shore.store.deliveries import DeliveryKey
from shore.store.errors import DeliveryNotFound
from shore.store.registry import VesselRecord
from shore.store.relay_store import RelayStore
from shore.vocabulary import DeliveryOutcome, MessageKind

__all__ = [
    "DEFAULT_SILENT_AFTER_S",
    "FLEET_PAGE_SIZE",
    "SESSION_GAP_S",
    "DayActivity",
    "DeliveryNotFound",
    "FailingDelivery",
    "FleetPage",
    "FleetRow",
    "OperatorQueries",
    "OpsSummary",
    "QuarantineRow",
    "delivery_keys",
]

#: Batches received less than this apart belong to one satellite session.
SESSION_GAP_S = 600.0
#: A vessel not heard from for this long is listed as silent (a Certus vessel polls 12 h apart).
DEFAULT_SILENT_AFTER_S = 36 * 3600.0


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
class FleetPage:
    """A page of the fleet view: vessels by id, after ``after``; ``next_after`` is where the
    next page starts (None: this is the last page)."""

    rows: list[FleetRow]
    vessels: int
    after: int | None
    next_after: int | None


#: Vessels on one page of the fleet view.
FLEET_PAGE_SIZE = 100


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
    destination_kind: MessageKind  # a crew message or a grievance report
    attempts: int
    outcome: DeliveryOutcome | None  # None: still retrying
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
    """Operator reads and actions over an open :class:`~shore.store.RelayStore`."""

    def __init__(self, store: RelayStore, silent_after_s: float = DEFAULT_SILENT_AFTER_S) -> None:
        self.store = store
        self.silent_after_s = silent_after_s

    async def fleet(self, now: float) -> list[FleetRow]:
        """Every vessel with last heard, link bytes this month, queue and failures."""
        store = self.store
        start = Month.of(now, BILLING_ZONE).start_s(BILLING_ZONE)
        async with store.db.transaction() as tx:
            vessels = await store.registry.listing(tx)
            heard = await store.links.last_heard(tx)
            uplink_bytes = await store.uplink.link_bytes_since(tx, start)
            downlink_bytes = await store.downlink_queue.link_bytes_sent_since(tx, start)
            queues = await store.delivery_queue.counts_by_vessel(tx)
            _, quarantined = await store.refusals.quarantine_counts(tx)
        return [
            FleetRow(
                vessel_id=vessel_id,
                name=name,
                flag=flag,
                last_heard_at=heard.get(vessel_id),
                uplink_bytes_month=uplink_bytes.get(vessel_id, 0),
                downlink_bytes_month=downlink_bytes.get(vessel_id, 0),
                queued_deliveries=queues.get(vessel_id, (0, 0))[0],
                failed_deliveries=queues.get(vessel_id, (0, 0))[1],
                quarantined=quarantined.get(vessel_id, 0),
                silent=self._silent(heard.get(vessel_id), now),
            )
            for vessel_id, name, flag in vessels
        ]

    async def fleet_page(
        self, now: float, after: int | None = None, size: int = FLEET_PAGE_SIZE
    ) -> FleetPage:
        """At most ``size`` vessels with ids above ``after`` (keyset pagination), with the
        same figures as :meth:`fleet`. One transaction; every query after the listing
        reads only the page's range of vessel ids, so a page costs the same at 50 vessels
        as at 50,000."""
        if size < 1:
            raise ValueError(f"a fleet page holds at least one vessel, not {size}")
        store = self.store
        start = Month.of(now, BILLING_ZONE).start_s(BILLING_ZONE)
        async with store.db.transaction() as tx:
            total = await store.registry.count(tx)
            vessels = await store.registry.listing(tx, after=after, limit=size + 1)
            more = len(vessels) > size
            vessels = vessels[:size]
            if not vessels:
                return FleetPage([], total, after, None)
            ids = (vessels[0][0], vessels[-1][0])
            heard = await store.links.last_heard(tx, ids=ids)
            uplink_bytes = await store.uplink.link_bytes_since(tx, start, ids)
            downlink_bytes = await store.downlink_queue.link_bytes_sent_since(tx, start, ids)
            queues = await store.delivery_queue.counts_by_vessel(tx, ids)
            quarantined = await store.refusals.quarantine_counts_of(tx, ids)
        rows = [
            FleetRow(
                vessel_id=vessel_id,
                name=name,
                flag=flag,
                last_heard_at=heard.get(vessel_id),
                uplink_bytes_month=uplink_bytes.get(vessel_id, 0),
                downlink_bytes_month=downlink_bytes.get(vessel_id, 0),
                queued_deliveries=queues.get(vessel_id, (0, 0))[0],
                failed_deliveries=queues.get(vessel_id, (0, 0))[1],
                quarantined=quarantined.get(vessel_id, 0),
                silent=self._silent(heard.get(vessel_id), now),
            )
            for vessel_id, name, flag in vessels
        ]
        return FleetPage(rows, total, after, rows[-1].vessel_id if more else None)

    async def vessel(self, vessel_id: int) -> VesselRecord | None:
        """A registered vessel with its keys and when it was last heard from, or None."""
        return await self.store.get_vessel(vessel_id)

    def _silent(self, last_heard_at: float | None, now: float) -> bool:
        return last_heard_at is None or now - last_heard_at > self.silent_after_s

    async def silent_vessels(self, now: float) -> list[FleetRow]:
        """Vessels not heard from for ``silent_after_s`` (or never), longest silent first."""
        rows = [row for row in await self.fleet(now) if row.silent]
        return sorted(rows, key=lambda row: row.last_heard_at or 0.0)

    async def activity(self, vessel_id: int, now: float, days: int = 30) -> list[DayActivity]:
        """The vessel's sessions and uplink per UTC day over the last ``days`` days."""
        first_day = int(now // 86400) - days + 1
        async with self.store.db.transaction() as tx:
            arrivals = await self.store.uplink.batch_arrivals(tx, vessel_id, first_day * 86400)
        sessions = [0] * days
        batches = [0] * days
        link_bytes = [0] * days
        previous: float | None = None
        for at, size in arrivals:
            index = int(at // 86400) - first_day
            if 0 <= index < days:
                if previous is None or at - previous > SESSION_GAP_S:
                    sessions[index] += 1
                batches[index] += 1
                link_bytes[index] += size
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
        async with self.store.db.transaction() as tx:
            rows = await self.store.delivery_queue.outcome_counts(tx, vessel_id)
        counts: dict[str, int] = {}
        for outcome, reason, count in rows:
            if outcome is None:
                label = "queued"
            elif outcome is DeliveryOutcome.FAILED:
                label = f"failed: {_failure_name(reason)}"
            else:
                label = outcome.value
            counts[label] = counts.get(label, 0) + count
        return dict(sorted(counts.items()))

    async def quarantined(self, vessel_id: int, limit: int = 50) -> list[QuarantineRow]:
        """The vessel's quarantined payloads, newest first."""
        async with self.store.db.transaction() as tx:
            entries = await self.store.refusals.vessel_quarantine(tx, vessel_id, limit)
        return [
            QuarantineRow(
                e.quarantine_id,
                _refusal_name(e.reason_code),
                e.message,
                e.batch_seq,
                e.link_bytes,
                e.first_at,
                e.last_at,
                e.times,
            )
            for e in entries
        ]

    async def failing_deliveries(
        self, vessel_id: int | None = None, limit: int = 200
    ) -> list[FailingDelivery]:
        """Deliveries failed for good, and those still retrying after a failed attempt."""
        store = self.store
        async with store.db.transaction() as tx:
            rows = await store.delivery_queue.failing(tx, vessel_id, limit)
            kinds = await store.uplink.kinds(tx, [row.key for row in rows])
        return [
            FailingDelivery(
                vessel_id=row.key.vessel_id,
                message_seq=row.key.message_seq,
                destination_kind=kinds[row.key],
                attempts=row.attempts,
                outcome=row.outcome,
                reason=None if row.reason_code is None else _failure_name(row.reason_code),
                detail=row.detail,
                due_at=row.due_at,
                deadline_at=row.deadline_at,
            )
            for row in rows
        ]

    async def retry_delivery(self, vessel_id: int, message_seq: int, now: float) -> None:
        """Try a delivery again now: a retrying one is made due, a failed one reopened.

        A reopened delivery gets a fresh deadline; the vessel already heard "failed" and
        will not hear of it again unless it is delivered (its receipt key is spent).
        """
        if not await self.store.retry_delivery(vessel_id, message_seq, now):
            raise DeliveryNotFound(
                f"vessel {vessel_id} message {message_seq} has no delivery to retry "
                "(delivered already, or never queued)"
            )

    async def give_up_delivery(
        self,
        vessel_id: int,
        message_seq: int,
        now: float,
        reason: FailureReason = FailureReason.PROVIDER_ERROR,
    ) -> None:
        """Stop retrying: the delivery fails for good and the vessel is told (receipt)."""
        if not await self.store.give_up_delivery(vessel_id, message_seq, reason, now):
            raise DeliveryNotFound(
                f"vessel {vessel_id} message {message_seq} has no open delivery to give up"
            )

    async def last_heard(self) -> dict[int, float]:
        """When each vessel was last heard from (vessels never heard are left out)."""
        async with self.store.db.transaction() as tx:
            heard = await self.store.links.last_heard(tx)
        return {vessel: at for vessel, at in heard.items() if at is not None}

    async def latest_head_at(self) -> float | None:
        """When the transparency log's latest tree head was signed (Unix time), or None."""
        async with self.store.db.transaction() as tx:
            minutes = await self.store.log.latest_head_minutes(tx)
        return None if minutes is None else minutes * 60.0

    async def summary(self, now: float) -> OpsSummary:
        """Fleet-wide counts for the metrics gauges."""
        store = self.store
        threshold = float(now) - self.silent_after_s
        async with store.db.transaction() as tx:
            vessels = await store.registry.listing(tx)
            heard = await store.links.last_heard(tx)
            queue = await store.delivery_queue.counts(tx)
            unacknowledged = await store.downlink_queue.count_unacknowledged(tx)
            quarantined, _ = await store.refusals.quarantine_counts(tx)
        silent = 0
        for vessel_id, _, _ in vessels:
            at = heard.get(vessel_id)
            silent += at is None or at < threshold
        return OpsSummary(
            len(vessels),
            silent,
            queue.queued,
            queue.retrying,
            queue.failed,
            unacknowledged,
            quarantined,
        )


def _failure_name(value: int | None) -> str:
    try:
        return FailureReason(int(value)).name  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def _refusal_name(value: int) -> str:
    try:
        return Reason(value).name
    except ValueError:
        return str(value)


def delivery_keys(rows: Sequence[FailingDelivery]) -> list[DeliveryKey]:
    """The keys of listed deliveries (for tests and bulk actions)."""
    return [DeliveryKey(row.vessel_id, row.message_seq) for row in rows]
