"""The union's store key: ``union.db``'s report text encrypted at rest under a passphrase.

The key is derived from a passphrase the union enters when its app starts (Argon2id,
argon2-cffi's ``hash_secret_raw``: 64 MiB, 3 passes, 4 lanes, a random 16-byte salt), and
lives only in memory. ``union.db`` keeps the salt, the settings and a *check* (a known text
sealed under the key), so a wrong passphrase is told apart from a damaged value.

Each value is sealed with XChaCha20-Poly1305 (PyNaCl's ``Aead``, a random 24-byte nonce)
with its place as associated data (``"entries.data:42-17:3"``): a value moved to another
row or column does not open. A sealed value starts with :data:`MAGIC`.

What is sealed (everything a reporter or caseworker wrote, and who the reporter is): the
evidence entries (report text, replies, reasons), the reporter's name and document, reply
texts waiting to be posted, caseworkers' internal notes, and the sealed reports as fetched
(a copy of the union's private key elsewhere could otherwise open them). What stays in
clear: case numbers, vessels, categories, languages, stages and times (the list of cases
and the statistics), and the access log (names of caseworkers, actions, case numbers).

Errors: :class:`VaultError` → :class:`WrongPassphrase`, :class:`StoreLocked`,
:class:`ValueDamaged`, :class:`PlaintextStore`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret
from argon2.low_level import Type, hash_secret_raw

from common.exits import EX_CONFIG

__all__ = [
    "MAGIC",
    "MIN_PASSPHRASE_CHARS",
    "KdfSettings",
    "PlaintextStore",
    "StoreKey",
    "StoreLocked",
    "ValueDamaged",
    "VaultError",
    "WrongPassphrase",
    "derive_key",
    "is_sealed",
]

MAGIC = b"VRU\x01"
_CHECK_TEXT = b"vessel-relay union store key check v1"
_KEY_BYTES = nacl.secret.Aead.KEY_SIZE
#: The shortest passphrase accepted when the store is first encrypted.
MIN_PASSPHRASE_CHARS = 12


class VaultError(Exception):
    """The store's encryption cannot do what was asked; the message says what to do."""


class WrongPassphrase(VaultError):
    """The passphrase does not open this union's store."""


class StoreLocked(VaultError):
    """The store is encrypted and not unlocked yet: enter the passphrase first."""


class PlaintextStore(VaultError):
    """The store is not encrypted at rest and the union did not say it accepts that: a
    configuration error (exit 78), fixed by ``vessel-relay union encrypt``."""

    exit_code = EX_CONFIG


class ValueDamaged(VaultError):
    """A sealed value in ``union.db`` does not open under the (right) key: it was changed."""


@dataclass(frozen=True, slots=True)
class KdfSettings:
    """Argon2id settings and salt, kept in ``union.db`` beside the check value."""

    salt: bytes
    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4

    def __post_init__(self) -> None:
        if len(self.salt) < 16:
            raise VaultError("the store key's salt is shorter than 16 bytes: union.db is damaged")
        if not (1 <= self.time_cost <= 64 and 8 <= self.memory_kib <= 4 * 1024 * 1024):
            raise VaultError(
                "the store key's Argon2id settings are out of range: union.db is damaged"
            )
        if not 1 <= self.parallelism <= 64:
            raise VaultError("the store key's Argon2id lanes are out of range: union.db is damaged")

    @classmethod
    def fresh(cls) -> KdfSettings:
        """New settings with a random salt."""
        return cls(secrets.token_bytes(16))


def is_sealed(value: bytes) -> bool:
    """Whether ``value`` is a value sealed by a :class:`StoreKey`."""
    return value.startswith(MAGIC)


class StoreKey:
    """The key that seals and opens ``union.db``'s sensitive values (memory only)."""

    __slots__ = ("_box",)

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise VaultError(f"a store key has {_KEY_BYTES} bytes")
        self._box = nacl.secret.Aead(key)

    def seal(self, plain: bytes, place: str) -> bytes:
        """``plain`` sealed for the column and row named by ``place``."""
        nonce = secrets.token_bytes(nacl.secret.Aead.NONCE_SIZE)
        return MAGIC + bytes(self._box.encrypt(plain, place.encode("utf-8"), nonce))

    def open(self, sealed: bytes, place: str) -> bytes:
        """The plain value of ``sealed`` at ``place``; :class:`ValueDamaged` if it does not open."""
        if not is_sealed(sealed):
            raise ValueDamaged(f"{place}: the value is not sealed with the store key")
        try:
            return bytes(self._box.decrypt(sealed[len(MAGIC) :], place.encode("utf-8")))
        except nacl.exceptions.CryptoError as exc:
            raise ValueDamaged(
                f"{place}: the value does not open with the store key (changed or moved)"
            ) from exc

    def check_value(self) -> bytes:
        """A sealed known text, kept to recognise the right passphrase."""
        return self.seal(_CHECK_TEXT, "vault.check")

    def opens_check(self, check: bytes) -> bool:
        """Whether ``check`` was made by this key."""
        try:
            return self.open(check, "vault.check") == _CHECK_TEXT
        except ValueDamaged:
            return False


def derive_key(passphrase: str, settings: KdfSettings) -> StoreKey:
    """The store key of ``passphrase`` (Argon2id; blocking, about 0.1-0.3 s and 64 MiB)."""
    if not passphrase:
        raise WrongPassphrase("the passphrase is empty")
    raw = hash_secret_raw(
        passphrase.encode("utf-8"),
        settings.salt,
        time_cost=settings.time_cost,
        memory_cost=settings.memory_kib,
        parallelism=settings.parallelism,
        hash_len=_KEY_BYTES,
        type=Type.ID,
    )
    return StoreKey(raw)
