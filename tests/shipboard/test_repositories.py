"""What each repository of the vessel database promises, one contract at a time.

Outbox: accepted means committed; a batch's bytes never change; a downlink batch is
applied whole or not at all. Crew register: no PIN in the file; a replaced PIN or duress
PIN leaves no trace in the file, its WAL or its SHM; a contact is announced until a batch
carries it. Inbox: a reply is kept once and only for its crew member. Sessions log: what
was recorded is there after a restart, by month. Daily slots: every crew member's day
looks the same on disk, whatever they filed, and a filled slot leaves no trace of its
cover.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import nacl.public
import pytest

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch
from protocol.codebook import Codebook
from protocol.envelopes import (
    BatchAck,
    DeliveryReceipt,
    Envelope,
    FailureReason,
    LaneBlock,
    ReceiptStage,
    Reply,
)
from protocol.lane import LaneShape, open_up_block
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.casebook import Casebook, CaseEntry
from shipboard.crew import CrewRegister, SignedIn
from shipboard.database import Transaction, VesselDatabase
from shipboard.errors import QuotaExceeded
from shipboard.inbox import DeliveryStage, Filed, Inbox
from shipboard.lane import Reservoir, VesselLane
from shipboard.outbox import Outbox
from shipboard.sessions_log import LinkSession, SessionOutcome, SessionsLog
from shipboard.states import MessageState
from tests.kit.model_shore import ModelShore

from .conftest import NOW, VESSEL_ID, Crew

MINUTES = int(NOW // 60)
SEPTEMBER, OCTOBER = 202609, 202610


@pytest.fixture
def database(tmp_path: Path) -> Iterator[VesselDatabase]:
    opened = VesselDatabase.open(tmp_path / "vessel.sqlite3")
    try:
        yield opened
    finally:
        opened.close()


def _on_disk(path: Path) -> bytes:
    """Everything SQLite keeps of the database: the file, its WAL and its SHM."""
    found = b""
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            found += part.read_bytes()
    return found


def _other_connection_sees(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """What a second, independent connection reads (only what was committed)."""
    other = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return other.execute(sql, args).fetchall()
    finally:
        other.close()


# --- outbox ------------------------------------------------------------------------------


def test_outbox_accepted_means_committed(outbox: Outbox, crew: Crew) -> None:
    """The moment intake is told "accepted", the message is in the file for anyone who
    opens it; a message the quota refuses is nowhere."""
    accepted = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=NOW,
        quota_bytes=100,
        body="ok",
    )
    rows = _other_connection_sees(
        outbox.path, "SELECT state, body FROM messages WHERE message_seq = ?", accepted.message_seq
    )
    assert rows == [(MessageState.ACCEPTED, "ok")]
    with pytest.raises(QuotaExceeded):
        outbox.accept_message(
            crew=crew.member.crew,
            contact=crew.mother.contact,
            lang=Language.MYA,
            now=NOW,
            quota_bytes=100,
            body="x" * 99,
        )
    assert _other_connection_sees(outbox.path, "SELECT COUNT(*) FROM messages") == [(1,)]


def test_outbox_batch_bytes_never_change(
    tmp_path: Path, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """A batch made once is resent as the very same bytes: after it was published, after
    a receipt came down, after more messages and a later batch, and after a restart."""
    path = tmp_path / "vessel.sqlite3"
    outbox = Outbox.open(path, VESSEL_ID)
    register = CrewRegister(outbox)
    member, _ = register.add(
        name="Aung", document="SB-1", nationality="MM", language=Language.MYA, now=NOW
    )
    contact = register.add_contact(
        member.crew, channel="sms", address="+959123456789", name=None, language=None, now=NOW
    )

    def write(body: str, now: float) -> int:
        return outbox.accept_message(
            crew=member.crew,
            contact=contact.contact,
            lang=Language.ENG,
            now=now,
            quota_bytes=10_000,
            body=body,
        ).message_seq

    first = write("first", NOW)
    batch_seq, data = outbox.make_batch([first], codebook, vessel_key, NOW)
    outbox.mark_sent(batch_seq, NOW + 1)
    receipt = DeliveryReceipt(first, ReceiptStage.ACCEPTED_ASHORE, MINUTES)
    outbox.apply_downlink(shore.downlink([receipt]), NOW + 2)
    outbox.make_batch([write("second", NOW + 3)], codebook, vessel_key, NOW + 4)
    outbox.mark_sent(batch_seq, NOW + 5)  # resent
    outbox.close()
    reopened = Outbox.open(path, VESSEL_ID)
    try:
        kept = {b.batch_seq: b for b in reopened.unacknowledged_batches()}
        assert kept[batch_seq].data == data
        assert kept[batch_seq].send_count == 2
    finally:
        reopened.close()
    assert _other_connection_sees(
        path, "SELECT data, link_bytes FROM batches WHERE batch_seq = ?", batch_seq
    ) == [(data, len(data))]


class _BrokenInbox:
    """An inbox that fails on a family reply (a bug, a full disk mid-batch)."""

    def receive(self, tx: Transaction, envelope: Envelope, now: float) -> Filed:
        raise RuntimeError("the inbox failed")

    def record_stage(
        self,
        tx: Transaction,
        *,
        message_seq: int,
        crew: int | None,
        stage: DeliveryStage,
        written_minutes: int,
        now: float,
        reason: FailureReason | None = None,
        detail: str | None = None,
    ) -> None:
        Inbox.record_stage(
            tx,
            message_seq=message_seq,
            crew=crew,
            stage=stage,
            written_minutes=written_minutes,
            now=now,
            reason=reason,
            detail=detail,
        )


def test_outbox_downlink_batch_is_applied_whole_or_not_at_all(
    outbox: Outbox, crew: Crew, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """A downlink batch acknowledges a batch, reports a delivery and carries a reply; when
    the reply cannot be kept, neither the acknowledgement nor the receipt happened either.
    Applied again, the same batch changes nothing the second time."""
    accepted = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.ENG,
        now=NOW,
        quota_bytes=10_000,
        body="hello",
    )
    batch_seq, _ = outbox.make_batch([accepted.message_seq], codebook, vessel_key, NOW)
    down = shore.downlink(
        [
            BatchAck(up_to=batch_seq, written_minutes=MINUTES),
            DeliveryReceipt(accepted.message_seq, ReceiptStage.DELIVERED, MINUTES),
            Reply(
                reply_seq=1,
                crew=crew.member.crew,
                contact=crew.mother.contact,
                written_minutes=MINUTES,
                lang=Language.ENG,
                body="hi son",
            ),
        ]
    )
    broken = Outbox(outbox.database, VESSEL_ID, inbox=_BrokenInbox())
    with pytest.raises(RuntimeError, match="the inbox failed"):
        broken.apply_downlink(down, NOW + 60)
    stages = outbox.message_stages(accepted.message_seq)
    assert stages is not None
    assert stages["state"] == MessageState.BATCHED
    assert [b.batch_seq for b in outbox.unacknowledged_batches()] == [batch_seq]
    assert Inbox(outbox).entries(crew.member.crew) == []

    first = outbox.apply_downlink(down, NOW + 60)
    again = outbox.apply_downlink(down, NOW + 120)
    assert (first.duplicate, first.acknowledged_batches, first.receipts) == (
        False,
        (batch_seq,),
        1,
    )
    assert (again.duplicate, again.acknowledged_batches, again.receipts) == (True, (), 0)
    kinds = sorted(str(e["kind"]) for e in Inbox(outbox).entries(crew.member.crew))
    assert kinds == ["reply", "stage"]


# --- crew register -----------------------------------------------------------------------


def test_crew_register_keeps_no_pin_and_no_trace_of_a_replaced_one(
    database: VesselDatabase,
) -> None:
    """A crew member gets a PIN from the captain, then chooses their own PIN and a duress
    PIN, then changes both: no PIN is in the file in clear, and the hashes of the replaced
    PINs are gone from the database file, its WAL and its SHM (secure delete, then the
    WAL truncated), so a seized disk gives nothing to guess against."""
    register = CrewRegister(database)
    member, captains_pin = register.add(
        name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA, now=NOW
    )

    def hashes() -> tuple[bytes, bytes | None]:
        with database.reading() as db:
            (pin_hash,) = db.execute(
                "SELECT pin_hash FROM crew WHERE crew = ?", (member.crew,)
            ).fetchone()
            row = db.execute(
                "SELECT duress_hash FROM crew_pins WHERE crew = ?", (member.crew,)
            ).fetchone()
        return bytes(pin_hash), None if row is None or row[0] is None else bytes(row[0])

    captains_hash, _ = hashes()
    register.choose_pin(member.crew, "24681357", "13572468", NOW)
    first_hash, first_duress = hashes()
    assert first_duress is not None
    register.choose_pin(member.crew, "97531864", "86420975", NOW + 60)
    database.checkpoint()
    disk = _on_disk(database.path)
    for secret in (captains_hash, first_hash, first_duress):
        assert secret not in disk
    for pin in (captains_pin, "24681357", "13572468", "97531864", "86420975"):
        assert pin.encode() not in disk
    assert register.sign_in(member.crew, "97531864").member.crew == member.crew


def test_crew_register_announces_a_contact_until_a_batch_carries_it(
    database: VesselDatabase,
) -> None:
    """A new contact waits to be announced; once a batch carries it, it is not announced
    again, unless the shore refused that batch or says it does not know the contact."""
    register = CrewRegister(database)
    member, _ = register.add(
        name="Mya", document="SB-2", nationality="MM", language=Language.MYA, now=NOW
    )
    contact = register.add_contact(
        member.crew, channel="sms", address="+959123456789", name=None, language=None, now=NOW
    )
    with database.transaction() as tx:
        (change,) = register.unannounced_contacts(tx)
        assert (change.contact, change.crew_name) == (contact.contact, "Mya")
        register.mark_announced(tx, [contact.contact], batch_seq=7)
        assert register.unannounced_contacts(tx) == []
        register.announce_again(tx, batch_seq=7)
        assert [c.contact for c in register.unannounced_contacts(tx)] == [contact.contact]
        register.mark_announced(tx, [contact.contact], batch_seq=8)
        register.announce_again(tx, contact=contact.contact)
        assert [c.contact for c in register.unannounced_contacts(tx)] == [contact.contact]
        assert register.is_registered(tx, member.crew)
        assert not register.is_registered(tx, member.crew + 1)


# --- inbox -------------------------------------------------------------------------------


def test_inbox_keeps_a_reply_once_and_only_for_its_crew_member(database: VesselDatabase) -> None:
    """The shore sends the same family reply twice, and a reply for a crew number nobody
    has: the crew member reads it once, another crew member never sees it, and the unknown
    one is not kept."""
    register = CrewRegister(database)
    mine, _ = register.add(
        name="Aung", document="SB-1", nationality="MM", language=Language.MYA, now=NOW
    )
    other, _ = register.add(
        name="Ko", document="SB-2", nationality="MM", language=Language.MYA, now=NOW
    )
    inbox = Inbox(database)
    reply = Reply(
        reply_seq=5,
        crew=mine.crew,
        contact=1,
        written_minutes=MINUTES,
        lang=Language.MYA,
        body="mother says hello",
    )
    stranger = Reply(
        reply_seq=6,
        crew=999,
        contact=1,
        written_minutes=MINUTES,
        lang=Language.MYA,
        body="nobody's",
    )
    with database.transaction() as tx:
        assert inbox.receive(tx, reply, NOW) is Filed.COUNTED
        assert inbox.receive(tx, reply, NOW + 1) is Filed.IGNORED
        assert inbox.receive(tx, stranger, NOW) is Filed.IGNORED
    assert [e["body"] for e in inbox.entries(mine.crew)] == ["mother says hello"]
    assert inbox.entries(other.crew) == []
    assert inbox.slot_items(mine.crew) == []


# --- sessions log --------------------------------------------------------------------------


def test_sessions_log_keeps_each_session_by_month_across_a_restart(tmp_path: Path) -> None:
    """Sessions recorded in September and October, one that broke off: after the agent
    restarts, each month lists its own, oldest first, with how they ended."""
    path = tmp_path / "vessel.sqlite3"
    database = VesselDatabase.open(path)
    log = SessionsLog(database)
    october = 1_791_000_000.0  # 2026-10-03
    for started, outcome in ((NOW, "done"), (NOW + 3600, "failed"), (october, "done")):
        log.record(
            LinkSession(
                started_at=started,
                ended_at=started + 20,
                outcome=SessionOutcome(outcome),
                uplink_payload_bytes=100,
                downlink_payload_bytes=40,
                overhead_bytes=2600,
                profile="iridium-certus",
            )
        )
    database.close()
    reopened = VesselDatabase.open(path)
    try:
        log = SessionsLog(reopened)
        september = log.sessions_in(SEPTEMBER)
        assert [(s.started_at, s.outcome) for s in september] == [
            (NOW, SessionOutcome.DONE),
            (NOW + 3600, SessionOutcome.FAILED),
        ]
        assert [s.started_at for s in log.sessions_in(OCTOBER)] == [october]
    finally:
        reopened.close()


# --- the grievance lane's reservoir and the casebooks -------------------------------------

PERIOD_S = 60


def _lane_vessel(path: Path) -> tuple[VesselDatabase, Outbox, VesselLane, list[SignedIn]]:
    database = VesselDatabase.open(path)
    register = CrewRegister(database)
    signed = []
    for name, document in (("Aung", "SB-1"), ("Ko", "SB-2")):
        member, pin = register.add(
            name=name, document=document, nationality="MM", language=Language.MYA, now=NOW
        )
        signed.append(register.sign_in(member.crew, pin))
    outbox = Outbox(database, VESSEL_ID)
    lane = VesselLane.start(database, outbox, LaneShape(period_s=PERIOD_S), NOW)
    return database, outbox, lane, signed


def test_lane_reservoir_and_casebooks_look_the_same_whatever_was_filed(tmp_path: Path) -> None:
    """Two vessels start their grievance lane at the same moment; on one, a crew member
    files a report. On disk both hold the same number of reservoir rows with the same
    order keys and blocks of one size, and every crew member's casebook is the same size;
    the report's blocks took the place of cover rows in place and leave at the next
    period's end, and the cover they replaced is gone from the file, its WAL and its SHM."""
    union = nacl.public.PrivateKey.generate()
    quiet = _lane_vessel(tmp_path / "quiet.sqlite3")
    busy = _lane_vessel(tmp_path / "busy.sqlite3")
    try:

        def shape(lane: VesselLane) -> list[tuple[int, int]]:
            return [(key, len(block)) for _, key, block in Reservoir(lane.database).snapshot()]

        database, outbox, lane, signed = busy
        assert shape(lane) == shape(quiet[2])
        before = {row_id: block for row_id, _, block in Reservoir(database).snapshot()}
        entry = CaseEntry("1-123456789012", 1, int(NOW // 60), "1234", "B")
        filed = lane.file(
            b"a sealed report " * 30,
            bytes(union.public_key),
            report_number=entry.report_number,
            now=NOW + 1,
            also=lambda tx: Casebook.add_case(tx, signed[0].member.crew, signed[0].case_key, entry),
        )
        assert filed.fragments == 2
        after = {row_id: block for row_id, _, block in Reservoir(database).snapshot()}
        replaced = [before[row_id] for row_id in before if after[row_id] != before[row_id]]
        assert len(replaced) == 2
        assert set(after) == set(before)
        assert shape(lane) == shape(quiet[2])
        assert Casebook(database).sizes() == Casebook(quiet[0]).sizes() == [4096, 4096]
        disk = _on_disk(database.path)
        for cover in replaced:
            assert cover not in disk
        # the next two periods carry the report (the oldest rows leave first)
        for step in (1, 2):
            at = NOW + step * PERIOD_S
            assert lane.release_due(at) == quiet[2].release_due(at) == 1
        opened = []
        for pending in outbox.pending_messages(NOW + 2 * PERIOD_S):
            stages = outbox.message_stages(pending.message_seq)
            assert stages is not None
            assert stages["kind"] == "lane"
        _, data = outbox.make_batch(
            [p.message_seq for p in outbox.pending_messages(NOW + 2 * PERIOD_S)],
            default_codebook(),
            SigningKey.from_seed(bytes(32)),
            NOW + 2 * PERIOD_S,
        )
        batch = decode_batch(
            data,
            codebook=default_codebook(),
            verify_key=SigningKey.from_seed(bytes(32)).verify_key,
            direction=Direction.UPLINK,
        )
        for envelope in batch.envelopes:
            assert isinstance(envelope, LaneBlock)
            opened.append(open_up_block(envelope.block, bytes(union)))
        assert [f is not None for f in opened] == [True, True]
        assert shape(lane) == shape(quiet[2])
        assert Casebook(database).read(signed[0].member.crew, signed[0].case_key) == [entry]
        assert Casebook(database).read(signed[1].member.crew, signed[1].case_key) == []
    finally:
        quiet[0].close()
        busy[0].close()
