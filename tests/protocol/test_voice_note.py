"""Voice notes on the wire (issue 24): Codec2 frames in their own envelope kind.

A voice note is built only when its frames fit its mode and duration; it travels in a
signed batch next to text messages without touching the text frames; a relay of an
older version, which does not know kind 13, refuses the batch as malformed with a typed
error and a reason code the vessel hears.
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
    BatchAck,
    CrewMessage,
    Envelope,
    Kind,
    VoiceNote,
    from_skeleton,
    to_skeleton,
)
from protocol.errors import InvalidEnvelope, MalformedBatch, Reason
from protocol.languages import Language
from protocol.signing import SigningKey
from protocol.voice import MAX_VOICE_NOTE_MS, VoiceMode, frames_for

VESSEL_KEY = SigningKey(bytes(range(32)))
CODEBOOK = default_codebook()
MINUTES = 29_000_000
#: Codec2 frames look like random bytes to a compressor; these stand for 10 s in mode 1200.
SPEECH = random.Random(24).randbytes(1500)

#: Codec2's own figures (codec2.h and codec2_bits_per_frame): mode number, nominal bit
#: rate, frame length in ms, bits of one frame.
CODEC2_MODES = {
    "3200": (0, 3200, 20, 64),
    "2400": (1, 2400, 20, 48),
    "1600": (2, 1600, 40, 64),
    "1400": (3, 1400, 40, 56),
    "1300": (4, 1300, 40, 52),
    "1200": (5, 1200, 40, 48),
    "700C": (8, 700, 40, 28),
}


def _note(**changes: object) -> VoiceNote:
    mode = VoiceMode.MODE_1200
    note = VoiceNote(
        message_seq=5,
        crew=3,
        contact=1,
        mode=mode,
        duration_ms=10_000,
        frames=SPEECH,
        written_minutes=MINUTES,
    )
    return replace(note, **changes) if changes else note  # type: ignore[arg-type]


def test_modes_have_codec2s_numbers_and_frame_sizes() -> None:
    """Each mode's wire id, bit rate, frame length and frame bytes are Codec2's own."""
    assert {mode.label for mode in VoiceMode} == set(CODEC2_MODES)
    for mode in VoiceMode:
        number, bits_per_s, frame_ms, frame_bits = CODEC2_MODES[mode.label]
        assert int(mode) == number
        assert mode.bits_per_s == bits_per_s
        assert mode.frame_ms == frame_ms
        assert mode.samples_per_frame == 8 * frame_ms
        assert mode.bytes_per_frame == -(-frame_bits // 8)
        assert VoiceMode.from_label(mode.label.lower()) is mode


def test_an_unknown_mode_label_names_the_known_ones() -> None:
    """A config naming mode 450 is told which modes exist."""
    with pytest.raises(ValueError, match="known modes: 3200, 2400, 1600"):
        VoiceMode.from_label("450")


def test_ten_seconds_in_1200_is_250_frames_of_6_bytes() -> None:
    """10 s of speech in mode 1200: 250 frames of 40 ms, 1,500 bytes of speech."""
    assert frames_for(VoiceMode.MODE_1200, 10_000) == 250
    assert frames_for(VoiceMode.MODE_1200, 10_001) == 251
    assert _note().voice_bytes == 1500


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"duration_ms": 0}, "lasts from 1 to"),
        ({"duration_ms": MAX_VOICE_NOTE_MS + 1}, "lasts from 1 to"),
        ({"duration_ms": 9_000}, "1500 bytes, but 9000 ms in Codec2 1200 take 1350"),
        ({"frames": bytes(1501)}, "1501 bytes"),
        ({"frames": b""}, "non-empty bytes"),
        ({"mode": 5}, "must be a VoiceMode"),
        ({"mode": VoiceMode.MODE_700C}, "take 1000"),
        ({"contact": -1}, "whole number from 0"),
    ],
)
def test_impossible_voice_notes_are_refused(changes: dict[str, object], words: str) -> None:
    """A voice note whose frames do not fit its mode and duration is never built."""
    with pytest.raises(InvalidEnvelope, match=words):
        _note(**changes)


def test_voice_note_travels_without_a_language_frame() -> None:
    """A batch of a text message and a voice note: the voice note adds no language frame
    and decodes, verified, to the same envelope (its frames never pass a text codec)."""
    text = CrewMessage(
        message_seq=4,
        crew=3,
        contact=1,
        written_minutes=MINUTES,
        lang=Language.THA,
        body="สวัสดีครับแม่",
    )
    note = _note()
    wire = encode_batch(
        [text, note],
        direction=Direction.UPLINK,
        vessel_id=42,
        batch_seq=1,
        batch_minutes=MINUTES,
        signing_key=VESSEL_KEY,
        codebook=CODEBOOK,
        pad=False,
    )
    batch = decode_batch(
        wire, codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key, direction=Direction.UPLINK
    )
    assert batch.envelopes == (text, note)
    assert len(batch.frames) == 1  # one language (Thai); the voice note has none


def test_a_voice_note_adds_its_frames_and_a_few_bytes_to_a_batch() -> None:
    """What 10 s of speech in mode 1200 costs on the wire, beside a receipt: its 1,500
    bytes of frames and under 32 bytes of map and framing (the benchmark's figure)."""
    ack = BatchAck(up_to=3, written_minutes=MINUTES)

    def wire_bytes(envelopes: list[Envelope]) -> int:
        return len(
            encode_batch(
                envelopes,
                direction=Direction.UPLINK,
                vessel_id=42,
                batch_seq=1,
                batch_minutes=MINUTES,
                signing_key=VESSEL_KEY,
                codebook=CODEBOOK,
                pad=False,
            )
        )

    added = wire_bytes([ack, _note()]) - wire_bytes([ack])
    assert 1500 < added < 1500 + 32


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({0: 13, 1: 1, 2: 1, 3: 1, 32: 6, 33: 40, 7: bytes(6)}, "code 6 is not known"),
        ({0: 13, 1: 1, 2: 1, 3: 1, 32: 5, 33: 41, 7: bytes(6)}, "take 12"),
        ({0: 13, 1: 1, 2: 1, 3: 1, 32: 5, 33: 40}, "missing a required field"),
        ({0: 13, 1: 1, 2: 1, 3: 1, 32: 5, 33: 40, 7: bytes(6), 5: 1}, "unknown keys"),
    ],
)
def test_bad_voice_note_maps_are_malformed_batches(entry: object, words: str) -> None:
    """A voice note map from the link that does not fit raises MalformedBatch, never more."""
    with pytest.raises(MalformedBatch, match=words):
        from_skeleton(entry, MINUTES, None)


