"""The crew web page in a real browser (Debian's Chromium, 360 px wide), served by the
agent's app under uvicorn on loopback, with the outbox in a temporary directory.

In Burmese and in English a crew member signs in, chooses a PIN, writes home, sends a
quick message, files a grievance report, presses SOS and reads a family reply that the
shore sent down. Every page is screenshotted (tests/web/artifacts/), its text is checked
against the glyphs of the fonts the page serves, and its weight is measured.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from common.codebooks import default_codebook
from protocol.codebook import Codebook
from protocol.envelopes import Reply
from protocol.languages import Language
from protocol.phrases import phrase
from protocol.text import normalise_text
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.web.fonts import (
    FAMILIES,
    NAMES_FAMILY,
    missing_glyphs,
    script_of,
    scripts_used,
    served_fonts,
)
from vessel_relay.demo.defaults import demo_ship_config
from vessel_relay.demo.keys import demo_union_private_key

from ..kit.agent_web import agent_web_server
from ..kit.lane import blocks_on_board, union_reads
from ..kit.model_shore import ModelShore
from ..shore.store_fixtures import SHORE_KEY, VESSEL_KEY

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_BUDGET_BYTES = 100_000
ZAWGYI = "ေနေကာင္းပါတယ္။ လစာ မရေသးပါဘူး။"  # typed on a Zawgyi keyboard


@dataclass
class Site:
    """The agent's app on loopback, its outbox, and what the pages weighed."""

    url: str
    intake: Intake
    outbox: Outbox
    codebook: Codebook
    crew: dict[str, tuple[int, str]]
    shore: ModelShore  # the relay's downlink, signed as the relay signs it
    weights: dict[str, int] = field(default_factory=dict)

    def inject_reply(self, crew: int, contact: int, body: str, lang: Language) -> None:
        """The shore sends a family reply down (a signed downlink batch, as the relay does)."""
        minutes = int(self.intake.clock() // 60)
        reply = Reply(
            reply_seq=1000 + self.shore.next_downlink,
            crew=crew,
            contact=contact,
            written_minutes=minutes,
            lang=lang,
            body=body,
        )
        self.outbox.apply_downlink(self.shore.downlink([reply], minutes), self.intake.clock())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("vessel")
    config = demo_ship_config(data_dir)
    codebook = default_codebook()
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    intake = Intake(config, outbox, codebook)
    crew: dict[str, tuple[int, str]] = {}
    for code, name, document in (
        ("mya", "Aung Min", "SB-1"),
        ("eng", "Juan Cruz", "SB-2"),
        ("tha", "Somchai", "SB-3"),
    ):
        member, pin = intake.register.add(
            name=name,
            document=document,
            nationality="MM",
            language=Language.from_code(code),
            now=intake.clock(),
        )
        intake.register.add_contact(
            member.crew,
            channel="sms",
            address="+959123456789" if code == "mya" else "+639171234567",
            name="Mother",
            language=Language.from_code(code),
            now=intake.clock(),
        )
        crew[code] = (member.crew, pin)
    try:
        shore = ModelShore.for_keys(codebook, VESSEL_KEY, SHORE_KEY, config.vessel.vessel_id)
        with agent_web_server(intake) as url:
            yield Site(url, intake, outbox, codebook, crew, shore)
    finally:
        outbox.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = _launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def check_page(page: Page, site: Site, name: str, lang: str) -> str:
    """Screenshot, glyph coverage by the served fonts, no-store, page weight."""
    page.wait_for_load_state("load")
    page.evaluate("document.fonts.ready.then(() => true)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{lang}-{name}.png"), full_page=True)
    text = page.inner_text("body")
    assert missing_glyphs(text) == {}, f"{name}: glyphs missing from the served fonts"
    main = page.inner_text("main")
    assert scripts_used([page.inner_text("nav.langs")]) == set(FAMILIES)
    # Fonts only for the page's language: the names font, the page subset of each script
    # the page's text uses, and a whole-block font only for a character the subset lacks.
    # (A font a previous page fetched may be attached again from memory at no cost: only
    # the fonts this page fetched, transferSize > 0, must be the page language's.)
    entries = page.evaluate(
        "() => performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/static/fonts/'))"
        ".map(e => [e.name.split('/').pop(), e.transferSize])"
    )
    loaded = {file for file, _ in entries}
    fetched = {file for file, size in entries if size > 0}
    fonts = served_fonts()
    chars = {ord(c) for c in main if script_of(c) is not None}
    subsets = {f.family: f.unicodes for f in fonts if "-page-" in f.file}
    allowed = {f.file for f in fonts if f.family == NAMES_FAMILY}
    allowed |= {f.file for f in fonts if "-page-" in f.file and chars & f.unicodes}
    allowed |= {  # a whole-block font: only for a character its page subset lacks
        f.file
        for f in fonts
        if f.family in subsets and "-page-" not in f.file and chars & f.unicodes - subsets[f.family]
    }
    assert fetched <= allowed, f"{name}: fonts beyond the page's language: {fetched - allowed}"
    # The page's own text in a served script is drawn by that script's page subset; the
    # language bar's names (every script) by the one small names font.
    needed = {f.file for f in fonts if "-page-" in f.file and chars & f.unicodes}
    needed |= {f.file for f in fonts if f.family == NAMES_FAMILY}
    assert needed <= loaded, f"{name}: fonts not loaded: {needed - loaded}"
    # The page's weight as a phone with an empty cache loads it: the document plus every
    # style sheet and image it names, fetched again here (fonts are counted apart).
    assets = page.evaluate(
        "() => [...new Set([...document.querySelectorAll('img[src],link[rel=stylesheet]')]"
        ".map(e => e.src || e.href))]"
    )
    weight = len(page.content().encode("utf-8"))
    for url in assets:
        assert "/static/fonts/" not in url
        fetched = page.request.get(url)
        assert fetched.ok, url
        weight += len(fetched.body())
    site.weights[f"{lang}-{name}"] = int(weight)
    assert 0 < weight < PAGE_BUDGET_BYTES, f"{name} weighs {weight} B"
    return text


