"""Replies: a family's answer, by e-mail or SMS, made fit for the satellite link.

**E-mail**: :class:`ReplyServer` is an aiosmtpd server for the routed Reply-To addresses
(:class:`shore.mail.ReplyAddressBook`). An address that is not ours, or names a contact the
relay no longer knows, is refused at ``RCPT`` with 550, so nothing bounces later. A
message's text is extracted (:func:`extract_reply`): the plain part, or the HTML part turned
into text; quoted history (``On ... wrote:``, ``>`` lines, Outlook separators), signatures
(``-- ``) and attachments are left out, and a long reply is cut (between grapheme clusters)
and marked truncated. "250" is said only after ``on_reply`` returned, that is after the
relay committed the reply; if it raises, the sender's server hears 451 and tries again.
When something was not forwarded, the sender gets one auto-reply in their language
(English below it), sent through the same :class:`~shore.mail.MailSender`.

**SMS**: :class:`SmsWebhook` takes the provider's inbound webhook (form fields ``From``,
``To``, ``Body``, ``NumMedia``, signed with ``X-Twilio-Signature``) on a Starlette route
served by uvicorn, bounded in size before its body is read, and answers with TwiML, which
carries the notice back as an SMS when pictures were dropped or the text was cut.

Both hand each reply to ``on_reply(vessel_id, crew, contact, text, lang, truncated, now)``.

**Spoken replies** (e-mail): for a vessel named in :class:`~shore.reply_voice.
VoiceReplyConfig` (its agent reads voice replies), the first sound attachment of a mail
is coded with Codec2 (:mod:`shore.reply_voice`, in a thread) and handed with the mail's
text, if any, to ``on_spoken_reply(vessel_id, crew, contact, text or None, lang,
truncated, speech, now)``, which stores both in one transaction (so a 451 and the
sender's retry never leave half a reply behind). A memo that is not sound, silent or too
long is not forwarded: the notice says which, in the family's language, and the text
still goes down.
Logs name routes by number and sizes; never an address, a phone number or text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import regex
from aiosmtpd.smtp import SMTP
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Scope

from common.http import ANY_METHOD, BodyLimit, MalformedRequest, RequestRefused
from common.serving import AsgiServer
from common.speech import CodedSpeech
from protocol.languages import Language
from shore.mail import (
    ENGLISH,
    MAIL_POLICY,
    MailIdentity,
    MailSender,
    Phrases,
    ReplyAddressBook,
    ReplyRoute,
    clean_header_text,
    phrases_for,
)
from shore.reply_voice import (
    SpokenReplyRefused,
    VoiceRefusal,
    VoiceReplyConfig,
    code_spoken_reply,
    find_spoken_part,
    voice_notice_line,
)
from shore.retry import Outcome
from shore.sms import check_webhook_signature

log = logging.getLogger(__name__)

#: The callback that stores a reply for the crew member (the relay wires it to the store).
OnReply = Callable[[int, int, int, str, Language, bool, float], Awaitable[object]]
#: Stores a spoken reply with the mail's text (None when it had none), in one transaction:
#: ``(vessel_id, crew, contact, text, lang, truncated, speech, now)``.
OnSpokenReply = Callable[
    [int, int, int, str | None, Language, bool, CodedSpeech, float], Awaitable[object]
]

DEFAULT_REPLY_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ContactInfo:
    """What the relay knows of a family contact that matters for their replies."""

    lang: Language | None = None


#: Looks up a route's contact; None when the relay does not know it (mail is refused).
ContactLookup = Callable[[ReplyRoute], Awaitable[ContactInfo | None]]

# --- text: HTML, quotes, signatures, length -------------------------------------------------

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "div",
        "dl",
        "dt",
        "dd",
        "fieldset",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    ]
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template"})
_OUTLOOK_IDS = frozenset(
    {"divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container"}
)


class _HtmlText(HTMLParser):
    """Collects an HTML body's text: blocks become lines, quotes get ``> ``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.quote_depth = 0
        self.cut = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.cut:
            return
        attributes = {name: (value or "") for name, value in attrs}
        if tag in _SKIP_TAGS:
            self.skip_depth += 1
        elif tag == "blockquote" or "gmail_quote" in attributes.get("class", "").split():
            self.quote_depth += 1
            self.parts.append("\n")
        elif attributes.get("id", "").lower() in _OUTLOOK_IDS:
            self.cut = True  # Outlook puts the whole history after this marker
        elif tag == "br" or tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.cut:
            return
        if tag in _SKIP_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "blockquote" and self.quote_depth:
            self.quote_depth -= 1
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.cut or self.skip_depth:
            return
        text = re.sub(r"[ \t\r\n\f]+", " ", data)
        if self.quote_depth:
            text = text.replace("\n", "\n> ")
            if not self.parts or self.parts[-1].endswith("\n"):
                text = "> " + text.lstrip()
        self.parts.append(text)


