"""SMTP pipelining (RFC 2920) on the relay's pooled sessions (``shore.smtp_pool.PooledSmtp
.send_wire``, ``shore.smtp_pipelining``), on the standard library's loop and on uvloop.

Servers on loopback, all real sockets: Postfix's smtp-sink (offers ``PIPELINING``), aiosmtpd
(offers it only when its handler adds it; its refusals), and :class:`ScriptedServer`, a
small asyncio server that replies in one segment or in tiny delayed segments. Pipelining is
proven, not assumed: :class:`GateProxy` and :class:`ScriptedServer` hold the replies to a
transaction's ``MAIL`` until its ``DATA`` has arrived, so a client sending one command at a
time would wait forever (``asyncio.timeout`` only guards against such a hang).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib
import pytest
import uvloop
from aiosmtpd.controller import Controller

from shore import smtp_pipelining
from shore.mail import MailSender, RenderedMail, SmtpConfig
from shore.retry import AttemptResult, Outcome
from shore.smtp_pipelining import PipeliningProtocol, PipeliningUnavailable, adopt
from shore.smtp_pool import PooledSmtp, SmtpPool
from tests.kit.ports import free_port
from tests.kit.smtp_sink import SmtpSink
from tests.kit.tls import make_test_ca
from tests.shore.test_mail import SinkHandler
from tests.shore.test_smarthost import LOGIN, PASSWORD, Logins

T = TypeVar("T")

#: Seconds a test may run before it counts as hung (a guard, not a measurement).
HANG_GUARD_S = 30.0
SENDER = "relay@relay.example.org"
RECIPIENT = "family@example.net"
#: Lines a client must dot-stuff: a leading period, a lone period, two periods.
TRICKY_LINES = b".starts with a period\r\n.\r\n..two periods\r\n"


def body(n: int) -> bytes:
    return b"Subject: message %d\r\n\r\nmarker-%06d\r\n" % (n, n) + TRICKY_LINES + b"end\r\n"


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine on a fresh loop of the parametrised kind, hang-guarded."""
    factory = LOOPS[request.param]

    def running(coroutine: Coroutine[Any, Any, T]) -> T:
        async def guarded() -> T:
            async with asyncio.timeout(HANG_GUARD_S):
                return await coroutine

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(guarded())

    return running


def pooled(port: int, **options: Any) -> PooledSmtp:
    return PooledSmtp(hostname="127.0.0.1", port=port, timeout=HANG_GUARD_S, **options)


async def closed(smtp: PooledSmtp) -> None:
    """Close ``smtp`` and wait until its connection is gone (a TLS session's close needs
    the loop to run on: closing the loop first leaves its socket open)."""
    protocol = smtp.protocol
    smtp.close()
    while protocol is not None and protocol.transport is not None:  # noqa: ASYNC110 - aiosmtplib has no event for it
        await asyncio.sleep(0.01)


# --- a proxy proving that a client pipelines -------------------------------------------


