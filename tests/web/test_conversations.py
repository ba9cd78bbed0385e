"""The crew page's inbox as conversations, the message limit said in characters, the quick
message's confirmation and the report page's "who can read this", without a browser (the
agent's app over ASGI, the outbox in a temporary directory, a fake clock)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx
import pytest

from common.codebooks import default_codebook
from common.signins import SignInGuard
from protocol.envelopes import (
    DeliveryFailure,
    DeliveryReceipt,
    FailureReason,
    ReceiptStage,
    Reply,
)
from protocol.languages import Language
from protocol.phrases import phrase
from shipboard.errors import EmptyText, MessageTooLong, ReportTextTooLong
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.message_limit import (
    MAX_GRIEVANCE_BYTES,
    MAX_MESSAGE_BYTES,
    characters_left,
    characters_over,
    usual_characters,
)
from shipboard.outbox import Outbox
from shipboard.web import pages
from shipboard.web.i18n import Translations
from shipboard.web.local import number
from shipboard.web.phones import SignedInPhones
from tests.kit.clock import FakeClock
from tests.kit.model_shore import ModelShore
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from vessel_relay.demo.defaults import demo_ship_config

OWN_PIN = "80808080"
DURESS_PIN = "13572468"


@dataclass
class Vessel:
    client: httpx.AsyncClient
    intake: Intake
    outbox: Outbox
    clock: FakeClock
    crew: int
    pin: str
    mother: int
    brother: int
    shore: ModelShore

    def downlink(self, envelopes: list[object], minutes: int) -> None:
        """The shore sends envelopes down (a signed batch, as the relay does)."""
        self.outbox.apply_downlink(
            self.shore.downlink(envelopes, minutes),  # type: ignore[arg-type]
            self.clock.now,
        )


@pytest.fixture(params=["mya", "eng"])
async def vessel(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Vessel]:
    lang = Language.from_code(request.param)
    config = demo_ship_config(tmp_path)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    clock = FakeClock()
    intake = Intake(config, outbox, default_codebook(), clock=clock)
    member, pin = intake.register.add(
        name="Aung Min", document="MM-1", nationality="MM", language=lang, now=clock.now
    )
    mother = intake.register.add_contact(
        member.crew,
        channel="sms",
        address="+959123456789",
        name="Mother",
        language=lang,
        now=clock.now,
    )
    brother = intake.register.add_contact(
        member.crew,
        channel="sms",
        address="+959123456780",
        name="Ko Ko",
        language=lang,
        now=clock.now,
    )
    phones = SignedInPhones(clock=clock)
    app = create_app(intake, phones=phones, guard=SignInGuard(clock=clock))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://vessel", follow_redirects=True
    ) as client:
        shore = ModelShore.for_keys(intake.codebook, VESSEL_KEY, SHORE_KEY, config.vessel.vessel_id)
        yield Vessel(
            client, intake, outbox, clock, member.crew, pin, mother.contact, brother.contact, shore
        )
    outbox.close()


def csrf_of(response: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert match, response.text[:300]
    return match.group(1)


async def sign_in(vessel: Vessel, pin: str) -> httpx.Response:
    form = await vessel.client.get("/login")
    return await vessel.client.post(
        "/login", data={"crew": str(vessel.crew), "pin": pin, "csrf": csrf_of(form)}
    )


async def own_pin(vessel: Vessel) -> str:
    chosen = await sign_in(vessel, vessel.pin)
    assert chosen.url.path == "/pin"
    home = await vessel.client.post(
        "/pin",
        data={"pin": OWN_PIN, "pin2": OWN_PIN, "duress": DURESS_PIN, "csrf": csrf_of(chosen)},
    )
    assert home.url.path == "/home"
    return csrf_of(home)


async def write(vessel: Vessel, csrf: str, contact: int, text: str) -> int:
    sent = await vessel.client.post(
        "/write", data={"contact": str(contact), "text": text, "csrf": csrf}
    )
    assert sent.url.path.startswith("/messages/"), sent.text[:500]
    return int(sent.url.path.rsplit("/", 1)[1])


TRANSLATIONS = Translations()


def words(vessel: Vessel, msgid: str) -> str:
    """A page sentence in the crew member's language."""
    return TRANSLATIONS.gettext(vessel.intake.register.get(vessel.crew).language, msgid)


