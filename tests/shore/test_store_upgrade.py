"""A relay database made before issue 19 opens with the new store without running anything.

Before, one list of five migrations (``schema_migrations``) made every table; now each
repository has its own named migration set (``store_migrations``). Two ways to an old
database: a SQLite file made by the old code itself (``fixtures/relay_store_0005.sql``,
dumped with ``iterdump()``), and the old migration list replayed on either backend
(``legacy_store.py``). Either way the new code must adopt the old record, run no statement
again, keep every row, give the same schema as a database it makes itself, and go on
working (batch, leaf, downlink and reply numbers continue). Set migrations added since
(:data:`SINCE_THE_SPLIT`, new tables and columns only) run then, and nothing else.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol.envelopes import BatchAck, CrewMessage, DeliveryReceipt, Reply
from protocol.errors import Reason
from protocol.languages import Language
from protocol.merkle import root_hash
from shore.store import MigrationRefused, RelayStore, SqliteStore
from shore.store.database import Database
from shore.store.migrations import LEGACY_MIGRATIONS, applied_migrations
from shore.store.postgres import PostgresDatabase
from shore.store.relay_store import MIGRATION_SETS
from shore.store.sqlite import SqliteDatabase
from shore.transparency import heads, leaf_hashes, root
from shore.vocabulary import DeliveryOutcome, MessageKind, MessageState
from tests.shore.legacy_store import MIGRATIONS as LEGACY_LIST
from tests.shore.legacy_store import replay_legacy_migrations
from tests.shore.store_fixtures import (
    T0,
    PostgresServer,
    decoded_downlink,
    decoded_uplink,
    shore_encoder,
    uplink,
)
from tests.shore.test_store import postgres  # noqa: F401 (the session's PostgreSQL fixture)

FIXTURE = Path(__file__).parent / "fixtures" / "relay_store_0005.sql"
ALL_MIGRATIONS = {(s.name, m.name) for s in MIGRATION_SETS for m in s.migrations}
OWN_TABLES = ("store_migrations", "schema_migrations")
#: Set migrations made after the split (issue 19): an upgraded old database gets exactly
#: these, in this order; each only adds tables (or columns) of its own.
SINCE_THE_SPLIT = [
    ("uplink", "0004_voice_notes"),
    ("uplink", "0005_content_retention"),
    ("uplink", "0006_message_subject"),
    ("uplink", "0007_awaiting_delivery_index"),
    ("downlink", "0003_urgent_items"),
    ("downlink", "0004_content_retention"),
    ("transparency_log", "0002_tiles_and_checkpoints"),
    ("lane", "0001_lane"),
    ("escalations", "0001_union_escalations"),
    ("sbd_fragments", "0001_sbd_fragments"),
]
LANE_TABLES = ("lane_state", "lane_up_blocks", "lane_down_queue", "lane_down_periods")


def _old_database(path: Path) -> None:
    """The database the old code made, restored from its dump."""
    with sqlite3.connect(path) as db:
        db.executescript(FIXTURE.read_text(encoding="utf-8"))
    db.close()


def _sqlite_schema(path: Path) -> set[tuple[str, str, str]]:
    """(type, name, statement) of every table and index but the migration records."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    db.close()
    return {
        (kind, name, " ".join((sql or "").split()))
        for kind, name, sql in rows
        if not any(name == t or name.startswith(f"sqlite_autoindex_{t}") for t in OWN_TABLES)
        and name != "sqlite_sequence"
    }


async def _postgres_schema(db: Database) -> set[tuple[str, ...]]:
    """Columns, indexes and constraints of every table but the migration records."""
    async with db.transaction() as tx:
        columns = await tx.fetch(
            "SELECT table_name, column_name, data_type, is_nullable, "
            "COALESCE(column_default, ''), is_identity, ordinal_position::text "
            "FROM information_schema.columns WHERE table_schema = current_schema()"
        )
        indexes = await tx.fetch(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema()"
        )
        constraints = await tx.fetch(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
        )
    found: set[tuple[str, ...]] = set()
    for kind, rows in (("column", columns), ("index", indexes), ("constraint", constraints)):
        found.update((kind, *map(str, r)) for r in rows if str(r[0]) not in OWN_TABLES)
    return found


def test_every_old_migration_maps_to_set_migrations_that_exist() -> None:
    """The upgrade's map names each old migration, and only set migrations this code has,
    each exactly once."""
    assert sorted(LEGACY_MIGRATIONS) == [name for name, _ in LEGACY_LIST]
    mapped = [target for targets in LEGACY_MIGRATIONS.values() for target in targets]
    assert len(mapped) == len(set(mapped))
    assert set(mapped) <= ALL_MIGRATIONS


