"""The durable outbox: a message's whole way on board, and the storage failures intake sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.codebook import Codebook
from protocol.envelopes import (
    BatchAck,
    CaseStatus,
    CaseStatusUpdate,
    ContactBookChange,
    CrewMessage,
    DeliveryFailure,
    DeliveryReceipt,
    FailureReason,
    GrievanceReport,
    ReceiptStage,
    Reply,
    Sos,
)
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.errors import IllegalTransition, NothingToSend, OutboxUnavailable, QuotaExceeded
from shipboard.link import build_snapshot
from shipboard.outbox import Outbox, reporter_tag
from shipboard.profiles import profile_named
from shipboard.scheduler import SchedulerSettings, SessionReason, plan
from tests.kit.model_shore import ModelShore

from .conftest import NOW, VESSEL_ID, Crew

MINUTES = int(NOW // 60)


def _state(outbox: Outbox, seq: int) -> str:
    stages = outbox.message_stages(seq)
    assert stages is not None
    return str(stages["state"])


def test_message_travels_accepted_to_delivered(
    outbox: Outbox, crew: Crew, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """A crew member writes to their mother; the batch goes out, the shore acknowledges it,
    and the delivery receipt reaches the crew member's inbox with the time of each step."""
    accepted = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=NOW,
        quota_bytes=1_048_576,
        body="မင်္ဂလာပါ အမေ",
    )
    pending = outbox.pending_messages(NOW)
    assert [p.message_seq for p in pending] == [accepted.message_seq]
    assert pending[0].text_bytes == len("မင်္ဂလာပါ အမေ".encode())

    batch_seq, data = outbox.make_batch([accepted.message_seq], codebook, vessel_key, NOW + 60)
    assert batch_seq == 1
    assert outbox.pending_messages(NOW) == ()
    uplink = shore.receive_batch(data)
    kinds = [type(e) for e in uplink.envelopes]
    assert kinds == [ContactBookChange, ContactBookChange, CrewMessage]
    message = uplink.envelopes[-1]
    assert isinstance(message, CrewMessage)
    assert (message.message_seq, message.body) == (accepted.message_seq, "မင်္ဂလာပါ အမေ")
    assert _state(outbox, accepted.message_seq) == "batched"
    assert [(b.data, b.ack_only) for b in outbox.unacknowledged_batches()] == [(data, False)]

    outbox.mark_sent(batch_seq, NOW + 120)
    assert _state(outbox, accepted.message_seq) == "sent"

    down = shore.downlink(
        [
            BatchAck(up_to=1, written_minutes=MINUTES),
            DeliveryReceipt(accepted.message_seq, ReceiptStage.ACCEPTED_ASHORE, MINUTES),
        ]
    )
    result = outbox.apply_downlink(down, NOW + 180)
    assert result.acknowledged_batches == (1,)
    assert _state(outbox, accepted.message_seq) == "acknowledged"
    assert outbox.unacknowledged_batches() == ()

    delivered = shore.downlink(
        [DeliveryReceipt(accepted.message_seq, ReceiptStage.DELIVERED, MINUTES)]
    )
    outbox.apply_downlink(delivered, NOW + 240)
    stages = outbox.message_stages(accepted.message_seq)
    assert stages is not None
    assert stages["state"] == "delivered"
    # nothing to send but the acknowledgement of that downlink: an ack-only batch
    ack_seq, _ = outbox.make_batch([], codebook, vessel_key, NOW + 300)
    assert [(b.batch_seq, b.ack_only) for b in outbox.unacknowledged_batches()] == [(ack_seq, True)]
    assert [
        stages[k]
        for k in ("accepted_at", "batched_at", "sent_at", "acknowledged_at", "delivered_at")
    ] == [NOW, NOW + 60, NOW + 120, NOW + 180, NOW + 240]
    inbox = outbox.inbox(crew.member.crew)
    assert [entry["stage"] for entry in inbox] == ["delivered", "accepted_ashore"]


