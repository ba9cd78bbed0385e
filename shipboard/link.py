"""Link: one satellite session over MQTT, and the loop that decides when to open one.

A session (:func:`run_session`) is short and does everything in one connection::

    connect (broker keeps our state, client id v{vessel})  CONNECT / CONNACK
    subscribe vr/{vessel}/d (QoS 1)                          queued downlink flows in
    apply every downlink batch (verified with the shore's key; a bad one is logged, skipped)
    make a batch of the scheduler's messages (+ BatchAck of the downlink just applied)
    publish every unacknowledged uplink batch, oldest first  QoS 1, PUBACK -> mark_sent
    wait (bounded) for the shore's signed BatchAck           arrives on vr/{vessel}/d
    disconnect                                               no idle connection, no pings

What to do and when is decided by the pure :class:`protocol.exchange.VesselExchange`
(its waits are timers); :class:`shipboard.session.VesselSession` answers its events with
the outbox; this module is the asyncio shell around them: it moves bytes between the
exchange and a :class:`shipboard.transport.Link` (:class:`shipboard.mqtt_link.MqttLink`
in production, the test kit's fake link in scenarios), runs the outbox calls in a worker
thread, and sleeps until the exchange's timer or the next downlink payload (aioquic's
asyncio layer).

:func:`run_link` is the long-running loop: it releases the grievance lane's periods that
have ended (:meth:`shipboard.lane.VesselLane.release_due`, with the loop's clock), builds a
snapshot of the outbox, asks the pure :func:`shipboard.scheduler.plan`, runs a session
when the plan says so, and sleeps until the plan's timer, the next lane period's end, the
outbox doorbell or ``stopping``. A failed session is retried
after a capped, jittered backoff (an SOS cuts the backoff short).

A broker PUBACK is not delivery: a batch stays in the outbox until the shore's BatchAck
(sent after the shore's commit) covers it, and every session resends what is uncovered,
byte-identical (same batch number, same message numbers: the idempotency keys).

Choices, for byte cost (figures from FIELD-NOTES, "Bytes on the wire", and our own
measurements in ``tests/shipboard/test_link.py``, printed with ``-s``):

- **Topics** ``vr/{vessel}/u`` and ``vr/{vessel}/d`` (contract.md): 7-9 bytes, so MQTT 5
  topic aliases would save ~5 bytes a publish and cost a property each way: not used.
- **Keep-alive** 600 s. Sessions last seconds, so no PINGREQ is ever sent; the value only
  tells the broker when to drop a vessel whose link vanished (1.5 x keep-alive). An
  always-on client with a 60 s keep-alive would spend ~8.8 MB a month on pings (TLS).
  A dead link inside a session is caught by our own bounded waits instead.
- **Broker state kept** 30 days (MQTT 5 ``SessionExpiryInterval``; 3.1.1
  ``clean_session=False`` never expires): the broker keeps the subscription and queues the
  shore's downlink while
  the vessel is away, so nothing is re-sent by the shore just because a week passed.
  Correctness does not depend on it: the shore resends what the vessel has not acked.
- **Publish timeout** sized from the profile (:meth:`LinkProfile.transfer_timeout_s`), not
  aiomqtt's fixed 10 s; and every wait is raced against the connection's loss, because an
  in-flight aiomqtt publish is not woken when the link drops.
- **TLS**: one :class:`ResumingContext` for the agent's life; it offers the previous
  connection's TLS ticket on the next connect (TLS 1.3 resumption). The handshake carries
  no padding and no middlebox-compatibility records, and the broker's ticket is stateful
  (``shipboard.mqtt_link.client_tls_context``, ``deploy/mosquitto/openssl-broker.cnf``).
  Mosquitto's tickets live 7,200 s, so only sessions less than two hours apart resume:
  FleetBroadband's 6-hourly sessions and Certus polls a day apart pay the full handshake
  (~300 B more). TLS-PSK would avoid the certificate entirely, but Python 3.11 has no
  client PSK API.

Measured (``test_tls_resumption_measured``, 2026-12-07, Mosquitto 2.0.11 with an Ed25519
certificate and deploy/'s OpenSSL settings, through the link emulator, which counts payload
+ 52 B TCP/IP per data segment + TCP open/close 172 + 156 B; pure ACKs not counted), one
session with a 304 B batch of 20 messages up and a 128 B answer down, the broker keeping
the vessel's session::

    plain MQTT 5          1,211 B   (fixed cost of a session ~540 B)
    TLS 1.3, full         2,603 B   (~1,840 B)
    TLS 1.3, resumed      2,301 B   (~1,540 B)

So on Iridium Certus (5,120 B billed minimum) a session with resumed TLS leaves ~3,500 B for
batches before it costs more than the minimum; the scheduler fills sessions up to it.
(FIELD-NOTES' tcpdump figures, 3,300 / 5,800 / ~4,800 B, are for a 2 KB batch.)

Logs carry batch numbers, sizes and states, never message text.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, runtime_checkable
from zoneinfo import ZoneInfo

from common.logs import enter_vessel_scope
from protocol.batch import Batch
from protocol.codebook import Codebook
from protocol.compact import LinkKeys
from protocol.errors import Reason
from protocol.exchange import VesselSettings, VesselState
from protocol.fragments import SBD_MO_BYTES
from protocol.months import BILLING_ZONE, Month
from protocol.quota import QuotaLedger
from protocol.signing import SigningKey, VerifyKey
from shipboard.config import ShipConfig
from shipboard.database import OnDatabase
from shipboard.downlink import DownlinkOutcome, DownlinkVerdict, apply_downlink_payload
from shipboard.errors import OutboxUnavailable
from shipboard.links import (
    IRIDIUM_SBD,
    Availability,
    MqttCarrier,
    PortCarrier,
    SbdCarrier,
    route,
)
from shipboard.mqtt_link import MqttLink, ResumingContext, client_tls_context
from shipboard.outbox import Outbox
from shipboard.profiles import LinkProfile
from shipboard.scheduler import (
    Held,
    HoldReason,
    PendingLike,
    Plan,
    SchedulerSettings,
    SessionReason,
    Snapshot,
)
from shipboard.scheduler import plan as make_plan
from shipboard.session import (
    DownlinkResultLike,
    OutboxPort,
    SendsOverLinks,
    SessionReport,
    StoredBatchLike,
    VesselSession,
    vessel_log,
)
from shipboard.sessions_log import LinkSession, SessionOutcome, SessionsLog
from shipboard.states import RESERVED_KINDS, MessageKind
from shipboard.transport import (
    Link,
    LinkClosed,
    LinkDown,
    LinkError,
    LinkSettings,
    downlink_topic,
    uplink_topic,
)

__all__ = [
    "DownlinkOutcome",
    "DownlinkResultLike",
    "DownlinkVerdict",
    "LaneReleases",
    "Link",
    "LinkClosed",
    "LinkDown",
    "LinkError",
    "LinkOutbox",
    "LinkSettings",
    "LinkStatistics",
    "LoopTimers",
    "OutboxPort",
    "ReservedOnly",
    "ResumingContext",
    "SessionReport",
    "SessionsLogPort",
    "SnapshotSource",
    "StoredBatchLike",
    "Timers",
    "apply_downlink_payload",
    "billed_so_far",
    "build_snapshot",
    "client_tls_context",
    "downlink_topic",
    "reconnect_delay_s",
    "run_link",
    "run_session",
    "uplink_topic",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
UTC_ZONE = ZoneInfo("UTC")
Clock = Callable[[], float]


# --- what the loop needs besides the session's outbox (shipboard.session.OutboxPort) ------


class SnapshotSource(Protocol):
    """The outbox, as the scheduler's snapshot reads it (:func:`build_snapshot`)."""

    def pending_messages(self, now: float) -> Sequence[PendingLike]:
        """Messages waiting for a batch (no text), oldest first."""
        ...

    def quota_ledger(self, now: float) -> Mapping[int, int]:
        """Text bytes accepted this quota month per crew member, pending ones included."""
        ...

    def unacknowledged_batches(self) -> Sequence[StoredBatchLike]:
        """Uplink batches no BatchAck has covered, oldest first."""
        ...


