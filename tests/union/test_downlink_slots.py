"""Downlink slots, relay and vessel: one item per crew member per slot period, note or cover.

The relay (``shore.union_api.queue_case_note`` and ``shore.downlink.Downlink`` on a real
``SqliteStore``) keeps a union's notes for the reporter's slot (crew number from the
report's uplink slot header) and, at each period's end, queues one fixed-size item per crew
member seen in uplink slots; several notes in one period go in the next periods' slots. On
board, ``Outbox.apply_downlink`` stores every item for the crew member it names, and only the
reporter's reply key opens theirs (``shipboard.http_api._slot_notes``); cover opens for nobody.
"""

from __future__ import annotations

from pathlib import Path

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch
from protocol.cases import CaseNote, case_number, reporter_reply_keys, seal_case_note
from protocol.envelopes import CaseStatus, CaseStatusUpdate
from protocol.languages import Language
from protocol.signing import SigningKey
from protocol.slots import DOWNLINK_SLOT_BYTES, SECONDS_PER_DAY, downlink_slot_notes, slot_header
from shipboard.http_api import _slot_notes
from shore.downlink import Downlink, DownlinkConfig
from shore.store import SqliteStore, VesselInfo
from shore.union_api import queue_case_note
from tests.union.test_daily_slots import DAY, VESSEL_KEY, _vessel, leave_old_slots

SHORE_KEY = SigningKey.from_seed(bytes(range(2, 34)))
PERIOD = 600  # ten minutes


async def test_notes_ride_the_reporters_slots_one_per_period_and_only_they_open_them(
    tmp_path: Path,
) -> None:
    codebook = default_codebook()
    store = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star", "TH", "TH-0042", "Owner Co", unions=(7,))
    vessel_id = await store.add_vessel(info, VESSEL_KEY.verify_key.key, 0.0)
    outbox, _, _, signed = _vessel(tmp_path / "ship", vessel_id, crew=2)
    reporter, other = signed
    now = DAY * SECONDS_PER_DAY + 60.0
    config = DownlinkConfig(slot_period_s=PERIOD)
    published: list[bytes] = []

    async def publish(topic: str, data: bytes) -> None:
        published.append(data)

    def downlink(at: float) -> Downlink:
        return Downlink(store, SHORE_KEY, codebook, config, clock=lambda: at)

    async def items() -> list[CaseStatusUpdate]:
        """What was published, applied on board; the slot items in it. The vessel then
        acknowledges it, as in its next session (the relay holds what it queues later until
        the vessel has collected its batch: ``protocol.exchange.downlink_release_due``)."""
        found = []
        for data in published:
            batch = decode_batch(
                data,
                codebook=codebook,
                verify_key=SHORE_KEY.verify_key,
                direction=Direction.DOWNLINK,
            )
            outbox.apply_downlink(batch, now)
            found += [e for e in batch.envelopes if isinstance(e, CaseStatusUpdate)]
        if published:
            _, ack = outbox.make_batch([], codebook, VESSEL_KEY, now)
            uplink = decode_batch(
                ack, codebook=codebook, verify_key=VESSEL_KEY.verify_key, direction=Direction.UPLINK
            )
            await store.ingest_batch(uplink, ack, now)
        published.clear()
        return found

    try:
        # the crew's uplink slots (as the release before the lane left them on board)
        # reach the relay
        leave_old_slots(outbox, [reporter.member.crew, other.member.crew], 7, now)
        release = (DAY + 1) * SECONDS_PER_DAY + 1.0
        seqs = [m.message_seq for m in outbox.pending_messages(release)]
        _, data = outbox.make_batch(seqs, codebook, VESSEL_KEY, release)
        batch = decode_batch(
            data, codebook=codebook, verify_key=VESSEL_KEY.verify_key, direction=Direction.UPLINK
        )
        await store.ingest_batch(batch, data, release)
        case_seq = next(
            seq
            for _, seq, sealed, _ in await store.union_reports(7)
            if (header := slot_header(sealed)) is not None and header.crew == reporter.member.crew
        )
        case = case_number(vessel_id, case_seq)
        keys = reporter_reply_keys(reporter.case_key)
        now = release + 30
        await downlink(now).publish_due(publish)  # the period that just ended: cover for all
        assert len(await items()) == 2
        # two notes in one period: the first goes in this period's slot, the second in the next
        for status, text in ((CaseStatus.ACKNOWLEDGED, None), (CaseStatus.IN_PROGRESS, "ok")):
            note = CaseNote(case, status, int(now // 60), text, Language.ENG if text else None)
            carried = await queue_case_note(
                store, vessel_id, case_seq, status, seal_case_note(note, keys.public_key), now
            )
            assert carried == "slot"
        await downlink(now).publish_due(publish)
        assert await items() == []  # nothing goes down before this period ends

        seen: list[list[CaseStatusUpdate]] = []
        for period_end in range(1, 4):
            now = (int(release // PERIOD) + period_end) * PERIOD + 2.0
            await downlink(now).publish_due(publish)
            await downlink(now + 1).publish_due(publish)  # a restart: nothing made twice
            seen.append(await items())
        for found in seen:  # one fixed-size item per crew member per period, nothing else
            assert len(found) == 2
            assert {e.report_seq for e in found} == {0}
            assert {e.status for e in found} == {CaseStatus.RECEIVED}
            assert {len(e.sealed_note or b"") for e in found} == {DOWNLINK_SLOT_BYTES}
            crews = set()
            for e in found:
                slot = downlink_slot_notes(e.sealed_note or b"")
                assert slot is not None
                crews.add(slot[0].crew)
            assert crews == {reporter.member.crew, other.member.crew}

        # on board: the reporter's key opens the two notes, in order; cover shows nothing
        mine = outbox.slot_items(reporter.member.crew)
        theirs = outbox.slot_items(other.member.crew)
        assert len(mine) == len(theirs) == 4  # the first period, then three more
        opened = [note for note, _ in _slot_notes(mine, keys.private_key, case)]
        assert [n.status for n in opened] == [CaseStatus.ACKNOWLEDGED, CaseStatus.IN_PROGRESS]
        assert opened[1].text == "ok"
        assert _slot_notes(theirs, keys.private_key, case) == []
        other_keys = reporter_reply_keys(other.case_key)
        assert _slot_notes(mine, other_keys.private_key, case) == []
        # slot items never show in anyone's inbox (nobody can tell note from cover)
        assert not [
            e for e in outbox.inbox(reporter.member.crew, [case_seq]) if e["kind"] == "slot"
        ]
        assert not [e for e in outbox.inbox(other.member.crew) if e["kind"] == "slot"]
    finally:
        outbox.close()
        await store.close()
