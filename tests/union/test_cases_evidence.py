"""Cases (stages, numbers, receipt codes, sealed notes) and the signed evidence chain."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cases import (
    CaseNote,
    check_transition,
    format_receipt_code,
    indicative_due_minutes,
    is_receipt_code,
    make_receipt_code,
    open_case_note,
    parse_case_number,
    parse_stage,
    reporter_reply_keys,
    seal_case_note,
)
from protocol.envelopes import CaseStatus
from protocol.errors import InvalidEnvelope, NotAllowedInState, SealedBoxInvalid
from protocol.evidence import (
    EntryKind,
    EvidenceEntry,
    EvidenceInvalid,
    entry_from_bytes,
    make_entry,
    verify_chain,
)
from protocol.languages import Language
from protocol.sealing import PADDING_BUCKETS
from protocol.signing import SigningKey

UNION = SigningKey.from_seed(bytes(range(32)))
STRANGER = SigningKey.from_seed(bytes(range(1, 33)))


def test_stages_move_forward_and_close_only_with_a_reason() -> None:
    """A union acknowledges, works on, refers and resolves a case; closing needs a reason."""
    check_transition(CaseStatus.RECEIVED, CaseStatus.ACKNOWLEDGED, None)
    check_transition(CaseStatus.IN_PROGRESS, CaseStatus.REFERRED, None)
    check_transition(CaseStatus.REFERRED, CaseStatus.RESOLVED, None)
    with pytest.raises(NotAllowedInState, match="cannot become"):
        check_transition(CaseStatus.RECEIVED, CaseStatus.RESOLVED, None)
    with pytest.raises(NotAllowedInState, match="reason"):
        check_transition(CaseStatus.ACKNOWLEDGED, CaseStatus.CLOSED, " ")
    check_transition(CaseStatus.ACKNOWLEDGED, CaseStatus.CLOSED, "reporter withdrew")
    with pytest.raises(NotAllowedInState):
        check_transition(CaseStatus.RESOLVED, CaseStatus.IN_PROGRESS, None)
    assert parse_stage("in progress") is CaseStatus.IN_PROGRESS
    assert parse_stage("IN-PROGRESS") is CaseStatus.IN_PROGRESS
    with pytest.raises(InvalidEnvelope, match="one of"):
        parse_stage("done")
    assert indicative_due_minutes(CaseStatus.RECEIVED, 100) == 100 + 2 * 24 * 60
    assert indicative_due_minutes(CaseStatus.RESOLVED, 100) is None


def test_case_numbers_and_receipt_codes() -> None:
    """A case number names vessel and report; a receipt code catches a mistyped digit."""
    assert parse_case_number(" 42-17 ") == (42, 17)
    with pytest.raises(InvalidEnvelope, match="42-17"):
        parse_case_number("case 17")
    code = make_receipt_code("123456789012345")
    assert len(code) == 16
    assert is_receipt_code(code)
    assert is_receipt_code(format_receipt_code(code))
    wrong = code[:3] + str((int(code[3]) + 1) % 10) + code[4:]
    assert not is_receipt_code(wrong)
    with pytest.raises(InvalidEnvelope):
        make_receipt_code("12345")


@given(st.text(min_size=15, max_size=15, alphabet="0123456789"), st.integers(0, 14))
def test_a_single_wrong_digit_never_passes(digits: str, position: int) -> None:
    """Any one mistyped digit in a receipt code is caught (Luhn)."""
    code = make_receipt_code(digits)
    for replacement in "0123456789":
        if replacement != code[position]:
            assert not is_receipt_code(code[:position] + replacement + code[position + 1 :])


def test_case_note_opens_only_with_the_reporters_key() -> None:
    """A union's reply, sealed to the reporter's PIN-derived key, opens for them alone."""
    keys = reporter_reply_keys(b"k" * 32)
    assert reporter_reply_keys(b"k" * 32) == keys  # derived, never stored
    other = reporter_reply_keys(b"x" * 32)
    note = CaseNote(
        "42-17",
        CaseStatus.ACKNOWLEDGED,
        29_000_000,
        text="ငါတို့ သင့်တိုင်ကြားစာကို လက်ခံရရှိပါပြီ",
        lang=Language.MYA,
        entry_hash=bytes(32),
    )
    sealed = seal_case_note(note, keys.public_key)
    assert len(sealed) - 48 in PADDING_BUCKETS
    assert "ငါ".encode() not in sealed
    assert open_case_note(sealed, keys.private_key) == note
    with pytest.raises(SealedBoxInvalid):
        open_case_note(sealed, other.private_key)
    with pytest.raises(SealedBoxInvalid):
        open_case_note(sealed[:-1] + bytes([sealed[-1] ^ 1]), keys.private_key)


def _chain() -> list[EvidenceEntry]:
    first = make_entry(
        case="42-17",
        previous=None,
        kind=EntryKind.REPORT,
        author=UNION,
        at_minutes=1000,
        fields={"text": "wages withheld three months", "lang": "eng", "sealed_sha256": b"x" * 32},
    )
    second = make_entry(
        case="42-17",
        previous=first,
        kind=EntryKind.STATUS,
        author=UNION,
        at_minutes=1100,
        fields={"status": "acknowledged"},
    )
    third = make_entry(
        case="42-17",
        previous=second,
        kind=EntryKind.REPLY,
        author=UNION,
        at_minutes=1200,
        fields={"text": "we are calling the agency", "lang": "eng"},
    )
    return [first, second, third]


def test_evidence_chain_verifies_and_round_trips() -> None:
    """An exported case verifies offline, entry by entry, after a trip through bytes."""
    chain = _chain()
    decoded = [entry_from_bytes(entry.to_bytes()) for entry in chain]
    assert decoded == chain
    head = verify_chain(decoded, {UNION.verify_key.key: "union"})
    assert head == chain[-1].entry_hash


def test_evidence_tampering_is_caught() -> None:
    """A changed text, a removed entry, a reordering or a stranger's entry is refused."""
    chain = _chain()
    authors = {UNION.verify_key.key: "union"}
    changed = EvidenceEntry(
        chain[0].case,
        0,
        chain[0].previous,
        chain[0].kind,
        chain[0].author,
        chain[0].at_minutes,
        {**chain[0].fields, "text": "nothing happened"},
        chain[0].signature,
    )
    with pytest.raises(EvidenceInvalid, match="signature"):
        verify_chain([changed, *chain[1:]], authors)
    with pytest.raises(EvidenceInvalid, match="removed or reordered"):
        verify_chain([chain[0], chain[2]], authors)
    with pytest.raises(EvidenceInvalid, match="removed or reordered"):
        verify_chain([chain[1], chain[0], chain[2]], authors)
    forged = make_entry(
        case="42-17",
        previous=chain[2],
        kind=EntryKind.STATUS,
        author=STRANGER,
        at_minutes=1300,
        fields={"status": "resolved"},
    )
    with pytest.raises(EvidenceInvalid, match="unknown key"):
        verify_chain([*chain, forged], authors)
    with pytest.raises(EvidenceInvalid):
        entry_from_bytes(os.urandom(40))
