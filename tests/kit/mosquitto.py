"""A real Mosquitto broker for tests: temporary config, free port on loopback, stop by PID.

    broker = MosquittoBroker(tmp_path, persistence=True, autosave_interval_s=1)
    with broker:                      # start() ... stop()
        ...                           # ("127.0.0.1", broker.port)
        broker.kill()                 # SIGKILL: what a power cut does to the shore's broker
        broker.restart()              # same port, same config, same persistence directory

Facts from FIELD-NOTES this helper encodes:

- Started as root, Mosquitto drops privileges to user `mosquitto`, and then fails every
  save *silently* into a directory owned by root. As root we write `user root` in the
  config, so the persistence directory (and the log) stay ours.
- Persistence is a periodic snapshot (`autosave_interval`, 1800 s by default): after a
  SIGKILL, what arrived since the last snapshot is gone. `autosave_on_changes` narrows it.
- `max_queued_messages` (1000 per client by default; beyond it messages are dropped
  silently) is raised here so tests see losses only when they mean to.

The broker is a carrier, not a record: tests that kill it show what that means.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.kit.ports import accepts_connections, free_port
from tests.kit.wait import NeverHappened, eventually_blocking
from vessel_relay.demo.brokers import BROKER_OPENSSL_CNF

INSTALL_HINT = "run scripts/install-system-deps (as root or with sudo) to install it"


class MosquittoMissing(RuntimeError):
    """The `mosquitto` binary is not installed."""


class MosquittoFailed(RuntimeError):
    """Mosquitto exited or did not listen in time; the message carries its log."""


def find_mosquitto() -> str:
    """Path of the `mosquitto` binary (Debian puts it in /usr/sbin), or MosquittoMissing."""
    path = shutil.which("mosquitto") or shutil.which(
        "mosquitto", path="/usr/sbin:/usr/local/sbin:/sbin"
    )
    if path is None:
        raise MosquittoMissing(f"the `mosquitto` binary is not installed: {INSTALL_HINT}")
    return path


class MosquittoBroker:
    """One Mosquitto process on 127.0.0.1 with its own directory, config and log."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        autosave_interval_s: int | None = None,
        autosave_on_changes: bool = False,
        max_queued_messages: int = 1_000_000,
        extra_config: Sequence[str] = (),
        start_timeout_s: float = 10.0,
    ) -> None:
        """Prepare a broker in `directory`; nothing runs until `start()`.

        `extra_config` lines are appended to the config as they are, for example
        `("password_file /tmp/x/passwords", "acl_file /tmp/x/acl")` (then also pass
        `"allow_anonymous false"`: the last value of a setting wins).
        """
        self.directory = directory
        self.persistence = persistence
        self.autosave_interval_s = autosave_interval_s
        self.autosave_on_changes = autosave_on_changes
        self.max_queued_messages = max_queued_messages
        self.extra_config = tuple(extra_config)
        self.start_timeout_s = start_timeout_s
        self.config_path = directory / "mosquitto.conf"
        self.log_path = directory / "mosquitto.log"
        self.persistence_dir = directory / "persistence"
        self._fixed_port = port
        self._port = port
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifetime -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the broker has not been started yet")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Mosquitto and return once its port accepts connections.

        The first start picks a free port (unless one was given) and keeps it: restarts
        listen on the same port, so clients reconnect to the same address.
        """
        if self.running:
            raise RuntimeError(f"mosquitto is already running (pid {self.pid})")
        executable = find_mosquitto()
        attempts = 1 if (self._fixed_port is not None or self._port is not None) else 3
        for attempt in range(1, attempts + 1):
            if self._port is None:
                self._port = free_port(self.host)
            self._write_config()
            try:
                self._spawn(executable)
                return
            except MosquittoFailed:
                if attempt == attempts:
                    raise
                self._port = None  # someone took the port between probe and bind

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, and wait: Mosquitto saves its persistence file on the way out."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no snapshot, no goodbye, as in a power cut."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self, *, hard: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL with `hard=True`) if running, then start on the same port."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def log(self) -> str:
        """Everything Mosquitto logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- inside ---------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"max_queued_messages {self.max_queued_messages}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else saves into our directory fail silently
        if self.persistence:
            self.persistence_dir.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.persistence_dir}/"]
            if self.autosave_interval_s is not None:
                lines.append(f"autosave_interval {self.autosave_interval_s}")
            if self.autosave_on_changes:
                lines.append("autosave_on_changes true")
        else:
            lines.append("persistence false")
        lines += self.extra_config
        self.config_path.write_text("\n".join(lines) + "\n")

    def _spawn(self, executable: str) -> None:
        environment = dict(os.environ)
        if any(line.startswith("certfile") for line in self.extra_config):
            # a TLS listener runs with deploy/'s OpenSSL settings (one session ticket)
            openssl = self.config_path.with_name("openssl-broker.cnf")
            openssl.write_text(BROKER_OPENSSL_CNF, encoding="utf-8")
            environment["OPENSSL_CONF"] = str(openssl)
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [executable, "-c", str(self.config_path)],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._process = process

        def listening() -> bool:
            if process.poll() is not None:
                self._process = None
                raise MosquittoFailed(
                    f"mosquitto exited with status {process.returncode} on port {self.port};"
                    f" its log ({self.log_path}):\n{self.log()}"
                )
            return accepts_connections(self.host, self.port)

        try:
            eventually_blocking(listening, self.start_timeout_s, 0.01)
        except NeverHappened:
            self._end(signal.SIGKILL, 10.0)
            raise MosquittoFailed(
                f"mosquitto did not listen on port {self.port} within"
                f" {self.start_timeout_s} s; its log ({self.log_path}):\n{self.log()}"
            ) from None

    def _end(self, how: signal.Signals, timeout_s: float) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(how)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
