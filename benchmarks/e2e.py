"""The scripted month through the real system: agent, Mosquitto, relay, per link profile.

The same voyage as ``benchmarks/sessions.py`` (30 crew members writing home in their
languages from the repository's ``corpus/``, grievance reports, an SOS; seeded; each crew
member's language on board is the one they write, ``CREW_LANGUAGES``, as the agent tags
and compresses each message in its writer's language) is played into
a real agent's HTTP API (:mod:`vessel_relay.demo.system`: agent and relay as processes,
Mosquitto, the link emulator shaped like the profile, an SMTP sink for the families).

**Time compression.** A month cannot take a month: the voyage is replayed ``C`` times
faster (``C`` = days x 86,400 / (``--minutes`` x 60); 7,200 for a 30-day month in 6
minutes), and every clock is divided by the same ``C``:

- the scheduler's, at the agent's defaults: a family message's 6 h latency target, a
  lane block's day, the idle poll (Certus 24 h, FleetBroadband 6 h, VSAT 15 min), the
  minimum gap between sessions (60 s), the resend delay (1 h, floored at 5 s), the
  downlink drain's quiet time (four one-way latencies plus 0.5 s, floored at 50 ms);
- the grievance lane's periods: the vessel's 6 h up (3 s at ``C`` = 7,200) and the
  relay's day down (12 s), so a voyage day must be a whole number of lane periods;
- the broker's TLS ticket lifetime (7,200 s, Mosquitto's: not a setting), as the agent
  sees it: it offers a session's ticket again only within 7,200 s / ``C`` (1 s at
  ``C`` = 7,200), so sessions more than two voyage hours apart pay the full TLS handshake
  as they do at sea (FleetBroadband's six-hourly sessions, Certus's daily ones);
- the link's (:meth:`~vessel_relay.link_emulator.LinkProfile.time_compressed`): latency
  and jitter divided by ``C``, bandwidth multiplied by it, so that a day's traffic fits
  the compressed day as it fits the real one.

What is *not* compressed is the machine's own work (a session's MQTT exchanges, the
relay's ingest and delivery: tens to hundreds of milliseconds). Seen through ``C`` that
is minutes to hours of voyage time, so a session looks longer than it is, and a profile
whose sessions come more often than the machine can open them in compressed time (VSAT's
15-minute poll is 0.125 s at ``C`` = 7,200) gets fewer, fuller sessions than a real month.
``sessions`` says how many there were; a smaller ``C`` (more ``--minutes``) brings the
count closer to a real month's.

**Latency.** ``p50_s``/``p99_s`` are voyage seconds from acceptance on board to arrival at
the family's mail server: the wait on board until the message is put in a batch (a
compressed clock, multiplied back by ``C``) plus the rest as measured (the session, the
relay and the SMTP delivery, real seconds). The real link's round trips and transfer
time (a few seconds on a satellite) are not in that rest, because the compressed link
takes 1/``C`` of them. ``p50_wall_s``/``p99_wall_s`` are the compressed run's wall seconds.

**Counts.** Link bytes are the emulator's count (payload + 52 B TCP/IP per segment + TCP
open/close) of MQTT 5 over TLS as ``deploy/`` runs it (Mosquitto, TLS 1.2 or newer, a
private CA and an Ed25519 certificate: the vessels negotiate TLS 1.3 and resume sessions
within the ticket's lifetime; ``--no-tls`` for plain MQTT), the grievance channel
included; billed bytes apply the shipboard profile's tariff per session (Certus: at least
5,120 B, 1 KB steps).

**The bill** (issue 20): ``text_bytes`` are the UTF-8 bytes of the family messages the
crew wrote that month, ``billed_per_message`` the billed bytes over the accepted family
messages, ``grievance_channel_bytes`` the grievance channel's share of the payload (up:
every grievance-lane item the vessel sent, report or cover; down: every lane item the
vessel received), ``idle_billed_bytes_per_month`` what the same profile bills for a month
with no crew traffic at all (a second, idle run of ``--idle-minutes``, scaled to 30 days),
and ``grievance_p95_s`` the 95th percentile of voyage seconds from filing a report on
board to the arrival of its last grievance-lane block at the relay, where the union fetches
it (found as the union finds it: every block of the vessel's lane opened with the union's
key, reassembled, opened, matched by the case number inside the seal; ``grievances``
reports of every length, from one line of the corpus to a dozen). After the
voyage the system gets ``--drain-minutes`` to deliver what is still on its way. Then each
accepted family message is exactly one of: ``delivered`` (its Message-ID reached the
sink), ``failed`` (reported back to the vessel as failed), ``lost`` (the vessel holds a
delivery receipt for it, yet the sink never saw it) or ``undelivered`` (still on its way
at the deadline: on board or at the relay). ``duplicated``: Message-IDs that reached the
sink more than once. The benchmark exits 1 if anything was lost or duplicated.

**The mixed profile** (``--profile mixed``, run only when named; issue 25): the main link
(``--mixed-main``, Certus by default) with scheduled outages, the Iridium SBD fallback over
the emulated modem and the fake RockBLOCK provider into the relay's webhook, and the last
days in port on a 4G link; its row has every key above (``billed_bytes`` and
``sessions`` over the three links, no idle month) and its bill per link, cost in US
dollars, latency per class (family, grievance, SOS) and ``never_arrived``
(:mod:`benchmarks.e2e_mixed`).

Usage::

    python benchmarks/e2e.py                      # table, 30-day month in ~6 min a profile
    python benchmarks/e2e.py --json --days 3 --minutes 0.6   # a quicker, smaller run
    python benchmarks/e2e.py --profile vsat --minutes 30     # closer to a real month's sessions
    python benchmarks/e2e.py --profile mixed      # outages, SBD and port: ~9 wall minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sessions import (
    CREW_LANGUAGES,
    DAY,
    MONTH_START,
    TLS_TICKET_S,
    Arrival,
    load_lines,
    voyage,
)
from common.codebooks import default_codebook
from protocol.lane import open_up_block
from protocol.sealing import open_grievance_any
from shipboard.config import DEFAULT_LANE_PERIOD_S, DEFAULT_LATENCY_MINUTES
from shipboard.profiles import PROFILES
from shore.config import DownlinkSection
from shore.union.keys import load_union
from vessel_relay import link_emulator
from vessel_relay.demo.setup import Tuning, VesselSetup
from vessel_relay.demo.system import ProcessSystem
from vessel_relay.link_emulator import SessionStatistics

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
#: The profile with every way out (``benchmarks/e2e_mixed.py``).
MIXED = "mixed"
#: Columns of the table (the JSON carries these and more).
COLUMNS = (
    "messages",
    "billed_per_message",
    "link_bytes_per_message",
    "sessions",
    "billed_bytes",
    "p50_s",
    "p99_s",
    "grievance_p95_s",
    "idle_billed_bytes_per_month",
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
    """The time compression and the length of a voyage day in seconds for ``days`` in
    ``minutes``."""
    if not (days > 0 and minutes > 0):
        raise BenchmarkError("--days and --minutes must be positive")
    compression = days * DAY / (minutes * 60)
    day_s = round(DAY / compression)
    lane_periods = int(DAY // DEFAULT_LANE_PERIOD_S)  # the agent's default lane period, compressed
    if compression < 1 or day_s < 10 or DAY % day_s or day_s % lane_periods:
        raise BenchmarkError(
            f"a voyage day would last {DAY / compression:.1f} s; choose --minutes so that "
            f"it is a whole number of seconds, at least 10, a multiple of {lane_periods} "
            "that divides 86400 (e.g. --days 30 --minutes 6)"
        )
    return compression, day_s


def tuning_for(name: str, compression: float, day_s: int) -> Tuning:
    """The agent's and relay's clocks for profile ``name`` at their defaults, divided by
    ``compression`` (``day_s``: a voyage day in seconds)."""
    profile = PROFILES[name]
    return Tuning(
        slot_period_s=int(day_s * DEFAULT_LANE_PERIOD_S // DAY),
        down_period_s=int(day_s * DownlinkSection().slot_period_s // DAY),
        profile=name,
        idle_poll_s=profile.idle_poll_s / compression,
        min_gap_s=60.0 / compression,
        resend_after_s=max(5.0, 3600.0 / compression),
        ack_wait_s=20.0,
        min_timeout_s=10.0,
        latency_s={
            "sos": 0.0,
            "grievance": DEFAULT_LATENCY_MINUTES["grievance"] * 60.0 / compression,
            "message": DEFAULT_LATENCY_MINUTES["message"] * 60.0 / compression,
        },
        downlink_quiet_s=max(MIN_QUIET_S, (4 * profile.latency_s + 0.5) / compression),
        tls_ticket_max_age_s=TLS_TICKET_S / compression,
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


@dataclass(frozen=True, slots=True)
class Filed:
    """A grievance report the agent accepted: its number, case number, and when it was filed."""

    seq: int
    filed_at: float
    case_number: str = ""


def grievance_arrivals(days: float, count_per_month: int, seed: int = 11) -> list[Arrival]:
    """``count_per_month`` reports over the voyage (a Poisson process), each a random crew
    member's 1 to 12 lines of their language's corpus: reports of every length."""
    rng = random.Random(seed)
    lines = {language: load_lines(language) for language in set(CREW_LANGUAGES)}
    arrivals: list[Arrival] = []
    at = MONTH_START
    rate = count_per_month / (30 * DAY)
    while count_per_month > 0:
        at += rng.expovariate(rate)
        if at >= MONTH_START + days * DAY:
            break
        crew = rng.randrange(1, len(CREW_LANGUAGES) + 1)
        language = CREW_LANGUAGES[crew - 1]
        text = "\n".join(rng.choice(lines[language]) for _ in range(rng.randint(1, 12)))
        arrivals.append(Arrival(at, 0, "grievance", crew, text))
    return arrivals


async def play(
    http_url: str,
    setup: VesselSetup,
    arrivals: Sequence[Arrival],
    compression: float,
    on_start: Callable[[], None] | None = None,
) -> tuple[list[int], list[Filed]]:
    """Play ``arrivals`` into the agent's HTTP API on the compressed clock; return the
    outbox numbers of the family messages it accepted and the reports it filed.
    ``on_start`` is called when the voyage's clock starts (the crew signed in)."""
    accepted: list[int] = []
    filed: list[Filed] = []
    logins = {login.crew: login for login in setup.crew}
    async with httpx.AsyncClient(base_url=http_url, timeout=60.0) as http:
        tokens: dict[int, dict[str, str]] = {}
        for login in setup.crew:
            answer = await http.post("/api/login", json={"crew": login.crew, "pin": login.pin})
            answer.raise_for_status()
            tokens[login.crew] = {"Authorization": f"Bearer {answer.json()['token']}"}
        started = time.monotonic()
        if on_start is not None:
            on_start()
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
                language = CREW_LANGUAGES[crew - 1].code
                text = arrival.text or "wages withheld " * 8
                body = {"union": 1, "category": 8, "text": text, "lang": language}
                answer = await http.post("/api/grievances", json=body, headers=headers)
                if answer.status_code == 201:
                    reply = answer.json()
                    filed.append(
                        Filed(int(reply["message_seq"]), time.time(), str(reply["case_number"]))
                    )
            else:
                answer = await http.post("/api/sos", json={"note": "fire"}, headers=headers)
            if answer.status_code >= 500:
                raise BenchmarkError(f"the agent failed a {arrival.kind}: {answer.text}")
    return accepted, filed


