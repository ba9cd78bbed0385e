"""Codebook: the compression dictionaries and models a peer holds, known by small ids.

A batch names each frame's dictionary (or model) by a small integer id. Both sides must
hold the same content for that id, so an entry is known by its id *and* the SHA-256 of
its content; a manifest lists them. The package ships default entries trained
reproducibly from the public corpus (see ``vessel-relay dict train``); a shore can send
newer ones down in :class:`~protocol.envelopes.DictionaryUpdate` envelopes.

This module holds only bytes handed to it: loading files is the caller's job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from protocol.errors import InvalidEnvelope, UnknownDictionary
from protocol.languages import Language


class Codec(IntEnum):
    """How a frame is coded; the value is its wire id (never renumber)."""

    STORED = 0
    ZSTD = 1
    CONTEXT = 2


@dataclass(frozen=True, slots=True)
class CodebookEntry:
    """One dictionary or model: its id, codec, language and content."""

    dictionary_id: int
    codec: Codec
    language: Language
    content: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.dictionary_id < 2**16:
            raise InvalidEnvelope(
                f"dictionary id {self.dictionary_id} is out of range (1 to 65535; 0 means none)"
            )
        if self.codec is Codec.STORED:
            raise InvalidEnvelope("stored frames use no dictionary")
        if not self.content:
            raise InvalidEnvelope(f"dictionary {self.dictionary_id} is empty")

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the content: what the manifest pins."""
        return hashlib.sha256(self.content).hexdigest()


class Codebook:
    """The set of dictionaries and models one peer can use, by id.

    Prepared compressor state is cached per entry (a codebook is shared by all batches
    of a process); the cache holds only derived data, never anything read from outside.
    """

    def __init__(self, entries: Iterable[CodebookEntry] = ()) -> None:
        self._entries: dict[int, CodebookEntry] = {}
        self._prepared: dict[int, object] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: CodebookEntry) -> None:
        """Add an entry; an id already held with other content is refused."""
        held = self._entries.get(entry.dictionary_id)
        if held is not None and held.content != entry.content:
            raise InvalidEnvelope(
                f"dictionary id {entry.dictionary_id} is already held with other content "
                f"({held.sha256[:12]}, not {entry.sha256[:12]}); give the new one a new id"
            )
        self._entries[entry.dictionary_id] = entry

    def __contains__(self, dictionary_id: object) -> bool:
        return dictionary_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[CodebookEntry]:
        """All entries, by id."""
        return [self._entries[key] for key in sorted(self._entries)]

    def get(self, dictionary_id: int, codec: Codec, *, where: str = "this batch") -> CodebookEntry:
        """The entry for a frame, or :class:`UnknownDictionary` naming what is missing."""
        entry = self._entries.get(dictionary_id)
        if entry is None:
            raise UnknownDictionary(
                f"{where} names {codec.name.lower()} dictionary {dictionary_id}, which this "
                f"peer does not have (it has {sorted(self._entries) or 'none'}); update the "
                "dictionaries on both sides"
            )
        if entry.codec is not codec:
            raise UnknownDictionary(
                f"{where} names dictionary {dictionary_id} for codec {codec.name.lower()}, "
                f"but that id is a {entry.codec.name.lower()} entry here"
            )
        return entry

    def newest(self, language: Language, codec: Codec) -> CodebookEntry | None:
        """The newest (highest id) entry for a language and codec, if any."""
        found = [
            entry
            for entry in self._entries.values()
            if entry.language is language and entry.codec is codec
        ]
        return max(found, key=lambda entry: entry.dictionary_id) if found else None

    def prepared(self, dictionary_id: int) -> object | None:
        """Cached derived state for an entry (compressors, parsed models)."""
        return self._prepared.get(dictionary_id)

    def remember(self, dictionary_id: int, state: object) -> None:
        """Cache derived state for an entry."""
        self._prepared[dictionary_id] = state

    def manifest(self) -> list[dict[str, object]]:
        """A JSON-able list describing every entry (id, codec, language, size, sha256)."""
        return [
            {
                "id": entry.dictionary_id,
                "codec": entry.codec.name.lower(),
                "language": entry.language.code,
                "bytes": len(entry.content),
                "sha256": entry.sha256,
            }
            for entry in self.entries()
        ]
