"""What the daily slots promised, now kept by the grievance lane; and slots of the release
before the lane, as a vessel may still hold them.

* With every crew member's quota spent and the owner's budget zero, a grievance leaves
  with the lane's next period, in every trial, in a block the size of every cover block,
  and the scheduler's plan is the one it would be without the report.
* :func:`leave_old_slots` writes the daily slots the release before made (cover rows per
  crew member and day, kind ``grievance``), for the tests of what still reads them
  (``test_downlink_slots.py``: the relay's downlink slots for reports that came in them).

The old test that a modified agent dropping one crew member's slots raises "crew member
silent" at the relay is gone with the slots' clear crew header; the lane's "lane silent"
alert is the relay's (its own tests).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

import nacl.public

from common.codebooks import default_codebook
from protocol.languages import Language
from protocol.quota import QuotaLedger, crew_quota
from protocol.sealing import GrievanceCategory
from protocol.signing import SigningKey
from protocol.slots import DEFAULT_SLOT_BYTES, SECONDS_PER_DAY, SlotHeader, SlotKind, seal_slot
from shipboard.config import UnionConfig
from shipboard.crew import CrewRegister, SignedIn
from shipboard.intake import Intake
from shipboard.link import build_snapshot
from shipboard.outbox import Outbox, month_of
from shipboard.profiles import profile_named
from shipboard.scheduler import SchedulerSettings, plan
from shipboard.states import MessageKind, MessageState
from tests.kit.clock import FakeClock
from tests.kit.lane import lane_blocks_of, union_reads
from vessel_relay.demo.defaults import demo_ship_config

DAY = 20_600
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
UNION = nacl.public.PrivateKey(bytes(range(1, 33)))
TRIALS = 12
PERIOD_S = 21_600


def _vessel(
    tmp: Path, vessel_id: int, crew: int
) -> tuple[Outbox, Intake, FakeClock, list[SignedIn]]:
    """A vessel with ``crew`` crew members signed in and the union whose key this holds;
    its grievance lane on (as always outside tests)."""
    config = demo_ship_config(tmp)
    config = dataclasses.replace(
        config,
        vessel=dataclasses.replace(config.vessel, vessel_id=vessel_id),
        quota=dataclasses.replace(config.quota, daily_slots=True),
        unions=(UnionConfig(7, "Fishers' Union", bytes(UNION.public_key), (Language.ENG,)),),
    )
    outbox = Outbox.open(tmp / "outbox.sqlite3", vessel_id)
    clock = FakeClock(DAY * SECONDS_PER_DAY + 60.0)
    intake = Intake(config, outbox, default_codebook(), clock=clock)
    register = CrewRegister(outbox)
    signed = []
    for n in range(crew):
        member, pin = register.add(
            name=f"Crew {n}", document=f"D-{n}", nationality="MM", language=Language.ENG, now=0.0
        )
        signed.append(register.sign_in(member.crew, pin))
    return outbox, intake, clock, signed


def leave_old_slots(outbox: Outbox, crews: Sequence[int], union_id: int, now: float) -> int:
    """The daily slots the release before the lane made at ``now``: a cover slot per crew
    member for today and tomorrow, sealed to a throwaway key, waiting in the outbox until
    its day is over (kind ``grievance``, released at ``accepted_at``). How many."""
    current = int(now // SECONDS_PER_DAY)
    made = 0
    with outbox.transaction("slots as the release before made them") as db:
        for crew in crews:
            for day in (current, current + 1):
                release = float((day + 1) * SECONDS_PER_DAY)
                throwaway = bytes(nacl.public.PrivateKey.generate().public_key)
                sealed = seal_slot(
                    SlotHeader(crew, day), SlotKind.COVER, b"", throwaway, DEFAULT_SLOT_BYTES
                )
                db.execute(
                    "INSERT INTO messages (kind, union_id, sealed, reporter_tag, text_bytes, "
                    "month, state, accepted_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                    (
                        MessageKind.GRIEVANCE,
                        union_id,
                        sealed,
                        nacl.public.PrivateKey.generate().encode(),
                        month_of(release),
                        MessageState.ACCEPTED,
                        release,
                    ),
                )
                made += 1
    return made


def _plan(outbox: Outbox, now: float) -> tuple[int, ...]:
    """What the scheduler sends at ``now`` with every crew member's quota used up (the law
    forbids a quota below 1 MiB, so "zero" is "all spent") and the owner's budget zero."""
    quota = crew_quota()
    snapshot = build_snapshot(
        outbox,
        now=now,
        quota_bytes=quota,
        remaining_budget_bytes=0,
        last_session_at=now - 3600,  # no idle poll is due: only the lane's own timing
    )
    spent = {(crew, snapshot.month): quota for crew in range(1, 20)}
    snapshot = dataclasses.replace(snapshot, ledger=QuotaLedger(quota, spent))
    settings = SchedulerSettings(latency_s={"sos": 0.0, "grievance": 86_400.0, "message": 0.0})
    return plan(snapshot, profile_named("iridium-certus"), settings, now).send


def test_a_grievance_leaves_with_the_lanes_next_period_with_quota_and_budget_at_zero(
    tmp_path: Path,
) -> None:
    """Twelve trials, a random crew member filing at a random moment of a lane period,
    with every quota spent and the budget zero: nothing goes before the period ends (the
    link says nothing); when it ends, the period's one block goes once it is due, and it
    is the report, the size of every cover block; the union reads it whole."""
    rng = random.Random(8)
    for trial in range(TRIALS):
        outbox, intake, clock, signed = _vessel(tmp_path / f"t{trial}", 1, crew=4)
        try:
            start = DAY * SECONDS_PER_DAY
            intake.release_lane(start)  # the agent runs: its lane starts
            clock.now = start + rng.uniform(1, PERIOD_S - 1)
            assert _plan(outbox, clock.now) == ()
            filed = intake.file_grievance(
                signed[rng.randrange(4)],
                union_id=7,
                category=GrievanceCategory.WITHHOLDING_OF_WAGES,
                text=f"Trial {trial}: no wages for three months.",
                lang=Language.ENG,
                anonymous=trial % 2 == 0,
            )
            assert _plan(outbox, clock.now) == ()  # nothing on the link says "grievance"
            period_end = start + PERIOD_S
            assert intake.release_lane(period_end) == 1
            assert _plan(outbox, period_end + 3600) == ()  # released, not due yet
            due = period_end + SECONDS_PER_DAY
            sent = _plan(outbox, due)
            assert len(sent) == 1, f"trial {trial}: the lane's block was held"
            _, data = outbox.make_batch(list(sent), default_codebook(), VESSEL_KEY, due)
            (block,) = lane_blocks_of([data], VESSEL_KEY.verify_key, default_codebook())
            assert len(block.block) == 384
            (report,) = union_reads([block.block], bytes(UNION), default_codebook())
            assert report.text == f"Trial {trial}: no wages for three months."
            assert report.case_number == filed.case_number
        finally:
            outbox.close()
