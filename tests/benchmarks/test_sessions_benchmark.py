"""benchmarks/sessions.py tells a month's whole link bill, grievance lane included.

The figures are the benchmark's to measure; this checks that its report carries the bill's
keys on every profile, that they hang together, that an idle month still pays for the
grievance lane, that TLS is on unless asked otherwise, and that grievance reports do not
change what goes over the link.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from shipboard.profiles import IRIDIUM_CERTUS, PROFILES

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.sessions import (  # noqa: E402
    GRIEVANCES_PER_MONTH,
    Result,
    Voyage,
    print_table,
    run,
    to_json,
    voyage,
)

#: Keys the report had before the lane (kept: the README and scripts read them).
EARLIER_KEYS = {
    "sessions",
    "link_bytes",
    "billed_bytes",
    "idle_billed_bytes_per_month",
    "text_bytes",
}
#: The link bill (issue "the link bill", item 3).
BILL_KEYS = {
    "messages",
    "text_bytes_total",
    "billed_per_message",
    "grievance_channel_bytes",
    "grievance_channel_bytes_up",
    "grievance_channel_bytes_down",
    "grievance_p95_s",
}
LANE_BLOCK_BYTES = 384
#: Four uplink lane periods a day (six hours each) for thirty days.
LANE_BLOCKS_A_MONTH = 4 * 30


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sessions.py"), *args],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=ROOT,
    )


def _row(report: dict[str, dict[str, object]], name: str) -> dict[str, object]:
    profiles = to_json(report)["profiles"]
    assert isinstance(profiles, dict)
    row = profiles[name]
    assert isinstance(row, dict)
    return row


def _int(row: dict[str, object], key: str) -> int:
    value = row[key]
    assert isinstance(value, int), (key, value)
    assert not isinstance(value, bool), (key, value)
    return value


@pytest.fixture(scope="module")
def certus() -> dict[str, dict[str, object]]:
    """A month on Iridium Certus, 30 crew members writing home, reports and an SOS."""
    return run([IRIDIUM_CERTUS])


def test_the_bill_is_told_whole(certus: dict[str, dict[str, object]]) -> None:
    """An owner reads one month on Iridium Certus: every figure of the bill is there, the
    lane's share adds up from its two directions, the bill per message times the messages
    is the bill, and the texts counted are the crew's texts of that month."""
    row = _row(certus, IRIDIUM_CERTUS.name)
    assert set(row) >= EARLIER_KEYS | BILL_KEYS
    arrivals = voyage()[0]
    texts = [a.text for a in arrivals if a.kind == "message"]
    messages = _int(row, "messages")
    assert messages == len(texts) > 3000
    assert _int(row, "text_bytes_total") == sum(len(t.encode("utf-8")) for t in texts)
    billed = _int(row, "billed_bytes")
    per_message = row["billed_per_message"]
    assert isinstance(per_message, float)
    assert abs(per_message * messages - billed) <= 0.05 * messages  # rounded to 0.1 B
    up, down = _int(row, "grievance_channel_bytes_up"), _int(row, "grievance_channel_bytes_down")
    assert _int(row, "grievance_channel_bytes") == up + down
    # every block that went is on the wire whole, with framing besides
    assert up >= _int(row, "lane_blocks_up") * LANE_BLOCK_BYTES > 0
    assert down >= _int(row, "lane_blocks_down") * LANE_BLOCK_BYTES > 0
    assert up + down < _int(row, "link_bytes") <= billed
    parts = row["link_bytes_by_part"]
    assert isinstance(parts, dict)
    assert sum(parts.values()) == _int(row, "link_bytes")
    per_crew = row["text_bytes"]
    assert isinstance(per_crew, dict)
    assert len(per_crew) == 30
    assert 0 < sum(per_crew.values()) <= _int(row, "text_bytes_total")
    assert row["tls"] is True