def html_to_text(html: str) -> str:
    """The readable text of an HTML body (quotes prefixed ``> ``, Outlook history cut)."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return "\n".join(lines)


_ATTRIBUTION = re.compile(
    r"(wrote|a écrit|schrieb|escribió|escreveu|scrisse|schreef|menulis|đã viết|เขียนว่า|"
    r"kirjoitti|napisał)\s*:?\s*$",
    re.IGNORECASE,
)
_CUT_LINES = re.compile(
    r"^(-{2,}\s*(original message|forwarded message|ข้อความต้นฉบับ)\s*-{2,}|_{10,}|"
    r"sent from my \w+|get outlook for \w+|sent from (yahoo )?mail for \w+|"
    r"sent from yahoo mail)",
    re.IGNORECASE,
)
_HEADER_LINE = re.compile(r"^\*?(from|de|von|dari|từ|จาก)\s*:\*?\s", re.IGNORECASE)
_HEADER_FOLLOW = re.compile(r"^\*?(sent|date|to|subject|envoyé|gesendet|ngày|วันที่)\s*:", re.I)


def strip_quoted(text: str) -> str:
    """The family's own words: quoted lines, attributions, history and signature removed.

    ``>`` lines are dropped wherever they are (an answer written between quotes keeps its
    own lines); an ``On ... wrote:`` line is dropped; an Outlook separator or header block,
    a signature separator (``--``) or a "Sent from my phone" line ends the text.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped in ("--", "-- ") or line == "-- ":
            break
        if _CUT_LINES.match(stripped):
            break
        if _HEADER_LINE.match(stripped) and any(
            _HEADER_FOLLOW.match(follow.strip()) for follow in lines[index + 1 : index + 4]
        ):
            break
        if stripped.startswith(">"):
            continue
        if _ATTRIBUTION.search(stripped) and (
            re.search(r"\d|@", stripped) or stripped.lower().startswith("on ")
        ):
            continue
        if (
            stripped.lower().startswith("on ")
            and index + 1 < len(lines)
            and _ATTRIBUTION.search(lines[index + 1].strip())
        ):
            continue  # an attribution wrapped over two lines
        kept.append(line.rstrip())
    return _tidy("\n".join(kept))


def _tidy(text: str) -> str:
    """Collapse runs of blank lines and trim the ends."""
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def normalise_reply_text(text: str) -> str:
    """NFC, LF line ends, no control characters other than newline and tab."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    )


_GRAPHEME = regex.compile(r"\X")


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` characters between grapheme clusters; and whether cut."""
    if len(text) <= limit:
        return text, False
    out: list[str] = []
    length = 0
    for cluster in _GRAPHEME.findall(text):
        if length + len(cluster) > limit:
            break
        out.append(cluster)
        length += len(cluster)
    return "".join(out).rstrip(), True


_SCRIPTS: tuple[tuple[int, int, Language], ...] = (
    (0x1000, 0x109F, Language.MYA),
    (0xAA60, 0xAA7F, Language.MYA),
    (0x0E00, 0x0E7F, Language.THA),
    (0x0E80, 0x0EFF, Language.LAO),
    (0x1780, 0x17FF, Language.KHM),
    (0x19E0, 0x19FF, Language.KHM),
)
_LATIN_LANGUAGES = frozenset({Language.ENG, Language.VIE, Language.IND, Language.TGL})


