"""Satellite sessions for a month-long voyage: the whole link bill per profile, lane included.

A simulated 30-day voyage (fake clock, seeded randomness) of 30 crew members writing home
in their own languages (texts: lines of the repository's ``corpus/*.dev.txt``), grievance
reports, one SOS, and families' replies coming back. For each built-in link profile the
pure scheduler (:func:`shipboard.scheduler.plan`) decides when sessions open and what
goes; the real batch encoder (``protocol.batch.encode_batch`` with
``common.codebooks.default_codebook()``) gives every batch's bytes, up and down. **TLS is
on** (MQTT over TLS 1.3, as ``deploy/`` runs it); ``--no-tls`` prices plain MQTT instead.

**The grievance lane** runs as the agent runs it, by the agent's own code: a
:class:`shipboard.lane.VesselLane` (its planner and reservoir, on a vessel database in a
temporary directory) releases one sealed 384-byte uplink block per lane period
(``[grievances] slot_period_s``, default 6 h: four a day) at each period's end, as an
outbox item of kind ``lane`` accepted at that end; the scheduler sends it, like any
grievance, once ``[latency_minutes] grievance`` (default a day) has passed, in a real
``LaneBlock`` envelope inside the batch the session makes. Reports are sealed as the
agent's intake seals them (:func:`protocol.sealing.seal_grievance_unpadded`, text: 1 to
12 corpus lines of the reporter's language; 30 a month on average, the reports of
``benchmarks/e2e.py``) and filed into the lane (:meth:`~shipboard.lane.VesselLane.file`):
a report overwrites as many cover blocks as its sealed size needs (316 payload bytes a
block), so the wire is the same with reports or without. A model union trial-decrypts
every uplink block and reassembles the reports; a report's delay is from filing on board
to the start of the session that carried its last block. Down, the relay sends one
384-byte ``LaneBlock`` per downlink lane period (the relay's ``[downlink] slot_period_s``,
default a day) to every vessel whose lane blocks arrived in the last 30 days; whether a
block holds a union's note or cover does not change the wire, so they are all cover here.

**Byte noise.** Every sealed block is random bytes, cover or report. In a batch with crew
texts the blocks are compressed in the same frame as the texts, so the batch's size moves
by a few bytes with the blocks' random bytes (now and then across a padding class), and
the session's length with it: figures differ from run to run by about 0.05 %, with
reports or without. A month without family traffic is byte-exact: the same with reports
as without.

The lane ran before the month: the simulation starts ``WARMUP_DAYS`` earlier (no crew
traffic, nothing counted), so blocks of the previous day's periods leave in the month's
first sessions as they would at sea; and it goes on ``TAIL_DAYS`` after the month (not
counted either) so that the month's last reports arrive and their delay is measured. The
agent does not restart during the month (a restart puts a new report behind the rows
already on disk: ``shipboard/lane_plan.py`` bounds that).

**The relay's side** follows ``shore/downlink.py`` and its store, and its downlink
follows the relay's coalescing rule, :func:`protocol.exchange.downlink_release_due`
(called here, as the store calls it): what the relay queues for the vessel (a family's
reply, the ``DELIVERED`` receipts of a session's messages once delivered, the lane's block
at the end of its period) waits in its store while a downlink batch with items is
unacknowledged (in flight), and goes down, all of it in one batch (split at ``[downlink]
max_items``), when the vessel's uplink comes: with the answer to an uplink batch with
content (``BatchAck``, an ``ACCEPTED_ASHORE`` receipt per message, everything held),
within the session; or, when the uplink only acknowledges the batch in flight, after the
vessel left, at the broker for its next session. With nothing in flight, what is queued
goes at the relay's next downlink pass (every ``tick_s``, 5 s) and waits at the broker; an
SOS's outcome (its ``DELIVERED`` receipt) never waits. The ``DELIVERED`` receipts of one
session count as one delivery moment, at the session's end. An uplink batch that only
acknowledges is acknowledged lazily, by the next batch the relay makes anyway. A downlink
batch with items that the vessel has not acknowledged is resent by
:func:`protocol.exchange.downlink_resend_at` (after 24 h in any case), and every copy
waiting at the broker is downloaded and paid for. The vessel acknowledges what it got in
the session's uplink; an uplink batch that only acknowledges is published again in each
session until the relay's acknowledgement covers it, as
:class:`protocol.exchange.VesselExchange` does. ``link_bytes_by_part`` says where the bytes
go: the sessions' fixed cost, the vessel's batches, the relay's answers within sessions,
and what the relay queued while the vessel was away (with the rule, mostly the lane's
block of a quiet day, what an acknowledgement-only session freed, the SOS's outcome and
resent copies). ``downlink_batches`` counts the downlink batches the relay made in the
month (each once, however often resent); under the rule a busy month makes about one a
session, an idle one at most two.

Per session, link bytes are modelled around those real batch bytes:

- **measured** (``tests/shipboard/test_link.py::test_tls_resumption_measured``, 2026-12-07:
  aiomqtt and Mosquitto through the link emulator, which counts payload bytes, 52 B of
  TCP/IP header per data segment and the TCP open/close of 172 + 156 B that FIELD-NOTES
  measured with tcpdump; the broker with a private CA's Ed25519 certificate
  (``vessel_relay.demo.tls.DEPLOYED_KEY_TYPE``) and deploy/'s OpenSSL settings: one
  session ticket, stateful (a 32-byte id), no middlebox-compatibility records; the
  vessel's client as ``shipboard.mqtt_link.client_tls_context`` makes it: TLS 1.3 only,
  hello not padded, no middlebox compatibility; the vessel's session kept by the broker,
  so no SUBSCRIBE): a session with a 304 B batch up and a 128 B batch down was 1,211 B in
  plain MQTT, 2,603 B with a full TLS 1.3 handshake, 2,301 B with TLS 1.3 resumed (before
  those TLS settings, with a self-signed EC P-256 certificate: 2,973 and 2,766 B). Taking
  out the per-batch cost below leaves the fixed cost of a session: CONNECT/CONNACK,
  DISCONNECT, TCP open/close, the TLS handshake.
- **modelled** per batch: its payload, 16 B of MQTT (PUBLISH header and PUBACK), one
  52 B TCP/IP header per 1,448 B segment plus one for the PUBACK, and with TLS 22 B per
  TLS record (one per 16 KB, one for the PUBACK).
- **modelled**: a session resumes TLS when the previous one ended less than 7,200 s
  before (Mosquitto's ticket lifetime, FIELD-NOTES); otherwise it pays the full handshake.
  Pure TCP ACKs are not counted (as in the link emulator): the figures are a floor.

**The bill** (JSON keys per profile; every figure is of the sessions that open in the
month):

- ``messages``, ``text_bytes_total``: family messages the crew wrote that month and their
  UTF-8 bytes; ``text_bytes``: per crew member, the text bytes carried (quota bytes).
- ``billed_per_message``: ``billed_bytes`` over ``messages``.
- ``grievance_channel_bytes`` = ``grievance_channel_bytes_up`` +
  ``grievance_channel_bytes_down``: the link bytes of the lane's ``LaneBlock`` envelopes,
  up and down, with their share of per-batch overhead. **Attribution rule**: a batch's
  modelled link bytes (payload with its header, signature and padding; MQTT; TCP/IP;
  TLS records) are shared between its ``LaneBlock`` envelopes and its other envelopes in
  proportion to each side's marginal payload bytes: the batch's size minus the size of
  the same batch (same number, same time) re-encoded without that side. A batch of
  nothing but lane blocks is the lane's whole; a ``BatchAck`` riding along takes its
  marginal share (often none: the padding absorbs it). Every copy the vessel downloads
  counts. Not attributed: the session's fixed cost (TLS handshake, MQTT
  connect, TCP open/close) and the provider's rounding and session minimum; what an idle
  month costs in all is ``idle_billed_bytes_per_month``.
- ``grievance_p95_s``: 95th percentile (nearest rank) over the month's reports of the
  seconds from filing on board to the session that carried the report's last block.
- ``idle_billed_bytes_per_month``: the same profile for 30 days with no crew traffic at
  all: the polls, and the lane (``idle_lane_blocks_up``: four blocks a day up,
  ``idle_lane_blocks_down``: the relay's daily block down; ``idle_downlink_batches``: the
  relay's batches of that month).

Usage::

    python benchmarks/sessions.py                   # a table (TLS 1.3 on)
    python benchmarks/sessions.py --json            # {"profiles": {NAME: {...}}}
    python benchmarks/sessions.py --no-tls          # plain MQTT (not how it is deployed)
    python benchmarks/sessions.py --grievances 0    # no reports (the wire is the same)
    python benchmarks/sessions.py --profile iridium-certus   # one profile (repeatable)
"""

