"""The PostgreSQL backend (asyncpg), for relays that run several workers.

Same repositories and schema as the SQLite backend; what differs is data in the
:class:`~shore.store.database.Dialect`: ``SELECT ... FOR UPDATE`` on the vessel's link row
serialises the ingest of one vessel's batches across workers, ``FOR UPDATE SKIP LOCKED``
lets delivery workers claim disjoint rows, and an advisory lock is held while migrating.
:class:`PostgresDatabase` is the connection pool; :class:`PostgresStore` is the relay's
store (:class:`~shore.store.relay_store.RelayStore`) opened on it.

Pin: ``asyncpg==0.32.0``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg  # no stubs; pyproject override asked for

from shore.store.database import Dialect, Row
from shore.store.deliveries import DEFAULT_DEADLINE_S, DEFAULT_LEASE_S, MessageTtl
from shore.store.errors import StoreUnavailable
from shore.store.relay_store import PhraseLookup, RelayStore

#: Key of the advisory lock held while migrating (any constant unique to this program).
_MIGRATION_LOCK = 0x76_72_65_6C_61_79

POSTGRES = Dialect(
    name="postgres",
    int_type="BIGINT",
    real_type="DOUBLE PRECISION",
    blob_type="BYTEA",
    serial_pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    table_exists=(
        "SELECT 1 FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = $1"
    ),
    migration_lock=f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})",
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


async def _keep_session(conn: Any) -> None:
    """What a connection needs before it goes back to the pool: nothing more than asyncpg
    does anyway (it rolls back a transaction left open). The relay leaves no session state
    behind (no ``SET``, ``LISTEN``, cursor or session advisory lock: every statement runs in
    a transaction, and the migration lock is transaction-scoped), so asyncpg's default
    ``RESET ALL; UNLISTEN *; ...`` would cost a round trip per transaction for nothing."""


class PostgresDatabase:
    """A PostgreSQL connection pool; open with ``await PostgresDatabase.open(dsn)``."""

    dialect = POSTGRES

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 8) -> PostgresDatabase:
        """Connect to ``dsn``."""
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, reset=_keep_session
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        """One transaction on a pooled connection; rolled back if the block raises."""
        failed_inside: BaseException | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
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

    async def erase_freed(self, tables: Sequence[str]) -> None:
        """``VACUUM`` each of ``tables``: the old versions of purged rows (PostgreSQL keeps
        the row as it was until no transaction can see it) are removed and their space made
        free for reuse. That is all PostgreSQL offers short of ``VACUUM FULL`` (a rewrite
        under an exclusive lock): the freed bytes stay in the table's files until new rows
        overwrite them, and the content stays in WAL segments, WAL archives and base
        backups until those are recycled or expire. The operator's backup retention decides
        when it is gone from those (``deploy/README.md``)."""
        for table in tables:
            if not table.isidentifier():
                raise ValueError(f"not a table name: {table!r}")
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute(f"VACUUM {table}")
            except _STORAGE_FAILURES as exc:
                raise StoreUnavailable(
                    f"PostgreSQL failed to VACUUM {table} after a purge ({exc}); the purge "
                    "itself is committed, the next one vacuums again"
                ) from exc

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()


class PostgresStore(RelayStore):
    """The relay's store in PostgreSQL; open with ``await PostgresStore.open(dsn)``."""

    db: PostgresDatabase

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
        message_ttl: MessageTtl | None = None,
    ) -> PostgresStore:
        """Connect to ``dsn`` and apply pending migrations."""
        db = await PostgresDatabase.open(dsn, min_size=min_size, max_size=max_size)
        store = cls(
            db, phrases=phrases, lease_s=lease_s, deadline_s=deadline_s, message_ttl=message_ttl
        )
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
        return store
