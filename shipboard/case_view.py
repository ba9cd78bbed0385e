"""Case view: a signed-in reporter's cases and the union's notes on them, for the doors.

One place for what the crew API (``GET /api/inbox``, ``GET /api/cases/{seq}``) and the
crew page's inbox show of a reporter's cases (:func:`my_cases`, :func:`show_case`):

* cases filed through the grievance lane are in the reporter's **casebook**
  (:mod:`shipboard.casebook`), opened with their case key; the union's notes on them came
  down as lane blocks, found by trial decryption with the reporter's reply key
  (:func:`protocol.lane.read_notes`) and matched by case number;
* cases filed before the lane are the outbox rows tagged with the reporter's key
  (:meth:`shipboard.outbox.Outbox.my_cases`); their notes came as case updates or in
  downlink slots (both still read).

A duress sign-in has no cases. How far a lane report has got on board (queued, sent,
acknowledged ashore) is known only for reports of this run (:class:`LaneProgress`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from protocol.cases import CaseNote, case_number, open_case_note, reporter_reply_keys
from protocol.envelopes import CaseStatus
from protocol.errors import SealedBoxInvalid
from protocol.lane import read_notes
from protocol.slots import downlink_slot_notes
from shipboard.casebook import CaseEntry
from shipboard.crew import SignedIn
from shipboard.crew_view import CrewView
from shipboard.lane import LaneProgress

__all__ = [
    "CaseShown",
    "NoteShown",
    "ProgressSource",
    "Reader",
    "my_cases",
    "show_case",
    "slot_notes",
]


class ProgressSource(Protocol):
    """How far a report of this run has got (:meth:`shipboard.intake.Intake.case_progress`)."""

    def __call__(self, report_number: int) -> LaneProgress | None: ...


@dataclass(frozen=True, slots=True)
class NoteShown:
    """One note of the union on a case, as the reporter reads it."""

    stage: CaseStatus
    #: When the note was written (union's time), or when it reached the vessel (old notes).
    at: float
    text: str | None = None
    lang: str | None = None
    reason: str | None = None
    written_minutes: int | None = None
    #: A note that came for this case but did not open with the reporter's key.
    unreadable: bool = False


@dataclass(frozen=True, slots=True)
class CaseShown:
    """One of the reporter's cases."""

    number: int
    case_number: str
    stage: CaseStatus
    notes: tuple[NoteShown, ...]
    #: Filed on board (seconds since 1970), if known.
    filed_at: float | None = None
    union_id: int | None = None
    receipt_code: str | None = None
    #: How far it has got on board (lane reports of this run), else None.
    progress: LaneProgress | None = None
    #: Whether it went through the grievance lane (else it travelled on its own).
    lane: bool = False


@dataclass
class Reader:
    """One request's reading of the signed-in reporter's cases (trial decryption of the
    downlink lane done once, however many cases are shown)."""

    view: CrewView
    signed_in: SignedIn
    progress: ProgressSource | None = None
    _entries: list[CaseEntry] | None = field(default=None, repr=False)
    _old: list[int] | None = field(default=None, repr=False)
    _lane_notes: list[CaseNote] | None = field(default=None, repr=False)

    def entries(self) -> list[CaseEntry]:
        """The casebook's cases (none under duress)."""
        if self._entries is None:
            who = self.signed_in
            self._entries = [] if who.duress else self.view.casebook(who.member.crew, who.case_key)
        return self._entries

    def old_cases(self) -> list[int]:
        """Message numbers of the reporter's cases from before the lane."""
        if self._old is None:
            self._old = [] if self.signed_in.duress else self.view.my_cases(self.signed_in.case_key)
        return self._old

    def lane_notes(self) -> list[CaseNote]:
        """Every note the downlink lane brought to this reporter."""
        if self._lane_notes is None:
            keys = reporter_reply_keys(self.signed_in.case_key)
            # A malformed block that opened with this key is left out unlogged: only the
            # reporter's key opens it, so a line would tell the journal who has a case.
            found = read_notes(self.view.lane_blocks(), keys.private_key)
            self._lane_notes = list(found.notes)
        return self._lane_notes


def my_cases(reader: Reader) -> list[int]:
    """The numbers of the reporter's cases: the casebook's report numbers, then the
    message numbers of cases from before the lane (the API's ``cases``)."""
    numbers = [entry.report_number for entry in reader.entries()]
    return numbers + [seq for seq in reader.old_cases() if seq not in numbers]


def show_case(reader: Reader, number: int) -> CaseShown | None:
    """One of the reporter's cases with its notes; None if ``number`` is none of theirs."""
    for entry in reader.entries():
        if entry.report_number == number:
            return _lane_case(reader, entry)
    if number in reader.old_cases():
        return _old_case(reader, number)
    return None


def _lane_case(reader: Reader, entry: CaseEntry) -> CaseShown:
    notes = [
        _shown(note, note.written_minutes * 60.0)
        for note in reader.lane_notes()
        if note.case == entry.case_number
    ]
    notes.sort(key=lambda note: note.at)
    stage = notes[-1].stage if notes else CaseStatus.RECEIVED
    progress = None if reader.progress is None else reader.progress(entry.report_number)
    return CaseShown(
        number=entry.report_number,
        case_number=entry.case_number,
        stage=stage,
        notes=tuple(notes),
        filed_at=entry.filed_minutes * 60.0,
        union_id=entry.union_id,
        receipt_code=entry.receipt_code,
        progress=progress,
        lane=True,
    )


def _old_case(reader: Reader, seq: int) -> CaseShown:
    view, who = reader.view, reader.signed_in
    keys = reporter_reply_keys(who.case_key)
    number = case_number(view.vessel_id, seq)
    notes: list[NoteShown] = []
    stage = CaseStatus.RECEIVED
    for code, sealed, at in view.case_notes(seq):
        with contextlib.suppress(ValueError):
            stage = CaseStatus(code)
        if not sealed:
            notes.append(NoteShown(stage, at))
            continue
        try:
            opened = open_case_note(sealed, keys.private_key)
        except SealedBoxInvalid:  # shown as unreadable; not logged (it names the case)
            notes.append(NoteShown(stage, at, unreadable=True))
            continue
        notes.append(_shown(opened, at))
    for opened, at in slot_notes(view.slot_items(who.member.crew), keys.private_key, number):
        stage = opened.status
        notes.append(_shown(opened, at))
    stages = view.message_stages(seq)
    filed = stages.get("accepted_at") if stages else None
    return CaseShown(
        number=seq,
        case_number=number,
        stage=stage,
        notes=tuple(notes),
        filed_at=float(filed) if isinstance(filed, int | float) else None,
    )


def _shown(note: CaseNote, at: float) -> NoteShown:
    return NoteShown(
        stage=note.status,
        at=at,
        text=note.text,
        lang=None if note.lang is None else note.lang.code,
        reason=note.reason,
        written_minutes=note.written_minutes,
    )


def slot_notes(
    items: Sequence[tuple[bytes, float]], reply_private_key: bytes, case: str
) -> list[tuple[CaseNote, float]]:
    """The case notes for ``case`` among a crew member's downlink slot items (the release
    before the lane): each item's short and long note are tried with the reply key;
    cover and other cases' notes are left out (and nothing says which was which)."""
    found: list[tuple[CaseNote, float]] = []
    for item, at in items:
        candidates = downlink_slot_notes(item)
        if candidates is None:
            continue
        for sealed in candidates[1]:
            try:
                opened = open_case_note(sealed, reply_private_key)
            except SealedBoxInvalid:
                continue
            if opened.case == case:
                found.append((opened, at))
            break
    return found
