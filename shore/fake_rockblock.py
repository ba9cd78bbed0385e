"""Fake SBD provider: the Iridium gateway and a RockBLOCK-shaped web service, on loopback.

For tests and the demo (the satellite and the provider cannot exist here). Two faces:

- **HTTP**, like RockBLOCK's web service: ``POST /rockblock/MT`` with ``imei``,
  ``username``, ``password`` and ``data`` (hex) queues an MT message for that modem and
  answers ``OK,<id>``, or ``FAILED,<code>,<text>`` (10 bad credentials, 11 unknown IMEI,
  14 data not hex, 15 data too long, 16 no data). Every MO message a modem sends is POSTed
  to the webhook URL given, form-encoded (``imei``, ``momsn``, ``transmit_time``,
  ``iridium_latitude``, ``iridium_longitude``, ``iridium_cep``, ``device_type``,
  ``serial``, ``data`` in hex); a webhook that does not answer 200 is tried again by
  :meth:`FakeRockBlock.redeliver`. Given an RSA private key (a test's own, standing in for
  Rock Seven's), it signs each post as RockBLOCK does: a ``JWT`` field, RS256, header
  ``{"alg": "RS256"}``, claims ``iss`` = ``"Rock 7"``, ``iat`` and every form field as
  text.
- **The gateway**, for a modem emulator in another thread (thread-safe):
  :meth:`FakeRockBlock.gateway_session` takes an MO message (if any) and hands out the
  next MT message with its MTMSN and how many wait behind it; modems that listen for ring
  alerts are told when an MT message is queued.
"""

from __future__ import annotations

import asyncio
import binascii
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from common.http import BodyLimit, RequestRefused, read_form
from common.serving import AsgiServer
from protocol.fragments import SBD_MT_BYTES
from shore.sbd_auth import JWT_ALGORITHM, ROCKBLOCK_ISSUER

__all__ = ["FakeRockBlock", "GatewayAnswer", "MoRecord"]


@dataclass(frozen=True, slots=True)
class MoRecord:
    """An MO message as the gateway took it."""

    imei: str
    momsn: int
    data: bytes
    transmit_time: str


@dataclass(frozen=True, slots=True)
class GatewayAnswer:
    """The gateway's side of one SBD session."""

    momsn: int
    mt: bytes | None
    mtmsn: int
    mt_queued: int


@dataclass(slots=True)
class _Modem:
    momsn: int = 0
    mtmsn: int = 0
    mt: deque[bytes] = field(default_factory=deque)
    ring: Callable[[], None] | None = None


