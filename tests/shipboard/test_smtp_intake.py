"""SMTP intake: a crew member's mail app (stdlib smtplib here) sends over STARTTLS with
crew number and PIN; every answer is a promise (250 after commit) or a specific refusal."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from protocol.codebook import Codebook
from shipboard.config import ShipConfig
from shipboard.intake import MAX_MESSAGE_BYTES, Intake
from shipboard.outbox import Outbox
from shipboard.smtp_intake import SmtpIntakeHandler, mail_text, serve_smtp
from shipboard.tls import make_self_signed, server_context
from tests.kit.ports import free_port

from .conftest import VESSEL_ID, Crew


@dataclass
class SmtpServer:
    port: int
    client_tls: ssl.SSLContext
    handler: SmtpIntakeHandler


async def _start(
    intake: Intake, tmp_path: Path
) -> tuple[SmtpServer, asyncio.Event, asyncio.Task[None]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if not cert.exists():
        make_self_signed(cert, key)
    handler = SmtpIntakeHandler(intake)
    stopping, ready = asyncio.Event(), asyncio.Event()
    port = free_port()
    task = asyncio.create_task(
        serve_smtp(handler, server_context(cert, key), "127.0.0.1", port, stopping, ready)
    )
    await ready.wait()
    client_tls = ssl.create_default_context(cafile=str(cert))
    return SmtpServer(port, client_tls, handler), stopping, task


@pytest.fixture
async def smtp_server(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook, tmp_path: Path
) -> AsyncIterator[SmtpServer]:
    server, stopping, task = await _start(Intake(ship_config, outbox, codebook), tmp_path)
    yield server
    stopping.set()
    await task


def _mail(to: str, body: str | bytes, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "crew1@vessel"
    message["To"] = to
    message["Subject"] = headers.pop("subject", "hello")
    if isinstance(body, bytes):
        message.set_content(body, maintype="application", subtype="octet-stream")
    else:
        message.set_content(body)
    return message


def _session(server: SmtpServer, crew: int, pin: str) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    client.starttls(context=server.client_tls)
    client.login(str(crew), pin)
    return client


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def _send(server: SmtpServer, crew: Crew, message: EmailMessage, to: list[str]) -> Any:
    with _session(server, crew.member.crew, crew.pin) as client:
        return client.send_message(message, to_addrs=to)


async def test_mail_to_mother_is_saved_before_250(
    smtp_server: SmtpServer, outbox: Outbox, crew: Crew
) -> None:
    """A crew member mails their mother from their phone; the 250 comes only once the
    message is in the outbox, with its text normalised and numbered, and its Subject
    kept beside the text (counted with it against the quota)."""
    refused = await _in_thread(
        _send,
        smtp_server,
        crew,
        _mail("mother@example.org", "Hello mother, all well."),
        ["mother@example.org"],
    )
    assert refused == {}
    (pending,) = outbox.pending_messages(0)
    assert pending.crew == crew.member.crew
    assert pending.text_bytes == len("Hello mother, all well.") + len("hello")
    with outbox.reading() as db:
        stored = db.execute("SELECT body, subject FROM messages").fetchall()
    assert stored == [("Hello mother, all well.", "hello")]


async def test_one_mail_to_two_contacts_is_two_messages(
    smtp_server: SmtpServer, outbox: Outbox, crew: Crew
) -> None:
    """A mail to mother and to the brother's SMS number becomes two messages, in one commit."""
    await _in_thread(
        _send,
        smtp_server,
        crew,
        _mail("mother@example.org", "Coming home in May"),
        ["mother@example.org", "+959123456789@sms"],
    )
    assert len(outbox.pending_messages(0)) == 2


async def test_unknown_recipient_is_refused_with_how_to_fix(
    smtp_server: SmtpServer, crew: Crew
) -> None:
    """Mail to an address that is not a family contact: 550 telling how to add the contact."""
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await _in_thread(
            _send,
            smtp_server,
            crew,
            _mail("stranger@example.org", "hi"),
            ["stranger@example.org"],
        )
    code, text = refused.value.recipients["stranger@example.org"]
    assert code == 550
    assert b"Add the contact first" in text


