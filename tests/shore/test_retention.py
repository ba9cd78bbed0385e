"""Retention (issue 23): the relay forgets family messages' content some time after their
delivery ended, keeps what the compliance report and the transparency log need, logs and
counts each purge, and leaves nothing of the content in its database files."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from protocol.compliance import ComplianceReport, verify_report
from protocol.envelopes import BatchAck, CrewMessage, FailureReason
from protocol.languages import Language
from protocol.months import LOG_ZONE, Month
from protocol.topics import uplink_topic
from shore.config import ConfigError, parse_config
from shore.downlink import Downlink, DownlinkConfig
from shore.ingest import Ingestor
from shore.metrics import RelayMetrics
from shore.relay import message_ttl
from shore.reports import build_report
from shore.retention import RetentionConfig, RetentionKeeper
from shore.store import SqliteStore, VesselInfo
from shore.store.deliveries import MessageTtl
from shore.store.postgres import PostgresStore
from shore.store.uplink import _AWAITING_DELIVERY, _WRITTEN_AT, _WRITTEN_AT_COLUMNS
from shore.vocabulary import DeliveryEnd, DeliveryOutcome, MessageState
from tests.kit.clock import FakeClock
from tests.shore.store_fixtures import SHORE_KEY, T0, VESSEL_KEY, PostgresServer, uplink
from tests.shore.test_store import postgres  # noqa: F401  (the session's PostgreSQL server)

VESSEL = 7
DAY_S = 86_400.0
#: Texts nobody writes by chance; one long enough to spill into SQLite overflow pages.
CANARIES = (
    "canary-retention-ကနရီ-လစာ-0001",
    "canary-retention-คานารี-0002",
    "canary-retention-long-0003 " + "ឆ្នេរសមុទ្រ " * 300 + "canary-retention-overflow-0005",
    "canary-retention-open-0004",
)
REPLY_CANARY = "canary-retention-reply-0006 stay safe, we all miss you"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteStore | PostgresStore]:
    """A fresh store of each backend with the vessel registered."""
    opened: SqliteStore | PostgresStore
    if request.param == "sqlite":
        opened = await SqliteStore.open(tmp_path / "relay.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        opened = await PostgresStore.open(server.create_database())
    info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
    await opened.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, VESSEL)
    try:
        yield opened
    finally:
        await opened.close()


async def ingest_canaries(store: SqliteStore | PostgresStore, clock: FakeClock) -> list[int]:
    """The vessel's batch of four family messages, one canary each, stored ashore; the
    first three are delivered at once, the fourth is still being retried."""
    minutes = int(clock.now // 60)
    envelopes = [
        CrewMessage(seq, crew=1, contact=1, written_minutes=minutes, lang=Language.ENG, body=text)
        for seq, text in enumerate(CANARIES, 1)
    ]
    data = uplink(VESSEL, 1, envelopes, minutes=minutes)
    await Ingestor(store, default_codebook(), clock=clock).handle(uplink_topic(VESSEL), data)
    claimed = await store.claim_deliveries(clock.now, 10, "relay-1")
    ends = [
        DeliveryEnd(d.key, DeliveryOutcome.DELIVERED)
        if d.message_seq != 4
        else DeliveryEnd(d.key, None, retry_at=clock.now + 40 * DAY_S, detail="phone off")
        for d in claimed
    ]
    await store.finish_deliveries(ends, clock.now)
    # the family answers; the answer goes down and the vessel acknowledges its batch
    await store.queue_reply(VESSEL, 1, 1, REPLY_CANARY, Language.ENG, False, clock.now)
    sent: list[bytes] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append(payload)

    config = DownlinkConfig(slots=False, tick_s=1.0)
    await Downlink(store, SHORE_KEY, default_codebook(), config, clock=clock).publish_due(publish)
    assert sent
    ack = BatchAck(up_to=len(sent), written_minutes=minutes)
    data = uplink(VESSEL, 2, [ack], minutes=minutes)
    await Ingestor(store, default_codebook(), clock=clock).handle(uplink_topic(VESSEL), data)
    assert all(b.acked_at is not None for b in await store.downlink_batches(VESSEL))
    return [1, 2, 3, 4]


def canaries_in(directory: Path) -> list[str]:
    """Which canaries' marker words (first and last word of each text) are in any file of
    the SQLite store (file, WAL, SHM); the last word of the long text lies in an overflow
    page."""
    blob = b"".join(p.read_bytes() for p in directory.glob("relay.db*"))
    marks = sorted({word for text in CANARIES for word in (text.split()[0], text.split()[-1])})
    return [mark for mark in marks if mark.encode() in blob]


def reply_in(directory: Path) -> bool:
    """Whether the family's answer is in any file of the SQLite store, as text or inside
    the downlink batch that carried it (decompressed)."""
    blob = b"".join(p.read_bytes() for p in directory.glob("relay.db*"))
    return b"canary-retention-reply-0006" in blob


async def test_delivered_content_is_purged_after_the_retention_and_metadata_stays(
    store: SqliteStore | PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Three messages home were delivered and one is still being retried. Thirty days
    later nothing is purged yet; a day after that the three delivered messages lose their
    text, while who sent them, when, to which contact, their state and their text bytes
    stay. The one still open keeps its text. The purge is logged with numbers and sizes
    only, and counted in the metrics."""
    clock = FakeClock(T0)
    await ingest_canaries(store, clock)
    metrics = RelayMetrics()
    keeper = RetentionKeeper(
        store, RetentionConfig(content_retention_s=30 * DAY_S), clock=clock, metrics=metrics
    )
    clock.advance(30 * DAY_S - 60)
    assert await keeper.pass_once() == []
    async with store.db.transaction() as tx:
        links_before = await store.downlink_queue.link_bytes_sent_since(tx, 0)
    clock.advance(DAY_S)
    with caplog.at_level(logging.INFO, logger="shore.retention"):
        purges = await keeper.pass_once()
    assert [p.messages for p in purges] == [3]
    assert purges[0].downlink_batches >= 1
    assert purges[0].by_vessel[VESSEL].first_seq == 1
    assert purges[0].by_vessel[VESSEL].last_seq == 3
    content_bytes = sum(len(text.encode()) for text in CANARIES[:3])
    assert purges[0].content_bytes == content_bytes

    records = {m.message_seq: m for m in await store.messages(VESSEL)}
    assert [records[seq].body for seq in (1, 2, 3)] == [None, None, None]
    assert records[4].body == CANARIES[3]  # not delivered yet: kept
    for seq in (1, 2, 3):
        assert (records[seq].crew, records[seq].contact) == (1, 1)
        assert records[seq].state == MessageState.DELIVERED
        assert records[seq].accepted_at == T0
    async with store.db.transaction() as tx:
        counted = await store.uplink.crew_message_text_bytes(tx, VESSEL, 0, 2**40)
    assert counted == [(seq, 1, len(text.encode())) for seq, text in enumerate(CANARIES, 1)]
    assert not await store.retry_delivery(VESSEL, 1, clock.now)  # nothing left to send
    for batch in await store.downlink_batches(VESSEL):
        assert batch.data == b""  # acknowledged long ago: its bytes are gone
    async with store.db.transaction() as tx:
        # who the answer was for and when it arrived stay (weekly access counts them)
        replies = await store.downlink_queue.replies_acknowledged_between(tx, VESSEL, 0, 2e9)
        links = await store.downlink_queue.link_bytes_sent_since(tx, 0)
    assert [crew for crew, _ in replies] == [1]
    assert links == links_before  # the link figures keep the purged batches' sizes

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "vessel 7 messages 1-3" in logged
    assert "vessel 7 downlink batches 1-" in logged
    assert f"({content_bytes} bytes)" in logged
    assert "canary" not in logged
    sample = metrics.registry.get_sample_value
    assert sample("vessel_relay_purges_total") == 1
    assert sample("vessel_relay_purged_messages_total") == 3
    assert sample("vessel_relay_purged_content_bytes_total") == content_bytes
    assert keeper.statistics().purged_messages == 3
    # a purge is done once: the next pass finds nothing
    assert await keeper.pass_once() == []


