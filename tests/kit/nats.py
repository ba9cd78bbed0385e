"""A real three-node NATS cluster for tests: JetStream and the MQTT gateway on loopback.

    cluster = NatsCluster(tmp_path)
    with cluster:                          # start() ... stop()
        cluster.nats_urls                  # ["nats://127.0.0.1:P1", ...] for relay workers
        cluster.nodes[0].mqtt_port         # vessels speak MQTT 3.1.1 to any node
        cluster.nodes[1].kill()            # SIGKILL one node; the other two keep quorum
        cluster.nodes[1].start()           # same ports, same JetStream directory
        cluster.nodes[0].routez()          # the node's routes, from its monitoring port
        rogue = cluster.outsider("x", RouteTls.signed_by(other_ca_dir, "x"))  # not a member
    tls_cluster = NatsCluster(tmp_path, client_tls=True)   # client ports need TLS:
        tls_cluster.nats_urls              # ["tls://127.0.0.1:P1", ...], certificates from
        tls_cluster.client_ca              # this CA (relay's [broker] nats_ca_file)
        tls_cluster.client_context()       # for a test's own nats.connect(..., tls=...)
    await publish_until_received(client_on_n1, subscription_on_n3, "vr.7.d", b"data")

Facts from FIELD-NOTES this helper encodes (nats-server 2.9, Debian):

- Each node has ``server_name``, ``listen``, ``jetstream { store_dir }``, ``cluster { name;
  listen; routes }`` naming all three, and ``mqtt { listen }``; the MQTT gateway needs
  JetStream and a server name. Its MQTT is 3.1.1 only.
- The cluster is ready when every node's monitoring ``/healthz`` answers 200 (JetStream
  has a meta leader and the node is current); before that, stream creation fails.
- Routes run over mutual TLS by default, as deploy/nats/nats-node.conf has them:
  ``cluster { tls { cert_file; key_file; ca_file; verify: true; timeout } }``, one
  certificate per node from the cluster's own CA (``<directory>/route-ca``). A node dials
  the routes it is given and checks the certificate against the route URL's host, so each
  certificate names 127.0.0.1; it also serves routes, so it is good for both TLS ends.
- With ``client_tls=True`` each node's client port requires TLS, as deploy/nats has it:
  a top-level ``tls { cert_file; key_file; timeout }``, one certificate per node from a CA
  of its own (``<directory>/client-ca``, not the route CA), naming 127.0.0.1. nats-server
  2.9 still greets in clear (INFO with ``tls_required``), then expects the handshake.
- Each node is stopped by its PID, never by name.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from tests.kit.ports import accepts_connections, free_port
from tests.kit.tls import make_node_certificate, make_test_ca
from tests.kit.wait import NeverHappened, eventually, eventually_blocking

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


def route_greeting(
    host: str, port: int, tls: ssl.SSLContext | None, timeout_s: float = 5.0
) -> bytes:
    """The first line a node's route port sends to whoever connects: over TLS with ``tls``
    (its CA, and the certificate it shows, if any), or in the clear (then the port is sent
    a CONNECT, as a node without TLS would). A route port with TLS speaks only after the
    handshake, so a refused peer gets ``b""`` (closed) or an :class:`ssl.SSLError`."""
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        if tls is None:
            raw.sendall(b'CONNECT {"verbose":false}\r\n')
            return _first_line(raw)
        with tls.wrap_socket(raw, server_hostname=host) as connection:
            return _first_line(connection)


def _first_line(connection: socket.socket) -> bytes:
    received = b""
    while b"\r\n" not in received:
        try:
            chunk = connection.recv(4096)
        except ConnectionResetError:
            return b""
        if not chunk:
            return received
        received += chunk
    return received.split(b"\r\n", 1)[0]


@dataclass(frozen=True)
class RouteTls:
    """A node's route certificate, its key and the CA it requires of the other nodes."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    @classmethod
    def signed_by(cls, ca_directory: Path, name: str) -> RouteTls:
        """A certificate for node ``name`` from the CA in ``ca_directory`` (made there by
        :func:`tests.kit.tls.make_test_ca` if it has none yet)."""
        ca_directory.mkdir(parents=True, exist_ok=True)
        if not (ca_directory / "ca.pem").exists():
            make_test_ca(ca_directory)
        cert, key = make_node_certificate(ca_directory, name)
        return cls(cert, key, ca_directory / "ca.pem")

    def client_context(self) -> ssl.SSLContext:
        """A TLS client context that trusts this CA and shows this certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def config(self, timeout_s: float = 2.0) -> str:
        """The ``tls { ... }`` block of a ``cluster`` section (as deploy/nats has it)."""
        return (
            f'  tls {{\n    cert_file: "{self.cert_file}"\n    key_file: "{self.key_file}"\n'
            f'    ca_file: "{self.ca_file}"\n    verify: true\n    timeout: {timeout_s}\n  }}\n'
        )


@dataclass(frozen=True)
class ClientTls:
    """A node's client-port certificate and key, and the CA relay workers check it with."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    @classmethod
    def signed_by(cls, ca_directory: Path, name: str) -> ClientTls:
        """A certificate for node ``name``'s client port from the CA in ``ca_directory``
        (made there if it has none yet)."""
        route = RouteTls.signed_by(ca_directory, name)
        return cls(route.cert_file, route.key_file, route.ca_file)

    def config(self, timeout_s: float = 2.0) -> str:
        """The top-level ``tls { ... }`` block of a node (as deploy/nats has it)."""
        return (
            f'tls {{\n  cert_file: "{self.cert_file}"\n  key_file: "{self.key_file}"\n'
            f"  timeout: {timeout_s}\n}}\n"
        )


