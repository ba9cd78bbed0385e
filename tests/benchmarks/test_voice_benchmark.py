"""benchmarks/voice.py runs small and prints the issue's JSON contract, consistent with itself.

Timings are the benchmark's to measure, never asserted; the contract's keys, the default
mode's rule (the best ESTOI within 1,600 bytes per 10 s) and the byte arithmetic are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.voice import VoiceMode
from tests.kit.corpus import CORPUS
from tests.kit.speech import need_espeak

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_KEYS = ["wire_bytes_per_10s", "estoi", "encode_x_realtime", "decode_x_realtime"]
MODES = ["3200", "1400", "1200", "700C"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "voice.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two Thai and two English lines, and Khmer (which espeak-ng cannot say)."""
    corpus = tmp_path_factory.mktemp("corpus")
    for code in ("tha", "eng", "khm"):
        lines = (CORPUS / f"{code}.dev.txt").read_text(encoding="utf-8").split("\n")[:4]
        (corpus / f"{code}.dev.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus


@pytest.fixture(scope="module")
def report(small_corpus: Path) -> dict[str, object]:
    """The benchmark's JSON on the small corpus, two utterances a language, four modes."""
    need_espeak()
    done = _run(
        "--corpus",
        str(small_corpus),
        "--per-language",
        "2",
        "--messages",
        "2",
        "--modes",
        ",".join(MODES),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    parsed = json.loads(done.stdout)
    assert isinstance(parsed, dict)
    return parsed


def test_the_json_keeps_the_issues_contract(report: dict[str, object]) -> None:
    """Exactly ``default_mode`` and ``modes``; each mode has exactly the four figures."""
    assert list(report) == ["default_mode", "modes"]
    modes = report["modes"]
    assert isinstance(modes, dict)
    assert list(modes) == MODES
    for figures in modes.values():
        assert list(figures) == CONTRACT_KEYS
        assert isinstance(figures["wire_bytes_per_10s"], int)
        assert 0.0 < figures["estoi"] <= 1.0
        assert figures["encode_x_realtime"] > 0
        assert figures["decode_x_realtime"] > 0


def test_wire_bytes_are_the_frames_of_10_s_and_a_small_envelope(
    report: dict[str, object],
) -> None:
    """10 s in each mode costs its Codec2 frames plus under 32 bytes of envelope."""
    modes = report["modes"]
    assert isinstance(modes, dict)
    for label, figures in modes.items():
        mode = VoiceMode.from_label(label)
        frames_bytes = 10_000 // mode.frame_ms * mode.bytes_per_frame
        assert frames_bytes < figures["wire_bytes_per_10s"] < frames_bytes + 32


def test_the_default_is_the_most_intelligible_mode_within_1600_bytes(
    report: dict[str, object],
) -> None:
    """The default sends 10 s in at most 1,600 bytes, and no mode that also does scores
    a better ESTOI."""
    modes = report["modes"]
    assert isinstance(modes, dict)
    default = report["default_mode"]
    assert modes[default]["wire_bytes_per_10s"] <= 1600
    fitting = [f for f in modes.values() if f["wire_bytes_per_10s"] <= 1600]
    assert modes[default]["estoi"] == max(f["estoi"] for f in fitting)
    assert default in ("1200", "700C")  # 1400 and 3200 do not fit 1,600 bytes


def test_the_table_names_the_languages_it_could_not_say(small_corpus: Path) -> None:
    """The table's lines name the utterances per language and the languages without a voice."""
    need_espeak()
    done = _run(
        "--corpus", str(small_corpus), "--per-language", "1", "--messages", "1", "--modes", "700C"
    )
    assert done.returncode == 0, done.stderr
    assert "| 700C (default) |" in done.stdout
    assert "Utterances: eng 1, tha 1" in done.stdout
    assert "No espeak-ng voice: khm, lao, tgl." in done.stdout
    # mode 450 is a reference row when Debian's c2enc is there (scripts/install-system-deps)
    has_c2enc = shutil.which("c2enc") is not None
    assert ("| 450 (c2enc; not sendable) | 779 |" in done.stdout) == has_c2enc


def test_a_missing_corpus_is_one_line_on_stderr(tmp_path: Path) -> None:
    """A corpus directory without usable files: exit 1 and a sentence, no traceback."""
    need_espeak()
    done = _run("--corpus", str(tmp_path), "--json")
    assert done.returncode == 1
    assert done.stderr.startswith("voice benchmark: no language in")
    assert "Traceback" not in done.stderr
