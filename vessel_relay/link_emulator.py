"""Link emulator: a satellite link between a vessel and the shore's MQTT broker, on loopback.

The vessel agent connects to the emulator instead of the broker; the emulator opens one
connection to the broker for each of the vessel's and carries the bytes both ways, the way
an expensive, intermittent satellite link would::

    vessel agent ──TCP──▶ LinkEmulator (listen port) ──TCP──▶ Mosquitto (target port)

    async with LinkEmulator("127.0.0.1", 0, "127.0.0.1", broker_port, CERTUS_100) as link:
        ...  # point the vessel at ("127.0.0.1", link.port)
        link.cut()                   # the satellite drops: every session closes, both sides
        link.blackhole()             # bytes stop, nothing closes: only keep-alive notices
        link.restore()
        link.stall(30.0)             # a blackhole that ends by itself after 30 s
        link.set_profile(NARROWBAND_2400)
        link.set_profile(CERTUS_100.time_compressed(8640))  # a month in five minutes
        print(link.statistics().ip_bytes_estimate)

What a profile (`LinkProfile`) emulates:

- *latency*: each segment arrives `latency_s` plus a uniform 0..`jitter_s` after it was
  sent, in order (TCP never reorders what it delivers). `latency_s` is a floor.
- *bandwidth*: each direction is one pipe of `bandwidth_bps` bits per second, shared by
  all sessions; a segment is delivered no earlier than the time it takes to send it after
  the segments queued before it. A transfer of N bytes takes at least N * 8 / bandwidth_bps.
- *random connection loss*: link-wide losses arrive as a Poisson process with mean
  interval `mean_s_between_losses`; a loss cuts every open session.
- *outages*: a schedule of `Outage`s, relative to the moment the profile takes effect. A
  `LinkState.DOWN` outage cuts every session and closes new ones at once; a
  `LinkState.BLACKHOLE` outage holds every byte and every new session until it ends.

Bytes are counted the way a satellite provider bills them: per session (one vessel TCP
connection), payload bytes up (vessel to shore) and down, counted when a segment is put on
the link. The provider bills IP bytes, so `SessionStatistics.ip_bytes_estimate` adds
`TCP_IP_HEADER_BYTES` (52: IPv4, TCP and the timestamp option) per data segment, segments
being what the emulator forwards, split at `LinkProfile.mss_bytes`, plus the TCP open and
close handshakes (`TCP_OPEN_BYTES` 172 + `TCP_CLOSE_BYTES` 156, measured with tcpdump).
Pure ACK segments between those handshakes are not counted, so the estimate is a floor:
a long transfer costs about one more 52-byte ACK for every two data segments.

An optional capture hook sees every segment put on the link, with its session and
direction: a test can scan everything that crossed for text that must never cross.

Every task the emulator starts belongs to it: leaving `async with` stops listening, closes
every session on both sides, and waits for all of its tasks. An error in the emulator (or
in a capture hook) propagates out of `async with`; cancellation is never swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Self

__all__ = [
    "CERTUS_100",
    "FLAKY_SATELLITE",
    "NARROWBAND_2400",
    "PROFILES",
    "SATELLITE",
    "TCP_CLOSE_BYTES",
    "TCP_IP_HEADER_BYTES",
    "TCP_OPEN_BYTES",
    "UNLIMITED",
    "CaptureHook",
    "Direction",
    "LinkEmulator",
    "LinkProfile",
    "LinkState",
    "LinkStatistics",
    "Outage",
    "SessionEnd",
    "SessionStatistics",
]

logger = logging.getLogger(__name__)

TCP_IP_HEADER_BYTES = 52
"""IPv4 (20) + TCP (20) + timestamp option (12) bytes in every segment."""
TCP_OPEN_BYTES = 172
"""SYN, SYN-ACK and ACK, as measured on loopback (FIELD-NOTES)."""
TCP_CLOSE_BYTES = 156
"""FIN, FIN and the ACKs, as measured on loopback (FIELD-NOTES)."""

_READ_BYTES = 64 * 1024
_IN_FLIGHT_SEGMENTS = 256  # per session and direction; beyond it the sender waits


class Direction(enum.Enum):
    """Which way bytes cross the link."""

    UP = "up"
    """From the vessel to the shore."""
    DOWN = "down"
    """From the shore to the vessel."""


class LinkState(enum.Enum):
    """What the link does with bytes and sessions right now."""

    FORWARDING = "forwarding"
    """Bytes flow, shaped by the profile."""
    BLACKHOLE = "blackhole"
    """Nothing flows and nothing closes; bytes already sent wait for the link to return."""
    DOWN = "down"
    """Every session was cut; new sessions are closed as soon as they arrive.

    aiomqtt 2.5.1 does not notice a connection closed before its CONNACK: a connect
    attempt while the link is down fails only after the client's `timeout` (10 s by
    default), much as a real connect attempt would time out on a dead satellite link.
    """


class SessionEnd(enum.Enum):
    """Why a session ended."""

    CLOSED = "closed"
    """The vessel or the broker closed it, or its connection broke."""
    CUT = "cut"
    """`LinkEmulator.cut()`, `LinkEmulator.down()` or a `LinkState.DOWN` outage."""
    LOST = "lost"
    """A random connection loss (`LinkProfile.mean_s_between_losses`)."""
    REFUSED = "refused"
    """It arrived while the link was down; nothing crossed."""
    UNREACHABLE = "unreachable"
    """The broker did not accept the emulator's connection."""
    SHUTDOWN = "shutdown"
    """The emulator stopped while it was open."""


