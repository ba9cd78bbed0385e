"""One model shore: no class in ``tests/`` but :class:`tests.kit.model_shore.ModelShore`
plays the shore's side of the exchange.

A test that needs a shore uses the kit's (its options and hooks, an adapter for the
transport) or the relay as shipped (:mod:`tests.kit.voyage`); a second hand-written shore
drifts from the protocol unnoticed. A class plays the shore when its own code builds a
:class:`protocol.exchange.ShoreExchange` or signs downlink batches (``encode_batch`` with
``Direction.DOWNLINK``), under whatever names they were imported. Functions that sign one
hand-made downlink batch (a hostile one, an old design's) are not shores and pass.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).parent
THE_MODEL_SHORE = TESTS / "kit" / "model_shore.py"


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> imported name, for every ``from ... import x as y`` in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name] = alias.name
    return names


def _words(node: ast.AST, aliases: dict[str, str]) -> set[str]:
    """Every name and attribute the code under ``node`` uses, aliases resolved."""
    words: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            words.add(aliases.get(child.id, child.id))
        elif isinstance(child, ast.Attribute):
            words.add(child.attr)
    return words


def plays_the_shore(words: set[str]) -> bool:
    """Builds the shore's exchange, or signs downlink batches."""
    return "ShoreExchange" in words or {"encode_batch", "DOWNLINK"} <= words


def shore_classes(path: Path, root: Path) -> Iterator[str]:
    """``file:line Class`` (the file relative to ``root``) for every class in ``path`` that
    plays the shore."""
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and plays_the_shore(_words(node, aliases)):
            yield f"{path.relative_to(root).as_posix()}:{node.lineno} {node.name}"


def test_the_tests_hold_one_model_shore() -> None:
    """Whoever writes a second shore class in the tests is sent to the kit's model shore:
    the only class that plays the shore's side of the exchange is ModelShore."""
    root = TESTS.parent
    found = [f for path in sorted(TESTS.rglob("*.py")) for f in shore_classes(path, root)]
    others = [f for f in found if not f.startswith("tests/kit/model_shore.py:")]
    assert others == [], (
        f"a second model shore in tests/ ({others}): use tests.kit.model_shore.ModelShore "
        "(add an option or a hook there) instead"
    )
    assert [f.rsplit(" ", 1)[1] for f in found] == ["ModelShore"]


def test_the_check_recognises_a_hand_written_shore(tmp_path: Path) -> None:
    """The check is not blind: a class that signs downlink batches under an alias, and one
    that builds its own ShoreExchange, are found; a vessel-side class and a function that
    signs one hostile batch are not."""
    source = tmp_path / "test_shores.py"
    source.write_text(
        "from protocol.batch import Direction, encode_batch as sign\n"
        "from protocol.exchange import ShoreExchange\n"
        "class Answers:\n"
        "    def answer(self, envelopes):\n"
        "        return sign(envelopes, direction=Direction.DOWNLINK)\n"
        "class Relay:\n"
        "    def __init__(self, settings):\n"
        "        self.exchange = ShoreExchange(settings)\n"
        "class Outbox:\n"
        "    def make(self, envelopes):\n"
        "        return sign(envelopes, direction=Direction.UPLINK)\n"
        "def hostile(envelopes):\n"
        "    return sign(envelopes, direction=Direction.DOWNLINK)\n"
    )
    found = sorted(shore_classes(source, tmp_path))
    assert found == ["test_shores.py:3 Answers", "test_shores.py:6 Relay"]
