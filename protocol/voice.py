"""Voice notes: the Codec2 modes a voice note may travel in, and the size of their frames.

A voice note is speech coded with Codec2 (8 kHz mono, 16-bit) on board and decoded
ashore. On the wire it is its own envelope kind (:class:`protocol.envelopes.VoiceNote`):
the mode, the duration in milliseconds and the Codec2 frames, each frame byte-aligned as
``codec2_encode`` writes it, one after another. The text codecs never see it.

This module only names the modes and their geometry; coding itself happens outside
``protocol`` (``common.speech``). A mode's wire id is Codec2's own mode number
(``CODEC2_MODE_*`` in ``codec2.h``), so a ``.c2`` file's header names the same mode.
"""

from __future__ import annotations

import math
from enum import IntEnum

__all__ = [
    "DEFAULT_VOICE_MODE",
    "MAX_VOICE_NOTE_MS",
    "SAMPLE_RATE_HZ",
    "VoiceMode",
    "frames_for",
]

#: Codec2 codes narrow-band speech: 8,000 samples a second, mono, 16-bit.
SAMPLE_RATE_HZ = 8000

#: The longest voice note the protocol carries (a vessel's own limit is lower, in its
#: config); at 3,200 bit/s that is 48,000 bytes, inside :class:`~protocol.limits.Limits`.
MAX_VOICE_NOTE_MS = 120_000


class VoiceMode(IntEnum):
    """A Codec2 mode; the value is Codec2's mode number and the wire id (never renumber)."""

    MODE_3200 = 0
    MODE_2400 = 1
    MODE_1600 = 2
    MODE_1400 = 3
    MODE_1300 = 4
    MODE_1200 = 5
    MODE_700C = 8

    @property
    def label(self) -> str:
        """The mode as Codec2's tools name it: ``1200``, ``700C``."""
        return self.name.removeprefix("MODE_")

    @property
    def bits_per_s(self) -> int:
        """The nominal bit rate (700 for 700C)."""
        return int(self.label.rstrip("C"))

    @property
    def frame_ms(self) -> int:
        """Milliseconds of speech in one frame: 20 for 3200 and 2400, 40 for the others."""
        return 20 if self in (VoiceMode.MODE_3200, VoiceMode.MODE_2400) else 40

    @property
    def samples_per_frame(self) -> int:
        """Samples at :data:`SAMPLE_RATE_HZ` in one frame."""
        return SAMPLE_RATE_HZ * self.frame_ms // 1000

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one frame on the wire (Codec2's bits, rounded up to whole bytes)."""
        return math.ceil(self.bits_per_s * self.frame_ms / 1000 / 8)

    @classmethod
    def from_label(cls, label: str) -> VoiceMode:
        """The mode for ``1200``, ``700C`` ...; raises ``ValueError`` naming the known ones."""
        for mode in cls:
            if mode.label.lower() == label.strip().lower():
                return mode
        known = ", ".join(mode.label for mode in cls)
        raise ValueError(f"unknown Codec2 mode {label!r}; known modes: {known}")


#: The mode a vessel codes voice notes in unless its config says otherwise: the best
#: ESTOI among the modes that send 10 s in at most 1,600 bytes whatever is said
#: (``benchmarks/voice.py``: 1,529 bytes; 1300 and 1400 need 1,779).
DEFAULT_VOICE_MODE = VoiceMode.MODE_1200


def frames_for(mode: VoiceMode, duration_ms: int) -> int:
    """How many frames of ``mode`` hold ``duration_ms`` of speech (the last one padded)."""
    if duration_ms <= 0:
        raise ValueError(f"a voice note lasts longer than 0 ms, not {duration_ms}")
    return math.ceil(duration_ms / mode.frame_ms)