CaptureHook = Callable[[int, Direction, bytes], None]
"""Called with (session id, direction, segment) for every segment put on the link."""


@dataclass(frozen=True, slots=True)
class Outage:
    """A scheduled period without link, `start_s` after its profile takes effect."""

    start_s: float
    duration_s: float
    state: LinkState = LinkState.DOWN

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"outage start_s must be a finite number >= 0, not {self.start_s}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(
                f"outage duration_s must be a finite number > 0, not {self.duration_s}"
            )
        if self.state is LinkState.FORWARDING:
            raise ValueError("an outage's state must be LinkState.DOWN or LinkState.BLACKHOLE")


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """How the emulated satellite link behaves; see the module docstring."""

    latency_s: float = 0.0
    """One-way delay of every segment, in seconds."""
    jitter_s: float = 0.0
    """Extra one-way delay, uniform in 0..jitter_s, drawn per segment."""
    bandwidth_bps: float | None = None
    """Bits per second in each direction; None for no cap."""
    mean_s_between_losses: float | None = None
    """Mean seconds between random connection losses; None for none."""
    outages: tuple[Outage, ...] = ()
    """Scheduled outages, relative to the moment the profile takes effect."""
    mss_bytes: int = 1448
    """Largest segment payload (1500-byte MTU minus 52 header bytes)."""

    def __post_init__(self) -> None:
        for name in ("latency_s", "jitter_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        for name in ("bandwidth_bps", "mean_s_between_losses"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be None or a finite number > 0, not {value}")
        if self.mss_bytes < 1:
            raise ValueError(f"mss_bytes must be at least 1, not {self.mss_bytes}")

    def time_compressed(self, factor: float) -> LinkProfile:
        """This link as it behaves when the whole world runs `factor` times faster.

        A benchmark that replays a month in minutes divides every clock by `factor`; the
        link must keep up with it, or a day's traffic would be squeezed through the same
        pipe in a few seconds. Latency, jitter, the mean time between losses and the
        outage schedule are divided by `factor` and the bandwidth is multiplied by it, so
        a transfer takes 1/`factor` of its real time. Segment sizes (and so the bytes the
        provider bills) do not change.
        """
        if not (math.isfinite(factor) and factor >= 1):
            raise ValueError(
                f"a time compression factor must be a finite number >= 1, not {factor}"
            )
        return LinkProfile(
            latency_s=self.latency_s / factor,
            jitter_s=self.jitter_s / factor,
            bandwidth_bps=None if self.bandwidth_bps is None else self.bandwidth_bps * factor,
            mean_s_between_losses=(
                None if self.mean_s_between_losses is None else self.mean_s_between_losses / factor
            ),
            outages=tuple(
                Outage(o.start_s / factor, o.duration_s / factor, o.state) for o in self.outages
            ),
            mss_bytes=self.mss_bytes,
        )


