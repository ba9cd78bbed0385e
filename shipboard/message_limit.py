"""Message limit: how long one family message may be, said in characters as the crew counts.

The rule lives here and only here: one message's text is at most :data:`MAX_MESSAGE_BYTES`
bytes of UTF-8 once normalised (:func:`shipboard.intake.read_text`), a report's
:data:`MAX_GRIEVANCE_BYTES`. Crew members count
characters, not bytes, and a character of Burmese, Khmer, Lao or Thai is 3 bytes while a
Latin letter is 1, so the doors say the limit in characters:

- :func:`characters_over` is how many characters (code points, counted from the end) must
  go for a text to fit: "shorten it by N characters";
- :func:`characters_left` is about how many more characters of the same kind fit;
- :func:`usual_characters` is about how many characters of a language one message holds,
  worked out from the bytes per character of that language's quick messages (the page says
  it before anyone writes).

Code points are what a phone's text box counts too (a Burmese stacked consonant is several).
"""

from __future__ import annotations

import unicodedata

from protocol.languages import Language
from protocol.limits import DEFAULT_LIMITS
from protocol.phrases import PHRASE_CODES, phrase

__all__ = [
    "MAX_GRIEVANCE_BYTES",
    "MAX_MESSAGE_BYTES",
    "characters_left",
    "characters_over",
    "fits",
    "too_long_to_read",
    "usual_characters",
]

#: Largest text of one family message, in UTF-8 bytes (about 1,360 Burmese characters).
MAX_MESSAGE_BYTES = 4096
#: Largest text of one grievance report, in UTF-8 bytes (it is compressed, padded and
#: sealed; the grievance lane may take less: :class:`shipboard.errors.ReportTooLongForLane`).
MAX_GRIEVANCE_BYTES = 16_384


def text_bytes(text: str) -> int:
    """The bytes ``text`` takes in UTF-8 (what the limit counts)."""
    return len(text.encode("utf-8"))


def fits(text: str, limit_bytes: int = MAX_MESSAGE_BYTES) -> bool:
    """Whether ``text`` is within the limit."""
    return text_bytes(text) <= limit_bytes


def characters_over(text: str, limit_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """How many characters must be taken off the end of ``text`` for it to fit (0 if it fits).

    Example::

        >>> characters_over("က" * 1400)  # 4,200 bytes: 35 three-byte characters too many
        35
    """
    over = text_bytes(text) - limit_bytes
    if over <= 0:
        return 0
    removed = 0
    for character in reversed(text):
        over -= len(character.encode("utf-8"))
        removed += 1
        if over <= 0:
            break
    return removed


def too_long_to_read(text: str, limit_bytes: int) -> int:
    """For a text longer than the text reader takes at all (``protocol.text``'s
    ``max_text_chars`` characters, over every byte limit here), how many characters to take
    off to fit ``limit_bytes``; 0 for a text the reader takes (then read it, and count the
    normalised text). Such a text is too long, never "cannot be read"."""
    if len(text) <= DEFAULT_LIMITS.max_text_chars:
        return 0
    return max(1, characters_over(unicodedata.normalize("NFC", text).strip(), limit_bytes))


def _bytes_per_character(text: str) -> float:
    return text_bytes(text) / max(1, len(text))


def characters_left(text: str, lang: Language, limit_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """About how many more characters fit after ``text`` (0 when it is full or over), in
    characters like those already written (or, for an empty text, of ``lang``)."""
    left = limit_bytes - text_bytes(text)
    if left <= 0:
        return 0
    per = _bytes_per_character(text) if text.strip() else _language_bytes_per_character(lang)
    return int(left // max(1.0, per))


def _language_bytes_per_character(lang: Language) -> float:
    texts = [phrase(code, lang) or "" for code in PHRASE_CODES]
    return _bytes_per_character("".join(texts)) if any(texts) else 1.0


def usual_characters(lang: Language, limit_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """About how many characters of ``lang`` one message holds, rounded down to tens (the
    number the page states before anyone writes)."""
    return int(limit_bytes / max(1.0, _language_bytes_per_character(lang))) // 10 * 10
