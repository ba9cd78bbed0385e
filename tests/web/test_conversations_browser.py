"""The inbox as conversations, the message limit and the quick message's confirmation in a
real browser (Debian's Chromium, 360 px wide), served by the agent's app on loopback: in
Burmese and in English, and the main pages in the other six page languages.

Screenshots go to tests/web/artifacts/ (``LANG-inbox-thread.png`` ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from protocol.envelopes import DeliveryReceipt, ReceiptStage
from protocol.languages import Language
from protocol.phrases import phrase
from shipboard.message_limit import MAX_MESSAGE_BYTES
from shipboard.web.fonts import missing_glyphs
from shipboard.web.local import number

from ..shore.store_fixtures import VESSEL_KEY
from .test_crew_page import ARTIFACTS, Site, _launch, check_page, sign_in
from .test_crew_page import site as site  # the module's own agent (fixture)

OWN_PIN = "24681357"
DURESS_PIN = "11223344"
HTML_LANG = {"khm": "km", "lao": "lo", "tha": "th", "ind": "id", "tgl": "fil", "vie": "vi"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = _launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def signed_in(tab: Page, site: Site, lang: str) -> int:
    """Sign the crew member of ``lang`` in (choosing their own and a duress PIN the first
    time); their crew number."""
    crew, pin = site.crew[lang]
    sign_in(tab, site, lang, pin)
    if pin != OWN_PIN:
        tab.wait_for_url("**/pin")
        tab.fill("input[name=pin]", OWN_PIN)
        tab.fill("input[name=pin2]", OWN_PIN)
        tab.fill("input[name=duress]", DURESS_PIN)
        tab.click("form[action='/pin'] button")
        site.crew[lang] = (crew, OWN_PIN)
    tab.wait_for_url("**/home")
    return crew


def deliver(site: Site, seq: int) -> None:
    """The message goes out in a batch; the shore accepts it and the family's phone has it."""
    now = site.intake.clock()
    batch, _ = site.outbox.make_batch([seq], site.codebook, VESSEL_KEY, now)
    site.outbox.mark_sent(batch, now)
    minutes = int(now // 60)
    receipts = [
        DeliveryReceipt(
            message_seq=seq, stage=ReceiptStage.ACCEPTED_ASHORE, written_minutes=minutes
        ),
        DeliveryReceipt(message_seq=seq, stage=ReceiptStage.DELIVERED, written_minutes=minutes),
    ]
    site.outbox.apply_downlink(site.shore.downlink(receipts, minutes), now)


def number_in(n: int, text: str) -> bool:
    """Whether ``n`` is in ``text``, in Western digits or as the Burmese page writes it."""
    return str(n) in text or number(n, Language.MYA) in text


@pytest.mark.parametrize("lang", ["mya", "eng"])
def test_the_conversation_shows_text_ticks_and_the_reply_under_it(
    tab: Page, site: Site, lang: str
) -> None:
    """A crew member writes to their mother; it is delivered and she replies. The inbox
    shows one conversation with Mother: their own words, four ticks and "Delivered" in
    their language, and her reply under the message. Signed in with the duress PIN, the
    same inbox shows nothing."""
    crew = signed_in(tab, site, lang)
    mine = "ပိုက်ဆံ ပို့ပြီးပြီ။ နေကောင်းလား။" if lang == "mya" else "Money sent. Are you well?"
    tab.goto(f"{site.url}/write")
    tab.fill("textarea[name=text]", mine)
    tab.click("form[action='/write'] button")
    tab.wait_for_url(re.compile(r".*/messages/\d+$"))
    seq = int(tab.url.rsplit("/", 1)[1])
    deliver(site, seq)
    reply = "ငွေ ရပြီ။ ကျေးဇူးပါ။" if lang == "mya" else "Got the money, thank you."
    contact = site.intake.register.contacts(crew)[0].contact
    site.inject_reply(crew, contact, reply, Language.from_code(lang))

    tab.goto(f"{site.url}/inbox")
    text = check_page(tab, site, "inbox-thread", lang)
    thread = tab.locator(f"#contact-{contact}")
    own = thread.locator(f"#m{seq}")
    assert own.locator("p").inner_text() == mine
    assert own.locator("i.on").count() == 4  # queued, sent, ashore, delivered
    assert ("ရောက်ရှိပြီး" if lang == "mya" else "Delivered") in own.inner_text()
    answer = thread.locator(f"li.reply[data-answers='{seq}']")
    assert answer.locator("p").inner_text() == reply
    own_box, answer_box = own.bounding_box(), answer.bounding_box()
    assert own_box
    assert answer_box
    assert answer_box["y"] > own_box["y"]  # under what it answers
    assert "Message " not in text  # no receipt events listed one by one

    tab.click("footer button")
    sign_in(tab, site, lang, DURESS_PIN)
    tab.wait_for_url("**/home")
    tab.goto(f"{site.url}/inbox")
    duress = tab.inner_text("main")
    assert mine not in duress
    assert reply not in duress
    assert tab.locator(".thread, section.case").count() == 0


@pytest.mark.parametrize("lang", ["mya", "eng"])
def test_a_5000_character_message_is_told_the_characters_to_take_off(
    tab: Page, site: Site, lang: str
) -> None:
    """Before writing, the page says how many characters one message holds; a crew member
    pastes 5,000 characters (Burmese on the Burmese page) and is told, in their own
    language, by how many characters to shorten it, never "empty"; their text stays in
    the box and nothing is queued."""
    crew = signed_in(tab, site, lang)
    tab.goto(f"{site.url}/write")
    before = check_page(tab, site, "write-limit", lang)
    letter = "က" if lang == "mya" else "a"
    assert ("စာလုံး" if lang == "mya" else "characters") in tab.inner_text("#limit")
    with site.outbox.reading() as db:
        (queued,) = db.execute("SELECT count(*) FROM messages WHERE crew = ?", (crew,)).fetchone()
    tab.fill("textarea[name=text]", letter * 5000)
    tab.click("form[action='/write'] button")
    tab.wait_for_selector("#refusal")
    # (no full-page check here: 5,000 shaped letters make the screenshot slow)
    refused = tab.inner_text("main")
    assert missing_glyphs(refused) == {}
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{lang}-write-too-long.png"))
    said = tab.inner_text("#refusal")
    over = 5000 - MAX_MESSAGE_BYTES // len(letter.encode())
    assert number_in(over, said), said
    assert "empty" not in refused.lower()
    if lang == "mya":
        assert "စာလုံး" in said  # "characters", in Burmese
        assert "ဗလာ" not in said  # not "empty"
    assert len(tab.input_value("textarea[name=text]")) == 5000
    assert number_in(over, tab.inner_text("#limit"))
    with site.outbox.reading() as db:
        (after,) = db.execute("SELECT count(*) FROM messages WHERE crew = ?", (crew,)).fetchone()
    assert after == queued
    assert before


@pytest.mark.parametrize("lang", ["mya", "eng"])
def test_a_quick_message_can_be_taken_back_before_it_is_queued(
    tab: Page, site: Site, lang: str
) -> None:
    """A tap on "wages received" asks first; Cancel takes it back (nothing is queued);
    tapping again and "Yes, send it" queues it once."""
    crew = signed_in(tab, site, lang)

    def quick_rows() -> int:
        with site.outbox.reading() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM messages WHERE crew = ? AND quick = 3", (crew,)
            ).fetchone()
        return int(count)

    start = quick_rows()
    tab.goto(f"{site.url}/quick")
    tab.click("button[name=code][value='3']")
    tab.wait_for_selector("#confirm-send")
    asked = check_page(tab, site, "quick-confirm", lang)
    assert (phrase(3, Language.from_code(lang)) or "") in asked
    tab.click("#confirm-cancel")
    tab.wait_for_url(re.compile(r".*/quick\?contact=\d+$"))
    assert quick_rows() == start
    tab.click("button[name=code][value='3']")
    tab.click("#confirm-send")
    tab.wait_for_url(re.compile(r".*/messages/\d+$"))
    assert quick_rows() == start + 1


