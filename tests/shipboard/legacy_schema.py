"""The vessel database as the release before the migration sets wrote it (a fixture).

Copied verbatim from ``shipboard/outbox.py`` and ``shipboard/sessions_log.py`` as they
were up to commit a24d194: five migrations recorded by name in a table ``migrations``,
and the ``crew_pins`` table made at the first PIN chosen on the crew page. Never edit the
SQL below: it is what files on vessels hold.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["LEGACY_MIGRATION_NAMES", "LEGACY_PIN_TABLE", "build_legacy_database"]

SESSIONS_MIGRATION = (
    "0002_link_sessions",
    """
    CREATE TABLE link_sessions (
        session INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('done', 'failed')),
        uplink_payload_bytes INTEGER NOT NULL,
        downlink_payload_bytes INTEGER NOT NULL,
        overhead_bytes INTEGER NOT NULL,
        profile TEXT NOT NULL,
        month INTEGER NOT NULL
    );
    CREATE INDEX link_sessions_month ON link_sessions(month)
    """,
)


_MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE crew (
            crew INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            document TEXT NOT NULL,
            nationality TEXT NOT NULL,
            language TEXT NOT NULL,
            pin_salt BLOB NOT NULL,
            pin_hash BLOB NOT NULL,
            case_salt BLOB NOT NULL,
            added_at REAL NOT NULL,
            signed_off_at REAL
        );
        CREATE UNIQUE INDEX crew_document_on_board ON crew(document)
            WHERE signed_off_at IS NULL;
        CREATE TABLE contacts (
            contact INTEGER PRIMARY KEY AUTOINCREMENT,
            crew INTEGER NOT NULL REFERENCES crew(crew),
            channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
            address TEXT NOT NULL,
            name TEXT,
            language TEXT,
            added_at REAL NOT NULL,
            announced_in_batch INTEGER
        );
        CREATE UNIQUE INDEX contacts_address ON contacts(crew, channel, address);
        CREATE TABLE batches (
            batch_seq INTEGER PRIMARY KEY AUTOINCREMENT,
            data BLOB NOT NULL,
            link_bytes INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('made', 'sent', 'acked', 'rejected')),
            made_at REAL NOT NULL,
            first_sent_at REAL,
            last_sent_at REAL,
            send_count INTEGER NOT NULL DEFAULT 0,
            acked_at REAL,
            reject_reason INTEGER
        );
        CREATE TABLE messages (
            message_seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('message', 'grievance', 'sos')),
            crew INTEGER REFERENCES crew(crew),
            contact INTEGER REFERENCES contacts(contact),
            union_id INTEGER,
            reporter_tag BLOB,
            lang TEXT,
            body TEXT,
            quick INTEGER,
            sealed BLOB,
            latitude INTEGER,
            longitude INTEGER,
            text_bytes INTEGER NOT NULL,
            month INTEGER NOT NULL,
            state TEXT NOT NULL,
            accepted_at REAL NOT NULL,
            batched_at REAL,
            sent_at REAL,
            acknowledged_at REAL,
            delivered_at REAL,
            failed_at REAL,
            failure_reason INTEGER,
            failure_detail TEXT
        );
        CREATE INDEX messages_state ON messages(state);
        CREATE INDEX messages_crew_month ON messages(crew, month);
        CREATE TABLE batch_messages (
            batch_seq INTEGER NOT NULL REFERENCES batches(batch_seq),
            message_seq INTEGER NOT NULL UNIQUE REFERENCES messages(message_seq),
            PRIMARY KEY (batch_seq, message_seq)
        );
        CREATE TABLE inbox (
            entry INTEGER PRIMARY KEY AUTOINCREMENT,
            crew INTEGER REFERENCES crew(crew),
            message_seq INTEGER,
            case_seq INTEGER,
            kind TEXT NOT NULL,
            stage TEXT,
            code INTEGER,
            contact INTEGER,
            lang TEXT,
            body TEXT,
            truncated INTEGER,
            sealed_note BLOB,
            written_minutes INTEGER NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX inbox_crew ON inbox(crew);
        CREATE TABLE reply_seen (reply_seq INTEGER PRIMARY KEY);
        CREATE TABLE downlink_seen (first INTEGER PRIMARY KEY, last INTEGER NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta (key, value) VALUES ('downlink_ack_pending', 0)
        """,
    ),
    SESSIONS_MIGRATION,
    (
        "0003_ack_only_batches",
        # 1 for a batch that carries only a BatchAck; batches made before stay 0 (waited for).
        "ALTER TABLE batches ADD COLUMN ack_only INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "0004_downlink_refused",
        # Authentic downlink batches refused for good (Outbox.refuse_downlink): counted as
        # seen, so the next BatchAck covers them, and named with their reason in its
        # ``rejected`` list once (announced_in_batch: the uplink batch that told the shore).
        """
        CREATE TABLE downlink_refused (
            batch_seq INTEGER PRIMARY KEY,
            reason INTEGER NOT NULL,
            refused_at REAL NOT NULL,
            announced_in_batch INTEGER
        )
        """,
    ),
    (
        "0005_sos_without_pin",
        # An SOS sent without a PIN keeps crew NULL (nobody proved who sent it) and the
        # crew number that was typed here (no foreign key: a mistyped number still goes).
        "ALTER TABLE messages ADD COLUMN typed_crew INTEGER",
    ),
)

#: The names the release before recorded, in order.
LEGACY_MIGRATION_NAMES = tuple(name for name, _ in _MIGRATIONS)

#: The side table of chosen and duress PINs, as that release made it on first use.
LEGACY_PIN_TABLE = (
    "CREATE TABLE IF NOT EXISTS crew_pins (crew INTEGER PRIMARY KEY REFERENCES crew(crew), "
    "chosen_hash BLOB NOT NULL, duress_salt BLOB, duress_hash BLOB, chosen_at REAL NOT NULL)"
)


def build_legacy_database(path: Path, up_to: str = "0005_sos_without_pin") -> sqlite3.Connection:
    """A database file at ``path`` made by the release before the sets, with its migrations
    up to and including ``up_to`` run and recorded exactly as it ran them (WAL mode, one
    transaction each). Returns an open connection (autocommit) for the test to add rows."""
    if up_to not in LEGACY_MIGRATION_NAMES:
        raise ValueError(f"the release before had no migration {up_to!r}")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    for name, script in _MIGRATIONS:
        db.execute("BEGIN IMMEDIATE")
        for statement in (part.strip() for part in script.split(";")):
            if statement:
                db.execute(statement)
        db.execute(
            "INSERT INTO migrations (name, applied_at) VALUES (?, julianday('now'))", (name,)
        )
        db.execute("COMMIT")
        if name == up_to:
            break
    return db
