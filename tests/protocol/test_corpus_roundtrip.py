"""Every line of every language of the shared corpus survives the wire byte for byte.

Each line is normalised at intake (``normalise_text``), put in a crew message, sent in
batches of 20 (uplink, every codec allowed, so the trained dictionary or model is used),
decoded and compared with the normalised text, byte for byte. The dev split runs by
default; the train split (about 15,000 lines) is marked slow.
"""

from __future__ import annotations

import pytest

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch, encode_batch
from protocol.codebook import Codec
from protocol.envelopes import CrewMessage, Reply
from protocol.languages import TRAINED_LANGUAGES, Language
from protocol.text import normalise_text
from tests.kit.corpus import CORPUS
from tests.protocol.test_envelopes import SHORE_KEY, VESSEL_KEY

BATCH_SIZE = 20


def _lines(language: Language, split: str) -> list[str]:
    path = CORPUS / f"{language.code}.{split}.txt"
    assert path.exists(), f"{path} is missing: the shared corpus must be present"
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _round_trip(language: Language, lines: list[str]) -> dict[Codec, int]:
    """Send ``lines`` up as crew messages and down as replies; return frames per codec."""
    codebook = default_codebook()
    normalised = [normalise_text(line, language=language).text for line in lines]
    codecs_used: dict[Codec, int] = {}
    for start in range(0, len(normalised), BATCH_SIZE):
        chunk = normalised[start : start + BATCH_SIZE]
        up = [
            CrewMessage(
                message_seq=start + i,
                crew=i % 4,
                contact=i % 2,
                written_minutes=0,
                lang=language,
                body=text,
            )
            for i, text in enumerate(chunk)
        ]
        down = [
            Reply(
                reply_seq=start + i,
                crew=i % 4,
                contact=i % 2,
                written_minutes=0,
                lang=language,
                body=text,
            )
            for i, text in enumerate(chunk)
        ]
        for envelopes, direction, key in (
            (up, Direction.UPLINK, VESSEL_KEY),
            (down, Direction.DOWNLINK, SHORE_KEY),
        ):
            data = encode_batch(
                envelopes,
                direction=direction,
                vessel_id=7,
                batch_seq=start + 1,
                batch_minutes=10,
                signing_key=key,
                codebook=codebook,
            )
            batch = decode_batch(data, codebook=codebook, verify_key=key.verify_key)
            got = [envelope.text for envelope in batch.envelopes]
            for expected, text in zip(chunk, got, strict=True):
                assert text is not None
                assert text.encode("utf-8") == expected.encode("utf-8")
            for frame in batch.frames:
                codecs_used[frame.codec] = codecs_used.get(frame.codec, 0) + 1
    return codecs_used


@pytest.mark.parametrize("language", TRAINED_LANGUAGES, ids=lambda lang: lang.code)
def test_dev_split_round_trips_byte_exact(language: Language) -> None:
    """Every dev line of the language, normalised, comes back identical, up and down."""
    used = _round_trip(language, _lines(language, "dev"))
    assert set(used) - {Codec.STORED}, f"{language.code}: no trained codec was ever chosen"


@pytest.mark.slow
@pytest.mark.parametrize("language", TRAINED_LANGUAGES, ids=lambda lang: lang.code)
def test_train_split_round_trips_byte_exact(language: Language) -> None:
    """The same for the train split (the models have seen these lines: still exact)."""
    _round_trip(language, _lines(language, "train"))


def test_zawgyi_sample_is_converted_then_travels() -> None:
    """A Burmese message typed in Zawgyi is converted at intake and travels as Unicode."""
    pairs = sorted((CORPUS / "zawgyi").glob("*"))
    assert pairs, "the Zawgyi test pairs are missing from the shared corpus"
    zawgyi = "ျမန္မာစာ"  # "Myanmar script", typed with a Zawgyi font
    normalised = normalise_text(zawgyi, language=Language.MYA)
    assert normalised.converted
    assert normalised.text == "မြန်မာစာ"
    used = _round_trip(Language.MYA, [zawgyi])
    assert used