class LinkOutbox(OutboxPort, SnapshotSource, Protocol):
    """The outbox the link loop runs on: a session's and the snapshot's."""


class LaneReleases(Protocol):
    """The grievance lane, as the loop releases it (:class:`shipboard.lane.VesselLane`)."""

    def release_due(self, now: float) -> int:
        """Release every period that ended by ``now``; how many."""
        ...

    def next_release_at(self) -> float:
        """When the next period ends (seconds since 1970)."""
        ...


@runtime_checkable
class SessionsLogPort(Protocol):
    """Where the loop keeps its sessions, and reads the month's spend back
    (:class:`shipboard.sessions_log.SessionsLog`)."""

    def record(self, session: LinkSession) -> int:
        """Keep one session (committed on its own)."""
        ...

    def sessions_in(self, month: int) -> Sequence[LinkSession]:
        """The sessions that started in ``month`` (YYYYMM, UTC)."""
        ...


def sessions_log_of(outbox: object) -> SessionsLogPort | None:
    """The sessions log of the outbox's database, or None for an outbox on none (a fake)."""
    return SessionsLog(outbox) if isinstance(outbox, OnDatabase) else None


# --- time, for the shell -------------------------------------------------------------------


class Timers(Protocol):
    """The shell's clock for the exchange's timers (the test kit's FakeClock is one)."""

    def monotonic(self) -> float:
        """Seconds that never go back."""
        ...

    async def wait_for(self, awaitable: Awaitable[T], timeout_s: float) -> T | None:
        """The awaitable's result, or None (and the awaitable cancelled) after ``timeout_s``."""
        ...


