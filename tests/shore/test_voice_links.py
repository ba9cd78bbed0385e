"""Voice messages to SMS contacts (issue 24): a link that plays, and stops playing.

Ko Aung's brother has no e-mail, only a phone. His voice note reaches the relay, the
delivery worker sends the brother an SMS in Burmese through the provider's API (the fake
provider that speaks it), with a link to the relay's public app; the link's page plays the
recording, which is still what Ko Aung said. A week later the link answers 410 with a
sentence in Burmese; a token altered by one character is not found; the same message
always gets the same link, so a repeated attempt sends the same text.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from common.codebooks import default_codebook
from common.speech import decode_recording, encode_codec2
from protocol.envelopes import Channel, ContactBookChange, VoiceNote
from protocol.languages import Language
from protocol.voice import DEFAULT_VOICE_MODE
from shore.config import ConfigError, parse_config
from shore.delivery import DeliveryWorker
from shore.fake_sms import FakeSmsProvider
from shore.ingest import Ingestor
from shore.mail import MailSender
from shore.replies import SmsWebhook, SmsWebhookConfig
from shore.sms import SmsConfig, SmsProvider
from shore.store import IngestOutcome, SqliteStore, VesselInfo
from shore.vocabulary import DeliveryOutcome
from shore.voice_links import PAGE_WORDS, VoiceLinks, VoiceTarget, voice_routes
from tests.kit.clock import FakeClock
from tests.kit.speech import BURMESE, estoi, spoken
from tests.shore.store_fixtures import T0, VESSEL_KEY, uplink
from tests.shore.test_mail import BOOK, IDENTITY, SmtpSink

VESSEL = 7
MINUTES = int(T0 // 60)
BROTHER = "+959250000002"
BASE = "https://relay.example.org"
SECRET = bytes(range(32))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
    await opened.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, VESSEL)
    try:
        yield opened
    finally:
        await opened.close()


def _batch() -> tuple[bytes, VoiceNote]:
    coded = encode_codec2(spoken(BURMESE, "my"), DEFAULT_VOICE_MODE)
    note = VoiceNote(
        message_seq=5,
        crew=3,
        contact=2,
        mode=coded.mode,
        duration_ms=coded.duration_ms,
        frames=coded.frames,
        written_minutes=MINUTES,
    )
    brother = ContactBookChange(
        crew=3,
        contact=2,
        channel=Channel.SMS,
        address=BROTHER,
        written_minutes=MINUTES,
        contact_lang=Language.MYA,
        crew_name="Ko Aung",
    )
    return uplink(VESSEL, 1, [brother, note]), note


def _public_app(store: SqliteStore, links: VoiceLinks, clock: FakeClock) -> httpx.AsyncClient:
    """The relay's public app (the SMS webhook's) with the voice pages, as the relay wires it."""

    async def lookup(vessel_id: int, message_seq: int) -> VoiceTarget | None:
        found = await store.voice_note(vessel_id, message_seq)
        return (
            None
            if found is None or found.voice is None
            else VoiceTarget(found.voice, found.contact_lang)
        )

    async def no_reply(*args: object) -> None:
        raise AssertionError("no SMS reply in this test")

    webhook = SmsWebhook(
        SmsWebhookConfig(public_url=f"{BASE}/sms/inbound", auth_token="t" * 32),
        lambda number, relay: no_reply(),  # type: ignore[arg-type,return-value]
        no_reply,  # type: ignore[arg-type]
        routes=voice_routes(links, lookup, clock=clock),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=webhook.app), base_url=BASE)


async def test_an_sms_family_gets_a_link_that_plays_what_was_said_then_expires(
    store: SqliteStore, tmp_path: Path
) -> None:
    """The brother's SMS (through the provider's API) says in Burmese who sent a voice
    message, how long it is and until when it plays, with the link; the page has a player
    and the recording decodes to Ko Aung's sentence; after seven days: 410, in Burmese."""
    clock = FakeClock(T0 + 60)
    data, note = _batch()
    ingestor = Ingestor(store, default_codebook(), clock=clock)
    assert await ingestor.handle(f"vr/{VESSEL}/u", data) is IngestOutcome.STORED
    links = VoiceLinks(SECRET, BASE, days=7)
    async with FakeSmsProvider(tmp_path / "sms.jsonl") as fake:
        config = SmsConfig(fake.account_sid, fake.auth_token, "+6620000000", fake.base_url)
        async with SmsProvider(config) as sms:
            with SmtpSink() as sink:
                worker = DeliveryWorker(
                    store,
                    MailSender(sink.config),
                    IDENTITY,
                    BOOK,
                    sms,
                    clock=clock,
                    voice_links=links,
                )
                assert await worker.deliver_due() == 1
                assert sink.handler.messages() == []  # no e-mail for an SMS contact
        [record] = fake.messages()
    assert record["to"] == BROTHER
    text = record["body"]
    [url] = re.findall(rf"{re.escape(BASE)}/voice/[A-Za-z0-9_-]{{43}}", text)
    seconds = -(-note.duration_ms // 1000)
    assert text.startswith(f"Ko Aung က အသံမက်ဆေ့ချ် ({seconds} စက္ကန့်)")
    [delivery] = await store.deliveries(VESSEL)
    assert delivery.outcome is DeliveryOutcome.DELIVERED

    async with _public_app(store, links, clock) as public:
        page = await public.get(url)
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert '<html lang="my">' in page.text
        assert f'<audio controls preload="none" src="{url.removeprefix(BASE)}.ogg">' in page.text
        ogg = await public.get(f"{url}.ogg")
        assert ogg.status_code == 200
        assert ogg.headers["content-type"] == "audio/ogg"
        heard = decode_recording(ogg.content, limit_s=120)
        assert estoi(spoken(BURMESE, "my"), heard) > 0.4

        wrong = url[:-1] + ("A" if url[-1] != "A" else "B")
        assert (await public.get(wrong)).status_code == 404
        assert (await public.get(f"{BASE}/voice/not-a-token")).status_code == 404

        clock.advance(7 * 86400)
        for gone in (await public.get(url), await public.get(f"{url}.ogg")):
            assert gone.status_code == 410
            sentence = PAGE_WORDS[Language.MYA][2].split("{until}")[0]
            assert sentence in gone.text
            assert "audio" not in gone.headers["content-type"]


def test_the_same_message_always_gets_the_same_link_and_only_the_key_opens_it() -> None:
    """A repeated delivery attempt sends the same link; another relay key cannot open it,
    and the token names neither vessel nor message in the clear."""
    links = VoiceLinks(SECRET, BASE)
    url, expires = links.make(VESSEL, 5, T0)
    assert links.make(VESSEL, 5, T0) == (url, expires)
    assert expires == int(T0) + 7 * 86400
    token = url.rsplit("/", 1)[1]
    opened = links.open(token)
    assert opened is not None
    assert (opened.vessel_id, opened.message_seq, opened.expires_at) == (VESSEL, 5, expires)
    assert VoiceLinks(bytes(32), BASE).open(token) is None
    assert links.make(VESSEL, 6, T0)[0] != url
    with pytest.raises(ValueError, match="1 to 90 days"):
        VoiceLinks(SECRET, BASE, days=0)


@pytest.mark.parametrize(("days", "ok"), [(1, True), (90, True), (0, False), (91, False)])
def test_the_link_lifetime_is_read_from_the_sms_section(days: int, ok: bool) -> None:
    """[sms] voice_link_days: 7 by default; 1 to 90 taken; anything else names the key."""
    assert parse_config({}, "relay.toml").sms.voice_link_days == 7
    document = {"sms": {"voice_link_days": days}}
    if ok:
        assert parse_config(document, "relay.toml").sms.voice_link_days == days
    else:
        with pytest.raises(ConfigError, match=r"\[sms\] voice_link_days = .* not from 1 to 90"):
            parse_config(document, "relay.toml")
