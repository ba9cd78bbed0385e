"""The agent's side of compact frames: made by the outbox, never taken from the downlink.

An SBD link asks the outbox for a compact frame (``Outbox.make_batch(..., link_keys=...)``).
The frame is a batch in every way that matters on board: numbered from the same sequence,
stored and resent byte-identical, acknowledged by the shore's signed BatchAck, and listed
by its hash in the monthly statement that the vessel key signs (what an inspector
verifies). The downlink stays signed: whoever holds the vessel key could make a compact
frame "from the shore", so the agent skips any.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from protocol.batch import Direction, decode_batch, encode_batch
from protocol.codebook import Codebook
from protocol.compact import (
    COMPACT_DOWNLINK_RESERVED,
    PAD_QUANTUM,
    LinkKeys,
    decode_compact,
    encode_compact,
)
from protocol.envelopes import BatchAck, DeliveryReceipt, Envelope, ReceiptStage
from protocol.errors import LocalProtocolError
from protocol.languages import Language
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from protocol.signing import SigningKey
from shipboard.link import DownlinkOutcome, DownlinkVerdict, apply_downlink_payload
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS
from shipboard.report import build_statement

from .conftest import NOW, VESSEL_ID, Crew

MINUTES = int(NOW // 60)


def _keys(vessel_key: SigningKey, shore_key: SigningKey) -> LinkKeys:
    return LinkKeys.for_vessel(VESSEL_ID, vessel_key, shore_key.verify_key)


def _send(outbox: Outbox, crew: Crew, body: str) -> int:
    return outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=NOW,
        quota_bytes=1 << 20,
        body=body,
    ).message_seq


def _signed_downlink(
    envelopes: list[Envelope], seq: int, shore_key: SigningKey, codebook: Codebook
) -> bytes:
    return encode_batch(
        envelopes,
        direction=Direction.DOWNLINK,
        vessel_id=VESSEL_ID,
        batch_seq=seq,
        batch_minutes=MINUTES,
        signing_key=shore_key,
        codebook=codebook,
    )


def _apply(
    outbox: Outbox, data: bytes, shore_key: SigningKey, codebook: Codebook
) -> DownlinkVerdict:
    return apply_downlink_payload(
        outbox,
        data,
        vessel_id=VESSEL_ID,
        shore_verify_key=shore_key.verify_key,
        codebook=codebook,
        now=NOW + 600,
    )


def test_a_lone_message_leaves_as_one_credit_numbered_with_the_batches(
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
) -> None:
    """The crew member's message home, asked for as a compact frame, is stored as batch 1:
    two credits with the contact book change it needs the first time, one credit alone
    afterwards; the shore opens it with its own keys; the next signed batch is batch 3."""
    keys = _keys(vessel_key, shore_key)
    first = _send(outbox, crew, "နေကောင်းလား အမေ")
    seq, data = outbox.make_batch([first], codebook, vessel_key, NOW, link_keys=keys)
    assert seq == 1
    assert len(data) % PAD_QUANTUM == 0
    second = _send(outbox, crew, "ငါးများတယ်")
    seq, lone = outbox.make_batch([second], codebook, vessel_key, NOW + 60, link_keys=keys)
    assert seq == 2
    assert len(lone) == PAD_QUANTUM
    shore_side = LinkKeys.for_shore(VESSEL_ID, shore_key, vessel_key.verify_key)
    batch = decode_compact(lone, keys=shore_side, codebook=codebook)
    assert [getattr(e, "body", None) for e in batch.envelopes] == ["ငါးများတယ်"]
    assert [(b.batch_seq, b.data) for b in outbox.unacknowledged_batches()] == [
        (1, data),
        (2, lone),
    ]
    third = _send(outbox, crew, "ok")
    seq, signed = outbox.make_batch([third], codebook, vessel_key, NOW + 120)
    assert seq == 3
    decode_batch(signed, codebook=codebook, verify_key=vessel_key.verify_key)


def test_link_keys_of_another_vessel_are_a_bug(
    outbox: Outbox, crew: Crew, codebook: Codebook, vessel_key: SigningKey, shore_key: SigningKey
) -> None:
    """Handing the outbox another vessel's link keys is refused before anything is stored."""
    wrong = LinkKeys.for_vessel(VESSEL_ID + 1, vessel_key, shore_key.verify_key)
    message = _send(outbox, crew, "hello")
    with pytest.raises(LocalProtocolError):
        outbox.make_batch([message], codebook, vessel_key, NOW, link_keys=wrong)
    assert outbox.unacknowledged_batches() == ()


def test_the_monthly_statement_signs_the_hash_of_every_acknowledged_compact_frame(
    outbox: Outbox, crew: Crew, codebook: Codebook, vessel_key: SigningKey, shore_key: SigningKey
) -> None:
    """Third parties cannot check a MAC, so the vessel's signature covers compact frames
    once a month: after the shore acknowledges frame 1 (in its signed downlink), the
    statement the vessel key signs lists batch 1 with the SHA-256 of the exact frame bytes,
    which the relay's transparency log holds too."""
    keys = _keys(vessel_key, shore_key)
    message = _send(outbox, crew, "နေကောင်းလား")
    _, frame = outbox.make_batch([message], codebook, vessel_key, NOW, link_keys=keys)
    outbox.mark_sent(1, NOW + 30)
    ack = BatchAck(up_to=1, written_minutes=MINUTES)
    receipt = DeliveryReceipt(message, ReceiptStage.ACCEPTED_ASHORE, MINUTES)
    down = _signed_downlink([ack, receipt], 1, shore_key, codebook)
    verdict = _apply(outbox, down, shore_key, codebook)
    assert verdict.outcome is DownlinkOutcome.APPLIED
    assert outbox.unacknowledged_batches() == ()
    month = int(datetime.fromtimestamp(NOW, UTC).strftime("%Y%m"))
    statement = build_statement(
        outbox,
        month,
        quota_bytes=RULE_MONTHLY_TEXT_BYTES,
        profile=IRIDIUM_CERTUS,
        vessel_key=vessel_key,
        now=NOW + 3600,
    )
    assert (1, hashlib.sha256(frame).digest()) in statement.batches
    vessel_key.verify_key.verify(statement.signed_bytes(), statement.signature)


def test_a_compact_frame_on_the_downlink_is_never_applied(
    outbox: Outbox, crew: Crew, codebook: Codebook, vessel_key: SigningKey, shore_key: SigningKey
) -> None:
    """Someone with the vessel key file (the owner reads the vessel computer's disk) makes
    a frame under the link keys that "acknowledges" everything, marked as coming down:
    the agent skips it, and its batch stays unacknowledged until the shore's signed
    BatchAck comes."""
    keys = _keys(vessel_key, shore_key)
    message = _send(outbox, crew, "hello")
    outbox.make_batch([message], codebook, vessel_key, NOW, link_keys=keys)
    outbox.mark_sent(1, NOW + 30)
    ack = BatchAck(up_to=1, written_minutes=MINUTES)
    forged = encode_compact([ack], keys=keys, batch_seq=1, batch_minutes=MINUTES, codebook=codebook)
    for data in (forged, bytes([COMPACT_DOWNLINK_RESERVED]) + forged[1:]):
        assert _apply(outbox, data, shore_key, codebook).outcome is DownlinkOutcome.IGNORED
    assert [b.batch_seq for b in outbox.unacknowledged_batches()] == [1]
    signed = _signed_downlink([ack], 1, shore_key, codebook)
    assert _apply(outbox, signed, shore_key, codebook).outcome is DownlinkOutcome.APPLIED
    assert outbox.unacknowledged_batches() == ()
