"""The store contract: one suite, run against SQLite and against a real PostgreSQL 15.

PostgreSQL is started once per test session (``initdb`` + ``pg_ctl`` on loopback, a
throwaway directory), each test gets a database of its own, and the server is stopped at
the end. Without PostgreSQL installed these tests FAIL and say how to install it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from common.codebooks import default_codebook
from common.speech import CodedSpeech
from protocol.envelopes import (
    BatchAck,
    CaseStatus,
    CaseStatusUpdate,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryFailure,
    DeliveryReceipt,
    Envelope,
    FailureReason,
    GrievanceReport,
    ReceiptStage,
    Reply,
    Sos,
    VoiceReply,
)
from protocol.errors import Reason
from protocol.languages import Language
from protocol.voice import VoiceMode
from shore.downlink import Downlink, DownlinkBell, DownlinkConfig
from shore.store import (
    DeliveryKey,
    IngestOutcome,
    IngestResult,
    RegistryError,
    RelayStore,
    ReplayWindow,
    SqliteStore,
    VesselInfo,
    database,
)
from shore.store.deliveries import Delivery
from shore.store.links import add_to_window
from shore.store.postgres import PostgresStore
from shore.vocabulary import CONTACT_NOT_KNOWN_YET, DeliveryEnd, Destination
from tests.kit.wait import eventually
from tests.shore.store_fixtures import (
    SHORE_KEY,
    T0,
    VESSEL_KEY,
    PostgresMissing,
    PostgresServer,
    decoded_downlink,
    decoded_uplink,
    shore_encoder,
    uplink,
)

MINUTES = int(T0 // 60)
INFO = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1, 2))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped at the end."""
    try:
        directory = Path(tempfile.mkdtemp(prefix="vr-pg-"))
    except OSError as exc:  # pragma: no cover
        pytest.fail(f"no temporary directory: {exc}")
    os.chmod(directory, 0o755)
    try:
        server = PostgresServer(directory)
    except PostgresMissing as exc:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(str(exc), pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteStore | PostgresStore]:
    """A fresh store of each backend."""
    opened: SqliteStore | PostgresStore
    if request.param == "sqlite":
        opened = await SqliteStore.open(tmp_path / "relay.db", phrases=_phrases)
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        opened = await PostgresStore.open(server.create_database(), phrases=_phrases)
    try:
        yield opened
    finally:
        await opened.close()


def _phrases(code: int, lang: Language | None) -> str | None:
    return {1: "I am well"}.get(code) if lang in (None, Language.ENG) else None


async def _vessel(store: RelayStore) -> int:
    return await store.add_vessel(INFO, VESSEL_KEY.verify_key.key, T0)


def _contact(crew: int = 3, contact: int = 1, minutes: int = MINUTES) -> ContactBookChange:
    return ContactBookChange(
        crew=crew,
        contact=contact,
        channel=Channel.EMAIL,
        address="mother@example.com",
        written_minutes=minutes,
        name="Daw Hla",
        contact_lang=Language.MYA,
        crew_name="Ko Aung",
    )


def _message(seq: int, *, crew: int = 3, contact: int = 1) -> CrewMessage:
    return CrewMessage(
        message_seq=seq,
        crew=crew,
        contact=contact,
        written_minutes=MINUTES,
        lang=Language.MYA,
        body=f"မင်္ဂလာပါ အမေ {seq}",
    )


async def _ingest(
    store: RelayStore, vessel_id: int, seq: int, *envelopes: Envelope
) -> IngestResult:
    data = uplink(vessel_id, seq, list(envelopes))
    return await store.ingest_batch(decoded_uplink(data), data, T0 + seq)


async def _downlink(store: RelayStore, vessel_id: int, now: float = T0 + 100) -> list[object]:
    made = await store.make_downlink_batch(vessel_id, now, shore_encoder(vessel_id), 100)
    assert made is not None
    return list(decoded_downlink(made.data).envelopes)


# --- registry ---------------------------------------------------------------------------------


async def test_registry_adds_lists_rotates_and_revokes_keys(store: RelayStore) -> None:
    """The operator registers a vessel, rotates its key with an overlap, then revokes the old."""
    vessel_id = await _vessel(store)
    assert vessel_id == 1
    second = await store.add_vessel(
        VesselInfo("Ocean 2", "TH", "TH-0043", "Owner"), b"\x07" * 32, T0
    )
    assert second == 2
    record = await store.get_vessel(vessel_id)
    assert record is not None
    assert record.info == INFO
    assert record.keys_valid_at(T0) == (VESSEL_KEY.verify_key.key,)
    await store.add_vessel_key(vessel_id, b"\x09" * 32, T0 + 10, T0)
    record = await store.get_vessel(vessel_id)
    assert record is not None
    assert len(record.keys_valid_at(T0 + 20)) == 2
    await store.revoke_vessel_key(vessel_id, VESSEL_KEY.verify_key.key, T0 + 30)
    record = await store.get_vessel(vessel_id)
    assert record is not None
    assert record.keys_valid_at(T0 + 40) == (b"\x09" * 32,)
    assert record.keys_valid_at(T0 + 20) == (VESSEL_KEY.verify_key.key, b"\x09" * 32)
    await store.set_vessel_unions(vessel_id, [5])
    record = await store.get_vessel(vessel_id)
    assert record is not None
    assert record.info.unions == (5,)
    assert [v.vessel_id for v in await store.list_vessels()] == [1, 2]
    # what ingest reads for each batch: the same keys in one statement
    assert await store.vessel_keys(vessel_id) == record.keys
    assert await store.vessel_keys(3) is None  # not registered