class LoopTimers:
    """:class:`Timers` on the event loop's clock (production)."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait_for(self, awaitable: Awaitable[T], timeout_s: float) -> T | None:
        task = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout_s))
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return task.result() if done else None


# --- one session -------------------------------------------------------------------------


def _exchange_settings(
    settings: LinkSettings, shore_verify_key: VerifyKey, codebook: Codebook
) -> VesselSettings:
    return VesselSettings(
        vessel_id=settings.vessel_id,
        shore_key=shore_verify_key,
        codebook=codebook,
        quiet_s=settings.quiet_s,
        drain_limit_s=settings.ack_wait_s,  # the drain is bounded like the ack wait
        ack_wait_s=settings.ack_wait_s,
        max_batch_messages=settings.max_batch_messages,
    )


async def _drive(
    session: VesselSession, link: Link, timers: Timers, settings: LinkSettings
) -> None:
    """Feed bytes and time between ``session`` and ``link`` until the session is over."""
    while not session.done:
        outgoing_batches = session.data_to_send(timers.monotonic())
        for outgoing in outgoing_batches:
            size = len(outgoing.data)
            await link.publish(outgoing.data, settings.publish_timeout_s(size))
            await asyncio.to_thread(session.published, outgoing.batch_seq, size, timers.monotonic())
        while not session.done and (data := link.receive_nowait()) is not None:
            await asyncio.to_thread(session.receive, data, timers.monotonic())
        if session.state is VesselState.PUBLISHING and not outgoing_batches:
            raise RuntimeError("the exchange is publishing but hands nothing out")
        if session.done or session.state is VesselState.PUBLISHING:
            continue
        timer = session.next_timer()
        if timer is None:
            raise RuntimeError(f"the exchange waits in state {session.state.value} without a timer")
        data = await timers.wait_for(link.receive(), timer - timers.monotonic())
        if data is None:
            await asyncio.to_thread(session.handle_timer, timers.monotonic())
        else:
            await asyncio.to_thread(session.receive, data, timers.monotonic())
    # Downlink that already arrived is applied before we go (the broker handed it over).
    while (data := link.receive_nowait()) is not None:
        await asyncio.to_thread(session.receive, data, timers.monotonic())


async def run_session(
    settings: LinkSettings,
    outbox: OutboxPort,
    *,
    signing_key: SigningKey,
    codebook: Codebook,
    shore_verify_key: VerifyKey,
    message_seqs: Sequence[int] = (),
    clock: Clock = time.time,
    tls_context: ssl.SSLContext | None = None,
    link: Link | None = None,
    timers: Timers | None = None,
) -> SessionReport:
    """One satellite session: fetch downlink, batch ``message_seqs``, publish, await acks.

    ``link`` defaults to an :class:`MqttLink` to ``settings``' broker; ``timers`` to the
    event loop's clock; ``clock`` (wall time) stamps the outbox's records.

    Raises :class:`LinkDown` when the broker cannot be reached or the connection breaks;
    whatever was committed before stays committed, and the rest happens next time.
    """
    log = vessel_log(settings.vessel_id)
    link = link if link is not None else MqttLink(settings, tls_context)
    timers = timers if timers is not None else LoopTimers()
    session = VesselSession(
        _exchange_settings(settings, shore_verify_key, codebook),
        outbox,
        signing_key=signing_key,
        clock=clock,
        link=settings.profile.name,
    )
    try:
        await link.connect()
        await asyncio.to_thread(session.start, timers.monotonic(), message_seqs)
        await _drive(session, link, timers, settings)
    except BaseException as exc:
        if isinstance(exc, LinkDown):
            session.link_lost()
        try:
            await link.close()
        except LinkError:
            log.debug("closing the link after a failure failed too", exc_info=True)
        raise
    await link.close()
    report = session.report(link.tls_resumed)
    log.info(
        "session done: %d published (%d B), %d acknowledged, %d still open, "
        "%d downlink applied (%d B), %d refused, tls resumed %s",
        len(report.published),
        report.uplink_payload_bytes,
        len(report.acknowledged),
        report.unacknowledged_after,
        report.downlink_applied,
        report.downlink_payload_bytes,
        report.downlink_refused,
        report.tls_resumed,
    )
    return report


class ReservedOnly:
    """The outbox as an SBD fallback session sees it: of the unacknowledged batches, only
    those that carry an SOS, a report or a lane block are offered again (a batch of family
    messages waits for the main link, where it costs a thousandth as much). An outbox that
    cannot tell (a test's fake) offers all of them.

    With ``link_keys`` the batches it makes are compact frames (``protocol.compact``) when
    the frame fits one SBD message (:data:`~protocol.fragments.SBD_MO_BYTES`, 340 bytes),
    else signed batches: a lone SOS or short message then costs one 50-byte credit instead
    of three or four, while a payload that needs several messages anyway (a lane block: a
    384-byte sealed box) keeps the vessel's signature. An outbox that takes no link keys
    (a test's fake) makes signed batches.
    """

    def __init__(self, outbox: OutboxPort, link_keys: LinkKeys | None = None) -> None:
        self._outbox = outbox
        self._link_keys = link_keys
        #: Batches this session made: offered whatever they carry (the loop asked for
        #: them: family messages the owner let go over SBD, ``[sbd] family_after_minutes``).
        self._made: set[int] = set()

    def unacknowledged_batches(self) -> Sequence[StoredBatchLike]:
        batches = self._outbox.unacknowledged_batches()
        reserved = getattr(self._outbox, "reserved_batch_seqs", None)
        if reserved is None:
            return batches
        keep: frozenset[int] = reserved()
        return tuple(
            batch for batch in batches if batch.batch_seq in keep or batch.batch_seq in self._made
        )

    def make_batch(
        self, message_seqs: Sequence[int], codebook: Codebook, signing_key: SigningKey, now: float
    ) -> tuple[int, bytes]:
        if self._link_keys is not None and isinstance(self._outbox, Outbox):
            made = self._outbox.make_batch(
                message_seqs,
                codebook,
                signing_key,
                now,
                link_keys=self._link_keys,
                compact_max_bytes=SBD_MO_BYTES,
            )
        else:
            made = self._outbox.make_batch(message_seqs, codebook, signing_key, now)
        self._made.add(made[0])
        return made

    def mark_sent(self, batch_seq: int, now: float) -> None:
        self._outbox.mark_sent(batch_seq, now)

    def mark_sent_over(self, batch_seq: int, now: float, link: str) -> None:
        if isinstance(self._outbox, SendsOverLinks):
            self._outbox.mark_sent_over(batch_seq, now, link)
        else:
            self._outbox.mark_sent(batch_seq, now)

    def apply_downlink(self, batch: Batch, now: float) -> DownlinkResultLike:
        return self._outbox.apply_downlink(batch, now)

    def refuse_downlink(self, batch_seq: int, reason: Reason, now: float) -> bool:
        refuse = getattr(self._outbox, "refuse_downlink", None)
        return bool(refuse(batch_seq, reason, now)) if refuse is not None else False


# --- the loop ----------------------------------------------------------------------------


def build_snapshot(
    outbox: SnapshotSource,
    *,
    now: float,
    quota_bytes: int,
    remaining_budget_bytes: int,
    last_session_at: float | None,
) -> Snapshot:
    """The scheduler's view of the outbox.

    Quota months are the outbox's: calendar months in its ``time_zone`` (the vessel's,
    set by the agent from ``[time] zone``), UTC for an outbox that has none.
    """
    pending = tuple(outbox.pending_messages(now))
    zone: ZoneInfo = getattr(outbox, "time_zone", UTC_ZONE)
    month = Month.of(now, zone)
    start, end = month.bounds_s(zone)
    accepted = outbox.quota_ledger(now)
    waiting: dict[int, int] = {}
    for message in pending:
        if (
            message.kind == MessageKind.MESSAGE
            and message.crew is not None
            and message.accepted_at >= start
        ):
            waiting[message.crew] = waiting.get(message.crew, 0) + message.text_bytes
    carried = {
        (crew, month): max(0, used - waiting.get(crew, 0)) for crew, used in accepted.items()
    }
    return Snapshot(
        pending=pending,
        ledger=QuotaLedger(quota_bytes, carried),
        remaining_budget_bytes=max(0, remaining_budget_bytes),
        month=month,
        month_start=start,
        next_month_start=end,
        last_session_at=last_session_at,
        # An ack-only batch is no reason to open a session: nobody acknowledges it, and
        # once the broker took it, it is not sent again (protocol.exchange).
        unacknowledged_batches=sum(
            1 for stored in outbox.unacknowledged_batches() if not stored.ack_only
        ),
    )


def reconnect_delay_s(
    failures: int, rng: random.Random, *, base_s: float = 15.0, cap_s: float = 1800.0
) -> float:
    """Backoff after ``failures`` failed sessions in a row: doubling, capped, jittered.

    Between half and all of ``min(cap_s, base_s * 2**(failures-1))``, so vessels that lost
    the link together do not all come back in the same second.
    """
    if failures < 1:
        return 0.0
    ceiling = min(cap_s, base_s * (1 << min(failures - 1, 30)))
    return ceiling * (0.5 + 0.5 * rng.random())


@dataclass
class LinkStatistics:
    """Counters since start, for the status page."""

    sessions: int = 0
    failures: int = 0
    batches_published: int = 0
    estimated_billed_bytes: int = 0
    last_session_at: float | None = None
    last_plan: Plan | None = None
    #: Billed bytes spent on the link this (UTC) month, sessions before a restart included.
    billed_this_month_bytes: int = 0
    #: Sessions over the SBD fallback (also counted in ``sessions``).
    fallback_sessions: int = 0
    #: Sessions over a cheap link in port (also counted in ``sessions``).
    port_sessions: int = 0
    #: Whether a cheap link in port is in reach now (for the crew page).
    in_port: bool = False


async def _wait_any(
    events: Sequence[asyncio.Event], timeout_s: float, timers: Timers | None = None
) -> None:
    """Until one of ``events`` is set or ``timeout_s`` passed on ``timers``' clock (the
    event loop's when None; a test's fake clock jumps instead of waiting)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        if timers is None:
            await asyncio.wait(waiters, timeout=max(0.0, timeout_s), return_when="FIRST_COMPLETED")
        else:
            await timers.wait_for(
                asyncio.wait(waiters, return_when="FIRST_COMPLETED"), max(0.0, timeout_s)
            )
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