def guess_language(text: str, hint: Language | None) -> Language:
    """The language frame for a reply: by script, using ``hint`` (the contact's) to choose.

    Myanmar script is Burmese unless the contact is a Shan speaker; Latin script is the
    contact's language when that is written in Latin, else English.
    """
    counts: dict[Language, int] = {}
    latin = 0
    for ch in text:
        code = ord(ch)
        if ch.isascii():
            latin += ch.isalpha()
            continue
        for low, high, lang in _SCRIPTS:
            if low <= code <= high:
                counts[lang] = counts.get(lang, 0) + 1
                break
        else:
            if ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN"):
                latin += 1
    if counts:
        script_lang = max(counts, key=lambda lang: counts[lang])
        if counts[script_lang] >= latin:
            if script_lang is Language.MYA and hint is Language.SHN:
                return Language.SHN
            return script_lang
    if latin:
        return hint if hint in _LATIN_LANGUAGES and hint is not None else Language.ENG
    return hint if hint is not None else Language.UND


# --- extracting a reply from a message ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExtractedReply:
    """What a family's e-mail holds for the crew member, and what was left out."""

    text: str
    truncated: bool
    dropped_attachments: int
    automatic: bool
    message_id: str | None


def extract_reply(raw: bytes, limit: int = DEFAULT_REPLY_LIMIT) -> ExtractedReply:
    """Parse a received message and keep only the family's own words, at most ``limit`` chars."""
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)  # policy.default makes EmailMessage objects
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        content = _part_text(body)
        if body.get_content_subtype() == "html":
            content = html_to_text(content)
        content = normalise_reply_text(content)
        text = strip_quoted(content) or _tidy(content)
    dropped = sum(1 for part in _leaf_parts(message) if _is_attachment(part, body))
    text, truncated = cap_text(text, limit)
    return ExtractedReply(text, truncated, dropped, _is_automatic(message), _message_id(message))


