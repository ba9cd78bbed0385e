"""Migrations: named schema changes, grouped in one set per repository, recorded in the file.

Each repository of the vessel database (:mod:`shipboard.schema` lists them) owns a
:class:`MigrationSet`: its name and its migrations in order. :func:`apply_migrations`
runs, for every set, the migrations the file has not recorded yet, each in its own
transaction (``BEGIN IMMEDIATE``, the statements, the record, ``COMMIT``): a migration
either happened and is recorded, or neither (sqlite-utils' rule). Records live in the
table ``schema_migrations`` (set, name, when). Nothing is written when nothing is due,
so a database opened read-only (or on a full disk) still opens.

A file whose records name a migration this release does not know was written by a newer
release: it is refused (:class:`SchemaTooNew`) rather than half understood.

Files written before the sets existed recorded their migrations by name alone in a table
``migrations``; :class:`LegacyRecords` says which set migrations each old name stands
for, and they are recorded once, in the transaction that creates ``schema_migrations``.
The old table is left as it was (never written again).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = [
    "LegacyRecords",
    "Migration",
    "MigrationSet",
    "SchemaTooNew",
    "applied_migrations",
    "apply_migrations",
]

RECORDS_TABLE = "schema_migrations"
LEGACY_TABLE = "migrations"


class SchemaTooNew(Exception):
    """The file records a migration this release does not know (a newer release wrote it)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One named schema change: SQL statements separated by ``;`` (no ``;`` inside them).

    ``rebuilds_tables``: the script rebuilds a table others refer to (SQLite's way of
    changing a column's constraint: make the new table, copy, drop the old, rename). It
    then runs with foreign keys off, as SQLite's documented procedure says, and is
    committed only if ``PRAGMA foreign_key_check`` finds nothing broken."""

    name: str
    script: str
    rebuilds_tables: bool = False

    def statements(self) -> list[str]:
        """The statements of the script, in order."""
        return [part.strip() for part in self.script.split(";") if part.strip()]


@dataclass(frozen=True, slots=True)
class MigrationSet:
    """The migrations of one repository, oldest first (names unique within the set)."""

    name: str
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        names = [m.name for m in self.migrations]
        if len(set(names)) != len(names):
            raise ValueError(f"migration set {self.name!r} names a migration twice")


#: Old name (table ``migrations``) -> the (set, migration) pairs it stands for.
LegacyRecords = Mapping[str, Sequence[tuple[str, str]]]


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def applied_migrations(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """The (set, migration) pairs the file records, in the order they were applied."""
    if not _table_exists(db, RECORDS_TABLE):
        return []
    rows = db.execute(f"SELECT migration_set, name FROM {RECORDS_TABLE} ORDER BY rowid").fetchall()
    return [(str(s), str(n)) for s, n in rows]


def _adopt(db: sqlite3.Connection, legacy: LegacyRecords) -> None:
    """Create the records table, recording what an old ``migrations`` table says was done
    (one transaction). A name this release does not know raises :class:`SchemaTooNew`."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if not _table_exists(db, RECORDS_TABLE):
            db.execute(
                f"CREATE TABLE {RECORDS_TABLE} (migration_set TEXT NOT NULL, name TEXT NOT NULL, "
                "applied_at TEXT NOT NULL, PRIMARY KEY (migration_set, name))"
            )
            old = (
                db.execute(
                    f"SELECT name, strftime('%Y-%m-%dT%H:%M:%SZ', applied_at) FROM {LEGACY_TABLE} "
                    "ORDER BY rowid"
                ).fetchall()
                if _table_exists(db, LEGACY_TABLE)
                else []
            )
            for name, applied_at in old:
                if name not in legacy:
                    raise SchemaTooNew(f"it records migration {name!r}, which this release lacks")
                for set_name, migration in legacy[name]:
                    db.execute(
                        f"INSERT INTO {RECORDS_TABLE} (migration_set, name, applied_at) "
                        "VALUES (?, ?, COALESCE(?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))",
                        (set_name, migration, applied_at),
                    )
            if old:
                logger.info("schema records adopted from %d old migration names", len(old))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def apply_migrations(
    db: sqlite3.Connection, sets: Sequence[MigrationSet], legacy: LegacyRecords | None = None
) -> list[tuple[str, str]]:
    """Run every migration of ``sets`` that the file has not recorded; what was run.

    ``db`` is in autocommit mode (``isolation_level=None``). Raises :class:`SchemaTooNew`
    when the file records a migration none of ``sets`` has, and ``sqlite3.Error`` when a
    migration fails (that migration is rolled back; earlier ones stay).
    """
    if not _table_exists(db, RECORDS_TABLE):
        _adopt(db, legacy or {})
    done = set(applied_migrations(db))
    known = {(s.name, m.name) for s in sets for m in s.migrations}
    unknown = sorted(done - known)
    if unknown:
        set_name, name = unknown[0]
        raise SchemaTooNew(
            f"it records migration {name!r} of {set_name!r}, which this release lacks"
        )
    ran: list[tuple[str, str]] = []
    for migration_set in sets:
        for migration in migration_set.migrations:
            if (migration_set.name, migration.name) in done:
                continue
            _run(db, migration_set.name, migration)
            ran.append((migration_set.name, migration.name))
            logger.info("migration %s/%s applied", migration_set.name, migration.name)
    return ran


def _run(db: sqlite3.Connection, set_name: str, migration: Migration) -> None:
    """One migration and its record, in one transaction (foreign keys off around it when
    it rebuilds tables, and checked before the commit)."""
    keys_were_on = bool(db.execute("PRAGMA foreign_keys").fetchone()[0])
    if migration.rebuilds_tables:
        db.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.statements():
                db.execute(statement)
            if migration.rebuilds_tables:
                broken = db.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise sqlite3.IntegrityError(
                        f"migration {set_name}/{migration.name} would leave {len(broken)} "
                        f"rows referring to nothing (first: {tuple(broken[0])})"
                    )
            db.execute(
                f"INSERT INTO {RECORDS_TABLE} (migration_set, name, applied_at) "
                "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                (set_name, migration.name),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        if migration.rebuilds_tables and keys_were_on:
            db.execute("PRAGMA foreign_keys=ON")