def number_in(n: int, text: str) -> bool:
    """Whether ``n`` is in ``text``, in Western digits or as the Burmese page writes it."""
    return str(n) in text or number(n, Language.MYA) in text


def thread_of(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    end = html.find("</section>", start)
    return html[start:end]


def test_the_limit_is_counted_in_characters_as_the_crew_counts() -> None:
    """4,096 bytes are 1,365 Burmese letters or 4,096 Latin ones: the counts say so."""
    burmese = "က" * 1365
    assert characters_over(burmese) == 0
    assert characters_over(burmese + "က") == 1
    assert characters_over("က" * 5000) == 5000 - 1365
    assert characters_over("a" * (MAX_MESSAGE_BYTES + 7)) == 7
    # mixed: the characters taken off the end are what count
    assert characters_over("a" * 4095 + "ကက") == 2
    assert characters_left("က" * 1000, Language.MYA) == (MAX_MESSAGE_BYTES - 3000) // 3
    assert characters_left("", Language.ENG) > 4000
    assert 1300 <= usual_characters(Language.MYA) <= 1450
    assert usual_characters(Language.ENG) >= 4000
    assert MessageTooLong.msgid == pages.TOO_LONG_BY  # the catalogue has the same sentence


async def test_a_long_message_is_refused_with_the_characters_to_take_off(
    vessel: Vessel,
) -> None:
    """A crew member pastes 5,000 characters (Burmese, or Latin for the English page): the
    page says, in their language, by how many characters to shorten it, keeps their text,
    and never says "empty or cannot be read". Nothing is queued."""
    csrf = await own_pin(vessel)
    burmese = vessel.intake.register.get(vessel.crew).language is Language.MYA
    letter = "က" if burmese else "a"
    form = await vessel.client.get("/write")
    lang = Language.MYA if burmese else Language.ENG
    limit = usual_characters(lang)

    def local(value: int) -> str:  # numbers as the page writes them in its language
        return number(value, lang)

    assert unescape(words(vessel, "One message holds about {n} characters.")).format(
        n=local(limit)
    ) in unescape(form.text)
    refused = await vessel.client.post(
        "/write", data={"contact": str(vessel.mother), "text": letter * 5000, "csrf": csrf}
    )
    assert refused.status_code == 400
    over = 5000 - MAX_MESSAGE_BYTES // len(letter.encode())
    said = unescape(re.search(r'id="refusal">([^<]+)<', refused.text).group(1))  # type: ignore[union-attr]
    assert said == words(vessel, pages.TOO_LONG_BY).format(n=local(over), limit=local(limit))
    assert number_in(over, said)
    assert "empty" not in said
    if burmese:
        assert re.search("[\u1000-\u109f]", said)  # said in Burmese
    assert letter * 5000 in refused.text  # their text is kept in the form
    assert 'class="count over"' in refused.text
    with vessel.outbox.reading() as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    if not burmese:  # (20,000 Burmese letters are more than the page's form takes)
        # longer than the text reader takes at all (16,384 characters): still "too long by N"
        longest = await vessel.client.post(
            "/write", data={"contact": str(vessel.mother), "text": "a" * 20_000, "csrf": csrf}
        )
        said = unescape(re.search(r'id="refusal">([^<]+)<', longest.text).group(1))  # type: ignore[union-attr]
        over = 20_000 - MAX_MESSAGE_BYTES
        assert said == words(vessel, pages.TOO_LONG_BY).format(n=local(over), limit=local(limit))
    # exactly at the limit it goes
    await write(vessel, csrf, vessel.mother, letter * (MAX_MESSAGE_BYTES // len(letter.encode())))


async def test_the_inbox_is_one_conversation_per_contact_with_text_ticks_and_replies(
    vessel: Vessel,
) -> None:
    """The crew member writes to their mother twice and to their brother once; the first
    message is delivered and the mother replies to it, the brother's fails (wrong
    number). The inbox shows two conversations, newest first, each message with its own
    text and its stage as ticks, the failure reason in words, and the mother's reply
    under the message it answers."""
    csrf = await own_pin(vessel)
    first = await write(vessel, csrf, vessel.mother, "Wages came today. မင်္ဂလာပါ")
    outbox, codebook = vessel.outbox, vessel.intake.codebook
    batch, _ = outbox.make_batch([first], codebook, VESSEL_KEY, vessel.clock.now)
    outbox.mark_sent(batch, vessel.clock.now + 1)
    vessel.clock.now += 120
    minutes = int(vessel.clock.now // 60) - 1  # the shore's minutes: before it arrives
    vessel.downlink(
        [
            DeliveryReceipt(
                message_seq=first, stage=ReceiptStage.ACCEPTED_ASHORE, written_minutes=minutes
            ),
            DeliveryReceipt(
                message_seq=first, stage=ReceiptStage.DELIVERED, written_minutes=minutes + 1
            ),
            Reply(
                reply_seq=77,
                crew=vessel.crew,
                contact=vessel.mother,
                written_minutes=minutes + 2,
                lang=Language.MYA,
                body="ကျန်းမာပါစေ။",
            ),
        ],
        minutes + 2,
    )
    vessel.clock.now += 120
    second = await write(vessel, csrf, vessel.mother, "Second letter, still queued.")
    vessel.clock.now += 120
    to_brother = await write(vessel, csrf, vessel.brother, "Ko Ko, call the agent.")
    batch, _ = outbox.make_batch([to_brother], codebook, VESSEL_KEY, vessel.clock.now)
    outbox.mark_sent(batch, vessel.clock.now + 1)
    minutes = int(vessel.clock.now // 60)
    vessel.downlink(
        [
            DeliveryFailure(
                message_seq=to_brother,
                reason=FailureReason.ADDRESS_INVALID,
                written_minutes=minutes,
            )
        ],
        minutes,
    )
    own = await vessel.client.get(f"/messages/{first}")
    assert 'id="said">Wages came today. မင်္ဂလာပါ<' in own.text  # its page shows the text
    page = await vessel.client.get("/inbox")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    # newest first: the brother's conversation (its last line is the latest)
    assert html.index('id="contact-') == html.index(f'id="contact-{vessel.brother}"')
    mother = thread_of(html, f"contact-{vessel.mother}")
    assert "Wages came today. မင်္ဂလာပါ" in mother
    assert "Second letter, still queued." in mother
    # the reply stands under the message it answers, before the later one
    assert (
        mother.index("Wages came today")
        < mother.index("ကျန်းမာပါစေ။")
        < mother.index("Second letter")
    )
    assert f'data-answers="{first}"' in mother
    # ticks: delivered has four, the queued one one
    line = mother[mother.index(f'id="m{first}"') : mother.index(f'id="m{second}"')]
    assert line.count('class="on"') == 4
    assert words(vessel, "Delivered") in line
    queued = mother[mother.index(f'id="m{second}"') :]
    assert queued.count('class="on"') == 1
    assert words(vessel, "Queued on board") in queued
    brother = thread_of(html, f"contact-{vessel.brother}")
    assert "Ko Ko, call the agent." in brother
    assert words(vessel, "Failed") in brother
    assert unescape(words(vessel, "The address or phone number is wrong.")) in unescape(brother)
    # no receipt events listed one by one any more
    assert html.count(f'id="m{first}"') == 1


async def test_a_quick_message_asks_before_it_is_queued(vessel: Vessel) -> None:
    """A tap on a quick message only asks "send this to Mother?"; Cancel leaves nothing
    queued, and "Yes, send it" queues it once."""
    await own_pin(vessel)
    quick = await vessel.client.get("/quick")
    csrf = csrf_of(quick)
    asked = await vessel.client.post(
        "/quick", data={"contact": str(vessel.mother), "code": "3", "csrf": csrf}
    )
    assert asked.status_code == 200
    lang = vessel.intake.register.get(vessel.crew).language
    assert unescape(phrase(3, lang) or "") in unescape(asked.text)
    assert 'id="confirm-send"' in asked.text
    with vessel.outbox.reading() as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    cancel = re.search(r'href="([^"]+)" id="confirm-cancel"', asked.text)
    assert cancel
    back = await vessel.client.get(unescape(cancel.group(1)))
    assert back.url.path == "/quick"
    sent = await vessel.client.post(
        "/quick",
        data={"contact": str(vessel.mother), "code": "3", "confirm": "yes", "csrf": csrf},
    )
    assert sent.url.path.startswith("/messages/")
    said = re.search(r'id="said">([^<]+)<', sent.text)
    assert said  # its page shows what was sent, in the crew member's language
    assert unescape(said.group(1)) == phrase(3, lang)
    with vessel.outbox.reading() as db:
        rows = db.execute("SELECT quick, contact FROM messages").fetchall()
    assert [tuple(r) for r in rows] == [(3, vessel.mother)]


async def test_the_duress_pin_opens_an_empty_inbox(vessel: Vessel) -> None:
    """Signed in with the duress PIN, the inbox shows no conversation, no text, no reply,
    no case, though the real sign-in has all of them."""
    csrf = await own_pin(vessel)
    await write(vessel, csrf, vessel.mother, "Secret words for mother")
    minutes = int(vessel.clock.now // 60)
    vessel.downlink(
        [
            Reply(
                reply_seq=78,
                crew=vessel.crew,
                contact=vessel.mother,
                written_minutes=minutes,
                lang=Language.ENG,
                body="Mother's secret answer",
            )
        ],
        minutes,
    )
    union = vessel.intake.config.unions[0].union_id
    report = await vessel.client.post(
        "/report", data={"category": "5", "union": str(union), "text": "hit", "csrf": csrf}
    )
    case = re.search(r'id="case">([^<]+)<', report.text).group(1)  # type: ignore[union-attr]
    real = (await vessel.client.get("/inbox")).text
    assert "Secret words for mother" in real
    assert "Mother&#39;s secret answer" in real
    assert case in real
    vessel.client.cookies.clear()
    assert (await sign_in(vessel, DURESS_PIN)).url.path == "/home"
    duress = (await vessel.client.get("/inbox")).text
    assert "Secret words" not in duress
    assert "secret answer" not in duress
    assert case not in duress
    assert "Mother" not in duress
    assert unescape(words(vessel, "Nothing yet.")) in unescape(duress)


async def test_the_report_page_leads_with_the_choices_and_tells_who_can_read_it(
    vessel: Vessel,
) -> None:
    """The report page shows the categories first, each with its own icon, and keeps
    "who can read this" one tap away; it says that changed software could read a report
    sealed on the vessel's computer."""
    await own_pin(vessel)
    html = (await vessel.client.get("/report")).text
    icons = re.findall(r'name="category" value="\d+"[^>]*>(<svg .*?</svg>)', html)  # inline
    assert len(icons) == len(pages.CATEGORIES)
    assert len(set(icons)) == len(icons)  # every category its own icon
    assert html.index('name="category"') < html.index("<details")
    details = html[html.index("<details") : html.index("</details>")]
    assert "<summary>" in details
    changed = "But if someone changed that software, they could read your report"
    assert unescape(
        words(
            vessel,
            changed + " before it is sealed, or keep it. Only a report "
            "sealed on your phone is safe from that.",
        )
    ) in unescape(details)
    assert 'href="/report/phone"' in details
    phone = (await vessel.client.get("/report/phone")).text
    truth = phone[phone.index("<details") : phone.index("</details>")]
    assert "<summary>" in truth
    assert unescape(words(vessel, "Who can read this report?")) in unescape(truth)
    assert phone.index("</details>") < phone.index('id="phone-keys"')


async def test_the_api_says_how_many_characters_to_take_off(vessel: Vessel) -> None:
    """The crew API refuses a long message with the same sentence in the crew member's
    language and the count as a number (``over_characters``), a JSON key added beside
    the existing ones."""
    login = await vessel.client.post("/api/login", json={"crew": vessel.crew, "pin": vessel.pin})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    refused = await vessel.client.post(
        "/api/messages",
        json={"contact": vessel.mother, "text": "က" * 2000},
        headers={"authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 413
    body = refused.json()
    assert body["type"] == "urn:vessel-relay:problem:too-large"
    assert body["over_characters"] == 2000 - 1365
    assert body["max_bytes"] == MAX_MESSAGE_BYTES
    assert number_in(2000 - 1365, body["detail"])


async def test_the_api_inbox_adds_the_own_messages_with_their_text(vessel: Vessel) -> None:
    """An app reading ``GET /api/inbox`` gets the crew member's own messages with their
    text and state (a ``messages`` key beside ``entries`` and ``cases``); a duress
    sign-in gets none."""
    csrf = await own_pin(vessel)
    seq = await write(vessel, csrf, vessel.mother, "Text kept for my own eyes")
    login = await vessel.client.post("/api/login", json={"crew": vessel.crew, "pin": OWN_PIN})
    token = login.json()["token"]
    inbox = await vessel.client.get("/api/inbox", headers={"authorization": f"Bearer {token}"})
    assert inbox.status_code == 200
    body = inbox.json()
    assert {"entries", "cases", "messages"} <= set(body)
    (mine,) = body["messages"]
    assert mine["message_seq"] == seq
    assert mine["text"] == "Text kept for my own eyes"
    assert mine["contact"] == vessel.mother
    assert mine["state"] == "accepted"
    duress = await vessel.client.post("/api/login", json={"crew": vessel.crew, "pin": DURESS_PIN})
    empty = await vessel.client.get(
        "/api/inbox", headers={"authorization": f"Bearer {duress.json()['token']}"}
    )
    assert empty.json() == {"entries": [], "cases": [], "messages": []}


async def test_a_long_report_is_refused_with_the_characters_to_take_off(vessel: Vessel) -> None:
    """A report over 16 KiB of text is refused with how many characters to take off, in
    the crew member's language; the text stays in the form; nothing is filed."""
    csrf = await own_pin(vessel)
    union = vessel.intake.config.unions[0].union_id
    burmese = vessel.intake.register.get(vessel.crew).language is Language.MYA
    letter = "က" if burmese else "a"
    written = letter * (MAX_GRIEVANCE_BYTES // len(letter.encode()) + 40)
    refused = await vessel.client.post(
        "/report", data={"category": "5", "union": str(union), "text": written, "csrf": csrf}
    )
    assert refused.status_code == 400
    said = unescape(re.search(r'class="error">([^<]+)<', refused.text).group(1))  # type: ignore[union-attr]
    lang = vessel.intake.register.get(vessel.crew).language
    assert said == words(vessel, pages.REPORT_TOO_LONG_BY).format(n=number(40, lang))
    assert ReportTextTooLong.msgid == pages.REPORT_TOO_LONG_BY
    assert written in refused.text
    assert not vessel.outbox.lane_blocks()


async def test_a_blank_message_or_report_is_called_empty_not_unreadable(vessel: Vessel) -> None:
    """A message or report of spaces only is refused as empty, in the crew member's
    language, with what to do; the page never says "empty or cannot be read"."""
    csrf = await own_pin(vessel)
    assert (EmptyText.MESSAGE, EmptyText.REPORT) == pages.EMPTY_TEXTS
    blank = await vessel.client.post(
        "/write", data={"contact": str(vessel.mother), "text": "   ", "csrf": csrf}
    )
    assert blank.status_code == 400
    said = unescape(re.search(r'id="refusal">([^<]+)<', blank.text).group(1))  # type: ignore[union-attr]
    assert said == words(vessel, EmptyText.MESSAGE)
    union = vessel.intake.config.unions[0].union_id
    report = await vessel.client.post(
        "/report", data={"category": "5", "union": str(union), "text": " \n ", "csrf": csrf}
    )
    assert report.status_code == 400
    said = unescape(re.search(r'class="error">([^<]+)<', report.text).group(1))  # type: ignore[union-attr]
    assert said == words(vessel, EmptyText.REPORT)
