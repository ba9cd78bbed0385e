"""Families' spoken replies (issue 24): a voice memo attached to a reply mail, through
real smtplib to the reply server, coded with Codec2 for the vessel; bad memos get a
specific answer in the family's language and the mail's text still goes down."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import numpy as np
import pytest

from common.speech import CodedSpeech, decode_codec2
from protocol.languages import Language
from protocol.voice import SAMPLE_RATE_HZ, VoiceMode
from shore.config import ConfigError, parse_config
from shore.replies import ReplyServer, ReplyServerConfig
from shore.reply_voice import (
    VOICE_NOTICES,
    VoiceRefusal,
    VoiceReplyConfig,
    find_spoken_part,
)
from tests.kit.speech import THAI, estoi, mp4_aac, ogg_opus, spoken, wav
from tests.kit.wait import eventually
from tests.shore.test_mail import SmtpSink
from tests.shore.test_replies import BOOK, FAMILY, IDENTITY, ROUTE, Stored, lookup

#: The Thai sentences a mother says in her voice memo (espeak-ng).
MOTHER = THAI


@dataclass
class Spoken:
    """The relay side of ``on_spoken_reply``: what would go to the store in one transaction."""

    replies: list[tuple[int, int, int, str | None, Language, bool, CodedSpeech]] = field(
        default_factory=list
    )
    fail: bool = False

    async def on_spoken_reply(
        self,
        vessel_id: int,
        crew: int,
        contact: int,
        text: str | None,
        lang: Language,
        truncated: bool,
        speech: CodedSpeech,
        now: float,
    ) -> None:
        if self.fail:
            raise RuntimeError("store is down")
        self.replies.append((vessel_id, crew, contact, text, lang, truncated, speech))


@dataclass
class Harness:
    server: ReplyServer
    stored: Stored
    spoken: Spoken
    notices: SmtpSink

    async def send(self, message: EmailMessage) -> Any:
        """Send with stdlib smtplib (in a thread), as the family's provider would."""

        def go() -> Any:
            with smtplib.SMTP("127.0.0.1", self.server.port, timeout=30) as client:
                return client.send_message(message, from_addr=FAMILY)

        return await asyncio.to_thread(go)

    async def notice_text(self) -> str:
        # the notice sink runs in aiosmtpd's own thread: no event can be shared, so poll
        await eventually(lambda: self.notices.handler.received, 10, what="the notice")
        [notice] = self.notices.handler.messages()
        body = notice.get_body(preferencelist=("plain",))
        assert body is not None
        content = body.get_content()
        assert isinstance(content, str)
        return content


def _harness_fixture(vessels: frozenset[int], max_seconds: int) -> Any:
    @pytest.fixture
    async def fixture() -> AsyncIterator[Harness]:
        stored, spoken_ = Stored(), Spoken()
        async with SmtpSink() as notices:
            server = ReplyServer(
                ReplyServerConfig(port=0, reply_limit_chars=1000, notice_interval_s=0),
                BOOK,
                lookup,
                stored.on_reply,
                IDENTITY,
                notices=notices.sender(),
                clock=lambda: 1_750_000_000.0,
                voice=VoiceReplyConfig(vessels=vessels, max_seconds=max_seconds),
                on_spoken_reply=spoken_.on_spoken_reply,
            )
            await server.start()
            stopping = asyncio.Event()
            runner = asyncio.create_task(server.run(stopping))
            try:
                yield Harness(server, stored, spoken_, notices)
            finally:
                stopping.set()
                await runner

    return fixture


harness = _harness_fixture(frozenset({ROUTE.vessel_id}), 30)
short_limit = _harness_fixture(frozenset({ROUTE.vessel_id}), 2)
old_agent = _harness_fixture(frozenset(), 30)


