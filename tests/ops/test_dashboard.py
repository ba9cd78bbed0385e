"""The operator dashboard in a real Chromium: login, fleet, vessel, failures, silence.

Screenshots of each page are taken every run; with ``VESSEL_RELAY_SCREENSHOTS=1`` they are
written to docs/screenshots/dashboard-*.png (the README's), else to the test's temporary
directory, so an ordinary run leaves the working tree clean.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright

from shore.dashboard import DashboardSettings, create_app
from shore.dashboard.auth import hash_password
from shore.store import SqliteStore
from tests.kit.ports import free_port
from tests.kit.wait import until_started
from tests.ops.fleet_data import ADDRESS, TEXT, Fleet, populate

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "correct horse battery"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Dashboard:
    url: str
    store: SqliteStore
    fleet: Fleet


@pytest.fixture
async def dashboard(tmp_path: Path) -> AsyncIterator[Dashboard]:
    store = await SqliteStore.open(tmp_path / "relay.db")
    fleet = await populate(store, time.time())
    settings = DashboardSettings(operators={"amara": hash_password(PASSWORD)})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, settings),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        await until_started(server, task)
        yield Dashboard(f"http://127.0.0.1:{port}", store, fleet)
    finally:
        server.should_exit = True
        await task
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


async def log_in(page: Page, url: str, password: str = PASSWORD) -> None:
    await page.goto(url + "/")
    assert page.url.endswith("/login")
    await page.fill("input[name=operator]", "amara")
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


async def shot(page: Page, name: str, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("VESSEL_RELAY_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dashboard-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


async def test_operator_logs_in_and_sees_fleet_vessel_and_silent_list(
    dashboard: Dashboard, browser: Browser, tmp_path: Path
) -> None:
    """A wrong password is refused; after logging in the operator sees the three vessels
    with the two silent ones marked, the busy vessel's chart, outcomes and quarantined
    batch with its reason, and the silent list; no message text or address anywhere."""
    page = await browser.new_page(viewport={"width": 1200, "height": 800})
    await log_in(page, dashboard.url, "wrong password")
    assert await page.get_by_role("alert").inner_text() == "Wrong operator or password."
    await log_in(page, dashboard.url)
    assert page.url == dashboard.url + "/"
    rows = page.locator("#fleet tbody tr")
    assert await rows.count() == 3
    assert await page.locator("#fleet tr.silent").count() == 2
    busy = page.locator(f"#fleet tr[data-vessel='{dashboard.fleet.busy}'] td")
    cells = await busy.all_inner_texts()
    assert cells[1].startswith("Sea Star 7")
    assert cells[4:7] == ["2", "1", "1"]  # queue, failures, quarantined
    assert "never" in await page.locator("#fleet tr[data-vessel='9']").inner_text()
    await shot(page, "fleet", tmp_path)

    await page.click(f"#fleet a[href='/vessels/{dashboard.fleet.busy}']")
    assert await page.locator("#sessions-chart svg rect.bar").count() == 30
    outcomes = await page.locator("#outcomes tbody").inner_text()
    assert "delivered\t3" in outcomes
    assert "failed: ADDRESS_INVALID\t1" in outcomes
    quarantine = await page.locator("#quarantine tbody").inner_text()
    assert "SIGNATURE_INVALID" in quarantine
    assert "99" in quarantine
    await shot(page, "vessel", tmp_path)

    await page.click("a[href='/silent']")
    silent = await page.locator("#silent tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.vessel)"
    )
    assert silent == ["9", "8"]
    await shot(page, "silent", tmp_path)
    for path in ("/", f"/vessels/{dashboard.fleet.busy}", "/deliveries", "/silent"):
        await page.goto(dashboard.url + path)
        html = await page.content()
        assert TEXT not in html
        assert ADDRESS not in html


async def test_operator_gives_up_one_delivery_and_retries_another(
    dashboard: Dashboard, browser: Browser, tmp_path: Path
) -> None:
    """On the failures page the operator gives up the delivery that keeps getting 451 (the
    vessel will be told) and retries the one that failed for good (due again at once)."""
    fleet = dashboard.fleet
    page = await browser.new_page(viewport={"width": 1200, "height": 800})
    await log_in(page, dashboard.url)
    await page.goto(dashboard.url + "/deliveries")
    retrying = page.locator(f"tr[data-delivery='{fleet.busy}.{fleet.retrying_seq}']")
    failed = page.locator(f"tr[data-delivery='{fleet.busy}.{fleet.failed_seq}']")
    assert "retrying" in await retrying.inner_text()
    assert "451 4.3.0" in await retrying.inner_text()
    assert await failed.get_by_role("button", name="Give up").count() == 0
    await shot(page, "deliveries", tmp_path)

    await retrying.get_by_role("button", name="Give up").click()
    assert "was given up" in await page.get_by_role("status").inner_text()
    await failed.get_by_role("button", name="Retry now").click()
    assert "will be tried again now" in await page.get_by_role("status").inner_text()

    records = {r.key.message_seq: r for r in await dashboard.store.deliveries(fleet.busy)}
    assert records[fleet.retrying_seq].outcome == "failed"
    assert records[fleet.failed_seq].outcome is None
    assert records[fleet.failed_seq].due_at <= time.time()
    assert await page.locator(f"tr[data-delivery='{fleet.busy}.{fleet.failed_seq}']").count() == 0


async def test_pages_need_a_login_and_actions_a_form_token(dashboard: Dashboard) -> None:
    """Without a session every page sends the browser to the login page; a forged POST
    from another site (no CSRF token) changes nothing."""
    async with httpx.AsyncClient(base_url=dashboard.url) as client:
        for path in ("/", "/vessels/7", "/deliveries", "/silent"):
            response = await client.get(path)
            assert response.status_code == 303
            assert response.headers["location"] == "/login"
        token = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/login")).text)
        assert token is not None
        signed_in = await client.post(
            "/login", data={"operator": "amara", "password": PASSWORD, "csrf": token[1]}
        )
        assert signed_in.headers["location"] == "/"
        forged = await client.post(f"/deliveries/{dashboard.fleet.busy}/5/give-up", data={})
        assert forged.status_code == 403
    records = {r.key.message_seq: r for r in await dashboard.store.deliveries(7)}
    assert records[dashboard.fleet.retrying_seq].outcome is None


async def test_a_large_fleet_is_shown_a_page_at_a_time(tmp_path: Path) -> None:
    """With pages of two vessels, the operator sees vessels 7 and 8 and a link to the next
    page; it shows vessel 9 with a link back to the first and none further; a page address
    that is not a vessel id is refused with a sentence."""
    store = await SqliteStore.open(tmp_path / "relay.db")
    try:
        await populate(store, time.time())
        settings = DashboardSettings(
            operators={"amara": hash_password(PASSWORD)}, fleet_page_size=2
        )
        transport = httpx.ASGITransport(app=create_app(store, settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            token = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/login")).text)
            assert token is not None
            await client.post(
                "/login", data={"operator": "amara", "password": PASSWORD, "csrf": token[1]}
            )
            first = (await client.get("/")).text
            second = (await client.get("/?after=8")).text
            refused = await client.get("/?after=seven")
    finally:
        await store.close()
    assert re.findall(r'data-vessel="(\d+)"', first) == ["7", "8"]
    assert "3 vessels" in first
    assert 'href="/?after=8" rel="next"' in first
    assert 'rel="first"' not in first
    assert re.findall(r'data-vessel="(\d+)"', second) == ["9"]
    assert 'href="/" rel="first"' in second
    assert 'rel="next"' not in second
    assert refused.status_code == 400
    assert "after must be a number" in refused.text
