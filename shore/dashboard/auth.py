"""Operator accounts of the dashboard: ``operators.txt`` in the relay's data directory.

One line per operator, mode 0600, in the format of :mod:`common.passwords` (Argon2id; lines
written with scrypt before 2026-12 still sign in and are upgraded then)::

    alice:$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>

``vessel-relay shore operator add alice`` writes a line (the password is read from the
terminal or stdin, never from the command line).
"""

from __future__ import annotations

from pathlib import Path

from common.passwords import (
    PasswordBook,
    PasswordFileError,
    PasswordRefused,
    hash_password,
    set_password,
    verify_password,
)

__all__ = [
    "OperatorFileError",
    "add_operator",
    "hash_password",
    "read_operators",
    "verify_password",
]

ADD_HINT = "add an operator with 'vessel-relay shore operator add NAME'"


class OperatorFileError(ValueError):
    """The operators file cannot be read or written, has a malformed line, or a new
    operator's name or password is refused (the message says which and what to do)."""


def read_operators(path: Path) -> PasswordBook:
    """Operator name -> stored hash, backed by ``path`` (upgraded hashes are written back)."""
    try:
        return PasswordBook.load(path, add_hint=ADD_HINT)
    except PasswordFileError as exc:
        raise OperatorFileError(str(exc)) from exc


def add_operator(path: Path, name: str, password: str) -> None:
    """Add or replace an operator (Argon2id; the file is rewritten atomically, mode 0600)."""
    try:
        set_password(path, name, password, add_hint=ADD_HINT)
    except (PasswordFileError, PasswordRefused) as exc:
        raise OperatorFileError(str(exc)) from exc
