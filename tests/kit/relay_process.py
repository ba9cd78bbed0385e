"""``vessel-relay shore run`` as a real subprocess: started, awaited, killed by PID."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class RelayProcess:
    """One relay worker process; stderr goes to ``log``, stdout is read for "subscribed"."""

    def __init__(self, config: Path, log: Path, extra_args: Sequence[str] = ("-v",)) -> None:
        self.config = config
        self.log = log
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        code = "from vessel_relay.cli import main; main()"
        command = [sys.executable, "-c", code, "shore", "run", "-c", str(self.config)]
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [*command, *self.extra_args], stdout=subprocess.PIPE, stderr=log, cwd=ROOT
            )

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start the relay and wait until it has subscribed to the vessels' uplinks."""
        self.process = self._spawn()
        stdout = self.process.stdout
        assert stdout is not None
        async with asyncio.timeout(timeout_s):
            while (line := await asyncio.to_thread(stdout.readline)).strip() != b"subscribed":
                assert line, self.log.read_text()

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, like a power cut of the relay's machine."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._close()

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self._close()
        return code

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close()