@dataclass(frozen=True)
class FamilyOutcomes:
    """The accepted family messages at the end of a run: each one's outcome, those
    delivered, their voyage latencies and wall seconds, and how often the family's mail
    server saw each Message-ID."""

    outcomes: list[Outcome]
    delivered: list[Outcome]
    latencies: list[float]
    wall: list[float]
    ids: dict[str, int]


def family_outcomes(
    system: ProcessSystem, setup: VesselSetup, accepted: Sequence[int], compression: float
) -> FamilyOutcomes:
    """Where each of ``accepted`` ended up (the outbox's times, the sink's first arrivals)."""
    assert system.sink is not None
    seen = system.sink.first_seen()
    rows = outbox_rows(setup)
    outcomes = [
        Outcome(seq, *rows[seq], seen_at=seen.get(MESSAGE_ID.format(seq=seq))) for seq in accepted
    ]
    delivered = [o for o in outcomes if o.verdict == "delivered"]
    return FamilyOutcomes(
        outcomes,
        delivered,
        [o.voyage_latency_s(compression) for o in delivered],
        [o.seen_at - o.accepted_at for o in delivered if o.seen_at is not None],
        dict(system.sink.message_ids()),
    )


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


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {str(name) for (name,) in db.execute("SELECT name FROM sqlite_master")}


