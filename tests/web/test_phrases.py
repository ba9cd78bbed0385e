"""Quick-message phrases: stable codes, every language, English fallback."""

from __future__ import annotations

import unicodedata

import pytest

from protocol.languages import Language
from protocol.phrases import PHRASE_CODES, PHRASES, is_checked, phrase, phrase_icon
from protocol.text import normalise_text

PAGE_LANGUAGES = (
    Language.MYA,
    Language.KHM,
    Language.LAO,
    Language.THA,
    Language.IND,
    Language.TGL,
    Language.VIE,
    Language.ENG,
)


def test_codes_are_stable() -> None:
    """Codes already on the wire keep their meaning (a renumbering breaks old batches)."""
    assert phrase(1, Language.ENG) == "I am safe."
    assert phrase(3, Language.ENG) == "I received my wages."
    assert phrase(6, Language.ENG) == "Call me when we reach port."
    assert list(PHRASE_CODES) == sorted(set(PHRASE_CODES))
    assert all(0 < code < 24 for code in PHRASE_CODES)  # one CBOR byte each


@pytest.mark.parametrize("lang", PAGE_LANGUAGES, ids=lambda lang: lang.code)
def test_every_phrase_in_every_page_language(lang: Language) -> None:
    """A family reading any of the page's languages gets the sentence in their script."""
    for code in PHRASE_CODES:
        text = phrase(code, lang)
        assert text, (code, lang)
        assert text == unicodedata.normalize("NFC", text)
        assert normalise_text(text, language=lang).text == text
        if lang is not Language.ENG:
            assert text != phrase(code, Language.ENG)
            assert not is_checked(code, lang)  # nobody has checked them yet


def test_fallbacks() -> None:
    """Shan, 'undetermined' and no language fall back to English; unknown codes give None."""
    for lang in (Language.SHN, Language.UND, None):
        assert phrase(2, lang) == "I am well. Do not worry."
    assert phrase(9999, Language.ENG) is None
    assert phrase_icon(9999) is None
    assert is_checked(1, Language.ENG)
    assert not is_checked(1, Language.SHN)


def test_icons_are_plain_names() -> None:
    """Every icon name is a file name the page can serve."""
    for item in PHRASES.values():
        assert phrase_icon(item.code) == item.icon
        assert item.icon.replace("-", "").isalnum()
