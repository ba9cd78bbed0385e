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
                                                   ``downlink_refused``, ``meta``
``inbox``          :class:`shipboard.inbox.Inbox`  ``inbox``, ``reply_seen``
``sessions_log``   :class:`shipboard.sessions_log  ``link_sessions``
                   .SessionsLog`
=================  ==============================  =========================================

The daily grievance slots (:mod:`shipboard.grievance_slots`) have no table of their own:
a slot is an outbox row of kind ``grievance`` released when its day is over.

Before the sets, the whole file was one list of five migrations (``0001_initial`` ...
``0005_sos_without_pin``, table ``migrations``). :data:`LEGACY_RECORDS` maps each old name
to the set migrations with the same statements, so a file written then opens without
running anything twice. New migrations go at the end of their set, under a new name; a
recorded migration's SQL never changes.
"""

from __future__ import annotations

from shipboard.migrations import LegacyRecords, Migration, MigrationSet

__all__ = [
    "CREW_REGISTER",
    "INBOX",
    "LEGACY_RECORDS",
    "OUTBOX",
    "SESSIONS_LOG",
    "VESSEL_SCHEMA",
]

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
    ),
)

#: Every set of the vessel database, in the order they run (the outbox's and the inbox's
#: tables refer to the crew register's).
VESSEL_SCHEMA: tuple[MigrationSet, ...] = (CREW_REGISTER, OUTBOX, INBOX, SESSIONS_LOG)

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
