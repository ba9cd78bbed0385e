"""The power-cut shim (tests/kit/powercut): only what was fsynced survives a power cut.

Each test runs a child Python process with the shim preloaded, lets it write, kills it
(SIGKILL) and cuts the power (restores the durable image), then looks at what is left.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.kit.powercut import PowerCut, build_shim


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shim(tmp_path_factory.mktemp("powercut-shim"))


@pytest.fixture
def power(tmp_path: Path, library: Path) -> PowerCut:
    data = tmp_path / "data"
    data.mkdir()
    return PowerCut(data, tmp_path / "shadow", library)


FSYNC_DIR = """
def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
"""


def run_child(power: PowerCut, code: str) -> None:
    """Run ``code`` (with ``data`` bound to the data dir) under the shim, to its end."""
    program = f"import os, pathlib\ndata = pathlib.Path({str(power.data_dir)!r})\n"
    program += FSYNC_DIR + textwrap.dedent(code)
    subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, **power.environment()},
        check=True,
        timeout=60,
    )


def test_a_file_written_without_fsync_is_gone_after_a_power_cut(power: PowerCut) -> None:
    """A new file, written and closed but never fsynced (nor its directory): gone."""
    power.snapshot()
    run_child(power, "(data / 'note.txt').write_text('not synced')")
    assert (power.data_dir / "note.txt").read_text() == "not synced"  # the page cache has it

    report = power.cut()

    assert not (power.data_dir / "note.txt").exists()
    assert report.files_vanished == 1
    assert report.bytes_lost == len("not synced")


def test_a_file_and_its_directory_fsynced_survive_a_power_cut(power: PowerCut) -> None:
    """Written, fsynced, directory fsynced: the file is there, byte for byte."""
    power.snapshot()
    run_child(
        power,
        """
        with open(data / 'note.txt', 'wb') as f:
            f.write(b'synced' * 1000)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(data)
        """,
    )
    report = power.cut()
    assert (power.data_dir / "note.txt").read_bytes() == b"synced" * 1000
    assert report.files_vanished == report.files_rolled_back == 0


def test_a_new_file_fsynced_without_its_directory_vanishes(power: PowerCut) -> None:
    """The model is POSIX-strict: a new name is durable only after the directory's fsync."""
    power.snapshot()
    run_child(
        power,
        """
        with open(data / 'note.txt', 'wb') as f:
            f.write(b'data synced, name not')
            f.flush()
            os.fsync(f.fileno())
        """,
    )
    power.cut()
    assert not (power.data_dir / "note.txt").exists()


def test_a_durable_name_whose_data_was_never_fsynced_comes_back_empty(power: PowerCut) -> None:
    power.snapshot()
    run_child(power, "(data / 'note.txt').write_text('lost')\nfsync_dir(data)")
    power.cut()
    assert (power.data_dir / "note.txt").read_bytes() == b""


def test_unsynced_overwrites_roll_back_and_synced_ranges_stay(power: PowerCut) -> None:
    """Of two pwrites to a durable file, the one fsynced stays, the later one rolls back;
    a file appended to without fsync goes back to its durable length."""
    (power.data_dir / "pages").write_bytes(b"a" * 8192)
    (power.data_dir / "log").write_bytes(b"line 1\n")
    power.snapshot()
    run_child(
        power,
        """
        fd = os.open(data / 'pages', os.O_RDWR)
        os.pwrite(fd, b'b' * 4096, 0)
        os.fdatasync(fd)
        os.pwrite(fd, b'c' * 4096, 4096)
        os.close(fd)
        with open(data / 'log', 'ab') as f:
            f.write(b'line 2\\n')
        """,
    )
    assert (power.data_dir / "pages").read_bytes() == b"b" * 4096 + b"c" * 4096
    report = power.cut()
    assert (power.data_dir / "pages").read_bytes() == b"b" * 4096 + b"a" * 4096
    assert (power.data_dir / "log").read_bytes() == b"line 1\n"
    assert report.files_rolled_back == 2


@pytest.mark.parametrize("sync_dir", [True, False], ids=["dir-synced", "dir-not-synced"])
def test_atomic_replace_is_durable_only_after_the_directory_fsync(
    power: PowerCut, sync_dir: bool
) -> None:
    """Write a temporary file, fsync, rename over the old one: without the directory's
    fsync the old version comes back (the temporary file's name was never durable)."""
    (power.data_dir / "key").write_bytes(b"old")
    power.snapshot()
    run_child(
        power,
        f"""
        with open(data / 'key.tmp', 'wb') as f:
            f.write(b'new')
            f.flush()
            os.fsync(f.fileno())
        os.replace(data / 'key.tmp', data / 'key')
        if {sync_dir}:
            fsync_dir(data)
        """,
    )
    power.cut()
    assert (power.data_dir / "key").read_bytes() == (b"new" if sync_dir else b"old")
    assert sorted(p.name for p in power.data_dir.iterdir()) == ["key"]


