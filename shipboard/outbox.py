"""Outbox: the vessel's messages on their way ashore, their batches, and the downlink seen.

A repository of the vessel database (:mod:`shipboard.database`): it owns the tables
``messages``, ``batches``, ``batch_messages``, ``downlink_seen``, ``downlink_refused``
and ``meta`` (migration set ``outbox``, :mod:`shipboard.schema`). Every public method
that writes is one transaction of the database, so when it returns its change survives
a power cut or a SIGKILL; intake answers a crew member (SMTP 250, HTTP 201) only after
``accept_*`` returned. If the disk is full, read-only or broken, the method raises
:class:`~shipboard.errors.OutboxUnavailable` and nothing was stored.

What it promises:

- **Accepted means committed**, with the message number (the idempotency key, with the
  vessel id) assigned once, at intake.
- **A batch's bytes never change**: its number is allocated in the transaction that
  moves its messages to ``batched`` and stores its bytes; every resend is those bytes.
- **A downlink batch is applied whole or not at all**, once (duplicates change nothing),
  and its receipts, replies and case notes reach the inbox (:mod:`shipboard.inbox`) in
  the same transaction.

Message states and their changes live in :mod:`shipboard.states`; this module asks
:func:`~shipboard.states.next_state` before it writes any new state.

Two neighbours are reached inside the outbox's own transactions, through small ports: the
crew register's contact book (:class:`ContactAnnouncements`: a batch announces new
contacts) and the inbox (:class:`DownlinkInbox`).

Grievance reports reach the outbox only through the grievance lane (:mod:`shipboard.lane`):
items of kind ``lane``, each one sealed block of a period, report or cover, naming no crew
member, no union and no report. Reports that travelled on their own before the lane
(kind ``grievance``) are stored only sealed (to the union's key) and carry a
``reporter_tag`` (an HMAC keyed by a secret derived from the crew member's PIN at sign-in)
so that only the signed-in reporter finds them.

Concurrency and time: synchronous and thread-safe (the database's lock); async code calls
it through ``asyncio.to_thread``. Every ``now`` is wall-clock seconds since 1970-01-01 UTC
(``time.time()``); on the wire, times become whole minutes (``int(now // 60)``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import ClassVar, Protocol
from zoneinfo import ZoneInfo

from protocol.batch import Batch, Direction, encode_batch
from protocol.codebook import Codebook
from protocol.compact import LinkKeys, encode_compact
from protocol.compliance import message_text_bytes
from protocol.envelopes import (
    BatchAck,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryFailure,
    DeliveryReceipt,
    Envelope,
    FailureReason,
    GrievanceReport,
    LaneBlock,
    ReceiptStage,
    Sos,
    VoiceNote,
    acknowledges_only,
)
from protocol.errors import LimitExceeded, LocalProtocolError, MalformedBatch, Reason
from protocol.languages import Language
from protocol.months import Month
from protocol.replay import RangeSet
from protocol.signing import SigningKey
from protocol.voice import VoiceMode
from shipboard.crew import ContactChange, CrewRegister
from shipboard.database import OnDatabase, Transaction, VesselDatabase
from shipboard.errors import NothingToSend, QuotaExceeded
from shipboard.inbox import DeliveryStage, Filed, Inbox
from shipboard.lane import LaneItem
from shipboard.sessions_log import LinkSession, SessionsLog
from shipboard.states import (
    OPEN_BATCH_STATES,
    RESERVED_KINDS,
    TRANSITIONS,
    BatchState,
    MessageEvent,
    MessageKind,
    MessageState,
    next_state,
)

logger = logging.getLogger(__name__)

#: Message kinds as stored (:class:`~shipboard.states.MessageKind`).
KINDS = tuple(MessageKind)
#: What a quick message (a code for a fixed sentence) counts against the quota.
QUICK_MESSAGE_BYTES = 2
#: Most ranges of applied downlink batches that one BatchAck names (the shore resends
#: what a BatchAck does not cover; a protocol BatchAck holds at most 4,096).
MAX_ACK_RANGES = 1000
#: Most refused downlink batches that one BatchAck names (the rest go in the next one).
MAX_ACK_REJECTED = 256
#: The quota month's time zone until the vessel's is set (:meth:`Outbox.use_time_zone`).
UTC_ZONE = ZoneInfo("UTC")

_OPEN = tuple(str(state) for state in OPEN_BATCH_STATES)


# --- the neighbours the outbox writes to inside its own transactions ----------------------


class ContactAnnouncements(Protocol):
    """The crew register's contact book, as a batch announces it to the shore."""

    def unannounced_contacts(self, tx: Transaction) -> Sequence[ContactChange]:
        """Contacts no batch has announced yet."""
        ...

    def mark_announced(self, tx: Transaction, contacts: Sequence[int], batch_seq: int) -> None:
        """Batch ``batch_seq`` announces these contacts."""
        ...

    def announce_again(
        self, tx: Transaction, *, batch_seq: int | None = None, contact: int | None = None
    ) -> None:
        """Announce again what a refused batch announced, or one contact the shore lacks."""
        ...


class DownlinkInbox(Protocol):
    """The crew's inbox, as a downlink batch fills it."""

    def receive(self, tx: Transaction, envelope: Envelope, now: float) -> Filed:
        """Keep an envelope meant for the crew (reply, case update, slot item, quota)."""
        ...

    def record_stage(
        self,
        tx: Transaction,
        *,
        message_seq: int,
        crew: int | None,
        stage: DeliveryStage,
        written_minutes: int,
        now: float,
        reason: FailureReason | None = None,
        detail: str | None = None,
    ) -> None:
        """Tell the crew member that one of their messages reached ``stage``."""
        ...


# --- values handed out -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """One message waiting for a batch, as the scheduler sees it (no text, no content)."""

    message_seq: int
    kind: MessageKind
    crew: int | None  # None for a grievance report: the outbox does not know the reporter
    text_bytes: int  # what counts against the crew member's quota (0 outside quota)
    payload_bytes: int  # bytes of text, sealed report or voice that will travel
    accepted_at: float
    lang: str | None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A batch whose bytes are stored and which the shore has not acknowledged yet."""

    batch_seq: int
    data: bytes
    made_at: float
    send_count: int
    #: It carries only a ``BatchAck`` (no message, no contact change): nobody acknowledges
    #: such a batch for its own sake, so no session waits for it, and once the broker took
    #: it (``send_count``) it is not sent again (``protocol.exchange``) ...
    ack_only: bool = False
    #: ... unless a later batch was acknowledged (or refused) since it was last sent: the
    #: shore moved past it, so it was lost on the way (``OfferedBatch.overtaken``).
    overtaken: bool = False


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """What intake tells the crew member once their message is committed."""

    message_seq: int
    accepted_at: float
    text_bytes: int
    #: When Zawgyi detection was unsure (shipboard.intake.read_text): the text as typed,
    #: and the other reading, for the crew member to compare with what is sent.
    original: str | None = None
    alternative: str | None = None


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """A crew member's text quota for one month (month as YYYYMM, in the vessel's time zone)."""

    crew: int
    month: int
    used_bytes: int
    quota_bytes: int

    @property
    def remaining_bytes(self) -> int:
        """Bytes of text left this month (never negative)."""
        return max(0, self.quota_bytes - self.used_bytes)


@dataclass(frozen=True, slots=True)
class DownlinkResult:
    """What one downlink batch changed."""

    batch_seq: int
    duplicate: bool
    acknowledged_batches: tuple[int, ...] = ()
    rejected_batches: tuple[int, ...] = ()
    receipts: int = 0
    inbox_entries: int = 0
    ignored: int = 0


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    """Counters for the status page and the logs (no content, no names)."""

    messages_by_state: Mapping[str, int]
    batches_unacknowledged: int
    batches_total: int
    link_bytes_made: int
    downlink_batches_applied: int
    downlink_ack_pending: bool
    ignored_downlink_envelopes: int = 0


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One of a crew member's family messages, as their page lists it (no text)."""

    message_seq: int
    contact: int | None
    quick: int | None
    state: MessageState
    accepted_at: float
    #: Milliseconds of speech, for a voice message (None for a written one).
    voice_ms: int | None = None


