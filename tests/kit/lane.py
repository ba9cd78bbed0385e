"""The grievance lane, read as a union would: every block a vessel holds or sent, tried with
the union's key, fragments put back together, reports opened.

Tests use it to check that a report filed on board is exactly what the union will read,
whether its blocks still wait in the reservoir, sit in the outbox, or already went up in
a batch (the union's own app does the same from the relay's lane API; this reads the
vessel's side, where the relay of this branch does not store lane blocks yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protocol.batch import Direction, decode_batch
from protocol.codebook import Codebook
from protocol.envelopes import LaneBlock
from protocol.lane import Reassembler, open_up_block
from protocol.sealing import GrievancePlaintext, open_grievance_any
from protocol.signing import VerifyKey
from shipboard.database import OnDatabase
from shipboard.lane import Reservoir


@dataclass(frozen=True, slots=True)
class SentBlock:
    """A lane block as it went up: its period, its place in it, the sealed box."""

    period: int
    index: int
    block: bytes


def blocks_on_board(on: OnDatabase) -> list[bytes]:
    """Every uplink lane block the vessel holds: the reservoir's rows (oldest first), then
    the outbox's released items, whatever their state."""
    waiting = [block for _, _, block in Reservoir(on.database).snapshot()]
    with on.database.reading() as db:
        released = [
            bytes(block)
            for (block,) in db.execute(
                "SELECT sealed FROM messages WHERE kind = 'lane' ORDER BY message_seq"
            )
        ]
    return released + waiting


def lane_blocks_of(
    batches: Iterable[bytes], vessel_key: VerifyKey, codebook: Codebook
) -> list[SentBlock]:
    """The lane blocks in uplink batches (verified with the vessel's key), in order."""
    found = []
    for data in batches:
        batch = decode_batch(
            data, codebook=codebook, verify_key=vessel_key, direction=Direction.UPLINK
        )
        found += [
            SentBlock(envelope.period, envelope.index, envelope.block)
            for envelope in batch.envelopes
            if isinstance(envelope, LaneBlock)
        ]
    return found


def union_reads(
    blocks: Iterable[bytes], union_private_key: bytes, codebook: Codebook
) -> list[GrievancePlaintext]:
    """The reports a union opens among ``blocks`` (its own; cover and other unions' blocks
    open for nobody), in the order they complete."""
    # a test may hold a whole reservoir of half-sent reports at once: no memory bound
    reassembler = Reassembler(max_open=1 << 16, max_open_per_source=1 << 16, max_bytes=1 << 30)
    reports = []
    for block in blocks:
        fragment = open_up_block(block, union_private_key)
        if fragment is None:
            continue
        item = reassembler.add(fragment)
        if item is not None:
            reports.append(open_grievance_any(item, union_private_key, codebook))
    return reports
