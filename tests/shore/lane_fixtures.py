"""Grievance lane traffic as a vessel makes it, for the shore's and the union's tests.

Built from ``protocol`` alone (no shipboard code): a report is sealed to the union
(:func:`protocol.sealing.seal_grievance_unpadded`, mode B as the lane carries it, or the
phone's padded A1 bytes), cut into fragments and each sealed to the union
(:func:`protocol.lane.seal_up_blocks`); every lane period the vessel sends exactly
``blocks_per_period`` blocks, the oldest waiting fragments first and cover
(:func:`protocol.lane.cover_up_block`, to a throwaway key) for the rest, as ``LaneBlock``
envelopes in uplink batches signed with the vessel's key.
"""

from __future__ import annotations

import functools
import os
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.public

from common.codebooks import default_codebook
from protocol.envelopes import Envelope, LaneBlock
from protocol.errors import LimitExceeded
from protocol.lane import MAX_REPORT_BYTES, LaneShape, cover_up_block, seal_up_blocks
from protocol.languages import Language
from protocol.sealing import (
    GrievanceCategory,
    GrievancePlaintext,
    seal_grievance_a1,
    seal_grievance_unpadded,
)
from protocol.signing import SigningKey
from tests.shore.store_fixtures import uplink

SHAPE = LaneShape()
CAPACITY = SHAPE.up_payload_bytes
#: Random CJK text: compresses little, so a report's sealed size follows its length.
_RNG = random.Random(20)
_CJK = "".join(chr(_RNG.randrange(0x4E00, 0x9FFF)) for _ in range(40_000))


#: A report text that seals to within 1 % of the largest report any intake makes.
LONGEST_TEXT = _CJK[:29_500]


def plaintext(
    text: str,
    *,
    receipt: str = "4417000000000006",
    reply_key: bytes | None = None,
    lang: Language = Language.ENG,
    name: str | None = None,
    written_minutes: int = 29_000_000,
) -> GrievancePlaintext:
    """A report as a crew member writes it."""
    return GrievancePlaintext(
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text=text,
        lang=lang,
        receipt_code=receipt,
        written_minutes=written_minutes,
        crew_name=name,
        crew_document=None if name is None else "SB-0012345",
        reply_key=reply_key,
    )


def seal(report: GrievancePlaintext, union_public: bytes) -> bytes:
    """Mode B as the lane carries it: compressed and sealed to the union, unpadded."""
    return seal_grievance_unpadded(report, union_public, default_codebook())


def seal_on_phone(report: GrievancePlaintext, union_public: bytes) -> bytes:
    """Mode A: signed and sealed on the crew member's phone (padded A1 bytes)."""
    return seal_grievance_a1(report, bytes(range(40, 72)), union_public)


@functools.cache
def _sealed_size(cjk: int, ascii_chars: int) -> int:
    key = bytes(nacl.public.PrivateKey(bytes(range(32))).public_key)
    try:
        return len(seal(plaintext(_text(cjk, ascii_chars)), key))
    except LimitExceeded:
        return MAX_REPORT_BYTES + 1  # over what any intake seals


def _text(cjk: int, ascii_chars: int) -> str:
    return (_CJK[:cjk] + "x" * ascii_chars) or "x"


def text_sealing_to(size: int, *, exact: bool = True) -> str:
    """A report text whose sealed report (:func:`seal`, with no reply key) is exactly
    ``size`` bytes (``exact=False``: at most, as close as the search gets): found by
    search, since compression decides the size."""
    low, high = 0, len(_CJK)
    while low < high:  # the most CJK characters that seal to at most ``size``
        middle = (low + high + 1) // 2
        if _sealed_size(middle, 0) <= size:
            low = middle
        else:
            high = middle - 1
    for cjk in range(low, max(-1, low - 8), -1):
        for ascii_chars in range(16):
            if _sealed_size(cjk, ascii_chars) == size:
                return _text(cjk, ascii_chars)
    if exact:
        raise AssertionError(f"no text seals to exactly {size} bytes")
    return _text(low, 0)


@dataclass
class LaneVessel:
    """One vessel's uplink lane: fragments waiting, released a period at a time."""

    vessel_id: int
    key: SigningKey
    shape: LaneShape = SHAPE
    next_batch: int = 1
    waiting: deque[bytes] = field(default_factory=deque)

    def file(self, sealed_report: bytes, union_public: bytes) -> bytes:
        """Queue a sealed report's blocks (in order); returns its random report id."""
        report_id = os.urandom(8)
        self.waiting.extend(
            seal_up_blocks(sealed_report, report_id, union_public, self.shape.block_bytes)
        )
        return report_id

    def release(self, period: int) -> list[LaneBlock]:
        """The period's blocks: the oldest waiting first, cover for the rest."""
        blocks = []
        for index in range(self.shape.blocks_per_period):
            if self.waiting:
                block = self.waiting.popleft()
            else:
                throwaway = bytes(nacl.public.PrivateKey.generate().public_key)
                block = cover_up_block(throwaway, self.shape.block_bytes)
            minutes = self.shape.period_start(period + 1) // 60
            blocks.append(
                LaneBlock(period=period, index=index, block=block, written_minutes=minutes)
            )
        return blocks

    def batch(self, envelopes: Sequence[Envelope], minutes: int) -> bytes:
        """The next uplink batch carrying ``envelopes``, signed by the vessel."""
        data = uplink(
            self.vessel_id, self.next_batch, list(envelopes), key=self.key, minutes=minutes
        )
        self.next_batch += 1
        return data
