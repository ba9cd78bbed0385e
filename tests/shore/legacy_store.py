"""The relay store's schema as the code before issue 19 made it: one migration list
(``0001_initial`` .. ``0005_sos_unauthenticated``) recorded in ``schema_migrations``.

Copied verbatim from ``shore/store_sql.py`` and ``shore/transparency.py`` as they were at
commit a24d194, so that tests can make a database the old way on either backend
(:func:`replay_legacy_migrations`) and check that the new code opens it without running
anything again. Never edit these statements: they are history.
"""

from __future__ import annotations

import time

from shore.store.database import Database

LOG_MIGRATION = (
    "0003_transparency_log",
    """
    CREATE TABLE log_state (
        id {int} PRIMARY KEY,
        tree_size {int} NOT NULL
    );
    INSERT INTO log_state (id, tree_size) VALUES (1, 0);
    CREATE TABLE log_leaves (
        leaf_index {int} PRIMARY KEY,
        vessel_id {int} NOT NULL,
        batch_seq {int} NOT NULL,
        leaf {blob} NOT NULL,
        leaf_hash {blob} NOT NULL,
        appended_at {real} NOT NULL,
        UNIQUE (vessel_id, batch_seq)
    );
    CREATE TABLE log_heads (
        tree_size {int} NOT NULL,
        timestamp_minutes {int} NOT NULL,
        root {blob} NOT NULL,
        day TEXT NOT NULL,
        signature {blob} NOT NULL,
        PRIMARY KEY (tree_size, timestamp_minutes)
    );
    CREATE TABLE log_cosignatures (
        tree_size {int} NOT NULL,
        timestamp_minutes {int} NOT NULL,
        witness TEXT NOT NULL,
        public_key {blob} NOT NULL,
        signature {blob} NOT NULL,
        PRIMARY KEY (tree_size, timestamp_minutes, witness)
    )
    """,
)

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE vessels (
            vessel_id {int} PRIMARY KEY,
            name TEXT NOT NULL,
            flag TEXT NOT NULL,
            registration TEXT NOT NULL,
            owner TEXT NOT NULL,
            added_at {real} NOT NULL,
            UNIQUE (flag, registration)
        );
        CREATE TABLE vessel_keys (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            public_key {blob} NOT NULL,
            valid_from {real} NOT NULL,
            revoked_at {real},
            PRIMARY KEY (vessel_id, public_key)
        );
        CREATE TABLE vessel_unions (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            union_id {int} NOT NULL,
            PRIMARY KEY (vessel_id, union_id)
        );
        CREATE TABLE vessel_link (
            vessel_id {int} PRIMARY KEY REFERENCES vessels (vessel_id),
            uplink_up_to {int} NOT NULL DEFAULT 0,
            uplink_ranges TEXT NOT NULL DEFAULT '',
            next_downlink_seq {int} NOT NULL DEFAULT 1,
            next_reply_seq {int} NOT NULL DEFAULT 1,
            ack_pending {int} NOT NULL DEFAULT 0,
            last_heard_at {real}
        );
        CREATE TABLE batches (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            batch_seq {int} NOT NULL,
            sha256 {blob} NOT NULL,
            link_bytes {int} NOT NULL,
            batch_minutes {int} NOT NULL,
            envelopes {int} NOT NULL,
            has_content {int} NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('stored', 'rejected')),
            received_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, batch_seq)
        );
        CREATE TABLE messages (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            message_seq {int} NOT NULL,
            batch_seq {int} NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('message', 'grievance', 'sos')),
            crew {int},
            contact {int},
            union_id {int},
            lang {int},
            body TEXT,
            quick {int},
            sealed {blob},
            latitude {int},
            longitude {int},
            written_minutes {int} NOT NULL,
            accepted_at {real} NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('accepted', 'delivered', 'failed', 'alert')),
            state_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, message_seq)
        );
        CREATE TABLE contacts (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            crew {int} NOT NULL,
            contact {int} NOT NULL,
            channel {int} NOT NULL,
            address TEXT NOT NULL,
            name TEXT,
            lang {int},
            crew_name TEXT,
            changed_minutes {int} NOT NULL,
            updated_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, crew, contact)
        );
        CREATE INDEX contacts_by_address ON contacts (channel, address);
        CREATE TABLE quarantine (
            quarantine_id {serial_pk},
            sha256 {blob} NOT NULL UNIQUE,
            raw {blob} NOT NULL,
            link_bytes {int} NOT NULL,
            reason {int} NOT NULL,
            message TEXT NOT NULL,
            vessel_id {int},
            batch_seq {int},
            first_at {real} NOT NULL,
            last_at {real} NOT NULL,
            times {int} NOT NULL DEFAULT 1
        );
        CREATE TABLE uplink_rejections (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            batch_seq {int} NOT NULL,
            reason {int} NOT NULL,
            carried_in {int},
            PRIMARY KEY (vessel_id, batch_seq)
        );
        CREATE TABLE deliveries (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            due_at {real} NOT NULL,
            deadline_at {real} NOT NULL,
            claimed_by TEXT,
            lease_until {real},
            unfinished {int} NOT NULL DEFAULT 0,
            last_attempt_at {real},
            outcome TEXT CHECK (outcome IN ('delivered', 'failed')),
            reason {int},
            detail TEXT,
            finished_at {real},
            PRIMARY KEY (vessel_id, message_seq),
            FOREIGN KEY (vessel_id, message_seq) REFERENCES messages (vessel_id, message_seq)
        );
        CREATE INDEX deliveries_due ON deliveries (due_at) WHERE outcome IS NULL;
        CREATE TABLE union_inbox (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            union_id {int} NOT NULL,
            sealed {blob} NOT NULL,
            received_at {real} NOT NULL,
            PRIMARY KEY (vessel_id, message_seq)
        );
        CREATE TABLE downlink_items (
            item_id {serial_pk},
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            kind {int} NOT NULL,
            skeleton {blob} NOT NULL,
            text TEXT,
            dedupe TEXT,
            created_at {real} NOT NULL,
            downlink_seq {int},
            UNIQUE (vessel_id, dedupe)
        );
        CREATE INDEX downlink_items_pending ON downlink_items (vessel_id, item_id)
            WHERE downlink_seq IS NULL;
        CREATE TABLE downlink_batches (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            downlink_seq {int} NOT NULL,
            data {blob} NOT NULL,
            items {int} NOT NULL,
            made_at {real} NOT NULL,
            last_sent_at {real},
            send_count {int} NOT NULL DEFAULT 0,
            acked_at {real},
            PRIMARY KEY (vessel_id, downlink_seq)
        );
        CREATE INDEX downlink_batches_open ON downlink_batches (vessel_id, downlink_seq)
            WHERE acked_at IS NULL;
        """,
    ),
    (
        "0002_sos_alerts",
        """
        CREATE TABLE sos_alerts (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            contact TEXT NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            due_at {real} NOT NULL,
            outcome TEXT CHECK (outcome IN ('delivered', 'failed')),
            detail TEXT,
            finished_at {real},
            PRIMARY KEY (vessel_id, message_seq, contact),
            FOREIGN KEY (vessel_id, message_seq) REFERENCES messages (vessel_id, message_seq)
        );
        CREATE INDEX sos_alerts_due ON sos_alerts (due_at) WHERE outcome IS NULL;
        CREATE INDEX messages_sos_open ON messages (vessel_id, message_seq)
            WHERE kind = 'sos' AND state = 'alert';
        """,
    ),
    LOG_MIGRATION,
    (
        "0004_downlink_slot_notes",
        """
        CREATE TABLE slot_notes (
            note_id {serial_pk},
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            crew {int} NOT NULL,
            sealed_note {blob} NOT NULL,
            queued_at {real} NOT NULL,
            carried_period {int}
        );
        CREATE INDEX slot_notes_waiting ON slot_notes (vessel_id, crew, note_id)
            WHERE carried_period IS NULL;
        """,
    ),
    (
        "0005_sos_unauthenticated",
        # 1 for an SOS sent without a PIN (protocol.envelopes.Sos.unauthenticated): its
        # crew number is only what was typed, and the alert says so
        "ALTER TABLE messages ADD COLUMN unauthenticated {int}",
    ),
)


async def replay_legacy_migrations(db: Database, upto: int = len(MIGRATIONS)) -> list[str]:
    """Make the schema the old code made, with its first ``upto`` migrations recorded in
    ``schema_migrations`` as it recorded them; returns their names."""
    dialect = db.dialect
    async with db.transaction() as tx:
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            f"(name TEXT PRIMARY KEY, applied_at {dialect.real_type} NOT NULL)"
        )
    names = []
    for name, sql in MIGRATIONS[:upto]:
        async with db.transaction() as tx:
            for statement in dialect.schema(sql):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)",
                name,
                time.time(),
            )
        names.append(name)
    return names
