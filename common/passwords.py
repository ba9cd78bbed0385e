"""Passwords: how operators' and caseworkers' passwords are stored, checked and upgraded.

One file of logins per web app (the relay's ``operators.txt``, the union's
``caseworkers.txt``), mode 0600, one line per person::

    amara:$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>
    thida:scrypt:16384:8:1:<salt hex>:<hash hex>        (written before 2026-12; still read)

New passwords are hashed with Argon2id (argon2-cffi) at RFC 9106's second recommended
setting: 64 MiB of memory, 3 passes, 4 lanes. That is above the OWASP Password Storage
Cheat Sheet's minimum for Argon2id (19 MiB, 2 passes, 1 lane). A line written with scrypt
(or with weaker Argon2 settings) still signs its person in, and is rewritten with the
current setting at that successful sign-in (:meth:`PasswordBook.check`).

Hashing costs ~0.1 s of CPU and 64 MiB of memory, so :class:`PasswordBook` never does it
on the event loop: each check runs in a thread (``asyncio.to_thread``), at most
:data:`CONCURRENT_CHECKS` at a time per book, so a burst of sign-ins cannot take more than
a few hundred MiB. A name that does not exist is checked against a dummy hash, so the answer
takes as long as for a real name and says nothing about which names exist.

Errors: :class:`PasswordFileError` (the file is unreadable or a line malformed; the message
names the file, the line and what to do) and :class:`PasswordRefused` (a new name or
password does not meet the rules), both ``ValueError``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import argon2
from argon2 import PasswordHasher, profiles

__all__ = [
    "CONCURRENT_CHECKS",
    "MIN_PASSWORD_CHARS",
    "PARAMETERS",
    "PasswordBook",
    "PasswordFileError",
    "PasswordRefused",
    "hash_password",
    "needs_upgrade",
    "read_password_file",
    "set_password",
    "verify_password",
    "write_password_file",
]

log = logging.getLogger(__name__)

#: Argon2id, t=3, m=64 MiB, p=4 (RFC 9106 section 4, second recommended option).
PARAMETERS = profiles.RFC_9106_LOW_MEMORY
#: The shortest password a person may choose.
MIN_PASSWORD_CHARS = 10
#: Longest password taken (hashing is bounded anyway; this keeps forms and files sane).
MAX_PASSWORD_CHARS = 1024
#: Longest login name.
MAX_NAME_CHARS = 64
#: Password checks running at once per book (each takes 64 MiB while it runs).
CONCURRENT_CHECKS = 2

_HASHER = PasswordHasher.from_parameters(PARAMETERS)
#: The scrypt hashes written before Argon2id: ``scrypt:N:r:p:salt:hash`` (hex).
_SCRYPT = "scrypt"
#: scrypt settings accepted when reading an old line (a corrupt line cannot ask for GiBs).
_SCRYPT_MAX_N, _SCRYPT_MAX_R, _SCRYPT_MAX_P = 1 << 20, 32, 16


class PasswordFileError(ValueError):
    """The file of logins cannot be read or written, or has a malformed line."""


class PasswordRefused(ValueError):
    """A new login name or password does not meet the rules (the message says which)."""


def hash_password(password: str) -> str:
    """The stored form of a new password: Argon2id at :data:`PARAMETERS`, random salt.

    Blocking (about 0.1 s); from async code use :meth:`PasswordBook.check` or a thread.
    """
    return _HASHER.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (Argon2id, or an old scrypt line). Blocking.

    A malformed ``stored`` never matches (it is not an error here: the file reader says
    what is wrong with a line), nor does text that is not valid Unicode.
    """
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if stored.startswith("$argon2"):
        try:
            return _HASHER.verify(stored, password)
        except argon2.exceptions.VerificationError:
            return False
        except (argon2.exceptions.InvalidHashError, ValueError):
            return False
    if stored.startswith(_SCRYPT + ":"):
        return _verify_scrypt(password, stored)
    return False


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        _, n_text, r_text, p_text, salt_hex, digest_hex = stored.split(":")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if not (1 < n <= _SCRYPT_MAX_N and 0 < r <= _SCRYPT_MAX_R and 0 < p <= _SCRYPT_MAX_P):
        return False
    if not expected or len(expected) > 64:
        return False
    try:
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=n,
            r=r,
            p=p,
            dklen=len(expected),
            maxmem=256 * r * n + (1 << 20),
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def needs_upgrade(stored: str) -> bool:
    """Whether ``stored`` was written with an older method or weaker settings."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except (argon2.exceptions.InvalidHashError, ValueError):
        return True


def _is_stored_form(stored: str) -> bool:
    if stored.startswith("$argon2id$"):
        try:
            argon2.extract_parameters(stored)
        except (argon2.exceptions.InvalidHashError, ValueError):
            return False
        return True
    if stored.startswith(_SCRYPT + ":"):
        return len(stored.split(":")) == 6
    return False


def check_name(name: str) -> str:
    """``name`` if it can be a login name, else :class:`PasswordRefused` saying why."""
    if (
        not name
        or len(name) > MAX_NAME_CHARS
        or ":" in name
        or any(c.isspace() or not c.isprintable() for c in name)
    ):
        raise PasswordRefused(
            f"login name {name[:MAX_NAME_CHARS]!r}: use up to {MAX_NAME_CHARS} letters and "
            "digits, no ':' or spaces"
        )
    return name


def check_new_password(password: str) -> str:
    """``password`` if a person may choose it, else :class:`PasswordRefused` saying why."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordRefused(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise PasswordRefused(f"the password may have at most {MAX_PASSWORD_CHARS} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordRefused("the password is not valid Unicode text") from None
    return password


