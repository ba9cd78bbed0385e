"""The build a relay reports (``vessel_relay_build_info``): version and git revision."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from prometheus_client import generate_latest

from common.build import SOURCE_ROOT, UNKNOWN_REVISION, installed_version, source_revision
from shore.metrics import RelayMetrics


def test_a_tree_that_is_no_git_checkout_reports_an_unknown_revision(tmp_path: Path) -> None:
    """An installed wheel has no .git: its revision is "unknown", never a guess."""
    assert source_revision(tmp_path) == UNKNOWN_REVISION


def test_a_git_checkout_reports_its_commit() -> None:
    """Run from a git checkout (development, CI), the relay names the commit it runs."""
    git = shutil.which("git")
    revision = source_revision(SOURCE_ROOT)
    if git is None or not (SOURCE_ROOT / ".git").exists():
        assert revision == UNKNOWN_REVISION
        return
    head = subprocess.run(
        [git, "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", revision)
    assert head.startswith(revision.removesuffix("+dirty"))


def test_build_info_is_exported_with_version_and_revision() -> None:
    """An operator's Prometheus sees which version and commit each worker runs."""
    text = generate_latest(RelayMetrics(revision="0123456789ab").registry).decode()
    line = f'vessel_relay_build_info{{revision="0123456789ab",version="{installed_version()}"}} 1.0'
    assert line in text.splitlines()
