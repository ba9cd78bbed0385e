"""Vessel database: the agent's one SQLite file, its transaction seam and its migrations.

Durability, stated once: every write is one transaction (``BEGIN IMMEDIATE`` ...
``COMMIT``, :meth:`VesselDatabase.transaction`) on a file in WAL mode with
``synchronous=FULL``, so when a write returns, it survives a power cut or a SIGKILL
(``NORMAL`` may lose the last commits; vessels lose power). A repository method that
writes is one such transaction; intake answers a crew member only after it returned. If
the disk is full, read-only or broken, the transaction raises
:class:`~shipboard.errors.OutboxUnavailable` and nothing was stored.

Deleted secrets, and the file at any one moment: ``secure_delete=ON`` overwrites what a row
held, and ``wal_checkpoint(TRUNCATE)`` after **every** commit (and at :meth:`close`) empties
the WAL, where old frames would otherwise keep it (FIELD-NOTES, "SQLite and deleted
secrets": only both together leave nothing in the file, the WAL or the SHM). Emptying it
after every commit, not now and then, also means the WAL never tells which write came
last: a grievance lane write (a report over cover) leaves the files as any other write
does. It costs a few more fsyncs per write, which a vessel's write rate affords.

Concurrency: one connection behind a lock, so the database is synchronous and
thread-safe; async code calls repositories through ``asyncio.to_thread``.

Repositories (:mod:`shipboard.schema` lists them and their tables) are built on the
database, or on another repository of it (:class:`OnDatabase`): each owns its tables and
its named migration set, and reaches the others only through their public methods. A
write that spans two repositories (a downlink batch acknowledges batches and fills the
inbox) is one transaction: the repository that opens it hands the connection to the
other's in-transaction methods, which take it as their first argument (``tx``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from shipboard.errors import OutboxUnavailable
from shipboard.migrations import MigrationSet, SchemaTooNew, applied_migrations, apply_migrations
from shipboard.schema import LEGACY_RECORDS, VESSEL_SCHEMA

__all__ = ["OnDatabase", "Transaction", "VesselDatabase"]

logger = logging.getLogger(__name__)

#: The connection inside a transaction (or a read), handed to in-transaction methods.
Transaction = sqlite3.Connection
T = TypeVar("T")

#: Set on every connection: durability, integrity, waiting, and deleted secrets.
PRAGMAS = (
    "synchronous=FULL",  # a commit survives a power cut (NORMAL may lose the last ones)
    "foreign_keys=ON",
    "busy_timeout=5000",
    "secure_delete=ON",  # deleted rows are overwritten (with wal_checkpoint(TRUNCATE))
)


@runtime_checkable
class OnDatabase(Protocol):
    """Anything on the vessel database: the database itself or one of its repositories.

    A repository is built on one (``CrewRegister(outbox)`` is the crew register of the
    outbox's database)."""

    @property
    def database(self) -> VesselDatabase:
        """The database this stands on."""
        ...


class VesselDatabase:
    """The vessel's SQLite file: connection, transaction seam, migrations, checkpoints."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._lock = threading.RLock()
        self.path = path
        self._ones: dict[str, object] = {}
        self._ones_lock = threading.Lock()

    @property
    def database(self) -> VesselDatabase:
        """Itself (a database is on itself: see :class:`OnDatabase`)."""
        return self

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        extra_pragmas: Sequence[str] = (),
        schema: Sequence[MigrationSet] = VESSEL_SCHEMA,
    ) -> VesselDatabase:
        """Open (or create) the database at ``path`` and run every migration not recorded.

        ``extra_pragmas`` run after the standard ones; tests use them to simulate a full
        disk (``max_page_count``) or a read-only one (``query_only``). Raises
        :class:`OutboxUnavailable` naming the file when it cannot be opened or prepared.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise OutboxUnavailable(f"cannot open the vessel database {path}: {exc}") from exc
        database = cls(connection, path)
        try:
            database._configure(extra_pragmas)
            apply_migrations(connection, schema, LEGACY_RECORDS)
        except sqlite3.Error as exc:
            connection.close()
            raise OutboxUnavailable(f"cannot prepare the vessel database {path}: {exc}") from exc
        except SchemaTooNew as exc:
            connection.close()
            raise OutboxUnavailable(
                f"the vessel database {path} was written by a newer release ({exc}); run "
                "that release or a newer one"
            ) from exc
        except BaseException:
            connection.close()
            raise
        return database

    def _configure(self, extra_pragmas: Sequence[str]) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxUnavailable(
                f"the vessel database {self.path} cannot use WAL mode (got {mode})"
            )
        for pragma in (*PRAGMAS, *extra_pragmas):
            db.execute(f"PRAGMA {pragma}")

    # --- the seam ------------------------------------------------------------------------

    @contextmanager
    def transaction(self, what: str = "store this") -> Iterator[Transaction]:
        """One write transaction: committed on a clean exit, rolled back on any error.

        ``what`` names the write for the error ("cannot save the message"). Storage
        failures become :class:`OutboxUnavailable` (nothing was stored); an integrity
        error (a unique or foreign key refused) passes through for the repository to
        translate.
        """
        with self._lock, self._translate(what):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._empty_wal(what)

    @contextmanager
    def reading(self) -> Iterator[Transaction]:
        """The connection, for reads (under the lock, storage errors translated)."""
        with self._lock, self._translate("read"):
            yield self._db

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            logger.error("vessel database cannot %s: %s", what, exc)
            raise OutboxUnavailable(
                f"the vessel database cannot {what} ({exc}); check free disk space and that "
                f"{self.path.parent} is writable"
            ) from exc

    def one_of(self, name: str, kind: type[T], make: Callable[[], T]) -> T:
        """The one ``kind`` this database has under ``name`` in this process, made by
        ``make`` the first time (thread-safe): for what must exist once per database, like
        the grievance lane's planner (two would each think the other's rows free)."""
        with self._ones_lock:
            found = self._ones.get(name)
            if found is None:
                found = self._ones[name] = make()
        if not isinstance(found, kind):
            raise TypeError(f"{name!r} of {self.path} is a {type(found).__name__}, not a {kind}")
        return found

    # --- upkeep --------------------------------------------------------------------------

    def migrations(self) -> list[tuple[str, str]]:
        """The (set, migration) pairs this file records, in the order they were applied."""
        with self.reading() as db:
            return applied_migrations(db)

    def _empty_wal(self, what: str) -> None:
        """After a commit: the WAL into the file, then truncated. The commit stands even if
        this fails (another process reading the file can hold it back): logged, and the
        next commit tries again."""
        try:
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            logger.warning("vessel database: WAL not emptied after '%s': %s", what, exc)
            return
        if busy is not None and busy[0]:
            logger.info("vessel database: WAL not emptied after '%s' (a reader holds it)", what)

    def checkpoint(self) -> None:
        """Move the WAL into the database file and truncate the WAL to zero bytes (so
        what a deleted row held is gone from the WAL too)."""
        with self._lock, self._translate("checkpoint"):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Checkpoint the WAL (so deleted rows leave no trace there) and close."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("vessel database checkpoint at close failed", exc_info=True)
            self._db.close()
