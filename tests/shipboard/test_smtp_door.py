"""The SMTP door as a crew member's mail app meets it (stdlib smtplib, as K-9 or
Thunderbird speak it): the size limit announced and said in plain words, every mail it
cannot take refused with what is wrong (5.3.4 size, 5.6.x content, never a mailbox
error), SMTPUTF8 addresses and headers, replies in the crew member's language when the
app speaks SMTPUTF8; and grievance reports mailed to a union's report address, sealed at
intake like the crew page's, with nothing of them in the clear on board or in the journal.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from shipboard.agent import quiet_libraries
from shipboard.config import ShipConfig
from shipboard.intake import MAX_MESSAGE_BYTES, Intake
from shipboard.lane import LaneProgress
from shipboard.lane_plan import ReservoirParams
from shipboard.mail_addresses import MAIL_REPORT_CATEGORY
from shipboard.outbox import Outbox
from shipboard.smtp_intake import MAX_MAIL_BYTES
from tests.kit.canary import Needles, canaries, scan_files
from tests.kit.lane import blocks_on_board, union_reads
from tests.kit.voyage import CODEBOOK
from tests.shipboard.test_lane import OTHER_UNION, UNION, Board
from tests.shipboard.test_smtp_intake import SmtpServer, _start

from .conftest import Crew

Reply = tuple[int, bytes]
MOTHER = "mother@example.org"
FISHERS = "report+fishers-union@vessel"  # union 7 of tests.shipboard.test_lane
SEAFARERS = "report+seafarers-aid@vessel"  # union 8


@pytest.fixture
async def door(
    outbox: Outbox, ship_config: ShipConfig, tmp_path: Path
) -> AsyncIterator[SmtpServer]:
    server, stopping, task = await _start(Intake(ship_config, outbox, default_codebook()), tmp_path)
    yield server
    stopping.set()
    await task


def _client(server: SmtpServer, crew: int, pin: str) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    client.starttls(context=server.client_tls)
    client.login(str(crew), pin)
    return client


def _transaction(
    server: SmtpServer,
    crew: int,
    pin: str,
    to: list[str],
    data: bytes,
    options: tuple[str, ...] = (),
) -> list[Reply]:
    """One mail, command by command as a mail app sends it: the replies to MAIL, each
    RCPT and (if a recipient was taken) DATA."""
    with _client(server, crew, pin) as client:
        replies = [client.mail("crew@vessel", list(options))]
        replies += [client.rcpt(address) for address in to]
        if any(code == 250 for code, _ in replies[1:]):
            replies.append(client.data(data))
        return replies


def _raw(body: bytes, content_type: str = "text/plain; charset=utf-8", **extra: str) -> bytes:
    headers = {"From": "crew@vessel", "To": MOTHER, "Subject": "x", **extra}
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + f"Content-Type: {content_type}\r\n\r\n").encode("utf-8") + body + b"\r\n"


def _assert_plain_refusal(reply: Reply, code: int, enhanced: str, words: bytes) -> None:
    """A refusal with its code, its enhanced code on every line, the words, and none of
    aiosmtpd's stock texts or a mailbox error."""
    status, text = reply
    assert status == code, reply
    lines = text.split(b"\n")
    assert all(line.startswith(enhanced.encode()) for line in lines), reply
    assert words in text, reply
    for stock in (b"Error:", b"fixed maximum", b"Too much mail data", b"5.1.1", b"replacement"):
        assert stock not in text, reply


# --- the size limit ---------------------------------------------------------------------


async def test_ehlo_offers_smtputf8_and_announces_the_size_limit(
    door: SmtpServer, crew: Crew
) -> None:
    """A mail app asking what the vessel takes learns SMTPUTF8 and the size limit."""

    def extensions() -> tuple[str, str, str]:
        with _client(door, crew.member.crew, crew.pin) as client:
            return (
                client.esmtp_features["smtputf8"],
                client.esmtp_features["size"],
                (client.esmtp_features.get("8bitmime", "absent")),
            )

    smtputf8, size, eight_bit = await asyncio.to_thread(extensions)
    assert smtputf8 == ""
    assert size == str(MAX_MAIL_BYTES)
    assert eight_bit == ""


