"""Schema: the vessel database's tables, as one named migration set per repository.

One file holds what every repository keeps (the on-disk format is a contract: the demo's
chaos checks and the benchmarks read it). Each set belongs to one repository, which alone
writes its tables:

=================  ==============================  =========================================
set                repository                      tables
=================  ==============================  =========================================
``crew_register``  :class:`shipboard.crew.         ``crew``, ``contacts``, ``crew_pins``
                   CrewRegister`
``outbox``         :class:`shipboard.outbox.       ``messages``, ``batches``,
                   Outbox`                         ``batch_messages``, ``downlink_seen``,
                                                   ``downlink_refused``, ``meta``,
                                                   ``batch_sends``
``inbox``          :class:`shipboard.inbox.Inbox`  ``inbox``, ``reply_seen``
``sessions_log``   :class:`shipboard.sessions_log  ``link_sessions``
                   .SessionsLog`
``lane``           :class:`shipboard.lane.         ``lane_reservoir``, ``lane_state``
                   Reservoir`
``casebook``       :class:`shipboard.casebook.     ``casebooks``
                   Casebook`
=================  ==============================  =========================================

The grievance lane's blocks wait in ``lane_reservoir`` until their period ends; then they
become outbox rows of kind ``lane`` (``lane_period``, ``lane_index``, the block in
``sealed``). Downlink lane blocks are kept by the inbox (``lane_down``). The daily slots of
the release before were outbox rows of kind ``grievance`` released when their day was
over; rows left from then still go out as they are.

Before the sets, the whole file was one list of five migrations (``0001_initial`` ...
``0005_sos_without_pin``, table ``migrations``). :data:`LEGACY_RECORDS` maps each old name
to the set migrations with the same statements, so a file written then opens without
running anything twice. New migrations go at the end of their set, under a new name; a
recorded migration's SQL never changes.
"""

from __future__ import annotations

from shipboard.migrations import LegacyRecords, Migration, MigrationSet

__all__ = [
    "CASEBOOK",
    "CASEBOOK_BYTES",
    "CREW_REGISTER",
    "INBOX",
    "LANE",
    "LEGACY_RECORDS",
    "OUTBOX",
    "SESSIONS_LOG",
    "VESSEL_SCHEMA",
]

#: Bytes of every crew member's casebook on disk (:mod:`shipboard.casebook`); fixed: a
#: recorded migration makes the blank ones of this size.
CASEBOOK_BYTES = 4096