def test_next_batch_acknowledges_downlink_and_repeats_change_nothing(
    outbox: Outbox, crew: Crew, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """The shore's batches 1 and 3 arrive (3 twice); the vessel's next batch carries one
    cumulative acknowledgement, and the repeated batch adds nothing to the inbox."""
    outbox.make_batch([], codebook, vessel_key, NOW)  # announce the contacts first
    reply = Reply(
        reply_seq=7,
        crew=crew.member.crew,
        contact=crew.mother.contact,
        written_minutes=MINUTES,
        lang=Language.MYA,
        body="ကောင်းပါတယ်",
    )
    first = shore.downlink([reply])
    shore.next_downlink = 3
    third = shore.downlink(
        [CaseStatusUpdate(report_seq=99, status=CaseStatus.ACKNOWLEDGED, written_minutes=MINUTES)]
    )
    assert not outbox.apply_downlink(first, NOW).duplicate
    assert not outbox.apply_downlink(third, NOW).duplicate
    assert outbox.apply_downlink(third, NOW).duplicate
    assert len(outbox.inbox(crew.member.crew)) == 1
    assert outbox.has_downlink_ack_pending()
    _, data = outbox.make_batch([], codebook, vessel_key, NOW + 60)
    (ack,) = shore.receive_batch(data).envelopes
    assert ack == BatchAck(up_to=1, ranges=((3, 3),), written_minutes=MINUTES + 1)
    assert not outbox.has_downlink_ack_pending()
    with pytest.raises(NothingToSend):
        outbox.make_batch([], codebook, vessel_key, NOW + 120)


def test_grievance_and_sos_ride_outside_the_quota(
    outbox: Outbox, crew: Crew, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """A crew member whose quota is used up can still file a sealed report and an SOS;
    the report's row does not name them, only their case key finds it."""
    outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.ENG,
        now=NOW,
        quota_bytes=10,
        body="0123456789",
    )
    with pytest.raises(QuotaExceeded) as refused:
        outbox.accept_message(
            crew=crew.member.crew,
            contact=crew.mother.contact,
            lang=Language.ENG,
            now=NOW,
            quota_bytes=10,
            body="x",
        )
    assert refused.value.remaining_bytes == 0
    case_key = b"k" * 32
    report = outbox.accept_grievance(union_id=1, sealed=b"\x01" * 304, case_key=case_key, now=NOW)
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_350_000, 10_050_000))
    stages = outbox.message_stages(report.message_seq)
    assert stages is not None
    assert stages["crew"] is None
    assert stages["reporter_tag"] == reporter_tag(case_key, report.message_seq)
    assert outbox.my_cases(case_key) == [report.message_seq]
    assert outbox.my_cases(b"x" * 32) == []
    _, data = outbox.make_batch([report.message_seq, sos.message_seq], codebook, vessel_key, NOW)
    kinds = [type(e) for e in shore.receive_batch(data).envelopes]
    assert kinds[-2:] == [GrievanceReport, Sos]
    down = shore.downlink([CaseStatusUpdate(report.message_seq, CaseStatus.IN_PROGRESS, MINUTES)])
    outbox.apply_downlink(down, NOW)
    entries = outbox.inbox(crew.member.crew, outbox.my_cases(case_key))
    assert [e["stage"] for e in entries] == ["in_progress"]


def test_failure_and_rejection_reach_the_crew_member(
    outbox: Outbox, crew: Crew, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """The brother's number is wrong: the failure comes back with its reason; a batch the
    relay refuses for good fails its messages instead of being resent forever."""
    one = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.brother.contact,
        lang=Language.ENG,
        now=NOW,
        quota_bytes=10**6,
        body="hello",
    )
    two = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.ENG,
        now=NOW,
        quota_bytes=10**6,
        quick=3,
    )
    outbox.make_batch([one.message_seq], codebook, vessel_key, NOW)
    outbox.make_batch([two.message_seq], codebook, vessel_key, NOW)
    down = shore.downlink(
        [
            BatchAck(up_to=1, rejected=((2, 4),), written_minutes=MINUTES),
            DeliveryFailure(one.message_seq, FailureReason.UNKNOWN_CONTACT, MINUTES),
        ]
    )
    result = outbox.apply_downlink(down, NOW)
    assert result.rejected_batches == (2,)
    assert _state(outbox, one.message_seq) == "failed"
    assert _state(outbox, two.message_seq) == "failed"
    assert outbox.unacknowledged_batches() == ()
    # the unknown contact is announced again in the next batch
    _, data = outbox.make_batch([], codebook, vessel_key, NOW)
    changes = [e for e in shore.receive_batch(data).envelopes if isinstance(e, ContactBookChange)]
    assert {c.contact for c in changes} == {crew.brother.contact}
    # it carries a contact change as well as the BatchAck: the shore acknowledges it at once
    assert [b.ack_only for b in outbox.unacknowledged_batches()] == [False]


