"""Sealing: a grievance report is compressed, padded to a bucket and sealed to the union.

Only the union's private key opens it; its size is one of a few buckets; anything that
does not open cleanly raises a typed error.
"""

from __future__ import annotations

import nacl.public
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codebooks import default_codebook
from protocol.cbor import dumps
from protocol.codebook import Codec
from protocol.errors import (
    InvalidEnvelope,
    LimitExceeded,
    ProtocolError,
    RemoteProtocolError,
    SealedBoxInvalid,
)
from protocol.languages import Language
from protocol.limits import MAX_MINUTES
from protocol.sealing import (
    PADDING_BUCKETS,
    GrievanceCategory,
    GrievancePlaintext,
    open_grievance,
    pad,
    seal_grievance,
    unpad,
)
from tests.protocol.test_envelopes import short_strings, texts

CODEBOOK = default_codebook()
UNION = nacl.public.PrivateKey(bytes(range(7, 39)))
OTHER_UNION = nacl.public.PrivateKey(bytes(range(40, 72)))
SIZES = {bucket + 48 for bucket in PADDING_BUCKETS}


def _open(sealed: bytes, key: nacl.public.PrivateKey = UNION) -> GrievancePlaintext:
    return open_grievance(sealed, bytes(key), CODEBOOK)


def _seal(report: GrievancePlaintext) -> bytes:
    return seal_grievance(report, bytes(UNION.public_key), CODEBOOK)


REPORT = GrievancePlaintext(
    category=GrievanceCategory.WITHHOLDING_OF_WAGES,
    text="ကျွန်တော့်လစာ သုံးလ မရသေးပါ",
    lang=Language.MYA,
    receipt_code="4821-7730-1194-0062",
    written_minutes=29_000_000,
)


@given(
    category=st.sampled_from(list(GrievanceCategory)),
    text=texts,
    lang=st.sampled_from(list(Language)),
    receipt=short_strings,
    minutes=st.integers(min_value=0, max_value=MAX_MINUTES - 1),
    crew_name=st.none() | short_strings,
    document=st.none() | short_strings,
    reply_key=st.none() | st.binary(min_size=32, max_size=32),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_reports_round_trip(
    category: GrievanceCategory,
    text: str,
    lang: Language,
    receipt: str,
    minutes: int,
    crew_name: str | None,
    document: str | None,
    reply_key: bytes | None,
) -> None:
    """Any report opens, with the union's key, to exactly what was sealed."""
    report = GrievancePlaintext(
        category, text, lang, receipt, minutes, crew_name, document, reply_key
    )
    sealed = _seal(report)
    assert len(sealed) in SIZES
    assert _open(sealed) == report


def test_sealing_is_randomised_but_sized_by_bucket() -> None:
    """Two seals of one report differ (ephemeral key) but have the same bucket size."""
    first, second = _seal(REPORT), _seal(REPORT)
    assert first != second
    assert len(first) == len(second) == PADDING_BUCKETS[0] + 48
    assert REPORT.text.encode() not in first


def test_another_union_cannot_open_it() -> None:
    """A report sealed to one union does not open with another union's key."""
    with pytest.raises(SealedBoxInvalid, match="sealed to another union, or corrupted"):
        _open(_seal(REPORT), OTHER_UNION)


def test_tampered_report_does_not_open() -> None:
    """Any flipped bit (the MAC covers all) is refused."""
    sealed = bytearray(_seal(REPORT))
    for index in (0, 40, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x10
        with pytest.raises(SealedBoxInvalid):
            _open(bytes(tampered))


@pytest.mark.parametrize("size", [0, 1, 100, 303, 305, 5000])
def test_sizes_outside_the_buckets_are_refused(size: int) -> None:
    """A report whose size is not a bucket is refused before any crypto."""
    with pytest.raises(SealedBoxInvalid, match="has no valid size"):
        _open(bytes(size))


def test_pad_and_unpad() -> None:
    """ISO 7816-4 padding to the smallest bucket that fits; bad padding refused."""
    for content in (b"", b"x", bytes(255), bytes(256), bytes(5000)):
        padded = pad(content)
        assert len(padded) in PADDING_BUCKETS
        assert unpad(padded) == content
    with pytest.raises(SealedBoxInvalid, match="bad padding"):
        unpad(bytes(256))
    with pytest.raises(SealedBoxInvalid, match="bad padding"):
        unpad(b"x\x80" + bytes(10))
    with pytest.raises(LimitExceeded, match="shorten it or split it"):
        pad(bytes(PADDING_BUCKETS[-1]))


def test_bad_union_key_and_bad_reports_are_local_errors() -> None:
    """A union key that is not 32 bytes, or a report without text, is our own mistake."""
    with pytest.raises(InvalidEnvelope, match="not a valid X25519 key"):
        seal_grievance(REPORT, b"short", CODEBOOK)
    with pytest.raises(InvalidEnvelope, match="needs some text"):
        GrievancePlaintext(GrievanceCategory.OTHER, "", Language.ENG, "1", 0)
    with pytest.raises(InvalidEnvelope, match="32-byte"):
        GrievancePlaintext(GrievanceCategory.OTHER, "x", Language.ENG, "1", 0, reply_key=b"k")


def _seal_raw(content: bytes) -> bytes:
    return nacl.public.SealedBox(UNION.public_key).encrypt(pad(content))


def _frame(meta: object, text: bytes = b"hello") -> bytes:
    skeleton = dumps(meta)
    payload = bytes([len(skeleton)]) + skeleton + text
    return dumps([int(Codec.STORED), 0, payload])


@pytest.mark.parametrize(
    "content",
    [
        b"NOPE" + _frame({1: 1, 2: 1, 3: "r", 4: 0}),
        b"VRG1" + b"\xff",
        b"VRG1" + dumps([9, 0, b""]),
        b"VRG1" + dumps([0, 0]),
        b"VRG1" + _frame([1, 2]),
        b"VRG1" + _frame({1: 99, 2: 1, 3: "r", 4: 0}),
        b"VRG1" + _frame({1: 1, 2: 99, 3: "r", 4: 0}),
        b"VRG1" + _frame({2: 1, 3: "r", 4: 0}),
        b"VRG1" + _frame({1: 1, 2: 1, 3: 7, 4: 0}),
        b"VRG1" + _frame({1: 1, 2: 1, 3: "r", 4: "soon"}),
        b"VRG1" + _frame({1: 1, 2: 1, 3: "r", 4: 2**32 - 1}),  # the year 10136
        b"VRG1" + _frame({1: 1, 2: 1, 3: "r", 4: MAX_MINUTES}),
        b"VRG1" + _frame({1: 1, 2: 1, 3: "r", 4: 0, 5: b"\x00"}),
        b"VRG1" + _frame({1: 1, 2: 1, 3: "r", 4: 0}, b"a\x00b"),
        b"VRG1" + _frame({1: 1, 2: 1, 3: "r", 4: 0}, b"\xff"),
    ],
)
def test_malformed_sealed_content_raises_typed_errors(content: bytes) -> None:
    """A sealed box that opens but holds garbage raises a remote error, never more."""
    with pytest.raises(ProtocolError) as caught:
        _open(_seal_raw(content))
    assert isinstance(caught.value, RemoteProtocolError)
