"""Key files: 0600 files holding a 32-byte secret as hex, written atomically.

Also the list of public keys that protect nothing (:data:`PUBLISHED_DEMO_KEYS`): the
config loaders of both sides refuse them outside the demo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

import typer

from common.exits import EX_CONFIG, EX_USAGE, fail
from protocol.signing import SigningKey

#: Public keys whose private halves are published (made from the demo's seeds in
#: :mod:`vessel_relay.demo.keys`; a test pins this list to them). A vessel or relay that
#: trusts or signs with one of these trusts or signs with a key anyone holds.
PUBLISHED_DEMO_KEYS: Mapping[bytes, str] = MappingProxyType(
    {
        bytes.fromhex(
            "ad794a8a678a1868f99319067f48ad74889f8d53500e8540f69a7d62c991fb7e"
        ): "the demo shore key (Ed25519)",
        bytes.fromhex(
            "77ac9990e35a7a2a889f66b03aec309a381bd0ef53c2ca73644cee1e377c8b7a"
        ): "the demo shore key (X25519)",
        bytes.fromhex(
            "76280d80e41551a7132d34ba8e5aa9f4d50cb612d9e914546800c7e3e9a28028"
        ): "the demo union key (Ed25519)",
        bytes.fromhex(
            "2aa7fcb919ce4770085d713ad88338fde61a98cbd23b60080ff544b2a7b20928"
        ): "the demo union key (X25519)",
    }
)


class KeyFileError(Exception):
    """A key file is missing, unreadable, too open or malformed (a configuration error)."""

    exit_code = EX_CONFIG


class KeyFileExists(KeyFileError):
    """A new key was asked for where a key file already is (nothing is overwritten)."""

    exit_code = EX_USAGE


def published_key_name(public_key: bytes) -> str | None:
    """The name of a published demo key (see :data:`PUBLISHED_DEMO_KEYS`), or None."""
    return PUBLISHED_DEMO_KEYS.get(bytes(public_key))


def signing_key_file_name(path: Path) -> str | None:
    """If the signing key file at ``path`` holds a published demo seed, the key's name.

    A file that is missing or unreadable is not judged here (None): whoever loads the key
    reports that with :class:`KeyFileError`.
    """
    try:
        seed = read_secret(path)
    except KeyFileError:
        return None
    return published_key_name(SigningKey.from_seed(seed).verify_key.key)


def write_secret(path: Path, secret: bytes) -> None:
    """Write ``secret`` as hex to a new 0600 file; refuse to overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileExists(
            f"{path} already exists; move it away first to make a new key"
        ) from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_secret(path: Path) -> bytes:
    """Read a hex secret written by :func:`write_secret`."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} does not hold hex digits") from None
    if path.stat().st_mode & 0o077:
        raise KeyFileError(f"key file {path} is readable by others; run: chmod 600 {path}")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"key file {path} does not hold hex digits") from None
    if len(secret) != 32:
        raise KeyFileError(f"key file {path} holds {len(secret)} bytes, not 32")
    return secret


def new_signing_key(path: Path) -> SigningKey:
    """Create a new Ed25519 signing key in ``path`` and return it."""
    key = SigningKey.from_seed(os.urandom(32))
    write_secret(path, key.seed)
    return key


def keygen_command(owner: str, group: str) -> Callable[[Path], None]:
    """A ``keygen`` command for one side (``owner`` is "vessel" or "shore")."""

    def keygen(
        out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the private key.")],
    ) -> None:
        try:
            key = new_signing_key(out)
        except KeyFileError as exc:
            raise fail(exc) from exc
        typer.echo(f"private key: {out}")
        typer.echo(f"public key:  {key.verify_key.hex()}")

    keygen.__doc__ = (
        f"Make a new {owner} signing key (a 0600 file) and print its public key.\n\n"
        f"Example: vessel-relay {group} keygen -o {owner}.key"
    )
    return keygen
