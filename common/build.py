"""What build of vessel-relay is running: the installed version and, from a git checkout,
the commit (for ``vessel_relay_build_info`` and ``--version``)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: The source tree this package runs from (a git checkout in development and CI).
SOURCE_ROOT = Path(__file__).resolve().parents[1]
#: The revision label when no git checkout tells it (an installed wheel).
UNKNOWN_REVISION = "unknown"


def installed_version() -> str:
    """The installed distribution's version (``0+unknown`` when run from an uninstalled tree)."""
    try:
        return version("vessel-relay")
    except PackageNotFoundError:
        return "0+unknown"


@functools.cache
def source_revision(root: Path = SOURCE_ROOT) -> str:
    """The commit (12 hex digits, ``+dirty`` with uncommitted changes) of the git checkout
    this package runs from, or ``unknown`` when it is not one (an installed wheel) or git
    is not installed. Asked once per process."""
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return UNKNOWN_REVISION
    try:
        head = subprocess.run(
            [git, "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            [git, "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_REVISION
    if not head:
        return UNKNOWN_REVISION
    return f"{head}+dirty" if dirty else head
