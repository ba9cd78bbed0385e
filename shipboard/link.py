"""Link: one satellite session over MQTT, and the loop that decides when to open one.

A session (:func:`run_session`) is short and does everything in one connection::

    connect (persistent session, client id v{vessel})      CONNECT / CONNACK
    subscribe vr/{vessel}/d (QoS 1)                          queued downlink flows in
    apply every downlink batch (verified with the shore's key; see apply_downlink_payload)
    make a batch of the scheduler's messages (+ BatchAck of the downlink just applied)
    publish every unacknowledged uplink batch, oldest first  QoS 1, PUBACK -> mark_sent
    wait (bounded) for the shore's signed BatchAck           arrives on vr/{vessel}/d
    disconnect                                               no idle connection, no pings

:func:`run_link` is the long-running loop: it builds a snapshot of the outbox, asks the
pure :func:`shipboard.scheduler.plan`, runs a session when the plan says so, and sleeps
until the plan's timer, the outbox doorbell or ``stopping``. A failed session is retried
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
- **Session expiry** 30 days (MQTT 5 ``SessionExpiryInterval``; 3.1.1 ``clean_session=False``
  never expires): the broker keeps the subscription and queues the shore's downlink while
  the vessel is away, so nothing is re-sent by the shore just because a week passed.
  Correctness does not depend on it: the shore resends what the vessel has not acked.
- **Publish timeout** sized from the profile (:meth:`LinkProfile.transfer_timeout_s`), not
  aiomqtt's fixed 10 s; and every wait is raced against the connection's loss, because an
  in-flight aiomqtt publish is not woken when the link drops.
- **TLS**: one :class:`ResumingContext` for the agent's life; it offers the previous
  session's ticket on the next connect (TLS 1.3 resumption). FIELD-NOTES: a full TLS 1.3
  handshake is ~1,900 B, a resumed one ~1,150 B. Mosquitto's tickets live 7,200 s, so
  only sessions less than two hours apart resume: Iridium Certus polls 12 h apart pay the
  full handshake (still under the 5 KB minimum, so billed the same). TLS-PSK would avoid
  the certificate entirely, but Python 3.11 has no client PSK API.

Measured (``test_tls_resumption_measured``, Mosquitto 2.0.11 through the link emulator,
which counts payload + 52 B TCP/IP per data segment + TCP open/close 172 + 156 B; pure
ACKs not counted), one session with a 413 B batch of 20 messages up and a 121 B BatchAck
with 20 receipts down::

    plain MQTT 5          1,441 B   (fixed cost of a session ~670 B)
    TLS 1.3, full         3,864 B   (~3,000 B)
    TLS 1.3, resumed      3,081 B   (~2,220 B)

So on Iridium Certus (5,120 B billed minimum) a resumed TLS session leaves ~2,900 B for
batches before it costs more than the minimum; the scheduler fills sessions up to it.
(FIELD-NOTES' tcpdump figures, 3,300 / 5,800 / ~4,800 B, are for a 2 KB batch.)

No downlink batch can stop the agent (:func:`apply_downlink_payload`). Bytes that are not
an authentic batch for this vessel (garbled before the signature, forged, another vessel's)
are logged and skipped: the shore resends what the vessel does not acknowledge. An
authentic batch that does not decode, or whose envelopes the outbox refuses (a state
change the state table forbids, content that no check caught, a bug), is rolled back,
refused for good with a typed reason (``Outbox.refuse_downlink``: the next ``BatchAck``
covers it and names it in ``rejected``, so the shore stops resending it), and the session
goes on with the rest of the traffic. An unexpected failure is logged once with its
traceback. Only a storage failure (``OutboxUnavailable``) ends the session, to be retried.

Logs carry batch numbers, sizes and states, never message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from zoneinfo import ZoneInfo

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.batch import Batch, Direction, decode_batch, read_batch_header
from protocol.codebook import Codebook
from protocol.errors import (
    LimitExceeded,
    NotAllowedInState,
    ProtocolError,
    Reason,
    UnprocessableBatch,
)
from protocol.quota import Month, QuotaLedger
from protocol.quota import month_of as quota_month_of
from protocol.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from shipboard.config import ShipConfig
from shipboard.errors import IllegalTransition, NothingToSend, OutboxUnavailable
from shipboard.profiles import LinkProfile, profile_named
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
from shipboard.sessions_log import LinkSession
from vessel_relay.logs import batch_scope, enter_vessel_scope

__all__ = [
    "DownlinkOutcome",
    "DownlinkVerdict",
    "LinkDown",
    "LinkError",
    "LinkSettings",
    "OutboxPort",
    "ResumingContext",
    "SessionHistory",
    "SessionReport",
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


# --- errors ------------------------------------------------------------------------------


class LinkError(Exception):
    """Base of the link's errors."""


