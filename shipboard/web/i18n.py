"""Page languages: gettext catalogues (``.po`` files, read at start-up) per language.

``locale/LOCALE/LC_MESSAGES/crew.po`` holds the page's sentences for each language, where
LOCALE is the language's gettext/CLDR code (``my``, ``km``, ``lo``, ``th``, ``id``, ``fil``,
``vi``; :data:`LOCALE_CODES`), the names translation tools and ``pybabel`` expect;
everywhere else vessel-relay names languages by ISO 639-3 code (``mya`` ...). Each file's
header carries its ``Language`` and ``Plural-Forms`` (CLDR's rule: one form for Burmese,
Khmer, Lao, Thai, Indonesian and Vietnamese, two for Filipino); ``locale/crew.pot`` is the
template ``pybabel extract`` writes (:mod:`shipboard.web.catalogue`).

A translation that a native speaker has not checked yet is marked ``#, fuzzy``: the page
still shows it (it is better than English for most readers), and :func:`unchecked` lists it
so that someone can check it (``vessel-relay ship i18n-check``). A missing translation
falls back to English. The ``.po`` files are compiled in memory at start-up (fuzzy entries
included) into standard :class:`gettext.GNUTranslations`, which choose plural forms by the
file's own ``Plural-Forms``.
"""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from protocol.languages import Language

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "crew"

#: The page's languages, in the order of the language switch.
PAGE_LANGUAGES: tuple[Language, ...] = (
    Language.MYA,
    Language.KHM,
    Language.LAO,
    Language.THA,
    Language.IND,
    Language.TGL,
    Language.VIE,
    Language.ENG,
)

#: Each page language's gettext locale code (the catalogue folder's name and the ``.po``
#: file's ``Language`` header). Tagalog's catalogue is Filipino (``fil``), as CLDR and the
#: translation platforms name the standard written language.
LOCALE_CODES: dict[Language, str] = {
    Language.MYA: "my",
    Language.KHM: "km",
    Language.LAO: "lo",
    Language.THA: "th",
    Language.IND: "id",
    Language.TGL: "fil",
    Language.VIE: "vi",
    Language.ENG: "en",
}

#: Each language's BCP 47 tag, for HTML ``lang`` attributes (browsers, screen readers and
#: fonts read them; they do not know ISO 639-3 codes such as ``mya``): the page
#: languages' locale codes (BCP 47 takes the two-letter ISO 639-1 code where there is one,
#: and ``fil`` for Filipino/Tagalog), Shan's ISO 639-3 code (it has no shorter one) and
#: ``und`` (undetermined). Everywhere else languages go by their ISO 639-3 code.
HTML_LANG: dict[Language, str] = {**LOCALE_CODES, Language.SHN: "shn", Language.UND: "und"}


def html_lang(lang: Language | str | None) -> str:
    """The BCP 47 tag of a language, or of its ISO 639-3 code (``und`` if unknown)."""
    if isinstance(lang, str):
        try:
            lang = Language.from_code(lang)
        except ValueError:
            return "und"
    if lang is None:
        return "und"
    return HTML_LANG.get(lang, "und")


#: Each language's name in its own script (for the language switch).
NATIVE_NAMES: dict[Language, str] = {
    Language.MYA: "မြန်မာ",
    Language.KHM: "ខ្មែរ",
    Language.LAO: "ລາວ",
    Language.THA: "ไทย",
    Language.IND: "Indonesia",
    Language.TGL: "Tagalog",
    Language.VIE: "Tiếng Việt",
    Language.ENG: "English",
}


class CatalogueError(Exception):
    """A ``.po`` file cannot be read or compiled; the message names the file."""


@dataclass(frozen=True, slots=True)
class Catalogue:
    """One language's translations: msgid -> text, and which ones are unchecked (fuzzy).

    A sentence with plural forms is keyed by its singular msgid; ``messages`` holds its
    first form and ``plurals`` all of them.
    """

    lang: Language
    messages: dict[str, str]
    fuzzy: frozenset[str]
    missing: tuple[str, ...]
    plurals: dict[str, tuple[str, ...]]
    translations: gettext.NullTranslations


