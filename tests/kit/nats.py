"""A real three-node NATS cluster for tests: JetStream and the MQTT gateway on loopback.

    cluster = NatsCluster(tmp_path)
    with cluster:                          # start() ... stop()
        cluster.nats_urls                  # ["nats://127.0.0.1:P1", ...] for relay workers
        cluster.nodes[0].mqtt_port         # vessels speak MQTT 3.1.1 to any node
        cluster.nodes[1].kill()            # SIGKILL one node; the other two keep quorum
        cluster.nodes[1].start()           # same ports, same JetStream directory

Facts from FIELD-NOTES this helper encodes (nats-server 2.9, Debian):

- Each node has ``server_name``, ``listen``, ``jetstream { store_dir }``, ``cluster { name;
  listen; routes }`` naming all three, and ``mqtt { listen }``; the MQTT gateway needs
  JetStream and a server name. Its MQTT is 3.1.1 only.
- The cluster is ready when every node's monitoring ``/healthz`` answers 200 (JetStream
  has a meta leader and the node is current); before that, stream creation fails.
- Each node is stopped by its PID, never by name.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.kit.ports import accepts_connections, free_port
from tests.kit.wait import NeverHappened, eventually_blocking

INSTALL_HINT = "run scripts/install-system-deps (as root or with sudo) to install it"


class NatsMissing(RuntimeError):
    """The `nats-server` binary is not installed."""


class NatsFailed(RuntimeError):
    """A node exited or did not become healthy in time; the message carries its log."""


def find_nats_server() -> str:
    """Path of the `nats-server` binary (Debian puts it in /usr/sbin), or NatsMissing."""
    path = shutil.which("nats-server") or shutil.which(
        "nats-server", path="/usr/sbin:/usr/local/sbin:/sbin"
    )
    if path is None:
        raise NatsMissing(f"the `nats-server` binary is not installed: {INSTALL_HINT}")
    return path


@dataclass
class NodePorts:
    client: int
    cluster: int
    mqtt: int
    monitor: int


class NatsNode:
    """One ``nats-server`` process of a cluster, with its own directory, config and log."""

    host = "127.0.0.1"

    def __init__(self, name: str, directory: Path, ports: NodePorts, cluster: NatsCluster):
        self.name = name
        self.directory = directory
        self.ports = ports
        self.cluster = cluster
        self.config_path = directory / f"{name}.conf"
        self.log_path = directory / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def client_port(self) -> int:
        return self.ports.client

    @property
    def mqtt_port(self) -> int:
        return self.ports.mqtt

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.ports.client}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(
            f"nats-route://{self.host}:{node.ports.cluster}" for node in self.cluster.nodes
        )
        store = self.directory / "jetstream"
        self.config_path.write_text(
            f'server_name: "{self.name}"\n'
            f"listen: {self.host}:{self.ports.client}\n"
            f"http: {self.host}:{self.ports.monitor}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{\n  name: {self.cluster.name}\n"
            f"  listen: {self.host}:{self.ports.cluster}\n  routes: [{routes}]\n}}\n"
            f"mqtt {{ listen: {self.host}:{self.ports.mqtt} }}\n",
            encoding="utf-8",
        )

    def start(self) -> None:
        """Start the node (same ports and directory as before) and return once it listens
        for MQTT and NATS clients; :meth:`NatsCluster.wait_healthy` waits for JetStream."""
        if self.running:
            raise RuntimeError(f"nats node {self.name} is already running (pid {self.pid})")
        self.write_config()
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [find_nats_server(), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._process = process

        def listening() -> bool:
            if process.poll() is not None:
                self._process = None
                raise NatsFailed(
                    f"nats-server {self.name} exited with status {process.returncode};"
                    f" its log ({self.log_path}):\n{self.log()[-4000:]}"
                )
            return accepts_connections(self.host, self.ports.client) and accepts_connections(
                self.host, self.ports.mqtt
            )

        try:
            eventually_blocking(listening, self.cluster.start_timeout_s, 0.02)
        except NeverHappened:
            self.kill()
            raise NatsFailed(
                f"nats-server {self.name} did not listen within {self.cluster.start_timeout_s}"
                f" s; its log ({self.log_path}):\n{self.log()[-4000:]}"
            ) from None

    def healthy(self) -> bool:
        """Whether the node's monitoring endpoint says it is healthy (JetStream current)."""
        url = f"http://{self.host}:{self.ports.monitor}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (a clean shutdown: leadership handed over), and wait."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, as when the machine loses power."""
        self._end(signal.SIGKILL, 10.0)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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


class NatsCluster:
    """Three (or ``size``) NATS nodes on 127.0.0.1, routed to each other, each with
    JetStream and an MQTT listener on free ports."""

    name = "vr"

    def __init__(self, directory: Path, *, size: int = 3, start_timeout_s: float = 30.0):
        self.directory = directory
        self.start_timeout_s = start_timeout_s
        self.nodes: list[NatsNode] = []
        taken: set[int] = set()
        for index in range(1, size + 1):
            ports = NodePorts(*(self._free(taken) for _ in range(4)))
            self.nodes.append(NatsNode(f"n{index}", directory / f"n{index}", ports, self))

    @staticmethod
    def _free(taken: set[int]) -> int:
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        return port

    @property
    def nats_urls(self) -> list[str]:
        return [node.nats_url for node in self.nodes]

    @property
    def mqtt_endpoints(self) -> list[tuple[str, int]]:
        return [(node.host, node.mqtt_port) for node in self.nodes]

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

    def start(self) -> None:
        """Start every node, then wait until all of them are healthy."""
        try:
            for node in self.nodes:
                node.start()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Return once every running node reports healthy (a JetStream meta leader exists
        and the node has caught up), or raise :class:`NatsFailed` with the logs."""
        running = [node for node in self.nodes if node.running]
        limit = self.start_timeout_s if timeout_s is None else timeout_s
        try:
            eventually_blocking(lambda: all(node.healthy() for node in running), limit, 0.1)
        except NeverHappened:
            logs = "\n".join(f"--- {n.name}:\n{n.log()[-2000:]}" for n in running)
            raise NatsFailed(f"the NATS cluster was not healthy within {limit} s\n{logs}") from None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
