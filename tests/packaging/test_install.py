"""What a distributor and each side install: the wheel carries its licences, each extra
pulls only what its side runs, and the hash-locked requirements install in a clean venv.

These build real virtual environments with uv (scripts/setup-venv installs it); with uv's
cache warm (as after scripts/setup-venv) each takes a few seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = sorted(ROOT.glob("requirements-*.lock"))
#: The packages only the shore (reports, PostgreSQL) or the demo use.
NOT_ON_A_VESSEL = {"weasyprint", "asyncpg", "amqtt", "segno", "aiosmtplib", "httpx"}


def _uv() -> str:
    found = shutil.which("uv")
    assert found, "uv is not installed: run scripts/setup-venv (it installs uv)"
    return found


def _run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def _venv(path: Path) -> Path:
    made = _run(_uv(), "venv", "--quiet", "-p", "python3.11", path)
    assert made.returncode == 0, made.stderr
    return path / "bin" / "python"


def _installed(python: Path) -> set[str]:
    listing = _run(_uv(), "pip", "list", "-p", python, "--format", "freeze")
    assert listing.returncode == 0, listing.stderr
    return {line.split("==")[0].lower() for line in listing.stdout.splitlines() if "==" in line}


def test_the_wheel_carries_every_licence_and_a_true_expression(tmp_path: Path) -> None:
    """A distributor builds the wheel: its metadata names the SPDX expression of what it
    ships, and .dist-info/licenses holds the Apache text, NOTICE, the CC texts of the
    models, the fonts' OFL and libsodium.js's ISC notice."""
    built = _run(_uv(), "build", "--wheel", "--quiet", "-o", tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("vessel_relay-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        info = metadata_name.rsplit("/", 1)[0]
        licences = {n[len(info) + len("/licenses/") :] for n in names if "/licenses/" in n}
        fonts = archive.read(f"{info}/licenses/shipboard/web/static/fonts/NOTO-LICENSE.txt")
        assert b"licensed under the SIL Open Font License" in fonts
        assert b"PERMISSION & CONDITIONS" in fonts  # the OFL's full text, not a mention
        assert "Apache License" in archive.read(f"{info}/licenses/LICENSE").decode()
    assert metadata["License-Expression"] == (
        "Apache-2.0 AND OFL-1.1 AND ISC AND CC-BY-4.0 AND CC-BY-SA-4.0"
    )
    assert licences == {
        "LICENSE",
        "NOTICE",
        "LICENSES/CC-BY-4.0.txt",
        "LICENSES/CC-BY-SA-4.0.txt",
        "shipboard/web/static/fonts/NOTO-LICENSE.txt",
        "shipboard/web/static/sodium/LICENSE",
    }
    assert set(metadata.get_all("License-File") or []) == licences
    # what the licences cover is in the wheel
    assert any(n.startswith("protocol/data/zstd-shn") for n in names)
    assert any(n.startswith("shipboard/web/static/fonts/") and n.endswith(".woff2") for n in names)
    assert any(n.startswith("shipboard/web/static/sodium/libsodium") for n in names)
    assert not any(n.startswith("corpus/") for n in names)


def test_a_vessel_install_has_no_shore_or_demo_libraries(tmp_path: Path) -> None:
    """pip install 'vessel-relay[ship]' on the vessel's computer: 'ship --help' works, no
    WeasyPrint, asyncpg or amqtt is there, and running the relay names the extra it would need."""
    python = _venv(tmp_path / "ship")
    installed = _run(
        _uv(), "pip", "install", "--quiet", "-p", python, f"{ROOT}[ship]",
        "-c", ROOT / "requirements-dev.lock",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert not _installed(python) & NOT_ON_A_VESSEL
    command = python.parent / "vessel-relay"
    ship = _run(command, "ship", "--help", cwd=tmp_path)
    assert ship.returncode == 0, ship.stderr
    assert "The shipboard agent" in ship.stdout
    # The shore's help may list its commands; running the relay needs the shore extra.
    made = _run(command, "shore", "init", "--data", tmp_path / "relay", cwd=tmp_path)
    if made.returncode == 0:
        shore = _run(
            command, "shore", "run", "--config", tmp_path / "relay" / "relay.toml", cwd=tmp_path
        )
    else:
        shore = made
    assert shore.returncode == 78, shore.stdout + shore.stderr
    assert "pip install 'vessel-relay[shore]'" in shore.stderr


def test_a_relay_install_runs_the_shore_commands(tmp_path: Path) -> None:
    """pip install 'vessel-relay[shore]' on the relay: 'shore --help' lists its commands,
    and no demo broker (amqtt) comes with it."""
    python = _venv(tmp_path / "shore")
    installed = _run(
        _uv(), "pip", "install", "--quiet", "-p", python, f"{ROOT}[shore]",
        "-c", ROOT / "requirements-dev.lock",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert "amqtt" not in _installed(python)
    shore = _run(python.parent / "vessel-relay", "shore", "--help", cwd=tmp_path)
    assert shore.returncode == 0, shore.stderr
    assert "fleet-report" in shore.stdout


def test_the_locks_name_no_package_index() -> None:
    """The lock files pin versions with hashes and name no index host or URL."""
    assert [lock.name for lock in LOCKS] == [
        "requirements-dev.lock",
        "requirements-ship.lock",
        "requirements-shore.lock",
        "requirements-union.lock",
    ]
    for lock in LOCKS:
        text = lock.read_text(encoding="utf-8")
        assert "://" not in text, lock.name
        assert not re.search(r"^\s*--(index-url|extra-index-url|find-links)", text, re.M)
        pins = re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", text, re.M)
        assert len(pins) > 30
        assert text.count("--hash=sha256:") >= len(pins)


@pytest.mark.parametrize("lock", ["requirements-dev.lock", "requirements-ship.lock"])
def test_a_lock_installs_with_required_hashes_in_a_clean_venv(tmp_path: Path, lock: str) -> None:
    """CI and a deployment install a lock with --require-hashes into an empty venv, then
    the project without dependencies; the console script runs."""
    python = _venv(tmp_path / "venv")
    pinned = _run(
        _uv(), "pip", "install", "--quiet", "-p", python, "--require-hashes", "-r", ROOT / lock
    )
    assert pinned.returncode == 0, pinned.stderr
    project = _run(_uv(), "pip", "install", "--quiet", "-p", python, "--no-deps", ROOT)
    assert project.returncode == 0, project.stderr
    version = _run(python.parent / "vessel-relay", "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("vessel-relay ")


def test_the_relay_image_installs_the_shore_lock_and_has_the_licences() -> None:
    """deploy/compose/Dockerfile installs requirements-shore.lock with hashes checked, then
    the project without dependencies, and copies every licence file the build needs
    (hatchling refuses to build a wheel whose license-files are missing)."""
    import tomllib

    dockerfile = (ROOT / "deploy" / "compose" / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install --no-cache-dir --require-hashes -r requirements-shore.lock" in dockerfile
    assert "pip install --no-cache-dir --no-deps ." in dockerfile
    sources: set[str] = set()
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        *copied, _target = line.split()
        sources.update(item.rstrip("/") for item in copied)
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    needed = [*project["license-files"], "requirements-shore.lock", project["readme"]]
    missing = [
        path
        for path in needed
        if not any(path == source or path.startswith(source + "/") for source in sources)
    ]
    assert missing == []
