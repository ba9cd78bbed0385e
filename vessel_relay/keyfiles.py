"""Key files: 0600 files holding a 32-byte secret as hex, written atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from protocol.signing import SigningKey


class KeyFileError(Exception):
    """A key file is missing, unreadable, too open or malformed."""


def write_secret(path: Path, secret: bytes) -> None:
    """Write ``secret`` as hex to a new 0600 file; refuse to overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; move it away first to make a new key") from None
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
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"private key: {out}")
        typer.echo(f"public key:  {key.verify_key.hex()}")

    keygen.__doc__ = (
        f"Make a new {owner} signing key (a 0600 file) and print its public key.\n\n"
        f"Example: vessel-relay {group} keygen -o {owner}.key"
    )
    return keygen