def grievance_channel_bytes(setup: VesselSetup, until: float) -> tuple[int, int]:
    """The grievance channel's payload bytes (up, down) in the month (before ``until``, the
    agent's clock): every lane block (or, on an agent of the release before, every daily
    slot) the vessel sent, report or cover alike, each time it was sent; and every lane
    block (or downlink slot item) it received."""
    db = _read_only(setup.data_dir / "outbox.sqlite3")
    try:
        up = db.execute(
            "SELECT COALESCE(SUM(LENGTH(m.sealed) * b.send_count), 0) FROM messages m "
            "JOIN batch_messages bm ON bm.message_seq = m.message_seq "
            "JOIN batches b ON b.batch_seq = bm.batch_seq "
            "WHERE m.kind IN ('grievance', 'lane') AND b.send_count > 0 "
            "AND b.first_sent_at < ?",
            (until,),
        ).fetchone()[0]
        tables = _tables(db)
        down = db.execute(
            "SELECT COALESCE(SUM(LENGTH(sealed_note)), 0) FROM inbox WHERE kind = 'slot' "
            "AND at < ?",
            (until,),
        ).fetchone()[0]
        if "lane_down" in tables:
            down += db.execute(
                "SELECT COALESCE(SUM(LENGTH(block)), 0) FROM lane_down WHERE at < ?", (until,)
            ).fetchone()[0]
    finally:
        db.close()
    return int(up), int(down)


