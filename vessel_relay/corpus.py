"""Where the multilingual text corpus is: ``corpus/`` in the repository.

Tests, benchmarks and ``vessel-relay dict train-defaults`` read it from one place:
``VESSEL_RELAY_CORPUS`` when set (a folder holding ``LANG.train.txt`` and ``LANG.dev.txt``),
else the ``corpus`` folder at the top of the repository this module was loaded from. The
corpus is not part of the installed package (the wheel ships only the models trained from
it); ``corpus/README.md`` gives each file's source and licence.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository's own copy (``corpus/`` beside ``vessel_relay/``).
REPOSITORY_CORPUS = Path(__file__).resolve().parents[1] / "corpus"
#: The environment variable that points elsewhere.
CORPUS_VARIABLE = "VESSEL_RELAY_CORPUS"


class CorpusMissing(RuntimeError):
    """The corpus is not where it was looked for; the message says where and what to do."""


def corpus_dir() -> Path:
    """The corpus folder; :class:`CorpusMissing` naming the place looked at if absent."""
    configured = os.environ.get(CORPUS_VARIABLE)
    candidate = Path(configured) if configured else REPOSITORY_CORPUS
    if (candidate / "eng.train.txt").is_file():
        return candidate
    if configured:
        raise CorpusMissing(
            f"the text corpus is missing: {CORPUS_VARIABLE}={configured} has no eng.train.txt; "
            "point it at a folder with the LANG.train.txt and LANG.dev.txt files, or unset it "
            f"to use the repository's own ({REPOSITORY_CORPUS})"
        )
    raise CorpusMissing(
        f"the text corpus is missing: {candidate} has no eng.train.txt. It ships with the "
        "git repository (corpus/), not with the installed package: run this from a clone, "
        f"or set {CORPUS_VARIABLE} to a folder with the LANG.train.txt files"
    )
