"""benchmarks/crew_page.py measures the crew page's first load in a real browser.

The figures are the benchmark's to report; this runs it small (two pages, two languages)
and checks its JSON contract, ``{"pages": {PAGE: {LANG: {"cold_bytes", "warm_bytes",
"requests"}}}}`` with ISO 639-3 language codes, and that the figures hang together: a
warm load moves fewer bytes than a cold one, and a page in Burmese fetches more than the
same page in English (its script's font).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.crew_page import PAGES, print_table  # noqa: E402

KEYS = {"cold_bytes", "warm_bytes", "requests"}


def test_the_json_report_keeps_its_contract(capsys: object) -> None:
    """Home and report in Burmese and English, measured in headless Chromium: every page
    and language has exactly its three figures, as whole numbers; the table prints."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "crew_page.py"),
            "--json",
            "--page",
            "home",
            "--page",
            "report",
            "--lang",
            "mya",
            "--lang",
            "eng",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert set(report) == {"pages"}
    assert set(report["pages"]) == {"home", "report"}
    for by_lang in report["pages"].values():
        assert set(by_lang) == {"mya", "eng"}
        for figures in by_lang.values():
            assert set(figures) == KEYS
            assert all(isinstance(v, int) for v in figures.values())
            assert 0 < figures["warm_bytes"] < figures["cold_bytes"]
            assert figures["requests"] >= 3  # the page, its style sheet, a font or icon
    for page in ("home", "report"):
        burmese, english = report["pages"][page]["mya"], report["pages"][page]["eng"]
        assert burmese["cold_bytes"] > english["cold_bytes"] + 10_000  # the Myanmar font
    print_table(report)


def test_the_issue_pages_are_measured() -> None:
    """The benchmark's pages include the four the issue names."""
    assert {"home", "write", "inbox", "report"} <= set(PAGES)
