"""Speech for tests: espeak-ng says a sentence, PyAV packs it as a phone's browser would.

Chromium's MediaRecorder writes Opus in WebM at 48 kHz; Safari writes AAC in MP4. Both
are made here from espeak-ng's speech with PyAV (FFmpeg's own encoders), so the tests
feed the vessel the containers it meets. :func:`estoi` scores what came out against
what went in.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess

import av
import numpy as np
import numpy.typing as npt
import pytest
from pystoi import stoi
from scipy import signal

from common.speech import Samples, decode_recording, trim_silence
from protocol.voice import SAMPLE_RATE_HZ

#: A crew member's words home, in Burmese (espeak-ng voice ``my``) and Thai (``th``).
BURMESE = "မင်္ဂလာပါ အမေ။ ကျွန်တော် နေကောင်းပါတယ်။ ငါးတွေ အများကြီး ဖမ်းမိတယ်။"
THAI = "สวัสดีครับแม่ ผมสบายดี วันนี้จับปลาได้เยอะมาก คิดถึงทุกคนนะครับ"


def need_espeak() -> None:
    """Skip with the reason when espeak-ng is missing (scripts/install-system-deps)."""
    if shutil.which("espeak-ng") is None:  # pragma: no cover - installed by our script
        pytest.skip("espeak-ng is not installed: run scripts/install-system-deps")


@functools.cache
def spoken_wav(text: str, voice: str) -> bytes:
    """A WAV (22,050 Hz) of espeak-ng saying ``text``."""
    need_espeak()
    done = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, timeout=60, check=True
    )
    return done.stdout


def spoken(text: str, voice: str) -> Samples:
    """The 8 kHz speech of ``text``, trimmed: the source a voice note should carry."""
    return trim_silence(decode_recording(spoken_wav(text, voice), limit_s=120))


def pack(
    samples: npt.NDArray[np.int16],
    *,
    container: str,
    codec: str,
    rate: int,
    input_rate: int = SAMPLE_RATE_HZ,
) -> bytes:
    """``samples`` (mono, ``input_rate``) encoded with ``codec`` at ``rate`` in ``container``."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = input_rate
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    return out.getvalue()


def webm_opus(samples: npt.NDArray[np.int16], input_rate: int = SAMPLE_RATE_HZ) -> bytes:
    """What Chromium's MediaRecorder sends: Opus at 48 kHz in WebM."""
    return pack(samples, container="webm", codec="libopus", rate=48_000, input_rate=input_rate)


def ogg_opus(samples: npt.NDArray[np.int16], input_rate: int = SAMPLE_RATE_HZ) -> bytes:
    """What WhatsApp and Android voice recorders attach: Opus at 48 kHz in Ogg."""
    return pack(samples, container="ogg", codec="libopus", rate=48_000, input_rate=input_rate)


def mp4_aac(samples: npt.NDArray[np.int16], input_rate: int = SAMPLE_RATE_HZ) -> bytes:
    """What Safari's MediaRecorder sends: AAC at 44.1 kHz in MP4."""
    return pack(samples, container="mp4", codec="aac", rate=44_100, input_rate=input_rate)


def wav(samples: npt.NDArray[np.int16], input_rate: int = SAMPLE_RATE_HZ) -> bytes:
    """Plain 16-bit PCM in WAV."""
    return pack(samples, container="wav", codec="pcm_s16le", rate=input_rate, input_rate=input_rate)


def estoi(source: Samples, heard: Samples, max_lag_ms: int = 60) -> float:
    """ESTOI of ``heard`` against ``source`` after aligning them by cross-correlation."""
    max_lag = SAMPLE_RATE_HZ * max_lag_ms // 1000
    x = source.astype(np.float64)
    y = heard.astype(np.float64)
    correlation = signal.correlate(y, x, mode="full", method="fft")
    centre = len(x) - 1
    lag = int(np.argmax(correlation[centre - max_lag : centre + max_lag + 1])) - max_lag
    if lag > 0:
        y = y[lag:]
    elif lag < 0:
        x = x[-lag:]
    length = min(len(x), len(y))
    return float(stoi(x[:length], y[:length], SAMPLE_RATE_HZ, extended=True))
