"""benchmarks/transparency.py keeps its --json contract, and what it builds is a real log.

The figures are the benchmark's to measure; this runs it small (two sizes, one of them
past the second tile level) and checks the keys of every size, that the figures are
measured (positive), and that the vessel-month report made on the bulk-built log verifies
offline against the shore key, so the tiles it builds directly are the tiles the relay
would have (a wrong tile would break an inclusion proof).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from protocol.compliance import verify_report

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.transparency import SHORE_KEY, measure_size  # noqa: E402

KEYS = {
    "leaves",
    "append_per_s",
    "root_ms",
    "inclusion_proof_ms",
    "consistency_proof_ms",
    "sign_head_ms",
    "vessel_month_report_ms",
}


def test_json_contract_holds_for_every_size(tmp_path: Path) -> None:
    """`--json` prints {"sizes": [...]} with exactly the contract's keys for each size asked,
    in order, every figure measured."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "transparency.py"),
            "--json",
            "--sizes",
            "300,70000",
            "--samples",
            "3",
            "--appends",
            "5",
            "--vessel-batches",
            "40",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    document = json.loads(out.stdout)
    assert list(document) == ["sizes"]
    assert [entry["leaves"] for entry in document["sizes"]] == [300, 70_000]
    for entry in document["sizes"]:
        assert set(entry) == KEYS
        assert all(entry[key] > 0 for key in KEYS)
    assert list(tmp_path.iterdir()) == []  # the stores are removed afterwards


async def test_the_bulk_built_log_proves_the_vessels_leaves(tmp_path: Path) -> None:
    """On a log of 70,000 leaves built directly as tiles, the vessel's month report (its
    leaves proven against a signed checkpoint) verifies against the shore key."""
    result, report = await measure_size(70_000, tmp_path, batches=40, samples=2, appends=3)
    assert result.leaves == 70_000
    assert len(report.leaves) == 40
    assert report.head.head.tree_size == 70_000
    assert verify_report(report, shore_key=SHORE_KEY.verify_key.key) == []
