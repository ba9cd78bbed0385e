"""Family e-mail: composition, routed Reply-To, header injection, sending to a real sink."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtplib.email import flatten_message
from aiosmtplib.protocol import normalize_message_line_endings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fleet import corpus_texts
from protocol.envelopes import FailureReason
from protocol.languages import Language
from shore.mail import (
    FamilyMail,
    InvalidAddress,
    MailIdentity,
    MailSender,
    RenderedMail,
    ReplyAddressBook,
    ReplyRoute,
    SmtpConfig,
    VoiceAttachment,
    clean_header_text,
    compose_family_mail,
    message_id,
    render_family_mail,
)
from shore.retry import Outcome
from shore.smtp_pool import _wire_size
from tests.kit.ports import free_port

IDENTITY = MailIdentity(relay_domain="relay.example.org", from_address="relay@relay.example.org")
KEY = b"k" * 32
BOOK = ReplyAddressBook([KEY], "reply.example.org")
ROUTE = ReplyRoute(vessel_id=42, crew=3, contact=1)
NOW = 1_750_000_000.0
EXPECTED_HEADERS = {
    "from",
    "to",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
}


def family_mail(**changes: Any) -> FamilyMail:
    values: dict[str, Any] = {
        "vessel_id": 42,
        "message_seq": 1831,
        "route": ROUTE,
        "crew_name": "Ko Aung",
        "to_address": "mother@example.com",
        "text": "မင်္ဂလာပါ အမေ။ ကျန်းမာပါတယ်။",
        "contact_lang": Language.MYA,
    }
    values.update(changes)
    return FamilyMail(**values)


def parse(message: EmailMessage) -> EmailMessage:
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- a real SMTP sink on loopback ---------------------------------------------------------


@dataclass
class SinkHandler:
    """Collects what the sink receives; refuses some recipients and can fail on purpose."""

    refuse: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data_reply is not None:
            return self.data_reply
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 OK queued"

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            raw = [content for _, _, content in self.received]
        out = []
        for content in raw:
            parsed = message_from_bytes(content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            out.append(parsed)
        return out


class SmtpSink:
    """An aiosmtpd smarthost sink on 127.0.0.1 and a free port (its own thread)."""

    def __init__(self, handler: SinkHandler | None = None) -> None:
        self.handler = handler or SinkHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._senders: list[MailSender] = []

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.controller.stop()

    async def __aenter__(self) -> SmtpSink:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the senders made by :meth:`sender` (their kept sessions), then stop."""
        try:
            for sender in self._senders:
                await sender.aclose()
        finally:
            self.__exit__(*exc_info)

    def sender(self, config: SmtpConfig | None = None) -> MailSender:
        """A :class:`MailSender` to this sink, closed when the sink's ``async with`` ends."""
        made = MailSender(config or self.config)
        self._senders.append(made)
        return made

    @property
    def config(self) -> SmtpConfig:
        return SmtpConfig(host="127.0.0.1", port=self.port, starttls=False, timeout_s=10)


@pytest.fixture
async def sink() -> Any:
    async with SmtpSink() as running:
        yield running


# --- composition ----------------------------------------------------------------------------


