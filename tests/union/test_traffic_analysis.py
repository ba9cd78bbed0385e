"""Traffic analysis: can an owner tell, from what they observe, who has a grievance or a case?

Simulated crew-days (fake clock) through the real shipboard pipeline (``Intake`` makes and
fills the daily slots, ``Outbox.make_batch`` signs and Padmé-pads the batch) and, for the
downlink, the relay's real downlink code (``shore.union_api.queue_case_note``, then
``shore.downlink.Downlink`` on a real ``SqliteStore``: one slot item per crew member per
period, note or cover), publishing what the owner captures.

What the owner observes, per crew-day: the size on the wire of each batch that day (padded),
the number of batches and of grievance-lane items, the time of day they leave, and the size
class of the crew member's own item (the slot header names the crew member). A logistic
regression (numpy, gradient descent) is trained on half the days and scored on the other
half by the AUC (computed from ranks, ties averaged):

* uplink with daily slots, downlink with downlink slots: AUC <= 0.55;
* the same classifier on the old behaviour (a report leaves when filed; a case update goes
  down only when there is one) separates almost perfectly: it is a working classifier.

The default run is small; ``-m slow`` runs thousands of crew-days. Figures (slot and padding
cost per crew member per month) are printed: ``pytest -s``.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path

import nacl.public
import numpy as np
import numpy.typing as npt
import pytest

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch
from protocol.cases import CaseNote, reporter_reply_keys, seal_case_note
from protocol.envelopes import CaseStatus, CaseStatusUpdate
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from protocol.signing import SigningKey
from protocol.slots import (
    DOWNLINK_SLOT_BYTES,
    SECONDS_PER_DAY,
    SlotHeader,
    cover_note,
    downlink_slot,
    downlink_slot_notes,
    slot_header,
)
from shipboard.config import UnionConfig
from shipboard.crew import CrewRegister, SignedIn
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shore.downlink import Downlink, DownlinkConfig
from shore.store import SqliteStore, VesselInfo
from shore.union_api import queue_case_note
from vessel_relay.demo.defaults import demo_ship_config

DAY0 = 20_600
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
SHORE_KEY = SigningKey.from_seed(bytes(range(2, 34)))
UNION = nacl.public.PrivateKey(bytes(range(1, 33)))
AUC_LIMIT = 0.55
Matrix = npt.NDArray[np.float64]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the classifier ----------------------------------------------------------------------


def logistic_regression(x: Matrix, y: Matrix, steps: int = 400, rate: float = 0.5) -> Matrix:
    """Weights (bias last) of a logistic regression fitted by gradient descent."""
    features = np.hstack([x, np.ones((len(x), 1))])
    weights = np.zeros(features.shape[1])
    for _ in range(steps):
        guess = 1.0 / (1.0 + np.exp(-(features @ weights)))
        weights -= rate * (features.T @ (guess - y) / len(y) + 1e-3 * weights)
    return weights


def auc_by_ranks(scores: Matrix, labels: Matrix) -> float:
    """The area under the ROC curve (Mann-Whitney U over ranks; ties get their mean rank)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the AUC needs both classes in the test half")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def owner_auc(rows: list[list[float]], labels: list[int]) -> float:
    """Train on the first half of the days, score on the second (what an owner could do)."""
    x = np.array(rows, dtype=np.float64)
    y = np.array(labels, dtype=np.float64)
    half = len(x) // 2
    mean, spread = x[:half].mean(axis=0), x[:half].std(axis=0)
    spread[spread == 0] = 1.0
    x = (x - mean) / spread
    weights = logistic_regression(x[:half], y[:half])
    scores = np.hstack([x[half:], np.ones((len(x) - half, 1))]) @ weights
    return auc_by_ranks(scores, y[half:])


def test_the_auc_and_the_classifier_are_right() -> None:
    """The AUC of known scores, and a separable toy set is learnt (AUC 1)."""
    assert auc_by_ranks(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1.0])) == 0.75
    assert auc_by_ranks(np.array([1.0, 1.0, 1.0, 1.0]), np.array([0, 1, 0, 1.0])) == 0.5
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    rows = [[float(label) * 3 + rng.normal(), rng.normal()] for label in y]
    assert owner_auc(rows, list(y)) > 0.95


# --- uplink ------------------------------------------------------------------------------


