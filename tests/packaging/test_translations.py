"""The crew page's translations work with Babel's own tools, as translators' platforms
(Weblate, Pontoon, Poedit) expect: pybabel finds every sentence, the .po files are up to
date with the template, carry their language and CLDR plural rule, and all compile."""

from __future__ import annotations

import gettext
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from babel import Locale
from babel.messages.pofile import read_po

from protocol.languages import Language
from shipboard.web.catalogue import TEMPLATE_PATH, extract_template, page_msgids
from shipboard.web.i18n import (
    LOCALE_CODES,
    LOCALE_DIR,
    PAGE_LANGUAGES,
    Translations,
    catalogue_path,
    load_catalogue,
)

ROOT = Path(__file__).resolve().parents[2]
PYBABEL = Path(sys.executable).parent / "pybabel"
TRANSLATED = [lang for lang in PAGE_LANGUAGES if lang is not Language.ENG]
#: What the issue asks for (gettext/CLDR codes): Tagalog's catalogue is Filipino.
EXPECTED_LOCALES = {
    Language.MYA: "my",
    Language.KHM: "km",
    Language.LAO: "lo",
    Language.THA: "th",
    Language.IND: "id",
    Language.TGL: "fil",
    Language.VIE: "vi",
}


def _pybabel(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYBABEL), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _msgids(path: Path) -> set[str]:
    with path.open("rb") as handle:
        catalog = read_po(handle)
    return {m.id[0] if isinstance(m.id, tuple) else m.id for m in catalog if m.id}


def test_pybabel_extract_finds_every_sentence_of_the_templates(tmp_path: Path) -> None:
    """'pybabel extract -F pyproject.toml' finds every _("...") and ngettext("...") literal
    of every template and the sentences of pages.py; the committed crew.pot is that."""
    output = tmp_path / "crew.pot"
    extracted = _pybabel(
        "extract", "-F", "pyproject.toml", "-o", output, "--no-location", "shipboard/web"
    )
    assert extracted.returncode == 0, extracted.stderr
    found = _msgids(output)
    literal = re.compile(r'(?:\b_|ngettext)\(\s*"((?:[^"\\]|\\.)*)"')
    in_templates = set()
    for template in (LOCALE_DIR.parent / "templates").glob("*.html"):
        in_templates |= set(literal.findall(template.read_text(encoding="utf-8")))
    assert len(in_templates) > 70
    assert in_templates <= found, sorted(in_templates - found)
    assert found == page_msgids() == _msgids(TEMPLATE_PATH)
    with output.open("rb") as handle:
        plural = [m for m in read_po(handle) if isinstance(m.id, tuple)]
    assert sorted(m.id for m in plural) == [
        ("About {n} more character fits.", "About {n} more characters fit."),
        (
            "You can still send about {n} short message this month.",
            "You can still send about {n} short messages this month.",
        ),
        ("{n} character too many.", "{n} characters too many."),
    ]


def test_every_catalogue_is_up_to_date_with_the_template() -> None:
    """'pybabel update --check' finds nothing to change: every .po has every sentence."""
    checked = _pybabel(
        "update", "--check", "-i", TEMPLATE_PATH, "-d", LOCALE_DIR, "-D", "crew",
        "--ignore-pot-creation-date", "--no-wrap", "--previous",  # as scripts/translations
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_pybabel_compile_succeeds_for_all_seven_languages(tmp_path: Path) -> None:
    """'pybabel compile --use-fuzzy --statistics' compiles every language (a broken plural
    rule or msgstr[N] count would fail), and each .mo loads as standard gettext."""
    shutil.copytree(LOCALE_DIR, tmp_path / "locale")
    compiled = _pybabel(
        "compile", "-d", tmp_path / "locale", "-D", "crew", "--use-fuzzy", "--statistics"
    )
    assert compiled.returncode == 0, compiled.stderr
    count = len([message for message in extract_template() if message.id])
    assert compiled.stderr.count(f"{count} of {count} messages (100%) translated") == 7, (
        compiled.stderr
    )
    for lang in TRANSLATED:
        mo = tmp_path / "locale" / LOCALE_CODES[lang] / "LC_MESSAGES" / "crew.mo"
        with mo.open("rb") as handle:
            translations = gettext.GNUTranslations(handle)
        assert translations.info()["language"] == LOCALE_CODES[lang]


@pytest.mark.parametrize("lang", TRANSLATED, ids=lambda lang: lang.code)
def test_each_catalogue_names_its_language_and_cldr_plural_rule(lang: Language) -> None:
    """Each .po file says its Language and Plural-Forms, and the plural rule picks the form
    CLDR gives for every count from 0 to 1,000 (one form for my, km, lo, th, id, vi; two
    for fil: 'one' for 1, 2, 3 and numbers not ending in 4, 6 or 9)."""
    path = catalogue_path(lang)
    assert path.parent.parent.name == EXPECTED_LOCALES[lang]
    with path.open("rb") as handle:
        catalog = read_po(handle)
    headers = dict(catalog.mime_headers)
    assert headers["Language"] == EXPECTED_LOCALES[lang]
    assert not catalog.fuzzy  # the header itself is final
    rule = Locale.parse(EXPECTED_LOCALES[lang]).plural_form
    categories = sorted(rule.tags | {"other"}, key=["one", "other"].index)
    assert catalog.num_plurals == len(categories)
    plural = gettext.c2py(catalog.plural_expr)
    for n in range(1001):
        assert categories[plural(n)] == rule(n), (lang.code, n)


def test_a_counted_sentence_takes_the_form_of_its_language() -> None:
    """Runtime gettext follows each file's Plural-Forms: Filipino's second form for 4,
    Burmese's single form for any count, English's singular for 1 only."""
    translations = Translations()
    filipino = load_catalogue(Language.TGL).translations
    assert (filipino.plural(1), filipino.plural(4), filipino.plural(11)) == (0, 1, 0)  # type: ignore[attr-defined]
    singular = "You can still send about {n} short message this month."
    plural = "You can still send about {n} short messages this month."
    burmese = {translations.ngettext(Language.MYA, singular, plural, n) for n in (1, 2, 5)}
    assert len(burmese) == 1
    assert "{n}" in burmese.pop()
    assert translations.ngettext(Language.ENG, singular, plural, 1) == singular
    assert translations.ngettext(Language.ENG, singular, plural, 3) == plural
    assert load_catalogue(Language.TGL).plurals[singular][1]
