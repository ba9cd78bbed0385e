"""Unpadded sealing for reports carried by the lane: fewer blocks, same guarantees.

The lane's fixed blocks already hide a report's length, so mode B seals lane reports
without padding; the union opens both forms (and mode A) with one call; the old opener
still refuses the new form, so nothing unpadded is read by software that would send it
anywhere but the lane.
"""

from __future__ import annotations

import random

import nacl.public
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codebooks import default_codebook
from protocol import lane
from protocol.errors import LimitExceeded, SealedBoxInvalid
from protocol.languages import Language
from protocol.sealing import (
    PADDING_BUCKETS,
    GrievanceCategory,
    GrievancePlaintext,
    open_grievance,
    open_grievance_any,
    seal_grievance,
    seal_grievance_a1,
    seal_grievance_unpadded,
)
from tests.protocol.test_envelopes import short_strings, texts
from vessel_relay.corpus import corpus_dir

CODEBOOK = default_codebook()
UNION = nacl.public.PrivateKey(bytes(range(9, 41)))
OTHER = nacl.public.PrivateKey(bytes(range(50, 82)))


def _report(text: str, lang: Language = Language.MYA) -> GrievancePlaintext:
    return GrievancePlaintext(
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text=text,
        lang=lang,
        receipt_code="4821773011940062",
        written_minutes=29_000_000,
        crew_name="Ko Aung",
        crew_document="MM-1234567",
        reply_key=bytes(range(32)),
    )


@given(
    text=texts,
    lang=st.sampled_from(list(Language)),
    name=st.none() | short_strings,
    reply_key=st.none() | st.binary(min_size=32, max_size=32),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_unpadded_reports_round_trip(
    text: str, lang: Language, name: str | None, reply_key: bytes | None
) -> None:
    """Any report sealed unpadded opens, with open_grievance_any, to what was sealed, and
    is never longer than the padded form."""
    report = GrievancePlaintext(
        GrievanceCategory.OTHER, text, lang, "1234", 5, name, None, reply_key
    )
    unpadded = seal_grievance_unpadded(report, bytes(UNION.public_key), CODEBOOK)
    padded = seal_grievance(report, bytes(UNION.public_key), CODEBOOK)
    assert open_grievance_any(unpadded, bytes(UNION), CODEBOOK) == report
    assert open_grievance_any(padded, bytes(UNION), CODEBOOK) == report
    assert len(unpadded) < len(padded)


def test_mode_a_reports_open_with_the_same_call() -> None:
    """A report sealed and signed on the phone (padded) opens with open_grievance_any."""
    report = _report("ကျွန်တော့်လစာ သုံးလ မရသေးပါ")
    sealed = seal_grievance_a1(report, bytes(32), bytes(UNION.public_key))
    opened = open_grievance_any(sealed, bytes(UNION), CODEBOOK)
    assert opened.text == report.text
    assert opened.signer_key is not None


def test_the_old_opener_refuses_unpadded_reports() -> None:
    """open_grievance (padded only) does not read an unpadded report, whatever its size;
    another union's key does not open either form."""
    unpadded = seal_grievance_unpadded(_report("short"), bytes(UNION.public_key), CODEBOOK)
    assert len(unpadded) - 48 not in PADDING_BUCKETS
    with pytest.raises(SealedBoxInvalid, match="no valid size"):
        open_grievance(unpadded, bytes(UNION), CODEBOOK)
    with pytest.raises(SealedBoxInvalid, match="sealed to another union"):
        open_grievance_any(unpadded, bytes(OTHER), CODEBOOK)


def test_a_bucket_sized_box_without_padding_is_refused() -> None:
    """A bucket-sized sealed box whose content is neither unpadded nor padded is refused."""
    sealed = nacl.public.SealedBox(UNION.public_key).encrypt(b"VRG1" + bytes(252))
    with pytest.raises(SealedBoxInvalid, match="bad padding"):
        open_grievance_any(sealed, bytes(UNION), CODEBOOK)
    odd = nacl.public.SealedBox(UNION.public_key).encrypt(b"VRG1" + bytes(300))
    with pytest.raises(SealedBoxInvalid, match="no valid size"):
        open_grievance_any(odd, bytes(UNION), CODEBOOK)
    for size in (0, 52, 48 + PADDING_BUCKETS[-1] + 1):
        with pytest.raises(SealedBoxInvalid, match="no valid size"):
            open_grievance_any(bytes(size), bytes(UNION), CODEBOOK)


def test_tampered_unpadded_reports_do_not_open() -> None:
    """The MAC covers every byte of an unpadded report too."""
    sealed = seal_grievance_unpadded(_report("wages"), bytes(UNION.public_key), CODEBOOK)
    for index in (0, 40, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[index] ^= 1
        with pytest.raises(SealedBoxInvalid):
            open_grievance_any(bytes(tampered), bytes(UNION), CODEBOOK)


def test_the_longest_report_intake_accepts_takes_fewer_blocks_unpadded() -> None:
    """16,384 bytes of random printable text (intake's limit, and text that hardly
    compresses) pad to the 16,384-byte bucket, 52 blocks of 384 bytes; unpadded it takes
    fewer, and opens the same."""
    rng = random.Random(5)
    text = "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(16_384))
    report = _report(text)
    unpadded = seal_grievance_unpadded(report, bytes(UNION.public_key), CODEBOOK)
    padded = seal_grievance(report, bytes(UNION.public_key), CODEBOOK)
    assert len(padded) == 16_384 + 48
    assert lane.fragments_needed(len(unpadded), 384) < lane.fragments_needed(len(padded), 384)
    assert open_grievance_any(unpadded, bytes(UNION), CODEBOOK) == report


def test_unpadded_reports_over_the_largest_size_are_refused() -> None:
    """The unpadded form keeps the padded form's ceiling (text that does not compress)."""
    rng = random.Random(6)
    text = "".join(chr(rng.randrange(0x20000, 0x2A6DF)) for _ in range(40_000))
    with pytest.raises(LimitExceeded, match="shorten it or split it"):
        seal_grievance_unpadded(_report(text, Language.ENG), bytes(UNION.public_key), CODEBOOK)


@pytest.mark.parametrize("code", ["mya", "tha", "khm", "vie", "ind", "eng"])
def test_a_thousand_character_report_takes_fewer_blocks_unpadded(code: str) -> None:
    """Real crew text of 1,000 characters: padded to 1,072 bytes it takes 4 blocks of 384
    bytes; unpadded, 2 (the lane leaves a report's length hidden either way)."""
    lines = (corpus_dir() / f"{code}.dev.txt").read_text(encoding="utf-8").splitlines()
    text = ""
    for line in lines:
        text += line.strip() + " "
        if len(text) >= 1000:
            break
    report = _report(text[:1000], Language.from_code(code))
    unpadded = seal_grievance_unpadded(report, bytes(UNION.public_key), CODEBOOK)
    padded = seal_grievance(report, bytes(UNION.public_key), CODEBOOK)
    assert lane.fragments_needed(len(unpadded), 384) < lane.fragments_needed(len(padded), 384)