@dataclass
class Observed:
    """Per crew-day rows of what the owner sees, labels, and the bytes on the wire."""

    crew_rows: list[list[float]] = dataclasses.field(default_factory=list)
    crew_labels: list[int] = dataclasses.field(default_factory=list)
    day_rows: list[list[float]] = dataclasses.field(default_factory=list)
    day_labels: list[int] = dataclasses.field(default_factory=list)
    wire_bytes: int = 0
    crew_days: int = 0


def _vessel(tmp: Path, crew: int, slots: bool) -> tuple[Outbox, Intake, Clock, list[SignedIn]]:
    config = demo_ship_config(tmp)
    config = dataclasses.replace(
        config,
        quota=dataclasses.replace(config.quota, daily_slots=slots),
        unions=(UnionConfig(7, "Fishers' Union", bytes(UNION.public_key), (Language.ENG,)),),
    )
    outbox = Outbox.open(tmp / "outbox.sqlite3", 1)
    clock = Clock(DAY0 * SECONDS_PER_DAY + 60.0)
    intake = Intake(config, outbox, default_codebook(), clock=clock)
    register = CrewRegister(outbox)
    signed = []
    for n in range(crew):
        member, pin = register.add(
            name=f"Crew {n}", document=f"D-{n}", nationality="MM", language=Language.ENG, now=0.0
        )
        signed.append(register.sign_in(member.crew, pin))
    return outbox, intake, clock, signed


def _uplink(tmp: Path, crew: int, days: int, slots: bool, seed: int) -> Observed:
    rng = random.Random(seed)
    outbox, intake, clock, signed = _vessel(tmp, crew, slots)
    seen = Observed()
    codebook = default_codebook()
    try:
        for day in range(DAY0, DAY0 + days):
            filed = {n for n in range(crew) if rng.random() < 0.15}
            batches: list[tuple[float, bytes]] = []
            for n in sorted(filed):
                clock.now = day * SECONDS_PER_DAY + rng.uniform(60, SECONDS_PER_DAY - 60)
                intake.file_grievance(
                    signed[n],
                    union_id=7,
                    category=GrievanceCategory.WITHHOLDING_OF_WAGES,
                    text="no wages " * rng.randrange(1, 60),
                    lang=Language.ENG,
                    anonymous=rng.random() < 0.5,
                )
                if not slots:  # the old way: the report leaves in the next batch
                    seqs = [m.message_seq for m in outbox.pending_messages(clock.now)]
                    batches.append(
                        (clock.now, outbox.make_batch(seqs, codebook, VESSEL_KEY, clock.now)[1])
                    )
            release = (day + 1) * SECONDS_PER_DAY + 1.0
            if slots:
                seqs = [m.message_seq for m in outbox.pending_messages(release)]
                batches.append((release, outbox.make_batch(seqs, codebook, VESSEL_KEY, release)[1]))
            sizes = sorted(len(data) for _, data in batches)
            minutes = [(at % SECONDS_PER_DAY) / 60 for at, _ in batches]
            common = [float(len(batches)), float(sum(sizes)), float(max(sizes, default=0))]
            common.append(float(np.mean(minutes)) if minutes else -1.0)
            seen.wire_bytes += sum(sizes)
            seen.day_rows.append(common)
            seen.day_labels.append(int(bool(filed)))
            own = _own_item_sizes(outbox, day) if slots else {}
            for n in range(crew):
                member_crew = signed[n].member.crew
                seen.crew_rows.append([*common, float(own.get(member_crew, 0))])
                seen.crew_labels.append(int(n in filed))
            seen.crew_days += crew
    finally:
        outbox.close()
    return seen


def _own_item_sizes(outbox: Outbox, day: int) -> dict[int, int]:
    """Each crew member's slot size of ``day``, read from the outbox as the owner can."""
    sizes: dict[int, int] = {}
    for _, _, _, sealed, _ in outbox.slot_releases(day * SECONDS_PER_DAY):
        header = slot_header(sealed)
        if header is not None and header.day == day:
            sizes[header.crew] = len(sealed)
    return sizes


# --- downlink ----------------------------------------------------------------------------


