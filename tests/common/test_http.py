"""HTTP doors: bounded bodies, bounded JSON, refusals with a sentence."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.http import (
    BodyLimit,
    MalformedJson,
    MalformedRequest,
    RequestRefused,
    bounded_int,
    check_text,
    parse_json,
)


def make_app() -> tuple[BodyLimit, list[int]]:
    seen: list[int] = []

    async def echo(request: Request) -> Response:
        body = await request.body()
        seen.append(len(body))
        try:
            data = parse_json(body)
        except RequestRefused as error:
            return JSONResponse({"detail": error.sentence}, status_code=error.status)
        return JSONResponse({"got": data})

    app = Starlette(
        routes=[Route("/small", echo, methods=["POST"]), Route("/big", echo, methods=["POST"])]
    )
    return BodyLimit(app, 1024, routes={"/big": 64 * 1024}), seen


async def test_declared_oversize_body_is_refused_unread() -> None:
    """A 300 MiB Content-Length is refused with 413 before a byte of the body is read."""
    app, seen = make_app()
    received = 0

    async def receive() -> dict[str, object]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/small",
        "headers": [(b"content-length", str(300 << 20).encode())],
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert received == 0
    assert not seen
    assert sent[0]["status"] == 413
    assert b"at most 1 KB" in sent[1]["body"]  # type: ignore[operator]


async def test_chunked_oversize_body_stops_at_the_limit() -> None:
    """A body without a length is read only up to its route's limit, then refused."""
    app, seen = make_app()
    chunks = 0

    async def receive() -> dict[str, object]:
        nonlocal chunks
        chunks += 1
        return {"type": "http.request", "body": b"x" * 4096, "more_body": True}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/big", "headers": []}
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert chunks == 17
    assert not seen
    assert sent[0]["status"] == 413


async def test_bodies_within_limits_reach_the_app() -> None:
    """Within its route's limit a request passes unchanged."""
    app, seen = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/big", json={"text": "x" * 5000})
        small = await client.post("/small", json={"text": "x" * 5000})
    assert ok.status_code == 200
    assert ok.json()["got"]["text"] == "x" * 5000
    assert small.status_code == 413
    assert seen == [len(b'{"text":""}') + 5000]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 20000 + b"]" * 20000, "nested too deeply"),
        (b'{"crew": 1000000000000000000000000000000}', "too large"),
        (b'{"pin": "\\ud800"}', "not valid Unicode"),
        (b'{"\\udfff": 1}', "not valid Unicode"),
        (b'{"pin": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"crew": NaN}', "NaN"),
        (b'{"crew": 1e999}', "too large"),
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_hostile_json_is_refused_with_a_sentence(body: bytes, words: str) -> None:
    """Deep nesting, huge numbers, lone surrogates, bad UTF-8: a typed refusal, no crash."""
    with pytest.raises(MalformedJson, match=words):
        parse_json(body)


def test_json_within_bounds_parses() -> None:
    """Ordinary requests parse, strings with brackets do not count as nesting."""
    assert parse_json(b'{"text": "[[[[{{{{ ]]", "n": -12, "f": 1.5}') == {
        "text": "[[[[{{{{ ]]",
        "n": -12,
        "f": 1.5,
    }
    assert parse_json(b'"\\\\"') == "\\"


def test_bounded_int_and_text() -> None:
    """Crew numbers from JSON or forms: in range or a sentence naming the field."""
    assert bounded_int(7, "crew number", 1, 99) == 7
    assert bounded_int(" 42 ", "crew number", 1, 99) == 42
    for bad in (True, 1.5, "x", "", "9" * 40, None, "²", "٣", "1_0", "-", "--1"):
        with pytest.raises(MalformedRequest, match="crew number must be a number"):
            bounded_int(bad, "crew number", 1, 99)
    with pytest.raises(MalformedRequest, match="between 1 and 99"):
        bounded_int(10**30, "crew number", 1, 99)
    with pytest.raises(MalformedRequest, match="PIN is not valid Unicode"):
        check_text("\ud800", "PIN")


async def test_a_get_with_a_chunked_body_is_bounded_too() -> None:
    """A GET sent with a chunked body (no length) is read only up to its route's limit:
    apps may read the body of any method (the union API signs it)."""
    read: list[int] = []

    async def signed_get(request: Request) -> Response:
        read.append(len(await request.body()))
        return Response("ok")

    app = BodyLimit(Starlette(routes=[Route("/reports", signed_get)]), 1024)
    pulled = 0

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 4096
        return {"type": "http.request", "body": b"x" * 4096, "more_body": pulled < 300 << 20}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/reports",
        "headers": [(b"transfer-encoding", b"chunked")],
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert pulled == 4096
    assert not read
    assert sent[0]["status"] == 413
