"""Intake mode A: a report signed with the crew member's phone key and sealed on the phone.

The A1 content is ``VRA1 || Ed25519 signature || UTF-8 JSON``; the union opens it with
its own key, the signature is checked against the phone key named inside, and whoever
changed or forged it without that key gets a typed error, never a report.
"""

from __future__ import annotations

import base64
import json

import nacl.public
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codebooks import default_codebook
from protocol.errors import SealedBoxInvalid, SignatureInvalid
from protocol.evidence import fingerprint
from protocol.languages import Language
from protocol.sealing import (
    A1_DOMAIN,
    PADDING_BUCKETS,
    GrievanceCategory,
    GrievancePlaintext,
    ReporterSignatureInvalid,
    a1_message,
    open_grievance,
    pad,
    seal_grievance,
    seal_grievance_a1,
    verify_a1_signature,
)

CODEBOOK = default_codebook()
UNION = nacl.public.PrivateKey(bytes(range(7, 39)))
PHONE_SEED = bytes(range(100, 132))
OTHER_SEED = bytes(range(140, 172))
SIZES = {bucket + 48 for bucket in PADDING_BUCKETS}

REPORT = GrievancePlaintext(
    category=GrievanceCategory.WITHHOLDING_OF_WAGES,
    text="လစာ သုံးလ မရသေးပါ။ The captain keeps our passports.",
    lang=Language.MYA,
    receipt_code="4111111111111111",
    written_minutes=29_000_000,
    crew_name="Ko Aung",
    crew_document="SB-12345",
    reply_key=bytes(range(32)),
)


def _phone_key(seed: bytes = PHONE_SEED) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def _seal_raw(content: bytes) -> bytes:
    return nacl.public.SealedBox(UNION.public_key).encrypt(pad(content))


def test_a1_report_opens_with_the_phone_key_that_signed_it() -> None:
    sealed = seal_grievance_a1(REPORT, PHONE_SEED, bytes(UNION.public_key))
    assert len(sealed) in SIZES
    opened = open_grievance(sealed, bytes(UNION), CODEBOOK)
    assert opened.text == REPORT.text
    assert opened.category is REPORT.category
    assert opened.lang is Language.MYA
    assert opened.receipt_code == REPORT.receipt_code
    assert opened.crew_name == "Ko Aung"
    assert opened.crew_document == "SB-12345"
    assert opened.reply_key == REPORT.reply_key
    assert opened.signer_key == _phone_key()
    assert opened.signed_message == a1_message(REPORT, _phone_key())
    assert opened.signature is not None
    # an inspector checks the signature again later from the three stored values
    verify_a1_signature(opened.signer_key, opened.signature, opened.signed_message)


def test_mode_b_report_names_no_signer() -> None:
    opened = open_grievance(
        seal_grievance(REPORT, bytes(UNION.public_key), CODEBOOK), bytes(UNION), CODEBOOK
    )
    assert opened.signer_key is None
    assert opened.signature is None


def test_anonymous_a1_report_carries_no_name() -> None:
    anonymous = GrievancePlaintext(
        category=GrievanceCategory.OTHER,
        text="anonymous",
        lang=Language.ENG,
        receipt_code="4111111111111111",
        written_minutes=1,
    )
    opened = open_grievance(
        seal_grievance_a1(anonymous, PHONE_SEED, bytes(UNION.public_key)), bytes(UNION), CODEBOOK
    )
    assert opened.crew_name is None
    assert opened.crew_document is None
    assert json.loads(opened.signed_message or b"")["anonymous"] is True


def test_changed_text_breaks_the_phone_signature() -> None:
    message = a1_message(REPORT, _phone_key())
    signature = nacl.signing.SigningKey(PHONE_SEED).sign(A1_DOMAIN + message).signature
    changed = message.replace(b"passports", b"patience!")
    with pytest.raises(ReporterSignatureInvalid, match="changed after the phone signed it"):
        open_grievance(_seal_raw(b"VRA1" + signature + changed), bytes(UNION), CODEBOOK)


def test_signature_by_another_key_than_the_named_one_is_refused() -> None:
    """A modified agent cannot sign with the crew member's key and name that key."""
    message = a1_message(REPORT, _phone_key())
    forged = nacl.signing.SigningKey(OTHER_SEED).sign(A1_DOMAIN + message).signature
    with pytest.raises(SignatureInvalid):
        open_grievance(_seal_raw(b"VRA1" + forged + message), bytes(UNION), CODEBOOK)


