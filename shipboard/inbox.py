"""Inbox: what the shore sent down for the crew (a vessel database repository).

One row per thing a crew member may read on board: the stages of their messages
(accepted ashore, delivered, failed with a reason), their family's replies (written, or
spoken: Codec2 frames, :class:`~protocol.envelopes.VoiceReply`), quota
notices, the union's sealed case notes and the downlink slot items of the release before
the lane (a case note or cover, sealed to a reporter's reply key; nobody on board can tell
which). And every downlink **lane block** (``lane_down``: period, index, block, when it
arrived; no crew number): fragments of case notes sealed by a union to a reporter's reply
key, or cover; a signed-in reporter's key finds theirs (:func:`protocol.lane.read_notes`).
Lane blocks older than :data:`LANE_KEEP_S` are purged as new ones arrive. It owns the
tables ``inbox``, ``reply_seen`` and ``lane_down`` (migration set ``inbox``,
:mod:`shipboard.schema`).

Rows are written inside the outbox's transaction that applies a downlink batch
(:meth:`Inbox.receive`, :meth:`Inbox.record_stage` take that transaction), so a batch is
applied whole or not at all. Reading is for the crew's doors: :meth:`Inbox.entries`,
:meth:`Inbox.case_notes`, :meth:`Inbox.slot_items`, :meth:`Inbox.lane_blocks`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from enum import Enum, StrEnum
from typing import Protocol

from protocol.envelopes import (
    CaseStatusUpdate,
    Envelope,
    FailureReason,
    LaneBlock,
    QuotaNotice,
    Reply,
    VoiceReply,
)
from protocol.slots import SlotHeader, downlink_slot_notes
from protocol.voice import VoiceMode
from shipboard.crew import CrewRegister
from shipboard.database import OnDatabase, Transaction

__all__ = ["CrewLookup", "DeliveryStage", "Filed", "Inbox", "InboxKind"]

logger = logging.getLogger(__name__)

#: Most entries :meth:`Inbox.entries` returns (newest first).
MAX_ENTRIES = 500
#: How long downlink lane blocks are kept (seconds since they arrived): 90 days.
LANE_KEEP_S = 90 * 86_400.0


class InboxKind(StrEnum):
    """What an inbox row holds; the value is what the table stores."""

    STAGE = "stage"  # a stage of one of the crew member's messages
    REPLY = "reply"  # a family member's reply
    CASE = "case"  # a union's case update (sealed note to the reporter)
    SLOT = "slot"  # a downlink slot item: a case note or cover, sealed
    QUOTA = "quota"  # the shore's quota notice


class DeliveryStage(StrEnum):
    """A message's stage ashore, as its inbox row says it."""

    ACCEPTED_ASHORE = "accepted_ashore"
    DELIVERED = "delivered"
    FAILED = "failed"


class Filed(Enum):
    """What :meth:`Inbox.receive` did with one envelope (for the downlink's counters)."""

    COUNTED = "counted"  # a new inbox entry, counted
    UNCOUNTED = "uncounted"  # kept, not counted (a slot item: counters must not tell)
    IGNORED = (
        "ignored"  # not kept (a repeated reply, an unknown crew member, a kind not for the inbox)
    )


class CrewLookup(Protocol):
    """The crew register, as the inbox asks it (inside the writing transaction)."""

    def is_registered(self, tx: Transaction, crew: int) -> bool:
        """Whether crew number ``crew`` is (or was) on the register."""
        ...


