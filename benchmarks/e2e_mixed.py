"""The mixed profile of ``benchmarks/e2e.py``: the main link with outages, Iridium SBD, port.

The same scripted month as every other profile (30 crew writing home, grievance reports,
the SOS) played through the real system (:mod:`vessel_relay.demo.system`), on a vessel
with all three ways out a real one may have:

- **the main link** (Iridium Certus by default, ``--mixed-main fleetbroadband`` for the
  other; through the link emulator, shaped and compressed like that profile's run) with
  **scheduled outages** (:data:`OUTAGES`: four, of 8 to 30 voyage hours, the link
  emulator's ``LinkState.DOWN``: every session cut, new ones closed as they arrive);
- **the SBD fallback**: the agent's ``[sbd] device`` is the project's emulated 9602
  (:class:`vessel_relay.sbd_emulator.ModemEmulator`, a pty) whose gateway is the fake
  RockBLOCK provider (:class:`shore.fake_rockblock.FakeRockBlock`), posting every MO
  message to the real relay's SBD webhook and taking its MT messages. While the main link
  is down past ``[sbd] after_down_minutes`` (or at once for an SOS after a failed
  session), the SOS, the reports and the grievance lane's blocks leave over SBD (an SOS
  is added inside each outage, :func:`mixed_arrivals`); family messages wait;
- **port**: for the last :data:`PORT_DAYS` voyage days the vessel is in port reach
  (``[port]``: a second link emulator to the same broker, 4G-shaped; the agent reads its
  interface's operstate, which the run switches to "up", under a directory of the run).

Every clock is divided by the compression ``C`` as in the other profiles, and also the
ones only this profile meets: the main link counts as down after 15 minutes of failed
sessions; the reconnect backoff (15 s doubling to 30 minutes; 5 minutes on SBD); the SBD
session's downlink quiet time (5 s) and wait for the shore's BatchAck (3 minutes, floored
at 1.5 s: the machine's own MO-webhook-ingest-MT round trip); the SBD mailbox check (30
s, floored at 0.5 s: ring alerts bring the shore's answers); the port link's 5-minute
poll; the relay's SBD downlink window (an hour, floored at 2 s: the BatchAck must find
the vessel on SBD). A shorter voyage (``--days``) scales the schedule of outages and port
days with it (:meth:`Schedule.for_days`).

**The bill, per link** (``links`` in the JSON): ``main`` is the main profile's tariff per
session over the emulator's count (as the other profiles); ``sbd`` every MO and MT
message the provider carried (resends included), each in 50-byte credits at the SBD
tariff (:data:`shipboard.links.IRIDIUM_SBD`); ``port`` the port link's sessions at
:data:`shipboard.links.PORT_4G`'s tariff. Each with its sessions (main and port: the
emulators' sessions that carried bytes; SBD: the agent's SBD sessions), billed bytes,
cost in US dollars, and both shared out over the accepted family messages;
``billed_bytes``, ``sessions`` and ``cost_usd`` are the three together.

**Latency per class**: family messages (``p50_s``/``p99_s`` as in every profile),
grievance reports (``grievance_p50_s``/``grievance_p99_s`` besides ``grievance_p95_s``:
to the arrival of the report's last lane block at the relay) and SOS (``sos_p50_s``/
``sos_p99_s``: from acceptance on board to its batch's arrival at the relay; the wait on
board scaled back by ``C``, the rest as measured). ``sos_over_sbd``: the SOS that left in
an SBD session (its batch made during one, by the agent's sessions log);
``sos_in_outages``: the SOS the crew sent while the main link was out.

**Nothing lost**: besides ``lost`` and ``duplicated`` (as every profile),
``never_arrived`` counts accepted family messages not delivered (failed or still on
their way at the deadline), reports not whole at the relay, and SOS not at the relay. The
benchmark exits 1 if any of the three is not 0.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.e2e import (
    EMULATED,
    MIN_QUIET_S,
    UnionView,
    compression_for,
    family_outcomes,
    grievance_arrivals,
    grievance_channel_bytes,
    grievance_delays,
    month_figures,
    percentile,
    play,
    reports_arrived,
    rounded,
    settled,
    tuning_for,
)
from benchmarks.sessions import CREW_LANGUAGES, DAY, MONTH_START, Arrival, voyage
from shipboard.config import DEFAULT_SBD_AFTER_DOWN_MINUTES
from shipboard.links import IRIDIUM_SBD, PORT_4G
from shipboard.profiles import PROFILES
from shipboard.sbd_link import sbd_billed_bytes
from vessel_relay import link_emulator
from vessel_relay.demo.setup import Tuning
from vessel_relay.demo.system import ProcessSystem

HOUR = 3600.0
#: The profile's name in ``--profile``.
NAME = "mixed"
#: Main links the mixed profile may have (VSAT has no reason to fall back to SBD).
MAIN_PROFILES = ("iridium-certus", "fleetbroadband")
#: Outages of the main link in a 30-day voyage: (start, duration) in voyage seconds from
#: the voyage's start. The third holds the month's SOS (day 15.3).
OUTAGES: tuple[tuple[float, float], ...] = (
    (4.5 * DAY, 8 * HOUR),
    (11.0 * DAY, 20 * HOUR),
    (15.0 * DAY, 30 * HOUR),
    (22.5 * DAY, 12 * HOUR),
)
#: The last days of a 30-day voyage in port reach.
PORT_DAYS = 2.0
#: The port link as the emulator shapes it (4G: ``PORT_4G``'s latency and bandwidth).
PORT_LINK = link_emulator.LinkProfile(
    latency_s=PORT_4G.latency_s, jitter_s=0.01, bandwidth_bps=PORT_4G.bandwidth_bps
)
#: Shortest SBD mailbox check interval in a compressed run (ring alerts do the rest).
MIN_MAILBOX_POLL_S = 0.5
#: Shortest wait for the shore's BatchAck over SBD in a compressed run: MO messages to
#: the webhook, the relay's ingest, its downlink tick, MT messages to the provider, a ring
#: alert and a mailbox check take about 0.7 s on this machine.
MIN_SBD_ACK_WAIT_S = 1.5
#: Shortest relay SBD downlink window in a compressed run: the shore's BatchAck, made a
#: few tenths of a second after the vessel's batch came in over SBD, must still find it
#: "on SBD".
MIN_SBD_WINDOW_S = 2.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the main link is out and when the vessel is in port, in voyage seconds."""

    outages: tuple[tuple[float, float], ...]
    port_from_s: float

    @classmethod
    def for_days(cls, days: float) -> Schedule:
        """:data:`OUTAGES` and :data:`PORT_DAYS`, scaled to a voyage of ``days``: starts
        and port days in proportion, outages by no less than 0.3 (a 3-day voyage keeps
        outages of 2.4 to 9 hours, long enough for the fallback to take over)."""
        scale = days / 30.0
        length = max(scale, 0.3) if scale < 1 else scale
        return cls(
            tuple((start * scale, duration * length) for start, duration in OUTAGES),
            (30.0 - PORT_DAYS) * DAY * scale,
        )

    def in_outage(self, at_s: float) -> bool:
        """Whether voyage second ``at_s`` falls in an outage."""
        return any(start <= at_s < start + length for start, length in self.outages)


