"""``benchmarks/shore_throughput.py`` end to end on a tiny load: its JSON keeps the issue's
keys, every measured mail arrives once, and the warm-up's mails are not counted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_shore_throughput_on_two_vessels_reports_every_mail_once_after_its_warm_up() -> None:
    """Two vessels' two batches of five messages through Mosquitto to one relay worker on
    SQLite and its SMTP sink, after a warm-up of three batches of other vessels: the run
    counts exactly the twenty measured mails (none missing, none repeated), with latency
    and CPU figures that hang together."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "shore_throughput.py"), "--vessels", "2",
         "--batches", "2", "--messages", "5", "--runs", "sqlite:1", "--warmup-batches", "3",
         "--sink-messages", "0", "--json"],
        capture_output=True, text=True, check=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    (run,) = json.loads(done.stdout)["runs"]
    assert (run["store"], run["workers"]) == ("sqlite", 1)
    assert (run["messages"], run["undelivered"], run["repeats"]) == (20, 0, 0)
    assert run["msgs_per_s"] > 0
    assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
    assert run["relay_cpu_ms_per_msg"] > 0
    assert run["db_cpu_ms_per_msg"] == 0  # SQLite runs inside the relay