def sign_in(page: Page, site: Site, lang: str, pin: str) -> None:
    crew, _ = site.crew[lang]
    page.goto(f"{site.url}/lang/{lang}?next=/login")
    page.fill("input[name=crew]", str(crew))
    page.fill("input[name=pin]", pin)
    page.click("form[action='/login'] button")


LANGS = ("mya", "eng")


@pytest.mark.parametrize("lang", LANGS)
def test_first_sign_in_write_home_quick_report_sos_and_reply(
    page: Page, site: Site, lang: str
) -> None:
    """A crew member signs in with the captain's PIN, chooses their own (and a duress PIN),
    writes to their mother, sends 'wages received' as a quick message, reports withheld
    wages, presses SOS and reads their mother's reply — all in their own language."""
    crew, captain_pin = site.crew[lang]
    headers: list[tuple[str, str]] = []
    page.on(
        "response",
        lambda r: headers.append((r.url, r.headers.get("cache-control", ""))),
    )

    page.goto(f"{site.url}/lang/{lang}?next=/login")
    check_page(page, site, "login", lang)
    sign_in(page, site, lang, captain_pin)
    page.wait_for_url("**/pin")
    check_page(page, site, "pin", lang)
    page.fill("input[name=pin]", "24681357")
    page.fill("input[name=pin2]", "24681357")
    page.fill("input[name=duress]", "11223344")
    page.click("form[action='/pin'] button")
    page.wait_for_url("**/home")
    home = check_page(page, site, "home", lang)
    assert ("အိမ်ကို စာရေးရန်" if lang == "mya" else "Write home") in home

    # write home (in Burmese, typed on a Zawgyi keyboard)
    text = ZAWGYI if lang == "mya" else "All is well, wages next week."
    page.click("a[href='/write']")
    check_page(page, site, "write", lang)
    page.fill("textarea[name=text]", text)
    page.click("form[action='/write'] button")
    page.wait_for_url(re.compile(r".*/messages/\d+$"))
    stages = check_page(page, site, "message", lang)
    assert ("သင်္ဘောပေါ်တွင် စောင့်ဆိုင်း" if lang == "mya" else "Queued on board") in stages
    seq = int(page.url.rsplit("/", 1)[1])
    with site.outbox.reading() as db:
        body, state = db.execute(
            "SELECT body, state FROM messages WHERE message_seq = ?", (seq,)
        ).fetchone()
    assert state == "accepted"
    assert body == normalise_text(text).text
    if lang == "mya":
        assert body != ZAWGYI
        assert body.startswith("နေကောင်း")

    # a quick message
    page.goto(f"{site.url}/quick")
    quick_text = check_page(page, site, "quick", lang)
    wages = phrase(3, Language.from_code(lang))
    assert wages is not None
    assert wages in quick_text
    page.click("button[name=code][value='3']")
    check_page(page, site, "quick-confirm", lang)  # asked first: nothing queued yet
    page.click("#confirm-send")
    page.wait_for_url(re.compile(r".*/messages/\d+$"))
    quick_seq = int(page.url.rsplit("/", 1)[1])
    with site.outbox.reading() as db:
        row = db.execute(
            "SELECT quick, body FROM messages WHERE message_seq = ?", (quick_seq,)
        ).fetchone()
    assert tuple(row) == (3, None)

    # report a problem: wages withheld, anonymous
    page.goto(f"{site.url}/report")
    report = check_page(page, site, "report", lang)
    assert ("ကပ္ပတိန်" if lang == "mya" else "captain") not in report  # one tap away
    page.click("#who-reads summary")
    report = page.inner_text("main")
    assert ("ကပ္ပတိန်" if lang == "mya" else "captain") in report  # who can read it
    page.check("input[name=category][value='8']")
    page.fill("textarea[name=text]", "No pay for three months.")
    page.check("input[name=anonymous]")
    page.click("form[action='/report'] button")
    case_number = page.inner_text("#case")
    assert re.fullmatch(r"\d+-\d+", case_number)
    check_page(page, site, "report-done", lang)
    with site.outbox.reading() as db:  # no message row for it: it is in the lane, sealed
        assert not db.execute(
            "SELECT 1 FROM messages WHERE message_seq = ? OR body LIKE '%three months%'",
            (int(case_number.split("-")[1]),),
        ).fetchall()
    opened = union_reads(blocks_on_board(site.outbox), demo_union_private_key(), site.codebook)
    assert [(r.case_number, r.text) for r in opened if r.case_number == case_number] == [
        (case_number, "No pay for three months.")
    ]

    # SOS: the button, then one confirmation
    page.goto(f"{site.url}/home")
    page.click("a.sos")
    check_page(page, site, "sos", lang)
    page.click("button.sos")
    check_page(page, site, "sos-done", lang)
    with site.outbox.reading() as db:
        (sos_count,) = db.execute(
            "SELECT count(*) FROM messages WHERE kind = 'sos' AND crew = ?", (crew,)
        ).fetchone()
    assert sos_count == 1

    # the family replies; the inbox shows it and the case
    reply_text = "ကျန်းမာပါစေ။ ပြန်လာရင် ဖုန်းဆက်ပါ။" if lang == "mya" else "Take care, call us."
    contact = site.intake.register.contacts(crew)[0].contact
    site.inject_reply(crew, contact, reply_text, Language.from_code(lang))
    page.goto(f"{site.url}/inbox")
    inbox = check_page(page, site, "inbox", lang)
    assert reply_text in inbox
    assert case_number in inbox

    pages = [(url, cache) for url, cache in headers if "/static/" not in url]
    assert pages
    assert all(cache == "no-store" for _, cache in pages)
    fonts = [cache for url, cache in headers if "/static/fonts/" in url]
    if lang == "mya":
        assert fonts
        assert all("max-age=31536000" in cache for cache in fonts)

    # the duress PIN opens an empty inbox and shows no messages
    page.click("footer button")
    sign_in(page, site, lang, "11223344")
    page.wait_for_url("**/home")
    page.goto(f"{site.url}/inbox")
    duress_inbox = page.inner_text("main")
    assert reply_text not in duress_inbox
    assert case_number not in duress_inbox
    page.goto(f"{site.url}/write")
    assert "/messages/" not in page.content()