def test_every_report_of_the_month_arrives_and_its_delay_is_told(
    certus: dict[str, dict[str, object]],
) -> None:
    """The month's reports (30 a month on average) all reach the union through the lane's
    blocks; the 95th percentile of filing-to-carried lies within the slowest report's
    delay, and a report waits at least for its lane period's end."""
    row = _row(certus, IRIDIUM_CERTUS.name)
    result = certus[IRIDIUM_CERTUS.name]["_extra"]
    assert isinstance(result, Result)
    reports = sum(1 for a in voyage()[0] if a.kind == "grievance")
    assert _int(row, "grievances") == reports == len(result.grievance_delays_s) > 10
    p95 = row["grievance_p95_s"]
    assert isinstance(p95, int)
    assert 0 < p95 <= _int(row, "grievance_max_delay_s")
    assert min(result.grievance_delays_s) > 0


def test_an_idle_month_still_pays_for_the_lane(certus: dict[str, dict[str, object]]) -> None:
    """A month with nobody writing: the vessel still sends four lane blocks a day up and
    receives the relay's daily block, so the idle month is billed, every session at least
    the Certus minimum."""
    row = _row(certus, IRIDIUM_CERTUS.name)
    idle = _int(row, "idle_billed_bytes_per_month")
    sessions = _int(row, "idle_sessions_per_month")
    assert sessions >= 29  # the lane's blocks are due a day after their period
    assert idle >= sessions * IRIDIUM_CERTUS.min_session_bytes > 0
    assert _int(row, "idle_lane_blocks_up") >= LANE_BLOCKS_A_MONTH
    assert _int(row, "idle_lane_blocks_down") >= 29
    lane = _int(row, "idle_grievance_channel_bytes")
    assert lane >= (LANE_BLOCKS_A_MONTH + 29) * LANE_BLOCK_BYTES
    assert idle < _int(row, "billed_bytes")


def test_the_relay_holds_news_for_the_next_session(certus: dict[str, dict[str, object]]) -> None:
    """The relay coalesces (``protocol.exchange.downlink_release_due``): on Iridium Certus,
    a few sessions a day, a month's DELIVERED receipts, replies and lane blocks wait ashore
    while a batch is in flight and come with the answer to the vessel's next uplink. So the
    relay makes at most two downlink batches a session (an idle month reaches two: the
    lane's daily block at the broker, then the bare BatchAck answering the lane's uplink),
    a busy month about one (found: 122 for 120 sessions), and most downlink bytes arrive
    within sessions, not from the broker."""
    row = _row(certus, IRIDIUM_CERTUS.name)
    sessions, batches = _int(row, "sessions"), _int(row, "downlink_batches")
    assert 0 < batches <= 1.1 * sessions
    idle_sessions = _int(row, "idle_sessions_per_month")
    assert 0 < _int(row, "idle_downlink_batches") <= 2 * idle_sessions
    parts = row["link_bytes_by_part"]
    assert isinstance(parts, dict)
    assert 0 <= parts["downlink_queued"] < parts["downlink_answers"]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_reports_do_not_change_the_wire_of_a_quiet_month(name: str) -> None:
    """A month with no family traffic, once with the month's grievance reports and once
    without: the union reads every report, yet sessions, link bytes, billed bytes and the
    lane's bytes are exactly the same (lane batches hold nothing but sealed blocks)."""
    codebook = default_codebook()
    profile = PROFILES[name]
    reports = Voyage(profile, codebook, False, grievances=GRIEVANCES_PER_MONTH).run()
    quiet = Voyage(profile, codebook, False, grievances=0).run()
    assert reports.grievances == len(reports.grievance_delays_s) > 10
    assert quiet.grievances == 0
    seen = [
        (r.sessions, r.link_bytes, r.billed_bytes, r.lane_bytes_up, r.lane_bytes_down)
        for r in (reports, quiet)
    ]
    assert seen[0] == seen[1]
    assert (reports.lane_blocks_up, reports.lane_blocks_down) == (
        quiet.lane_blocks_up,
        quiet.lane_blocks_down,
    )
    assert reports.lane_blocks_up >= LANE_BLOCKS_A_MONTH


