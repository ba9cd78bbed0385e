"""Days at sea in milliseconds: the real outbox, session shell and relay on the fake link.

Each scenario runs the shipped code end to end (``shipboard.link.run_session`` over the
fake link's vessel end; the relay's ingest, SQLite store and downlink at the other) on one
fake clock, so days of outage cost nothing and every run is the same.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from protocol.batch import Direction, encode_batch
from protocol.envelopes import BatchAck
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
