"""Golden vectors: fixed batches, byte for byte, both ways.

Each vector is a fixed batch (fixed keys, fixed content, one codec) stored as hex in
``tests/protocol/golden/batches.hex``. The test checks both ways:

* **encode**: today's encoder, with the shipped dictionaries and models, still produces
  exactly the stored bytes (an encoder, padding or model change that alters bytes fails);
* **decode**: the stored bytes still decode, verified, to the fixed envelopes (old
  batches in outboxes and on the link must stay readable).

The test never rewrites the file. After a *deliberate* wire or model change, regenerate
it and say so in the changelog::

    .venv/bin/python -m tests.protocol.test_golden --regenerate
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch, encode_batch, read_batch_header
from protocol.codebook import Codec
from protocol.envelopes import (
    BatchAck,
    CaseStatus,
    CaseStatusUpdate,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryFailure,
    DeliveryReceipt,
    Envelope,
    FailureReason,
    GrievanceReport,
    LaneBlock,
    QuotaNotice,
    ReceiptStage,
    Reply,
    Sos,
)
from protocol.languages import Language
from protocol.signing import SigningKey

GOLDEN_FILE = Path(__file__).with_name("golden") / "batches.hex"
VESSEL_KEY = SigningKey(bytes.fromhex("11" * 32))
SHORE_KEY = SigningKey(bytes.fromhex("22" * 32))
MINUTES = 29_123_456


@dataclass(frozen=True)
class Vector:
    """One golden batch: how it is made, and what it must decode to."""

    name: str
    direction: Direction
    codecs: tuple[Codec, ...]
    envelopes: Sequence[Envelope]
    pad: bool = True
    #: The codec every frame must have used (None: whatever the encoder picked).
    expect_codec: Codec | None = None

    @property
    def key(self) -> SigningKey:
        return VESSEL_KEY if self.direction is Direction.UPLINK else SHORE_KEY

    def encode(self) -> bytes:
        return encode_batch(
            self.envelopes,
            direction=self.direction,
            vessel_id=4242,
            batch_seq=1831,
            batch_minutes=MINUTES,
            signing_key=self.key,
            codebook=default_codebook(),
            codecs=self.codecs,
            pad=self.pad,
        )


def _message(seq: int, lang: Language, body: str) -> CrewMessage:
    return CrewMessage(
        message_seq=seq, crew=3, contact=1, written_minutes=MINUTES - seq, lang=lang, body=body
    )


VECTORS = [
    Vector(
        "stored-receipts-down",
        Direction.DOWNLINK,
        (Codec.STORED,),
        [
            DeliveryReceipt(101, ReceiptStage.ACCEPTED_ASHORE, MINUTES - 3),
            DeliveryReceipt(101, ReceiptStage.DELIVERED, MINUTES - 1),
            DeliveryFailure(
                102, FailureReason.ADDRESS_INVALID, MINUTES, Language.ENG, "mailbox full"
            ),
            BatchAck(up_to=1830, written_minutes=MINUTES, ranges=((1833, 1840),)),
            CaseStatusUpdate(7, CaseStatus.IN_PROGRESS, MINUTES, sealed_note=b"\x01" * 48),
            QuotaNotice(
                crew=3, month=202611, used_bytes=2048, quota_bytes=10240, written_minutes=MINUTES
            ),
        ],
        expect_codec=Codec.STORED,
    ),
    Vector(
        "zstd-mixed-up",
        Direction.UPLINK,
        (Codec.ZSTD,),
        [
            ContactBookChange(
                3, 1, Channel.SMS, "+66812345678", MINUTES, name="Mother", contact_lang=Language.THA
            ),
            _message(1, Language.THA, "สวัสดีครับแม่ ผมสบายดี ปลาเยอะมาก"),
            _message(2, Language.ENG, "the net is torn, we come back on friday"),
            _message(3, Language.THA, "ส่งเงินให้แม่แล้วนะครับ"),
            CrewMessage(message_seq=4, crew=3, contact=1, written_minutes=MINUTES, quick=12),
        ],
        expect_codec=Codec.ZSTD,
    ),
    Vector(
        "context-burmese-up",
        Direction.UPLINK,
        (Codec.CONTEXT,),
        [
            _message(1, Language.MYA, "မင်္ဂလာပါ အမေ၊ ကျွန်တော် နေကောင်းပါတယ်"),
            _message(2, Language.MYA, "ငါးဖမ်းတာ ကောင်းပါတယ်၊ မကြာခင် ပြန်လာမယ်"),
            Sos(
                message_seq=3,
                crew=3,
                written_minutes=MINUTES,
                lang=Language.MYA,
                note="စက်ပျက်နေတယ်",
                position=(1_234_567, 10_098_765),
            ),
            GrievanceReport(message_seq=4, union=2, written_minutes=MINUTES, sealed=bytes(304)),
        ],
        expect_codec=Codec.CONTEXT,
    ),
    Vector(
        # added 2026-12 with the Sos "unauthenticated" field (key 28): an SOS sent from the
        # sign-in page without a PIN, for a crew number nobody on board has (mistyped)
        "sos-without-pin-up",
        Direction.UPLINK,
        (Codec.ZSTD,),
        [
            Sos(
                message_seq=9,
                crew=77,
                written_minutes=MINUTES,
                lang=Language.THA,
                note="ช่วยด้วย คนตกน้ำ",
                unauthenticated=True,
            ),
            Sos(message_seq=10, crew=3, written_minutes=MINUTES),
        ],
        expect_codec=Codec.ZSTD,
    ),
    Vector(
        "best-reply-down-unpadded",
        Direction.DOWNLINK,
        (Codec.STORED, Codec.ZSTD, Codec.CONTEXT),
        [
            Reply(5, 3, 1, MINUTES - 60, Language.KHM, "កូនសុខសប្បាយទេ? ម៉ែនឹកកូនណាស់", True),
            Reply(6, 4, 2, MINUTES - 30, Language.VIE, "Con khỏe không? Mẹ nhớ con lắm"),
        ],
        pad=False,
    ),
    Vector(
        # added 2026-12 with the per-vessel grievance lane (envelope kind 12, keys 29 and
        # 30): a period's two blocks beside a message (fixed bytes stand in for sealed boxes)
        "lane-blocks-up",
        Direction.UPLINK,
        (Codec.ZSTD,),
        [
            LaneBlock(
                period=82_924,
                index=0,
                block=bytes(range(256)) + bytes(128),
                written_minutes=MINUTES,
            ),
            LaneBlock(
                period=82_924,
                index=1,
                block=bytes(range(255, -1, -1)) + bytes(128),
                written_minutes=MINUTES,
            ),
            CrewMessage(13, 2, 1, MINUTES - 5, Language.ENG, "home in May"),
        ],
        expect_codec=Codec.ZSTD,
    ),
    Vector(
        # added 2026-12 with the crew message's "subject" field (key 34): mails from the
        # SMTP door keep their Subject line, beside a message without one
        "message-subject-up",
        Direction.UPLINK,
        (Codec.ZSTD,),
        [
            CrewMessage(
                14, 2, 1, MINUTES - 3, Language.MYA, "မွေးနေ့မင်္ဂလာပါ အမေ", subject="အမေ့မွေးနေ့"
            ),
            CrewMessage(15, 2, 2, MINUTES - 2, Language.ENG, "sent 200 dollars", subject="Money"),
            CrewMessage(16, 2, 1, MINUTES - 1, Language.ENG, "no subject here"),
        ],
        expect_codec=Codec.ZSTD,
    ),
]


def read_golden() -> dict[str, bytes]:
    """The stored vectors: ``name hex`` lines; ``#`` lines are comments."""
    out: dict[str, bytes] = {}
    for line in GOLDEN_FILE.read_text(encoding="ascii").splitlines():
        if line.strip() and not line.startswith("#"):
            name, hex_text = line.split()
            out[name] = bytes.fromhex(hex_text)
    return out


