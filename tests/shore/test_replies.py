"""Family replies: e-mail through real smtplib to the reply server, and SMS via the webhook."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest

from protocol.languages import Language
from shore.fake_sms import send_inbound
from shore.mail import MailIdentity, ReplyAddressBook, ReplyRoute
from shore.replies import (
    ContactInfo,
    ReplyServer,
    ReplyServerConfig,
    SmsWebhook,
    SmsWebhookConfig,
    cap_text,
    extract_reply,
    guess_language,
    html_to_text,
    strip_quoted,
)
from tests.kit.wait import eventually
from tests.shore.test_mail import SmtpSink

BOOK = ReplyAddressBook([b"r" * 32], "reply.example.org")
ROUTE = ReplyRoute(vessel_id=42, crew=3, contact=1)
IDENTITY = MailIdentity("relay.example.org", "relay@relay.example.org")
FAMILY = "mother@example.com"


@dataclass
class Stored:
    """The relay side of ``on_reply``: what would go to the store."""

    replies: list[tuple[int, int, int, str, Language, bool, float]] = field(default_factory=list)
    fail: bool = False

    async def on_reply(
        self,
        vessel_id: int,
        crew: int,
        contact: int,
        text: str,
        lang: Language,
        truncated: bool,
        now: float,
    ) -> None:
        if self.fail:
            raise RuntimeError("store is down")
        self.replies.append((vessel_id, crew, contact, text, lang, truncated, now))


async def lookup(route: ReplyRoute) -> ContactInfo | None:
    return ContactInfo(Language.THA) if route == ROUTE else None


@dataclass
class Harness:
    server: ReplyServer
    stored: Stored
    notices: SmtpSink

    def send(self, message: EmailMessage, sender: str = FAMILY) -> Any:
        """Send with stdlib smtplib (in a thread), as the family's provider would."""

        def go() -> Any:
            with smtplib.SMTP("127.0.0.1", self.server.port, timeout=10) as client:
                return client.send_message(message, from_addr=sender)

        return asyncio.to_thread(go)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    stored = Stored()
    async with SmtpSink() as notices:
        server = ReplyServer(
            ReplyServerConfig(port=0, reply_limit_chars=1000, notice_interval_s=0),
            BOOK,
            lookup,
            stored.on_reply,
            IDENTITY,
            notices=notices.sender(),
            clock=lambda: 1_750_000_000.0,
        )
        await server.start()
        stopping = asyncio.Event()
        runner = asyncio.create_task(server.run(stopping))
        try:
            yield Harness(server, stored, notices)
        finally:
            stopping.set()
            await runner


def reply(text: str, to: str | None = None, html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = FAMILY
    message["To"] = to or BOOK.address_for(ROUTE)
    message["Subject"] = "Re: Message from Ko Aung"
    message["Message-ID"] = "<answer-1@example.com>"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


# --- pure text handling ---------------------------------------------------------------------


def test_quoted_history_and_signature_are_stripped() -> None:
    """Only the family's own words survive: no attribution, quotes, signature or phone tag."""
    text = (
        "We are all well, the baby is walking.\n\nCall when you can.\n\n"
        "On Mon, 3 Mar 2025 at 10:00, Ko Aung via vessel-relay <r-abc@reply.example.org> wrote:\n"
        "> Hello mother\n> all is well\n\n-- \nMa Hla\nSent from my iPhone\n"
    )
    assert strip_quoted(text) == "We are all well, the baby is walking.\n\nCall when you can."


def test_outlook_history_is_cut() -> None:
    """Outlook puts the old mail after a separator and a header block: it is cut."""
    text = (
        "Thank you son.\n\n________________________________\nFrom: Ko Aung via vessel-relay\n"
        "Sent: Monday\nTo: me\nSubject: Message\n\nHello mother"
    )
    assert strip_quoted(text) == "Thank you son."
    assert strip_quoted("ok\n-----Original Message-----\nold") == "ok"


def test_answers_between_quotes_are_kept() -> None:
    """An answer written between quoted lines keeps the family's lines."""
    text = "> Are you well?\nYes, all well.\n> Did the money arrive?\nYes, on Monday."
    assert strip_quoted(text) == "Yes, all well.\nYes, on Monday."


def test_html_becomes_text_without_quotes_scripts_or_styles() -> None:
    """HTML mail: paragraphs become lines, blockquotes and scripts disappear after stripping."""
    html = (
        "<html><head><style>p{color:red}</style></head><body><p>สวัสดีลูก</p>"
        "<div>แม่สบายดี<br>คิดถึงนะ &amp; รักษาตัว</div><script>alert(1)</script>"
        '<div class="gmail_quote"><div>On Mon wrote:</div><blockquote>old text</blockquote>'
        "</div></body></html>"
    )
    assert strip_quoted(html_to_text(html)) == "สวัสดีลูก\n\nแม่สบายดี\nคิดถึงนะ & รักษาตัว"


def test_long_text_is_cut_between_graphemes() -> None:
    """A cap never leaves half a Thai syllable at the end."""
    text = "น้ำ" * 400  # three code points per cluster
    capped, truncated = cap_text(text, 1000)
    assert truncated
    assert len(capped) == 999
    assert capped.endswith("น้ำ")
    assert cap_text("short", 1000) == ("short", False)


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        ("สวัสดีลูก", None, Language.THA),
        ("မင်္ဂလာပါ", Language.SHN, Language.SHN),
        ("မင်္ဂလာပါ", Language.THA, Language.MYA),
        ("Chào con, mẹ khỏe", Language.VIE, Language.VIE),
        ("hello son", Language.THA, Language.ENG),
        ("12345", None, Language.UND),
    ],
)
def test_reply_language_follows_the_script(
    text: str, hint: Language | None, expected: Language
) -> None:
    """The language frame is chosen by script, the contact's language deciding ties."""
    assert guess_language(text, hint) is expected


