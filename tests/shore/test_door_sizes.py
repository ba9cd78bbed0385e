"""A 300 MiB request to any of the shore's HTTP doors is refused before it is read.

The outside tester of 2026-12-06 sent three 300 MiB requests to the union API and the relay
grew by 1.2 GB. Here each door (union API, SMS webhook, dashboard, union web app) is served
by uvicorn on loopback, and a client streams 300 MiB from a generator to every route anyone
may reach without signing in: once with the length declared, once chunked (no length).
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
from pathlib import Path

import pytest

from common.serving import AsgiServer
from protocol.union_requests import MAX_NOTE_REQUEST_BYTES, MAX_SEALED_NOTE_BYTES
from tests.shore.doors import DOORS, Door, Meter, client_for, signed_headers

HUGE = 300 << 20
CHUNK = 64 * 1024
#: What loopback socket buffers may take before the server's answer arrives.
SOCKET_SLACK = 48 << 20


async def push(port: int, method: str, path: str, *, chunked: bool) -> tuple[int, int]:
    """Stream a 300 MiB body to ``method path`` until the server answers; returns the
    status and the bytes the generator produced."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}"
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{length}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
    )
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    chunk = b"a" * CHUNK
    framed = f"{CHUNK:x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
    produced = 0
    try:
        while produced < HUGE and not answer.done():
            writer.write(framed)
            produced += CHUNK
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, answer}, return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():
                drained.cancel()
            elif drained.exception() is not None:
                break  # the server closed the connection after answering
        async with asyncio.timeout(30):
            head = await answer
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), produced


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("door_name", list(DOORS))
async def test_a_300_mib_body_is_refused_before_it_is_read(door_name: str, tmp_path: Path) -> None:
    """To every route reachable without signing in, a 300 MiB body (declared or chunked)
    is answered 413; the door pulled at most its route's limit, the client could send only
    what socket buffers hold, and the process's peak memory grew by less than 16 MB."""
    async with DOORS[door_name](tmp_path) as door:
        meter = Meter(door.app)
        server = AsgiServer(meter, "127.0.0.1", 0, name=door.name)
        await server.start()
        peak_before = peak_rss_bytes()
        try:
            for method, path in door.open_routes:
                limit = door.limit_for(path)
                for chunked in (False, True):
                    status, produced = await push(server.port, method, path, chunked=chunked)
                    what = f"{door.name} {method} {path} chunked={chunked}"
                    assert status == 413, what
                    assert meter.pulled[-1] <= limit + CHUNK, what
                    if not chunked:
                        assert meter.pulled[-1] == 0, what  # refused on its declared length
                    assert produced < SOCKET_SLACK, what
        finally:
            await server.stop()
        assert peak_rss_bytes() - peak_before < 16 << 20


async def test_the_largest_legitimate_note_fits_the_union_apis_limit(tmp_path: Path) -> None:
    """A note carrying the largest sealed note a union can make (the largest padding bucket,
    sealed), in JSON with spaces, passes the size gate and the signature and reaches the case
    check; one byte more than the route's limit is refused unread."""
    async with DOORS["union API"](tmp_path) as door:
        path = "/union/v1/cases/1/1/notes"
        sealed = base64.b64encode(bytes(MAX_SEALED_NOTE_BYTES)).decode()
        body = json.dumps({"status": 6, "sealed_note": sealed}, indent=4).encode()
        assert len(body) <= door.limit_for(path) == MAX_NOTE_REQUEST_BYTES
        async with client_for(door.app) as client:
            fits = await client.post(path, content=body, headers=signed_headers("POST", path, body))
            assert fits.status_code == 404  # not this union's case: it got that far
            over = b" " * (MAX_NOTE_REQUEST_BYTES + 1)
            refused = await client.post(
                path, content=over, headers=signed_headers("POST", path, over)
            )
            assert refused.status_code == 413
            assert refused.json()["code"] == "too-large"


async def test_a_full_lane_note_fits_the_lane_routes_limit(tmp_path: Path) -> None:
    """A lane note with as many downlink blocks as a union may have waiting for a vessel
    (the relay's cap, at least the largest case note), in JSON with spaces, passes the size
    gate and the signature and reaches the vessel check; one byte over is refused unread."""
    async with DOORS["union API"](tmp_path) as door:
        path = "/union/v1/lane/notes"
        shape = await client_json(door, "/union/v1/lane/shape")
        block = base64.b64encode(bytes(shape["down_block_bytes"])).decode()
        blocks = [block] * shape["max_queued_blocks"]
        body = json.dumps({"vessel": 2**31, "blocks": blocks}, indent=4).encode()
        limit = door.limit_for(path)
        assert len(body) <= limit
        async with client_for(door.app) as client:
            fits = await client.post(path, content=body, headers=signed_headers("POST", path, body))
            assert fits.status_code == 404  # no such vessel for this union: it got that far
            over = b" " * (limit + 1)
            refused = await client.post(
                path, content=over, headers=signed_headers("POST", path, over)
            )
            assert refused.status_code == 413


async def client_json(door: Door, path: str) -> dict[str, int]:
    """A signed GET's JSON answer."""
    async with client_for(door.app) as client:
        answer = await client.get(path, headers=signed_headers("GET", path, b""))
    assert answer.status_code == 200, answer.text
    found: dict[str, int] = answer.json()
    return found
