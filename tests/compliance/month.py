"""A simulated month (fake clock) of one vessel with 30 crew members, through the real
outbox and the real shore store (SQLite or PostgreSQL), with the test's own independent ledger."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch
from protocol.compliance import AgentStatement, ComplianceReport
from protocol.envelopes import CrewMessage, FailureReason
from protocol.errors import LimitExceeded
from protocol.languages import Language
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from protocol.signing import SigningKey
from shipboard.crew import CrewRegister
from shipboard.outbox import QUICK_MESSAGE_BYTES, Outbox
from shipboard.profiles import IRIDIUM_CERTUS
from shipboard.report import build_statement
from shore.reports import build_report
from shore.store import RelayStore, SqliteStore, VesselInfo
from shore.store.postgres import PostgresStore
from shore.transparency import sign_daily_head
from tests.shore.store_fixtures import (
    SHORE_KEY,
    VESSEL_KEY,
    decoded_downlink,
    decoded_uplink,
    shore_encoder,
    uplink,
)

VESSEL = 4242
OTHER_VESSEL = 77
OTHER_KEY = SigningKey.from_seed(bytes(range(40, 72)))
MONTH = 202610
START = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
CREW = 30
TEXTS = (
    "สวัสดีครับแม่ ผมสบายดี",
    "Hello from the boat, all fine here.",
    "မင်္ဂလာပါ အမေ ကျန်းမာပါတယ်",
    "ถึงท่าเรือสัปดาห์หน้า",
    "Miss you all. Send news of the baby.",
)


@dataclass
class Ledger:
    """What the test itself saw happen, counted without the code under test."""

    offered: dict[int, int] = field(default_factory=dict)
    received: dict[int, int] = field(default_factory=dict)
    delivered: dict[int, int] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def add(table: dict[int, int], crew: int, text_bytes: int) -> None:
        table[crew] = table.get(crew, 0) + text_bytes


@dataclass
class Month:
    report: ComplianceReport
    statement: AgentStatement
    ledger: Ledger
    other_leaf_report: ComplianceReport
    outbox_path: Path
    store_path: Path | None  # the SQLite store (None: the month ran on PostgreSQL)


async def _simulate(tmp: Path, dsn: str | None, days: int) -> Month:
    rng = random.Random(9)
    now = START - 86_400
    outbox = Outbox.open(tmp / "outbox.db", VESSEL)
    store: RelayStore = (
        await SqliteStore.open(tmp / "shore.db") if dsn is None else await PostgresStore.open(dsn)
    )
    ledger = Ledger()
    try:
        await store.add_vessel(
            VesselInfo("Sea Star 7", "TH", "TH-4242", "Owner Co."),
            VESSEL_KEY.verify_key.key,
            now,
            vessel_id=VESSEL,
        )
        await store.add_vessel(
            VesselInfo("Other Boat", "TH", "TH-0077", "Other Co."),
            OTHER_KEY.verify_key.key,
            now,
            vessel_id=OTHER_VESSEL,
        )
        register = CrewRegister(outbox)
        contacts: dict[int, int] = {}
        for i in range(CREW):
            member, _ = register.add(
                name=f"Crew {i + 1}",
                document=f"SB{100000 + i}",
                nationality="MMR" if i % 2 else "KHM",
                language=Language.ENG,
                now=now,
            )
            added = register.add_contact(
                member.crew,
                channel="email",
                address=f"family{i}@example.org",
                name=None,
                language=None,
                now=now,
            )
            contacts[member.crew] = added.contact
        lost_once: set[int] = set()
        for hour in range(0, days * 24, 6):
            now = START + hour * 3600
            for crew, contact in contacts.items():
                if rng.random() < 0.25:
                    if rng.random() < 0.2:
                        outbox.accept_message(
                            crew=crew,
                            contact=contact,
                            lang=Language.ENG,
                            now=now,
                            quota_bytes=RULE_MONTHLY_TEXT_BYTES,
                            quick=3,
                        )
                        ledger.add(ledger.offered, crew, QUICK_MESSAGE_BYTES)
                    else:
                        body = rng.choice(TEXTS) * rng.randint(1, 4)
                        outbox.accept_message(
                            crew=crew,
                            contact=contact,
                            lang=Language.ENG,
                            now=now,
                            quota_bytes=RULE_MONTHLY_TEXT_BYTES,
                            body=body,
                        )
                        ledger.add(ledger.offered, crew, len(body.encode()))
            if rng.random() < 0.1:
                outbox.accept_grievance(
                    union_id=1, sealed=rng.randbytes(300), case_key=b"k" * 32, now=now
                )
            if hour > days * 24 - 12:
                continue  # the month's last messages wait on board (offered, not sent)
            now += 600
            pending = [p.message_seq for p in outbox.pending_messages(now)]
            while pending:
                chunk, pending = pending[:12], pending[12:]
                try:
                    batch_seq, data = outbox.make_batch(chunk, default_codebook(), VESSEL_KEY, now)
                except LimitExceeded:
                    pending = chunk[6:] + pending
                    batch_seq, data = outbox.make_batch(
                        chunk[:6], default_codebook(), VESSEL_KEY, now
                    )
                outbox.mark_sent(batch_seq, now)
                if rng.random() < 0.1 and batch_seq not in lost_once:
                    lost_once.add(batch_seq)  # lost on the link; resent next session
                    continue
                await _ingest(store, data, now, ledger)
            for stored in outbox.unacknowledged_batches():
                outbox.mark_sent(stored.batch_seq, now)  # retransmission: byte-identical
                await _ingest(store, stored.data, now, ledger)
            await _deliver(store, now, rng, ledger)
            await _downlink(store, outbox, now + 60)
            await sign_daily_head(store, SHORE_KEY, now)
        # the other vessel's batches are in the same log
        for seq in (1, 2):
            data = uplink(
                OTHER_VESSEL,
                seq,
                [
                    CrewMessage(
                        message_seq=seq,
                        crew=1,
                        contact=1,
                        written_minutes=int(START // 60) + seq,
                        lang=Language.ENG,
                        body="other vessel",
                    )
                ],
                key=OTHER_KEY,
                minutes=int(START // 60) + seq,
            )
            batch = decode_batch(
                data,
                codebook=default_codebook(),
                verify_key=OTHER_KEY.verify_key,
                direction=Direction.UPLINK,
            )
            await store.ingest_batch(batch, data, START + 3600)
        now = START + 31 * 86_400 + 3600
        statement = build_statement(
            outbox,
            MONTH,
            quota_bytes=RULE_MONTHLY_TEXT_BYTES,
            profile=IRIDIUM_CERTUS,
            vessel_key=VESSEL_KEY,
            now=now,
        )
        report = await build_report(store, VESSEL, MONTH, SHORE_KEY, now, statement=statement)
        other = await build_report(store, OTHER_VESSEL, MONTH, SHORE_KEY, now)
    finally:
        await store.close()
        outbox.close()
    store_path = tmp / "shore.db" if dsn is None else None
    return Month(report, statement, ledger, other, tmp / "outbox.db", store_path)


async def _ingest(store: RelayStore, data: bytes, now: float, ledger: Ledger) -> None:
    batch = decoded_uplink(data)
    seen = {m.message_seq for m in await store.messages(VESSEL)}
    await store.ingest_batch(batch, data, now)
    for envelope in batch.envelopes:
        if isinstance(envelope, CrewMessage) and envelope.message_seq not in seen:
            size = len(envelope.body.encode()) if envelope.body is not None else QUICK_MESSAGE_BYTES
            ledger.add(ledger.received, envelope.crew, size)


async def _deliver(store: RelayStore, now: float, rng: random.Random, ledger: Ledger) -> None:
    due = await store.claim_due_deliveries(now, 1000, "test")
    if not due:
        return
    messages = {m.message_seq: m for m in await store.messages(VESSEL)}
    for delivery in due:
        message = messages[delivery.message_seq]
        if message.kind != "message" or message.crew is None:
            await store.finish_delivery(delivery.key, "delivered", None, now)
            continue
        size = len(message.body.encode()) if message.body is not None else QUICK_MESSAGE_BYTES
        if rng.random() < 0.05:
            await store.finish_delivery(delivery.key, "failed", FailureReason.ADDRESS_INVALID, now)
            ledger.add(ledger.failed, message.crew, size)
        else:
            await store.finish_delivery(delivery.key, "delivered", None, now)
            ledger.add(ledger.delivered, message.crew, size)


async def _downlink(store: RelayStore, outbox: Outbox, now: float) -> None:
    while True:
        made = await store.make_downlink_batch(VESSEL, now, shore_encoder(VESSEL, now), 50)
        if made is None:
            break
        outbox.apply_downlink(decoded_downlink(made.data), now)
    for sent in await store.downlink_batches(VESSEL):
        if sent.acked_at is None:
            outbox.apply_downlink(decoded_downlink(sent.data), now)


def simulate(tmp: Path, dsn: str | None = None, *, days: int = 31) -> Month:
    """Run the month (outside any test's event loop) on SQLite, or on PostgreSQL at ``dsn``;
    traffic on the first ``days`` days of October only, if fewer than 31."""
    return asyncio.run(_simulate(tmp, dsn, days))