class Inbox:
    """The crew's inbox (see the module docstring)."""

    def __init__(self, on: OnDatabase, register: CrewLookup | None = None) -> None:
        self.database = on.database
        self._register: CrewLookup = register if register is not None else CrewRegister(on)

    # written inside the outbox's downlink transaction ------------------------------------

    def receive(self, tx: Transaction, envelope: Envelope, now: float) -> Filed:
        """Keep a downlink envelope meant for the crew (reply, case update, slot item,
        quota notice); anything else is :attr:`Filed.IGNORED`."""
        if isinstance(envelope, Reply | VoiceReply):
            return self._reply(tx, envelope, now)
        if isinstance(envelope, LaneBlock):
            # a case note's fragment or cover: nobody on board can tell, so no crew number
            tx.execute(
                "INSERT OR IGNORE INTO lane_down (period, idx, block, at) VALUES (?, ?, ?, ?)",
                (envelope.period, envelope.index, envelope.block, now),
            )
            tx.execute("DELETE FROM lane_down WHERE at < ?", (now - LANE_KEEP_S,))
            return Filed.UNCOUNTED
        if isinstance(envelope, CaseStatusUpdate) and (slot := _downlink_slot_of(envelope)):
            # a downlink slot: a case note or cover, nobody on board can tell which; kept
            # for the crew member it names, opened only with their reply key
            _insert(
                tx,
                now,
                envelope.written_minutes,
                kind=InboxKind.SLOT,
                crew=slot.crew if self._register.is_registered(tx, slot.crew) else None,
                sealed_note=envelope.sealed_note,
            )
            return Filed.UNCOUNTED
        if isinstance(envelope, CaseStatusUpdate):
            _insert(
                tx,
                now,
                envelope.written_minutes,
                kind=InboxKind.CASE,
                case_seq=envelope.report_seq,
                code=int(envelope.status),
                stage=envelope.status.name.lower(),
                sealed_note=envelope.sealed_note,
            )
            return Filed.COUNTED
        if isinstance(envelope, QuotaNotice):
            _insert(
                tx,
                now,
                envelope.written_minutes,
                kind=InboxKind.QUOTA,
                crew=envelope.crew if self._register.is_registered(tx, envelope.crew) else None,
                code=envelope.month,
                body=f"{envelope.used_bytes}/{envelope.quota_bytes}",
            )
            return Filed.COUNTED
        return Filed.IGNORED

    @staticmethod
    def record_stage(
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
        """Tell the crew member that message ``message_seq`` reached ``stage``."""
        _insert(
            tx,
            now,
            written_minutes,
            kind=InboxKind.STAGE,
            crew=crew,
            message_seq=message_seq,
            stage=stage,
            code=int(reason) if reason is not None else None,
            body=detail,
        )

    def _reply(self, tx: Transaction, reply: Reply | VoiceReply, now: float) -> Filed:
        if tx.execute(
            "SELECT 1 FROM reply_seen WHERE reply_seq = ?", (reply.reply_seq,)
        ).fetchone():
            return Filed.IGNORED
        tx.execute("INSERT INTO reply_seen (reply_seq) VALUES (?)", (reply.reply_seq,))
        if not self._register.is_registered(tx, reply.crew):
            logger.warning("reply %d for unknown crew member ignored", reply.reply_seq)
            return Filed.IGNORED
        if isinstance(reply, VoiceReply):
            _insert(
                tx,
                now,
                reply.written_minutes,
                kind=InboxKind.REPLY,
                crew=reply.crew,
                contact=reply.contact,
                truncated=0,
                code=reply.reply_seq,
                voice=reply.frames,
                voice_mode=int(reply.mode),
                voice_ms=reply.duration_ms,
            )
            return Filed.COUNTED
        _insert(
            tx,
            now,
            reply.written_minutes,
            kind=InboxKind.REPLY,
            crew=reply.crew,
            contact=reply.contact,
            lang=reply.lang.code,
            body=reply.body,
            truncated=1 if reply.truncated else 0,
            code=reply.reply_seq,
        )
        return Filed.COUNTED

    # what the crew's doors read ------------------------------------------------------------

    def entries(self, crew: int, case_seqs: Sequence[int] = ()) -> list[dict[str, object]]:
        """The crew member's inbox (stages, replies, quota notices, updates of the cases
        ``case_seqs``), newest first, at most :data:`MAX_ENTRIES`; slot items are not here
        (:meth:`slot_items`)."""
        marks = ", ".join("?" for _ in case_seqs) or "NULL"
        with self.database.reading() as db:
            db.row_factory = sqlite3.Row
            try:
                rows = db.execute(
                    "SELECT entry, kind, message_seq, case_seq, stage, code, contact, lang, "
                    "body, truncated, written_minutes, at, voice_ms FROM inbox "
                    f"WHERE kind != ? AND (crew = ? OR case_seq IN ({marks}) "
                    f"OR message_seq IN ({marks})) "
                    "ORDER BY entry DESC LIMIT ?",
                    (InboxKind.SLOT, crew, *case_seqs, *case_seqs, MAX_ENTRIES),
                ).fetchall()
            finally:
                db.row_factory = None
        return [dict(row) for row in rows]

    def spoken_reply(self, crew: int, entry: int) -> tuple[VoiceMode, int, bytes] | None:
        """A spoken reply to crew member ``crew``: (mode, duration in ms, Codec2 frames);
        None when entry ``entry`` is not one of theirs."""
        with self.database.reading() as db:
            row = db.execute(
                "SELECT voice_mode, voice_ms, voice FROM inbox "
                "WHERE entry = ? AND crew = ? AND kind = ? AND voice IS NOT NULL",
                (entry, crew, InboxKind.REPLY),
            ).fetchone()
        if row is None:
            return None
        return VoiceMode(int(row[0])), int(row[1]), bytes(row[2])

    def slot_items(self, crew: int) -> list[tuple[bytes, float]]:
        """The downlink slot items for a crew member, oldest first: (item, at). Each holds a
        case note sealed to their reply key, or cover (which opens for nobody)."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT sealed_note, at FROM inbox WHERE kind = ? AND crew = ? ORDER BY entry",
                (InboxKind.SLOT, crew),
            ).fetchall()
        return [(bytes(item), float(at)) for item, at in rows if item is not None]

    def lane_blocks(self) -> list[bytes]:
        """Every downlink lane block kept, in the order the shore sent them (period, then
        index): what :func:`protocol.lane.read_notes` tries a reporter's key on."""
        with self.database.reading() as db:
            rows = db.execute("SELECT block FROM lane_down ORDER BY period, idx").fetchall()
        return [bytes(block) for (block,) in rows]

    def case_notes(self, case_seq: int) -> list[tuple[int, bytes, float]]:
        """A case's updates from the union, oldest first: (stage code, sealed note, at).

        The notes are sealed to the reporter's reply key; only they open them."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT code, sealed_note, at FROM inbox WHERE kind = ? AND case_seq = ? "
                "ORDER BY entry",
                (InboxKind.CASE, case_seq),
            ).fetchall()
        return [(int(code), bytes(note or b""), float(at)) for code, note, at in rows]


def _insert(tx: Transaction, now: float, written_minutes: int, **columns: object) -> None:
    columns["written_minutes"] = written_minutes
    columns["at"] = now
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    tx.execute(f"INSERT INTO inbox ({names}) VALUES ({marks})", tuple(columns.values()))


def _downlink_slot_of(envelope: CaseStatusUpdate) -> SlotHeader | None:
    """The header of a downlink slot item (``report_seq`` 0), else None."""
    if envelope.report_seq != 0 or envelope.sealed_note is None:
        return None
    found = downlink_slot_notes(envelope.sealed_note)
    return None if found is None else found[0]