def test_batching_a_message_twice_is_refused(
    outbox: Outbox, crew: Crew, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """A bug that puts one message into two batches is caught, naming event and state."""
    one = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.ENG,
        now=NOW,
        quota_bytes=10**6,
        body="hi",
    )
    outbox.make_batch([one.message_seq], codebook, vessel_key, NOW)
    with pytest.raises(IllegalTransition, match=r"'batch'.*'batched'"):
        outbox.make_batch([one.message_seq], codebook, vessel_key, NOW)
    assert len(outbox.unacknowledged_batches()) == 1


def test_sequence_numbers_survive_reopening(tmp_path: Path, crew: Crew, outbox: Outbox) -> None:
    """After a restart, message numbers continue: an idempotency key is never reused."""
    first = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.ENG,
        now=NOW,
        quota_bytes=10**6,
        body="a",
    )
    again = Outbox.open(outbox.path, VESSEL_ID)
    try:
        second = again.accept_message(
            crew=crew.member.crew,
            contact=crew.mother.contact,
            lang=Language.ENG,
            now=NOW,
            quota_bytes=10**6,
            body="b",
        )
    finally:
        again.close()
    assert second.message_seq == first.message_seq + 1


@pytest.mark.parametrize(
    "pragma", ["query_only=ON", "max_page_count=1"], ids=["read-only disk", "full disk"]
)
def test_full_or_read_only_disk_refuses_intake(
    tmp_path: Path, crew: Crew, outbox: Outbox, pragma: str
) -> None:
    """When the disk is full or read-only, intake is refused with OutboxUnavailable and
    nothing is stored (the crew member is told, never acknowledged)."""
    with outbox.reading() as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    limited = Outbox.open(
        outbox.path,
        VESSEL_ID,
        extra_pragmas=[pragma if pragma.startswith("query") else f"max_page_count={pages}"],
    )

    def fill() -> None:
        for _ in range(200):  # a full disk shows once the last free page is used
            limited.accept_message(
                crew=crew.member.crew,
                contact=crew.mother.contact,
                lang=Language.ENG,
                now=NOW,
                quota_bytes=10**9,
                body="x" * 3000,
            )

    try:
        with pytest.raises(OutboxUnavailable, match="cannot save the message"):
            fill()
    finally:
        limited.close()
    count = len(outbox.pending_messages(NOW))
    assert count == (0 if pragma.startswith("query") else count)


def test_broken_database_file_is_reported(tmp_path: Path) -> None:
    """A database file that is not a database makes the outbox refuse to start, clearly."""
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxUnavailable, match="cannot"):
        Outbox.open(path, VESSEL_ID)


