"""Relay metrics: a Prometheus registry per relay worker, served on a local HTTP port.

``vessel-relay shore run --metrics-port 9101`` serves ``/metrics`` (text exposition) on
127.0.0.1 (``--metrics-host`` to change). Labels carry only vessel ids, outcomes,
directions, destinations and reasons: never message text, names or addresses.

Counters are fed by ingest, the downlink publisher and the delivery workers as they work;
gauges that describe the whole relay (queue depths, vessels silent, quarantine entries,
unacknowledged downlink batches) are read from the store every ``refresh_s`` by
:meth:`RelayMetrics.refresh_forever`, so with several workers every worker reports the
same shared figures (take ``max`` across workers, not ``sum``).

=====================================================  ====================================
metric                                                 labels
=====================================================  ====================================
vessel_relay_batches_total                             outcome (stored, duplicate,
                                                       rejected, quarantined)
vessel_relay_messages_total                            outcome (stored, repeated)
vessel_relay_link_bytes_total                          direction (uplink, downlink), kind
vessel_relay_vessel_link_bytes_total                   vessel, direction
vessel_relay_quarantined_total                         reason
vessel_relay_ingest_seconds (histogram)                outcome
vessel_relay_deliveries_total                          destination, outcome (delivered,
                                                       failed, retry)
vessel_relay_delivery_repeats_total                    destination (resent with the same
                                                       Message-ID after a crash mid-send)
vessel_relay_delivery_seconds (histogram)              destination (accepted ashore to
                                                       final outcome)
vessel_relay_delivery_attempt_seconds (histogram)      destination
vessel_relay_broker_sessions_total                     (MQTT connections made)
vessel_relay_broker_connected                          gauge 0/1
vessel_relay_vessels, _vessels_silent                  gauges
vessel_relay_vessel_last_heard_timestamp_seconds       vessel (alert on time() - this)
vessel_relay_deliveries_queued, _retrying, _failed     gauges (the shared queue)
vessel_relay_downlink_unacknowledged                   gauge
vessel_relay_quarantine_entries                        gauge
vessel_relay_ingest_pending                            gauge: uplink batches waiting in the
                                                       broker's stream ([broker] kind =
                                                       "nats" only; shared by every worker)
vessel_relay_log_head_signed_timestamp_seconds         gauge: when the transparency log's
                                                       latest tree head was signed
vessel_relay_build_info                                version, revision (always 1)
vessel_relay_purges_total                              (retention purges that removed content)
vessel_relay_purged_messages_total                     (family messages whose content went)
vessel_relay_purged_content_bytes_total                (bytes of text and speech purged)
vessel_relay_purged_downlink_batches_total, _bytes     (acknowledged downlink batches purged,
                                                       with the families' replies' text)
vessel_relay_expired_messages_total                    (family messages failed for their TTL
                                                       by the retention pass; those a
                                                       delivery worker's claim fails are
                                                       logged one by one, not counted here)
=====================================================  ====================================
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from common.build import installed_version, source_revision
from common.metrics_http import serve_registry
from shore.store.ops import OpsSummary
from shore.store.uplink import IngestOutcome
from shore.vocabulary import AttemptEnd

log = logging.getLogger(__name__)

#: Ingest outcomes after which the vessel counts as heard from.
_HEARD = (IngestOutcome.STORED.value, IngestOutcome.DUPLICATE.value)


class FleetGauges(Protocol):
    """Where the shared gauges come from (``shore.store.ops.OperatorQueries`` has it)."""

    async def summary(self, now: float) -> OpsSummary:
        """Fleet-wide counts."""

    async def last_heard(self) -> dict[int, float]:
        """When each vessel was last heard from."""

    async def latest_head_at(self) -> float | None:
        """When the transparency log's latest tree head was signed, or None."""


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DELIVERY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)