UNLIMITED = LinkProfile()
"""No delay, no cap, no loss: a plain TCP proxy that counts bytes."""
NARROWBAND_2400 = LinkProfile(latency_s=0.8, jitter_s=0.4, bandwidth_bps=2_400)
"""A 2.4 kbit/s narrowband data link. Latency figures are rough assumptions."""
CERTUS_100 = LinkProfile(latency_s=0.5, jitter_s=0.2, bandwidth_bps=22_000)
"""An Iridium Certus 100-class link, 22 kbit/s. Latency figures are rough assumptions."""
SATELLITE = LinkProfile(latency_s=0.6, jitter_s=0.9, bandwidth_bps=22_000)
"""A geostationary-like link as the demo emulates it: 600-1,500 ms one way, 22 kbit/s."""
FLAKY_SATELLITE = LinkProfile(
    latency_s=0.6, jitter_s=0.9, bandwidth_bps=22_000, mean_s_between_losses=20.0
)
"""SATELLITE that also drops every connection now and then (every 20 s on average)."""
PROFILES: Mapping[str, LinkProfile] = MappingProxyType(
    {
        "unlimited": UNLIMITED,
        "fast": UNLIMITED,
        "narrowband-2400": NARROWBAND_2400,
        "certus-100": CERTUS_100,
        "satellite": SATELLITE,
        "flaky-satellite": FLAKY_SATELLITE,
    }
)
"""Named profiles, for the demo and the benchmarks."""


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """What one session (one vessel TCP connection) cost."""

    session_id: int
    payload_bytes_up: int
    payload_bytes_down: int
    segments_up: int
    segments_down: int
    end: SessionEnd | None
    """None while the session is open."""

    @property
    def ip_bytes_estimate(self) -> int:
        """Payload, plus headers of every data segment, plus the TCP open (and close, once
        the session has ended: a cut session's ends spend about as much finding out)."""
        if self.end in (SessionEnd.REFUSED, SessionEnd.UNREACHABLE):
            return 0
        segments = self.segments_up + self.segments_down
        return (
            self.payload_bytes_up
            + self.payload_bytes_down
            + TCP_IP_HEADER_BYTES * segments
            + TCP_OPEN_BYTES
            + (TCP_CLOSE_BYTES if self.end is not None else 0)
        )


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """A snapshot of the link: its state, its sessions and what they cost."""

    state: LinkState
    sessions: tuple[SessionStatistics, ...]
    """Every session since the emulator started, oldest first."""
    cuts: int
    """Link-wide cuts: `cut()`, `down()` and `LinkState.DOWN` outages."""
    losses: int
    """Random connection losses that cut at least one session."""
    payload_bytes_up: int = field(init=False)
    payload_bytes_down: int = field(init=False)
    ip_bytes_estimate: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "payload_bytes_up", sum(s.payload_bytes_up for s in self.sessions))
        object.__setattr__(
            self, "payload_bytes_down", sum(s.payload_bytes_down for s in self.sessions)
        )
        object.__setattr__(
            self, "ip_bytes_estimate", sum(s.ip_bytes_estimate for s in self.sessions)
        )

    @property
    def open_sessions(self) -> int:
        """Sessions not yet ended."""
        return sum(1 for s in self.sessions if s.end is None)

    def billed_bytes(self, minimum_session_bytes: int = 0) -> int:
        """The estimate a provider with a per-session minimum (Certus: 5,000) would bill."""
        return sum(
            max(s.ip_bytes_estimate, minimum_session_bytes)
            for s in self.sessions
            if s.end not in (SessionEnd.REFUSED, SessionEnd.UNREACHABLE)
        )