def test_family_mail_has_the_crew_members_name_and_a_routed_reply_to() -> None:
    """A mother gets mail "from" her son, and her reply is routed back to him."""
    message = parse(compose_family_mail(family_mail(), IDENTITY, BOOK, NOW))
    assert {name.lower() for name in message} == EXPECTED_HEADERS | {"content-language"}
    sender = message["From"].addresses[0]
    assert sender.display_name == "Ko Aung via vessel-relay"
    assert sender.addr_spec == "relay@relay.example.org"
    reply_to = message["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith("r-")
    assert reply_to.endswith("@reply.example.org")
    assert BOOK.resolve(reply_to) == ROUTE
    assert message["Message-ID"] == "<42.1831@relay.example.org>"
    assert message["Subject"] == "Ko Aung ထံမှ စာ"
    assert message["Content-Language"] == "my"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert text.startswith("မင်္ဂလာပါ အမေ။ ကျန်းမာပါတယ်။\n\n-- \n")
    assert "vessel-relay" in text
    assert "1,000" in text
    assert "attachments and pictures are not forwarded" in text  # English below Burmese


def test_message_id_is_the_idempotency_key_and_stable() -> None:
    """Composing the same message twice (a retry) gives the same Message-ID."""
    first = compose_family_mail(family_mail(), IDENTITY, BOOK, NOW)
    again = compose_family_mail(family_mail(), IDENTITY, BOOK, NOW + 3600)
    assert first["Message-ID"] == again["Message-ID"] == message_id(42, 1831, "relay.example.org")


def test_english_footer_alone_for_an_english_or_unknown_language_contact() -> None:
    """A contact without a language gets the English footer once."""
    message = parse(compose_family_mail(family_mail(contact_lang=None), IDENTITY, BOOK, NOW))
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().count("You can answer") == 1
    assert message["Subject"] == "Message from Ko Aung"


def test_the_crew_members_own_subject_is_the_family_mails_subject_rfc2047_encoded() -> None:
    """A son who mailed "အမေ့မွေးနေ့" (Mother's birthday) as his Subject: his mother's mail
    carries that Subject, sent as RFC 2047 encoded words (ASCII on the wire, the email
    library's encoding) that her mail app shows in Burmese; the From line still says who
    it is from."""
    mail = family_mail(subject="အမေ့မွေးနေ့ 🎂")
    raw = compose_family_mail(mail, IDENTITY, BOOK, NOW).as_bytes()
    line = next(h for h in raw.split(b"\r\n") if h.lower().startswith(b"subject:"))
    assert line.isascii()
    assert b"=?utf-8?" in line.lower()
    message = parse(compose_family_mail(mail, IDENTITY, BOOK, NOW))
    assert message["Subject"] == "အမေ့မွေးနေ့ 🎂"
    assert message["From"].addresses[0].display_name == "Ko Aung via vessel-relay"


@pytest.mark.parametrize(
    ("subject", "shown"),
    [
        ("Money sent\r\nBcc: thief@example.com", "Money sent Bcc: thief@example.com"),
        ("=?utf-8?b?Zm9v?=", "= ?utf-8?b?Zm9v?="),
        ("   ", "Ko Aung ထံမှ စာ"),
        ("", "Ko Aung ထံမှ စာ"),
        ("x" * 300, "x" * 200),
    ],
)
def test_a_crew_subject_is_one_clean_line_or_the_relays_own(subject: str, shown: str) -> None:
    """A Subject that would break the header, pose as an encoded word or say nothing is
    cleaned, cut to 200 characters, or replaced by the relay's "Message from ..."."""
    message = parse(compose_family_mail(family_mail(subject=subject), IDENTITY, BOOK, NOW))
    assert message["Subject"] == shown
    assert message["Bcc"] is None


@pytest.mark.parametrize(
    "address", ["not-an-address", "a b@example.com", "mum@example.com\r\nBcc: x@y.z", "@x.org"]
)
def test_unusable_family_address_is_refused(address: str) -> None:
    """A broken address fails composition (and so fails the delivery as ADDRESS_INVALID)."""
    with pytest.raises(InvalidAddress):
        compose_family_mail(family_mail(to_address=address), IDENTITY, BOOK, NOW)


names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=120
) | st.sampled_from(
    [
        "Ko Aung\r\nBcc: victim@example.com",
        "x\nSubject: free money",
        'Aung" <evil@example.com>, "',
        "=?utf-8?q?Bcc=3A_a=40b=2Ec?=",
        "\u202eevil\u202c",
        "Ko\x00Aung\x85Bcc: a@b.c",
        "a\u2028Bcc: a@b.c",
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(crew_name=names, text=st.text(min_size=1, max_size=300))
def test_no_name_or_text_can_inject_a_header(crew_name: str, text: str) -> None:
    """Whatever a vessel sends as a name or text, the mail has exactly our headers.

    The generated bytes are parsed back: the header set is fixed, From and Reply-To hold
    one address each (ours), and the display name is the cleaned name.
    """
    raw = compose_family_mail(
        family_mail(crew_name=crew_name, text=text, contact_lang=None), IDENTITY, BOOK, NOW
    ).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert {name.lower() for name in parsed} == EXPECTED_HEADERS
    assert len(parsed.get_all("From") or []) == 1
    senders = parsed["From"].addresses
    assert len(senders) == 1
    assert senders[0].addr_spec == "relay@relay.example.org"
    cleaned = clean_header_text(crew_name)
    expected = f"{cleaned} via vessel-relay" if cleaned else "vessel-relay"
    # The stdlib folder may split a long non-ASCII name into two encoded words and the
    # parser then reads a space between them: cosmetic, so compare without spaces.
    assert senders[0].display_name.replace(" ", "") == expected.replace(" ", "")
    assert [a.addr_spec for a in parsed["To"].addresses] == ["mother@example.com"]
    assert BOOK.resolve(parsed["Reply-To"].addresses[0].addr_spec) == ROUTE
    assert parsed["Message-ID"] == "<42.1831@relay.example.org>"
    for line in raw.split(b"\r\n"):
        assert b"\n" not in line
        assert b"\r" not in line


def wire_bytes(mail: FamilyMail, identity: MailIdentity = IDENTITY, now: float = NOW) -> bytes:
    """What aiosmtplib's ``send_message`` sends for the composed message (8BITMIME server)."""
    return flatten_message(compose_family_mail(mail, identity, BOOK, now))


def rendered_bytes(mail: FamilyMail, identity: MailIdentity = IDENTITY, now: float = NOW) -> bytes:
    rendered = render_family_mail(mail, identity, BOOK, now)
    assert isinstance(rendered, RenderedMail)
    assert rendered.sender == identity.from_address
    assert rendered.recipient == mail.to_address
    return rendered.data


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    crew_name=names,
    text=st.text(min_size=1, max_size=400),
    lang=st.sampled_from([None, *Language]),
    seconds=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_rendered_mail_is_the_composed_mail_byte_for_byte(
    crew_name: str, text: str, lang: Language | None, seconds: int
) -> None:
    """The delivery worker writes a family e-mail straight to bytes (issue 22: composing and
    flattening was a third of the relay's work per mail); whatever the name, text and
    language, the family receives exactly what the composed message would have been."""
    mail = family_mail(crew_name=crew_name, text=text, contact_lang=lang)
    assert rendered_bytes(mail, now=seconds) == wire_bytes(mail, now=seconds)


def test_rendered_mail_matches_for_every_corpus_text() -> None:
    """Every real message of the corpus (every script we carry, quoted-printable and
    base64 bodies, long and short lines) renders as the composed mail does; so does a
    Message-ID too long for one line (a long relay domain)."""
    long_domain = MailIdentity("r" * 70 + ".example.org", "relay@relay.example.org")
    for seq, (lang, text) in enumerate(corpus_texts()):
        mail = family_mail(text=text, contact_lang=lang, message_seq=seq)
        assert rendered_bytes(mail) == wire_bytes(mail)
        if seq % 50 == 0:
            assert rendered_bytes(mail, long_domain) == wire_bytes(mail, long_domain)


@given(
    st.binary(max_size=64)
    | st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"."])).map(b"".join)
)
def test_declared_size_is_the_size_sent(message: bytes) -> None:
    """The SIZE a rendered mail declares at MAIL is the number of octets that follow DATA
    (line ends made CRLF), whatever the bytes, so a smarthost's size limit judges it right."""
    assert _wire_size(message) == len(normalize_message_line_endings(message))