def test_a_subdirectory_and_its_files_follow_the_same_rules(power: PowerCut) -> None:
    power.snapshot()
    run_child(
        power,
        """
        (data / 'keys').mkdir()
        fsync_dir(data)
        with open(data / 'keys' / 'a', 'wb') as f:
            f.write(b'kept')
            f.flush()
            os.fsync(f.fileno())
        (data / 'keys' / 'b').write_bytes(b'lost')
        fsync_dir(data / 'keys')
        (data / 'keys' / 'c').write_bytes(b'never named')
        """,
    )
    power.cut()
    assert (power.data_dir / "keys" / "a").read_bytes() == b"kept"
    assert (power.data_dir / "keys" / "b").read_bytes() == b""
    assert not (power.data_dir / "keys" / "c").exists()


WRITER = """
import sqlite3, sys
db = sqlite3.connect(data / 'outbox.sqlite3', isolation_level=None)
db.execute('PRAGMA journal_mode=WAL')
db.execute('PRAGMA synchronous=' + sys.argv[1])
first = int(sys.argv[2])
for n in range(first, first + int(sys.argv[3])):
    db.execute('BEGIN IMMEDIATE')
    db.execute('INSERT INTO rows (n, text) VALUES (?, ?)', (n, 'x' * (n % 700)))
    db.execute('COMMIT')
    print(n, flush=True)
sys.stdin.read()  # wait to be killed
"""


def write_then_cut(power: PowerCut, synchronous: str, first: int, count: int) -> list[int]:
    """Commit rows first..first+count-1 in a child (stopping it with SIGKILL after
    ``count`` commits were reported), cut the power, and return the rows reported committed."""
    program = f"import os, pathlib\ndata = pathlib.Path({str(power.data_dir)!r})\n" + WRITER
    committed: list[int] = []
    with subprocess.Popen(
        [sys.executable, "-c", program, synchronous, str(first), str(count)],
        env={**os.environ, **power.environment()},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            committed.append(int(line))
            if len(committed) == count:
                break
        child.send_signal(signal.SIGKILL)
        child.wait()
    power.cut()
    return committed


def create_outbox(power: PowerCut) -> None:
    db = sqlite3.connect(power.data_dir / "outbox.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE rows (n INTEGER PRIMARY KEY, text TEXT NOT NULL)")
    db.commit()
    db.close()


def rows_and_integrity(power: PowerCut) -> tuple[set[int], str]:
    """Read-only, so that the next writer starts from exactly what the power cut left (a
    read-write close here would checkpoint outside the shim's view)."""
    path = power.data_dir / "outbox.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = {int(n) for (n,) in db.execute("SELECT n FROM rows")}
        return rows, str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def test_sqlite_wal_synchronous_full_keeps_every_commit_across_power_cuts(
    power: PowerCut,
) -> None:
    """WAL with synchronous=FULL, three power cuts, each right after the last commit
    (2,500 rows in all, enough to pass automatic checkpoints): every row reported committed
    is there, and the database passes PRAGMA integrity_check after each cut."""
    create_outbox(power)
    power.snapshot()
    committed: set[int] = set()
    for first, count in ((1, 1200), (1201, 900), (2101, 400)):
        committed.update(write_then_cut(power, "FULL", first, count))
        rows, integrity = rows_and_integrity(power)
        assert integrity == "ok"
        assert committed <= rows, f"lost after a power cut: {sorted(committed - rows)[:10]}"
    assert len(committed) == 2500


@pytest.mark.parametrize("synchronous", ["OFF", "NORMAL"])
def test_sqlite_without_full_sync_loses_recent_commits(power: PowerCut, synchronous: str) -> None:
    """The same writer with synchronous=OFF or NORMAL (no checkpoint reached): commits the
    writer was told about are gone after the power cut, so the shim does bite."""
    create_outbox(power)
    power.snapshot()
    committed = write_then_cut(power, synchronous, 1, 200)
    rows, integrity = rows_and_integrity(power)
    assert integrity == "ok"
    assert len(committed) == 200
    assert set(committed) - rows, "every commit survived: the shim discarded nothing"


def test_file_modes_survive_a_power_cut(power: PowerCut) -> None:
    """A key file is refused when others can read it: its 0600 mode must come back, both
    for a file of the snapshot and for one made and fsynced under the shim."""
    (power.data_dir / "vessel.key").write_bytes(b"secret")
    (power.data_dir / "vessel.key").chmod(0o600)
    power.snapshot()
    run_child(
        power,
        """
        fd = os.open(data / 'reply.key', os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b'other secret')
        os.fsync(fd)
        os.close(fd)
        fsync_dir(data)
        """,
    )
    power.cut()
    for name in ("vessel.key", "reply.key"):
        assert (power.data_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert (power.data_dir / "reply.key").read_bytes() == b"other secret"