async def _downlink(tmp: Path, crew: int, days: int, slots: bool, seed: int) -> Observed:
    """The relay's real downlink: a vessel's crew send one day of uplink slots (through the
    real ``Intake``/``Outbox`` and the relay's ingest into a real ``SqliteStore``); then each
    day the union answers some crew members' cases (a stage change, perhaps a reply) through
    ``shore.union_api.queue_case_note``, and at the day's end ``shore.downlink.Downlink``
    makes and publishes what it would (captured here). The owner sees every published batch.
    """
    rng = random.Random(seed)
    store = await SqliteStore.open(tmp / "relay.db")
    info = VesselInfo("Sea Star", "TH", "TH-0042", "Owner Co", unions=(7,))
    vessel_id = await store.add_vessel(info, VESSEL_KEY.verify_key.key, 0.0)
    outbox, intake, _, signed = _vessel(tmp / "ship", crew, slots=True)
    codebook = default_codebook()
    clock = Clock(DAY0 * SECONDS_PER_DAY + 60.0)
    never = 10 * 365 * SECONDS_PER_DAY  # no resends: the test models one send per batch
    downlink = Downlink(
        store,
        SHORE_KEY,
        codebook,
        DownlinkConfig(tick_s=1.0, resend_after_s=never, resend_max_s=never, slots=slots),
        clock=clock,
    )
    published: list[bytes] = []

    async def publish(topic: str, data: bytes) -> None:
        published.append(data)

    seen = Observed()
    try:

        async def uplink_slots(day: int) -> None:
            # the day's uplink slots reach the relay at the day's end
            intake.ensure_slots(day * SECONDS_PER_DAY + 60.0)
            release = (day + 1) * SECONDS_PER_DAY + 1.0
            seqs = [m.message_seq for m in outbox.pending_messages(release)]
            _, data = outbox.make_batch(seqs, codebook, VESSEL_KEY, release)
            batch = decode_batch(
                data,
                codebook=codebook,
                verify_key=VESSEL_KEY.verify_key,
                direction=Direction.UPLINK,
            )
            await store.ingest_batch(batch, data, release)

        # the first day's slots: the relay learns who has a slot, and each crew member's
        # slot becomes the "case" the union answers (the relay cannot tell cover from report)
        await uplink_slots(DAY0)
        release = (DAY0 + 1) * SECONDS_PER_DAY + 1.0
        case_of: dict[int, int] = {}
        for _, seq, sealed, _ in await store.union_reports(7):
            header = slot_header(sealed)
            assert header is not None
            case_of.setdefault(header.crew, seq)
        crews = [member.member.crew for member in signed]
        reply_keys = [reporter_reply_keys(bytes([n + 1]) * 32).public_key for n in range(crew)]
        clock.now = release + 60
        await downlink.publish_due(publish)  # the acknowledgement of the uplink batch
        published.clear()
        for day in range(DAY0 + 1, DAY0 + 1 + days):
            answered = {n for n in range(crew) if rng.random() < 0.15}
            for n in sorted(answered):
                clock.now = day * SECONDS_PER_DAY + rng.uniform(60, SECONDS_PER_DAY - 60)
                text = "we called the owner " * rng.randrange(0, 40)
                status = CaseStatus(rng.randrange(2, 6))
                note = seal_case_note(
                    CaseNote(
                        f"{vessel_id}-{case_of[crews[n]]}",
                        status,
                        int(clock.now // 60),
                        text or None,
                        Language.ENG,
                    ),
                    reply_keys[n],
                )
                carried = await queue_case_note(
                    store, vessel_id, case_of[crews[n]], status, note, clock.now, slots=slots
                )
                assert carried == ("slot" if slots else "own")
            await uplink_slots(day)
            clock.now = (day + 1) * SECONDS_PER_DAY + 5.0
            await downlink.publish_due(publish)
            sizes = sorted(len(data) for data in published)
            own: dict[int, int] = {}
            items = 0
            for data in published:
                down = decode_batch(
                    data,
                    codebook=codebook,
                    verify_key=SHORE_KEY.verify_key,
                    direction=Direction.DOWNLINK,
                )
                for envelope in down.envelopes:
                    if not isinstance(envelope, CaseStatusUpdate):
                        continue
                    items += 1
                    sealed_note = envelope.sealed_note or b""
                    found = downlink_slot_notes(sealed_note)
                    # the owner reads the slot header (crew) or, the old way, the case number
                    # whose report they saw leave (they know whose it was from the outbox)
                    if found is not None:
                        own[found[0].crew] = len(sealed_note)
                    else:
                        for member, seq in case_of.items():
                            if seq == envelope.report_seq:
                                own[member] = len(sealed_note)
            published.clear()
            if slots:  # exactly one slot item per crew member, each the same size
                assert sorted(own) == sorted(crews)
                assert items == crew
                assert set(own.values()) == {DOWNLINK_SLOT_BYTES}
            seen.wire_bytes += sum(sizes)
            common = [float(len(sizes)), float(sum(sizes)), float(items)]
            seen.day_rows.append(common)
            seen.day_labels.append(int(bool(answered)))
            for n in range(crew):
                seen.crew_rows.append([*common, float(own.get(crews[n], 0))])
                seen.crew_labels.append(int(n in answered))
            seen.crew_days += crew
    finally:
        outbox.close()
        await store.close()
    return seen


def test_a_downlink_slot_opens_only_for_its_reporter() -> None:
    """The vessel's side: the reporter's reply key opens a note in a slot; cover opens for
    nobody; every slot item has the same size."""
    keys = reporter_reply_keys(bytes(32))
    note = seal_case_note(CaseNote("1-5", CaseStatus.ACKNOWLEDGED, 10), keys.public_key)
    real = downlink_slot(SlotHeader(3, DAY0), note, os.urandom(1100))
    throwaway = bytes(nacl.public.PrivateKey.generate().public_key)
    cover = downlink_slot(SlotHeader(3, DAY0), cover_note(throwaway), os.urandom(1100))
    assert len(real) == len(cover) == DOWNLINK_SLOT_BYTES

    from protocol.cases import open_case_note
    from protocol.errors import SealedBoxInvalid

    def opened(item: bytes) -> list[CaseNote]:
        found = downlink_slot_notes(item)
        assert found is not None
        notes = []
        for candidate in found[1]:
            try:
                notes.append(open_case_note(candidate, keys.private_key))
            except SealedBoxInvalid:
                continue
        return notes

    assert [n.status for n in opened(real)] == [CaseStatus.ACKNOWLEDGED]
    assert opened(cover) == []


# --- the tests ---------------------------------------------------------------------------


def _report(name: str, seen: Observed, auc: float, crew: int, days: int) -> None:
    per_month = seen.wire_bytes / max(seen.crew_days, 1) * 30
    print(
        f"\n{name:<28} crew-days {crew * days:>6}  AUC {auc:5.3f}  "
        f"bytes per crew member per month on the wire {per_month:>9,.0f}"
    )


async def _run(tmp_path: Path, crew: int, days: int) -> None:
    up = _uplink(tmp_path / "on", crew, days, slots=True, seed=1)
    up_auc = max(owner_auc(up.crew_rows, up.crew_labels), owner_auc(up.day_rows, up.day_labels))
    _report("uplink, daily slots", up, up_auc, crew, days)
    down = await _downlink(tmp_path / "down-on", crew, days, slots=True, seed=2)
    down_auc = max(
        owner_auc(down.crew_rows, down.crew_labels), owner_auc(down.day_rows, down.day_labels)
    )
    _report("downlink, downlink slots", down, down_auc, crew, days)
    old_up = _uplink(tmp_path / "off", crew, days, slots=False, seed=1)
    old_up_auc = owner_auc(old_up.day_rows, old_up.day_labels)
    _report("uplink, no slots (old)", old_up, old_up_auc, crew, days)
    old_down = await _downlink(tmp_path / "down-off", crew, days, slots=False, seed=2)
    old_down_auc = owner_auc(old_down.day_rows, old_down.day_labels)
    _report("downlink, no slots (old)", old_down, old_down_auc, crew, days)
    assert up_auc <= AUC_LIMIT, f"the owner tells grievance days apart: AUC {up_auc:.3f}"
    assert down_auc <= AUC_LIMIT, f"the owner tells case-update days apart: AUC {down_auc:.3f}"
    # the same classifier finds the old, unslotted traffic: the test can fail
    assert old_up_auc > 0.9
    assert old_down_auc > 0.9


async def test_an_owner_cannot_tell_grievance_days_from_the_traffic(tmp_path: Path) -> None:
    await _run(tmp_path, crew=4, days=60)


@pytest.mark.slow
async def test_an_owner_cannot_tell_grievance_days_over_thousands_of_crew_days(
    tmp_path: Path,
) -> None:
    await _run(tmp_path, crew=12, days=250)
