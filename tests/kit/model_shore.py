"""The one model shore of the tests: :class:`protocol.exchange.ShoreExchange` answered by an
in-memory record, as the relay's store answers it.

:class:`ModelShore` is the shore side of the exchange for every test that needs a shore but
not the relay as shipped (for that, :mod:`tests.kit.voyage` runs the real ingest, store and
downlink on the fake link). It owns no transport: bytes go in and out of its methods, and
small adapters carry them (:func:`tests.kit.mqtt.shore_over_mqtt` over a real broker,
:func:`serve_on_fakelink` on the fake link by hand, or a test's own loop).

- :meth:`ModelShore.receive` feeds one uplink payload to the exchange and answers its
  events as the store does: an authentic batch is stored (once per number; the same bytes
  again count as stored, other bytes under a stored number fail the test), its messages
  kept (once per number; other words under a kept number fail the test) and, unless
  ``receipts=False``, an "accepted ashore" receipt queued for each new one. Every
  authentic payload is recorded in :attr:`~ModelShore.received` (copies included), every
  refused one in :attr:`~ModelShore.refused`.
- :meth:`ModelShore.send` is what the relay publishes now: the resends that fell due and
  the batches :func:`protocol.exchange.downlink_release_due` releases (a BatchAck, what
  :meth:`~ModelShore.queue` queued). :meth:`~ModelShore.restart` rebuilds the exchange
  from the record, as a relay restart does.
- Hooks: ``refuse`` (the store refuses an authentic batch for good: the exchange's
  ``uplink_rejected``), ``receipts`` (off for a test that queues its own downlink).
- By hand, for tests that drive the outbox themselves: :meth:`~ModelShore.sign` /
  :meth:`~ModelShore.downlink` make a downlink batch of exactly the envelopes a test
  chooses (a BatchAck with holes, lane blocks, a batch under another key), numbered from
  the same counter as the exchange's own (``next_downlink`` can be set to leave a hole).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from protocol.batch import Batch, Direction, decode_batch, encode_batch
from protocol.codebook import Codebook
from protocol.envelopes import (
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    GrievanceReport,
    ReceiptStage,
    Sos,
)
from protocol.errors import Reason
from protocol.exchange import (
    AckDue,
    DownlinkAcknowledged,
    DownlinkBatchMade,
    ShoreExchange,
    ShoreSettings,
    UplinkBatchReceived,
    UplinkRefused,
)
from protocol.replay import RangeSet
from protocol.signing import SigningKey, VerifyKey
from tests.kit.clock import DEFAULT_START
from tests.kit.fakelink import DOWN, UP, LinkPair

#: The vessel number of ``demo_ship_config`` and of the shipboard fixtures.
VESSEL_ID = 1
#: The suite's usual "now" (2026-09-21 22:13:20 UTC).
NOW = DEFAULT_START

#: The envelopes that carry a crew member's message (what the relay keeps and receipts).
MESSAGES = (CrewMessage, Sos, GrievanceReport)


@dataclass(frozen=True, slots=True)
class Received:
    """One authentic uplink payload as it reached the shore (a copy of an earlier one too)."""

    batch: Batch
    data: bytes

    @property
    def batch_seq(self) -> int:
        return self.batch.batch_seq

    @property
    def message_seqs(self) -> tuple[int, ...]:
        """The message numbers it carries, in order."""
        return tuple(e.message_seq for e in self.batch.envelopes if isinstance(e, MESSAGES))


@dataclass(slots=True)
class MadeDownlink:
    """A downlink batch the exchange made (the store's record of it)."""

    data: bytes
    items: int
    last_sent_at: float


class ModelShore:
    """The shore's side of one vessel's link, with an in-memory record (module docstring)."""

    __test__ = False

    def __init__(
        self,
        settings: ShoreSettings,
        *,
        receipts: bool = True,
        refuse: Callable[[Batch], Reason | None] | None = None,
    ) -> None:
        self.settings = settings
        self.receipts = receipts
        self.refuse = refuse
        self.exchange = ShoreExchange(settings)
        #: Uplink batches stored: number -> SHA-256 of their bytes.
        self.batches: dict[int, bytes] = {}
        #: Messages kept ashore: number -> the envelope as first stored.
        self.messages: dict[int, Envelope] = {}
        #: Uplink batches refused for good (``refuse``): number -> reason.
        self.rejected: dict[int, Reason] = {}
        #: Every authentic uplink payload, in arrival order, copies included.
        self.received: list[Received] = []
        #: Every uplink payload the exchange refused (not authentic, another vessel's...).
        self.refused: list[UplinkRefused] = []
        #: Downlink batches the exchange made, and those the vessel acknowledged.
        self.downlink_made: dict[int, MadeDownlink] = {}
        self.downlink_acked: set[int] = set()
        self._next_downlink = 1
        self._waiting: list[Envelope] = []  # what the exchange holds queued, in order
        self._urgent = False

    @classmethod
    def for_keys(
        cls,
        codebook: Codebook,
        vessel_key: SigningKey | VerifyKey,
        shore_key: SigningKey,
        vessel_id: int = VESSEL_ID,
        *,
        receipts: bool = True,
        refuse: Callable[[Batch], Reason | None] | None = None,
        **pacing: float,
    ) -> ModelShore:
        """A model shore for one vessel (``pacing``: ShoreSettings' resend times, max_items)."""
        verify = vessel_key.verify_key if isinstance(vessel_key, SigningKey) else vessel_key
        settings = ShoreSettings(
            vessel_id=vessel_id,
            vessel_key=verify,
            shore_key=shore_key,
            codebook=codebook,
            **pacing,  # type: ignore[arg-type]
        )
        return cls(settings, receipts=receipts, refuse=refuse)

    @property
    def vessel_id(self) -> int:
        return self.settings.vessel_id

    @property
    def codebook(self) -> Codebook:
        return self.settings.codebook

    # --- the exchange, answered as the store answers it ------------------------------------

    def receive(self, data: bytes, now: float = NOW) -> Batch | None:
        """An uplink payload reaches the shore; the batch if authentic (None if refused)."""
        self.exchange.receive(data, now)
        before = len(self.received)
        self.answer(now)
        return self.received[-1].batch if len(self.received) > before else None

    def receive_batch(self, data: bytes, now: float = NOW) -> Batch:
        """:meth:`receive` for a payload the test knows to be authentic: its batch (the
        exchange's refusal fails the test)."""
        batch = self.receive(data, now)
        if batch is None:
            raise AssertionError(f"the shore refused the uplink payload: {self.refused[-1]}")
        return batch

    def send(self, now: float = NOW) -> list[bytes]:
        """What the shore publishes on the downlink now, oldest first (resends included)."""
        self.exchange.handle_timer(now)
        resends = set(self.exchange.unacknowledged_downlink())
        out = self.exchange.data_to_send(now)
        for seq in resends:
            made = self.downlink_made.get(seq)
            if made is not None and made.data in out:
                made.last_sent_at = now
        self.answer(now)
        return out

    def queue(self, envelopes: Iterable[Envelope], *, urgent: bool = False) -> None:
        """Envelopes for the vessel (receipts, replies, lane blocks...), as the relay queues
        them; they go with the next batch the release rule lets go."""
        items = list(envelopes)
        self._waiting.extend(items)
        self._urgent = self._urgent or (urgent and bool(items))
        self.exchange.queue(items, urgent=urgent)

    def answer(self, now: float) -> None:
        """Answer every event of the exchange the way the store does."""
        exchange = self.exchange
        while (event := exchange.next_event()) is not None:
            if isinstance(event, UplinkBatchReceived):
                self._store(event, now)
            elif isinstance(event, UplinkRefused):
                self.refused.append(event)
            elif isinstance(event, DownlinkBatchMade):
                self.downlink_made[event.downlink_seq] = MadeDownlink(event.data, event.items, now)
                self._next_downlink = event.downlink_seq + 1
                del self._waiting[: event.items]
                if not self._waiting:
                    self._urgent = False
            elif isinstance(event, DownlinkAcknowledged):
                self.downlink_acked.add(event.downlink_seq)
            else:
                assert isinstance(event, AckDue)  # data_to_send carries it

    def _store(self, event: UplinkBatchReceived, now: float) -> None:
        batch, exchange = event.batch, self.exchange
        self.received.append(Received(batch, event.data))
        digest = hashlib.sha256(event.data).digest()
        stored = self.batches.get(batch.batch_seq)
        if stored is not None:
            assert stored == digest, f"uplink batch number {batch.batch_seq} reused"
            exchange.uplink_stored(batch.batch_seq, now)
            return
        if batch.batch_seq in self.rejected:
            exchange.uplink_rejected(batch.batch_seq, self.rejected[batch.batch_seq], now)
            return
        reason = self.refuse(batch) if self.refuse is not None else None
        if reason is not None:
            self.rejected[batch.batch_seq] = reason
            exchange.uplink_rejected(batch.batch_seq, reason, now)
            return
        self.batches[batch.batch_seq] = digest
        receipts: list[Envelope] = []
        for envelope in batch.envelopes:
            if not isinstance(envelope, MESSAGES):
                continue
            kept = self.messages.get(envelope.message_seq)
            if kept is not None:
                assert kept == envelope, f"message {envelope.message_seq} changed under its number"
                continue
            self.messages[envelope.message_seq] = envelope
            stage = ReceiptStage.ACCEPTED_ASHORE
            receipts.append(DeliveryReceipt(envelope.message_seq, stage, int(now // 60)))
        exchange.uplink_stored(batch.batch_seq, now)
        if self.receipts and receipts:
            self.queue(receipts)

    def seen(self) -> RangeSet:
        """The uplink batches stored (the store's replay window)."""
        window = RangeSet()
        for seq in self.batches:
            window.add(seq)
        return window

    def restart(self) -> None:
        """The relay restarts: a new exchange from the record; what it remembered is gone
        (when it last heard the vessel, when it sent each batch: resent at once), and so
        are the envelopes it had not put in a batch yet. What it owed is kept (the store's
        "acknowledgement pending")."""
        self._rebuild(self._next_downlink, keep_memory=False)

    def _rebuild(self, next_downlink: int, *, keep_memory: bool) -> None:
        if self.rejected:
            raise NotImplementedError(
                "the model shore cannot rebuild an exchange that refused a batch "
                "(ShoreExchange takes no refusals back): restart before refusing"
            )
        state = self.exchange.state
        if keep_memory and self.exchange.waiting() != len(self._waiting):
            raise RuntimeError(
                "envelopes were queued on the exchange directly: use ModelShore.queue, or "
                "sign by hand before queueing"
            )
        self.exchange = ShoreExchange(
            self.settings, seen=self.seen(), next_downlink_seq=next_downlink, state=state
        )
        self._next_downlink = next_downlink
        for seq, made in sorted(self.downlink_made.items()):
            if seq not in self.downlink_acked:
                sent_at = made.last_sent_at if keep_memory else None
                self.exchange.resume_downlink(seq, made.data, made.items, sent_at)
        if keep_memory:
            self.exchange.queue(self._waiting, urgent=self._urgent)
        else:
            self._waiting.clear()
            self._urgent = False

    # --- by hand ----------------------------------------------------------------------------

    @property
    def next_downlink(self) -> int:
        """The number the next downlink batch gets (by hand or by the exchange)."""
        return self._next_downlink

    @next_downlink.setter
    def next_downlink(self, seq: int) -> None:
        self._rebuild(seq, keep_memory=True)

    def sign(
        self,
        envelopes: Sequence[Envelope],
        minutes: int = int(NOW // 60),
        *,
        key: SigningKey | None = None,
    ) -> bytes:
        """The next downlink batch of exactly ``envelopes``, signed with the shore's key (or
        ``key``: a forger's); outside the exchange, which only moves past its number."""
        data = encode_batch(
            envelopes,
            direction=Direction.DOWNLINK,
            vessel_id=self.vessel_id,
            batch_seq=self._next_downlink,
            batch_minutes=minutes,
            signing_key=key or self.settings.shore_key,
            codebook=self.codebook,
        )
        self.next_downlink = self._next_downlink + 1
        return data

    def downlink_batch(self, data: bytes) -> Batch:
        """A downlink payload decoded as the vessel decodes it (verified with the shore's key)."""
        return decode_batch(
            data,
            codebook=self.codebook,
            verify_key=self.settings.shore_key.verify_key,
            direction=Direction.DOWNLINK,
        )

    def downlink(self, envelopes: Sequence[Envelope], minutes: int = int(NOW // 60)) -> Batch:
        """:meth:`sign`, then decoded as the vessel decodes it (for ``apply_downlink``)."""
        return self.downlink_batch(self.sign(envelopes, minutes))


def serve_on_fakelink(shore: ModelShore, pair: LinkPair, now: float) -> None:
    """The model shore's turn on the fake link, by hand: it hears every uplink payload
    delivered, then puts what it sends now (resends included) in flight down."""
    for data in pair.take(UP):
        shore.receive(data, now)
    for data in shore.send(now):
        pair.send(DOWN, data)
