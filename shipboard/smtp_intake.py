"""SMTP intake: crew members send family messages from any mail app on the vessel LAN.

The server (aiosmtpd) speaks SMTP with STARTTLS required; AUTH PLAIN or LOGIN (crew number
and PIN) is accepted only after STARTTLS. Recipients must be the crew member's own family
contacts: an e-mail address, or an SMS contact written as ``+959123456789@sms`` (any
domain; the part before ``@`` is the phone number).

Every answer is a promise or a specific refusal, in a sentence the crew member can read:

* 250 only after the message is committed to the outbox;
* 550 unknown recipient (add the contact first), unreadable text;
* 552 message too large;
* 452 not enough quota left this month (with the balance); 552 if it can never fit;
* 451 the outbox cannot store (disk full or broken): the phone keeps it and retries;
* 535 wrong crew number or PIN;
* 454 sign-in paused for this crew number after too many wrong PINs on any door (the
  crew page, the API, SMTP): try again in N minutes; an SOS needs no PIN.

Nothing about the message (text, addresses) is logged; only numbers and sizes.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from common.signins import SignInGuard
from protocol.languages import Language
from shipboard.config import ShipConfig
from shipboard.crew import MAX_CREW_NUMBER, SIGNED_OFF, CrewRegister, SignedIn
from shipboard.errors import (
    BadText,
    IntakeRefused,
    NotSignedIn,
    OutboxUnavailable,
    QuotaExceeded,
    SignInPaused,
    UnknownContact,
)
from shipboard.outbox import AcceptedMessage
from shipboard.signin import CrewSignIn

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
    """What a mail carries for the family: its text, and how many attachments were dropped."""

    text: str
    attachments_dropped: int


def mail_text(data: bytes) -> MailText:
    """Parse a mail (stdlib email, policy=default) and take its text/plain or HTML text.

    Quoted lines (``> ...``) of an earlier message are dropped: they cost satellite bytes
    and the family already has them. Raises :class:`BadText` for mail that cannot be read.
    """
    try:
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(preferencelist=("plain", "html"))
        attachments = sum(1 for _ in message.iter_attachments())
        if body is None:
            subject = str(message.get("subject", "") or "")
            return MailText(subject.strip(), attachments)
        content = body.get_content()
        subtype = body.get_content_subtype()
    except (LookupError, UnicodeError, ValueError, TypeError, AssertionError) as exc:
        raise BadText(
            "Your mail app sent the message in an encoding that cannot be read. Set it to "
            "Unicode (UTF-8) and send again."
        ) from exc
    if not isinstance(content, str):
        raise BadText("The message has no text that can be read. Please write it as text.")
    text = html_to_text(content) if subtype == "html" else content
    kept = [line for line in text.splitlines() if not line.lstrip().startswith(">")]
    while kept and re.match(r"^On .+ wrote:\s*$", kept[-1]):
        kept.pop()
    return MailText("\n".join(kept).strip(), attachments)


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


def _reply(error: IntakeRefused, quota_bytes: int) -> str:
    code = error.smtp_code
    if isinstance(error, QuotaExceeded) and error.needed_bytes > quota_bytes:
        code = 552  # it would not fit even in a whole month's quota: retrying cannot help
    enhanced = {550: "5.1.1", 552: "5.3.4", 452: "4.2.2", 535: "5.7.8"}.get(code, "5.0.0")
    sentence = error.sentence.encode("ascii", "replace").decode("ascii")
    return f"{code} {enhanced} {sentence}"


WRONG_LOGIN = "535 5.7.8 Wrong crew number or PIN. Check both and try again."
STORAGE_DOWN = "454 4.7.0 The storage on board is not working. Try again later."


class MailIntake(Protocol):
    """What the SMTP door needs of intake (:class:`shipboard.intake.Intake`): the crew
    register (sign-in, finding a contact by address), the quota, and committing."""

    @property
    def config(self) -> ShipConfig: ...

    @property
    def register(self) -> CrewRegister: ...

    def send_messages(
        self,
        crew: int,
        contacts: Sequence[int],
        text: str | None,
        lang: Language | None = None,
        quick: int | None = None,
    ) -> list[AcceptedMessage]:
        """Commit one message to several of the crew member's contacts (all or none)."""
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

    def __post_init__(self) -> None:
        self.signins = CrewSignIn(self.intake.register, self.guard)

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
        try:
            text = mail_text(data)
            accepted = await asyncio.to_thread(
                self._commit, signed_in.member.crew, envelope.rcpt_tos, text.text
            )
        except IntakeRefused as refused:
            self._count(refused.code)
            return _reply(refused, self.intake.config.quota.crew_text_bytes)
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

    def _commit(self, crew: int, addresses: list[str], text: str) -> list[int]:
        contacts: list[int] = []
        for address in addresses:
            contact = self._find_contact(crew, address)
            if contact is None:  # removed between RCPT and DATA
                raise UnknownContact("This address is not in your family contacts any more.")
            if contact not in contacts:
                contacts.append(contact)
        accepted = self.intake.send_messages(crew, contacts, text)
        return [message.message_seq for message in accepted]

    def _count(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1
        logger.info("SMTP intake refused: %s", code)


def make_smtp(
    handler: SmtpIntakeHandler, tls_context: ssl.SSLContext, *, hostname: str = "vessel"
) -> SMTP:
    """One SMTP protocol instance (aiosmtpd), STARTTLS and AUTH required."""
    return SMTP(
        handler,
        hostname=hostname,
        ident="vessel-relay intake",
        data_size_limit=MAX_MAIL_BYTES,
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
