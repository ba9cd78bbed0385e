"""Agent metrics: sessions, bytes, batches and the outbox queue, for Prometheus.

``vessel-relay ship run --metrics-port 9102`` serves ``/metrics`` on 127.0.0.1 (the
vessel's own network; the crew Wi-Fi should not reach it). Labels carry only outcomes,
directions and states: never message text, names or numbers of crew members.

=================================================  ==========================================
metric                                             labels / meaning
=================================================  ==========================================
vessel_agent_sessions_total                        outcome (ok, failed)
vessel_agent_session_seconds (histogram)           one satellite session, connect to close
vessel_agent_link_bytes_total                      direction (uplink, downlink): payloads
vessel_agent_batches_total                         event (published, acknowledged, rejected)
vessel_agent_downlink_batches_total                outcome (applied, duplicate, refused)
vessel_agent_messages                              gauge by state (the outbox queue)
vessel_agent_batches_unacknowledged                gauge
vessel_agent_downlink_ack_pending                  gauge 0/1
=================================================  ==========================================

Sessions are counted by wrapping the link's session runner (:meth:`ShipMetrics.instrument`);
the outbox gauges are read every ``refresh_s`` on a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.metrics_http import serve_registry

log = logging.getLogger(__name__)

_SESSION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class SessionReportLike(Protocol):
    """What the metrics read of ``shipboard.link.SessionReport``."""

    @property
    def published(self) -> tuple[int, ...]: ...
    @property
    def acknowledged(self) -> tuple[int, ...]: ...
    @property
    def rejected(self) -> tuple[int, ...]: ...
    @property
    def downlink_applied(self) -> int: ...
    @property
    def downlink_duplicates(self) -> int: ...
    @property
    def downlink_refused(self) -> int: ...
    @property
    def uplink_payload_bytes(self) -> int: ...
    @property
    def downlink_payload_bytes(self) -> int: ...


class OutboxStatisticsLike(Protocol):
    """What the metrics read of ``shipboard.outbox.OutboxStatistics``."""

    @property
    def messages_by_state(self) -> Mapping[str, int]: ...
    @property
    def batches_unacknowledged(self) -> int: ...
    @property
    def downlink_ack_pending(self) -> bool: ...


class OutboxWithStatistics(Protocol):
    def statistics(self) -> OutboxStatisticsLike: ...


SessionRunner = Callable[..., Coroutine[Any, Any, Any]]


@dataclass
class ShipMetrics:
    """The agent's metrics; one instance (and registry) per process or test."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        p = "vessel_agent_"
        self.sessions = Counter(p + "sessions", "Satellite sessions", ["outcome"], registry=r)
        self.session_seconds = Histogram(
            p + "session_seconds", "Duration of one session", buckets=_SESSION_BUCKETS, registry=r
        )
        self.link_bytes = Counter(
            p + "link_bytes", "Batch payload bytes over the link", ["direction"], registry=r
        )
        self.batches = Counter(p + "batches", "Uplink batches by event", ["event"], registry=r)
        self.downlink_batches = Counter(
            p + "downlink_batches", "Downlink batches by outcome", ["outcome"], registry=r
        )
        self.messages = Gauge(p + "messages", "Outbox messages by state", ["state"], registry=r)
        self.batches_unacknowledged = Gauge(
            p + "batches_unacknowledged", "Uplink batches the shore has not acknowledged",
            registry=r,
        )  # fmt: skip
        self.downlink_ack_pending = Gauge(
            p + "downlink_ack_pending", "1 while a BatchAck to the shore is owed", registry=r
        )
        self._states: set[str] = set()

    def observe_session(self, report: SessionReportLike | None, seconds: float) -> None:
        """One session ended (``report`` None: it failed)."""
        self.session_seconds.observe(seconds)
        if report is None:
            self.sessions.labels("failed").inc()
            return
        self.sessions.labels("ok").inc()
        self.link_bytes.labels("uplink").inc(report.uplink_payload_bytes)
        self.link_bytes.labels("downlink").inc(report.downlink_payload_bytes)
        self.batches.labels("published").inc(len(report.published))
        self.batches.labels("acknowledged").inc(len(report.acknowledged))
        self.batches.labels("rejected").inc(len(report.rejected))
        self.downlink_batches.labels("applied").inc(report.downlink_applied)
        self.downlink_batches.labels("duplicate").inc(report.downlink_duplicates)
        self.downlink_batches.labels("refused").inc(report.downlink_refused)

    def instrument(self, runner: SessionRunner) -> SessionRunner:
        """Wrap the link's session runner so every session is counted and timed."""

        async def counted(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                report = await runner(*args, **kwargs)
            except Exception:
                self.observe_session(None, time.perf_counter() - started)
                raise
            self.observe_session(report, time.perf_counter() - started)
            return report

        return counted

    def set_outbox(self, stats: OutboxStatisticsLike) -> None:
        """Queue gauges from the outbox's statistics."""
        states = dict(stats.messages_by_state)
        for state in self._states - states.keys():
            self.messages.labels(state).set(0)
        for state, count in states.items():
            self.messages.labels(state).set(count)
        self._states |= states.keys()
        self.batches_unacknowledged.set(stats.batches_unacknowledged)
        self.downlink_ack_pending.set(1 if stats.downlink_ack_pending else 0)

    async def refresh_forever(
        self, outbox: OutboxWithStatistics, stopping: asyncio.Event, refresh_s: float = 15.0
    ) -> None:
        """Read the outbox gauges every ``refresh_s`` (on a thread) until ``stopping``."""
        while not stopping.is_set():
            try:
                self.set_outbox(await asyncio.to_thread(outbox.statistics))
            except Exception:  # outbox unavailable: the gauges keep their last values
                log.warning("metrics: outbox statistics failed", exc_info=True)
            try:
                async with asyncio.timeout(refresh_s):
                    await stopping.wait()
            except TimeoutError:
                pass


async def serve_metrics(
    metrics: ShipMetrics, host: str, port: int, stopping: asyncio.Event
) -> None:
    """Serve ``/metrics`` on ``host:port`` until ``stopping``."""
    await serve_registry(metrics.registry, host, port, stopping)
