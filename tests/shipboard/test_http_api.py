"""The crew web page's API: sign in, write home, report a problem, SOS, inbox and quota.
Every answer says no-store; every error is a problem detail with a sentence."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from protocol.codebook import Codebook
from protocol.sealing import GrievanceCategory, GrievancePlaintext
from shipboard.config import ShipConfig
from shipboard.http_api import ApiTokens, create_app
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from tests.kit.lane import blocks_on_board, union_reads
from vessel_relay.demo.keys import demo_union_private_key

from .conftest import VESSEL_ID, Crew


@pytest.fixture
async def api(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Intake(ship_config, outbox, codebook), ApiTokens())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vessel") as client:
        yield client


async def _login(api: httpx.AsyncClient, crew: Crew) -> dict[str, str]:
    response = await api.post("/api/login", json={"crew": crew.member.crew, "pin": crew.pin})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    return {"authorization": f"Bearer {response.json()['token']}"}


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    return body


async def test_sign_in_write_home_and_follow_it(
    api: httpx.AsyncClient, crew: Crew, outbox: Outbox
) -> None:
    """A crew member signs in, writes to their mother, sees 'accepted' with the balance,
    and can look up the message's stages later."""
    auth = await _login(api, crew)
    sent = await api.post(
        "/api/messages",
        json={"contact": crew.mother.contact, "text": "ငါနေကောင်းတယ်"},
        headers=auth,
    )
    assert sent.status_code == 201
    body = sent.json()
    assert body["state"] == "accepted"
    assert body["remaining_bytes"] == 1024 * 1024 - body["text_bytes"]
    assert [p.message_seq for p in outbox.pending_messages(0)] == [body["message_seq"]]
    stages = await api.get(f"/api/messages/{body['message_seq']}", headers=auth)
    assert stages.status_code == 200
    assert stages.json()["state"] == "accepted"
    quota = await api.get("/api/quota", headers=auth)
    assert quota.json()["used_bytes"] == body["text_bytes"]


async def test_wrong_pin_then_pause(api: httpx.AsyncClient, crew: Crew) -> None:
    """Wrong PINs are refused with a sentence; after five, sign-in pauses for that crew number."""
    for _ in range(5):
        response = await api.post("/api/login", json={"crew": crew.member.crew, "pin": "1"})
        assert "PIN is wrong" in str(_problem(response, 401)["detail"])
    paused = await api.post("/api/login", json={"crew": crew.member.crew, "pin": crew.pin})
    detail = str(_problem(paused, 429)["detail"])
    assert "Try again in 5 min" in detail
    assert "SOS needs no PIN" in detail
    assert "captain" not in detail  # the person a grievance may be about
    assert 290 < int(paused.headers["retry-after"]) <= 300


async def test_refusals_are_problem_details(api: httpx.AsyncClient, crew: Crew) -> None:
    """No sign-in, an unknown contact, an empty text and a broken request each get their
    own problem detail in plain words."""
    _problem(await api.get("/api/inbox"), 401)
    auth = await _login(api, crew)
    unknown = await api.post("/api/messages", json={"contact": 999, "text": "hi"}, headers=auth)
    assert "Add them first" in str(_problem(unknown, 404)["detail"])
    empty = await api.post(
        "/api/messages", json={"contact": crew.mother.contact, "text": "   "}, headers=auth
    )
    _problem(empty, 422)
    broken = await api.post("/api/messages", content=b"{not json", headers=auth)
    _problem(broken, 400)
    _problem(await api.get("/api/nothing-here"), 404)


async def test_over_quota_says_the_balance(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook, crew: Crew
) -> None:
    """With 5 bytes left, a 10-byte message is refused (429) with the balance in the body."""
    config = replace(ship_config, quota=replace(ship_config.quota, crew_text_bytes=15))
    app = create_app(Intake(config, outbox, codebook))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://v"
    ) as api:
        auth = await _login(api, crew)
        first = await api.post(
            "/api/messages",
            json={"contact": crew.mother.contact, "text": "0123456789"},
            headers=auth,
        )
        assert first.status_code == 201
        second = await api.post(
            "/api/messages",
            json={"contact": crew.mother.contact, "text": "0123456789"},
            headers=auth,
        )
        body = _problem(second, 429)
        assert body["remaining_bytes"] == 5
        assert "5 bytes left" in str(body["detail"])
        sos = await api.post("/api/sos", json={"note": "man overboard"}, headers=auth)
        assert sos.status_code == 201  # an SOS never waits for quota


async def test_grievance_is_sealed_and_tracked(
    api: httpx.AsyncClient, crew: Crew, outbox: Outbox, codebook: Codebook
) -> None:
    """A crew member reports unpaid wages: they get a case number and a receipt code, only
    the union can open the stored report, and only they see the case in their inbox."""
    auth = await _login(api, crew)
    unions = (await api.get("/api/unions", headers=auth)).json()
    filed = await api.post(
        "/api/grievances",
        json={
            "union": unions["unions"][0]["union"],
            "category": "withholding_of_wages",
            "text": "လစာ သုံးလ မရသေးပါ",
            "lang": "mya",
            "anonymous": False,
        },
        headers=auth,
    )
    assert filed.status_code == 201
    report = filed.json()
    assert report["case_number"] == f"{VESSEL_ID}-{report['message_seq']}"
    assert len(str(report["message_seq"])) == 12  # a lane report number: no message row
    assert len(report["receipt_code"]) == 16
    with outbox.reading() as db:
        assert (
            db.execute(
                "SELECT 1 FROM messages WHERE message_seq = ?", (report["message_seq"],)
            ).fetchall()
            == []
        )
    (opened,) = _open_reports(outbox, codebook)
    assert opened.category is GrievanceCategory.WITHHOLDING_OF_WAGES
    assert opened.text == "လစာ သုံးလ မရသေးပါ"
    assert opened.receipt_code == report["receipt_code"]
    assert opened.crew_document == crew.member.document
    assert opened.case_number == report["case_number"]  # the union files it under this number
    inbox = (await api.get("/api/inbox", headers=auth)).json()
    assert inbox["cases"] == [report["message_seq"]]
    case = await api.get(f"/api/cases/{report['message_seq']}", headers=auth)
    assert case.status_code == 200
    shown = case.json()
    assert shown["case_number"] == report["case_number"]
    assert shown["receipt_code"] == report["receipt_code"]
    assert shown["state"] == "queued"  # its blocks wait for the end of the lane period
    assert shown["notes"] == []
    assert "reporter_tag" not in shown


