"""SBD modem: an Iridium 9602/9603-class short-burst-data modem driven over its serial port.

The standard AT commands of the Iridium ISU AT command reference, as a synchronous driver
on ``pyserial`` (the link runs each call in a worker thread; one lock keeps the calls to
the port one at a time)::

    AT / ATE0 / AT&K0 / AT+SBDMTA=1      alive; no echo; no flow control; ring alerts on
    AT+CGSN                              the modem's IMEI
    AT+SBDWB=n  READY  bytes + checksum  write the MO buffer (1-340 bytes); the modem answers
                                         0 (taken), 1 (timeout), 2 (checksum), 3 (bad size)
    AT+SBDIX / AT+SBDIXA                 a satellite session (A: answering a ring alert),
                                         +SBDIX: mo_status, momsn, mt_status, mtmsn,
                                                 mt_len, mt_queued
    AT+SBDRB                             read the MT buffer: length (2), bytes, checksum (2)
    AT+SBDD0 / AT+SBDD1 / AT+SBDD2       clear the MO / MT / both buffers
    SBDRING                              unsolicited: the gateway holds an MT message for us

The checksum is the low 16 bits of the sum of the message's bytes, high byte first.
MO status 0-4 means the message reached the gateway; anything else means it did not, and
the MO buffer still holds it (a session can be tried again without writing it again).

Errors: every failure that the satellite, the antenna or the modem causes is a
:class:`SbdLinkDown` (a :class:`~shipboard.transport.LinkDown`: nothing is lost, the outbox
keeps every batch until the shore acknowledges it); a failed session carries its
``mo_status``. A message longer than the modem takes is our bug (``ValueError``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import serial

from protocol.fragments import SBD_MO_BYTES
from shipboard.transport import LinkDown

__all__ = [
    "MO_STATUS_TEXT",
    "Buffers",
    "ModemUnavailable",
    "SbdLinkDown",
    "SbdModem",
    "SerialPort",
    "SessionFailed",
    "SessionResult",
    "checksum",
]

logger = logging.getLogger("shipboard.sbd")

#: What the gateway's MO status codes mean (ISU AT command reference, +SBDIX).
MO_STATUS_TEXT: dict[int, str] = {
    0: "sent",
    1: "sent; the MT message was too big to transfer",
    2: "sent; the location update was not accepted",
    10: "the gateway reported that the call did not complete in time",
    11: "the MO message queue at the gateway is full",
    12: "the MO message has too many segments",
    13: "the gateway reported that the session did not complete",
    14: "invalid segment size",
    15: "access is denied",
    16: "the modem is locked and may not make SBD calls",
    17: "the gateway is not responding (local session timeout)",
    18: "the connection was lost (RF drop)",
    19: "link failure (a protocol error ended the call)",
    32: "no network service",
    33: "antenna fault",
    34: "the radio is disabled",
    35: "the modem is busy",
    36: "try later: must wait three minutes since the last registration",
    37: "SBD service is temporarily disabled",
    38: "try later: traffic management period",
}


def checksum(data: bytes) -> bytes:
    """The SBD checksum of ``data``: the low 16 bits of its byte sum, high byte first."""
    return (sum(data) & 0xFFFF).to_bytes(2, "big")


class SbdLinkDown(LinkDown):
    """The modem or the satellite failed us; nothing is lost (the outbox keeps the batch)."""


class ModemUnavailable(SbdLinkDown):
    """The serial port cannot be opened, or the modem does not answer (check the cable and
    the ``[sbd] device`` setting)."""


class SessionFailed(SbdLinkDown):
    """An SBD session did not reach the gateway (``mo_status`` 5 and up); try again later."""

    def __init__(self, mo_status: int) -> None:
        why = MO_STATUS_TEXT.get(mo_status, "failure")
        super().__init__(f"SBD session failed: mo_status {mo_status} ({why})")
        self.mo_status = mo_status


class Buffers(IntEnum):
    """Which buffers ``AT+SBDD`` clears."""

    MO = 0
    MT = 1
    BOTH = 2


@dataclass(frozen=True, slots=True)
class SessionResult:
    """One ``+SBDIX`` answer."""

    mo_status: int
    momsn: int
    #: 0: no MT message waited; 1: one was received into the MT buffer; 2: error.
    mt_status: int
    mtmsn: int
    mt_length: int
    #: MT messages still waiting at the gateway after this one.
    mt_queued: int

    @property
    def mo_sent(self) -> bool:
        """Whether the MO buffer reached the gateway."""
        return self.mo_status <= 4

    @property
    def mt_received(self) -> bool:
        """Whether an MT message is now in the MT buffer."""
        return self.mt_status == 1

    @classmethod
    def parse(cls, line: str) -> SessionResult:
        """``+SBDIX: 0, 12, 1, 3, 88, 0`` as a result; :class:`SbdLinkDown` if garbled."""
        head, _, rest = line.partition(":")
        try:
            numbers = [int(part) for part in rest.split(",")]
        except ValueError:
            numbers = []
        if head.strip() != "+SBDIX" or len(numbers) != 6 or min(numbers) < 0:
            raise SbdLinkDown(f"the modem answered AT+SBDIX with {line[:60]!r}")
        return cls(*numbers)


class SerialPort(Protocol):
    """What the driver uses of ``serial.Serial`` (tests may pass their own)."""

    def write(self, data: bytes, /) -> int | None: ...
    def read(self, size: int = 1, /) -> bytes: ...
    def reset_input_buffer(self) -> None: ...
    def close(self) -> None: ...

    @property
    def in_waiting(self) -> int: ...

    @property
    def timeout(self) -> float | None: ...
    @timeout.setter
    def timeout(self, value: float | None) -> None: ...


class SbdModem:
    """One 9602/9603-class modem on a serial port (see the module docstring).

    ``port``: a device path (opened at :meth:`open` with ``pyserial``, 19,200 baud 8N1, the
    modems' default) or an open port. ``command_timeout_s``: how long a plain command may
    take; ``session_timeout_s``: how long ``AT+SBDIX`` may take (a real session takes
    seconds to a minute; the modem gives up on its own, reporting ``mo_status`` 17).
    """

    def __init__(
        self,
        port: str | SerialPort,
        *,
        baudrate: int = 19_200,
        command_timeout_s: float = 5.0,
        session_timeout_s: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._device = port if isinstance(port, str) else None
        self._port: SerialPort | None = None if isinstance(port, str) else port
        self._baudrate = baudrate
        self.command_timeout_s = command_timeout_s
        self.session_timeout_s = session_timeout_s
        self._clock = clock
        self._pending = bytearray()
        self._lock = threading.RLock()
        #: Set when the modem announced an MT message (``SBDRING``); cleared by a session.
        self.ring_alert = False
        self.imei: str | None = None

    # --- the port ---------------------------------------------------------------------

    def open(self) -> None:
        """Open the serial port (if given a path) and set the modem up: no echo, no flow
        control, ring alerts on; read its IMEI."""
        with self._lock:
            if self._port is None:
                if self._device is None:
                    raise ModemUnavailable("the modem was closed; make a new SbdModem")
                try:
                    self._port = serial.Serial(self._device, self._baudrate, timeout=0.2)
                except (serial.SerialException, OSError) as exc:
                    raise ModemUnavailable(
                        f"cannot open the SBD modem's serial port {self._device}: {exc}; check "
                        "the cable and [sbd] device"
                    ) from exc
            self._port.reset_input_buffer()
            self._pending.clear()
            self.command("AT")
            self.command("ATE0")
            self.command("AT&K0")
            self.command("AT+SBDMTA=1")
            lines = self.command("AT+CGSN")
            self.imei = next((line for line in lines if line.isdigit()), None)

    def close(self) -> None:
        """Close the serial port (safe to call twice)."""
        with self._lock:
            port, self._port = self._port, None
            if port is not None:
                try:
                    port.close()
                except (serial.SerialException, OSError):
                    logger.debug("closing the SBD modem's port failed", exc_info=True)

    def _need_port(self) -> SerialPort:
        if self._port is None:
            raise ModemUnavailable("the SBD modem's port is not open")
        return self._port

    def _write(self, data: bytes) -> None:
        try:
            self._need_port().write(data)
        except (serial.SerialException, OSError) as exc:
            raise ModemUnavailable(f"writing to the SBD modem failed: {exc}") from exc

    def _read_some(self, deadline: float) -> None:
        port = self._need_port()
        if self._clock() >= deadline:
            raise ModemUnavailable("the SBD modem did not answer in time")
        try:
            chunk = port.read(1)  # waits up to the port's short timeout for a first byte
            if chunk and (more := port.in_waiting):
                chunk += port.read(more)
        except (serial.SerialException, OSError) as exc:
            raise ModemUnavailable(f"reading from the SBD modem failed: {exc}") from exc
        self._pending += chunk

    def _read_line(self, deadline: float) -> str:
        """The next non-empty line, unsolicited ring alerts noted and skipped."""
        while True:
            end = self._pending.find(b"\r")
            if end < 0:
                self._read_some(deadline)
                continue
            raw = bytes(self._pending[:end])
            del self._pending[: end + 1]
            if self._pending[:1] == b"\n":
                del self._pending[:1]
            line = raw.strip(b"\n").decode("ascii", errors="replace").strip()
            if not line:
                continue
            if line == "SBDRING":
                self.ring_alert = True
                continue
            return line

    def _read_exact(self, size: int, deadline: float) -> bytes:
        while len(self._pending) < size:
            self._read_some(deadline)
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def _until_final(self, deadline: float, first: list[str] | None = None) -> list[str]:
        lines = list(first or [])
        while True:
            line = self._read_line(deadline)
            if line == "OK":
                return lines
            if line == "ERROR":
                raise SbdLinkDown(f"the SBD modem answered ERROR after {lines[:1]}")
            lines.append(line)

    def command(self, text: str, timeout_s: float | None = None) -> list[str]:
        """Send one AT command; the lines before its ``OK``. :class:`SbdLinkDown` on
        ``ERROR``, :class:`ModemUnavailable` when no answer comes in time."""
        with self._lock:
            deadline = self._clock() + (timeout_s or self.command_timeout_s)
            self._write(text.encode("ascii") + b"\r")
            lines = self._until_final(deadline)
            # A modem with echo still on repeats the command first.
            return [line for line in lines if line != text]

    # --- SBD --------------------------------------------------------------------------

    def write_mo(self, data: bytes) -> None:
        """Put ``data`` (1-340 bytes) in the MO buffer (``AT+SBDWB``)."""
        if not 1 <= len(data) <= SBD_MO_BYTES:
            raise ValueError(f"an SBD MO message is 1 to {SBD_MO_BYTES} bytes, not {len(data)}")
        with self._lock:
            deadline = self._clock() + self.command_timeout_s
            self._write(f"AT+SBDWB={len(data)}\r".encode("ascii"))
            answer = self._read_line(deadline)
            if answer != "READY":
                self._until_final(deadline, [answer])
                raise SbdLinkDown(f"the SBD modem refused AT+SBDWB={len(data)}: {answer!r}")
            self._write(data + checksum(data))
            status = self._read_line(deadline)
            self._until_final(deadline)
            if status != "0":
                why = {"1": "timeout", "2": "checksum mismatch", "3": "wrong size"}
                raise SbdLinkDown(
                    f"the SBD modem did not take the MO message: {why.get(status, status)}"
                )

    def session(self, *, answering_ring: bool = False) -> SessionResult:
        """One satellite session (``AT+SBDIX``, or ``AT+SBDIXA`` answering a ring alert):
        the MO buffer up (if any), one MT message down (if any)."""
        with self._lock:
            command = "AT+SBDIXA" if answering_ring else "AT+SBDIX"
            lines = self.command(command, timeout_s=self.session_timeout_s)
            found = [line for line in lines if line.startswith("+SBDIX")]
            if len(found) != 1:
                raise SbdLinkDown(f"the SBD modem answered {command} without a result")
            result = SessionResult.parse(found[0])
            self.ring_alert = self.ring_alert and not result.mt_received
            logger.info(
                "sbd session: mo_status %d momsn %d mt_status %d mt %d B, %d queued",
                result.mo_status,
                result.momsn,
                result.mt_status,
                result.mt_length,
                result.mt_queued,
            )
            return result

    def read_mt(self) -> bytes:
        """The MT buffer's message (``AT+SBDRB``); empty when the buffer is empty.
        :class:`SbdLinkDown` when its checksum does not match."""
        with self._lock:
            deadline = self._clock() + self.command_timeout_s
            self._write(b"AT+SBDRB\r")
            size = int.from_bytes(self._read_exact(2, deadline), "big")
            data = self._read_exact(size, deadline)
            sent_sum = self._read_exact(2, deadline)
            self._until_final(deadline)
            if sent_sum != checksum(data):
                raise SbdLinkDown("the MT message read from the SBD modem failed its checksum")
            return data

    def clear(self, which: Buffers) -> None:
        """Clear the MO, MT or both buffers (``AT+SBDD0/1/2``)."""
        lines = self.command(f"AT+SBDD{int(which)}")
        if lines != ["0"]:
            raise SbdLinkDown(f"the SBD modem could not clear its buffers: {lines}")

    def wait_ring(self, timeout_s: float) -> bool:
        """Whether a ring alert is (or within ``timeout_s`` comes) pending."""
        with self._lock:
            deadline = self._clock() + timeout_s
            while not self.ring_alert and self._clock() < deadline:
                self._read_some(math.inf)  # one port read (its own short timeout)
                while b"SBDRING" in self._pending:
                    at = self._pending.find(b"SBDRING")
                    del self._pending[at : at + len(b"SBDRING")]
                    self.ring_alert = True
            return self.ring_alert