async def test_purged_content_is_gone_from_the_sqlite_files_including_free_pages(
    tmp_path: Path,
) -> None:
    """The relay's SQLite file, its WAL and its shared memory hold the delivered
    messages' texts until the retention purges them; afterwards no byte of them is left
    in any of the three files (not in the rewritten pages, not in the freed overflow pages,
    not in the WAL), while the message still being retried is still there."""
    clock = FakeClock(T0)
    opened = await SqliteStore.open(tmp_path / "relay.db")
    try:
        info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
        await opened.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, VESSEL)
        await ingest_canaries(opened, clock)
        marks = sorted({word for text in CANARIES for word in (text.split()[0], text.split()[-1])})
        assert len(marks) == 5
        assert canaries_in(tmp_path) == marks  # the scan finds them while they are kept
        assert reply_in(tmp_path)
        keeper = RetentionKeeper(opened, RetentionConfig(30 * DAY_S), clock=clock)
        clock.advance(31 * DAY_S)
        assert [p.messages for p in await keeper.pass_once()] == [3]
        assert canaries_in(tmp_path) == ["canary-retention-open-0004"]
        assert not reply_in(tmp_path)
        assert (tmp_path / "relay.db-wal").stat().st_size == 0
    finally:
        await opened.close()
    assert canaries_in(tmp_path) == ["canary-retention-open-0004"]


