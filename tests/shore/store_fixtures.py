"""Throwaway PostgreSQL servers and store factories for the shore tests.

``PostgresServer`` runs ``initdb`` and ``pg_ctl`` as FIELD-NOTES explain (as user
``postgres`` when we are root, since ``initdb`` refuses root), on 127.0.0.1, a free port
and ``fsync=off`` (a test server: durability is SQLite's and the kernel's business here),
and stops it by ``pg_ctl -m fast stop``. When PostgreSQL is not installed, the tests that
need it FAIL with a message that says how to install it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from common.codebooks import default_codebook
from protocol.batch import Batch, Direction, decode_batch, encode_batch
from protocol.envelopes import Envelope
from protocol.signing import SigningKey
from tests.kit.ports import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
INSTALL_HINT = "run scripts/install-system-deps (as root) to install PostgreSQL 15"


class PostgresMissing(RuntimeError):
    """``initdb`` / ``pg_ctl`` are not installed."""


def find_pg_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``."""
    for directory in PG_BIN_DIRS:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresMissing(f"PostgreSQL's `initdb` is not installed: {INSTALL_HINT}")


class PostgresServer:
    """One PostgreSQL server in ``directory``; ``dsn()`` names a fresh database each call."""

    def __init__(self, directory: Path) -> None:
        self.bin = find_pg_bin()
        self.directory = directory
        self.data = directory / "data"
        self.socket_dir = directory / "sock"
        self.port = free_port()
        self.user = "relay"
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        if self._as_postgres:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        subprocess.run(
            self._cmd(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                self.user,
                "--no-sync",
                "-E",
                "UTF8",
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off "
            "-c max_connections=200"
        )
        subprocess.run(
            self._cmd(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.directory / "log"),
                "-o",
                options,
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
            check=False,
            capture_output=True,
        )

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        name = f"t{next(self._names)}"
        subprocess.run(
            [
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                name,
            ],
            check=True,
            capture_output=True,
        )
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"


# --- batches as a vessel makes them, and downlink batches as the shore signs them ----------


VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
OTHER_KEY = SigningKey.from_seed(bytes(range(1, 33)))
SHORE_KEY = SigningKey.from_seed(bytes(range(2, 34)))
T0 = 1_750_000_000.0


def uplink(
    vessel_id: int,
    batch_seq: int,
    envelopes: Sequence[Envelope],
    *,
    key: SigningKey = VESSEL_KEY,
    minutes: int = int(T0 // 60),
) -> bytes:
    """An uplink batch's bytes, signed by ``key``."""
    return encode_batch(
        envelopes,
        direction=Direction.UPLINK,
        vessel_id=vessel_id,
        batch_seq=batch_seq,
        batch_minutes=minutes,
        signing_key=key,
        codebook=default_codebook(),
    )


def decoded_uplink(data: bytes, key: SigningKey = VESSEL_KEY) -> Batch:
    """An uplink batch decoded as the relay does."""
    return decode_batch(
        data, codebook=default_codebook(), verify_key=key.verify_key, direction=Direction.UPLINK
    )


def shore_encoder(vessel_id: int, now: float = T0) -> Callable[[int, Sequence[Envelope]], bytes]:
    """A ``DownlinkEncoder`` signing with the test shore key."""

    def encode(downlink_seq: int, envelopes: Sequence[Envelope]) -> bytes:
        return encode_batch(
            envelopes,
            direction=Direction.DOWNLINK,
            vessel_id=vessel_id,
            batch_seq=downlink_seq,
            batch_minutes=int(now // 60),
            signing_key=SHORE_KEY,
            codebook=default_codebook(),
        )

    return encode


def decoded_downlink(data: bytes) -> Batch:
    """A downlink batch decoded as the vessel does."""
    return decode_batch(
        data,
        codebook=default_codebook(),
        verify_key=SHORE_KEY.verify_key,
        direction=Direction.DOWNLINK,
    )
