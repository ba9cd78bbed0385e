"""benchmarks/e2e.py plays a voyage day through the real system and prints its contract JSON.

A one-day voyage compressed 2,880 times (30 s a day; the slot period is 30 s too) on the
Certus profile, through real agent and relay processes, Mosquitto and the link emulator.
Timings are the benchmark's to measure; this checks the report's shape, that every
accepted message is accounted for, and the relations that must hold between its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shipboard.profiles import IRIDIUM_CERTUS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.e2e import BenchmarkError, compression_for, tuning_for  # noqa: E402
from benchmarks.sessions import DAY, MONTH_START, voyage  # noqa: E402

CONTRACT_KEYS = {
    "messages",
    "link_bytes_per_message",
    "sessions",
    "billed_bytes",
    "p50_s",
    "p99_s",
    "lost",
    "duplicated",
    # the link bill (issue 20)
    "text_bytes",
    "billed_per_message",
    "grievance_channel_bytes",
    "idle_billed_bytes_per_month",
    "grievance_p95_s",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "e2e.py"), *args],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def certus_day() -> dict[str, object]:
    done = _run(
        "--json",
        "--days",
        "1",
        "--minutes",
        "0.4",
        "--drain-minutes",
        "2",
        "--profile",
        "iridium-certus",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"profiles"}
    assert set(report["profiles"]) == {"iridium-certus"}
    row = report["profiles"]["iridium-certus"]
    assert isinstance(row, dict)
    return row


@pytest.mark.broker
def test_a_day_through_the_system_is_delivered_once(certus_day: dict[str, object]) -> None:
    """Every family message of the voyage's first day is accepted and delivered exactly
    once, through a link compressed like the clocks (with an uncompressed 22 kbit/s link
    the day's slots alone would not fit)."""
    row = certus_day
    assert set(row) >= CONTRACT_KEYS
    expected = sum(1 for a in voyage()[0] if a.kind == "message" and a.at < MONTH_START + DAY)
    assert row["messages"] == expected > 100
    assert row["delivered"] == expected
    assert row["lost"] == row["duplicated"] == row["failed"] == row["undelivered"] == 0
    assert row["compression"] == 3600
    assert row["tls"] is True


@pytest.mark.broker
def test_the_bill_is_told_whole(certus_day: dict[str, object]) -> None:
    """The bill's figures are there and agree with each other: text bytes are the crew's
    UTF-8 bytes of the day, billed bytes per message are the billed bytes shared out, the
    grievance channel is part of the payload, every report filed reached the union's inbox
    with a delay, and an idle month bills at least one Certus session a day's worth of
    nothing."""
    row = certus_day
    day = [a for a in voyage()[0] if a.kind == "message" and a.at < MONTH_START + DAY]
    assert row["text_bytes"] == sum(len(a.text.encode("utf-8")) for a in day)
    assert row["billed_per_message"] == round(
        int(str(row["billed_bytes"])) / int(str(row["messages"])), 1
    )
    up, down = (
        int(str(row["grievance_channel_bytes_up"])),
        int(str(row["grievance_channel_bytes_down"])),
    )
    assert row["grievance_channel_bytes"] == up + down
    assert 0 < up <= int(str(row["link_payload_bytes_up"]))
    assert down <= int(str(row["link_payload_bytes_down"]))
    if int(str(row["grievances"])):
        assert row["grievances_in_union_inbox"] == row["grievances"]
        assert float(str(row["grievance_p95_s"])) > 0
    idle = int(str(row["idle_billed_bytes_per_month"]))
    assert idle >= 30 * IRIDIUM_CERTUS.min_session_bytes


@pytest.mark.broker
def test_bytes_sessions_and_latencies_agree(certus_day: dict[str, object]) -> None:
    """Billed bytes are at least the link bytes and at least Certus's 5,120 B a session;
    the link bytes per message are the link bytes shared out; a latency in voyage
    seconds is at least its compressed wall time and no more than the 6 h target times
    a few (the wait on board is scaled back, the rest is not)."""
    row = certus_day
    sessions = row["sessions"]
    billed = row["billed_bytes"]
    link_bytes = row["link_bytes"]
    assert isinstance(sessions, int)
    assert isinstance(billed, int)
    assert isinstance(link_bytes, int)
    assert sessions >= 2  # the day's messages cannot all wait for one session
    assert billed >= max(link_bytes, sessions * IRIDIUM_CERTUS.min_session_bytes)
    assert billed % IRIDIUM_CERTUS.increment_bytes == 0
    assert row["link_bytes_per_message"] == round(link_bytes / int(str(row["messages"])), 1)
    assert link_bytes >= int(str(row["link_payload_bytes_up"])) + int(
        str(row["link_payload_bytes_down"])
    )
    p50, p99 = float(str(row["p50_s"])), float(str(row["p99_s"]))
    wall50, wall99 = float(str(row["p50_wall_s"])), float(str(row["p99_wall_s"]))
    assert 0 < p50 <= p99 < 3 * 6 * 3600
    assert 0 < wall50 <= wall99
    assert p50 >= wall50


def test_compression_must_give_a_day_of_whole_lane_periods() -> None:
    """30 days in 6 minutes is 7,200 times (a 12 s day, a 3 s lane period); a day that is
    not a whole divisor of 86,400 seconds, not four whole lane periods, or shorter than
    10 s, is refused with what to choose."""
    assert compression_for(30, 6) == (7200.0, 12)
    assert compression_for(1, 0.4) == (3600.0, 24)
    with pytest.raises(BenchmarkError, match="divides 86400"):
        compression_for(30, 7)
    with pytest.raises(BenchmarkError, match="a multiple of 4"):
        compression_for(30, 5)  # a 10 s day: 2.5 s lane periods
    with pytest.raises(BenchmarkError, match="at least 10"):
        compression_for(30, 2)
    with pytest.raises(BenchmarkError, match="positive"):
        compression_for(0, 5)


def test_every_clock_of_the_agent_is_compressed() -> None:
    """The scheduler's targets (the defaults: 6 h for a family message, a day for the
    lane's blocks), idle poll, gap, the lane periods (6 h up, a day down), the
    downlink drain's quiet time and the age up to which a TLS ticket is offered again
    (the broker's two hours) are the real ones divided by the compression (floors where
    a real exchange needs them)."""
    tuning = tuning_for("iridium-certus", 7200.0, 12)
    assert tuning.latency_s["message"] == pytest.approx(6 * 3600 / 7200)
    assert tuning.latency_s["grievance"] == pytest.approx(24 * 3600 / 7200)
    assert tuning.idle_poll_s == pytest.approx(IRIDIUM_CERTUS.idle_poll_s / 7200)
    assert tuning.min_gap_s == pytest.approx(60 / 7200)
    assert (tuning.slot_period_s, tuning.down_period_s) == (3, 12)
    assert tuning.resend_after_s == 5.0  # floored: a round trip must fit
    assert tuning.downlink_quiet_s == 0.05  # floored: Mosquitto's own hand-over time
    assert tuning.tls_ticket_max_age_s == pytest.approx(7200 / 7200)  # the broker's 2 h
    assert tuning_for("vsat", 10.0, 8640).downlink_quiet_s == pytest.approx((4 * 0.05 + 0.5) / 10)


def test_bad_arguments_are_refused_before_anything_starts() -> None:
    """A compression that gives no usable slot period exits 2 with a clear message."""
    done = _run("--days", "30", "--minutes", "7")
    assert done.returncode == 2
    assert "divides 86400" in done.stderr