def test_extract_counts_attachments_and_prefers_plain_text() -> None:
    """A reply with a photo: the text is kept, the photo counted as not forwarded."""
    message = reply("See the photo of the new house.")
    message.add_attachment(b"\xff\xd8jpeg", maintype="image", subtype="jpeg", filename="h.jpg")
    extracted = extract_reply(message.as_bytes())
    assert extracted.text == "See the photo of the new house."
    assert extracted.dropped_attachments == 1
    assert not extracted.truncated
    assert not extracted.automatic


# --- the SMTP server ------------------------------------------------------------------------


async def test_html_reply_reaches_the_crew_member_as_text(harness: Harness) -> None:
    """A mother answers in HTML from webmail: the crew member gets clean text."""
    html_only = EmailMessage()
    html_only["From"] = FAMILY
    html_only["To"] = BOOK.address_for(ROUTE)
    html_only["Subject"] = "Re: Message from Ko Aung"
    html_only.set_content(
        "<p>Hello <b>son</b>,</p><p>we got the money.</p><blockquote>old</blockquote>",
        subtype="html",
    )
    refused = await harness.send(html_only)
    assert refused == {}
    [(vessel, crew, contact, text, lang, truncated, now)] = harness.stored.replies
    assert (vessel, crew, contact) == (42, 3, 1)
    assert text == "Hello son,\n\nwe got the money."
    assert lang is Language.ENG
    assert not truncated
    assert now == 1_750_000_000.0


async def test_quoted_history_and_signature_do_not_travel(harness: Harness) -> None:
    """Only the new words go over the satellite link."""
    await harness.send(
        reply("Come home safe.\n\nOn Mon, Ko Aung wrote:\n> Hello mother\n\n-- \nMa Hla\n")
    )
    assert [r[3] for r in harness.stored.replies] == ["Come home safe."]


async def test_unknown_address_is_refused_at_rcpt(harness: Harness) -> None:
    """Mail to an address that is not a valid route is refused with 550, never bounced later."""
    forged = "r-aaaaaaaaaaaaaaaaaaaaaaaaaaaa@reply.example.org"
    unknown_contact = BOOK.address_for(ReplyRoute(42, 3, 99))
    for address in (forged, unknown_contact, "someone@reply.example.org"):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await harness.send(reply("hello", to=address))
        assert refused.value.recipients[address][0] == 550
    assert harness.stored.replies == []
    assert harness.server.statistics().refused_recipients == 3


async def test_attachment_is_dropped_and_the_sender_told(harness: Harness) -> None:
    """A photo is not forwarded; the mother gets one notice in Thai, with English below."""
    message = reply("ดูรูปบ้านใหม่นะ")
    message.add_attachment(b"\xff\xd8jpeg", maintype="image", subtype="jpeg", filename="h.jpg")
    await harness.send(message)
    assert [r[3] for r in harness.stored.replies] == ["ดูรูปบ้านใหม่นะ"]
    # the notice sink runs in aiosmtpd's own thread: no event can be shared, so poll
    await eventually(lambda: harness.notices.handler.received, 10, what="the notice")
    [notice] = harness.notices.handler.messages()
    assert harness.notices.handler.received[0][1] == [FAMILY]
    assert notice["Auto-Submitted"] == "auto-replied"
    assert notice["In-Reply-To"] == "<answer-1@example.com>"
    body = notice.get_body(preferencelist=("plain",))
    assert body is not None
    content = body.get_content()
    assert "ไฟล์แนบ 1 รายการ" in content
    assert "1 attachment(s)" in content
    assert harness.server.statistics().attachments_dropped == 1


