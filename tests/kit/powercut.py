"""Simulated power loss: only what was fsynced survives (see ``powercut/powercut.c``).

The shim is compiled with the machine's ``gcc`` at test time and preloaded into the process
under test (``LD_PRELOAD``). While that process runs, the shim keeps a *durable image* of
one directory in a shadow directory: file contents as of their last ``fsync``, and each
directory's listing as of its last ``fsync``. :meth:`PowerCut.cut`, called once the process
is dead (SIGKILL), replaces the directory with that image: that is the power cut.

Typical use::

    cut = PowerCut(data_dir, tmp_path / "shadow", build_shim(tmp_path / "shim"))
    cut.snapshot()                         # what is there now counts as durable
    child = subprocess.Popen(argv, env={**os.environ, **cut.environment()})
    ...
    child.kill(); child.wait()
    report = cut.cut()                     # unsynced writes and names are gone
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "powercut" / "powercut.c"
XATTR = "user.powercut"
ROOT_LISTING = "@"

_build_lock = threading.Lock()


class ShimBuildError(RuntimeError):
    """The shim did not compile: install gcc (``apt-get install gcc``) or read its output."""


def build_shim(directory: Path) -> Path:
    """Compile ``powercut.c`` into ``directory/powercut.so`` (once) and return its path."""
    library = directory / "powercut.so"
    with _build_lock:
        if library.exists() and library.stat().st_mtime >= SOURCE.stat().st_mtime:
            return library
        directory.mkdir(parents=True, exist_ok=True)
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            raise ShimBuildError("no C compiler found: install gcc to simulate power cuts")
        temporary = directory / f".powercut-{uuid.uuid4().hex}.so"
        result = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", str(temporary), str(SOURCE), "-ldl"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ShimBuildError(f"gcc could not build the power-cut shim:\n{result.stderr}")
        os.replace(temporary, library)
        return library


@dataclass(frozen=True, slots=True)
class CutReport:
    """What one power cut took away."""

    files_vanished: int
    files_rolled_back: int
    bytes_lost: int

    def __str__(self) -> str:
        return (
            f"{self.files_vanished} files vanished, {self.files_rolled_back} rolled back, "
            f"{self.bytes_lost} bytes differ"
        )


def _listing_name(relative: str) -> str:
    return ROOT_LISTING if relative in ("", ".") else ROOT_LISTING + relative.replace("/", "%")


def _file_id(path: Path) -> str:
    """The shim's id of a file, set now if it has none (same scheme as the shim)."""
    try:
        return os.getxattr(path, XATTR).decode()
    except OSError:
        identifier = f"kit-{uuid.uuid4().hex}"
        os.setxattr(path, XATTR, identifier.encode())
        return identifier


def _contents(directory: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(directory))] = path.read_bytes()
    return found


@dataclass
class PowerCut:
    """The durable image of ``data_dir`` kept by the shim in ``shadow_dir``."""

    data_dir: Path
    shadow_dir: Path
    library: Path
    cuts: int = 0

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.shadow_dir = self.shadow_dir.resolve()
        if self.shadow_dir.is_relative_to(self.data_dir):
            raise ValueError(f"the shadow {self.shadow_dir} must be outside {self.data_dir}")

    def environment(self) -> dict[str, str]:
        """Variables that make a child process keep the durable image."""
        preload = os.environ.get("LD_PRELOAD", "")
        return {
            "LD_PRELOAD": f"{self.library} {preload}".strip(),
            "POWERCUT_DIR": str(self.data_dir),
            "POWERCUT_SHADOW": str(self.shadow_dir),
        }

    def snapshot(self) -> None:
        """Take everything in ``data_dir`` now as durable (call with no writer running)."""
        if self.shadow_dir.exists():
            shutil.rmtree(self.shadow_dir)
        (self.shadow_dir / "data").mkdir(parents=True)
        (self.shadow_dir / "dirs").mkdir()
        for directory, subdirectories, names in os.walk(self.data_dir):
            here = Path(directory)
            lines = [
                f"d\t-\t{(here / name).stat().st_mode & 0o7777:o}\t{name}\n"
                for name in sorted(subdirectories)
            ]
            for name in sorted(names):
                path = here / name
                if path.is_symlink() or not path.is_file():
                    continue
                identifier = _file_id(path)
                shutil.copyfile(path, self.shadow_dir / "data" / identifier)
                shutil.copymode(path, self.shadow_dir / "data" / identifier)
                mode = path.stat().st_mode & 0o7777
                lines.append(f"f\t{identifier}\t{mode:o}\t{name}\n")
            relative = str(here.relative_to(self.data_dir))
            listing = self.shadow_dir / "dirs" / _listing_name(relative)
            listing.write_text("".join(lines), encoding="utf-8")

    def cut(self) -> CutReport:
        """Replace ``data_dir`` by its durable image. The writer must be dead (SIGKILL)."""
        before = _contents(self.data_dir)
        for entry in self.data_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self._restore(".")
        after = _contents(self.data_dir)
        self.cuts += 1
        vanished = [name for name in before if name not in after]
        rolled_back = [name for name in before if name in after and after[name] != before[name]]
        lost = sum(len(before[name]) for name in vanished)
        lost += sum(_difference(before[name], after[name]) for name in rolled_back)
        return CutReport(len(vanished), len(rolled_back), lost)

    def _restore(self, relative: str) -> None:
        directory = self.data_dir / relative
        listing = self.shadow_dir / "dirs" / _listing_name(relative)
        if not listing.exists():
            return  # a directory never fsynced since it was made: its names are not durable
        for line in listing.read_text(encoding="utf-8").splitlines():
            kind, identifier, mode, name = line.split("\t", 3)
            target = directory / name
            if kind == "d":
                target.mkdir(mode=int(mode, 8))
                self._restore(str(Path(relative) / name))
                continue
            durable = self.shadow_dir / "data" / identifier
            if durable.exists():
                shutil.copyfile(durable, target)
                shutil.copymode(durable, target)  # the mode at its last fsync
            else:
                target.touch()  # named durably, data never fsynced: an empty file
                target.chmod(int(mode, 8))
            os.setxattr(target, XATTR, identifier.encode())


def _difference(old: bytes, new: bytes) -> int:
    """Bytes that differ between two versions of a file (a length change counts in full)."""
    common = min(len(old), len(new))
    changed = sum(1 for a, b in zip(old[:common], new[:common], strict=True) if a != b)
    return changed + abs(len(old) - len(new))
