"""Spoken grievance reports inside the seal (issue 24): Codec2 frames travel in the sealed
report's fields 9 to 11, padded or unpadded, and anything malformed is refused as the
union's own error, never half-read.
"""

from __future__ import annotations

import nacl.public
import pytest

from common.codebooks import default_codebook
from protocol.cbor import dumps
from protocol.compression import encode_frame
from protocol.errors import InvalidEnvelope, SealedBoxInvalid
from protocol.languages import Language
from protocol.sealing import (
    GrievanceCategory,
    GrievancePlaintext,
    SpokenReport,
    open_grievance,
    open_grievance_any,
    seal_grievance,
    seal_grievance_unpadded,
)
from protocol.voice import VoiceMode

CODEBOOK = default_codebook()
UNION = nacl.public.PrivateKey(bytes(range(40, 72)))
FRAMES = bytes(range(6)) * 250  # 10 s of mode 1200: 250 frames of 6 bytes


def _report(text: str = "", voice: SpokenReport | None = None) -> GrievancePlaintext:
    return GrievancePlaintext(
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text=text,
        lang=Language.MYA,
        receipt_code="4417000000000006",
        written_minutes=29_000_000,
        case_number="7-123456789012",
        voice=voice,
    )


@pytest.mark.parametrize("text", ["", "လစာ မရသေးပါ"])
@pytest.mark.parametrize("padded", [True, False])
def test_a_spoken_report_opens_with_its_speech(text: str, padded: bool) -> None:
    """Ten seconds of speech, with or without a written line, sealed padded (on its own)
    or unpadded (the lane): the union opens the same frames, mode and length."""
    voice = SpokenReport(VoiceMode.MODE_1200, 10_000, FRAMES)
    report = _report(text, voice)
    public = bytes(UNION.public_key)
    if padded:
        opened = open_grievance(seal_grievance(report, public, CODEBOOK), bytes(UNION), CODEBOOK)
    else:
        sealed = seal_grievance_unpadded(report, public, CODEBOOK)
        opened = open_grievance_any(sealed, bytes(UNION), CODEBOOK)
    assert opened == report


def test_a_report_needs_words_or_speech_and_speech_of_the_right_length() -> None:
    """No text and no recording is refused; frames that are not the duration's frames,
    and a recording of no time or over two minutes, are refused when built."""
    with pytest.raises(InvalidEnvelope, match="some text or a recording"):
        _report("")
    with pytest.raises(InvalidEnvelope, match="1500 bytes of frames, not 1499"):
        SpokenReport(VoiceMode.MODE_1200, 10_000, FRAMES[:-1])
    for duration in (0, 120_001):
        with pytest.raises(InvalidEnvelope, match="lasts 1 to 120000 ms"):
            SpokenReport(VoiceMode.MODE_1200, duration, b"")


def _sealed_with(meta: dict[int, object], texts: list[str]) -> bytes:
    """A sealed report made by hand (what a broken or hostile sealer could send)."""
    base: dict[int, object] = {1: 8, 2: int(Language.MYA), 3: "4417000000000006", 4: 1}
    frame = encode_frame(CODEBOOK, Language.MYA, dumps(base | meta), texts)
    content = b"VRG1" + dumps([int(frame.codec), frame.dictionary_id, frame.payload])
    return nacl.public.SealedBox(UNION.public_key).encrypt(b"VRGU" + content[4:])


@pytest.mark.parametrize(
    ("meta", "texts", "words"),
    [
        ({9: 5, 10: 10_000}, ["x"], "part of a recording"),
        ({11: FRAMES}, ["x"], "part of a recording"),
        ({9: 99, 10: 10_000, 11: FRAMES}, ["x"], "malformed"),
        ({9: 5, 10: 10_000, 11: FRAMES[:7]}, ["x"], "malformed"),
        ({9: 5, 10: "ten", 11: FRAMES}, ["x"], "field 10 holds str"),
        ({}, [], "malformed"),
    ],
    ids=["no-frames", "frames-only", "unknown-mode", "short-frames", "bad-type", "empty"],
)
def test_malformed_speech_in_a_seal_is_refused(
    meta: dict[int, object], texts: list[str], words: str
) -> None:
    """Half a recording, an unknown Codec2 mode, frames that do not fit the duration, a
    field of the wrong type, or a report with neither text nor speech: SealedBoxInvalid."""
    with pytest.raises(SealedBoxInvalid, match=words):
        open_grievance_any(_sealed_with(meta, texts), bytes(UNION), CODEBOOK)
