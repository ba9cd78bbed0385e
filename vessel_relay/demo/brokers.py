"""Brokers for the demo: a Mosquitto found installed (preferred), else amqtt in-process.

Mosquitto runs as a child process with its own config on 127.0.0.1 and a free port
(persistence on, in the demo directory) and is stopped by its PID. amqtt speaks MQTT
3.1.1 only and queues offline messages only for clients with a user name, so with it the
demo runs agent and relay on 3.1.1 with ``allow_anonymous`` off (FIELD-NOTES).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vessel_relay.demo.tls import BrokerTls

logger = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """No broker could be started; the message says what to install or change."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago, below Linux's ephemeral range.

    Servers that are killed and restarted on the same port (agents in the chaos suite)
    would otherwise find it taken by some client connection's ephemeral local port.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        found: int = probe.getsockname()[1]
        return found


def find_mosquitto() -> str | None:
    """The ``mosquitto`` binary, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("mosquitto") or shutil.which(
        "mosquitto", path="/usr/sbin:/usr/local/sbin:/sbin"
    )


async def wait_listening(host: str, port: int, timeout_s: float = 10.0) -> bool:
    """Whether something accepts connections on (host, port) within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return True
    return False


class Broker(Protocol):
    """What the demo needs of a broker."""

    name: str
    host: str
    port: int
    mqtt_version: str

    def client_url(self, username: str | None = None) -> str: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


#: The OpenSSL settings deploy/ gives the shore broker's process
#: (``deploy/mosquitto/openssl-broker.cnf``, whose settings a test holds equal to these):
#: one TLS 1.3 session ticket after a full handshake instead of OpenSSL's two, and a
#: stateful one (the broker's session cache keeps the session; the ticket is its id), and
#: no TLS 1.3 middlebox-compatibility record.
BROKER_OPENSSL_CNF = """\
openssl_conf = vessel_relay_broker

[vessel_relay_broker]
ssl_conf = ssl_section

[ssl_section]
system_default = broker_defaults

[broker_defaults]
MinProtocol = TLSv1.2
NumTickets = 1
Options = -SessionTicket, -MiddleboxCompat
"""


@dataclass
class MosquittoBroker:
    """A Mosquitto child process (MQTT 5), persistence on in ``directory``."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 0
    persistence: bool = True
    name: str = "mosquitto"
    mqtt_version: str = "5"
    #: A TLS listener for the vessels as ``deploy/`` has one (the plain listener stays for
    #: the relay on loopback, as in deploy/mosquitto/mosquitto.conf).
    tls: BrokerTls | None = None
    tls_port: int = 0
    _process: subprocess.Popen[bytes] | None = None

    def client_url(self, username: str | None = None) -> str:
        """``mqtt://HOST:PORT`` (Mosquitto here allows anonymous loopback clients)."""
        del username
        return f"mqtt://{self.host}:{self.port}"

    def tls_url(self) -> str:
        """``mqtts://HOST:TLS_PORT`` of the TLS listener (when started with ``tls``)."""
        if self.tls is None or not self.tls_port:
            raise BrokerUnavailable("this broker has no TLS listener")
        return f"mqtts://{self.host}:{self.tls_port}"

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self._process.pid if self._process is not None else None

    def _config_lines(self) -> list[str]:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                # as deployed: no cafile (OpenSSL would send the CA's certificate too)
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                "tls_version tlsv1.2",  # as deployed: TLS 1.2 or newer (clients choose 1.3)
            ]
        if os.geteuid() == 0:
            lines.append("user root")  # else saves into our directory fail silently
        if self.persistence:
            (self.directory / "persistence").mkdir(parents=True, exist_ok=True)
            lines += [
                "persistence true",
                f"persistence_location {self.directory / 'persistence'}/",
                "autosave_interval 60",
            ]
        else:
            lines.append("persistence false")
        return lines

    async def start(self) -> None:
        """Start (on the same port as before, if it ran already) and wait until it listens."""
        executable = find_mosquitto()
        if executable is None:
            raise BrokerUnavailable("mosquitto is not installed (apt-get install mosquitto)")
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        if self.tls is not None and not self.tls_port:
            self.tls_port = free_port(self.host)
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(self._config_lines()) + "\n", encoding="utf-8")
        environment = dict(os.environ)
        if self.tls is not None:  # as deployed: one TLS 1.3 session ticket, not two
            openssl = self.directory / "openssl-broker.cnf"
            openssl.write_text(BROKER_OPENSSL_CNF, encoding="utf-8")
            environment["OPENSSL_CONF"] = str(openssl)
        with (self.directory / "mosquitto.log").open("ab") as log:
            self._process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [executable, "-c", str(config)],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        listening = await wait_listening(self.host, self.port)
        if listening and self.tls is not None:
            listening = await wait_listening(self.host, self.tls_port)
        if not listening:
            await self.stop()
            raise BrokerUnavailable(
                f"mosquitto did not listen on {self.host}:{self.port}; "
                f"see {self.directory / 'mosquitto.log'}"
            )
        logger.info("mosquitto (pid %d) on %s:%d", self._process.pid, self.host, self.port)

    def kill(self) -> None:
        """SIGKILL (no snapshot, no goodbye)."""
        self._end(signal.SIGKILL)

    def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def stop(self) -> None:
        """SIGTERM and wait (Mosquitto saves its persistence file on the way out)."""
        await asyncio.to_thread(self._end, signal.SIGTERM)


@dataclass
class AmqttBroker:
    """amqtt in this process's event loop (MQTT 3.1.1; user names required)."""

    host: str = "127.0.0.1"
    port: int = 0
    name: str = "amqtt (in-process)"
    mqtt_version: str = "3.1.1"
    _broker: Any = None

    def client_url(self, username: str | None = None) -> str:
        """``mqtt://USER@HOST:PORT``: amqtt queues offline messages only for named clients."""
        user = f"{username}@" if username else ""
        return f"mqtt://{user}{self.host}:{self.port}"

    async def start(self) -> None:
        """Start listening on a free port."""
        from amqtt.broker import Broker as AmqttServer

        if not self.port:
            self.port = free_port(self.host)
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
            },
        }
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._broker = AmqttServer(config)
        await self._broker.start()
        if not await wait_listening(self.host, self.port):
            raise BrokerUnavailable(f"amqtt did not listen on {self.host}:{self.port}")

    async def stop(self) -> None:
        """Shut the broker down."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()


def choose_broker(kind: str, directory: Path) -> MosquittoBroker | AmqttBroker:
    """``auto`` (Mosquitto if installed, else amqtt), ``mosquitto`` or ``amqtt``."""
    if kind == "amqtt":
        return AmqttBroker()
    if kind == "mosquitto" or (kind == "auto" and find_mosquitto() is not None):
        return MosquittoBroker(directory)
    if kind == "auto":
        return AmqttBroker()
    raise BrokerUnavailable(f"unknown broker {kind!r}: choose auto, mosquitto or amqtt")
