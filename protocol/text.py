"""Text intake: what a crew member typed, made into clean NFC Unicode or refused with a reason.

Every text (family message, grievance report, SOS note) passes :func:`normalise_text`
once, at intake, before anything counts or stores it. The steps, in order:

1. **Decode** bytes: UTF-8, strictly (a UTF-8 byte order mark is dropped), or UTF-16
   when it starts with a byte order mark. Bad bytes raise :class:`InvalidText` naming
   the byte offset and telling the crew member to switch their phone to UTF-8.
2. **Refuse** what no message needs: NUL and the other C0/C1 control characters (tab
   and newline are kept; ``\\r\\n`` and a lone ``\\r`` become ``\\n``), lone surrogates,
   Unicode non-characters, the replacement character (a sign that something upstream
   already damaged the text), empty or whitespace-only text, and text over
   ``max_chars`` characters.
3. **Zawgyi**: Burmese typed with the legacy Zawgyi font encoding is detected with
   Google's ``myanmartools`` detector and converted to Unicode by the ordered rules in
   :data:`_ZAWGYI_RULES` (see "Zawgyi" below). Text with no Myanmar-script character
   never reaches this step, and only Myanmar-script runs are ever rewritten.
4. **NFC**, and surrounding whitespace trimmed. ``text_bytes`` is the UTF-8 size of the
   result: the unit of the Thai rule's monthly quota.

Normalisation is idempotent: ``normalise_text(n.text).text == n.text``.

Zawgyi
------
Zawgyi reuses Unicode's Myanmar code points for different letters, so a text can be
readable both ways (``မိုးရွာ`` is "it rains" in Unicode and something else in Zawgyi).
A false conversion garbles a correct message, a missed one leaves a garbled one; for a
grievance report either could lose it. The rule used here:

* The text is converted only when it is **not well-formed Unicode Burmese** (an ``ေ``
  or a medial with no consonant before it, a virama that stacks nothing, an asat
  followed by a vowel sign: orders that Zawgyi typing produces and Unicode never
  does), its converted reading **is** well-formed, **and** the detector's probability
  is over :data:`ZAWGYI_MIN_PROBABILITY` (0.5). Detection and conversion see the text
  after NFC, so that normalising twice changes nothing. Over
  :data:`ZAWGYI_SURE_PROBABILITY` (0.95) the conversion is "sure"; between the two it
  is made, and :attr:`NormalisedText.needs_confirmation` asks the caller to
  show both readings to the crew member.
* Whenever the text is converted, the text as received is kept in
  :attr:`NormalisedText.original` (sure or not): it is the crew member's own evidence,
  and a caseworker can re-read it if the conversion was wrong.
* A text that is well-formed in *both* readings is never converted, however sure the
  detector is (the Unicode Burmese corpus has lines the detector scores 0.9999 Zawgyi).
  When the detector leans to Zawgyi (over 0.5), the converted reading is offered in
  :attr:`NormalisedText.alternative` so that the page can ask "did you mean ...?".

The rules are our own table, written after the published Rabbit converter's rules
(MIT, Rabbit-Converter/Rabbit): one pass of context rules in Zawgyi order, a glyph
table, then reordering into Unicode storage order, then NFC. On the 107 line pairs of
Google's myanmar-tools test data (``corpus/zawgyi``) 102 convert exactly; the
other 5 differ only where the reference keeps the digit ``၀`` standing in for the
letter ``ဝ`` (the UDHR source text has that typing habit) and we write the letter.
Through :func:`normalise_text`, 106 of the 107 are converted without asking (101 of
them exactly as the reference); the last reads as valid Unicode too, so it is kept as
typed and its (correct) Zawgyi reading is offered as :attr:`NormalisedText.alternative`.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from protocol.errors import InvalidText
from protocol.languages import Language
from protocol.limits import DEFAULT_LIMITS

__all__ = [
    "ZAWGYI_MIN_PROBABILITY",
    "ZAWGYI_SURE_PROBABILITY",
    "NormalisedText",
    "normalise_text",
    "zawgyi_to_unicode",
]

#: Over this detector probability (and not well-formed Unicode) Zawgyi is converted.
ZAWGYI_MIN_PROBABILITY = 0.5
#: Over this probability a conversion is "sure": no need to ask the crew member.
ZAWGYI_SURE_PROBABILITY = 0.95

_FIX_ENCODING = (
    "Set the phone's keyboard or mail app to Unicode (UTF-8) and send the message again."
)


@dataclass(frozen=True, slots=True)
class NormalisedText:
    """A text as accepted at intake (see the module docstring for each step)."""

    #: The normalised text: NFC Unicode, ``\\n`` line ends, no surrounding whitespace.
    text: str
    #: The text as received (decoded, before any change), kept whenever Zawgyi was
    #: converted, sure or not; ``None`` otherwise.
    original: str | None
    #: The detector's probability that the text was typed in Zawgyi (0.0 when the text
    #: has no Myanmar-script character).
    zawgyi_probability: float
    #: Whether the Zawgyi conversion was applied.
    converted: bool
    #: UTF-8 bytes of :attr:`text`: what the text counts against the monthly quota.
    text_bytes: int
    #: For a text readable both as Unicode and as Zawgyi, with the detector leaning to
    #: Zawgyi: the Zawgyi reading, for the crew member to choose. ``None`` otherwise.
    alternative: str | None = None

    @property
    def sure(self) -> bool:
        """Whether a conversion was made with the detector sure (over 0.95)."""
        return self.converted and self.zawgyi_probability > ZAWGYI_SURE_PROBABILITY

    @property
    def needs_confirmation(self) -> bool:
        """Whether the crew member should be shown both readings before sending."""
        return (self.converted and not self.sure) or self.alternative is not None


def normalise_text(
    raw: str | bytes,
    *,
    language: Language | None = None,
    max_chars: int = DEFAULT_LIMITS.max_text_chars,
) -> NormalisedText:
    """Decode, check and normalise one text typed by a crew member.

    ``language`` is the language the crew member picked. It does not switch the Zawgyi
    step on or off: the picked language says what the crew member reads, not which
    keyboard typed the text, so that decision is made from the text itself.
    ``max_chars`` counts characters (code points) of the normalised text.

    Raises :class:`InvalidText`, with a sentence that says what is wrong and where.

    Example::

        >>> normalise_text(b"Mother, I am well.\\r\\n").text
        'Mother, I am well.'
    """
    del language  # accepted for callers; see the docstring
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    received = _decode(raw, max_chars) if isinstance(raw, bytes) else raw
    if len(received) > 4 * max_chars + 16:  # before any work; NFC cannot shrink it that much
        raise InvalidText(_too_long(len(received), max_chars))
    text = received.replace("\r\n", "\n").replace("\r", "\n")
    _refuse_bad_characters(text)
    text = _finish(text)

    probability = 0.0
    converted = False
    alternative: str | None = None
    if _MYANMAR_CHAR.search(text):
        probability = _zawgyi_probability(text)
        if probability > ZAWGYI_MIN_PROBABILITY:
            reading = _finish(zawgyi_to_unicode(text))
            if reading != text and _is_wellformed_unicode_burmese(reading):
                if _is_wellformed_unicode_burmese(text):
                    alternative = reading
                else:
                    text, converted = reading, True

    if not text:
        raise InvalidText("The message is empty. Please write something before sending.")
    if len(text) > max_chars:
        raise InvalidText(_too_long(len(text), max_chars))
    return NormalisedText(
        text=text,
        original=received if converted else None,
        zawgyi_probability=probability,
        converted=converted,
        text_bytes=len(text.encode("utf-8")),
        alternative=alternative,
    )


def _finish(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def _too_long(chars: int, max_chars: int) -> str:
    return (
        f"The message is {chars} characters long, over the limit of {max_chars}. "
        "Please shorten it or send it as several messages."
    )


# --- decoding --------------------------------------------------------------------------


def _decode(raw: bytes, max_chars: int) -> str:
    """UTF-8 (strict, BOM dropped), or UTF-16 with a byte order mark."""
    if len(raw) > 4 * (4 * max_chars + 16):
        raise InvalidText(_too_long(len(raw) // 4, max_chars))
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode_with(raw, "utf-16", "UTF-16")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    return _decode_with(raw, "utf-8", "UTF-8")


def _decode_with(raw: bytes, codec: str, name: str) -> str:
    try:
        return raw.decode(codec, errors="strict")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        raise InvalidText(
            f"The message is not valid {name}: byte 0x{byte:02X} at offset {exc.start} "
            f"({exc.reason}). {_FIX_ENCODING}"
        ) from exc


# --- characters no message needs -------------------------------------------------------

_REFUSED = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffd\ufffe\uffff]"
    "|[\U0001fffe\U0001ffff\U0002fffe\U0002ffff\U0003fffe\U0003ffff\U0004fffe\U0004ffff"
    "\U0005fffe\U0005ffff\U0006fffe\U0006ffff\U0007fffe\U0007ffff\U0008fffe\U0008ffff"
    "\U0009fffe\U0009ffff\U000afffe\U000affff\U000bfffe\U000bffff\U000cfffe\U000cffff"
    "\U000dfffe\U000dffff\U000efffe\U000effff\U000ffffe\U000fffff\U0010fffe\U0010ffff]"
)


def _refuse_bad_characters(text: str) -> None:
    found = _REFUSED.search(text)
    if found is None:
        return
    char = found.group()
    where = f"at character {found.start() + 1}"
    code = ord(char)
    if code == 0:
        what = "a NUL character (U+0000)"
    elif code < 0x20 or code == 0x7F:
        what = f"the control character U+{code:04X}"
    elif code <= 0x9F:
        what = f"the C1 control character U+{code:04X} (often a sign of a wrong encoding)"
    elif 0xD800 <= code <= 0xDFFF:
        what = f"a broken half of an emoji or rare character (lone surrogate U+{code:04X})"
    elif code == 0xFFFD:
        what = "the replacement character \ufffd: the text was damaged before it reached us"
    else:
        what = f"the non-character U+{code:04X}"
    raise InvalidText(
        f"The message contains {what} {where}, which a message cannot carry. "
        "Please type it again; if it keeps happening, "
        + _FIX_ENCODING[0].lower()
        + _FIX_ENCODING[1:]
    )


# --- Zawgyi detection ------------------------------------------------------------------

_MYANMAR_CHAR = re.compile("[\u1000-\u109f]")


@cache
def _detector() -> Callable[[str], float]:
    """The myanmartools detector, loaded once (its model ships inside the package)."""
    with warnings.catch_warnings():
        # myanmartools 1.2.1 loads its model with importlib.resources.open_binary, which
        # Python 3.11 deprecates; the warning is about the package, not our use of it.
        warnings.filterwarnings("ignore", "open_binary is deprecated", DeprecationWarning)
        from myanmartools import ZawgyiDetector

        detector = ZawgyiDetector()

    def probability(text: str) -> float:
        value = float(detector.get_zawgyi_probability(text))
        return value if value > 0.0 else 0.0  # it says -inf for text with no Burmese

    return probability


def _zawgyi_probability(text: str) -> float:
    return _detector()(text)


# Consonants and independent letters (Burmese and the extensions Shan, Mon, Karen use),
# and the medials, as they stand in well-formed Unicode.
_BASE = "\u1000-\u102a\u103f\u1040-\u1049\u104e\u1050-\u1055\u105a-\u105d\u1061\u1065\u1066"
_BASE += "\u106e-\u1070\u1075-\u1081\u108e"
_MEDIAL = "\u103b-\u103e\u105e-\u1060\u1082"
_NOT_UNICODE = re.compile(
    f"(?:^|(?<=[^{_BASE}{_MEDIAL}]))\u1031"  # vowel sign E with no consonant before it
    f"|(?:^|(?<=[^{_BASE}{_MEDIAL}\u1039\u103a]))[\u103b-\u103e]"  # a medial with none before it
    f"|\u1039(?![{_BASE}])"  # a virama that stacks no consonant
    "|\u103a[\u102b-\u1032\u1036]"  # an asat followed by a vowel sign
)


def _is_wellformed_unicode_burmese(text: str) -> bool:
    """Whether the Myanmar-script text avoids every order that only Zawgyi produces."""
    return _NOT_UNICODE.search(text) is None


# --- Zawgyi to Unicode -----------------------------------------------------------------

_C = "[\u1000-\u1021]"  # a Burmese consonant
_YA_YIT_ZG = "[\u103b\u107e-\u1084]"  # Zawgyi's medial RA and its glyph variants

#: Rules applied in Zawgyi order, before the glyph table: the ones that need to see
#: Zawgyi glyphs in their Zawgyi positions.
_ZAWGYI_ORDER_RULES: tuple[tuple[str, str], ...] = (
    # A medial HA or WA typed between a ya-yit and its consonant belongs to the consonant
    # before the ya-yit.
    (f"({_C})({_YA_YIT_ZG})([\u103c\u103d\u1087]+)(?={_C})", "\\1\\3\\2"),
    # The digit zero typed for the letter WA: next to letters, never next to digits.
    ("(?<![\u1040-\u1049])\u1040(?=[\u1000-\u103f\u105a-\u109f])", "\u101d"),
    ("(?<=\u1031)\u1040(?![\u1040-\u1049])", "\u101d"),
    ("\u1031\u1047(?![\u1040-\u1049])", "\u1031\u101b"),  # and seven for RA, after E
    # A final anusvara before a medial HA + U ligature.
    ("\u1036\u1088", "\u1088\u1036"),
    # Kinzi is drawn after its consonant in Zawgyi and stored before it in Unicode.
    (f"({_C})\u1064", "\u1004\u103a\u1039\\1"),
    (f"({_C})\u108b", "\u1004\u103a\u1039\\1\u102d"),
    (f"({_C})\u108c", "\u1004\u103a\u1039\\1\u102e"),
    (f"({_C})\u108d", "\u1004\u103a\u1039\\1\u1036"),
    ("\u108b", "\u1004\u103a\u1039\u102d"),
    ("\u108c", "\u1004\u103a\u1039\u102e"),
    ("\u108d", "\u1004\u103a\u1039\u1036"),
    # MA + AA + stacked BHA is a stack on MA.
    ("\u1019\u102c[\u107b\u1093]", "\u1019\u1039\u1018\u102c"),
)

#: Each Zawgyi glyph code point and the Unicode characters it stands for.
_ZAWGYI_GLYPHS: dict[int, str] = {
    # medials: Zawgyi's ya-pin, ya-yit, wa and ha sit one code point lower than Unicode's
    0x103A: "\u103b",
    0x107D: "\u103b",
    0x103B: "\u103c",
    **dict.fromkeys(range(0x107E, 0x1085), "\u103c"),
    0x103C: "\u103d",
    0x103D: "\u103e",
    0x1087: "\u103e",
    0x108A: "\u103d\u103e",
    0x1088: "\u103e\u102f",
    0x1089: "\u103e\u1030",
    # asat and the vowel-sign variants
    0x1039: "\u103a",
    0x1033: "\u102f",
    0x1034: "\u1030",
    0x103F: "\u1030",
    0x105A: "\u102b\u103a",
    0x108E: "\u102d\u1036",
    0x1094: "\u1037",
    0x1095: "\u1037",
    # letter variants
    0x106A: "\u1009",
    0x106B: "\u100a",
    0x108F: "\u1014",
    0x1090: "\u101b",
    0x1086: "\u103f",
    0x104E: "\u104e\u1004\u103a\u1038",
    0x1064: "\u1004\u103a\u1039",  # a kinzi with no consonant before it
    # stacked consonants (a virama and the lower consonant), and whole stacks
    0x1060: "\u1039\u1000",
    0x1061: "\u1039\u1001",
    0x1062: "\u1039\u1002",
    0x1063: "\u1039\u1003",
    0x1065: "\u1039\u1005",
    0x1066: "\u1039\u1006",
    0x1067: "\u1039\u1006",
    0x1068: "\u1039\u1007",
    0x1069: "\u1039\u1008",
    0x106C: "\u1039\u100b",
    0x106D: "\u1039\u100c",
    0x1070: "\u1039\u100f",
    0x1071: "\u1039\u1010",
    0x1072: "\u1039\u1010",
    0x1096: "\u1039\u1010\u103d",
    0x1073: "\u1039\u1011",
    0x1074: "\u1039\u1011",
    0x1075: "\u1039\u1012",
    0x1076: "\u1039\u1013",
    0x1077: "\u1039\u1014",
    0x1078: "\u1039\u1015",
    0x1079: "\u1039\u1016",
    0x107A: "\u1039\u1017",
    0x107B: "\u1039\u1018",
    0x1093: "\u1039\u1018",
    0x107C: "\u1039\u1019",
    0x1085: "\u1039\u101c",
    0x106E: "\u100d\u1039\u100d",
    0x106F: "\u100d\u1039\u100e",
    0x1091: "\u100f\u1039\u100d",
    0x1092: "\u100b\u1039\u100c",
    0x1097: "\u100b\u1039\u100b",
}

#: Rules applied after the glyph table, moving characters into Unicode storage order.
_UNICODE_ORDER_RULES: tuple[tuple[str, str], ...] = (
    # ya-yit is typed before its consonant, stored after it
    (f"\u103c({_C})", "\\1\u103c"),
    (f"({_C})\u103c\u103a", "\u103c\\1\u103a"),
    # vowel sign E is typed before its consonant, stored after it and its medials
    (f"\u1031({_C})([\u103b-\u103e]*)", "\\1\\2\u1031"),
    (f"({_C})\u1031([\u103b-\u103e]+)", "\\1\\2\u1031"),
    # medials, vowels and tone marks into Unicode order
    ("\u1032\u103d", "\u103d\u1032"),
    ("\u103d\u103b", "\u103b\u103d"),
    ("\u103a\u1037", "\u1037\u103a"),
    ("\u102f([\u102d\u102e\u1036\u1037])\u102f", "\u102f\\1"),
    ("\u102f\u102f", "\u102f"),
    ("([\u102f\u1030])([\u102d\u102e])", "\\2\\1"),
    ("\u103e([\u103b\u1037])", "\\1\u103e"),
    # letters that Zawgyi shares between two Unicode characters
    ("\u1025([\u103a\u102c])", "\u1009\\1"),
    ("\u1025\u102e", "\u1026"),
    ("\u1005\u103b", "\u1008"),
    ("\u1036([\u102f\u1030])", "\\1\u1036"),
    ("\u1031\u1037\u103e", "\u103e\u1031\u1037"),
    ("\u1031\u103e\u102c", "\u103e\u1031\u102c"),
    ("\u1031\u103b\u103e", "\u103b\u103e\u1031"),
    ("([\u102d\u102e])([\u103d\u103e])", "\\2\\1"),
    # stacked consonants come straight after the consonant they hang from
    (f"\u102c\u1039({_C})", "\u1039\\1\u102c"),
    (f"\u103c\u1004\u103a\u1039({_C})", "\u1004\u103a\u1039\\1\u103c"),
    (f"\u1039\u103c\u103a\u1039({_C})", "\u103a\u1039\\1\u103c"),
    (f"\u103c\u1039({_C})", "\u1039\\1\u103c"),
    (f"\u1036\u1039({_C})", "\u1039\\1\u1036"),
    ("\u1040([\u102b\u102c\u1036])", "\u101d\\1"),
    ("\u1025\u1039", "\u1009\u1039"),
    (f"({_C})\u103c\u1031\u103d", "\\1\u103c\u103d\u1031"),
    (f"({_C})\u103d\u1031\u103b", "\\1\u103b\u103d\u1031"),
    (f"({_C})\u1031(\u1039{_C})", "\\1\\2\u1031"),
    (" \u1037", "\u1037"),  # a dot below typed after a space
)

_COMPILED_BEFORE = tuple((re.compile(p), r) for p, r in _ZAWGYI_ORDER_RULES)
_GLYPH_TABLE = str.maketrans(_ZAWGYI_GLYPHS)
_COMPILED_AFTER = tuple((re.compile(p), r) for p, r in _UNICODE_ORDER_RULES)

# A run of Myanmar-script text (with the spaces inside it): the only thing rewritten.
_MYANMAR_RUN = re.compile("[\u1000-\u109f](?:[\u1000-\u109f ]*[\u1000-\u109f])?")


def zawgyi_to_unicode(text: str) -> str:
    """The Unicode reading of Zawgyi-encoded text (not NFC-normalised yet).

    Only runs of Myanmar-script characters are rewritten; every other character is
    passed through untouched. The caller decides *whether* to convert (see the module
    docstring); this function converts unconditionally.
    """
    return _MYANMAR_RUN.sub(lambda run: _convert_run(run.group()), text)


def _convert_run(run: str) -> str:
    for pattern, replacement in _COMPILED_BEFORE:
        run = pattern.sub(replacement, run)
    run = run.translate(_GLYPH_TABLE)
    for pattern, replacement in _COMPILED_AFTER:
        run = pattern.sub(replacement, run)
    return run
