"""Uplink repository: what vessels sent, as stored ashore.

Tables (migration set ``uplink``):

- ``batches``: each authentic uplink batch stored, by (vessel, batch_seq), with the hash of
  its bytes, so a resent batch is recognised and acknowledged again, never stored twice;
- ``messages``: by (vessel, message_seq), the idempotency key from intake to the family;
  crew messages, grievance reports (only sealed) and SOS, each with its state;
- ``contacts``: the vessel's contact book as its ``ContactBookChange`` envelopes told us;

What the relay refused (quarantine, batches refused for good) is :mod:`shore.store.refusals`.

Every insert of something that came over the link is idempotent (``ON CONFLICT DO
NOTHING``): a resent batch or a replayed message changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from protocol.batch import Batch
from protocol.compliance import message_text_bytes
from protocol.envelopes import (
    Channel,
    ContactBookChange,
    CrewMessage,
    GrievanceReport,
    Sos,
    VoiceNote,
)
from protocol.errors import Reason
from protocol.languages import Language
from protocol.slots import SLOT_MAGIC
from protocol.voice import VoiceMode
from shore.store.database import Row, Tx, insert_returning, optional_int
from shore.store.migrations import Migration, MigrationSet
from shore.vocabulary import BatchState, MessageKind, MessageState

MIGRATIONS = MigrationSet(
    "uplink",
    (
        Migration(
            "0001_batches_messages_contacts",
            """
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
        """,
        ),
        Migration(
            "0002_open_sos_index",
            """
        CREATE INDEX messages_sos_open ON messages (vessel_id, message_seq)
            WHERE kind = 'sos' AND state = 'alert';
        """,
        ),
        # 1 for an SOS sent without a PIN (protocol.envelopes.Sos.unauthenticated): its
        # crew number is only what was typed, and the alert says so
        Migration(
            "0003_sos_unauthenticated", "ALTER TABLE messages ADD COLUMN unauthenticated {int}"
        ),
        # A voice message (protocol.envelopes.VoiceNote, issue 24): kind 'message' with its
        # Codec2 frames, their mode (Codec2's mode number) and duration; body stays NULL.
        Migration(
            "0004_voice_notes",
            """
        ALTER TABLE messages ADD COLUMN voice_mode {int};
        ALTER TABLE messages ADD COLUMN voice_ms {int};
        ALTER TABLE messages ADD COLUMN voice {blob}
        """,
        ),
        # Retention (issue 23): a family message's content (text, quick code, speech) is
        # purged some time after its delivery ended; ``text_bytes`` keeps what the
        # compliance report counts, ``purged_at`` when the content went.
        Migration(
            "0005_content_retention",
            """
        ALTER TABLE messages ADD COLUMN text_bytes {int};
        ALTER TABLE messages ADD COLUMN purged_at {real};
        CREATE INDEX messages_unpurged ON messages (state_at)
            WHERE kind = 'message' AND purged_at IS NULL AND state IN ('delivered', 'failed')
        """,
        ),
        # A crew message's subject (protocol.envelopes.CrewMessage.subject): the Subject
        # line of a mail that came in by the vessel's SMTP door; the family mail's Subject.
        Migration("0006_message_subject", "ALTER TABLE messages ADD COLUMN subject TEXT"),
        # The family messages still waiting for their delivery, for the time-to-live look-ups
        # (``_AWAITING_DELIVERY``): without it each one read every message ever stored.
        Migration(
            "0007_awaiting_delivery_index",
            """
        CREATE INDEX messages_awaiting_delivery ON messages (vessel_id, message_seq)
            WHERE kind = 'message' AND state = 'accepted'
        """,
        ),
    ),
)


class IngestOutcome(enum.Enum):
    """What became of one authentic uplink batch."""

    STORED = "stored"  # new: committed with its envelopes
    DUPLICATE = "duplicate"  # the same bytes were stored before: acknowledged again
    REJECTED = "rejected"  # authentic but refused for good (told to the vessel)


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Counts for one batch (ids and sizes only: fit for a log line)."""

    outcome: IngestOutcome
    vessel_id: int
    batch_seq: int
    new_messages: int = 0
    duplicate_messages: int = 0
    contacts: int = 0
    downlink_acked: int = 0
    reason: Reason | None = None
    #: grievance lane blocks stored for the first time
    lane_blocks: int = 0
    #: lane blocks for a place (period, index) already holding another block: not stored
    lane_conflicts: int = 0


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as stored ashore (grievance reports only sealed)."""

    vessel_id: int
    message_seq: int
    batch_seq: int
    kind: MessageKind
    crew: int | None
    contact: int | None
    union: int | None
    lang: Language | None
    body: str | None
    quick: int | None
    sealed: bytes | None
    position: tuple[int, int] | None
    written_minutes: int
    accepted_at: float
    state: MessageState


@dataclass(frozen=True, slots=True)
class ContactRecord:
    """A family contact of a crew member, as the vessel's contact book told us."""

    vessel_id: int
    crew: int
    contact: int
    channel: Channel
    address: str
    name: str | None
    lang: Language | None
    crew_name: str | None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What is kept of a stored batch to recognise it when it comes again."""

    sha256: bytes
    has_content: bool


@dataclass(frozen=True, slots=True)
class CodedVoice:
    """A stored voice message's speech: Codec2 frames of ``mode``, ``duration_ms`` long."""

    mode: VoiceMode
    duration_ms: int
    frames: bytes


