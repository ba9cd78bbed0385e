"""The union's side of the grievance lane (:mod:`protocol.lane`): its blocks found among
every vessel's, reports put back together durably, case numbers, notes sealed as blocks.

The relay hands every uplink lane block of the union's vessels over; almost all are cover
or another union's, and only trial decryption with the union's key tells (the relay cannot).
A fragment that opens is kept twice, always alike: in ``lane_fragments`` (union.db, in the
transaction that moves the read cursor past its block) and in a
:class:`~protocol.lane.Reassembler`, rebuilt from that table whenever the app starts
(:class:`LaneAssembly`), so a restart in the middle of a long report loses nothing.

A complete report's case number comes from inside the seal when the vessel put one there
(the sealed report's ``case`` field, CBOR meta key 8); a report without one is filed as
``"{vessel}-{first 12 digits of its report id read as a number}"``
(:func:`fallback_case_number`), and a number naming another vessel than the one whose
blocks carried it is not trusted (the fallback is used, and logged).
"""

from __future__ import annotations

import logging
import os
import sqlite3

from protocol.cases import parse_case_number
from protocol.errors import InvalidEnvelope, ProtocolError
from protocol.lane import (
    Fragment,
    FragmentConflict,
    Reassembler,
    ReassemblyLimit,
    read_note_content,
    seal_down_blocks,
)
from protocol.sealing import GrievancePlaintext

logger = logging.getLogger(__name__)

#: Uplink lane blocks asked of the relay at once.
LANE_PAGE = 512
#: A report still incomplete this long after its first fragment arrived is given up (a
#: 64 KiB report takes about 50 days of a 384-byte lane to itself; reporters share it).
STALE_AFTER_S = 365 * 86_400.0
#: Digits of a fallback case number (as many as a vessel's own).
FALLBACK_DIGITS = 12


def new_reassembler() -> Reassembler:
    """A reassembler bounded like union.db's lane: many vessels, reports of any length."""
    return Reassembler(max_open=16_384, max_open_per_source=128, max_bytes=64 << 20)


def fallback_case_number(vessel: int, report_id: bytes) -> str:
    """The case number of a lane report that carries none inside its seal:
    ``"{vessel}-{first 12 digits of the report id read as a big-endian number}"``."""
    return f"{vessel}-{str(int.from_bytes(report_id, 'big'))[:FALLBACK_DIGITS]}"


def lane_case_number(vessel: int, report_id: bytes, plain: GrievancePlaintext) -> str:
    """The case number of a lane report: the one inside its seal (``case_number``: mode-B
    field 8, A1 ``"case"``) if it names this vessel, else :func:`fallback_case_number`."""
    # reports sealed before the field existed have none
    sealed_number = plain.case_number
    if isinstance(sealed_number, str):
        try:
            named, _ = parse_case_number(sealed_number)
        except InvalidEnvelope:
            named = None
        if named == vessel:
            return sealed_number.strip()
        logger.warning(
            "a lane report from vessel %d carries case number of vessel %s: not trusted, "
            "filed under its report id",
            vessel,
            named,
        )
    return fallback_case_number(vessel, report_id)


def lane_note_blocks(content: bytes, reply_key: bytes, block_bytes: int) -> list[bytes]:
    """A case note's content (``protocol.lane.note_content``) sealed to the reporter's reply
    key as downlink lane blocks of ``block_bytes``, under a fresh random note id."""
    return seal_down_blocks(read_note_content(content), reply_key, block_bytes, os.urandom(8))


class LaneAssembly:
    """Fragments of lane reports not complete yet, in memory and in ``lane_fragments``.

    Every method that changes them takes the transaction (``db``) in which the table
    changes; if that transaction rolls back, call :meth:`reload` (the memory would be
    ahead of the table). A report completes in the transaction that files it, so the
    table never holds a whole report; should it (a bug, an edited file), :meth:`reload`
    hands it over in :attr:`recovered` to be filed."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._reassembler = new_reassembler()
        #: (vessel, report id, report bytes) found whole in the table by :meth:`reload`
        self.recovered: list[tuple[int, bytes, bytes]] = []
        self.reload(db)

    @property
    def open_items(self) -> int:
        """Reports with some fragments and not all."""
        return self._reassembler.open_items

    def reload(self, db: sqlite3.Connection) -> None:
        """Rebuild the memory from ``lane_fragments`` (at start, and after a rollback)."""
        reassembler = new_reassembler()
        rows = db.execute(
            "SELECT vessel, report_id, idx, count, payload, first_seen FROM lane_fragments "
            "ORDER BY first_seen, rowid"
        ).fetchall()
        broken: set[tuple[int, bytes]] = set()
        recovered: list[tuple[int, bytes, bytes]] = []
        for vessel, report_id, index, count, payload, first_seen in rows:
            key = (int(vessel), bytes(report_id))
            if key in broken:
                continue
            try:
                fragment = Fragment(key[1], int(index), int(count), bytes(payload))
                whole = reassembler.add(fragment, source=key[0], now=float(first_seen))
            except ProtocolError as exc:
                broken.add(key)
                logger.warning(
                    "lane report %s of vessel %d cannot be rebuilt (%s); its pieces are dropped",
                    key[1].hex(),
                    key[0],
                    exc,
                )
                continue
            if whole is not None:
                recovered.append((key[0], key[1], whole))
        for vessel, report_id in broken:
            self._forget(db, vessel, report_id)
        self._reassembler = reassembler
        self.recovered = recovered

    def take(
        self, db: sqlite3.Connection, vessel: int, fragment: Fragment, now: float
    ) -> bytes | None:
        """Keep one fragment (in memory and in the table); the whole report when this
        fragment completes it (its pieces are then gone from the table: file it in the same
        transaction). A duplicate changes nothing. Raises ``FragmentConflict`` (the report is
        dropped, memory and table) or ``ReassemblyLimit`` (this fragment is not kept)."""
        try:
            whole = self._reassembler.add(fragment, source=vessel, now=now)
        except FragmentConflict:
            self._forget(db, vessel, fragment.item_id)
            raise
        except ReassemblyLimit:
            self.reload(db)  # the reassembler may have dropped the report: as the table says
            raise
        if whole is None:
            db.execute(
                "INSERT OR IGNORE INTO lane_fragments (vessel, report_id, idx, count, payload, "
                "first_seen) VALUES (?, ?, ?, ?, ?, ?)",
                (vessel, fragment.item_id, fragment.index, fragment.count, fragment.payload, now),
            )
            return None
        self._forget(db, vessel, fragment.item_id)
        return whole

    def forget(self, db: sqlite3.Connection, vessel: int, report_id: bytes) -> None:
        """Drop a report's pieces from the table (it was filed from :attr:`recovered`)."""
        self._forget(db, vessel, report_id)

    def expire(self, db: sqlite3.Connection, before: float) -> list[tuple[int, bytes]]:
        """Give up the reports first seen before ``before``; their (vessel, report id)."""
        stale = self._reassembler.expire(before)
        for vessel, report_id in stale:
            self._forget(db, vessel, report_id)
        return stale

    @staticmethod
    def _forget(db: sqlite3.Connection, vessel: int, report_id: bytes) -> None:
        db.execute(
            "DELETE FROM lane_fragments WHERE vessel = ? AND report_id = ?", (vessel, report_id)
        )