async def test_a_report_signed_before_a_purge_still_verifies_and_a_new_one_counts_the_same(
    store: SqliteStore | PostgresStore,
) -> None:
    """The owner downloads the month's compliance report; later the relay purges the
    delivered messages' texts. The report downloaded before still verifies offline, and a
    report made after the purge shows the same text bytes sent and delivered per crew
    member (and verifies too), although the texts are gone."""
    clock = FakeClock(T0)
    await ingest_canaries(store, clock)
    month = Month.of(T0, LOG_ZONE).key
    before = await build_report(store, VESSEL, month, SHORE_KEY, clock.now + 60)
    exported = before.to_json()
    keeper = RetentionKeeper(store, RetentionConfig(30 * DAY_S), clock=clock)
    clock.advance(31 * DAY_S)
    assert [p.messages for p in await keeper.pass_once()] == [3]

    shore_key = SHORE_KEY.verify_key.key
    assert verify_report(ComplianceReport.from_json(exported), shore_key=shore_key) == []
    after = await build_report(store, VESSEL, month, SHORE_KEY, clock.now)
    assert verify_report(after, shore_key=shore_key) == []
    delivered = sum(len(text.encode()) for text in CANARIES[:3])
    sent = delivered + len(CANARIES[3].encode())
    assert [(c.crew, c.sent_bytes, c.delivered_bytes) for c in before.shore_crew] == [
        (1, sent, delivered)
    ]
    assert [(c.crew, c.sent_bytes, c.delivered_bytes) for c in after.shore_crew] == [
        (1, sent, delivered)
    ]
    # meanwhile the fourth message outlived its time to live: now counted as failed
    assert [c.failed_bytes for c in after.shore_crew] == [len(CANARIES[3].encode())]


async def test_the_retention_pass_also_fails_messages_past_their_time_to_live(
    store: SqliteStore | PostgresStore,
) -> None:
    """A relay runs without delivery workers: the message still waiting there fails when
    its 30 days are over all the same, counted as expired, and the vessel is told."""
    clock = FakeClock(T0)
    await ingest_canaries(store, clock)
    metrics = RelayMetrics()
    keeper = RetentionKeeper(store, RetentionConfig(90 * DAY_S), clock=clock, metrics=metrics)
    clock.advance(30 * DAY_S + 60)
    await keeper.pass_once()
    assert keeper.statistics().expired_messages == 1
    assert metrics.registry.get_sample_value("vessel_relay_expired_messages_total") == 1
    (record,) = [r for r in await store.deliveries(VESSEL) if r.key.message_seq == 4]
    assert record.outcome is DeliveryOutcome.FAILED
    assert record.reason is FailureReason.DEADLINE_PASSED


def test_retention_settings_are_read_with_vessels_of_their_own_and_refused_when_wrong() -> None:
    """An operator sets a 14-day time to live for vessel 7 and keeps content 10 days;
    nonsense (a vessel name instead of its id, zero days) is refused with the key named."""
    config = parse_config(
        {
            "retention": {
                "message_ttl_days": 30,
                "content_days": 10,
                "vessel_message_ttl_days": {"7": 14},
            }
        },
        "relay.toml",
    )
    assert config.retention.content_days == 10.0
    assert message_ttl(config) == MessageTtl(30 * DAY_S, ((7, 14 * DAY_S),))
    assert message_ttl(parse_config({})) == MessageTtl()
    with pytest.raises(ConfigError, match=r"vessel_message_ttl_days\] TH-0042"):
        parse_config({"retention": {"vessel_message_ttl_days": {"TH-0042": 14}}}, "relay.toml")
    with pytest.raises(ConfigError, match="content_days must be positive"):
        parse_config({"retention": {"content_days": 0}}, "relay.toml")