@dataclass
class RelayMetrics:
    """The relay worker's metrics; one instance (and registry) per process or test.

    ``version`` and ``revision`` label ``vessel_relay_build_info`` (the installed version
    and the git commit of a checkout, by default)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    version: str = field(default_factory=installed_version)
    revision: str = field(default_factory=source_revision)
    #: Whether this worker exports the fleet gauges read from the shared store (vessels,
    #: queues, quarantine, last heard, log head): one worker of a fleet does
    #: (``[relay] fleet_gauges_worker``), so a sum over workers does not count them twice.
    fleet_gauges: bool = True

    def __post_init__(self) -> None:
        r = self.registry
        # the store's gauges go unregistered (registry None) where another worker exports them
        fleet = r if self.fleet_gauges else None
        p = "vessel_relay_"
        self.build_info = Info(p + "build", "The relay's version and git revision", registry=r)
        self.build_info.info({"version": self.version, "revision": self.revision})
        self.batches = Counter(p + "batches", "Uplink batches by outcome", ["outcome"], registry=r)
        self.messages = Counter(
            p + "messages", "Uplink messages by outcome (repeated: Message-ID seen before)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.link_bytes = Counter(
            p + "link_bytes", "Payload bytes over the broker", ["direction", "kind"], registry=r
        )
        self.vessel_link_bytes = Counter(
            p + "vessel_link_bytes", "Payload bytes per vessel", ["vessel", "direction"],
            registry=r,
        )  # fmt: skip
        self.quarantined = Counter(
            p + "quarantined", "Payloads quarantined, by reason", ["reason"], registry=r
        )
        self.ingest_seconds = Histogram(
            p + "ingest_seconds", "Time to verify and commit one uplink payload", ["outcome"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.deliveries = Counter(
            p + "deliveries", "Delivery attempts by destination and outcome",
            ["destination", "outcome"], registry=r,
        )  # fmt: skip
        self.delivery_repeats = Counter(
            p + "delivery_repeats",
            "Deliveries resent with the same Message-ID after an unfinished attempt",
            ["destination"], registry=r,
        )  # fmt: skip
        self.delivery_seconds = Histogram(
            p + "delivery_seconds", "From acceptance ashore to the final outcome",
            ["destination"], buckets=_DELIVERY_BUCKETS, registry=r,
        )  # fmt: skip
        self.attempt_seconds = Histogram(
            p + "delivery_attempt_seconds", "Duration of one delivery attempt", ["destination"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.broker_sessions = Counter(
            p + "broker_sessions", "MQTT connections made to the broker", registry=r
        )
        self.broker_connected = Gauge(
            p + "broker_connected", "1 while connected to the broker", registry=r
        )
        self.vessels = Gauge(p + "vessels", "Registered vessels", registry=fleet)
        self.vessels_silent = Gauge(
            p + "vessels_silent", "Vessels not heard from within the silence threshold",
            registry=fleet,
        )  # fmt: skip
        self.deliveries_queued = Gauge(
            p + "deliveries_queued", "Deliveries without a final outcome", registry=fleet
        )
        self.deliveries_retrying = Gauge(
            p + "deliveries_retrying", "Queued deliveries with a failed attempt", registry=fleet
        )
        self.deliveries_failed = Gauge(
            p + "deliveries_failed", "Deliveries failed for good", registry=fleet
        )
        self.downlink_unacknowledged = Gauge(
            p + "downlink_unacknowledged", "Downlink batches not yet acknowledged", registry=fleet
        )
        self.vessel_last_heard = Gauge(
            p + "vessel_last_heard_timestamp_seconds",
            "When the vessel's last authentic batch arrived (Unix time)", ["vessel"],
            registry=fleet,
        )  # fmt: skip
        self.quarantine_entries = Gauge(
            p + "quarantine_entries", "Distinct payloads in quarantine", registry=fleet
        )
        self.log_head_signed = Gauge(
            p + "log_head_signed_timestamp_seconds",
            "When the transparency log's latest tree head was signed (Unix time)",
            registry=fleet,
        )
        self.ingest_pending = Gauge(
            p + "ingest_pending",
            "Uplink batches waiting in the broker's stream for a relay worker (NATS only)",
            registry=r,
        )
        self.purges = Counter(
            p + "purges", "Retention purges that removed message content", registry=r
        )
        self.purged_messages = Counter(
            p + "purged_messages", "Family messages whose content the retention purged",
            registry=r,
        )  # fmt: skip
        self.purged_content_bytes = Counter(
            p + "purged_content_bytes", "Bytes of message text and speech purged", registry=r
        )
        self.purged_downlink_batches = Counter(
            p + "purged_downlink_batches",
            "Acknowledged downlink batches whose bytes and replies' text were purged",
            registry=r,
        )  # fmt: skip
        self.purged_downlink_bytes = Counter(
            p + "purged_downlink_bytes", "Bytes of acknowledged downlink batches purged",
            registry=r,
        )  # fmt: skip
        self.expired_messages = Counter(
            p + "expired_messages", "Family messages failed because their time to live passed",
            registry=r,
        )  # fmt: skip

    # --- fed by the services ----------------------------------------------------------------

    def observe_ingest(
        self,
        vessel_id: int | None,
        outcome: str,
        link_bytes: int,
        new_messages: int,
        repeated_messages: int,
        seconds: float,
        quarantine_reason: str | None = None,
    ) -> None:
        """One uplink payload handled (outcome: stored, duplicate, rejected, quarantined)."""
        self.batches.labels(outcome).inc()
        self.link_bytes.labels("uplink", outcome).inc(link_bytes)
        if vessel_id is not None:
            self.vessel_link_bytes.labels(str(vessel_id), "uplink").inc(link_bytes)
            if outcome in _HEARD:
                self.vessel_last_heard.labels(str(vessel_id)).set(time.time())
        if new_messages:
            self.messages.labels("stored").inc(new_messages)
        if repeated_messages:
            self.messages.labels("repeated").inc(repeated_messages)
        if quarantine_reason is not None:
            self.quarantined.labels(quarantine_reason).inc()
        self.ingest_seconds.labels(outcome).observe(seconds)

    def observe_downlink(self, vessel_id: int, link_bytes: int) -> None:
        """One downlink batch published (PUBACKed by the broker)."""
        self.link_bytes.labels("downlink", "batch").inc(link_bytes)
        self.vessel_link_bytes.labels(str(vessel_id), "downlink").inc(link_bytes)

    def observe_delivery(
        self,
        destination: str,
        outcome: str,
        attempt_seconds: float,
        since_accepted_s: float | None,
        repeat: bool,
    ) -> None:
        """One delivery attempt (outcome: delivered, failed, retry)."""
        self.deliveries.labels(destination, outcome).inc()
        self.attempt_seconds.labels(destination).observe(attempt_seconds)
        if repeat:
            self.delivery_repeats.labels(destination).inc()
        if since_accepted_s is not None and outcome != AttemptEnd.RETRY:
            self.delivery_seconds.labels(destination).observe(max(0.0, since_accepted_s))

    def observe_purge(
        self, messages: int, content_bytes: int, downlink_batches: int, downlink_bytes: int
    ) -> None:
        """One retention purge: the content of ``messages`` family messages and the bytes
        of ``downlink_batches`` acknowledged downlink batches (with their replies' text)."""
        self.purges.inc()
        self.purged_messages.inc(messages)
        self.purged_content_bytes.inc(content_bytes)
        self.purged_downlink_batches.inc(downlink_batches)
        self.purged_downlink_bytes.inc(downlink_bytes)

    def observe_expired(self, messages: int) -> None:
        """Family messages failed because their time to live passed."""
        self.expired_messages.inc(messages)

    def broker_up(self) -> None:
        """Connected and subscribed."""
        self.broker_sessions.inc()
        self.broker_connected.set(1)

    def observe_ingest_pending(self, batches: int) -> None:
        """Batches waiting in the broker's stream (not yet delivered to, or not yet
        acknowledged by, any worker)."""
        self.ingest_pending.set(batches)

    def broker_down(self) -> None:
        """The broker connection ended."""
        self.broker_connected.set(0)

    def set_summary(self, summary: OpsSummary) -> None:
        """Shared gauges from the store."""
        self.vessels.set(summary.vessels)
        self.vessels_silent.set(summary.vessels_silent)
        self.deliveries_queued.set(summary.deliveries_queued)
        self.deliveries_retrying.set(summary.deliveries_retrying)
        self.deliveries_failed.set(summary.deliveries_failed)
        self.downlink_unacknowledged.set(summary.downlink_unacknowledged)
        self.quarantine_entries.set(summary.quarantine_entries)

    async def refresh_forever(
        self,
        gauges: FleetGauges,
        stopping: asyncio.Event,
        *,
        refresh_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Read the shared gauges from the store every ``refresh_s`` until ``stopping``."""
        while not stopping.is_set():
            try:
                self.set_summary(await gauges.summary(clock()))
                for vessel_id, heard_at in (await gauges.last_heard()).items():
                    self.vessel_last_heard.labels(str(vessel_id)).set(heard_at)
                head_at = await gauges.latest_head_at()
                if head_at is not None:
                    self.log_head_signed.set(head_at)
            except Exception:  # the store is down: the gauges keep their last values
                log.warning("metrics: store summary failed; gauges not refreshed", exc_info=True)
            try:
                async with asyncio.timeout(refresh_s):
                    await stopping.wait()
            except TimeoutError:
                pass


async def serve_metrics(
    metrics: RelayMetrics, host: str, port: int, stopping: asyncio.Event
) -> None:
    """Serve ``/metrics`` on ``host:port`` until ``stopping``."""
    await serve_registry(metrics.registry, host, port, stopping)