@dataclass
class UnionView:
    """What the union reads from the relay: the lane's blocks, opened with its key."""

    union_dir: Path
    _opened: dict[int, tuple[bytes, int, int, bytes] | None] = field(default_factory=dict)
    _arrivals: dict[str, tuple[float, list[bytes]]] = field(default_factory=dict)

    def read(self, relay_db: Path, vessel_id: int) -> dict[str, tuple[float, list[bytes]]]:
        """Case number -> (when its last block reached the relay, its blocks), for every
        report of ``vessel_id`` complete at the relay."""
        key = load_union(self.union_dir).box_private
        relay = _read_only(relay_db)
        try:
            if "lane_up_blocks" not in _tables(relay):
                return {}
            rows = relay.execute(
                "SELECT block_id, block, received_at FROM lane_up_blocks WHERE vessel_id = ? "
                "ORDER BY block_id",
                (vessel_id,),
            ).fetchall()
        finally:
            relay.close()
        parts: dict[bytes, dict[int, tuple[bytes, float, bytes, int]]] = {}
        for block_id, block, received_at in rows:
            if int(block_id) not in self._opened:
                fragment = open_up_block(bytes(block), key)
                self._opened[int(block_id)] = (
                    None
                    if fragment is None
                    else (fragment.item_id, fragment.index, fragment.count, fragment.payload)
                )
            opened = self._opened[int(block_id)]
            if opened is None:
                continue
            item, index, count, payload = opened
            parts.setdefault(item, {})[index] = (payload, float(received_at), bytes(block), count)
        codebook = default_codebook()
        for pieces in parts.values():
            count = next(iter(pieces.values()))[3]
            if len(pieces) < count:
                continue
            sealed = b"".join(pieces[i][0] for i in range(count))
            plain = open_grievance_any(sealed, key, codebook)
            case = plain.case_number or ""
            arrived = max(piece[1] for piece in pieces.values())
            self._arrivals[case] = (arrived, [piece[2] for piece in pieces.values()])
        return dict(self._arrivals)


