"""Voice messages ashore: a crew member's Codec2 frames made into a file the family plays.

The relay decodes the frames of a stored voice message (libcodec2 through ``pycodec2``)
and encodes the speech as Opus in Ogg (``audio/ogg``; FFmpeg's libopus through PyAV), which
current Android and iOS phones and their mail apps play. :func:`voice_attachment` is
CPU-bound (a few milliseconds for a minute of speech): the delivery worker calls it in a
thread. The recording itself is never logged, only its size and length.
"""

from __future__ import annotations

from common.speech import CodedSpeech, decode_codec2, encode_ogg_opus
from shore.mail import VoiceAttachment
from shore.store.uplink import CodedVoice

__all__ = ["voice_attachment"]


def voice_attachment(voice: CodedVoice) -> VoiceAttachment:
    """The voice message as Opus in Ogg (raises ``ValueError`` for frames cut short)."""
    samples = decode_codec2(CodedSpeech(voice.mode, voice.duration_ms, voice.frames))
    return VoiceAttachment(encode_ogg_opus(samples), voice.duration_ms)
