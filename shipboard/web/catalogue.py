"""Catalogue upkeep with Babel's own tools: what the page says (the ``crew.pot`` template)
and each language's ``.po`` file.

Translators and their tools (Weblate, Pontoon, Poedit) work on the files that
``pybabel`` writes; ``docs/translating.md`` is the guide. The extraction mapping lives in
``pyproject.toml`` (``[tool.babel]``): the Jinja templates go through Jinja's own extractor
(``_("...")`` and ``ngettext("...", "...", n)`` calls), and ``pages.py`` through
:func:`extract_page_sentences` (its sentences are plain string constants, not ``_()``
calls). The commands, run from the repository root (``scripts/translations`` runs them)::

    pybabel extract -F pyproject.toml -o shipboard/web/locale/crew.pot \\
        --project "vessel-relay crew page" --no-location --sort-output shipboard/web
    pybabel update -i shipboard/web/locale/crew.pot -d shipboard/web/locale -D crew \\
        --no-wrap --ignore-pot-creation-date
    pybabel compile -d shipboard/web/locale -D crew --use-fuzzy --statistics

``update`` keeps every translation and its ``fuzzy`` flag, marks a changed sentence fuzzy
with the old text as a suggestion, and keeps removed ones as obsolete (``#~``). The page
reads the ``.po`` files themselves (:mod:`shipboard.web.i18n`), so ``compile`` is a check,
not a build step. This module runs the same extraction in-process, for the tests; it reads
``pyproject.toml``, so it works in a clone of the repository, not in an installed wheel.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir

from shipboard.web.i18n import DOMAIN, LOCALE_DIR

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
TEMPLATE_PATH = LOCALE_DIR / f"{DOMAIN}.pot"
PROJECT = "vessel-relay crew page"
_NOT_SENTENCES = ("SELECT", "INSERT", "UPDATE", "CREATE")


def extract_page_sentences(
    fileobj: IO[bytes],
    keywords: Collection[str],
    comment_tags: Collection[str],
    options: dict[str, Any],
) -> Iterator[tuple[int, str | None, str, list[str]]]:
    """A Babel extractor for ``pages.py``: its sentences for crew members, which are
    capitalised string constants (not docstrings, not SQL, not ``%`` log formats)."""
    tree = ast.parse(fileobj.read().decode("utf-8"))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
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
            yield node.lineno, None, text, []


def _mapping() -> tuple[list[tuple[str, str]], dict[str, dict[str, Any]]]:
    """``[tool.babel]`` of pyproject.toml, as ``pybabel extract -F pyproject.toml`` reads it."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        babel = tomllib.load(handle)["tool"]["babel"]
    extractors: dict[str, str] = babel.get("extractors", {})
    methods: list[tuple[str, str]] = []
    options: dict[str, dict[str, Any]] = {}
    for entry in babel["mappings"]:
        entry = dict(entry)
        name = str(entry.pop("method"))
        method = extractors.get(name, name)  # a name of ours, or Babel's (jinja2)
        pattern = str(entry.pop("pattern"))
        methods.append((pattern, method))
        options[pattern] = entry
    return methods, options


def extract_template() -> Catalog:
    """The page's sentences as Babel extracts them (the content of ``crew.pot``)."""
    methods, options = _mapping()
    catalog = Catalog(project=PROJECT, domain=DOMAIN, fuzzy=False)
    for filename, lineno, message, comments, context in extract_from_dir(
        str(HERE), methods, options
    ):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def page_msgids() -> set[str]:
    """Every sentence the page can show, in English (singular msgids of plural entries)."""
    found: set[str] = set()
    for message in extract_template():
        if message.id:
            found.add(message.id if isinstance(message.id, str) else message.id[0])
    return found
