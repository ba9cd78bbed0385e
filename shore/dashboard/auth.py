"""Operator accounts of the dashboard: a file of scrypt password hashes, one line each.

``operators.txt`` in the relay's data directory (mode 0600)::

    alice:scrypt:16384:8:1:<salt hex>:<hash hex>

``vessel-relay shore operator add alice`` writes a line (the password is read from the
terminal or stdin, never from the command line). Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

_N, _R, _P = 16384, 8, 1


class OperatorFileError(ValueError):
    """The operators file cannot be read or has a malformed line (the message says which)."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form of a password (scrypt, random salt)."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt:{_N}:{_R}:{_P}:{salt.hex()}:{digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time on the digest)."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split(":")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=bytes.fromhex(salt_hex),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, bytes.fromhex(digest_hex))


def read_operators(path: Path) -> dict[str, str]:
    """Operator name -> stored hash."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OperatorFileError(
            f"cannot read {path}: {exc.strerror}; add an operator with "
            "'vessel-relay shore operator add NAME'"
        ) from exc
    operators: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name or not stored.startswith("scrypt:"):
            raise OperatorFileError(f"{path} line {number}: expected NAME:scrypt:...")
        operators[name] = stored
    return operators


def add_operator(path: Path, name: str, password: str) -> None:
    """Add or replace an operator (the file is rewritten atomically, mode 0600)."""
    if not name or ":" in name or any(c.isspace() for c in name):
        raise OperatorFileError(f"operator name {name!r}: use letters and digits, no ':'")
    if len(password) < 10:
        raise OperatorFileError("the password must have at least 10 characters")
    operators = read_operators(path) if path.exists() else {}
    operators[name] = hash_password(password)
    body = "".join(f"{who}:{stored}\n" for who, stored in sorted(operators.items()))
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
