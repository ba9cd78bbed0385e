"""Every route of the agent's crew app against a battery of hostile inputs: no 5xx, ever.

An outside tester got ``500 Internal Server Error`` from ``/api/login`` with deeply nested
JSON, a PIN holding a lone surrogate and a crew number of 10**30. Here the test walks
*every* route of the app (Starlette's ``app.routes``, so a route added later is walked
too), as a stranger, as a signed-in crew member on the API (bearer token) and on the
page (session cookie and CSRF token), with: nested JSON, lone surrogates in every field,
huge and odd numbers, NaN, bad UTF-8, JSON that is not an object; forms with huge or
non-ASCII digits, URL-encoded surrogates, a UTF-7 multipart charset (which decodes to
lone surrogates), a file, too many fields, a broken multipart body. Every answer must be
below 500, and every refusal must carry a sentence. The app runs in-process with
``raise_app_exceptions``: an exception anywhere fails the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from common.codebooks import default_codebook
from common.http import BodyLimit
from protocol.languages import Language
from shipboard.http_api import NoStore, create_app
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from vessel_relay.demo.defaults import demo_ship_config

JSON_FIELDS = (
    "crew",
    "pin",
    "contact",
    "text",
    "quick",
    "lang",
    "channel",
    "address",
    "name",
    "union",
    "category",
    "anonymous",
    "note",
    "position",
)
FORM_FIELDS = (
    "crew",
    "pin",
    "pin2",
    "duress",
    "contact",
    "text",
    "code",
    "channel",
    "address",
    "name",
    "lang",
    "category",
    "union",
    "anonymous",
    "note",
)
PATH_VALUES = ("1", "0", "-1", "9" * 40, "²", "%ED%A0%80", "%00", "x" * 300)
HUGE_INT = 10**30
#: JSON that no route may take (anywhere in the document), as opposed to odd values in
#: fields that a route may not read at all.
MALFORMED_JSON = ("nested", "bad-utf8", "nan", "surrogate", "huge")


@dataclass
class Crew:
    """The app, and one crew member signed in on the API and on the page."""

    client: httpx.AsyncClient
    app: Starlette
    bearer: str
    page_cookie: str
    csrf: str


def starlette_of(app: object) -> Starlette:
    """The Starlette app inside the agent's middleware (NoStore, then BodyLimit)."""
    assert isinstance(app, NoStore)
    limited = app.app
    assert isinstance(limited, BodyLimit)
    inner = limited.app
    assert isinstance(inner, Starlette)
    return inner


@pytest.fixture
async def crew(tmp_path: Path) -> AsyncIterator[Crew]:
    config = demo_ship_config(tmp_path)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    intake = Intake(config, outbox, default_codebook())
    member, pin = intake.register.add(
        name="Juan Cruz", document="PH-1", nationality="PH", language=Language.TGL, now=0.0
    )
    intake.register.add_contact(
        member.crew, channel="sms", address="+639171234567", name="Nanay", language=None, now=0
    )
    intake.register.choose_pin(member.crew, "24681357", None, 0.0)
    app = create_app(intake)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://vessel"
        ) as client:
            token = await client.post("/api/login", json={"crew": member.crew, "pin": "24681357"})
            assert token.status_code == 200
            form = await client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf
            signed = await client.post(
                "/login",
                data={"crew": str(member.crew), "pin": "24681357", "csrf": csrf.group(1)},
            )
            assert signed.headers["location"] == "/home"
            cookie = client.cookies["vr_session"]
            home = await client.get("/home")
            page_csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
            assert page_csrf
            client.cookies.clear()
            yield Crew(client, starlette_of(app), token.json()["token"], cookie, page_csrf.group(1))
    finally:
        outbox.close()
    del pin


def concrete_paths(app: Starlette) -> Iterator[tuple[str, str]]:
    """(method, path) for every route of the app, path parameters filled with odd values."""
    for route in app.routes:
        if isinstance(route, Mount):
            for tail in ("style.css", "..%2F..%2Fetc%2Fpasswd", "%ED%A0%80", "x" * 300):
                yield "GET", f"{route.path}/{tail}"
            continue
        assert isinstance(route, Route), route
        paths = [route.path]
        for name in re.findall(r"{(\w+)}", route.path):
            paths = [p.replace("{" + name + "}", value) for p in paths for value in PATH_VALUES]
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            for path in paths:
                yield method, path