class _Session:
    """One vessel connection and, once the link lets it through, its broker connection."""

    def __init__(self, session_id: int, vessel: asyncio.StreamWriter) -> None:
        self.session_id = session_id
        self.vessel = vessel
        self.shore: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.payload_bytes = dict.fromkeys(Direction, 0)
        self.segments = dict.fromkeys(Direction, 0)
        self.end: SessionEnd | None = None

    def abort(self, end: SessionEnd) -> None:
        """Close both sides at once, discarding what was not yet delivered."""
        if self.end is None:
            self.end = end
        for writer in (self.vessel, self.shore):
            if writer is not None:
                writer.transport.abort()
        if self.task is not None:
            self.task.cancel()

    def snapshot(self) -> SessionStatistics:
        return SessionStatistics(
            session_id=self.session_id,
            payload_bytes_up=self.payload_bytes[Direction.UP],
            payload_bytes_down=self.payload_bytes[Direction.DOWN],
            segments_up=self.segments[Direction.UP],
            segments_down=self.segments[Direction.DOWN],
            end=self.end,
        )


class LinkEmulator:
    """An asyncio TCP proxy that behaves like a satellite link; see the module docstring.

    Example::

        async with LinkEmulator("127.0.0.1", 0, "127.0.0.1", 1883, CERTUS_100) as link:
            async with aiomqtt.Client("127.0.0.1", link.port) as client:
                await client.publish("vessels/TH-0042/batches", batch, qos=1)
            print(link.statistics().ip_bytes_estimate)
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        target_host: str,
        target_port: int,
        profile: LinkProfile = UNLIMITED,
        *,
        capture: CaptureHook | None = None,
        seed: int | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._listen_host = listen_host
        self._listen_port = listen_port
        self._target_host = target_host
        self._target_port = target_port
        self._profile = profile
        self._capture = capture
        self._random = random.Random(seed)
        self._connect_timeout_s = connect_timeout_s
        self._state = LinkState.FORWARDING
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._profile_changed = asyncio.Event()
        self._sessions_changed = asyncio.Event()
        self._sessions: list[_Session] = []
        self._pipe_free_at = dict.fromkeys(Direction, 0.0)
        self._cuts = 0
        self._losses = 0
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._task_group: asyncio.TaskGroup | None = None
        self._closing = False
        self._loss_task: asyncio.Task[None] | None = None
        self._outage_task: asyncio.Task[None] | None = None
        self._stall_task: asyncio.Task[None] | None = None

    # -- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("a LinkEmulator can be entered only once")
        self._task_group = asyncio.TaskGroup()
        await self._task_group.__aenter__()
        try:
            self._server = await asyncio.start_server(
                self._on_connection, self._listen_host, self._listen_port
            )
        except BaseException as exc:
            await self._task_group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info(
            "link :%d -> %s:%d up, %s",
            self._port,
            self._target_host,
            self._target_port,
            self._profile,
        )
        self._loss_task = self._task_group.create_task(self._lose_connections())
        self._schedule_outages()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task_group is None or self._server is None:
            raise RuntimeError("the link emulator was not entered")
        self._closing = True
        self._server.close()
        for session in self._open_sessions():
            session.abort(SessionEnd.SHUTDOWN)
        self._notify_sessions_changed()
        for task in (self._loss_task, self._outage_task, self._stall_task):
            if task is not None:
                task.cancel()
        try:
            await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            await self._server.wait_closed()
            logger.info("link :%d closed", self._port)

    # -- where it listens -----------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the vessel connects to."""
        return self._listen_host

    @property
    def port(self) -> int:
        """The port the vessel connects to (picked by the system when 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("the link emulator is not running: use `async with` first")
        return self._port

    @property
    def profile(self) -> LinkProfile:
        return self._profile

    @property
    def state(self) -> LinkState:
        return self._state

    # -- controls -------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every open session at once, on both sides; new sessions are welcome."""
        self._cancel_stall()
        self._cut_all(SessionEnd.CUT)

    def down(self) -> None:
        """Cut every session, and close new ones as they arrive, until `restore()`."""
        self._cancel_stall()
        self._enter(LinkState.DOWN)

    def blackhole(self) -> None:
        """Stop carrying bytes without closing anything, until `restore()`."""
        self._cancel_stall()
        self._enter(LinkState.BLACKHOLE)

    def restore(self) -> None:
        """Carry bytes again; whatever the blackhole held is delivered."""
        self._cancel_stall()
        self._enter(LinkState.FORWARDING)

    def stall(self, seconds: float) -> None:
        """Blackhole the link for `seconds`, then restore it (unless told otherwise first)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"stall seconds must be a finite number >= 0, not {seconds}")
        group = self._group()
        self._cancel_stall()
        self._enter(LinkState.BLACKHOLE)
        self._stall_task = group.create_task(self._end_stall(seconds))

    def set_profile(self, profile: LinkProfile) -> None:
        """Switch profile now; its outage schedule starts from now."""
        self._profile = profile
        self._profile_changed.set()
        self._profile_changed = asyncio.Event()
        logger.info("link :%s profile %s", self._port, profile)
        if self._task_group is not None:
            self._schedule_outages()

    def statistics(self) -> LinkStatistics:
        """A snapshot of the link's state and what each session cost so far."""
        return LinkStatistics(
            state=self._state,
            sessions=tuple(s.snapshot() for s in self._sessions),
            cuts=self._cuts,
            losses=self._losses,
        )

    async def wait_for_open_sessions(self, count: int) -> None:
        """Return once exactly `count` sessions are open."""
        while len(self._open_sessions()) != count:
            await self._sessions_changed.wait()

    # -- state ----------------------------------------------------------------------------

    def _group(self) -> asyncio.TaskGroup:
        if self._task_group is None or self._closing:
            raise RuntimeError("the link emulator is not running: use `async with` first")
        return self._task_group

    def _enter(self, state: LinkState) -> None:
        if state is not self._state:
            logger.info("link :%s %s -> %s", self._port, self._state.value, state.value)
        self._state = state
        if state is LinkState.FORWARDING:
            self._flowing.set()
        else:
            self._flowing.clear()
        if state is LinkState.DOWN:
            self._cut_all(SessionEnd.CUT)

    def _cut_all(self, end: SessionEnd) -> None:
        sessions = self._open_sessions()
        if end is SessionEnd.LOST:
            if not sessions:
                return
            self._losses += 1
        else:
            self._cuts += 1
        logger.info("link :%s %s %d session(s)", self._port, end.value, len(sessions))
        for session in sessions:
            session.abort(end)
        self._notify_sessions_changed()

    def _open_sessions(self) -> list[_Session]:
        return [s for s in self._sessions if s.end is None]

    def _notify_sessions_changed(self) -> None:
        self._sessions_changed.set()
        self._sessions_changed = asyncio.Event()

    def _cancel_stall(self) -> None:
        if self._stall_task is not None:
            self._stall_task.cancel()
            self._stall_task = None

    def _schedule_outages(self) -> None:
        if self._outage_task is not None:
            self._outage_task.cancel()
            self._outage_task = None
        if self._profile.outages:
            self._outage_task = self._group().create_task(self._run_outages(self._profile.outages))

    # -- background tasks -----------------------------------------------------------------

    async def _end_stall(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._stall_task = None
        self._enter(LinkState.FORWARDING)

    async def _run_outages(self, outages: tuple[Outage, ...]) -> None:
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        for outage in sorted(outages, key=lambda o: o.start_s):
            await asyncio.sleep(max(0.0, started_at + outage.start_s - loop.time()))
            self._enter(outage.state)
            try:
                await asyncio.sleep(outage.duration_s)
            finally:
                if self._state is outage.state:
                    self._enter(LinkState.FORWARDING)

    async def _lose_connections(self) -> None:
        while True:
            changed = self._profile_changed
            mean_s = self._profile.mean_s_between_losses
            if mean_s is None:
                await changed.wait()
                continue
            try:
                async with asyncio.timeout(self._random.expovariate(1.0 / mean_s)):
                    await changed.wait()
            except TimeoutError:
                self._cut_all(SessionEnd.LOST)

    # -- sessions -------------------------------------------------------------------------

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._task_group is None or self._closing:
            writer.transport.abort()
            return
        session = _Session(len(self._sessions) + 1, writer)
        self._sessions.append(session)
        session.task = self._task_group.create_task(self._run_session(session, reader))
        self._notify_sessions_changed()

    async def _run_session(self, session: _Session, vessel_reader: asyncio.StreamReader) -> None:
        try:
            if self._state is LinkState.DOWN:
                session.end = SessionEnd.REFUSED
                return
            await self._flowing.wait()  # a blackhole holds the vessel's SYN too
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    shore_reader, session.shore = await asyncio.open_connection(
                        self._target_host, self._target_port
                    )
            except (OSError, TimeoutError) as exc:
                logger.warning(
                    "link :%s session %d: broker %s:%d unreachable: %s",
                    self._port,
                    session.session_id,
                    self._target_host,
                    self._target_port,
                    exc,
                )
                session.end = SessionEnd.UNREACHABLE
                return
            logger.debug("link :%s session %d open", self._port, session.session_id)
            try:
                async with asyncio.TaskGroup() as carriers:
                    carriers.create_task(
                        self._carry(session, Direction.UP, vessel_reader, session.shore)
                    )
                    carriers.create_task(
                        self._carry(session, Direction.DOWN, shore_reader, session.vessel)
                    )
            except* OSError:  # a reset on either side ends the session
                pass
        finally:
            if session.end is None:
                session.end = SessionEnd.CLOSED
            await self._close(session)
            logger.debug(
                "link :%s session %d %s: %s",
                self._port,
                session.session_id,
                session.end.value,
                session.snapshot(),
            )
            self._notify_sessions_changed()

    async def _close(self, session: _Session) -> None:
        for writer in (session.vessel, session.shore):
            if writer is None:
                continue
            if session.end is SessionEnd.CLOSED:
                writer.close()
            else:
                writer.transport.abort()
        for writer in (session.vessel, session.shore):
            if writer is not None:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _carry(
        self,
        session: _Session,
        direction: Direction,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
    ) -> None:
        """Carry one direction of a session until its end of file."""
        in_flight: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(
            maxsize=_IN_FLIGHT_SEGMENTS
        )
        async with asyncio.TaskGroup() as halves:
            halves.create_task(self._transmit(session, direction, source, in_flight))
            halves.create_task(self._deliver(sink, in_flight))

    async def _transmit(
        self,
        session: _Session,
        direction: Direction,
        source: asyncio.StreamReader,
        in_flight: asyncio.Queue[tuple[float, bytes] | None],
    ) -> None:
        """Read, shape to the bandwidth, count, and queue each segment with its due time."""
        loop = asyncio.get_running_loop()
        last_due = 0.0
        while True:
            await self._flowing.wait()
            data = await source.read(_READ_BYTES)
            if not data:
                await in_flight.put(None)
                return
            mss = self._profile.mss_bytes
            for start in range(0, len(data), mss):
                segment = data[start : start + mss]
                await self._flowing.wait()
                sent_at = await self._serialise(direction, len(segment))
                session.payload_bytes[direction] += len(segment)
                session.segments[direction] += 1
                if self._capture is not None:
                    self._capture(session.session_id, direction, segment)
                profile = self._profile
                delay_s = profile.latency_s + self._random.uniform(0.0, profile.jitter_s)
                last_due = max(sent_at + delay_s, last_due, loop.time())
                await in_flight.put((last_due, segment))

    async def _serialise(self, direction: Direction, size_bytes: int) -> float:
        """Wait until the pipe has carried `size_bytes` more; return when that is done."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        bandwidth_bps = self._profile.bandwidth_bps
        if bandwidth_bps is None:
            return now
        done_at = max(now, self._pipe_free_at[direction]) + size_bytes * 8 / bandwidth_bps
        self._pipe_free_at[direction] = done_at
        await asyncio.sleep(done_at - now)
        return done_at

    async def _deliver(
        self,
        sink: asyncio.StreamWriter,
        in_flight: asyncio.Queue[tuple[float, bytes] | None],
    ) -> None:
        """Write each segment when it is due and the link carries; pass on end of file."""
        loop = asyncio.get_running_loop()
        while True:
            item = await in_flight.get()
            if item is None:
                if sink.can_write_eof() and not sink.is_closing():
                    sink.write_eof()
                return
            due, segment = item
            delay_s = due - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            await self._flowing.wait()
            sink.write(segment)
            await sink.drain()
