"""Codebook: dictionaries and models known by a small id and their content hash."""

from __future__ import annotations

import hashlib

import pytest

from common.codebooks import default_codebook, load_codebook, shipped_directory
from protocol.codebook import Codebook, CodebookEntry, Codec
from protocol.errors import InvalidEnvelope, UnknownDictionary
from protocol.languages import TRAINED_LANGUAGES, Language


def _entry(
    dictionary_id: int,
    content: bytes = b"dict",
    codec: Codec = Codec.ZSTD,
    language: Language = Language.ENG,
) -> CodebookEntry:
    return CodebookEntry(dictionary_id, codec, language, content)


def test_shipped_codebook_has_both_codecs_for_every_trained_language() -> None:
    """The package ships a zstd dictionary and a context model per trained language."""
    codebook = default_codebook()
    for language in TRAINED_LANGUAGES:
        assert codebook.newest(language, Codec.ZSTD) is not None, language
        assert codebook.newest(language, Codec.CONTEXT) is not None, language
    assert codebook.newest(Language.UND, Codec.ZSTD) is None


def test_shipped_manifest_pins_every_hash() -> None:
    """Loading checks each file against the manifest's SHA-256."""
    codebook = load_codebook(shipped_directory())
    for item, entry in zip(codebook.manifest(), codebook.entries(), strict=True):
        assert item["sha256"] == hashlib.sha256(entry.content).hexdigest()
        assert item["id"] == entry.dictionary_id


def test_same_id_with_other_content_is_refused() -> None:
    """An id is bound to its content: a different dictionary needs a new id."""
    codebook = Codebook([_entry(5)])
    codebook.add(_entry(5))  # the same content again is fine
    with pytest.raises(InvalidEnvelope, match="give the new one a new id"):
        codebook.add(_entry(5, b"other"))


def test_unknown_id_and_wrong_codec() -> None:
    """Asking for an id we lack, or for the wrong codec, names what is missing."""
    codebook = Codebook([_entry(5)])
    with pytest.raises(UnknownDictionary, match=r"dictionary 9, which this peer does not have"):
        codebook.get(9, Codec.ZSTD, where="batch 3 from vessel 1")
    with pytest.raises(UnknownDictionary, match="is a zstd entry here"):
        codebook.get(5, Codec.CONTEXT)
    assert codebook.get(5, Codec.ZSTD).content == b"dict"


def test_newest_picks_the_highest_id() -> None:
    """A newer dictionary (sent down later) gets a higher id and is used from then on."""
    codebook = Codebook([_entry(3), _entry(40, b"newer"), _entry(7, language=Language.THA)])
    newest = codebook.newest(Language.ENG, Codec.ZSTD)
    assert newest is not None
    assert newest.dictionary_id == 40
    assert 40 in codebook
    assert len(codebook) == 3


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: _entry(0), "out of range"),
        (lambda: _entry(65_536), "out of range"),
        (lambda: _entry(1, b""), "is empty"),
        (lambda: _entry(1, codec=Codec.STORED), "stored frames use no dictionary"),
    ],
)
def test_bad_entries(build: object, words: str) -> None:
    """Ids are 1 to 65535, content is not empty, stored frames have no dictionary."""
    with pytest.raises(InvalidEnvelope, match=words):
        build()  # type: ignore[operator]