def test_a_batch_that_only_acknowledges_opens_no_session_of_its_own(
    outbox: Outbox, crew: Crew, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """Nobody acknowledges an ack-only batch: left unacknowledged, it must not make the
    scheduler open a resend session every ``resend_after_s`` on a quiet vessel. An
    unacknowledged message batch still does."""
    settings = SchedulerSettings()
    profile = profile_named("iridium-certus")
    later = NOW + settings.resend_after_s + 1

    def reason() -> SessionReason | None:
        snapshot = build_snapshot(
            outbox,
            now=later,
            quota_bytes=1 << 20,
            remaining_budget_bytes=1 << 20,
            last_session_at=NOW,
        )
        return plan(snapshot, profile, settings, later).reason

    outbox.make_batch([], codebook, vessel_key, NOW)  # announces the contacts
    outbox.mark_sent(1, NOW)
    assert reason() is SessionReason.RESEND
    answer = [BatchAck(up_to=1, written_minutes=MINUTES), _reply(crew)]
    outbox.apply_downlink(shore.downlink(answer), NOW)
    ack_seq, _ = outbox.make_batch([], codebook, vessel_key, NOW)  # acknowledges that
    outbox.mark_sent(ack_seq, NOW)
    assert [(b.batch_seq, b.ack_only) for b in outbox.unacknowledged_batches()] == [(ack_seq, True)]
    assert reason() is None


def _reply(crew: Crew, reply_seq: int = 7) -> Reply:
    return Reply(
        reply_seq=reply_seq,
        crew=crew.member.crew,
        contact=crew.mother.contact,
        written_minutes=MINUTES,
        lang=Language.MYA,
        body="ကောင်းပါတယ်",
    )


def test_only_a_downlink_batch_with_content_is_owed_an_acknowledgement(
    outbox: Outbox, crew: Crew, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """The shore's batch that only acknowledges the vessel's is applied (the vessel's batch
    is acknowledged) and de-duplicated, but owed nothing, even when it comes twice: no
    batch is made for it. A reply is owed an acknowledgement, and again when the shore
    resends it (it missed the first)."""
    outbox.make_batch([], codebook, vessel_key, NOW)  # announces the contacts
    outbox.mark_sent(1, NOW)
    bare = shore.downlink([BatchAck(up_to=1, written_minutes=MINUTES)])
    assert outbox.apply_downlink(bare, NOW).acknowledged_batches == (1,)
    assert outbox.apply_downlink(bare, NOW).duplicate
    assert not outbox.has_downlink_ack_pending()
    with pytest.raises(NothingToSend):
        outbox.make_batch([], codebook, vessel_key, NOW)
    reply = shore.downlink([_reply(crew)])
    outbox.apply_downlink(reply, NOW)
    assert outbox.has_downlink_ack_pending()
    outbox.make_batch([], codebook, vessel_key, NOW + 60)
    assert not outbox.has_downlink_ack_pending()
    assert outbox.apply_downlink(reply, NOW + 3600).duplicate  # resent: our ack was lost
    assert outbox.has_downlink_ack_pending()


def test_a_sent_ack_only_batch_is_offered_again_only_once_overtaken(
    outbox: Outbox, crew: Crew, shore: ModelShore, codebook: Codebook, vessel_key: SigningKey
) -> None:
    """An ack-only batch the broker took stays open but is not due again; when the shore
    acknowledges a later batch after it was sent and not it, the shore never stored it:
    it is due once more; sent again, it waits for the next proof."""
    outbox.make_batch([], codebook, vessel_key, NOW)  # 1: the contacts
    outbox.mark_sent(1, NOW)
    outbox.apply_downlink(shore.downlink([BatchAck(1, MINUTES), _reply(crew, 1)]), NOW + 60)
    ack_seq, _ = outbox.make_batch([], codebook, vessel_key, NOW + 120)  # 2: bare ack
    outbox.mark_sent(ack_seq, NOW + 120)

    def open_batches() -> list[tuple[int, bool, int, bool]]:
        return [
            (b.batch_seq, b.ack_only, b.send_count, b.overtaken)
            for b in outbox.unacknowledged_batches()
        ]

    assert open_batches() == [(2, True, 1, False)]
    seq = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.ENG,
        now=NOW + 180,
        quota_bytes=1 << 20,
        body="hello",
    ).message_seq
    outbox.make_batch([seq], codebook, vessel_key, NOW + 180)  # 3: a message
    outbox.mark_sent(3, NOW + 180)
    assert open_batches() == [(2, True, 1, False), (3, False, 1, False)]
    lost = shore.downlink([BatchAck(up_to=1, ranges=((3, 3),), written_minutes=MINUTES)])
    outbox.apply_downlink(lost, NOW + 240)  # 3 stored ashore, 2 never arrived
    assert open_batches() == [(2, True, 1, True)]
    outbox.mark_sent(2, NOW + 300)
    assert open_batches() == [(2, True, 2, False)]
    outbox.apply_downlink(shore.downlink([BatchAck(up_to=3, written_minutes=MINUTES)]), NOW + 360)
    assert open_batches() == []