SessionRunner = Callable[..., Coroutine[Any, Any, SessionReport]]


async def _record_session(
    sessions: SessionsLogPort | None,
    profile: LinkProfile,
    started_at: float,
    ended_at: float,
    report: SessionReport | None,
    overhead_bytes: int,
    log: logging.LoggerAdapter[logging.Logger],
    *,
    budget_bytes: int | None = None,
) -> None:
    """Keep the session in the sessions log for the monthly report (``report`` None: it
    failed). Without a log (tests' fakes), nothing is kept."""
    if sessions is None:
        return
    session = LinkSession(
        started_at=started_at,
        ended_at=max(started_at, ended_at),
        outcome=SessionOutcome.FAILED if report is None else SessionOutcome.DONE,
        uplink_payload_bytes=0 if report is None else report.uplink_payload_bytes,
        downlink_payload_bytes=0 if report is None else report.downlink_payload_bytes,
        overhead_bytes=overhead_bytes,
        profile=profile.name,
        budget_bytes=budget_bytes,
    )
    try:
        await asyncio.to_thread(sessions.record, session)
    except OutboxUnavailable as exc:
        log.error("link session not recorded for the monthly report: %s", exc)


async def billed_so_far(
    sessions: SessionsLogPort | OnDatabase | None, profile: LinkProfile, month: Month
) -> int:
    """Billed bytes of the month's completed sessions in the sessions log (or in the
    sessions log of the database ``sessions`` stands on).

    This is where the budget tally starts after a restart (even after SIGKILL: each
    session is committed on its own when it ends). Every session is priced under the
    current ``profile``, as the monthly statement does (``sessions_log.price_month``).
    No sessions log (tests' fakes): nothing spent.
    """
    log = sessions if isinstance(sessions, SessionsLogPort) else sessions_log_of(sessions)
    if log is None:
        return 0
    found = await asyncio.to_thread(log.sessions_in, month.key)
    return sum(
        s.budget_bytes if s.budget_bytes is not None else profile.billed_bytes(s.link_bytes)
        for s in found
        if s.outcome is SessionOutcome.DONE
        and (s.budget_bytes is not None or s.profile != IRIDIUM_SBD.name)
    )


