"""The PostgreSQL store backend (asyncpg), for relays that run several workers.

Same logic and schema as the SQLite backend (:mod:`shore.store_sql`); what differs: a
connection pool, ``SELECT ... FOR UPDATE`` on the vessel's link row to serialise the
ingest of one vessel's batches across workers, ``FOR UPDATE SKIP LOCKED`` so that delivery
workers claim disjoint rows, and an advisory lock around migrations.

Pin: ``asyncpg==0.32.0``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg  # no stubs; pyproject override asked for

from shore.store import PhraseLookup, StoreUnavailable
from shore.store_sql import DEFAULT_DEADLINE_S, DEFAULT_LEASE_S, Dialect, Row, SqlStore, Tx

POSTGRES = Dialect(
    name="postgres",
    int_type="BIGINT",
    real_type="DOUBLE PRECISION",
    blob_type="BYTEA",
    serial_pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE OF d SKIP LOCKED",
)

#: Errors that mean the database failed, not that what we wrote was refused: lost or
#: refused connections (class 08), a serialisation failure or deadlock (40: retry later),
#: disk full or too many connections (53), an administrator's shutdown (57), the server's
#: own I/O errors (58), and asyncpg's client-side connection state errors. The ingest
#: leaves a batch unacknowledged for these (the vessel resends); any other error while
#: storing an authentic batch refuses it for good (``shore.ingest``).
_STORAGE_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.PostgresSystemError,
    asyncpg.exceptions.InterfaceError,
)

#: Key of the advisory lock held while migrating (any constant unique to this program).
_MIGRATION_LOCK = 0x76_72_65_6C_61_79


@contextmanager
def _storage_failures() -> Iterator[None]:
    """Turn the driver's "the database failed" errors into :class:`StoreUnavailable`."""
    try:
        yield
    except _STORAGE_FAILURES as exc:
        raise StoreUnavailable(
            f"PostgreSQL failed ({type(exc).__name__}: {exc}); nothing was changed"
        ) from exc


class _PgTx:
    """One transaction's statements. A statement that fails because the database failed
    raises :class:`StoreUnavailable`; one that PostgreSQL refuses for what it writes (a
    constraint, a value) raises asyncpg's own error, and so does any error of our code
    between statements: those are not the database's fault."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        with _storage_failures():
            await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with _storage_failures():
                await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _storage_failures():
            return [tuple(record) for record in await self._conn.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _storage_failures():
            record = await self._conn.fetchrow(sql, *args)
        return None if record is None else tuple(record)


class PostgresStore(SqlStore):
    """The store in PostgreSQL; open with ``await PostgresStore.open(dsn)``."""

    dialect = POSTGRES

    def __init__(
        self,
        pool: Any,
        *,
        phrases: PhraseLookup | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        super().__init__(phrases=phrases, lease_s=lease_s, deadline_s=deadline_s)
        self._pool = pool

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        phrases: PhraseLookup | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> PostgresStore:
        """Connect to ``dsn`` and apply pending migrations."""
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        store = cls(pool, phrases=phrases, lease_s=lease_s, deadline_s=deadline_s)
        try:
            await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_PgTx]:
        failed_inside: BaseException | None = None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                try:
                    yield _PgTx(conn)
                except BaseException as exc:
                    failed_inside = exc
                    raise
        except _STORAGE_FAILURES as exc:
            if exc is failed_inside:
                raise  # our own code failed between statements (the statements translate)
            # connecting, BEGIN, COMMIT or ROLLBACK failed
            raise StoreUnavailable(
                f"PostgreSQL failed ({type(exc).__name__}: {exc}); nothing was changed"
            ) from exc

    async def _lock_migrations(self, tx: Tx) -> None:
        await tx.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)

    async def close(self) -> None:
        await self._pool.close()