async def test_wrong_pin_is_refused(smtp_server: SmtpServer, crew: Crew) -> None:
    """A wrong PIN gets 535 and a sentence, which sends nobody to the captain (the person
    a grievance may be about)."""

    def login() -> None:
        with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
            client.starttls(context=smtp_server.client_tls)
            client.login(str(crew.member.crew), "00000000")

    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        await _in_thread(login)
    assert refused.value.smtp_code == 535
    assert b"Wrong crew number or PIN" in refused.value.smtp_error
    assert b"captain" not in refused.value.smtp_error


async def test_no_auth_or_tls_no_mail(smtp_server: SmtpServer, crew: Crew) -> None:
    """Without STARTTLS the PIN cannot be sent, and without AUTH no mail is taken."""

    def try_plain() -> tuple[bool, int, int]:
        with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
            client.ehlo()
            offered = client.has_extn("auth")
            plain_code, _ = client.mail("crew@vessel")
            client.starttls(context=smtp_server.client_tls)
            client.ehlo()
            tls_code, _ = client.mail("crew@vessel")
            return offered, plain_code, tls_code

    offered, plain_code, tls_code = await _in_thread(try_plain)
    assert not offered  # AUTH is not offered before STARTTLS
    assert plain_code == 530
    assert tls_code == 530


async def test_too_long_message_gets_552(smtp_server: SmtpServer, crew: Crew) -> None:
    """A message longer than one message may be is refused with 552 and the limit."""
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await _in_thread(
            _send,
            smtp_server,
            crew,
            _mail("mother@example.org", "a" * (MAX_MESSAGE_BYTES + 1)),
            ["mother@example.org"],
        )
    assert refused.value.smtp_code == 552
    assert b"too long" in refused.value.smtp_error


async def test_huge_mail_gets_552(smtp_server: SmtpServer, crew: Crew) -> None:
    """A mail with a big photo is over the mail size limit: 552."""
    message = _mail("mother@example.org", b"\x00" * 400_000)
    with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPSenderRefused)) as refused:
        await _in_thread(_send, smtp_server, crew, message, ["mother@example.org"])
    assert refused.value.smtp_code == 552


async def test_unreadable_encoding_gets_550(smtp_server: SmtpServer, crew: Crew) -> None:
    """A mail app that sends a charset nobody knows gets 550 and asks for UTF-8."""
    raw = (
        b"From: crew@vessel\r\nTo: mother@example.org\r\nSubject: x\r\n"
        b"Content-Type: text/plain; charset=x-martian\r\n\r\n\xff\xfe hello\r\n"
    )

    def send() -> None:
        with _session(smtp_server, crew.member.crew, crew.pin) as client:
            client.sendmail("crew@vessel", ["mother@example.org"], raw)

    with pytest.raises(smtplib.SMTPDataError) as refused:
        await _in_thread(send)
    assert refused.value.smtp_code == 550
    assert b"UTF-8" in refused.value.smtp_error


async def test_over_quota_gets_452_with_balance(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook, crew: Crew, tmp_path: Path
) -> None:
    """A crew member with 10 bytes of quota left is told 452 and the balance, and nothing
    is stored; a message bigger than a whole month's quota gets 552. (The Subject counts
    with the text: 20 + 5 bytes "hello", then 15 + 5.)"""
    from dataclasses import replace

    config = replace(ship_config, quota=replace(ship_config.quota, crew_text_bytes=30))
    server, stopping, task = await _start(Intake(config, outbox, codebook), tmp_path)
    try:
        await _in_thread(
            _send, server, crew, _mail("mother@example.org", "x" * 15), ["mother@example.org"]
        )
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await _in_thread(
                _send, server, crew, _mail("mother@example.org", "y" * 20), ["mother@example.org"]
            )
        assert refused.value.smtp_code == 452
        assert b"10 bytes left" in refused.value.smtp_error
        with pytest.raises(smtplib.SMTPDataError) as never:
            await _in_thread(
                _send, server, crew, _mail("mother@example.org", "z" * 40), ["mother@example.org"]
            )
        assert never.value.smtp_code == 552
        assert len(outbox.pending_messages(0)) == 1
    finally:
        stopping.set()
        await task


