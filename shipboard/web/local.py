"""Numbers and dates as a crew member reads them: their script's digits, their calendar.

The one rule of the crew page for quantities and moments (every page and sentence goes
through :func:`number` and :func:`moment`; :func:`digits` is the script part alone):

- **Digits**: the numbering system CLDR gives the language by default (Babel's
  ``Locale.default_numbering_system``: Myanmar digits for Burmese, Western for the
  others), except where :data:`CHOSEN_NUMBERING` says otherwise: Khmer is written with
  Khmer digits (as our Khmer sentences are, and as Cambodian print mostly is).
- **Dates**: Babel's (CLDR's) medium date without the weekday and short time of the
  language, Gregorian, with the year of the Buddhist Era in Thai (the year Thai
  documents and phones show: 2026 is 2569).

Identifiers stay in Western digits everywhere: case numbers, receipt codes, crew numbers,
PINs and phone numbers are typed or read out to people and systems that expect them so.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache

from babel import Locale
from babel.dates import format_skeleton, format_time
from babel.numbers import format_decimal

from protocol.languages import Language
from shipboard.web.i18n import LOCALE_CODES

#: Languages written with a numbering system other than CLDR's default for them.
CHOSEN_NUMBERING: dict[Language, str] = {Language.KHM: "khmr"}
#: The digit zero of each numbering system the page writes (its ten digits follow it).
ZEROS: dict[str, int] = {
    "latn": 0x30,
    "mymr": 0x1040,
    "khmr": 0x17E0,
    "laoo": 0x0ED0,
    "thai": 0x0E50,
}
#: Years of the Buddhist Era ahead of the Gregorian year, for languages that count so.
BUDDHIST_ERA_OFFSET: dict[Language, int] = {Language.THA: 543}
_ASCII_DIGITS = re.compile(r"[0-9]")


def babel_locale(lang: Language) -> str:
    """The CLDR locale the page uses for ``lang`` (English for a language it lacks)."""
    return LOCALE_CODES.get(lang, "en")


@cache
def numbering_system(lang: Language) -> str:
    """The numbering system ``lang``'s numbers are written in (``mymr``, ``latn`` ...)."""
    chosen = CHOSEN_NUMBERING.get(lang)
    if chosen is not None:
        return chosen
    system = str(Locale.parse(babel_locale(lang)).default_numbering_system)
    return system if system in ZEROS else "latn"


def native_digits(lang: Language) -> str:
    """The ten digits ``lang`` is written with, zero first."""
    zero = ZEROS[numbering_system(lang)]
    return "".join(chr(zero + n) for n in range(10))


def digits(text: str, lang: Language) -> str:
    """``text`` with its Western digits written in ``lang``'s digits."""
    zero = ZEROS[numbering_system(lang)]
    if zero == ZEROS["latn"]:
        return text
    return _ASCII_DIGITS.sub(lambda m: chr(zero + ord(m.group()) - 0x30), text)


def number(value: int, lang: Language) -> str:
    """A whole number as ``lang`` writes it (grouping and digits): ``၁၀,၄၅၄``."""
    return digits(format_decimal(value, locale=babel_locale(lang)), lang)


def moment(when: datetime, lang: Language) -> str:
    """A date and time (already in the vessel's time zone) as ``lang`` writes it:
    ``7 Dec 2026, 14:05`` in English, ``၂၀၂၆ ဒီ ၇ ၁၄:၀၅`` in Burmese."""
    code = babel_locale(lang)
    locale = Locale.parse(code)
    date_text = format_skeleton("yMMMd", when, locale=code)
    offset = BUDDHIST_ERA_OFFSET.get(lang)
    if offset is not None:  # Babel has no Buddhist calendar: the era's year in its place
        date_text = date_text.replace(str(when.year), str(when.year + offset))
    time_text = format_time(when, "short", locale=code)
    joined = str(locale.datetime_formats["medium"]).replace("{1}", date_text)
    return digits(joined.replace("{0}", time_text), lang)
