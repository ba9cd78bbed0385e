"""benchmarks/e2e.py --profile mixed: the main link with outages, Iridium SBD and port sync.

A two-day voyage compressed 7,200 times (24 s) through real agent and relay processes,
Mosquitto, the link emulators, the emulated SBD modem on a pty and the fake RockBLOCK
provider posting to the relay's webhook. Timings are the benchmark's to measure; this
checks the report's shape, that every link carried and billed something, that the bill
adds up, and that nothing the crew sent was lost on the way.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from shipboard.config import load_config, to_toml
from shipboard.links import Availability, PortCarrier, SbdCarrier
from shipboard.profiles import IRIDIUM_CERTUS
from shipboard.sbd_link import SBD_CREDIT_BYTES
from shipboard.transport import LinkSettings
from vessel_relay.demo.defaults import demo_ship_document
from vessel_relay.demo.setup import Tuning
from vessel_relay.demo.system import PORT_INTERFACE, write_operstate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.e2e_mixed import (  # noqa: E402
    MIN_SBD_ACK_WAIT_S,
    Schedule,
    mixed_arrivals,
    mixed_tuning,
)
from benchmarks.sessions import DAY, MONTH_START  # noqa: E402
from tests.e2e.test_e2e_benchmark import CONTRACT_KEYS  # noqa: E402

MIXED_KEYS = {
    "main_profile",
    "links",
    "cost_usd",
    "cost_per_message_usd",
    "grievance_p50_s",
    "grievance_p99_s",
    "sos",
    "sos_arrived",
    "sos_over_sbd",
    "sos_in_outages",
    "sos_p50_s",
    "sos_p99_s",
    "latency",
    "never_arrived",
}
LINK_KEYS = {
    "profile",
    "sessions",
    "billed_bytes",
    "cost_usd",
    "billed_per_message",
    "cost_per_message_usd",
}


@pytest.fixture(scope="module")
def mixed_voyage() -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "e2e.py"),
            "--json",
            "--days",
            "2",
            "--minutes",
            "0.4",
            "--drain-minutes",
            "2",
            "--profile",
            "mixed",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert set(report["profiles"]) == {"mixed"}
    row = report["profiles"]["mixed"]
    assert isinstance(row, dict)
    return row


@pytest.mark.broker
def test_a_mixed_voyage_loses_nothing(mixed_voyage: dict[str, object]) -> None:
    """Two days with the main link out four times and the last hours in port: every
    family message is delivered once, every report reaches the union whole, every SOS
    (one in each outage, one in port) reaches the relay, and the SOS sent during outages
    left over SBD."""
    row = mixed_voyage
    assert set(row) >= CONTRACT_KEYS | MIXED_KEYS
    assert row["lost"] == row["duplicated"] == row["never_arrived"] == 0
    assert row["delivered"] == row["messages"]
    assert row["failed"] == row["undelivered"] == 0
    assert row["grievances_in_union_inbox"] == row["grievances"]
    assert row["sos"] == row["sos_arrived"] == 5
    assert row["sos_in_outages"] == 4
    assert 1 <= int(str(row["sos_over_sbd"])) <= 4
    assert row["main_profile"] == "iridium-certus"
    assert row["idle_billed_bytes_per_month"] is None


@pytest.mark.broker
def test_the_mixed_bill_adds_up_per_link(mixed_voyage: dict[str, object]) -> None:
    """Each way out carried something and is billed under its own tariff: Certus at least
    5,120 B a session in 1 KB steps, SBD in whole 50-byte credits for every MO and MT
    message, the port link per byte; the totals are the three links together, and each
    is shared out over the family messages."""
    row = mixed_voyage
    links = row["links"]
    assert isinstance(links, dict)
    assert set(links) == {"main", "sbd", "port"}
    messages = int(str(row["messages"]))
    for link in links.values():
        assert set(link) >= LINK_KEYS
        assert link["sessions"] > 0
        assert link["billed_bytes"] > 0
        assert link["billed_per_message"] == round(link["billed_bytes"] / messages, 1)
    main, sbd, port = links["main"], links["sbd"], links["port"]
    assert main["billed_bytes"] >= main["sessions"] * IRIDIUM_CERTUS.min_session_bytes
    assert main["billed_bytes"] % IRIDIUM_CERTUS.increment_bytes == 0
    assert sbd["billed_bytes"] == sbd["credits"] * SBD_CREDIT_BYTES
    assert sbd["credits"] >= sbd["mo_messages"] + sbd["mt_messages"] > 0
    assert port["billed_bytes"] == port["link_bytes"]
    assert row["billed_bytes"] == sum(link["billed_bytes"] for link in links.values())
    assert row["sessions"] == sum(link["sessions"] for link in links.values())
    assert math.isclose(
        float(str(row["cost_usd"])),
        sum(link["cost_usd"] for link in links.values()),
        abs_tol=1e-3,
    )
    # per credit, SBD is the dearest way out by far
    assert sbd["cost_usd"] / sbd["billed_bytes"] > main["cost_usd"] / main["billed_bytes"]


@pytest.mark.broker
def test_latency_is_told_per_class(mixed_voyage: dict[str, object]) -> None:
    """Family messages, grievance reports and SOS each have their p50 and p99 in voyage
    seconds, counted over what arrived; an SOS goes at once, so it waits less than the
    family messages' 6-hour target."""
    row = mixed_voyage
    latency = row["latency"]
    assert isinstance(latency, dict)
    assert set(latency) == {"family", "grievance", "sos"}
    assert latency["family"]["count"] == row["messages"]
    assert latency["grievance"]["count"] == row["grievances"]
    assert latency["sos"]["count"] == row["sos"]
    assert (latency["family"]["p50_s"], latency["family"]["p99_s"]) == (row["p50_s"], row["p99_s"])
    for figures in latency.values():
        if figures["count"]:
            assert 0 < figures["p50_s"] <= figures["p99_s"]
    assert latency["sos"]["p50_s"] < 6 * 3600


