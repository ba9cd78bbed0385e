"""SMTP sessions to one smarthost, kept open and reused across messages.

Opening an SMTP session (TCP, greeting, EHLO, maybe STARTTLS and AUTH) costs several round
trips and, in aiosmtplib, a look-up of our own host name; a mail transaction on an open
session costs four round trips (MAIL, RCPT, DATA, the message), or two when the server
offers ``PIPELINING`` (RFC 2920): ``MAIL``, ``RCPT`` and ``DATA`` in one write, then the
message (:meth:`PooledSmtp.send_wire`, :mod:`shore.smtp_pipelining`). :class:`SmtpPool`
keeps up to ``size`` sessions open and lends one per message::

    async with pool.session() as session:     # an idle open one, or a new one
        await session.smtp.send_message(...)  # one mail transaction
        # an error: session.broken() and the session is closed instead of kept

A session is closed rather than kept when the server closed it (aiosmtplib sees the end
of the connection while it is idle), when it was idle longer than ``idle_s`` (servers drop
idle clients; RFC 5321 lets them after 5 minutes), or when the borrower marked it broken.
A session the server dropped while idle is found out on its next command; whether the
message could have reached the server is then told by :attr:`PooledSmtp.data_started`,
so the sender (:class:`shore.mail.MailSender`) can try again on a new session when
nothing of the message left, and count a possible duplicate when something did. One at
a time, it is set when the ``DATA`` command is begun (aiosmtplib writes the message in
the same step); pipelined, when the message is about to be written after the server's
354: a ``DATA`` without its message delivers nothing, whatever happens to the session.

aiosmtplib 5 itself sends commands one at a time; pipelining is
:mod:`shore.smtp_pipelining`'s, and concurrency comes from several sessions. Logs name
no address: sessions are counted, not described.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import aiosmtplib
from aiosmtplib.protocol import normalize_message_line_endings
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default, SMTPStatus

from shore.smtp_pipelining import PipeliningProtocol, PipeliningUnavailable, adopt

log = logging.getLogger(__name__)


class PooledSmtp(aiosmtplib.SMTP):
    """aiosmtplib's client, telling whether something of the current message may have
    reached the server (:attr:`data_started`), and sending a message already in wire form
    to one checked recipient (:meth:`send_wire`), pipelined when the server allows."""

    #: Whether the warning that aiosmtplib's protocol is not as checked was logged.
    _unavailable_told: ClassVar[bool] = False

    #: Set when something of the message may have reached the server: when the ``DATA``
    #: command is begun, or pipelined when the message is written after 354; reset by the
    #: pool for each message.
    data_started: bool = False

    def __init__(self, *args: Any, pipelining: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Whether :meth:`send_wire` may pipeline when the server offers ``PIPELINING``.
        self.pipelining = pipelining
        self._pipelining_refused = False

    async def send_wire(self, sender: str, recipient: str, message: bytes) -> SMTPResponse:
        """One mail transaction (``MAIL``, ``RCPT``, ``DATA``) for ``message`` to one
        recipient; the ``DATA`` reply. Raises what aiosmtplib's ``sendmail`` raises, and
        like it resets the envelope (``RSET``) after a refusal.

        ``sendmail`` parses both addresses twice per message: a quarter of its cost for
        addresses the caller has checked already (the family's, once, at composition). So
        ``sender`` and ``recipient`` must be plain ASCII ``local@domain`` addresses; a
        message on a session not greeted yet (no ``EHLO`` at connect) goes through
        ``sendmail`` (its greeting logic). Otherwise ``MAIL``, ``RCPT`` and ``DATA`` go in
        one write when the server offers ``PIPELINING`` (:meth:`_send_pipelined`), else one
        at a time."""
        if self.is_ehlo_or_helo_needed:
            _refused, reply = await self.sendmail(sender, [recipient], message)
            return SMTPResponse(SMTPStatus.completed, reply)
        options: list[bytes] = []
        if self.supports_extension("size"):
            options.append(b"SIZE=%d" % _wire_size(message))
        mail = (b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", *options)
        rcpt = (b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
        protocol = self._pipelining_protocol()
        try:
            if protocol is not None:
                return await self._send_pipelined(protocol, mail, rcpt, sender, recipient, message)
            response = await self.execute_command(*mail)
            _check_mail(response, sender)
            _check_rcpt(await self.execute_command(*rcpt), recipient)
            return await self.data(message)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await self.rset()
            raise

    def _pipelining_protocol(self) -> PipeliningProtocol | None:
        """The session's protocol made able to pipeline, or None to send one command at a
        time: pipelining switched off, not offered, or aiosmtplib not as checked (a
        warning once per process, as every session finds it so)."""
        if not self.pipelining or self._pipelining_refused:
            return None
        if not self.supports_extension("pipelining"):
            return None
        try:
            return adopt(self)
        except PipeliningUnavailable as exc:
            self._pipelining_refused = True
            if not PooledSmtp._unavailable_told:
                PooledSmtp._unavailable_told = True
                log.warning("SMTP pipelining off: %s", exc)
            return None

    async def _send_pipelined(
        self,
        protocol: PipeliningProtocol,
        mail: tuple[bytes, ...],
        rcpt: tuple[bytes, ...],
        sender: str,
        recipient: str,
        message: bytes,
    ) -> SMTPResponse:
        """``MAIL``, ``RCPT`` and ``DATA`` in one write, their replies in order, then the
        message after a 354 and its reply.

        :attr:`data_started` is set just before the message is written, not at ``DATA``:
        until then the server holds at most an open transaction without a message, which
        ends undelivered when the connection is lost (RFC 5321 4.1.1.4: only the final
        ``.`` makes it deliver), so a lost connection before it cannot have sent anything.
        A refused ``MAIL`` or ``RCPT`` is raised as when unpipelined; the server then
        refuses ``DATA`` too (RFC 2920 3.1). Should it start the message anyway, the session
        is closed: ending an empty message could deliver it."""
        async with protocol.exchange(self.timeout) as exchange:
            exchange.send(b" ".join(mail), b" ".join(rcpt), b"DATA")
            mail_reply = await exchange.reply()
            rcpt_reply = await exchange.reply()
            data_reply = await exchange.reply()
            try:
                _check_mail(mail_reply, sender)
                _check_rcpt(rcpt_reply, recipient)
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
                if data_reply.code == SMTPStatus.start_input:
                    self.close()
                raise
            if data_reply.code != SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(data_reply.code, data_reply.message)
            if exchange.unread:
                self.close()
                raise aiosmtplib.SMTPResponseException(
                    SMTPStatus.invalid_response.value,
                    "the server sent more replies than commands; session closed",
                )
            self.data_started = True
            exchange.send_message(message)
            response = await exchange.reply()
            if response.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
            return response

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109 - aiosmtplib's signature
    ) -> SMTPResponse:
        """``DATA`` and the message (aiosmtplib's), noting that it was begun."""
        self.data_started = True
        return await super().data(message, timeout=timeout)


def _check_mail(response: SMTPResponse, sender: str) -> None:
    """Raise aiosmtplib's error for a refused ``MAIL``."""
    if response.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


def _check_rcpt(response: SMTPResponse, recipient: str) -> None:
    """Raise aiosmtplib's error for a refused ``RCPT``."""
    if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        refused = aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
        raise aiosmtplib.SMTPRecipientsRefused([refused])


def _wire_size(message: bytes) -> int:
    """The octets ``message`` takes after ``DATA`` (RFC 1870's SIZE, CRLF line ends): its
    length when every line already ends in CRLF (a rendered mail), else after normalising."""
    line_ends = message.count(b"\n")
    if message.endswith(b"\r\n") and message.count(b"\r") == line_ends == message.count(b"\r\n"):
        return len(message)
    return len(normalize_message_line_endings(message))


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """Counters for the status page."""

    opened: int
    reused: int
    #: Sessions closed because the server had dropped them, they idled too long, or failed.
    discarded: int
    idle: int


class Session:
    """One borrowed session: ``smtp`` to send with; :meth:`broken` if it must not be reused."""

    def __init__(self, smtp: PooledSmtp, reused: bool) -> None:
        self.smtp = smtp
        #: Whether the session carried an earlier message (it may have gone stale since).
        self.reused = reused
        self._broken = False

    def broken(self) -> None:
        """Close this session when it is given back instead of keeping it."""
        self._broken = True

    @property
    def is_broken(self) -> bool:
        """Whether :meth:`broken` was called."""
        return self._broken


class SmtpPool:
    """Up to ``size`` open sessions made by ``connect`` (which returns a connected
    :class:`PooledSmtp`); borrowers wait when all are lent out."""

    def __init__(
        self,
        connect: Callable[[], PooledSmtp],
        *,
        size: int = 8,
        idle_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError(f"an SMTP pool needs at least one session, not {size}")
        self._make = connect
        self._idle_s = idle_s
        self._clock = clock
        self._slots = asyncio.Semaphore(size)
        #: Open sessions not lent out, with when each was given back (last used first).
        self._idle: list[tuple[PooledSmtp, float]] = []
        self._opened = self._reused = self._discarded = 0
        self._closed = False

    def statistics(self) -> PoolStatistics:
        """Counters since start."""
        return PoolStatistics(self._opened, self._reused, self._discarded, len(self._idle))

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """Lend an open session (reused if one is idle and alive, else a new one).

        Opening a new one may raise aiosmtplib's errors or ``OSError``; the caller turns
        them into an attempt's result. An exception in the block closes the session.
        """
        if self._closed:
            raise RuntimeError("the SMTP pool was closed; make a new MailSender")
        async with self._slots:
            borrowed = self._take_idle()
            if borrowed is None:
                smtp = self._make()
                try:
                    await smtp.connect()
                except BaseException:
                    smtp.close()
                    raise
                self._opened += 1
                borrowed = Session(smtp, reused=False)
            else:
                self._reused += 1
            borrowed.smtp.data_started = False
            try:
                yield borrowed
            except BaseException:
                borrowed.broken()
                raise
            finally:
                self._give_back(borrowed)

    def _take_idle(self) -> Session | None:
        now = self._clock()
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and now - since <= self._idle_s:
                return Session(smtp, reused=True)
            self._discard(smtp)
        return None

    def _give_back(self, session: Session) -> None:
        if session.is_broken or self._closed or not session.smtp.is_connected:
            self._discard(session.smtp)
            return
        self._idle.append((session.smtp, self._clock()))

    def _discard(self, smtp: PooledSmtp) -> None:
        self._discarded += 1
        if smtp.is_connected:
            smtp.close()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Say QUIT on every idle session and close it; lent sessions close when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for smtp, _since in idle:
            try:
                async with asyncio.timeout(timeout_s):
                    await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                log.debug("an idle SMTP session did not take QUIT; closed")
            finally:
                if smtp.is_connected:
                    smtp.close()
