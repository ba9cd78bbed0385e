"""Union keys: an X25519 key pair (reports are sealed to it) and an Ed25519 signing key.

Both private keys live in 0600 files in the union's directory and never leave it; the
relay and the vessels get only the public halves: printed by ``vessel-relay union init``
and written to the union's card (``union-card.json``, :mod:`protocol.union_card`), which
vessel owners give to ``vessel-relay ship init --union-card`` after comparing fingerprints.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nacl.public
import tomli_w

from common.exits import EX_CONFIG
from common.keyfiles import KeyFileError, published_key_name, read_secret, write_secret
from protocol.evidence import fingerprint
from protocol.languages import Language
from protocol.signing import SigningKey
from protocol.union_card import UnionCard

BOX_KEY = "box.key"
SIGN_KEY = "sign.key"
SETTINGS = "union.toml"
DATABASE = "union.db"
CARD = "union-card.json"


class UnionSetupError(Exception):
    """The union's directory is missing, incomplete or unsafe; the message says what to do."""

    #: A command ending in this error exits 78 (common.exits).
    exit_code = EX_CONFIG


@dataclass(frozen=True, slots=True)
class UnionIdentity:
    """The union's keys and settings, loaded from its directory."""

    directory: Path
    union_id: int
    name: str
    relay_url: str
    box_private: bytes = field(repr=False)
    signing_key: SigningKey = field(repr=False)
    languages: tuple[Language, ...] = ()
    #: ``allow_plaintext_store = true`` in union.toml: ``fetch`` and ``web`` accept a store
    #: not encrypted at rest (a union that encrypts its whole disk and says so).
    allow_plaintext_store: bool = False

    @property
    def box_public(self) -> bytes:
        """The X25519 public key vessels seal reports to."""
        return bytes(nacl.public.PrivateKey(self.box_private).public_key)

    @property
    def database(self) -> Path:
        return self.directory / DATABASE

    @property
    def card(self) -> UnionCard:
        """The union's public card (what vessels and the relay are given)."""
        return UnionCard(
            self.union_id,
            self.name,
            self.relay_url,
            self.box_public,
            self.signing_key.verify_key.key,
            self.languages,
        )

    @property
    def card_path(self) -> Path:
        return self.directory / CARD

    def write_card(self, path: Path | None = None) -> Path:
        """Write the card (public keys only) to ``path`` (default: DIR/union-card.json)."""
        target = path or self.card_path
        _write_atomically(target, self.card.to_json())
        return target

    def describe(self) -> str:
        """What to give the relay operator and the vessels (public keys only)."""
        verify = self.signing_key.verify_key.key
        return (
            f"union {self.union_id} ({self.name})\n"
            f"  report key (X25519, for vessels' [[unions]] public_key): {self.box_public.hex()}\n"
            f"  signing key (Ed25519, for the relay's [[union_api.unions]]): {verify.hex()}\n"
            f"  signing key fingerprint (read it to inspectors): {fingerprint(verify)}\n"
            f"  report key fingerprint (print it on the crew's card / QR for mode A; vessel "
            f"owners compare it with 'ship init --union-card'): {fingerprint(self.box_public)}"
        )


def init_union(
    directory: Path,
    union_id: int,
    name: str,
    relay_url: str,
    languages: tuple[Language, ...] = (),
) -> UnionIdentity:
    """Make the union's keys, settings and card in ``directory`` (refuses to overwrite keys)."""
    if not 0 < union_id < 2**16:
        raise UnionSetupError(f"union id must be from 1 to 65535, not {union_id}")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    try:
        write_secret(directory / BOX_KEY, bytes(nacl.public.PrivateKey.generate()))
        write_secret(directory / SIGN_KEY, os.urandom(32))
    except KeyFileError as exc:
        raise UnionSetupError(str(exc)) from exc
    settings = {
        "union_id": union_id,
        "name": name,
        "relay_url": relay_url,
        "languages": [language.code for language in languages],
    }
    _write_atomically(directory / SETTINGS, tomli_w.dumps(settings).encode())
    identity = load_union(directory)
    identity.write_card()
    return identity


def load_union(directory: Path) -> UnionIdentity:
    """Load the union's keys and settings; explain what is missing."""
    path = directory / SETTINGS
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnionSetupError(
            f"{path} does not exist; run: vessel-relay union init --dir {directory}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UnionSetupError(f"{path}: {exc}") from exc
    try:
        union_id = int(settings["union_id"])
        name = str(settings.get("name", ""))
        relay_url = str(settings["relay_url"])
        languages = tuple(Language.from_code(str(c)) for c in settings.get("languages", []))
        allow_plaintext = settings.get("allow_plaintext_store", False)
        if not isinstance(allow_plaintext, bool):
            raise TypeError("allow_plaintext_store must be true or false")
    except (KeyError, ValueError, TypeError) as exc:
        raise UnionSetupError(
            f"{path} needs union_id and relay_url, languages as codes and "
            f"allow_plaintext_store (if there) as true or false ({exc})"
        ) from exc
    try:
        box = read_secret(directory / BOX_KEY)
        sign = read_secret(directory / SIGN_KEY)
    except KeyFileError as exc:
        raise UnionSetupError(str(exc)) from exc
    for file, public in (
        (BOX_KEY, bytes(nacl.public.PrivateKey(box).public_key)),
        (SIGN_KEY, SigningKey.from_seed(sign).verify_key.key),
    ):
        published = published_key_name(public)
        if published is not None:
            raise UnionSetupError(
                f"{directory / file} holds {published}, whose private half is published with "
                "vessel-relay: anyone could open this union's reports or sign as it. Make new "
                f"keys in a new directory: vessel-relay union init --dir NEW --id {union_id}"
            )
    return UnionIdentity(
        directory,
        union_id,
        name,
        relay_url,
        box,
        SigningKey.from_seed(sign),
        languages,
        allow_plaintext_store=allow_plaintext,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync the folder."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
