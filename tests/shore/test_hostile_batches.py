"""Authentic but hostile uplink batches (issue 18): refused, typed, and the fleet goes on.

An owner who changes the agent can sign anything with the vessel's key. An outside tester
found that one such batch (an envelope written in the year 10136) stopped the relay, and
since the agent resends an unacknowledged batch every session, it could keep the relay
down for the whole fleet. These tests hold the relay to its promise: every authentic
batch ends stored, duplicate, refused for good (quarantined, and ``BatchAck.rejected`` to
the vessel) or quarantined, and nothing a batch says stops ingest, the MQTT service or
another vessel's mail. The fuzz tests feed thousands of re-signed mutants
(``tests/protocol/mutants.py``) to the relay's real ingest on a real SQLite store.

Scale: ``VR_FUZZ_MUTANTS=1000000 pytest tests/shore/test_hostile_batches.py -m slow``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiomqtt
import asyncpg
import nacl.public
import pytest

from common.codebooks import default_codebook
from protocol.envelopes import (
    AGE_KEY,
    BatchAck,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryReceipt,
    DictionaryUpdate,
    Envelope,
    GrievanceReport,
    LaneBlock,
    QuotaNotice,
    ReceiptStage,
    Reply,
    Sos,
)
from protocol.errors import LimitExceeded, Reason
from protocol.languages import Language
from protocol.limits import MAX_MINUTES
from shore import alerts
from shore.alerts import AlertConfig, SosAlerter
from shore.downlink import Downlink, DownlinkBell, DownlinkConfig
from shore.ingest import Ingestor
from shore.mail import MailIdentity
from shore.store import IngestOutcome, SosAlertDue, SqliteStore, StoreUnavailable, VesselInfo
from shore.store.postgres import PostgresDatabase, PostgresStore
from shore.store.transparency_log import month_of_minutes
from tests.kit.mosquitto import MosquittoBroker
from tests.protocol.mutants import FuzzReport, MutantMaker, OpenBatch
from tests.protocol.test_fuzz import UPLINK
from tests.shore.lane_fixtures import LaneVessel, plaintext, seal
from tests.shore.store_fixtures import (
    OTHER_KEY,
    SHORE_KEY,
    T0,
    VESSEL_KEY,
    PostgresServer,
    decoded_downlink,
    shore_encoder,
    uplink,
)
from tests.shore.test_ingest import relay_in_process, vessel_link
from tests.shore.test_mail import SmtpSink
from tests.shore.test_store import postgres  # noqa: F401 - the session's PostgreSQL server

CODEBOOK = default_codebook()
VESSEL = 7  # the vessel whose owner changed the agent
NEIGHBOUR = 8  # another vessel of the fleet, signing with OTHER_KEY
MINUTES = int(T0 // 60)
YEAR_10136 = 2**32 - 1  # the tester's written_minutes


def _contact(crew: int = 3, contact: int = 1, address: str = "mother@example.com") -> Envelope:
    return ContactBookChange(
        crew=crew,
        contact=contact,
        channel=Channel.EMAIL,
        address=address,
        written_minutes=MINUTES,
        contact_lang=Language.MYA,
        crew_name="Ko Aung",
    )


def _message(seq: int, crew: int = 3, contact: int = 1) -> CrewMessage:
    return CrewMessage(
        message_seq=seq,
        crew=crew,
        contact=contact,
        written_minutes=MINUTES,
        lang=Language.MYA,
        body=f"နေကောင်းလား {seq}",
    )


def year_10136_batch(vessel_id: int = VESSEL, batch_seq: int = 1) -> bytes:
    """The tester's batch: a message "written" at minute 2**32 - 1, signed by the vessel.

    ``CrewMessage`` refuses to be built with that time, so the batch is made well-formed,
    taken apart, given that time in its skeleton and signed again, as a changed agent would.
    """
    data = uplink(vessel_id, batch_seq, [_contact(), _message(1)])
    batch = OpenBatch.open(data, CODEBOOK)
    entries = batch.entries()
    entries[1][AGE_KEY] = MINUTES - YEAR_10136
    batch.set_entries(entries)
    return batch.seal(CODEBOOK, VESSEL_KEY)


async def _open_store(path: Path) -> SqliteStore:
    store = await SqliteStore.open(path)
    info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1, 3))
    await store.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, VESSEL)
    neighbour = VesselInfo("Ocean 8", "TH", "TH-0043", "Another Owner", (1,))
    await store.add_vessel(neighbour, OTHER_KEY.verify_key.key, T0 - 3600, NEIGHBOUR)
    return store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store with the two vessels registered."""
    opened = await _open_store(tmp_path / "relay.db")
    try:
        yield opened
    finally:
        await opened.close()