def test_forms_need_the_csrf_token_and_pages_need_a_session(page: Page, site: Site) -> None:
    """A form posted from elsewhere (no CSRF token) is refused; without a session every
    page sends the phone to sign in."""
    page.goto(f"{site.url}/write")
    assert page.url.endswith("/login")
    forged = page.request.post(
        f"{site.url}/login",
        form={"crew": str(site.crew["eng"][0]), "pin": "24681357"},
        max_redirects=0,
    )
    assert forged.status == 400
    assert forged.headers["cache-control"] == "no-store"
    # (/sos is the one page that works without a session: test_sos_from_the_sign_in_page)
    wrong = page.request.post(
        f"{site.url}/write", form={"csrf": "x", "text": "hi"}, max_redirects=0
    )
    assert wrong.status == 303
    assert wrong.headers["location"] == "/login"


@pytest.mark.parametrize("lang", LANGS)
def test_sos_from_the_sign_in_page_without_a_pin(page: Page, site: Site, lang: str) -> None:
    """On the sign-in page, in Burmese and in English, a crew member who cannot sign in
    presses SOS, confirms once with their crew number and a note, and the SOS is saved
    on board, attributed only to the number typed (flagged: sent without a PIN)."""
    crew, _ = site.crew[lang]
    page.goto(f"{site.url}/lang/{lang}?next=/login")
    page.click("a.sos")
    page.wait_for_url("**/sos")
    form = check_page(page, site, "sos-no-pin", lang)
    assert "PIN" in form  # "sent without a PIN", in the page language
    assert page.is_visible("input[name=crew]")
    page.fill("input[name=crew]", str(crew))
    note = "စက်ခန်း မီးလောင်နေတယ်" if lang == "mya" else "fire in the engine room"
    page.fill("textarea[name=note]", note)
    page.click("button.sos")
    check_page(page, site, "sos-no-pin-done", lang)
    with site.outbox.reading() as db:
        rows = db.execute(
            "SELECT crew, body FROM messages WHERE kind = 'sos' AND typed_crew = ?", (crew,)
        ).fetchall()
    assert [tuple(row) for row in rows] == [(None, note)]