@dataclass(frozen=True, slots=True)
class MessageToDeliver:
    """A stored message with its contact (if the vessel announced one), for a delivery."""

    kind: MessageKind
    crew: int | None
    contact: int | None
    union: int | None
    lang: Language | None
    body: str | None
    quick: int | None
    sealed: bytes | None
    accepted_at: float
    channel: Channel | None
    address: str | None
    contact_lang: Language | None
    crew_name: str | None
    #: A voice message's speech (None for text).
    voice: CodedVoice | None = None
    #: The Subject line the crew member wrote (a mail from the SMTP door), if any.
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class SosMessage:
    """What an SOS alert says about the SOS (the vessel's name comes from the registry)."""

    crew: int | None
    crew_name: str | None
    note: str | None
    lang: Language | None
    position: tuple[int, int] | None
    written_minutes: int
    accepted_at: float
    unauthenticated: bool


def language(value: object) -> Language | None:
    """A nullable language column as a :class:`Language`."""
    return None if value is None else Language(int(str(value)))


_INSERT_MESSAGES = (
    "INSERT INTO messages (vessel_id, message_seq, batch_seq, kind, crew, contact, "
    "union_id, lang, body, quick, sealed, latitude, longitude, written_minutes, "
    "accepted_at, state, state_at, unauthenticated, voice_mode, voice_ms, voice, subject)"
)


def _message_row(
    vessel_id: int,
    batch_seq: int,
    envelope: CrewMessage | GrievanceReport | Sos | VoiceNote,
    now: float,
) -> tuple[object, ...]:
    """The values of :data:`_INSERT_MESSAGES` for one message. An SOS starts in state
    ``ALERT``, the rest ``ACCEPTED``."""
    kind = MessageKind.of(envelope)
    assert kind is not None  # every one of these envelopes is a message
    crew = contact = union = lang = quick = lat = lon = unauthenticated = None
    body: str | None = None
    subject: str | None = None
    sealed: bytes | None = None
    voice_mode = voice_ms = None
    voice: bytes | None = None
    if isinstance(envelope, VoiceNote):
        seq, crew, contact = envelope.message_seq, envelope.crew, envelope.contact
        voice_mode, voice_ms, voice = int(envelope.mode), envelope.duration_ms, envelope.frames
    elif isinstance(envelope, CrewMessage):
        seq, crew, contact, quick = (
            envelope.message_seq,
            envelope.crew,
            envelope.contact,
            envelope.quick,
        )
        body, lang, subject = envelope.body, envelope.lang, envelope.subject
    elif isinstance(envelope, GrievanceReport):
        seq, union, sealed = envelope.message_seq, envelope.union, envelope.sealed
    else:
        assert isinstance(envelope, Sos)
        seq, crew, body, lang = (
            envelope.message_seq,
            envelope.crew,
            envelope.note,
            envelope.lang,
        )
        if envelope.position is not None:
            lat, lon = envelope.position
        unauthenticated = 1 if envelope.unauthenticated else None
    state = MessageState.ALERT if kind is MessageKind.SOS else MessageState.ACCEPTED
    return (
        vessel_id,
        seq,
        batch_seq,
        kind.value,
        crew,
        contact,
        union,
        None if lang is None else int(lang),
        body,
        quick,
        sealed,
        lat,
        lon,
        envelope.written_minutes,
        float(now),  # accepted_at
        state.value,
        float(now),  # state_at
        unauthenticated,
        voice_mode,
        voice_ms,
        voice,
        subject,
    )


