"""benchmarks/fleet.py runs end to end on a tiny fleet and reports consistent figures.

Speeds are the benchmark's to measure, not checked here; the report's shape and the
relations between its numbers are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["mosquitto", "nats-cluster"])
def test_fleet_benchmark_on_five_vessels_reports_every_batch_acknowledged(broker: str) -> None:
    """Five vessels, two sessions of ten messages each, one relay worker, through one
    Mosquitto or a three-node NATS cluster: all ten batches are acknowledged and the
    figures hang together, in the same columns for both brokers."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fleet.py"), "--vessels", "5",
         "--sessions", "2", "--day-s", "2", "--workers", "1", "--broker", broker, "--json"],
        capture_output=True, text=True, check=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["broker"] == broker
    (run,) = report["runs"]
    assert (run["workers"], run["vessels"], run["batches"]) == (1, 5, 10)
    assert run["messages"] == 100
    assert run["unacknowledged"] == 0
    assert 0 < run["latency_p50_ms"] <= run["latency_p99_ms"] <= run["latency_max_ms"]
    assert run["messages_per_s"] > 0
    assert run["db_rows_per_s"] > 0
    assert set(run["cpu_s"]) == {
        "broker",
        "postgres",
        "relay",
        "vessels (this process)",
        "other processes on the machine",
    }