def _ingestor(store: SqliteStore) -> Ingestor:
    return Ingestor(store, CODEBOOK, clock=lambda: T0 + 60)


async def _downlink(store: SqliteStore, vessel_id: int) -> list[Envelope]:
    made = await store.make_downlink_batch(vessel_id, T0 + 120, shore_encoder(vessel_id), 200)
    assert made is not None
    return list(decoded_downlink(made.data).envelopes)


def _refusals(envelopes: Sequence[Envelope]) -> dict[int, int]:
    acks = [e for e in envelopes if isinstance(e, BatchAck)]
    assert len(acks) == 1
    return dict(acks[0].rejected or ())


# --- the tester's batch -----------------------------------------------------------------------


async def test_batch_from_the_year_10136_is_refused_and_kept_for_the_operator(
    store: SqliteStore,
) -> None:
    """The vessel signs a message dated minute 2**32 - 1: the relay refuses the batch for
    good (MALFORMED, told to the vessel in its BatchAck), keeps its bytes in quarantine
    with a message naming the field, stores none of it, and the vessel's next batch is
    stored as usual."""
    ingestor = _ingestor(store)
    data = year_10136_batch()
    assert await ingestor.handle(f"vr/{VESSEL}/u", data) is IngestOutcome.REJECTED
    assert await store.messages(VESSEL) == []
    [entry] = await store.quarantined()
    assert (entry.reason, entry.vessel_id, entry.batch_seq) == (Reason.MALFORMED, VESSEL, 1)
    assert "written_minutes" in entry.message
    assert str(YEAR_10136) in entry.message
    assert entry.raw == data
    assert _refusals(await _downlink(store, VESSEL)) == {1: Reason.MALFORMED}
    # resent (as the agent does until it hears the refusal): refused again, not stored
    assert await ingestor.handle(f"vr/{VESSEL}/u", data) is IngestOutcome.REJECTED
    next_batch = uplink(VESSEL, 2, [_contact(), _message(2)])
    assert await ingestor.handle(f"vr/{VESSEL}/u", next_batch) is IngestOutcome.STORED
    assert [m.message_seq for m in await store.messages(VESSEL)] == [2]
    assert ingestor.stats.unprocessable == ingestor.stats.handler_failures == 0


async def test_a_stored_or_refused_batch_rings_the_downlink_for_its_vessel(
    store: SqliteStore,
) -> None:
    """Both owe the vessel a BatchAck: the downlink's bell is rung with that vessel (the
    downlink looks at it alone); a plain doorbell (the delivery workers') is set."""
    bell, delivery = DownlinkBell(), asyncio.Event()
    ingestor = Ingestor(store, CODEBOOK, clock=lambda: T0 + 60, doorbells=(bell, delivery))
    assert await ingestor.handle(f"vr/{VESSEL}/u", year_10136_batch()) is IngestOutcome.REJECTED
    assert delivery.is_set()
    assert bell.take() == (False, frozenset({VESSEL}))
    neighbour = uplink(NEIGHBOUR, 1, [_contact(), _message(1)], key=OTHER_KEY)
    assert await ingestor.handle(f"vr/{NEIGHBOUR}/u", neighbour) is IngestOutcome.STORED
    assert bell.take() == (False, frozenset({NEIGHBOUR}))
    assert not bell.is_set()