def test_voice_and_non_ascii_addresses_are_composed_not_rendered() -> None:
    """A voice message (an attachment) and an address that needs SMTPUTF8 keep the composed
    ``EmailMessage``, which aiosmtplib sends with the options they need."""
    voice = VoiceAttachment(b"OggS" + bytes(40), 2500)
    assert isinstance(
        render_family_mail(family_mail(voice=voice), IDENTITY, BOOK, NOW), EmailMessage
    )
    idn = family_mail(to_address="mother@exämple.com")
    assert isinstance(render_family_mail(idn, IDENTITY, BOOK, NOW), EmailMessage)
    with pytest.raises(InvalidAddress):
        render_family_mail(family_mail(to_address="not an address"), IDENTITY, BOOK, NOW)


@given(st.text(max_size=200))
def test_cleaned_header_text_has_no_breaks_or_overrides(text: str) -> None:
    """Cleaned text is one short line without controls or bidi overrides."""
    cleaned = clean_header_text(text)
    assert len(cleaned) <= 64
    assert not any(ch in cleaned for ch in "\r\n\x00\x85\u2028\u2029\u202e\u2066")


# --- reply addresses ----------------------------------------------------------------------


@given(st.integers(0, 2**40), st.integers(0, 2**20), st.integers(0, 2**20))
def test_reply_address_round_trip(vessel: int, crew: int, contact: int) -> None:
    """Every route has an address, case-insensitive, that resolves back to it."""
    route = ReplyRoute(vessel, crew, contact)
    address = BOOK.address_for(route)
    assert BOOK.resolve(address) == route
    assert BOOK.resolve(address.upper()) == route
    assert BOOK.resolve(f"<{address}>") == route


