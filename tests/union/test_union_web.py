"""The union's web app in a real Chromium, over the relay's real union API (uvicorn, SQLite).

A crew member files a grievance on board; the relay stores the batch. A caseworker logs in,
presses "Fetch now", filters the list, opens the case (the reporter's Burmese words as
written), moves it on and replies (both reach the relay and the vessel), reads the silence
alerts and downloads the export, which verifies offline like ``union verify``.

Screenshots are taken every run; with ``VESSEL_RELAY_SCREENSHOTS=1`` they are written to
docs/screenshots/union-*.png (the README's), else to the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pyotp
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from typer.testing import CliRunner

from common.codebooks import default_codebook
from protocol.cases import open_case_note, reporter_reply_keys
from protocol.envelopes import CaseStatus
from protocol.evidence import fingerprint
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from shipboard.config import UnionConfig
from shipboard.crew import CrewRegister
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shore.store import SqliteStore, VesselInfo
from shore.union.client import RelayClient
from shore.union.inbox import UnionInbox, verify_export
from shore.union.keys import init_union, load_union
from shore.union.totp import SecondFactorBook
from shore.union.web import UnionWebSettings, create_app, read_caseworkers
from shore.union_api import UnionAccount, make_union_api, silence_alert_source
from tests.kit.ports import free_port
from tests.kit.wait import until_started
from tests.union.test_union_inbox import NOW, REPORT, VESSEL_KEY, World, _downlink, _uplink
from vessel_relay.cli import app as cli_app
from vessel_relay.demo.defaults import demo_ship_config

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "tide table 1983"
REPLY = "ကျွန်ုပ်တို့ အေဂျင်စီကို ဖုန်းဆက်ပါမည်။"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclasses.dataclass
class UnionSite:
    world: World
    url: str
    inbox: UnionInbox
    #: thida's TOTP, as her authenticator app holds it (from the otpauth URI shown once)
    totp: pyotp.TOTP


async def _serve(app: object, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    await until_started(server, task)
    return server, task


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[UnionSite]:
    relay_port, web_port = free_port(), free_port()
    union = init_union(tmp_path / "union", 7, "Fishers' Union", f"http://127.0.0.1:{relay_port}")
    added = CliRunner().invoke(
        cli_app,
        ["union", "user", "add", "thida", "--dir", str(union.directory)],
        input=PASSWORD + "\n",
    )
    assert added.exit_code == 0, added.output
    assert "caseworker thida saved" in added.output
    uri = re.search(r"otpauth://totp/\S+", added.output)
    assert uri is not None, added.output
    totp = pyotp.parse_uri(uri[0])
    assert isinstance(totp, pyotp.TOTP)
    store = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star", "TH", "TH-0042", "Owner Co", unions=(7,))
    vessel_id = await store.add_vessel(info, VESSEL_KEY.verify_key.key, NOW)
    quiet = VesselInfo("Quiet Wave", "TH", "TH-0043", "Owner Co", unions=(7,))
    await store.add_vessel(quiet, bytes(32), NOW)  # registered, never synced
    config = demo_ship_config(tmp_path / "ship")
    config = dataclasses.replace(
        config,
        unions=(UnionConfig(7, "Fishers' Union", union.box_public, (Language.MYA,)),),
        quota=dataclasses.replace(config.quota, daily_slots=False),
    )
    outbox = Outbox.open(tmp_path / "outbox.sqlite3", vessel_id)
    intake = Intake(config, outbox, default_codebook(), clock=lambda: NOW)
    api = make_union_api(
        store,
        [UnionAccount(7, union.signing_key.verify_key)],
        alerts=silence_alert_source(store, vessel_silent_after_s=3600),
    )
    relay, relay_task = await _serve(api, relay_port)
    inbox = UnionInbox(load_union(union.directory), default_codebook(), client=RelayClient(union))
    settings = UnionWebSettings(
        read_caseworkers(union.directory),
        second_factor=SecondFactorBook.load(union.directory),
    )
    web, web_task = await _serve(create_app(inbox, settings), web_port)
    world = World(store, vessel_id, outbox, intake, union.directory, tmp_path, relay_port)
    try:
        yield UnionSite(world, f"http://127.0.0.1:{web_port}", inbox, totp)
    finally:
        web.should_exit = relay.should_exit = True
        await web_task
        await relay_task
        assert inbox.client is not None
        inbox.client.close()
        inbox.close()
        outbox.close()
        await store.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def shot(page: Page, name: str, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("VESSEL_RELAY_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"union-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


async def test_caseworker_fetches_filters_answers_and_exports_a_case(
    site: UnionSite, browser: Browser, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A caseworker logs in, fetches two reports, filters by category, vessel and stage,
    opens the Burmese wage case (text as written, mode B), is refused closing without a
    reason, acknowledges it and replies (both reach the reporter on board), sees the
    "vessel silent" alerts and downloads an export that verifies offline. No report or
    reply text appears in any log line."""
    caplog.set_level(logging.DEBUG)
    world = site.world
    register = CrewRegister(world.outbox)
    member, pin = register.add(
        name="Aung Min", document="SB-0012345", nationality="MM", language=Language.MYA, now=NOW
    )
    signed_in = register.sign_in(member.crew, pin)
    wages = world.intake.file_grievance(
        signed_in,
        union_id=7,
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text=REPORT,
        lang=Language.MYA,
        anonymous=False,
    )
    world.intake.file_grievance(
        signed_in,
        union_id=7,
        category=GrievanceCategory.RETENTION_OF_DOCUMENTS,
        text="The captain keeps our passports.",
        lang=Language.ENG,
        anonymous=True,
    )
    await _uplink(world)

    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(site.url + "/")
    assert page.url.endswith("/login")
    await page.fill("input[name=caseworker]", "thida")
    await page.fill("input[name=password]", "not the password")
    await page.fill("input[name=code]", site.totp.now())
    await page.click("button[type=submit]")
    alert = await page.get_by_role("alert").inner_text()
    assert alert.startswith("Wrong caseworker, password or code.")
    await page.fill("input[name=caseworker]", "thida")
    await page.fill("input[name=password]", PASSWORD)
    await page.fill("input[name=code]", site.totp.now())
    await page.click("button[type=submit]")
    assert await page.locator("#cases tbody").inner_text() == "No cases."

    await page.get_by_role("button", name="Fetch now").click()
    assert "2 new cases" in await page.get_by_role("status").inner_text()
    assert await page.locator("#cases tbody tr[data-case]").count() == 2
    await shot(page, "cases", tmp_path)

    await page.select_option("select[name=category]", "withholding_of_wages")
    await page.click("#filters button[type=submit]")
    rows = page.locator("#cases tbody tr[data-case]")
    assert await rows.count() == 1
    assert await rows.get_attribute("data-case") == wages.case_number
    assert "Burmese" in await rows.inner_text()
    await page.goto(site.url + "/?vessel=999")
    assert "No cases match" in await page.locator("#cases tbody").inner_text()
    await page.goto(site.url + "/?stage=acknowledged")
    assert await page.locator("#cases tbody tr[data-case]").count() == 0
    await page.goto(f"{site.url}/?stage=received&vessel={world.vessel_id}&newer_than=1")
    assert await page.locator("#cases tbody tr[data-case]").count() == 2

    await page.click(f"a[href='/cases/{wages.case_number}']")
    report = page.locator("blockquote.report")
    assert await report.inner_text() == REPORT  # the reporter's words, as written
    assert await report.get_attribute("lang") == "my"
    assert "mode B" in await page.locator("#signer").inner_text()
    assert "Aung Min" in await page.locator("main").inner_text()

    await page.select_option("#status select[name=stage]", "closed")
    await page.locator("#status button").click()
    assert "needs a reason" in await page.get_by_role("alert").inner_text()
    await page.select_option("#status select[name=stage]", "acknowledged")
    await page.locator("#status button").click()
    assert "Case is now acknowledged" in await page.get_by_role("status").inner_text()
    assert "sent to the relay" in await page.get_by_role("status").inner_text()
    assert await page.locator("#stage").inner_text() == "acknowledged"

    await page.fill("#reply textarea[name=text]", REPLY)
    await page.locator("#reply button").click()
    assert "Reply recorded" in await page.get_by_role("status").inner_text()
    kinds = await page.locator("#timeline tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)"
    )
    assert kinds == ["report", "status", "reply"]
    assert REPLY in await page.locator("#timeline").inner_text()
    assert "3 entries" in await page.locator("#evidence").inner_text()
    await shot(page, "case", tmp_path)

    # the stage change and the reply went to the relay, down to the vessel, to the reporter
    await _downlink(world)
    with world.outbox.reading() as db:
        notes = db.execute(
            "SELECT sealed_note FROM inbox WHERE kind = 'case' ORDER BY entry"
        ).fetchall()
    keys = reporter_reply_keys(signed_in.case_key)
    opened = [open_case_note(bytes(row[0]), keys.private_key) for row in notes]
    assert [note.status for note in opened] == [CaseStatus.ACKNOWLEDGED] * 2
    assert opened[1].text == REPLY

    async with page.expect_download() as download_info:
        await page.click("#export")
    download = await download_info.value
    assert download.suggested_filename == f"case-{wages.case_number}.json"
    saved = tmp_path / "downloaded.json"
    await download.save_as(saved)
    union_key = load_union(world.union_dir).signing_key.verify_key.key
    verified = verify_export(saved, fingerprint(union_key))
    assert verified.case_number == wages.case_number
    assert len(verified.entries) == 3
    same = tmp_path / "cli.json"
    site.inbox.export(wages.case_number, same)
    assert saved.read_bytes() == same.read_bytes()  # the same file as `union export`

    await page.click("a[href='/alerts']")
    alerts = page.locator("#alerts tbody tr[data-vessel]")
    assert await alerts.count() == 2
    assert "vessel silent" in await alerts.first.inner_text()
    assert "never" in await page.locator("#alerts").inner_text()

    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (REPORT, REPLY, "Aung Min", "passports", PASSWORD):
        assert secret not in logged