def _open_reports(outbox: Outbox, codebook: Codebook) -> list[GrievancePlaintext]:
    """Every report on board, opened as the union does: the lane's blocks tried with its
    key, fragments put together."""
    return union_reads(blocks_on_board(outbox), demo_union_private_key(), codebook)


async def test_anonymous_report_carries_no_name(
    api: httpx.AsyncClient, crew: Crew, outbox: Outbox, codebook: Codebook
) -> None:
    """An anonymous report reaches the union without the reporter's name or Seabook number."""
    auth = await _login(api, crew)
    filed = await api.post(
        "/api/grievances",
        json={"union": 1, "category": 6, "text": "threats", "lang": "eng", "anonymous": True},
        headers=auth,
    )
    assert filed.status_code == 201
    (opened,) = _open_reports(outbox, codebook)
    assert opened.crew_name is None
    assert opened.crew_document is None


async def test_consent_to_escalation_travels_inside_the_seal(
    api: httpx.AsyncClient, crew: Crew, outbox: Outbox, codebook: Codebook
) -> None:
    """A reporter who agrees that an unanswered report may go to the union's second
    organisation says so at filing; the agreement is sealed with the report (only the union
    reads it). Without the field the report carries no agreement; a non-boolean is refused."""
    auth = await _login(api, crew)
    base = {"union": 1, "category": 5, "text": "beaten", "lang": "eng", "anonymous": False}
    refused = await api.post(
        "/api/grievances", json=base | {"consent_to_escalate": "yes"}, headers=auth
    )
    _problem(refused, 400)
    agreed = await api.post(
        "/api/grievances", json=base | {"consent_to_escalate": True}, headers=auth
    )
    assert agreed.status_code == 201
    silent = await api.post("/api/grievances", json=base | {"text": "threatened"}, headers=auth)
    assert silent.status_code == 201
    consent = {r.text: r.consent_to_escalate for r in _open_reports(outbox, codebook)}
    assert consent == {"beaten": True, "threatened": False}


async def test_contacts_added_on_the_page(api: httpx.AsyncClient, crew: Crew) -> None:
    """A crew member adds their sister's number on the page, then can write to her."""
    auth = await _login(api, crew)
    bad = await api.post(
        "/api/contacts", json={"channel": "sms", "address": "12", "name": "Sister"}, headers=auth
    )
    _problem(bad, 422)
    added = await api.post(
        "/api/contacts",
        json={"channel": "sms", "address": "+66 81 234 5678", "name": "Sister"},
        headers=auth,
    )
    assert added.status_code == 201
    listed = (await api.get("/api/contacts", headers=auth)).json()["contacts"]
    assert "+66812345678" in [c["address"] for c in listed]


async def test_a_bug_is_logged_once_and_answered_without_its_insides(
    outbox: Outbox,
    ship_config: ShipConfig,
    codebook: Codebook,
    crew: Crew,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If a page hits a bug (here: the quota lookup raises), the agent under uvicorn
    answers 500 with a plain sentence that names nothing of the inside, on the API and on
    the crew page, and the traceback is logged once per request for the operator."""
    import asyncio

    from shipboard.http_api import serve_http
    from tests.kit.ports import free_port

    intake = Intake(ship_config, outbox, codebook)

    def broken(crew: int) -> object:
        raise RuntimeError("secret-internal-detail")

    intake.quota = broken  # type: ignore[method-assign, assignment]
    port = free_port()
    stopping, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_http(create_app(intake), "127.0.0.1", port, stopping, ready))
    await ready.wait()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            auth = await _login(client, crew)
            caplog.clear()
            response = await client.get("/api/quota", headers=auth)
            assert response.status_code == 500
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["detail"] == "Something went wrong on board. Try again."
            assert "secret-internal-detail" not in response.text
            assert "RuntimeError" not in response.text
            tracebacks = [r for r in caplog.records if r.exc_info is not None]
            assert len(tracebacks) == 1
            assert "secret-internal-detail" in str(tracebacks[0].exc_info[1])  # type: ignore[index]

            intake.register.choose_pin(crew.member.crew, "24681357", None, 0.0)
            form = await client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf
            caplog.clear()
            home = await client.post(
                "/login",
                data={"crew": str(crew.member.crew), "pin": "24681357", "csrf": csrf.group(1)},
                follow_redirects=True,
            )
            assert home.status_code == 500
            assert home.text.strip() == "Something went wrong on board. Try again."
            assert len([r for r in caplog.records if r.exc_info is not None]) == 1
    finally:
        stopping.set()
        await task