class LinkDown(LinkError):
    """The session could not start or broke off (satellite dropped, broker gone, timeout).

    Nothing is lost: every batch stays in the outbox until the shore acknowledges it.
    """


# --- what the link needs from the outbox -------------------------------------------------


@runtime_checkable
class SessionRecorder(Protocol):
    """An outbox that keeps the link sessions for the monthly report (the real one does)."""

    def record_link_session(self, session: LinkSession) -> int: ...


@runtime_checkable
class SessionHistory(Protocol):
    """An outbox that can read back the sessions it kept (the budget tally starts there)."""

    def link_sessions_in(self, month: int) -> Sequence[LinkSession]: ...


@runtime_checkable
class DownlinkRefusals(Protocol):
    """An outbox that can refuse an authentic downlink batch for good (the real one can)."""

    def refuse_downlink(self, batch_seq: int, reason: Reason, now: float) -> bool: ...


class StoredBatchLike(Protocol):
    """An uplink batch whose bytes are stored (``shipboard.outbox.StoredBatch``)."""

    @property
    def batch_seq(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    @property
    def ack_only(self) -> bool: ...


class DownlinkResultLike(Protocol):
    """What applying a downlink batch changed (``shipboard.outbox.DownlinkResult``)."""

    @property
    def duplicate(self) -> bool: ...
    @property
    def acknowledged_batches(self) -> tuple[int, ...]: ...
    @property
    def rejected_batches(self) -> tuple[int, ...]: ...


class OutboxPort(Protocol):
    """The outbox as the link uses it; synchronous, called through ``asyncio.to_thread``.

    ``shipboard.outbox.Outbox`` implements it; tests use an in-memory fake.
    """

    def pending_messages(self, now: float) -> Sequence[PendingLike]:
        """Messages waiting for a batch (no text), oldest first."""
        ...

    def quota_ledger(self, now: float) -> Mapping[int, int]:
        """Text bytes accepted this (UTC) month per crew member, pending ones included."""
        ...

    def unacknowledged_batches(self) -> Sequence[StoredBatchLike]:
        """Uplink batches no BatchAck has covered, oldest first."""
        ...

    def make_batch(
        self, message_seqs: Sequence[int], codebook: Codebook, signing_key: SigningKey, now: float
    ) -> tuple[int, bytes]:
        """A new stored batch of these messages (plus contact changes and a downlink ack);
        raises ``NothingToSend`` when there is nothing at all to say."""
        ...

    def mark_sent(self, batch_seq: int, now: float) -> None:
        """The broker took the batch (PUBACK): not yet the shore's acknowledgement."""
        ...

    def apply_downlink(self, batch: Batch, now: float) -> DownlinkResultLike:
        """Apply a verified downlink batch in one transaction (duplicates change nothing)."""
        ...


# --- settings ----------------------------------------------------------------------------


def uplink_topic(vessel_id: int) -> str:
    """Where the vessel publishes its batches."""
    return f"vr/{vessel_id}/u"


def downlink_topic(vessel_id: int) -> str:
    """Where the shore publishes the vessel's downlink batches."""
    return f"vr/{vessel_id}/d"


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """How to reach the shore's broker and how long to wait for what."""

    vessel_id: int
    host: str
    port: int
    profile: LinkProfile
    mqtt_version: str = "5"  # or "3.1.1"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive_s: int = 600
    session_expiry_s: int = 30 * 86_400
    #: After subscribing, the downlink is taken as drained once nothing came for this long
    #: (None: two round trips plus half a second, from the profile).
    downlink_quiet_s: float | None = None
    #: Longest wait for the shore's BatchAck after publishing.
    ack_wait_s: float = 30.0
    #: Most messages in one uplink batch (halved when a batch would be over the limit).
    max_batch_messages: int = 500
    #: No MQTT wait is shorter than this, however fast the link (aiomqtt's default is 10 s).
    min_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.mqtt_version not in ("5", "3.1.1"):
            raise ValueError(f'mqtt_version must be "5" or "3.1.1", not {self.mqtt_version!r}')
        if not 0 < self.keepalive_s <= 65_535:
            raise ValueError("keepalive_s must be 1 to 65535 (an MQTT limit)")

    @classmethod
    def from_config(cls, config: ShipConfig, **overrides: Any) -> LinkSettings:
        """Settings from the vessel's config (the broker URL, MQTT version, profile)."""
        settings = cls(
            vessel_id=config.vessel.vessel_id,
            host=config.shore.host,
            port=config.shore.port,
            profile=profile_named(config.link.profile),
            mqtt_version=config.shore.mqtt_version,
            username=config.shore.username,
            password=config.shore.password,
        )
        return replace(settings, **overrides) if overrides else settings

    @property
    def quiet_s(self) -> float:
        """How long a silence ends the downlink drain."""
        if self.downlink_quiet_s is not None:
            return self.downlink_quiet_s
        return 4 * self.profile.latency_s + 0.5

    @property
    def command_timeout_s(self) -> float:
        """Timeout for CONNECT, SUBSCRIBE and DISCONNECT on this link."""
        return self.profile.transfer_timeout_s(512, floor_s=self.min_timeout_s)

    def publish_timeout_s(self, payload_bytes: int) -> float:
        """Timeout for one QoS 1 publish of ``payload_bytes`` (until its PUBACK)."""
        return self.profile.transfer_timeout_s(payload_bytes + 64, floor_s=self.min_timeout_s)


# --- TLS with session resumption ---------------------------------------------------------


class ResumingContext(ssl.SSLContext):
    """A client ``SSLContext`` that offers the previous TLS session when it connects again.

    Keep one for the agent's life. :meth:`remember` (called at the end of a session,
    while the socket is open) keeps the session ticket; the next ``wrap_socket`` passes it
    in, so the handshake is resumed (~1,150 B instead of ~1,900 B, FIELD-NOTES).
    """

    tls_session: ssl.SSLSession | None
    last_socket: ssl.SSLSocket | None

    def wrap_socket(
        self,
        sock: Any,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        offered = session if session is not None else getattr(self, "tls_session", None)
        wrapped = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=offered,
        )
        self.last_socket = wrapped
        return wrapped

    def remember(self) -> bool | None:
        """Keep the current connection's session for next time; whether it was resumed."""
        sock = getattr(self, "last_socket", None)
        if sock is None:
            return None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            current = sock.session
            if current is not None:
                self.tls_session = current
            return bool(sock.session_reused)
        return None

    def forget(self) -> None:
        """Drop the kept session (the next connect does a full handshake)."""
        self.tls_session = None


def client_tls_context(ca_path: Path | None = None) -> ResumingContext:
    """A TLS client context (TLS 1.2+, hostname checked) that resumes sessions.

    ``ca_path``: the shore's CA certificate; None uses the system's trusted CAs.
    """
    context = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.tls_session = None
    context.last_socket = None
    if ca_path is not None:
        context.load_verify_locations(cafile=str(ca_path))
    else:
        context.load_default_certs()
    return context


# --- one downlink payload ------------------------------------------------------------------


class DownlinkOutcome(Enum):
    """What became of one downlink payload."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    #: Authentic, but it does not decode or cannot be applied: refused for good (the
    #: next BatchAck covers it and names the reason); nothing of it was applied.
    REFUSED = "refused"
    #: Not an authentic batch for this vessel (garbled, forged, another vessel's): skipped.
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class DownlinkVerdict:
    """The outcome of one downlink payload, with what it changed or why it was refused."""

    outcome: DownlinkOutcome
    result: DownlinkResultLike | None = None
    reason: Reason | None = None


def apply_downlink_payload(
    outbox: OutboxPort,
    data: bytes,
    *,
    vessel_id: int,
    shore_verify_key: VerifyKey,
    codebook: Codebook,
    now: float,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = logger,
) -> DownlinkVerdict:
    """Verify, decode and apply one downlink payload; never raises for what the bytes say.

    Raises only :class:`~shipboard.errors.OutboxUnavailable` (the outbox cannot store:
    nothing was changed, and the shore's resend brings the batch again) or ``MemoryError``.
    Synchronous: call it through ``asyncio.to_thread``.
    """
    try:
        header = read_batch_header(data)
        if header.direction is not Direction.DOWNLINK or header.vessel_id != vessel_id:
            log.warning(
                "downlink payload of %d bytes: %s is not ours, skipped", len(data), header.where
            )
            return DownlinkVerdict(DownlinkOutcome.IGNORED, reason=Reason.MALFORMED)
        shore_verify_key.verify(data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:], what=header.where)
    except ProtocolError as exc:
        # Not (provably) from the shore: skip it. The shore resends what we do not ack.
        log.warning(
            "downlink payload of %d bytes skipped (%s): %s", len(data), exc.reason.name, exc.message
        )
        return DownlinkVerdict(DownlinkOutcome.IGNORED, reason=exc.reason)
    # Signed by the shore from here on: whatever fails is refused for good, typed.
    try:
        batch = decode_batch(
            data, codebook=codebook, verify_key=shore_verify_key, direction=Direction.DOWNLINK
        )
        result = outbox.apply_downlink(batch, now)
    except (OutboxUnavailable, MemoryError):
        raise  # the agent failed (its disk, its memory), not the batch: the shore resends it
    except ProtocolError as exc:
        refusal: ProtocolError = exc
    except IllegalTransition as exc:
        refusal = NotAllowedInState(f"{header.where} asks for a step the outbox forbids: {exc}")
    except Exception as exc:
        log.error(
            "applying authentic %s failed (%s); refusing it as UNPROCESSABLE. A check is "
            "missing in protocol/ or there is a bug: please report this traceback",
            header.where,
            type(exc).__name__,
            exc_info=exc,
        )
        refusal = UnprocessableBatch(f"{header.where}: applying it failed ({type(exc).__name__})")
    else:
        outcome = DownlinkOutcome.DUPLICATE if result.duplicate else DownlinkOutcome.APPLIED
        return DownlinkVerdict(outcome, result)
    return _refuse_downlink(outbox, header.batch_seq, refusal, now, log)


def _refuse_downlink(
    outbox: OutboxPort,
    batch_seq: int,
    refusal: ProtocolError,
    now: float,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> DownlinkVerdict:
    log.warning(
        "authentic downlink batch %d refused for good (%s): %s",
        batch_seq,
        refusal.reason.name,
        refusal.message,
    )
    if not isinstance(outbox, DownlinkRefusals):
        return DownlinkVerdict(DownlinkOutcome.REFUSED, reason=refusal.reason)
    try:
        outbox.refuse_downlink(batch_seq, refusal.reason, now)
    except OutboxUnavailable:
        raise
    except Exception:
        log.exception("recording the refusal of downlink batch %d failed; skipped", batch_seq)
        return DownlinkVerdict(DownlinkOutcome.IGNORED, reason=refusal.reason)
    return DownlinkVerdict(DownlinkOutcome.REFUSED, reason=refusal.reason)


# --- one session -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionReport:
    """What one session did (ids and sizes only)."""

    published: tuple[int, ...]
    acknowledged: tuple[int, ...]
    rejected: tuple[int, ...]
    unacknowledged_after: int
    downlink_applied: int
    downlink_duplicates: int
    downlink_refused: int
    uplink_payload_bytes: int
    downlink_payload_bytes: int
    tls_resumed: bool | None


class _VesselLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[vessel {extra['vessel']}] {msg}", kwargs


def _make_client(settings: LinkSettings, tls_context: ssl.SSLContext | None) -> aiomqtt.Client:
    common: dict[str, Any] = {
        "hostname": settings.host,
        "port": settings.port,
        "identifier": f"v{settings.vessel_id}",
        "username": settings.username,
        "password": settings.password,
        "keepalive": settings.keepalive_s,
        "timeout": settings.command_timeout_s,
        "tls_context": tls_context,
    }
    if settings.mqtt_version == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = settings.session_expiry_s
        return aiomqtt.Client(
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            **common,
        )
    return aiomqtt.Client(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False, **common)


@dataclass
class _Tally:
    published: list[int] = field(default_factory=list)
    #: Published batches that carry only a BatchAck (the shore acknowledges them lazily).
    ack_only: set[int] = field(default_factory=set)
    acknowledged: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    refused: int = 0
    up_bytes: int = 0
    down_bytes: int = 0


class _Session:
    """The inside of one connected session (see :func:`run_session`)."""

    def __init__(
        self,
        settings: LinkSettings,
        outbox: OutboxPort,
        client: aiomqtt.Client,
        shore_verify_key: VerifyKey,
        codebook: Codebook,
        clock: Clock,
        log: _VesselLog,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.client = client
        self.shore_verify_key = shore_verify_key
        self.codebook = codebook
        self.clock = clock
        self.log = log
        self.tally = _Tally()
        self.arrived = asyncio.Event()
        self.applying = asyncio.Lock()
        self.reader: asyncio.Task[None] | None = None

    async def read_downlink(self) -> None:
        topic = downlink_topic(self.settings.vessel_id)
        async for message in self.client.messages:
            payload = message.payload
            if not message.topic.matches(topic) or not isinstance(payload, bytes | bytearray):
                self.log.warning("message on unexpected topic %s ignored", message.topic)
                continue
            async with self.applying:
                await asyncio.to_thread(self._apply, bytes(payload))
            self.arrived.set()

    def _apply(self, data: bytes) -> None:
        self.tally.down_bytes += len(data)
        verdict = apply_downlink_payload(
            self.outbox,
            data,
            vessel_id=self.settings.vessel_id,
            shore_verify_key=self.shore_verify_key,
            codebook=self.codebook,
            now=self.clock(),
            log=self.log,
        )
        result = verdict.result
        if result is None:  # refused or skipped: the session goes on
            self.tally.refused += 1
            return
        if result.duplicate:
            self.tally.duplicates += 1
        else:
            self.tally.applied += 1
        self.tally.acknowledged += result.acknowledged_batches
        self.tally.rejected += result.rejected_batches

    async def guarded(self, awaitable: Awaitable[T]) -> T:
        """Await, but give up at once (LinkDown) if the connection is lost meanwhile."""
        assert self.reader is not None
        task = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait({task, self.reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        cause = self.reader.exception() if self.reader.done() else None
        raise LinkDown("the connection to the broker was lost mid-session") from cause

    async def drain(self, quiet_s: float, limit_s: float) -> None:
        """Wait until no downlink came for ``quiet_s`` (at most ``limit_s`` in all)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                while True:
                    self.arrived.clear()
                    try:
                        async with asyncio.timeout(quiet_s):
                            await self.guarded(self.arrived.wait())
                    except TimeoutError:
                        return

    async def make_batches(self, message_seqs: Sequence[int], signing_key: SigningKey) -> list[int]:
        made: list[int] = []
        remaining = list(message_seqs)
        size = self.settings.max_batch_messages
        first = True
        while remaining or first:
            chunk = remaining[:size]
            try:
                async with self.applying:
                    batch_seq, data = await asyncio.to_thread(
                        self.outbox.make_batch, chunk, self.codebook, signing_key, self.clock()
                    )
            except NothingToSend:
                break
            except LimitExceeded:
                if size == 1:
                    raise
                size = max(1, size // 2)
                continue
            with batch_scope(self.settings.vessel_id, batch_seq):
                self.log.info(
                    "batch %d made: %d messages, %d bytes", batch_seq, len(chunk), len(data)
                )
            made.append(batch_seq)
            remaining = remaining[len(chunk) :]
            first = False
        return made

    async def publish_unacknowledged(self) -> None:
        batches = await asyncio.to_thread(self.outbox.unacknowledged_batches)
        topic = uplink_topic(self.settings.vessel_id)
        for stored in batches:
            data = stored.data
            timeout_s = self.settings.publish_timeout_s(len(data))
            await self.guarded(self.client.publish(topic, data, qos=1, timeout=timeout_s))
            await asyncio.to_thread(self.outbox.mark_sent, stored.batch_seq, self.clock())
            self.tally.published.append(stored.batch_seq)
            if stored.ack_only:
                self.tally.ack_only.add(stored.batch_seq)
            self.tally.up_bytes += len(data)
            with batch_scope(self.settings.vessel_id, stored.batch_seq):
                self.log.info("batch %d published (%d bytes)", stored.batch_seq, len(data))

    async def wait_for_acks(self, limit_s: float) -> int:
        """Wait until the shore acknowledged what was published; how many are still open.

        A batch that carries only a ``BatchAck`` is not waited for: the shore acknowledges
        it lazily, with the next downlink batch it has a reason to send (an acknowledgement
        of an acknowledgement would never end), so waiting would hold the session open for
        ``limit_s`` for nothing. It stays unacknowledged and is resent with the next
        session's batches until the shore's ``BatchAck`` covers it.
        """
        published = set(self.tally.published) - self.tally.ack_only
        if not published:
            return 0
        open_seqs = published
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                while True:
                    self.arrived.clear()
                    async with self.applying:
                        batches = await asyncio.to_thread(self.outbox.unacknowledged_batches)
                    open_seqs = published & {stored.batch_seq for stored in batches}
                    if not open_seqs:
                        return 0
                    await self.guarded(self.arrived.wait())
        return len(open_seqs)

    async def stop_reading(self) -> None:
        if self.reader is None:
            return
        async with self.applying:  # never in the middle of a downlink transaction
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self.reader


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
) -> SessionReport:
    """One satellite session: fetch downlink, batch ``message_seqs``, publish, await acks.

    Raises :class:`LinkDown` when the broker cannot be reached or the connection breaks;
    whatever was committed before stays committed, and the rest happens next time.
    """
    log = _VesselLog(logger, {"vessel": settings.vessel_id})
    client = _make_client(settings, tls_context)
    session = _Session(settings, outbox, client, shore_verify_key, codebook, clock, log)
    resumed: bool | None = None
    unacked = 0
    try:
        async with client:
            session.reader = asyncio.create_task(session.read_downlink(), name="downlink")
            try:
                await session.guarded(
                    client.subscribe(
                        downlink_topic(settings.vessel_id),
                        qos=1,
                        timeout=settings.command_timeout_s,
                    )
                )
                await session.drain(settings.quiet_s, settings.ack_wait_s)
                await session.make_batches(message_seqs, signing_key)
                await session.publish_unacknowledged()
                if session.tally.published:
                    unacked = await session.wait_for_acks(settings.ack_wait_s)
                if isinstance(tls_context, ResumingContext):
                    resumed = tls_context.remember()
            finally:
                await session.stop_reading()
    except aiomqtt.MqttError as exc:
        raise LinkDown(f"MQTT session with {settings.host}:{settings.port} failed: {exc}") from exc
    except (TimeoutError, OSError) as exc:
        raise LinkDown(f"MQTT session with {settings.host}:{settings.port} timed out") from exc
    tally = session.tally
    report = SessionReport(
        published=tuple(tally.published),
        acknowledged=tuple(sorted(set(tally.acknowledged))),
        rejected=tuple(sorted(set(tally.rejected))),
        unacknowledged_after=unacked,
        downlink_applied=tally.applied,
        downlink_duplicates=tally.duplicates,
        downlink_refused=tally.refused,
        uplink_payload_bytes=tally.up_bytes,
        downlink_payload_bytes=tally.down_bytes,
        tls_resumed=resumed,
    )
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


# --- the loop ----------------------------------------------------------------------------


def _utc_month(now: float) -> tuple[Month, float, float]:
    moment = datetime.fromtimestamp(now, UTC)
    month = Month(moment.year, moment.month)
    following = month.next()
    start = datetime(month.year, month.month, 1, tzinfo=UTC).timestamp()
    end = datetime(following.year, following.month, 1, tzinfo=UTC).timestamp()
    return month, start, end


def _quota_month(now: float, time_zone: ZoneInfo) -> tuple[Month, float, float]:
    """The quota month at ``now`` in ``time_zone``, with its start and end (seconds, UTC)."""
    month = quota_month_of(int(now // 60), time_zone)
    start = month.start_utc_minutes(time_zone) * 60.0
    end = month.next().start_utc_minutes(time_zone) * 60.0
    return month, start, end


def build_snapshot(
    outbox: OutboxPort,
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
    month, start, end = _quota_month(now, zone)
    accepted = outbox.quota_ledger(now)
    waiting: dict[int, int] = {}
    for message in pending:
        if message.kind == "message" and message.crew is not None and message.accepted_at >= start:
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
        # An ack-only batch is no reason to open a session: the shore answers it lazily, so
        # resending it alone would buy a session an hour for nothing. It rides along.
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


async def _wait_any(events: Sequence[asyncio.Event], timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout_s), return_when="FIRST_COMPLETED")
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


SessionRunner = Callable[..., Coroutine[Any, Any, SessionReport]]


async def _record_session(
    outbox: OutboxPort,
    profile: LinkProfile,
    started_at: float,
    ended_at: float,
    report: SessionReport | None,
    overhead_bytes: int,
    log: _VesselLog,
) -> None:
    """Keep the session in the outbox for the monthly report (``report`` None: it failed)."""
    if not isinstance(outbox, SessionRecorder):
        return
    session = LinkSession(
        started_at=started_at,
        ended_at=max(started_at, ended_at),
        outcome="failed" if report is None else "done",
        uplink_payload_bytes=0 if report is None else report.uplink_payload_bytes,
        downlink_payload_bytes=0 if report is None else report.downlink_payload_bytes,
        overhead_bytes=overhead_bytes,
        profile=profile.name,
    )
    try:
        await asyncio.to_thread(outbox.record_link_session, session)
    except OutboxUnavailable as exc:
        log.error("link session not recorded for the monthly report: %s", exc)


async def billed_so_far(outbox: OutboxPort, profile: LinkProfile, month: Month) -> int:
    """Billed bytes of the month's completed sessions in the outbox's sessions log.

    This is where the budget tally starts after a restart (even after SIGKILL: each
    session is committed on its own when it ends). Every session is priced under the
    current ``profile``, as the monthly statement does (``sessions_log.price_month``).
    An outbox without a sessions log (tests' fakes) has spent nothing.
    """
    if not isinstance(outbox, SessionHistory):
        return 0
    sessions = await asyncio.to_thread(outbox.link_sessions_in, month.year * 100 + month.month)
    return sum(profile.billed_bytes(s.link_bytes) for s in sessions if s.outcome == "done")


def _seqs(held: Sequence[Held], most: int = 10) -> str:
    shown = ", ".join(str(h.message_seq) for h in held[:most])
    return shown + (" ..." if len(held) > most else "")


async def run_link(
    *,
    config: ShipConfig,
    outbox: OutboxPort,
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
) -> None:
    """Run the link until ``stopping`` is set: plan, maybe run a session, sleep, repeat.

    ``doorbell`` is rung by intake whenever the outbox changed. The monthly budget is
    checked against a billed-bytes tally per UTC month (the provider's billing month, and
    the sessions log's): it starts from the sessions the outbox recorded this month
    (:func:`billed_so_far`), so a restart does not forget what was spent, and grows by
    each session's estimate as it ends.
    """
    settings = link_settings or LinkSettings.from_config(config)
    profile = settings.profile
    policy = scheduler_settings or SchedulerSettings(
        latency_s={kind: minutes * 60.0 for kind, minutes in config.latency_minutes.items()}
    )
    if tls_context is None and config.shore.tls:
        tls_context = client_tls_context(config.shore.ca_file)
    rng = rng or random.Random()
    stats = statistics if statistics is not None else LinkStatistics()
    shore_key = VerifyKey.from_hex(config.shore_verify_key_hex)
    log = _VesselLog(logger, {"vessel": settings.vessel_id})
    enter_vessel_scope(settings.vessel_id)  # this task's log lines carry v{vessel}
    billed: dict[Month, int] = {}
    failures = 0
    backoff_until = 0.0
    log.info("link to %s:%d (%s) running", settings.host, settings.port, profile.name)
    while not stopping.is_set():
        doorbell.clear()
        now = clock()
        month = _utc_month(now)[0]
        try:
            if month not in billed:
                billed[month] = await billed_so_far(outbox, profile, month)
                log.info("budget: %d billed bytes spent in %s so far", billed[month], month)
            stats.billed_this_month_bytes = billed[month]
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
            await _wait_any((stopping,), outbox_retry_s)
            continue
        plan = make_plan(snapshot, profile, policy, now)
        stats.last_plan = plan
        for reason in (HoldReason.QUOTA, HoldReason.BUDGET):
            held = plan.held_for(reason)
            if held:
                log.warning("%d messages held (%s): %s", len(held), reason, _seqs(held))
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
                delay = reconnect_delay_s(failures, rng)
                backoff_until = clock() + delay
                log.warning("session failed (%s); next try in %.0f s", exc, delay)
                await _record_session(outbox, profile, started_at, clock(), None, 0, log)
                continue
            failures = 0
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
                outbox,
                profile,
                started_at,
                clock(),
                report,
                policy.session_overhead_bytes,
                log,
            )
            continue
        wake_at = plan.timer if not plan.open_session else max(plan.timer, backoff_until)
        await _wait_any((stopping, doorbell), wake_at - clock())
    log.info("link stopped")
