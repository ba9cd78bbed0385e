"""Delivery in batches over kept SMTP sessions, against the real SQLite store and a sink.

The worker claims a batch (its attempts recorded in the same transaction), sends over SMTP
sessions it keeps open, and records the batch's ends in one transaction. These tests
drop the smarthost's connections at the worst moments and check the promises: nothing
lost, every mail under its one Message-ID, a second copy only where a repeat was counted,
and every attempt on record in the database before the smarthost sees the mail.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from protocol.envelopes import Channel, ContactBookChange, CrewMessage, Envelope
from protocol.languages import Language
from shore.delivery import DeliveryConfig, DeliveryWorker
from shore.mail import MailIdentity, ReplyAddressBook
from shore.retry import RetryPolicy
from shore.store import SqliteStore, VesselInfo
from shore.vocabulary import DeliveryOutcome
from tests.kit.clock import FakeClock
from tests.shore.store_fixtures import T0, VESSEL_KEY, decoded_uplink, uplink
from tests.shore.test_mail import SinkHandler, SmtpSink

IDENTITY = MailIdentity("relay.example.org", "relay@relay.example.org")
BOOK = ReplyAddressBook([b"d" * 32], "reply.example.org")
MESSAGE_ID = re.compile(rb"^Message-ID:\s*<(\d+)\.(\d+)@", re.MULTILINE | re.IGNORECASE)


@dataclass
class DroppingSink(SinkHandler):
    """A smarthost that drops connections on purpose and looks in the relay's database,
    at each DATA, for the attempt being made.

    ``close_after``: after every that many accepted mails, the server closes the session
    (having replied 250): the relay finds a kept session dead. ``drop_in_data``: Message-IDs
    (vessel, seq) whose first DATA is stored and then cut before the reply: the relay cannot
    know whether the mail arrived.
    """

    database: Path | None = None
    close_after: int = 0
    drop_in_data: set[tuple[int, int]] = field(default_factory=set)
    #: Per mail received: (vessel, seq, attempts recorded, attempt unfinished) as committed.
    seen_in_store: list[tuple[int, int, int, int]] = field(default_factory=list)
    accepted: int = 0
    state_lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        found = MESSAGE_ID.search(envelope.content)
        assert found is not None
        key = (int(found.group(1)), int(found.group(2)))
        self._look_in_store(key)
        reply = await super().handle_DATA(server, session, envelope)
        with self.state_lock:
            if key in self.drop_in_data:
                self.drop_in_data.discard(key)
                server.transport.abort()  # stored, but the relay never hears the 250
                return reply
            self.accepted += 1
            close = self.close_after and self.accepted % self.close_after == 0
        if close:
            asyncio.get_running_loop().call_soon(server.transport.close)
        return reply

    def _look_in_store(self, key: tuple[int, int]) -> None:
        assert self.database is not None
        with sqlite3.connect(self.database) as reader:
            row = reader.execute(
                "SELECT attempts, unfinished FROM deliveries WHERE vessel_id = ? "
                "AND message_seq = ?",
                key,
            ).fetchone()
        reader.close()
        with self.state_lock:
            self.seen_in_store.append((*key, *(row or (0, 0))))

    def copies(self) -> dict[tuple[int, int], int]:
        """How many copies of each Message-ID reached the sink."""
        counted: dict[tuple[int, int], int] = {}
        with self.lock:
            for _, _, content in self.received:
                found = MESSAGE_ID.search(content)
                assert found is not None
                key = (int(found.group(1)), int(found.group(2)))
                counted[key] = counted.get(key, 0) + 1
        return counted


@dataclass
class Relay:
    store: SqliteStore
    vessel_id: int
    sink: SmtpSink
    handler: DroppingSink
    clock: FakeClock

    def worker(self, batch_size: int = 10, concurrency: int = 4) -> DeliveryWorker:
        return DeliveryWorker(
            self.store,
            self.sink.sender(),
            IDENTITY,
            BOOK,
            policy=RetryPolicy(initial_delay_s=60, max_delay_s=600, deadline_s=3600),
            config=DeliveryConfig(
                worker="relay-test", batch_size=batch_size, concurrency=concurrency
            ),
            rng=random.Random(3),
            clock=self.clock,
        )

    async def ingest(self, batch_seq: int, envelopes: list[Envelope]) -> None:
        data = uplink(self.vessel_id, batch_seq, envelopes)
        await self.store.ingest_batch(decoded_uplink(data), data, self.clock.now)

    async def outcomes(self) -> dict[int, DeliveryOutcome | None]:
        return {r.key.message_seq: r.outcome for r in await self.store.deliveries(self.vessel_id)}


def contact() -> ContactBookChange:
    return ContactBookChange(
        crew=3,
        contact=1,
        channel=Channel.EMAIL,
        address="mother@example.com",
        written_minutes=1,
        contact_lang=Language.MYA,
        crew_name="Ko Aung",
    )


def messages(first: int, count: int) -> list[Envelope]:
    return [
        CrewMessage(
            message_seq=seq, crew=3, contact=1, written_minutes=1, lang=Language.MYA,
            body=f"မင်္ဂလာပါ အမေ {seq}",
        )
        for seq in range(first, first + count)
    ]  # fmt: skip


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    store = await SqliteStore.open(tmp_path / "relay.db")
    handler = DroppingSink(database=tmp_path / "relay.db")
    try:
        info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", ())
        vessel_id = await store.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600)
        async with SmtpSink(handler) as sink:
            yield Relay(store, vessel_id, sink, handler, FakeClock(T0))
    finally:
        await store.close()


async def test_mails_share_one_kept_smtp_session(relay: Relay) -> None:
    """Thirty messages home go through one SMTP session, not thirty, and each arrives once."""
    await relay.ingest(1, [contact(), *messages(1, 30)])
    worker = relay.worker(batch_size=30, concurrency=1)
    assert await worker.deliver_due() == 30
    assert relay.handler.copies() == {(relay.vessel_id, seq): 1 for seq in range(1, 31)}
    stats = worker.mail.pool_statistics()
    assert (stats.opened, stats.reused) == (1, 29)


async def test_sessions_closed_by_the_smarthost_lose_nothing_and_repeat_nothing(
    relay: Relay,
) -> None:
    """The smarthost hangs up on the relay after every third mail (having said 250). The
    relay finds its kept sessions dead, opens new ones, and every one of 40 messages
    arrives exactly once: no repeats, none counted, none lost."""
    relay.handler.close_after = 3
    await relay.ingest(1, [contact(), *messages(1, 40)])
    worker = relay.worker(batch_size=10)
    while await worker.deliver_due():
        pass
    assert relay.handler.copies() == {(relay.vessel_id, seq): 1 for seq in range(1, 41)}
    assert set((await relay.outcomes()).values()) == {DeliveryOutcome.DELIVERED}
    stats = worker.statistics()
    assert (stats.delivered, stats.repeats, stats.retries_scheduled) == (40, 0, 0)
    assert worker.mail.pool_statistics().discarded >= 10


async def test_a_session_cut_during_data_is_resent_once_and_counted_as_a_repeat(
    relay: Relay,
) -> None:
    """Mid-batch, the smarthost stores message 7 but the connection is cut before its 250.
    The relay cannot know the mother got it: the other messages of the batch are delivered,
    message 7 is tried again later with the same Message-ID, and that resend is counted as
    a repeat. The mother may see message 7 twice; nothing else twice, nothing lost."""
    await relay.ingest(1, [contact(), *messages(1, 12)])
    relay.handler.drop_in_data = {(relay.vessel_id, 7)}
    worker = relay.worker(batch_size=12)
    assert await worker.deliver_due() == 12
    outcomes = await relay.outcomes()
    assert outcomes[7] is None
    assert [seq for seq, outcome in outcomes.items() if outcome is None] == [7]
    (retrying,) = [r for r in await relay.store.deliveries(relay.vessel_id) if r.outcome is None]
    assert retrying.unfinished_attempt  # the next attempt will be counted
    relay.clock.advance(3600)
    assert await worker.deliver_due() == 1
    copies = relay.handler.copies()
    assert copies.pop((relay.vessel_id, 7)) == 2
    assert copies == {(relay.vessel_id, seq): 1 for seq in range(1, 13) if seq != 7}
    stats = worker.statistics()
    assert (stats.delivered, stats.repeats, stats.retries_scheduled) == (12, 1, 1)
    assert set((await relay.outcomes()).values()) == {DeliveryOutcome.DELIVERED}


async def test_every_attempt_is_committed_before_the_smarthost_sees_the_mail(
    relay: Relay,
) -> None:
    """Whenever the smarthost receives a mail, the relay's database already holds that
    attempt, unfinished: had the relay died right then, the next worker would know it may
    be a duplicate."""
    relay.handler.close_after = 4
    relay.handler.drop_in_data = {(relay.vessel_id, 3)}
    await relay.ingest(1, [contact(), *messages(1, 25)])
    worker = relay.worker(batch_size=8)
    while await worker.deliver_due():
        pass
    relay.clock.advance(3600)
    while await worker.deliver_due():
        pass
    seen = relay.handler.seen_in_store
    assert len(seen) == 26
    assert all(unfinished == 1 and attempts >= 1 for _, _, attempts, unfinished in seen)
    assert [attempts for _, seq, attempts, _ in seen if seq == 3] == [1, 2]


async def test_a_worker_killed_mid_batch_leaves_every_claimed_attempt_counted(
    relay: Relay,
) -> None:
    """A worker claims a batch of ten and is killed after sending four. After its lease,
    another worker sends the six that never left and the four that did, all with their
    Message-IDs, every one counted as a repeat (a possible duplicate): nothing lost,
    nothing repeated uncounted."""
    await relay.ingest(1, [contact(), *messages(1, 10)])
    claimed = await relay.store.claim_deliveries(relay.clock.now, 10, "relay-dead")
    assert len(claimed) == 10
    dead = relay.worker()
    for delivery in claimed[:4]:  # sent, then the process died before finishing the batch
        await dead._send(delivery)
    relay.clock.advance(601)  # the lease lapses
    worker = relay.worker()
    assert await worker.deliver_due() == 10
    copies = relay.handler.copies()
    assert copies == {(relay.vessel_id, seq): 2 if seq <= 4 else 1 for seq in range(1, 11)}
    assert worker.statistics().repeats == 10
    assert set((await relay.outcomes()).values()) == {DeliveryOutcome.DELIVERED}