def json_bodies() -> Iterator[tuple[str, bytes]]:
    """(what, body) of hostile JSON."""
    yield "nested", b"[" * 20_000 + b"]" * 20_000
    yield "nested-small", b'{"crew": ' + b"[" * 500 + b"]" * 500 + b"}"
    yield "bad-utf8", b'{"crew": 1, "pin": "\xff\xfe\xed\xa0\x80"}'
    yield "nan", b'{"crew": NaN, "pin": "1"}'
    yield "not-an-object", b'"crew"'
    yield "array", b"[1, 2]"
    yield "empty", b""
    base: dict[str, object] = {
        "crew": 1,
        "pin": "24681357",
        "contact": 1,
        "text": "hi",
        "union": 1,
        "category": 5,
        "channel": "sms",
        "address": "+66812345678",
        "note": "x",
    }
    for field in JSON_FIELDS:
        yield f"surrogate-{field}", json.dumps({**base, field: "\ud800"}).encode("ascii")
        yield f"huge-{field}", json.dumps({**base, field: HUGE_INT}).encode("ascii")
        yield f"float-{field}", json.dumps({**base, field: 1e308}).encode("ascii")
        yield f"bool-{field}", json.dumps({**base, field: True}).encode("ascii")
        yield f"list-{field}", json.dumps({**base, field: [HUGE_INT, -HUGE_INT]}).encode()
    yield "surrogate-key", json.dumps({"\udc80": 1, **base}).encode("ascii")


def form_bodies(csrf: str) -> Iterator[tuple[str, dict[str, str], bytes]]:
    """(what, headers, body) of hostile forms, each with the page's CSRF token."""
    urlencoded = {"content-type": "application/x-www-form-urlencoded"}
    good = {
        "csrf": csrf,
        "crew": "1",
        "pin": "24681357",
        "pin2": "24681357",
        "contact": "1",
        "text": "hi",
        "code": "1",
        "category": "5",
        "union": "1",
        "channel": "sms",
        "address": "+66812345678",
    }
    for field in FORM_FIELDS:
        for what, value in (
            ("huge", "9" * 40),
            ("superscript", "²"),
            ("arabic-digit", "٣"),
            ("negative", "-5"),
            ("encoded-surrogate", "%ED%A0%80"),
            ("nul", "%00"),
        ):
            fields = {**good, field: "@@"}
            body = "&".join(f"{k}={v}" for k, v in fields.items()).replace("@@", value)
            yield f"{what}-{field}", urlencoded, body.encode("utf-8")
    yield "raw-bytes", urlencoded, b"csrf=" + csrf.encode() + b"&text=\xff\xfe&note=\xed\xa0\x80"
    many = "&".join(f"f{i}=1" for i in range(200))
    yield "many-fields", urlencoded, f"csrf={csrf}&{many}".encode()
    for field in FORM_FIELDS:
        yield (
            f"utf7-surrogate-{field}",
            {"content-type": "multipart/form-data; boundary=BB; charset=utf-7"},
            (
                f'--BB\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
                f'--BB\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n+2AA-\r\n'
                "--BB--\r\n"
            ).encode("ascii"),
        )
    yield (
        "file",
        {"content-type": "multipart/form-data; boundary=BB"},
        (
            f'--BB\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
            '--BB\r\nContent-Disposition: form-data; name="text"; filename="a.txt"\r\n'
            "Content-Type: text/plain\r\n\r\nhello\r\n--BB--\r\n"
        ).encode("ascii"),
    )
    yield "no-boundary", {"content-type": "multipart/form-data"}, b"--x\r\n\r\n"
    yield "broken-multipart", {"content-type": "multipart/form-data; boundary=BB"}, b"--BB\r\nx"


