"""The scripted month through the real system: agent, Mosquitto, relay, per link profile.

The same voyage as ``benchmarks/sessions.py`` (30 crew members writing home in their
languages from the repository's ``corpus/``, grievance reports, an SOS; seeded) is played into
a real agent's HTTP API (:mod:`vessel_relay.demo.system`: agent and relay as processes,
Mosquitto, the link emulator shaped like the profile, an SMTP sink for the families).

**Time compression.** A month cannot take a month: the voyage is replayed ``C`` times
faster (``C`` = days x 86,400 / (``--minutes`` x 60); 8,640 for a 30-day month in 5
minutes), and every clock is divided by the same ``C``:

- the scheduler's: a family message's 6 h latency target, a grievance's 1 h, the idle
  poll (Certus 12 h, FleetBroadband 6 h, VSAT 15 min), the minimum gap between sessions
  (60 s), the resend delay (1 h, floored at 5 s), the downlink drain's quiet time (four
  one-way latencies plus 0.5 s, floored at 50 ms);
- the daily grievance slots (one slot period = one voyage day: 10 s at ``C`` = 8,640);
- the link's (:meth:`~vessel_relay.link_emulator.LinkProfile.time_compressed`): latency
  and jitter divided by ``C``, bandwidth multiplied by it. A real day's traffic (30 crew
  members' slots alone are 61 KB) fits a 22 kbit/s link many times over; squeezed into
  10 s through an uncompressed 22 kbit/s pipe it would not fit at all.

What is *not* compressed is the machine's own work (a session's MQTT exchanges, the
relay's ingest and delivery: tens to hundreds of milliseconds). Seen through ``C`` that
is minutes to hours of voyage time, so a session looks longer than it is, and a profile
whose sessions come more often than the machine can open them in compressed time (VSAT's
15-minute poll is 0.1 s at ``C`` = 8,640) gets fewer, fuller sessions than a real month.
``sessions`` says how many there were; a smaller ``C`` (more ``--minutes``) brings the
count closer to a real month's.

**Latency.** ``p50_s``/``p99_s`` are voyage seconds from acceptance on board to arrival at
the family's mail server: the wait on board until the message is put in a batch (a
compressed clock, multiplied back by ``C``) plus the rest as measured (the session, the
relay and the SMTP delivery, real seconds). The real link's round trips and transfer
time (a few seconds on a satellite) are not in that rest, because the compressed link
takes 1/``C`` of them. ``p50_wall_s``/``p99_wall_s`` are the compressed run's wall seconds.

**Counts.** Link bytes are the emulator's count (payload + 52 B TCP/IP per segment + TCP
open/close, plain MQTT 5, no TLS), daily grievance slots included; billed bytes apply the
shipboard profile's tariff per session (Certus: at least 5,120 B, 1 KB steps). After the
voyage the system gets ``--drain-minutes`` to deliver what is still on its way. Then each
accepted family message is exactly one of: ``delivered`` (its Message-ID reached the
sink), ``failed`` (reported back to the vessel as failed), ``lost`` (the vessel holds a
delivery receipt for it, yet the sink never saw it) or ``undelivered`` (still on its way
at the deadline: on board or at the relay). ``duplicated``: Message-IDs that reached the
sink more than once. The benchmark exits 1 if anything was lost or duplicated.

Usage::

    python benchmarks/e2e.py                      # table, 30-day month in ~5 min a profile
    python benchmarks/e2e.py --json --days 3      # a quicker, smaller run
    python benchmarks/e2e.py --profile vsat --minutes 30   # closer to a real month's sessions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sessions import DAY, MONTH_START, Arrival, voyage
from shipboard.profiles import PROFILES
from vessel_relay import link_emulator
from vessel_relay.demo.setup import Tuning, VesselSetup
from vessel_relay.demo.system import ProcessSystem

#: The emulated link for each shipboard profile, in real time (bandwidth and one-way
#: latency as in shipboard/profiles.py; jitter 0.2 s). Each run compresses it.
EMULATED = {
    name: link_emulator.LinkProfile(
        latency_s=profile.latency_s, jitter_s=0.2, bandwidth_bps=profile.bandwidth_bps
    )
    for name, profile in PROFILES.items()
}
#: The relay's domain in the Message-IDs it sets: <vessel.message@domain>.
MESSAGE_ID = "<1.{seq}@relay.demo.example>"
#: The shortest downlink drain quiet time in a compressed run: Mosquitto hands a
#: reconnecting vessel its queued messages within a few milliseconds on loopback.
MIN_QUIET_S = 0.05
#: Columns of the table (the JSON carries these and more).
COLUMNS = (
    "messages",
    "link_bytes_per_message",
    "sessions",
    "billed_bytes",
    "p50_s",
    "p99_s",
    "lost",
    "duplicated",
    "failed",
    "undelivered",
)


class BenchmarkError(Exception):
    """The benchmark cannot run as asked; the message says what to change."""


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` of 1); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def compression_for(days: float, minutes: float) -> tuple[float, int]:
    """The time compression and slot period (one voyage day) for ``days`` in ``minutes``."""
    if not (days > 0 and minutes > 0):
        raise BenchmarkError("--days and --minutes must be positive")
    compression = days * DAY / (minutes * 60)
    slot_period_s = round(DAY / compression)
    if compression < 1 or slot_period_s < 10 or DAY % slot_period_s:
        raise BenchmarkError(
            f"a voyage day would last {DAY / compression:.1f} s; choose --minutes so that "
            "it is a whole number of seconds, at least 10, that divides 86400 "
            "(e.g. --days 30 --minutes 5)"
        )
    return compression, slot_period_s


def tuning_for(name: str, compression: float, slot_period_s: int) -> Tuning:
    """The agent's and relay's clocks for profile ``name``, divided by ``compression``."""
    profile = PROFILES[name]
    return Tuning(
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
        downlink_quiet_s=max(MIN_QUIET_S, (4 * profile.latency_s + 0.5) / compression),
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where one accepted family message ended up."""

    seq: int
    accepted_at: float
    batched_at: float | None
    state: str
    seen_at: float | None
    """When its Message-ID first reached the sink (None: never)."""

    @property
    def verdict(self) -> str:
        """delivered, failed, lost or undelivered (see the module docstring)."""
        if self.seen_at is not None:
            return "delivered"
        if self.state == "failed":
            return "failed"
        if self.state == "delivered":
            return "lost"
        return "undelivered"

    def voyage_latency_s(self, compression: float) -> float:
        """Voyage seconds to the family: the wait on board (scaled back) plus the rest."""
        if self.seen_at is None or self.batched_at is None:
            raise ValueError(f"message {self.seq} was not delivered: it has no latency")
        on_board = max(0.0, self.batched_at - self.accepted_at)
        return on_board * compression + max(0.0, self.seen_at - self.batched_at)


