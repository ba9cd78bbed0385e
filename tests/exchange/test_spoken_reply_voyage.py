"""A family's spoken reply end to end (issue 24): a reply mail with a voice memo (Opus in
Ogg, made from espeak-ng speech) through the real relay's reply server (stdlib smtplib),
its store and downlink, over the fake link into the vessel's inbox, and out as the audio
the crew page plays; a memo that is not sound is refused and its mail's text still goes
down. The vessel's link figures count the spoken reply's bytes like any downlink."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from common.speech import decode_recording
from protocol.voice import SAMPLE_RATE_HZ
from shipboard.inbox import Inbox
from shipboard.voice import playable_speech
from shore.mail import MailIdentity, ReplyAddressBook, ReplyRoute
from shore.replies import ContactInfo, ReplyServer, ReplyServerConfig
from shore.reply_voice import VoiceReplyConfig
from tests.kit.speech import THAI, estoi, ogg_opus, spoken
from tests.kit.voyage import VESSEL, KitShore, KitVessel, voyage

BOOK = ReplyAddressBook([b"v" * 32], "reply.example.org")
IDENTITY = MailIdentity("relay.example.org", "relay@relay.example.org")
HOUR = 3600.0


async def _reply_server(shore: KitShore) -> ReplyServer:
    store = shore.store
    assert store is not None

    async def lookup(route: ReplyRoute) -> ContactInfo | None:
        found = await store.contact(route.vessel_id, route.crew, route.contact)
        return None if found is None else ContactInfo(found.lang)

    server = ReplyServer(
        ReplyServerConfig(port=0),
        BOOK,
        lookup,
        store.queue_reply,
        IDENTITY,
        clock=shore.clock,
        voice=VoiceReplyConfig(vessels=frozenset({VESSEL})),
        on_spoken_reply=store.queue_spoken_reply,
    )
    await server.start()
    return server


def _mail(vessel: KitVessel, text: str, memo: bytes, filename: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "family@example.org"
    message["To"] = BOOK.address_for(ReplyRoute(VESSEL, vessel.crew, vessel.contact))
    message["Subject"] = "Re: Message from Ko Ko"
    message.set_content(text)
    message.add_attachment(memo, maintype="audio", subtype="ogg", filename=filename)
    return message


async def _send(server: ReplyServer, message: EmailMessage) -> None:
    def go() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.send_message(message, from_addr="family@example.org")

    await asyncio.to_thread(go)


@pytest.fixture
async def at_sea(tmp_path: Path) -> AsyncIterator[tuple[KitVessel, KitShore, ReplyServer]]:
    async with voyage(tmp_path) as (vessel, shore, _link, _clock):
        vessel.write(1)
        await vessel.session()  # the vessel announces its family contact to the relay
        server = await _reply_server(shore)
        try:
            yield vessel, shore, server
        finally:
            await server.stop()


async def test_a_mothers_voice_memo_reaches_the_crew_member_and_plays(
    at_sea: tuple[KitVessel, KitShore, ReplyServer],
) -> None:
    """The family answers with a line of text and a WhatsApp voice memo. At the next
    session the vessel keeps both replies once; the memo's audio, as the crew page serves
    it, lasts as long as the words said and is intelligible (ESTOI); the session's
    downlink bytes include the speech."""
    vessel, shore, server = at_sea
    source = spoken(THAI, "th")
    await _send(server, _mail(vessel, "We are all well, listen:", ogg_opus(source), "PTT.opus"))
    shore.clock.advance(HOUR)
    await shore.tick()
    vessel.write(1)
    report = await vessel.session()
    rows = vessel.inbox_rows("reply")
    assert [code for _, code, _ in rows] == [1, 2]  # the text's number, then the memo's
    entries = Inbox(vessel.outbox).entries(vessel.crew)
    [spoken_entry] = [e for e in entries if e["voice_ms"] is not None]
    [text_entry] = [e for e in entries if e["kind"] == "reply" and e["voice_ms"] is None]
    assert text_entry["body"] == "We are all well, listen:"
    found = Inbox(vessel.outbox).spoken_reply(vessel.crew, int(str(spoken_entry["entry"])))
    assert found is not None
    mode, duration_ms, frames = found
    assert report.downlink_payload_bytes > len(frames)
    heard = decode_recording(playable_speech(mode, duration_ms, frames), limit_s=120)
    assert abs(len(heard) / SAMPLE_RATE_HZ - len(source) / SAMPLE_RATE_HZ) < 0.6
    assert estoi(source, heard, max_lag_ms=200) > 0.4
    other_crew = vessel.crew + 1
    assert Inbox(vessel.outbox).spoken_reply(other_crew, int(str(spoken_entry["entry"]))) is None


async def test_a_memo_that_is_not_sound_loses_nothing_else_of_the_mail(
    at_sea: tuple[KitVessel, KitShore, ReplyServer],
) -> None:
    """The memo attached is a document renamed .ogg: nothing spoken goes down, but the
    mail's text reaches the crew member."""
    vessel, shore, server = at_sea
    await _send(server, _mail(vessel, "Call us on Sunday", b"%PDF-1.4 not sound", "m.ogg"))
    shore.clock.advance(HOUR)
    await shore.tick()
    vessel.write(1)
    await vessel.session()
    entries = Inbox(vessel.outbox).entries(vessel.crew)
    replies = [e for e in entries if e["kind"] == "reply"]
    assert [(e["body"], e["voice_ms"]) for e in replies] == [("Call us on Sunday", None)]
    assert server.statistics().voice_replies_refused == 1
