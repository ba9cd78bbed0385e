"""A vessel on its SBD fallback gets its acknowledgement in a downlink batch of its own
(issue 25): the mixed-link benchmark caught a BatchAck riding with more than fits an MT
message (a family's long reply, a lane block), so the vessel resent (and paid again for)
a batch the shore had."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from protocol.envelopes import BatchAck, DeliveryReceipt, Reply
from protocol.languages import Language
from shore.downlink import Downlink, DownlinkConfig
from shore.ingest import Ingestor
from shore.store import SqliteStore
from tests.shore.store_fixtures import SHORE_KEY, T0, decoded_downlink, uplink
from tests.shore.test_hostile_batches import VESSEL, _contact, _message, _open_store

CODEBOOK = default_codebook()
SBD_MT_TWO_MESSAGES = 540  # [sbd] downlink_max_bytes
# a reply the codec cannot shrink much (a list of parcel tracking codes, say)
LONG_REPLY = "Tracking: " + " ".join(
    hashlib.sha256(str(n).encode()).hexdigest()[:16] for n in range(60)
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store with the test vessels registered."""
    opened = await _open_store(tmp_path / "relay.db")
    try:
        yield opened
    finally:
        await opened.close()


async def published_after_a_batch_of(
    store: SqliteStore, messages: int, *, on_fallback: bool, long_reply: bool = True
) -> list[bytes]:
    """The vessel's batch of ``messages`` family messages is stored and the family's long
    reply queued; one downlink pass publishes what it makes; the published batches."""
    ingestor = Ingestor(store, CODEBOOK, clock=lambda: T0 + 60)
    batch = uplink(VESSEL, 1, [_contact(), *(_message(seq) for seq in range(1, messages + 1))])
    await ingestor.handle(f"vr/{VESSEL}/u", batch)
    if long_reply:
        await store.queue_reply(VESSEL, 3, 1, LONG_REPLY, Language.ENG, False, T0 + 90)
    downlink = Downlink(
        store,
        SHORE_KEY,
        CODEBOOK,
        DownlinkConfig(slots=False),
        clock=lambda: T0 + 120,
        ack_within=lambda vessel_id: (
            SBD_MT_TWO_MESSAGES if on_fallback and vessel_id == VESSEL else None
        ),
    )
    published: list[bytes] = []

    async def publish(topic: str, data: bytes) -> None:
        published.append(data)

    await downlink.publish_due(publish)
    return published


async def test_on_the_fallback_the_acknowledgement_goes_alone_and_fits(
    store: SqliteStore,
) -> None:
    """Twenty messages over SBD while the family's long reply waits: together they would
    not fit the MT messages, so the first downlink batch holds the BatchAck alone and fits;
    the twenty ACCEPTED_ASHORE receipts and the reply follow in a batch of their own
    (which waits for the main link, too big for SBD)."""
    published = await published_after_a_batch_of(store, 20, on_fallback=True)
    first = decoded_downlink(published[0]).envelopes
    assert [type(e) for e in first] == [BatchAck]
    assert first[0].up_to == 1
    assert len(published[0]) <= SBD_MT_TWO_MESSAGES
    receipts = [e for data in published[1:] for e in decoded_downlink(data).envelopes]
    assert sorted(r.message_seq for r in receipts if isinstance(r, DeliveryReceipt)) == list(
        range(1, 21)
    )
    assert not any(isinstance(e, BatchAck) for e in receipts)
    assert any(isinstance(e, Reply) for e in receipts)


async def test_on_the_main_link_the_acknowledgement_rides_with_the_receipts(
    store: SqliteStore,
) -> None:
    """The same over the main link: one batch, the BatchAck, every receipt and the reply
    together (no extra batch where bytes are cheap): too big for SBD, as the benchmark's
    vessel met it."""
    published = await published_after_a_batch_of(store, 20, on_fallback=False)
    assert len(published) == 1
    envelopes = decoded_downlink(published[0]).envelopes
    assert isinstance(envelopes[0], BatchAck)
    assert sum(isinstance(e, DeliveryReceipt) for e in envelopes) == 20
    assert len(published[0]) > SBD_MT_TWO_MESSAGES  # what the benchmark's vessel met


async def test_on_the_fallback_what_fits_goes_in_one_batch(store: SqliteStore) -> None:
    """Twenty messages over SBD and nothing long waiting: the BatchAck and the twenty
    receipts fit the MT messages together, so they go in one batch (two would cost more
    credits)."""
    published = await published_after_a_batch_of(store, 20, on_fallback=True, long_reply=False)
    assert len(published) == 1
    assert len(published[0]) <= SBD_MT_TWO_MESSAGES
    envelopes = decoded_downlink(published[0]).envelopes
    assert isinstance(envelopes[0], BatchAck)
    assert sum(isinstance(e, DeliveryReceipt) for e in envelopes) == 20