def mixed_tuning(main: str, compression: float, day_s: int) -> Tuning:
    """:func:`benchmarks.e2e.tuning_for` the main profile, and the clocks of the fallback,
    the port link and the main link's down state divided by ``compression`` too."""
    base = tuning_for(main, compression, day_s)
    return replace(
        base,
        after_down_s=60.0 * DEFAULT_SBD_AFTER_DOWN_MINUTES / compression,
        reconnect_base_s=15.0 / compression,
        reconnect_cap_s=1800.0 / compression,
        fallback_reconnect_cap_s=300.0 / compression,
        sbd_quiet_s=max(MIN_QUIET_S, 5.0 / compression),
        sbd_ack_wait_s=max(MIN_SBD_ACK_WAIT_S, 180.0 / compression),
        sbd_mailbox_poll_s=max(MIN_MAILBOX_POLL_S, 30.0 / compression),
        port_idle_poll_s=PORT_4G.idle_poll_s / compression,
    )


def mixed_arrivals(days: float, grievances: int, schedule: Schedule) -> list[Arrival]:
    """The month of every profile (family messages, the SOS, reports), plus an SOS 40%
    into each outage and one a quarter into the port days (crew members 7, 8, ...)."""
    end = MONTH_START + days * DAY
    arrivals = [a for a in voyage()[0] if a.at < end and a.kind != "grievance"]
    arrivals += grievance_arrivals(days, grievances)
    extra = [start + 0.4 * length for start, length in schedule.outages]
    extra.append(schedule.port_from_s + 0.25 * (days * DAY - schedule.port_from_s))
    for n, at_s in enumerate(extra):
        arrivals.append(Arrival(MONTH_START + at_s, 0, "sos", 7 + n))
    return sorted(arrivals)


