"""Satellite sessions for a month-long voyage: what the scheduler's choices cost per link.

A simulated 30-day voyage (fake clock, seeded randomness) of 30 crew members writing home
in their own languages (texts: lines of the repository's ``corpus/*.dev.txt``), a few
grievance reports, one SOS, and families' replies coming back. For each built-in link
profile the pure scheduler (:func:`shipboard.scheduler.plan`) decides when sessions open
and what goes; the real batch encoder (``protocol.batch.encode_batch`` with
``common.codebooks.default_codebook()``) gives every batch's bytes, up and down.

Per session, link bytes are modelled around those real batch bytes:

- **measured** (``tests/shipboard/test_link.py::test_tls_resumption_measured``: aiomqtt and
  Mosquitto through the link emulator, which counts payload bytes, 52 B of TCP/IP header
  per data segment and the TCP open/close of 172 + 156 B that FIELD-NOTES measured with
  tcpdump): a session with a 413 B batch up and a 121 B batch down was 1,441 B in plain
  MQTT, 3,864 B with a full TLS 1.3 handshake, 3,081 B with TLS 1.3 resumed. Taking out
  the per-batch cost below leaves the fixed cost of a session: CONNECT/CONNACK,
  SUBSCRIBE/SUBACK, DISCONNECT, TCP open/close, the TLS handshake.
- **modelled** per batch: its payload, 16 B of MQTT (PUBLISH header and PUBACK), one
  52 B TCP/IP header per 1,448 B segment plus one for the PUBACK, and with TLS 22 B per
  TLS record (one per 16 KB, one for the PUBACK).
- **modelled**: a session resumes TLS when the previous one ended less than 7,200 s
  before (Mosquitto's ticket lifetime, FIELD-NOTES); otherwise it pays the full handshake.
  Pure TCP ACKs are not counted (as in the link emulator): the figures are a floor.

**The downlink** follows the relay's rule, :func:`protocol.exchange.downlink_release_due`
(called here): what the relay queues for the vessel (DELIVERED receipts a minute after a
session, families' replies at their times) goes down at once only when no downlink batch
with items is unacknowledged; otherwise it waits ashore until the vessel's uplink comes.
In a session the vessel first drains what waits at the broker, then its uplink (messages
and the BatchAck of the downlink) makes the relay answer with one batch (BatchAck,
ACCEPTED_ASHORE receipts and everything held; split at ``max_items``); an uplink that only
acknowledges is answered after the vessel left, at the broker for the next session.
Resends of a lost downlink batch are not modelled (the model's link loses nothing).

"Idle billed bytes per month": the same profile for 30 days with no crew traffic at all
(only the polls that fetch news from the shore).

Usage::

    python benchmarks/sessions.py                            # a table, every profile
    python benchmarks/sessions.py --profile iridium-certus   # one profile
    python benchmarks/sessions.py --json                     # {"profiles": {NAME: {...}}}
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.codebooks import default_codebook
from protocol.batch import Direction, encode_batch
from protocol.codebook import Codebook
from protocol.envelopes import (
    BatchAck,
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    GrievanceReport,
    ReceiptStage,
    Reply,
    Sos,
)
from protocol.exchange import ShoreState, downlink_release_due
from protocol.languages import Language
from protocol.months import Month
from protocol.quota import RULE_MONTHLY_TEXT_BYTES, QuotaLedger
from protocol.signing import SigningKey
from shipboard.profiles import PROFILES, LinkProfile
from shipboard.scheduler import SchedulerSettings, Snapshot, plan
from vessel_relay.corpus import corpus_dir

DAY = 86_400.0
MONTH_START = 1_790_812_800.0  # 2026-10-01 00:00 UTC
MONTH = Month(2026, 10)
DAYS = 30
MONTHLY_BUDGET_BYTES = 40_000_000  # the default [link] monthly_budget_bytes

# Measured session bytes (see the module docstring) and the batches they carried.
MEASURED_UP_BATCH, MEASURED_DOWN_BATCH = 413, 121
MEASURED_SESSION = {"plain": 1441, "tls-full": 3864, "tls-resumed": 3081}
TLS_TICKET_S = 7200.0
MSS, TCPIP, TLS_RECORD, TLS_RECORD_MAX, MQTT_PER_BATCH = 1448, 52, 22, 16_384, 16

CREW_LANGUAGES = (
    [Language.MYA] * 12
    + [Language.KHM] * 6
    + [Language.LAO] * 2
    + [Language.IND] * 3
    + [Language.TGL] * 2
    + [Language.VIE] * 3
    + [Language.SHN] * 2
)
MESSAGES_PER_DAY = 4.0
REPLY_SHARE = 0.3
#: The relay's default ``[downlink] max_items``: most envelopes in one downlink batch.
DOWNLINK_MAX_ITEMS = 200
#: Seconds from a session to the family's mail server taking its messages (DELIVERED).
DELIVERY_S = 60.0
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
SHORE_KEY = SigningKey.from_seed(bytes(range(1, 33)))


def batch_link_bytes(payload: int, tls: bool) -> int:
    """Modelled link bytes of one batch published QoS 1 (payload included)."""
    segments = math.ceil(payload / MSS) + 1
    records = math.ceil(payload / TLS_RECORD_MAX) + 1 if tls else 0
    return payload + MQTT_PER_BATCH + TCPIP * segments + TLS_RECORD * records


def session_base(kind: str) -> int:
    """Measured fixed cost of a session: the measured total minus its two batches."""
    tls = kind != "plain"
    batches = batch_link_bytes(MEASURED_UP_BATCH, tls) + batch_link_bytes(MEASURED_DOWN_BATCH, tls)
    return MEASURED_SESSION[kind] - batches


@dataclass(frozen=True, slots=True)
class Pending:
    message_seq: int
    kind: str
    crew: int | None
    text_bytes: int
    payload_bytes: int
    accepted_at: float
    envelope: Envelope


@dataclass(order=True)
class Arrival:
    at: float
    seq: int
    kind: str = field(compare=False)
    crew: int = field(compare=False)
    text: str = field(compare=False, default="")
    sealed: bytes = field(compare=False, default=b"")


def load_lines(language: Language) -> list[str]:
    path = corpus_dir() / f"{language.code}.dev.txt"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def voyage(seed: int = 7, traffic: bool = True) -> tuple[list[Arrival], list[tuple[float, int]]]:
    """Crew arrivals over the month and the times families' replies reach the shore."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    replies: list[tuple[float, int]] = []
    if not traffic:
        return arrivals, replies
    lines = {language: load_lines(language) for language in set(CREW_LANGUAGES)}
    for crew, language in enumerate(CREW_LANGUAGES, start=1):
        at = MONTH_START
        while True:
            at += rng.expovariate(MESSAGES_PER_DAY / DAY)
            if at >= MONTH_START + DAYS * DAY:
                break
            text = rng.choice(lines[language])
            arrivals.append(Arrival(at, 0, "message", crew, text))
            if rng.random() < REPLY_SHARE:
                replies.append((at + rng.uniform(2, 24) * 3600, crew))
    for day, size in ((4, 1024), (11, 256), (19, 1024), (26, 256)):
        at = MONTH_START + day * DAY + rng.uniform(0, DAY)
        arrivals.append(Arrival(at, 0, "grievance", 0, sealed=rng.randbytes(size + 48)))
    arrivals.append(Arrival(MONTH_START + 15.3 * DAY, 0, "sos", 5))
    arrivals.sort()
    for seq, arrival in enumerate(arrivals, start=1):
        arrival.seq = seq
    replies.sort()
    return arrivals, replies