class FakeRockBlock:
    """``async with FakeRockBlock(webhook_url, {imei: ...}) as provider: provider.base_url``."""

    def __init__(
        self,
        webhook_url: str | None,
        imeis: set[str],
        *,
        username: str = "fake-user",
        password: str = "fake-password",
        host: str = "127.0.0.1",
        port: int = 0,
        signing_key: RSAPrivateKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.webhook_url = webhook_url
        #: Signs each post's JWT (None: posts carry no JWT, like a provider without one).
        self.signing_key = signing_key
        self.clock = clock
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._modems = {imei: _Modem() for imei in imeis}
        self._ids = itertools.count(1)
        self._server: AsgiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._undelivered: deque[MoRecord] = deque()
        self._posting: set[asyncio.Future[None]] = set()
        self._changed = asyncio.Condition()
        #: Every MO message the gateway took, in order (duplicates included, as sent).
        self.mo: list[MoRecord] = []
        #: Webhook POSTs answered 200.
        self.posted = 0
        #: Every MT message queued through the HTTP API, in order.
        self.mt: list[bytes] = []

    async def __aenter__(self) -> FakeRockBlock:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (on a free port when ``port`` is 0)."""
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=10.0)
        app = BodyLimit(
            Starlette(routes=[Route("/rockblock/MT", self._mt, methods=["POST"])]),
            limit_bytes=8 * 1024,
        )
        server = AsgiServer(app, self.host, self.port, name="fake SBD provider")
        await server.start()
        self._server = server
        self.port = server.port

    async def stop(self) -> None:
        """Finish posting, stop listening."""
        if self._posting:
            await asyncio.gather(*self._posting, return_exceptions=True)
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()
        if self._client is not None:
            await self._client.aclose()

    @property
    def base_url(self) -> str:
        """The URL the relay's MT sender is given as the provider."""
        return f"http://{self.host}:{self.port}"

    # --- the gateway (called from the modem emulator's thread) ----------------------------

    def listen_for_rings(self, imei: str, ring: Callable[[], None]) -> None:
        """Call ``ring`` (from any thread) when an MT message is queued for ``imei``."""
        with self._lock:
            self._modems[imei].ring = ring

    def gateway_session(self, imei: str, mo: bytes | None) -> GatewayAnswer:
        """One session: take ``mo`` (None: a mailbox check), hand out the next MT message."""
        with self._lock:
            modem = self._modems[imei]
            momsn = modem.momsn
            if mo is not None:
                stamp = time.strftime("%y-%m-%d %H:%M:%S", time.gmtime())
                record = MoRecord(imei, momsn, mo, stamp)
                self.mo.append(record)
                self._post_soon(record)
            modem.momsn = (modem.momsn + 1) % 65_536
            mt = modem.mt.popleft() if modem.mt else None
            mtmsn = 0
            if mt is not None:
                modem.mtmsn = (modem.mtmsn + 1) % 65_536
                mtmsn = modem.mtmsn
            return GatewayAnswer(momsn, mt, mtmsn, len(modem.mt))

    def _post_soon(self, record: MoRecord) -> None:
        loop = self._loop
        if loop is None or self.webhook_url is None:
            self._undelivered.append(record)
            return
        loop.call_soon_threadsafe(self._start_post, record)

    def _start_post(self, record: MoRecord) -> None:
        task = asyncio.ensure_future(self._post(record))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _post(self, record: MoRecord) -> None:
        if self._client is None or self.webhook_url is None:
            raise RuntimeError("the fake provider posts only while started, with a webhook")
        form = {
            "imei": record.imei,
            "momsn": str(record.momsn),
            "transmit_time": record.transmit_time,
            "iridium_latitude": "13.7563",
            "iridium_longitude": "100.5018",
            "iridium_cep": "3",
            "device_type": "ROCKBLOCK",
            "serial": "16949",
            "data": record.data.hex(),
        }
        if self.signing_key is not None:
            form["JWT"] = self.sign(form)
        try:
            response = await self._client.post(self.webhook_url, data=form)
            delivered = response.status_code == 200
        except httpx.HTTPError:
            delivered = False
        async with self._changed:
            if delivered:
                self.posted += 1
            else:
                self._undelivered.append(record)
            self._posting.discard(asyncio.current_task())
            self._changed.notify_all()

    def sign(self, form: dict[str, str]) -> str:
        """The JWT RockBLOCK would add to ``form`` (RS256, claims = the fields as text)."""
        if self.signing_key is None:
            raise RuntimeError("the fake provider signs only when given a signing key")
        claims: dict[str, object] = {"iss": ROCKBLOCK_ISSUER, "iat": int(self.clock()), **form}
        return jwt.encode(claims, self.signing_key, algorithm=JWT_ALGORITHM, headers={"typ": None})

    async def redeliver(self) -> None:
        """Post again every MO message whose webhook call failed (the provider's retry)."""
        waiting, self._undelivered = list(self._undelivered), deque()
        for record in waiting:
            await self._post(record)

    async def wait_posted(self, count: int) -> None:
        """Until at least ``count`` webhook posts were answered 200 (tests bound the wait)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.posted >= count)

    async def wait_settled(self) -> None:
        """Until every MO message taken so far was posted (answered or queued for retry)."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.posted + len(self._undelivered) >= len(self.mo) and not self._posting
            )

    # --- the web service --------------------------------------------------------------

    def queue_mt(self, imei: str, data: bytes) -> None:
        """Queue an MT message for ``imei`` (what the HTTP API does), ringing the modem."""
        with self._lock:
            modem = self._modems[imei]
            modem.mt.append(data)
            ring = modem.ring
        self.mt.append(data)
        if ring is not None:
            ring()

    async def _mt(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except RequestRefused:
            return PlainTextResponse("FAILED,99,System error")
        if form.get("username") != self.username or form.get("password") != self.password:
            return PlainTextResponse("FAILED,10,Invalid login credentials")
        imei = form.get("imei", "")
        if imei not in self._modems:
            return PlainTextResponse("FAILED,11,No RockBLOCK with this IMEI found on your account")
        hex_data = form.get("data", "")
        if not hex_data:
            return PlainTextResponse("FAILED,16,No data")
        try:
            data = binascii.unhexlify(hex_data)
        except (binascii.Error, ValueError):
            return PlainTextResponse("FAILED,14,Could not decode hex data")
        if len(data) > SBD_MT_BYTES:
            return PlainTextResponse("FAILED,15,Data too long")
        self.queue_mt(imei, data)
        return PlainTextResponse(f"OK,{next(self._ids)}")
