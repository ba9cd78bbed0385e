"""Voice notes on board: what a phone's browser recorded, made into Codec2 for the link.

:func:`code_recording` decodes the recording (WebM/Opus, MP4/AAC or any container FFmpeg
reads; :mod:`common.speech`), resamples it to 8 kHz mono, trims the silence before and
after the words and codes the rest with Codec2 in the vessel's mode (``[voice] mode``).
The outbox then stores it as a family message (:meth:`shipboard.outbox.Outbox.
accept_voice_note`), counted against the crew member's quota like text, and it travels as
its own envelope kind (:class:`protocol.envelopes.VoiceNote`), never through the text
codecs. Each way a recording can fail is a :class:`~shipboard.errors.VoiceNoteRefused`
with a sentence for the crew member in their language. CPU-bound: the doors call it in a
thread. Nothing of the recording is logged but its size and length.

The other way, :func:`playable_speech` turns a family's spoken reply (Codec2 frames, as the
downlink brought it) into Opus in Ogg for the crew page's player.
"""

from __future__ import annotations

import logging

from common.speech import (
    CodedSpeech,
    RecordingNotAudio,
    RecordingSilent,
    RecordingTooLong,
    RecordingUnreadable,
    SpeechError,
    decode_codec2,
    decode_recording,
    encode_codec2,
    encode_ogg_opus,
    trim_silence,
)
from protocol.voice import SAMPLE_RATE_HZ, VoiceMode
from shipboard.errors import (
    VoiceNoteNotAudio,
    VoiceNoteRefused,
    VoiceNoteSilent,
    VoiceNoteTooLong,
    VoiceNoteUnreadable,
)

__all__ = ["MAX_RECORDING_BYTES", "code_recording", "playable_speech"]

logger = logging.getLogger(__name__)

#: The largest recording a door reads (checked before reading): two minutes of Opus or
#: AAC at the 256 kbit/s a phone's browser may choose, with room for the container.
MAX_RECORDING_BYTES = 4 * 1024 * 1024


def _refusal(error: SpeechError, limit_s: int) -> VoiceNoteRefused:
    if isinstance(error, RecordingTooLong):
        return VoiceNoteTooLong(limit=limit_s)
    if isinstance(error, RecordingSilent):
        return VoiceNoteSilent()
    if isinstance(error, RecordingNotAudio):
        return VoiceNoteNotAudio()
    assert isinstance(error, RecordingUnreadable), error
    return VoiceNoteUnreadable()


def code_recording(
    recording: bytes, *, limit_s: int, mode: VoiceMode, journal: bool = True
) -> CodedSpeech:
    """The recording's speech, trimmed and coded with Codec2 in ``mode``.

    Raises :class:`~shipboard.errors.VoiceNoteRefused` (too long once trimmed, silent,
    not sound, unreadable); nothing is stored either way. ``journal=False`` for a spoken
    grievance report: then nothing at all is logged, so that the owner's journal cannot
    tell when someone spoke a report.
    """
    try:
        samples = trim_silence(decode_recording(recording, limit_s=limit_s))
        seconds = len(samples) / SAMPLE_RATE_HZ
        if seconds > limit_s:
            raise RecordingTooLong(
                f"{seconds:.1f} s of speech, over the limit of {limit_s} s",
                seconds=seconds,
                limit_s=limit_s,
            )
    except SpeechError as error:
        if journal:
            logger.info("voice recording refused (%s, %d bytes)", error.code, len(recording))
        raise _refusal(error, limit_s) from error
    coded = encode_codec2(samples, mode)
    if not journal:
        return coded
    logger.info(
        "voice recording coded: %d bytes in, %d ms of speech, %d bytes of Codec2 %s",
        len(recording),
        coded.duration_ms,
        len(coded.frames),
        mode.label,
    )
    return coded


def playable_speech(mode: VoiceMode, duration_ms: int, frames: bytes) -> bytes:
    """A family's spoken reply (Codec2 frames from the downlink) as Opus in Ogg, which the
    crew's phones play in the page. CPU-bound (milliseconds): the doors call it in a thread.
    """
    return encode_ogg_opus(decode_codec2(CodedSpeech(mode, duration_ms, frames)))