def test_page_weights_are_reported(site: Site) -> None:
    """Every page measured above is under 100 KB without fonts (printed for the README)."""
    if not site.weights:
        pytest.skip("no page was measured (run the whole module)")
    for name, weight in sorted(site.weights.items()):
        print(f"{name:22} {weight:7,} B")
    assert max(site.weights.values()) < PAGE_BUDGET_BYTES


HTML_LANG = {"khm": "km", "lao": "lo", "tha": "th", "ind": "id", "tgl": "fil", "vie": "vi"}


@pytest.mark.parametrize("lang", sorted(HTML_LANG))
def test_other_languages_render_with_the_served_fonts(page: Page, site: Site, lang: str) -> None:
    """Home, quick messages and the report page in each other page language: every
    character is covered by a served font (or the phone's Latin font), and the
    screenshots are kept for review."""
    crew, pin = site.crew["tha"]
    if not site.intake.register.pin_chosen(crew):
        sign_in(page, site, "tha", pin)
        page.wait_for_url("**/pin")
        page.fill("input[name=pin]", "97531246")
        page.fill("input[name=pin2]", "97531246")
        page.click("form[action='/pin'] button")
        page.wait_for_url("**/home")
        site.crew["tha"] = (crew, "97531246")
    else:
        sign_in(page, site, "tha", pin)
        page.wait_for_url("**/home")
    for name in ("home", "quick", "report"):
        page.goto(f"{site.url}/lang/{lang}?next=/{name}")
        text = check_page(page, site, name, lang)
        assert page.evaluate("document.documentElement.lang") == HTML_LANG[lang]
        sentence = phrase(1, Language.from_code(lang))
        if name == "quick":
            assert sentence is not None
            assert sentence in text