from __future__ import annotations

import argparse
import bisect
import functools
import heapq
import json
import math
import random
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nacl.public

from common.codebooks import default_codebook
from protocol.batch import Direction, encode_batch
from protocol.cases import lane_report_number, make_receipt_code
from protocol.codebook import Codebook
from protocol.envelopes import (
    BatchAck,
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    LaneBlock,
    ReceiptStage,
    Reply,
    Sos,
    acknowledges_only,
)
from protocol.exchange import (
    SHORE_TRANSITIONS,
    ShoreInput,
    ShoreState,
    downlink_release_due,
    downlink_resend_at,
)
from protocol.lane import Reassembler, cover_down_block, open_up_block
from protocol.languages import Language
from protocol.months import Month
from protocol.quota import RULE_MONTHLY_TEXT_BYTES, QuotaLedger
from protocol.sealing import (
    GrievanceCategory,
    GrievancePlaintext,
    open_grievance_any,
    seal_grievance_unpadded,
)
from protocol.signing import SigningKey
from shipboard.config import DEFAULT_LATENCY_MINUTES, QuotaConfig
from shipboard.database import Transaction, VesselDatabase
from shipboard.lane import LaneItem, VesselLane
from shipboard.lane_plan import LaneFull
from shipboard.profiles import PROFILES, LinkProfile
from shipboard.scheduler import SchedulerSettings, Snapshot, plan
from shipboard.states import MessageKind
from shore.config import DownlinkSection
from shore.downlink import DownlinkConfig
from vessel_relay.corpus import corpus_dir

DAY = 86_400.0
MONTH_START = 1_790_812_800.0  # 2026-10-01 00:00 UTC
MONTH = Month(2026, 10)
DAYS = 30
MONTH_END = MONTH_START + DAYS * DAY
#: The lane ran before the month (its blocks of the day before leave in the month).
WARMUP_DAYS = 2
#: After the month: the month's last reports still travel (nothing of it is counted).
TAIL_DAYS = 7
SIM_START = MONTH_START - WARMUP_DAYS * DAY
SIM_END = MONTH_END + TAIL_DAYS * DAY
MONTHLY_BUDGET_BYTES = 40_000_000  # the default [link] monthly_budget_bytes
VESSEL_ID = 42

# Measured session bytes (see the module docstring) and the batches they carried.
MEASURED_UP_BATCH, MEASURED_DOWN_BATCH = 304, 128
MEASURED_SESSION = {"plain": 1211, "tls-full": 2603, "tls-resumed": 2301}
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
#: Reports a month (a Poisson process; the same reports as ``benchmarks/e2e.py``'s).
GRIEVANCES_PER_MONTH = 30
GRIEVANCE_SEED = 11
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
SHORE_KEY = SigningKey.from_seed(bytes(range(1, 33)))
#: The union's report key (X25519); the model union trial-decrypts every block with it.
UNION_KEY = nacl.public.PrivateKey(bytes(range(2, 34)))
#: A reporter's reply key (only its size matters: it is sealed inside the report).
REPLY_KEY = bytes(nacl.public.PrivateKey(bytes(range(3, 35))).public_key)