@dataclass(frozen=True, slots=True)
class Sos:
    """An SOS accepted on board and, if it got there, its arrival at the relay."""

    seq: int
    accepted_at: float
    batched_at: float | None
    received_at: float | None

    def voyage_latency_s(self, compression: float) -> float:
        """Voyage seconds from acceptance on board to the relay."""
        if self.received_at is None or self.batched_at is None:
            raise ValueError(f"SOS {self.seq} did not reach the relay: it has no latency")
        on_board = max(0.0, self.batched_at - self.accepted_at)
        return on_board * compression + max(0.0, self.received_at - self.batched_at)


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def sos_rows(data_dir: Path, relay_db: Path, vessel_id: int) -> list[Sos]:
    """Every SOS the agent accepted, with when its batch reached the relay (if it did)."""
    ship = _read_only(data_dir / "outbox.sqlite3")
    try:
        on_board = ship.execute(
            "SELECT message_seq, accepted_at, batched_at FROM messages WHERE kind = 'sos'"
        ).fetchall()
    finally:
        ship.close()
    received: dict[int, float] = {}
    try:
        relay = _read_only(relay_db)
        try:
            received = {
                int(seq): float(at)
                for seq, at in relay.execute(
                    "SELECT m.message_seq, b.received_at FROM messages m JOIN batches b "
                    "ON b.vessel_id = m.vessel_id AND b.batch_seq = m.batch_seq "
                    "WHERE m.vessel_id = ? AND m.kind = 'sos'",
                    (vessel_id,),
                )
            }
        finally:
            relay.close()
    except sqlite3.OperationalError:  # the relay has not made its tables yet
        pass
    return [
        Sos(
            int(seq),
            float(accepted),
            None if batched is None else float(batched),
            received.get(int(seq)),
        )
        for seq, accepted, batched in on_board
    ]


def sbd_sessions(data_dir: Path, until: float) -> list[tuple[float, float]]:
    """(started, ended) of the agent's completed SBD sessions that started before ``until``."""
    ship = _read_only(data_dir / "outbox.sqlite3")
    try:
        return [
            (float(start), float(end))
            for start, end in ship.execute(
                "SELECT started_at, ended_at FROM link_sessions WHERE profile = ? "
                "AND outcome = 'done' AND started_at < ?",
                (IRIDIUM_SBD.name, until),
            )
        ]
    finally:
        ship.close()


def _link_bill(
    profile_name: str,
    sessions: int,
    billed: int,
    cost_usd: float,
    messages: int,
    **extra: object,
) -> dict[str, object]:
    return {
        "profile": profile_name,
        "sessions": sessions,
        "billed_bytes": billed,
        "cost_usd": round(cost_usd, 4),
        "billed_per_message": round(billed / max(1, messages), 1),
        "cost_per_message_usd": round(cost_usd / max(1, messages), 6),
        **extra,
    }


def _latency(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50_s": rounded(percentile(values, 0.5)),
        "p99_s": rounded(percentile(values, 0.99)),
    }


