"""The crew page's safety rules, without a browser: rate limits that never block a report
or an SOS, sessions that expire, paused sign-in after wrong PINs, a captain's PIN reset,
no message content in the logs; and the catalogues, fonts and the i18n-check command."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from common.codebooks import default_codebook
from common.signins import GuardPolicy, SignInGuard
from protocol.languages import Language
from protocol.phrases import PHRASE_CODES, phrase
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.web.catalogue import page_msgids
from shipboard.web.fonts import missing_glyphs
from shipboard.web.i18n import PAGE_LANGUAGES, load_catalogue
from shipboard.web.phones import IDLE_S, RATE_LIMIT, SignedInPhones
from tests.kit.clock import FakeClock
from tests.kit.model_shore import ModelShore
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from vessel_relay.demo.defaults import demo_ship_config

SECRET_TEXT = "the second engineer hit me"
SECRET_ADDRESS = "+959777000111"


@dataclass
class Vessel:
    client: httpx.AsyncClient
    intake: Intake
    clock: FakeClock
    crew: int
    pin: str
    shore: ModelShore  # the relay's downlink, signed as the relay signs it


@pytest.fixture
async def vessel(tmp_path: Path) -> AsyncIterator[Vessel]:
    config = demo_ship_config(tmp_path)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    intake = Intake(config, outbox, default_codebook())
    member, pin = intake.register.add(
        name="Sok Dara", document="KH-9", nationality="KH", language=Language.KHM, now=0.0
    )
    intake.register.add_contact(
        member.crew, channel="sms", address="+85512345678", name="Wife", language=None, now=0.0
    )
    clock = FakeClock()
    phones = SignedInPhones(clock=clock)
    app = create_app(intake, phones=phones, guard=SignInGuard(clock=clock))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://vessel", follow_redirects=True
    ) as client:
        shore = ModelShore.for_keys(intake.codebook, VESSEL_KEY, SHORE_KEY, config.vessel.vessel_id)
        yield Vessel(client, intake, clock, member.crew, pin, shore)
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


async def signed_in_with_own_pin(vessel: Vessel) -> str:
    chosen = await sign_in(vessel, vessel.pin)
    assert chosen.url.path == "/pin"
    home = await vessel.client.post(
        "/pin", data={"pin": "80808080", "pin2": "80808080", "csrf": csrf_of(chosen)}
    )
    assert home.url.path == "/home"
    return csrf_of(home)


async def test_rate_limit_never_blocks_a_report_or_sos(vessel: Vessel) -> None:
    """After many messages in ten minutes the page asks the crew member to wait, but a
    grievance report and an SOS still go out at once."""
    csrf = await signed_in_with_own_pin(vessel)
    for _ in range(RATE_LIMIT):
        sent = await vessel.client.post(
            "/write", data={"contact": "1", "text": "hello", "csrf": csrf}
        )
        assert sent.url.path.startswith("/messages/")
    refused = await vessel.client.post(
        "/write", data={"contact": "1", "text": "hello", "csrf": csrf}
    )
    assert refused.status_code == 400
    assert 'class="error"' in refused.text
    union = vessel.intake.config.unions[0].union_id
    report = await vessel.client.post(
        "/report",
        data={"category": "5", "union": str(union), "text": SECRET_TEXT, "csrf": csrf},
    )
    assert report.status_code == 201
    assert re.search(r'id="case">\d+-\d+<', report.text)
    sos = await vessel.client.post("/sos", data={"csrf": csrf})
    assert sos.status_code == 201
    vessel.clock.now += 601  # ten minutes later the crew member can write again
    again = await vessel.client.post("/write", data={"contact": "1", "text": "hi", "csrf": csrf})
    assert again.url.path.startswith("/messages/")


async def test_sessions_expire_when_idle(vessel: Vessel) -> None:
    """A phone left signed in for more than fifteen minutes must sign in again."""
    await signed_in_with_own_pin(vessel)
    assert (await vessel.client.get("/inbox")).url.path == "/inbox"
    vessel.clock.now += IDLE_S + 1
    assert (await vessel.client.get("/inbox")).url.path == "/login"


async def test_wrong_pins_pause_sign_in(vessel: Vessel) -> None:
    """After five wrong PINs even the right one waits five minutes."""
    for _ in range(GuardPolicy().attempts):
        wrong = await sign_in(vessel, "00000000")
        assert wrong.status_code == 400
    paused = await sign_in(vessel, vessel.pin)
    assert paused.url.path == "/login"
    assert "PIN" in paused.text
    vessel.clock.now += 301
    assert (await sign_in(vessel, vessel.pin)).url.path == "/pin"


async def test_captain_pin_reset_asks_for_an_own_pin_again(vessel: Vessel) -> None:
    """A PIN the captain printed is never kept: the crew member chooses their own again."""
    await signed_in_with_own_pin(vessel)
    assert vessel.intake.register.pin_chosen(vessel.crew)
    _, new_pin = vessel.intake.register.update(vessel.crew, reset_pin=True)
    assert new_pin is not None
    assert not vessel.intake.register.pin_chosen(vessel.crew)
    assert (await sign_in(vessel, new_pin)).url.path == "/pin"


async def test_no_content_or_address_in_logs(
    vessel: Vessel, caplog: pytest.LogCaptureFixture
) -> None:
    """Message text, report text and contact addresses never reach the logs."""
    caplog.set_level(logging.DEBUG)
    csrf = await signed_in_with_own_pin(vessel)
    await vessel.client.post(
        "/contacts/new",
        data={"channel": "sms", "address": SECRET_ADDRESS, "name": "Uncle", "csrf": csrf},
    )
    await vessel.client.post("/write", data={"contact": "2", "text": SECRET_TEXT, "csrf": csrf})
    union = vessel.intake.config.unions[0].union_id
    await vessel.client.post(
        "/report", data={"category": "5", "union": str(union), "text": SECRET_TEXT, "csrf": csrf}
    )
    await vessel.client.post("/sos", data={"note": SECRET_TEXT, "csrf": csrf})
    assert caplog.records  # the page does log what happened
    for record in caplog.records:
        line = record.getMessage()
        assert SECRET_TEXT not in line
        assert SECRET_ADDRESS not in line
        assert "80808080" not in line


def test_every_sentence_is_in_every_catalogue_with_its_placeholders() -> None:
    """Each page language has every sentence, with the same {placeholders} as English."""
    wanted = page_msgids()
    assert len(wanted) > 80
    for lang in PAGE_LANGUAGES:
        if lang is Language.ENG:
            continue
        catalogue = load_catalogue(lang)
        assert set(catalogue.messages) == wanted, lang
        for msgid, text in catalogue.messages.items():
            for form in catalogue.plurals.get(msgid, (text,)):
                assert set(re.findall(r"{\w+}", form)) == set(re.findall(r"{\w+}", msgid)), msgid
            assert text != msgid or msgid in ("PIN", "E-mail", "Inbox"), (lang, msgid)
        # Unchecked ones are fuzzy until a native speaker clears the flag (docs/translating.md).
        assert catalogue.fuzzy <= frozenset(wanted)


def test_served_fonts_cover_every_sentence_and_phrase() -> None:
    """No sentence of the page or quick message shows a missing-glyph box."""
    texts = [
        text
        for lang in PAGE_LANGUAGES
        if lang is not Language.ENG
        for text in load_catalogue(lang).messages.values()
    ]
    texts += [phrase(code, lang) or "" for code in PHRASE_CODES for lang in PAGE_LANGUAGES]
    assert missing_glyphs("\n".join(texts)) == {}


def test_i18n_check_lists_unchecked_sentences() -> None:
    """'vessel-relay ship i18n-check' lists the unchecked sentences per language."""
    from vessel_relay.cli import app

    result = CliRunner().invoke(app, ["ship", "i18n-check", "--lang", "mya"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^mya: \d+ page sentences and 16 quick messages", result.output, re.M)
    assert "  page: Write home" in result.output
    assert "  quick 1: ဘေးကင်းပါတယ်။" in result.output
    counts = CliRunner().invoke(app, ["ship", "i18n-check", "--quiet"])
    assert counts.exit_code == 0
    assert len(counts.output.strip().splitlines()) == 7


async def test_the_quota_sentence_is_counted_in_the_crew_language(vessel: Vessel) -> None:
    """The home page says how many short messages are left in the crew member's language
    (Khmer: one plural form, Khmer digits), through the catalogue's ngettext; English uses
    its plural and Western digits, both grouped by thousands as each language groups."""
    await signed_in_with_own_pin(vessel)
    home = (await vessel.client.get("/home")).text
    khmer = re.search(r"ខែនេះ អ្នកនៅអាចផ្ញើសារខ្លីប្រហែល ([០-៩,]+) ទៀត។", home)
    assert khmer, home[:2000]
    left = int("".join(str(int(c)) for c in khmer.group(1) if c != ","))  # int() reads ០-៩
    assert left > 1000
    await vessel.client.get("/lang/eng", params={"next": "/home"})
    english = (await vessel.client.get("/home")).text
    assert f"You can still send about {left:,} short messages this month." in english


async def test_case_status_updates_show_as_a_timeline(vessel: Vessel) -> None:
    """The union moves the case on (its notes come down the vessel's lane, among cover);
    the reporter's inbox shows the case's timeline in their language (Khmer here), oldest
    step first, with the union's words; another crew member's key finds nothing."""
    import nacl.public

    from protocol.cases import CaseNote, reporter_reply_keys
    from protocol.envelopes import CaseStatus, LaneBlock
    from protocol.lane import LaneShape, cover_down_block, seal_down_blocks

    csrf = await signed_in_with_own_pin(vessel)
    union = vessel.intake.config.unions[0].union_id
    report = await vessel.client.post(
        "/report", data={"category": "8", "union": str(union), "text": "unpaid", "csrf": csrf}
    )
    match = re.search(r'id="case">(\d+)-(\d+)<', report.text)
    assert match
    case = f"{match.group(1)}-{match.group(2)}"
    reply_key = reporter_reply_keys(
        vessel.intake.register.sign_in(vessel.crew, "80808080").case_key
    ).public_key
    size = LaneShape().down_block_bytes
    notes = (
        (CaseStatus.ACKNOWLEDGED, None),
        (CaseStatus.IN_PROGRESS, "We wrote to the owner."),
    )
    for seq, (status, said) in enumerate(notes, start=1):
        note = CaseNote(case, status, 30_000_000 + seq, said, Language.ENG if said else None)
        blocks = [
            cover_down_block(bytes(nacl.public.PrivateKey.generate().public_key), size),
            *seal_down_blocks(note, reply_key, size, bytes([seq]) * 8),
        ]
        lane = [
            LaneBlock(period=20_000 + seq, index=i, block=b, written_minutes=30_000_000)
            for i, b in enumerate(blocks)
        ]
        vessel.intake.outbox.apply_downlink(vessel.shore.downlink(lane, 30_000_000 + seq), 1.8e9)
    inbox = await vessel.client.get("/inbox")
    text = inbox.text
    received, working = "សហជីពកំពុងពិនិត្យ", "សហជីពកំពុងដោះស្រាយ"  # Khmer page
    assert f"ករណី {case}" in text
    timeline = text[text.index('<section class="case">') :]
    assert timeline.index(received) < timeline.index(working)
    assert "We wrote to the owner." in timeline
    assert vessel.intake.outbox.lane_blocks()  # kept on board, with no crew number


async def test_message_stages_and_failure_reason_in_the_crew_language(vessel: Vessel) -> None:
    """A message goes out in a batch, the shore accepts it, then the SMS provider fails:
    the message page shows each stage reached and the reason, in Khmer."""
    from protocol.envelopes import DeliveryFailure, DeliveryReceipt, FailureReason, ReceiptStage

    csrf = await signed_in_with_own_pin(vessel)
    sent = await vessel.client.post("/write", data={"contact": "1", "text": "សួស្ដី", "csrf": csrf})
    seq = int(sent.url.path.rsplit("/", 1)[1])
    assert "កំពុងរង់ចាំនៅលើនាវា" in sent.text  # queued on board
    outbox, codebook = vessel.intake.outbox, vessel.intake.codebook
    batch_seq, _ = outbox.make_batch([seq], codebook, VESSEL_KEY, 1.8e9)
    outbox.mark_sent(batch_seq, 1.8e9 + 1)
    minutes = 30_000_100
    envelopes = [
        DeliveryReceipt(
            message_seq=seq, stage=ReceiptStage.ACCEPTED_ASHORE, written_minutes=minutes
        ),
        DeliveryFailure(
            message_seq=seq, reason=FailureReason.PROVIDER_ERROR, written_minutes=minutes + 1
        ),
    ]
    outbox.apply_downlink(vessel.shore.downlink(envelopes, minutes + 1), 1.8e9 + 120)
    stages = await vessel.client.get(f"/messages/{seq}")
    assert stages.status_code == 200
    done = re.findall(r'<li class="done">([^<]+)', stages.text)
    assert [item.strip() for item in done] == ["កំពុងរង់ចាំនៅលើនាវា", "បានផ្ញើ", "បានទទួលនៅលើគោក"]
    assert "សេវាអ៊ីមែល ឬ SMS មានបញ្ហា។" in stages.text  # the provider failed
    other = await vessel.client.get(f"/messages/{seq + 100}")
    assert other.status_code == 404


async def test_the_language_picked_on_the_page_becomes_the_crew_members_own(
    vessel: Vessel,
) -> None:
    """A Khmer crew member switches the page to Burmese. The crew register now says
    Burmese, and when they sign in again on another phone (no language cookie) the page
    is in Burmese. A switch made in a duress session leaves the register alone."""
    await signed_in_with_own_pin(vessel)
    assert '<html lang="km">' in (await vessel.client.get("/home")).text
    switched = await vessel.client.get("/lang/mya", params={"next": "/home"})
    assert switched.url.path == "/home"
    assert '<html lang="my">' in switched.text
    assert vessel.intake.register.get(vessel.crew).language is Language.MYA

    vessel.client.cookies.clear()  # another phone
    again = await sign_in(vessel, "80808080")
    assert again.url.path == "/home"
    assert '<html lang="my">' in again.text

    vessel.intake.register.choose_pin(vessel.crew, "80808080", "13572468", vessel.clock.now)
    vessel.client.cookies.clear()
    assert (await sign_in(vessel, "13572468")).url.path == "/home"  # the duress PIN
    await vessel.client.get("/lang/tha", params={"next": "/home"})
    assert vessel.intake.register.get(vessel.crew).language is Language.MYA
