"""Store: the shore relay's one durable record, behind one interface with two backends.

``Store`` is the interface (a ``typing.Protocol``); :mod:`shore.store_sqlite` (embedded,
the default) and :mod:`shore.store_postgres` (asyncpg, for several relay workers) implement
it with the same SQL logic (:mod:`shore.store_sql`), and one contract suite runs against
both (``tests/shore/test_store.py``).

Durability, stated once: every method that writes is one transaction; when it returns,
its change is committed (SQLite: WAL, ``synchronous=FULL``). Every insert of something
that came over the link is idempotent (``ON CONFLICT DO NOTHING``): a resent batch, a
replayed message or a second ``finish_delivery`` changes nothing.

What is stored (the users' words):

- **vessels**: name, flag, registration number, owner, unions, and their Ed25519 public
  keys, each valid from a time and perhaps revoked (rotation keeps two valid for a while);
- **batches**: each uplink batch accepted, by (vessel, batch_seq), with the hash of its
  bytes, so a resent batch is recognised and acknowledged again, never stored twice;
- **messages**: by (vessel, message_seq), the idempotency key from intake to the family;
  grievance reports only sealed;
- **contacts**: the vessel's contact book as its ``ContactBookChange`` envelopes told us;
- **quarantine**: bytes refused (forged, malformed, unknown vessel...), with the reason;
- **deliveries**: the delivery queue (attempts, next attempt, deadline, outcome);
- **downlink**: items waiting to go down to a vessel, and the signed downlink batches that
  carry them, resent until the vessel's ``BatchAck`` covers them;
- **replay windows**: per vessel, the uplink batch numbers accepted (cumulative ``up_to``
  plus ranges above it), from which every ``BatchAck`` is made.

Acknowledgement: :meth:`Store.ingest_batch` commits a batch, its envelopes, the delivery
queue rows, the ``ACCEPTED_ASHORE`` receipts and the "acknowledgement pending" mark in one
transaction; the ``BatchAck`` itself is built from the replay window when the next downlink
batch is made, so an acknowledgement can never exist without the commit it speaks for.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from protocol.batch import Batch
from protocol.envelopes import CaseStatus, Channel, Envelope, FailureReason
from protocol.errors import Reason
from protocol.languages import Language
from shore.delivery import Destination, FinalOutcome


class StoreError(Exception):
    """Base of the store's own errors (a storage failure, or a refused registry change)."""


class StoreUnavailable(StoreError):
    """The database cannot be opened, reached or written; nothing was changed."""


class RegistryError(StoreError):
    """A registry change that cannot be made as asked (the message says why and what to do)."""


#: Turns a quick-message code into text in a language (None: no such phrase).
PhraseLookup = Callable[[int, "Language | None"], "str | None"]

#: Encodes and signs one downlink batch: ``encode(downlink_seq, envelopes) -> bytes``.
DownlinkEncoder = Callable[[int, Sequence[Envelope]], bytes]
#: Makes one crew member's downlink slot item: ``make(crew, sealed_note or None)``.
SlotItemMaker = Callable[[int, "bytes | None"], Envelope]