def grievance_delays(
    setup: VesselSetup,
    relay_db: Path,
    union: UnionView,
    filed: Sequence[Filed],
    compression: float,
) -> list[float]:
    """Voyage seconds from filing each report on board to the arrival of its last block at
    the relay (where the union fetches it): the wait on board scaled back by
    ``compression``, the rest as measured. Reports not complete at the end are left out
    (and counted by the caller)."""
    arrivals = union.read(relay_db, setup.vessel_id)
    ship = _read_only(setup.data_dir / "outbox.sqlite3")
    try:
        delays = []
        for report in filed:
            found = arrivals.get(report.case_number)
            if found is None:
                continue
            received_at, blocks = found
            batched = [
                row[0]
                for block in blocks
                for row in ship.execute(
                    "SELECT batched_at FROM messages WHERE kind = 'lane' AND sealed = ?",
                    (block,),
                )
                if row[0] is not None
            ]
            if not batched:
                continue
            left_at = max(float(at) for at in batched)
            on_board = max(0.0, left_at - report.filed_at)
            delays.append(on_board * compression + max(0.0, received_at - left_at))
    finally:
        ship.close()
    return delays


def reports_arrived(
    setup: VesselSetup, relay_db: Path, union: UnionView, filed: Sequence[Filed]
) -> bool:
    """Has every filed report reached the relay whole (every block of it)?"""
    if not filed:
        return True
    try:
        arrivals = union.read(relay_db, setup.vessel_id)
    except sqlite3.OperationalError:  # the relay has not made its tables yet
        return False
    return all(report.case_number in arrivals for report in filed)


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
    name: str,
    days: float,
    minutes: float,
    workdir: Path,
    drain_minutes: float = 5.0,
    *,
    tls: bool = True,
    grievances: int = 30,
) -> dict[str, object]:
    """Play the voyage through the system on one profile; return its figures."""
    profile = PROFILES[name]
    compression, day_s = compression_for(days, minutes)
    arrivals = [a for a in voyage()[0] if a.at < MONTH_START + days * DAY and a.kind != "grievance"]
    arrivals = sorted(arrivals + grievance_arrivals(days, grievances))
    text_bytes = sum(len(a.text.encode("utf-8")) for a in arrivals if a.kind == "message")
    system = ProcessSystem(
        workdir,
        vessel_count=1,
        crew_per_vessel=len(CREW_LANGUAGES),
        crew_languages=CREW_LANGUAGES,
        profile=EMULATED[name].time_compressed(compression),
        tuning=tuning_for(name, compression, day_s),
        tls=tls,
    )
    await system.start()
    vessel = system.vessels[0]
    try:
        voyage_started = time.monotonic()
        accepted, filed = await play(vessel.http_url, vessel.setup, arrivals, compression)
        # the month's bill is the sessions that open within its days; the drain's are the
        # next month's (which would carry this month's tail, as this one carried the last's)
        voyage_left = voyage_started + days * DAY / compression - time.monotonic()
        await asyncio.sleep(max(0.0, voyage_left))
        month_sessions = len(vessel.link.statistics().sessions)
        month_ended_at = time.time()
        deadline = time.monotonic() + drain_minutes * 60
        assert system.relay_setup is not None
        relay_db = system.relay_setup.data_dir / "relay.db"
        union = UnionView(workdir / "union")
        while time.monotonic() < deadline and not (  # noqa: ASYNC110 - polling other processes
            settled(system, accepted) and reports_arrived(vessel.setup, relay_db, union, filed)
        ):
            await asyncio.sleep(1.0)
        statistics = vessel.link.statistics()
        lane_up, lane_down = grievance_channel_bytes(vessel.setup, month_ended_at)
    finally:
        await system.stop()
    ended = family_outcomes(system, vessel.setup, accepted, compression)
    sessions = [s for s in statistics.sessions[:month_sessions] if s.ip_bytes_estimate > 0]
    drained = [s for s in statistics.sessions[month_sessions:] if s.ip_bytes_estimate > 0]
    return month_figures(
        ended,
        link_sessions=sessions,
        sessions=len(sessions),
        billed=sum(profile.billed_bytes(s.ip_bytes_estimate) for s in sessions),
        text_bytes=text_bytes,
        lane=(lane_up, lane_down),
        grievances=len(filed),
        delays=grievance_delays(vessel.setup, relay_db, union, filed, compression),
        days=days,
        compression=compression,
        tls=tls,
        drained=drained,
        drain_billed=sum(profile.billed_bytes(s.ip_bytes_estimate) for s in drained),
    )