def test_report_signed_with_another_key_opens_as_another_signer() -> None:
    """What a modified agent can do: make its own report with its own key. It opens, but
    its signer's fingerprint is not the crew member's (the union compares fingerprints)."""
    sealed = seal_grievance_a1(REPORT, OTHER_SEED, bytes(UNION.public_key))
    opened = open_grievance(sealed, bytes(UNION), CODEBOOK)
    assert opened.signer_key is not None
    assert fingerprint(opened.signer_key) != fingerprint(_phone_key())


def test_signature_without_domain_is_refused() -> None:
    message = a1_message(REPORT, _phone_key())
    bare = nacl.signing.SigningKey(PHONE_SEED).sign(message).signature
    with pytest.raises(ReporterSignatureInvalid):
        open_grievance(_seal_raw(b"VRA1" + bare + message), bytes(UNION), CODEBOOK)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda f: {**f, "v": "A2"}, "version"),
        (lambda f: {**f, "category": 99}, "malformed"),
        (lambda f: {**f, "category": True}, "holds bool"),
        (lambda f: {**f, "written": 1.5}, "holds float"),
        (lambda f: {**f, "lang": "xx"}, "malformed"),
        (lambda f: {**f, "extra": 1}, "unknown field"),
        (lambda f: {k: v for k, v in f.items() if k != "receipt"}, "lacks receipt"),
        (lambda f: {**f, "signer": "not base64!"}, "not base64"),
        (lambda f: {**f, "reply_key": base64.b64encode(b"short").decode()}, "32-byte"),
    ],
)
def test_malformed_a1_fields_are_refused_even_when_signed(edit: object, problem: str) -> None:
    fields = json.loads(a1_message(REPORT, _phone_key()))
    assert callable(edit)
    message = json.dumps(edit(fields), ensure_ascii=False).encode()
    signature = nacl.signing.SigningKey(PHONE_SEED).sign(A1_DOMAIN + message).signature
    with pytest.raises(SealedBoxInvalid, match=problem):
        open_grievance(_seal_raw(b"VRA1" + signature + message), bytes(UNION), CODEBOOK)


@pytest.mark.parametrize(
    "message",
    [
        b'{"v":"A1","v":"A1"}',
        b"[1,2]",
        b'{"written": NaN}',
        b"\xff\xfe",
    ],
)
def test_not_an_a1_object_is_refused(message: bytes) -> None:
    signature = nacl.signing.SigningKey(PHONE_SEED).sign(A1_DOMAIN + message).signature
    with pytest.raises(SealedBoxInvalid):
        open_grievance(_seal_raw(b"VRA1" + signature + message), bytes(UNION), CODEBOOK)


def test_a1_size_is_a_padding_bucket_like_mode_b() -> None:
    small = GrievancePlaintext(
        category=GrievanceCategory.OTHER,
        text="x",
        lang=Language.ENG,
        receipt_code="4111111111111111",
        written_minutes=1,
    )
    assert len(seal_grievance_a1(small, PHONE_SEED, bytes(UNION.public_key))) == 256 + 48


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=300,
    ),
    anonymous=st.booleans(),
)
def test_any_text_round_trips_in_a1(text: str, anonymous: bool) -> None:
    report = GrievancePlaintext(
        category=GrievanceCategory.ISOLATION,
        text=text,
        lang=Language.THA,
        receipt_code="4111111111111111",
        written_minutes=7,
        crew_name=None if anonymous else "ชื่อ",
    )
    opened = open_grievance(
        seal_grievance_a1(report, PHONE_SEED, bytes(UNION.public_key)), bytes(UNION), CODEBOOK
    )
    assert opened.text == text
    assert (opened.crew_name is None) is anonymous