def test_reply_addresses_cannot_be_guessed_or_moved() -> None:
    """A changed token, another key or another domain resolves to nothing."""
    address = BOOK.address_for(ROUTE)
    local, domain = address.split("@")
    flipped = local[:-1] + ("a" if local[-1] != "a" else "b")
    assert BOOK.resolve(f"{flipped}@{domain}") is None
    assert BOOK.resolve(f"{local}@elsewhere.example.org") is None
    assert ReplyAddressBook([b"other-key" * 4], "reply.example.org").resolve(address) is None
    assert BOOK.resolve("postmaster@reply.example.org") is None
    assert BOOK.resolve("r-aaaaaaaaaaaaaaaaaaaaaaaaaaaa@reply.example.org") is None


def test_old_key_still_resolves_after_rotation() -> None:
    """After a key rotation, families answering old mail still reach the crew member."""
    old_address = BOOK.address_for(ROUTE)
    rotated = ReplyAddressBook([b"n" * 32, KEY], "reply.example.org")
    assert rotated.resolve(old_address) == ROUTE
    assert rotated.address_for(ROUTE) != old_address


# --- sending to a real SMTP sink ------------------------------------------------------------


async def test_mail_reaches_the_smarthost_with_a_stable_message_id(sink: SmtpSink) -> None:
    """Sent twice (a retry after a crash mid-send), both copies carry one Message-ID."""
    sender = sink.sender()
    message = compose_family_mail(family_mail(), IDENTITY, BOOK, NOW)
    first = await sender.send(message)
    retry = await sender.send(compose_family_mail(family_mail(), IDENTITY, BOOK, NOW + 60))
    assert first.outcome is Outcome.DELIVERED
    assert retry.outcome is Outcome.DELIVERED
    received = sink.handler.messages()
    assert len(received) == 2
    assert {m["Message-ID"] for m in received} == {"<42.1831@relay.example.org>"}
    assert sink.handler.received[0][1] == ["mother@example.com"]
    body = received[0].get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().startswith("မင်္ဂလာပါ အမေ")
    assert sender.statistics().delivered == 2


async def test_rendered_mail_reaches_the_smarthost_as_composed(sink: SmtpSink) -> None:
    """A rendered family e-mail arrives from the relay's address, to the family, with the
    same content the composed one has (headers, Message-ID, body in the family's script)."""
    sender = sink.sender()
    rendered = render_family_mail(family_mail(), IDENTITY, BOOK, NOW)
    assert isinstance(rendered, RenderedMail)
    assert (await sender.send(rendered)).outcome is Outcome.DELIVERED
    assert (await sender.send(compose_family_mail(family_mail(), IDENTITY, BOOK, NOW))).outcome is (
        Outcome.DELIVERED
    )
    (mail_from, to, first), (_, _, second) = sink.handler.received
    assert mail_from == "relay@relay.example.org"
    assert to == ["mother@example.com"]
    assert first == second
    (received, _) = sink.handler.messages()
    assert received["Message-ID"] == "<42.1831@relay.example.org>"
    body = received.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().startswith("မင်္ဂလာပါ အမေ")


def rendered(**changes: Any) -> RenderedMail:
    made = render_family_mail(family_mail(**changes), IDENTITY, BOOK, NOW)
    assert isinstance(made, RenderedMail)
    return made