@dataclass(frozen=True, slots=True)
class KeptMessage:
    """One of a crew member's family messages as kept on board, with its text, for their
    own conversation view (never logged): the text or quick code, the state, when each
    stage was reached (seconds, None if not yet) and the failure reason code."""

    message_seq: int
    contact: int | None
    body: str | None
    quick: int | None
    lang: str | None
    state: MessageState
    accepted_at: float
    sent_at: float | None
    acknowledged_at: float | None
    delivered_at: float | None
    failed_at: float | None
    failure_reason: int | None


@dataclass(frozen=True, slots=True)
class CrewTextBytes:
    """One crew member's family-message text bytes of a month, by where they got to."""

    offered: int  # accepted on board
    sent: int  # the shore has them (acknowledged, delivered, or failed after the ack)
    delivered: int
    failed: int


@dataclass(frozen=True, slots=True)
class MonthFigures:
    """What the outbox knows of one month (the agent's statement, :mod:`shipboard.report`)."""

    #: Family messages accepted in the month, per crew member who wrote any.
    text_bytes: Mapping[int, CrewTextBytes]
    #: (batch number, bytes) of acknowledged batches carrying the month's family messages.
    acknowledged_batches: tuple[tuple[int, bytes], ...]
    #: Link bytes of the uplink batches made in the month, each send counted.
    pushed_bytes: int
    #: Days (whole UTC days since 1970) on which a family message or an SOS was accepted.
    active_days: frozenset[int]


@dataclass(frozen=True, slots=True)
class CrewLinkFigures:
    """Each crew member's family-message bytes per link, as the outbox recorded them
    (``batch_sends``); links by the profile name of the session (None: a send recorded
    without one). The rules (:meth:`Outbox.crew_link_figures`):

    - ``text_bytes``: text bytes of the crew member's family messages accepted in the
      month that the shore acknowledged, under the link of their batch's last send (the
      send the shore acknowledged). Summed over links it is the crew member's sent bytes,
      less messages in batches sent before sends were recorded.
    - ``wire_bytes``: for every send in the month of a batch the shore acknowledged, the
      batch's bytes split among the messages in it in proportion to their payload bytes
      (text bytes for a family message, voice bytes for a voice note; the note and sealed
      bytes for an SOS, a report or a lane block, at least 1 each), each send counted
      (retransmissions cost). The crew member gets the shares of their family messages;
      the shares of SOS, reports and lane blocks go to nobody. Exact fractions.
    - ``sent_bytes``: all bytes sent in the month per link, every batch (acknowledged or
      not, whatever it carried): what the attributed shares are part of.
    """

    text_bytes: Mapping[tuple[int, str | None], int]
    wire_bytes: Mapping[tuple[int, str | None], Fraction]
    sent_bytes: Mapping[str | None, int]


def month_of(now: float, time_zone: ZoneInfo = UTC_ZONE) -> int:
    """The quota month (YYYYMM) of a wall-clock time, in the vessel's ``time_zone``
    (the rule is :mod:`protocol.months`'; UTC until the vessel's zone is set)."""
    return Month.of(now, time_zone).key


def reporter_tag(case_key: bytes, message_seq: int) -> bytes:
    """The tag that lets the signed-in reporter (and no one else) find their case."""
    return hmac.new(case_key, b"case:%d" % message_seq, hashlib.sha256).digest()


# --- downlink batch numbers seen (protocol.replay.RangeSet), as rows of the table ---------


def _seen_rows(db: Transaction) -> RangeSet:
    """The downlink batch numbers already applied (table ``downlink_seen``)."""
    seen = RangeSet()
    for first, last in db.execute("SELECT first, last FROM downlink_seen"):
        seen.add_range(int(first), int(last))
    return seen


def _store_seen(db: Transaction, seen: RangeSet) -> None:
    """Write ``seen`` as the rows of ``downlink_seen``: ``(1, up_to)`` first, then its ranges."""
    rows = ([(1, seen.up_to)] if seen.up_to else []) + list(seen.ranges)
    db.execute("DELETE FROM downlink_seen")
    db.executemany("INSERT INTO downlink_seen (first, last) VALUES (?, ?)", rows)


def _meta(db: Transaction, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _set_meta(db: Transaction, key: str, value: int) -> None:
    db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))


# --- the outbox --------------------------------------------------------------------------


