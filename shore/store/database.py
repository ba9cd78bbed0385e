"""The database seam: one connection (SQLite or PostgreSQL) and its public transaction.

Every repository of :mod:`shore.store` runs its SQL inside a :class:`Tx` it is handed;
nobody opens a transaction but a *unit of work* (:mod:`shore.store.relay_store`, the
transparency log's tasks, the operator's queries), through :meth:`Database.transaction`::

    async with db.transaction() as tx:      # BEGIN (SQLite: BEGIN IMMEDIATE)
        await uplink.store_batch(tx, ...)   # repositories take the Tx they run in
        await log.append_leaf(tx, ...)
                                            # COMMIT; any exception: ROLLBACK, re-raised

Queries are written once, with ``$1``-style parameters (asyncpg's; the SQLite backend
turns them into ``?1``); rows come back as tuples. What differs between the backends is
data (:class:`Dialect`: column types, row locks), not code. A statement that fails because
the database failed raises :class:`~shore.store.errors.StoreUnavailable`; one the database
refuses for what it writes raises the driver's own error (it is not the database's fault).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

Row = tuple[Any, ...]


class Tx(Protocol):
    """One open transaction (rows come back as tuples)."""

    async def execute(self, sql: str, *args: Any) -> None:
        """Run one statement."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row of arguments (nothing for no rows)."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Every row a statement returns."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """The first row a statement returns, or None."""


#: Parameters one statement of :func:`insert_many` carries at most (PostgreSQL allows
#: 32767, SQLite 32766 since 3.32).
MAX_PARAMETERS = 30_000


async def insert_many(tx: Tx, insert: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """``insert`` (``"INSERT INTO t (a, b)"``) of every row of ``rows`` (each as many values
    as the columns named), followed by ``tail`` (``" ON CONFLICT DO NOTHING"``), in as few
    statements as the parameter limit allows: one multi-row ``VALUES`` for a batch's rows
    rather than one statement per row. Rows are inserted in their order."""
    for sql, args in _multi_row(insert, rows, tail):
        await tx.execute(sql, *args)


async def insert_returning(
    tx: Tx, insert: str, rows: Sequence[Sequence[Any]], tail: str
) -> list[Row]:
    """:func:`insert_many` with a ``tail`` that ends in ``RETURNING ...``: the rows every
    statement returned."""
    returned: list[Row] = []
    for sql, args in _multi_row(insert, rows, tail):
        returned += await tx.fetch(sql, *args)
    return returned


def _multi_row(
    insert: str, rows: Sequence[Sequence[Any]], tail: str
) -> Iterator[tuple[str, list[Any]]]:
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, MAX_PARAMETERS // width)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = ", ".join(
            "(" + ", ".join(f"${i * width + j + 1}" for j in range(width)) + ")"
            for i in range(len(chunk))
        )
        yield f"{insert} VALUES {values}{tail}", [v for row in chunk for v in row]


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the backends."""

    name: str
    int_type: str
    real_type: str
    blob_type: str
    serial_pk: str
    #: Appended to a SELECT that locks the rows it reads ("" where writers are serialised).
    for_update: str
    #: Appended to a claim (a SELECT over one table) so that workers skip each other's rows.
    skip_locked: str
    #: A statement returning a row when the table named by ``$1`` exists.
    table_exists: str
    #: A statement that keeps two processes from migrating at once (None: writers are
    #: serialised anyway).
    migration_lock: str | None = None

    def schema(self, sql: str) -> list[str]:
        """A migration's ``;``-separated statements with this dialect's column types filled
        in (``{int}``, ``{real}``, ``{blob}``, ``{serial_pk}``)."""
        text = sql.format(
            int=self.int_type, real=self.real_type, blob=self.blob_type, serial_pk=self.serial_pk
        )
        return [part.strip() for part in text.split(";") if part.strip()]


class Database(Protocol):
    """One open database: a dialect, transactions, and closing."""

    @property
    def dialect(self) -> Dialect:
        """What this backend's SQL needs to know."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """One transaction: committed when the block ends, rolled back if it raises."""

    async def erase_freed(self, tables: Sequence[str]) -> None:
        """After content was deleted or overwritten in ``tables`` (a retention purge), make
        what the backend can of it unrecoverable from its files; outside any transaction.
        What each backend can promise is in its own docstring."""

    async def close(self) -> None:
        """Close the connections; the database is unusable afterwards."""


def optional_float(value: object) -> float | None:
    """A nullable REAL column as a float (or None)."""
    return None if value is None else float(str(value))


def optional_int(value: object) -> int | None:
    """A nullable INTEGER column as an int (or None)."""
    return None if value is None else int(str(value))
