"""Catalogue upkeep: every sentence the page can show (msgids) and the ``.po`` files.

:func:`page_msgids` collects the msgids from the templates (``_("...")``) and the
sentences in :mod:`shipboard.web.pages`; :func:`update_catalogues` adds new msgids to
every language's ``.po`` file (untranslated, so ``i18n-check`` lists them) and drops
none, like ``msgmerge``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

from protocol.languages import Language
from shipboard.web.i18n import DOMAIN, LOCALE_DIR, PAGE_LANGUAGES, catalogue_path

HERE = Path(__file__).parent
_TEMPLATE_MSGID = re.compile(r'_\("((?:[^"\\]|\\.)*)"')
_NOT_SENTENCES = ("SELECT", "INSERT", "UPDATE", "CREATE")


def template_msgids(templates: Path = HERE / "templates") -> set[str]:
    """The msgids in ``_("...")`` calls of the templates."""
    found: set[str] = set()
    for path in sorted(templates.glob("*.html")):
        found.update(_TEMPLATE_MSGID.findall(path.read_text(encoding="utf-8")))
    return found


def code_msgids(source: Path = HERE / "pages.py") -> set[str]:
    """Sentences for crew members in ``pages.py``: capitalised string constants, not logs."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        text = node.value
        if (
            id(node) not in docstrings
            and len(text) > 1
            and text[0].isupper()
            and not text.isupper()
            and "%" not in text
            and not text.startswith(_NOT_SENTENCES)
        ):
            found.add(text)
    return found


def page_msgids() -> set[str]:
    """Every sentence the page can show, in English (the msgids)."""
    return template_msgids() | code_msgids()


def update_catalogues(locale_dir: Path = LOCALE_DIR) -> dict[Language, int]:
    """Add new msgids to every language's catalogue; returns how many each one gained."""
    wanted = page_msgids()
    added: dict[Language, int] = {}
    for lang in PAGE_LANGUAGES:
        if lang is Language.ENG:
            continue
        path = catalogue_path(lang, locale_dir)
        if path.exists():
            with path.open("rb") as handle:
                catalog = read_po(handle)
        else:
            catalog = Catalog(domain=DOMAIN, project="vessel-relay crew page")
        known = {m.id for m in catalog if m.id}
        new = sorted(wanted - known)
        for msgid in new:
            catalog.add(msgid, "")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            write_po(handle, catalog, width=0, sort_output=True)
        added[lang] = len(new)
    return added