def test_the_schedule_fits_the_voyage() -> None:
    """A month's four outages (8 to 30 hours) and two port days; a shorter voyage keeps
    them in order, apart, and before port, with outages long enough for SBD to take
    over; an SOS falls inside each outage (the month's own SOS inside the third) and one
    in port."""
    month = Schedule.for_days(30)
    assert [length / 3600 for _, length in month.outages] == [8, 20, 30, 12]
    assert month.port_from_s == 28 * DAY
    for days in (2, 3, 30):
        schedule = Schedule.for_days(days)
        ends = 0.0
        for start, length in schedule.outages:
            assert start >= ends
            assert length >= 2 * 3600
            ends = start + length
        assert ends <= schedule.port_from_s < days * DAY
        sos = [a.at - MONTH_START for a in mixed_arrivals(days, 0, schedule) if a.kind == "sos"]
        month_sos = 1 if days > 15.3 else 0  # the month's own SOS, inside the third outage
        assert len(sos) == 5 + month_sos
        assert sum(schedule.in_outage(at) for at in sos) == 4 + month_sos
        assert any(at >= schedule.port_from_s for at in sos)


def test_the_fallback_and_port_clocks_are_compressed() -> None:
    """The main link's 15 minutes to "down", the reconnect backoff, the SBD session's
    waits and the port link's poll are the real ones divided by the compression, with
    floors where the machine's own round trip needs them."""
    tuning = mixed_tuning("iridium-certus", 7200.0, 12)
    assert tuning.after_down_s == pytest.approx(15 * 60 / 7200)
    assert tuning.reconnect_base_s == pytest.approx(15 / 7200)
    assert tuning.reconnect_cap_s == pytest.approx(1800 / 7200)
    assert tuning.fallback_reconnect_cap_s == pytest.approx(300 / 7200)
    assert tuning.sbd_ack_wait_s == MIN_SBD_ACK_WAIT_S
    assert tuning.port_idle_poll_s == pytest.approx(300 / 7200)
    assert mixed_tuning("fleetbroadband", 10.0, 8640).sbd_ack_wait_s == pytest.approx(18.0)


def test_the_port_link_is_in_reach_while_its_interface_says_up(tmp_path: Path) -> None:
    """The demo vessel's port carrier reads its interface's operstate where the tuning
    says (as the agent reads /sys/class/net): down, then up, then down again; the SBD
    fallback is the modem of [sbd] with the tuning's waits."""
    document = demo_ship_document(tmp_path)
    document["sbd"] = {"device": "/dev/null"}
    document["port"] = {"broker": "mqtt://127.0.0.1:1883", "interface": PORT_INTERFACE}
    path = tmp_path / "ship.toml"
    path.write_text(to_toml(document), encoding="utf-8")
    config = load_config(path, allow_demo_keys=True)
    sysfs = tmp_path / "net"
    write_operstate(sysfs, PORT_INTERFACE, "down")
    tuning = Tuning(port_sysfs=str(sysfs), sbd_mailbox_poll_s=0.5, sbd_ack_wait_s=2.0)
    options = tuning.link_options(config)
    port, fallback, settings = options["port"], options["fallback"], options["fallback_settings"]
    assert isinstance(port, PortCarrier)
    assert port.availability(0.0) is Availability.DOWN
    write_operstate(sysfs, PORT_INTERFACE, "up")
    assert port.availability(0.0) is Availability.UP
    write_operstate(sysfs, PORT_INTERFACE, "down")
    assert port.availability(0.0) is Availability.DOWN
    assert isinstance(fallback, SbdCarrier)
    assert fallback.mailbox_poll_s == 0.5
    assert isinstance(settings, LinkSettings)
    assert (settings.ack_wait_s, settings.profile.name) == (2.0, "iridium-sbd")
