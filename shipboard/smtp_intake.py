"""SMTP intake: crew members send family messages and grievance reports from any mail app.

The server (aiosmtpd) speaks SMTP with STARTTLS required; AUTH PLAIN or LOGIN (crew number
and PIN) is accepted only after STARTTLS. It offers SMTPUTF8 (UTF-8 addresses and headers)
and announces its size limit (``SIZE``). Recipients are the crew member's own family
contacts (an e-mail address, or an SMS contact written as ``+959123456789@sms``: any
domain, the part before ``@`` is the phone number), or the vessel's own addresses
(:mod:`shipboard.mail_addresses`): ``report+<union>@vessel`` files a grievance report,
sealed for that union through the same intake as the crew page's report form
(:meth:`shipboard.intake.Intake.file_grievance`); ``report@vessel`` lists the unions'
report addresses (in its refusal: the one text every mail app shows).

Every answer is a promise or a specific refusal, in plain words, with an RFC 3463
enhanced status code; in the crew member's language too when the mail app asked for
SMTPUTF8 (:mod:`shipboard.smtp_replies`):

* 250 only after the message (or the sealed report) is committed;
* 550 5.1.1 unknown recipient (add the contact first);
* 550 5.6.0 a mail without text, or whose text cannot be read (its encoding named);
  550 5.6.1 a mail with attachments only (text is what goes to sea);
* 552 5.3.4 a mail over the size limit (announced in EHLO, refused at MAIL when the
  app says its size, else at the end of DATA), or a text too long for one message;
* 452 4.2.2 not enough quota left this month (with the balance); 552 5.2.2 if it can
  never fit;
* 451 the outbox cannot store (disk full or broken), or the grievance lane is full
  until a time: the phone keeps the mail and retries;
* 535 wrong crew number or PIN;
* 454 sign-in paused for this crew number after too many wrong PINs on any door (the
  crew page, the API, SMTP): try again in N minutes; an SOS needs no PIN.

Nothing about the message (text, addresses) is logged; only numbers and sizes. Nothing
at all is logged or counted about a report, a report address or the list of unions
(accepted, refused or failed), as on the crew page: the journal is the owner's
(``docs/threat-model.md``); the agent keeps aiosmtpd's own logger to warnings
(:func:`shipboard.agent.quiet_libraries`), which never name an address.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import email
import email.policy
import logging
import math
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, AnyStr, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from common.signins import SignInGuard
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from shipboard.config import ShipConfig
from shipboard.crew import MAX_CREW_NUMBER, SIGNED_OFF, CrewRegister, SignedIn
from shipboard.errors import (
    BadText,
    IntakeRefused,
    LaneBusy,
    MessageTooLarge,
    NotSignedIn,
    OutboxUnavailable,
    QuotaExceeded,
    SignInPaused,
    UnknownContact,
    UnknownUnion,
)
from shipboard.mail_addresses import (
    ReportAddress,
    UnionList,
    report_addresses,
    vessel_address,
)
from shipboard.outbox import AcceptedMessage
from shipboard.signin import CrewSignIn
from shipboard.smtp_replies import Reply
from shipboard.web import mail_words
from shipboard.web.i18n import Translations
from shipboard.web.pages import LEAVES_LATE, LEAVES_USUALLY, REFUSAL_WORDS

if TYPE_CHECKING:
    from shipboard.intake import FiledReport

logger = logging.getLogger(__name__)

#: Largest e-mail (headers, attachments and all) the intake reads.
MAX_MAIL_BYTES = 256 * 1024
_PHONE = re.compile(r"^\+?[0-9][0-9\s\-().]{5,20}$")


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "li", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The visible text of an HTML mail body, with line breaks kept."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True, slots=True)
class MailText:
    """What a mail carries: its text, its Subject, and how many attachments were dropped."""

    text: str
    attachments_dropped: int
    subject: str = ""

    @property
    def with_subject(self) -> str:
        """A report's text: the Subject as the first line, then a blank line and the text
        (the Subject alone when the text is empty or begins with it), so that the union
        reads what the crew member wrote there (a report is sealed whole). A family
        message carries its Subject beside the text instead (:meth:`Intake.send_messages`'s
        ``subject``; its text is the Subject when the mail's text is empty)."""
        if not self.subject or self.text.startswith(self.subject):
            return self.text
        return f"{self.subject}\n\n{self.text}"


class MailUnreadable(BadText):
    """A mail the intake cannot take for its content: ``reply`` says what is wrong (an
    RFC 3463 ``5.6.x`` code: media, not mailbox) and what to do."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.msgid.format(**reply.fields))
        self.reply = reply


def _charset_name(charset: str) -> str:
    """A charset name as a mail said it, safe to repeat in a reply (40 ASCII characters)."""
    return "".join(c for c in charset if c.isascii() and c.isprintable())[:40] or "?"


def _decode(raw: bytes, charset: str | None) -> str:
    """A text part's bytes as text, strictly: an encoding nobody knows, or bytes that are
    not what the part says they are, raise :class:`MailUnreadable` naming it. A part that
    says nothing (or US-ASCII) but carries UTF-8 is read as UTF-8, as mail apps mean it."""
    declared = (charset or "us-ascii").strip().lower()
    try:
        codec = codecs.lookup(declared)
    except LookupError:
        raise MailUnreadable(
            Reply(550, "5.6.0", mail_words.UNKNOWN_CHARSET, {"charset": _charset_name(declared)})
        ) from None
    names = [codec.name, "utf-8"] if codec.name == "ascii" else [codec.name]
    for name in names:
        try:
            return raw.decode(name)
        except UnicodeDecodeError:
            continue
    shown = "UTF-8" if codec.name == "utf-8" else _charset_name(declared)
    raise MailUnreadable(Reply(550, "5.6.0", mail_words.NOT_UTF8, {"charset": shown}))


def mail_text(data: bytes, *, keep_quotes: bool = False) -> MailText:
    """Parse a mail (stdlib email, policy=default) and take its text/plain or HTML text.

    Quoted lines (``> ...``) of an earlier message are dropped (unless ``keep_quotes``:
    a report keeps what it quotes): they cost satellite bytes and the family already has
    them. A mail whose text part is empty gives its Subject as the text. Raises
    :class:`MailUnreadable` for a mail without text, with attachments only, or whose
    text cannot be read (an unknown encoding, bytes that are not the declared one).
    """
    try:
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        subject = " ".join(str(message.get("subject", "") or "").split())
        body = message.get_body(preferencelist=("plain", "html"))
        attachments = sum(1 for _ in message.iter_attachments())
        if body is None:
            raw, charset, subtype = None, None, ""
        else:
            payload = body.get_payload(decode=True)
            raw = payload if isinstance(payload, bytes) else b""
            charset, subtype = body.get_content_charset(), body.get_content_subtype()
    except (LookupError, UnicodeError, ValueError, TypeError, AssertionError) as exc:
        raise MailUnreadable(
            Reply(550, "5.6.0", mail_words.UNKNOWN_CHARSET, {"charset": "?"})
        ) from exc
    if raw is None:  # no text/plain or text/html part: a photo, a file, a calendar entry
        raise MailUnreadable(Reply(550, "5.6.1", mail_words.ONLY_ATTACHMENTS))
    content = _decode(raw, charset)
    text = html_to_text(content) if subtype == "html" else content
    kept = text.splitlines()
    if not keep_quotes:
        kept = [line for line in kept if not line.lstrip().startswith(">")]
        while kept and re.match(r"^On .+ wrote:\s*$", kept[-1]):
            kept.pop()
    found = "\n".join(kept).strip()
    if not found and attachments:
        raise MailUnreadable(Reply(550, "5.6.1", mail_words.ONLY_ATTACHMENTS))
    if not found and not subject:
        raise MailUnreadable(Reply(550, "5.6.0", mail_words.EMPTY_MAIL))
    return MailText(found or subject, attachments, subject)


def crew_number(login: bytes) -> int | None:
    """The crew number of an SMTP login (``3`` or ``crew3``), or None if it is not one."""
    text = login.decode("ascii", "replace").strip().lower().removeprefix("crew")
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    number = int(text)
    return number if 0 < number <= MAX_CREW_NUMBER else None


async def _initial_response(server: SMTP, blob: str) -> bytes | None:
    """The base64 initial response of an AUTH command, or None (answered 501)."""
    try:
        return base64.b64decode(blob.encode("ascii"), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII (aiosmtpd keeps bytes as surrogates)
        await server.push("501 5.5.2 Can't decode base64")
        return None


async def _challenge(server: SMTP, challenge: str) -> bytes | None:
    """Ask for the next AUTH answer; None when there is none (already answered 501)."""
    try:
        answer = await server.challenge_auth(challenge)
    except ValueError:  # the answer line was longer than aiosmtpd's line limit
        await server.push("501 5.5.2 The answer is too long.")
        return None
    return answer if isinstance(answer, bytes) else None  # MISSING: '*' or bad base64


def refusal_reply(error: IntakeRefused, quota_bytes: int) -> Reply:
    """The SMTP reply for an intake refusal: its code, the enhanced code of what is wrong
    (the recipient 5.1.1, size 5.3.4, quota 4.2.2/5.2.2, content 5.6.0, a full lane
    4.3.1), and its sentence (translatable when it has a catalogue msgid)."""
    if isinstance(error, MailUnreadable):
        return error.reply
    code, enhanced = error.smtp_code, "5.0.0" if error.smtp_code >= 500 else "4.0.0"
    if isinstance(error, QuotaExceeded):
        code, enhanced = 452, "4.2.2"
        if error.needed_bytes > quota_bytes:
            code, enhanced = 552, "5.2.2"  # more than a whole month's quota: retrying cannot help
    elif isinstance(error, MessageTooLarge):
        enhanced = "5.3.4"
    elif isinstance(error, BadText):
        enhanced = "5.6.0"
    elif isinstance(error, UnknownContact | UnknownUnion):
        enhanced = "5.1.1"
    elif isinstance(error, LaneBusy):
        enhanced = "4.3.1"
    elif isinstance(error, SignInPaused):
        enhanced = "4.7.0"
    elif isinstance(error, NotSignedIn):
        enhanced = "5.7.8"
    if error.msgid is not None:
        return Reply(code, enhanced, error.msgid, dict(error.fields))
    # The exact English sentence (with its figures); in the crew member's language, the
    # crew page's words for the same refusal where they fit a mail (quota, too long).
    own = (
        REFUSAL_WORDS.get(error.code)
        if isinstance(error, QuotaExceeded | MessageTooLarge)
        else None
    )
    return Reply(code, enhanced, "{sentence}", {"sentence": error.sentence}, own_msgid=own)


WRONG_LOGIN = "535 5.7.8 Wrong crew number or PIN. Check both and try again."
STORAGE_DOWN = "454 4.7.0 The storage on board is not working. Try again later."


class MailIntake(Protocol):
    """What the SMTP door needs of intake (:class:`shipboard.intake.Intake`): the crew
    register (sign-in, finding a contact by address), the quota, and committing."""

    @property
    def config(self) -> ShipConfig: ...

    @property
    def register(self) -> CrewRegister: ...

    @property
    def clock(self) -> Callable[[], float]:
        """Wall-clock seconds (the week of a sign-in is recorded by it)."""
        ...

    def send_messages(
        self,
        crew: int,
        contacts: Sequence[int],
        text: str | None,
        lang: Language | None = None,
        quick: int | None = None,
        subject: str | None = None,
    ) -> list[AcceptedMessage]:
        """Commit one message to several of the crew member's contacts (all or none),
        with the mail's Subject line when the relay reads subjects."""
        ...

    def file_grievance(
        self,
        signed_in: SignedIn,
        *,
        union_id: int,
        category: GrievanceCategory,
        text: str,
        lang: Language,
        anonymous: bool,
    ) -> FiledReport:
        """Seal a report to the union and commit it into the grievance lane (mode B)."""
        ...


@dataclass
class SmtpIntakeHandler:
    """aiosmtpd handler: checks recipients at RCPT, commits at DATA, answers after commit.

    AUTH PLAIN and LOGIN are this handler's own (they replace aiosmtpd's, which check the
    secret on the event loop): the crew number and PIN go to the process's one sign-in
    guard and are checked in a thread (:mod:`shipboard.signin`), so wrong PINs count with
    the crew page's and the API's, and a paused crew number gets ``454 4.7.0``.
    """

    intake: MailIntake
    guard: SignInGuard = field(default_factory=SignInGuard)
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    #: The crew page's catalogues: replies in the crew member's language (SMTPUTF8 only).
    words: Translations = field(default_factory=Translations)

    def __post_init__(self) -> None:
        self.signins = CrewSignIn(self.intake.register, self.guard, self.intake.clock)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator hook: only reached by a mechanism other than PLAIN or
        LOGIN (both are :meth:`auth_PLAIN` / :meth:`auth_LOGIN`), which it refuses."""
        del server, session, envelope, auth_data
        logger.info("SMTP AUTH %s refused (only PLAIN and LOGIN)", mechanism[:20])
        return AuthResult(success=False, handled=False, message=WRONG_LOGIN)

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """AUTH PLAIN (RFC 4616): ``authzid NUL crew-number NUL PIN``, base64."""
        if len(args) == 1:
            blob = await _challenge(server, "")
        else:
            blob = await _initial_response(server, args[1])
        if blob is None:
            return AuthResult(success=False, handled=True)  # already answered (501)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._sign_in(parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """AUTH LOGIN: the crew number, then the PIN, each base64 (asked for in turn)."""
        if len(args) == 1:
            login = await _challenge(server, server.AuthLoginUsernameChallenge)
        else:
            login = await _initial_response(server, args[1])
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await _challenge(server, server.AuthLoginPasswordChallenge)
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._sign_in(login, password)

    async def _sign_in(self, login: bytes, password: bytes) -> AuthResult:
        crew = crew_number(login)
        if crew is None:  # not a crew number: nothing to count it against, nothing checked
            self._count("not-signed-in")
            return AuthResult(success=False, handled=False, message=WRONG_LOGIN)
        pin = password.decode("utf-8", "replace")  # anything but digits is a wrong PIN
        try:
            signed_in = await asyncio.to_thread(self.signins.sign_in, crew, pin)
        except SignInPaused as paused:
            self._count(paused.code)
            return AuthResult(
                success=False,
                handled=False,
                message=(
                    "454 4.7.0 Too many wrong PINs for this crew number. Try again in "
                    f"{paused.retry_after_minutes} min. An SOS needs no PIN: use the SOS "
                    "button on the crew page."
                ),
            )
        except NotSignedIn as wrong:
            self._count(wrong.code)
            message = WRONG_LOGIN
            if wrong.sentence == SIGNED_OFF:
                message = "535 5.7.8 You are signed off this vessel; mail can no longer be sent."
            return AuthResult(success=False, handled=False, message=message)
        except OutboxUnavailable:
            self._count("storage")
            return AuthResult(success=False, handled=False, message=STORAGE_DOWN)
        return AuthResult(success=True, auth_data=signed_in)

    async def handle_exception(self, error: Exception) -> str:
        """A bug: logged once with its traceback; the phone is told to try again later,
        and nothing of the inside (aiosmtpd would answer the exception's text)."""
        logger.error("SMTP intake: unexpected error", exc_info=error)
        self._count("internal")
        return "451 4.3.0 Something went wrong on board. Your phone will try again later."

    def say(self, reply: Reply, session: Session, envelope: Envelope | None) -> str:
        """``reply`` for this session: in the signed-in crew member's language as well when
        the transaction asked for SMTPUTF8 (RFC 6531 3.7.4.2), else in ASCII English."""
        signed_in = session.auth_data
        lang = signed_in.member.language if isinstance(signed_in, SignedIn) else None
        utf8 = envelope is not None and bool(envelope.smtp_utf8)
        return reply.render(lang, utf8, self.words)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        del server, rcpt_options
        signed_in = session.auth_data
        if not isinstance(signed_in, SignedIn):
            return "530 5.7.0 Sign in first with your crew number and PIN."
        # The vessel's own addresses first (a dot-less domain no family address has);
        # nothing about them is logged or counted, taken or refused.
        unions = self.intake.config.unions
        own = vessel_address(address, unions)
        if own is not None:
            if isinstance(own, ReportAddress) and not envelope.rcpt_tos:
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"
            if isinstance(own, ReportAddress):
                return self.say(Reply(550, "5.5.3", mail_words.REPORT_ALONE), session, envelope)
            msgid = (
                mail_words.UNION_LIST if isinstance(own, UnionList)
                else mail_words.NO_SUCH_REPORT_ADDRESS
            )  # fmt: skip
            return self.say(self._union_list(msgid, envelope), session, envelope)
        if self._report_of(envelope) is not None:
            return self.say(Reply(550, "5.5.3", mail_words.REPORT_ALONE), session, envelope)
        try:
            contact = await asyncio.to_thread(self._find_contact, signed_in.member.crew, address)
        except OutboxUnavailable:
            return "451 4.3.0 The storage on board is not working. Your phone will try again."
        if contact is None:
            self._count("unknown-contact")
            return (
                "550 5.1.1 This address is not in your family contacts. Add the contact "
                "first on the crew page or ask the captain, then send again."
            )
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def _union_list(self, msgid: str, envelope: Envelope) -> Reply:
        """A refusal (550 5.1.0) whose lines are the unions' report addresses."""
        utf8 = bool(envelope.smtp_utf8)
        lines = [
            f"{address} {union.name if utf8 or union.name.isascii() else ''}".rstrip()
            for union, address in report_addresses(self.intake.config.unions)
        ]
        return Reply(550, "5.1.0", msgid, extra=lines)

    def _report_of(self, envelope: Envelope) -> ReportAddress | None:
        """The report address of this transaction, if its recipient is one."""
        for address in envelope.rcpt_tos:
            own = vessel_address(address, self.intake.config.unions)
            if isinstance(own, ReportAddress):
                return own
        return None

    def _find_contact(self, crew: int, address: str) -> int | None:
        register = self.intake.register
        local = address.rpartition("@")[0]
        found = register.find_contact(crew, "email", address)
        if found is None and _PHONE.match(local):
            found = register.find_contact(crew, "sms", local)
        return found.contact if found is not None else None

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        del server
        signed_in = session.auth_data
        if not isinstance(signed_in, SignedIn):
            return "530 5.7.0 Sign in first with your crew number and PIN."
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not data:
            data = envelope.content
        report = self._report_of(envelope)
        if report is not None:
            return await self._file_report(signed_in, report, data, session, envelope)
        try:
            text = mail_text(data)
            accepted = await asyncio.to_thread(
                self._commit, signed_in.member.crew, envelope.rcpt_tos, text.text, text.subject
            )
        except IntakeRefused as refused:
            self._count(refused.code)
            reply = refusal_reply(refused, self.intake.config.quota.crew_text_bytes)
            return self.say(reply, session, envelope)
        except OutboxUnavailable:
            self._count("storage")
            return (
                "451 4.3.0 The message was NOT saved: the storage on board is full or "
                "broken. Your phone will try again later."
            )
        self.accepted += len(accepted)
        numbers = ", ".join(str(seq) for seq in accepted)
        note = ""
        if text.attachments_dropped:
            note = f"; {text.attachments_dropped} attachment(s) not sent (text only at sea)"
        return f"250 2.0.0 Saved on board as message {numbers}{note}"

    async def _file_report(
        self,
        signed_in: SignedIn,
        report: ReportAddress,
        data: bytes,
        session: Session,
        envelope: Envelope,
    ) -> str:
        """File a mailed report through the crew page's own intake (sealed before the
        vessel database sees it, into the lane with the reporter's casebook); answer with
        its case number and receipt code. Nothing is logged or counted, whatever happens."""
        try:
            mail = mail_text(data, keep_quotes=True)
            text = mail.with_subject
            filed = await asyncio.to_thread(
                self.intake.file_grievance,
                signed_in,
                union_id=report.union_id,
                category=report.category,
                text=text,
                lang=signed_in.member.language,
                anonymous=report.anonymous,
            )
            del text, mail, data
        except IntakeRefused as refused:
            reply = refusal_reply(refused, self.intake.config.quota.crew_text_bytes)
            return self.say(reply, session, envelope)
        except OutboxUnavailable:
            return (
                "451 4.3.0 The report was NOT saved: the storage on board is full or "
                "broken. Your phone will try again later."
            )
        return self.say(self._report_saved(filed, report, envelope), session, envelope)

    def _report_saved(self, filed: FiledReport, report: ReportAddress, envelope: Envelope) -> Reply:
        union = self.intake.config.union(report.union_id)
        name = union.name if union is not None else str(report.union_id)
        if not (envelope.smtp_utf8 or name.isascii()):
            name = f"union {report.union_id}"
        fields = {"union": name, "case": filed.case_number, "receipt": filed.receipt_code}
        if not filed.leaves_late:
            leaves: tuple[str, dict[str, object]] = (LEAVES_USUALLY, {})
        else:
            moment = datetime.fromtimestamp(filed.leaves_by, UTC)
            when = moment.astimezone(self.intake.config.time_zone).strftime("%Y-%m-%d %H:%M")
            leaves = (LEAVES_LATE, {"time": when})
        return Reply(250, "2.0.0", mail_words.REPORT_SAVED, fields, also=(leaves,))

    def _commit(self, crew: int, addresses: list[str], text: str, subject: str) -> list[int]:
        contacts: list[int] = []
        for address in addresses:
            contact = self._find_contact(crew, address)
            if contact is None:  # removed between RCPT and DATA
                raise UnknownContact("This address is not in your family contacts any more.")
            if contact not in contacts:
                contacts.append(contact)
        accepted = self.intake.send_messages(crew, contacts, text, subject=subject or None)
        return [message.message_seq for message in accepted]

    def _count(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1
        logger.info("SMTP intake refused: %s", code)


class CrewSMTP(SMTP):
    """aiosmtpd's SMTP, saying its own size refusals in plain words: a ``SIZE=`` over the
    limit at MAIL, and a mail over it at the end of DATA (aiosmtpd's stock replies are
    "message size exceeds fixed maximum message size" and "Too much mail data"), and a
    DATA line longer than mail allows."""

    event_handler: SmtpIntakeHandler

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802 - aiosmtpd's name
        """Refuse a declared size over the limit with our sentence (5.3.4) once signed in;
        all else is aiosmtpd's (which answers the signed-out first)."""
        limit = self.data_size_limit
        declared = re.search(r"(?:^|\s)SIZE=([0-9]{1,20})(?:\s|$)", arg or "", re.IGNORECASE)
        if self.session is not None and self.session.authenticated and limit and declared:
            size = int(declared.group(1))
            if size > limit:
                utf8 = re.search(r"(?:^|\s)SMTPUTF8(?:\s|$)", arg or "", re.IGNORECASE)
                fields = {"size": math.ceil(size / 1024), "limit": limit // 1024}
                reply = Reply(552, "5.3.4", mail_words.MAIL_TOO_BIG, fields)
                member = self.session.auth_data
                lang = member.member.language if isinstance(member, SignedIn) else None
                await self.push(reply.render(lang, bool(utf8), self.event_handler.words))
                return
        await super().smtp_MAIL(arg)

    async def push(self, status: AnyStr) -> None:
        """Push ``status``, with aiosmtpd's stock DATA refusals replaced by our own."""
        if isinstance(status, str) and self.session is not None:
            reply = None
            if status.startswith("552 Error: Too much mail data"):
                limit = (self.data_size_limit or 0) // 1024
                reply = Reply(552, "5.3.4", mail_words.MAIL_OVER_LIMIT, {"limit": limit})
            elif status.startswith("500 Line too long"):
                reply = Reply(554, "5.6.0", mail_words.LINE_TOO_LONG)
            if reply is not None:
                await super().push(self.event_handler.say(reply, self.session, self.envelope))
                return
        await super().push(status)


def make_smtp(
    handler: SmtpIntakeHandler, tls_context: ssl.SSLContext, *, hostname: str = "vessel"
) -> SMTP:
    """One SMTP protocol instance (aiosmtpd): STARTTLS and AUTH required, SMTPUTF8
    offered, the size limit announced (``SIZE``) and said in plain words."""
    return CrewSMTP(
        handler,
        hostname=hostname,
        ident="vessel-relay intake",
        data_size_limit=MAX_MAIL_BYTES,
        enable_SMTPUTF8=True,
        tls_context=tls_context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=handler.authenticate,
    )


async def serve_smtp(
    handler: SmtpIntakeHandler,
    tls_context: ssl.SSLContext,
    host: str,
    port: int,
    stopping: asyncio.Event,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve SMTP until ``stopping`` is set; then stop accepting and close."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: make_smtp(handler, tls_context), host, port)
    logger.info("SMTP intake listening on %s:%d", host, port)
    if ready is not None:
        ready.set()
    try:
        await stopping.wait()
    finally:
        server.close()
        await server.wait_closed()
        logger.info("SMTP intake stopped")
