"""Speech: recordings to 8 kHz samples, Codec2 frames and back, and Opus in Ogg for families.

The vessel turns what a phone's browser recorded (WebM/Opus or MP4/AAC from MediaRecorder,
or any container FFmpeg reads) into Codec2 frames: :func:`decode_recording` (PyAV,
resampled to 8 kHz mono), :func:`trim_silence` (a simple energy gate), then
:func:`encode_codec2`. The relay turns the frames back into speech (:func:`decode_codec2`)
and into a file every phone plays (:func:`encode_ogg_opus`). Codec2 is libcodec2 through
``pycodec2``; containers and Opus are FFmpeg through PyAV. Nothing here is hand-made.

Samples are ``numpy`` arrays of ``int16`` at :data:`~protocol.voice.SAMPLE_RATE_HZ`.
Errors (each with a stable ``code`` that the crew page turns into a sentence in the crew
member's language)::

    SpeechError
    ├── RecordingUnreadable   bytes no container reader knows, or a recording cut short
    ├── RecordingNotAudio     a container that holds no sound (a picture, a silent video)
    ├── RecordingTooLong      more speech than the vessel's limit in seconds
    └── RecordingSilent       nothing above the silence gate
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import av
import av.error
import numpy as np
import numpy.typing as npt
import pycodec2

from protocol.voice import SAMPLE_RATE_HZ, VoiceMode, frames_for

__all__ = [
    "CodedSpeech",
    "RecordingNotAudio",
    "RecordingSilent",
    "RecordingTooLong",
    "RecordingUnreadable",
    "Samples",
    "SpeechError",
    "decode_codec2",
    "decode_recording",
    "encode_codec2",
    "encode_ogg_opus",
    "trim_silence",
]

logger = logging.getLogger(__name__)

Samples = npt.NDArray[np.int16]

#: Silence a recording may hold beyond the limit before decoding stops (it is trimmed).
TRIM_ALLOWANCE_S = 10.0
#: The energy gate: a 20 ms window is speech when its level is above this (dBFS) ...
GATE_DBFS = -45.0
#: ... and within this many dB of the loudest window (engine noise under speech is not).
GATE_BELOW_PEAK_DB = 35.0
#: Kept on each side of the speech, so that soft first and last sounds are not cut.
HANGOVER_MS = 150
_WINDOW_MS = 20


class SpeechError(Exception):
    """A recording that cannot become a voice note; ``code`` names why (stable)."""

    code: ClassVar[str] = "speech"


class RecordingUnreadable(SpeechError):
    """The bytes are in no container this machine reads, or the recording is cut short."""

    code = "unreadable"


class RecordingNotAudio(SpeechError):
    """The container opened but holds no sound."""

    code = "not_audio"


class RecordingTooLong(SpeechError):
    """More speech than the limit; ``seconds`` is how much (at least), ``limit_s`` the limit."""

    code = "too_long"

    def __init__(self, message: str, *, seconds: float, limit_s: float) -> None:
        super().__init__(message)
        self.seconds = seconds
        self.limit_s = limit_s


class RecordingSilent(SpeechError):
    """Nothing in the recording is loud enough to be speech."""

    code = "silent"


def decode_recording(data: bytes, *, limit_s: float) -> Samples:
    """Decode a recording's first audio stream to 8 kHz mono ``int16`` samples.

    Decoding stops with :class:`RecordingTooLong` once the sound runs past ``limit_s``
    plus :data:`TRIM_ALLOWANCE_S` (so a hostile file cannot make it decode for hours);
    the caller checks the limit again after :func:`trim_silence`.
    """
    max_samples = int((limit_s + TRIM_ALLOWANCE_S) * SAMPLE_RATE_HZ)
    chunks: list[Samples] = []
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = container.streams.audio
            if not streams:
                raise RecordingNotAudio("the recording holds no sound (no audio stream)")
            stream = streams[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE_HZ)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                    chunks.append(chunk)
                    count += len(chunk)
                if count > max_samples:
                    raise RecordingTooLong(
                        f"the recording runs past {limit_s + TRIM_ALLOWANCE_S:.0f} s "
                        f"(the limit is {limit_s:.0f} s of speech)",
                        seconds=count / SAMPLE_RATE_HZ,
                        limit_s=limit_s,
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
    except av.error.FFmpegError as exc:
        raise RecordingUnreadable(
            f"the recording cannot be read ({type(exc).__name__}); record it again"
        ) from exc
    if not chunks:
        raise RecordingSilent("the recording holds no sound at all")
    return np.concatenate(chunks)


def _window_levels_dbfs(samples: Samples, window: int) -> npt.NDArray[np.float64]:
    count = len(samples) // window
    if count == 0:
        return np.zeros(0)
    frames = samples[: count * window].astype(np.float64).reshape(count, window)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    with np.errstate(divide="ignore"):
        return np.asarray(20.0 * np.log10(rms / 32768.0), dtype=np.float64)


def trim_silence(samples: Samples) -> Samples:
    """The samples from the first to the last 20 ms window of speech, with a little margin.

    A window is speech when it is above :data:`GATE_DBFS` and within
    :data:`GATE_BELOW_PEAK_DB` of the loudest window. Raises :class:`RecordingSilent`
    when no window is.
    """
    window = SAMPLE_RATE_HZ * _WINDOW_MS // 1000
    levels = _window_levels_dbfs(samples, window)
    if len(levels) == 0:
        raise RecordingSilent("the recording is shorter than 20 ms")
    gate = max(GATE_DBFS, float(levels.max()) - GATE_BELOW_PEAK_DB)
    voiced = np.flatnonzero(levels > gate)
    if len(voiced) == 0:
        raise RecordingSilent(f"nothing in the recording is louder than {GATE_DBFS:.0f} dBFS")
    margin = SAMPLE_RATE_HZ * HANGOVER_MS // 1000
    start = max(0, int(voiced[0]) * window - margin)
    end = min(len(samples), (int(voiced[-1]) + 1) * window + margin)
    return samples[start:end]


@dataclass(frozen=True, slots=True)
class CodedSpeech:
    """Speech in Codec2: what a :class:`~protocol.envelopes.VoiceNote` carries."""

    mode: VoiceMode
    duration_ms: int
    frames: bytes


def encode_codec2(samples: Samples, mode: VoiceMode) -> CodedSpeech:
    """Code 8 kHz samples with Codec2 in ``mode`` (the last frame padded with silence)."""
    if len(samples) == 0:
        raise ValueError("no samples to code")
    duration_ms = math.ceil(len(samples) * 1000 / SAMPLE_RATE_HZ)
    count = frames_for(mode, duration_ms)
    per_frame = mode.samples_per_frame
    padded = np.zeros(count * per_frame, dtype=np.int16)
    padded[: len(samples)] = samples
    codec = pycodec2.Codec2(mode.bits_per_s)
    frames = b"".join(
        codec.encode(padded[index * per_frame : (index + 1) * per_frame]) for index in range(count)
    )
    return CodedSpeech(mode, duration_ms, frames)


def decode_codec2(speech: CodedSpeech) -> Samples:
    """Decode Codec2 frames to 8 kHz samples, cut to ``duration_ms``."""
    mode = speech.mode
    size = mode.bytes_per_frame
    if len(speech.frames) % size:
        raise ValueError(f"{len(speech.frames)} bytes are not whole {mode.label} frames")
    codec = pycodec2.Codec2(mode.bits_per_s)
    out = [
        np.asarray(codec.decode(speech.frames[offset : offset + size]), dtype=np.int16)
        for offset in range(0, len(speech.frames), size)
    ]
    samples = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
    return samples[: speech.duration_ms * SAMPLE_RATE_HZ // 1000]


def encode_ogg_opus(samples: Samples, *, bit_rate: int = 16_000) -> bytes:
    """Opus in Ogg (``audio/ogg``) of 8 kHz mono samples: what families' phones play."""
    if len(samples) == 0:
        raise ValueError("no samples to encode")
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE_HZ, layout="mono")
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = SAMPLE_RATE_HZ
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
