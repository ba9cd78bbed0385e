"""The gauges read from the shared store come from one relay worker only (issue 22): a sum
over a fleet of workers must not count the queues, the quarantine or the vessels once per
worker, while every worker keeps its own counters."""

from __future__ import annotations

from prometheus_client import generate_latest

from shore.config import parse_config
from shore.metrics import RelayMetrics
from shore.store.ops import OpsSummary

FLEET_GAUGES = (
    "vessel_relay_vessels ",
    "vessel_relay_deliveries_queued ",
    "vessel_relay_quarantine_entries ",
    "vessel_relay_log_head_signed_timestamp_seconds ",
)


def exposition(metrics: RelayMetrics) -> str:
    return generate_latest(metrics.registry).decode("utf-8")


def test_only_the_chosen_worker_exports_the_fleet_gauges() -> None:
    """Three workers of one relay, worker 1 the default one for the fleet gauges: worker 1's
    /metrics has them, workers 2 and 3 leave them out; an operator can move them to worker
    3 with ``[relay] fleet_gauges_worker``."""
    chosen = [parse_config({"relay": {"worker": n}}).exports_fleet_gauges for n in (1, 2, 3)]
    assert chosen == [True, False, False]
    moved = [
        parse_config({"relay": {"worker": n, "fleet_gauges_worker": 3}}).exports_fleet_gauges
        for n in (1, 2, 3)
    ]
    assert moved == [False, False, True]


def test_a_worker_without_fleet_gauges_still_counts_its_own_work() -> None:
    """Worker 2 sets the store's summary (as a refresh would) and counts its own ingest:
    none of the store's gauges appears in its /metrics, its own counters and build_info do;
    worker 1 shows the summary."""
    summary = OpsSummary(
        vessels=4,
        vessels_silent=1,
        deliveries_queued=9,
        deliveries_retrying=2,
        deliveries_failed=1,
        downlink_unacknowledged=3,
        quarantine_entries=5,
    )
    quiet, chosen = RelayMetrics(fleet_gauges=False), RelayMetrics()
    for metrics in (quiet, chosen):
        metrics.set_summary(summary)
        metrics.observe_ingest(7, "stored", 300, 2, 0, 0.01, None)
    quiet_text, chosen_text = exposition(quiet), exposition(chosen)
    for name in FLEET_GAUGES:
        assert name not in quiet_text
    assert "vessel_relay_vessels 4.0" in chosen_text
    assert "vessel_relay_deliveries_queued 9.0" in chosen_text
    for text in (quiet_text, chosen_text):
        assert "vessel_relay_build_info{" in text
        assert 'vessel_relay_messages_total{outcome="stored"} 2.0' in text
