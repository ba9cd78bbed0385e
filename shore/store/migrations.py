"""Migrations: each repository's named migration set, recorded in the database.

Each repository of :mod:`shore.store` owns its tables and declares them as a
:class:`MigrationSet`: named migrations, applied in order, never edited once released (a
change is a new migration). :func:`migrate` applies what is missing, each migration in its
own transaction together with its record in ``store_migrations`` (set, name, applied_at),
the way sqlite-utils records its migrations. On PostgreSQL an advisory lock keeps two
relay workers that start at once from migrating twice.

**The upgrade from one list.** Relays before issue 19 recorded five migrations in one list
(``schema_migrations``: ``0001_initial`` .. ``0005_sos_unauthenticated``). The sets carry
the same statements, split by owner; :data:`LEGACY_MIGRATIONS` says which set migrations
each old one covered. The first time this code opens such a database it creates
``store_migrations`` and records those set migrations as applied (at the old times), in
one transaction, and runs nothing again. ``schema_migrations`` is left as it was. A name
in it that this code does not know (a newer relay migrated the database) is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from shore.store.database import Database, Tx
from shore.store.errors import MigrationRefused

log = logging.getLogger(__name__)

#: The table recording applied migrations: (migration_set, name, applied_at).
MIGRATIONS_TABLE = "store_migrations"
#: The table of the relay's older single migration list: (name, applied_at).
LEGACY_TABLE = "schema_migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    """One named schema change: ``;``-separated statements with ``{int}``, ``{real}``,
    ``{blob}`` and ``{serial_pk}`` for the dialect's types."""

    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class MigrationSet:
    """A repository's migrations, in the order they apply."""

    name: str
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        names = [m.name for m in self.migrations]
        if len(set(names)) != len(names):
            raise ValueError(f"migration set {self.name!r} names a migration twice: {names}")

    def names(self) -> tuple[str, ...]:
        """The migration names, in order."""
        return tuple(m.name for m in self.migrations)


#: Old single-list migration -> the (set, migration) it covered, by set.
LEGACY_MIGRATIONS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "0001_initial": (
        ("registry", "0001_vessels"),
        ("vessel_links", "0001_vessel_link"),
        ("uplink", "0001_batches_messages_contacts"),
        ("refusals", "0001_quarantine_and_rejections"),
        ("deliveries", "0001_delivery_queue"),
        ("union_inbox", "0001_union_inbox"),
        ("downlink", "0001_downlink_queue"),
    ),
    "0002_sos_alerts": (
        ("uplink", "0002_open_sos_index"),
        ("sos_alerts", "0001_sos_alerts"),
    ),
    "0003_transparency_log": (("transparency_log", "0001_transparency_log"),),
    "0004_downlink_slot_notes": (("downlink", "0002_slot_notes"),),
    "0005_sos_unauthenticated": (("uplink", "0003_sos_unauthenticated"),),
}


async def applied_migrations(db: Database) -> dict[tuple[str, str], float]:
    """(set, name) -> applied_at of every recorded migration (empty before the first)."""
    async with db.transaction() as tx:
        if await tx.fetchrow(db.dialect.table_exists, MIGRATIONS_TABLE) is None:
            return {}
        rows = await tx.fetch(f"SELECT migration_set, name, applied_at FROM {MIGRATIONS_TABLE}")
    return {(str(r[0]), str(r[1])): float(r[2]) for r in rows}


async def migrate(
    db: Database, sets: Sequence[MigrationSet], *, clock: Callable[[], float] = time.time
) -> list[tuple[str, str]]:
    """Apply every migration of ``sets`` not yet recorded, in order; returns those applied.

    Raises :class:`~shore.store.errors.MigrationRefused` when the database holds a legacy
    migration this code does not know."""
    async with db.transaction() as tx:
        await _lock(db, tx)
        if await tx.fetchrow(db.dialect.table_exists, MIGRATIONS_TABLE) is None:
            await tx.execute(
                f"CREATE TABLE {MIGRATIONS_TABLE} (migration_set TEXT NOT NULL, "
                f"name TEXT NOT NULL, applied_at {db.dialect.real_type} NOT NULL, "
                "PRIMARY KEY (migration_set, name))"
            )
            await _adopt_legacy(db, tx)
        rows = await tx.fetch(f"SELECT migration_set, name FROM {MIGRATIONS_TABLE}")
    recorded = {(str(r[0]), str(r[1])) for r in rows}
    known = {(s.name, m.name) for s in sets for m in s.migrations}
    if recorded - known:
        log.warning(
            "the store records migrations this relay does not know (a newer relay ran here?): %s",
            ", ".join(f"{s}/{n}" for s, n in sorted(recorded - known)),
        )
    applied: list[tuple[str, str]] = []
    for migration_set in sets:
        for migration in migration_set.migrations:
            key = (migration_set.name, migration.name)
            if key in recorded:
                continue
            async with db.transaction() as tx:
                await _lock(db, tx)
                if await tx.fetchrow(
                    f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE migration_set = $1 AND name = $2",
                    *key,
                ):
                    continue  # another worker applied it meanwhile
                for statement in db.dialect.schema(migration.sql):
                    await tx.execute(statement)
                await tx.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (migration_set, name, applied_at) "
                    "VALUES ($1, $2, $3)",
                    *key,
                    float(clock()),
                )
            applied.append(key)
            log.info("store migration %s/%s applied", *key)
    return applied


async def _lock(db: Database, tx: Tx) -> None:
    if db.dialect.migration_lock is not None:
        await tx.execute(db.dialect.migration_lock)


async def _adopt_legacy(db: Database, tx: Tx) -> None:
    """Record the set migrations that the old single list applied (see the docstring)."""
    if await tx.fetchrow(db.dialect.table_exists, LEGACY_TABLE) is None:
        return
    rows = await tx.fetch(f"SELECT name, applied_at FROM {LEGACY_TABLE} ORDER BY name")
    unknown = [str(r[0]) for r in rows if str(r[0]) not in LEGACY_MIGRATIONS]
    if unknown:
        raise MigrationRefused(
            f"the store was migrated by a relay newer than this one ({', '.join(unknown)} in "
            f"{LEGACY_TABLE}); run that relay version or a later one"
        )
    adopted = [
        (set_name, name, float(applied_at))
        for old, applied_at in rows
        for set_name, name in LEGACY_MIGRATIONS[str(old)]
    ]
    await tx.executemany(
        f"INSERT INTO {MIGRATIONS_TABLE} (migration_set, name, applied_at) VALUES ($1, $2, $3)",
        adopted,
    )
    log.info(
        "store migrations %s adopted from %s (nothing run again)",
        ", ".join(str(r[0]) for r in rows),
        LEGACY_TABLE,
    )