def read_password_file(path: Path, *, add_hint: str) -> dict[str, str]:
    """Login name -> stored hash, from ``path``; ``add_hint`` says how to add a login."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PasswordFileError(f"cannot read {path}: {reason}; {add_hint}") from exc
    logins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name or not _is_stored_form(stored):
            raise PasswordFileError(
                f"{path} line {number}: expected NAME:scrypt:... or NAME:$argon2id$...; "
                f"remove the line and {add_hint}"
            )
        logins[name] = stored
    return logins


def write_password_file(path: Path, logins: Mapping[str, str]) -> None:
    """Write ``logins`` to ``path`` atomically, mode 0600 (temporary file, fsync, rename,
    fsync of the directory): a crash leaves the old file or the new one, never half."""
    body = "".join(f"{name}:{stored}\n" for name, stored in sorted(logins.items()))
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise PasswordFileError(f"cannot write {path}: {exc.strerror}") from exc


def set_password(path: Path, name: str, password: str, *, add_hint: str) -> None:
    """Add a login or reset its password (Argon2id); the file is rewritten atomically, 0600.

    Raises :class:`PasswordRefused` (name or password not allowed; nothing written) or
    :class:`PasswordFileError`.
    """
    check_name(name)
    check_new_password(password)
    logins = read_password_file(path, add_hint=add_hint) if path.exists() else {}
    logins[name] = hash_password(password)
    write_password_file(path, logins)


class PasswordBook(Mapping[str, str]):
    """The logins of one web app: name -> stored hash, and the one way to check a password.

    Built from a mapping (tests) or loaded from its file (:meth:`load`); only a book with a
    file writes upgraded hashes back. Read-only as a mapping.
    """

    def __init__(self, logins: Mapping[str, str], path: Path | None = None) -> None:
        self._logins = dict(logins)
        self.path = path
        self._write_lock = threading.Lock()
        self._checks: asyncio.Semaphore | None = None
        self._dummy: str | None = None

    @classmethod
    def load(cls, path: Path, *, add_hint: str) -> PasswordBook:
        """The book of ``path`` (see :func:`read_password_file`)."""
        return cls(read_password_file(path, add_hint=add_hint), path)

    def __getitem__(self, name: str) -> str:
        return self._logins[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._logins)

    def __len__(self) -> int:
        return len(self._logins)

    async def check(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s; checked in a thread, never on the event loop.

        An unknown name costs the same as a known one. After a successful check of a hash
        written with an older method, the password is hashed anew with Argon2id and the file
        rewritten (an upgrade that cannot be written is logged and tried again next time;
        the sign-in still succeeds).
        """
        if self._checks is None:
            self._checks = asyncio.Semaphore(CONCURRENT_CHECKS)
        async with self._checks:
            stored = self._logins.get(name)
            if stored is None:
                await asyncio.to_thread(verify_password, password, await self._dummy_hash())
                return False
            if not await asyncio.to_thread(verify_password, password, stored):
                return False
            if needs_upgrade(stored):
                await asyncio.to_thread(self._upgrade, name, stored, password)
        return True

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await asyncio.to_thread(hash_password, secrets.token_urlsafe(16))
        return self._dummy

    def _upgrade(self, name: str, old: str, password: str) -> None:
        new = hash_password(password)
        with self._write_lock:
            if self._logins.get(name) != old:
                return  # changed meanwhile (another sign-in upgraded it)
            if self.path is not None:
                try:
                    on_disk = read_password_file(self.path, add_hint="")
                    if on_disk.get(name) == old:
                        on_disk[name] = new
                        write_password_file(self.path, on_disk)
                    # else: reset by an administrator since we loaded it; leave theirs
                except PasswordFileError as exc:
                    log.warning("password hash upgrade not written (next sign-in retries): %s", exc)
                    return
            self._logins[name] = new
            log.info("password hash upgraded to Argon2id for one login")
