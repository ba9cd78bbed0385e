"""Days at sea in milliseconds: the real outbox, session shell and relay on the fake link.

Each scenario runs the shipped code end to end (``shipboard.link.run_session`` over the
fake link's vessel end; the relay's ingest, SQLite store and downlink at the other) on one
fake clock, so days of outage cost nothing and every run is the same.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from protocol.batch import Direction, encode_batch, read_batch_header
from protocol.envelopes import BatchAck
from protocol.languages import Language
from shipboard.crew import CrewRegister
from shipboard.link import LinkDown
from tests.kit.clock import FakeClock
from tests.kit.fakelink import DOWN, UP
from tests.kit.voyage import CODEBOOK, VESSEL, KitShore, voyage
from tests.shore.store_fixtures import OTHER_KEY

HOUR = 3600.0


async def test_three_days_without_a_link_then_a_crash_mid_batch(tmp_path: Path) -> None:
    """The satellite is gone for three days while the crew keep writing; the agent tries
    every hour. When the link returns it crawls, and the agent is killed while the batch is
    going up. Restarted from its SQLite file, it resends the very batch, and every message
    arrives ashore and is acknowledged exactly once."""
    async with voyage(tmp_path) as (vessel, shore, link, clock):
        link.cut()
        seqs: list[int] = []
        for hour in range(72):
            if hour % 24 == 0:
                seqs += vessel.write(3)
            with pytest.raises(LinkDown):
                await vessel.session()
            clock.advance(HOUR)
        link.restore()
        link.trickle(max_bytes=64)
        await vessel.crash_mid_publish(after_up_bytes=128)
        assert await shore.stored_seqs() == []  # the half-sent batch never arrived
        link.trickle(None)
        report = await vessel.session()
        assert report.published == (1,)
        assert report.acknowledged == (1,)
        assert await shore.stored_seqs() == seqs
        assert vessel.states(seqs) == ["acknowledged"] * len(seqs)
        assert Counter(vessel.acknowledged_batches()) == {1: 1}


async def test_duplicated_and_reordered_batches_both_ways(tmp_path: Path) -> None:
    """Every uplink and downlink batch arrives twice and newest first: the shore stores each
    message once, the vessel applies each receipt once, and nothing is lost."""
    async with voyage(tmp_path) as (vessel, shore, link, _clock):
        seqs = vessel.write(4)
        link.duplicate_next(UP, 4)
        link.duplicate_next(DOWN, 8)
        link.reorder()
        report = await vessel.session(max_batch_messages=1)
        assert report.published == (1, 2, 3, 4)
        assert report.acknowledged == (1, 2, 3, 4)
        assert report.unacknowledged_after == 0
        assert report.downlink_duplicates >= 1
        assert sorted(await shore.stored_seqs()) == seqs
        assert vessel.states(seqs) == ["acknowledged"] * 4
        assert shore.ingestor is not None
        assert shore.ingestor.stats.batches_duplicate == 4


async def test_the_shore_restarts_between_publish_and_acknowledgement(tmp_path: Path) -> None:
    """The relay dies with the vessel's batch in memory, before committing it: the vessel
    hears nothing, and after the relay restarts the next session resends the batch byte for
    byte; it is stored and acknowledged once."""
    async with voyage(tmp_path) as (vessel, shore, link, clock):
        seqs = vessel.write(2)
        await shore.crash()
        first = await vessel.session()
        assert (first.published, first.unacknowledged_after) == ((1,), 1)
        await shore.restart()
        clock.advance(HOUR)
        second = await vessel.session()
        assert (second.published, second.acknowledged) == ((1,), (1,))
        sent = link.sent_payloads(UP)
        assert len(sent) == 2
        assert sent[0] == sent[1]
        assert await shore.stored_seqs() == seqs
        assert await shore.stored_batches() == [1]
        assert Counter(vessel.acknowledged_batches()) == {1: 1}


async def test_a_lost_receipt_makes_the_vessel_resend_and_the_shore_deduplicate(
    tmp_path: Path,
) -> None:
    """The shore stores a batch but its BatchAck is lost on the way down: the vessel resends
    the batch next session, the shore recognises it (stores nothing twice) and acknowledges
    it again; the vessel sees it acknowledged once."""
    async with voyage(tmp_path) as (vessel, shore, link, clock):
        seqs = vessel.write(3)
        link.lose_next(DOWN)
        first = await vessel.session()
        assert (first.published, first.acknowledged) == ((1,), ())
        assert await shore.stored_seqs() == seqs
        clock.advance(HOUR)
        second = await vessel.session()
        assert second.acknowledged == (1,)
        assert shore.ingestor is not None
        assert shore.ingestor.stats.batches_duplicate == 1
        assert await shore.stored_seqs() == seqs
        assert Counter(vessel.acknowledged_batches()) == {1: 1}


async def test_a_forged_downlink_batch_is_skipped_and_the_session_goes_on(tmp_path: Path) -> None:
    """Garbage and a batch signed with the wrong key arrive on the downlink: both are
    logged and skipped, the real receipt is applied, and the vessel's message is done."""
    async with voyage(tmp_path) as (vessel, _shore, link, clock):
        seqs = vessel.write(1)
        link.send(DOWN, b"\x02not a batch at all")
        forged = encode_batch(
            [BatchAck(up_to=1, written_minutes=int(clock() // 60))],
            direction=Direction.DOWNLINK,
            vessel_id=VESSEL,
            batch_seq=1,
            batch_minutes=int(clock() // 60),
            signing_key=OTHER_KEY,
            codebook=CODEBOOK,
        )
        link.send(DOWN, forged)  # "your batch 1 is stored": it is not, and it is not signed
        report = await vessel.session()
        assert report.downlink_refused == 2
        assert report.acknowledged == (1,)
        assert vessel.states(seqs) == ["acknowledged"]


async def test_an_idle_vessel_polling_for_a_week_sends_one_bare_acknowledgement(
    tmp_path: Path,
) -> None:
    """On VSAT the agent polls every 15 minutes. A message goes up and its receipt comes
    down: the vessel acknowledges that once, in a batch of nothing but a BatchAck, and
    then, idle for a week, publishes nothing more (the relay does not acknowledge the
    acknowledgement, the vessel does not resend it). A contact added on day three goes up
    and the relay's answer is nothing but a BatchAck: applied, never answered. Every batch
    ends acknowledged."""
    async with voyage(tmp_path) as (vessel, _shore, link, clock):
        vessel.write(1)
        for quarter in range(7 * 24 * 4):
            if quarter == 3 * 24 * 4:
                CrewRegister(vessel.outbox).add_contact(
                    vessel.crew,
                    channel="sms",
                    address="+959250000002",
                    name="Brother",
                    language=Language.MYA,
                    now=clock(),
                )
            report = await vessel.session()
            assert report.unacknowledged_after == 0
            clock.advance(15 * 60)
        sent = link.sent_payloads(UP)
        assert [read_batch_header(data).batch_seq for data in sent] == [1, 2, 3]
        ack_only = [b.batch_seq for b in vessel.outbox.unacknowledged_batches()]
        assert ack_only == []  # batch 2 was covered by the answer to batch 3
        assert len(link.sent_payloads(DOWN)) == 2  # the receipt, then the bare BatchAck
        assert sum(len(data) for data in sent) < 1_500


async def test_a_lost_bare_acknowledgement_costs_one_resend_of_the_receipt(
    tmp_path: Path,
) -> None:
    """The vessel's acknowledgement of a receipt is lost on the way up. No session waits
    for it or sends it again on its own; the relay, not having heard, resends the receipt
    once, and the vessel acknowledges the copy. The next message's BatchAck shows the
    relay moved past the lost batch: it goes up once more and the relay's window has no
    hole. Nothing is stored twice."""
    async with voyage(tmp_path) as (vessel, shore, link, clock):
        seqs = vessel.write(1)
        await vessel.session()
        clock.advance(15 * 60)
        link.lose_next(UP)
        lost = await vessel.session()
        assert lost.published == (2,)
        assert lost.unacknowledged_after == 0
        for _ in range(2 * 24 * 4):
            clock.advance(15 * 60)
            await vessel.session()
        sent = [read_batch_header(data).batch_seq for data in link.sent_payloads(UP)]
        assert sent == [1, 2, 3]  # 3: the acknowledgement of the resent receipt
        assert len(link.sent_payloads(DOWN)) == 2  # the receipt, and its one resend
        assert await shore.stored_batches() == [1, 3]
        seqs += vessel.write(1)
        for _ in range(4):
            clock.advance(15 * 60)
            await vessel.session()
        sent = [read_batch_header(data).batch_seq for data in link.sent_payloads(UP)]
        assert sent == [1, 2, 3, 4, 2, 5]
        assert await shore.stored_batches() == [1, 2, 3, 4, 5]
        assert await shore.stored_seqs() == seqs
        assert vessel.states(seqs) == ["acknowledged"] * 2


# --- what the relay queues while the vessel is away ----------------------------------------------

DAY = 24 * HOUR
PASS_S = 300.0  # the relay's downlink pass, every five minutes of the day


async def _a_day_ashore(shore: KitShore, clock: FakeClock, seqs: list[int], crew: int) -> None:
    """A day at sea, seen from the relay: the family mail servers take ``seqs`` one by one
    (their DELIVERED receipts are queued), 30 families answer at other times, and the
    relay runs its downlink pass every five minutes."""
    events: dict[int, list[int]] = {}  # pass number -> messages delivered (0: a reply)
    for index, seq in enumerate(seqs):
        events.setdefault(1 + index * 2, []).append(seq)
    for index in range(30):
        events.setdefault(5 + index * 9, []).append(0)
    for number in range(1, int(DAY // PASS_S) + 1):
        clock.advance(PASS_S)
        for seq in events.get(number, []):
            if seq:
                await shore.delivered(seq)
            else:
                await shore.family_replies(crew, 1, f"reply at pass {number}: we are fine")
        await shore.tick()


async def test_a_day_away_comes_down_in_at_most_two_batches(tmp_path: Path) -> None:
    """A crew sends 100 messages home and the vessel goes away for a day. Ashore the 100
    DELIVERED receipts and 30 families' replies are queued at different times while the
    relay passes every five minutes: all of it waits in the relay's store (the vessel has
    not collected the answer of its last session), and only that answer is resent, once,
    after resend_max_s. At the next session, where a crew member writes again, the vessel
    receives two downlink batches: that copy, and the answer to its uplink carrying the
    whole day; every receipt and reply exactly once."""
    async with voyage(tmp_path) as (vessel, shore, link, clock):
        seqs = vessel.write(100)
        first = await vessel.session()
        assert first.acknowledged == (1,)
        assert vessel.states(seqs) == ["acknowledged"] * 100
        assert shore.downlink is not None
        made, down_before = shore.downlink.stats.batches_made, link.statistics.sent[DOWN]
        await _a_day_ashore(shore, clock, seqs, vessel.crew)
        assert link.statistics.sent[DOWN] - down_before == 1  # the answer's copy, at 24 h
        assert shore.downlink.stats.batches_made == made  # nothing of the day went alone
        later = vessel.write(1)
        report = await vessel.session()
        assert (report.downlink_applied, report.downlink_duplicates) == (1, 1)
        assert report.acknowledged == (2,)
        assert shore.downlink.stats.batches_made == made + 1
        assert vessel.states(seqs) == ["delivered"] * 100
        assert vessel.states(later) == ["acknowledged"]
        delivered = [seq for seq, _, stage in vessel.inbox_rows("stage") if stage == "delivered"]
        assert Counter(delivered) == dict.fromkeys(seqs, 1)
        replies = [code for _, code, _ in vessel.inbox_rows("reply")]
        assert Counter(replies) == dict.fromkeys(range(1, 31), 1)


async def test_a_session_with_nothing_to_send_collects_the_day_at_the_next_one(
    tmp_path: Path,
) -> None:
    """After a day away the vessel only looks for news: it finds nothing at the broker but
    owes the shore its acknowledgement of the last answer, sends just that and leaves at
    once (the shore answers such a batch lazily). The relay releases the day when that
    acknowledgement arrives, so it waits at the broker: the following session drains it,
    one batch with every receipt and reply, nothing twice (the one session's delay this
    rule costs when a vessel has nothing to send; a session with a message gets the day
    in the session itself)."""
    async with voyage(tmp_path) as (vessel, shore, link, clock):
        seqs = vessel.write(100)
        await vessel.session()
        await _a_day_ashore(shore, clock, seqs, vessel.crew)
        down_before = link.statistics.sent[DOWN]
        polled = await vessel.session()
        assert polled.published == (2,)  # the acknowledgement alone
        assert (polled.downlink_applied, polled.downlink_duplicates) == (0, 1)
        assert vessel.states(seqs) == ["acknowledged"] * 100
        await link.pump()  # the acknowledgement reaches the relay after the vessel left
        assert link.statistics.sent[DOWN] - down_before == 1  # the whole day, in one batch
        clock.advance(6 * HOUR)
        collected = await vessel.session()
        assert (collected.downlink_applied, collected.downlink_duplicates) == (1, 0)
        assert vessel.states(seqs) == ["delivered"] * 100
        replies = [code for _, code, _ in vessel.inbox_rows("reply")]
        assert Counter(replies) == dict.fromkeys(range(1, 31), 1)


async def test_a_lost_answer_is_resent_and_a_relay_restart_loses_nothing_held(
    tmp_path: Path,
) -> None:
    """The relay's answer to a session is lost on the way down, so the vessel leaves with
    its batch unacknowledged. During the day receipts and replies are queued and held
    behind the lost answer, and the relay restarts at noon. The lost answer is resent
    byte for byte after resend_max_s; at the next session the vessel gets it and then,
    with the answer to its uplink, everything held: every message delivered, every reply
    once, nothing applied twice."""
    async with voyage(tmp_path) as (vessel, shore, link, clock):
        seqs = vessel.write(5)
        link.lose_next(DOWN)
        first = await vessel.session()
        assert (first.published, first.acknowledged) == ((1,), ())
        lost = link.sent_payloads(DOWN)[-1]
        for hour in range(24):
            clock.advance(HOUR)
            if hour < len(seqs):
                await shore.delivered(seqs[hour])
            if hour % 4 == 1:
                await shore.family_replies(vessel.crew, vessel.contact, f"hour {hour}")
            if hour == 12:
                await shore.restart()
            await shore.tick()
        resent = link.sent_payloads(DOWN)[-1]
        assert resent == lost  # the only downlink of the day: the lost answer, again
        assert link.statistics.sent[DOWN] == 2
        later = vessel.write(1)
        report = await vessel.session()
        assert (report.downlink_applied, report.downlink_duplicates) == (2, 0)
        assert report.acknowledged == (1, 2)
        assert vessel.states(seqs) == ["delivered"] * 5
        assert vessel.states(later) == ["acknowledged"]
        replies = [code for _, code, _ in vessel.inbox_rows("reply")]
        assert Counter(replies) == dict.fromkeys(range(1, 7), 1)
        assert await shore.stored_seqs() == [*seqs, *later]
