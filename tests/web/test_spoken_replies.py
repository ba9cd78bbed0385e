"""A family's spoken reply on the crew page (issue 24): the downlink brings Codec2 frames,
the conversation shows a player under the message it answers, and the audio comes from a
signed-in, never-cached route as Opus in Ogg that still sounds like the mother's memo
(the agent's app over ASGI, the outbox in a temporary directory, a fake clock)."""

from __future__ import annotations

import re

from common.speech import decode_recording
from protocol.envelopes import Reply, VoiceReply
from protocol.languages import Language
from protocol.voice import SAMPLE_RATE_HZ
from shore.reply_voice import VoiceReplyConfig, code_spoken_reply
from tests.kit.speech import THAI, estoi, ogg_opus, spoken
from tests.web.test_conversations import (
    DURESS_PIN,
    Vessel,
    own_pin,
    sign_in,
    thread_of,
    vessel,
    write,
)

__all__ = ["vessel"]  # the fixture, shared with the conversation tests


def _voice_reply(vessel: Vessel, reply_seq: int, minutes: int) -> tuple[VoiceReply, float]:
    """The mother's Thai voice memo (Opus in Ogg) coded as the relay codes it; and its
    length in seconds of speech."""
    source = spoken(THAI, "th")
    speech = code_spoken_reply(ogg_opus(source), VoiceReplyConfig(vessels=frozenset({1})))
    voice = VoiceReply(
        reply_seq=reply_seq,
        crew=vessel.crew,
        contact=vessel.mother,
        mode=speech.mode,
        duration_ms=speech.duration_ms,
        frames=speech.frames,
        written_minutes=minutes,
    )
    return voice, len(source) / SAMPLE_RATE_HZ


async def test_spoken_reply_plays_under_the_message_it_answers(vessel: Vessel) -> None:
    """The crew member wrote home; the mother answered with a line of text and a voice
    memo. The conversation shows both under his message, the memo with a player; the
    audio it plays is Ogg, not cached, as long as her memo and intelligible; a memo sent
    twice (a resent batch) shows once."""
    csrf = await own_pin(vessel)
    first = await write(vessel, csrf, vessel.mother, "Mother, the boat is in port on Friday.")
    vessel.clock.now += 600
    minutes = int(vessel.clock.now // 60)
    voice, seconds = _voice_reply(vessel, 81, minutes)
    text = Reply(80, vessel.crew, vessel.mother, minutes, Language.THA, "แม่ส่งเสียงมานะ")
    vessel.downlink([text, voice], minutes)
    vessel.downlink([voice], minutes)  # the same reply again: kept once
    page = await vessel.client.get("/inbox")
    thread = thread_of(page.text, f"contact-{vessel.mother}")
    players = re.findall(r'<audio controls preload="none" src="(/inbox/voice/\d+)"', thread)
    assert len(players) == 1
    replies = re.findall(r'<li class="reply" data-answers="(\d+)">', thread)
    assert replies == [str(first), str(first)]
    assert "แม่ส่งเสียงมานะ" in thread
    assert f"{round(voice.duration_ms / 1000)} s" in thread

    audio = await vessel.client.get(players[0])
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/ogg"
    assert audio.headers["cache-control"] == "no-store"
    heard = decode_recording(audio.content, limit_s=120)
    assert abs(len(heard) / SAMPLE_RATE_HZ - seconds) < 0.6
    assert estoi(spoken(THAI, "th"), heard, max_lag_ms=200) > 0.4


async def test_spoken_reply_is_only_for_its_crew_member_signed_in(vessel: Vessel) -> None:
    """The audio route asks for the crew member's sign-in: signed out it leads to the
    login page; under the duress PIN, and for an entry that is not a spoken reply of
    theirs, there is no such message."""
    csrf = await own_pin(vessel)
    await write(vessel, csrf, vessel.mother, "Mother?")
    minutes = int(vessel.clock.now // 60)
    voice, _ = _voice_reply(vessel, 90, minutes)
    vessel.downlink([voice], minutes)
    page = await vessel.client.get("/inbox")
    [path] = re.findall(r'src="(/inbox/voice/\d+)"', page.text)
    entry = int(path.rsplit("/", 1)[1])
    assert (await vessel.client.get(f"/inbox/voice/{entry + 1000}")).status_code == 404
    assert (await vessel.client.get("/inbox/voice/x")).status_code == 404
    vessel.client.cookies.clear()
    signed_out = await vessel.client.get(path)
    assert signed_out.url.path == "/login"
    assert signed_out.headers["content-type"].startswith("text/html")
    assert (await sign_in(vessel, DURESS_PIN)).url.path == "/home"
    duress = await vessel.client.get(path)
    assert duress.status_code == 404
    assert "<audio" not in (await vessel.client.get("/inbox")).text