def locale_code(lang: Language) -> str:
    """The gettext locale code of ``lang`` (``my`` for Burmese ...)."""
    return LOCALE_CODES[lang]


def catalogue_path(lang: Language, locale_dir: Path = LOCALE_DIR) -> Path:
    """Where the ``.po`` file of ``lang`` lives."""
    return locale_dir / locale_code(lang) / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_catalogue(lang: Language, locale_dir: Path = LOCALE_DIR) -> Catalogue:
    """Read one language's ``.po`` file (an empty catalogue if there is none)."""
    path = catalogue_path(lang, locale_dir) if lang in LOCALE_CODES else None
    if path is None or not path.exists():
        return Catalogue(lang, {}, frozenset(), (), {}, gettext.NullTranslations())
    try:
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=locale_code(lang), domain=DOMAIN)
        compiled = io.BytesIO()
        write_mo(compiled, catalog, use_fuzzy=True)
        compiled.seek(0)
        translations: gettext.NullTranslations = gettext.GNUTranslations(compiled)
    except (OSError, ValueError, SyntaxError) as exc:  # babel's parse errors are ValueErrors
        raise CatalogueError(f"{path}: {exc}") from exc
    messages: dict[str, str] = {}
    plurals: dict[str, tuple[str, ...]] = {}
    fuzzy: set[str] = set()
    missing: list[str] = []
    for message in catalog:
        if not message.id:
            continue
        msgid = _singular(message.id)
        strings = message.string
        forms = tuple(strings) if isinstance(strings, tuple | list) else (strings or "",)
        if not all(forms):
            missing.append(msgid)
            continue
        messages[msgid] = forms[0]
        if message.pluralizable:
            plurals[msgid] = forms
        if message.fuzzy:
            fuzzy.add(msgid)
    return Catalogue(lang, messages, frozenset(fuzzy), tuple(missing), plurals, translations)


def _singular(msgid: str | tuple[str, ...] | list[str]) -> str:
    """A message's msgid, or its singular msgid if it has plural forms."""
    return msgid if isinstance(msgid, str) else msgid[0]


class Translations:
    """All page languages' catalogues, loaded once."""

    def __init__(self, locale_dir: Path = LOCALE_DIR) -> None:
        self.catalogues = {lang: load_catalogue(lang, locale_dir) for lang in PAGE_LANGUAGES}

    def gettext(self, lang: Language, msgid: str) -> str:
        """The sentence in ``lang`` (fuzzy included), else the English msgid."""
        catalogue = self.catalogues.get(lang)
        if catalogue is None:
            return msgid
        return catalogue.translations.gettext(msgid)

    def ngettext(self, lang: Language, singular: str, plural: str, count: int) -> str:
        """The form of a counted sentence for ``count`` in ``lang`` (by its Plural-Forms),
        else English's (``singular`` for 1, ``plural`` otherwise)."""
        catalogue = self.catalogues.get(lang)
        if catalogue is None:
            return singular if count == 1 else plural
        return catalogue.translations.ngettext(singular, plural, count)


def unchecked(locale_dir: Path = LOCALE_DIR) -> dict[Language, list[str]]:
    """Per language, the msgids that are fuzzy (not checked by a native speaker) or missing."""
    result: dict[Language, list[str]] = {}
    for lang in PAGE_LANGUAGES:
        if lang is Language.ENG:
            continue
        catalogue = load_catalogue(lang, locale_dir)
        result[lang] = sorted(catalogue.fuzzy) + [f"(missing) {m}" for m in catalogue.missing]
    return result


def page_language(code: str | None, default: Language) -> Language:
    """The page language named by ``code`` if the page has it, else ``default``."""
    if code:
        try:
            lang = Language.from_code(code)
        except ValueError:
            return default
        if lang in PAGE_LANGUAGES:
            return lang
    return default if default in PAGE_LANGUAGES else Language.ENG
