"""axe-core on every crew page in every page language: no serious and no critical fault.

The agent's app runs under uvicorn on loopback (an outbox in a temporary directory) with
one crew member per page language, each with a contact, a message home and a family's
reply in their inbox. Debian's Chromium (Playwright, 360x740) opens each page as that
crew member would (the sign-in page and an SOS without a PIN signed out; the PIN page on
the first sign-in; then home, write, quick messages, a message's stages, add a contact,
report a problem, its receipt, the phone-sealed report page, SOS and its receipt, inbox
and the error page), injects axe-core (``scripts/install-node-tools`` puts the pinned
``axe.min.js`` in ``.node/``; the context bypasses the pages' CSP only to inject it) and
runs its default rules. Moderate and minor findings are printed, not failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from common.codebooks import default_codebook
from protocol.envelopes import Reply
from protocol.languages import Language
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.web.i18n import PAGE_LANGUAGES
from vessel_relay.demo.defaults import demo_ship_config

from ..kit.agent_web import agent_web_server
from ..kit.model_shore import ModelShore
from ..shore.store_fixtures import SHORE_KEY, VESSEL_KEY

ROOT = Path(__file__).resolve().parents[2]
AXE_VERSION = "4.14.1"  # scripts/install-node-tools pins it (version and integrity)
AXE = ROOT / ".node" / f"axe-core-{AXE_VERSION}" / "axe.min.js"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PIN = "24681357"
FAILING_IMPACTS = ("serious", "critical")
#: A family's reply in each language (the inbox shows it with its own ``lang``).
REPLIES = {
    Language.MYA: "ကျန်းမာပါစေ။",
    Language.KHM: "សូមថែរក្សាសុខភាព។",
    Language.LAO: "ຮັກສາສຸຂະພາບເດີ້.",
    Language.THA: "ดูแลตัวเองด้วยนะ",
    Language.IND: "Jaga kesehatan.",
    Language.TGL: "Ingat ka palagi.",
    Language.VIE: "Giữ gìn sức khỏe nhé.",
    Language.ENG: "Take care.",
}


@dataclass
class Site:
    """The agent's app on loopback and each page language's crew member."""

    url: str
    crew: dict[Language, tuple[int, str]]
    messages: dict[Language, int]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    config = demo_ship_config(tmp_path_factory.mktemp("vessel"))
    codebook = default_codebook()
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    intake = Intake(config, outbox, codebook)
    shore = ModelShore.for_keys(codebook, VESSEL_KEY, SHORE_KEY, config.vessel.vessel_id)
    crew: dict[Language, tuple[int, str]] = {}
    messages: dict[Language, int] = {}
    for number, lang in enumerate(PAGE_LANGUAGES, start=1):
        member, first_pin = intake.register.add(
            name=f"Crew {number}",
            document=f"SB-{number}",
            nationality="MM",
            language=lang,
            now=intake.clock(),
        )
        contact = intake.register.add_contact(
            member.crew,
            channel="sms",
            address="+959123456789",
            name="Mother",
            language=lang,
            now=intake.clock(),
        )
        sent = intake.send_message(member.crew, contact.contact, "All is well.", lang, None)
        minutes = int(intake.clock() // 60)
        reply = Reply(
            reply_seq=100 + number,
            crew=member.crew,
            contact=contact.contact,
            written_minutes=minutes,
            lang=lang,
            body=REPLIES[lang],
        )
        outbox.apply_downlink(shore.downlink([reply], minutes), intake.clock())
        crew[lang] = (member.crew, first_pin)
        messages[lang] = sent.message_seq
    try:
        with agent_web_server(intake) as url:
            yield Site(url, crew, messages)
    finally:
        outbox.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert AXE.exists(), f"axe-core is missing: run scripts/install-node-tools ({AXE})"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def axe_faults(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (default rules)."""
    page.wait_for_load_state("load")
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate("() => axe.run(document)")
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def summary(faults: list[dict[str, Any]]) -> str:
    return json.dumps(
        [
            {
                "rule": f["id"],
                "impact": f["impact"],
                "nodes": [n["target"] for n in f["nodes"]][:5],
            }
            for f in faults
        ],
        ensure_ascii=False,
    )


@pytest.mark.parametrize("lang", PAGE_LANGUAGES, ids=lambda lang: lang.code)
def test_every_crew_page_has_no_serious_accessibility_fault(
    browser: Browser, site: Site, lang: Language
) -> None:
    """A crew member goes through every page of the crew page in their own language
    (signed out, first sign-in, every signed-in page, a report and an SOS sent): axe-core
    finds no serious and no critical fault on any of them."""
    context = browser.new_context(viewport={"width": 360, "height": 740}, bypass_csp=True)
    page = context.new_page()
    found: dict[str, list[dict[str, Any]]] = {}

    def audit(name: str) -> None:
        found[name] = axe_faults(page)

    crew, first_pin = site.crew[lang]
    try:
        page.goto(f"{site.url}/lang/{lang.code}?next=/login")
        audit("login")
        page.goto(f"{site.url}/sos")
        audit("sos-no-pin")
        page.goto(f"{site.url}/login")
        page.fill("input[name=crew]", str(crew))
        page.fill("input[name=pin]", first_pin)
        page.click("form[action='/login'] button")
        page.wait_for_url("**/pin")
        audit("pin")
        page.fill("input[name=pin]", PIN)
        page.fill("input[name=pin2]", PIN)
        page.click("form[action='/pin'] button")
        page.wait_for_url("**/home")
        audit("home")
        for name, path in (
            ("write", "/write"),
            ("quick", "/quick"),
            ("message", f"/messages/{site.messages[lang]}"),
            ("contact", "/contacts/new"),
            ("inbox", "/inbox"),
            ("report-phone", "/report/phone"),
            ("error", "/messages/999999"),
            ("report", "/report"),
        ):
            page.goto(site.url + path)
            audit(name)
        page.check("input[name=category][value='8']")
        page.fill("textarea[name=text]", "No pay for three months.")
        page.click("form[action='/report'] button")
        page.wait_for_selector("#case")
        audit("report-done")
        page.goto(f"{site.url}/sos")
        audit("sos")
        page.click("button.sos")
        page.wait_for_load_state("load")
        audit("sos-done")
    finally:
        context.close()
    for name, faults in found.items():
        if faults:
            print(f"{lang.code} {name}: {summary(faults)}")
    failing = {
        name: [f for f in faults if f["impact"] in FAILING_IMPACTS]
        for name, faults in found.items()
    }
    failing = {name: faults for name, faults in failing.items() if faults}
    assert not failing, "; ".join(f"{name}: {summary(f)}" for name, f in failing.items())
    assert len(found) == 15
    assert re.fullmatch(r"\d+\.\d+\.\d+", AXE_VERSION)