def assert_answered(response: httpx.Response, what: str) -> None:
    """Below 500; a refusal has a sentence (problem detail or page text)."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:200]}"
    if response.status_code >= 400:
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            detail = response.json()["detail"]
            assert isinstance(detail, str), what
            assert detail.strip(), what
        elif response.headers.get("content-type", "").startswith("application/json"):
            assert response.json(), what  # the sealed-report door's own JSON answer
        else:
            assert response.text.strip(), what


async def test_no_route_answers_5xx_to_hostile_input(crew: Crew) -> None:
    """Walk every route, as a stranger and signed in (API and page), with hostile JSON
    and hostile forms: every answer is below 500 and every refusal says why."""
    client = crew.client
    routes = list(concrete_paths(crew.app))
    assert {path for _, path in routes} >= {"/api/login", "/login", "/api/sos", "/sos"}
    identities = {
        "stranger": ({}, {}),
        "api": ({"authorization": f"Bearer {crew.bearer}"}, {}),
        "page": ({}, {"vr_session": crew.page_cookie}),
    }
    tried = 0
    for who, (headers, cookies) in identities.items():
        client.cookies.clear()
        for name, value in cookies.items():
            client.cookies.set(name, value)
        for method, path in routes:
            if method == "GET":
                response = await client.get(path, headers=headers, params={"contact": "9" * 40})
                assert_answered(response, f"{who} GET {path}")
                tried += 1
                continue
            for what, body in json_bodies():
                response = await client.request(
                    method,
                    path,
                    content=body,
                    headers={**headers, "content-type": "application/json"},
                )
                assert_answered(response, f"{who} {method} {path} json {what}")
                if path.startswith("/api/") and what.startswith(MALFORMED_JSON):
                    assert 400 <= response.status_code < 500, (  # refused, whatever the route
                        f"{who} {method} {path} json {what}: {response.status_code}"
                    )
                tried += 1
            for what, form_headers, body in form_bodies(crew.csrf):
                response = await client.request(
                    method, path, content=body, headers={**headers, **form_headers}
                )
                assert_answered(response, f"{who} {method} {path} form {what}")
                if what.startswith(("utf7", "file", "many", "no-boundary")) and (
                    response.status_code not in (303, 401, 404, 405)
                ):
                    assert 400 <= response.status_code < 500, (
                        f"{who} {method} {path} form {what}: {response.status_code}"
                    )
                tried += 1
    assert tried > 2000


async def test_json_doors_refuse_each_hostile_input_with_a_sentence(crew: Crew) -> None:
    """The tester's inputs on the sign-in door and the SOS door: 4xx and a sentence each,
    never a 500, and nothing about the inside (no exception names)."""
    client = crew.client
    for path in ("/api/login", "/api/sos", "/api/messages", "/api/grievances"):
        headers = {"content-type": "application/json"}
        if path in ("/api/messages", "/api/grievances"):
            headers["authorization"] = f"Bearer {crew.bearer}"
        for body in (
            b"[" * 20_000 + b"]" * 20_000,
            b'{"crew": 1, "pin": "\\ud800", "note": "\\ud800", "text": "\\ud800"}',
            b'{"crew": 1000000000000000000000000000000, "pin": "1", "contact": 1}',
            b'{"crew": 1, "pin": "\xff"}',
        ):
            response = await client.post(path, content=body, headers=headers)
            assert 400 <= response.status_code < 500, (path, body[:40], response.status_code)
            detail = response.json()["detail"]
            assert detail.endswith("."), detail
            for leak in ("Error", "Traceback", "sqlite", "Overflow", "Exception", ".py"):
                assert leak not in detail, detail


async def test_over_the_limit_is_refused_in_the_doors_own_format_and_language(
    crew: Crew,
) -> None:
    """A body over its route's limit is refused before the app reads it: the API answers
    a problem detail, the crew page its error page in the visitor's language (Thai here);
    a body without a length is read only up to the limit."""
    client = crew.client
    client.cookies.clear()
    api = await client.post(
        "/api/login", content=b"{" + b" " * 10_000 + b"}", headers={"content-type": "x"}
    )
    assert api.status_code == 413
    assert api.headers["content-type"] == "application/problem+json"
    assert "at most 4 KB" in api.json()["detail"]
    page = await client.post(
        "/login", content=b"a" * 10_000, headers={"accept-language": "th-TH,th;q=0.9"}
    )
    assert page.status_code == 413
    assert '<html lang="th">' in page.text
    assert "ยาวเกินไปสำหรับหน้านี้" in page.text  # "too long for this page", in Thai
    assert page.headers["cache-control"] == "no-store"

    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1024

    chunked = await client.post("/sos", content=endless())
    assert chunked.status_code == 413
    assert pulled <= 16 + 2  # the SOS form's 16 KiB, and not a chunk more than needed