async def test_rendered_mails_share_one_kept_session_through_refusals(sink: SmtpSink) -> None:
    """Rendered mails go one after another over kept sessions (a session's first with its
    greeting, the next ones straight to MAIL, RCPT, DATA): a family address the smarthost
    refuses fails for good, greylisting is worth another try, and after each refusal the
    next family's mail still arrives, once (a refused transaction's session is closed,
    not reused)."""
    sender = sink.sender(
        SmtpConfig(host="127.0.0.1", port=sink.port, starttls=False, timeout_s=10, connections=1)
    )
    first = await sender.send(rendered(message_seq=1))
    again = await sender.send(rendered(message_seq=5))
    sink.handler.refuse["gone@example.com"] = "550 5.1.1 No such user"
    refused = await sender.send(rendered(message_seq=2, to_address="gone@example.com"))
    sink.handler.data_reply = "451 4.7.1 Greylisted, try again later"
    greylisted = await sender.send(rendered(message_seq=3))
    sink.handler.data_reply = None
    last = await sender.send(rendered(message_seq=4, to_address="father@example.com"))
    assert first.outcome is again.outcome is Outcome.DELIVERED
    assert refused.outcome is Outcome.PERMANENT
    assert refused.reason is FailureReason.ADDRESS_INVALID
    assert greylisted.outcome is Outcome.TRANSIENT
    assert last.outcome is Outcome.DELIVERED
    assert [(mail_from, to) for mail_from, to, _ in sink.handler.received] == [
        ("relay@relay.example.org", ["mother@example.com"]),
        ("relay@relay.example.org", ["mother@example.com"]),
        ("relay@relay.example.org", ["father@example.com"]),
    ]
    assert [m["Message-ID"] for m in sink.handler.messages()] == [
        "<42.1@relay.example.org>",
        "<42.5@relay.example.org>",
        "<42.4@relay.example.org>",
    ]
    statistics = sender.pool_statistics()
    assert (statistics.opened, statistics.reused) == (3, 2)


async def test_rendered_mail_goes_from_the_configured_envelope_sender(sink: SmtpSink) -> None:
    """With ``envelope_from`` set (bounces to the operator), a rendered mail's envelope
    uses it, on a fresh and on a kept session alike; the From header stays the relay's."""
    config = SmtpConfig(
        host="127.0.0.1",
        port=sink.port,
        starttls=False,
        timeout_s=10,
        connections=1,
        envelope_from="bounces@relay.example.org",
    )
    sender = sink.sender(config)
    for seq in (1, 2):
        assert (await sender.send(rendered(message_seq=seq))).outcome is Outcome.DELIVERED
    assert [mail_from for mail_from, _, _ in sink.handler.received] == [
        "bounces@relay.example.org",
        "bounces@relay.example.org",
    ]
    assert {m["From"].addresses[0].addr_spec for m in sink.handler.messages()} == {
        "relay@relay.example.org"
    }


async def test_unknown_mailbox_fails_for_good(sink: SmtpSink) -> None:
    """The smarthost refuses the address with 550 5.1.1: ADDRESS_INVALID, no retry."""
    sink.handler.refuse["mother@example.com"] = "550 5.1.1 No such user"
    result = await sink.sender().send(compose_family_mail(family_mail(), IDENTITY, BOOK, NOW))
    assert result.outcome is Outcome.PERMANENT
    assert result.reason is FailureReason.ADDRESS_INVALID
    assert "mother" not in result.detail


async def test_greylisting_is_transient(sink: SmtpSink) -> None:
    """A 451 at DATA (greylisting, full queue) is worth another try."""
    sink.handler.data_reply = "451 4.7.1 Greylisted, try again later"
    result = await sink.sender().send(compose_family_mail(family_mail(), IDENTITY, BOOK, NOW))
    assert result.outcome is Outcome.TRANSIENT


async def test_smarthost_down_is_transient() -> None:
    """Nobody listens on the smarthost's port: a transient connection failure."""
    config = SmtpConfig(host="127.0.0.1", port=free_port(), starttls=False, timeout_s=5)
    sender = MailSender(config)
    try:
        result = await sender.send(compose_family_mail(family_mail(), IDENTITY, BOOK, NOW))
    finally:
        await sender.aclose()
    assert result.outcome is Outcome.TRANSIENT
    assert result.reason is FailureReason.PROVIDER_ERROR
