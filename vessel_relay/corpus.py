"""Where the shared multilingual corpus is (``../shared/corpus`` beside the repository).

Tests and benchmarks read it from one place: ``VESSEL_RELAY_CORPUS`` when set, else the
``shared/corpus`` folder beside the repository, else ``/work/shared/corpus`` (where the
project's machines keep it, also for a clean clone made elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


class CorpusMissing(RuntimeError):
    """The corpus is in none of the places looked at; the message names them."""


def corpus_dir() -> Path:
    """The corpus folder; :class:`CorpusMissing` naming the places looked at if absent."""
    configured = os.environ.get("VESSEL_RELAY_CORPUS")
    candidates = [Path(configured)] if configured else []
    candidates += [_ROOT.parent / "shared" / "corpus", Path("/work/shared/corpus")]
    for candidate in candidates:
        if (candidate / "eng.train.txt").is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise CorpusMissing(
        f"the text corpus is missing (looked in {looked}): put shared/corpus beside the "
        "repository or set VESSEL_RELAY_CORPUS"
    )