async def test_pages_need_a_login_forms_a_token_and_nothing_is_cached(site: UnionSite) -> None:
    """Without a session every page (and the export) sends the browser to the login page;
    a forged POST from another site (no form token) changes nothing; no page may be
    cached; the caseworkers file is readable by the union's account only."""
    path = site.world.union_dir / "caseworkers.txt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with httpx.AsyncClient(base_url=site.url) as http:
        for page in ("/", "/alerts", "/cases/1-1", "/cases/1-1/export"):
            response = await http.get(page)
            assert response.status_code == 303
            assert response.headers["location"] == "/login"
        login_page = await http.get("/login")
        assert login_page.headers["cache-control"] == "no-store"
        token = re.search(r'name="csrf" value="([^"]+)"', login_page.text)
        assert token is not None
        await http.post(
            "/login",
            data={
                "caseworker": "thida",
                "password": PASSWORD,
                "code": site.totp.now(),
                "csrf": token[1],
            },
        )
        listed = await http.get("/")
        assert listed.status_code == 200
        assert listed.headers["cache-control"] == "no-store"
        for action in ("/fetch", "/cases/1-1/status", "/cases/1-1/reply"):
            forged = await http.post(action, data={"stage": "closed", "text": "x"})
            assert forged.status_code == 403
        missing = await http.get("/cases/1-1")
        assert missing.status_code == 404
    assert site.inbox.cases() == []
    assert site.inbox.pending_notes() == 0


def test_union_web_needs_a_caseworker_and_a_long_password(tmp_path: Path) -> None:
    """`union web` refuses to start before any caseworker exists and says how to add one;
    `union user add` refuses a short password and leaves no file behind."""
    union = init_union(tmp_path / "union", 7, "Fishers' Union", "http://127.0.0.1:9")
    runner = CliRunner()
    started = runner.invoke(cli_app, ["union", "web", "--dir", str(union.directory)])
    assert started.exit_code == 1
    assert "vessel-relay union user add NAME" in started.output
    short = runner.invoke(
        cli_app, ["union", "user", "add", "thida", "--dir", str(union.directory)], input="short\n"
    )
    assert short.exit_code == 1
    assert "at least 10 characters" in short.output
    assert not (union.directory / "caseworkers.txt").exists()