#: The lane as a vessel runs it by default (``[grievances] slot_period_s``).
VESSEL_LANE = QuotaConfig().lane_shape()
#: The scheduler's latency targets as the agent reads them (``[latency_minutes]``).
LATENCY_S: Mapping[str, float] = {
    kind: minutes * 60.0 for kind, minutes in DEFAULT_LATENCY_MINUTES.items()
}
#: The relay's downlink as its defaults run it (``[downlink]``): the lane's downlink
#: period is ``slot_period_s``; resends follow ``resend_after_s`` and ``resend_max_s``.
_SECTION = DownlinkSection()
RELAY = DownlinkConfig(
    tick_s=_SECTION.tick_s,
    resend_after_s=_SECTION.resend_after_s,
    resend_max_s=_SECTION.resend_max_s,
    max_items=_SECTION.max_items,
    slot_period_s=_SECTION.slot_period_s,
)
#: Outbox numbers of released lane blocks (apart from the crew's arrivals).
LANE_SEQ_BASE = 1_000_000_000


class BenchmarkError(Exception):
    """The simulation went somewhere the agent cannot: the message says what."""


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


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` of 1); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


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


@functools.cache
def load_lines(language: Language) -> list[str]:
    path = corpus_dir() / f"{language.code}.dev.txt"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def grievance_arrivals(count_per_month: int, seed: int = GRIEVANCE_SEED) -> list[Arrival]:
    """``count_per_month`` reports over the month (a Poisson process), each a random crew
    member's 1 to 12 lines of their language's corpus: reports of every length."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    at = MONTH_START
    rate = count_per_month / (DAYS * DAY)
    while count_per_month > 0:
        at += rng.expovariate(rate)
        if at >= MONTH_END:
            break
        crew = rng.randrange(1, len(CREW_LANGUAGES) + 1)
        lines = load_lines(CREW_LANGUAGES[crew - 1])
        text = "\n".join(rng.choice(lines) for _ in range(rng.randint(1, 12)))
        arrivals.append(Arrival(at, 0, "grievance", crew, text))
    return arrivals


def voyage(
    seed: int = 7, traffic: bool = True, grievances: int = GRIEVANCES_PER_MONTH
) -> tuple[list[Arrival], list[tuple[float, int]]]:
    """Crew arrivals over the month and the times families' replies reach the shore.

    ``traffic``: the family messages, their replies and the SOS; ``grievances``: reports
    a month, from their own seeded process, so the family messages and replies are the
    same whatever their number (``traffic=False, grievances=0``: an idle month)."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    replies: list[tuple[float, int]] = []
    if traffic:
        for crew, language in enumerate(CREW_LANGUAGES, start=1):
            at = MONTH_START
            while True:
                at += rng.expovariate(MESSAGES_PER_DAY / DAY)
                if at >= MONTH_END:
                    break
                text = rng.choice(load_lines(language))
                arrivals.append(Arrival(at, 0, "message", crew, text))
                if rng.random() < REPLY_SHARE:
                    replies.append((at + rng.uniform(2, 24) * 3600, crew))
        arrivals.append(Arrival(MONTH_START + 15.3 * DAY, 0, "sos", 5))
    arrivals += grievance_arrivals(grievances)
    arrivals.sort()
    for seq, arrival in enumerate(arrivals, start=1):
        arrival.seq = seq
    replies.sort()
    return arrivals, replies


def to_pending(arrival: Arrival) -> Pending:
    """A family message or an SOS as the outbox offers it to the scheduler."""
    minutes = int(arrival.at // 60)
    envelope: Envelope
    if arrival.kind == "message":
        language = CREW_LANGUAGES[arrival.crew - 1]
        size = len(arrival.text.encode("utf-8"))
        envelope = CrewMessage(arrival.seq, arrival.crew, 1, minutes, language, arrival.text)
        return Pending(arrival.seq, "message", arrival.crew, size, size, arrival.at, envelope)
    if arrival.kind == "sos":
        envelope = Sos(arrival.seq, arrival.crew, minutes, position=(1_234_567, 9_876_543))
        return Pending(arrival.seq, "sos", arrival.crew, 0, 16, arrival.at, envelope)
    raise ValueError(f"a {arrival.kind} does not go to the outbox on its own")


def seal_report(arrival: Arrival, codebook: Codebook) -> bytes:
    """A report sealed to the union as the agent's intake seals one for the lane (mode B,
    unpadded: the lane's fixed blocks hide its length)."""
    language = CREW_LANGUAGES[arrival.crew - 1]
    report = GrievancePlaintext(
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text=arrival.text,
        lang=language,
        receipt_code=make_receipt_code(f"{arrival.seq:015d}"),
        written_minutes=int(arrival.at // 60),
        crew_name=f"Crew member {arrival.crew}",
        crew_document=f"SB-{arrival.crew:07d}",
        reply_key=REPLY_KEY,
        case_number=f"{VESSEL_ID}-{lane_report_number(arrival.seq)}",
    )
    return seal_grievance_unpadded(report, bytes(UNION_KEY.public_key), codebook)


def month_of(now: float) -> tuple[Month, float, float]:
    """The quota month the agent is in at ``now`` (the 30-day month, and its neighbours),
    with its start and the next month's start."""
    if now < MONTH_START:
        return MONTH.previous(), MONTH_START - DAYS * DAY, MONTH_START
    if now < MONTH_END:
        return MONTH, MONTH_START, MONTH_END
    return MONTH.next(), MONTH_END, MONTH_END + DAYS * DAY


@dataclass
class Batch:
    """One batch as the link carries it: its number, bytes and share of the lane."""

    seq: int
    link_bytes: int
    lane_link_bytes: int
    items: int
    lane_blocks: tuple[LaneBlock, ...]
    ack_up_to: int | None
    ack_only: bool
    last_sent_at: float = 0.0


class Encoder:
    """The real batch encoder, and the lane's share of what it makes."""

    def __init__(self, codebook: Codebook, tls: bool) -> None:
        self.codebook = codebook
        self.tls = tls

    def _encode(
        self, envelopes: Sequence[Envelope], direction: Direction, seq: int, minutes: int
    ) -> bytes:
        return encode_batch(
            envelopes,
            direction=direction,
            vessel_id=VESSEL_ID,
            batch_seq=seq,
            batch_minutes=minutes,
            signing_key=VESSEL_KEY if direction is Direction.UPLINK else SHORE_KEY,
            codebook=self.codebook,
        )

    def batch(
        self, envelopes: Sequence[Envelope], direction: Direction, seq: int, now: float
    ) -> Batch:
        """Encode ``envelopes`` as batch ``seq``; price it on the link."""
        minutes = int(now // 60)
        size = len(self._encode(envelopes, direction, seq, minutes))
        link = batch_link_bytes(size, self.tls)
        lane = tuple(e for e in envelopes if isinstance(e, LaneBlock))
        rest = [e for e in envelopes if not isinstance(e, LaneBlock)]
        lane_link = 0
        if lane and not rest:
            lane_link = link
        elif lane:
            # marginal payload bytes of each side (module docstring: attribution rule)
            lane_marginal = max(0, size - len(self._encode(rest, direction, seq, minutes)))
            rest_marginal = max(0, size - len(self._encode(lane, direction, seq, minutes)))
            lane_link = link * lane_marginal // max(1, lane_marginal + rest_marginal)
        acks = [e for e in envelopes if isinstance(e, BatchAck)]
        return Batch(
            seq=seq,
            link_bytes=link,
            lane_link_bytes=lane_link,
            items=len(envelopes) - len(acks),
            lane_blocks=lane,
            ack_up_to=acks[-1].up_to if acks else None,
            ack_only=acknowledges_only(envelopes),
            last_sent_at=now,
        )


class Relay:
    """The relay's side of one vessel's link, as ``shore/downlink.py`` and its store run it
    (see the module docstring): what it queues waits in its store until
    :func:`protocol.exchange.downlink_release_due` says it goes, then all of it in batches
    split at ``max_items``; what goes while the vessel is away waits at the broker."""

    def __init__(
        self, encoder: Encoder, replies: Sequence[tuple[float, int]], start: float, end: float
    ) -> None:
        self.encoder = encoder
        self.shape = RELAY.lane_shape
        period = self.shape.down_period_s
        self.events: list[tuple[float, int, str, tuple[int, ...]]] = [
            (at, n, "reply", (crew,)) for n, (at, crew) in enumerate(replies)
        ]
        first_end = (math.floor(start / period) + 1) * period
        self.events += [
            (float(at), len(self.events) + n, "lane", ())
            for n, at in enumerate(range(first_end, math.ceil(end) + 1, period))
        ]
        heapq.heapify(self.events)
        self._event_n = len(self.events)
        self.waiting: list[Envelope] = []  # queued in the store, in no batch yet
        self.urgent = False  # one of them is an SOS's outcome
        self.broker: list[Batch] = []  # copies waiting for the vessel, in publishing order
        self.open: dict[int, Batch] = {}  # unacknowledged batches with items: in flight
        self.owed = ShoreState.NOTHING_OWED
        self.up_seen = 0
        self.down_seq = 0
        self.reply_seq = 0
        self.last_heard: float | None = None
        self.last_lane_block: float | None = None
        self.copies_resent = 0
        #: the times downlink batches were made (each once, however often it is resent)
        self.made_at: list[float] = []

    def _step(self, event: ShoreInput) -> None:
        self.owed = SHORE_TRANSITIONS[(self.owed, event)]

    def schedule(self, at: float, kind: str, seqs: tuple[int, ...]) -> None:
        """Something the relay will queue for the vessel at ``at``: the ``DELIVERED``
        receipts of messages (``delivered``) or an SOS's outcome (``sos``, urgent)."""
        heapq.heappush(self.events, (at, self._event_n, kind, seqs))
        self._event_n += 1

    def make(self, items: Sequence[Envelope], now: float) -> Batch | None:
        """A downlink batch of ``items`` (and a BatchAck if one is owed), as
        ``make_downlink_batch`` makes it; None when there is nothing to send."""
        if not items and self.owed is not ShoreState.ACK_DUE:
            return None
        envelopes: list[Envelope] = []
        if self.owed is not ShoreState.NOTHING_OWED:
            envelopes.append(BatchAck(up_to=self.up_seen, written_minutes=int(now // 60)))
            self._step(ShoreInput.ACK_SENT)
        envelopes.extend(items)
        self.down_seq += 1
        batch = self.encoder.batch(envelopes, Direction.DOWNLINK, self.down_seq, now)
        self.made_at.append(now)
        if items:  # an acknowledgement alone goes once; items wait for the vessel's
            self.open[batch.seq] = batch
        return batch

    def release(self, now: float) -> list[Batch]:
        """The batches the relay makes now: every waiting item, split at ``max_items``
        (the BatchAck owed in the first), if :func:`downlink_release_due` says so."""
        if not downlink_release_due(
            self.owed, waiting=len(self.waiting), urgent=self.urgent, in_flight=len(self.open)
        ):
            return []
        items, self.waiting, self.urgent = self.waiting, [], False
        made: list[Batch] = []
        while True:
            chunk, items = items[: RELAY.max_items], items[RELAY.max_items :]
            batch = self.make(chunk, now)
            if batch is not None:
                made.append(batch)
            if not items:
                return made

    def _queue(self, until: float) -> None:
        """Queue in the store everything due up to ``until``, in the order it came."""
        while self.events and self.events[0][0] <= until:
            at, _, kind, seqs = heapq.heappop(self.events)
            minutes = int(at // 60)
            if kind == "reply":
                (crew,) = seqs
                self.reply_seq += 1
                language = CREW_LANGUAGES[crew - 1]
                text = load_lines(language)[self.reply_seq % 150]
                self.waiting.append(Reply(self.reply_seq, crew, 1, minutes, language, text))
            elif kind == "lane":
                self.waiting += self._lane_period_over(at)
            else:
                self.waiting += [
                    DeliveryReceipt(seq, ReceiptStage.DELIVERED, minutes) for seq in seqs
                ]
                self.urgent = self.urgent or kind == "sos"

    def _lane_period_over(self, end: float) -> list[Envelope]:
        window = RELAY.lane_vessel_window_s
        if self.last_lane_block is None or self.last_lane_block < end - window:
            return []  # the vessel is not on the lane (yet, or any more)
        shape = self.shape
        period = int(end // shape.down_period_s) - 1
        blocks: list[Envelope] = []
        for index in range(shape.down_blocks_per_period):
            throwaway = bytes(nacl.public.PrivateKey.generate().public_key)
            block = cover_down_block(throwaway, shape.down_block_bytes)
            blocks.append(LaneBlock(period, index, block, int(end // 60)))
        return blocks

    def advance(self, until: float) -> None:
        """Every downlink pass up to ``until`` while the vessel is away: what came since
        the pass before is queued, and released if the rule says so (published at once,
        to wait at the broker); resends when they are due."""
        tick = RELAY.tick_s
        while self.events:
            at = math.ceil(self.events[0][0] / tick) * tick  # the pass that picks it up
            if at > until:
                break
            self._queue(at)
            self.broker += self.release(at)
        for batch in self.open.values():
            while True:
                due = downlink_resend_at(
                    batch.last_sent_at, self.last_heard, RELAY.resend_after_s, RELAY.resend_max_s
                )
                if due > until:
                    break
                batch.last_sent_at = due
                self.broker.append(batch)
                if MONTH_START <= due < MONTH_END:  # a figure of the month, as the others
                    self.copies_resent += 1

    def take_queued(self) -> list[Batch]:
        """What the broker hands the vessel when it connects."""
        queued, self.broker = self.broker, []
        return queued

    def receive(self, batches: Sequence[Batch], now: float) -> None:
        """Uplink batches stored (all of them: the simulated link loses nothing)."""
        for batch in batches:
            self.last_heard = now
            self.up_seen = max(self.up_seen, batch.seq)
            if batch.ack_up_to is not None:
                for seq in [seq for seq in self.open if seq <= batch.ack_up_to]:
                    del self.open[seq]
            if batch.lane_blocks:
                self.last_lane_block = now
            self._step(ShoreInput.STORED_ACK_ONLY if batch.ack_only else ShoreInput.STORED)

    def answer(self, receipts: Sequence[Envelope], now: float) -> list[Batch]:
        """The pass that ingest's doorbell starts at once after the session's uplink: the
        ``ACCEPTED_ASHORE`` receipts join what waits, and the rule decides. For a batch
        with content the BatchAck is due, so everything waiting comes with it within the
        session (returned). After an uplink that only acknowledges, what it freed (the
        batch in flight acknowledged) goes after the vessel left, to the broker."""
        self._queue(now)
        self.waiting += receipts
        in_session = self.owed is ShoreState.ACK_DUE
        made = self.release(now)
        if in_session:
            return made
        self.broker += made
        return []


#: Where a month's link bytes come from: the sessions' fixed cost (TCP, TLS, MQTT connect),
#: the vessel's batches, the relay's answers within a session (with everything the relay
#: held: replies, DELIVERED receipts, lane blocks), and what the relay made while the
#: vessel was away (only when nothing was in flight, or an SOS's outcome, or resent
#: copies: ``downlink_release_due``), downloaded at the next session.
PARTS = ("session_fixed", "uplink_batches", "downlink_answers", "downlink_queued")


@dataclass
class Result:
    sessions: int = 0
    link_bytes: int = 0
    billed_bytes: int = 0
    messages: int = 0
    text_bytes_total: int = 0
    text_bytes: dict[int, int] = field(default_factory=dict)
    lane_bytes_up: int = 0
    lane_bytes_down: int = 0
    lane_blocks_up: int = 0
    lane_blocks_down: int = 0
    down_copies_resent: int = 0
    downlink_batches: int = 0
    grievances: int = 0
    grievance_delays_s: list[float] = field(default_factory=list)
    sos_delay_s: float = 0.0
    message_max_delay_s: float = 0.0
    left_on_board: int = 0
    #: link bytes by where they come from (see ``PARTS``)
    parts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))

    @property
    def grievance_channel_bytes(self) -> int:
        return self.lane_bytes_up + self.lane_bytes_down

    @property
    def grievance_max_delay_s(self) -> float:
        return max(self.grievance_delays_s, default=0.0)


class LaneToPending:
    """The outbox as the lane releases into it (:class:`shipboard.lane.LaneOutbox`): each
    released block becomes an item of kind ``lane``, accepted at its period's end."""

    def __init__(self, pending: dict[int, Pending]) -> None:
        self.pending = pending
        self.next_seq = LANE_SEQ_BASE
        self.carried: set[int] = set()

    def add_lane_items(self, tx: Transaction, items: Sequence[LaneItem], at: float) -> list[int]:
        del tx  # the simulated outbox is in memory
        seqs: list[int] = []
        for item in items:
            self.next_seq += 1
            envelope = LaneBlock(item.period, item.index, item.block, int(at // 60))
            self.pending[self.next_seq] = Pending(
                self.next_seq, MessageKind.LANE, None, 0, len(item.block), at, envelope
            )
            seqs.append(self.next_seq)
        return seqs

    def message_stages(self, seq: int) -> dict[str, object] | None:
        if seq in self.carried:
            return {"state": "acknowledged"}  # the simulated relay acknowledges at once
        return {"state": "accepted"} if seq in self.pending else None


class Voyage:
    """One profile's month: the scheduler's plan, real batches, modelled sessions."""

    def __init__(
        self,
        profile: LinkProfile,
        codebook: Codebook,
        traffic: bool,
        *,
        tls: bool = True,
        grievances: int = GRIEVANCES_PER_MONTH,
    ) -> None:
        self.profile = profile
        self.codebook = codebook
        self.tls = tls
        overhead = session_base("tls-resumed" if tls else "plain")
        self.settings = SchedulerSettings(latency_s=LATENCY_S, session_overhead_bytes=overhead)
        self.arrivals, replies = voyage(traffic=traffic, grievances=grievances)
        self.encoder = Encoder(codebook, tls)
        self.relay = Relay(self.encoder, replies, SIM_START, SIM_END)
        self.result = Result()
        self.pending: dict[int, Pending] = {}
        self.outbox = LaneToPending(self.pending)
        self.up_seq = 0
        self.received_up_to = 0
        self.ack_pending = False
        self.ack_only_open: list[Batch] = []
        self.down_lane_seen: set[tuple[int, int]] = set()
        # the union's side of the lane, and what it should find there
        self.reassembler = Reassembler()
        self.first_filed: dict[int, float] = {}  # report (arrival number) -> first filed
        self.report_of: dict[bytes, int] = {}  # sealed report -> its arrival number

    # --- the vessel's side ---------------------------------------------------------------

    def file_report(self, lane: VesselLane, arrival: Arrival, upcoming: list[Arrival]) -> None:
        """A crew member files a report: sealed, then into the lane (the agent's code). If
        the lane is full the crew member is told when to try again, and does."""
        self.first_filed.setdefault(arrival.seq, arrival.at)  # delays count from here
        sealed = seal_report(arrival, self.codebook)
        try:
            lane.file(
                sealed,
                bytes(UNION_KEY.public_key),
                report_number=lane_report_number(arrival.seq),
                now=arrival.at,
            )
        except LaneFull as full:
            again = float(full.try_again_at(lane.shape, arrival.at))
            bisect.insort(
                upcoming, Arrival(again, arrival.seq, "grievance", arrival.crew, arrival.text)
            )
            return
        self.report_of[sealed] = arrival.seq

    def union_reads(self, blocks: Sequence[LaneBlock], now: float) -> None:
        """The union trial-decrypts the blocks that came up and puts reports together."""
        for envelope in blocks:
            fragment = open_up_block(envelope.block, bytes(UNION_KEY), VESSEL_LANE.block_bytes)
            if fragment is None:
                continue  # cover (or another union's)
            report = self.reassembler.add(fragment, source=VESSEL_ID, now=now)
            if report is None:
                continue
            seq = self.report_of.pop(report, None)
            if seq is None:
                raise BenchmarkError("the union put together a report nobody filed")
            filed = self.first_filed.pop(seq)
            open_grievance_any(report, bytes(UNION_KEY), self.codebook)  # it opens
            if MONTH_START <= filed < MONTH_END:
                self.result.grievance_delays_s.append(now - filed)

    def _uplink(self, chosen: Sequence[Pending], now: float) -> list[Batch]:
        """The batches the session makes (the acknowledgement of the downlink first), as
        ``VesselExchange`` asks the outbox for them: up to 500 messages each."""
        envelopes = [p.envelope for p in chosen]
        if not envelopes and not self.ack_pending:
            return []  # nothing at all to say
        made: list[Batch] = []
        for start in range(0, max(1, len(envelopes)), 500):
            chunk: list[Envelope] = list(envelopes[start : start + 500])
            if self.ack_pending:
                chunk.insert(0, BatchAck(up_to=self.received_up_to, written_minutes=int(now // 60)))
                self.ack_pending = False
            self.up_seq += 1
            made.append(self.encoder.batch(chunk, Direction.UPLINK, self.up_seq, now))
        return made

    def _got(self, batch: Batch, counted: bool) -> None:
        """A downlink batch arrived (its lane blocks counted once each, however many
        copies came): it is acknowledged in the next uplink batch, unless it carries nothing
        but an acknowledgement (the vessel never acknowledges those: protocol.exchange)."""
        for block in batch.lane_blocks:
            place = (block.period, block.index)
            if counted and place not in self.down_lane_seen:
                self.result.lane_blocks_down += 1
            self.down_lane_seen.add(place)
        self.received_up_to = max(self.received_up_to, batch.seq)
        if batch.items:
            self.ack_pending = True
        if batch.ack_up_to is not None:
            self.ack_only_open = [b for b in self.ack_only_open if b.seq > batch.ack_up_to]

    def session(self, chosen: list[Pending], now: float, last: float | None) -> int:
        """Link bytes of one session carrying ``chosen`` (and what the relay queued)."""
        counted = MONTH_START <= now < MONTH_END
        result = self.result
        resumed = last is not None and now - last < TLS_TICKET_S
        kind = ("tls-resumed" if resumed else "tls-full") if self.tls else "plain"
        parts = dict.fromkeys(PARTS, 0)
        parts["session_fixed"] = session_base(kind)
        lane_up = lane_down = 0
        # 1. drain what waits at the broker
        self.relay.advance(now)
        for batch in self.relay.take_queued():
            parts["downlink_queued"] += batch.link_bytes
            lane_down += batch.lane_link_bytes
            self._got(batch, counted)
        # 2. make the session's batches, 3. publish them with the older ones still open
        made = self._uplink(chosen, now)
        published = [*self.ack_only_open, *made]
        for batch in published:
            parts["uplink_batches"] += batch.link_bytes
            lane_up += batch.lane_link_bytes
        blocks = [block for batch in made for block in batch.lane_blocks]
        if counted:
            result.lane_blocks_up += len(blocks)
        self.union_reads(blocks, now)
        self.relay.receive(published, now)
        self.ack_only_open = [batch for batch in published if batch.ack_only]
        # 4. the relay answers content at once, within the session, with what it held
        minutes = int(now // 60)
        receipts: list[Envelope] = [
            DeliveryReceipt(p.message_seq, ReceiptStage.ACCEPTED_ASHORE, minutes)
            for p in chosen
            if p.kind != MessageKind.LANE
        ]
        for answer in self.relay.answer(receipts, now):
            parts["downlink_answers"] += answer.link_bytes
            lane_down += answer.lane_link_bytes
            self._got(answer, counted)
        self.outbox.carried.update(p.message_seq for p in chosen)
        if counted:
            result.lane_bytes_up += lane_up
            result.lane_bytes_down += lane_down
            for part, size in parts.items():
                result.parts[part] += size
        return sum(parts.values())

    # --- the month -------------------------------------------------------------------------

    def run(self) -> Result:
        with _lane_database() as database:
            lane = VesselLane.start(database, self.outbox, VESSEL_LANE, SIM_START)
            try:
                return self._run(lane)
            finally:
                database.close()

    def _run(self, lane: VesselLane) -> Result:
        result = self.result
        upcoming = list(self.arrivals)
        pending = self.pending
        carried: dict[int, int] = {}
        last: float | None = None
        now = SIM_START
        messages = [a for a in upcoming if a.kind == "message"]
        result.messages = len(messages)
        result.text_bytes_total = sum(len(a.text.encode("utf-8")) for a in messages)
        result.grievances = sum(1 for a in upcoming if a.kind == "grievance")
        left_counted = False
        while now < SIM_END:
            if not left_counted and now >= MONTH_END:
                result.left_on_board = sum(1 for p in pending.values() if p.crew is not None)
                left_counted = True
            while upcoming and upcoming[0].at <= now:
                arrival = upcoming.pop(0)
                if arrival.kind == "grievance":
                    self.file_report(lane, arrival, upcoming)
                else:
                    pending[arrival.seq] = to_pending(arrival)
            lane.release_due(now)  # the link loop releases ended periods before planning
            month, month_start, next_month_start = month_of(now)
            billed_this_month = result.billed_bytes if month == MONTH else 0
            snapshot = Snapshot(
                pending=tuple(pending.values()),
                ledger=QuotaLedger(
                    RULE_MONTHLY_TEXT_BYTES, {(c, MONTH): n for c, n in carried.items()}
                ),
                remaining_budget_bytes=max(0, MONTHLY_BUDGET_BYTES - billed_this_month),
                month=month,
                month_start=month_start,
                next_month_start=next_month_start,
                last_session_at=last,
            )
            decision = plan(snapshot, self.profile, self.settings, now)
            if decision.open_session:
                chosen = [pending.pop(seq) for seq in decision.send]
                link = self.session(chosen, now, last)
                if MONTH_START <= now < MONTH_END:
                    result.sessions += 1
                    result.link_bytes += link
                    result.billed_bytes += self.profile.billed_bytes(link)
                    for item in chosen:
                        delay = now - item.accepted_at
                        if item.kind == "sos":
                            result.sos_delay_s = max(result.sos_delay_s, delay)
                        elif item.kind == "message" and item.crew is not None:
                            result.message_max_delay_s = max(result.message_max_delay_s, delay)
                            carried[item.crew] = carried.get(item.crew, 0) + item.text_bytes
                duration = self.profile.transfer_s(link) + 2 * self.profile.latency_s
                last = now + duration
                delivered = tuple(p.message_seq for p in chosen if p.kind == "message")
                if delivered:
                    self.relay.schedule(last, "delivered", delivered)
                for sos in (p.message_seq for p in chosen if p.kind == "sos"):
                    self.relay.schedule(last, "sos", (sos,))  # its outcome: urgent
                now = last
                continue
            next_arrival = upcoming[0].at if upcoming else math.inf
            now = min(decision.timer, next_arrival, lane.next_release_at())
        result.text_bytes = {crew: carried.get(crew, 0) for crew in range(1, 31)}
        result.down_copies_resent = self.relay.copies_resent
        result.downlink_batches = sum(
            1 for at in self.relay.made_at if MONTH_START <= at < MONTH_END
        )
        if self.first_filed:
            raise BenchmarkError(
                f"{len(self.first_filed)} reports were still on board "
                f"{TAIL_DAYS} days after the month: lengthen TAIL_DAYS"
            )
        return result


@contextmanager
def _lane_database() -> Iterator[VesselDatabase]:
    """A vessel database for the lane's reservoir, in a temporary directory. Durability
    is not what is measured here, so commits do not wait for the disk."""
    with tempfile.TemporaryDirectory(prefix="sessions-benchmark-") as directory:
        yield VesselDatabase.open(
            Path(directory) / "outbox.sqlite3", extra_pragmas=("synchronous=OFF",)
        )


def run(
    profiles: Sequence[LinkProfile], *, tls: bool = True, grievances: int = GRIEVANCES_PER_MONTH
) -> dict[str, dict[str, object]]:
    codebook = default_codebook()
    report: dict[str, dict[str, object]] = {}
    for profile in profiles:
        busy = Voyage(profile, codebook, True, tls=tls, grievances=grievances).run()
        idle = Voyage(profile, codebook, False, tls=tls, grievances=0).run()
        report[profile.name] = {
            "sessions": busy.sessions,
            "link_bytes": busy.link_bytes,
            "billed_bytes": busy.billed_bytes,
            "idle_billed_bytes_per_month": idle.billed_bytes,
            "text_bytes": {str(crew): n for crew, n in busy.text_bytes.items()},
            # the link bill (issue "the link bill")
            "messages": busy.messages,
            "text_bytes_total": busy.text_bytes_total,
            "billed_per_message": round(busy.billed_bytes / max(1, busy.messages), 1),
            "grievance_channel_bytes": busy.grievance_channel_bytes,
            "grievance_channel_bytes_up": busy.lane_bytes_up,
            "grievance_channel_bytes_down": busy.lane_bytes_down,
            "grievance_p95_s": _rounded(percentile(busy.grievance_delays_s, 0.95)),
            # beyond the bill
            "cost_usd": round(profile.cost_usd(busy.billed_bytes), 2),
            "lane_blocks_up": busy.lane_blocks_up,
            "lane_blocks_down": busy.lane_blocks_down,
            "downlink_batches": busy.downlink_batches,
            "downlink_copies_resent": busy.down_copies_resent,
            "grievances": busy.grievances,
            "grievance_max_delay_s": round(busy.grievance_max_delay_s),
            "sos_delay_s": round(busy.sos_delay_s),
            "message_max_delay_s": round(busy.message_max_delay_s),
            "left_on_board": busy.left_on_board,
            "idle_sessions_per_month": idle.sessions,
            "idle_downlink_batches": idle.downlink_batches,
            "idle_lane_blocks_up": idle.lane_blocks_up,
            "idle_lane_blocks_down": idle.lane_blocks_down,
            "idle_grievance_channel_bytes": idle.grievance_channel_bytes,
            "link_bytes_by_part": dict(busy.parts),
            "idle_link_bytes_by_part": dict(idle.parts),
            "tls": tls,
            "_extra": busy,
        }
    return report


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value)


def to_json(report: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """The report as ``--json`` prints it: ``{"profiles": {NAME: {key: figure}}}``."""
    return {
        "profiles": {
            name: {key: value for key, value in row.items() if not key.startswith("_")}
            for name, row in report.items()
        }
    }


def print_table(report: Mapping[str, Mapping[str, object]], *, tls: bool = True) -> None:
    link = "MQTT over TLS 1.3 (as deployed)" if tls else "plain MQTT (--no-tls: NOT as deployed)"
    print(f"One month per link profile, grievance lane on, {link}")
    header = (
        f"{'profile':16}{'sessions':>9}{'link B':>11}{'billed B':>11}{'cost $':>8}"
        f"{'billed B/msg':>13}{'idle billed B/mo':>17}{'text B':>9}{'carried/crew':>15}"
        f"{'lane B up':>10}{'lane B dn':>10}{'SOS s':>6}{'griev. p95 h':>13}{'msg max h':>10}"
        f"{'dn batches':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, row in report.items():
        extra = row["_extra"]
        assert isinstance(extra, Result)
        profile = PROFILES[name]
        texts = list(extra.text_bytes.values())
        p95 = percentile(extra.grievance_delays_s, 0.95)
        p95_h = "-" if math.isnan(p95) else f"{p95 / 3600:.1f}"
        print(
            f"{name:16}{extra.sessions:>9,}{extra.link_bytes:>11,}{extra.billed_bytes:>11,}"
            f"{profile.cost_usd(extra.billed_bytes):>8.2f}{row['billed_per_message']:>13,}"
            f"{row['idle_billed_bytes_per_month']:>17,}{extra.text_bytes_total:>9,}"
            f"{f'{min(texts):,}-{max(texts):,}':>15}"
            f"{extra.lane_bytes_up:>10,}{extra.lane_bytes_down:>10,}"
            f"{extra.sos_delay_s:>6.0f}{p95_h:>13}{extra.message_max_delay_s / 3600:>10.2f}"
            f"{extra.downlink_batches:>11,}"
        )
    grievances = next((row["grievances"] for row in report.values()), 0)
    print(
        f"\n30 crew, 30 days, ~4 messages a day each (corpus dev lines), {grievances} grievance "
        "reports (sealed, in the lane), 1 SOS; 30% of messages get a reply.\n"
        "Grievance lane: one 384 B block up every 6 h (reports or cover) due a day after its "
        "period, one down a day; lane B = "
        "its blocks' share of the batches' link bytes (session costs not attributed).\n"
        "Link bytes: real batches + session costs measured over Mosquitto "
        + ("(TLS 1.3, resumed within 2 h)" if tls else "(plain MQTT)")
        + " + modelled per-batch TCP/IP/TLS/MQTT bytes; pure TCP ACKs not counted.\n"
        "Downlink: the relay holds what it queues while a batch is in flight and sends it "
        "with the answer to the vessel's next uplink (protocol.exchange."
        "downlink_release_due); dn batches = downlink batches made in the month."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--no-tls",
        action="store_true",
        help="price plain MQTT instead of MQTT over TLS 1.3 (TLS is on by default, as deployed)",
    )
    parser.add_argument(
        "--profile",
        action="append",
        choices=sorted(PROFILES),
        help="only this link profile (may be repeated; default: every built-in profile)",
    )
    parser.add_argument(
        "--grievances",
        type=int,
        default=GRIEVANCES_PER_MONTH,
        help=f"grievance reports a month (default {GRIEVANCES_PER_MONTH})",
    )
    args = parser.parse_args(argv)
    if args.grievances < 0:
        parser.error("--grievances must not be negative")
    tls = not args.no_tls
    names = args.profile or list(PROFILES)
    report = run([PROFILES[name] for name in names], tls=tls, grievances=args.grievances)
    if args.json:
        json.dump(to_json(report), sys.stdout)
        print()
    else:
        print_table(report, tls=tls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