async def test_relay_refuses_the_batch_and_keeps_delivering_another_vessels_mail(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The whole relay (Mosquitto, ingest, downlink, delivery to an SMTP smarthost): vessel
    7 publishes the tester's batch and hears it refused (MALFORMED) in a signed BatchAck;
    then vessel 8's crew member writes home, and the mother gets the mail and vessel 8 the
    DELIVERED receipt (with its next uplink). Vessel 7's next batch is delivered too:
    nobody was cut off."""
    with SmtpSink() as sink:
        extra = f"[delivery]\nenabled = true\nsmtp_host = '127.0.0.1'\nsmtp_port = {sink.port}\n"
        async with relay_in_process(tmp_path, fresh_mosquitto, extra):
            registry = await SqliteStore.open(tmp_path / "relay.db")
            try:
                info = VesselInfo("Ocean 8", "TH", "TH-0043", "Another Owner", (1,))
                await registry.add_vessel(info, OTHER_KEY.verify_key.key, T0 - 3600, NEIGHBOUR)
            finally:
                await registry.close()
            async with vessel_link(fresh_mosquitto, VESSEL) as bad:
                await bad.publish(year_10136_batch())
                await bad.wait_for(lambda: 1 in bad.rejected)
            assert bad.rejected == {1: Reason.MALFORMED}
            neighbour_batch = uplink(
                NEIGHBOUR, 1, [_contact(address="mae@example.org"), _message(1)], key=OTHER_KEY
            )
            async with vessel_link(fresh_mosquitto, NEIGHBOUR) as good:
                await good.publish(neighbour_batch, vessel_id=NEIGHBOUR)
                await good.wait_for(lambda: (1, ReceiptStage.ACCEPTED_ASHORE) in good.receipts)
                await good.acknowledge(2, NEIGHBOUR, OTHER_KEY)  # its next session
                await good.wait_for(lambda: (1, ReceiptStage.DELIVERED) in good.receipts)
            async with vessel_link(fresh_mosquitto, VESSEL) as bad:
                await bad.publish(uplink(VESSEL, 2, [_contact(), _message(2)]))
                await bad.wait_for(lambda: (2, ReceiptStage.ACCEPTED_ASHORE) in bad.receipts)
                await bad.acknowledge(3)
                await bad.wait_for(lambda: (2, ReceiptStage.DELIVERED) in bad.receipts)
        received = [recipients for _, recipients, _ in sink.handler.received]
    assert sorted(received) == [["mae@example.org"], ["mother@example.com"]]
    assert good.rejected == {}


def test_month_of_a_time_off_the_wire_is_a_typed_refusal() -> None:
    """The transparency log's month of a time outside the wire range raises the protocol's
    LimitExceeded (the ingest refuses the batch with it), never ``datetime``'s errors."""
    assert month_of_minutes(0) == 197001
    assert month_of_minutes(MAX_MINUTES - 1) == 299912
    for outside in (-1, MAX_MINUTES, YEAR_10136, 2**53):
        with pytest.raises(LimitExceeded, match="before the year 3000"):
            month_of_minutes(outside)


# --- the defensive layer ----------------------------------------------------------------------


async def test_a_failure_no_check_foresaw_refuses_the_batch_as_unprocessable(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Storing an authentic batch hits a bug (here: the transparency log raises): the
    transaction rolls back, the operator gets ONE error with the traceback, the batch is
    quarantined and refused for good as UNPROCESSABLE, and the next batch is stored."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug in the log")

    monkeypatch.setattr(store.log, "append_leaf", broken)
    ingestor = _ingestor(store)
    with caplog.at_level(logging.WARNING, logger="shore"):
        outcome = await ingestor.handle(
            f"vr/{VESSEL}/u", uplink(VESSEL, 1, [_contact(), _message(1)])
        )
    assert outcome is IngestOutcome.REJECTED
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is ZeroDivisionError
    assert "UNPROCESSABLE" in errors[0].getMessage()
    assert ingestor.stats.unprocessable == 1
    assert await store.messages(VESSEL) == []  # rolled back: not half stored
    assert await store.contact(VESSEL, 3, 1) is None
    [entry] = await store.quarantined()
    assert entry.reason is Reason.UNPROCESSABLE
    assert "ZeroDivisionError" in entry.message
    assert _refusals(await _downlink(store, VESSEL)) == {1: Reason.UNPROCESSABLE}
    monkeypatch.undo()
    outcome = await ingestor.handle(f"vr/{VESSEL}/u", uplink(VESSEL, 2, [_contact(), _message(2)]))
    assert outcome is IngestOutcome.STORED


async def test_a_full_disk_leaves_the_batch_unacknowledged_not_refused(
    store: SqliteStore,
) -> None:
    """The disk fills up in the middle of storing a batch: that is the relay's trouble,
    not the batch's. The ingest raises StoreUnavailable (run() logs it), nothing is
    refused or quarantined, and once there is room the resent batch is stored."""
    ingestor = _ingestor(store)
    db = store.db.connection
    pages = await store.db.run(lambda: db.execute("PRAGMA page_count").fetchone()[0])
    await store.db.run(lambda: db.execute(f"PRAGMA max_page_count = {pages}"))
    batch = uplink(VESSEL, 1, [_contact(), *(_message(seq) for seq in range(1, 200))])
    with pytest.raises(StoreUnavailable, match="failed mid-transaction"):
        await ingestor.handle(f"vr/{VESSEL}/u", batch)
    await store.db.run(lambda: db.execute("PRAGMA max_page_count = 1073741823"))
    assert await store.quarantined() == []
    window = await store.replay_window(VESSEL)
    assert (window.up_to, window.ranges) == (0, ())
    assert ingestor.stats.unprocessable == 0
    assert await ingestor.handle(f"vr/{VESSEL}/u", batch) is IngestOutcome.STORED


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteStore | PostgresStore]:
    """A fresh store of each backend."""
    opened: SqliteStore | PostgresStore
    if request.param == "sqlite":
        opened = await SqliteStore.open(tmp_path / "relay.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        opened = await PostgresStore.open(server.create_database())
    try:
        yield opened
    finally:
        await opened.close()


async def test_only_the_databases_own_failures_leave_a_batch_unacknowledged(
    backend: SqliteStore | PostgresStore,
) -> None:
    """What decides "refuse for good" or "resend later", on both backends: an error of our
    own code inside a transaction, or a statement the database refuses for its content,
    stays what it is (the ingest refuses the batch); the database failing mid-transaction
    (here: its connection killed) is StoreUnavailable (the batch stays unacknowledged)."""
    with pytest.raises(OSError, match="ours") as ours:
        async with backend.db.transaction():
            raise OSError(75, "ours")  # what datetime raises for the year 10136
    assert not isinstance(ours.value, StoreUnavailable)
    with pytest.raises(Exception) as refused:  # noqa: PT011 - each driver has its own type
        async with backend.db.transaction() as tx:
            await tx.execute("INSERT INTO vessels (vessel_id) VALUES (NULL)")
    assert not isinstance(refused.value, StoreUnavailable)
    assert "null" in str(refused.value).lower()
    if isinstance(backend, PostgresStore):
        with pytest.raises(StoreUnavailable, match="PostgreSQL failed"):
            async with backend.db.transaction() as tx:
                await tx.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    else:
        db = backend.db.connection  # the disk is full: not one more page
        pages = await backend.db.run(lambda: db.execute("PRAGMA page_count").fetchone()[0])
        await backend.db.run(lambda: db.execute(f"PRAGMA max_page_count = {pages}"))
        with pytest.raises(StoreUnavailable, match="failed mid-transaction"):
            async with backend.db.transaction() as tx:
                await tx.execute("CREATE TABLE t (x BLOB)")
        await backend.db.run(lambda: db.execute("PRAGMA max_page_count = 1073741823"))
    assert await backend.list_vessels() == []  # and the store works again


@dataclass
class _Message:
    topic: str
    payload: bytes


class _FakeClient:
    """What ``Ingestor.run`` uses of an aiomqtt client: ``messages``; sets ``stopping`` once
    every payload was handed out."""

    def __init__(self, payloads: Sequence[tuple[str, bytes]], stopping: asyncio.Event) -> None:
        self._payloads = payloads
        self._stopping = stopping

    @property
    def messages(self) -> AsyncIterator[_Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[_Message]:
        for topic, payload in self._payloads:
            yield _Message(topic, payload)
        self._stopping.set()
        await asyncio.Event().wait()  # like a quiet broker: nothing more comes


async def test_run_survives_a_payload_that_breaks_ingest(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug fires on one vessel's payload before its signature is even checked (here: the
    registry lookup raises). ``Ingestor.run`` logs it with the traceback, counts it, and
    goes on: the next vessel's batch is stored; run() returns only when told to stop."""
    real_vessel_keys = store.vessel_keys

    async def vessel_keys(vessel_id: int) -> Any:
        if vessel_id == NEIGHBOUR:
            raise KeyError("a bug in the registry")
        return await real_vessel_keys(vessel_id)

    monkeypatch.setattr(store, "vessel_keys", vessel_keys)
    ingestor = _ingestor(store)
    stopping = asyncio.Event()
    client = _FakeClient(
        [
            (f"vr/{NEIGHBOUR}/u", uplink(NEIGHBOUR, 1, [_message(1)], key=OTHER_KEY)),
            (f"vr/{VESSEL}/u", year_10136_batch()),
            (f"vr/{VESSEL}/u", uplink(VESSEL, 2, [_contact(), _message(2)])),
        ],
        stopping,
    )
    with caplog.at_level(logging.ERROR, logger="shore"):
        async with asyncio.timeout(20):
            await ingestor.run(cast(aiomqtt.Client, client), stopping)
    assert ingestor.stats.handler_failures == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.exc_info is not None
    assert error.exc_info[0] is KeyError
    assert [m.message_seq for m in await store.messages(VESSEL)] == [2]
    assert ingestor.stats.batches_rejected == 1  # the tester's batch, refused typed


async def test_one_vessels_downlink_failing_does_not_stop_the_others(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Making vessel 7's downlink batch hits a bug: the downlink pass logs it (with the
    traceback), counts it, and still makes and publishes vessel 8's receipts."""
    ingestor = _ingestor(store)
    await ingestor.handle(f"vr/{VESSEL}/u", uplink(VESSEL, 1, [_contact(), _message(1)]))
    batch = uplink(NEIGHBOUR, 1, [_contact(), _message(1)], key=OTHER_KEY)
    await ingestor.handle(f"vr/{NEIGHBOUR}/u", batch)
    real = store.make_downlink_batch

    async def make_downlink_batch(vessel_id: int, *args: Any, **kwargs: Any) -> Any:
        if vessel_id == VESSEL:
            raise RecursionError("a bug in the downlink")
        return await real(vessel_id, *args, **kwargs)

    monkeypatch.setattr(store, "make_downlink_batch", make_downlink_batch)
    downlink = Downlink(
        store, SHORE_KEY, CODEBOOK, DownlinkConfig(slots=False), clock=lambda: T0 + 120
    )
    published: list[str] = []

    async def publish(topic: str, data: bytes) -> None:
        published.append(topic)

    with caplog.at_level(logging.ERROR, logger="shore"):
        assert await downlink.publish_due(publish) == 1
    assert published == [f"vr/{NEIGHBOUR}/d"]
    assert downlink.stats.vessel_failures == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.exc_info is not None
    assert error.exc_info[0] is RecursionError


async def test_one_sos_alert_failing_does_not_hold_back_another_vessels(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both vessels send an SOS; writing vessel 7's alert hits a bug. Vessel 8's alert
    still reaches the rescue centre in the same pass; vessel 7's is logged with the
    traceback and tried again later, not lost."""
    ingestor = _ingestor(store)
    for vessel_id, key in ((VESSEL, VESSEL_KEY), (NEIGHBOUR, OTHER_KEY)):
        sos = Sos(message_seq=1, crew=3, written_minutes=MINUTES, position=(812345, 9876543))
        outcome = await ingestor.handle(f"vr/{vessel_id}/u", uplink(vessel_id, 1, [sos], key=key))
        assert outcome is IngestOutcome.STORED
    real = alerts.compose_alert_mail

    def compose(alert: SosAlertDue, *args: Any) -> Any:
        if alert.vessel_id == VESSEL:
            raise UnicodeError("a bug in the alert")
        return real(alert, *args)

    monkeypatch.setattr(alerts, "compose_alert_mail", compose)
    rescue = "mrcc@rescue.example.org"
    async with SmtpSink() as sink:
        alerter = SosAlerter(
            store,
            AlertConfig(emails=(rescue,)),
            MailIdentity("relay.example.org", "relay@relay.example.org"),
            sink.sender(),
            None,
            lambda: T0 + 60,
        )
        with caplog.at_level(logging.ERROR, logger="shore"):
            assert await alerter.alert_due() == 2
        received = [recipients for _, recipients, _ in sink.handler.received]
    assert received == [[rescue]]
    outcomes = {r.vessel_id: r.outcome for r in await store.sos_alerts(NEIGHBOUR)}
    assert outcomes == {NEIGHBOUR: "delivered"}
    assert [r.outcome for r in await store.sos_alerts(VESSEL)] == [None]  # tried again later
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.exc_info is not None
    assert error.exc_info[0] is UnicodeError


# --- grievance lane blocks ---------------------------------------------------------------------


LANE_UNION = bytes(nacl.public.PrivateKey(bytes(range(5, 37))).public_key)


def _lane(periods: int, first: int = 80_000) -> list[LaneBlock]:
    """Lane blocks of ``periods`` periods, as the vessel releases them (a report, cover)."""
    ship = LaneVessel(VESSEL, VESSEL_KEY)
    ship.file(seal(plaintext("wages"), LANE_UNION), LANE_UNION)
    return [block for period in range(first, first + periods) for block in ship.release(period)]


@pytest.mark.parametrize(
    ("blocks", "words"),
    [
        (lambda b: [LaneBlock(b[0].period, 0, b[0].block[:-1], MINUTES)], "383 bytes"),
        (lambda b: [LaneBlock(b[0].period, 0, b[0].block + b"\x00", MINUTES)], "385 bytes"),
        (lambda b: [LaneBlock(b[0].period, 0, bytes(8192), MINUTES)], "8192 bytes"),
        (lambda b: [b[0], LaneBlock(b[0].period, 0, b[1].block, MINUTES)], "twice"),
        (lambda b: [b[0], b[0]], "twice"),
    ],
    ids=["short", "long", "largest", "one-place-two-blocks", "one-place-twice"],
)
async def test_lane_blocks_of_another_size_or_twice_in_a_place_are_refused(
    store: SqliteStore, blocks: Any, words: str
) -> None:
    """A changed agent sends lane blocks of another size than the relay's lane, or two for
    one place in one batch: the batch is refused for good (MALFORMED, told to the vessel),
    quarantined with a message saying what was wrong, none of it stored; the vessel's next
    batch is stored with its lane blocks."""
    ingestor = _ingestor(store)
    honest = _lane(2)
    data = uplink(VESSEL, 1, [*blocks(honest), _message(1)])
    assert await ingestor.handle(f"vr/{VESSEL}/u", data) is IngestOutcome.REJECTED
    [entry] = await store.quarantined()
    assert entry.reason is Reason.MALFORMED
    assert words in entry.message
    assert await store.lane_blocks(0, 10, None) == []
    assert await store.messages(VESSEL) == []
    assert _refusals(await _downlink(store, VESSEL)) == {1: Reason.MALFORMED}
    data = uplink(VESSEL, 2, [*honest, _message(2)])
    assert await ingestor.handle(f"vr/{VESSEL}/u", data) is IngestOutcome.STORED
    assert [b.block for b in await store.lane_blocks(0, 10, None)] == [b.block for b in honest]


async def test_another_block_for_a_filled_place_is_not_stored_and_the_operator_is_told(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A later batch brings another block for a lane place already filled (a vessel that
    lost its reservoir, or a changed agent): the batch is stored, the first block stays,
    and the operator gets one warning with the count (no block bytes)."""
    ingestor = _ingestor(store)
    first, other = _lane(1), _lane(1)
    assert await ingestor.handle(f"vr/{VESSEL}/u", uplink(VESSEL, 1, first)) is IngestOutcome.STORED
    with caplog.at_level(logging.WARNING, logger="shore"):
        outcome = await ingestor.handle(f"vr/{VESSEL}/u", uplink(VESSEL, 2, other))
    assert outcome is IngestOutcome.STORED
    assert [b.block for b in await store.lane_blocks(0, 10, None)] == [first[0].block]
    assert ingestor.stats.lane_conflicts == 1
    [warning] = [r for r in caplog.records if "lane blocks name a place" in r.getMessage()]
    assert first[0].block.hex()[:16] not in warning.getMessage()


# --- fuzz: re-signed mutants against the real ingest and store --------------------------------


def _extreme_but_valid() -> list[bytes]:
    """Batches that every check lets through, at the edges of what they allow."""
    top = 2**53 - 1
    envelopes: list[Envelope] = [
        ContactBookChange(
            crew=top,
            contact=top,
            channel=Channel.SMS,
            address="\u202e" + "9" * 319,
            written_minutes=MAX_MINUTES - 1,
            name="n\r\nBcc: x@example.org",
            crew_name="ကို" * 100,
        ),
        CrewMessage(message_seq=top - 10, crew=top, contact=top, written_minutes=0, quick=top),
        CrewMessage(
            message_seq=top - 9,
            crew=0,
            contact=0,
            written_minutes=MAX_MINUTES - 1,
            lang=Language.UND,
            body="x" * 16_384,
        ),
        GrievanceReport(message_seq=top - 8, union=top, written_minutes=0, sealed=b"\x01"),
        Sos(
            message_seq=top - 7,
            crew=top,
            written_minutes=MAX_MINUTES - 1,
            position=(-9_000_000, 18_000_000),
        ),
        BatchAck(up_to=top - 5, written_minutes=0, ranges=((top - 3, top - 1),)),
        DeliveryReceipt(top, ReceiptStage.DELIVERED, 0),
        Reply(top, top, top, 0, Language.THA, "แม่"),
        QuotaNotice(crew=top, month=top, used_bytes=top, quota_bytes=0, written_minutes=0),
        DictionaryUpdate(
            dictionary_id=top, codec=top, part=0, parts=top, data=b"\x00", written_minutes=0
        ),
    ]
    return [
        uplink(VESSEL, 5, envelopes, minutes=0),
        uplink(VESSEL, 6, envelopes[:3], minutes=MAX_MINUTES - 1),
        uplink(VESSEL, 7, [*UPLINK, *envelopes[:2]], minutes=MINUTES),
    ]


BASES = [
    uplink(VESSEL, 1, [_contact()]),
    uplink(VESSEL, 2, UPLINK[:3], minutes=29_000_000),
    uplink(VESSEL, 3, UPLINK, minutes=29_000_000),
    uplink(VESSEL, 4, [_contact(), *(_message(seq) for seq in range(1, 30))]),
    uplink(VESSEL, 8, [*_lane(4), _message(40)]),
    uplink(VESSEL, 9, _lane(2, 90_000)),
]


async def run_ingest_fuzz(directory: Path, cases: int, seed: int) -> FuzzReport:
    """Feed ``cases`` vessel-signed mutants to ``Ingestor.handle`` on a real SQLite store.

    Fails at the first exception, and at the end if any mutant got past every typed check
    (refused as UNPROCESSABLE by the last line of defence) or broke the handler. A fresh
    store is opened every 20,000 mutants (the file would otherwise grow without need).
    Afterwards the vessel's downlink is still made and signed, and the neighbour's mail
    is still stored.
    """
    report = FuzzReport()
    maker = MutantMaker([*BASES, *_extreme_but_valid()], VESSEL_KEY, CODEBOOK, seed)
    round_ = 0
    while report.cases < cases:
        round_ += 1
        store = await _open_store(directory / f"relay-{round_}.db")
        # durability is not under test here, and an fsync per mutant would be most of the time
        await store.db.run(lambda db=store.db.connection: db.execute("PRAGMA synchronous=OFF"))
        try:
            ingestor = _ingestor(store)
            for _ in range(min(20_000, cases - report.cases)):
                name, mutant = maker.make()
                report.cases += 1
                report.mutations.update(name.split("+"))
                try:
                    outcome = await ingestor.handle(f"vr/{VESSEL}/u", mutant)
                except Exception as exc:  # the invariant under test: nothing escapes
                    raise AssertionError(
                        f"mutant {report.cases} (seed {seed}, {name}) raised "
                        f"{type(exc).__name__}: {exc}\nmutant: {mutant.hex()}"
                    ) from exc
                label = outcome.name if isinstance(outcome, Reason) else outcome.value
                report.outcomes[label] += 1
                if ingestor.stats.unprocessable or ingestor.stats.handler_failures:
                    raise AssertionError(
                        f"mutant {report.cases} (seed {seed}, {name}) got past every check "
                        f"of protocol/ and failed the store (see the logged traceback)\n"
                        f"mutant: {mutant.hex()}"
                    )
                report.counted()
            # hostile content stored or refused must not poison what comes next
            envelopes = await _downlink(store, VESSEL)
            assert isinstance(envelopes[0], BatchAck)
            batch = uplink(NEIGHBOUR, 1, [_contact(), _message(1)], key=OTHER_KEY)
            assert await ingestor.handle(f"vr/{NEIGHBOUR}/u", batch) is IngestOutcome.STORED
        finally:
            await store.close()
            for suffix in ("", "-wal", "-shm"):
                (directory / f"relay-{round_}.db{suffix}").unlink(missing_ok=True)
    report.finish()
    return report


def _assert_meaningful(report: FuzzReport) -> None:
    """The mutants reached every outcome: refusals of each kind, and stored batches."""
    outcomes = report.outcomes
    assert sum(outcomes.values()) == report.cases
    allowed = {o.value for o in IngestOutcome} | {r.name for r in Reason}
    assert set(outcomes) <= allowed
    assert outcomes["stored"] > report.cases // 20
    assert outcomes["rejected"] > report.cases // 5
    assert outcomes["MALFORMED"] > 0  # garbled before the signature: quarantined only


async def test_fuzz_thousands_of_resigned_mutants_never_stop_ingest(tmp_path: Path) -> None:
    """2,500 vessel-signed mutants (extreme times and ids, wrong types, deep nesting, lone
    surrogates, duplicated envelopes, byte flips ...) on the real ingest and SQLite store:
    each ends stored, duplicate, refused or quarantined; none raises, none needs the
    last line of defence; the vessel's downlink and the neighbour's mail still work."""
    report = await run_ingest_fuzz(tmp_path, 2_500, seed=18)
    _assert_meaningful(report)


@pytest.mark.slow
@pytest.mark.timeout(0)
async def test_fuzz_resigned_mutants_at_scale(tmp_path: Path) -> None:
    """As above, ``VR_FUZZ_MUTANTS`` mutants (default 10,000; the issue's target is
    1,000,000), seeded by ``VR_FUZZ_SEED``; prints outcomes, mutations and the rate."""
    cases = int(os.environ.get("VR_FUZZ_MUTANTS", "10000"))
    seed = int(os.environ.get("VR_FUZZ_SEED", "20261207"))
    report = await run_ingest_fuzz(tmp_path, cases, seed)
    print(f"\ningest fuzz: {report.cases:,} mutants in {report.seconds:.0f} s (seed {seed})")
    print("outcomes:", dict(report.outcomes.most_common()))
    print("mutations:", dict(report.mutations.most_common()))
    _assert_meaningful(report)


async def test_a_pooled_postgresql_connection_comes_back_clean_after_a_failed_transaction(
    request: pytest.FixtureRequest,
) -> None:
    """The relay's PostgreSQL pool skips asyncpg's RESET round trip when a connection goes
    back. On a pool of one connection: a transaction our code abandons half-way, and one
    PostgreSQL refuses, both leave nothing behind (rolled back, no transaction open), and
    the next transaction on the same connection commits as usual; what a transaction set
    for itself (``SET LOCAL``) is gone after it."""
    server: PostgresServer = request.getfixturevalue("postgres")
    db = await PostgresDatabase.open(server.create_database(), min_size=1, max_size=1)
    try:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE notes (n BIGINT PRIMARY KEY)")

        async def abandoned() -> None:
            async with db.transaction() as tx:
                await tx.execute("SET LOCAL statement_timeout = 1234")
                await tx.execute("INSERT INTO notes VALUES (1)")
                raise RuntimeError("half-way")

        async def refused() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO notes VALUES (2)")
                await tx.execute("INSERT INTO notes VALUES (2)")

        with pytest.raises(RuntimeError, match="half-way"):
            await abandoned()
        with pytest.raises(asyncpg.UniqueViolationError):
            await refused()
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO notes VALUES (3)")
        async with db.transaction() as tx:
            assert await tx.fetch("SELECT n FROM notes ORDER BY n") == [(3,)]
            assert await tx.fetch("SHOW statement_timeout") == [("0",)]
            (pid,) = await tx.fetch("SELECT pg_backend_pid()")
        async with db.transaction() as tx:
            assert await tx.fetch("SELECT pg_backend_pid()") == [pid]  # the same connection
    finally:
        await db.close()