class Outbox:
    """The durable outbox of one vessel (see the module docstring for its promises)."""

    def __init__(
        self,
        on: OnDatabase,
        vessel_id: int,
        *,
        contacts: ContactAnnouncements | None = None,
        inbox: DownlinkInbox | None = None,
    ) -> None:
        self.database: VesselDatabase = on.database
        self.vessel_id = vessel_id
        self._contacts: ContactAnnouncements = (
            contacts if contacts is not None else CrewRegister(self.database)
        )
        self._inbox: DownlinkInbox = inbox if inbox is not None else Inbox(self.database)
        self._ignored_downlink = 0
        #: The zone whose calendar months the quotas count in (:meth:`use_time_zone`).
        self.time_zone: ZoneInfo = UTC_ZONE
        #: Called with ``now`` before pending messages are read (a test's hook; the lane
        #: is released by the link loop, :meth:`shipboard.lane.VesselLane.release_due`).
        self.before_pending: Callable[[float], object] | None = None

    @classmethod
    def open(cls, path: Path, vessel_id: int, *, extra_pragmas: Sequence[str] = ()) -> Outbox:
        """Open (or create) the vessel database at ``path`` and return its outbox.

        The outbox then holds the database: :meth:`close` closes it. ``extra_pragmas`` are
        run after the standard ones; tests use them to simulate a full disk
        (``max_page_count``) or a read-only one (``query_only``).
        """
        return cls(VesselDatabase.open(path, extra_pragmas=extra_pragmas), vessel_id)

    @property
    def path(self) -> Path:
        """The database file."""
        return self.database.path

    def use_time_zone(self, time_zone: ZoneInfo) -> None:
        """Count quota months in ``time_zone`` (the vessel's; intake sets it from the config).

        Messages already accepted keep the month they were charged to."""
        self.time_zone = time_zone

    def _month(self, now: float) -> int:
        return month_of(now, self.time_zone)

    # the database's seam ----------------------------------------------------------------

    def transaction(self, what: str = "store this") -> AbstractContextManager[Transaction]:
        """One write transaction of the database (:meth:`VesselDatabase.transaction`)."""
        return self.database.transaction(what)

    def reading(self) -> AbstractContextManager[Transaction]:
        """The database's connection, for reads (:meth:`VesselDatabase.reading`)."""
        return self.database.reading()

    def checkpoint(self) -> None:
        """Empty the database's WAL into its file (:meth:`VesselDatabase.checkpoint`)."""
        self.database.checkpoint()

    def close(self) -> None:
        """Checkpoint and close the database this outbox stands on."""
        self.database.close()

    # intake ------------------------------------------------------------------------------

    def quota_status(self, crew: int, quota_bytes: int, now: float) -> QuotaStatus:
        """How much of this month's text quota the crew member has used."""
        month = self._month(now)
        with self.database.reading() as db:
            used = self._used_bytes(db, crew, month)
        return QuotaStatus(crew, month, used, quota_bytes)

    @staticmethod
    def _used_bytes(db: Transaction, crew: int, month: int) -> int:
        row = db.execute(
            "SELECT COALESCE(SUM(text_bytes), 0) FROM messages "
            "WHERE crew = ? AND month = ? AND kind = ?",
            (crew, month, MessageKind.MESSAGE),
        ).fetchone()
        return int(row[0])

    def quota_ledger(self, now: float) -> dict[int, int]:
        """Text bytes used this month per crew member (the scheduler's quota ledger)."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT crew, SUM(text_bytes) FROM messages "
                "WHERE month = ? AND kind = ? GROUP BY crew",
                (self._month(now), MessageKind.MESSAGE),
            ).fetchall()
        return {int(crew): int(used) for crew, used in rows}

    def accept_message(
        self,
        *,
        crew: int,
        contact: int,
        lang: Language,
        now: float,
        quota_bytes: int,
        body: str | None = None,
        quick: int | None = None,
    ) -> AcceptedMessage:
        """Commit a crew member's message to a family contact, within their monthly quota.

        Raises :class:`QuotaExceeded` (nothing stored) when the quota does not cover it.
        """
        (accepted,) = self.accept_messages(
            crew=crew,
            contacts=[contact],
            lang=lang,
            now=now,
            quota_bytes=quota_bytes,
            body=body,
            quick=quick,
        )
        return accepted

    def accept_messages(
        self,
        *,
        crew: int,
        contacts: Sequence[int],
        lang: Language,
        now: float,
        quota_bytes: int,
        body: str | None = None,
        quick: int | None = None,
        subject: str | None = None,
    ) -> list[AcceptedMessage]:
        """Commit one message to several contacts in one transaction (all or nothing).

        Each contact gets its own message number; the quota must cover all of them. A
        ``subject`` (a mail's Subject line, with a text body only) counts with the text.
        """
        if (body is None) == (quick is None):
            raise ValueError("a message has either a text body or a quick code")
        if subject is not None and body is None:
            raise ValueError("a message's subject goes with a text body only")
        if not contacts:
            raise ValueError("a message needs at least one contact")
        if body is not None:
            text_bytes = message_text_bytes(body, None, subject=subject)  # the shore's rule
        else:
            text_bytes = QUICK_MESSAGE_BYTES
        needed = text_bytes * len(contacts)
        month = self._month(now)
        with self.database.transaction("save the message") as db:
            self._check_quota(db, crew, month, needed, quota_bytes)
            seqs = [
                self._insert(
                    db,
                    kind=MessageKind.MESSAGE,
                    crew=crew,
                    contact=contact,
                    lang=lang.code,
                    body=body,
                    quick=quick,
                    subject=subject,
                    text_bytes=text_bytes,
                    month=month,
                    now=now,
                )
                for contact in contacts
            ]
        for seq in seqs:
            logger.info("message %d accepted (%d text bytes)", seq, text_bytes)
        return [AcceptedMessage(seq, now, text_bytes) for seq in seqs]

    @classmethod
    def _check_quota(
        cls, db: Transaction, crew: int, month: int, needed: int, quota_bytes: int
    ) -> None:
        """The one quota rule of family messages, text and voice alike: what the crew
        member used this month plus ``needed`` must fit ``quota_bytes``."""
        used = cls._used_bytes(db, crew, month)
        if used + needed > quota_bytes:
            remaining = max(0, quota_bytes - used)
            raise QuotaExceeded(
                f"Not enough of this month's quota is left: {remaining} bytes left, this "
                f"message needs {needed}. Write a shorter message or wait for next month.",
                remaining_bytes=remaining,
                needed_bytes=needed,
            )

    def accept_voice_note(
        self,
        *,
        crew: int,
        contact: int,
        mode: VoiceMode,
        duration_ms: int,
        frames: bytes,
        now: float,
        quota_bytes: int,
    ) -> AcceptedMessage:
        """Commit a crew member's voice note to a family contact, within their quota.

        Its Codec2 bytes count against the monthly quota like a text's UTF-8 bytes.
        Raises :class:`QuotaExceeded` (nothing stored) when the quota does not cover it.
        """
        # Built once here so that a note the link would refuse is refused at intake.
        VoiceNote(
            message_seq=0,
            crew=crew,
            contact=contact,
            mode=mode,
            duration_ms=duration_ms,
            frames=frames,
            written_minutes=int(now // 60),
        )
        voice_bytes = message_text_bytes(None, None, frames)  # the rule the shore counts by
        month = self._month(now)
        with self.database.transaction("save the voice message") as db:
            self._check_quota(db, crew, month, voice_bytes, quota_bytes)
            seq = self._insert(
                db,
                kind=MessageKind.MESSAGE,
                crew=crew,
                contact=contact,
                voice_mode=int(mode),
                voice_ms=duration_ms,
                voice=frames,
                text_bytes=voice_bytes,
                month=month,
                now=now,
            )
        logger.info(
            "voice message %d accepted (%d ms, mode %s, %d bytes)",
            seq,
            duration_ms,
            mode.label,
            voice_bytes,
        )
        return AcceptedMessage(seq, now, voice_bytes)

    def accept_grievance(
        self, *, union_id: int, sealed: bytes, case_key: bytes, now: float
    ) -> AcceptedMessage:
        """Commit a sealed grievance report (outside every quota; the reporter is not named)."""
        with self.database.transaction("save the report") as db:
            seq = self._insert(
                db,
                kind=MessageKind.GRIEVANCE,
                union_id=union_id,
                sealed=sealed,
                text_bytes=0,
                month=self._month(now),
                now=now,
            )
            db.execute(
                "UPDATE messages SET reporter_tag = ? WHERE message_seq = ?",
                (reporter_tag(case_key, seq), seq),
            )
        return AcceptedMessage(seq, now, 0)

    def accept_sos(
        self,
        *,
        crew: int,
        now: float,
        lang: Language | None = None,
        note: str | None = None,
        position: tuple[int, int] | None = None,
        signed_in: bool = True,
    ) -> AcceptedMessage:
        """Commit an SOS (outside every quota; the scheduler sends it at once).

        ``signed_in=False``: sent without a PIN; ``crew`` is only the number typed (it
        travels flagged as unauthenticated and is in nobody's inbox on board)."""
        latitude, longitude = position if position is not None else (None, None)
        with self.database.transaction("save the SOS") as db:
            seq = self._insert(
                db,
                kind=MessageKind.SOS,
                crew=crew if signed_in else None,
                typed_crew=None if signed_in else crew,
                lang=(lang or Language.UND).code if note else None,
                body=note,
                latitude=latitude,
                longitude=longitude,
                text_bytes=0,
                month=self._month(now),
                now=now,
            )
        logger.warning("SOS %d accepted", seq)
        return AcceptedMessage(seq, now, 0)

    @staticmethod
    def _insert(db: Transaction, *, now: float, **columns: object) -> int:
        columns["state"] = MessageState.ACCEPTED
        columns["accepted_at"] = now
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        cursor = db.execute(
            f"INSERT INTO messages ({names}) VALUES ({marks})", tuple(columns.values())
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    # the grievance lane's released blocks (shipboard.lane) -------------------------------

    def add_lane_items(self, tx: Transaction, items: Sequence[LaneItem], at: float) -> list[int]:
        """Queue blocks released from the grievance lane, inside the release's transaction
        (``tx``): one item of kind ``lane`` each, accepted ``at`` the end of its period.
        Outside every quota and budget (the scheduler's reserved lane); no crew, no union."""
        month = self._month(at)
        return [
            self._insert(
                tx,
                kind=MessageKind.LANE,
                sealed=item.block,
                lane_period=item.period,
                lane_index=item.index,
                text_bytes=0,
                month=month,
                now=at,
            )
            for item in items
        ]

    # what the scheduler and the link call ------------------------------------------------

    def pending_messages(self, now: float) -> tuple[PendingMessage, ...]:
        """Messages waiting for a batch, oldest first (a snapshot for the scheduler).

        A daily slot of the release before the lane waits until its day is over (its
        ``accepted_at`` is its release time). Lane items are queued when their period is
        over (:mod:`shipboard.lane`), so they are all due for a batch."""
        if self.before_pending is not None:
            self.before_pending(now)
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT message_seq, kind, crew, text_bytes, accepted_at, lang, "
                "COALESCE(LENGTH(CAST(body AS BLOB)), 0) + COALESCE(LENGTH(sealed), 0) "
                "+ COALESCE(LENGTH(voice), 0) + COALESCE(LENGTH(CAST(subject AS BLOB)), 0) "
                "FROM messages WHERE state = ? "
                "AND NOT (kind = ? AND accepted_at > ?) ORDER BY message_seq",
                (MessageState.ACCEPTED, MessageKind.GRIEVANCE, now),
            ).fetchall()
        return tuple(
            PendingMessage(
                message_seq=row[0],
                kind=MessageKind(row[1]),
                crew=row[2],
                text_bytes=row[3],
                accepted_at=row[4],
                lang=row[5],
                payload_bytes=row[6],
            )
            for row in rows
        )

    def has_downlink_ack_pending(self) -> bool:
        """Whether downlink batches arrived that no uplink batch has acknowledged yet."""
        with self.database.reading() as db:
            return bool(_meta(db, "downlink_ack_pending"))

    def make_batch(
        self,
        message_seqs: Sequence[int],
        codebook: Codebook,
        signing_key: SigningKey,
        now: float,
        *,
        link_keys: LinkKeys | None = None,
        compact_max_bytes: int | None = None,
    ) -> tuple[int, bytes]:
        """Put these accepted messages in a new signed batch and store its bytes.

        With ``link_keys`` (:meth:`protocol.compact.LinkKeys.for_vessel`) the batch is made
        as a compact frame instead (an 8-byte tag in place of the signature, padded to
        whole 50-byte SBD credits): what an SBD link sends. It takes its number from the
        same sequence, is stored and resent byte-identical like any batch, and its hash
        goes into the monthly statement, which the vessel key signs. ``compact_max_bytes``:
        keep the compact frame only if it is at most this long (or would hold too many
        envelopes for one), else make the signed batch after all (same number, nothing
        stored twice): an SBD session passes one message's size, so a lone SOS or message
        costs one credit while a lane block (a 384-byte sealed box) keeps its signature.

        The batch also carries every contact-book change the shore has not heard yet and,
        when downlink batches arrived since the last one, a cumulative ``BatchAck``. The
        batch number is allocated in the same transaction that moves the messages to
        ``batched``. Raises :class:`NothingToSend` when there is nothing at all to say,
        :class:`~shipboard.errors.IllegalTransition` for a message that is not ``accepted``,
        and ``protocol.errors.LimitExceeded`` when the batch would be too big (nothing is
        stored then: ask for fewer messages).
        """
        minutes = int(now // 60)
        with self.database.transaction("make a batch") as db:
            messages = self._load_for_batch(db, message_seqs)
            contacts = self._contacts.unannounced_contacts(db)
            ack = self._downlink_ack(db, minutes) if _meta(db, "downlink_ack_pending") else None
            if not messages and not contacts and ack is None:
                raise NothingToSend("no message, contact change or acknowledgement to send")
            cursor = db.execute(
                "INSERT INTO batches (data, link_bytes, state, made_at) VALUES (x'', 0, ?, ?)",
                (BatchState.MADE, now),
            )
            batch_seq = cursor.lastrowid
            assert batch_seq is not None
            envelopes: list[Envelope] = [
                ContactBookChange(
                    crew=change.crew,
                    contact=change.contact,
                    channel=Channel.EMAIL if change.channel == "email" else Channel.SMS,
                    address=change.address,
                    written_minutes=minutes,
                    name=change.name or None,
                    contact_lang=change.language,
                    crew_name=change.crew_name,
                )
                for change in contacts
            ]
            if ack is not None:
                envelopes.append(ack)
            envelopes.extend(envelope for _, envelope in messages)
            if link_keys is None:
                data = encode_batch(
                    envelopes,
                    direction=Direction.UPLINK,
                    vessel_id=self.vessel_id,
                    batch_seq=batch_seq,
                    batch_minutes=minutes,
                    signing_key=signing_key,
                    codebook=codebook,
                )
            else:
                if link_keys.vessel_id != self.vessel_id:
                    raise LocalProtocolError(
                        f"link keys of vessel {link_keys.vessel_id} given to the outbox of "
                        f"vessel {self.vessel_id}"
                    )
                try:
                    compact: bytes | None = encode_compact(
                        envelopes,
                        keys=link_keys,
                        batch_seq=batch_seq,
                        batch_minutes=minutes,
                        codebook=codebook,
                    )
                except LimitExceeded:
                    if compact_max_bytes is None:
                        raise
                    compact = None
                if compact is not None and (
                    compact_max_bytes is None or len(compact) <= compact_max_bytes
                ):
                    data = compact
                else:
                    data = encode_batch(
                        envelopes,
                        direction=Direction.UPLINK,
                        vessel_id=self.vessel_id,
                        batch_seq=batch_seq,
                        batch_minutes=minutes,
                        signing_key=signing_key,
                        codebook=codebook,
                    )
            db.execute(
                "UPDATE batches SET data = ?, link_bytes = ?, ack_only = ? WHERE batch_seq = ?",
                (data, len(data), int(acknowledges_only(envelopes)), batch_seq),
            )
            for seq, _ in messages:
                self._step(db, seq, MessageEvent.BATCH, now)
                db.execute(
                    "INSERT INTO batch_messages (batch_seq, message_seq) VALUES (?, ?)",
                    (batch_seq, seq),
                )
            self._contacts.mark_announced(db, [change.contact for change in contacts], batch_seq)
            if ack is not None:
                _set_meta(db, "downlink_ack_pending", 0)
                db.executemany(
                    "UPDATE downlink_refused SET announced_in_batch = ? WHERE batch_seq = ?",
                    [(batch_seq, seq) for seq, _ in ack.rejected or ()],
                )
        logger.info(
            "batch %d made: %d messages, %d contact changes, ack %s, %d bytes",
            batch_seq,
            len(messages),
            len(contacts),
            "yes" if ack else "no",
            len(data),
        )
        return batch_seq, data

    @staticmethod
    def _load_for_batch(db: Transaction, message_seqs: Sequence[int]) -> list[tuple[int, Envelope]]:
        loaded: list[tuple[int, Envelope]] = []
        for seq in dict.fromkeys(message_seqs):
            row = db.execute(
                "SELECT kind, crew, contact, union_id, lang, body, quick, sealed, latitude, "
                "longitude, accepted_at, state, typed_crew, lane_period, lane_index, "
                "voice_mode, voice_ms, voice, subject FROM messages WHERE message_seq = ?",
                (seq,),
            ).fetchone()
            if row is None:
                raise KeyError(f"message {seq} is not in the outbox")
            kind, crew, contact, union_id, lang, body, quick, sealed, lat, lon, at, state = row[:12]
            typed_crew = row[12]
            next_state(MessageState(state), MessageEvent.BATCH, seq)
            written = int(at // 60)
            language = Language.from_code(lang) if lang else None
            envelope: Envelope
            if kind == MessageKind.MESSAGE and row[15] is not None:
                envelope = VoiceNote(
                    message_seq=seq,
                    crew=crew,
                    contact=contact,
                    mode=VoiceMode(row[15]),
                    duration_ms=row[16],
                    frames=bytes(row[17]),
                    written_minutes=written,
                )
            elif kind == MessageKind.MESSAGE:
                envelope = CrewMessage(
                    message_seq=seq,
                    crew=crew,
                    contact=contact,
                    written_minutes=written,
                    lang=language,
                    body=body,
                    quick=quick,
                    subject=row[18],
                )
            elif kind == MessageKind.GRIEVANCE:
                envelope = GrievanceReport(
                    message_seq=seq, union=union_id, written_minutes=written, sealed=sealed
                )
            elif kind == MessageKind.LANE:
                envelope = LaneBlock(
                    period=row[13], index=row[14], block=sealed, written_minutes=written
                )
            else:
                envelope = Sos(
                    message_seq=seq,
                    crew=crew if crew is not None else typed_crew,
                    written_minutes=written,
                    lang=language if body else None,
                    note=body,
                    position=(lat, lon) if lat is not None else None,
                    unauthenticated=True if crew is None else None,
                )
            loaded.append((seq, envelope))
        return loaded

    @staticmethod
    def _downlink_ack(db: Transaction, minutes: int) -> BatchAck | None:
        seen = _seen_rows(db)
        if not seen.highest:
            return None
        refused = db.execute(
            "SELECT batch_seq, reason FROM downlink_refused WHERE announced_in_batch IS NULL "
            "ORDER BY batch_seq LIMIT ?",
            (MAX_ACK_REJECTED,),
        ).fetchall()
        return BatchAck(
            up_to=seen.up_to,
            written_minutes=minutes,
            ranges=seen.ranges[:MAX_ACK_RANGES] or None,
            rejected=tuple((int(seq), int(reason)) for seq, reason in refused) or None,
        )

    def unacknowledged_batches(self) -> tuple[StoredBatch, ...]:
        """Batches the shore has not acknowledged, oldest first: resend them byte-identical
        (an ack-only batch only while the broker never took it, or once overtaken)."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT b.batch_seq, b.data, b.made_at, b.send_count, b.ack_only, "
                "b.ack_only AND EXISTS (SELECT 1 FROM batches AS later "
                "WHERE later.batch_seq > b.batch_seq AND later.state IN (?, ?) "
                "AND later.acked_at > COALESCE(b.last_sent_at, b.made_at)) "
                "FROM batches AS b WHERE b.state IN (?, ?) ORDER BY b.batch_seq",
                (BatchState.ACKED, BatchState.REJECTED, *_OPEN),
            ).fetchall()
        return tuple(
            StoredBatch(
                row[0],
                bytes(row[1]),
                row[2],
                row[3],
                ack_only=bool(row[4]),
                overtaken=bool(row[5]),
            )
            for row in rows
        )

    def reserved_batch_seqs(self) -> frozenset[int]:
        """Unacknowledged batches that carry an SOS, a report or a lane block: what the SBD
        fallback resends (a batch of family messages only waits for the main link)."""
        kinds = tuple(str(kind) for kind in RESERVED_KINDS)
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT DISTINCT bm.batch_seq FROM batch_messages AS bm "
                "JOIN messages AS m ON m.message_seq = bm.message_seq "
                "JOIN batches AS b ON b.batch_seq = bm.batch_seq "
                f"WHERE b.state IN ({', '.join('?' * len(_OPEN))}) "
                f"AND m.kind IN ({', '.join('?' * len(kinds))})",
                (*_OPEN, *kinds),
            ).fetchall()
        return frozenset(int(row[0]) for row in rows)

    def mark_sent(self, batch_seq: int, now: float, *, link: str | None = None) -> None:
        """Record that the broker took batch ``batch_seq`` (PUBACK): not yet the shore's ack.

        ``link``: the profile name of the link the session ran on (the main link's,
        ``iridium-sbd``, ``port-4g``); each counted send is kept with it in
        ``batch_sends`` for the statement's bytes per crew member and link (None: the
        caller did not say; the statement counts such sends on the main link)."""
        with self.database.transaction("record the send") as db:
            row = db.execute(
                "SELECT state, link_bytes FROM batches WHERE batch_seq = ?", (batch_seq,)
            ).fetchone()
            if row is None:
                raise KeyError(f"batch {batch_seq} is not in the outbox")
            if BatchState(row[0]) in OPEN_BATCH_STATES:
                db.execute(
                    "UPDATE batches SET state = ?, send_count = send_count + 1, "
                    "first_sent_at = COALESCE(first_sent_at, ?), last_sent_at = ? "
                    "WHERE batch_seq = ?",
                    (BatchState.SENT, now, now, batch_seq),
                )
                db.execute(
                    "INSERT INTO batch_sends (batch_seq, sent_at, link, link_bytes) "
                    "VALUES (?, ?, ?, ?)",
                    (batch_seq, now, link, int(row[1])),
                )
            for seq in self._batch_messages(db, batch_seq):
                self._step(db, seq, MessageEvent.SEND, now)
        logger.info("batch %d sent over %s", batch_seq, link or "the link")

    def mark_sent_over(self, batch_seq: int, now: float, link: str) -> None:
        """:meth:`mark_sent` over the link named ``link`` (``shipboard.session``'s call)."""
        self.mark_sent(batch_seq, now, link=link)

    @staticmethod
    def _batch_messages(db: Transaction, batch_seq: int) -> list[int]:
        return [
            row[0]
            for row in db.execute(
                "SELECT message_seq FROM batch_messages WHERE batch_seq = ? ORDER BY message_seq",
                (batch_seq,),
            )
        ]

    _STEP_TIME: ClassVar[Mapping[MessageState, str]] = {
        MessageState.BATCHED: "batched_at",
        MessageState.SENT: "sent_at",
        MessageState.ACKNOWLEDGED: "acknowledged_at",
        MessageState.DELIVERED: "delivered_at",
        MessageState.FAILED: "failed_at",
    }

    def _step(
        self,
        db: Transaction,
        seq: int,
        event: MessageEvent,
        now: float,
        *,
        reason: int | None = None,
        detail: str | None = None,
    ) -> MessageState | None:
        """Apply one event to one message; None if the message is not in the outbox."""
        row = db.execute("SELECT state FROM messages WHERE message_seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        old = MessageState(row[0])
        new = next_state(old, event, seq)
        if new is not old:
            column = self._STEP_TIME[new]
            db.execute(
                f"UPDATE messages SET state = ?, {column} = COALESCE({column}, ?) "
                "WHERE message_seq = ?",
                (new, now, seq),
            )
            if new is MessageState.FAILED:
                db.execute(
                    "UPDATE messages SET failure_reason = ?, failure_detail = ? "
                    "WHERE message_seq = ?",
                    (reason, detail, seq),
                )
        if new in (MessageState.DELIVERED, MessageState.ACKNOWLEDGED) and old in (
            MessageState.BATCHED,
        ):
            db.execute(
                "UPDATE messages SET sent_at = COALESCE(sent_at, ?) WHERE message_seq = ?",
                (now, seq),
            )
        return new

    # downlink ----------------------------------------------------------------------------

    def apply_downlink(self, batch: Batch, now: float) -> DownlinkResult:
        """Apply a verified downlink batch in one transaction (duplicates change nothing).

        A batch with content, new or resent, is owed an acknowledgement (the next batch
        carries it); one that only acknowledges is not (``protocol.exchange``).

        The caller decoded it with the shore's key. A batch for another vessel or in the
        wrong direction raises ``protocol.errors.MalformedBatch``. Any other error leaves
        nothing changed (the transaction rolls back); the caller may then refuse the batch
        for good with :meth:`refuse_downlink` (``shipboard.downlink`` does).
        """
        if batch.direction is not Direction.DOWNLINK or batch.vessel_id != self.vessel_id:
            raise MalformedBatch(
                f"batch {batch.batch_seq} to vessel {batch.vessel_id} "
                f"({batch.direction.name.lower()}) is not a downlink batch for vessel "
                f"{self.vessel_id}"
            )
        with self.database.transaction("apply a downlink batch") as db:
            seen = _seen_rows(db)
            if not acknowledges_only(batch.envelopes):
                # content is acknowledged, new or resent (the shore resends what it did not
                # hear acknowledged); a batch that only acknowledges never is (TCP's rule,
                # protocol.exchange), or vessel and shore would answer each other forever
                _set_meta(db, "downlink_ack_pending", 1)
            if batch.batch_seq in seen:
                result = DownlinkResult(batch.batch_seq, duplicate=True)
            else:
                result = self._apply_envelopes(db, batch, now)
                seen.add(batch.batch_seq)
                _store_seen(db, seen)
        self._ignored_downlink += result.ignored
        logger.info(
            "downlink batch %d applied%s: %d batches acknowledged, %d receipts, %d inbox, "
            "%d ignored",
            batch.batch_seq,
            " (duplicate)" if result.duplicate else "",
            len(result.acknowledged_batches),
            result.receipts,
            result.inbox_entries,
            result.ignored,
        )
        return result

    def refuse_downlink(self, batch_seq: int, reason: Reason, now: float) -> bool:
        """Refuse authentic downlink batch ``batch_seq`` for good; whether it was new.

        The shore signed it, but it cannot be applied (it does not decode, or applying it
        failed). It counts as seen, so the next ``BatchAck`` covers it and the shore stops
        resending it, and that ``BatchAck`` names it with ``reason`` in its ``rejected``
        list. Nothing of it is applied. A batch already applied or refused is left as it
        is (False). Only call this for a batch whose signature verified: a forger must not
        be able to make the vessel skip a batch number the shore will use.
        """
        if batch_seq < 1:
            raise ValueError(f"downlink batches are numbered from 1, not {batch_seq}")
        with self.database.transaction("refuse a downlink batch") as db:
            seen = _seen_rows(db)
            if batch_seq in seen:
                return False
            seen.add(batch_seq)
            _store_seen(db, seen)
            db.execute(
                "INSERT INTO downlink_refused (batch_seq, reason, refused_at) VALUES (?, ?, ?)",
                (batch_seq, int(reason), now),
            )
            _set_meta(db, "downlink_ack_pending", 1)
        logger.info("downlink batch %d refused for good: %s", batch_seq, reason.name)
        return True

    def _apply_envelopes(self, db: Transaction, batch: Batch, now: float) -> DownlinkResult:
        acknowledged: list[int] = []
        rejected: list[int] = []
        receipts = inbox = ignored = 0
        for envelope in batch.envelopes:
            if isinstance(envelope, BatchAck):
                acked, refused = self._apply_ack(db, envelope, now)
                acknowledged += acked
                rejected += refused
            elif isinstance(envelope, DeliveryReceipt | DeliveryFailure):
                if self._receipt(db, envelope, now):
                    receipts += 1
                    inbox += 1
                else:
                    ignored += 1
            else:
                filed = self._inbox.receive(db, envelope, now)
                inbox += filed is Filed.COUNTED
                ignored += filed is Filed.IGNORED
        return DownlinkResult(
            batch.batch_seq,
            duplicate=False,
            acknowledged_batches=tuple(acknowledged),
            rejected_batches=tuple(rejected),
            receipts=receipts,
            inbox_entries=inbox,
            ignored=ignored,
        )

    def _apply_ack(self, db: Transaction, ack: BatchAck, now: float) -> tuple[list[int], list[int]]:
        refused = {int(seq): int(reason) for seq, reason in ack.rejected or ()}
        open_batches = [
            row[0]
            for row in db.execute(
                "SELECT batch_seq FROM batches WHERE state IN (?, ?) ORDER BY batch_seq", _OPEN
            )
        ]
        acknowledged: list[int] = []
        rejected: list[int] = []
        for batch_seq in open_batches:
            if batch_seq in refused:
                self._batch_refused(db, batch_seq, refused[batch_seq], now)
                rejected.append(batch_seq)
            elif ack.covers(batch_seq):
                db.execute(
                    "UPDATE batches SET state = ?, acked_at = ? WHERE batch_seq = ?",
                    (BatchState.ACKED, now, batch_seq),
                )
                for seq in self._batch_messages(db, batch_seq):
                    self._step(db, seq, MessageEvent.SHORE_ACK, now)
                acknowledged.append(batch_seq)
        return acknowledged, rejected

    def _batch_refused(self, db: Transaction, batch_seq: int, code: int, now: float) -> None:
        """The shore refused uplink batch ``batch_seq`` for good: its messages fail (each
        crew member told), and what it announced is announced again in the next batch."""
        db.execute(
            "UPDATE batches SET state = ?, acked_at = ?, reject_reason = ? WHERE batch_seq = ?",
            (BatchState.REJECTED, now, code, batch_seq),
        )
        detail = f"batch {batch_seq} refused by the relay: {_reason_name(code)}"
        for seq in self._batch_messages(db, batch_seq):
            if not self._may_fail_with_batch(db, seq, batch_seq):
                continue
            self._step(
                db,
                seq,
                MessageEvent.REJECTED,
                now,
                reason=int(FailureReason.REJECTED_BY_RELAY),
                detail=detail,
            )
            self._inbox.record_stage(
                db,
                message_seq=seq,
                crew=self._crew_of(db, seq),
                stage=DeliveryStage.FAILED,
                written_minutes=int(now // 60),
                now=now,
                reason=FailureReason.REJECTED_BY_RELAY,
            )
        self._contacts.announce_again(db, batch_seq=batch_seq)
        db.execute(
            "UPDATE downlink_refused SET announced_in_batch = NULL WHERE announced_in_batch = ?",
            (batch_seq,),
        )
        logger.warning(
            "batch %d refused by the relay (%s): its messages failed",
            batch_seq,
            _reason_name(code),
        )

    @staticmethod
    def _may_fail_with_batch(db: Transaction, seq: int, batch_seq: int) -> bool:
        """Whether a message of refused batch ``batch_seq`` fails with it.

        Not when the shore already told us it has the message (acknowledged, delivered):
        its own receipt is better news than the refusal of the batch that carried it.
        """
        row = db.execute("SELECT state FROM messages WHERE message_seq = ?", (seq,)).fetchone()
        if row is None:
            return False
        state = MessageState(row[0])
        if (state, MessageEvent.REJECTED) in TRANSITIONS:
            return True
        logger.warning(
            "message %d of refused batch %d is %s already; left so", seq, batch_seq, state.value
        )
        return False

    @staticmethod
    def _crew_of(db: Transaction, seq: int) -> int | None:
        row = db.execute("SELECT crew FROM messages WHERE message_seq = ?", (seq,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _receipt(
        self, db: Transaction, envelope: DeliveryReceipt | DeliveryFailure, now: float
    ) -> bool:
        seq = envelope.message_seq
        row = db.execute(
            "SELECT state, contact, crew FROM messages WHERE message_seq = ?", (seq,)
        ).fetchone()
        if row is None:
            logger.warning("receipt for unknown message %d ignored", seq)
            return False
        state = MessageState(row[0])
        if state is MessageState.ACCEPTED:
            # The shore cannot have it: a receipt for a message never batched is ignored.
            logger.warning("receipt for message %d that was never sent ignored", seq)
            return False
        crew = None if row[2] is None else int(row[2])
        if isinstance(envelope, DeliveryFailure):
            self._step(
                db,
                seq,
                MessageEvent.FAILED,
                now,
                reason=int(envelope.reason),
                detail=envelope.detail,
            )
            if envelope.reason is FailureReason.UNKNOWN_CONTACT and row[1] is not None:
                self._contacts.announce_again(db, contact=int(row[1]))
            self._inbox.record_stage(
                db,
                message_seq=seq,
                crew=crew,
                stage=DeliveryStage.FAILED,
                written_minutes=envelope.written_minutes,
                now=now,
                reason=envelope.reason,
                detail=envelope.detail,
            )
            return True
        delivered = envelope.stage is ReceiptStage.DELIVERED
        event = MessageEvent.DELIVERED if delivered else MessageEvent.ACCEPTED_ASHORE
        self._step(db, seq, event, now)
        self._inbox.record_stage(
            db,
            message_seq=seq,
            crew=crew,
            stage=DeliveryStage.DELIVERED if delivered else DeliveryStage.ACCEPTED_ASHORE,
            written_minutes=envelope.written_minutes,
            now=now,
        )
        return True

    # what the crew's doors, the statement and the status page read -----------------------

    def my_cases(self, case_key: bytes) -> list[int]:
        """Message numbers of the grievance reports filed by the holder of ``case_key``."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT message_seq, reporter_tag FROM messages WHERE kind = ?",
                (MessageKind.GRIEVANCE,),
            ).fetchall()
        return [
            seq
            for seq, tag in rows
            if tag is not None and hmac.compare_digest(bytes(tag), reporter_tag(case_key, seq))
        ]

    def message_stages(self, seq: int) -> dict[str, object] | None:
        """One message's state, the time of each step and any failure (no text)."""
        with self.database.reading() as db:
            db.row_factory = sqlite3.Row
            try:
                row = db.execute(
                    "SELECT message_seq, kind, crew, contact, state, text_bytes, accepted_at, "
                    "batched_at, sent_at, acknowledged_at, delivered_at, failed_at, "
                    "failure_reason, failure_detail, reporter_tag FROM messages "
                    "WHERE message_seq = ?",
                    (seq,),
                ).fetchone()
            finally:
                db.row_factory = None
        return dict(row) if row is not None else None

    def recent_messages(self, crew: int, limit: int = 20) -> list[SentMessage]:
        """The crew member's latest family messages, newest first (no text)."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT message_seq, contact, quick, state, accepted_at, voice_ms FROM messages "
                "WHERE crew = ? AND kind = ? ORDER BY message_seq DESC LIMIT ?",
                (crew, MessageKind.MESSAGE, limit),
            ).fetchall()
        return [
            SentMessage(int(seq), contact, quick, MessageState(state), float(at), voice_ms)
            for seq, contact, quick, state, at, voice_ms in rows
        ]

    def kept_messages(self, crew: int, limit: int = 200) -> list[KeptMessage]:
        """The crew member's latest family messages with their text, newest first (for
        their own conversation view only; the text is never logged)."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT message_seq, contact, body, quick, lang, state, accepted_at, sent_at, "
                "acknowledged_at, delivered_at, failed_at, failure_reason FROM messages "
                "WHERE crew = ? AND kind = ? ORDER BY message_seq DESC LIMIT ?",
                (crew, MessageKind.MESSAGE, limit),
            ).fetchall()
        return [
            KeptMessage(
                message_seq=int(row[0]),
                contact=row[1],
                body=row[2],
                quick=row[3],
                lang=row[4],
                state=MessageState(row[5]),
                accepted_at=float(row[6]),
                sent_at=row[7],
                acknowledged_at=row[8],
                delivered_at=row[9],
                failed_at=row[10],
                failure_reason=row[11],
            )
            for row in rows
        ]

    def month_figures(self, start: float, end: float) -> MonthFigures:
        """Figures of the month from ``start`` to ``end`` (wall-clock seconds), by
        acceptance time; one read, so the figures agree with each other."""
        with self.database.reading() as db:
            figures = db.execute(
                "SELECT crew, SUM(text_bytes), "
                "SUM(CASE WHEN state IN (?, ?) OR (state = ? AND acknowledged_at IS NOT NULL) "
                "THEN text_bytes ELSE 0 END), "
                "SUM(CASE WHEN state = ? THEN text_bytes ELSE 0 END), "
                "SUM(CASE WHEN state = ? THEN text_bytes ELSE 0 END) "
                "FROM messages WHERE accepted_at >= ? AND accepted_at < ? AND kind = ? "
                "GROUP BY crew",
                (
                    MessageState.ACKNOWLEDGED,
                    MessageState.DELIVERED,
                    MessageState.FAILED,
                    MessageState.DELIVERED,
                    MessageState.FAILED,
                    start,
                    end,
                    MessageKind.MESSAGE,
                ),
            ).fetchall()
            acknowledged = db.execute(
                "SELECT DISTINCT b.batch_seq, b.data FROM batches b "
                "JOIN batch_messages bm ON bm.batch_seq = b.batch_seq "
                "JOIN messages m ON m.message_seq = bm.message_seq "
                "WHERE b.state = ? AND m.kind = ? AND m.accepted_at >= ? "
                "AND m.accepted_at < ? ORDER BY b.batch_seq",
                (BatchState.ACKED, MessageKind.MESSAGE, start, end),
            ).fetchall()
            pushed = db.execute(
                "SELECT COALESCE(SUM(link_bytes * send_count), 0) FROM batches "
                "WHERE made_at >= ? AND made_at < ?",
                (start, end),
            ).fetchone()[0]
            days = db.execute(
                "SELECT DISTINCT CAST(accepted_at / 86400 AS INTEGER) FROM messages "
                "WHERE kind IN (?, ?) AND accepted_at >= ? AND accepted_at < ?",
                (MessageKind.MESSAGE, MessageKind.SOS, start, end),
            ).fetchall()
        return MonthFigures(
            text_bytes={
                int(row[0]): CrewTextBytes(*(int(value) for value in row[1:])) for row in figures
            },
            acknowledged_batches=tuple((int(seq), bytes(data)) for seq, data in acknowledged),
            pushed_bytes=int(pushed),
            active_days=frozenset(int(day) for (day,) in days),
        )

    def crew_link_figures(self, start: float, end: float) -> CrewLinkFigures:
        """What the statement needs to count each crew member's bytes per link, for the
        month from ``start`` to ``end`` (see :class:`CrewLinkFigures` for the rules);
        one read. Only family messages are attributed to a crew member: SOS, grievance
        reports and lane blocks only weigh in the split of a batch they share."""
        with self.database.reading() as db:
            text = db.execute(
                "SELECT m.crew, (SELECT s.link FROM batch_sends s "
                "WHERE s.batch_seq = bm.batch_seq ORDER BY s.send DESC LIMIT 1), "
                "SUM(m.text_bytes) FROM messages m "
                "JOIN batch_messages bm ON bm.message_seq = m.message_seq "
                "JOIN batches b ON b.batch_seq = bm.batch_seq "
                "WHERE m.kind = ? AND m.crew IS NOT NULL AND m.accepted_at >= ? "
                "AND m.accepted_at < ? AND b.state = ? "
                "AND EXISTS (SELECT 1 FROM batch_sends s WHERE s.batch_seq = bm.batch_seq) "
                "GROUP BY 1, 2",
                (MessageKind.MESSAGE, start, end, BatchState.ACKED),
            ).fetchall()
            sends = db.execute(
                "SELECT s.batch_seq, s.link, SUM(s.link_bytes), b.state = ? FROM batch_sends s "
                "JOIN batches b ON b.batch_seq = s.batch_seq "
                "WHERE s.sent_at >= ? AND s.sent_at < ? GROUP BY 1, 2 ORDER BY 1",
                (BatchState.ACKED, start, end),
            ).fetchall()
            acked = sorted({int(row[0]) for row in sends if row[3]})
            weights: dict[int, list[tuple[int | None, int]]] = {}
            for chunk_start in range(0, len(acked), 500):
                chunk = acked[chunk_start : chunk_start + 500]
                for batch_seq, kind, crew, weight in db.execute(
                    "SELECT bm.batch_seq, m.kind, m.crew, CASE WHEN m.kind = ? THEN "
                    "m.text_bytes ELSE COALESCE(LENGTH(CAST(m.body AS BLOB)), 0) "
                    "+ COALESCE(LENGTH(m.sealed), 0) END FROM batch_messages bm "
                    "JOIN messages m ON m.message_seq = bm.message_seq "
                    f"WHERE bm.batch_seq IN ({', '.join('?' * len(chunk))})",
                    (MessageKind.MESSAGE, *chunk),
                ):
                    family = kind == MessageKind.MESSAGE and crew is not None
                    weights.setdefault(int(batch_seq), []).append(
                        (int(crew) if family else None, max(1, int(weight or 0)))
                    )
        wire: dict[tuple[int, str | None], Fraction] = {}
        sent: dict[str | None, int] = {}
        for batch_seq, link, link_bytes, is_acked in sends:
            sent[link] = sent.get(link, 0) + int(link_bytes)
            parts = weights.get(int(batch_seq), []) if is_acked else []
            whole = sum(weight for _, weight in parts)
            for crew, weight in parts:
                if crew is not None:
                    key = (crew, link)
                    wire[key] = wire.get(key, Fraction(0)) + Fraction(
                        int(link_bytes) * weight, whole
                    )
        return CrewLinkFigures(
            text_bytes={(int(crew), link): int(total) for crew, link, total in text},
            wire_bytes=wire,
            sent_bytes=sent,
        )

    def statistics(self) -> OutboxStatistics:
        """Counters for the status page (no content, no names)."""
        with self.database.reading() as db:
            by_state = {
                str(state): int(count)
                for state, count in db.execute(
                    "SELECT state, COUNT(*) FROM messages GROUP BY state"
                )
            }
            unacked, total, link_bytes = db.execute(
                "SELECT COALESCE(SUM(state IN (?, ?)), 0), COUNT(*), "
                "COALESCE(SUM(link_bytes), 0) FROM batches",
                _OPEN,
            ).fetchone()
            applied = db.execute(
                "SELECT COALESCE(SUM(last - first + 1), 0) FROM downlink_seen"
            ).fetchone()[0]
            pending = _meta(db, "downlink_ack_pending")
        return OutboxStatistics(
            messages_by_state=by_state,
            batches_unacknowledged=int(unacked),
            batches_total=int(total),
            link_bytes_made=int(link_bytes),
            downlink_batches_applied=int(applied),
            downlink_ack_pending=bool(pending),
            ignored_downlink_envelopes=self._ignored_downlink,
        )

    # kept for callers from before the repositories (tests outside shipboard/) --------------
    # Each forwards to the repository that owns the data; new code calls that repository.

    def inbox(self, crew: int, case_seqs: Sequence[int] = ()) -> list[dict[str, object]]:
        """:meth:`shipboard.inbox.Inbox.entries` of this database."""
        return Inbox(self.database).entries(crew, case_seqs)

    def slot_items(self, crew: int) -> list[tuple[bytes, float]]:
        """:meth:`shipboard.inbox.Inbox.slot_items` of this database."""
        return Inbox(self.database).slot_items(crew)

    def lane_blocks(self) -> list[bytes]:
        """:meth:`shipboard.inbox.Inbox.lane_blocks` of this database."""
        return Inbox(self.database).lane_blocks()

    def case_notes(self, case_seq: int) -> list[tuple[int, bytes, float]]:
        """:meth:`shipboard.inbox.Inbox.case_notes` of this database."""
        return Inbox(self.database).case_notes(case_seq)

    def record_link_session(self, session: LinkSession) -> int:
        """:meth:`shipboard.sessions_log.SessionsLog.record` of this database."""
        return SessionsLog(self.database).record(session)

    def link_sessions_in(self, month: int) -> list[LinkSession]:
        """:meth:`shipboard.sessions_log.SessionsLog.sessions_in` of this database."""
        return SessionsLog(self.database).sessions_in(month)


def _reason_name(code: int) -> str:
    """The name of a refusal's reason code (``LIMIT_EXCEEDED``), or the code if unknown."""
    try:
        return Reason(code).name
    except ValueError:
        return f"reason {code}"


__all__ = [
    "KINDS",
    "QUICK_MESSAGE_BYTES",
    "AcceptedMessage",
    "ContactAnnouncements",
    "CrewLinkFigures",
    "CrewTextBytes",
    "DownlinkInbox",
    "DownlinkResult",
    "KeptMessage",
    "MonthFigures",
    "Outbox",
    "OutboxStatistics",
    "PendingMessage",
    "QuotaStatus",
    "SentMessage",
    "StoredBatch",
    "month_of",
    "reporter_tag",
]
