"""benchmarks/wire.py runs on a small corpus and prints a consistent JSON report.

Timings are not checked (they are the benchmark's to measure); the shape of the report,
the contract keys and the relations that must hold between its numbers are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from tests.kit.corpus import CORPUS  # noqa: E402

CONTRACT_KEYS = {"raw", "single", "batched", "zstd19", "brotli11", "ctx", "chosen"}


def _head(source: Path, target: Path, count: int) -> list[str]:
    lines = [line for line in source.read_text(encoding="utf-8").split("\n") if line.strip()]
    target.write_text("\n".join(lines[:count]) + "\n", encoding="utf-8")
    return lines[:count]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """English with 120 dev lines (counted in averages), Thai with 30 (not), a stray file."""
    corpus = tmp_path_factory.mktemp("corpus")
    _head(CORPUS / "eng.dev.txt", corpus / "eng.dev.txt", 120)
    _head(CORPUS / "eng.train.txt", corpus / "eng.train.txt", 400)
    _head(CORPUS / "tha.dev.txt", corpus / "tha.dev.txt", 30)
    (corpus / "xxx.dev.txt").write_text("not a language we know\n", encoding="utf-8")
    return corpus


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "wire.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def report(small_corpus: Path) -> dict[str, object]:
    done = _run("--corpus", str(small_corpus), "--batch-size", "7", "--json")
    assert done.returncode == 0, done.stderr
    assert "xxx.dev.txt" in done.stderr  # the unknown language is named, then skipped
    parsed = json.loads(done.stdout)
    assert isinstance(parsed, dict)
    return parsed


def test_report_has_the_contract_shape(report: dict[str, object], small_corpus: Path) -> None:
    """``{"languages": {LANG: {raw, single, batched, ...}}, "batch_size": N}``, every figure."""
    assert report["batch_size"] == 7
    languages = report["languages"]
    assert isinstance(languages, dict)
    assert set(languages) == {"eng", "tha"}
    for row in languages.values():
        assert set(row) >= CONTRACT_KEYS
        assert all(isinstance(row[key], float | int) and row[key] > 0 for key in CONTRACT_KEYS)


def test_raw_bytes_are_the_mean_utf8_length(report: dict[str, object], small_corpus: Path) -> None:
    """``raw`` is the mean UTF-8 length of the lines, as the file holds them."""
    languages = report["languages"]
    assert isinstance(languages, dict)
    for code in ("eng", "tha"):
        lines = (small_corpus / f"{code}.dev.txt").read_text(encoding="utf-8").split("\n")
        lines = [line for line in lines if line.strip()]
        mean = sum(len(line.encode("utf-8")) for line in lines) / len(lines)
        assert languages[code]["raw"] == pytest.approx(mean, abs=0.01)
        assert languages[code]["lines"] == len(lines)


def test_figures_are_consistent(report: dict[str, object]) -> None:
    """The encoder's choice is never worse than one codec alone; a batch of one pays the
    signature; the bound is ideal + header; only languages with 100+ lines are averaged."""
    languages = report["languages"]
    assert isinstance(languages, dict)
    for row in languages.values():
        chosen = row.get("chosen_unpadded", row["chosen"])
        assert row["chosen"] <= row["batched"] + 0.01
        assert row["chosen"] <= row["ctx"] + 0.01
        assert row["single"] > 64  # the Ed25519 signature alone
        assert row["single"] > row["chosen"]
        assert row["ctx_over_batched"] == pytest.approx(row["ctx"] / row["batched"], abs=0.002)
        assert row["chosen_over_raw"] == pytest.approx(chosen / row["raw"], abs=0.002)
        assert row["enc_per_s"] > 0
        assert row["dec_per_s"] > 0
    eng, tha = languages["eng"], languages["tha"]
    assert eng["bound"] == pytest.approx(eng["ideal"] + eng["header"], abs=0.02)
    assert eng["chosen_over_bound"] == pytest.approx(
        eng["chosen_unpadded" if "chosen_unpadded" in eng else "chosen"] / eng["bound"], abs=0.002
    )
    assert eng["ideal_model_is_shipped"] is False  # trained here on 400 lines only
    assert tha["ideal"] is None  # no tha.train.txt in this corpus
    averages = report["averages"]
    assert isinstance(averages, dict)
    assert averages["languages_counted"] == 1  # Thai has only 30 lines
    assert averages["ctx_over_batched_mean"] == pytest.approx(eng["ctx_over_batched"])


def test_lone_short_messages_are_measured_as_compact_frames(
    report: dict[str, object], small_corpus: Path
) -> None:
    """``lone_short_median``: lines of at most 40 characters, each alone in a compact frame
    padded to whole 50-byte credits; far below a signed batch of one, and counted right."""
    languages = report["languages"]
    assert isinstance(languages, dict)
    for code, row in languages.items():
        lines = (small_corpus / f"{code}.dev.txt").read_text(encoding="utf-8").split("\n")
        short = [line for line in lines if line.strip() and len(line) <= 40]
        assert row["lone_short_lines"] == len(short) > 0
        assert row["lone_short_median"] % 50 == 0
        assert row["lone_short_median_unpadded"] <= row["lone_short_median"]
        assert row["lone_short_median"] <= 50  # issue 25: one SBD credit
        assert row["lone_short_median"] < row["single"] - 50
        assert 0 < row["lone_short_one_credit"] <= 1
    averages = report["averages"]
    assert isinstance(averages, dict)
    assert averages["lone_short_median_max"] == languages["eng"]["lone_short_median"]


def test_memory_is_measured_in_a_fresh_process(report: dict[str, object]) -> None:
    """Every shipped context model is loaded, and the memory taken is reported."""
    memory = report["memory"]
    assert isinstance(memory, dict)
    assert memory["models"] == 9
    assert memory["traced_mb"] > 0
    assert memory["traced_peak_mb"] >= memory["traced_mb"]


def test_table_and_errors(small_corpus: Path, tmp_path: Path) -> None:
    """Without --json a Markdown table; a missing corpus is one clear line and exit 1."""
    done = _run(
        "--corpus", str(small_corpus), "--batch-size", "50", "--languages", "tha", "--no-memory"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("| lang | lines | raw | single |")
    assert "\n| tha | 30 |" in done.stdout
    missing = _run("--corpus", str(tmp_path / "nowhere"), "--batch-size", "20")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
