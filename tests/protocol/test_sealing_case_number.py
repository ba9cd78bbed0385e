"""The case number inside the seal: a lane-carried report has no message number on the wire,
so the number the reporter was shown travels inside the sealed report (mode B field 8, A1
``"case"``). Reports sealed before, without one, still open."""

from __future__ import annotations

import json

import nacl.public
import pytest

from common.codebooks import default_codebook
from protocol.cases import (
    FIRST_REPORT_NUMBER,
    REPORT_NUMBER_CHOICES,
    case_number,
    lane_report_number,
    parse_case_number,
)
from protocol.errors import InvalidEnvelope, SealedBoxInvalid
from protocol.languages import Language
from protocol.sealing import (
    GrievanceCategory,
    GrievancePlaintext,
    a1_message,
    open_grievance,
    open_grievance_any,
    seal_grievance,
    seal_grievance_a1,
    seal_grievance_unpadded,
)

UNION = nacl.public.PrivateKey(bytes(range(7, 39)))
PHONE = bytes(range(100, 132))


def _report(case: str | None) -> GrievancePlaintext:
    return GrievancePlaintext(
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text="လစာ သုံးလ မရသေးပါ",
        lang=Language.MYA,
        receipt_code="1234567890123452",
        written_minutes=29_833_333,
        crew_name="Aung Min",
        reply_key=bytes(32),
        case_number=case,
    )


def test_mode_b_carries_the_case_number_and_old_reports_still_open() -> None:
    """A lane report (unpadded) carries its case number; a padded report sealed before the
    lane, without one, opens as it did (case number None), with both openers."""
    codebook = default_codebook()
    union = bytes(UNION.public_key)
    lane = seal_grievance_unpadded(_report("42-123456789012"), union, codebook)
    assert open_grievance_any(lane, bytes(UNION), codebook).case_number == "42-123456789012"
    old = seal_grievance(_report(None), union, codebook)
    for opener in (open_grievance, open_grievance_any):
        opened = opener(old, bytes(UNION), codebook)
        assert opened.case_number is None
        assert opened.text == "လစာ သုံးလ မရသေးပါ"
    padded_with_case = seal_grievance(_report("42-17"), union, codebook)
    assert open_grievance(padded_with_case, bytes(UNION), codebook).case_number == "42-17"


def test_mode_a_carries_the_case_the_page_drew_after_the_receipt() -> None:
    """The phone's A1 JSON carries ``"case"`` right after ``"receipt"`` (the order the
    page's script writes); without it (a page from before) the report still opens."""
    with_case = a1_message(_report("42-123456789012"), bytes(32))
    keys = list(json.loads(with_case))
    assert keys[keys.index("receipt") + 1] == "case"
    sealed = seal_grievance_a1(_report("42-123456789012"), PHONE, bytes(UNION.public_key))
    opened = open_grievance_any(sealed, bytes(UNION), default_codebook())
    assert opened.case_number == "42-123456789012"
    assert opened.signer_key is not None
    before = seal_grievance_a1(_report(None), PHONE, bytes(UNION.public_key))
    assert open_grievance(before, bytes(UNION), default_codebook()).case_number is None
    assert "case" not in json.loads(a1_message(_report(None), bytes(32)))


def test_a_case_number_that_is_none_is_refused() -> None:
    """Building a report with something that is no case number fails; an A1 report whose
    ``"case"`` is no case number (signed as it is) is malformed for the union."""
    for bad in ("", "42", "42-", "x-1", "42-1234567890123456", "1234567890-1"):
        with pytest.raises(InvalidEnvelope, match="not a case number"):
            _report(bad)
    import nacl.signing

    from protocol.sealing import A1_DOMAIN, pad

    signer = nacl.signing.SigningKey(PHONE)
    message = a1_message(_report("42-1"), bytes(signer.verify_key)).replace(b'"42-1"', b'"nope"')
    signature = signer.sign(A1_DOMAIN + message).signature
    box = nacl.public.SealedBox(UNION.public_key).encrypt(pad(b"VRA1" + signature + message))
    with pytest.raises(SealedBoxInvalid, match="malformed"):
        open_grievance(box, bytes(UNION), default_codebook())


def test_lane_report_numbers_have_twelve_digits() -> None:
    """A lane report number is 12 digits whatever was drawn, so it is never the small
    message number of a report that travelled on its own; its case number parses back."""
    assert lane_report_number(0) == FIRST_REPORT_NUMBER == 100_000_000_000
    assert lane_report_number(REPORT_NUMBER_CHOICES - 1) == 999_999_999_999
    for bad in (-1, REPORT_NUMBER_CHOICES, True, 1.5):
        with pytest.raises(InvalidEnvelope):
            lane_report_number(bad)  # type: ignore[arg-type]
    number = lane_report_number(123_456_789)
    assert parse_case_number(case_number(42, number)) == (42, number)
