"""Speech (issue 24): phone recordings become 8 kHz speech, Codec2 frames, and Opus for home.

The recordings are espeak-ng's Burmese and Thai packed as Chromium (WebM/Opus) and Safari
(MP4/AAC) send them. Each bad recording a crew member can make (too long, silent, not
sound at all, in a container nobody reads) ends in its own typed error.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from common.speech import (
    GATE_DBFS,
    HANGOVER_MS,
    CodedSpeech,
    RecordingNotAudio,
    RecordingSilent,
    RecordingTooLong,
    RecordingUnreadable,
    decode_codec2,
    decode_recording,
    encode_codec2,
    encode_ogg_opus,
    trim_silence,
)
from protocol.voice import SAMPLE_RATE_HZ, VoiceMode, frames_for
from tests.kit.speech import BURMESE, THAI, estoi, mp4_aac, spoken, wav, webm_opus

RATE = SAMPLE_RATE_HZ


def _tone(seconds: float, dbfs: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    amplitude = 32767 * 10 ** (dbfs / 20) * np.sqrt(2)
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.parametrize("pack", [webm_opus, mp4_aac, wav], ids=["webm-opus", "mp4-aac", "wav"])
def test_browser_recordings_decode_to_the_speech_they_hold(pack: object) -> None:
    """A Burmese sentence recorded in Chromium's, Safari's or a plain WAV container comes
    back as 8 kHz speech of the same length that scores as the same speech."""
    source = spoken(BURMESE, "my")
    heard = trim_silence(decode_recording(pack(source), limit_s=30))  # type: ignore[operator]
    assert abs(len(heard) - len(source)) < RATE // 10
    assert estoi(source, heard) > 0.95


def test_a_48_khz_recording_is_resampled_to_8_khz() -> None:
    """A 1 s tone recorded at 48 kHz comes out as 8,000 samples of the same tone."""
    t = np.arange(48_000) / 48_000
    tone = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    samples = decode_recording(webm_opus(tone, input_rate=48_000), limit_s=30)
    assert abs(len(samples) - RATE) < 400
    spectrum = np.abs(np.fft.rfft(samples[1000:7000]))
    assert abs(np.argmax(spectrum) * RATE / 6000 - 300) < 5


def test_silence_before_and_after_the_words_is_trimmed() -> None:
    """Two seconds of quiet, a second of speech, three of quiet: about one second (plus
    the margins) is kept."""
    quiet = np.zeros(2 * RATE, dtype=np.int16)
    voice = _tone(1.0, -20.0)
    trimmed = trim_silence(np.concatenate([quiet, voice, np.zeros(3 * RATE, dtype=np.int16)]))
    margin = RATE * HANGOVER_MS // 1000
    assert len(voice) <= len(trimmed) <= len(voice) + 2 * margin + RATE // 50


def test_engine_noise_far_below_the_voice_is_trimmed_too() -> None:
    """Steady noise at -42 dBFS, 39 dB under a loud voice, is not speech, even though it
    is above the absolute gate (-45 dBFS)."""
    noise = np.random.default_rng(7).normal(0, 32767 * 10 ** (-42 / 20), 3 * RATE)
    loud = _tone(1.0, -3.0)
    samples = np.concatenate([noise, loud, noise]).astype(np.int16)
    assert len(trim_silence(samples)) < 1.5 * RATE


@pytest.mark.parametrize("dbfs", [None, GATE_DBFS - 10])
def test_a_silent_recording_is_refused(dbfs: float | None) -> None:
    """A phone that recorded nothing (all zeros, or a hiss under the gate) gets
    RecordingSilent, not a note of nothing."""
    samples = np.zeros(2 * RATE, dtype=np.int16) if dbfs is None else _tone(2.0, dbfs)
    with pytest.raises(RecordingSilent):
        trim_silence(decode_recording(wav(samples), limit_s=30))


def test_a_recording_far_over_the_limit_stops_decoding() -> None:
    """A 60 s recording against a 30 s limit: RecordingTooLong, saying the limit."""
    with pytest.raises(RecordingTooLong, match="the limit is 30 s") as caught:
        decode_recording(wav(_tone(60.0, -20.0)), limit_s=30)
    assert caught.value.limit_s == 30
    assert caught.value.seconds > 30


def test_an_image_is_not_audio() -> None:
    """A photo sent instead of a recording opens (FFmpeg reads PNG) but holds no sound."""
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, "PNG")
    with pytest.raises(RecordingNotAudio, match="no sound"):
        decode_recording(image.getvalue(), limit_s=30)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is text not sound" * 10, bytes(1000), b"\x1aE\xdf\xa3" + bytes(60)],
    ids=["empty", "text", "zeros", "webm-header-only"],
)
def test_bytes_no_reader_knows_are_unreadable(data: bytes) -> None:
    """Text, zeros or a WebM cut after its first bytes: RecordingUnreadable, typed."""
    with pytest.raises(RecordingUnreadable, match="record it again"):
        decode_recording(data, limit_s=30)


@pytest.mark.parametrize("mode", list(VoiceMode), ids=lambda mode: mode.label)
def test_codec2_round_trip_keeps_the_speech_intelligible(mode: VoiceMode) -> None:
    """Thai speech through every Codec2 mode: the right number of frames, the right
    length back, and an ESTOI well above chance."""
    source = spoken(THAI, "th")
    coded = encode_codec2(source, mode)
    assert coded.duration_ms == -(-len(source) * 1000 // RATE)
    assert len(coded.frames) == frames_for(mode, coded.duration_ms) * mode.bytes_per_frame
    heard = decode_codec2(coded)
    assert len(heard) == coded.duration_ms * RATE // 1000
    assert estoi(source, heard) > 0.4


def test_codec2_refuses_frames_that_are_not_whole() -> None:
    """Frames cut in the middle are a bug of the caller, refused loudly."""
    with pytest.raises(ValueError, match="not whole 1200 frames"):
        decode_codec2(CodedSpeech(VoiceMode.MODE_1200, 40, bytes(7)))


def test_opus_in_ogg_plays_back_as_the_same_speech() -> None:
    """What the family gets: an Ogg file (OggS) whose Opus decodes to the Codec2 speech."""
    speech = decode_codec2(encode_codec2(spoken(BURMESE, "my"), VoiceMode.MODE_1200))
    ogg = encode_ogg_opus(speech)
    assert ogg[:4] == b"OggS"
    assert b"OpusHead" in ogg[:200]
    back = decode_recording(ogg, limit_s=30)
    assert abs(len(back) - len(speech)) < RATE // 20
    assert estoi(speech, back) > 0.9
