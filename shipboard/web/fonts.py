"""Web fonts: Noto subsets for the Myanmar, Khmer, Lao and Thai scripts, served locally.

Many cheap phones lack fonts for these scripts. The page serves one WOFF2 per script,
subset from Debian's Noto fonts (``fonts-noto-core``) to that script's Unicode blocks (so
that any text a family writes back is covered, not only the page's own sentences) with
all shaping features kept. The CSS declares the same blocks as ``unicode-range``, so a
phone downloads a font only for a page that uses its script, once (cached for a year).
Latin and Vietnamese use the phone's own font.

Rebuild after changing the ranges (the file name carries a version; bump it in the CSS)::

    .venv/bin/python -m shipboard.web.fonts
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fontTools import subset  # type: ignore[import-untyped]
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

NOTO_DIR = Path("/usr/share/fonts/truetype/noto")
FONTS_DIR = Path(__file__).parent / "static" / "fonts"
VERSION = 1

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
#: Characters every script font also carries (joiners, dotted circle for lone marks).
EXTRA = (0x200B, 0x200C, 0x200D, 0x25CC)


def served_path(name: str) -> Path:
    """Where the served WOFF2 of a script lives."""
    return FONTS_DIR / f"{name}-{VERSION}.woff2"


def script_of(char: str) -> str | None:
    """The served font that must cover ``char``, or None (the phone's own font)."""
    point = ord(char)
    for name, (_, ranges) in SCRIPT_FONTS.items():
        if any(low <= point <= high for low, high in ranges):
            return name
    return None


def build(out_dir: Path = FONTS_DIR, noto_dir: Path = NOTO_DIR) -> dict[str, int]:
    """Subset every script font to WOFF2 in ``out_dir``; returns the bytes of each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for name, (source, ranges) in SCRIPT_FONTS.items():
        options = subset.Options()
        options.flavor = "woff2"
        options.layout_features = ["*"]
        options.name_IDs = ["*"]  # keeps the OFL licence text in the font
        options.notdef_outline = True
        font = subset.load_font(str(noto_dir / source), options)
        subsetter = subset.Subsetter(options)
        unicodes = [p for low, high in ranges for p in range(low, high + 1)] + list(EXTRA)
        subsetter.populate(unicodes=unicodes)
        subsetter.subset(font)
        target = out_dir / f"{name}-{VERSION}.woff2"
        subset.save_font(font, str(target), options)
        sizes[name] = target.stat().st_size
    return sizes


def missing_glyphs(text: str, fonts_dir: Path = FONTS_DIR) -> dict[str, set[str]]:
    """Characters of ``text`` in a served script whose served font has no glyph for them."""
    cmaps: dict[str, set[int]] = {}
    missing: dict[str, set[str]] = {}
    for char in set(text):
        name = script_of(char)
        if name is None:
            continue
        if name not in cmaps:
            cmaps[name] = _cmap(fonts_dir / served_path(name).name)
        if ord(char) not in cmaps[name]:
            missing.setdefault(name, set()).add(char)
    return missing


def _cmap(path: Path) -> set[int]:
    font = TTFont(str(path))
    try:
        return set(font.getBestCmap())
    finally:
        font.close()


def scripts_used(texts: Iterable[str]) -> set[str]:
    """The served fonts that these texts need."""
    return {name for text in texts for char in text if (name := script_of(char)) is not None}


if __name__ == "__main__":
    for font_name, size in build().items():
        print(f"{font_name:8} {size:7,} B  {served_path(font_name)}")
