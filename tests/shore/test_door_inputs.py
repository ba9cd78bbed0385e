"""Hostile input at the shore's HTTP doors gets a 4xx with a sentence, never a 500.

Each test walks every route of a door's app (the app's own route table, so a route added
later is walked too) with a battery of bad inputs: nested JSON, lone surrogates, huge
integers, bytes that are not UTF-8, wrong types, missing fields, files in forms, too many
fields, absurd path parameters and queries. The client calls the app in-process, so an
exception in the app fails the test instead of turning into a 500.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import argon2
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

import common.passwords as passwords
from protocol.union_requests import MAX_SEALED_NOTE_BYTES
from shore.mail import ReplyRoute
from shore.replies import ContactInfo, SmsWebhook, SmsWebhookConfig
from shore.sms import webhook_signature
from shore.store import StoreError
from tests.shore.doors import (
    WEBHOOK_PATH,
    WEBHOOK_TOKEN,
    Door,
    client_for,
    dashboard_door,
    log_in,
    signed_headers,
    union_api_door,
    union_web_door,
    webhook_door,
)

PATH_VALUES = ["1", "0", "-1", "9" * 30, "9" * 5000, "abc", "%FF", "%00", "%ED%A0%80", "x" * 100]
QUERIES = [
    "",
    "?vessel=" + "9" * 40 + "&newer_than=nan&older_than=1e999&stage=%00&category=" + "x" * 200,
    "?vessel=-5&newer_than=-1&older_than=inf&stage=closed",
    "?vessel=%ED%A0%80&category=%FF&newer_than=" + "1" * 400,
]
HUGE_NOTE = base64.b64encode(bytes(MAX_SEALED_NOTE_BYTES + 1)).decode()
JSON_BODIES = [
    b"[" * 20000 + b"]" * 20000,
    b'{"status": 1e999, "sealed_note": ""}',
    b'{"status": 99999999999999999999999999999, "sealed_note": ""}',
    b'{"status": "\\ud800", "sealed_note": "\\udfff"}',
    b"\xff\xfe\x00{",
    b'{"status": true, "sealed_note": 5}',
    b'{"status": 2.5, "sealed_note": ""}',
    b'{"status": 2}',
    b'{"sealed_note": ""}',
    b'{"status": 9, "sealed_note": ""}',
    b'{"status": 2, "sealed_note": "!!!!"}',
    b'{"status": 2, "sealed_note": "\\u0e01"}',
    b'{"status": NaN, "sealed_note": ""}',
    b"{}",
    b"[]",
    b"null",
    b'"text"',
    b"",
    ('{"status": 2, "sealed_note": "' + HUGE_NOTE + '"}').encode(),
]
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=zz"
FORM_BODIES: list[tuple[str, str]] = [
    (FORM, "csrf={csrf}&operator=%FF%FE&caseworker=%ED%A0%80&password=%00"),
    (FORM, "a=1&" * 100),
    (FORM, "csrf={csrf}&stage=" + "x" * 5000 + "&reason=" + "r" * 3000),
    (FORM, "csrf={csrf}&stage=closed&reason=" + "r" * 3000),
    (FORM, "csrf={csrf}&text=" + "x" * 16_385),
    (FORM, "csrf={csrf}&lang=" + "z" * 40 + "&text=hello"),
    (FORM, "csrf={csrf}&lang=&text=%ED%A0%80%FF"),
    (FORM, "csrf={csrf}&text=&stage="),
    (FORM, "csrf=%00%00&operator=amara&password=x"),
    (FORM, "%%%%&&&===&csrf={csrf}"),
    (FORM, '{"csrf": "{csrf}"}'),
    (
        MULTIPART,
        '--zz\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\n'
        "hi\r\n--zz--\r\n",
    ),
    (MULTIPART, "--zz\r\nnot a part"),
    ("multipart/form-data", "--zz--"),
    ("text/plain", "csrf={csrf}"),
]


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at a tiny cost: the walk signs in and guesses hundreds of times."""
    monkeypatch.setattr(
        passwords, "_HASHER", argon2.PasswordHasher(time_cost=1, memory_cost=256, parallelism=1)
    )