def _part_text(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _leaf_parts(message: Message) -> list[Message]:
    return [part for part in message.walk() if not part.is_multipart()]


def _is_attachment(part: Message, body: Message | None) -> bool:
    if part is body:
        return False
    if part.get_content_disposition() == "attachment":
        return True
    # Other text parts inline are the body's alternatives (plain vs HTML): not attachments.
    return part.get_content_maintype() != "text"


def _is_automatic(message: Message) -> bool:
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(message.get("Precedence", "")).strip().lower()
    return (
        auto != "no"
        or precedence in ("bulk", "junk", "list")
        or "List-Id" in message
        or "X-Autoreply" in message
    )


def _message_id(message: Message) -> str | None:
    value = clean_header_text(str(message.get("Message-ID", "")), 200)
    return value if re.fullmatch(r"<[^<>\s]+>", value) else None


# --- notices to the sender ------------------------------------------------------------------


def notice_lines(
    words: Phrases,
    dropped: int,
    truncated: bool,
    limit: int,
    *,
    voice: tuple[Language | None, VoiceRefusal, int] | None = None,
) -> list[str]:
    """The sentences that tell a sender what was not forwarded (``voice``: the language,
    refusal and limit in seconds of a voice memo that did not go down)."""
    lines = []
    if voice is not None:
        lines.append(voice_notice_line(*voice))
    if dropped:
        lines.append(words.notice_attachments.format(count=dropped))
    if truncated:
        lines.append(words.notice_truncated.format(limit=f"{limit:,}"))
    return lines


def compose_notice(
    to_address: str,
    lang: Language | None,
    dropped: int,
    truncated: bool,
    limit: int,
    identity: MailIdentity,
    in_reply_to: str | None,
    voice: tuple[VoiceRefusal, int] | None = None,
) -> EmailMessage:
    """The auto-reply (RFC 3834) telling a family what of their reply was not forwarded
    (``voice``: why their voice memo was not, and the limit in seconds)."""
    words = phrases_for(lang)
    sections: list[tuple[Language | None, Phrases]] = [(lang, words)]
    if words is not ENGLISH:
        sections.append((Language.ENG, ENGLISH))
    paragraphs = []
    for section_lang, section in sections:
        spoken = None if voice is None else (section_lang, *voice)
        items = notice_lines(section, dropped, truncated, limit, voice=spoken)
        paragraphs.append(section.notice_intro + "\n" + "\n".join(f"- {i}" for i in items))
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = Address(display_name="vessel-relay", addr_spec=identity.from_address)
    message["To"] = Address(addr_spec=to_address)
    message["Subject"] = clean_header_text(words.notice_subject, 200)
    message["Auto-Submitted"] = "auto-replied"
    message["Precedence"] = "bulk"
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message.set_content("\n\n".join(paragraphs) + "\n", charset="utf-8", cte="base64")
    return message


# --- the SMTP server ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyServerConfig:
    """Where the reply server listens and what it takes."""

    host: str = "127.0.0.1"
    port: int = 2525
    #: Name in the SMTP greeting.
    hostname: str = "vessel-relay"
    reply_limit_chars: int = DEFAULT_REPLY_LIMIT
    #: Largest message accepted (attachments are accepted, then dropped).
    max_message_bytes: int = 25 * 1024 * 1024
    max_recipients: int = 10
    #: One notice per sender address per this many seconds at most.
    notice_interval_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class _Spoken:
    """What became of a mail's voice memo: none found, coded, or refused (and why)."""

    found: bool
    speech: CodedSpeech | None = None
    refusal: VoiceRefusal | None = None


@dataclass(frozen=True, slots=True)
class ReplyStatistics:
    """Counters for the status page."""

    refused_recipients: int
    replies_stored: int
    replies_truncated: int
    attachments_dropped: int
    automatic_dropped: int
    empty_dropped: int
    store_failures: int
    notices_sent: int
    notices_failed: int
    voice_replies_stored: int
    voice_replies_refused: int


class ReplyServer:
    """The SMTP server for families' answers; ``await start()``, ``await run(stopping)``.

    ``run`` sends the queued notices until ``stopping`` is set; put it in the relay's task
    group. ``stop`` closes the listener. ``clock`` gives ``now`` for ``on_reply``.
    """

    def __init__(
        self,
        config: ReplyServerConfig,
        reply_book: ReplyAddressBook,
        lookup: ContactLookup,
        on_reply: OnReply,
        identity: MailIdentity,
        notices: MailSender | None = None,
        clock: Callable[[], float] = time.time,
        *,
        voice: VoiceReplyConfig | None = None,
        on_spoken_reply: OnSpokenReply | None = None,
    ) -> None:
        if (voice is None) != (on_spoken_reply is None):
            raise ValueError("spoken replies need both a VoiceReplyConfig and on_spoken_reply")
        self.config = config
        self.reply_book = reply_book
        self.lookup = lookup
        self.on_reply = on_reply
        self.voice = voice
        self.on_spoken_reply = on_spoken_reply
        self.identity = identity
        self.notices = notices
        self.clock = clock
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._queue: asyncio.Queue[EmailMessage] = asyncio.Queue(maxsize=1000)
        self._last_notice: dict[str, float] = {}
        self._counts = dict.fromkeys(ReplyStatistics.__slots__, 0)

    def statistics(self) -> ReplyStatistics:
        """Counters since start."""
        return ReplyStatistics(**self._counts)

    async def start(self) -> None:
        """Listen on the configured host and port (in the running loop)."""
        loop = asyncio.get_running_loop()
        config = self.config

        def factory() -> Any:
            return SMTP(
                self,
                hostname=config.hostname,
                ident="vessel-relay reply server",
                data_size_limit=config.max_message_bytes,
                enable_SMTPUTF8=True,
                decode_data=False,
                loop=loop,
            )

        self._server = await loop.create_server(factory, config.host, config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("reply server listening on %s:%d", config.host, self.port)

    async def stop(self) -> None:
        """Stop accepting connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            self._server = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Send queued notices until ``stopping`` is set (then stop the listener)."""
        try:
            while not stopping.is_set():
                get = asyncio.ensure_future(self._queue.get())
                stop = asyncio.ensure_future(stopping.wait())
                try:
                    await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    if not get.done():
                        get.cancel()
                if get.done() and not get.cancelled():
                    await self._send_notice(get.result())
        finally:
            await self.stop()

    async def _send_notice(self, notice: EmailMessage) -> None:
        if self.notices is None:
            return
        for attempt in range(3):
            result = await self.notices.send(notice)
            if result.outcome is Outcome.DELIVERED:
                self._counts["notices_sent"] += 1
                return
            if result.outcome is Outcome.PERMANENT:
                break
            await asyncio.sleep(2.0 * (attempt + 1))
        self._counts["notices_failed"] += 1
        log.warning("notice to a reply sender not sent")

    # aiosmtpd hooks (called by its SMTP protocol; they return the SMTP reply) ---------------

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return "452 4.5.3 Too many recipients"
        route = self.reply_book.resolve(address)
        contact = await self.lookup(route) if route is not None else None
        if route is None or contact is None:
            self._counts["refused_recipients"] += 1
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw).encode("utf-8", "surrogateescape")
        limit = self.config.reply_limit_chars
        extracted = extract_reply(raw, limit)
        sender = str(envelope.mail_from or "")
        if extracted.automatic or not sender or sender.lower().startswith("mailer-daemon"):
            self._counts["automatic_dropped"] += 1
            return "250 OK: automatic message, not forwarded"
        now = self.clock()
        notice_lang: Language | None = None
        spoken: _Spoken | None = None
        for address in envelope.rcpt_tos:
            route = self.reply_book.resolve(address)
            contact = await self.lookup(route) if route is not None else None
            if route is None or contact is None:
                continue  # the contact vanished between RCPT and DATA
            notice_lang = notice_lang or contact.lang
            if spoken is None and self.voice is not None and self.voice.takes(route.vessel_id):
                spoken = await self._code_spoken(raw)
            speech = spoken.speech if spoken is not None else None
            if not extracted.text and speech is None:
                continue
            text = extracted.text or None
            lang = guess_language(extracted.text, contact.lang)
            try:
                if speech is not None:
                    assert self.on_spoken_reply is not None  # checked in __init__
                    await self.on_spoken_reply(
                        route.vessel_id,
                        route.crew,
                        route.contact,
                        text,
                        lang,
                        extracted.truncated,
                        speech,
                        now,
                    )
                elif text is not None:
                    await self.on_reply(
                        route.vessel_id,
                        route.crew,
                        route.contact,
                        text,
                        lang,
                        extracted.truncated,
                        now,
                    )
            except Exception:
                self._counts["store_failures"] += 1
                log.exception("storing a reply for vessel %d failed", route.vessel_id)
                return "451 4.3.0 Could not store your reply now; please try again later"
            self._counts["replies_stored"] += 1
            self._counts["voice_replies_stored"] += speech is not None
            log.info(
                "reply stored: vessel %d crew %d contact %d, %d chars%s%s",
                route.vessel_id,
                route.crew,
                route.contact,
                len(extracted.text),
                " (truncated)" if extracted.truncated else "",
                "" if speech is None else f", {speech.duration_ms} ms of speech",
            )
        refusal = spoken.refusal if spoken is not None else None
        # the memo that went down, or whose refusal the notice explains, is no plain drop
        dropped = extracted.dropped_attachments - (spoken is not None and spoken.found)
        if not extracted.text and (spoken is None or spoken.speech is None):
            self._counts["empty_dropped"] += 1
        self._counts["replies_truncated"] += extracted.truncated
        self._counts["attachments_dropped"] += dropped
        self._counts["voice_replies_refused"] += refusal is not None
        if dropped or extracted.truncated or refusal is not None:
            self._queue_notice(sender, notice_lang, extracted, dropped, refusal, now)
        return "250 OK: reply forwarded to the vessel"

    async def _code_spoken(self, raw: bytes) -> _Spoken:
        """The mail's voice memo coded for the link, refused with a reason, or not found."""
        assert self.voice is not None
        part = await asyncio.to_thread(find_spoken_part, raw)
        if part is None:
            return _Spoken(found=False)
        try:
            speech = await asyncio.to_thread(code_spoken_reply, part.data, self.voice)
        except SpokenReplyRefused as refused:
            return _Spoken(found=True, refusal=refused.refusal)
        return _Spoken(found=True, speech=speech)

    def _queue_notice(
        self,
        sender: str,
        lang: Language | None,
        extracted: ExtractedReply,
        dropped: int,
        refusal: VoiceRefusal | None,
        now: float,
    ) -> None:
        if self.notices is None:
            return
        key = sender.lower()
        last = self._last_notice.get(key)
        if last is not None and now - last < self.config.notice_interval_s:
            return
        if len(self._last_notice) > 10_000:
            self._last_notice.clear()
        try:
            notice = compose_notice(
                sender,
                lang,
                dropped,
                extracted.truncated,
                self.config.reply_limit_chars,
                self.identity,
                extracted.message_id,
                voice=None
                if refusal is None or self.voice is None
                else (refusal, self.voice.max_seconds),
            )
        except (ValueError, IndexError):
            return  # a sender address we cannot write back to
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self._counts["notices_failed"] += 1
            return
        self._last_notice[key] = now


# --- the SMS webhook -------------------------------------------------------------------------

#: Finds the route of an inbound SMS from (family number, relay number), with the contact.
SmsRouteLookup = Callable[[str, str], Awaitable[tuple[ReplyRoute, ContactInfo] | None]]

_EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@dataclass(frozen=True, slots=True)
class SmsWebhookConfig:
    """The inbound webhook as the provider calls it."""

    #: The full public URL configured at the provider (signatures cover it exactly).
    public_url: str
    auth_token: str
    reply_limit_chars: int = DEFAULT_REPLY_LIMIT
    host: str = "127.0.0.1"
    port: int = 8031

    @property
    def path(self) -> str:
        """The path part of the public URL (what the server matches)."""
        rest = self.public_url.split("://", 1)[-1]
        return "/" + rest.split("/", 1)[1].split("?", 1)[0] if "/" in rest else "/"


#: Largest webhook request: the provider's form for a 1,600-character reply (percent-encoded,
#: up to 9 bytes a character) with ten pictures and its ~30 other fields is under 20 KB.
WEBHOOK_BODY_BYTES = 64 * 1024
#: Form fields in one webhook request (the provider sends about 30; each picture adds two).
WEBHOOK_MAX_FIELDS = 100


def _webhook_refusal(status: int, message: str) -> JSONResponse:
    """The webhook's error format (the provider logs it; nobody reads it on a phone)."""
    return JSONResponse({"status": status, "message": message}, status_code=status)


def _refuse(scope: Scope, error: RequestRefused) -> ASGIApp:
    log.warning("SMS webhook request refused: %s", error.code)
    return _webhook_refusal(error.status, error.sentence)


class SmsWebhook:
    """Takes families' SMS replies from the provider's webhook; ``await serve()`` to listen.

    A Starlette app (:attr:`app`, served by uvicorn through :class:`common.serving.AsgiServer`)
    with one door: ``POST`` to the path of ``config.public_url``. Its body is bounded
    (:data:`WEBHOOK_BODY_BYTES`, refused before it is read), its form bounded
    (:data:`WEBHOOK_MAX_FIELDS`, strict UTF-8), and its ``X-Twilio-Signature`` checked over
    the public URL and every field before anything is looked up or stored. ``routes``
    go before it on the same public app (the voice links' pages, :mod:`shore.voice_links`).
    """

    def __init__(
        self,
        config: SmsWebhookConfig,
        lookup: SmsRouteLookup,
        on_reply: OnReply,
        clock: Callable[[], float] = time.time,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.config = config
        self.lookup = lookup
        self.on_reply = on_reply
        self.clock = clock
        self.port = config.port
        self._server: AsgiServer | None = None
        self.unknown_senders = 0
        self.forged = 0
        self.stored = 0
        self.app: ASGIApp = Starlette(
            routes=[*routes, Route("/{path:path}", self.handle, methods=ANY_METHOD)],
            middleware=[Middleware(BodyLimit, limit_bytes=WEBHOOK_BODY_BYTES, refuse=_refuse)],
        )

    async def serve(self) -> None:
        """Start listening (the port is in ``self.port`` afterwards)."""
        server = AsgiServer(self.app, self.config.host, self.config.port, name="SMS reply webhook")
        await server.start()
        self._server = server
        self.port = server.port

    async def stop(self) -> None:
        """Stop listening (open requests finish first, for a few seconds at most)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    async def handle(self, request: Request) -> Response:
        """Answer one webhook request."""
        if request.url.path != self.config.path:
            return _webhook_refusal(404, "not found")
        if request.method != "POST":
            return _webhook_refusal(405, "POST only")
        try:
            form = await _webhook_form(request)
        except RequestRefused as refused:
            log.warning("SMS webhook request refused: %s", refused.code)
            return _webhook_refusal(refused.status, refused.sentence)
        signature = request.headers.get("x-twilio-signature")
        if not check_webhook_signature(
            self.config.public_url, form, self.config.auth_token, signature
        ):
            self.forged += 1
            log.warning("SMS webhook request with a bad signature refused")
            return _webhook_refusal(403, "bad signature")
        try:
            return await self._take(form)
        except Exception:
            log.exception("SMS webhook: the reply could not be stored")
            return _webhook_refusal(503, "the reply could not be stored now; try again later")

    async def _take(self, form: Mapping[str, str]) -> Response:
        found = await self.lookup(form.get("From", ""), form.get("To", ""))
        if found is None:
            self.unknown_senders += 1
            log.info("SMS reply from a number no crew member wrote to: dropped")
            return Response(_EMPTY_TWIML, media_type="text/xml")
        route, contact = found
        count = form.get("NumMedia", "")
        media = int(count) if count.isascii() and count.isdigit() and len(count) <= 3 else 0
        text = _tidy(normalise_reply_text(form.get("Body", "")))
        limit = self.config.reply_limit_chars
        text, truncated = cap_text(text, limit)
        if text:
            lang = guess_language(text, contact.lang)
            now = self.clock()
            await self.on_reply(
                route.vessel_id, route.crew, route.contact, text, lang, truncated, now
            )
            self.stored += 1
            log.info(
                "SMS reply stored: vessel %d crew %d contact %d, %d chars",
                route.vessel_id,
                route.crew,
                route.contact,
                len(text),
            )
        lines = notice_lines(phrases_for(contact.lang), media, truncated, limit)
        if not lines:
            return Response(_EMPTY_TWIML, media_type="text/xml")
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
            + xml_escape(" ".join(lines))
            + "</Message></Response>"
        )
        return Response(twiml.encode("utf-8"), media_type="text/xml")


async def _webhook_form(request: Request) -> dict[str, str]:
    """The webhook's form fields (last of a repeated name wins, as the provider signs them),
    or :class:`~common.http.MalformedRequest`: not a URL-encoded form, not UTF-8, too many
    fields."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise MalformedRequest("the webhook takes application/x-www-form-urlencoded forms")
    body = await request.body()  # bounded by BodyLimit
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("the form is not UTF-8") from None
    try:
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, max_num_fields=WEBHOOK_MAX_FIELDS
        )
    except ValueError:
        raise MalformedRequest(f"the form has more than {WEBHOOK_MAX_FIELDS} fields") from None
    return dict(pairs)  # percent-escapes that are not UTF-8 read as U+FFFD: no surrogates
