"""``benchmarks/shore_throughput.py`` end to end on a tiny load, into each of its SMTP sinks:
its JSON keeps the issue's keys and names the sink, every measured mail arrives once, and
the warm-up's mails are not counted; without smtp-sink it stops and says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = ROOT / "benchmarks" / "shore_throughput.py"


@pytest.mark.parametrize("sink", ["smtp-sink", "aiosmtpd"])
def test_shore_throughput_on_two_vessels_reports_every_mail_once_after_its_warm_up(
    sink: str,
) -> None:
    """Two vessels' two batches of five messages through Mosquitto to one relay worker on
    SQLite and the SMTP sink, after a warm-up of three batches of other vessels (fifteen
    mails the sink also takes) and the sink measured alone (forty mails): the run counts
    exactly the twenty measured mails (none missing, none repeated), with latency and CPU
    figures that hang together, and names its sink."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--vessels", "2", "--batches", "2", "--messages",
         "5", "--runs", "sqlite:1", "--warmup-batches", "3", "--sink-messages", "40",
         "--sink", sink, "--json"],
        capture_output=True, text=True, check=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    out = json.loads(done.stdout)
    (run,) = out["runs"]
    assert (run["store"], run["workers"], run["sink"]) == ("sqlite", 1, sink)
    assert (run["messages"], run["undelivered"], run["repeats"]) == (20, 0, 0)
    assert run["msgs_per_s"] > 0
    assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
    assert run["relay_cpu_ms_per_msg"] > 0
    assert run["db_cpu_ms_per_msg"] == 0  # SQLite runs inside the relay
    assert out["sink"]["messages"] == 40
    assert out["sink"]["msgs_per_s"] > 0


def test_shore_throughput_without_smtp_sink_stops_and_names_the_ways_out(
    tmp_path: Path,
) -> None:
    """An smtp-sink that cannot run is not silently replaced by aiosmtpd: the benchmark
    stops before measuring and says to install it or to choose ``--sink aiosmtpd``."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--runs", "sqlite:1", "--json"],
        capture_output=True, text=True, check=False, timeout=60, cwd=ROOT,
        env={**os.environ, "VESSEL_RELAY_SMTP_SINK": str(tmp_path / "no-smtp-sink")},
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stdout == ""
    assert "scripts/install-smtp-sink" in done.stderr
    assert "--sink aiosmtpd" in done.stderr
