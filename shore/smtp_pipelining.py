"""SMTP command pipelining (RFC 2920) on an aiosmtplib session.

aiosmtplib 5 reads one reply per command it writes: its protocol parses one reply per
waiter and drops bytes that arrive while no reply is awaited, or while a parsed reply waits
to be picked up. Several replies in one TCP segment, or segments arriving before the reader
resumes, would be lost, so several commands cannot be written at once through it.
:class:`PipeliningProtocol` keeps every byte while an :meth:`~PipeliningProtocol.exchange`
is open and hands out replies already in its buffer without waiting for more data.

This is the one place that relies on aiosmtplib's private parts, checked against
**aiosmtplib 5.1.3** (``aiosmtplib/protocol.py``): the protocol's ``_buffer``,
``_read_response_from_buffer``, ``_command_lock``, ``write`` and the three transport
callbacks, and that ``SMTP._create_connection`` makes a plain ``SMTPProtocol`` (which
:func:`adopt` turns into a :class:`PipeliningProtocol` in place). When an upgrade changes
what :func:`adopt` checks, it refuses (:class:`PipeliningUnavailable`) and the session
sends one command at a time; ``tests/shore/test_smtp_pipelining.py`` fails on another
aiosmtplib version and when sessions stop pipelining, so re-check this module then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiosmtplib import SMTP, SMTPReadTimeoutError, SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    SMTPProtocol,
    normalize_message_line_endings,
)
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import SMTPStatus

#: The aiosmtplib release whose protocol this module was read against.
CHECKED_AIOSMTPLIB = "5.1.3"

#: Replies an exchange may hold unread at once (a pipelined MAIL, RCPT, DATA), bounding
#: its buffer as aiosmtplib bounds one reply's.
MAX_REPLIES_BUFFERED = 3


class PipeliningUnavailable(RuntimeError):
    """The session's aiosmtplib protocol is not the one :mod:`shore.smtp_pipelining` was
    checked against (aiosmtplib was upgraded?): re-check that module against the new
    ``aiosmtplib/protocol.py``."""


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, able to write several commands at once and read their
    replies in order (:meth:`exchange`). Outside an exchange it is aiosmtplib's own."""

    # Class attributes, not __init__'s: instances become this class by adopt().
    #: Whether an exchange is open (every byte received is kept for it).
    _exchanging: bool = False
    #: What ended the connection during the open exchange.
    _exchange_end: BaseException | None = None
    #: Woken when bytes arrive or the connection ends; set while a reply is awaited.
    _exchange_wake: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if not self._exchanging:
            super().data_received(data)
            return
        self._buffer.extend(data)
        if len(self._buffer) > MAX_RESPONSE_LENGTH * MAX_REPLIES_BUFFERED:
            del self._buffer[:]
            self._end_exchange(
                SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
            )
        self._wake()

    def eof_received(self) -> bool:
        if self._exchanging:
            self._end_exchange(SMTPServerDisconnected("Unexpected EOF received"))
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._exchanging:
            lost = SMTPServerDisconnected("Connection lost")
            lost.__cause__ = exc
            self._end_exchange(lost)
        super().connection_lost(exc)

    def _end_exchange(self, error: BaseException) -> None:
        if self._exchange_end is None:
            self._exchange_end = error
        self._wake()

    def _wake(self) -> None:
        wake = self._exchange_wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    @contextlib.asynccontextmanager
    async def exchange(self, reply_timeout_s: float | None) -> AsyncIterator[Exchange]:
        """Hold the session's command lock and keep every reply for the block's
        :class:`Exchange`. Bytes left unread at its end are unsolicited and dropped, as
        aiosmtplib drops bytes that arrive while no command awaits a reply."""
        if self._command_lock is None:
            raise SMTPServerDisconnected("Server not connected")
        async with self._command_lock:
            self._exchanging = True
            self._exchange_end = None
            try:
                yield Exchange(self, reply_timeout_s)
            finally:
                self._exchanging = False
                self._exchange_end = None
                self._exchange_wake = None
                self._response_pending = False
                del self._buffer[:]

    async def _next_reply(self) -> SMTPResponse:
        """The next reply: one already in the buffer, else the one the next bytes
        complete."""
        while True:
            reply = self._read_response_from_buffer()
            if reply is not None:
                return reply
            if self._exchange_end is not None:
                raise self._exchange_end
            wake: asyncio.Future[None] = self._loop.create_future()
            self._exchange_wake = wake
            try:
                await wake
            finally:
                self._exchange_wake = None


class Exchange:
    """Commands written and replies read within one :meth:`PipeliningProtocol.exchange`."""

    def __init__(self, protocol: PipeliningProtocol, reply_timeout_s: float | None) -> None:
        self._protocol = protocol
        self._timeout = reply_timeout_s

    def send(self, *commands: bytes) -> None:
        """Write ``commands`` (each without its CRLF) in one write."""
        for command in commands:
            if COMMAND_INJECTION_REGEX.search(command):
                raise ValueError("Command arg contains a prohibited control character")
        self._protocol.write(b"".join(command + b"\r\n" for command in commands))

    def send_message(self, message: bytes) -> None:
        """Write ``message`` after a 354 reply as aiosmtplib's ``DATA`` does: line ends made
        CRLF, lines beginning with a period doubled, then the ending ``.`` line."""
        message = normalize_message_line_endings(message)
        self._protocol.write(PERIOD_REGEX.sub(b"..", message) + b".\r\n")

    @property
    def unread(self) -> bool:
        """Whether bytes past the replies read so far have arrived."""
        return bool(self._protocol._buffer)

    async def reply(self) -> SMTPResponse:
        """The next reply in order; waits at most the session's timeout for it."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._protocol._next_reply()
        except TimeoutError as exc:
            raise SMTPReadTimeoutError("Timed out waiting for server response") from exc


def adopt(smtp: SMTP) -> PipeliningProtocol:
    """``smtp``'s protocol, made a :class:`PipeliningProtocol` if it is not one yet. Call
    between commands (no reply awaited). Raises :class:`PipeliningUnavailable` when the
    protocol is not aiosmtplib's as checked, ``SMTPServerDisconnected`` when not connected.
    """
    protocol = smtp.protocol
    if isinstance(protocol, PipeliningProtocol):
        return protocol
    if protocol is None or protocol.transport is None:
        raise SMTPServerDisconnected("Server not connected")
    if type(protocol) is not SMTPProtocol or not _as_checked(protocol):
        raise PipeliningUnavailable(
            f"aiosmtplib's session protocol ({type(protocol).__qualname__}) is not the one "
            f"shore.smtp_pipelining was checked against (aiosmtplib {CHECKED_AIOSMTPLIB})"
        )
    protocol.__class__ = PipeliningProtocol
    # Transports may keep the protocol's bound data_received (uvloop's do): set again.
    protocol.transport.set_protocol(protocol)
    return protocol  # type: ignore[return-value]


def _as_checked(protocol: SMTPProtocol) -> bool:
    """Whether ``protocol`` has what :class:`PipeliningProtocol` uses, as in 5.1.3."""
    return (
        isinstance(getattr(protocol, "_buffer", None), bytearray)
        and isinstance(getattr(protocol, "_command_lock", None), asyncio.Lock)
        and isinstance(getattr(protocol, "_response_pending", None), bool)
        and callable(getattr(protocol, "_read_response_from_buffer", None))
        and hasattr(protocol.transport, "set_protocol")
    )