def test_voice_note_map_holds_mode_duration_and_frames() -> None:
    """On the wire: kind 13, the mode's Codec2 number, the duration in ms, the frames."""
    entry = to_skeleton(_note(), MINUTES)
    assert entry == {0: 13, 4: 0, 1: 5, 2: 3, 3: 1, 32: 5, 33: 10_000, 7: _note().frames}


def test_a_relay_that_does_not_know_voice_notes_refuses_the_batch_as_malformed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A vessel sends a voice note to a relay of the version before issue 24: the relay's
    decoder, whose kinds end at 12, refuses the whole batch with MalformedBatch (reason
    MALFORMED, which travels back in the BatchAck), naming kind 13; it does not crash or
    mistake the note for anything else."""
    old_kinds = enum.IntEnum(  # type: ignore[misc]
        "Kind", {kind.name: int(kind) for kind in Kind if kind is not Kind.VOICE_NOTE}
    )
    wire = encode_batch(
        [_note()],
        direction=Direction.UPLINK,
        vessel_id=42,
        batch_seq=1,
        batch_minutes=MINUTES,
        signing_key=VESSEL_KEY,
        codebook=CODEBOOK,
    )
    monkeypatch.setattr(skeleton, "Kind", old_kinds)
    with pytest.raises(MalformedBatch, match="kind 13 is not known to this version") as caught:
        decode_batch(wire, codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key)
    assert caught.value.reason is Reason.MALFORMED
