"""The embedded backend: SQLite in WAL mode, ``synchronous=FULL``, on its own thread.

A commit here is a promise to a vessel (its ``BatchAck`` follows), so the database runs in
WAL mode with ``synchronous=FULL`` (with ``NORMAL`` a power cut may roll back the last
commits), ``foreign_keys`` on and a ``busy_timeout``. Every transaction is ``BEGIN
IMMEDIATE``, so writers are serialised and a transaction never fails half-way for a lock.

sqlite3 calls block, so they run on one dedicated thread (:class:`_DatabaseThread`, the
``asyncio.to_thread`` idea with a fixed thread): the event loop never waits on the disk,
and statements of one transaction run in order even when the awaiting task is cancelled.
The thread takes calls from a queue and hands each result back to the loop directly, a
third less CPU per statement than an executor's future chain (issue 22's profile).

:class:`SqliteDatabase` is the connection; :class:`SqliteStore` is the relay's store
(:class:`~shore.store.relay_store.RelayStore`) opened on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from shore.store.database import Dialect, Row
from shore.store.deliveries import DEFAULT_DEADLINE_S, DEFAULT_LEASE_S, MessageTtl
from shore.store.errors import StoreUnavailable
from shore.store.relay_store import PhraseLookup, RelayStore

T = TypeVar("T")

SQLITE = Dialect(
    name="sqlite",
    int_type="INTEGER",
    real_type="REAL",
    blob_type="BLOB",
    serial_pk="INTEGER PRIMARY KEY AUTOINCREMENT",
    for_update="",
    skip_locked="",
    table_exists="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1",
)

_PARAM = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    """``$1`` parameters (asyncpg's) as ``?1`` (SQLite's numbered form)."""
    return _PARAM.sub(r"?\1", sql)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Give a call's outcome to its awaiting future (on the loop; nobody waits if it was
    cancelled: the call ran all the same, in order)."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _DatabaseThread:
    """One thread that runs calls in the order given; :meth:`call` returns an awaitable."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, Callable[[], Any], asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()
        # A daemon: a store never closed must not keep the process alive. A COMMIT cut
        # short by the process ending is a crash, which SQLite's journal makes safe.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``call``; the future completes with its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, call, future))
        return future

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            loop, call, future = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting task, which raises it
                error = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, error)
            del item, call, future, result, error

    def stop(self) -> None:
        """Let the calls queued so far finish, then end the thread."""
        self._calls.put(None)
        self._thread.join()