async def test_a_photo_mail_declared_too_big_is_refused_at_mail_in_plain_words(
    door: SmtpServer, crew: Crew, outbox: Outbox
) -> None:
    """A mail app that says its mail's size (SIZE=) is told at once, before sending the
    photo over the Wi-Fi, how big it is, the limit and what to do: 552 5.3.4."""
    message = EmailMessage()
    message["Subject"] = "photo"
    message.set_content("look at the fish")
    message.add_attachment(random.Random(1).randbytes(400_000), "image", "jpeg")

    def send() -> None:
        with _client(door, crew.member.crew, crew.pin) as client:
            client.send_message(message, "crew@vessel", [MOTHER])  # smtplib says SIZE=

    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        await asyncio.to_thread(send)
    reply = (refused.value.smtp_code, refused.value.smtp_error)
    _assert_plain_refusal(reply, 552, "5.3.4", b"too big for the vessel")
    size = re.search(rb"\((\d+) KB; at most 256 KB\)", refused.value.smtp_error)
    on_the_wire = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    assert size
    assert int(size.group(1)) == -(-len(on_the_wire) // 1024)
    assert b"remove photos and attachments" in refused.value.smtp_error
    assert outbox.pending_messages(0) == ()


async def test_a_mail_over_the_limit_without_size_is_refused_after_data(
    door: SmtpServer, crew: Crew, outbox: Outbox
) -> None:
    """A mail app that does not say the size (no SIZE=) sends it all; at the end it gets
    552 5.3.4 with the limit, never aiosmtpd's "Too much mail data"."""
    body = b"A" * 76 + b"\r\n"
    data = _raw(body * (MAX_MAIL_BYTES // len(body) + 10))
    replies = await asyncio.to_thread(
        _transaction, door, crew.member.crew, crew.pin, [MOTHER], data
    )
    assert replies[:2] == [(250, b"OK"), (250, b"2.1.5 OK")]
    _assert_plain_refusal(replies[2], 552, "5.3.4", b"at most 256 KB")
    assert outbox.pending_messages(0) == ()


# --- content: 5.6.x, in plain words -----------------------------------------------------

CONTENT_CASES = [
    pytest.param(_raw(b"", Subject=""), "5.6.0", b"The mail has no text", id="empty"),
    pytest.param(_raw(b" \r\n\r\n", Subject=""), "5.6.0", b"The mail has no text", id="blank"),
    pytest.param(
        _raw(b"Hello mother " + b"\xff\xfe" + "မင်္ဂလာပါ".encode()),
        "5.6.0",
        b"it says it is written in UTF-8, but it is not",
        id="invalid-utf8",
    ),
    pytest.param(
        _raw(b"\xff\xfe hello", "text/plain; charset=x-martian"),
        "5.6.0",
        b"an encoding the vessel cannot read (x-martian)",
        id="unknown-charset",
    ),
    pytest.param(
        _raw(b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        "5.6.1",
        b"attachments but no text",
        id="image-only",
    ),
]


@pytest.mark.parametrize(("data", "enhanced", "words"), CONTENT_CASES)
async def test_mail_that_cannot_be_taken_says_what_is_wrong(
    door: SmtpServer, crew: Crew, outbox: Outbox, data: bytes, enhanced: str, words: bytes
) -> None:
    """An empty mail, a blank one, invalid UTF-8 (said truthfully: the bytes are not the
    UTF-8 the mail claims, not "a replacement character"), an encoding nobody knows and a
    picture with no text: each gets 550 with a 5.6.x code (content, not the mailbox) and
    a sentence saying what is wrong and what to do; nothing is stored."""
    replies = await asyncio.to_thread(
        _transaction, door, crew.member.crew, crew.pin, [MOTHER], data
    )
    _assert_plain_refusal(replies[-1], 550, enhanced, words)
    assert b"send it again" in replies[-1][1]
    assert outbox.pending_messages(0) == ()


async def test_attachments_only_is_refused_and_text_with_attachments_is_taken(
    door: SmtpServer, crew: Crew, outbox: Outbox
) -> None:
    """A mail of a PDF and no text gets 550 5.6.1; the same with a line of text is saved
    (the 250 says the attachment is not sent)."""
    only = EmailMessage()
    only["Subject"] = ""
    only.add_attachment(b"%PDF-1.4 contract", "application", "pdf", filename="contract.pdf")
    with_text = EmailMessage()
    with_text["Subject"] = "contract"
    with_text.set_content("Here is my contract.")
    with_text.add_attachment(b"%PDF-1.4 contract", "application", "pdf", filename="c.pdf")
    first, second = [
        await asyncio.to_thread(
            _transaction, door, crew.member.crew, crew.pin, [MOTHER], bytes(message)
        )
        for message in (only, with_text)
    ]
    _assert_plain_refusal(first[-1], 550, "5.6.1", b"attachments but no text")
    assert second[-1][0] == 250
    assert b"1 attachment(s) not sent" in second[-1][1]
    (pending,) = outbox.pending_messages(0)
    assert pending.text_bytes == len("Here is my contract.") + len("contract")  # + Subject


async def test_a_mail_with_only_a_subject_sends_the_subject(
    door: SmtpServer, crew: Crew, outbox: Outbox
) -> None:
    """ "Coming home in May" typed as the Subject with an empty body is the message."""
    replies = await asyncio.to_thread(
        _transaction, door, crew.member.crew, crew.pin, [MOTHER],
        _raw(b"", Subject="Coming home in May"),
    )  # fmt: skip
    assert replies[-1][0] == 250
    (pending,) = outbox.pending_messages(0)
    assert pending.text_bytes == len("Coming home in May")


# --- SMTPUTF8 and the crew member's language --------------------------------------------


async def test_smtputf8_addresses_and_headers_are_taken(
    door: SmtpServer, crew: Crew, outbox: Outbox
) -> None:
    """A crew member whose sister's address is in Vietnamese (ví-dụ.vn, with a UTF-8
    mailbox name) and whose mail app writes the Subject and From in Burmese, raw UTF-8:
    smtplib asks for SMTPUTF8 by itself, and the message is saved with its text."""
    sister = "chị.hà@ví-dụ.vn"
    door.handler.intake.register.add_contact(
        crew.member.crew, channel="email", address=sister, name="Sister",
        language=Language.VIE, now=0,
    )  # fmt: skip
    message = EmailMessage()
    message["From"] = "အောင်မင်း <အောင်@vessel>"
    message["To"] = sister
    message["Subject"] = "လစာ ရပြီ"
    text = "မင်္ဂလာပါ အစ်မ၊ လစာ ရပြီ။ Chào chị Hà!"
    message.set_content(text)

    def send() -> dict[str, tuple[int, bytes]]:
        with _client(door, crew.member.crew, crew.pin) as client:
            return client.send_message(message)

    assert await asyncio.to_thread(send) == {}
    (pending,) = outbox.pending_messages(0)
    assert pending.text_bytes == len(text.encode("utf-8")) + len("လစာ ရပြီ".encode())
    with outbox.reading() as db:
        assert db.execute("SELECT subject FROM messages").fetchall() == [("လစာ ရပြီ",)]


async def test_replies_are_in_the_crew_members_language_when_the_app_speaks_smtputf8(
    door: SmtpServer, crew: Crew
) -> None:
    """Aung Min's language is Burmese. His app asks for SMTPUTF8: the refusal of an empty
    mail comes in Burmese first, then in English. Without SMTPUTF8 the reply stays ASCII
    English (RFC 5321 allows nothing else)."""
    data = _raw(b"", Subject="")
    with_utf8 = await asyncio.to_thread(
        _transaction, door, crew.member.crew, crew.pin, [MOTHER], data, ("SMTPUTF8",)
    )
    plain = await asyncio.to_thread(_transaction, door, crew.member.crew, crew.pin, [MOTHER], data)
    code, text = with_utf8[-1]
    burmese, english = text.decode("utf-8").split("\n")
    assert code == 550
    assert burmese.startswith("5.6.0 ")
    assert re.search("[\u1000-\u109f]", burmese)
    assert english == "5.6.0 The mail has no text. Write your message in the mail itself, " \
        "then send it again."  # fmt: skip
    assert plain[-1] == (550, english.encode("ascii"))


# --- grievance reports by mail ----------------------------------------------------------


@pytest.fixture
async def board_door(tmp_path: Path) -> AsyncIterator[tuple[Board, SmtpServer]]:
    board = Board(tmp_path)
    server, stopping, task = await _start(board.intake, tmp_path)  # type: ignore[arg-type]
    yield board, server
    stopping.set()
    await task
    board.close()


class Journal(logging.Handler):
    """Every record the root logger sees while a test runs, as the agent logs (aiosmtpd's
    logger kept to warnings, as :func:`shipboard.agent.quiet_libraries` does)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Journal:
        self._levels = {
            name: logging.getLogger(name).level for name in ("", "mail.log", "uvicorn.access")
        }
        logging.getLogger().addHandler(self)
        logging.getLogger().setLevel(logging.DEBUG)
        quiet_libraries()
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)

    def lines(self) -> list[tuple[str, str, str]]:
        """Each record as logger, level and message (no time)."""
        return [(r.name, r.levelname, r.getMessage()) for r in self.records]

    def beyond_sign_ins(self) -> list[tuple[str, str, str]]:
        """The lines other than the one aiosmtpd writes at every sign-in, report or not."""
        return [line for line in self.lines() if "login_data is deprecated" not in line[2]]


async def test_a_mailed_report_reaches_the_union_sealed_and_nothing_is_left_in_clear(
    board_door: tuple[Board, SmtpServer], tmp_path: Path
) -> None:
    """A Burmese crew member mails a report (a canary text) to the Fishers' Union's
    report address from his mail app. The 250 gives its case number and receipt code; on
    board nothing holds its words (every file, raw and decompressed, in UTF-8 and
    UTF-16), no outbox row appears, the link's doorbell does not ring and the journal
    gets exactly the lines of a mail app that signs in and sends nothing. Period by
    period the lane carries it up and the union's key opens it: his words and Subject,
    the case number and receipt code he was given; the other union's key opens nothing.
    A family message with words of its own, sent the same way, is found on disk by the
    same scan (the scan looks)."""
    board, door = board_door
    rings: list[str] = []
    board.intake.on_accept = rings.append
    reporter = board.signed[1].member  # Burmese
    (canary,) = [c for c in canaries(6) if c.kind.lang is Language.MYA][:1]
    report = EmailMessage()
    report["Subject"] = "လစာ သုံးလ မရ"
    report.set_content(canary.text)
    before = board.outbox.pending_messages(board.clock())
    with Journal() as journal:
        replies = await asyncio.to_thread(
            _transaction, door, reporter.crew, board.pins[1], [FISHERS], bytes(report)
        )
    with Journal() as account_check:  # what a mail app does when its account is set up
        await asyncio.to_thread(lambda: _client(door, reporter.crew, board.pins[1]).quit())
    assert journal.lines() == account_check.lines()
    assert journal.lines(), "the journal captured nothing: the test would prove nothing"
    assert rings == []
    assert board.outbox.pending_messages(board.clock()) == before
    code, text = replies[-1]
    assert code == 250, replies
    said = re.search(rb"Case number (\d+-\d+), receipt code (\d+)", text)
    assert said, text
    case, receipt = said.group(1).decode(), said.group(2).decode()
    assert b"only Fishers' Union can read it" in text
    needles = Needles.for_canaries([canary])
    found = await asyncio.to_thread(scan_files, [tmp_path], needles)
    assert found.files >= 2
    assert found.hits == []
    # the union opens it from what leaves the vessel, period after period
    number = int(case.split("-")[1])
    sent = []
    while board.intake.case_progress(number) is LaneProgress.QUEUED:
        sent += board.next_period()
    (opened,) = union_reads([b.block for b in sent], bytes(UNION), CODEBOOK)
    assert opened.text == f"{report['Subject']}\n\n{canary.text}"
    assert (opened.case_number, opened.receipt_code) == (case, receipt)
    assert opened.category is MAIL_REPORT_CATEGORY
    assert opened.crew_name == reporter.name
    assert union_reads([b.block for b in sent], bytes(OTHER_UNION), CODEBOOK) == []
    # positive control: a family message's words are found by the same scan
    control = canaries(12)[6]  # Burmese, one line, a serial of its own
    sister = board.intake.register.add_contact(
        reporter.crew, channel="email", address="sister@example.org", name="Sister",
        language=Language.MYA, now=board.clock(),
    )  # fmt: skip
    family = EmailMessage()
    family.set_content(control.text)
    replies = await asyncio.to_thread(
        _transaction, door, reporter.crew, board.pins[1], [sister.address], bytes(family)
    )
    assert replies[-1][0] == 250
    seen = await asyncio.to_thread(scan_files, [tmp_path], Needles.for_canaries([control]))
    assert seen.hits, "the scan found a family message nowhere: it would prove nothing"


async def test_report_address_parts_choose_anonymous_and_category(
    board_door: tuple[Board, SmtpServer],
) -> None:
    """report+7+anonymous+8@vessel (the union's number, no name, wages withheld): the
    union gets the report without name or document, under that category."""
    board, door = board_door
    mail = _raw(b"no wages since June", Subject="")
    replies = await asyncio.to_thread(
        _transaction, door, board.signed[0].member.crew, board.pins[0],
        ["report+7+anonymous+8@vessel"], mail,
    )  # fmt: skip
    assert replies[-1][0] == 250, replies
    (opened,) = union_reads(blocks_on_board(board.outbox), bytes(UNION), CODEBOOK)
    assert opened.text == "no wages since June"
    assert opened.crew_name is None
    assert opened.crew_document is None
    assert opened.category is GrievanceCategory.WITHHOLDING_OF_WAGES


async def test_the_list_address_and_unknown_report_addresses_answer_with_the_unions(
    board_door: tuple[Board, SmtpServer],
) -> None:
    """report@vessel (and a report address naming no union) is refused with 550 5.1.0
    whose lines are the unions' report addresses: the one text every mail app shows. A
    report with another recipient is refused (a report goes alone, to one union), in
    either order; none of it leaves a journal line."""
    board, door = board_door
    crew, pin = board.signed[0].member.crew, board.pins[0]
    with Journal() as journal:
        listed = await asyncio.to_thread(
            _transaction, door, crew, pin, ["report@vessel"], _raw(b"list")
        )
        unknown = await asyncio.to_thread(
            _transaction, door, crew, pin, ["report+nobody@vessel"], _raw(b"x")
        )
        mixed = await asyncio.to_thread(
            _transaction, door, crew, pin, [FISHERS, SEAFARERS], _raw(b"x")
        )
    assert journal.beyond_sign_ins() == []
    code, text = listed[1]
    assert code == 550
    lines = text.decode("ascii").split("\n")
    assert lines[0].startswith("5.1.0 This address takes no mail")
    assert f"5.1.0 {FISHERS} Fishers' Union" in lines
    assert f"5.1.0 {SEAFARERS} Seafarers' Aid" in lines
    assert unknown[1][0] == 550
    assert FISHERS.encode() in unknown[1][1]
    assert unknown[1][1].startswith(b"5.1.0 No union of this vessel has this report address")
    assert mixed[1] == (250, b"2.1.5 OK")
    _assert_plain_refusal(mixed[2], 550, "5.5.3", b"in a mail of its own")
    # a family recipient first, then a report address: refused the same way
    board.intake.register.add_contact(
        crew, channel="email", address=MOTHER, name="Mother", language=None, now=board.clock()
    )
    family_first = await asyncio.to_thread(
        _transaction, door, crew, pin, [MOTHER, FISHERS], _raw(b"hello")
    )
    _assert_plain_refusal(family_first[2], 550, "5.5.3", b"in a mail of its own")
    assert family_first[-1][0] == 250  # the family message alone went
    # the union gets the one report whose address was taken (the app sent it there)
    (opened,) = union_reads(blocks_on_board(board.outbox), bytes(UNION), CODEBOOK)
    assert opened.text == "x"


async def test_a_report_the_lane_cannot_take_is_refused_with_the_lanes_sentence(
    tmp_path: Path,
) -> None:
    """On a small lane: a report longer than the lane carries gets 552 5.3.4 with the
    lane's limit (in Burmese first, the app speaking SMTPUTF8); reports that fill it get
    451 4.3.1 (the phone keeps the mail and tries again), saying until when; an empty
    report mail gets 550 5.6.0. Not one journal line, whatever happened."""
    small = ReservoirParams(blocks_per_period=1, pool_rows=4, min_rows=4, max_rows=12)
    board = Board(tmp_path, params=small)
    server, stopping, task = await _start(board.intake, tmp_path)  # type: ignore[arg-type]
    crew, pin = board.signed[1].member.crew, board.pins[1]
    rng = random.Random(5)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    long_text = "".join(rng.choice(letters) for _ in range(6_000))
    wrapped = "\r\n".join(long_text[i : i + 70] for i in range(0, len(long_text), 70))
    try:
        with Journal() as journal:
            too_long = await asyncio.to_thread(
                _transaction, server, crew, pin, [FISHERS], _raw(wrapped.encode()), ("SMTPUTF8",)
            )
            empty = await asyncio.to_thread(
                _transaction, server, crew, pin, [FISHERS], _raw(b"", Subject="")
            )
            full: list[Reply] = []
            for n in range(8):
                replies = await asyncio.to_thread(
                    _transaction, server, crew, pin, [FISHERS], _raw(f"beaten {n}".encode())
                )
                full.append(replies[-1])
                if replies[-1][0] != 250:
                    break
    finally:
        stopping.set()
        await task
        board.close()
    assert journal.beyond_sign_ins() == []
    code, text = too_long[-1]
    burmese, english = text.decode("utf-8").split("\n")[:2]
    assert code == 552
    assert burmese.startswith("5.3.4 ")
    assert re.search("[\u1000-\u109f]", burmese)
    assert english.startswith("5.3.4 The report is too long to send")
    _assert_plain_refusal(empty[-1], 550, "5.6.0", b"The mail has no text")
    assert full[0][0] == 250
    _assert_plain_refusal(full[-1], 451, "4.3.1", b"NOT saved")
    assert b"send it again after" in full[-1][1]


async def test_a_text_too_long_is_said_with_its_figures_and_in_burmese(
    door: SmtpServer, crew: Crew, outbox: Outbox
) -> None:
    """A mail whose text is over one message's 4,096 bytes: 552 5.3.4; with SMTPUTF8 the
    crew page's Burmese words for it come first, then the English with the figures (how
    many characters to take off)."""
    line = "a" * 69 + "\r\n"
    data = _raw((line * (MAX_MESSAGE_BYTES // 70 + 2)).encode())
    replies = await asyncio.to_thread(
        _transaction, door, crew.member.crew, crew.pin, [MOTHER], data, ("SMTPUTF8",)
    )
    code, text = replies[-1]
    burmese, english = text.decode("utf-8").split("\n")
    assert code == 552
    assert burmese.startswith("5.3.4 ")
    assert re.search("[\u1000-\u109f]", burmese)
    # the one length rule (shipboard.message_limit): by how many characters, in characters
    assert re.match(r"5\.3\.4 The message is too long by \d+ characters\. Shorten it", english)
    assert outbox.pending_messages(0) == ()