def routes_of(door: Door) -> Iterator[tuple[str, str]]:
    """Every (method, path) of the door's route table, each path parameter replaced by each
    hostile value, plus a method the route does not take."""
    app = door.app
    assert isinstance(app, Starlette)
    for route in app.routes:
        assert isinstance(route, Route)
        names = re.findall(r"{(\w+)(?::\w+)?}", route.path)
        values = PATH_VALUES if names else [""]
        for value in values:
            path = re.sub(r"{\w+(?::\w+)?}", value, route.path)
            for method in [*sorted(route.methods or {"GET"}), "DELETE"]:
                yield method, path


def assert_answered(answer: httpx.Response, what: str) -> None:
    """Not a 5xx; a refusal carries a sentence (a HEAD answer has no body to carry it)."""
    assert answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:300]}"
    if 400 <= answer.status_code < 500 and answer.request.method != "HEAD":
        assert len(answer.text.strip()) > 10, what


async def walk(door: Door, client: httpx.AsyncClient, csrf: str, last: str = "") -> int:
    """Send the whole battery to every route (``last``'s route after all others, so a
    signed-in walk does not sign itself out early); returns how many were answered."""
    sent = 0
    walked = list(routes_of(door))
    walked.sort(key=lambda route: route[1] == last)
    for method, path in walked:
        if method in ("GET", "HEAD", "DELETE"):
            for query in QUERIES:
                answer = await client.request(method, path + query)
                assert_answered(answer, f"{door.name} {method} {path}{query[:40]}")
                sent += 1
            continue
        for kind, template in FORM_BODIES:
            body = template.replace("{csrf}", csrf).encode()
            answer = await client.request(
                method, path, content=body, headers={"content-type": kind}
            )
            assert_answered(answer, f"{door.name} {method} {path} {template[:40]!r}")
            sent += 1
    return sent


@pytest.mark.parametrize("make", [dashboard_door, union_web_door], ids=["dashboard", "union web"])
async def test_web_apps_answer_every_route_and_bad_input_with_a_page(
    make: object, tmp_path: Path
) -> None:
    """Walked without a session and signed in (forms then carry the right token, so the
    handlers themselves see the bad input): no 5xx anywhere; a malformed form, a file or
    too many fields is a 400 page with a sentence; an unknown route a 404 page."""
    assert callable(make)
    async with make(tmp_path) as door:
        async with client_for(door.app, "10.1.1.1") as stranger:
            assert await walk(door, stranger, "no-token") > 200
        async with client_for(door.app, "10.1.1.2") as signed_in:
            token = await log_in(signed_in, door)
            assert await walk(door, signed_in, token, last="/logout") > 200
            token = await log_in(signed_in, door)
            for kind, body in [
                (FORM, f"csrf={token}&" + "a=1&" * 100),
                (MULTIPART, FORM_BODIES[11][1]),
                ("multipart/form-data", "--zz--"),
            ]:
                refused = await signed_in.post(
                    "/logout", content=body.encode(), headers={"content-type": kind}
                )
                assert refused.status_code == 400
                assert refused.headers["content-type"].startswith("text/html")
                assert 'role="alert"' in refused.text
            missing = await signed_in.get("/no/such/page")
            assert missing.status_code == 404
            assert "does not exist" in missing.text
            still = await signed_in.get("/")
            assert still.status_code == 200  # the walk did not break the session


