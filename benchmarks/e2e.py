"""The scripted month through the real system: agent, Mosquitto, relay, per link profile.

The same voyage as ``benchmarks/sessions.py`` (30 crew members writing home in their
languages from ``/work/shared/corpus``, grievance reports, an SOS; seeded) is played into
a real agent's HTTP API (:mod:`vessel_relay.demo.system`: agent and relay as processes,
Mosquitto, the link emulator shaped like the profile, an SMTP sink for the families).

**Time compression.** A month cannot take a month: the voyage is replayed ``C`` times
faster (``C`` = 30 days / ``--minutes``), and the scheduler's clocks are divided by the
same ``C``: a family message's 6 h latency target, a grievance's 1 h, the daily grievance
slots (one slot period = one voyage day: 10 s at the default 5 minutes), the idle poll
(Certus 12 h, FleetBroadband 6 h, VSAT 15 min), the minimum gap between sessions (60 s)
and the resend delay (1 h, floored at 5 s so a slow link's round trip fits). Arrival
order and the scheduler's rules are unchanged, so the sessions and bytes are the month's;
the link itself (latency, bandwidth) is *not* compressed, so ``p50_s``/``p99_s`` are
real seconds from acceptance on board to arrival at the family's mail server in the
compressed run: the link and system's own delay, plus the scaled waiting.

Link bytes are the emulator's count (payload + 52 B TCP/IP per segment + TCP open/close,
plain MQTT 5, no TLS); billed bytes apply the shipboard profile's tariff per session
(Certus: at least 5,120 B, 1 KB steps). Lost: accepted family messages that never reached
the sink; duplicated: Message-IDs that reached it more than once.

Usage::

    python benchmarks/e2e.py                      # table, 30-day month in ~5 min a profile
    python benchmarks/e2e.py --json --days 3      # a quicker, smaller run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sessions import DAY, MONTH_START, voyage
from shipboard.profiles import PROFILES
from vessel_relay import link_emulator
from vessel_relay.demo.setup import Tuning
from vessel_relay.demo.system import ProcessSystem

#: The emulated link for each shipboard profile (bandwidth and one-way latency as in
#: shipboard/profiles.py; jitter 0.2 s).
EMULATED = {
    name: link_emulator.LinkProfile(
        latency_s=profile.latency_s, jitter_s=0.2, bandwidth_bps=profile.bandwidth_bps
    )
    for name, profile in PROFILES.items()
}


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run_profile(name: str, days: float, minutes: float, workdir: Path) -> dict[str, object]:
    """Play the voyage through the system on one profile; return its figures."""
    profile = PROFILES[name]
    compression = days * DAY / (minutes * 60)
    # The daily grievance slots are compressed like every other clock: one slot period is
    # one voyage day (the agent accepts 10 s to a day, dividing a day).
    slot_period_s = round(DAY / compression)
    if slot_period_s < 10 or DAY % slot_period_s:
        raise SystemExit(
            f"e2e: a voyage day would last {DAY / compression:.1f} s; choose --minutes so "
            "that it is a whole number of seconds, at least 10, that divides 86400 "
            "(e.g. --days 30 --minutes 5)"
        )
    tuning = Tuning(
        slot_period_s=slot_period_s,
        profile=name,
        idle_poll_s=profile.idle_poll_s / compression,
        min_gap_s=60.0 / compression,
        resend_after_s=max(5.0, 3600.0 / compression),
        ack_wait_s=20.0,
        min_timeout_s=10.0,
        latency_s={
            "sos": 0.0,
            "grievance": 3600.0 / compression,
            "message": 6 * 3600.0 / compression,
        },
    )
    arrivals = [a for a in voyage()[0] if a.at < MONTH_START + days * DAY]
    system = ProcessSystem(
        workdir, vessel_count=1, crew_per_vessel=30, profile=EMULATED[name], tuning=tuning
    )
    await system.start()
    vessel = system.vessels[0]
    accepted: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=vessel.http_url, timeout=60.0) as http:
            tokens: dict[int, dict[str, str]] = {}
            for login in vessel.setup.crew:
                answer = await http.post("/api/login", json={"crew": login.crew, "pin": login.pin})
                answer.raise_for_status()
                tokens[login.crew] = {"Authorization": f"Bearer {answer.json()['token']}"}
            logins = {login.crew: login for login in vessel.setup.crew}
            started = time.monotonic()
            for arrival in arrivals:
                due = (arrival.at - MONTH_START) / compression
                wait = due - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
                crew = arrival.crew or 1
                headers = tokens[crew]
                if arrival.kind == "message":
                    body: dict[str, object] = {
                        "contact": logins[crew].contact,
                        "text": arrival.text,
                    }
                    answer = await http.post("/api/messages", json=body, headers=headers)
                    if answer.status_code == 201:
                        accepted.append(int(answer.json()["message_seq"]))
                elif arrival.kind == "grievance":
                    body = {"union": 1, "category": 8, "text": "wages withheld " * 8, "lang": "eng"}
                    await http.post("/api/grievances", json=body, headers=headers)
                else:
                    await http.post("/api/sos", json={"note": "fire"}, headers=headers)
        assert system.sink is not None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            seen = system.sink.first_seen()
            if all(f"<1.{seq}@relay.demo.example>" in seen for seq in accepted):
                break
            await asyncio.sleep(1.0)
        statistics = vessel.link.statistics()
    finally:
        await system.stop()
    assert system.sink is not None
    seen = system.sink.first_seen()
    ids = system.sink.message_ids()
    db = sqlite3.connect(vessel.setup.data_dir / "outbox.sqlite3")
    accepted_at = dict(db.execute("SELECT message_seq, accepted_at FROM messages").fetchall())
    db.close()
    latencies = [
        seen[f"<1.{seq}@relay.demo.example>"] - accepted_at[seq]
        for seq in accepted
        if f"<1.{seq}@relay.demo.example>" in seen
    ]
    sessions = [s for s in statistics.sessions if s.ip_bytes_estimate > 0]
    link_bytes = sum(s.ip_bytes_estimate for s in sessions)
    return {
        "messages": len(accepted),
        "link_bytes": link_bytes,
        "link_bytes_per_message": round(link_bytes / max(1, len(accepted)), 1),
        "sessions": len(sessions),
        "billed_bytes": sum(profile.billed_bytes(s.ip_bytes_estimate) for s in sessions),
        "p50_s": round(percentile(latencies, 0.5), 2),
        "p99_s": round(percentile(latencies, 0.99), 2),
        "lost": sum(1 for seq in accepted if f"<1.{seq}@relay.demo.example>" not in seen),
        "duplicated": sum(n - 1 for n in ids.values() if n > 1),
        "days": days,
        "compression": round(compression),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--days", type=float, default=30.0, help="days of the voyage to play")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall minutes per profile")
    parser.add_argument("--profile", action="append", help="only these profiles (repeatable)")
    arguments = parser.parse_args(argv)
    names = arguments.profile or list(PROFILES)
    report: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="vr-e2e-") as work:
        for name in names:
            report[name] = asyncio.run(
                run_profile(name, arguments.days, arguments.minutes, Path(work) / name)
            )
    if arguments.json:
        print(json.dumps({"profiles": report}, indent=2))
        return 0
    columns = (
        "messages",
        "link_bytes_per_message",
        "sessions",
        "billed_bytes",
        "p50_s",
        "p99_s",
        "lost",
        "duplicated",
    )
    print("| profile | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in report.items():
        print(
            f"| {name} | "
            + " | ".join(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns)
            + " |"
        )
    return 0


if __name__ == "__main__":
    random.seed(7)
    sys.exit(main())
