"""What the crew member is told when a recording cannot become a voice note (issue 24).

The ``msgid`` of each :class:`shipboard.errors.VoiceNoteRefused` kind, here so that the
crew page's catalogue has them (``pyproject.toml`` maps this file to the page's
extractor); ``tests/shipboard/test_voice.py`` checks they are the same sentences.
"""

from __future__ import annotations

VOICE_REFUSALS = (
    "The voice message is too long: at most {limit} seconds. Record a shorter one.",
    "Nothing could be heard in the recording. Hold the button, speak close to the "
    "phone, then send it again.",
    "This file is not a sound recording. Record your voice on the page and send that.",
    "The vessel's computer cannot read this recording. Record it again, or write "
    "the message instead.",
    "Voice messages can only go to contacts with an e-mail address for now. Write to "
    "this contact instead.",
)
