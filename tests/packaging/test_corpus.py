"""The repository carries its corpus: tests, benchmarks and model training read it from
``corpus/`` in the clone, wherever the clone is, and the shipped models rebuild from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from protocol.languages import TRAINED_LANGUAGES
from vessel_relay.corpus import CORPUS_VARIABLE, REPOSITORY_CORPUS, CorpusMissing, corpus_dir

ROOT = Path(__file__).resolve().parents[2]


def test_the_corpus_is_found_inside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """A contributor's clone, anywhere on disk, finds corpus/ beside vessel_relay/, with a
    train and a dev split for every trained language and the licence notes beside them."""
    monkeypatch.delenv(CORPUS_VARIABLE, raising=False)
    assert corpus_dir() == REPOSITORY_CORPUS == ROOT / "corpus"
    for language in TRAINED_LANGUAGES:
        for split in ("train", "dev"):
            assert (REPOSITORY_CORPUS / f"{language.code}.{split}.txt").stat().st_size > 1000
    readme = (REPOSITORY_CORPUS / "README.md").read_text(encoding="utf-8")
    for licence in ("CC BY 4.0", "CC BY-SA 4.0", "CC BY-SA 3.0", "CC0"):
        assert licence in readme


def test_the_environment_variable_points_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """VESSEL_RELAY_CORPUS still wins; a folder without the files is refused by name."""
    (tmp_path / "eng.train.txt").write_text("hello\n", encoding="utf-8")
    monkeypatch.setenv(CORPUS_VARIABLE, str(tmp_path))
    assert corpus_dir() == tmp_path
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(CORPUS_VARIABLE, str(empty))
    with pytest.raises(CorpusMissing, match=f"{CORPUS_VARIABLE}=.*empty has no eng.train.txt"):
        corpus_dir()


def test_no_file_names_a_path_of_one_machine() -> None:
    """Nothing tracked in git (code, tests, docs, scripts) names the project machines'
    work folder; CHANGELOG.md's history is the lead's to reword."""
    machine_folder = "/" + "work" + "/"
    found = subprocess.run(
        ["git", "grep", "-n", "-F", machine_folder, "--", ".", ":!CHANGELOG.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 1, found.stdout  # 1: git grep found nothing


def test_train_defaults_rebuilds_the_shipped_models_byte_for_byte(tmp_path: Path) -> None:
    """'vessel-relay dict train-defaults --corpus corpus' in a clone writes exactly the
    dictionaries, models and manifest that protocol/data ships (about 12 s)."""
    shipped = ROOT / "protocol" / "data"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vessel_relay.cli import main; main()",
            "dict",
            "train-defaults",
            "--corpus",
            "corpus",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(path.name for path in shipped.iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == names
    for name in names:
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), name
