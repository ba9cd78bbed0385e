"""An Iridium 9602/9603 SBD modem on a pty, for tests and benchmarks (the satellite cannot
exist here).

:class:`ModemEmulator` opens a pseudo-terminal (``os.openpty``, raw mode) and answers the
AT commands the driver uses on its master side, in a thread, the way the ISU AT command
reference describes them: echo until ``ATE0``; ``AT&K0``; ``AT+SBDMTA=1`` (then
``SBDRING`` when the gateway queues an MT message); ``AT+CGSN``; ``AT+SBDWB=n`` (``READY``,
n bytes + 2-byte checksum within the timeout, then ``0``/``1``/``2``, or ``3`` at once
for a size outside 1-340); ``AT+SBDIX``/``AT+SBDIXA`` (a session with the fake
provider's gateway: ``+SBDIX: mo, momsn, mt, mtmsn, mt_len, mt_queued``); ``AT+SBDRB``
(length, bytes, checksum); ``AT+SBDD0/1/2``; anything else is ``ERROR``. The driver opens
:attr:`ModemEmulator.device` with pyserial like a real port.

Trouble, as the sky makes it: :meth:`fail_sessions` makes the next sessions fail with the
given MO statuses (32 no network service, 35 busy, 18 RF drop ...), the message staying
in the MO buffer and nothing reaching the gateway; :meth:`cut_after_gateway` makes the
next session with an MO message reach the gateway and then never answer (the antenna
cable pulled after the satellite took the message: the driver times out, and its resend
is a duplicate at the provider).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections import deque

from shipboard.sbd_modem import checksum
from shore.fake_rockblock import FakeRockBlock

__all__ = ["ModemEmulator"]

#: The modem's wait for the bytes of AT+SBDWB (the reference says 60 s).
WRITE_TIMEOUT_S = 60.0


class ModemEmulator:
    """``with ModemEmulator(provider, imei) as modem: SbdModem(modem.device)``."""

    def __init__(
        self, provider: FakeRockBlock, imei: str, *, write_timeout_s: float = WRITE_TIMEOUT_S
    ) -> None:
        self.provider = provider
        self.imei = imei
        self.write_timeout_s = write_timeout_s
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sbd modem", daemon=True)
        self.echo = True
        self.ring_alerts = False
        self.mo: bytes | None = None
        self.mt: bytes = b""
        self._failures: deque[int] = deque()
        self._cut_after_gateway = 0
        self._ring_pending = False
        #: Every command line the modem received, in order (binary data not included).
        self.commands: list[str] = []
        #: Sessions whose MO message reached the gateway.
        self.sessions_sent = 0

    def __enter__(self) -> ModemEmulator:
        self.provider.listen_for_rings(self.imei, self._ring)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- trouble ----------------------------------------------------------------------

    def fail_sessions(self, *mo_statuses: int) -> None:
        """The next sessions fail with these MO statuses (nothing reaches the gateway)."""
        with self._lock:
            self._failures.extend(mo_statuses)

    def cut_after_gateway(self, times: int = 1) -> None:
        """The next ``times`` sessions that carry an MO message reach the gateway, then the
        modem never answers (mailbox checks in between are not cut)."""
        with self._lock:
            self._cut_after_gateway += times

    def _ring(self) -> None:
        with self._lock:
            self._ring_pending = True
        os.write(self._wake_w, b"r")

    # --- the modem --------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        os.write(self._master, data)

    def _answer(self, *lines: str | bytes) -> None:
        out = b""
        for line in lines:
            out += b"\r\n" + (line.encode("ascii") if isinstance(line, str) else line) + b"\r\n"
        self._send(out)

    def _run(self) -> None:
        buffer = bytearray()
        while not self._stopping:
            ready, _, _ = select.select([self._master, self._wake_r], [], [], 1.0)
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            with self._lock:
                ring, self._ring_pending = self._ring_pending and self.ring_alerts, False
            if ring:
                self._send(b"\r\nSBDRING\r\n")
            if self._master not in ready:
                continue
            try:
                chunk = os.read(self._master, 1024)
            except OSError:
                return
            buffer += chunk
            while (end := buffer.find(b"\r")) >= 0:
                line = bytes(buffer[:end]).strip(b"\n").decode("ascii", errors="replace")
                del buffer[: end + 1]
                if self.echo:
                    self._send(line.encode("ascii", errors="replace") + b"\r")
                if line.strip():
                    self.commands.append(line.strip())
                    self._command(line.strip(), buffer)

    def _read_binary(self, size: int, buffer: bytearray) -> bytes | None:
        deadline = time.monotonic() + self.write_timeout_s
        while len(buffer) < size:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping:
                return None
            ready, _, _ = select.select([self._master], [], [], min(left, 0.5))
            if ready:
                buffer += os.read(self._master, 1024)
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def _command(self, line: str, buffer: bytearray) -> None:
        upper = line.upper()
        if upper in ("AT", "AT&K0"):
            self._answer("OK")
        elif upper == "ATE0":
            self.echo = False
            self._answer("OK")
        elif upper == "ATE1":
            self.echo = True
            self._answer("OK")
        elif upper.startswith("AT+SBDMTA="):
            self.ring_alerts = upper.endswith("=1")
            self._answer("OK")
        elif upper == "AT+CGSN":
            self._answer(self.imei, "OK")
        elif upper.startswith("AT+SBDWB="):
            self._write_binary(upper, buffer)
        elif upper in ("AT+SBDIX", "AT+SBDIXA"):
            self._session()
        elif upper == "AT+SBDRB":
            self._send(len(self.mt).to_bytes(2, "big") + self.mt + checksum(self.mt))
            self._answer("OK")
        elif upper in ("AT+SBDD0", "AT+SBDD1", "AT+SBDD2"):
            which = upper[-1]
            if which in "02":
                self.mo = None
            if which in "12":
                self.mt = b""
            self._answer("0", "OK")
        else:
            self._answer("ERROR")

    def _write_binary(self, upper: str, buffer: bytearray) -> None:
        digits = upper.split("=", 1)[1]
        size = int(digits) if digits.isdigit() else 0
        if not 1 <= size <= 340:
            self._answer("3", "OK")
            return
        self._send(b"READY\r\n")
        data = self._read_binary(size + 2, buffer)
        if data is None:
            self._answer("1", "OK")
            return
        message, sent_sum = data[:size], data[size:]
        if sent_sum != checksum(message):
            self._answer("2", "OK")
            return
        self.mo = message
        self._answer("0", "OK")

    def _session(self) -> None:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
            cut = self._cut_after_gateway > 0 and self.mo is not None
            if cut:
                self._cut_after_gateway -= 1
        if failure is not None:
            self._answer(f"+SBDIX: {failure}, 0, 2, 0, 0, 0", "OK")
            return
        answer = self.provider.gateway_session(self.imei, self.mo)
        if self.mo is not None:
            self.sessions_sent += 1
        if answer.mt is not None:
            self.mt = answer.mt
        if cut:
            return  # the cable was pulled: the gateway has the message, the driver hears nothing
        mt_status = 1 if answer.mt is not None else 0
        mt_len = len(answer.mt) if answer.mt is not None else 0
        self._answer(
            f"+SBDIX: 0, {answer.momsn}, {mt_status}, {answer.mtmsn}, {mt_len}, {answer.mt_queued}",
            "OK",
        )
