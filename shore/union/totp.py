"""Caseworkers' second factor: a TOTP code (RFC 6238, ``pyotp``) besides the password.

Every caseworker enrols once (``vessel-relay union user add NAME`` or ``union user totp
NAME``): a random 160-bit secret is written to ``caseworkers-totp.txt`` in the union's
directory (0600, one ``name:BASE32`` line each, rewritten atomically) and shown once as
an ``otpauth://`` URI for the caseworker's authenticator app. Sign-in then needs the
password *and* the current six-digit code (:class:`common.logins.Logins` asks
:meth:`SecondFactorBook.accept`, under the same guard that counts wrong passwords).

A code is accepted for its 30-second step and one step either side (clock drift), and
only once: the step a caseworker last signed in with is remembered, and a code of that
step or an earlier one is refused (someone who watched the code cannot replay it). That
memory lives in the process; after a restart a code may be used once more within its
90 seconds. A caseworker who is not enrolled cannot sign in at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pyotp

from common.passwords import PasswordFileError, check_name, write_password_file

__all__ = [
    "TOTP_FILE",
    "SecondFactorBook",
    "SecondFactorFileError",
    "enrol",
    "read_second_factors",
    "totp_path",
]

TOTP_FILE = "caseworkers-totp.txt"
#: Steps either side of now that are accepted (30 s each: clock drift of a phone).
DRIFT_STEPS = 1
_ISSUER = "vessel-relay union"


class SecondFactorFileError(ValueError):
    """``caseworkers-totp.txt`` cannot be read or written, or has a malformed line."""


def totp_path(directory: Path) -> Path:
    """Where the caseworkers' TOTP secrets live (the union's directory, 0600)."""
    return directory / TOTP_FILE


def read_second_factors(path: Path) -> dict[str, str]:
    """Caseworker name -> base32 TOTP secret (an absent file: nobody enrolled)."""
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecondFactorFileError(f"cannot read {path}: {exc}") from exc
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        if not sep or not name or not _is_secret(secret):
            raise SecondFactorFileError(
                f"{path} line {number}: expected NAME:BASE32SECRET; remove the line and "
                f"enrol the caseworker again: vessel-relay union user totp NAME"
            )
        found[name] = secret
    return found


def _is_secret(secret: str) -> bool:
    try:
        pyotp.TOTP(secret).byte_secret()
    except (ValueError, TypeError):
        return False
    return len(secret) >= 16


def enrol(directory: Path, name: str) -> str:
    """Give ``name`` a new TOTP secret (replacing any old one); returns the otpauth URI
    to show once (a QR code or typed into the authenticator app)."""
    try:
        check_name(name)
    except ValueError as exc:
        raise SecondFactorFileError(str(exc)) from exc
    path = totp_path(directory)
    secrets_by_name = read_second_factors(path)
    secret = pyotp.random_base32(32)
    secrets_by_name[name] = secret
    try:
        write_password_file(path, secrets_by_name)
    except PasswordFileError as exc:
        raise SecondFactorFileError(str(exc)) from exc
    return provisioning_uri(name, secret)


def provisioning_uri(name: str, secret: str) -> str:
    """The ``otpauth://totp/...`` URI of ``name``'s secret."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=_ISSUER)


class SecondFactorBook:
    """The enrolled caseworkers' TOTP secrets and the steps they last used (thread-safe)."""

    def __init__(
        self, secrets_by_name: Mapping[str, str], clock: Callable[[], float] = time.time
    ) -> None:
        self._secrets = dict(secrets_by_name)
        self._last_step: dict[str, int] = {}
        self._lock = threading.Lock()
        self.clock = clock

    @classmethod
    def load(cls, directory: Path, clock: Callable[[], float] = time.time) -> SecondFactorBook:
        """The book of the union's ``caseworkers-totp.txt``."""
        return cls(read_second_factors(totp_path(directory)), clock)

    def enrolled(self, name: str) -> bool:
        """Whether ``name`` has a second factor (without one, no sign-in)."""
        return name in self._secrets

    def accept(self, name: str, code: str, *, spend: bool) -> bool:
        """Whether ``code`` is ``name``'s current code, not used before; ``spend``: mark
        its step used (only when the password was right too)."""
        secret = self._secrets.get(name)
        code = code.strip().replace(" ", "")
        if secret is None or len(code) != 6 or not code.isascii() or not code.isdigit():
            return False
        totp = pyotp.TOTP(secret)
        now = self.clock()
        step = totp.timecode(now)
        with self._lock:
            last = self._last_step.get(name, -1)
            for offset in range(-DRIFT_STEPS, DRIFT_STEPS + 1):
                candidate = step + offset
                if candidate <= last:
                    continue
                if totp.verify(code, for_time=candidate * totp.interval):
                    if spend:
                        self._last_step[name] = candidate
                    return True
        return False
