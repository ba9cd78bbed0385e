"""union.db's schema: named migrations, applied in order and recorded in the database.

Each migration runs in its own transaction together with its record in
``union_migrations`` (name, applied_at), the way sqlite-utils records its migrations; a
migration is never edited once released (a change is a new migration). ``0001_cases`` is
the schema the union's app made before migrations were recorded (every statement ``IF
NOT EXISTS``), so a union.db of that time adopts it without losing a row.

::

    reports        sealed reports fetched whole (``/union/v1/reports``), by relay number
    cases          one row per case: stage, reporter's reply key, how notes travel
    entries        each case's signed evidence chain
    outgoing       notes to the reporter, stored first, posted to the relay later
    lane_cursor    the last uplink lane block id read (``/union/v1/lane?after=``)
    lane_fragments pieces of lane reports not complete yet (the reassembly's durable copy)
    lane_reports   lane reports put together (or refused), once per (vessel, report id)
    access_log     who opened, exported, replied to or changed which case (append-only)
    case_notes     caseworkers' internal notes on a case (never sent to the reporter)
    vault          the store key's salt, Argon2id settings and check value (one row, or none
                   while the store is not encrypted: :mod:`shore.union.vault`)
    case_stages    each stage a case reached and when (statistics; kept after a purge)
    vessels        the union's own record of a vessel's name, owner and flag (statistics)
    union_settings the union's choices (``retention_days``)
    escalation_routes  the second organisation per vessel or flag state, and the deadline
    escalations_in     cases other unions passed to this one (opened packages)
    escalation_cursor  the last escalation id read (``/union/v1/escalations?after=``)

Statements are separated by a semicolon at the end of a line (a trigger's body keeps its
own semicolons on one line).
"""

from __future__ import annotations

import sqlite3
import time

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_cases",
        """
CREATE TABLE IF NOT EXISTS reports (
    vessel INTEGER NOT NULL,
    message_seq INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    accepted_at REAL NOT NULL,
    case_number TEXT,
    problem TEXT,
    PRIMARY KEY (vessel, message_seq)
);
CREATE TABLE IF NOT EXISTS cases (
    case_number TEXT PRIMARY KEY,
    vessel INTEGER NOT NULL,
    message_seq INTEGER NOT NULL,
    receipt_code TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    lang TEXT NOT NULL,
    status INTEGER NOT NULL,
    status_minutes INTEGER NOT NULL,
    reply_key BLOB,
    crew_name TEXT,
    crew_document TEXT,
    opened_minutes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    case_number TEXT NOT NULL REFERENCES cases (case_number),
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (case_number, idx)
);
CREATE TABLE IF NOT EXISTS outgoing (
    note_id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_number TEXT NOT NULL REFERENCES cases (case_number),
    status INTEGER NOT NULL,
    sealed_note BLOB NOT NULL,
    posted_at REAL
)
""",
    ),
    (
        # the grievance lane (protocol.lane): a case's notes travel as downlink lane blocks
        # ('lane') or as a note on its own (``/union/v1/cases/.../notes``: 'case')
        "0002_grievance_lane",
        """
ALTER TABLE cases ADD COLUMN carrier TEXT NOT NULL DEFAULT 'case';
ALTER TABLE outgoing ADD COLUMN carrier TEXT NOT NULL DEFAULT 'case';
ALTER TABLE outgoing ADD COLUMN note_content BLOB;
ALTER TABLE outgoing ADD COLUMN lane_blocks BLOB;
ALTER TABLE outgoing ADD COLUMN lane_block_bytes INTEGER;
CREATE TABLE lane_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    after INTEGER NOT NULL
);
INSERT INTO lane_cursor (id, after) VALUES (1, 0);
CREATE TABLE lane_fragments (
    vessel INTEGER NOT NULL,
    report_id BLOB NOT NULL,
    idx INTEGER NOT NULL,
    count INTEGER NOT NULL,
    payload BLOB NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (vessel, report_id, idx)
);
CREATE TABLE lane_reports (
    vessel INTEGER NOT NULL,
    report_id BLOB NOT NULL,
    sealed BLOB NOT NULL,
    received_at REAL NOT NULL,
    case_number TEXT,
    problem TEXT,
    PRIMARY KEY (vessel, report_id)
)
""",
    ),
    (
        # the caseworker tool: assignment, internal notes, the access log, the store key
        "0003_caseworkers",
        """
ALTER TABLE cases ADD COLUMN assignee TEXT;
CREATE TABLE access_log (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    caseworker TEXT NOT NULL,
    case_number TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    previous BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX access_log_case ON access_log (case_number, seq);
CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
CREATE TABLE case_notes (
    note_id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_number TEXT NOT NULL REFERENCES cases (case_number),
    caseworker TEXT NOT NULL,
    at REAL NOT NULL,
    text BLOB NOT NULL
);
CREATE TABLE vault (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    salt BLOB NOT NULL,
    time_cost INTEGER NOT NULL,
    memory_kib INTEGER NOT NULL,
    parallelism INTEGER NOT NULL,
    check_value BLOB NOT NULL,
    made_at REAL NOT NULL
)
""",
    ),
    (
        # outcomes: stage history (cases from before: received, then their stage as it
        # stands), vessels' owners and flags, escalation and purge marks, settings
        "0004_outcomes",
        """
CREATE TABLE case_stages (
    case_number TEXT NOT NULL,
    idx INTEGER NOT NULL,
    status INTEGER NOT NULL,
    minutes INTEGER NOT NULL,
    PRIMARY KEY (case_number, idx)
);
INSERT INTO case_stages (case_number, idx, status, minutes)
    SELECT case_number, 0, 1, opened_minutes FROM cases;
INSERT INTO case_stages (case_number, idx, status, minutes)
    SELECT case_number, 1, status, status_minutes FROM cases WHERE status != 1;
CREATE TABLE vessels (
    vessel INTEGER PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    flag TEXT NOT NULL DEFAULT ''
);
ALTER TABLE cases ADD COLUMN escalated_minutes INTEGER;
ALTER TABLE cases ADD COLUMN purged_minutes INTEGER;
CREATE TABLE union_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
ALTER TABLE cases ADD COLUMN purged_head BLOB
""",
    ),
    (
        # deadlines and escalation: consent from the report, routes, received escalations
        "0005_escalation",
        """
ALTER TABLE cases ADD COLUMN consent_to_escalate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN escalated_to INTEGER;
CREATE TABLE escalation_routes (
    scope TEXT PRIMARY KEY,
    org_union_id INTEGER NOT NULL,
    org_name TEXT NOT NULL,
    org_box_public BLOB NOT NULL,
    deadline_days INTEGER NOT NULL
);
CREATE TABLE escalations_in (
    escalation_id INTEGER PRIMARY KEY,
    from_union INTEGER NOT NULL,
    case_number TEXT NOT NULL,
    signer_key BLOB NOT NULL,
    received_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE escalation_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    after INTEGER NOT NULL
);
INSERT INTO escalation_cursor (id, after) VALUES (1, 0)
""",
    ),
)


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations ``db`` has not recorded (``db`` in autocommit mode); returns
    the names applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS union_migrations "
        "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    applied: list[str] = []
    for name, sql in MIGRATIONS:
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM union_migrations WHERE name = ?", (name,)).fetchone():
                db.execute("ROLLBACK")
                continue
            for statement in sql.split(";\n"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT INTO union_migrations (name, applied_at) VALUES (?, ?)",
                (name, time.time()),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        applied.append(name)
    return applied
