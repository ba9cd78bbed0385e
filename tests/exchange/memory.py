"""What the outbox records, in memory, for the pure exchange tests (the shore's side is the
kit's one model shore, :class:`tests.kit.model_shore.ModelShore`, with the settings below).

Only as much as the exchange's events need: the real outbox and store are tested on the
fake link in ``test_scenarios.py``; these let hypothesis run thousands of schedules of the
pure machines (``protocol.exchange``) in seconds.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from common.codebooks import default_codebook
from protocol.batch import Direction, encode_batch
from protocol.envelopes import (
    BatchAck,
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    acknowledges_only,
)
from protocol.exchange import (
    BatchAcknowledged,
    BatchesWanted,
    BatchRefused,
    DownlinkReceived,
    DownlinkRefused,
    MakeBatch,
    OfferedBatch,
    ShoreSettings,
    VesselExchange,
    VesselSettings,
)
from protocol.languages import Language
from protocol.replay import RangeSet
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY

VESSEL = 7
CODEBOOK = default_codebook()
T0 = 1_790_000_000.0


def vessel_settings(**overrides: object) -> VesselSettings:
    """The vessel's session settings for the pure tests."""
    base: dict[str, object] = {
        "vessel_id": VESSEL,
        "shore_key": SHORE_KEY.verify_key,
        "codebook": CODEBOOK,
        "quiet_s": 2.0,
        "drain_limit_s": 30.0,
        "ack_wait_s": 30.0,
        "max_batch_messages": 3,
    }
    return VesselSettings(**{**base, **overrides})  # type: ignore[arg-type]


def shore_settings(**overrides: object) -> ShoreSettings:
    """The shore's settings for the pure tests."""
    base: dict[str, object] = {
        "vessel_id": VESSEL,
        "vessel_key": VESSEL_KEY.verify_key,
        "shore_key": SHORE_KEY,
        "codebook": CODEBOOK,
        "resend_after_s": 600.0,
        "resend_max_s": 3600.0,
    }
    return ShoreSettings(**{**base, **overrides})  # type: ignore[arg-type]


@dataclass
class MemoryVessel:
    """The vessel's record: messages waiting, stored batches, what the shore acknowledged."""

    waiting: list[int] = field(default_factory=list)
    written: int = 0
    batches: dict[int, OfferedBatch] = field(default_factory=dict)
    batch_messages: dict[int, tuple[int, ...]] = field(default_factory=dict)
    acknowledged: Counter[int] = field(default_factory=Counter)
    refused: set[int] = field(default_factory=set)
    downlink_seen: RangeSet = field(default_factory=RangeSet)
    ack_pending: bool = False
    receipts: Counter[int] = field(default_factory=Counter)
    #: How often the broker took each batch (the outbox's ``send_count``).
    sent: Counter[int] = field(default_factory=Counter)
    #: When each batch was last sent, and when each was acknowledged or refused, as steps
    #: of one counter (the outbox's ``last_sent_at`` and ``acked_at``).
    last_sent_step: dict[int, int] = field(default_factory=dict)
    closed_step: dict[int, int] = field(default_factory=dict)
    steps: int = 0

    def write(self) -> int:
        self.written += 1
        self.waiting.append(self.written)
        return self.written

    def open_batches(self) -> list[int]:
        return [s for s in self.batches if s not in self.acknowledged and s not in self.refused]

    def _step(self) -> int:
        self.steps += 1
        return self.steps

    def published(self, batch_seq: int) -> None:
        """The broker took the batch (the outbox's ``mark_sent``)."""
        self.sent[batch_seq] += 1
        self.last_sent_step[batch_seq] = self._step()

    def overtaken(self, batch_seq: int) -> bool:
        """A later batch was acknowledged or refused since this one was last sent."""
        since = self.last_sent_step.get(batch_seq, 0)
        return any(seq > batch_seq and at > since for seq, at in self.closed_step.items())

    def offered(self) -> list[OfferedBatch]:
        """The open batches as the outbox hands them over."""
        return [
            dataclasses.replace(
                self.batches[s],
                sent=self.sent[s] > 0,
                overtaken=self.batches[s].ack_only and self.overtaken(s),
            )
            for s in self.open_batches()
        ]

    def start(self, exchange: VesselExchange, now: float) -> None:
        exchange.link_up(now, self.open_batches(), list(self.waiting))
        self.answer(exchange, now)

    def _make_batch(self, message_seqs: tuple[int, ...], now: float) -> int | None:
        minutes = int(now // 60)
        envelopes: list[Envelope] = []
        if self.ack_pending and self.downlink_seen.highest:
            seen = self.downlink_seen
            envelopes.append(BatchAck(seen.up_to, minutes, seen.ranges or None))
        envelopes += [
            CrewMessage(seq, 1, 1, minutes, Language.ENG, f"message {seq}") for seq in message_seqs
        ]
        if not envelopes:
            return None
        batch_seq = len(self.batches) + 1
        data = encode_batch(
            envelopes,
            direction=Direction.UPLINK,
            vessel_id=VESSEL,
            batch_seq=batch_seq,
            batch_minutes=minutes,
            signing_key=VESSEL_KEY,
            codebook=CODEBOOK,
        )
        self.batches[batch_seq] = OfferedBatch(batch_seq, data, acknowledges_only(envelopes))
        self.batch_messages[batch_seq] = message_seqs
        self.waiting = [seq for seq in self.waiting if seq not in message_seqs]
        self.ack_pending = False
        return batch_seq

    def answer(self, exchange: VesselExchange, now: float) -> None:
        """Answer every event the way the outbox does (``shipboard.session``)."""
        while (event := exchange.next_event()) is not None:
            if isinstance(event, DownlinkReceived):
                seq = event.batch.batch_seq
                duplicate = seq in self.downlink_seen
                if not duplicate:
                    self.downlink_seen.add(seq)
                    for envelope in event.batch.envelopes:
                        if isinstance(envelope, DeliveryReceipt):
                            self.receipts[envelope.message_seq] += 1
                if not acknowledges_only(event.batch.envelopes):
                    self.ack_pending = True  # content, new or resent; never a bare ack
                exchange.downlink_applied(seq, duplicate=duplicate)
            elif isinstance(event, DownlinkRefused):
                raise AssertionError(f"a genuine downlink batch was refused: {event}")
            elif isinstance(event, MakeBatch):
                made = self._make_batch(event.message_seqs, now)
                if made is None:
                    exchange.nothing_to_batch()
                else:
                    exchange.batch_made(made)
            elif isinstance(event, BatchesWanted):
                exchange.offer(self.offered(), now)
            elif isinstance(event, BatchAcknowledged):
                self.acknowledged[event.batch_seq] += 1
                self.closed_step[event.batch_seq] = self._step()
            elif isinstance(event, BatchRefused):
                self.refused.add(event.batch_seq)
                self.closed_step[event.batch_seq] = self._step()