class _SqliteTx:
    """One transaction's statements. A statement that fails because the database failed
    (:func:`is_storage_failure`) raises :class:`StoreUnavailable`; one that SQLite refuses
    for what it writes (a constraint, a value) raises sqlite3's own error, and so does any
    error of our code between statements: those are not the database's fault."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    async def _statement(self, call: Callable[[], T]) -> T:
        try:
            return await self._database.run(call)
        except sqlite3.Error as exc:
            if is_storage_failure(exc):
                raise StoreUnavailable(
                    f"the store {self._database.path} failed mid-transaction, nothing was "
                    f"changed: {exc}; check free disk space and the database file"
                ) from exc
            raise

    async def execute(self, sql: str, *args: Any) -> None:
        db = self._database.connection
        await self._statement(lambda: db.execute(_sqlite_sql(sql), args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            db = self._database.connection
            await self._statement(lambda: db.executemany(_sqlite_sql(sql), rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        db = self._database.connection
        return await self._statement(lambda: db.execute(_sqlite_sql(sql), args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        db = self._database.connection
        row: Row | None = await self._statement(
            lambda: db.execute(_sqlite_sql(sql), args).fetchone()
        )
        return row


class SqliteDatabase:
    """One SQLite file; open with ``await SqliteDatabase.open(path)``."""

    dialect = SQLITE

    def __init__(self, connection: sqlite3.Connection, path: Path, thread: _DatabaseThread):
        #: The sqlite3 connection: use it only inside :meth:`run` (its own thread).
        self.connection = connection
        self.path = path
        self._thread = thread
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 10_000) -> SqliteDatabase:
        """Open (or create) the database file at ``path``: WAL, ``synchronous=FULL``."""
        thread = _DatabaseThread("shore-sqlite")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1e3
            )
            try:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreUnavailable(f"the store {path} cannot use WAL mode (got {mode})")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
                # Deleted or overwritten content is zeroed in its page and freed pages are
                # zeroed too (retention purges, issue 23); with the TRUNCATE checkpoint of
                # erase_freed nothing of it stays in the file or its WAL.
                db.execute("PRAGMA secure_delete=ON")
                db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            except BaseException:
                db.close()
                raise
            return db

        try:
            connection = await thread.call(connect)
        except (OSError, sqlite3.Error) as exc:
            thread.stop()
            raise StoreUnavailable(f"cannot open the store {path}: {exc}") from exc
        except BaseException:
            thread.stop()
            raise
        return cls(connection, path, thread)

    async def run(self, call: Callable[[], T]) -> T:
        """Run ``call`` (which may use :attr:`connection`) on the database's thread."""
        return await self._thread.call(call)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back if the block raises."""
        async with self._lock:
            db = self.connection
            # Each call is queued on the thread at once (not from a task that may start
            # late), so a rollback always runs right behind what it undoes.
            try:
                await self._thread.call(lambda: db.execute("BEGIN IMMEDIATE"))
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot write the store {self.path}: {exc}") from exc
            except BaseException:
                # cancelled while the BEGIN waited or ran: the thread runs it all the same,
                # and a connection left inside it would refuse every later transaction
                self._thread.call(lambda: _rollback_quietly(db))
                raise
            try:
                yield _SqliteTx(self)
            except BaseException:
                # quietly: after some errors (disk full, I/O) SQLite has rolled back already
                await asyncio.shield(self._thread.call(lambda: _rollback_quietly(db)))
                raise
            try:
                await asyncio.shield(self._thread.call(lambda: db.execute("COMMIT")))
            except sqlite3.Error as exc:
                await asyncio.shield(self._thread.call(lambda: _rollback_quietly(db)))
                raise StoreUnavailable(f"cannot commit to the store {self.path}: {exc}") from exc

    async def erase_freed(self, tables: Sequence[str]) -> None:
        """Write the WAL back into the database file and truncate it to zero bytes
        (``wal_checkpoint(TRUNCATE)``). With ``secure_delete=ON`` (set at open) SQLite
        zeroes content as it is deleted or overwritten, in its page and in freed pages; the
        old page images that the WAL still held are gone with it. ``tables``: unused, SQLite
        does it for the whole file. A checkpoint that a reader in another process keeps
        from finishing raises :class:`~shore.store.errors.StoreUnavailable`."""
        async with self._lock:
            db = self.connection
            try:
                busy, _, _ = await self.run(
                    lambda: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"the store {self.path}: checkpoint failed: {exc}") from exc
        if not busy:
            return
        raise StoreUnavailable(
            f"the store {self.path}: the WAL could not be truncated after a purge (another "
            "process is reading it); the next purge tries again"
        )

    async def close(self) -> None:
        """Close the connection and its thread."""
        async with self._lock:
            db = self.connection
            await self.run(db.close)
        self._thread.stop()


class SqliteStore(RelayStore):
    """The relay's store in one SQLite file; open with ``await SqliteStore.open(path)``."""

    db: SqliteDatabase

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout_ms: int = 10_000,
        phrases: PhraseLookup | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
        message_ttl: MessageTtl | None = None,
    ) -> SqliteStore:
        """Open (or create) the store at ``path`` and apply pending migrations."""
        db = await SqliteDatabase.open(path, busy_timeout_ms=busy_timeout_ms)
        store = cls(
            db, phrases=phrases, lease_s=lease_s, deadline_s=deadline_s, message_ttl=message_ttl
        )
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def path(self) -> Path:
        """The database file."""
        return self.db.path


def is_storage_failure(exc: sqlite3.Error) -> bool:
    """Whether a statement's ``exc`` means the database failed (full, I/O error, locked,
    read-only, corrupt), rather than that SQLite refused what we wrote (``IntegrityError``,
    ``DataError``) or that we misused it (``ProgrammingError``).

    The first is a :class:`~shore.store.errors.StoreUnavailable`: the ingest leaves the
    batch unacknowledged for the vessel to resend. The second may come from a hostile batch,
    and the ingest refuses that batch for good (``shore.ingest``).
    """
    if isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError):
        return True
    return type(exc) is sqlite3.DatabaseError  # "database disk image is malformed"


def _rollback_quietly(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")