@pytest.mark.parametrize("lang", sorted(HTML_LANG))
def test_the_new_pages_in_the_other_languages(tab: Page, site: Site, lang: str) -> None:
    """The inbox with a conversation, the write page with its limit, the quick message's
    confirmation and the report page with "who can read this" open, in each other page
    language: every character is covered by a served font (screenshots kept)."""
    crew = signed_in(tab, site, "tha")
    contact = site.intake.register.contacts(crew)[0].contact
    if not site.intake.view.kept_messages(crew, 1):
        site.intake.send_message(crew, contact, "สบายดี", Language.THA)
        site.inject_reply(crew, contact, "ดีใจด้วย", Language.THA)
    tab.goto(f"{site.url}/lang/{lang}?next=/inbox")
    inbox = check_page(tab, site, "inbox", lang)
    assert tab.evaluate("document.documentElement.lang") == HTML_LANG[lang]
    assert "สบายดี" in inbox
    tab.goto(f"{site.url}/write")
    check_page(tab, site, "write", lang)
    tab.goto(f"{site.url}/quick")
    tab.click("button[name=code][value='1']")
    tab.wait_for_selector("#confirm-send")
    check_page(tab, site, "quick-confirm", lang)
    tab.goto(f"{site.url}/report")
    tab.click("#who-reads summary")
    check_page(tab, site, "report-open", lang)
