"""Languages: the crew's languages and the small integers that name them on the link.

A language id travels in every text-carrying envelope and picks the compression
dictionary or model for that text. Ids are stable: never renumber them.
"""

from __future__ import annotations

from enum import IntEnum


class Language(IntEnum):
    """A language of crew messages, by ISO 639-3 code; the value is its wire id."""

    UND = 0  # undetermined / other: compressed without a language dictionary
    ENG = 1  # English
    MYA = 2  # Burmese (Myanmar script, Unicode)
    THA = 3  # Thai
    KHM = 4  # Khmer
    LAO = 5  # Lao
    VIE = 6  # Vietnamese
    IND = 7  # Indonesian
    TGL = 8  # Tagalog
    SHN = 9  # Shan (Myanmar script)

    @property
    def code(self) -> str:
        """The ISO 639-3 code, as in the corpus file names (``mya``, ``tha`` ...)."""
        return self.name.lower()

    @classmethod
    def from_code(cls, code: str) -> Language:
        """The language for an ISO 639-3 code; raises ``ValueError`` naming the known codes."""
        try:
            return cls[code.strip().upper()]
        except KeyError:
            known = ", ".join(lang.code for lang in cls)
            raise ValueError(f"unknown language code {code!r}; known codes: {known}") from None


#: Languages that have a trained dictionary / model shipped with the package.
TRAINED_LANGUAGES: tuple[Language, ...] = tuple(lang for lang in Language if lang != Language.UND)