class _LoopbackServer:
    """A test server on 127.0.0.1 (its subclasses hold ``server`` and ``connections``)."""

    server: asyncio.Server | None
    connections: list[asyncio.StreamWriter]

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close every connection (a failed test leaves some open)."""
        if self.server is not None:
            self.server.close()
            for writer in self.connections:
                writer.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class GateProxy(_LoopbackServer):
    """Forwards one client at a time to ``upstream_port``. From the second transaction on
    it holds the server's replies after a ``MAIL`` until the client's ``DATA`` passed, and
    records every chunk the client wrote."""

    upstream_port: int
    chunks: list[bytes] = field(default_factory=list)
    #: Transactions whose MAIL, RCPT and DATA came before any reply to them.
    pipelined: int = 0
    server: asyncio.Server | None = None
    connections: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections.append(client_w)
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.connections.append(up_w)
        released = asyncio.Event()
        released.set()
        in_body = asyncio.Event()
        mails = 0

        async def upstream() -> None:
            nonlocal mails
            while line := await client_r.readline():
                self.chunks.append(line)
                up_w.write(line)
                await up_w.drain()
                if in_body.is_set():
                    if line == b".\r\n":
                        in_body.clear()
                    continue
                command = line[:4].upper()
                if command == b"MAIL":
                    mails += 1
                    if mails > 1:
                        released.clear()
                elif command == b"DATA" and not released.is_set():
                    self.pipelined += 1
                    released.set()
            up_w.close()

        async def downstream() -> None:
            while line := await up_r.readline():
                await released.wait()
                if line.startswith(b"354"):
                    in_body.set()
                client_w.write(line)
                await client_w.drain()
            client_w.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except ConnectionError:
            pass
        finally:
            up_w.close()
            client_w.close()


# --- a scripted server: replies whole or in tiny segments -------------------------------


@dataclass
class ScriptedServer(_LoopbackServer):
    """A small SMTP server offering ``PIPELINING``. From the second transaction on it
    answers ``MAIL``, ``RCPT`` and ``DATA`` only once all three arrived: ``"together"`` in
    one write, ``"dribble"`` a few bytes a write with pauses (replies split across segments,
    several arriving before the client reads). ``refuse`` maps a command to its reply;
    ``data_after_refusal`` answers ``DATA`` with 354 even without a valid recipient."""

    mode: str = "together"
    refuse: dict[str, bytes] = field(default_factory=dict)
    data_after_refusal: bool = False
    #: Sent after the held replies, as if the server answered a command twice.
    extra: bytes = b""
    messages: list[bytes] = field(default_factory=list)
    commands: list[bytes] = field(default_factory=list)
    pipelined: int = 0
    server: asyncio.Server | None = None
    connections: list[asyncio.StreamWriter] = field(default_factory=list)
    #: Replies held until the transaction's DATA.
    _pending: list[bytes] = field(default_factory=list)

    async def _send(self, writer: asyncio.StreamWriter, replies: bytes, held: bool) -> None:
        if not held or self.mode == "together":
            writer.write(replies)
            await writer.drain()
            return
        for start in range(0, len(replies), 3):
            writer.write(replies[start : start + 3])
            await writer.drain()
            await asyncio.sleep(0.002)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(b"220 scripted ESMTP\r\n")
        transactions = 0
        held: list[bytes] = []
        mail_ok = rcpt_ok = False
        try:
            while line := await reader.readline():
                command = line[:4].upper()
                self.commands.append(command)
                if command in (b"EHLO", b"HELO"):
                    reply = (
                        b"250-scripted\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250 8BITMIME\r\n"
                    )
                elif command == b"MAIL":
                    transactions += 1
                    mail_ok = "MAIL" not in self.refuse
                    reply = self.refuse.get("MAIL", b"250 2.1.0 sender ok\r\n")
                elif command == b"RCPT":
                    if not mail_ok:
                        reply = b"503 5.5.1 need MAIL\r\n"
                    else:
                        rcpt_ok = "RCPT" not in self.refuse
                        # a multi-line reply, to be split across segments too
                        reply = self.refuse.get("RCPT", b"250-recipient\r\n250 2.1.5 ok\r\n")
                elif command == b"DATA":
                    start = (mail_ok and rcpt_ok) or self.data_after_refusal
                    reply = b"354 go ahead\r\n" if start else b"503 5.5.1 no valid recipients\r\n"
                    if transactions > 1:
                        self.pipelined += held == [b"MAIL", b"RCPT"]
                        held = []
                    replies = b"".join(self._pending) + reply
                    if transactions > 1:
                        replies += self.extra
                    await self._send(writer, replies, transactions > 1)
                    self._pending = []
                    if start:
                        self.messages.append(await self._read_message(reader))
                        await self._send(writer, b"250 2.0.0 queued\r\n", transactions > 1)
                    mail_ok = rcpt_ok = False
                    continue
                elif command == b"RSET":
                    mail_ok = rcpt_ok = False
                    reply = b"250 2.0.0 reset\r\n"
                elif command == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    break
                else:
                    reply = b"502 5.5.2 not implemented\r\n"
                if transactions > 1 and command in (b"MAIL", b"RCPT"):
                    held.append(command)
                    self._pending.append(reply)
                else:
                    await self._send(writer, reply, False)
        except ConnectionError:
            pass
        finally:
            writer.close()

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while (line := await reader.readline()) != b".\r\n":
            if not line:
                raise ConnectionError("the client left inside a message")
            lines.append(line[1:] if line.startswith(b".") else line)
        return b"".join(lines)


# --- aiosmtpd, offering PIPELINING when asked ------------------------------------------


@dataclass
class PipeliningHandler(SinkHandler):
    """aiosmtpd's sink handler; offers ``PIPELINING`` when ``pipelining``, refuses the
    senders in ``refuse_senders`` and counts ``RSET``."""

    pipelining: bool = True
    refuse_senders: dict[str, str] = field(default_factory=dict)
    resets: int = 0

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(  # noqa: N802 - aiosmtpd hook
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_senders:
            return self.refuse_senders[address]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.resets += 1
        return "250 OK"

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [content for _, _, content in self.received]


@pytest.fixture
def aiosmtpd_server() -> Iterator[Callable[[PipeliningHandler], int]]:
    """Start aiosmtpd smarthosts with a handler (their own threads); their ports."""
    controllers: list[Controller] = []

    def start(handler: PipeliningHandler) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


def sink_body(n: int) -> bytes:
    """What smtp-sink dumps of :func:`body` (LF line ends, periods unstuffed)."""
    return body(n).replace(b"\r\n", b"\n")


# --- the tests ---------------------------------------------------------------------------


def test_many_messages_over_one_pooled_session_reach_smtp_sink_once_and_pipelined(
    run: Callable[[Coroutine[Any, Any, Any]], Any], tmp_path: Path
) -> None:
    count = 40

    async def scenario(sink_port: int) -> tuple[GateProxy, Any]:
        proxy = GateProxy(sink_port)
        port = await proxy.start()
        pool = SmtpPool(lambda: pooled(port), size=1)
        try:
            for n in range(count):
                async with pool.session() as session:
                    reply = await session.smtp.send_wire(SENDER, RECIPIENT, body(n))
                    assert reply.code == 250
                    assert session.smtp.data_started
                    # EHLO came at connect (opportunistic STARTTLS): all pipeline
                    assert isinstance(session.smtp.protocol, PipeliningProtocol)
            statistics = pool.statistics()
        finally:
            await pool.aclose()
            await proxy.stop()
        return proxy, statistics

    with SmtpSink.started(tmp_path / "dump") as sink:
        proxy, statistics = run(scenario(sink.port))
        mails = sink.mails()
    assert statistics.opened == 1
    assert proxy.pipelined == count - 1
    assert len(mails) == count
    for n in range(count):
        assert sum(mail.endswith(b"\n" + sink_body(n) + b"\n") for mail in mails) == 1, n
    assert all(b"X-Rcpt-Args: <family@example.net>" in mail for mail in mails)


@pytest.mark.parametrize("mode", ["together", "dribble"])
def test_replies_in_one_segment_or_in_tiny_delayed_segments_are_all_read(
    run: Callable[[Coroutine[Any, Any, Any]], Any], mode: str
) -> None:
    count = 12

    async def scenario() -> ScriptedServer:
        server = ScriptedServer(mode)
        port = await server.start()
        smtp = pooled(port)
        await smtp.connect()
        try:
            for n in range(count):
                smtp.data_started = False
                reply = await smtp.send_wire(SENDER, RECIPIENT, body(n))
                assert (reply.code, reply.message) == (250, "2.0.0 queued")
        finally:
            await closed(smtp)
            await server.stop()
        return server

    server = run(scenario())
    assert server.messages == [body(n) for n in range(count)]
    assert server.pipelined == count - 1


async def refused_then_next(port: int, sender: str) -> tuple[BaseException, PooledSmtp]:
    """A first message, one refused (``sender`` or the recipient), then a good one."""
    smtp = pooled(port)
    await smtp.connect()
    try:
        await smtp.send_wire(SENDER, RECIPIENT, body(0))
        smtp.data_started = False
        with pytest.raises(
            (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPRecipientsRefused)
        ) as refused:
            await smtp.send_wire(sender, "nobody@example.net", body(1))
        assert not smtp.data_started
        await smtp.send_wire(SENDER, RECIPIENT, body(2))
    finally:
        await closed(smtp)
    return refused.value, smtp


async def refused_through_gate(port: int, gate: bool, sender: str) -> tuple[BaseException, int]:
    """:func:`refused_then_next` through a :class:`GateProxy` when ``gate``; the refusal
    and how many transactions were pipelined."""
    if not gate:
        error, _smtp = await refused_then_next(port, sender)
        return error, 0
    proxy = GateProxy(port)
    via = await proxy.start()
    try:
        error, _smtp = await refused_then_next(via, sender)
    finally:
        await proxy.stop()
    return error, proxy.pipelined


def refusal_summary(error: BaseException) -> tuple[type[BaseException], int, str]:
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return type(error), error.recipients[0].code, error.recipients[0].message
    assert isinstance(error, aiosmtplib.SMTPSenderRefused)
    return type(error), error.code, error.message


@pytest.mark.parametrize(
    "refused_sender", [False, True], ids=["refused-recipient", "refused-sender"]
)
def test_a_refusal_under_pipelining_raises_as_unpipelined_resets_and_keeps_the_session(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    aiosmtpd_server: Callable[[PipeliningHandler], int],
    refused_sender: bool,
) -> None:
    sender = "refused@relay.example.org" if refused_sender else SENDER
    summaries = {}
    for pipelining in (True, False):
        handler = PipeliningHandler(
            pipelining=pipelining,
            refuse={"nobody@example.net": "550 5.1.1 no such user"},
            refuse_senders={"refused@relay.example.org": "553 5.7.1 not our sender"},
        )
        port = aiosmtpd_server(handler)

        error, pipelined = run(refused_through_gate(port, pipelining, sender))
        assert pipelined == (2 if pipelining else 0)
        assert handler.resets == 1
        assert handler.bodies() == [body(0), body(2)]
        summaries[pipelining] = refusal_summary(error)
    assert summaries[True] == summaries[False]
    expected = (
        (aiosmtplib.SMTPSenderRefused, 553, "5.7.1 not our sender")
        if refused_sender
        else (aiosmtplib.SMTPRecipientsRefused, 550, "5.1.1 no such user")
    )
    assert summaries[True] == expected


@pytest.mark.parametrize("refused", ["MAIL", "RCPT"])
def test_a_server_starting_a_message_after_a_refusal_gets_none_and_the_session_is_closed(
    run: Callable[[Coroutine[Any, Any, Any]], Any], refused: str
) -> None:
    """RFC 2920 bids the server refuse DATA without a valid recipient; one that starts a
    message anyway must not get one (not even an empty one)."""

    async def scenario() -> tuple[ScriptedServer, PooledSmtp, BaseException]:
        server = ScriptedServer(refuse={refused: b"550 5.7.1 refused\r\n"}, data_after_refusal=True)
        port = await server.start()
        smtp = pooled(port)
        await smtp.connect()
        try:
            server.refuse = {}
            await smtp.send_wire(SENDER, RECIPIENT, body(0))
            server.refuse = {refused: b"550 5.7.1 refused\r\n"}
            smtp.data_started = False
            with pytest.raises(
                (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPRecipientsRefused)
            ) as caught:
                await smtp.send_wire(SENDER, RECIPIENT, body(1))
        finally:
            await closed(smtp)
            await server.stop()
        return server, smtp, caught.value

    server, smtp, error = run(scenario())
    assert type(error) is (
        aiosmtplib.SMTPSenderRefused if refused == "MAIL" else aiosmtplib.SMTPRecipientsRefused
    )
    assert not smtp.data_started
    assert not smtp.is_connected
    assert server.messages == [body(0)]
    assert server.commands[-3:] == [b"MAIL", b"RCPT", b"DATA"]


def test_a_refused_data_raises_a_data_error_and_nothing_was_started(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    async def scenario() -> tuple[ScriptedServer, PooledSmtp, aiosmtplib.SMTPDataError]:
        server = ScriptedServer()
        port = await server.start()
        smtp = pooled(port)
        await smtp.connect()
        try:
            await smtp.send_wire(SENDER, RECIPIENT, body(0))
            server.refuse = {"RCPT": b"250 2.1.5 ok\r\n"}
            server.data_after_refusal = False
            # the recipient "refused" with 250 leaves no valid recipient on the server
            smtp.data_started = False
            with pytest.raises(aiosmtplib.SMTPDataError) as caught:
                await smtp.send_wire(SENDER, RECIPIENT, body(1))
            started = smtp.data_started
            server.refuse = {}
            await smtp.send_wire(SENDER, RECIPIENT, body(2))
        finally:
            await closed(smtp)
            await server.stop()
        assert not started
        return server, smtp, caught.value

    server, _smtp, error = run(scenario())
    assert (error.code, error.message) == (503, "5.5.1 no valid recipients")
    assert server.messages == [body(0), body(2)]
    assert b"RSET" in server.commands


def test_a_server_without_pipelining_gets_one_command_at_a_time(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    aiosmtpd_server: Callable[[PipeliningHandler], int],
) -> None:
    handler = PipeliningHandler(pipelining=False)
    port = aiosmtpd_server(handler)

    async def scenario() -> type:
        pool = SmtpPool(lambda: pooled(port), size=1)
        try:
            for n in range(5):
                async with pool.session() as session:
                    await session.smtp.send_wire(SENDER, RECIPIENT, body(n))
                    kind = type(session.smtp.protocol)
        finally:
            await pool.aclose()
        return kind

    assert run(scenario()) is aiosmtplib.protocol.SMTPProtocol
    assert handler.bodies() == [body(n) for n in range(5)]


def test_pipelining_switched_off_sends_one_command_at_a_time_to_smtp_sink(
    run: Callable[[Coroutine[Any, Any, Any]], Any], tmp_path: Path
) -> None:
    async def scenario(port: int) -> type:
        smtp = pooled(port, pipelining=False)
        await smtp.connect()
        try:
            for n in range(3):
                await smtp.send_wire(SENDER, RECIPIENT, body(n))
            assert smtp.supports_extension("pipelining")
            return type(smtp.protocol)
        finally:
            await closed(smtp)

    with SmtpSink.started(tmp_path / "dump") as sink:
        kind = run(scenario(sink.port))
        mails = sink.mails()
    assert kind is aiosmtplib.protocol.SMTPProtocol
    assert len(mails) == 3


def test_pipelining_over_starttls_and_auth(
    run: Callable[[Coroutine[Any, Any, Any]], Any], tmp_path: Path
) -> None:
    ca = make_test_ca(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-key.pem")
    handler = PipeliningHandler()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=Logins(),
    )

    async def scenario() -> type:
        smtp = pooled(
            port,
            start_tls=True,
            username=LOGIN,
            password=PASSWORD,
            tls_context=ssl.create_default_context(cafile=ca),
        )
        await smtp.connect()
        try:
            for n in range(6):
                await smtp.send_wire(SENDER, RECIPIENT, body(n))
            return type(smtp.protocol)
        finally:
            await closed(smtp)

    controller.start()
    try:
        kind = run(scenario())
    finally:
        controller.stop()
    assert kind is PipeliningProtocol
    assert handler.bodies() == [body(n) for n in range(6)]


def test_aiosmtplib_is_the_release_the_pipelining_protocol_was_checked_against() -> None:
    """shore.smtp_pipelining relies on aiosmtplib's private protocol: on another release,
    re-read aiosmtplib/protocol.py against it, then update CHECKED_AIOSMTPLIB."""
    assert aiosmtplib.__version__ == smtp_pipelining.CHECKED_AIOSMTPLIB


def test_a_protocol_not_as_checked_is_refused_and_the_session_does_not_pipeline(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Changed(aiosmtplib.protocol.SMTPProtocol):
        """What another aiosmtplib might build."""

    monkeypatch.setattr(aiosmtplib.smtp, "SMTPProtocol", Changed)
    monkeypatch.setattr(PooledSmtp, "_unavailable_told", False)

    async def scenario(port: int) -> list[type]:
        kinds = []
        for _session in range(2):
            smtp = pooled(port)
            await smtp.connect()
            try:
                with pytest.raises(PipeliningUnavailable):
                    adopt(smtp)
                for n in range(3):
                    await smtp.send_wire(SENDER, RECIPIENT, body(n))
                kinds.append(type(smtp.protocol))
            finally:
                await closed(smtp)
        return kinds

    with SmtpSink.started(tmp_path / "dump") as sink:
        kinds = run(scenario(sink.port))
        mails = sink.mails()
    assert kinds == [Changed, Changed]
    assert len(mails) == 6
    assert [r.getMessage() for r in caplog.records if r.name == "shore.smtp_pool"] == [
        "SMTP pipelining off: aiosmtplib's session protocol (test_a_protocol"
        "_not_as_checked_is_refused_and_the_session_does_not_pipeline.<locals>.Changed) is "
        "not the one shore.smtp_pipelining was checked against (aiosmtplib 5.1.3)"
    ]


@pytest.mark.parametrize(
    ("dropped_after", "maybe_sent"), [("DATA", False), (".", True)], ids=["DATA", "message"]
)
def test_a_session_lost_in_a_pipelined_transaction_counts_as_sent_only_after_the_message(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    tmp_path: Path,
    dropped_after: str,
    maybe_sent: bool,
) -> None:
    """smtp-sink hangs up without a reply after the pipelined ``DATA`` (nothing of the
    message left: MailSender may send again) or after the message's final ``.`` (it may
    have been delivered: a possible duplicate)."""

    async def scenario(port: int) -> tuple[bool, AttemptResult]:
        smtp = pooled(port)
        await smtp.connect()
        try:
            assert smtp.supports_extension("pipelining")
            with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                await smtp.send_wire(SENDER, RECIPIENT, body(0))
            assert isinstance(smtp.protocol, PipeliningProtocol | None)
            started = smtp.data_started
        finally:
            await closed(smtp)
        sender = MailSender(SmtpConfig(host="127.0.0.1", port=port, timeout_s=HANG_GUARD_S))
        try:
            result = await sender.send(RenderedMail(SENDER, RECIPIENT, body(1)))
        finally:
            await sender.aclose()
        return started, result

    with SmtpSink.started(tmp_path / "dump", ["-q", dropped_after]) as sink:
        started, result = run(scenario(sink.port))
    assert started == maybe_sent
    assert result.outcome is Outcome.TRANSIENT
    assert result.maybe_sent == maybe_sent


def test_more_replies_than_commands_closes_the_session_before_the_message(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    """A reply nobody asked for puts client and server out of step: the session is
    closed before anything of the message is written."""

    async def scenario() -> tuple[ScriptedServer, PooledSmtp, aiosmtplib.SMTPResponseException]:
        server = ScriptedServer(extra=b"250 2.0.0 surprise\r\n")
        port = await server.start()
        smtp = pooled(port)
        await smtp.connect()
        try:
            await smtp.send_wire(SENDER, RECIPIENT, body(0))
            smtp.data_started = False
            with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
                await smtp.send_wire(SENDER, RECIPIENT, body(1))
        finally:
            await closed(smtp)
            await server.stop()
        return server, smtp, caught.value

    server, smtp, error = run(scenario())
    assert type(error) is aiosmtplib.SMTPResponseException
    assert error.code == -1
    assert not smtp.data_started
    assert not smtp.is_connected
    assert server.messages == [body(0)]