def month_figures(
    ended: FamilyOutcomes,
    *,
    link_sessions: Sequence[SessionStatistics],
    sessions: int,
    billed: int,
    text_bytes: int,
    lane: tuple[int, int],
    grievances: int,
    delays: Sequence[float],
    days: float,
    compression: float,
    tls: bool,
    drained: Sequence[SessionStatistics],
    drain_billed: int,
) -> dict[str, object]:
    """The month's figures under the keys every profile reports (the issue's contract first):
    ``link_sessions`` are the IP sessions whose bytes count as link bytes, ``sessions`` and
    ``billed`` the month's sessions and billed bytes over every link, ``lane`` the grievance
    channel's bytes (up, down), ``drained`` the sessions after the month (drain_billed their
    bill)."""
    messages = len(ended.outcomes)
    link_bytes = sum(s.ip_bytes_estimate for s in link_sessions)
    verdicts = [o.verdict for o in ended.outcomes]
    return {
        "messages": messages,
        "link_bytes_per_message": round(link_bytes / max(1, messages), 1),
        "sessions": sessions,
        "billed_bytes": billed,
        "text_bytes": text_bytes,
        "billed_per_message": round(billed / max(1, messages), 1),
        "grievance_channel_bytes": sum(lane),
        "grievance_channel_bytes_up": lane[0],
        "grievance_channel_bytes_down": lane[1],
        "grievances": grievances,
        "grievances_in_union_inbox": len(delays),
        "grievance_p95_s": rounded(percentile(delays, 0.95)),
        "p50_s": rounded(percentile(ended.latencies, 0.5)),
        "p99_s": rounded(percentile(ended.latencies, 0.99)),
        "lost": verdicts.count("lost"),
        "duplicated": sum(n - 1 for n in ended.ids.values() if n > 1),
        # beyond the contract
        "delivered": len(ended.delivered),
        "failed": verdicts.count("failed"),
        "undelivered": verdicts.count("undelivered"),
        "link_bytes": link_bytes,
        "link_payload_bytes_up": sum(s.payload_bytes_up for s in link_sessions),
        "link_payload_bytes_down": sum(s.payload_bytes_down for s in link_sessions),
        "p50_wall_s": rounded(percentile(ended.wall, 0.5), 3),
        "p99_wall_s": rounded(percentile(ended.wall, 0.99), 3),
        "days": days,
        "compression": round(compression),
        "tls": tls,
        "drain_sessions": len(drained),
        "drain_billed_bytes": drain_billed,
    }