async def run_mixed(
    main: str,
    days: float,
    minutes: float,
    workdir: Path,
    drain_minutes: float = 5.0,
    *,
    tls: bool = True,
    grievances: int = 30,
) -> dict[str, object]:
    """Play the voyage on the mixed profile (see the module docstring); its figures."""
    if main not in MAIN_PROFILES:
        raise ValueError(f"the mixed profile's main link is one of {MAIN_PROFILES}, not {main!r}")
    profile = PROFILES[main]
    compression, day_s = compression_for(days, minutes)
    schedule = Schedule.for_days(days)
    arrivals = mixed_arrivals(days, grievances, schedule)
    text_bytes = sum(len(a.text.encode("utf-8")) for a in arrivals if a.kind == "message")
    shaped = EMULATED[main]
    system = ProcessSystem(
        workdir,
        vessel_count=1,
        crew_per_vessel=len(CREW_LANGUAGES),
        crew_languages=CREW_LANGUAGES,
        profile=shaped.time_compressed(compression),
        tuning=mixed_tuning(main, compression, day_s),
        tls=tls,
        sbd=True,
        sbd_downlink_window_s=max(MIN_SBD_WINDOW_S, HOUR / compression),
        port_profile=PORT_LINK.time_compressed(compression),
    )
    await system.start()
    vessel = system.vessels[0]
    assert vessel.port_link is not None
    provider = system.provider
    assert provider is not None
    outages = tuple(link_emulator.Outage(start, length) for start, length in schedule.outages)
    in_port: list[asyncio.TimerHandle] = []
    voyage_started: list[float] = []

    def start_voyage() -> None:
        # the voyage's clock starts once the crew signed in: outages and port from now
        voyage_started.append(time.monotonic())
        vessel.link.set_profile(replace(shaped, outages=outages).time_compressed(compression))
        in_port.append(
            asyncio.get_running_loop().call_later(
                schedule.port_from_s / compression, vessel.set_in_port, True
            )
        )

    try:
        try:
            accepted, filed = await play(
                vessel.http_url, vessel.setup, arrivals, compression, on_start=start_voyage
            )
            voyage_left = voyage_started[0] + days * DAY / compression - time.monotonic()
            await asyncio.sleep(max(0.0, voyage_left))
        finally:
            for handle in in_port:
                handle.cancel()
        month_main = len(vessel.link.statistics().sessions)
        month_port = len(vessel.port_link.statistics().sessions)
        month_mo, month_mt = len(provider.mo), len(provider.mt)
        month_ended_at = time.time()
        deadline = time.monotonic() + drain_minutes * 60
        assert system.relay_setup is not None
        relay_db = system.relay_setup.data_dir / "relay.db"
        union = UnionView(workdir / "union")

        def all_in() -> bool:
            sos = sos_rows(vessel.setup.data_dir, relay_db, vessel.setup.vessel_id)
            return (
                settled(system, accepted)
                and reports_arrived(vessel.setup, relay_db, union, filed)
                and all(s.received_at is not None for s in sos)
            )

        while time.monotonic() < deadline and not all_in():  # noqa: ASYNC110 - other processes
            await asyncio.sleep(1.0)
        main_stats = vessel.link.statistics()
        port_stats = vessel.port_link.statistics()
        lane_up, lane_down = grievance_channel_bytes(vessel.setup, month_ended_at)
    finally:
        await system.stop()
    ended = family_outcomes(system, vessel.setup, accepted, compression)
    latencies = ended.latencies
    verdicts = [o.verdict for o in ended.outcomes]
    messages = len(accepted)
    # main link: its profile's tariff per session (the emulator's count)
    main_month = [s for s in main_stats.sessions[:month_main] if s.ip_bytes_estimate > 0]
    main_drain = [s for s in main_stats.sessions[month_main:] if s.ip_bytes_estimate > 0]
    main_bytes = sum(s.ip_bytes_estimate for s in main_month)
    main_billed = sum(profile.billed_bytes(s.ip_bytes_estimate) for s in main_month)
    # port: PORT_4G's tariff per session
    port_month = [s for s in port_stats.sessions[:month_port] if s.ip_bytes_estimate > 0]
    port_bytes = sum(s.ip_bytes_estimate for s in port_month)
    port_billed = sum(PORT_4G.billed_bytes(s.ip_bytes_estimate) for s in port_month)
    # SBD: every MO and MT message the provider carried, in 50-byte credits
    mo = [len(record.data) for record in provider.mo[:month_mo]]
    mt = [len(data) for data in provider.mt[:month_mt]]
    sbd_billed = sum(sbd_billed_bytes(n) for n in mo + mt)
    sbd_windows = sbd_sessions(vessel.setup.data_dir, month_ended_at)
    sos = sos_rows(vessel.setup.data_dir, relay_db, vessel.setup.vessel_id)
    sos_arrived = [s for s in sos if s.received_at is not None]
    sos_latencies = [s.voyage_latency_s(compression) for s in sos_arrived]
    sos_over_sbd = sum(
        1
        for s in sos
        if s.batched_at is not None
        and any(start <= s.batched_at <= end for start, end in sbd_windows)
    )
    delays = grievance_delays(vessel.setup, relay_db, union, filed, compression)
    links = {
        "main": _link_bill(
            main,
            len(main_month),
            main_billed,
            profile.cost_usd(main_billed),
            messages,
            link_bytes=main_bytes,
            cuts=main_stats.cuts,
        ),
        "sbd": _link_bill(
            IRIDIUM_SBD.name,
            len(sbd_windows),
            sbd_billed,
            IRIDIUM_SBD.cost_usd(sbd_billed),
            messages,
            mo_messages=len(mo),
            mt_messages=len(mt),
            credits=sbd_billed // 50,
        ),
        "port": _link_bill(
            PORT_4G.name,
            len(port_month),
            port_billed,
            PORT_4G.cost_usd(port_billed),
            messages,
            link_bytes=port_bytes,
        ),
    }
    billed = main_billed + sbd_billed + port_billed
    cost = sum(float(str(link["cost_usd"])) for link in links.values())
    never_arrived = (
        sum(1 for v in verdicts if v != "delivered")
        + (len(filed) - len(delays))
        + (len(sos) - len(sos_arrived))
    )
    return {
        **month_figures(
            ended,
            link_sessions=main_month + port_month,
            sessions=len(main_month) + len(port_month) + len(sbd_windows),
            billed=billed,
            text_bytes=text_bytes,
            lane=(lane_up, lane_down),
            grievances=len(filed),
            delays=delays,
            days=days,
            compression=compression,
            tls=tls,
            drained=main_drain,
            drain_billed=sum(profile.billed_bytes(s.ip_bytes_estimate) for s in main_drain),
        ),
        # the mixed profile's own
        "main_profile": main,
        "links": links,
        "cost_usd": round(cost, 4),
        "cost_per_message_usd": round(cost / max(1, messages), 6),
        "grievance_p50_s": rounded(percentile(delays, 0.5)),
        "grievance_p99_s": rounded(percentile(delays, 0.99)),
        "sos": len(sos),
        "sos_arrived": len(sos_arrived),
        "sos_over_sbd": sos_over_sbd,
        "sos_in_outages": sum(
            1 for a in arrivals if a.kind == "sos" and schedule.in_outage(a.at - MONTH_START)
        ),
        "sos_p50_s": rounded(percentile(sos_latencies, 0.5)),
        "sos_p99_s": rounded(percentile(sos_latencies, 0.99)),
        "latency": {
            "family": _latency(latencies),
            "grievance": _latency(delays),
            "sos": _latency(sos_latencies),
        },
        "never_arrived": never_arrived,
        "outages_s": [[start, length] for start, length in schedule.outages],
        "port_from_s": schedule.port_from_s,
    }