async def test_a_vessel_clock_that_said_1970_does_not_make_a_message_expire_at_once(
    store: SqliteStore | PostgresStore,
) -> None:
    """The vessel's clock read 1970 when a crew member wrote home, and was right again
    when the batch was made: the message seems 56 years old. It is not failed on arrival:
    it cannot have waited longer than the vessel has been registered with the relay, so
    it fails only when that is more than the 30 days of its time to live."""
    clock = FakeClock(T0)
    envelope = CrewMessage(1, crew=1, contact=1, written_minutes=1, lang=Language.ENG, body="hi")
    data = uplink(VESSEL, 1, [envelope], minutes=int(T0 // 60))
    await Ingestor(store, default_codebook(), clock=clock).handle(uplink_topic(VESSEL), data)
    assert await store.expire_undelivered(clock.now) == []
    clock.now = T0 - 3600 + 30 * DAY_S - 60  # the vessel was registered at T0 - 3600
    assert await store.expire_undelivered(clock.now) == []
    clock.advance(120)
    assert [k.message_seq for k in await store.expire_undelivered(clock.now)] == [1]


async def test_a_claim_fails_the_messages_it_takes_that_are_past_their_time_to_live(
    store: SqliteStore | PostgresStore,
) -> None:
    """A crew member's message waited ashore 30 days without being tried (the relay's
    delivery was stopped); another one arrives today, and a third, tried at once, waits
    for a retry in 40 days. A delivery worker starts: it takes today's message and the
    old untried one, fails the old one ("could not be delivered in time", never tried,
    the vessel told) and hands out only today's. The one waiting for its retry is not
    among what the worker took: the retention keeper's pass fails it."""
    clock = FakeClock(T0)
    minutes = int(clock.now // 60)
    ingest = Ingestor(store, default_codebook(), clock=clock)

    def message(seq: int, text: str) -> CrewMessage:
        return CrewMessage(seq, 1, 1, written_minutes=minutes, lang=Language.ENG, body=text)

    await ingest.handle(
        uplink_topic(VESSEL), uplink(VESSEL, 1, [message(1, "retried")], minutes=minutes)
    )
    (retried,) = await store.claim_deliveries(clock.now, 10, "relay-1")
    await store.finish_deliveries(
        [DeliveryEnd(retried.key, None, retry_at=clock.now + 40 * DAY_S, detail="phone off")],
        clock.now,
    )
    await ingest.handle(
        uplink_topic(VESSEL), uplink(VESSEL, 2, [message(2, "untried")], minutes=minutes)
    )

    clock.advance(30 * DAY_S + 60)
    minutes = int(clock.now // 60)
    today = message(3, "today")
    await ingest.handle(uplink_topic(VESSEL), uplink(VESSEL, 3, [today], minutes=minutes))

    handed = await store.claim_deliveries(clock.now, 10, "relay-2")
    assert [d.message_seq for d in handed] == [3]
    records = {r.key.message_seq: r for r in await store.deliveries(VESSEL)}
    assert records[2].outcome is DeliveryOutcome.FAILED
    assert records[2].reason is FailureReason.DEADLINE_PASSED
    assert records[2].attempts == 0  # nothing was sent to the family
    assert records[1].outcome is None  # not due: the worker did not take it
    assert [k.message_seq for k in await store.expire_undelivered(clock.now)] == [1]
    records = {r.key.message_seq: r for r in await store.deliveries(VESSEL)}
    assert records[1].reason is FailureReason.DEADLINE_PASSED


async def test_the_time_to_live_look_up_reads_only_the_messages_still_waiting(
    store: SqliteStore | PostgresStore,
) -> None:
    """A relay keeps every message it ever stored (a month of a fleet is tens of millions
    of rows). The look-up for messages past their time to live must not read them all:
    both databases' planners can answer it from the index of the messages still waiting
    for their delivery (PostgreSQL is told to avoid reading whole tables, as it would on
    a large one; on a table this small it might read it whole anyway)."""
    sql = (
        f"SELECT {_WRITTEN_AT_COLUMNS} FROM {_AWAITING_DELIVERY} AND {_WRITTEN_AT} < $1 "
        f"ORDER BY {_WRITTEN_AT} DESC LIMIT 500"
    )
    async with store.db.transaction() as tx:
        if isinstance(store, PostgresStore):
            await tx.execute("SET LOCAL enable_seqscan = off")
            plan = await tx.fetch("EXPLAIN " + sql, T0)
        else:
            plan = await tx.fetch("EXPLAIN QUERY PLAN " + sql, T0)
    assert "messages_awaiting_delivery" in " ".join(str(part) for row in plan for part in row)