#: Keys matched by one statement of :func:`keys_filter` (two parameters each, well under
#: the backends' limits on parameters).
KEYS_PER_STATEMENT = 500


def keys_filter(keys: Sequence[tuple[int, int]], prefix: str = "") -> tuple[str, list[int]]:
    """A condition matching the rows of ``keys`` (vessel_id, message_seq), with its
    arguments (``$1`` on); ``prefix`` qualifies the columns (``"m."``)."""
    terms = " OR ".join(
        f"({prefix}vessel_id = ${2 * i + 1} AND {prefix}message_seq = ${2 * i + 2})"
        for i in range(len(keys))
    )
    return f"({terms})", [int(part) for key in keys for part in key]


def keys_filters(keys: Sequence[tuple[int, int]]) -> Iterator[tuple[str, list[int]]]:
    """:func:`keys_filter` for each run of at most :data:`KEYS_PER_STATEMENT` of ``keys``:
    one statement each."""
    for start in range(0, len(keys), KEYS_PER_STATEMENT):
        yield keys_filter(keys[start : start + KEYS_PER_STATEMENT])


#: Family messages still waiting for their delivery, with their batch (for the age on
#: board). The kind and state are written out, not parameters, so that the planners of
#: both backends use the partial index ``messages_awaiting_delivery`` (a parameter cannot
#: prove its predicate): the look-up costs what waits, not every message ever stored.
_AWAITING_DELIVERY = (
    "messages m JOIN batches b ON b.vessel_id = m.vessel_id AND b.batch_seq = m.batch_seq "
    f"WHERE m.kind = '{MessageKind.MESSAGE.value}' AND m.state = '{MessageState.ACCEPTED.value}'"
)
#: When a message was written, on the relay's clock: accepted ashore less its age on board
#: (two readings of the vessel's clock, never below zero).
_WRITTEN_AT = (
    "m.accepted_at - (CASE WHEN b.batch_minutes > m.written_minutes "
    "THEN b.batch_minutes - m.written_minutes ELSE 0 END) * 60"
)
_WRITTEN_AT_COLUMNS = (
    "m.vessel_id, m.message_seq, m.accepted_at, b.batch_minutes, m.written_minutes"
)


def _written_at(row: Row) -> tuple[int, int, float]:
    """(vessel, message_seq, written_at) of a row of ``_WRITTEN_AT_COLUMNS``."""
    return (int(row[0]), int(row[1]), float(row[2]) - max(0, int(row[3]) - int(row[4])) * 60.0)


