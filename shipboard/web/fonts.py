"""Web fonts: Noto subsets for the Myanmar, Khmer, Lao and Thai scripts, served locally.

Many cheap phones lack fonts for these scripts, so the page serves its own, subset from
Debian's Noto fonts (``fonts-noto-core``) with every shaping feature kept and the
TrueType hinting dropped (phones render web fonts unhinted; hinting was half the bytes).
Per script there are three files, named by a hash of their bytes (cached for a year):

- **page** (``myanmar-page-HASH.woff2``): only the characters the page's own sentences in
  that script use (the catalogue's translations, the quick messages, the language's name
  and its digits). A page in Burmese downloads this one alone.
- **full** (``myanmar-HASH.woff2``): the script's whole Unicode blocks, so that any text a
  family writes back or a crew member types is covered. Its ``@font-face`` comes first
  in the same family, so the browser fetches it only when the page shows a character
  the page subset lacks (CSS Fonts: the last-declared face whose ``unicode-range``
  covers a character is tried first).
- **names** (``names-HASH.woff2``, all scripts in one file): the language bar's names of
  the languages in their own scripts (2.8 KB), so that the bar needs none of the four
  script fonts. Drawn as SVG outlines the names weighed 7.8 KB (3.4 KB gzipped), as
  four fonts 3.5 KB in four requests.

The fonts keep their copyright and licence names (name IDs 0, 13, 14), and
``static/fonts/NOTO-LICENSE.txt`` ships beside them (SIL Open Font License 1.1). The build
writes the ``@font-face`` rules into ``static/style.css`` between two marker comments.

Rebuild after changing the ranges or the translations (``tests/web/test_first_load.py``
fails while a page subset misses a character of its language's sentences); the build is
reproducible (the same bytes, so the same names, from the same Noto and fontTools)::

    scripts/build-fonts
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.languages import Language
from protocol.phrases import PHRASES
from shipboard.web.i18n import NATIVE_NAMES, PAGE_LANGUAGES, Translations
from shipboard.web.local import moment, native_digits

if TYPE_CHECKING:  # fontTools builds and checks the fonts (a dev dependency): imported there
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

NOTO_DIR = Path("/usr/share/fonts/truetype/noto")
STATIC_DIR = Path(__file__).parent / "static"
FONTS_DIR = STATIC_DIR / "fonts"
STYLE_SHEET = STATIC_DIR / "style.css"
CSS_BEGIN = "/* fonts: written by scripts/build-fonts (shipboard/web/fonts.py) */"
CSS_END = "/* end of fonts */"

#: Served font name -> (Noto source file, Unicode ranges it covers).
SCRIPT_FONTS: dict[str, tuple[str, tuple[tuple[int, int], ...]]] = {
    "myanmar": (
        "NotoSansMyanmar-Regular.ttf",
        ((0x1000, 0x109F), (0xAA60, 0xAA7F), (0xA9E0, 0xA9FF)),
    ),
    "khmer": ("NotoSansKhmer-Regular.ttf", ((0x1780, 0x17FF), (0x19E0, 0x19FF))),
    "lao": ("NotoSansLao-Regular.ttf", ((0x0E80, 0x0EFF),)),
    "thai": ("NotoSansThai-Regular.ttf", ((0x0E00, 0x0E7F),)),
}
#: Each served script's CSS family (the page's font stack names them all).
FAMILIES = {"myanmar": "VR Myanmar", "khmer": "VR Khmer", "lao": "VR Lao", "thai": "VR Thai"}
NAMES_FAMILY = "VR Names"
#: Characters every script font also carries (joiners, dotted circle for lone marks).
EXTRA = (0x200B, 0x200C, 0x200D, 0x25CC)
#: Name IDs kept: copyright, family, style, licence description and licence URL (OFL).
NAME_IDS = (0, 1, 2, 13, 14)


@dataclass(frozen=True, slots=True)
class ServedFont:
    """One served WOFF2: its CSS family, file name and the characters it is used for."""

    family: str
    file: str
    unicodes: frozenset[int]


def script_of(char: str) -> str | None:
    """The served font that must cover ``char``, or None (the phone's own font)."""
    point = ord(char)
    for name, (_, ranges) in SCRIPT_FONTS.items():
        if any(low <= point <= high for low, high in ranges):
            return name
    return None


def scripts_used(texts: Iterable[str]) -> set[str]:
    """The served fonts that these texts need."""
    return {name for text in texts for char in text if (name := script_of(char)) is not None}


def page_texts(translations: Translations | None = None) -> dict[Language, str]:
    """Everything the crew page says in each page language: its catalogue's sentences
    (every plural form), the quick messages, the language's own name, its digits and its
    dates (every month's name, morning and afternoon)."""
    words = translations or Translations()
    texts: dict[Language, str] = {}
    for lang in PAGE_LANGUAGES:
        catalogue = words.catalogues[lang]
        parts = list(catalogue.messages.values())
        parts += [form for forms in catalogue.plurals.values() for form in forms]
        parts += [p.texts[lang] for p in PHRASES.values() if lang in p.texts]
        parts += [NATIVE_NAMES[lang], native_digits(lang)]
        parts += [
            moment(datetime(2026, month, 28, hour, 5), lang)
            for month in range(1, 13)
            for hour in (9, 21)
        ]
        texts[lang] = "\n".join(parts)
    return texts


def _with_parts(points: set[int]) -> set[int]:
    """The code points and the parts they decompose into (Thai SARA AM is shaped as
    NIKHAHIT + SARA AA: a font without a glyph for NIKHAHIT makes the browser fetch the
    whole-block font for every word with SARA AM)."""
    parts = set(points)
    for point in points:
        decomposition = unicodedata.decomposition(chr(point))
        parts |= {int(p, 16) for p in decomposition.split() if not p.startswith("<")}
    return parts


def _subset(
    source: Path, unicodes: Iterable[int] = (), text: str = "", notdef: bool = True
) -> TTFont:
    from fontTools import subset  # type: ignore[import-untyped]

    options = _options()
    options.notdef_outline = notdef
    font = subset.load_font(str(source), options)
    font.recalcTimestamp = False  # the same bytes on every build (the name is their hash)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=list(unicodes), text=text)
    subsetter.subset(font)
    return font


def _options() -> Any:
    from fontTools import subset

    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = list(NAME_IDS)
    options.name_languages = ["*"]
    options.hinting = False
    return options


def _woff2(font: TTFont) -> bytes:
    font.flavor = "woff2"
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


def _write(out_dir: Path, stem: str, data: bytes) -> str:
    name = f"{stem}-{hashlib.sha256(data).hexdigest()[:10]}.woff2"
    (out_dir / name).write_bytes(data)
    return name


def build(
    out_dir: Path = FONTS_DIR,
    noto_dir: Path = NOTO_DIR,
    style_sheet: Path | None = STYLE_SHEET,
    translations: Translations | None = None,
) -> list[ServedFont]:
    """Subset every script font (full and page) and the language bar's names font to
    WOFF2 in ``out_dir`` (old ones removed), and write their ``@font-face`` rules into
    ``style_sheet``; returns the served fonts in the order of their rules."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.woff2"):
        old.unlink()
    texts = page_texts(translations)
    served: list[ServedFont] = []
    for name, (source, ranges) in SCRIPT_FONTS.items():
        family = FAMILIES[name]
        block = {p for low, high in ranges for p in range(low, high + 1)} | set(EXTRA)
        full = _subset(noto_dir / source, block)
        covered = frozenset(block & set(full.getBestCmap()))
        served.append(ServedFont(family, _write(out_dir, name, _woff2(full)), covered))
        wanted = _with_parts({ord(c) for t in texts.values() for c in t if script_of(c) == name})
        if wanted:
            page = _subset(noto_dir / source, wanted | set(EXTRA))
            points = frozenset((wanted | set(EXTRA)) & set(page.getBestCmap()))
            served.append(ServedFont(family, _write(out_dir, f"{name}-page", _woff2(page)), points))
    served.append(_names_font(out_dir, noto_dir))
    if style_sheet is not None:
        write_css(style_sheet, served)
    return served


def _names_font(out_dir: Path, noto_dir: Path) -> ServedFont:
    """The language bar's names, every served script in one font (fontTools' merger)."""
    from fontTools.merge import Merger  # type: ignore[import-untyped]
    from fontTools.ttLib import TTFont

    by_script: dict[str, str] = {}
    for name_text in NATIVE_NAMES.values():
        for char in name_text:
            script = script_of(char)
            if script is not None:
                by_script[script] = by_script.get(script, "") + char
    with tempfile.TemporaryDirectory(prefix="vr-names-") as scratch:
        parts = []
        for script, chars in sorted(by_script.items()):
            part = _subset(noto_dir / SCRIPT_FONTS[script][0], text=chars, notdef=False)
            path = Path(scratch) / f"{script}.ttf"
            part.save(str(path))
            parts.append(str(path))
        merged = Merger().merge(parts)
        # the merger stamps the time of the merge; keep the source's (same bytes each build)
        first = TTFont(parts[0])
        merged["head"].created = first["head"].created
        merged["head"].modified = first["head"].modified
    merged.recalcTimestamp = False
    points = frozenset(ord(c) for chars in by_script.values() for c in chars)
    return ServedFont(NAMES_FAMILY, _write(out_dir, "names", _woff2(merged)), points)


def unicode_range(points: Iterable[int]) -> str:
    """A CSS ``unicode-range`` value for these code points, runs written as ranges."""
    ordered = sorted(set(points))
    runs: list[tuple[int, int]] = []
    for point in ordered:
        if runs and point == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], point)
        else:
            runs.append((point, point))
    return ",".join(f"U+{a:X}" if a == b else f"U+{a:X}-{b:X}" for a, b in runs)


def font_face_css(fonts: Iterable[ServedFont]) -> str:
    """The ``@font-face`` rules of the served fonts (paths relative to the style sheet)."""
    return "\n".join(
        f'@font-face{{font-family:"{f.family}";src:url(fonts/{f.file}) format("woff2");'
        f"font-display:swap;unicode-range:{unicode_range(f.unicodes)}}}"
        for f in fonts
    )


def write_css(style_sheet: Path, fonts: Iterable[ServedFont]) -> None:
    """Put the fonts' rules between the style sheet's marker comments (or first)."""
    css = style_sheet.read_text(encoding="utf-8") if style_sheet.exists() else ""
    block = f"{CSS_BEGIN}\n{font_face_css(fonts)}\n{CSS_END}\n"
    pattern = re.compile(re.escape(CSS_BEGIN) + r".*?" + re.escape(CSS_END) + r"\n?", re.S)
    css = pattern.sub(lambda _: block, css) if pattern.search(css) else block + css
    style_sheet.write_text(css, encoding="utf-8")


def served_fonts(style_sheet: Path = STYLE_SHEET) -> list[ServedFont]:
    """The fonts the style sheet declares (family, file, characters), in its order."""
    css = style_sheet.read_text(encoding="utf-8")
    rule = re.compile(
        r'@font-face\{font-family:"([^"]+)";src:url\(fonts/([^)]+)\) format\("woff2"\);'
        r"font-display:swap;unicode-range:([^}]+)\}"
    )
    fonts = []
    for family, file, ranges in rule.findall(css):
        points: set[int] = set()
        for part in ranges.split(","):
            low, _, high = part.strip().removeprefix("U+").partition("-")
            points.update(range(int(low, 16), int(high or low, 16) + 1))
        fonts.append(ServedFont(family, file, frozenset(points)))
    return fonts


@cache
def preloads(lang: Language) -> tuple[str, ...]:
    """The font files a page in ``lang`` surely draws (its script's page subset and the
    language bar's names font), for ``<link rel=preload>``: fetched with the style sheet
    instead of after it, so the page's text shows a round trip earlier."""
    scripts = {script_of(c) for c in NATIVE_NAMES.get(lang, "")} - {None}
    fonts = served_fonts()
    files = [f.file for f in fonts if "-page-" in f.file and _script_of_family(f.family) in scripts]
    files += [f.file for f in fonts if f.family == NAMES_FAMILY]
    return tuple(files)


def _script_of_family(family: str) -> str | None:
    return next((script for script, name in FAMILIES.items() if name == family), None)


def missing_glyphs(text: str, fonts_dir: Path = FONTS_DIR) -> dict[str, set[str]]:
    """Characters of ``text`` in a served script that none of that script's served fonts
    (page subset or full) has a glyph for."""
    cmaps: dict[str, set[int]] = {}
    missing: dict[str, set[str]] = {}
    for char in set(text):
        name = script_of(char)
        if name is None:
            continue
        if name not in cmaps:
            cmaps[name] = set()
            for font in served_fonts(fonts_dir.parent / STYLE_SHEET.name):
                if font.family == FAMILIES[name]:
                    cmaps[name] |= _cmap(fonts_dir / font.file) & font.unicodes
        if ord(char) not in cmaps[name]:
            missing.setdefault(name, set()).add(char)
    return missing


def _cmap(path: Path) -> set[int]:
    from fontTools.ttLib import TTFont

    font = TTFont(str(path))
    try:
        return set(font.getBestCmap())
    finally:
        font.close()


def main() -> None:
    """Build the fonts and print what each file weighs (``scripts/build-fonts``)."""
    for served_font in build():
        size = (FONTS_DIR / served_font.file).stat().st_size
        print(f"{served_font.family:11} {size:7,} B  {served_font.file}")


if __name__ == "__main__":
    main()
