"""SBD link: the :class:`shipboard.transport.Link` seam over an Iridium SBD modem.

The session logic does not change with the link: :func:`shipboard.link.run_session` drives
the same exchange over an :class:`SbdLink` as over MQTT, and the bytes it hands over are
opaque here (a signed batch, or a compact frame for a few messages: :class:`PayloadKind`)::

    connect   open the modem (no echo, no flow control, ring alerts on), read an MT message
              left in its buffer by a session cut before it was read, clear the MO buffer,
              one mailbox check (a session with no MO message) for what the shore queued
    publish   the payload as fragments of <= 340 bytes (protocol.fragments); each one:
              AT+SBDWB, AT+SBDIX until it reaches the gateway (MO status 0-4), AT+SBDD0;
              a session that brings an MT message reads it (AT+SBDRB) into the reassembler
    receive   the next whole downlink payload; waits for a ring alert (SBDRING) or checks
              the mailbox every ``mailbox_poll_s``, and while the gateway says more wait
    close     close the serial port

A session that fails (MO status 5 and up: no service, busy, RF drop ...) is tried again
at once up to ``session_attempts`` times, the message staying in the modem's MO buffer;
then :class:`~shipboard.sbd_modem.SessionFailed` (a ``LinkDown``) ends the satellite
session, and the outbox keeps the batch for the next one. A session cut after the gateway
took the message (the driver hears nothing) is a ``LinkDown`` too: the next session sends
the batch again, and the relay drops the duplicate fragments (its reassembler) or the
duplicate batch (its replay window). Nothing is lost and nothing is applied twice.

Billing: every MO and MT message is billed in 50-byte credits, at least one a message
(:data:`SBD_CREDIT_BYTES`); :attr:`SbdLink.statistics` counts them. Mailbox checks carry
no message and are counted apart (``mailbox_checks``): RockBLOCK does not bill them; other
providers may.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from protocol.compact import is_compact
from protocol.errors import ProtocolError
from protocol.fragments import SBD_MO_BYTES, PayloadKind, Reassembler, fragment
from shipboard.sbd_modem import Buffers, SbdModem, SessionFailed, SessionResult
from shipboard.transport import LinkClosed

__all__ = ["SBD_CREDIT_BYTES", "SbdLink", "SbdStatistics", "sbd_billed_bytes"]

logger = logging.getLogger("shipboard.sbd")

#: Iridium SBD is billed in credits of 50 bytes, at least one a message.
SBD_CREDIT_BYTES = 50


def sbd_billed_bytes(message_bytes: int) -> int:
    """Billed bytes of one SBD message of ``message_bytes`` (whole 50-byte credits)."""
    if message_bytes <= 0:
        return 0
    return math.ceil(message_bytes / SBD_CREDIT_BYTES) * SBD_CREDIT_BYTES


@dataclass(slots=True)
class SbdStatistics:
    """What one or more SBD sessions carried and cost (kept across sessions)."""

    mo_messages: int = 0
    mo_bytes: int = 0
    mt_messages: int = 0
    mt_bytes: int = 0
    billed_bytes: int = 0
    failed_sessions: int = 0
    mailbox_checks: int = 0
    refused_mt: int = 0


class SbdLink:
    """One satellite session over an SBD modem (see the module docstring).

    ``reassembler``: keep one for the agent's life, so MT fragments of a payload that came
    over several sessions meet. ``statistics``: likewise, for the month's spend.
    """

    def __init__(
        self,
        modem: SbdModem,
        reassembler: Reassembler,
        *,
        statistics: SbdStatistics | None = None,
        session_attempts: int = 3,
        mailbox_poll_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if session_attempts < 1:
            raise ValueError("an SBD message needs at least one session attempt")
        self.modem = modem
        self.reassembler = reassembler
        self.statistics = statistics if statistics is not None else SbdStatistics()
        self.session_attempts = session_attempts
        self.mailbox_poll_s = mailbox_poll_s
        self._clock = clock
        self._arrived: deque[bytes] = deque()
        self._mt_waiting = 0
        self._connected = False
        self._closed = False

    @property
    def tls_resumed(self) -> bool | None:
        """SBD has no TLS."""
        return None

    def _check_open(self) -> None:
        if self._closed or not self._connected:
            raise LinkClosed("the SBD link is not connected")

    async def connect(self) -> None:
        """Open the modem; pick up an MT message a cut session left; check the mailbox."""
        if self._closed or self._connected:
            raise LinkClosed("an SbdLink connects once; make a new one for the next session")
        await asyncio.to_thread(self._connect)
        self._connected = True

    def _connect(self) -> None:
        self.modem.open()
        left = self.modem.read_mt()
        if left:
            self._take_mt(left)  # a duplicate of something taken is dropped by the reassembler
        self.modem.clear(Buffers.BOTH)
        self._session(mailbox=True)

    def _take_mt(self, message: bytes) -> None:
        self.statistics.mt_messages += 1
        self.statistics.mt_bytes += len(message)
        self.statistics.billed_bytes += sbd_billed_bytes(len(message))
        try:
            whole = self.reassembler.add(message, self._clock())
        except ProtocolError as exc:
            self.statistics.refused_mt += 1
            logger.warning("an SBD MT message of %d B was refused: %s", len(message), exc)
            return
        if whole is None:
            return
        if whole.kind is not PayloadKind.BATCH:
            self.statistics.refused_mt += 1
            logger.warning("an SBD downlink payload of kind %s has no reader here", whole.kind.name)
            return
        self._arrived.append(whole.payload)

    def _session(self, *, mailbox: bool, answering_ring: bool = False) -> SessionResult:
        """One session, tried again on failure; its MT message read. Raises SessionFailed."""
        for attempt in range(1, self.session_attempts + 1):
            result = self.modem.session(answering_ring=answering_ring)
            if result.mo_sent:
                break
            self.statistics.failed_sessions += 1
            logger.info(
                "sbd session failed (mo_status %d), attempt %d of %d",
                result.mo_status,
                attempt,
                self.session_attempts,
            )
        else:
            raise SessionFailed(result.mo_status)
        if mailbox:
            self.statistics.mailbox_checks += 1
        if result.mt_received:
            self._take_mt(self.modem.read_mt())
            self.modem.clear(Buffers.MT)
        self._mt_waiting = result.mt_queued
        return result

    async def publish(self, data: bytes, timeout_s: float) -> None:
        """Send one payload (a signed batch, or a compact frame: told by its first byte) as
        MO messages; returns once every one reached the gateway. ``timeout_s`` bounds each
        modem session through the driver's own session timeout, not the whole (a long
        batch takes many sessions). A compact frame of one message goes bare, so a frame
        of 50 bytes costs one credit (``protocol.fragments``)."""
        kind = PayloadKind.COMPACT if is_compact(data) else PayloadKind.BATCH
        await self.publish_payload(data, kind)

    async def publish_payload(self, data: bytes, kind: PayloadKind) -> int:
        """Send any payload the relay knows how to read (``kind``: a batch, or a compact
        frame) as MO messages; how many it took. A compact frame of up to 340 bytes goes
        in one message with no framing byte (``protocol.fragments``)."""
        self._check_open()
        messages = fragment(data, kind, SBD_MO_BYTES)
        for message in messages:
            await asyncio.to_thread(self._send_one, message)
        logger.info("sbd: %d B (%s) sent in %d messages", len(data), kind.name, len(messages))
        return len(messages)

    def _send_one(self, message: bytes) -> None:
        self.modem.write_mo(message)
        self._session(mailbox=False)
        self.modem.clear(Buffers.MO)
        self.statistics.mo_messages += 1
        self.statistics.mo_bytes += len(message)
        self.statistics.billed_bytes += sbd_billed_bytes(len(message))

    def receive_nowait(self) -> bytes | None:
        """A downlink payload already reassembled, or None."""
        return self._arrived.popleft() if self._arrived else None

    async def receive(self) -> bytes:
        """The next whole downlink payload (see the module docstring for how it waits)."""
        self._check_open()
        next_check = self._clock() + self.mailbox_poll_s
        while True:
            arrived = self.receive_nowait()
            if arrived is not None:
                return arrived
            if self._mt_waiting > 0 or self.modem.ring_alert:
                ring = self.modem.ring_alert
                await asyncio.to_thread(self._session, mailbox=True, answering_ring=ring)
                continue
            if self._clock() >= next_check:
                await asyncio.to_thread(self._session, mailbox=True)
                next_check = self._clock() + self.mailbox_poll_s
                continue
            await asyncio.to_thread(self.modem.wait_ring, 0.5)

    async def close(self) -> None:
        """Close the modem's port (safe to call more than once)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self.modem.close)
