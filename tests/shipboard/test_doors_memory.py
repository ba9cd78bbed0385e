"""Huge bodies on the vessel's doors: refused before they are read, whatever the route.

An outside tester sent 722 MB to ``/api/login`` and the vessel's computer read all of it.
Here the agent's crew app runs under uvicorn in its own process on loopback, and every
route that a stranger on the Wi-Fi can reach without signing in gets a 300 MiB body, once
with its length declared and once chunked (no length). The process's peak resident
memory (``VmHWM``) must grow by less than a few MB, and the client must not get the whole
body through: the server stops reading it.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
HUGE = 300 * 1024 * 1024
CHUNK = b"{" * (256 * 1024)
#: Routes reachable without signing in (the pages that need a session read nothing
#: before they redirect, but their bodies are bounded all the same).
OPEN_ROUTES = (
    "/api/login",
    "/login",
    "/api/sos",
    "/sos",
    "/report/phone/sealed",
    "/api/messages",
    "/write",
    "/report",
    "/logout",
    "/lang/eng",
    "/",
    "/no-such-page",
)
GROWTH_LIMIT_KIB = 8 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture
def agent_app(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The crew app in its own process: (pid, port)."""
    port = free_port()
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.shipboard.doors_server", str(tmp_path), str(port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == b"ready", (tmp_path / "server.log").read_text()
        yield process.pid, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


def push_huge_body(port: int, path: str, *, chunked: bool) -> tuple[int | None, int]:
    """POST ``path`` with a 300 MiB body until the server answers or closes; returns the
    status it answered (None if the connection was reset first) and the bytes sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: vessel\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
        )
        sock.sendall(head.encode("ascii"))
        piece = (b"%x\r\n" % len(CHUNK)) + CHUNK + b"\r\n" if chunked else CHUNK
        sent = 0
        answer = b""
        view = memoryview(b"")
        while sent < HUGE:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            assert readable or writable, f"{path}: the server neither reads nor answers"
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                answer += data
                if not data or b"\r\n\r\n" in answer:
                    break
                continue
            if not view:
                view = memoryview(piece)
            try:
                count = sock.send(view)
            except (BrokenPipeError, ConnectionResetError):
                break
            view = view[count:]
            sent += count
        sock.settimeout(2)
        try:
            while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    status = None
    if answer.startswith(b"HTTP/1.1 "):
        status = int(answer[9:12])
    return status, sent


def test_huge_bodies_are_refused_unread_on_every_open_route(
    agent_app: tuple[int, int],
) -> None:
    """A stranger posts 300 MiB to the sign-in, the SOS, the sealed-report door and every
    other route reachable without a PIN, declared and chunked: each is refused (413) or
    cut off long before its end, and the agent's peak memory grows by under 8 MB."""
    pid, port = agent_app
    push_huge_body(port, "/api/login", chunked=False)  # warm-up: imports, buffers
    push_huge_body(port, "/login", chunked=True)
    before = _status_kib(pid, "VmHWM")
    for path in OPEN_ROUTES:
        for chunked in (False, True):
            status, sent = push_huge_body(port, path, chunked=chunked)
            assert sent < HUGE // 4, f"{path} chunked={chunked}: the server read {sent} bytes"
            assert status in (413, None), f"{path} chunked={chunked}: answered {status}"
    grown = _status_kib(pid, "VmHWM") - before
    assert grown < GROWTH_LIMIT_KIB, f"peak memory grew by {grown} KiB"