def write_golden() -> None:
    """Regenerate the file from today's encoder (run by hand, never by the test)."""
    header = [
        "# Golden batches (name, then the batch as hex), checked both ways by test_golden.py.",
        "# Keys: vessel seed 11..11, shore seed 22..22 (32 bytes each); shipped codebook.",
        "# Regenerate ONLY after a deliberate wire or model change, and note it in CHANGELOG:",
        "#     .venv/bin/python -m tests.protocol.test_golden --regenerate",
    ]
    lines = [f"{vector.name} {vector.encode().hex()}" for vector in VECTORS]
    GOLDEN_FILE.parent.mkdir(exist_ok=True)
    GOLDEN_FILE.write_text("\n".join(header + lines) + "\n", encoding="ascii")


@pytest.fixture(scope="module")
def golden() -> dict[str, bytes]:
    stored = read_golden()
    assert set(stored) == {vector.name for vector in VECTORS}, (
        "golden vectors and the file disagree; regenerate deliberately (see module docstring)"
    )
    return stored


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
def test_encoder_still_makes_the_golden_bytes(vector: Vector, golden: dict[str, bytes]) -> None:
    """Today's encoder gives exactly the stored bytes: wire, padding and models unchanged."""
    assert vector.encode().hex() == golden[vector.name].hex()


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
def test_golden_bytes_still_decode(vector: Vector, golden: dict[str, bytes]) -> None:
    """The stored bytes decode, verified, to the fixed envelopes with the expected codec."""
    data = golden[vector.name]
    batch = decode_batch(
        data,
        codebook=default_codebook(),
        verify_key=vector.key.verify_key,
        direction=vector.direction,
    )
    assert batch.envelopes == tuple(vector.envelopes)
    assert (batch.vessel_id, batch.batch_seq, batch.batch_minutes) == (4242, 1831, MINUTES)
    if vector.expect_codec is not None:
        assert {frame.codec for frame in batch.frames} == {vector.expect_codec}
    assert (read_batch_header(data).padding_bytes > 0) == vector.pad


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m tests.protocol.test_golden --regenerate")
    write_golden()
    print(f"wrote {GOLDEN_FILE}")