def to_pending(arrival: Arrival) -> Pending:
    minutes = int(arrival.at // 60)
    language = CREW_LANGUAGES[arrival.crew - 1] if arrival.crew else Language.UND
    envelope: Envelope
    if arrival.kind == "message":
        size = len(arrival.text.encode("utf-8"))
        envelope = CrewMessage(arrival.seq, arrival.crew, 1, minutes, language, arrival.text)
        return Pending(arrival.seq, "message", arrival.crew, size, size, arrival.at, envelope)
    if arrival.kind == "grievance":
        envelope = GrievanceReport(arrival.seq, 1, minutes, arrival.sealed)
        size = len(arrival.sealed)
        return Pending(arrival.seq, "grievance", None, 0, size, arrival.at, envelope)
    envelope = Sos(arrival.seq, arrival.crew, minutes, position=(1_234_567, 9_876_543))
    return Pending(arrival.seq, "sos", arrival.crew, 0, 16, arrival.at, envelope)


@dataclass
class Result:
    sessions: int = 0
    link_bytes: int = 0
    billed_bytes: int = 0
    text_bytes: dict[int, int] = field(default_factory=dict)
    sos_delay_s: float = 0.0
    grievance_max_delay_s: float = 0.0
    message_max_delay_s: float = 0.0
    left_on_board: int = 0
    downlink_batches: int = 0


class Voyage:
    """One profile's month: the scheduler's plan, real batches, modelled sessions."""

    def __init__(self, profile: LinkProfile, codebook: Codebook, traffic: bool) -> None:
        self.profile = profile
        self.codebook = codebook
        self.settings = SchedulerSettings(session_overhead_bytes=session_base("tls-resumed"))
        self.arrivals, self.replies = voyage(traffic=traffic)
        self.result = Result()
        self.up_seq = 0
        self.down_seq = 0
        self.reply_seq = 0
        self.down_pending_ack = False
        #: DELIVERED receipts the relay will queue: (when, message_seq), in time order.
        self.deliveries: list[tuple[float, int]] = []
        #: The relay's downlink queue (held while a batch with items is in flight).
        self.waiting: list[Envelope] = []
        self.in_flight = False
        #: Payload bytes of the downlink batches waiting at the broker for the vessel.
        self.at_broker: list[int] = []

    def encode(self, envelopes: Sequence[Envelope], direction: Direction, now: float) -> bytes:
        if direction is Direction.UPLINK:
            self.up_seq += 1
            seq, key = self.up_seq, VESSEL_KEY
        else:
            self.down_seq += 1
            seq, key = self.down_seq, SHORE_KEY
        return encode_batch(
            envelopes,
            direction=direction,
            vessel_id=42,
            batch_seq=seq,
            batch_minutes=int(now // 60),
            signing_key=key,
            codebook=self.codebook,
        )

    def _downlink(self, envelopes: Sequence[Envelope], now: float) -> list[int]:
        """Payload bytes of the downlink batches carrying ``envelopes`` (a BatchAck first,
        if any, rides in the first), split at the relay's ``max_items``."""
        ack = [e for e in envelopes[:1] if isinstance(e, BatchAck)]
        items = list(envelopes[len(ack) :])
        sizes = []
        while ack or items:
            chunk, items = items[:DOWNLINK_MAX_ITEMS], items[DOWNLINK_MAX_ITEMS:]
            sizes.append(len(self.encode([*ack, *chunk], Direction.DOWNLINK, now)))
            ack = []
            self.result.downlink_batches += 1
        if any(not isinstance(e, BatchAck) for e in envelopes):
            self.in_flight = True
        return sizes

    def _relay_until(self, now: float) -> None:
        """The relay's side up to ``now``: DELIVERED receipts and families' replies are
        queued in time order, and go to the broker when the relay's rule says so."""
        while True:
            delivery = self.deliveries[0][0] if self.deliveries else math.inf
            reply = self.replies[0][0] if self.replies else math.inf
            at = min(delivery, reply)
            if at > now:
                return
            minutes = int(at // 60)
            if delivery <= reply:
                _, seq = self.deliveries.pop(0)
                self.waiting.append(DeliveryReceipt(seq, ReceiptStage.DELIVERED, minutes))
            else:
                _, crew = self.replies.pop(0)
                self.reply_seq += 1
                language = CREW_LANGUAGES[crew - 1]
                text = load_lines(language)[self.reply_seq % 150]
                self.waiting.append(Reply(self.reply_seq, crew, 1, minutes, language, text))
            if downlink_release_due(
                ShoreState.NOTHING_OWED,
                waiting=len(self.waiting),
                urgent=False,
                in_flight=int(self.in_flight),
            ):
                self.at_broker += self._downlink(self.waiting, at)
                self.waiting = []

    def session(self, chosen: list[Pending], now: float, last: float | None) -> int:
        """Link bytes of one session carrying ``chosen`` (and what the relay sends)."""
        minutes = int(now // 60)
        resumed = last is not None and now - last < TLS_TICKET_S
        link = session_base("tls-resumed" if resumed else "tls-full")
        self._relay_until(now)
        # The drain: what waited at the broker.
        for size in self.at_broker:
            link += batch_link_bytes(size, True)
            self.down_pending_ack = True
        self.at_broker = []
        # Uplink: chosen messages (in batches of 500) and the ack of the downlink.
        envelopes: list[Envelope] = [p.envelope for p in chosen]
        if self.down_pending_ack:
            envelopes.insert(0, BatchAck(up_to=self.down_seq, written_minutes=minutes))
            self.down_pending_ack = False
        first_up = self.up_seq + 1
        for start in range(0, len(envelopes), 500):
            data = self.encode(envelopes[start : start + 500], Direction.UPLINK, now)
            link += batch_link_bytes(len(data), True)
        if self.up_seq < first_up:
            return link  # nothing went up: the relay does not know the vessel came
        # The relay hears the vessel: its BatchAck covers every downlink batch so far.
        self.in_flight = False
        owed = ShoreState.ACK_DUE if chosen else ShoreState.ACK_OWED
        answer: list[Envelope] = [BatchAck(up_to=self.up_seq, written_minutes=minutes)]
        answer += [
            DeliveryReceipt(p.message_seq, ReceiptStage.ACCEPTED_ASHORE, minutes) for p in chosen
        ]
        answer += self.waiting
        if downlink_release_due(owed, waiting=len(answer) - 1, urgent=False, in_flight=0):
            sizes = self._downlink(answer, now)
            self.waiting = []
            if owed is ShoreState.ACK_DUE:  # the vessel waits for it: it comes in the session
                link += sum(batch_link_bytes(size, True) for size in sizes)
                self.down_pending_ack = True
            else:  # an acknowledgement alone is answered after the vessel left
                self.at_broker += sizes
        done = now + DELIVERY_S
        self.deliveries += [(done, p.message_seq) for p in chosen if p.kind == "message"]
        return link

    def run(self) -> Result:
        result = self.result
        end = MONTH_START + DAYS * DAY
        upcoming = list(self.arrivals)
        pending: dict[int, Pending] = {}
        carried: dict[int, int] = {}
        last: float | None = None
        now = MONTH_START
        while now < end:
            while upcoming and upcoming[0].at <= now:
                arrival = upcoming.pop(0)
                pending[arrival.seq] = to_pending(arrival)
            snapshot = Snapshot(
                pending=tuple(pending.values()),
                ledger=QuotaLedger(
                    RULE_MONTHLY_TEXT_BYTES, {(c, MONTH): n for c, n in carried.items()}
                ),
                remaining_budget_bytes=max(0, MONTHLY_BUDGET_BYTES - result.billed_bytes),
                month=MONTH,
                month_start=MONTH_START,
                next_month_start=end,
                last_session_at=last,
            )
            decision = plan(snapshot, self.profile, self.settings, now)
            if decision.open_session:
                chosen = [pending.pop(seq) for seq in decision.send]
                link = self.session(chosen, now, last)
                result.sessions += 1
                result.link_bytes += link
                result.billed_bytes += self.profile.billed_bytes(link)
                for item in chosen:
                    delay = now - item.accepted_at
                    if item.kind == "sos":
                        result.sos_delay_s = max(result.sos_delay_s, delay)
                    elif item.kind == "grievance":
                        result.grievance_max_delay_s = max(result.grievance_max_delay_s, delay)
                    elif item.crew is not None:
                        result.message_max_delay_s = max(result.message_max_delay_s, delay)
                        carried[item.crew] = carried.get(item.crew, 0) + item.text_bytes
                duration = self.profile.transfer_s(link) + 2 * self.profile.latency_s
                last = now + duration
                now = last
                continue
            next_arrival = upcoming[0].at if upcoming else math.inf
            now = min(decision.timer, next_arrival)
        result.text_bytes = {crew: carried.get(crew, 0) for crew in range(1, 31)}
        result.left_on_board = len(pending)
        return result


def run(profiles: Sequence[LinkProfile]) -> dict[str, dict[str, object]]:
    codebook = default_codebook()
    report: dict[str, dict[str, object]] = {}
    for profile in profiles:
        busy = Voyage(profile, codebook, traffic=True).run()
        idle = Voyage(profile, codebook, traffic=False).run()
        report[profile.name] = {
            "sessions": busy.sessions,
            "link_bytes": busy.link_bytes,
            "billed_bytes": busy.billed_bytes,
            "idle_billed_bytes_per_month": idle.billed_bytes,
            "downlink_batches": busy.downlink_batches,
            "text_bytes": {str(crew): n for crew, n in busy.text_bytes.items()},
            "_extra": busy,
        }
    return report


def print_table(report: dict[str, dict[str, object]]) -> None:
    header = (
        f"{'profile':16}{'sessions':>9}{'down batches':>13}{'link B':>11}{'billed B':>11}"
        f"{'cost $':>9}"
        f"{'idle billed B/mo':>18}{'text B total':>14}{'per crew min-max':>20}"
        f"{'SOS s':>7}{'griev. h':>9}{'msg h':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, row in report.items():
        extra = row["_extra"]
        assert isinstance(extra, Result)
        profile = PROFILES[name]
        texts = list(extra.text_bytes.values())
        print(
            f"{name:16}{extra.sessions:>9,}{extra.downlink_batches:>13,}"
            f"{extra.link_bytes:>11,}{extra.billed_bytes:>11,}"
            f"{profile.cost_usd(extra.billed_bytes):>9.2f}"
            f"{row['idle_billed_bytes_per_month']:>18,}{sum(texts):>14,}"
            f"{f'{min(texts):,}-{max(texts):,}':>20}"
            f"{extra.sos_delay_s:>7.0f}{extra.grievance_max_delay_s / 3600:>9.2f}"
            f"{extra.message_max_delay_s / 3600:>7.2f}"
        )
    print(
        "\n30 crew, 30 days, ~4 messages a day each (corpus dev lines), 4 grievance reports, "
        "1 SOS; 30% of messages get a reply.\nLink bytes: real batches + session costs "
        "measured over Mosquitto (TLS 1.3, resumed within 2 h) + modelled per-batch "
        "TCP/IP/TLS/MQTT bytes; pure TCP ACKs not counted."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--profile", action="append", choices=list(PROFILES), help="only these (repeatable)"
    )
    args = parser.parse_args(argv)
    report = run([PROFILES[name] for name in args.profile or PROFILES])
    if args.json:
        clean = {
            name: {key: value for key, value in row.items() if not key.startswith("_")}
            for name, row in report.items()
        }
        json.dump({"profiles": clean}, sys.stdout)
        print()
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
