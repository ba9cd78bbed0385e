"""The relay accepts compact frames the way it accepts batches, and refuses them the same way.

A compact frame (``protocol.compact``) is how a lone message goes over Iridium SBD: the
relay checks its 8-byte tag under the link keys it derives from its shore key and the
vessel's key, then stores the batch it carries in the vessel's one replay window. These
tests drive the real ``Ingestor`` on a real SQLite store.
"""

from __future__ import annotations

import collections
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from protocol.codebook import Codec
from protocol.compact import LinkKeys, encode_compact, open_compact, seal_compact
from protocol.envelopes import BatchAck, DeliveryReceipt, Envelope, LaneBlock, Sos
from protocol.errors import Reason
from protocol.signing import SigningKey
from shore.ingest import Ingestor
from shore.store import IngestOutcome, SqliteStore
from tests.kit.mosquitto import MosquittoBroker
from tests.protocol.test_fuzz import (
    COMPACT_PLAINTEXT_MUTATORS,
    COMPACT_WIRE_MUTATORS,
    UPLINK,
)
from tests.shore.store_fixtures import OTHER_KEY, SHORE_KEY, T0, VESSEL_KEY, uplink
from tests.shore.test_hostile_batches import (
    MINUTES,
    NEIGHBOUR,
    VESSEL,
    _contact,
    _downlink,
    _message,
    _open_store,
    _refusals,
)
from tests.shore.test_ingest import relay_in_process, vessel_link

CODEBOOK = default_codebook()
TOPIC = f"vr/{VESSEL}/u"
KEYS = LinkKeys.for_vessel(VESSEL, VESSEL_KEY, SHORE_KEY.verify_key)


