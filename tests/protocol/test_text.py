"""Text intake: what crew members type becomes clean NFC Unicode, or is refused with a reason."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidText, LocalProtocolError
from protocol.languages import Language
from protocol.text import (
    ZAWGYI_SURE_PROBABILITY,
    NormalisedText,
    normalise_text,
    zawgyi_to_unicode,
)
from tests.kit.corpus import CORPUS

CORPUS_FILES = sorted(CORPUS.glob("*.train.txt")) + sorted(CORPUS.glob("*.dev.txt"))
ZAWGYI_LINES = (CORPUS / "zawgyi" / "mya.dev.zawgyi.txt").read_text("utf-8").splitlines()
UNICODE_LINES = (CORPUS / "zawgyi" / "mya.dev.unicode.txt").read_text("utf-8").splitlines()
PAIRS = list(zip(ZAWGYI_LINES, UNICODE_LINES, strict=True))


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def zero_as_wa(text: str) -> str:
    """The digit ၀ read as the letter ဝ (the typing habit the reference sometimes keeps)."""
    return text.replace("\u1040", "\u101d")


# --- the corpus: real messages in every language pass untouched -------------------------


def test_corpus_is_there() -> None:
    """The suite reads real text in all nine languages, not an empty folder."""
    assert len(CORPUS_FILES) == 18
    assert len(PAIRS) == 107


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda path: path.name)
def test_every_corpus_line_round_trips_byte_exact(path: Path) -> None:
    """A Thai, Khmer, Lao, Burmese, Shan, Vietnamese, Indonesian, Tagalog or English
    message already in clean Unicode arrives byte for byte as it was typed."""
    for line in path.read_text("utf-8").splitlines():
        if not line:
            continue
        result = normalise_text(line.encode("utf-8"))
        assert result.text.encode("utf-8") == line.encode("utf-8"), line
        assert not result.converted
        assert result.original is None
        assert result.text_bytes == len(line.encode("utf-8"))


def test_unicode_burmese_the_detector_mistakes_for_zawgyi_is_kept() -> None:
    """A Burmese crew member typing correct Unicode ("it does not look like rain") is
    not "corrected" into another word, even though the detector is almost sure it is
    Zawgyi; the Zawgyi reading is offered for them to choose instead."""
    line = "မိုးရွာမလိုပဲ။"
    result = normalise_text(line, language=Language.MYA)
    assert result.text == line
    assert not result.converted
    assert result.zawgyi_probability > ZAWGYI_SURE_PROBABILITY
    assert result.alternative is not None
    assert result.alternative != line
    assert result.needs_confirmation


# --- Zawgyi --------------------------------------------------------------------------------


def test_zawgyi_converter_accuracy_on_the_reference_pairs() -> None:
    """Burmese typed with a Zawgyi keyboard becomes the same Unicode that Google's
    reference conversion gives: at least 102 of the 107 lines exactly, and all 107 once
    the digit ၀ written for the letter ဝ is read as the letter."""
    exact = sum(nfc(zawgyi_to_unicode(z)) == nfc(u) for z, u in PAIRS)
    assert exact >= 102
    assert all(zero_as_wa(nfc(zawgyi_to_unicode(z))) == zero_as_wa(nfc(u)) for z, u in PAIRS)


@pytest.mark.parametrize(("zawgyi", "unicode"), PAIRS, ids=[f"line{i}" for i in range(107)])
def test_zawgyi_pair_converts_at_intake(zawgyi: str, unicode: str) -> None:
    """A grievance report typed in Zawgyi arrives at the union readable in Unicode, with
    the text as typed kept beside it; where the text reads as valid Unicode too, it is
    kept and the Unicode reading is offered instead."""
    result = normalise_text(zawgyi.encode("utf-8"), language=Language.MYA)
    expected = zero_as_wa(nfc(unicode).strip())
    if result.converted:
        assert zero_as_wa(result.text) == expected
        assert result.original == zawgyi
        assert result.zawgyi_probability > 0.5
    else:
        assert result.alternative is not None
        assert zero_as_wa(result.alternative) == expected
        assert result.needs_confirmation


def test_intake_exact_match_rate_on_the_reference_pairs() -> None:
    """Through the whole intake step, 106 of the 107 Zawgyi lines are converted without
    asking, 101 of them exactly as the reference."""
    results = [normalise_text(z) for z in ZAWGYI_LINES]
    assert sum(r.converted for r in results) >= 106
    assert sum(r.text == nfc(u).strip() for r, u in zip(results, UNICODE_LINES, strict=True)) >= 101


def test_sure_conversion_is_not_asked_again() -> None:
    """A clearly Zawgyi sentence converts without bothering the crew member, and the
    text as typed is still kept as evidence."""
    zawgyi = ZAWGYI_LINES[1]
    result = normalise_text(zawgyi)
    assert result.converted
    assert result.sure
    assert not result.needs_confirmation
    assert result.original == zawgyi


def test_unsure_conversion_asks_the_crew_member() -> None:
    """A Zawgyi text the detector is only fairly sure about (0.5 to 0.95) is converted,
    and the page is told to show both readings."""
    converted = NormalisedText("x", "y", zawgyi_probability=0.7, converted=True, text_bytes=1)
    assert not converted.sure
    assert converted.needs_confirmation


NON_MYANMAR_TEXT = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc"),
        blacklist_characters="\ufffd",
    ).filter(lambda c: not "\u1000" <= c <= "\u109f"),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300)
@given(NON_MYANMAR_TEXT)
def test_non_myanmar_text_never_enters_the_zawgyi_path(text: str) -> None:
    """A Thai, Khmer or Vietnamese message is never touched by the Zawgyi converter."""
    assert zawgyi_to_unicode(text) == text
    try:
        result = normalise_text(text)
    except InvalidText:
        return
    assert result.zawgyi_probability == 0.0
    assert not result.converted
    assert result.alternative is None


@settings(max_examples=300)
@given(NON_MYANMAR_TEXT, st.sampled_from(ZAWGYI_LINES), NON_MYANMAR_TEXT)
def test_zawgyi_conversion_leaves_other_scripts_alone(before: str, zawgyi: str, after: str) -> None:
    """In a message mixing Burmese (Zawgyi) with Latin, Thai or emoji, only the Burmese
    is rewritten: every other character comes through in place."""
    mixed = f"{before}|{zawgyi}|{after}"
    converted = zawgyi_to_unicode(mixed)
    assert converted.startswith(before + "|")
    assert converted.endswith("|" + after)
    assert converted[len(before) + 1 : -len(after) - 1] == zawgyi_to_unicode(zawgyi)


# --- normalisation -----------------------------------------------------------------------

ANY_TEXT = st.one_of(
    st.text(min_size=1, max_size=80),
    st.sampled_from(ZAWGYI_LINES + UNICODE_LINES),
    st.lists(st.sampled_from(ZAWGYI_LINES + UNICODE_LINES + ["\n", " ", "\t", "a"])).map("".join),
)


@settings(max_examples=400)
@given(ANY_TEXT)
def test_normalisation_is_idempotent(text: str) -> None:
    """Normalising a message twice (a retry, a re-edit) changes nothing the second time."""
    try:
        first = normalise_text(text)
    except InvalidText:
        return
    second = normalise_text(first.text)
    assert second.text == first.text
    assert not second.converted
    assert second.text_bytes == first.text_bytes == len(first.text.encode("utf-8"))
    assert unicodedata.is_normalized("NFC", first.text)


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_any_bytes_either_normalise_or_raise_invalid_text(raw: bytes) -> None:
    """Whatever a broken phone or mail app sends, intake answers with clean text or a
    sentence for the crew member, never a crash."""
    try:
        result = normalise_text(raw)
    except InvalidText as exc:
        refusal: LocalProtocolError = exc
        result = None
    if result is None:
        assert str(refusal)
        return
    assert result.text
    assert result.text == result.text.strip()


def test_vietnamese_typed_decomposed_is_composed() -> None:
    """Vietnamese typed with combining accents (as some keyboards do) is stored composed,
    and counted by its composed UTF-8 size."""
    typed = unicodedata.normalize("NFD", "Con khỏe, mẹ đừng lo.")
    result = normalise_text(typed, language=Language.VIE)
    assert result.text == "Con khỏe, mẹ đừng lo."
    assert result.text_bytes == len("Con khỏe, mẹ đừng lo.".encode())


def test_windows_line_ends_become_newlines_and_tabs_stay() -> None:
    """A message written on a laptop keeps its lines and tabs, with one kind of line end."""
    result = normalise_text("Line one\r\nLine\ttwo\rLine three\n")
    assert result.text == "Line one\nLine\ttwo\nLine three"


def test_thai_text_bytes_count_the_utf8_size() -> None:
    """A Thai message counts against the quota by its UTF-8 bytes (3 per character)."""
    result = normalise_text("สวัสดีครับแม่", language=Language.THA)
    assert result.text_bytes == 3 * len("สวัสดีครับแม่")


# --- decoding --------------------------------------------------------------------------------


def test_invalid_utf8_names_the_byte_offset_and_the_fix() -> None:
    """A message from a phone set to a legacy Thai encoding is refused with the place of
    the first bad byte and how to fix the phone."""
    raw = "Hello แม่".encode()[:6] + "ทดสอบ".encode("tis-620")
    with pytest.raises(InvalidText, match=r"offset 6") as caught:
        normalise_text(raw)
    assert "UTF-8" in str(caught.value)
    assert "keyboard or mail app" in str(caught.value)


def test_truncated_utf8_is_refused() -> None:
    """A message cut in the middle of a Burmese character is refused, not half-kept."""
    raw = "မင်္ဂလာပါ".encode()[:-1]
    with pytest.raises(InvalidText, match="not valid UTF-8"):
        normalise_text(raw)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_a_byte_order_mark_is_accepted(codec: str) -> None:
    """A message saved as UTF-16 by a Windows program is read correctly."""
    text = "ខ្ញុំសុខសប្បាយ"
    raw = text.encode(codec)
    if codec != "utf-16":
        bom = b"\xff\xfe" if codec.endswith("le") else b"\xfe\xff"
        raw = bom + raw
    assert normalise_text(raw).text == text


def test_utf16_without_its_last_byte_is_refused() -> None:
    """A UTF-16 message cut short is refused with the offset of the damage."""
    raw = "ok".encode("utf-16")[:-1]
    with pytest.raises(InvalidText, match="not valid UTF-16"):
        normalise_text(raw)


def test_utf8_byte_order_mark_is_dropped() -> None:
    """A message saved by Notepad with a UTF-8 BOM does not carry the BOM along."""
    assert normalise_text(b"\xef\xbb\xbfSalamat po").text == "Salamat po"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello\x00world", "NUL character"),
        ("Hello\x07world", "control character U+0007"),
        ("Hello\x1bworld", "control character U+001B"),
        ("Hello\x7fworld", "control character U+007F"),
        ("Hello\x85world", "C1 control character U+0085"),
        ("Hello\ud83dworld", "lone surrogate"),
        ("Hello\ufffdworld", "replacement character"),
        ("Hello\uffffworld", "non-character U+FFFF"),
        ("Hello\U0010ffffworld", "non-character U+10FFFF"),
    ],
)
def test_characters_no_message_needs_are_refused_with_their_place(text: str, words: str) -> None:
    """Hidden control characters or damaged emoji are refused with what and where, so
    the crew member can retype the message."""
    with pytest.raises(InvalidText, match=re.escape(words)) as caught:
        normalise_text(text)
    assert "at character 6" in str(caught.value)


@pytest.mark.parametrize("text", ["", " ", "\n\n", "\t \r\n", b"", b"   "])
def test_empty_message_is_refused(text: str | bytes) -> None:
    """Pressing send on an empty box gives a sentence, not an empty message to pay for."""
    with pytest.raises(InvalidText, match="empty"):
        normalise_text(text)


def test_too_long_message_is_refused_with_both_lengths() -> None:
    """A message over the limit is refused with its length and the limit."""
    with pytest.raises(InvalidText, match="11 characters long, over the limit of 10"):
        normalise_text("a" * 11, max_chars=10)
    assert normalise_text("a" * 10, max_chars=10).text == "a" * 10


def test_huge_input_is_refused_before_any_work() -> None:
    """A megabyte pasted into the box is refused at once."""
    with pytest.raises(InvalidText, match="over the limit"):
        normalise_text(b"a" * 1_000_000, max_chars=100)
    with pytest.raises(InvalidText, match="over the limit"):
        normalise_text("a" * 1_000_000, max_chars=100)


def test_max_chars_must_be_positive() -> None:
    """A caller asking for a limit of zero characters has a bug and is told so."""
    with pytest.raises(ValueError, match="max_chars"):
        normalise_text("hi", max_chars=0)
