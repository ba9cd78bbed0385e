"""Union card: the public facts a vessel and a relay need about a union, as one JSON file.

``vessel-relay union init`` writes the card next to the union's keys (only public halves);
the union hands it to vessel owners and relay operators, and prints the same fingerprints
so an owner can compare them by phone or on paper before trusting the file::

    {"kind": "vessel-relay union card", "version": 1, "union_id": 7,
     "name": "Fishers' Rights Network", "relay_url": "https://relay.example.org",
     "languages": ["tha", "mya"],
     "report_key": "64 hex digits (X25519: vessels seal grievance reports to it)",
     "report_key_fingerprint": "1a2b 3c4d ...",
     "signing_key": "64 hex digits (Ed25519: the relay's [[union_api.unions]])",
     "signing_key_fingerprint": "..."}

A card whose fingerprints do not match its keys is refused (:class:`UnionCardInvalid`).
Pure: bytes in, a card out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from protocol.errors import LocalProtocolError, Reason
from protocol.evidence import fingerprint
from protocol.languages import Language

__all__ = ["UnionCard", "UnionCardInvalid", "same_fingerprint"]

_KIND = "vessel-relay union card"


class UnionCardInvalid(LocalProtocolError):
    """A file that is not a usable union card (the message says what is wrong)."""

    reason = Reason.MALFORMED


def _normal(text: str) -> str:
    return "".join(text.split()).lower()


def same_fingerprint(given: str, key: bytes) -> bool:
    """Whether ``given`` (spaces and case do not matter) is ``key``'s fingerprint."""
    return bool(_normal(given)) and _normal(given) == _normal(fingerprint(key))


@dataclass(frozen=True, slots=True)
class UnionCard:
    """A union's public card: id, name, relay, languages and both public keys."""

    union_id: int
    name: str
    relay_url: str
    report_key: bytes
    signing_key: bytes
    languages: tuple[Language, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.union_id < 2**16:
            raise UnionCardInvalid(f"union id must be from 1 to 65535, not {self.union_id}")
        for what, key in (("report_key", self.report_key), ("signing_key", self.signing_key)):
            if len(key) != 32:
                raise UnionCardInvalid(f"{what} must be 32 bytes, not {len(key)}")

    @property
    def report_fingerprint(self) -> str:
        """The report key's fingerprint (what the owner compares before trusting the card)."""
        return fingerprint(self.report_key)

    @property
    def signing_fingerprint(self) -> str:
        """The signing key's fingerprint (what inspectors compare on case exports)."""
        return fingerprint(self.signing_key)

    def to_json(self) -> bytes:
        """The card file's bytes."""
        obj = {
            "kind": _KIND,
            "version": 1,
            "union_id": self.union_id,
            "name": self.name,
            "relay_url": self.relay_url,
            "languages": [language.code for language in self.languages],
            "report_key": self.report_key.hex(),
            "report_key_fingerprint": self.report_fingerprint,
            "signing_key": self.signing_key.hex(),
            "signing_key_fingerprint": self.signing_fingerprint,
        }
        return json.dumps(obj, indent=1, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> UnionCard:
        """Read a card; :class:`UnionCardInvalid` says what is missing or does not match."""
        try:
            obj: object = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise UnionCardInvalid(f"not a JSON union card: {exc}") from exc
        if not isinstance(obj, dict) or obj.get("kind") != _KIND or obj.get("version") != 1:
            raise UnionCardInvalid("not a version 1 vessel-relay union card")
        union_id = obj.get("union_id")
        if not isinstance(union_id, int) or isinstance(union_id, bool):
            raise UnionCardInvalid(f"union_id must be a whole number, not {union_id!r}")
        texts: dict[str, str] = {}
        for name in ("name", "relay_url", "report_key_fingerprint", "signing_key_fingerprint"):
            value = obj.get(name)
            if not isinstance(value, str):
                raise UnionCardInvalid(f"{name} must be a string, not {value!r}")
            texts[name] = value
        keys: dict[str, bytes] = {}
        for name in ("report_key", "signing_key"):
            value = obj.get(name)
            try:
                keys[name] = bytes.fromhex(value) if isinstance(value, str) else b""
            except ValueError:
                keys[name] = b""
            if len(keys[name]) != 32:
                raise UnionCardInvalid(f"{name} must be 64 hex digits, not {value!r}")
        codes = obj.get("languages", [])
        if not isinstance(codes, list):
            raise UnionCardInvalid(f"languages must be a list of codes, not {codes!r}")
        try:
            languages = tuple(Language.from_code(str(code)) for code in codes)
        except ValueError as exc:
            raise UnionCardInvalid(f"languages: {exc}") from None
        card = cls(
            union_id,
            texts["name"],
            texts["relay_url"],
            keys["report_key"],
            keys["signing_key"],
            languages,
        )
        for name, key in (("report_key", card.report_key), ("signing_key", card.signing_key)):
            if not same_fingerprint(texts[f"{name}_fingerprint"], key):
                raise UnionCardInvalid(
                    f"{name}_fingerprint does not match {name}: the card was changed or "
                    "damaged; ask the union for its card again"
                )
        return card
