"""Crew view: what a signed-in crew member may read on board, for the crew's doors.

The crew API (:mod:`shipboard.http_api`) and the crew page (:mod:`shipboard.web.pages`)
read through :class:`CrewView`: their messages' stages, their own latest messages (with
the text they wrote: the vessel database keeps every family message's text), the
grievance reports they filed (their casebook, and reports tagged before the lane, both
found by their case key only), their inbox, their cases' notes, the downlink lane blocks
and their old downlink slot items. :class:`VesselCrewView` answers from the outbox, the
inbox and the casebooks of the vessel database. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from protocol.voice import VoiceMode
from shipboard.casebook import Casebook, CaseEntry
from shipboard.inbox import Inbox
from shipboard.outbox import KeptMessage, Outbox, SentMessage

__all__ = ["CrewView", "VesselCrewView"]


class CrewView(Protocol):
    """What the crew's doors read (see the module docstring)."""

    @property
    def vessel_id(self) -> int: ...

    def message_stages(self, seq: int) -> dict[str, object] | None:
        """One message's state and the time of each step (no text); None if unknown."""
        ...

    def recent_messages(self, crew: int, limit: int = 20) -> list[SentMessage]:
        """The crew member's latest family messages, newest first (no text)."""
        ...

    def kept_messages(self, crew: int, limit: int = 200) -> list[KeptMessage]:
        """The crew member's latest family messages with their own text, newest first."""
        ...

    def my_cases(self, case_key: bytes) -> list[int]:
        """The grievance reports filed by the holder of ``case_key`` before the lane (their
        message numbers)."""
        ...

    def casebook(self, crew: int, case_key: bytes) -> list[CaseEntry]:
        """The crew member's casebook, opened with their case key (empty for any other)."""
        ...

    def lane_blocks(self) -> list[bytes]:
        """Every downlink lane block kept on board, in the order they were sent."""
        ...

    def inbox(self, crew: int, case_seqs: Sequence[int] = ()) -> list[dict[str, object]]:
        """The crew member's inbox with their cases' updates, newest first."""
        ...

    def case_notes(self, case_seq: int) -> list[tuple[int, bytes, float]]:
        """A case's sealed notes from the union, oldest first: (stage code, note, at)."""
        ...

    def spoken_reply(self, crew: int, entry: int) -> tuple[VoiceMode, int, bytes] | None:
        """A family's spoken reply to ``crew`` (inbox entry ``entry``): (mode, ms, frames)."""
        ...

    def slot_items(self, crew: int) -> list[tuple[bytes, float]]:
        """The crew member's downlink slot items, oldest first: (item, at)."""
        ...


class VesselCrewView:
    """:class:`CrewView` over the vessel database's outbox and inbox."""

    def __init__(self, outbox: Outbox, inbox: Inbox | None = None) -> None:
        self._outbox = outbox
        self._inbox = inbox if inbox is not None else Inbox(outbox)
        self._casebook = Casebook(outbox)

    @property
    def vessel_id(self) -> int:
        return self._outbox.vessel_id

    def message_stages(self, seq: int) -> dict[str, object] | None:
        return self._outbox.message_stages(seq)

    def recent_messages(self, crew: int, limit: int = 20) -> list[SentMessage]:
        return self._outbox.recent_messages(crew, limit)

    def kept_messages(self, crew: int, limit: int = 200) -> list[KeptMessage]:
        return self._outbox.kept_messages(crew, limit)

    def my_cases(self, case_key: bytes) -> list[int]:
        return self._outbox.my_cases(case_key)

    def casebook(self, crew: int, case_key: bytes) -> list[CaseEntry]:
        return self._casebook.read(crew, case_key)

    def lane_blocks(self) -> list[bytes]:
        return self._inbox.lane_blocks()

    def inbox(self, crew: int, case_seqs: Sequence[int] = ()) -> list[dict[str, object]]:
        return self._inbox.entries(crew, case_seqs)

    def case_notes(self, case_seq: int) -> list[tuple[int, bytes, float]]:
        return self._inbox.case_notes(case_seq)

    def spoken_reply(self, crew: int, entry: int) -> tuple[VoiceMode, int, bytes] | None:
        return self._inbox.spoken_reply(crew, entry)

    def slot_items(self, crew: int) -> list[tuple[bytes, float]]:
        return self._inbox.slot_items(crew)