class Uplink:
    """The uplink's SQL; every method runs in the transaction it is given."""

    # batches ---------------------------------------------------------------------------

    async def stored_batch(self, tx: Tx, vessel_id: int, batch_seq: int) -> StoredBatch | None:
        """The stored batch (vessel, batch_seq), or None."""
        row = await tx.fetchrow(
            "SELECT sha256, has_content FROM batches WHERE vessel_id = $1 AND batch_seq = $2",
            vessel_id,
            batch_seq,
        )
        return None if row is None else StoredBatch(bytes(row[0]), bool(row[1]))

    async def store_batch(
        self, tx: Tx, batch: Batch, sha256: bytes, link_bytes: int, has_content: bool, now: float
    ) -> bool:
        """Record an accepted batch (its envelopes are stored by the other methods); False,
        recording nothing, when the vessel's batch of that number is stored already (then
        :meth:`stored_batch` tells a repeat from other bytes under its number)."""
        rows = await tx.fetch(
            "INSERT INTO batches (vessel_id, batch_seq, sha256, link_bytes, batch_minutes, "
            "envelopes, has_content, state, received_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING "
            "RETURNING batch_seq",
            batch.vessel_id,
            batch.batch_seq,
            sha256,
            link_bytes,
            batch.batch_minutes,
            len(batch.envelopes),
            1 if has_content else 0,
            BatchState.STORED.value,
            float(now),
        )
        return bool(rows)

    async def batch_arrivals(self, tx: Tx, vessel_id: int, since: float) -> list[tuple[float, int]]:
        """(received_at, link_bytes) of the vessel's batches received since ``since``."""
        rows = await tx.fetch(
            "SELECT received_at, link_bytes FROM batches "
            "WHERE vessel_id = $1 AND received_at >= $2 ORDER BY received_at",
            vessel_id,
            float(since),
        )
        return [(float(r[0]), int(r[1])) for r in rows]

    async def link_bytes_since(
        self, tx: Tx, since: float, ids: tuple[int, int] = (0, 2**62)
    ) -> dict[int, int]:
        """Uplink link bytes per vessel (of those with ids in the closed range ``ids``) of
        batches received since ``since``."""
        rows = await tx.fetch(
            "SELECT vessel_id, SUM(link_bytes) FROM batches WHERE received_at >= $1 "
            "AND vessel_id >= $2 AND vessel_id <= $3 GROUP BY vessel_id",
            float(since),
            *ids,
        )
        return {int(r[0]): int(r[1]) for r in rows}

    async def stored_batches_between(
        self, tx: Tx, vessel_id: int, start_minutes: int, end_minutes: int
    ) -> tuple[int, int]:
        """(count, link bytes) of the vessel's stored batches dated in [start, end)."""
        row = await tx.fetchrow(
            "SELECT COUNT(*), COALESCE(SUM(link_bytes), 0) FROM batches WHERE vessel_id = $1 "
            "AND state = $4 AND batch_minutes >= $2 AND batch_minutes < $3",
            vessel_id,
            start_minutes,
            end_minutes,
            BatchState.STORED.value,
        )
        assert row is not None
        return int(row[0]), int(row[1])

    async def batches_received_between(
        self, tx: Tx, vessel_id: int, start_s: float, end_s: float
    ) -> list[float]:
        """When each of the vessel's stored batches arrived ashore, in [start, end) (the
        relay's clock: a link session happened then)."""
        rows = await tx.fetch(
            "SELECT received_at FROM batches WHERE vessel_id = $1 AND state = $4 "
            "AND received_at >= $2 AND received_at < $3 ORDER BY received_at",
            vessel_id,
            float(start_s),
            float(end_s),
            BatchState.STORED.value,
        )
        return [float(r[0]) for r in rows]

    # contacts ---------------------------------------------------------------------------

    async def upsert_contact(
        self, tx: Tx, vessel_id: int, change: ContactBookChange, now: float
    ) -> None:
        """Store a contact book change; an older change (a batch replayed late) never
        overwrites a newer one."""
        await tx.execute(
            "INSERT INTO contacts (vessel_id, crew, contact, channel, address, name, lang, "
            "crew_name, changed_minutes, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (vessel_id, crew, contact) DO UPDATE SET channel = excluded.channel, "
            "address = excluded.address, name = excluded.name, lang = excluded.lang, "
            "crew_name = excluded.crew_name, changed_minutes = excluded.changed_minutes, "
            "updated_at = excluded.updated_at "
            "WHERE contacts.changed_minutes <= excluded.changed_minutes",
            vessel_id,
            change.crew,
            change.contact,
            int(change.channel),
            change.address,
            change.name,
            None if change.contact_lang is None else int(change.contact_lang),
            change.crew_name,
            change.written_minutes,
            float(now),
        )

    async def contact(
        self, tx: Tx, vessel_id: int, crew: int, contact: int
    ) -> ContactRecord | None:
        """A crew member's contact, or None when the vessel never announced it."""
        row = await tx.fetchrow(
            "SELECT crew, contact, channel, address, name, lang, crew_name, vessel_id "
            "FROM contacts WHERE vessel_id = $1 AND crew = $2 AND contact = $3",
            vessel_id,
            crew,
            contact,
        )
        return None if row is None else _contact(row)

    async def contacts_with_address(
        self, tx: Tx, channel: Channel, address: str
    ) -> list[ContactRecord]:
        """Contacts with this address, newest change first."""
        rows = await tx.fetch(
            "SELECT crew, contact, channel, address, name, lang, crew_name, vessel_id "
            "FROM contacts WHERE channel = $1 AND address = $2 ORDER BY updated_at DESC",
            int(channel),
            address,
        )
        return [_contact(r) for r in rows]

    # messages ---------------------------------------------------------------------------

    async def insert_messages(
        self,
        tx: Tx,
        vessel_id: int,
        batch_seq: int,
        envelopes: Sequence[CrewMessage | GrievanceReport | Sos | VoiceNote],
        now: float,
    ) -> list[CrewMessage | GrievanceReport | Sos | VoiceNote]:
        """Store a batch's messages in one statement; those that were new, in order (a
        message the vessel sent before, or twice in this batch, is stored once: the first).
        Run it under the vessel's lock (``links.lock``)."""
        if not envelopes:
            return []
        first: dict[int, CrewMessage | GrievanceReport | Sos | VoiceNote] = {}
        for envelope in envelopes:
            first.setdefault(envelope.message_seq, envelope)
        stored = {
            int(r[0])
            for r in await insert_returning(
                tx,
                _INSERT_MESSAGES,
                [_message_row(vessel_id, batch_seq, e, now) for e in first.values()],
                " ON CONFLICT DO NOTHING RETURNING message_seq",
            )
        }
        return [e for e in first.values() if e.message_seq in stored]

    async def set_message_state(
        self,
        tx: Tx,
        vessel_id: int,
        message_seq: int,
        state: MessageState,
        now: float,
        *,
        only_from: MessageState | None = None,
    ) -> bool:
        """Change a message's state (with ``only_from``: only a message in that state);
        whether a message changed."""
        condition, args = "", [vessel_id, message_seq, state.value, float(now)]
        if only_from is not None:
            condition = " AND state = $5"
            args.append(only_from.value)
        changed = await tx.fetchrow(
            "UPDATE messages SET state = $3, state_at = $4 "
            f"WHERE vessel_id = $1 AND message_seq = $2{condition} RETURNING message_seq",
            *args,
        )
        return changed is not None

    async def set_messages_state(
        self, tx: Tx, keys: Sequence[tuple[int, int]], state: MessageState, now: float
    ) -> None:
        """:meth:`set_message_state` for several messages ``(vessel, message_seq)``, one
        statement per 500."""
        for where, args in keys_filters(keys):
            n = len(args)
            await tx.execute(
                f"UPDATE messages SET state = ${n + 1}, state_at = ${n + 2} WHERE {where}",
                *args,
                state.value,
                float(now),
            )

    async def messages(self, tx: Tx, vessel_id: int) -> list[MessageRecord]:
        """A vessel's stored messages, by sequence number."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, batch_seq, kind, crew, contact, union_id, lang, "
            "body, quick, sealed, latitude, longitude, written_minutes, accepted_at, state "
            "FROM messages WHERE vessel_id = $1 ORDER BY message_seq",
            vessel_id,
        )
        return [
            MessageRecord(
                vessel_id=int(r[0]),
                message_seq=int(r[1]),
                batch_seq=int(r[2]),
                kind=MessageKind(r[3]),
                crew=r[4],
                contact=r[5],
                union=r[6],
                lang=language(r[7]),
                body=r[8],
                quick=r[9],
                sealed=None if r[10] is None else bytes(r[10]),
                position=None if r[11] is None else (int(r[11]), int(r[12])),
                written_minutes=int(r[13]),
                accepted_at=float(r[14]),
                state=MessageState(r[15]),
            )
            for r in rows
        ]

    async def count_messages(self, tx: Tx, vessel_id: int | None = None) -> int:
        """How many messages are stored (for one vessel, or all)."""
        if vessel_id is None:
            row = await tx.fetchrow("SELECT COUNT(*) FROM messages")
        else:
            row = await tx.fetchrow("SELECT COUNT(*) FROM messages WHERE vessel_id = $1", vessel_id)
        assert row is not None
        return int(row[0])

    async def kinds(
        self, tx: Tx, keys: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], MessageKind]:
        """The kind of each stored message of ``keys`` (vessel, message_seq)."""
        if not keys:
            return {}
        where, args = keys_filter(keys)
        rows = await tx.fetch(
            f"SELECT vessel_id, message_seq, kind FROM messages WHERE {where}", *args
        )
        return {(int(r[0]), int(r[1])): MessageKind(r[2]) for r in rows}

    async def to_deliver(
        self, tx: Tx, keys: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], MessageToDeliver]:
        """The messages of ``keys`` (vessel, message_seq), each with its contact."""
        if not keys:
            return {}
        where, args = keys_filter(keys, "m.")
        rows = await tx.fetch(
            "SELECT m.vessel_id, m.message_seq, m.kind, m.crew, m.contact, m.union_id, m.lang, "
            "m.body, m.quick, m.sealed, m.accepted_at, c.channel, c.address, c.lang, "
            "c.crew_name, m.voice_mode, m.voice_ms, m.voice, m.subject "
            "FROM messages m LEFT JOIN contacts c ON c.vessel_id = m.vessel_id "
            f"AND c.crew = m.crew AND c.contact = m.contact WHERE {where}",
            *args,
        )
        return {
            (int(r[0]), int(r[1])): MessageToDeliver(
                kind=MessageKind(r[2]),
                crew=optional_int(r[3]),
                contact=optional_int(r[4]),
                union=optional_int(r[5]),
                lang=language(r[6]),
                body=r[7],
                quick=optional_int(r[8]),
                sealed=None if r[9] is None else bytes(r[9]),
                accepted_at=float(r[10]),
                channel=None if r[11] is None else Channel(int(r[11])),
                address=r[12],
                contact_lang=language(r[13]),
                crew_name=r[14],
                voice=None
                if r[15] is None
                else CodedVoice(VoiceMode(int(r[15])), int(r[16]), bytes(r[17])),
                subject=r[18],
            )
            for r in rows
        }

    async def crew_message_text_bytes(
        self, tx: Tx, vessel_id: int, start_minutes: int, end_minutes: int
    ) -> list[tuple[int, int, int]]:
        """(message_seq, crew, text bytes) of the vessel's crew messages written in
        [start, end) (UTC minutes): counted from the content while it is kept, from
        ``text_bytes`` once it was purged (:meth:`purge_content`), so a report built after
        a purge counts what one built before did."""
        rows = await tx.fetch(
            "SELECT message_seq, crew, body, quick, voice, text_bytes, purged_at, subject "
            "FROM messages "
            "WHERE vessel_id = $1 AND kind = $4 AND written_minutes >= $2 "
            "AND written_minutes < $3 ORDER BY message_seq",
            vessel_id,
            start_minutes,
            end_minutes,
            MessageKind.MESSAGE.value,
        )
        found = []
        for r in rows:
            if r[6] is not None:
                text_bytes = int(r[5] or 0)
            else:
                voice = None if r[4] is None else bytes(r[4])
                text_bytes = message_text_bytes(r[2], optional_int(r[3]), voice, r[7])
            found.append((int(r[0]), int(r[1]), text_bytes))
        return found

    async def crew_messages_written_between(
        self, tx: Tx, vessel_id: int, start_minutes: int, end_minutes: int
    ) -> list[tuple[int, int]]:
        """(crew, written_minutes) of the vessel's family messages (text, quick or voice)
        written in [start, end) (UTC minutes, the vessel's clock)."""
        rows = await tx.fetch(
            "SELECT crew, written_minutes FROM messages WHERE vessel_id = $1 AND kind = $4 "
            "AND written_minutes >= $2 AND written_minutes < $3 ORDER BY message_seq",
            vessel_id,
            start_minutes,
            end_minutes,
            MessageKind.MESSAGE.value,
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    # time to live and retention (issue 23) --------------------------------------------------

    async def undelivered_messages_older_than(
        self,
        tx: Tx,
        before: float,
        limit: int,
        *,
        vessel_id: int | None = None,
        excluding: Sequence[int] = (),
    ) -> list[tuple[int, int, float]]:
        """(vessel, message_seq, written_at) of family messages still waiting for their
        delivery (state ``accepted``) that were written before ``before`` (seconds).

        ``written_at`` is on the relay's clock: the time the message was accepted ashore
        less the time it waited on board, which is the difference of two readings of the
        vessel's clock (when it was written and when its batch was made). A vessel whose
        clock is wrong by days therefore neither expires its messages early nor keeps them
        late; only the age on board is taken from it, never below zero. Newest first, so
        that messages whose age on board is implausible (a clock that said 1970 when they
        were written) come last and never hold back the others.

        ``vessel_id``: that vessel's only; ``excluding``: not those vessels'."""
        only = ""
        args: list[object] = []
        if vessel_id is not None:
            only += " AND m.vessel_id = $3"
            args.append(vessel_id)
        for number in excluding:
            args.append(int(number))
            only += f" AND m.vessel_id <> ${2 + len(args)}"
        rows = await tx.fetch(
            f"SELECT {_WRITTEN_AT_COLUMNS} FROM {_AWAITING_DELIVERY} "
            f"AND {_WRITTEN_AT} < $1{only} "
            f"ORDER BY {_WRITTEN_AT} DESC, m.vessel_id, m.message_seq LIMIT $2",
            float(before),
            limit,
            *args,
        )
        return [_written_at(row) for row in rows]

    async def undelivered_written_at(
        self, tx: Tx, keys: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int, float]]:
        """(vessel, message_seq, written_at) of those of ``keys`` that are family messages
        still waiting for their delivery; ``written_at`` as in
        :meth:`undelivered_messages_older_than`."""
        if not keys:
            return []
        where, args = keys_filter(keys, "m.")
        rows = await tx.fetch(
            f"SELECT {_WRITTEN_AT_COLUMNS} FROM {_AWAITING_DELIVERY} AND {where}", *args
        )
        return [_written_at(row) for row in rows]

    async def content_ended_before(
        self, tx: Tx, before: float, limit: int
    ) -> list[tuple[int, int]]:
        """(vessel, message_seq) of family messages whose delivery ended (delivered or
        failed) before ``before`` and whose content is still kept, oldest ending first."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq FROM messages WHERE kind = 'message' "
            "AND purged_at IS NULL AND state IN ('delivered', 'failed') AND state_at < $1 "
            "ORDER BY state_at, vessel_id, message_seq LIMIT $2",
            float(before),
            limit,
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    async def purge_content(
        self, tx: Tx, keys: Sequence[tuple[int, int]], now: float
    ) -> list[tuple[int, int, int]]:
        """Forget the content of the family messages ``keys`` whose delivery ended: their
        text, subject, quick-message code and speech; their text bytes are kept for the compliance
        report, and every other column (who, when, state, sizes) stays. Returns
        (vessel, message_seq, content bytes purged) of those purged now (a message purged
        before, still open, or not a family message is left as it is)."""
        if not keys:
            return []
        where, args = keys_filter(keys)
        n = len(args)
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, body, quick, voice, subject FROM messages "
            f"WHERE {where} AND kind = ${n + 1} AND purged_at IS NULL "
            f"AND state IN (${n + 2}, ${n + 3})",
            *args,
            MessageKind.MESSAGE.value,
            MessageState.DELIVERED.value,
            MessageState.FAILED.value,
        )
        purged = []
        for r in rows:
            body, quick = r[2], optional_int(r[3])
            voice = None if r[4] is None else bytes(r[4])
            subject = r[5]
            text_bytes = message_text_bytes(body, quick, voice, subject)
            content_bytes = (
                len(voice or b"")
                + len((body or "").encode("utf-8"))
                + len((subject or "").encode("utf-8"))
            )
            purged.append((int(r[0]), int(r[1]), text_bytes, content_bytes))
        await tx.executemany(
            "UPDATE messages SET body = NULL, quick = NULL, voice = NULL, subject = NULL, "
            "text_bytes = $3, "
            "purged_at = $4 WHERE vessel_id = $1 AND message_seq = $2 AND purged_at IS NULL",
            [(vessel, seq, text_bytes, float(now)) for vessel, seq, text_bytes, _ in purged],
        )
        return [(vessel, seq, content) for vessel, seq, _, content in purged]

    async def is_purged(self, tx: Tx, vessel_id: int, message_seq: int) -> bool:
        """Whether the message's content was purged (it can never be delivered again)."""
        row = await tx.fetchrow(
            "SELECT purged_at FROM messages WHERE vessel_id = $1 AND message_seq = $2",
            vessel_id,
            message_seq,
        )
        return row is not None and row[0] is not None

    # grievance reports --------------------------------------------------------------------

    async def union_reports(self, tx: Tx, union: int) -> list[tuple[int, int, bytes, float]]:
        """(vessel, message_seq, sealed, accepted_at) of every report sealed to ``union``,
        in order of arrival."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, sealed, accepted_at FROM messages "
            "WHERE kind = $2 AND union_id = $1 AND sealed IS NOT NULL "
            "ORDER BY accepted_at, vessel_id, message_seq",
            union,
            MessageKind.GRIEVANCE.value,
        )
        return [(int(r[0]), int(r[1]), bytes(r[2]), float(r[3])) for r in rows]

    async def report_sealed(self, tx: Tx, vessel_id: int, message_seq: int) -> bytes | None:
        """The sealed bytes of a stored grievance report (None: no such report)."""
        row = await tx.fetchrow(
            "SELECT sealed FROM messages WHERE vessel_id = $1 AND message_seq = $2 AND kind = $3",
            vessel_id,
            message_seq,
            MessageKind.GRIEVANCE.value,
        )
        return None if row is None or row[0] is None else bytes(row[0])

    async def vessel_reports_sealed(self, tx: Tx, vessel_id: int) -> list[bytes]:
        """The sealed bytes of every grievance report (and slot) of a vessel."""
        rows = await tx.fetch(
            "SELECT sealed FROM messages WHERE vessel_id = $1 AND kind = $2 AND sealed IS NOT NULL",
            vessel_id,
            MessageKind.GRIEVANCE.value,
        )
        return [bytes(r[0]) for r in rows]

    async def slot_crews(self, tx: Tx, since: float) -> list[tuple[int, int]]:
        """(vessel, crew) of every crew member whose uplink slot arrived since ``since``
        (read from the slot header in the clear: nothing is opened)."""
        rows = await tx.fetch(
            "SELECT DISTINCT vessel_id, substr(sealed, 1, 6) FROM messages "
            "WHERE kind = $2 AND sealed IS NOT NULL AND accepted_at >= $1",
            float(since),
            MessageKind.GRIEVANCE.value,
        )
        found: set[tuple[int, int]] = set()
        for vessel, head in rows:
            head = bytes(head)
            if len(head) == 6 and head.startswith(SLOT_MAGIC):
                found.add((int(vessel), int.from_bytes(head[4:6], "big")))
        return sorted(found)

    # SOS ----------------------------------------------------------------------------------

    async def open_sos(self, tx: Tx) -> list[tuple[int, int, float]]:
        """(vessel, message_seq, accepted_at) of every SOS still in state ``ALERT``."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, accepted_at FROM messages "
            "WHERE kind = $1 AND state = $2",
            MessageKind.SOS.value,
            MessageState.ALERT.value,
        )
        return [(int(r[0]), int(r[1]), float(r[2])) for r in rows]

    async def sos(self, tx: Tx, vessel_id: int, message_seq: int) -> SosMessage | None:
        """What an alert says about an SOS (the crew member's name from the contact book)."""
        row = await tx.fetchrow(
            "SELECT crew, body, lang, latitude, longitude, written_minutes, accepted_at, "
            "unauthenticated, (SELECT c.crew_name FROM contacts c "
            "WHERE c.vessel_id = m.vessel_id AND c.crew = m.crew "
            "AND c.crew_name IS NOT NULL ORDER BY c.updated_at DESC LIMIT 1) "
            "FROM messages m WHERE vessel_id = $1 AND message_seq = $2 AND kind = $3",
            vessel_id,
            message_seq,
            MessageKind.SOS.value,
        )
        if row is None:
            return None
        return SosMessage(
            crew=optional_int(row[0]),
            crew_name=row[8],
            note=row[1],
            lang=language(row[2]),
            position=None if row[3] is None else (int(row[3]), int(row[4])),
            written_minutes=int(row[5]),
            accepted_at=float(row[6]),
            unauthenticated=bool(row[7]),
        )


def _contact(r: Row) -> ContactRecord:
    return ContactRecord(
        int(r[7]), int(r[0]), int(r[1]), Channel(int(r[2])), r[3], r[4], language(r[5]), r[6]
    )
