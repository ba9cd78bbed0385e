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
from tests.kit.fakelink import DOWN, UP
from tests.kit.voyage import CODEBOOK, VESSEL, voyage
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
