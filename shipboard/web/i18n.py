"""Page languages: gettext catalogues (Babel ``.po`` files, read at start-up) per language.

``locale/LANG/LC_MESSAGES/crew.po`` holds the page's sentences for each language (LANG is
the ISO 639-3 code used everywhere else in vessel-relay). A translation that a native
speaker has not checked yet is marked ``#, fuzzy``: the page still shows it (it is better
than English for most readers), and :func:`unchecked` lists it so that someone can check
it (``vessel-relay ship i18n-check``). A missing translation falls back to English.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True, slots=True)
class Catalogue:
    """One language's translations: msgid -> text, and which ones are unchecked (fuzzy)."""

    lang: Language
    messages: dict[str, str]
    fuzzy: frozenset[str]
    missing: tuple[str, ...]


def catalogue_path(lang: Language, locale_dir: Path = LOCALE_DIR) -> Path:
    """Where the ``.po`` file of ``lang`` lives."""
    return locale_dir / lang.code / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_catalogue(lang: Language, locale_dir: Path = LOCALE_DIR) -> Catalogue:
    """Read one language's ``.po`` file (an empty catalogue if there is none)."""
    path = catalogue_path(lang, locale_dir)
    if not path.exists():
        return Catalogue(lang, {}, frozenset(), ())
    with path.open("rb") as handle:
        catalog = read_po(handle)
    messages: dict[str, str] = {}
    fuzzy: set[str] = set()
    missing: list[str] = []
    for message in catalog:
        if not message.id or not isinstance(message.id, str):
            continue
        text = message.string if isinstance(message.string, str) else ""
        if not text:
            missing.append(message.id)
            continue
        messages[message.id] = text
        if message.fuzzy:
            fuzzy.add(message.id)
    return Catalogue(lang, messages, frozenset(fuzzy), tuple(missing))


class Translations:
    """All page languages' catalogues, loaded once."""

    def __init__(self, locale_dir: Path = LOCALE_DIR) -> None:
        self.catalogues = {lang: load_catalogue(lang, locale_dir) for lang in PAGE_LANGUAGES}

    def gettext(self, lang: Language, msgid: str) -> str:
        """The sentence in ``lang`` (fuzzy included), else the English msgid."""
        catalogue = self.catalogues.get(lang)
        if catalogue is None:
            return msgid
        return catalogue.messages.get(msgid, msgid)


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