async def test_a_relay_database_made_by_the_old_code_opens_without_running_anything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator upgrades a relay whose SQLite store the old code made (vessels, batches,
    deliveries, SOS alerts, a signed tree head with a witness): the new relay adopts the
    old record of migrations, runs no schema statement, finds every row, and goes on
    numbering leaves, downlink batches and replies where the old one stopped. Only the
    migrations made since (the grievance lane's tables, the downlink's urgent column) run."""
    path = tmp_path / "relay.db"
    _old_database(path)
    before = _sqlite_schema(path)
    with sqlite3.connect(path) as raw:
        old_times = dict(raw.execute("SELECT name, applied_at FROM schema_migrations"))
    raw.close()
    with caplog.at_level(logging.INFO, logger="shore.store.migrations"):
        store = await SqliteStore.open(path)
    try:
        applied = [r.getMessage() for r in caplog.records if "applied" in r.getMessage()]
        assert applied == [f"store migration {s}/{n} applied" for s, n in SINCE_THE_SPLIT]
        after = _sqlite_schema(path)
        # downlink/0003_urgent_items, uplink/0004_voice_notes, uplink/0005 (retention),
        # uplink/0006 (subject) and transparency_log/0002 added columns to these (and
        # uplink/0007 an index on messages)
        altered = {
            "downlink_items",
            "downlink_batches",
            "messages",
            "log_heads",
            "log_cosignatures",
            "log_state",
        }
        assert {entry for entry in before if entry[1] not in altered} <= after
        assert {name for _, name, sql in after - before} <= {
            *altered,
            *LANE_TABLES,
            "log_tiles",
            "sqlite_autoindex_log_tiles_1",
            "log_signing",
            "lane_up_blocks_by_vessel",
            "lane_down_waiting",
            "messages_unpurged",
            "messages_awaiting_delivery",
            "downlink_batches_unpurged",
            "union_escalations",
            "union_escalations_to",
            "sqlite_autoindex_union_escalations_1",
            "sbd_fragments",
            "sbd_fragments_first_seen",
            "sqlite_autoindex_sbd_fragments_1",
            *(f"sqlite_autoindex_{t}_1" for t in LANE_TABLES),
            *(f"sqlite_autoindex_{t}_2" for t in LANE_TABLES),
        }
        recorded = await applied_migrations(store.db)
        assert set(recorded) == ALL_MIGRATIONS
        for old, targets in LEGACY_MIGRATIONS.items():
            assert {recorded[target] for target in targets} == {old_times[old]}
        assert await store.migrate() == []

        (first, second) = await store.list_vessels()
        assert (first.info.name, first.info.unions, len(first.keys)) == ("Sea Star 7", (1, 2), 2)
        assert (second.vessel_id, first.last_heard_at) == (4242, T0 + 6)
        messages = await store.messages(1)
        assert [(m.message_seq, m.kind, m.state) for m in messages] == [
            (1, MessageKind.MESSAGE, MessageState.DELIVERED),
            (2, MessageKind.MESSAGE, MessageState.ACCEPTED),
            (3, MessageKind.GRIEVANCE, MessageState.DELIVERED),
            (4, MessageKind.SOS, MessageState.DELIVERED),
            (5, MessageKind.SOS, MessageState.ALERT),
            (6, MessageKind.MESSAGE, MessageState.ACCEPTED),
        ]
        outcomes = {d.key.message_seq: d.outcome for d in await store.deliveries(1)}
        assert outcomes == {
            1: DeliveryOutcome.DELIVERED,
            2: None,
            3: DeliveryOutcome.DELIVERED,
            6: None,
        }
        assert await store.union_inbox(2) == [(1, 3, b"\x01" * 80)]
        alerts = [(a.message_seq, a.contact, a.outcome) for a in await store.sos_alerts(1)]
        assert alerts == [
            (4, "email:rescue@example.org", DeliveryOutcome.DELIVERED),
            (4, "sms:+6612345", DeliveryOutcome.FAILED),
            (5, "email:rescue@example.org", None),
            (5, "sms:+6612345", None),
        ]
        entries = [(q.reason, q.batch_seq, q.times) for q in await store.quarantined()]
        assert entries == [
            (Reason.SIGNATURE_INVALID, 9, 2),
            (Reason.UNKNOWN_DICTIONARY, 3, 1),
        ]
        (head,) = await heads(store)
        assert [w.witness for w in head.witnesses] == ["ilo"]
        assert head.head.tree_size == len(await leaf_hashes(store)) == 3
        # the old log got its tiles at opening: the tiled root is the old head's root
        assert head.head.origin is None  # an older relay's head, kept as it was signed
        assert await root(store, 3) == (3, head.head.root)
        window = await store.replay_window(1)
        assert (window.up_to, window.ranges) == (4, ())

        data = uplink(1, 5, [CrewMessage(7, 3, 1, int(T0 // 60), Language.MYA, body="new")])
        result = await store.ingest_batch(decoded_uplink(data), data, T0 + 100)
        assert result.new_messages == 1
        assert len(await leaf_hashes(store)) == 4
        assert await root(store) == (4, root_hash(await leaf_hashes(store)))
        reply_seq = await store.queue_reply(1, 3, 1, "again", Language.ENG, False, T0 + 101)
        assert reply_seq == 2
        made = await store.make_downlink_batch(1, T0 + 102, shore_encoder(1, T0 + 102), 100)
        assert made is not None
        assert made.downlink_seq == 3
        envelopes = decoded_downlink(made.data).envelopes
        assert isinstance(envelopes[0], BatchAck)
        assert envelopes[0].up_to == 5
        assert DeliveryReceipt in {type(e) for e in envelopes}
        assert Reply(2, 3, 1, int((T0 + 101) // 60), Language.ENG, "again") in envelopes
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Database, Database]]:
    """Two empty databases of one backend: (for the old schema, for a fresh one)."""
    opened: list[Database] = []
    try:
        for name in ("old", "fresh"):
            if request.param == "sqlite":
                opened.append(await SqliteDatabase.open(tmp_path / f"{name}.db"))
            else:
                server: PostgresServer = request.getfixturevalue("postgres")
                opened.append(await PostgresDatabase.open(server.create_database()))
        yield opened[0], opened[1]
    finally:
        for db in opened:
            await db.close()


async def _schema(db: Database) -> set[tuple[str, ...]]:
    if isinstance(db, SqliteDatabase):
        return {tuple(row) for row in _sqlite_schema(db.path)}
    return await _postgres_schema(db)


async def test_the_old_migration_list_replayed_upgrades_on_both_backends(
    databases: tuple[Database, Database],
) -> None:
    """A database migrated the old way (one list, five migrations) on SQLite or
    PostgreSQL: the new store applies nothing but the migrations made since the split,
    records every set migration, and the schema is exactly the one it makes from scratch."""
    old, fresh = databases
    await replay_legacy_migrations(old)
    async with old.transaction() as tx:
        await tx.execute(
            "INSERT INTO vessels (vessel_id, name, flag, registration, owner, added_at) "
            "VALUES (7, 'Old Timer', 'TH', 'TH-7', 'Owner', 1.0)"
        )
        await tx.execute("INSERT INTO vessel_link (vessel_id) VALUES (7)")
    upgraded = RelayStore(old)
    assert await upgraded.migrate() == SINCE_THE_SPLIT
    assert set(await applied_migrations(old)) == ALL_MIGRATIONS
    assert [v.info.name for v in await upgraded.list_vessels()] == ["Old Timer"]
    made = RelayStore(fresh)
    assert set(await made.migrate()) == ALL_MIGRATIONS
    assert await _schema(old) == await _schema(fresh)


async def test_an_old_database_part_way_through_gets_only_what_it_lacks(
    databases: tuple[Database, Database],
) -> None:
    """A relay that ran the old code only up to 0003 (before slot notes and SOS without a
    PIN) is upgraded: exactly the two later changes run (and those made since the split),
    and the schema is the full one."""
    old, fresh = databases
    await replay_legacy_migrations(old, upto=3)
    applied = await RelayStore(old).migrate()
    assert applied == [
        ("uplink", "0003_sos_unauthenticated"),
        ("uplink", "0004_voice_notes"),
        ("uplink", "0005_content_retention"),
        ("uplink", "0006_message_subject"),
        ("uplink", "0007_awaiting_delivery_index"),
        ("downlink", "0002_slot_notes"),
        ("downlink", "0003_urgent_items"),
        ("downlink", "0004_content_retention"),
        ("transparency_log", "0002_tiles_and_checkpoints"),
        ("lane", "0001_lane"),
        ("escalations", "0001_union_escalations"),
        ("sbd_fragments", "0001_sbd_fragments"),
    ]
    await RelayStore(fresh).migrate()
    assert await _schema(old) == await _schema(fresh)


async def test_a_database_from_a_newer_relay_is_refused_untouched(tmp_path: Path) -> None:
    """An old relay's list holds a migration this code does not know (a newer relay ran
    there): opening refuses with a message that says so, and changes nothing."""
    db = await SqliteDatabase.open(tmp_path / "relay.db")
    try:
        await replay_legacy_migrations(db)
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES ('0006_future', 1.0)"
            )
        with pytest.raises(MigrationRefused, match=r"newer than this one \(0006_future"):
            await RelayStore(db).migrate()
        assert await applied_migrations(db) == {}
    finally:
        await db.close()


async def test_a_new_store_records_every_set_and_reopening_runs_nothing(tmp_path: Path) -> None:
    """A relay started on an empty directory records each repository's migrations by set
    and name; opening it again runs nothing."""
    store = await SqliteStore.open(tmp_path / "relay.db")
    try:
        assert set(await applied_migrations(store.db)) == ALL_MIGRATIONS
        assert await store.migrate() == []
    finally:
        await store.close()
    again = await SqliteStore.open(tmp_path / "relay.db")
    try:
        assert await again.migrate() == []
    finally:
        await again.close()
