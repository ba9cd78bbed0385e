"""The repository's corpus for tests (found by :func:`vessel_relay.corpus.corpus_dir`)."""

from __future__ import annotations

from vessel_relay.corpus import corpus_dir

CORPUS = corpus_dir()
