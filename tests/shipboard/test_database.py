"""The vessel database: named migration sets, and files from the release before them.

A vessel at sea keeps its database for months; an update must open it as it is, run only
what is new, and keep every crew member's PIN, every queued message and every batch's
bytes. The old files are built here by replaying that release's own migrations
(``legacy_schema.py``), then opened by today's code.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from protocol.codebook import Codebook
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.crew import CrewRegister, PinOutcome
from shipboard.database import VesselDatabase
from shipboard.errors import OutboxUnavailable
from shipboard.inbox import Inbox
from shipboard.migrations import Migration, MigrationSet
from shipboard.outbox import Outbox
from shipboard.schema import VESSEL_SCHEMA
from shipboard.sessions_log import SessionsLog

from .conftest import NOW, VESSEL_ID
from .legacy_schema import LEGACY_MIGRATION_NAMES, LEGACY_PIN_TABLE, build_legacy_database

PIN, DURESS_PIN = "31415926", "27182818"
SEPTEMBER = 202609

#: What today's code records for a file made by the release before the sets.
ADOPTED = [
    ("crew_register", "0001_crew"),
    ("outbox", "0001_outbox"),
    ("inbox", "0001_inbox"),
    ("sessions_log", "0001_link_sessions"),
    ("outbox", "0002_ack_only_batches"),
    ("outbox", "0003_downlink_refused"),
    ("outbox", "0004_sos_without_pin"),
]
#: What today's code runs on such a file: what the release before did not have.
NEW_SINCE = [
    ("crew_register", "0002_chosen_pins"),
    ("crew_register", "0003_signed_in_weeks"),
    ("outbox", "0005_lane_items"),
    ("outbox", "0006_voice_notes"),
    ("outbox", "0007_message_subject"),
    ("outbox", "0008_batch_sends"),
    ("inbox", "0002_lane_blocks"),
    ("inbox", "0003_voice_replies"),
    ("sessions_log", "0002_budget_bytes"),
    ("lane", "0001_reservoir"),
    ("casebook", "0001_casebooks"),
]


def _scrypt(pin: str, salt: bytes) -> bytes:
    """The PIN hash as the crew table stores it (its on-disk format)."""
    return hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def _columns(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every table's columns (name, type, not null, default, key), and every index's name."""
    tables = [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN "
            "('sqlite_sequence', 'schema_migrations', 'migrations') ORDER BY name"
        )
    ]
    found = {t: [tuple(c[1:]) for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    found["(indexes)"] = [
        tuple(row)
        for row in db.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' "
            "AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name"
        )
    ]
    return found


def _fill_like_the_release_before(db: sqlite3.Connection) -> bytes:
    """A crew member with a PIN and a duress PIN, a contact, a message in an unacknowledged
    batch, a queued SOS, a receipt in the inbox and a link session, written as the release
    before wrote them. Returns the batch's bytes."""
    pin_salt, case_salt, duress_salt = b"p" * 16, b"c" * 16, b"d" * 16
    db.execute(LEGACY_PIN_TABLE)
    db.execute(
        "INSERT INTO crew (name, document, nationality, language, pin_salt, pin_hash, "
        "case_salt, added_at) VALUES ('Aung Min', 'SB-1', 'MM', 'mya', ?, ?, ?, ?)",
        (pin_salt, _scrypt(PIN, pin_salt), case_salt, NOW),
    )
    db.execute(
        "INSERT INTO crew_pins (crew, chosen_hash, duress_salt, duress_hash, chosen_at) "
        "VALUES (1, ?, ?, ?, ?)",
        (_scrypt(PIN, pin_salt), duress_salt, _scrypt(DURESS_PIN, duress_salt), NOW),
    )
    db.execute(
        "INSERT INTO contacts (crew, channel, address, name, language, added_at, "
        "announced_in_batch) VALUES (1, 'email', 'mother@example.org', 'Mother', 'mya', ?, 1)",
        (NOW,),
    )
    data = b"\x01old batch bytes, resent as they are"
    db.execute(
        "INSERT INTO batches (data, link_bytes, state, made_at, first_sent_at, last_sent_at, "
        "send_count) VALUES (?, ?, 'sent', ?, ?, ?, 1)",
        (data, len(data), NOW, NOW, NOW),
    )
    db.execute(
        "INSERT INTO messages (kind, crew, contact, lang, body, text_bytes, month, state, "
        "accepted_at, batched_at, sent_at) VALUES ('message', 1, 1, 'mya', 'hello', 5, ?, "
        "'sent', ?, ?, ?)",
        (SEPTEMBER, NOW, NOW, NOW),
    )
    db.execute("INSERT INTO batch_messages (batch_seq, message_seq) VALUES (1, 1)")
    db.execute(
        "INSERT INTO messages (kind, crew, text_bytes, month, state, accepted_at) "
        "VALUES ('sos', 1, 0, ?, 'accepted', ?)",
        (SEPTEMBER, NOW + 60),
    )
    db.execute(
        "INSERT INTO inbox (crew, message_seq, kind, stage, written_minutes, at) "
        "VALUES (1, 1, 'stage', 'accepted_ashore', ?, ?)",
        (int(NOW // 60), NOW + 120),
    )
    db.execute(
        "INSERT INTO link_sessions (started_at, ended_at, outcome, uplink_payload_bytes, "
        "downlink_payload_bytes, overhead_bytes, profile, month) "
        "VALUES (?, ?, 'done', 100, 50, 2600, 'iridium-certus', ?)",
        (NOW, NOW + 20, SEPTEMBER),
    )
    return data


def test_a_database_from_the_release_before_opens_as_it_is(tmp_path: Path) -> None:
    """A vessel updates the agent while at sea: the database the old release wrote (all
    five of its migrations, a crew member with a PIN and a duress PIN, a message in a batch
    the shore has not acknowledged, a queued SOS, a receipt, a link session) opens without
    re-running a migration; the PINs still work, the batch is resent byte-identical, and
    the tables are the same as in a database made today."""
    path = tmp_path / "outbox.sqlite3"
    legacy = build_legacy_database(path)
    data = _fill_like_the_release_before(legacy)
    old_records = legacy.execute("SELECT name, applied_at FROM migrations").fetchall()
    legacy.close()

    database = VesselDatabase.open(path)
    try:
        # nothing of the old release ran again; only what it did not have
        assert database.migrations() == [*ADOPTED, *NEW_SINCE]
        with database.reading() as db:
            assert db.execute("SELECT name, applied_at FROM migrations").fetchall() == old_records
            upgraded = _columns(db)
            # the crew member on board got a casebook (blank: random bytes of the size)
            assert [len(bytes(b)) for (b,) in db.execute("SELECT box FROM casebooks")] == [4096]
        register = CrewRegister(database)
        assert register.check_pin(1, PIN).outcome is PinOutcome.RIGHT
        assert register.check_pin(1, DURESS_PIN).outcome is PinOutcome.DURESS
        assert register.pin_chosen(1)
        outbox = Outbox(database, VESSEL_ID)
        (kept,) = outbox.unacknowledged_batches()
        assert (kept.batch_seq, kept.data, kept.send_count, kept.ack_only) == (1, data, 1, False)
        assert [p.message_seq for p in outbox.pending_messages(NOW + 600)] == [2]
        assert [e["stage"] for e in Inbox(database).entries(1)] == ["accepted_ashore"]
        assert len(SessionsLog(database).sessions_in(SEPTEMBER)) == 1
        # the rebuilt messages table goes on numbering after the old one's last message
        crew_text = CrewRegister(database).contacts(1)[0].contact
        new = outbox.accept_message(
            crew=1, contact=crew_text, lang=Language.MYA, now=NOW, quota_bytes=1000, body="hi"
        )
        assert new.message_seq == 3
    finally:
        database.close()

    fresh = VesselDatabase.open(tmp_path / "fresh.sqlite3")
    try:
        with fresh.reading() as db:
            assert _columns(db) == upgraded
    finally:
        fresh.close()

    again = VesselDatabase.open(path)  # a second start runs nothing and records nothing
    try:
        assert again.migrations() == [*ADOPTED, *NEW_SINCE]
    finally:
        again.close()


def test_an_outbox_from_before_the_chosen_pins_table_gets_it(
    tmp_path: Path, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """An old database where nobody chose a PIN on the page yet (the old release made that
    table on first use): it opens, the table is made by its migration, the captain's PIN
    shows as not chosen, a crew member can choose one, and the outbox batches as before."""
    path = tmp_path / "outbox.sqlite3"
    legacy = build_legacy_database(path)
    legacy.execute(
        "INSERT INTO crew (name, document, nationality, language, pin_salt, pin_hash, "
        "case_salt, added_at) VALUES ('Mya', 'SB-2', 'MM', 'mya', ?, ?, ?, ?)",
        (b"s" * 16, _scrypt(PIN, b"s" * 16), b"c" * 16, NOW),
    )
    legacy.close()
    outbox = Outbox.open(path, VESSEL_ID)
    try:
        register = CrewRegister(outbox)
        assert not register.pin_chosen(1)
        register.choose_pin(1, "24681357", None, NOW)
        assert register.pin_chosen(1)
        contact = register.add_contact(
            1, channel="sms", address="+959123456789", name=None, language=None, now=NOW
        )
        accepted = outbox.accept_message(
            crew=1, contact=contact.contact, lang=Language.MYA, now=NOW, quota_bytes=1000, body="hi"
        )
        batch_seq, _ = outbox.make_batch([accepted.message_seq], codebook, vessel_key, NOW)
        assert batch_seq == 1
    finally:
        outbox.close()


def test_an_outbox_from_before_ack_only_batches_is_upgraded(tmp_path: Path) -> None:
    """An outbox written before migration 0003 opens with its unacknowledged batches kept
    and counted as ordinary batches (waited for, as before)."""
    path = tmp_path / "old.sqlite3"
    old = build_legacy_database(path, up_to="0002_link_sessions")
    old.execute(
        "INSERT INTO batches (data, link_bytes, state, made_at) VALUES (x'01', 1, 'sent', 0)"
    )
    old.close()
    box = Outbox.open(path, VESSEL_ID)
    try:
        (kept,) = box.unacknowledged_batches()
        assert (kept.batch_seq, kept.data, kept.ack_only) == (1, b"\x01", False)
        assert ("outbox", "0002_ack_only_batches") in box.database.migrations()
    finally:
        box.close()


@pytest.mark.parametrize("up_to", LEGACY_MIGRATION_NAMES)
def test_every_old_stage_opens(tmp_path: Path, up_to: str) -> None:
    """Whichever old migration a vessel's file stopped at, today's code brings it to the
    same tables as a database made today."""
    path = tmp_path / "old.sqlite3"
    build_legacy_database(path, up_to=up_to).close()
    upgraded = VesselDatabase.open(path)
    fresh = VesselDatabase.open(tmp_path / "fresh.sqlite3")
    try:
        with upgraded.reading() as old, fresh.reading() as new:
            assert _columns(old) == _columns(new)
        assert sorted(upgraded.migrations()) == sorted(fresh.migrations())
    finally:
        upgraded.close()
        fresh.close()


def test_migrations_are_named_per_repository_and_recorded(tmp_path: Path) -> None:
    """A new database records every migration of every repository's set, by set and name,
    and runs with the durability and secrecy settings (WAL, synchronous FULL, foreign keys,
    secure delete)."""
    database = VesselDatabase.open(tmp_path / "outbox.sqlite3")
    try:
        expected = [(s.name, m.name) for s in VESSEL_SCHEMA for m in s.migrations]
        assert database.migrations() == expected
        assert {s.name for s in VESSEL_SCHEMA} == {
            "crew_register",
            "outbox",
            "inbox",
            "sessions_log",
            "lane",
            "casebook",
        }
        with database.reading() as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    finally:
        database.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    """The agent was rolled back after a newer release added a migration: it refuses the
    file with a sentence naming the file and what to do, rather than half understand it."""
    path = tmp_path / "outbox.sqlite3"
    VesselDatabase.open(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "INSERT INTO schema_migrations (migration_set, name, applied_at) "
            "VALUES ('outbox', '0099_from_the_future', '2027-01-01T00:00:00Z')"
        )
    db.close()
    with pytest.raises(OutboxUnavailable, match=r"newer release.*0099_from_the_future"):
        VesselDatabase.open(path)


def test_a_failing_migration_leaves_nothing_half_done(tmp_path: Path) -> None:
    """A migration whose second statement fails is rolled back whole and not recorded:
    the next start runs it again from the beginning."""
    broken = MigrationSet(
        "trial",
        (
            Migration("0001_good", "CREATE TABLE trial_a (x INTEGER)"),
            Migration("0002_bad", "CREATE TABLE trial_b (x INTEGER); CREATE TABLE trial_a (y)"),
        ),
    )
    path = tmp_path / "trial.sqlite3"
    with pytest.raises(OutboxUnavailable, match="cannot prepare"):
        VesselDatabase.open(path, schema=(broken,))
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        recorded = db.execute("SELECT migration_set, name FROM schema_migrations").fetchall()
    finally:
        db.close()
    assert "trial_a" in tables
    assert "trial_b" not in tables
    assert recorded == [("trial", "0001_good")]


def test_a_table_rebuild_that_would_break_a_reference_is_refused(tmp_path: Path) -> None:
    """A migration that rebuilds a table (foreign keys off, as SQLite's procedure says)
    but loses a row another table refers to is rolled back whole and not recorded, and
    foreign keys are on again afterwards; a faithful rebuild goes through."""
    base = MigrationSet(
        "trial",
        (
            Migration(
                "0001_tables",
                "CREATE TABLE parent (id INTEGER PRIMARY KEY, kind TEXT CHECK (kind IN ('a'))); "
                "CREATE TABLE child (parent INTEGER NOT NULL REFERENCES parent(id)); "
                "INSERT INTO parent (id, kind) VALUES (1, 'a'), (2, 'a'); "
                "INSERT INTO child (parent) VALUES (2)",
            ),
        ),
    )
    rebuild = (
        "CREATE TABLE parent_new (id INTEGER PRIMARY KEY, kind TEXT CHECK (kind IN ('a', 'b'))); "
        "INSERT INTO parent_new (id, kind) SELECT id, kind FROM parent {where}; "
        "DROP TABLE parent; ALTER TABLE parent_new RENAME TO parent"
    )
    lossy = MigrationSet(
        "trial",
        (
            *base.migrations,
            Migration("0002_rebuild", rebuild.format(where="WHERE id = 1"), rebuilds_tables=True),
        ),
    )
    path = tmp_path / "trial.sqlite3"
    VesselDatabase.open(path, schema=(base,)).close()
    with pytest.raises(OutboxUnavailable, match="referring to nothing"):
        VesselDatabase.open(path, schema=(lossy,))
    faithful = MigrationSet(
        "trial",
        (
            *base.migrations,
            Migration("0002_rebuild", rebuild.format(where=""), rebuilds_tables=True),
        ),
    )
    database = VesselDatabase.open(path, schema=(faithful,))
    try:
        assert database.migrations()[-1] == ("trial", "0002_rebuild")
        with database.reading() as db:
            assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert db.execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 2
        with pytest.raises(sqlite3.IntegrityError), database.transaction("orphan") as db:
            db.execute("INSERT INTO child (parent) VALUES (9)")  # foreign keys are on again
        assert database.one_of("x", list, lambda: [1]) is database.one_of("x", list, list)
        with pytest.raises(TypeError, match="not a"):
            database.one_of("x", dict, dict)
    finally:
        database.close()