def _budget_on(main_bytes: int, main: LinkProfile, other: LinkProfile) -> int:
    """The owner's budget left (``main_bytes``, in the main link's billed bytes) as billed
    bytes of ``other`` at its price (rounded down)."""
    if main.price_per_mb_usd <= 0 or other.price_per_mb_usd <= 0:
        return main_bytes
    return int(main_bytes * main.price_per_mb_usd // other.price_per_mb_usd)


def budget_charge(sbd_billed_bytes: int, main: LinkProfile) -> int:
    """What ``sbd_billed_bytes`` billed on SBD cost the owner's budget, in the main link's
    billed bytes at the same price (rounded up): the budget counts money, not bytes."""
    if main.price_per_mb_usd <= 0 or IRIDIUM_SBD.price_per_mb_usd <= 0:
        return sbd_billed_bytes
    return math.ceil(sbd_billed_bytes * IRIDIUM_SBD.price_per_mb_usd / main.price_per_mb_usd)


def _family_charge(
    snapshot: Snapshot, sent: Sequence[int], report: SessionReport, main: LinkProfile
) -> int | None:
    """The budget an SBD session's family messages cost (None: it carried none): the
    session's billed bytes on SBD times the family messages' share of the payload bytes
    it was asked to send, at SBD's price in the main link's billed bytes."""
    asked = {m.message_seq: m for m in snapshot.pending if m.message_seq in set(sent)}
    family = sum(m.payload_bytes for m in asked.values() if m.kind not in RESERVED_KINDS)
    if not family:
        return None
    whole = sum(max(1, m.payload_bytes) for m in asked.values())
    billed = IRIDIUM_SBD.billed_bytes(report.uplink_payload_bytes + report.downlink_payload_bytes)
    return budget_charge(math.ceil(billed * family / whole), main)


def _seqs(held: Sequence[Held], most: int = 10) -> str:
    shown = ", ".join(str(h.message_seq) for h in held[:most])
    return shown + (" ..." if len(held) > most else "")


async def run_link(
    *,
    config: ShipConfig,
    outbox: LinkOutbox,
    sessions: SessionsLogPort | None = None,
    signing_key: SigningKey,
    codebook: Codebook,
    stopping: asyncio.Event,
    doorbell: asyncio.Event,
    clock: Clock = time.time,
    link_settings: LinkSettings | None = None,
    scheduler_settings: SchedulerSettings | None = None,
    tls_context: ssl.SSLContext | None = None,
    rng: random.Random | None = None,
    statistics: LinkStatistics | None = None,
    session_runner: SessionRunner = run_session,
    outbox_retry_s: float = 60.0,
    lane: LaneReleases | None = None,
    timers: Timers | None = None,
    main: MqttCarrier | None = None,
    fallback: SbdCarrier | None = None,
    fallback_settings: LinkSettings | None = None,
    port: PortCarrier | None = None,
    reconnect_base_s: float = 15.0,
    reconnect_cap_s: float = 1800.0,
    fallback_reconnect_cap_s: float = 300.0,
) -> None:
    """Run the link until ``stopping`` is set: release the grievance lane's ended periods,
    plan, maybe run a session, sleep, repeat.

    Which way out each pass uses is decided in one place, :func:`shipboard.links.route`
    (built on :func:`shipboard.links.choose`, the cheapest available carrier that may
    carry what waits). ``main`` is the main link's availability (default: paused while
    ``[link] paused``, down after 15 minutes of failed sessions). ``fallback`` is the
    Iridium SBD carrier (None: the vessel has none). While the main link is paused or
    down, or its last session failed and an SOS waits, the SOS, reports and lane blocks
    are planned on their own under the SBD tariff and sent over SBD within their targets;
    family messages wait for the main link (a paused main link opens no session at all),
    unless ``[sbd] family_after_minutes`` is set: then family messages that waited that
    long while the main link is down (not paused) join the SBD plan, under the crew's
    quotas and the owner's budget (its remainder converted to SBD billed bytes at SBD's
    price), and what they cost is charged to the budget (:func:`budget_charge`) and kept
    with the session. SBD sessions are kept in the sessions log under ``iridium-sbd``; the
    reserved lane is outside the budget. ``fallback_settings``: the SBD sessions' waits
    (default: a 5 s downlink drain, 180 s for the shore's BatchAck).

    ``port``: a cheap link in port (4G, Wi-Fi). While it is in reach (and the cheapest
    available way: a main link priced below it, VSAT, keeps the traffic), the plan is made
    under its tariff and sessions open on it (owner's pause and budget aside: it is not
    the satellite), so everything waiting goes at once and the downlink is drained; its
    sessions are kept in the sessions log under its profile's name and not counted
    against the satellite budget. ``statistics.in_port`` says whether it is in reach.

    ``lane`` is the agent's grievance lane (None: nothing to release, as for an outbox
    fake); its blocks are released here at each period's end, before the snapshot, so a
    session that opens then carries them. ``timers`` is what the loop sleeps on between
    plans (the event loop's clock when None; scenarios pass their fake clock, which must
    then also be ``clock``).

    ``doorbell`` is rung by intake whenever the outbox changed. Each session is kept in
    ``sessions`` (default: the sessions log of the outbox's database; none for an outbox
    on no database). The monthly budget is checked against a billed-bytes tally per UTC
    month (the provider's billing month, and the sessions log's): it starts from the
    sessions recorded this month (:func:`billed_so_far`), so a restart does not forget
    what was spent, and grows by each session's estimate as it ends.

    A failed session on the main link is tried again after :func:`reconnect_delay_s` with
    ``reconnect_base_s`` and ``reconnect_cap_s`` (15 s doubling up to 30 minutes); a failed
    SBD session up to ``fallback_reconnect_cap_s`` (5 minutes). A time-compressed run
    (``benchmarks/e2e.py``) divides them like every other clock.
    """
    log_of_sessions = sessions if sessions is not None else sessions_log_of(outbox)
    settings = link_settings or LinkSettings.from_config(config)
    profile = settings.profile
    policy = scheduler_settings or SchedulerSettings(
        latency_s={kind: minutes * 60.0 for kind, minutes in config.latency_minutes.items()}
    )
    if tls_context is None and config.shore.tls:
        tls_context = client_tls_context(config.shore.ca_file, config.shore.tls_minimum)
    rng = rng or random.Random()
    stats = statistics if statistics is not None else LinkStatistics()
    shore_key = VerifyKey.from_hex(config.shore_verify_key_hex)
    # derived once: the SBD fallback's compact frames (ReservedOnly)
    link_keys = LinkKeys.for_vessel(settings.vessel_id, signing_key, shore_key)
    log = vessel_log(settings.vessel_id)
    enter_vessel_scope(settings.vessel_id)  # this task's log lines carry v{vessel}
    billed: dict[Month, int] = {}
    failures = 0
    backoff_until = 0.0
    after_down_s = 60.0 * (config.sbd.after_down_minutes if config.sbd else 15)
    main = main or MqttCarrier(
        settings,
        tls_context=tls_context,
        paused=lambda: config.link.paused,
        after_down_s=after_down_s,
    )
    fb_settings = fallback_settings or replace(
        settings, profile=IRIDIUM_SBD, downlink_quiet_s=5.0, ack_wait_s=180.0
    )
    fb_policy = replace(policy, session_overhead_bytes=0)
    family_after_s = (
        60.0 * config.sbd.family_after_minutes
        if config.sbd is not None and config.sbd.family_after_minutes is not None
        else None
    )
    fb_failures = 0
    fb_backoff_until = 0.0
    fb_last_at: float | None = None
    port_last_at: float | None = None
    log.info("link to %s:%d (%s) running", settings.host, settings.port, profile.name)
    while not stopping.is_set():
        doorbell.clear()
        now = clock()
        month = Month.of(now, BILLING_ZONE)
        try:
            if month not in billed:
                billed[month] = await billed_so_far(log_of_sessions, profile, month)
                log.info("budget: %d billed bytes spent in %s so far", billed[month], month)
            stats.billed_this_month_bytes = billed[month]
            if lane is not None:
                await asyncio.to_thread(lane.release_due, now)
            snapshot = await asyncio.to_thread(
                build_snapshot,
                outbox,
                now=now,
                quota_bytes=config.quota.crew_text_bytes,
                remaining_budget_bytes=config.link.monthly_budget_bytes - billed.get(month, 0),
                last_session_at=stats.last_session_at,
            )
        except OutboxUnavailable as exc:
            # Nothing can be sent or recorded now; intake refuses too. Try again later.
            log.error("outbox unavailable (%s); link waits %.0f s", exc, outbox_retry_s)
            await _wait_any((stopping,), outbox_retry_s, timers)
            continue
        main_state = main.availability(now)
        port_state = port.availability(now) if port is not None else None
        if port is not None:
            stats.in_port = port_state is Availability.UP
        way = route(
            main=(main.terms, main_state),
            fallback=fallback.terms if fallback is not None else None,
            port=(port.terms, port_state) if port is not None and port_state is not None else None,
            pending=snapshot.pending,
            now=now,
            main_failing=failures > 0,
            family_after_s=family_after_s,
            session_overhead_bytes=policy.session_overhead_bytes,
        )
        if port is not None and way.port:
            port_plan = make_plan(
                replace(snapshot, last_session_at=port_last_at), port.terms.profile, policy, now
            )
            stats.last_plan = port_plan
            if port_plan.open_session:
                log.info(
                    "port session opens (%s): %d messages", port_plan.reason, len(port_plan.send)
                )
                started_at = clock()
                try:
                    report = await session_runner(
                        port.settings,
                        outbox,
                        signing_key=signing_key,
                        codebook=codebook,
                        shore_verify_key=shore_key,
                        message_seqs=port_plan.send,
                        clock=clock,
                        link=port.open(),
                    )
                except (LinkDown, OutboxUnavailable) as exc:
                    stats.failures += 1
                    log.warning("port session failed (%s); back to the satellite plan", exc)
                    await _record_session(
                        log_of_sessions, port.terms.profile, started_at, clock(), None, 0, log
                    )
                else:
                    port_last_at = clock()
                    stats.last_session_at = port_last_at  # the vessel looked for news
                    stats.sessions += 1
                    stats.port_sessions += 1
                    stats.batches_published += len(report.published)
                    await _record_session(
                        log_of_sessions, port.terms.profile, started_at, clock(), report, 0, log
                    )
                    continue
            else:
                wake_at = port_plan.timer  # a poll every few minutes while in reach
                if lane is not None:
                    wake_at = min(wake_at, lane.next_release_at())
                await _wait_any((stopping, doorbell), wake_at - clock(), timers)
                continue
        plan = make_plan(snapshot, profile, policy, now)
        stats.last_plan = plan
        for reason in (HoldReason.QUOTA, HoldReason.BUDGET):
            held = plan.held_for(reason)
            if held:
                log.warning("%d messages held (%s): %s", len(held), reason, _seqs(held))
        if fallback is not None and way.fallback:
            family = frozenset(way.family_on_fallback)
            reserved = replace(
                snapshot,
                pending=tuple(
                    m
                    for m in snapshot.pending
                    if m.kind in RESERVED_KINDS or m.message_seq in family
                ),
                unacknowledged_batches=0,
                last_session_at=fb_last_at,
                # family messages on SBD are billed against the owner's budget, at SBD's
                # price: the budget left, in SBD's billed bytes
                remaining_budget_bytes=_budget_on(
                    snapshot.remaining_budget_bytes, profile, IRIDIUM_SBD
                ),
            )
            fb_plan = make_plan(reserved, IRIDIUM_SBD, fb_policy, now)
            if fb_plan.open_session and fb_plan.send and now >= fb_backoff_until:
                log.info(
                    "sbd session opens (%s; main link %s): %d messages",
                    fb_plan.reason,
                    main_state,
                    len(fb_plan.send),
                )
                started_at = clock()
                try:
                    report = await session_runner(
                        fb_settings,
                        ReservedOnly(outbox, link_keys),
                        signing_key=signing_key,
                        codebook=codebook,
                        shore_verify_key=shore_key,
                        message_seqs=fb_plan.send,
                        clock=clock,
                        link=fallback.open(),
                    )
                except (LinkDown, OutboxUnavailable) as exc:
                    fb_failures += 1
                    stats.failures += 1
                    delay = reconnect_delay_s(
                        fb_failures, rng, base_s=reconnect_base_s, cap_s=fallback_reconnect_cap_s
                    )
                    fb_backoff_until = clock() + delay
                    log.warning("sbd session failed (%s); next try in %.0f s", exc, delay)
                    await _record_session(
                        log_of_sessions, IRIDIUM_SBD, started_at, clock(), None, 0, log
                    )
                    continue
                fb_failures = 0
                fb_last_at = clock()
                stats.sessions += 1
                stats.fallback_sessions += 1
                stats.batches_published += len(report.published)
                charged = _family_charge(reserved, fb_plan.send, report, profile)
                if charged is not None:
                    billed[month] = billed.get(month, 0) + charged
                    stats.estimated_billed_bytes += charged
                    stats.billed_this_month_bytes = billed[month]
                    log.info("sbd session carried family messages: %d B of budget", charged)
                await _record_session(
                    log_of_sessions,
                    IRIDIUM_SBD,
                    started_at,
                    clock(),
                    report,
                    0,
                    log,
                    budget_bytes=charged,
                )
                continue
            if fb_plan.open_session and not fb_plan.send:
                # Only a poll or a resend is due: SBD does not poll (a mailbox check per
                # day would be; not done yet), so count it as done and plan again later.
                fb_last_at = now
                fb_plan = make_plan(
                    replace(reserved, last_session_at=now), IRIDIUM_SBD, fb_policy, now
                )
            if main_state is Availability.PAUSED:
                wake_at = max(fb_plan.timer, fb_backoff_until) if fb_plan.send else fb_plan.timer
                if lane is not None:
                    wake_at = min(wake_at, lane.next_release_at())
                await _wait_any((stopping, doorbell), wake_at - clock(), timers)
                continue
        elif main_state is Availability.PAUSED:
            wake_at = plan.timer if not plan.open_session else now + profile.idle_poll_s
            if lane is not None:
                wake_at = min(wake_at, lane.next_release_at())
            await _wait_any((stopping, doorbell), wake_at - clock(), timers)
            continue
        if plan.open_session and (plan.reason is SessionReason.SOS or now >= backoff_until):
            log.info(
                "session opens (%s): %d messages, ~%d B",
                plan.reason,
                len(plan.send),
                plan.estimated_link_bytes,
            )
            started_at = clock()
            try:
                report = await session_runner(
                    settings,
                    outbox,
                    signing_key=signing_key,
                    codebook=codebook,
                    shore_verify_key=shore_key,
                    message_seqs=plan.send,
                    clock=clock,
                    tls_context=tls_context,
                )
            except (LinkDown, OutboxUnavailable) as exc:
                failures += 1
                stats.failures += 1
                delay = reconnect_delay_s(
                    failures, rng, base_s=reconnect_base_s, cap_s=reconnect_cap_s
                )
                backoff_until = clock() + delay
                main.failed(started_at)
                log.warning("session failed (%s); next try in %.0f s", exc, delay)
                await _record_session(log_of_sessions, profile, started_at, clock(), None, 0, log)
                continue
            failures = 0
            main.succeeded()
            stats.sessions += 1
            stats.batches_published += len(report.published)
            stats.last_session_at = clock()
            session_bytes = (
                policy.session_overhead_bytes
                + report.uplink_payload_bytes
                + report.downlink_payload_bytes
            )
            cost = profile.billed_bytes(session_bytes)
            billed[month] = billed.get(month, 0) + cost
            stats.estimated_billed_bytes += cost
            stats.billed_this_month_bytes = billed[month]
            await _record_session(
                log_of_sessions,
                profile,
                started_at,
                clock(),
                report,
                policy.session_overhead_bytes,
                log,
            )
            continue
        wake_at = plan.timer if not plan.open_session else max(plan.timer, backoff_until)
        if lane is not None:
            wake_at = min(wake_at, lane.next_release_at())
        await _wait_any((stopping, doorbell), wake_at - clock(), timers)
    log.info("link stopped")