def reply_with(
    text: str | None, memo: bytes, *, maintype: str, subtype: str, filename: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = FAMILY
    message["To"] = BOOK.address_for(ROUTE)
    message["Subject"] = "Re: Message from Ko Aung"
    message["Message-ID"] = "<answer-2@example.com>"
    message.set_content(text or "")
    message.add_attachment(memo, maintype=maintype, subtype=subtype, filename=filename)
    return message


def test_voice_memos_are_found_by_type_or_by_name() -> None:
    """A memo sent as audio/ogg, as application/octet-stream named .m4a, or as
    application/ogg is the spoken part; a photo is not."""
    for maintype, subtype, filename in [
        ("audio", "ogg", "PTT-20261207.opus"),
        ("application", "octet-stream", "New Recording 3.m4a"),
        ("application", "ogg", "voice"),
    ]:
        message = reply_with("x", b"memo", maintype=maintype, subtype=subtype, filename=filename)
        found = find_spoken_part(message.as_bytes())
        assert found is not None, filename
        assert found.data == b"memo"
    photo = reply_with("x", b"\xff\xd8", maintype="image", subtype="jpeg", filename="h.jpg")
    assert find_spoken_part(photo.as_bytes()) is None


async def test_ogg_voice_memo_goes_down_as_codec2_with_the_text(harness: Harness) -> None:
    """A mother answers in Thai with a line of text and a WhatsApp voice memo (Opus in
    Ogg): the relay stores both together, the speech coded in Codec2 1200 and still
    intelligible when decoded; no notice is sent."""
    source = spoken(MOTHER, "th")
    memo = ogg_opus(source)
    reply = await harness.send(
        reply_with("แม่ส่งเสียงมานะ", memo, maintype="audio", subtype="ogg", filename="PTT.opus")
    )
    assert reply == {}
    [(vessel, crew, contact, text, lang, truncated, speech)] = harness.spoken.replies
    assert (vessel, crew, contact) == (ROUTE.vessel_id, ROUTE.crew, ROUTE.contact)
    assert (text, lang, truncated) == ("แม่ส่งเสียงมานะ", Language.THA, False)
    assert harness.stored.replies == []  # one transaction: not also as a plain reply
    assert speech.mode is VoiceMode.MODE_1200
    seconds = len(source) / SAMPLE_RATE_HZ
    assert seconds - 0.1 <= speech.duration_ms / 1000 <= seconds + 0.4
    assert len(speech.frames) == 6 * -(-speech.duration_ms // 40)
    heard = decode_codec2(speech)
    assert estoi(source, heard) > 0.4
    statistics = harness.server.statistics()
    assert (statistics.voice_replies_stored, statistics.attachments_dropped) == (1, 0)
    # notices leave in order: a photo's notice after it proves the memo's mail had none
    photo = reply_with("ดูรูปนะ", b"\xff\xd8", maintype="image", subtype="jpeg", filename="h.jpg")
    await harness.send(photo)
    assert "1 attachment(s)" in await harness.notice_text()


async def test_iphone_memo_without_text_goes_down_alone(harness: Harness) -> None:
    """A father who cannot write sends only an iPhone voice memo (AAC in M4A): it goes
    down as a spoken reply with no text."""
    memo = mp4_aac(spoken(MOTHER, "th"))
    await harness.send(
        reply_with(None, memo, maintype="audio", subtype="mp4", filename="New Recording.m4a")
    )
    [(_, _, _, text, _, _, speech)] = harness.spoken.replies
    assert text is None
    assert speech.duration_ms > 1000
    assert harness.server.statistics().empty_dropped == 0


@pytest.mark.parametrize(
    ("memo", "maintype", "subtype", "refusal"),
    [
        (b"%PDF-1.4 this is a document", "audio", "ogg", VoiceRefusal.NOT_AUDIO),
        (wav(np.zeros(3 * SAMPLE_RATE_HZ, dtype=np.int16)), "audio", "wav", VoiceRefusal.SILENT),
    ],
    ids=["not-audio", "silent"],
)
async def test_bad_memo_is_explained_and_the_text_still_goes_down(
    harness: Harness, memo: bytes, maintype: str, subtype: str, refusal: VoiceRefusal
) -> None:
    """A memo that is not sound, or silent, is not forwarded: the mother's text still
    goes down as a plain reply, and her notice says why in Thai with English below."""
    await harness.send(
        reply_with("แม่คิดถึงนะ", memo, maintype=maintype, subtype=subtype, filename="m.ogg")
    )
    assert [r[3] for r in harness.stored.replies] == ["แม่คิดถึงนะ"]
    assert harness.spoken.replies == []
    content = await harness.notice_text()
    assert VOICE_NOTICES[Language.THA][refusal] in content
    assert VOICE_NOTICES[Language.ENG][refusal] in content
    assert "attachment(s)" not in content  # the memo is explained, not counted as dropped
    statistics = harness.server.statistics()
    assert (statistics.voice_replies_refused, statistics.attachments_dropped) == (1, 0)


async def test_too_long_memo_is_refused_not_cut(short_limit: Harness) -> None:
    """The relay takes 2 s of speech; the mother's memo holds more: it is refused whole
    (never cut mid-sentence), her text goes down, and the notice names the limit."""
    memo = ogg_opus(spoken(MOTHER, "th"))
    await short_limit.send(
        reply_with("ฟังเสียงแม่นะ", memo, maintype="audio", subtype="ogg", filename="m.ogg")
    )
    assert [r[3] for r in short_limit.stored.replies] == ["ฟังเสียงแม่นะ"]
    assert short_limit.spoken.replies == []
    content = await short_limit.notice_text()
    assert VOICE_NOTICES[Language.THA][VoiceRefusal.TOO_LONG].format(limit=2) in content
    assert "longer than 2 seconds" in content


async def test_vessel_whose_agent_cannot_play_voice_gets_the_text_only(
    old_agent: Harness,
) -> None:
    """The vessel's agent does not read voice replies yet: the memo is an attachment like
    any other (not forwarded, the family told), and the text goes down."""
    memo = ogg_opus(spoken(MOTHER, "th"))
    await old_agent.send(
        reply_with("แม่คิดถึงนะ", memo, maintype="audio", subtype="ogg", filename="m.ogg")
    )
    assert [r[3] for r in old_agent.stored.replies] == ["แม่คิดถึงนะ"]
    assert old_agent.spoken.replies == []
    assert "1 attachment(s)" in await old_agent.notice_text()


async def test_store_failure_makes_the_sender_retry_the_whole_spoken_reply(
    harness: Harness,
) -> None:
    """The store is down: the sender's server hears 451 and nothing is half stored (the
    text and the memo go in one transaction, so the retry brings both once)."""
    harness.spoken.fail = True
    memo = ogg_opus(spoken(MOTHER, "th"))
    with pytest.raises(smtplib.SMTPDataError) as caught:
        await harness.send(
            reply_with("แม่คิดถึงนะ", memo, maintype="audio", subtype="ogg", filename="m.ogg")
        )
    assert caught.value.smtp_code == 451
    assert harness.stored.replies == []
    assert harness.spoken.replies == []


def test_relay_config_names_the_vessels_that_take_spoken_replies() -> None:
    """``[replies] voice_vessels`` lists the vessels whose agents read voice replies, with
    the limit and mode; a wrong value is refused at start-up naming the key."""
    config = parse_config(
        {"replies": {"voice_vessels": [7, 9], "voice_max_seconds": 20, "voice_mode": "700C"}}
    )
    assert config.replies.voice_vessels == (7, 9)
    assert (config.replies.voice_max_seconds, config.replies.voice_mode) == (20, "700C")
    assert parse_config({}).replies.voice_vessels == ()  # none by default: text only
    for bad, words in [
        ({"voice_vessels": ["7"]}, "list of whole numbers"),
        ({"voice_vessels": [0]}, "expected vessel ids"),
        ({"voice_max_seconds": 500}, "not from 1 to 120 seconds"),
        ({"voice_mode": "9999"}, "unknown Codec2 mode"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_config({"replies": bad})