async def test_storage_failure_gets_451(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook, crew: Crew, tmp_path: Path
) -> None:
    """When the disk is read-only, the phone gets 451 (try again later), never 250."""
    read_only = Outbox.open(outbox.path, VESSEL_ID, extra_pragmas=["query_only=ON"])
    server, stopping, task = await _start(Intake(ship_config, read_only, codebook), tmp_path)
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await _in_thread(
                _send, server, crew, _mail("mother@example.org", "hello"), ["mother@example.org"]
            )
        assert refused.value.smtp_code == 451
        assert b"NOT saved" in refused.value.smtp_error
    finally:
        stopping.set()
        await task
        read_only.close()
    assert outbox.pending_messages(0) == ()


def test_html_mail_and_quotes() -> None:
    """An HTML-only mail gives its visible text; quoted earlier messages are dropped."""
    message = EmailMessage()
    message["Subject"] = "x"
    message.set_content("<p>Hello <b>mother</b></p><script>x()</script><p>bye</p>", subtype="html")
    assert mail_text(bytes(message)).text == "Hello mother\nbye"
    quoted = EmailMessage()
    quoted.set_content("Fine here.\n\nOn Mon, Mother wrote:\n> are you well?\n")
    assert mail_text(bytes(quoted)).text == "Fine here."


async def test_hostile_auth_gets_a_reply_never_a_traceback(
    smtp_server: SmtpServer, crew: Crew, caplog: pytest.LogCaptureFixture
) -> None:
    """AUTH with broken base64, a '*' abort, a crew number of 10**30 or '²', a PIN that
    is not UTF-8 or holds a lone surrogate's bytes, and answer lines far over the line
    limit: each gets a 5xx/4xx reply with a sentence (never aiosmtpd's '500 Error:
    (ExceptionName) ...'), nothing is logged as an exception, and the server still
    signs the crew member in afterwards."""
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    def hostile() -> list[tuple[int, bytes]]:
        replies: list[tuple[int, bytes]] = []
        with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
            client.starttls(context=smtp_server.client_tls)
            client.ehlo()
            for argument in (
                "PLAIN ###",
                "PLAIN " + b64(b"\x001000000000000000000000000000000\x0012345678"),
                "PLAIN " + b64("\x00²\x0012345678".encode()),
                "PLAIN " + b64(b"\x001\x00\xff\xfe\xed\xa0\x80"),
                "PLAIN " + b64(b"\x001"),
                "PLAIN " + b64(b"\x00crew1\x00" + b"9" * 300),
                "LOGIN " + b64(b"1" * 200),
            ):
                code, text = client.docmd("AUTH", argument)
                if code == 334:  # LOGIN asks for the PIN: a hostile one
                    code, text = client.docmd(b64(b"\xff" * 50))
                replies.append((code, text))
            code, _ = client.docmd("AUTH", "PLAIN")
            assert code == 334
            replies.append(client.docmd("*"))
            code, _ = client.docmd("AUTH", "LOGIN")
            assert code == 334
            client.send(b"A" * 5000 + b"\r\n")  # far over aiosmtpd's line limit
            replies.append(client.getreply())
            client.login(str(crew.member.crew), crew.pin)  # still works afterwards
        return replies

    replies = await _in_thread(hostile)
    for code, text in replies:
        assert code in (501, 535, 454, 500), (code, text)
        assert b"Error: (" not in text, text
        assert text.strip()
    assert [code for code, _ in replies].count(535) >= 4
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()


async def test_a_bug_at_data_is_logged_once_and_answered_451(
    outbox: Outbox,
    ship_config: ShipConfig,
    codebook: Codebook,
    crew: Crew,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If saving a mail hits a bug, the phone gets 451 (it keeps the mail and tries again
    later) with a sentence, never aiosmtpd's '500 Error: (RuntimeError) ...' with the
    inside's words; the operator gets the traceback once."""
    intake = Intake(ship_config, outbox, codebook)

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("secret-internal-detail")

    intake.send_messages = broken  # type: ignore[method-assign, assignment]
    server, stopping, task = await _start(intake, tmp_path)
    try:
        caplog.clear()
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await _in_thread(
                _send, server, crew, _mail("mother@example.org", "hi"), ["mother@example.org"]
            )
        assert refused.value.smtp_code == 451
        assert b"secret" not in refused.value.smtp_error
        assert b"RuntimeError" not in refused.value.smtp_error
        tracebacks = [r for r in caplog.records if r.exc_info is not None]
        assert len(tracebacks) == 1
    finally:
        stopping.set()
        await task
