"""Delivery workers against an in-memory store: exactly once, retries, receipts, repeats."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from protocol.envelopes import DeliveryFailure, DeliveryReceipt, FailureReason, ReceiptStage
from protocol.languages import Language
from shore.delivery import DeliveryConfig, DeliveryWorker
from shore.fake_sms import FakeSmsProvider
from shore.mail import MailIdentity, ReplyAddressBook, ReplyRoute
from shore.retry import RetryPolicy
from shore.sms import SmsConfig, SmsProvider
from shore.store.uplink import CodedVoice
from shore.vocabulary import DeliveryEnd, DeliveryOutcome, Destination, receipt_for
from tests.kit.clock import FakeClock
from tests.shore.test_mail import SmtpSink

IDENTITY = MailIdentity("relay.example.org", "relay@relay.example.org")
BOOK = ReplyAddressBook([b"d" * 32], "reply.example.org")


@dataclass(frozen=True)
class Row:
    """A delivery row as the fake store hands it out (matches ``DueDelivery``)."""

    key: int
    vessel_id: int
    message_seq: int
    destination: Destination
    accepted_at: float
    crew: int | None = 3
    contact: int | None = 1
    crew_name: str | None = "Ko Aung"
    contact_lang: Language | None = Language.MYA
    address: str | None = "mother@example.com"
    text: str | None = "မင်္ဂလာပါ အမေ"
    union: int | None = None
    sealed: bytes | None = None
    attempts: int = 0
    unfinished_attempt: bool = False
    voice: CodedVoice | None = None  # a voice message's speech (issue 24)
    subject: str | None = None  # the Subject line of a mail from the SMTP door


@dataclass
class FakeStore:
    """The store's delivery queue in memory, recording every call in order."""

    rows: dict[int, Row] = field(default_factory=dict)
    due_at: dict[int, float] = field(default_factory=dict)
    claimed: set[int] = field(default_factory=set)
    finished: dict[int, tuple[DeliveryOutcome, FailureReason | None]] = field(default_factory=dict)
    receipts: list[tuple[int, DeliveryReceipt | DeliveryFailure]] = field(default_factory=list)
    union_inbox: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    #: Passes the worker made (claims asked for, found or not).
    claims: int = 0
    #: Set at each claim and each finished delivery: what a waiting test looks at.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate`` holds, looked at after each of the worker's claims and
        finished deliveries (bound the wait with ``asyncio.timeout``)."""
        while not predicate():
            self.changed.clear()
            await self.changed.wait()

    def add(self, row: Row, due_at: float = 0.0) -> None:
        self.rows[row.key] = row
        self.due_at[row.key] = due_at

    async def claim_deliveries(self, now: float, limit: int, worker: str) -> Sequence[Row]:
        due = [
            self.rows[key]
            for key, at in sorted(self.due_at.items())
            if at <= now and key not in self.finished and key not in self.claimed
        ][:limit]
        self.claimed.update(row.key for row in due)
        for row in due:  # the attempt is recorded with the claim, as in the real store
            self.calls.append(f"record {row.key}")
            self.rows[row.key] = replace(row, attempts=row.attempts + 1, unfinished_attempt=True)
        self.claims += 1
        self.changed.set()
        return due

    async def release_claims(self, worker: str) -> int:
        self.calls.append("release")
        return 0

    async def finish_deliveries(self, ends: Sequence[DeliveryEnd], now: float) -> None:
        for end in ends:
            key = end.key
            assert isinstance(key, int)
            self.claimed.discard(key)
            if end.outcome is None:
                assert end.retry_at is not None
                self.calls.append(f"reschedule {key}")
                self.due_at[key] = end.retry_at
                self.rows[key] = replace(self.rows[key], unfinished_attempt=end.maybe_sent)
                continue
            self.calls.append(f"finish {key} {end.outcome}")
            self.finished[key] = (end.outcome, end.reason)
            self.rows[key] = replace(self.rows[key], unfinished_attempt=False)
            row = self.rows[key]
            self.receipts.append(
                (row.vessel_id, receipt_for(row.message_seq, end.outcome, end.reason, now))
            )
        self.changed.set()

    async def deliver_to_union_inbox(
        self, union: int, vessel_id: int, message_seq: int, sealed: bytes, now: float
    ) -> None:
        self.union_inbox.append((union, vessel_id, message_seq, sealed))

    def crash_worker(self) -> None:
        """A worker died: its claims lapse (the lease ran out)."""
        self.claimed.clear()


def make_worker(
    store: FakeStore, sink: SmtpSink, clock: FakeClock, sms: SmsProvider | None = None, **kw: Any
) -> DeliveryWorker:
    return DeliveryWorker(
        store,
        sink.sender(),
        IDENTITY,
        BOOK,
        sms,
        policy=RetryPolicy(initial_delay_s=60, max_delay_s=600, deadline_s=3600),
        config=DeliveryConfig(worker="relay-test", batch_size=10),
        rng=random.Random(5),
        clock=clock,
        **kw,
    )


@pytest.fixture
async def sink() -> Any:
    async with SmtpSink() as running:
        yield running


async def test_family_email_is_delivered_once_with_a_receipt(sink: SmtpSink) -> None:
    """A crew message reaches the mother's inbox once, and a DELIVERED receipt is queued."""
    clock = FakeClock()
    store = FakeStore()
    store.add(Row(1, 42, 1831, Destination.EMAIL, accepted_at=clock.now))
    worker = make_worker(store, sink, clock)
    assert await worker.deliver_due() == 1
    assert await worker.deliver_due() == 0
    [mail] = sink.handler.messages()
    assert mail["Message-ID"] == "<42.1831@relay.example.org>"
    assert BOOK.resolve(mail["Reply-To"].addresses[0].addr_spec) == ReplyRoute(42, 3, 1)
    assert store.calls == ["record 1", "finish 1 delivered"]
    [(vessel, receipt)] = store.receipts
    assert vessel == 42
    assert receipt == DeliveryReceipt(1831, ReceiptStage.DELIVERED, int(clock.now // 60))
    assert worker.statistics().delivered == 1
    assert worker.statistics().repeats == 0


async def test_the_crew_members_subject_heads_the_family_mail(sink: SmtpSink) -> None:
    """A message that came with a Subject line reaches the mother under that Subject; one
    without gets the relay's "Message from ..." in her language."""
    clock = FakeClock()
    store = FakeStore()
    store.add(Row(1, 42, 1831, Destination.EMAIL, clock.now, subject="ငွေပို့ပြီ"))
    store.add(Row(2, 42, 1832, Destination.EMAIL, clock.now))
    assert await make_worker(store, sink, clock).deliver_due() == 2
    subjects = {m["Message-ID"]: m["Subject"] for m in sink.handler.messages()}
    assert subjects == {
        "<42.1831@relay.example.org>": "ငွေပို့ပြီ",
        "<42.1832@relay.example.org>": "Ko Aung ထံမှ စာ",
    }


async def test_crash_mid_send_resends_with_the_same_message_id_and_counts_a_repeat(
    sink: SmtpSink,
) -> None:
    """The worker died after recording the attempt; the next one resends, counted as a repeat.

    Downstream sees two copies with one Message-ID, so the duplicate is recognisable.
    """
    clock = FakeClock()
    store = FakeStore()
    store.add(Row(1, 42, 7, Destination.EMAIL, accepted_at=clock.now))
    # First worker: records the attempt and sends, then dies before recording the outcome.
    first = make_worker(store, sink, clock)
    [row] = await store.claim_deliveries(clock.now, 10, "relay-1")
    await first.mail.send(first_mail(row))
    store.crash_worker()
    # Second worker picks the delivery up.
    clock.now += 120
    second = make_worker(store, sink, clock)
    assert await second.deliver_due() == 1
    received = sink.handler.messages()
    assert len(received) == 2
    assert {m["Message-ID"] for m in received} == {"<42.7@relay.example.org>"}
    assert second.statistics().repeats == 1
    assert store.finished == {1: ("delivered", None)}


def first_mail(row: Row) -> Any:
    from shore.mail import FamilyMail, compose_family_mail

    assert row.crew is not None
    assert row.contact is not None
    assert row.address is not None
    assert row.text is not None
    return compose_family_mail(
        FamilyMail(
            row.vessel_id,
            row.message_seq,
            ReplyRoute(row.vessel_id, row.crew, row.contact),
            row.crew_name or "",
            row.address,
            row.text,
            row.contact_lang,
        ),
        IDENTITY,
        BOOK,
        row.accepted_at,
    )


async def test_transient_failure_backs_off_then_fails_at_the_deadline(sink: SmtpSink) -> None:
    """A greylisting smarthost: retries are rescheduled, then DEADLINE_PASSED is reported."""
    sink.handler.data_reply = "451 4.7.1 try later"
    clock = FakeClock()
    store = FakeStore()
    store.add(Row(1, 42, 9, Destination.EMAIL, accepted_at=clock.now))
    worker = make_worker(store, sink, clock)
    waits = []
    for _ in range(50):
        if 1 in store.finished:
            break
        assert await worker.deliver_due() == 1
        if 1 not in store.finished:
            waits.append(store.due_at[1] - clock.now)
            clock.now = store.due_at[1]
    assert store.finished[1] == ("failed", FailureReason.DEADLINE_PASSED)
    assert all(0 < wait <= 600 for wait in waits)
    assert waits[1] > waits[0] * 0.5
    [(_, failure)] = store.receipts
    assert failure == DeliveryFailure(9, FailureReason.DEADLINE_PASSED, int(clock.now // 60))
    assert worker.statistics().retries_scheduled == len(waits)


async def test_refused_address_fails_at_once(sink: SmtpSink) -> None:
    """A mailbox that does not exist: one attempt, a failure receipt with ADDRESS_INVALID."""
    sink.handler.refuse["mother@example.com"] = "550 5.1.1 no such user"
    clock = FakeClock()
    store = FakeStore()
    store.add(Row(1, 42, 10, Destination.EMAIL, accepted_at=clock.now))
    worker = make_worker(store, sink, clock)
    await worker.deliver_due()
    assert store.finished[1] == ("failed", FailureReason.ADDRESS_INVALID)
    assert worker.statistics().failed_by_reason == {"ADDRESS_INVALID": 1}


async def test_malformed_address_fails_without_contacting_the_smarthost(sink: SmtpSink) -> None:
    """An address that cannot be written into a header fails as ADDRESS_INVALID."""
    clock = FakeClock()
    store = FakeStore()
    store.add(Row(1, 42, 11, Destination.EMAIL, accepted_at=clock.now, address="not an address"))
    await make_worker(store, sink, clock).deliver_due()
    assert store.finished[1] == ("failed", FailureReason.ADDRESS_INVALID)
    assert sink.handler.received == []


async def test_sms_delivery_and_invalid_number(sink: SmtpSink, tmp_path: Path) -> None:
    """SMS: one number works (name in front of the text), an invalid one fails for good."""
    clock = FakeClock()
    store = FakeStore()
    store.add(Row(1, 42, 20, Destination.SMS, clock.now, address="+959250000001"))
    store.add(Row(2, 42, 21, Destination.SMS, clock.now, address="+959250000009"))
    async with FakeSmsProvider(tmp_path / "sms.jsonl") as fake:
        fake.invalid_numbers.add("+959250000009")
        config = SmsConfig(fake.account_sid, fake.auth_token, "+6620000000", fake.base_url)
        async with SmsProvider(config) as sms:
            await make_worker(store, sink, clock, sms).deliver_due()
        [record] = fake.messages()
    assert record["body"] == "Ko Aung: မင်္ဂလာပါ အမေ"
    assert store.finished == {
        1: ("delivered", None),
        2: ("failed", FailureReason.ADDRESS_INVALID),
    }


async def test_sms_rate_limit_reschedules_after_retry_after(sink: SmtpSink, tmp_path: Path) -> None:
    """The provider says 429, Retry-After 900: the retry is not before 900 s."""
    clock = FakeClock()
    store = FakeStore()
    store.add(Row(1, 42, 22, Destination.SMS, clock.now, address="+959250000001"))
    async with FakeSmsProvider(tmp_path / "sms.jsonl") as fake:
        fake.fail_next(429, 20429, retry_after_s=900)
        config = SmsConfig(fake.account_sid, fake.auth_token, "+6620000000", fake.base_url)
        async with SmsProvider(config) as sms:
            await make_worker(store, sink, clock, sms).deliver_due()
    assert 1 not in store.finished
    assert store.due_at[1] >= clock.now + 900


async def test_grievance_report_goes_sealed_to_the_union_inbox(sink: SmtpSink) -> None:
    """A sealed report is handed to the union inbox byte for byte; nothing is e-mailed."""
    clock = FakeClock()
    store = FakeStore()
    sealed = bytes(range(256)) * 4
    store.add(
        Row(
            1,
            42,
            30,
            Destination.UNION,
            clock.now,
            crew=None,
            contact=None,
            crew_name=None,
            address=None,
            text=None,
            union=5,
            sealed=sealed,
        )
    )
    await make_worker(store, sink, clock).deliver_due()
    assert store.union_inbox == [(5, 42, 30, sealed)]
    assert store.finished[1] == ("delivered", None)
    assert sink.handler.received == []


async def test_run_loop_wakes_on_the_doorbell_and_stops(sink: SmtpSink) -> None:
    """The worker idles, wakes when ingest rings, delivers, and stops when told."""
    clock = FakeClock()
    store = FakeStore()
    worker = make_worker(store, sink, clock)
    worker.config = DeliveryConfig(worker="relay-test", idle_s=60)
    stopping, bell = asyncio.Event(), asyncio.Event()
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        group.create_task(worker.run(stopping, bell))
        await store.until(lambda: store.claims == 1)  # found nothing: the worker idles
        store.add(Row(1, 42, 40, Destination.EMAIL, clock.now))
        bell.set()
        await store.until(lambda: 1 in store.finished)
        assert store.claims == 2  # woken once, by the bell (idle_s is a minute)
        stopping.set()
    assert store.finished[1] == ("delivered", None)


def test_receipt_for_final_outcomes() -> None:
    """Delivered becomes a DELIVERED receipt, a failure carries its reason."""
    assert receipt_for(5, "delivered", None, 600.0) == DeliveryReceipt(
        5, ReceiptStage.DELIVERED, 10
    )
    assert receipt_for(5, "failed", FailureReason.RECIPIENT_REFUSED, 600.0) == DeliveryFailure(
        5, FailureReason.RECIPIENT_REFUSED, 10
    )
