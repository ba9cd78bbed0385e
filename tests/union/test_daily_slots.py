"""Daily slots on board and at the relay (``[grievances] daily_slots = true``).

* With the crew member's quota and the owner's budget at zero, a grievance leaves in the
  next slot release, in every trial, and its slot is the size of everyone's cover.
* A modified agent that drops one crew member's slots makes the relay's union API raise
  "crew member silent" for that crew member only; a vessel that stops syncing raises
  "vessel silent".
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import nacl.public

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch
from protocol.envelopes import GrievanceReport
from protocol.languages import Language
from protocol.quota import QuotaLedger, crew_quota
from protocol.sealing import GrievanceCategory, open_grievance
from protocol.signing import SigningKey
from protocol.slots import DEFAULT_SLOT_BYTES, SECONDS_PER_DAY, SlotKind, open_slot, slot_header
from shipboard.config import UnionConfig
from shipboard.crew import CrewRegister, SignedIn
from shipboard.intake import Intake
from shipboard.link import build_snapshot
from shipboard.outbox import Outbox
from shipboard.profiles import profile_named
from shipboard.scheduler import SchedulerSettings, plan
from shore.store import SqliteStore, VesselInfo
from shore.union_api import silence_alert_source
from vessel_relay.demo.defaults import demo_ship_config

DAY = 20_600
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
UNION = nacl.public.PrivateKey(bytes(range(1, 33)))
TRIALS = 12


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _vessel(tmp: Path, vessel_id: int, crew: int) -> tuple[Outbox, Intake, Clock, list[SignedIn]]:
    config = demo_ship_config(tmp)
    config = dataclasses.replace(
        config,
        quota=dataclasses.replace(config.quota, daily_slots=True),
        unions=(UnionConfig(7, "Fishers' Union", bytes(UNION.public_key), (Language.ENG,)),),
    )
    outbox = Outbox.open(tmp / "outbox.sqlite3", vessel_id)
    clock = Clock(DAY * SECONDS_PER_DAY + 60.0)
    intake = Intake(config, outbox, default_codebook(), clock=clock)
    register = CrewRegister(outbox)
    signed = []
    for n in range(crew):
        member, pin = register.add(
            name=f"Crew {n}", document=f"D-{n}", nationality="MM", language=Language.ENG, now=0.0
        )
        signed.append(register.sign_in(member.crew, pin))
    return outbox, intake, clock, signed


def _plan(outbox: Outbox, now: float) -> tuple[int, ...]:
    """What the scheduler sends at ``now`` with every crew member's quota used up (the law
    forbids a quota below 1 MiB, so "zero" is "all spent") and the owner's budget zero."""
    quota = crew_quota()
    snapshot = build_snapshot(
        outbox, now=now, quota_bytes=quota, remaining_budget_bytes=0, last_session_at=None
    )
    spent = {(crew, snapshot.month): quota for crew in range(1, 20)}
    snapshot = dataclasses.replace(snapshot, ledger=QuotaLedger(quota, spent))
    return plan(snapshot, profile_named("iridium-certus"), SchedulerSettings(), now).send


def test_a_grievance_leaves_in_the_next_slot_with_quota_and_budget_at_zero(
    tmp_path: Path,
) -> None:
    rng = random.Random(8)
    for trial in range(TRIALS):
        outbox, intake, clock, signed = _vessel(tmp_path / f"t{trial}", 1, crew=4)
        try:
            reporter = rng.randrange(4)
            clock.now = DAY * SECONDS_PER_DAY + rng.uniform(0, SECONDS_PER_DAY - 1)
            assert _plan(outbox, clock.now) == ()  # today's slots wait for the day's end
            filed = intake.file_grievance(
                signed[reporter],
                union_id=7,
                category=GrievanceCategory.WITHHOLDING_OF_WAGES,
                text=f"Trial {trial}: no wages for three months.",
                lang=Language.ENG,
                anonymous=trial % 2 == 0,
            )
            assert _plan(outbox, clock.now) == ()  # nothing on the link says "grievance"
            release = (DAY + 1) * SECONDS_PER_DAY + 3600.0 + 1
            sent = _plan(outbox, release)
            assert filed.message_seq in sent, f"trial {trial}: the grievance was held"
            assert len(sent) == 4  # every crew member's slot of the day, no more
            _, data = outbox.make_batch(list(sent), default_codebook(), VESSEL_KEY, release)
            batch = decode_batch(
                data,
                codebook=default_codebook(),
                verify_key=VESSEL_KEY.verify_key,
                direction=Direction.UPLINK,
            )
            items = [e for e in batch.envelopes if isinstance(e, GrievanceReport)]
            assert {len(e.sealed) for e in items} == {DEFAULT_SLOT_BYTES}
            opened = [open_slot(e.sealed, bytes(UNION)) for e in items]
            real = [slot for slot in opened if slot is not None]
            assert [slot.kind for slot in real] == [SlotKind.GRIEVANCE]
            plain = open_grievance(real[0].payload, bytes(UNION), default_codebook())
            assert plain.text.startswith(f"Trial {trial}:")
            assert intake.outbox.my_cases(signed[reporter].case_key) == [filed.message_seq]
        finally:
            outbox.close()


async def test_dropped_slots_raise_crew_member_silent_and_silence_raises_vessel_silent(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star", "TH", "TH-0042", "Owner Co", unions=(7,))
    vessel_id = await store.add_vessel(info, VESSEL_KEY.verify_key.key, 0.0)
    outbox, intake, _, signed = _vessel(tmp_path / "ship", vessel_id, crew=3)
    dropped = signed[1].member.crew
    alerts = silence_alert_source(store, vessel_silent_after_s=SECONDS_PER_DAY)
    try:
        now = 0.0
        for day in range(DAY, DAY + 4):
            intake.ensure_slots(day * SECONDS_PER_DAY + 60.0)  # the agent runs that day
            if day > DAY:  # the modified agent: it deletes one crew member's slots
                rows = outbox.slot_rows(0.0)
                with outbox.transaction("drop a slot") as db:
                    for seq, state, _, sealed in rows:
                        header = slot_header(sealed)
                        if header is not None and header.crew == dropped and state == "accepted":
                            db.execute("DELETE FROM messages WHERE message_seq = ?", (seq,))
            now = (day + 1) * SECONDS_PER_DAY + 3600.0 + 1
            sent = _plan(outbox, now)
            assert sent
            _, data = outbox.make_batch(list(sent), default_codebook(), VESSEL_KEY, now)
            batch = decode_batch(
                data,
                codebook=default_codebook(),
                verify_key=VESSEL_KEY.verify_key,
                direction=Direction.UPLINK,
            )
            await store.ingest_batch(batch, data, now)
        found = list(await alerts(7, now + 60))
        assert found == [
            {
                "kind": "crew member silent",
                "vessel": vessel_id,
                "since": float(DAY * SECONDS_PER_DAY),
                "crew": dropped,
            }
        ]
        assert list(await alerts(8, now + 60)) == []  # another union's view: not its vessel
        later = list(await alerts(7, now + 2 * SECONDS_PER_DAY))
        assert [a["kind"] for a in later] == ["vessel silent"]
    finally:
        outbox.close()
        await store.close()