async def test_registry_refuses_duplicates_and_unknown_vessels(store: RelayStore) -> None:
    """A second vessel with the same flag and registration, or a key of an unknown vessel, is
    refused with a message that says what to do."""
    await _vessel(store)
    with pytest.raises(RegistryError, match="already registered"):
        await _vessel(store)
    with pytest.raises(RegistryError, match="not registered"):
        await store.add_vessel_key(99, b"\x01" * 32, T0, T0)
    with pytest.raises(RegistryError, match="has no key"):
        await store.revoke_vessel_key(1, b"\x02" * 32, T0)
    assert await store.get_vessel(99) is None


# --- ingest -----------------------------------------------------------------------------------


async def test_batch_is_stored_with_contacts_deliveries_and_receipts(store: RelayStore) -> None:
    """A vessel's first batch: its contact and two messages are stored, each message gets a
    delivery row and an ACCEPTED_ASHORE receipt, and the next downlink batch acknowledges it."""
    vessel_id = await _vessel(store)
    result = await _ingest(store, vessel_id, 1, _contact(), _message(1), _message(2))
    assert result == IngestResult(IngestOutcome.STORED, vessel_id, 1, new_messages=2, contacts=1)
    messages = await store.messages(vessel_id)
    assert [(m.message_seq, m.kind, m.state, m.lang) for m in messages] == [
        (1, "message", "accepted", Language.MYA),
        (2, "message", "accepted", Language.MYA),
    ]
    contact = await store.contact(vessel_id, 3, 1)
    assert contact is not None
    assert (contact.address, contact.lang, contact.crew_name) == (
        "mother@example.com",
        Language.MYA,
        "Ko Aung",
    )
    assert await store.replay_window(vessel_id) == ReplayWindow(1)
    envelopes = await _downlink(store, vessel_id)
    assert envelopes[0] == BatchAck(up_to=1, written_minutes=int((T0 + 100) // 60))
    assert envelopes[1:] == [
        DeliveryReceipt(1, ReceiptStage.ACCEPTED_ASHORE, int((T0 + 1) // 60)),
        DeliveryReceipt(2, ReceiptStage.ACCEPTED_ASHORE, int((T0 + 1) // 60)),
    ]
    assert await store.make_downlink_batch(vessel_id, T0, shore_encoder(vessel_id), 10) is None


async def test_resent_batch_is_acknowledged_again_and_stored_once(store: RelayStore) -> None:
    """The vessel resends a batch whose BatchAck it never got: nothing is stored twice, no
    second receipt, but a new BatchAck goes down."""
    vessel_id = await _vessel(store)
    data = uplink(vessel_id, 1, [_contact(), _message(1)])
    await store.ingest_batch(decoded_uplink(data), data, T0)
    await _downlink(store, vessel_id)
    again = await store.ingest_batch(decoded_uplink(data), data, T0 + 5)
    assert again.outcome is IngestOutcome.DUPLICATE
    assert await store.stored_batch_hash(vessel_id, 1) is not None
    assert await store.count_messages(vessel_id) == 1
    envelopes = await _downlink(store, vessel_id, T0 + 200)
    assert envelopes == [BatchAck(up_to=1, written_minutes=int((T0 + 200) // 60))]


async def test_other_bytes_under_a_stored_batch_number_are_refused(store: RelayStore) -> None:
    """A signed batch reusing a stored batch number with other content (a vessel that lost
    its outbox) is quarantined and refused with REPLAYED; the first batch is untouched."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 1, _message(1))
    other = uplink(vessel_id, 1, [_message(7)])
    result = await store.ingest_batch(decoded_uplink(other), other, T0 + 9)
    assert result.outcome is IngestOutcome.REJECTED
    assert [m.message_seq for m in await store.messages(vessel_id)] == [1]
    (entry,) = await store.quarantined()
    assert (entry.reason, entry.vessel_id, entry.batch_seq, entry.raw) == (
        Reason.REPLAYED,
        vessel_id,
        1,
        other,
    )
    ack = (await _downlink(store, vessel_id))[0]
    assert isinstance(ack, BatchAck)
    assert ack.rejected == ((1, int(Reason.REPLAYED)),)


async def test_replayed_message_in_a_new_batch_is_not_stored_twice(store: RelayStore) -> None:
    """A message resent in a later batch (the vessel re-batched it) is stored and receipted once."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 1, _message(1))
    result = await _ingest(store, vessel_id, 2, _message(1), _message(2))
    assert (result.new_messages, result.duplicate_messages) == (1, 1)
    assert await store.count_messages(vessel_id) == 2
    envelopes = await _downlink(store, vessel_id)
    receipts = [e for e in envelopes if isinstance(e, DeliveryReceipt)]
    assert sorted(r.message_seq for r in receipts) == [1, 2]
    assert len(await store.deliveries(vessel_id)) == 2


async def test_replay_window_tracks_gaps_and_fills_them(store: RelayStore) -> None:
    """Batches arrive out of order (1, 2, 4, 5, 7, then 3): the window and the BatchAck say
    exactly which are stored."""
    vessel_id = await _vessel(store)
    for seq in (1, 2, 4, 5, 7):
        await _ingest(store, vessel_id, seq, _message(seq))
    assert await store.replay_window(vessel_id) == ReplayWindow(2, ((4, 5), (7, 7)))
    ack = (await _downlink(store, vessel_id))[0]
    assert ack == BatchAck(up_to=2, written_minutes=int((T0 + 100) // 60), ranges=((4, 5), (7, 7)))
    await _ingest(store, vessel_id, 3, _message(3))
    assert await store.replay_window(vessel_id) == ReplayWindow(5, ((7, 7),))


def test_window_arithmetic() -> None:
    """Adding numbers merges ranges and folds them into up_to when they touch it."""
    window = ReplayWindow(0)
    for seq in (3, 1, 5, 2, 4, 4):
        window = add_to_window(window, seq)
    assert window == ReplayWindow(5)
    assert add_to_window(ReplayWindow(5, ((8, 9),)), 7) == ReplayWindow(5, ((7, 9),))


async def test_ack_only_batches_do_not_ping_pong(store: RelayStore) -> None:
    """An uplink batch that only acknowledges downlink batches is acknowledged lazily (with the
    next downlink batch), so vessel and shore do not send acknowledgements back and forth."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 1, _message(1))
    made = await store.make_downlink_batch(vessel_id, T0, shore_encoder(vessel_id), 10)
    assert made is not None
    result = await _ingest(
        store, vessel_id, 2, BatchAck(up_to=made.downlink_seq, written_minutes=MINUTES)
    )
    assert result.downlink_acked == 1
    assert (await store.downlink_batches(vessel_id))[0].acked_at is not None
    assert await store.vessels_with_downlink_work(T0 + 10, 60, 3600) == []
    assert await store.make_downlink_batch(vessel_id, T0, shore_encoder(vessel_id), 10) is None
    await store.queue_case_update(vessel_id, 9, CaseStatus.ACKNOWLEDGED, None, T0)
    envelopes = await _downlink(store, vessel_id)
    assert envelopes[0] == BatchAck(up_to=2, written_minutes=int((T0 + 100) // 60))
    assert envelopes[1] == CaseStatusUpdate(9, CaseStatus.ACKNOWLEDGED, MINUTES)


async def test_rejected_batch_is_told_until_the_vessel_acknowledges_the_telling(
    store: RelayStore,
) -> None:
    """An authentic batch refused for good travels in BatchAck.rejected, again in every
    acknowledgement until the vessel acknowledges a downlink batch that carried it."""
    vessel_id = await _vessel(store)
    await store.reject_batch(vessel_id, 1, Reason.UNKNOWN_DICTIONARY, "dict 9", b"x" * 90, T0)
    first = await _downlink(store, vessel_id)
    assert first[0] == BatchAck(up_to=1, written_minutes=int((T0 + 100) // 60), rejected=((1, 3),))
    await _ingest(store, vessel_id, 2, _message(2))
    second = await _downlink(store, vessel_id)
    assert isinstance(second[0], BatchAck)
    assert (second[0].up_to, second[0].rejected) == (2, ((1, 3),))
    await _ingest(store, vessel_id, 3, BatchAck(up_to=2, written_minutes=MINUTES), _message(3))
    third = await _downlink(store, vessel_id)
    assert isinstance(third[0], BatchAck)
    assert (third[0].up_to, third[0].rejected) == (3, None)


async def test_quarantine_counts_the_same_bytes_once(store: RelayStore) -> None:
    """The same forged bytes sent five times make one quarantine entry counted five times;
    an oversized payload is kept cut, with its full size and hash."""
    for n in range(5):
        await store.quarantine(b"forged", Reason.SIGNATURE_INVALID, "bad", T0 + n, 1, 4)
    big = b"\x01" * 300_000
    await store.quarantine(big, Reason.LIMIT_EXCEEDED, "too big", T0)
    big_entry, forged = await store.quarantined()
    assert (forged.times, forged.first_at, forged.last_at) == (5, T0, T0 + 4)
    assert (big_entry.link_bytes, len(big_entry.raw), big_entry.vessel_id) == (
        300_000,
        64 * 1024,
        None,
    )


async def test_older_contact_change_never_overwrites_a_newer_one(store: RelayStore) -> None:
    """A batch replayed late carries an old address: the newer one stays."""
    vessel_id = await _vessel(store)
    newer = ContactBookChange(
        crew=3,
        contact=1,
        channel=Channel.SMS,
        address="+95911111111",
        written_minutes=MINUTES + 10,
    )
    await _ingest(store, vessel_id, 2, newer)
    await _ingest(store, vessel_id, 1, _contact(minutes=MINUTES))
    contact = await store.contact(vessel_id, 3, 1)
    assert contact is not None
    assert (contact.channel, contact.address) == (Channel.SMS, "+95911111111")
    found = await store.contacts_with_address(Channel.SMS, "+95911111111")
    assert [(c.vessel_id, c.crew, c.contact) for c in found] == [(vessel_id, 3, 1)]


# --- deliveries -------------------------------------------------------------------------------


async def test_delivery_claim_attempt_finish_and_receipt(store: RelayStore) -> None:
    """A worker claims a due delivery (others cannot while the lease runs), records the attempt
    before sending, finishes it, and the DELIVERED receipt is queued once; it goes down
    when the vessel's next uplink acknowledges the downlink batch it had not collected."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 1, _contact(), _message(1))
    await _downlink(store, vessel_id)
    (due,) = await store.claim_due_deliveries(T0 + 10, 10, "w1")
    assert (due.destination, due.address, due.crew_name, due.contact_lang, due.text) == (
        Destination.EMAIL,
        "mother@example.com",
        "Ko Aung",
        Language.MYA,
        "မင်္ဂလာပါ အမေ 1",
    )
    assert (due.attempts, due.unfinished_attempt) == (0, False)
    assert await store.claim_due_deliveries(T0 + 11, 10, "w2") == []
    await store.record_attempt(due.key, T0 + 12, "w1")
    await store.finish_delivery(due.key, "delivered", None, T0 + 13)
    await store.finish_delivery(due.key, "delivered", None, T0 + 14)
    (record,) = await store.deliveries(vessel_id)
    assert (record.outcome, record.attempts, record.unfinished_attempt) == ("delivered", 1, False)
    assert (await store.messages(vessel_id))[0].state == "delivered"
    # the vessel has not collected downlink batch 1 yet: the receipt waits for its next uplink
    assert (
        await store.make_downlink_batch(vessel_id, T0 + 200, shore_encoder(vessel_id), 100) is None
    )
    await _ingest(store, vessel_id, 2, BatchAck(up_to=1, written_minutes=MINUTES))
    envelopes = await _downlink(store, vessel_id, T0 + 200)
    assert envelopes == [
        BatchAck(up_to=2, written_minutes=int((T0 + 200) // 60)),  # owed lazily: rides along
        DeliveryReceipt(1, ReceiptStage.DELIVERED, int((T0 + 13) // 60)),
    ]
    assert await store.claim_due_deliveries(T0 + 10_000, 10, "w1") == []


async def test_a_messages_subject_is_stored_and_handed_to_its_delivery(store: RelayStore) -> None:
    """A crew member mailed home with a Subject line: the relay stores it with the
    message, and the delivery worker gets it for the family mail; a message without one
    (and a quick message) has none."""
    vessel_id = await _vessel(store)
    subject = replace(_message(1), subject="အမေ့မွေးနေ့")
    quick = CrewMessage(message_seq=3, crew=3, contact=1, written_minutes=MINUTES, quick=1)
    await _ingest(store, vessel_id, 1, _contact(), subject, _message(2), quick)
    due = await store.claim_due_deliveries(T0 + 10, 10, "w1")
    assert {d.message_seq: d.subject for d in due} == {1: "အမေ့မွေးနေ့", 2: None, 3: None}
    assert {d.message_seq: d.text for d in due}[1] == "မင်္ဂလာပါ အမေ 1"


async def test_crashed_attempt_comes_back_after_the_lease_as_a_repeat(store: RelayStore) -> None:
    """A worker died after recording its attempt: after the lease the delivery is claimable
    again and shows the unfinished attempt (the worker counts a repeat)."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 1, _contact(), _message(1))
    (due,) = await store.claim_due_deliveries(T0 + 5, 10, "w1")
    await store.record_attempt(due.key, T0 + 5, "w1")
    assert await store.claim_due_deliveries(T0 + 604, 10, "w2") == []
    (again,) = await store.claim_due_deliveries(T0 + 606, 10, "w2")
    assert (again.key, again.attempts, again.unfinished_attempt) == (due.key, 1, True)


async def test_a_message_that_came_before_its_contact_goes_as_soon_as_the_contact_comes(
    store: RelayStore,
) -> None:
    """Batch 2 (two messages) is stored before batch 1 (their contact), as two workers
    ingesting one vessel's session may do: the attempts find no contact and wait their
    backoff, but storing the contact makes them due at once, also the attempt that read
    no contact and ended only after the contact was stored."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 2, _message(1), _message(2))
    early, late = await store.claim_deliveries(T0 + 3, 10, "w1")
    assert (early.address, late.address) == (None, None)

    def waiting(delivery: Delivery) -> DeliveryEnd:
        return DeliveryEnd(
            delivery.key,
            None,
            FailureReason.UNKNOWN_CONTACT,
            retry_at=T0 + 600,
            detail=CONTACT_NOT_KNOWN_YET,
        )

    await store.finish_deliveries([waiting(early)], T0 + 4)
    assert await store.claim_deliveries(T0 + 5, 10, "w2") == []
    await _ingest(store, vessel_id, 1, _contact())
    await store.finish_deliveries([waiting(late)], T0 + 6)
    again = await store.claim_deliveries(T0 + 7, 10, "w2")
    assert sorted((d.key.message_seq, d.address) for d in again) == [
        (1, "mother@example.com"),
        (2, "mother@example.com"),
    ]


async def test_restarted_worker_gives_back_its_own_claims_at_once(store: RelayStore) -> None:
    """A worker killed mid-pass and started again (same name) releases its leases: the
    delivery is claimable at once, still showing the unfinished attempt; other workers'
    claims are left alone."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 1, _contact(), _message(1), _message(2))
    first, second = await store.claim_due_deliveries(T0 + 5, 1, "w1") + list(
        await store.claim_due_deliveries(T0 + 5, 1, "w2")
    )
    await store.record_attempt(first.key, T0 + 5, "w1")
    assert await store.release_claims("w1") == 1
    assert await store.release_claims("w1") == 0
    (again,) = await store.claim_due_deliveries(T0 + 6, 10, "w1")
    assert (again.key, again.unfinished_attempt) == (first.key, True)
    assert second.key != first.key


async def test_reschedule_and_failure_receipt(store: RelayStore) -> None:
    """A transient failure reschedules; a final failure queues a DeliveryFailure, which goes
    down with the vessel's next uplink."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 1, _contact(), _message(1))
    await _downlink(store, vessel_id)
    (due,) = await store.claim_due_deliveries(T0 + 5, 10, "w1")
    await store.record_attempt(due.key, T0 + 5, "w1")
    await store.reschedule_delivery(due.key, T0 + 300, "smtp 451", T0 + 1)
    assert await store.claim_due_deliveries(T0 + 299, 10, "w1") == []
    (due,) = await store.claim_due_deliveries(T0 + 300, 10, "w1")
    await store.finish_delivery(due.key, "failed", FailureReason.ADDRESS_INVALID, T0 + 301)
    (record,) = await store.deliveries(vessel_id)
    assert (record.outcome, record.reason, record.detail) == (
        "failed",
        FailureReason.ADDRESS_INVALID,
        "smtp 451",
    )
    await _ingest(store, vessel_id, 2, BatchAck(up_to=1, written_minutes=MINUTES))
    envelopes = await _downlink(store, vessel_id, T0 + 400)
    assert envelopes == [
        BatchAck(up_to=2, written_minutes=int((T0 + 400) // 60)),
        DeliveryFailure(1, FailureReason.ADDRESS_INVALID, int((T0 + 301) // 60)),
    ]


async def test_grievance_quick_unknown_contact_and_sos(store: RelayStore) -> None:
    """A sealed grievance goes to its union's inbox (once), a quick message is expanded in the
    contact's language, a message to an unannounced contact has no address, an SOS is an alert
    with no delivery."""
    vessel_id = await _vessel(store)
    english = ContactBookChange(
        crew=4,
        contact=2,
        channel=Channel.SMS,
        address="+66800000000",
        written_minutes=MINUTES,
        contact_lang=Language.ENG,
    )
    await _ingest(
        store,
        vessel_id,
        1,
        english,
        GrievanceReport(message_seq=1, union=2, written_minutes=MINUTES, sealed=b"\x01" * 80),
        CrewMessage(message_seq=2, crew=4, contact=2, written_minutes=MINUTES, quick=1),
        _message(3, crew=5, contact=9),
        Sos(message_seq=4, crew=4, written_minutes=MINUTES, position=(1_350_000, 9_800_000)),
    )
    due = {d.message_seq: d for d in await store.claim_due_deliveries(T0 + 5, 10, "w")}
    assert sorted(due) == [1, 2, 3]
    assert (due[1].destination, due[1].union, due[1].sealed, due[1].crew) == (
        Destination.UNION,
        2,
        b"\x01" * 80,
        None,
    )
    assert (due[2].destination, due[2].text, due[2].quick) == (Destination.SMS, "I am well", 1)
    assert (due[3].address, due[3].destination) == (None, Destination.EMAIL)
    for _ in range(2):
        await store.deliver_to_union_inbox(2, vessel_id, 1, b"\x01" * 80, T0 + 6)
    assert await store.union_inbox(2) == [(vessel_id, 1, b"\x01" * 80)]
    sos = (await store.messages(vessel_id))[3]
    assert (sos.kind, sos.state, sos.position) == ("sos", "alert", (1_350_000, 9_800_000))


async def test_claims_are_disjoint_under_concurrency(store: RelayStore) -> None:
    """Four workers claim at once: each delivery is handed to exactly one of them."""
    vessel_id = await _vessel(store)
    await _ingest(store, vessel_id, 1, _contact(), *[_message(n) for n in range(1, 41)])
    claims = await asyncio.gather(
        *(store.claim_due_deliveries(T0 + 5, 15, f"w{n}") for n in range(4))
    )
    keys = [d.key for claim in claims for d in claim]
    assert sorted(keys) == [DeliveryKey(vessel_id, n) for n in range(1, 41)]


async def test_concurrent_ingest_of_the_same_batch_stores_it_once(store: RelayStore) -> None:
    """Two relay workers receive the same batch at once: one stores it, one re-acknowledges."""
    vessel_id = await _vessel(store)
    data = uplink(vessel_id, 1, [_contact(), *[_message(n) for n in range(1, 21)]])
    results = await asyncio.gather(
        *(store.ingest_batch(decoded_uplink(data), data, T0) for _ in range(4))
    )
    assert sorted(r.outcome.value for r in results) == ["duplicate"] * 3 + ["stored"]
    assert await store.count_messages() == 20


async def test_sos_alerts_are_claimed_once_and_the_first_delivered_tells_the_vessel(
    store: RelayStore,
) -> None:
    """An SOS arrives: each rescue contact gets one alert naming the vessel, the crew member
    and the position; an alert claimed is not handed out again during its lease; the first
    alert delivered marks the SOS delivered and queues one DELIVERED receipt, and a later
    failure of the other alert changes nothing."""
    vessel_id = await _vessel(store)
    sos = Sos(message_seq=4, crew=3, written_minutes=MINUTES, position=(1_350_000, 9_800_000))
    await _ingest(store, vessel_id, 1, _contact(), sos)
    await _downlink(store, vessel_id)
    contacts = ["email:rescue@example.org", "sms:+6612345"]
    due = await store.claim_sos_alerts(T0 + 5, contacts, 10)
    assert sorted(alert.contact for alert in due) == contacts
    assert {(a.vessel_name, a.crew, a.crew_name, a.position) for a in due} == {
        ("Sea Star 7", 3, "Ko Aung", (1_350_000, 9_800_000))
    }
    assert await store.claim_sos_alerts(T0 + 6, contacts, 10) == []
    for at in (T0 + 7, T0 + 8):
        await store.finish_sos_alert(vessel_id, 4, contacts[0], True, "smtp 250", at)
    (again,) = await store.claim_sos_alerts(T0 + 70, contacts, 10)
    assert again.contact == contacts[1]
    await store.finish_sos_alert(vessel_id, 4, contacts[1], False, "provider 21211", T0 + 71)
    assert (await store.messages(vessel_id))[0].state == "delivered"
    envelopes = await _downlink(store, vessel_id, T0 + 200)
    assert envelopes == [DeliveryReceipt(4, ReceiptStage.DELIVERED, int((T0 + 7) // 60))]
    outcomes = [(a.contact, a.outcome, a.attempts) for a in await store.sos_alerts(vessel_id)]
    assert outcomes == [(contacts[0], "delivered", 1), (contacts[1], "failed", 1)]


# --- downlink ---------------------------------------------------------------------------------


async def test_a_spoken_reply_and_its_text_go_down_with_their_own_numbers_and_are_purged(
    store: RelayStore,
) -> None:
    """A family's mail with text and a voice memo: both are queued in one transaction with
    reply numbers 1 and 2 (the next reply gets 3) and go down in one batch; once the
    vessel acknowledged it and the retention passed, the text and the speech are purged."""
    vessel_id = await _vessel(store)
    speech = CodedSpeech(VoiceMode.MODE_1200, 1000, bytes(range(150)))
    voice_seq = await store.queue_spoken_reply(
        vessel_id, 3, 1, "Listen", Language.ENG, False, speech, T0
    )
    assert voice_seq == 2
    assert await store.queue_reply(vessel_id, 3, 1, "More", Language.ENG, False, T0) == 3
    made = await store.make_downlink_batch(vessel_id, T0, shore_encoder(vessel_id), 10)
    assert made is not None
    assert decoded_downlink(made.data).envelopes == (
        Reply(1, 3, 1, MINUTES, Language.ENG, "Listen"),
        VoiceReply(2, 3, 1, VoiceMode.MODE_1200, 1000, speech.frames, MINUTES),
        Reply(3, 3, 1, MINUTES, Language.ENG, "More"),
    )
    assert len(await store.claim_downlink_sends(vessel_id, T0, 60, 3600)) == 1  # sent
    ack = BatchAck(up_to=made.downlink_seq, written_minutes=MINUTES)
    await _ingest(store, vessel_id, 1, ack)
    purge = await store.purge_content(T0 + 10 * 86400, 86400)
    assert purge.downlink_batches == 1
    async with store.db.transaction() as tx:
        rows = await tx.fetch("SELECT kind, skeleton, text FROM downlink_items ORDER BY item_id")
    kept = [(int(kind), bytes(skeleton), text) for kind, skeleton, text in rows]
    assert [text for _, _, text in kept] == [None, None, None]
    assert not any(speech.frames in skeleton for _, skeleton, _ in kept)


async def test_downlink_send_resend_and_ack(store: RelayStore) -> None:
    """A downlink batch is sent once; it is resent only after the resend delay when the vessel
    was heard from since, or after the longest delay anyway; the vessel's BatchAck ends it."""
    vessel_id = await _vessel(store)
    reply_seq = await store.queue_reply(vessel_id, 3, 1, "Come home soon", Language.ENG, True, T0)
    assert reply_seq == 1
    assert await store.vessels_with_downlink_work(T0, 60, 3600) == [vessel_id]
    made = await store.make_downlink_batch(vessel_id, T0, shore_encoder(vessel_id), 10)
    assert made is not None
    assert decoded_downlink(made.data).envelopes == (
        Reply(1, 3, 1, MINUTES, Language.ENG, "Come home soon", True),
    )
    (to_send,) = await store.claim_downlink_sends(vessel_id, T0, 60, 3600)  # sent now
    assert to_send.data == made.data
    assert await store.downlink_batches_to_send(vessel_id, T0 + 120, 60, 3600) == []
    await _ingest(store, vessel_id, 100, _message(100))  # heard from at T0 + 100
    (again,) = await store.claim_downlink_sends(vessel_id, T0 + 120, 60, 3600)  # resent
    assert again.downlink_seq == made.downlink_seq
    assert await store.downlink_batches_to_send(vessel_id, T0 + 3000, 60, 3600) == []
    assert len(await store.downlink_batches_to_send(vessel_id, T0 + 3720, 60, 3600)) == 1
    await _ingest(store, vessel_id, 101, BatchAck(up_to=1, written_minutes=MINUTES))
    assert await store.downlink_batches_to_send(vessel_id, T0 + 9999, 60, 3600) == []


async def test_a_batch_due_is_claimed_by_one_worker_and_given_back_when_not_published(
    store: RelayStore,
) -> None:
    """Two workers claiming the same vessel's sends at once: one gets the batch, counted as
    sent; the other gets nothing, also when it read the batch before the first claimed it.
    A claim given back (its publish failed) is unsent again."""
    vessel_id = await _vessel(store)
    await store.queue_reply(vessel_id, 3, 1, "Come home soon", Language.ENG, False, T0)
    made = await store.make_downlink_batch(vessel_id, T0, shore_encoder(vessel_id), 10)
    assert made is not None
    first, second = await asyncio.gather(
        store.claim_downlink_sends(vessel_id, T0, 60, 3600),
        store.claim_downlink_sends(vessel_id, T0, 60, 3600),
    )
    claimed = [*first, *second]
    assert [(b.downlink_seq, b.send_count, b.last_sent_at) for b in claimed] == [
        (made.downlink_seq, 0, None)
    ]
    (counted,) = await store.downlink_batches(vessel_id)
    assert (counted.send_count, counted.last_sent_at) == (1, T0)
    assert await store.claim_downlink_sends(vessel_id, T0 + 1, 60, 3600) == []
    async with store.db.transaction() as tx:  # a worker that read the batch before the claim
        assert not await store.downlink_queue.claim_send(tx, claimed[0], T0)
    await store.downlink_send_failed(claimed[0])
    (again,) = await store.claim_downlink_sends(vessel_id, T0 + 2, 60, 3600)
    assert (again.send_count, again.last_sent_at) == (0, None)


async def test_two_workers_passing_over_the_same_vessels_publish_each_batch_once(
    store: RelayStore,
) -> None:
    """Two relay workers' downlinks pass over the same vessels at the same time (their
    publishes slow, so the passes overlap): every batch reaches the broker once; a publish
    that fails leaves its batch to the next pass, which sends it."""
    vessels = [
        await store.add_vessel(
            VesselInfo(f"Ship {n}", "TH", f"TH-01{n}", "Owner"), bytes([n]) * 32, T0
        )
        for n in range(1, 8)
    ]
    config = DownlinkConfig(slots=False, lane=False)
    workers = [
        Downlink(store, SHORE_KEY, default_codebook(), config, clock=lambda: T0) for _ in range(2)
    ]
    published: list[tuple[str, bytes]] = []

    async def publish(topic: str, data: bytes) -> None:
        await asyncio.sleep(0.01)
        published.append((topic, data))

    for vessel_id in vessels[:6]:
        await store.queue_reply(vessel_id, 3, 1, "news", Language.ENG, False, T0)
    await asyncio.gather(*(worker.publish_due(publish) for worker in workers))
    assert len(published) == len(set(published)) == 6

    async def broken(topic: str, data: bytes) -> None:
        raise ConnectionError("the broker went away")

    await store.queue_reply(vessels[6], 3, 1, "after the outage", Language.ENG, False, T0)
    with pytest.raises(ConnectionError):
        await workers[0].publish_due(broken)
    assert await workers[1].publish_due(publish) == 1
    assert len(published) == len(set(published)) == 7


class _CountingStore:
    """The store, counting the downlink's fleet scans and the vessels it looks at."""

    def __init__(self, store: RelayStore) -> None:
        self._store = store
        self.scans = 0
        self.looked_at: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def vessels_with_downlink_work(
        self, now: float, resend_after_s: float, resend_max_s: float
    ) -> Sequence[int]:
        self.scans += 1
        return await self._store.vessels_with_downlink_work(now, resend_after_s, resend_max_s)

    async def make_downlink_batch(self, vessel_id: int, *args: Any, **kwargs: Any) -> Any:
        self.looked_at.append(vessel_id)
        return await self._store.make_downlink_batch(vessel_id, *args, **kwargs)


async def test_a_rung_downlink_pass_looks_at_the_rung_vessels_and_a_full_pass_at_the_fleet(
    store: RelayStore,
) -> None:
    """The downlink's first pass and every ``tick_s`` scan the fleet; between them, a ring
    for a vessel (ingest stored one of its batches) makes a pass over that vessel alone:
    its reply goes at once, another vessel's waits for the next full pass (``set()``)."""
    rung, other = [
        await store.add_vessel(
            VesselInfo(f"Ship {n}", "TH", f"TH-02{n}", "Owner"), bytes([40 + n]) * 32, T0
        )
        for n in (1, 2)
    ]
    counting = _CountingStore(store)
    downlink = Downlink(
        cast(RelayStore, counting),
        SHORE_KEY,
        default_codebook(),
        DownlinkConfig(slots=False, lane=False, tick_s=3600),
        clock=lambda: T0,
    )
    published: list[str] = []

    async def publish(topic: str, data: bytes) -> None:
        published.append(topic)

    bell = DownlinkBell()
    stopping = asyncio.Event()

    async with asyncio.TaskGroup() as group:
        group.create_task(downlink.run(publish, stopping, bell))
        await eventually(lambda: downlink.stats.full_passes == 1, 30, what="the first pass")
        await store.queue_reply(rung, 3, 1, "rung", Language.ENG, False, T0)
        await store.queue_reply(other, 3, 1, "not rung", Language.ENG, False, T0)
        bell.ring(rung)
        await eventually(lambda: len(published) == 1, 30, what="the rung vessel's batch")
        assert published == [f"vr/{rung}/d"]
        assert counting.scans == 1
        assert counting.looked_at == [rung]
        assert downlink.stats.rung_passes == 1
        bell.set()
        await eventually(lambda: len(published) == 2, 30, what="the full pass")
        assert published == [f"vr/{rung}/d", f"vr/{other}/d"]
        assert counting.scans == 2
        stopping.set()
        bell.set()


async def test_what_waits_for_a_vessel_away_goes_in_one_release_split_at_the_size_limit(
    store: RelayStore,
) -> None:
    """A family's reply goes down at once; the 129 replies queued after it, while the vessel
    has not collected that batch, make no batch and do not count as downlink work. The
    vessel's next uplink (acknowledging the first) releases them: one relay pass publishes
    them all in batches of at most 50 (three), oldest first, the owed acknowledgement in
    the first; nothing is left and nothing more goes."""
    vessel_id = await _vessel(store)
    clock = [T0]
    downlink = Downlink(
        store,
        SHORE_KEY,
        default_codebook(),
        DownlinkConfig(slots=False, lane=False, max_items=50),
        clock=lambda: clock[0],
    )
    published: list[bytes] = []

    async def publish(topic: str, data: bytes) -> None:
        assert topic == f"vr/{vessel_id}/d"
        published.append(data)

    for n in range(130):
        clock[0] = T0 + 600 * n
        await store.queue_reply(vessel_id, 3, 1, f"reply {n}", Language.ENG, False, clock[0])
        await downlink.publish_due(publish)
        if n == 0:
            assert len(published) == 1
    assert len(published) == 1
    assert await store.vessels_with_downlink_work(clock[0], 3600, 10 * 86400) == []
    await _ingest(store, vessel_id, 1, BatchAck(up_to=1, written_minutes=MINUTES))
    assert await store.vessels_with_downlink_work(clock[0], 3600, 10 * 86400) == [vessel_id]
    clock[0] += 5
    assert await downlink.publish_due(publish) == 3
    released = [decoded_downlink(data).envelopes for data in published[1:]]
    assert [len(envelopes) for envelopes in released] == [51, 50, 29]
    assert isinstance(released[0][0], BatchAck)
    replies = [e.reply_seq for envelopes in released for e in envelopes if isinstance(e, Reply)]
    assert replies == list(range(2, 131))
    assert await downlink.publish_due(publish) == 0


async def test_reopening_keeps_data_and_runs_no_migration_twice(tmp_path: Path) -> None:
    """The SQLite store closed and opened again finds everything and migrates nothing again."""
    path = tmp_path / "relay.db"
    first = await SqliteStore.open(path)
    vessel_id = await _vessel(first)
    await _ingest(first, vessel_id, 1, _message(1))
    await first.close()
    second = await SqliteStore.open(path)
    try:
        assert await second.count_messages(vessel_id) == 1
    finally:
        await second.close()


async def test_many_rows_go_in_few_statements_in_order_and_a_conflict_skips_only_itself(
    store: SqliteStore | PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's rows are inserted with multi-row statements. More rows than one statement
    may carry (here the limit is lowered to 9 parameters: three rows of three) go in
    several statements, in their order (generated ids follow it), and a row that clashes
    with one stored before, or with another of the same call, is the only one left out."""
    monkeypatch.setattr(database, "MAX_PARAMETERS", 9)
    async with store.db.transaction() as tx:
        await tx.execute(
            f"CREATE TABLE notes (id {store.db.dialect.serial_pk}, tag TEXT UNIQUE, "
            "n BIGINT, spare BIGINT)"
        )
        await tx.execute("INSERT INTO notes (tag, n, spare) VALUES ('clash', 0, 0)")
    rows = [(f"t{n}", n, None) for n in range(1, 8)]
    rows.insert(3, ("clash", 99, None))  # stored before
    rows.append(("t2", 98, None))  # the same as another of this call
    statements: list[str] = []
    async with store.db.transaction() as tx:
        real = tx.execute

        async def counted(sql: str, *args: object) -> None:
            statements.append(sql)
            await real(sql, *args)

        monkeypatch.setattr(tx, "execute", counted)
        await database.insert_many(
            tx, "INSERT INTO notes (tag, n, spare)", rows, " ON CONFLICT DO NOTHING"
        )
    assert len(statements) == 3  # 9 rows, 3 a statement
    async with store.db.transaction() as tx:
        found = await tx.fetch("SELECT tag, n FROM notes WHERE tag <> 'clash' ORDER BY id")
    assert [(tag, int(n)) for tag, n in found] == [(f"t{n}", n) for n in range(1, 8)]
    more = [("t1", 1, None), ("u1", 11, None), ("u2", 12, None), ("t3", 3, None)]
    more += [("u3", 13, None), ("u1", 14, None)]  # stored now, and twice in this call
    async with store.db.transaction() as tx:
        returned = await database.insert_returning(
            tx, "INSERT INTO notes (tag, n, spare)", more, " ON CONFLICT DO NOTHING RETURNING tag"
        )
    assert sorted(tag for (tag,) in returned) == ["u1", "u2", "u3"]  # over two statements