# --- vessels -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VesselInfo:
    """What the operator registers about a vessel."""

    name: str
    flag: str
    registration: str
    owner: str
    unions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for field_name in ("name", "flag", "registration", "owner"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip():
                raise RegistryError(f"vessel {field_name} must not be empty")
        if any(isinstance(u, bool) or not isinstance(u, int) or u < 0 for u in self.unions):
            raise RegistryError(f"union ids are whole numbers, not {self.unions!r}")


@dataclass(frozen=True, slots=True)
class VesselKey:
    """One of a vessel's public keys: batches verify with it from ``valid_from`` until revoked."""

    public_key: bytes
    valid_from: float
    revoked_at: float | None = None

    def valid_at(self, now: float) -> bool:
        """Whether batches received at ``now`` may verify with this key."""
        return self.valid_from <= now and (self.revoked_at is None or now < self.revoked_at)


@dataclass(frozen=True, slots=True)
class VesselRecord:
    """A registered vessel, with its keys (oldest first) and when it was last heard from."""

    vessel_id: int
    info: VesselInfo
    added_at: float
    keys: tuple[VesselKey, ...]
    last_heard_at: float | None = None

    def keys_valid_at(self, now: float) -> tuple[bytes, ...]:
        """The public keys that verify batches received at ``now``."""
        return tuple(key.public_key for key in self.keys if key.valid_at(now))


# --- ingest ------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """Bytes the relay refused, kept for the operator (same bytes: one entry, counted)."""

    quarantine_id: int
    sha256: bytes
    raw: bytes
    link_bytes: int
    reason: Reason
    message: str
    vessel_id: int | None
    batch_seq: int | None
    first_at: float
    last_at: float
    times: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as stored ashore (grievance reports only sealed)."""

    vessel_id: int
    message_seq: int
    batch_seq: int
    kind: str  # "message", "grievance" or "sos"
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
    state: str  # "accepted", "delivered", "failed" or "alert" (an SOS)


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
class ReplayWindow:
    """Uplink batch numbers accepted from a vessel: all up to ``up_to``, plus ``ranges``."""

    up_to: int
    ranges: tuple[tuple[int, int], ...] = ()

    def covers(self, seq: int) -> bool:
        """Whether batch ``seq`` was accepted (or refused for good)."""
        return seq <= self.up_to or any(a <= seq <= b for a, b in self.ranges)


# --- deliveries (the DueDelivery shape of shore.delivery) ----------------------------------


class DeliveryKey(NamedTuple):
    """The store's key of a delivery: the message's idempotency key."""

    vessel_id: int
    message_seq: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery (satisfies ``shore.delivery.DueDelivery``)."""

    key: DeliveryKey
    vessel_id: int
    message_seq: int
    destination: Destination
    crew: int | None
    contact: int | None
    crew_name: str | None
    contact_lang: Language | None
    address: str | None
    text: str | None
    union: int | None
    sealed: bytes | None
    accepted_at: float
    attempts: int
    unfinished_attempt: bool
    deadline_at: float
    quick: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery's state, for the operator and tests."""

    key: DeliveryKey
    attempts: int
    due_at: float
    deadline_at: float
    outcome: str | None
    reason: FailureReason | None
    detail: str | None
    unfinished_attempt: bool


# --- downlink ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DownlinkBatch:
    """A signed downlink batch, resent byte-identical until the vessel acknowledges it."""

    vessel_id: int
    downlink_seq: int
    data: bytes
    items: int
    made_at: float
    last_sent_at: float | None
    send_count: int
    acked_at: float | None


class Store(Protocol):
    """The shore relay's store; see the module docstring for its promises."""

    # life --------------------------------------------------------------------------------
    async def close(self) -> None:
        """Close connections; the store is unusable afterwards."""

    # registry ----------------------------------------------------------------------------
    async def add_vessel(
        self, info: VesselInfo, public_key: bytes, now: float, vessel_id: int | None = None
    ) -> int:
        """Register a vessel with its first key; returns its vessel id (assigned if None)."""

    async def get_vessel(self, vessel_id: int) -> VesselRecord | None:
        """A registered vessel, or None."""

    async def list_vessels(self) -> Sequence[VesselRecord]:
        """Every registered vessel, by id."""

    async def add_vessel_key(
        self, vessel_id: int, public_key: bytes, valid_from: float, now: float
    ) -> None:
        """Add a key (rotation): batches verify with it from ``valid_from``."""

    async def revoke_vessel_key(self, vessel_id: int, public_key: bytes, at: float) -> None:
        """Revoke a key from ``at``: batches received later do not verify with it."""

    async def set_vessel_unions(self, vessel_id: int, unions: Sequence[int]) -> None:
        """Replace the unions of a vessel's crew."""

    # ingest --------------------------------------------------------------------------------
    async def stored_batch_hash(self, vessel_id: int, batch_seq: int) -> bytes | None:
        """The SHA-256 of the stored batch (vessel, batch_seq), or None if not stored."""

    async def ingest_batch(self, batch: Batch, data: bytes, now: float) -> IngestResult:
        """Store one verified uplink batch and everything it brings, in ONE transaction.

        New batch: the batch row, its contacts, its messages (``ON CONFLICT DO NOTHING``:
        a replayed message is not stored twice), a delivery row and an ``ACCEPTED_ASHORE``
        receipt for each new message, downlink batches its ``BatchAck`` covers marked
        acknowledged, the replay window advanced and an acknowledgement marked pending.
        Same bytes again: only the acknowledgement is marked pending (DUPLICATE). Other
        bytes under a stored batch number: quarantined and refused (REJECTED, REPLAYED).
        """

    async def reject_batch(
        self, vessel_id: int, batch_seq: int, reason: Reason, message: str, data: bytes, now: float
    ) -> None:
        """An authentic batch that cannot be accepted: quarantine it and tell the vessel
        (``BatchAck.rejected``) so it stops resending, in one transaction."""

    async def quarantine(
        self,
        data: bytes,
        reason: Reason,
        message: str,
        now: float,
        vessel_id: int | None = None,
        batch_seq: int | None = None,
    ) -> None:
        """Keep refused bytes for the operator (the same bytes again only count up)."""

    async def quarantined(self, limit: int = 100) -> Sequence[QuarantineEntry]:
        """The most recent quarantine entries, newest first."""

    async def replay_window(self, vessel_id: int) -> ReplayWindow:
        """The uplink batches accepted from a vessel."""

    async def messages(self, vessel_id: int) -> Sequence[MessageRecord]:
        """A vessel's stored messages, by sequence number."""

    async def count_messages(self, vessel_id: int | None = None) -> int:
        """How many messages are stored (for one vessel, or all)."""

    async def contact(self, vessel_id: int, crew: int, contact: int) -> ContactRecord | None:
        """A crew member's contact, or None when the vessel never announced it."""

    async def contacts_with_address(
        self, channel: Channel, address: str
    ) -> Sequence[ContactRecord]:
        """Contacts with this address (newest change first): routes family SMS replies."""

    # deliveries (used by shore.delivery) -------------------------------------------------
    async def claim_due_deliveries(self, now: float, limit: int, worker: str) -> Sequence[Delivery]:
        """Take up to ``limit`` due deliveries for ``worker`` under a lease."""

    async def release_claims(self, worker: str) -> int:
        """End the leases ``worker`` holds on unfinished deliveries; how many."""

    async def record_attempt(self, key: object, now: float, worker: str) -> bool:
        """Record an attempt BEFORE anything is sent (a crash then shows as a repeat).

        False (nothing recorded, send nothing) when the claim is no longer ``worker``'s:
        its lease lapsed and another worker claimed the delivery.
        """

    async def finish_delivery(
        self, key: object, outcome: FinalOutcome, reason: FailureReason | None, now: float
    ) -> None:
        """Record the final outcome and queue its receipt to the vessel, in one transaction."""

    async def reschedule_delivery(
        self, key: object, due_at: float, detail: str, now: float
    ) -> None:
        """A transient failure: try again at ``due_at``."""

    async def deliver_to_union_inbox(
        self, union: int, vessel_id: int, message_seq: int, sealed: bytes, now: float
    ) -> None:
        """Put a sealed report in the union's inbox (idempotent per vessel and sequence)."""

    async def deliveries(self, vessel_id: int) -> Sequence[DeliveryRecord]:
        """A vessel's delivery rows, by sequence number."""

    async def union_inbox(self, union: int) -> Sequence[tuple[int, int, bytes]]:
        """(vessel, message_seq, sealed) of the union's reports, in order of arrival."""

    async def union_reports(self, union: int) -> Sequence[tuple[int, int, bytes, float]]:
        """(vessel, message_seq, sealed, accepted_at) of every report sealed to ``union``,
        as ingested (whether or not the delivery worker runs), in order of arrival."""

    # downlink ----------------------------------------------------------------------------
    async def queue_downlink(
        self, vessel_id: int, envelopes: Sequence[Envelope], now: float, dedupe: str | None = None
    ) -> None:
        """Queue envelopes down to a vessel (with ``dedupe``, at most once per key)."""

    async def queue_reply(
        self,
        vessel_id: int,
        crew: int,
        contact: int,
        text: str,
        lang: Language,
        truncated: bool,
        now: float,
    ) -> int:
        """Queue a family's reply to a crew member; returns its ``reply_seq``."""

    async def queue_case_update(
        self,
        vessel_id: int,
        report_seq: int,
        status: CaseStatus,
        sealed_note: bytes | None,
        now: float,
    ) -> None:
        """Queue a grievance case's new status down to the vessel."""

    async def queue_slot_note(
        self, vessel_id: int, report_seq: int, sealed_note: bytes, now: float
    ) -> int | None:
        """Keep a case note for the reporter's next downlink slot: the crew number comes from
        the report's uplink slot header. None (nothing kept) if the report came without a
        slot: the caller sends the note on its own."""

    async def slot_crews(self, since: float) -> Sequence[tuple[int, int]]:
        """(vessel, crew) of every crew member whose uplink slot arrived since ``since``."""

    async def queue_slot_items(
        self, vessel_id: int, period: int, crews: Sequence[int], make: SlotItemMaker, now: float
    ) -> int:
        """Queue one downlink slot item per crew member for ``period`` (at most once per
        crew member and period), each carrying their earliest waiting note or cover, in one
        transaction; how many were queued."""

    async def vessels_with_downlink_work(
        self, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[int]:
        """Vessels with items or an acknowledgement to send, or batches due for resending."""

    async def make_downlink_batch(
        self, vessel_id: int, now: float, encode: DownlinkEncoder, max_items: int
    ) -> DownlinkBatch | None:
        """Put pending items (and a cumulative ``BatchAck``, if one is due) in a new downlink
        batch, encoded by ``encode`` inside the transaction; None when there is nothing."""

    async def downlink_batches_to_send(
        self, vessel_id: int, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[DownlinkBatch]:
        """Unacknowledged batches never sent, or due for resending, oldest first.

        A batch is resent after ``resend_after_s`` if the vessel was heard from since it
        was last sent (so it had its chance), and after ``resend_max_s`` in any case (the
        broker may have lost it). Acknowledgement-only batches are never resent: a lost
        one makes the vessel resend its batch, which is acknowledged again.
        """

    async def mark_downlink_sent(self, vessel_id: int, downlink_seq: int, now: float) -> None:
        """The broker took the batch (PUBACK); that is not the vessel's acknowledgement."""

    async def downlink_batches(self, vessel_id: int) -> Sequence[DownlinkBatch]:
        """All downlink batches of a vessel, by number."""
