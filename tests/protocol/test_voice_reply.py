"""Voice replies on the wire (issue 24): a family's spoken answer as Codec2 frames, kind 14.

A voice reply is built only when its frames fit its mode and duration; it travels down in
a signed batch next to a text reply; an agent of an older version, which does not know
kind 14, refuses the whole downlink batch as malformed (which is why the relay sends
voice replies only to vessels whose agents read them).
"""

from __future__ import annotations

import enum
import random
from dataclasses import replace

import pytest

from common.codebooks import default_codebook
from protocol import skeleton
from protocol.batch import Direction, decode_batch, encode_batch
from protocol.envelopes import (
    Kind,
    Reply,
    VoiceReply,
    from_skeleton,
    to_skeleton,
)
from protocol.errors import InvalidEnvelope, MalformedBatch, Reason
from protocol.languages import Language
from protocol.signing import SigningKey
from protocol.voice import MAX_VOICE_NOTE_MS, VoiceMode

SHORE_KEY = SigningKey(bytes(range(1, 33)))
CODEBOOK = default_codebook()
MINUTES = 29_000_000
#: Codec2 frames look like random bytes; these stand for 10 s in mode 1200.
SPEECH = random.Random(14).randbytes(1500)


def _voice(**changes: object) -> VoiceReply:
    voice = VoiceReply(
        reply_seq=9,
        crew=3,
        contact=1,
        mode=VoiceMode.MODE_1200,
        duration_ms=10_000,
        frames=SPEECH,
        written_minutes=MINUTES,
    )
    return replace(voice, **changes) if changes else voice  # type: ignore[arg-type]


def _downlink(*envelopes: object) -> bytes:
    return encode_batch(
        list(envelopes),  # type: ignore[arg-type]
        direction=Direction.DOWNLINK,
        vessel_id=42,
        batch_seq=1,
        batch_minutes=MINUTES,
        signing_key=SHORE_KEY,
        codebook=CODEBOOK,
    )


def test_voice_reply_map_holds_mode_duration_and_frames() -> None:
    """On the wire: kind 14, the reply number, crew, contact, the mode's Codec2 number,
    the duration in ms and the frames; no text key."""
    entry = to_skeleton(_voice(), MINUTES)
    assert entry == {0: 14, 4: 0, 1: 9, 2: 3, 3: 1, 32: 5, 33: 10_000, 7: SPEECH}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"frames": SPEECH[:-1]}, "take 1500"),
        ({"duration_ms": 0}, "lasts from 1 to"),
        ({"duration_ms": MAX_VOICE_NOTE_MS + 1}, "lasts from 1 to"),
    ],
)
def test_voice_reply_that_does_not_fit_its_mode_is_never_built(
    changes: dict[str, object], words: str
) -> None:
    """Frames cut short, no speech, or more than the protocol carries: refused when built."""
    with pytest.raises(InvalidEnvelope, match=words):
        _voice(**changes)


def test_bad_voice_reply_map_from_the_link_is_a_malformed_batch() -> None:
    """A voice reply map whose frames do not fit raises MalformedBatch, never more."""
    entry = {0: 14, 1: 9, 2: 3, 3: 1, 32: 5, 33: 10_000, 7: bytes(10)}
    with pytest.raises(MalformedBatch, match="VoiceReply"):
        from_skeleton(entry, MINUTES, None)


def test_voice_reply_travels_down_next_to_the_text_of_the_same_answer() -> None:
    """A family wrote a line and attached a voice memo: both come down in one signed batch,
    the text in its language frame and the speech byte for byte."""
    text = Reply(9, 3, 1, MINUTES, Language.THA, "แม่คิดถึงนะลูก")
    voice = _voice(reply_seq=10)
    batch = decode_batch(_downlink(text, voice), codebook=CODEBOOK, verify_key=SHORE_KEY.verify_key)
    assert batch.envelopes == (text, voice)


def test_an_agent_that_does_not_know_voice_replies_refuses_the_batch_as_malformed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay sends a voice reply to an agent of the version before voice replies: its
    decoder, whose kinds end at 13, refuses the whole batch with MalformedBatch naming
    kind 14 (so the relay must not send it there); it does not crash."""
    old_kinds = enum.IntEnum(  # type: ignore[misc]
        "Kind", {kind.name: int(kind) for kind in Kind if kind is not Kind.VOICE_REPLY}
    )
    wire = _downlink(_voice())
    monkeypatch.setattr(skeleton, "Kind", old_kinds)
    with pytest.raises(MalformedBatch, match="kind 14 is not known to this version") as caught:
        decode_batch(wire, codebook=CODEBOOK, verify_key=SHORE_KEY.verify_key)
    assert caught.value.reason is Reason.MALFORMED
