"""MQTT link: the :class:`shipboard.transport.Link` seam over aiomqtt, with TLS resumption.

One :class:`MqttLink` carries one satellite session::

    connect   CONNECT (broker keeps our state: clean_session off, client id v{vessel}) / CONNACK,
              SUBSCRIBE vr/{vessel}/d (QoS 1): the downlink the broker kept flows in
    publish   PUBLISH vr/{vessel}/u (QoS 1) until its PUBACK
    receive   the next payload on vr/{vessel}/d
    close     DISCONNECT: no idle connection, no pings

aiomqtt's in-flight publish is not woken when the link drops (FIELD-NOTES), so every wait
is raced against the reader task, which ends when the connection is lost: a dead link
raises :class:`~shipboard.transport.LinkDown` at once instead of after a timeout. aiomqtt
and socket errors are translated to ``LinkDown`` here, at the boundary.

TLS: keep one :class:`ResumingContext` for the agent's life; it offers the previous
connection's TLS ticket on the next connect (TLS 1.3 resumption: a session costs ~300 B
less than with a full handshake; figures in ``benchmarks/sessions.py``). The byte-cost
choices (topics, keep-alive, how long the broker keeps our state, TLS options) are argued
in :mod:`shipboard.link`.

Words: "session" means one satellite session here as everywhere on board; what MQTT and
TLS call a session is "the broker's state for the vessel" and "the TLS ticket"
(``ssl.SSLSession`` is the library's name for the latter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.topics import downlink_topic, uplink_topic
from shipboard.transport import LinkClosed, LinkDown, LinkSettings

__all__ = ["MqttLink", "ResumingContext", "client_tls_context"]

logger = logging.getLogger("shipboard.link")

T = TypeVar("T")

#: OpenSSL's ``SSL_OP_TLSEXT_PADDING`` (part of ``ssl.OP_ALL``; Python has no name for it).
OP_TLSEXT_PADDING = ssl.Options(0x10)


class ResumingContext(ssl.SSLContext):
    """A client ``SSLContext`` that offers the previous connection's TLS ticket again.

    Keep one for the agent's life. :meth:`remember` (called at the end of a satellite
    session, while the socket is open) keeps the ticket; the next ``wrap_socket`` passes
    it in, so the handshake is resumed (~300 B less a session, no certificate).

    ``ticket_max_age_s``: offer a kept ticket only this many seconds (of ``clock``) after
    it was kept. None (at sea): as long as the ticket's own lifetime, which OpenSSL checks
    (Mosquitto's: 7,200 s). A time-compressed run sets the broker's lifetime divided by
    its compression: the broker's clock is not compressed, so without it every session
    of a compressed month would resume, as sessions six hours apart never do at sea.
    """

    tls_session: ssl.SSLSession | None
    last_socket: ssl.SSLSocket | None
    ticket_max_age_s: float | None
    kept_at: float
    clock: Callable[[], float]

    def ticket_to_offer(self) -> ssl.SSLSession | None:
        """The kept ticket, unless none is kept or it is older than ``ticket_max_age_s``."""
        kept = getattr(self, "tls_session", None)
        max_age = getattr(self, "ticket_max_age_s", None)
        if kept is None or max_age is None:
            return kept
        return kept if self.clock() - self.kept_at < max_age else None

    def wrap_socket(
        self,
        sock: Any,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        offered = session if session is not None else self.ticket_to_offer()
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
        """Keep the current connection's TLS ticket for next time; whether it was resumed."""
        sock = getattr(self, "last_socket", None)
        if sock is None:
            return None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            current = sock.session
            if current is not None:
                self.tls_session = current
                self.kept_at = self.clock()
            return bool(sock.session_reused)
        return None

    def forget(self) -> None:
        """Drop the kept TLS ticket (the next connect does a full handshake)."""
        self.tls_session = None


def client_tls_context(
    ca_path: Path | None = None,
    minimum: str = "1.3",
    *,
    ticket_max_age_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ResumingContext:
    """A TLS client context (hostname checked) that resumes with its last ticket.

    ``ca_path``: the shore's CA certificate; None uses the system's trusted CAs.
    ``ticket_max_age_s`` and ``clock``: see :class:`ResumingContext` (at sea: None).
    ``minimum``: ``"1.3"`` (the default) offers TLS 1.3 only: its hello carries no TLS 1.2
    cipher suites, about 270 bytes less on every full handshake; ``"1.2"`` for a broker
    without 1.3.

    Two of OpenSSL's workarounds for other people's boxes are off, because every byte of
    them crosses the satellite in every session and neither protects anything (the
    handshake, its keys and its checks are unchanged):

    - the hello's padding extension (for old F5 load balancers that hang on hellos of
      256-511 bytes): a resumed hello carries the ticket and would be padded to 517 B;
    - TLS 1.3's middlebox compatibility mode (RFC 8446 D.4: a fake 32-byte session id,
      echoed by the server, and a dummy ChangeCipherSpec record each way, for firewalls that
      inspect TLS 1.2): ~76 B a handshake. The vessel talks to our own broker; a network
      that needs it fails the handshake at once, visibly (``LinkDown``), never silently.
    """
    context = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if minimum == "1.3" else ssl.TLSVersion.TLSv1_2
    context.options &= ~(ssl.OP_ENABLE_MIDDLEBOX_COMPAT | OP_TLSEXT_PADDING)
    context.tls_session = None
    context.last_socket = None
    if ticket_max_age_s is not None and ticket_max_age_s < 0:
        raise ValueError(f"a ticket's age cannot be bounded by {ticket_max_age_s} s")
    context.ticket_max_age_s = ticket_max_age_s
    context.kept_at = clock()
    context.clock = clock
    if ca_path is not None:
        context.load_verify_locations(cafile=str(ca_path))
    else:
        context.load_default_certs()
    return context


def make_client(settings: LinkSettings, tls_context: ssl.SSLContext | None) -> aiomqtt.Client:
    """The aiomqtt client of one satellite session: the broker keeps our state (fixed
    client id, clean_session off), so the downlink queued meanwhile flows in."""
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
        properties.SessionExpiryInterval = settings.broker_state_expiry_s
        return aiomqtt.Client(
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            **common,
        )
    return aiomqtt.Client(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False, **common)


class MqttLink:
    """One satellite session's MQTT connection to the shore's broker (see the module
    docstring)."""

    def __init__(self, settings: LinkSettings, tls_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self._client: aiomqtt.Client | None = None
        self._exit = contextlib.AsyncExitStack()
        self._reader: asyncio.Task[None] | None = None
        self._arrived: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        self._tls_resumed: bool | None = None
        self._session_present = False
        self.subscribed = False

    #: (host, port, vessel) whose broker confirmed the downlink subscription (SUBACK) in
    #: the session it still keeps, as this process saw it.
    _confirmed: ClassVar[set[tuple[str, int, int]]] = set()

    @property
    def session_present(self) -> bool:
        """Whether the broker still held this vessel's session (CONNACK's flag): then it
        holds the downlink subscription too, and none is sent."""
        return self._session_present

    @property
    def tls_resumed(self) -> bool | None:
        """Whether TLS was resumed (known once the link closed cleanly)."""
        return self._tls_resumed

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def connect(self) -> None:
        """CONNECT, and SUBSCRIBE to the downlink unless the broker kept the vessel's
        session and this process saw it confirm the subscription in that session (a
        SUBSCRIBE cut before its SUBACK leaves a session without one; a restarted agent
        subscribes once); :class:`LinkDown` if either fails."""
        if self._closed or self._client is not None:
            raise LinkClosed("an MqttLink connects once; make a new one for the next session")
        client = make_client(self.settings, self.tls_context)
        self._watch_session_present(client)
        try:
            await self._exit.enter_async_context(client)
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"MQTT connection to {self._where()} failed: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise LinkDown(f"MQTT connection to {self._where()} timed out") from exc
        self._client = client
        self._reader = asyncio.create_task(self._read(client), name="downlink")
        broker = (self.settings.host, self.settings.port, self.settings.vessel_id)
        if self._session_present and broker in MqttLink._confirmed:
            return  # the broker kept the subscription it confirmed: ~170 B saved
        MqttLink._confirmed.discard(broker)
        await self._guarded(
            client.subscribe(
                downlink_topic(self.settings.vessel_id),
                qos=1,
                timeout=self.settings.command_timeout_s,
            )
        )
        MqttLink._confirmed.add(broker)
        self.subscribed = True

    def _watch_session_present(self, client: aiomqtt.Client) -> None:
        """Note CONNACK's session-present flag (aiomqtt does not pass it on: its paho
        client's CONNACK callback is wrapped)."""
        paho = client._client  # private, but the one way to CONNACK's flags
        passed_on = paho.on_connect

        def on_connect(*args: Any, **kwargs: Any) -> None:
            flags = args[2] if len(args) > 2 else kwargs.get("flags")
            self._session_present = bool(getattr(flags, "session_present", False))
            if passed_on is not None:
                passed_on(*args, **kwargs)

        paho.on_connect = on_connect

    async def _read(self, client: aiomqtt.Client) -> None:
        topic = downlink_topic(self.settings.vessel_id)
        async for message in client.messages:
            payload = message.payload
            if not message.topic.matches(topic) or not isinstance(payload, bytes | bytearray):
                logger.warning("message on unexpected topic %s ignored", message.topic)
                continue
            self._arrived.put_nowait(bytes(payload))

    async def _guarded(self, awaitable: Awaitable[T]) -> T:
        """Await, but give up at once (LinkDown) if the connection is lost meanwhile."""
        reader = self._reader
        if self._closed or reader is None:
            raise LinkClosed("the MQTT link is not connected")
        task = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait({task, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
        if task.done() and not task.cancelled():
            try:
                return task.result()
            except aiomqtt.MqttError as exc:
                raise LinkDown(f"MQTT connection to {self._where()} failed: {exc}") from exc
            except (TimeoutError, OSError) as exc:
                raise LinkDown(f"MQTT connection to {self._where()} timed out") from exc
        cause = reader.exception() if reader.done() and not reader.cancelled() else None
        raise LinkDown("the connection to the broker was lost mid-session") from cause

    async def publish(self, data: bytes, timeout_s: float) -> None:
        """PUBLISH QoS 1 to the uplink topic; returns after the broker's PUBACK."""
        client = self._client
        if client is None or self._closed:
            raise LinkClosed("the MQTT link is not connected")
        topic = uplink_topic(self.settings.vessel_id)
        await self._guarded(client.publish(topic, data, qos=1, timeout=timeout_s))

    def receive_nowait(self) -> bytes | None:
        """A downlink payload that already arrived, or None."""
        try:
            return self._arrived.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def receive(self) -> bytes:
        """The next downlink payload; LinkDown once the connection is lost."""
        arrived = self.receive_nowait()
        if arrived is not None:
            return arrived
        return await self._guarded(self._arrived.get())

    async def close(self) -> None:
        """Stop reading, keep the TLS ticket for next time, DISCONNECT."""
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        healthy = reader is not None and not reader.done()
        if healthy and isinstance(self.tls_context, ResumingContext):
            self._tls_resumed = self.tls_context.remember()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
        try:
            await self._exit.aclose()
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"MQTT connection to {self._where()} failed: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise LinkDown(f"MQTT connection to {self._where()} timed out") from exc