async def play(
    http_url: str, setup: VesselSetup, arrivals: Sequence[Arrival], compression: float
) -> list[int]:
    """Play ``arrivals`` into the agent's HTTP API on the compressed clock; return the
    outbox numbers of the family messages it accepted."""
    accepted: list[int] = []
    logins = {login.crew: login for login in setup.crew}
    async with httpx.AsyncClient(base_url=http_url, timeout=60.0) as http:
        tokens: dict[int, dict[str, str]] = {}
        for login in setup.crew:
            answer = await http.post("/api/login", json={"crew": login.crew, "pin": login.pin})
            answer.raise_for_status()
            tokens[login.crew] = {"Authorization": f"Bearer {answer.json()['token']}"}
        started = time.monotonic()
        for arrival in arrivals:
            due = (arrival.at - MONTH_START) / compression
            wait = due - (time.monotonic() - started)
            if wait > 0:
                await asyncio.sleep(wait)
            crew = arrival.crew or 1
            headers = tokens[crew]
            if arrival.kind == "message":
                body: dict[str, object] = {"contact": logins[crew].contact, "text": arrival.text}
                answer = await http.post("/api/messages", json=body, headers=headers)
                if answer.status_code == 201:
                    accepted.append(int(answer.json()["message_seq"]))
            elif arrival.kind == "grievance":
                body = {"union": 1, "category": 8, "text": "wages withheld " * 8, "lang": "eng"}
                answer = await http.post("/api/grievances", json=body, headers=headers)
            else:
                answer = await http.post("/api/sos", json={"note": "fire"}, headers=headers)
            if answer.status_code >= 500:
                raise BenchmarkError(f"the agent failed a {arrival.kind}: {answer.text}")
    return accepted


def outbox_rows(setup: VesselSetup) -> dict[int, tuple[float, float | None, str]]:
    """(accepted_at, batched_at, state) of every family message, from the outbox file."""
    db = sqlite3.connect(f"file:{setup.data_dir / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        return {
            int(seq): (float(accepted_at), batched_at, str(state))
            for seq, accepted_at, batched_at, state in db.execute(
                "SELECT message_seq, accepted_at, batched_at, state FROM messages "
                "WHERE kind = 'message'"
            )
        }
    finally:
        db.close()


