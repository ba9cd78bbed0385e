"""A shore made of ``protocol/`` alone, for tests that drive the outbox by hand.

:class:`TestShore` verifies the vessel's uplink batches and signs downlink batches of
whatever envelopes a test chooses (a reply, a BatchAck with holes, lane blocks), numbered
1, 2, 3 ... and handed back decoded, as the vessel's link decodes them, ready for
``Outbox.apply_downlink``. It has no store and no opinions: for the shore as shipped
(ingest, store, downlink) on the fake link, use :mod:`tests.kit.voyage`; for the pure
exchange, ``tests/exchange/memory.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.batch import Batch, Direction, decode_batch, encode_batch
from protocol.codebook import Codebook
from protocol.envelopes import Envelope
from protocol.signing import SigningKey
from tests.kit.clock import DEFAULT_START

#: The vessel number of ``demo_ship_config`` and of the shipboard fixtures.
VESSEL_ID = 1
#: The suite's usual "now" (2026-09-21 22:13:20 UTC).
NOW = DEFAULT_START


@dataclass
class TestShore:
    """A minimal shore built on protocol/: verifies uplink batches, signs downlink ones."""

    codebook: Codebook
    vessel_key: SigningKey
    shore_key: SigningKey
    vessel_id: int = VESSEL_ID
    next_downlink: int = 1
    received: list[Batch] = field(default_factory=list)

    __test__ = False

    def receive(self, data: bytes) -> Batch:
        """An uplink batch, verified and decoded as the relay does (and kept)."""
        batch = decode_batch(
            data,
            codebook=self.codebook,
            verify_key=self.vessel_key.verify_key,
            direction=Direction.UPLINK,
        )
        self.received.append(batch)
        return batch

    def downlink(self, envelopes: Sequence[Envelope], minutes: int = int(NOW // 60)) -> Batch:
        """The next downlink batch of ``envelopes``, signed, then decoded as the vessel
        decodes it."""
        data = encode_batch(
            envelopes,
            direction=Direction.DOWNLINK,
            vessel_id=self.vessel_id,
            batch_seq=self.next_downlink,
            batch_minutes=minutes,
            signing_key=self.shore_key,
            codebook=self.codebook,
        )
        self.next_downlink += 1
        return decode_batch(
            data,
            codebook=self.codebook,
            verify_key=self.shore_key.verify_key,
            direction=Direction.DOWNLINK,
        )