#: The mixed profile's table of links: a row per link.
LINK_COLUMNS = (
    "sessions",
    "billed_bytes",
    "cost_usd",
    "billed_per_message",
    "cost_per_message_usd",
)


def print_mixed_tables(row: dict[str, object]) -> None:
    """The mixed profile's bill per link and latency per class, as two Markdown tables."""
    links = row["links"]
    assert isinstance(links, dict)
    print()
    print(f"mixed ({row['main_profile']} with outages + Iridium SBD + port), per link:")
    print("| link | profile | " + " | ".join(LINK_COLUMNS) + " |")
    print("|---" * (len(LINK_COLUMNS) + 2) + "|")
    for name, link in [*links.items(), ("total", None)]:
        if link is None:
            link = {
                "profile": "",
                "sessions": row["sessions"],
                "billed_bytes": row["billed_bytes"],
                "cost_usd": row["cost_usd"],
                "billed_per_message": row["billed_per_message"],
                "cost_per_message_usd": row["cost_per_message_usd"],
            }
        cells = [f"{link[c]:,}" if isinstance(link[c], int) else str(link[c]) for c in LINK_COLUMNS]
        print(f"| {name} | {link['profile']} | " + " | ".join(cells) + " |")
    latency = row["latency"]
    assert isinstance(latency, dict)
    print()
    print("latency per class (voyage seconds):")
    print("| class | count | p50_s | p99_s |")
    print("|---|---|---|---|")
    for name, figures in latency.items():
        print(f"| {name} | {figures['count']} | {figures['p50_s']} | {figures['p99_s']} |")
    print()
    print(
        f"SOS over SBD: {row['sos_over_sbd']} of {row['sos']}; lost {row['lost']}, "
        f"duplicated {row['duplicated']}, never arrived {row['never_arrived']}"
    )