async def idle_month(name: str, days: float, minutes: float, workdir: Path, *, tls: bool) -> int:
    """Billed bytes of ``days`` with no crew traffic at all on profile ``name``, scaled to a
    30-day month (the polls, the grievance channel, its cover and the receipts of nothing)."""
    profile = PROFILES[name]
    compression, day_s = compression_for(days, minutes)
    system = ProcessSystem(
        workdir,
        vessel_count=1,
        crew_per_vessel=len(CREW_LANGUAGES),
        crew_languages=CREW_LANGUAGES,
        profile=EMULATED[name].time_compressed(compression),
        tuning=tuning_for(name, compression, day_s),
        tls=tls,
    )
    await system.start()
    try:
        await asyncio.sleep(minutes * 60)
        statistics = system.vessels[0].link.statistics()
    finally:
        await system.stop()
    billed = sum(profile.billed_bytes(s.ip_bytes_estimate) for s in statistics.sessions)
    return round(billed * 30 / days)


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
    parser.add_argument("--minutes", type=float, default=6.0, help="wall minutes per profile")
    parser.add_argument(
        "--drain-minutes",
        type=float,
        default=5.0,
        help="wall minutes after the voyage for what is still on its way",
    )
    parser.add_argument(
        "--profile",
        action="append",
        choices=[*PROFILES, MIXED],
        help=(
            "only these (repeatable); 'mixed': the main link with outages, Iridium SBD and "
            "port (benchmarks/e2e_mixed.py; not run unless named)"
        ),
    )
    parser.add_argument(
        "--mixed-main",
        choices=["iridium-certus", "fleetbroadband"],
        default="iridium-certus",
        help="the mixed profile's main link (default iridium-certus)",
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="vessels reach the broker over TLS as deployed (default), or plain MQTT",
    )
    parser.add_argument(
        "--grievances", type=int, default=30, help="grievance reports per 30 days (default 30)"
    )
    parser.add_argument(
        "--idle-minutes",
        type=float,
        default=None,
        help="wall minutes of the idle month per profile (default: --minutes; 0: skip it)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the run's files (agent and relay databases, logs) here for inspection",
    )
    arguments = parser.parse_args(argv)
    names = arguments.profile or list(PROFILES)
    idle_minutes = arguments.minutes if arguments.idle_minutes is None else arguments.idle_minutes
    try:
        compression_for(arguments.days, arguments.minutes)
        if idle_minutes:
            compression_for(arguments.days, idle_minutes)
    except BenchmarkError as exc:
        parser.error(str(exc))
    if arguments.grievances < 0:
        parser.error("--grievances must not be negative")
    report: dict[str, dict[str, object]] = {}
    with contextlib.ExitStack() as stack:
        if arguments.workdir is not None:
            arguments.workdir.mkdir(parents=True, exist_ok=True)
            work = str(arguments.workdir)
        else:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="vr-e2e-"))
        for name in names:
            print(
                f"e2e: {name}: {arguments.days:g} days in {arguments.minutes:g} min"
                f" ({'TLS' if arguments.tls else 'plain MQTT'})",
                file=sys.stderr,
            )
            if name == MIXED:
                report[name] = run_mixed_profile(arguments, Path(work) / name)
                continue
            row = asyncio.run(
                run_profile(
                    name,
                    arguments.days,
                    arguments.minutes,
                    Path(work) / name,
                    arguments.drain_minutes,
                    tls=arguments.tls,
                    grievances=arguments.grievances,
                )
            )
            if idle_minutes:
                print(f"e2e: {name}: the idle month, {idle_minutes:g} min", file=sys.stderr)
                row["idle_billed_bytes_per_month"] = asyncio.run(
                    idle_month(
                        name,
                        arguments.days,
                        idle_minutes,
                        Path(work) / f"{name}-idle",
                        tls=arguments.tls,
                    )
                )
            else:
                row["idle_billed_bytes_per_month"] = None
            report[name] = row
    if arguments.json:
        print(json.dumps({"profiles": report}, indent=2))
    else:
        print_table(report)
        if MIXED in report:
            from benchmarks.e2e_mixed import print_mixed_tables

            print_mixed_tables(report[MIXED])
    broken = {
        n: r for n, r in report.items() if r["lost"] or r["duplicated"] or r.get("never_arrived")
    }
    for name, row in broken.items():
        print(
            f"e2e: {name}: {row['lost']} lost, {row['duplicated']} duplicated"
            + (f", {row['never_arrived']} never arrived" if "never_arrived" in row else ""),
            file=sys.stderr,
        )
    return 1 if broken else 0


def run_mixed_profile(arguments: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """The mixed profile's row (``benchmarks/e2e_mixed.py``); it has no idle month (its
    main link's is that profile's own row)."""
    from benchmarks.e2e_mixed import run_mixed

    row = asyncio.run(
        run_mixed(
            arguments.mixed_main,
            arguments.days,
            arguments.minutes,
            workdir,
            arguments.drain_minutes,
            tls=arguments.tls,
            grievances=arguments.grievances,
        )
    )
    row["idle_billed_bytes_per_month"] = None
    return row


if __name__ == "__main__":
    sys.exit(main())