def settled(system: ProcessSystem, accepted: Sequence[int]) -> bool:
    """Has every accepted message reached the sink or been reported failed?"""
    assert system.sink is not None
    seen = system.sink.first_seen()
    waiting = [seq for seq in accepted if MESSAGE_ID.format(seq=seq) not in seen]
    if not waiting:
        return True
    rows = outbox_rows(system.vessels[0].setup)
    return all(rows[seq][2] == "failed" for seq in waiting)


async def run_profile(
    name: str, days: float, minutes: float, workdir: Path, drain_minutes: float = 5.0
) -> dict[str, object]:
    """Play the voyage through the system on one profile; return its figures."""
    profile = PROFILES[name]
    compression, slot_period_s = compression_for(days, minutes)
    arrivals = [a for a in voyage()[0] if a.at < MONTH_START + days * DAY]
    system = ProcessSystem(
        workdir,
        vessel_count=1,
        crew_per_vessel=30,
        profile=EMULATED[name].time_compressed(compression),
        tuning=tuning_for(name, compression, slot_period_s),
    )
    await system.start()
    vessel = system.vessels[0]
    try:
        accepted = await play(vessel.http_url, vessel.setup, arrivals, compression)
        deadline = time.monotonic() + drain_minutes * 60
        while time.monotonic() < deadline and not settled(system, accepted):  # noqa: ASYNC110 - polling other processes
            await asyncio.sleep(1.0)
        statistics = vessel.link.statistics()
    finally:
        await system.stop()
    assert system.sink is not None
    seen = system.sink.first_seen()
    ids = system.sink.message_ids()
    rows = outbox_rows(vessel.setup)
    outcomes = [
        Outcome(seq, *rows[seq], seen_at=seen.get(MESSAGE_ID.format(seq=seq))) for seq in accepted
    ]
    delivered = [o for o in outcomes if o.verdict == "delivered"]
    latencies = [o.voyage_latency_s(compression) for o in delivered]
    wall = [o.seen_at - o.accepted_at for o in delivered if o.seen_at is not None]
    sessions = [s for s in statistics.sessions if s.ip_bytes_estimate > 0]
    link_bytes = sum(s.ip_bytes_estimate for s in sessions)
    verdicts = [o.verdict for o in outcomes]
    return {
        "messages": len(accepted),
        "link_bytes_per_message": round(link_bytes / max(1, len(accepted)), 1),
        "sessions": len(sessions),
        "billed_bytes": sum(profile.billed_bytes(s.ip_bytes_estimate) for s in sessions),
        "p50_s": rounded(percentile(latencies, 0.5)),
        "p99_s": rounded(percentile(latencies, 0.99)),
        "lost": verdicts.count("lost"),
        "duplicated": sum(n - 1 for n in ids.values() if n > 1),
        # beyond the contract
        "delivered": len(delivered),
        "failed": verdicts.count("failed"),
        "undelivered": verdicts.count("undelivered"),
        "link_bytes": link_bytes,
        "link_payload_bytes_up": statistics.payload_bytes_up,
        "link_payload_bytes_down": statistics.payload_bytes_down,
        "p50_wall_s": rounded(percentile(wall, 0.5), 3),
        "p99_wall_s": rounded(percentile(wall, 0.99), 3),
        "days": days,
        "compression": round(compression),
    }


def rounded(value: float, digits: int = 1) -> float | None:
    """``value`` rounded; None (JSON null) when there was nothing to measure."""
    return None if math.isnan(value) else round(value, digits)


def print_table(report: dict[str, dict[str, object]]) -> None:
    print("| profile | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, row in report.items():
        cells = [f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--days", type=float, default=30.0, help="days of the voyage to play")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall minutes per profile")
    parser.add_argument(
        "--drain-minutes",
        type=float,
        default=5.0,
        help="wall minutes after the voyage for what is still on its way",
    )
    parser.add_argument(
        "--profile", action="append", choices=list(PROFILES), help="only these (repeatable)"
    )
    arguments = parser.parse_args(argv)
    names = arguments.profile or list(PROFILES)
    try:
        compression_for(arguments.days, arguments.minutes)
    except BenchmarkError as exc:
        parser.error(str(exc))
    report: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="vr-e2e-") as work:
        for name in names:
            print(
                f"e2e: {name}: {arguments.days:g} days in {arguments.minutes:g} min",
                file=sys.stderr,
            )
            report[name] = asyncio.run(
                run_profile(
                    name,
                    arguments.days,
                    arguments.minutes,
                    Path(work) / name,
                    arguments.drain_minutes,
                )
            )
    if arguments.json:
        print(json.dumps({"profiles": report}, indent=2))
    else:
        print_table(report)
    broken = {n: r for n, r in report.items() if r["lost"] or r["duplicated"]}
    for name, row in broken.items():
        print(f"e2e: {name}: {row['lost']} lost, {row['duplicated']} duplicated", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