CREW_REGISTER = MigrationSet(
    "crew_register",
    (
        Migration(
            "0001_crew",
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
            CREATE UNIQUE INDEX contacts_address ON contacts(crew, channel, address)
            """,
        ),
        Migration(
            "0002_chosen_pins",
            # The PIN hash the crew member chose (a captain's reset shows as "not chosen
            # yet") and an optional duress PIN. Files from before the sets may have it
            # already: the release before made it at the first PIN chosen on the page.
            """
            CREATE TABLE IF NOT EXISTS crew_pins (
                crew INTEGER PRIMARY KEY REFERENCES crew(crew),
                chosen_hash BLOB NOT NULL,
                duress_salt BLOB,
                duress_hash BLOB,
                chosen_at REAL NOT NULL
            )
            """,
        ),
        Migration(
            "0003_signed_in_weeks",
            # The ISO weeks (YYYYWW, UTC) in which each crew member signed in on board, one
            # row a week and nothing finer: the statement's weekly access (issue 23).
            """
            CREATE TABLE crew_signed_in_weeks (
                crew INTEGER NOT NULL REFERENCES crew(crew),
                week INTEGER NOT NULL,
                PRIMARY KEY (crew, week)
            ) WITHOUT ROWID
            """,
        ),
    ),
)

OUTBOX = MigrationSet(
    "outbox",
    (
        Migration(
            "0001_outbox",
            """
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
            CREATE TABLE downlink_seen (first INTEGER PRIMARY KEY, last INTEGER NOT NULL);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO meta (key, value) VALUES ('downlink_ack_pending', 0)
            """,
        ),
        Migration(
            "0002_ack_only_batches",
            # 1 for a batch that carries only a BatchAck; batches made before stay 0
            # (waited for).
            "ALTER TABLE batches ADD COLUMN ack_only INTEGER NOT NULL DEFAULT 0",
        ),
        Migration(
            "0003_downlink_refused",
            # Authentic downlink batches refused for good (Outbox.refuse_downlink): counted
            # as seen, so the next BatchAck covers them, and named with their reason in its
            # ``rejected`` list once (announced_in_batch: the uplink batch that told the
            # shore).
            """
            CREATE TABLE downlink_refused (
                batch_seq INTEGER PRIMARY KEY,
                reason INTEGER NOT NULL,
                refused_at REAL NOT NULL,
                announced_in_batch INTEGER
            )
            """,
        ),
        Migration(
            "0004_sos_without_pin",
            # An SOS sent without a PIN keeps crew NULL (nobody proved who sent it) and the
            # crew number that was typed here (no foreign key: a mistyped number still goes).
            "ALTER TABLE messages ADD COLUMN typed_crew INTEGER",
        ),
        Migration(
            "0005_lane_items",
            # The grievance lane's released blocks are outbox rows of kind 'lane' (period
            # and index of the block; the block in sealed). SQLite cannot change a CHECK
            # constraint in place: the table is rebuilt (its numbering kept).
            """
            CREATE TABLE messages_new (
                message_seq INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL CHECK (kind IN ('message', 'grievance', 'sos', 'lane')),
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
                failure_detail TEXT,
                typed_crew INTEGER,
                lane_period INTEGER,
                lane_index INTEGER
            );
            INSERT INTO messages_new (message_seq, kind, crew, contact, union_id,
                reporter_tag, lang, body, quick, sealed, latitude, longitude, text_bytes,
                month, state, accepted_at, batched_at, sent_at, acknowledged_at,
                delivered_at, failed_at, failure_reason, failure_detail, typed_crew)
            SELECT message_seq, kind, crew, contact, union_id, reporter_tag, lang, body,
                quick, sealed, latitude, longitude, text_bytes, month, state, accepted_at,
                batched_at, sent_at, acknowledged_at, delivered_at, failed_at,
                failure_reason, failure_detail, typed_crew FROM messages;
            DELETE FROM sqlite_sequence WHERE name = 'messages_new';
            INSERT INTO sqlite_sequence (name, seq)
                SELECT 'messages_new', seq FROM sqlite_sequence WHERE name = 'messages';
            DROP TABLE messages;
            ALTER TABLE messages_new RENAME TO messages;
            CREATE INDEX messages_state ON messages(state);
            CREATE INDEX messages_crew_month ON messages(crew, month)
            """,
            rebuilds_tables=True,
        ),
        Migration(
            "0006_voice_notes",
            # A voice note is a family message (kind 'message', counted in text_bytes
            # against the quota like text) whose Codec2 frames sit in voice, with their
            # mode (Codec2's mode number) and duration; body and quick stay NULL.
            """
            ALTER TABLE messages ADD COLUMN voice_mode INTEGER;
            ALTER TABLE messages ADD COLUMN voice_ms INTEGER;
            ALTER TABLE messages ADD COLUMN voice BLOB
            """,
        ),
        Migration(
            "0007_message_subject",
            # The Subject line of a family message that came in by mail (SMTP door); it
            # travels as the crew message's subject (protocol.envelopes.CrewMessage).
            "ALTER TABLE messages ADD COLUMN subject TEXT",
        ),
        Migration(
            "0008_batch_sends",
            # One row per send of an uplink batch the broker took (Outbox.mark_sent): when,
            # over which link (the profile name the session ran under: the main link's,
            # iridium-sbd, port-4g; NULL when the caller did not say) and its bytes. The
            # statement attributes each link's bytes to the crew members whose family
            # messages it carried (shipboard.report). Batches sent before have no rows.
            """
            CREATE TABLE batch_sends (
                send INTEGER PRIMARY KEY AUTOINCREMENT,
                batch_seq INTEGER NOT NULL REFERENCES batches(batch_seq),
                sent_at REAL NOT NULL,
                link TEXT,
                link_bytes INTEGER NOT NULL
            );
            CREATE INDEX batch_sends_batch ON batch_sends(batch_seq);
            CREATE INDEX batch_sends_sent_at ON batch_sends(sent_at)
            """,
        ),
    ),
)

INBOX = MigrationSet(
    "inbox",
    (
        Migration(
            "0001_inbox",
            """
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
            CREATE TABLE reply_seen (reply_seq INTEGER PRIMARY KEY)
            """,
        ),
        Migration(
            "0002_lane_blocks",
            # Every downlink lane block, by (period, index): no crew number. A reporter's
            # reply key finds their notes among them by trial decryption.
            """
            CREATE TABLE lane_down (
                period INTEGER NOT NULL,
                idx INTEGER NOT NULL,
                block BLOB NOT NULL,
                at REAL NOT NULL,
                PRIMARY KEY (period, idx)
            ) WITHOUT ROWID
            """,
        ),
        Migration(
            "0003_voice_replies",
            # A family's spoken reply (issue 24): its Codec2 frames, mode and length; the
            # page decodes them to Opus in Ogg when the crew member plays it.
            """
            ALTER TABLE inbox ADD COLUMN voice BLOB;
            ALTER TABLE inbox ADD COLUMN voice_mode INTEGER;
            ALTER TABLE inbox ADD COLUMN voice_ms INTEGER
            """,
        ),
    ),
)

SESSIONS_LOG = MigrationSet(
    "sessions_log",
    (
        Migration(
            "0001_link_sessions",
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
        ),
        Migration(
            "0002_budget_bytes",
            # What a session charged to the owner's monthly budget, in the main link's
            # billed bytes, where that is not "its billed bytes if it ran on a satellite
            # link other than SBD" (NULL, every session before): an SBD session that
            # carried family messages ([sbd] family_after_minutes) charges their share.
            "ALTER TABLE link_sessions ADD COLUMN budget_bytes INTEGER",
        ),
    ),
)

LANE = MigrationSet(
    "lane",
    (
        Migration(
            "0001_reservoir",
            # Sealed uplink blocks waiting for their period (shipboard.lane_plan decides
            # which leave): a random id, an order key, the block. Nothing says which hold
            # a report, whose, or for which union. lane_state: the release credit and the
            # last period released.
            """
            CREATE TABLE lane_reservoir (
                row_id BLOB PRIMARY KEY,
                order_key INTEGER NOT NULL,
                block BLOB NOT NULL
            ) WITHOUT ROWID;
            CREATE INDEX lane_reservoir_order ON lane_reservoir(order_key);
            CREATE TABLE lane_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)
            """,
        ),
    ),
)

CASEBOOK = MigrationSet(
    "casebook",
    (
        Migration(
            "0001_casebooks",
            # One fixed-size sealed casebook per crew member, from their registration on
            # (random bytes until they file): the crew already on board get theirs here.
            """
            CREATE TABLE casebooks (
                crew INTEGER PRIMARY KEY REFERENCES crew(crew),
                box BLOB NOT NULL
            );
            INSERT INTO casebooks (crew, box) SELECT crew, randomblob(4096) FROM crew
            """,
        ),
    ),
)

#: Every set of the vessel database, in the order they run (the outbox's, the inbox's and
#: the casebook's tables refer to the crew register's).
VESSEL_SCHEMA: tuple[MigrationSet, ...] = (
    CREW_REGISTER,
    OUTBOX,
    INBOX,
    SESSIONS_LOG,
    LANE,
    CASEBOOK,
)

#: The release before the sets: old migration name -> the set migrations it stands for.
LEGACY_RECORDS: LegacyRecords = {
    "0001_initial": (
        ("crew_register", "0001_crew"),
        ("outbox", "0001_outbox"),
        ("inbox", "0001_inbox"),
    ),
    "0002_link_sessions": (("sessions_log", "0001_link_sessions"),),
    "0003_ack_only_batches": (("outbox", "0002_ack_only_batches"),),
    "0004_downlink_refused": (("outbox", "0003_downlink_refused"),),
    "0005_sos_without_pin": (("outbox", "0004_sos_without_pin"),),
}