@dataclass
class NodePorts:
    client: int
    cluster: int
    mqtt: int
    monitor: int


class NatsNode:
    """One ``nats-server`` process of a cluster, with its own directory, config and log."""

    host = "127.0.0.1"

    def __init__(
        self,
        name: str,
        directory: Path,
        ports: NodePorts,
        cluster: NatsCluster,
        route_tls: RouteTls | None,
        client_tls: ClientTls | None = None,
    ):
        self.name = name
        self.directory = directory
        self.ports = ports
        self.cluster = cluster
        self.route_tls = route_tls
        self.client_tls = client_tls
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
        scheme = "nats" if self.client_tls is None else "tls"
        return f"{scheme}://{self.host}:{self.ports.client}"

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
        tls = "" if self.route_tls is None else self.route_tls.config()
        client_tls = "" if self.client_tls is None else self.client_tls.config()
        self.config_path.write_text(
            f'server_name: "{self.name}"\n'
            f"listen: {self.host}:{self.ports.client}\n{client_tls}"
            f"http: {self.host}:{self.ports.monitor}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{\n  name: {self.cluster.name}\n"
            f"  listen: {self.host}:{self.ports.cluster}\n{tls}  routes: [{routes}]\n}}\n"
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

    def routez(self) -> dict[str, Any]:
        """The node's ``/routez`` monitoring answer: ``num_routes`` and ``routes`` (each
        with ``remote_id``, ``ip``, ``port``), the other nodes it exchanges messages with."""
        url = f"http://{self.host}:{self.ports.monitor}/routez"
        with urllib.request.urlopen(url, timeout=5.0) as answer:
            routez: dict[str, Any] = json.load(answer)
        return routez

    def connz(self) -> dict[str, Any]:
        """The node's ``/connz`` monitoring answer: its client connections (``connections``,
        each with ``name``, and ``tls_version`` when it runs over TLS)."""
        url = f"http://{self.host}:{self.ports.monitor}/connz"
        with urllib.request.urlopen(url, timeout=5.0) as answer:
            connz: dict[str, Any] = json.load(answer)
        return connz

    def server_id(self) -> str:
        """The node's server id (``/varz``), as other nodes' ``/routez`` name it."""
        url = f"http://{self.host}:{self.ports.monitor}/varz"
        with urllib.request.urlopen(url, timeout=5.0) as answer:
            return str(json.load(answer)["server_id"])

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
    """Three (or ``size``) NATS nodes on 127.0.0.1, routed to each other over mutual TLS
    (``route_tls=False``: in the clear), each with JetStream and an MQTT listener on free
    ports; client ports in the clear, or requiring TLS with ``client_tls=True``."""

    name = "vr"

    def __init__(
        self,
        directory: Path,
        *,
        size: int = 3,
        start_timeout_s: float = 30.0,
        route_tls: bool = True,
        client_tls: bool = False,
    ):
        self.directory = directory
        self.start_timeout_s = start_timeout_s
        #: the cluster's CA directory (ca.pem, ca-key.pem), or None with routes in the clear
        self.route_ca: Path | None = directory / "route-ca" if route_tls else None
        #: the CA directory of the client ports' certificates, or None without client TLS
        self.client_ca_directory: Path | None = directory / "client-ca" if client_tls else None
        self.nodes: list[NatsNode] = []
        self.outsiders: list[NatsNode] = []
        self._taken: set[int] = set()
        for index in range(1, size + 1):
            name = f"n{index}"
            tls = None if self.route_ca is None else RouteTls.signed_by(self.route_ca, name)
            door = (
                None
                if self.client_ca_directory is None
                else ClientTls.signed_by(self.client_ca_directory, name)
            )
            self.nodes.append(NatsNode(name, directory / name, self._ports(), self, tls, door))

    @property
    def client_ca(self) -> Path:
        """The CA certificate that signed the client ports' certificates (client_tls only)."""
        if self.client_ca_directory is None:
            raise RuntimeError("this cluster's client ports have no TLS (client_tls=False)")
        return self.client_ca_directory / "ca.pem"

    def client_context(self) -> ssl.SSLContext | None:
        """A TLS context trusting :attr:`client_ca` for ``nats.connect(..., tls=...)``, or
        None when the client ports have no TLS."""
        if self.client_ca_directory is None:
            return None
        return ssl.create_default_context(cafile=str(self.client_ca))

    def _ports(self) -> NodePorts:
        return NodePorts(*(self._free(self._taken) for _ in range(4)))

    def outsider(self, name: str, route_tls: RouteTls | None) -> NatsNode:
        """A node that dials every member's route port but is not a member (not in
        :attr:`nodes`, not in the members' routes): one that tries to join with
        ``route_tls`` (a certificate from another CA, or None for no TLS). Not started;
        stopped with the cluster."""
        node = NatsNode(name, self.directory / name, self._ports(), self, route_tls)
        self.outsiders.append(node)
        return node

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
        for node in [*self.outsiders, *self.nodes]:
            node.stop()


async def next_data(subscription: Subscription, timeout_s: float) -> bytes | None:
    """The next message's payload, or None if none came within ``timeout_s``."""
    try:
        return (await subscription.next_msg(timeout=timeout_s)).data
    except nats.errors.TimeoutError:
        return None


async def publish_until_received(
    publisher: NatsClient,
    subscription: Subscription,
    subject: str,
    data: bytes,
    timeout_s: float = 20.0,
) -> None:
    """Publish ``data`` until ``subscription`` (on another node) receives it once: a node
    learns of a subscription on another node over the route a moment later, and nothing
    tells when (core NATS drops what is published before). Anything else arriving there
    meanwhile fails at once (AssertionError), so no stray message is swallowed."""

    async def arrived() -> bool:
        await publisher.publish(subject, data)
        await publisher.flush()
        got = await next_data(subscription, 0.5)
        if got is not None and got != data:
            raise AssertionError(f"{subscription.subject} got {got!r} awaiting {data!r}")
        return got == data

    await eventually(arrived, timeout_s, 0.01, what=f"{data!r} across the cluster")


async def drain(subscription: Subscription, quiet_s: float) -> list[bytes]:
    """Every payload ``subscription`` receives until none comes for ``quiet_s``."""
    payloads: list[bytes] = []
    while (data := await next_data(subscription, quiet_s)) is not None:
        payloads.append(data)
    return payloads
