"""Signing: Ed25519 keys that authenticate batches (vessel to shore, shore to vessel).

A vessel signs its uplink batches with its own key; the shore signs downlink batches and
compliance reports with the shore key. Ed25519 signatures are deterministic, so the same
batch always has the same bytes (a retransmission is byte-identical).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from protocol.errors import InvalidEnvelope, SignatureInvalid

SIGNATURE_BYTES = 64
KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private Ed25519 key (32-byte seed). Keep it in a 0600 file."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != KEY_BYTES:
            raise InvalidEnvelope(f"an Ed25519 signing key is {KEY_BYTES} bytes")

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """A key from 32 bytes of randomness that the caller drew."""
        return cls(seed)

    @property
    def verify_key(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(bytes(nacl.signing.SigningKey(self.seed).verify_key))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message``."""
        return nacl.signing.SigningKey(self.seed).sign(message).signature


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A public Ed25519 key (32 bytes)."""

    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_BYTES:
            raise InvalidEnvelope(f"an Ed25519 public key is {KEY_BYTES} bytes")

    @classmethod
    def from_hex(cls, text: str) -> VerifyKey:
        """A public key from 64 hex digits, as written in configuration files."""
        try:
            return cls(bytes.fromhex(text.strip()))
        except ValueError as exc:
            raise InvalidEnvelope(
                f"public key {text[:16]!r}... is not {KEY_BYTES * 2} hex digits"
            ) from exc

    def hex(self) -> str:
        """The key as hex, for configuration files."""
        return self.key.hex()

    def verify(self, message: bytes, signature: bytes, *, what: str = "batch") -> None:
        """Raise :class:`SignatureInvalid` unless ``signature`` signs ``message``."""
        try:
            nacl.signing.VerifyKey(self.key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
            raise SignatureInvalid(
                f"the signature of {what} does not match the key we hold for its sender "
                f"({self.key.hex()[:12]}...): forged, corrupted, or the sender's key changed"
            ) from exc