def test_reports_do_not_change_the_wire_of_a_busy_month(
    certus: dict[str, dict[str, object]],
) -> None:
    """The same busy month on Iridium Certus with the month's reports and without any:
    the same sessions carry the same number of lane blocks each way. Bytes may differ only
    by the compression noise of random sealed blocks next to crew texts (the same with
    cover alone, from run to run: the benchmark's docstring): at most two billing steps
    and 0.1 % of the link bytes."""
    with_reports = certus[IRIDIUM_CERTUS.name]["_extra"]
    assert isinstance(with_reports, Result)
    without = Voyage(IRIDIUM_CERTUS, default_codebook(), True, grievances=0).run()
    assert without.grievances == 0 < with_reports.grievances
    assert without.sessions == with_reports.sessions
    assert without.messages == with_reports.messages
    assert (without.lane_blocks_up, without.lane_blocks_down) == (
        with_reports.lane_blocks_up,
        with_reports.lane_blocks_down,
    )
    billing_step = IRIDIUM_CERTUS.increment_bytes
    assert abs(without.billed_bytes - with_reports.billed_bytes) <= 2 * billing_step
    assert abs(without.link_bytes - with_reports.link_bytes) <= 0.001 * with_reports.link_bytes


def test_the_table_says_tls_is_on(
    certus: dict[str, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed table says the figures are for MQTT over TLS 1.3, as deployed, and
    shows the bill's new columns for the profile."""
    print_table(certus)
    out = capsys.readouterr().out
    assert "MQTT over TLS 1.3 (as deployed)" in out.splitlines()[0]
    for column in ("billed B/msg", "idle billed B/mo", "lane B up", "lane B dn", "griev. p95 h"):
        assert column in out
    (line,) = [line for line in out.splitlines() if line.startswith(IRIDIUM_CERTUS.name)]
    billed = _int(_row(certus, IRIDIUM_CERTUS.name), "billed_bytes")
    assert f"{billed:,}" in line


def test_no_tls_prices_plain_mqtt_and_says_so(certus: dict[str, dict[str, object]]) -> None:
    """Asked for plain MQTT, the table says so (not as deployed) and the same month costs
    less link than with TLS (no handshakes, no TLS records)."""
    done = _cli("--profile", IRIDIUM_CERTUS.name, "--no-tls")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "plain MQTT" in lines[0]
    assert "NOT as deployed" in lines[0]
    (line,) = [line for line in lines if line.startswith(IRIDIUM_CERTUS.name)]
    plain_link_bytes = int(line.split()[2].replace(",", ""))
    assert 0 < plain_link_bytes < _int(_row(certus, IRIDIUM_CERTUS.name), "link_bytes")


def test_a_negative_number_of_reports_is_refused() -> None:
    """``--grievances -1`` is a usage error that says what is wrong."""
    done = _cli("--grievances", "-1")
    assert done.returncode == 2
    assert "--grievances must not be negative" in done.stderr


@pytest.mark.slow
def test_the_json_covers_every_profile_with_tls_on() -> None:
    """``--json`` as the README is made from it: every built-in profile, every key of the
    bill, TLS on, and the lane's share adding up on each."""
    done = _cli("--json")
    assert done.returncode == 0, done.stderr
    profiles = json.loads(done.stdout)["profiles"]
    assert set(profiles) == set(PROFILES)
    for name, row in profiles.items():
        assert set(row) >= EARLIER_KEYS | BILL_KEYS, name
        assert row["tls"] is True
        assert row["grievance_channel_bytes"] == (
            row["grievance_channel_bytes_up"] + row["grievance_channel_bytes_down"]
        )
        assert row["idle_lane_blocks_up"] >= LANE_BLOCKS_A_MONTH
        assert 0 < row["idle_billed_bytes_per_month"] < row["billed_bytes"]