async def test_long_reply_is_capped_and_marked(harness: Harness) -> None:
    """A 5,000-character reply: the crew member gets the first 1,000, marked truncated."""
    await harness.send(reply("Long news. " * 500))
    [stored] = harness.stored.replies
    assert len(stored[3]) <= 1000
    assert stored[3].startswith("Long news. Long news.")
    assert stored[5] is True
    # the notice sink runs in aiosmtpd's own thread: no event can be shared, so poll
    await eventually(lambda: harness.notices.handler.received, 10, what="the notice")
    content = harness.notices.handler.messages()[0].get_body(preferencelist=("plain",))
    assert content is not None
    assert "longer than 1,000 characters" in content.get_content()


async def test_store_failure_makes_the_sender_retry(harness: Harness) -> None:
    """If the reply cannot be stored, SMTP answers 451 so the family's server tries again."""
    harness.stored.fail = True
    with pytest.raises(smtplib.SMTPDataError) as failed:
        await harness.send(reply("hello"))
    assert failed.value.smtp_code == 451


async def test_auto_replies_are_not_forwarded(harness: Harness) -> None:
    """A family's vacation auto-reply costs no satellite bytes and gets no notice back."""
    message = reply("I am away until Monday.")
    message["Auto-Submitted"] = "auto-replied"
    await harness.send(message)
    assert harness.stored.replies == []
    assert harness.server.statistics().automatic_dropped == 1


# --- the SMS webhook ------------------------------------------------------------------------

WEBHOOK_TOKEN = "webhook-token"


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[SmsWebhook, Stored]]:
    stored = Stored()

    async def route_for(family: str, relay_number: str) -> tuple[ReplyRoute, ContactInfo] | None:
        if family == "+959250000001" and relay_number == "+6620000000":
            return ROUTE, ContactInfo(Language.MYA)
        return None

    hook = SmsWebhook(
        SmsWebhookConfig(
            public_url="http://127.0.0.1/sms/inbound", auth_token=WEBHOOK_TOKEN, port=0
        ),
        route_for,
        stored.on_reply,
        clock=lambda: 1_750_000_000.0,
    )
    await hook.serve()
    # The provider signs the URL it was configured with: use the real port in it.
    hook.config = SmsWebhookConfig(
        public_url=f"http://127.0.0.1:{hook.port}/sms/inbound", auth_token=WEBHOOK_TOKEN
    )
    try:
        yield hook, stored
    finally:
        await hook.stop()


async def test_sms_reply_reaches_the_crew_member(webhook: tuple[SmsWebhook, Stored]) -> None:
    """A mother's SMS reply in Burmese arrives for her son, with an empty TwiML answer."""
    hook, stored = webhook
    response = await send_inbound(
        hook.config.public_url,
        from_number="+959250000001",
        to_number="+6620000000",
        body="သားရေ နေကောင်းလား",
        auth_token=WEBHOOK_TOKEN,
    )
    assert response.status_code == 200
    assert "<Message>" not in response.text
    assert stored.replies == [(42, 3, 1, "သားရေ နေကောင်းလား", Language.MYA, False, 1_750_000_000.0)]


async def test_sms_picture_is_dropped_and_the_sender_told(
    webhook: tuple[SmsWebhook, Stored],
) -> None:
    """An MMS picture is not forwarded; the TwiML answer tells the sender in Burmese."""
    hook, stored = webhook
    response = await send_inbound(
        hook.config.public_url,
        from_number="+959250000001",
        to_number="+6620000000",
        body="ဓာတ်ပုံ",
        auth_token=WEBHOOK_TOKEN,
        num_media=1,
    )
    assert "<Message>" in response.text
    assert "ပူးတွဲဖိုင် 1 ခု" in response.text
    assert [r[3] for r in stored.replies] == ["ဓာတ်ပုံ"]


async def test_forged_sms_webhook_is_refused(webhook: tuple[SmsWebhook, Stored]) -> None:
    """A request without the provider's signature is refused and stores nothing."""
    hook, stored = webhook
    response = await send_inbound(
        hook.config.public_url,
        from_number="+959250000001",
        to_number="+6620000000",
        body="send money to this account",
        auth_token=WEBHOOK_TOKEN,
        signature="forged",
    )
    assert response.status_code == 403
    assert stored.replies == []
    assert hook.forged == 1


async def test_sms_from_an_unknown_number_is_dropped(webhook: tuple[SmsWebhook, Stored]) -> None:
    """A number no crew member wrote to gets nothing stored (and no error to the provider)."""
    hook, stored = webhook
    response = await send_inbound(
        hook.config.public_url,
        from_number="+15555550100",
        to_number="+6620000000",
        body="hi",
        auth_token=WEBHOOK_TOKEN,
    )
    assert response.status_code == 200
    assert stored.replies == []
    assert hook.unknown_senders == 1
