"""The one message-limit rule (shipboard.message_limit), counted in characters: whatever a
crew member types, "shorten it by N characters" is exactly enough, and never too much."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol.languages import Language
from shipboard.message_limit import (
    MAX_MESSAGE_BYTES,
    characters_left,
    characters_over,
    fits,
    usual_characters,
)

#: Burmese, Thai, Latin and Vietnamese letters, and a 4-byte emoji: 1 to 4 bytes each.
LETTERS = st.sampled_from(["က", "ျ", "ั", "ก", "a", "ế", "😊", " ", "\n"])
TEXTS = st.lists(LETTERS, min_size=0, max_size=3000).map("".join)


@given(TEXTS, st.integers(min_value=1, max_value=MAX_MESSAGE_BYTES))
def test_taking_off_the_characters_said_is_exactly_enough(text: str, limit: int) -> None:
    """Taking the said number of characters off the end makes any text fit; one fewer
    does not (so the number is never more than needed)."""
    over = characters_over(text, limit)
    assert fits(text[: len(text) - over], limit)
    if over:
        assert not fits(text[: len(text) - over + 1], limit)
    else:
        assert fits(text, limit)


@given(TEXTS)
def test_what_is_left_is_none_when_full_and_some_when_not(text: str) -> None:
    """The counter's "about N more characters fit" is 0 for a full or too long text."""
    left = characters_left(text, Language.MYA)
    if not fits(text) or len(text.encode()) == MAX_MESSAGE_BYTES:
        assert left == 0
    assert left >= 0


def test_the_usual_count_follows_the_script() -> None:
    """One message holds about 1,400 Burmese, Khmer, Lao or Thai characters (3 bytes
    each) and about 4,000 Latin ones: the page says the number of the crew's script."""
    for lang in (Language.MYA, Language.KHM, Language.LAO, Language.THA):
        assert 1300 <= usual_characters(lang) <= 1450, lang
    for lang in (Language.ENG, Language.IND, Language.TGL):
        assert usual_characters(lang) >= 3900, lang
    assert 2000 < usual_characters(Language.VIE) < 4000