#: A report made by ``phone-keys.js`` in Chromium (tests/web/test_phone_keys.py), sealed to
#: the key ``bytes(range(50, 82))``: the page's format, frozen.
BROWSER_UNION = nacl.public.PrivateKey(bytes(range(50, 82)))
BROWSER_A1 = base64.b64decode(
    "FeAE17Y7tGlfcZlmbpgWDbOOhEne/nsFbjL54MohGng619hVTMy3cYul9tZhyh/zFJwIAG0hyq47kEwscuR4"
    "EbgJXbKGIeKv+V5U3LSCEK6z2Ruc51XPbP96cpYB26JqTCdalb/i+GkJIUDUQ9UlBeSoQJyn4fFox63v0Y94"
    "EZs5sVKkgiQMf/o+XSKLEprJvZ3jtfyiCOV6GvmqDV3Ns2jDF93vAmQV5WEfFISid0nd/gCqGerh2SAeVE1w"
    "4DIQTWJcGlH0emUlmpopLHl1NoE88vkj080Psm2J8bwYlc1Xs7UWh6zh5KHUtBYeeMOe0nZgmnZvMS1Vy3ld"
    "05s3SOI7d/EVTK+owULz+WeY05MkX8iyRTARZ7kxjrlCFY3DUGpJ90fln/N0VPnrgGGllZrSiv/wu0+JUK2V"
    "otg9tFPGdXoIVWXu8N/Bmx42yMglNUKREZ2nRRVdEqBzhd5xogcvP7xcB1Rr2YwGeGKnDdpIQpzj+VJyrhsk"
    "nH6PA0Pu8f9bVGK6bcJkJExmmWuipJcyTuWmIkuuSjZF0J/fRkDSxUpIcD9vmhAtGvRIfvqqyFtp/J5p8C7z"
    "/9i6i9+6Z/w2llqMV8PI3qVtZQMcGCxS+G1yyR7KDMh4L+aYLK0DGsBE/KKuzj3r8+rkVF+WHOdVKFIQTkC1"
    "Ie3bPa20L0PQbIOZo2fh6wb1r3qd96yMbQcwXnSoGKcxHwXdeMeZwup7AESW9a51EvKGtyCiI6VtFudwH1CP"
    "50xe6d8c+UuICR2JANZXPAAC/OA6h/hvcoHmD3XgBiicO2TiN9CaTyaRR3+THGbxET8e6QkFZB0XhpybjKCU"
    "WcvUcxESsLtRdN+BzZv6mCaguoVBGVVed0aXyIGMOrWNFKC4rNhTmWf04b8/LRaZsa1nbebV/Z6WXyX64OUg"
    "Qh9DNGnevGmYwtq0+UeIjwTOWdyKKN+kwK8ZP6wJkJKSPuhxS+lcAa8l9vszFgh+7JjApxuQqw5KbJ7pKz4+"
    "LW4qD9/3T33Zf6wRptgVZuzqRghvxlhwQYLTtr/xweZi7Awyzl5IrChKbhggAQAmeY2ruXSmBlb4nBwcFSGH"
    "0ApgsN9VOtcXhF35uw7WsBzUC5UfJSfzS8U076qUuflZv4Z/fNbvFC4IiQAZHPQ7ZO4p3d4fwc+IvuByIbuJ"
    "NpEaW2JEbGTPcfmV5/Drj3mTcfrMGTgZWNCw26ZDks9GJthPIFWj3zq5CsLIqQhwzVJ02UP30WUgxwrDXRW1"
    "7jMz73OizXTqVG7W4CB/8Vnxp10A47WAzFWdTkHbSLh4DwwJyJ7Aw0QAZ5sE84ZyQT6919zc77oLifQYucrp"
    "f8iJHqfJ6ZNoEdwCw6HzfiuLgJF+TCQ/uV5k0vz4YI/jTGvl8GSnpWnX0PD4IaKcLSeH2EzjfANXLDkUHiPB"
    "gg=="
)


def test_a_report_sealed_by_the_page_in_chromium_still_opens() -> None:
    opened = open_grievance(BROWSER_A1, bytes(BROWSER_UNION), CODEBOOK)
    assert opened.text == "ကျွန်ုပ်ကို သုံးလ လစာ မပေးပါ CANARY-A1-7f3e"
    assert opened.receipt_code == "5766053908896220"
    assert opened.crew_name == "Aung Min"
    assert opened.signer_key is not None
    assert fingerprint(opened.signer_key) == "e378 a92b 7e04 5953 8631 69c2"
    # the page writes the message byte for byte as protocol.sealing.a1_message does
    assert opened.signed_message == a1_message(opened, opened.signer_key)