async def test_union_api_answers_every_route_and_bad_json_with_a_sentence(
    tmp_path: Path,
) -> None:
    """Unsigned and signed, every route of the union API and every hostile JSON body gets a
    4xx JSON answer with an "error" sentence; bad JSON with a bad signature is refused for
    the signature (the signature is checked before the JSON is parsed)."""
    async with union_api_door(tmp_path) as door, client_for(door.app) as client:
        for method, path in routes_of(door):
            bodies = JSON_BODIES if method == "POST" else [b""]
            for body in bodies:
                for signed in (False, True):
                    quoted = urllib.parse.unquote(path)
                    headers = signed_headers(method, quoted, body) if signed else {}
                    answer = await client.request(method, path, content=body, headers=headers)
                    what = f"{method} {path[:40]} signed={signed} {body[:40]!r}"
                    assert_answered(answer, what)
                    if answer.status_code >= 400 and method != "HEAD":
                        error = answer.json()["error"]
                        assert isinstance(error, str), what
                        assert len(error) > 10, what
        note = "/union/v1/cases/1/1/notes"
        for body in JSON_BODIES:
            answer = await client.post(
                note, content=body, headers=signed_headers("POST", note, body)
            )
            assert answer.status_code == 400, body[:60]
            assert answer.json()["code"] == "bad-request"
        bad = JSON_BODIES[0]
        forged = signed_headers("POST", note, b"something else")
        answer = await client.post(note, content=bad, headers=forged)
        assert answer.status_code == 401
        assert answer.json()["code"] == "forged"
        good = b'{"status": 2, "sealed_note": ""}'
        answer = await client.post(note, content=good, headers=signed_headers("POST", note, good))
        assert answer.status_code == 404  # well-formed, but not this union's case
        for header, value in [
            ("X-Union", "9" * 5000),
            ("X-Time", "-1"),
            ("X-Signature", "zz"),
            ("X-Signature", "ab" * 10),
            ("X-Nonce", "n" * 65),
        ]:
            headers = {**signed_headers("GET", "/union/v1/reports", b""), header: value}
            answer = await client.get("/union/v1/reports", headers=headers)
            assert answer.status_code == 401, header
            assert answer.json()["error"]


def signed_form(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    url = f"http://testserver{WEBHOOK_PATH}"
    return urllib.parse.urlencode(fields).encode(), {
        "content-type": FORM,
        "x-twilio-signature": webhook_signature(url, fields, WEBHOOK_TOKEN),
    }


async def test_sms_webhook_answers_bad_forms_with_json_and_stores_nothing_bad(
    tmp_path: Path,
) -> None:
    """Every bad form to the webhook (any path, any method) gets a 4xx JSON answer; a form
    that is not URL-encoded, not UTF-8 or has too many fields is a 400 before its signature
    is checked; signed forms with odd fields (a surrogate escape, a superscript media count,
    a 5000-digit count, no body) are taken without a 500, with clean text stored."""
    async with webhook_door(tmp_path) as door, client_for(door.app) as client:
        assert await walk(door, client, "x") > 50
        for kind, body in [
            ("text/plain", b"From=1"),
            (FORM, b"Body=%FF&From=\xff\xfe"),
            (FORM, b"a=1&" * 101),
        ]:
            answer = await client.post(WEBHOOK_PATH, content=body, headers={"content-type": kind})
            assert answer.status_code == 400, body[:30]
            assert answer.json()["message"]
        stored = door.extra["stored"]
        assert isinstance(stored, list)
        for fields in [
            {"From": "+959250000001", "To": "+1", "Body": "ok %ED%A0%80", "NumMedia": "²"},
            {"From": "+959250000001", "To": "+1", "Body": "\ud800x", "NumMedia": "9" * 5000},
            {"From": "+959250000001", "To": "+1"},
            {"From": "+15555550100", "To": "+1", "Body": "who"},
        ]:
            body, headers = signed_form(
                {k: v.encode("utf-8", "replace").decode() for k, v in fields.items()}
            )
            answer = await client.post(WEBHOOK_PATH, content=body, headers=headers)
            assert answer.status_code == 200, fields
        texts = [reply[3] for reply in stored]
        assert texts == ["ok %ED%A0%80", "?x"]


async def test_sms_reply_that_cannot_be_stored_is_a_503_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the store fails, the provider hears 503 (not a crash) and the operator gets
    one log line with the traceback; the reply's text is not in the log."""

    async def lookup(family: str, relay: str) -> tuple[ReplyRoute, ContactInfo]:
        return ReplyRoute(42, 3, 1), ContactInfo(None)

    async def broken(*reply: object) -> None:
        raise StoreError("database is locked")

    hook = SmsWebhook(
        SmsWebhookConfig(public_url=f"http://testserver{WEBHOOK_PATH}", auth_token=WEBHOOK_TOKEN),
        lookup,
        broken,
    )
    body, headers = signed_form({"From": "+959250000001", "To": "+1", "Body": "secret words"})
    async with client_for(hook.app) as client:
        answer = await client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert answer.status_code == 503
    assert "try again" in answer.json()["message"]
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1
    assert "secret words" not in caplog.text