def compact(envelopes: list[Envelope], seq: int, keys: LinkKeys = KEYS) -> bytes:
    """A compact uplink frame as the vessel's agent makes it."""
    return encode_compact(
        envelopes,
        keys=keys,
        batch_seq=seq,
        batch_minutes=MINUTES,
        codebook=CODEBOOK,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store with vessels 7 and 8 registered."""
    opened = await _open_store(tmp_path / "relay.db")
    try:
        yield opened
    finally:
        await opened.close()


def _ingestor(store: SqliteStore, shore_key: SigningKey | None = SHORE_KEY) -> Ingestor:
    return Ingestor(store, CODEBOOK, clock=lambda: T0 + 60, shore_key=shore_key)


async def test_a_lone_message_in_a_compact_frame_is_stored_once(store: SqliteStore) -> None:
    """The vessel announces the mother's address in a signed batch, then sends a message
    alone in a 50-byte compact frame (batch 2 of the same numbering): it is stored and
    queued for delivery; the frame sent again is a duplicate, stored once; the shore's
    signed downlink acknowledges batch 2 and confirms the message."""
    ingestor = _ingestor(store)
    assert await ingestor.handle(TOPIC, uplink(VESSEL, 1, [_contact()])) is IngestOutcome.STORED
    frame = compact([_message(5)], 2)
    assert len(frame) == 50
    assert await ingestor.handle(TOPIC, frame) is IngestOutcome.STORED
    assert await ingestor.handle(TOPIC, frame) is IngestOutcome.DUPLICATE
    assert [m.message_seq for m in await store.messages(VESSEL)] == [5]
    assert ingestor.stats.messages_stored == 1
    assert await store.quarantined() == []
    # the shore's signed downlink acknowledges it like a batch, with its receipt
    down = await _downlink(store, VESSEL)
    [ack] = [e for e in down if isinstance(e, BatchAck)]
    assert ack.up_to == 2
    assert not ack.rejected
    assert any(isinstance(e, DeliveryReceipt) and e.message_seq == 5 for e in down)


async def test_forged_and_garbled_frames_are_quarantined_and_burn_no_batch_number(
    store: SqliteStore,
) -> None:
    """A bit flipped on the way, a frame made under a key the vessel never had, a truncated
    tag: each is quarantined as SIGNATURE_INVALID (or MALFORMED), nothing is stored, and
    the real frame of that number is stored afterwards (a forger cannot make the relay
    refuse a number the vessel will use)."""
    ingestor = _ingestor(store)
    frame = compact([_contact(), _message(5)], 1)
    flipped = bytearray(frame)
    flipped[20] ^= 0x04
    forger = LinkKeys.for_vessel(VESSEL, SigningKey(bytes(range(9, 41))), SHORE_KEY.verify_key)
    cut_tag = frame[:4] + frame[8:]
    for forged, reason in (
        (bytes(flipped), Reason.SIGNATURE_INVALID),
        (compact([_contact(), _message(5)], 1, forger), Reason.SIGNATURE_INVALID),
        (cut_tag, Reason.SIGNATURE_INVALID),
        (frame[:7], Reason.MALFORMED),
    ):
        assert await ingestor.handle(TOPIC, forged) is reason
    assert await store.messages(VESSEL) == []
    assert {entry.reason for entry in await store.quarantined()} == {
        Reason.SIGNATURE_INVALID,
        Reason.MALFORMED,
    }
    assert await ingestor.handle(TOPIC, frame) is IngestOutcome.STORED
    assert [m.message_seq for m in await store.messages(VESSEL)] == [5]


async def test_a_frame_of_another_vessel_or_on_another_topic_is_refused(
    store: SqliteStore,
) -> None:
    """Vessel 8's frame published on vessel 7's topic, or claiming vessel 7 but made with
    vessel 8's key: quarantined, never stored under either vessel."""
    ingestor = _ingestor(store)
    neighbours = LinkKeys.for_vessel(NEIGHBOUR, OTHER_KEY, SHORE_KEY.verify_key)
    assert (
        await ingestor.handle(TOPIC, compact([_contact(), _message(5)], 1, neighbours))
        is Reason.MALFORMED
    )
    claims_seven = LinkKeys.for_vessel(VESSEL, OTHER_KEY, SHORE_KEY.verify_key)
    assert (
        await ingestor.handle(TOPIC, compact([_contact(), _message(5)], 1, claims_seven))
        is Reason.SIGNATURE_INVALID
    )
    assert await store.messages(VESSEL) == []
    assert await store.messages(NEIGHBOUR) == []


async def test_a_replayed_batch_number_in_a_compact_frame_is_refused(store: SqliteStore) -> None:
    """Batches and compact frames share one numbering: a compact frame reusing the number
    of a stored batch with other content is refused (REPLAYED), not stored."""
    ingestor = _ingestor(store)
    assert (
        await ingestor.handle(TOPIC, uplink(VESSEL, 1, [_contact(), _message(5)]))
        is IngestOutcome.STORED
    )
    assert await ingestor.handle(TOPIC, compact([_message(6)], 1)) is IngestOutcome.REJECTED
    assert [m.message_seq for m in await store.messages(VESSEL)] == [5]
    assert _refusals(await _downlink(store, VESSEL)) == {1: Reason.REPLAYED}


async def test_an_authentic_frame_that_cannot_be_accepted_is_refused_for_good(
    store: SqliteStore,
) -> None:
    """A changed agent (it holds the vessel key, hence the link keys) sends a lane block
    of the wrong size, and a frame whose content is garbage after a valid batch number:
    both are refused for good with their reason (told to the vessel in its BatchAck),
    through the same refusal path as batches, and the next frame is stored."""
    ingestor = _ingestor(store)
    wrong_size = LaneBlock(period=1, index=0, block=bytes(200), written_minutes=MINUTES)
    assert await ingestor.handle(TOPIC, compact([wrong_size], 1)) is IngestOutcome.REJECTED
    plaintext = open_compact(compact([_message(9)], 2), KEYS)[1]
    garbage = seal_compact(plaintext[:3] + b"\x01\xff", keys=KEYS)
    assert await ingestor.handle(TOPIC, garbage) is IngestOutcome.REJECTED
    assert _refusals(await _downlink(store, VESSEL)) == {
        1: Reason.MALFORMED,
        2: Reason.MALFORMED,
    }
    frame = compact([_contact(), Sos(message_seq=10, crew=3, written_minutes=MINUTES)], 3)
    assert await ingestor.handle(TOPIC, frame) is IngestOutcome.STORED
    assert ingestor.stats.unprocessable == 0


async def test_a_relay_without_its_shore_key_quarantines_compact_frames(
    store: SqliteStore,
) -> None:
    """An ingestor built without the shore key cannot derive link keys: compact frames are
    quarantined (MALFORMED, with a message saying why), never stored unchecked."""
    ingestor = _ingestor(store, shore_key=None)
    assert await ingestor.handle(TOPIC, compact([_contact(), _message(5)], 1)) is Reason.MALFORMED
    [entry] = await store.quarantined()
    assert "shore key" in entry.message


async def test_fuzz_compact_mutants_never_stop_ingest(tmp_path: Path) -> None:
    """600 mutated compact frames (half re-sealed with the vessel's link keys, so they get
    past the tag) on the real ingest and SQLite store: each ends stored, duplicate, refused
    or quarantined; none raises, none needs the last line of defence, and another vessel's
    batch is stored afterwards."""
    rng = random.Random(25)
    bases = [
        compact_with(list(UPLINK[:size]), size, codecs)
        for size in (1, 2, len(UPLINK))
        for codecs in ((Codec.STORED,), (Codec.CONTEXT,), (Codec.ZSTD, Codec.CONTEXT))
    ]
    store = await _open_store(tmp_path / "fuzz.db")
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        ingestor = _ingestor(store)
        for case in range(600):
            base, other = rng.choice(bases), rng.choice(bases)
            if rng.random() < 0.5:
                mutator = rng.choice(COMPACT_PLAINTEXT_MUTATORS)
                plaintext = mutator(rng, open_compact(base, KEYS)[1], open_compact(other, KEYS)[1])
                mutant = seal_compact(plaintext, keys=KEYS)
            else:
                mutator = rng.choice(COMPACT_WIRE_MUTATORS)
                mutant = mutator(rng, base, other)
            try:
                outcome = await ingestor.handle(TOPIC, mutant)
            except Exception as exc:  # the invariant under test: nothing escapes
                raise AssertionError(
                    f"mutant {case} ({mutator.__name__}) raised {type(exc).__name__}: {exc}\n"
                    f"mutant: {mutant.hex()}"
                ) from exc
            outcomes[outcome.name if isinstance(outcome, Reason) else outcome.value] += 1
            assert ingestor.stats.unprocessable == ingestor.stats.handler_failures == 0, (
                f"mutant {case} ({mutator.__name__}) got past every check of protocol/: "
                f"{mutant.hex()}"
            )
        neighbours = uplink(NEIGHBOUR, 1, [_contact(), _message(1)], key=OTHER_KEY)
        assert await ingestor.handle(f"vr/{NEIGHBOUR}/u", neighbours) is IngestOutcome.STORED
    finally:
        await store.close()
    assert outcomes["SIGNATURE_INVALID"] > 100
    assert outcomes["rejected"] > 30
    assert outcomes["stored"] > 0


def compact_with(envelopes: list[Envelope], seq: int, codecs: tuple[Codec, ...]) -> bytes:
    """A compact uplink frame of vessel 7 coded with only ``codecs``."""
    return encode_compact(
        envelopes,
        keys=KEYS,
        batch_seq=seq,
        batch_minutes=MINUTES,
        codebook=CODEBOOK,
        codecs=codecs,
    )


async def test_the_relay_process_acknowledges_a_compact_frame_over_the_broker(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The whole relay (its config, its shore key file, Mosquitto): the vessel publishes a
    signed batch, then a lone message as a compact frame and a forged compact frame; the
    relay stores both messages, quarantines the forgery, and its signed downlink
    acknowledges batches 1 and 2 with a receipt for each message."""
    forger = LinkKeys.for_vessel(VESSEL, SigningKey(bytes(range(9, 41))), SHORE_KEY.verify_key)
    async with relay_in_process(tmp_path, fresh_mosquitto), vessel_link(fresh_mosquitto) as v:
        await v.publish(uplink(VESSEL, 1, [_contact(), _message(5)]))
        await v.publish(compact([_message(9)], 3, forger))
        await v.publish(compact([_message(6)], 2))
        await v.wait_for(lambda: v.acked >= {1, 2} and len(v.receipts) >= 2)
    assert sorted(seq for seq, _ in v.receipts) == [5, 6]
    assert v.rejected == {}
    store = await SqliteStore.open(tmp_path / "relay.db")
    try:
        assert sorted(m.message_seq for m in await store.messages(VESSEL)) == [5, 6]
        [entry] = await store.quarantined()
        assert entry.reason is Reason.SIGNATURE_INVALID
    finally:
        await store.close()
