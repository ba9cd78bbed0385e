"""Passwords: Argon2id for new hashes, old scrypt lines upgraded at sign-in, never on the loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
from pathlib import Path

import argon2
import pytest

import common.passwords as passwords
from common.passwords import (
    PasswordBook,
    PasswordFileError,
    PasswordRefused,
    hash_password,
    needs_upgrade,
    read_password_file,
    set_password,
    verify_password,
)

HINT = "add a login with 'test add NAME'"


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def old_scrypt_line(password: str, salt: bytes = b"0123456789abcdef") -> str:
    """A stored hash exactly as shore/dashboard/auth.py wrote it before Argon2id."""
    digest = hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1, dklen=32)
    return f"scrypt:16384:8:1:{salt.hex()}:{digest.hex()}"


def test_new_hashes_are_argon2id_at_or_above_owasp_advice() -> None:
    """A new password is stored as Argon2id with at least OWASP's minimum (19 MiB, 2 passes),
    salted (two hashes of one password differ), and checks right and wrong."""
    stored = hash_password("tide table 1983")
    parameters = argon2.extract_parameters(stored)
    assert stored.startswith("$argon2id$")
    assert parameters.type is argon2.Type.ID
    assert parameters.memory_cost >= 19 * 1024
    assert parameters.time_cost >= 2
    assert hash_password("tide table 1983") != stored
    assert verify_password("tide table 1983", stored)
    assert not verify_password("tide table 1984", stored)
    assert not needs_upgrade(stored)


def test_old_scrypt_hashes_still_verify_and_ask_for_an_upgrade() -> None:
    """A line written before Argon2id checks right and wrong and is marked for upgrade; a
    corrupt line (or one asking scrypt for gigabytes) never matches and never raises."""
    stored = old_scrypt_line("a long passphrase")
    assert verify_password("a long passphrase", stored)
    assert not verify_password("a long passphras", stored)
    assert needs_upgrade(stored)
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("x" * 12)
    assert needs_upgrade(weak)
    for corrupt in (
        "scrypt:16384:8:1:zz:00",
        "scrypt:1073741824:8:1:00:00",
        "scrypt:16384:8",
        "$argon2id$garbage",
        "plain",
    ):
        assert not verify_password("a long passphrase", corrupt)
    assert not verify_password("\ud800 lone surrogate", stored)


def test_password_file_rules_and_errors_say_what_to_do(tmp_path: Path) -> None:
    """Adding a login writes a 0600 file; a short password, a name with ':' or spaces, and a
    malformed line are refused with a sentence naming the fix."""
    path = tmp_path / "logins.txt"
    set_password(path, "amara", "a long passphrase", add_hint=HINT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_password_file(path, add_hint=HINT)["amara"].startswith("$argon2id$")
    with pytest.raises(PasswordRefused, match="at least 10 characters"):
        set_password(path, "bo", "short", add_hint=HINT)
    for name in ("a:b", "two words", "", "x" * 65):
        with pytest.raises(PasswordRefused, match="login name"):
            set_password(path, name, "a long passphrase", add_hint=HINT)
    path.write_text("amara plain-password\n")
    with pytest.raises(PasswordFileError, match=r"line 1: expected NAME:scrypt.*test add NAME"):
        read_password_file(path, add_hint=HINT)
    with pytest.raises(PasswordFileError, match="test add NAME"):
        read_password_file(tmp_path / "missing.txt", add_hint=HINT)


async def test_an_old_scrypt_login_signs_in_and_is_upgraded_in_the_file(tmp_path: Path) -> None:
    """An operator whose line was written with scrypt signs in with their password; the file
    now holds an Argon2id hash for them (still 0600, the other line untouched), and the same
    password signs in again. A wrong password upgrades nothing."""
    path = tmp_path / "operators.txt"
    old = old_scrypt_line("a long passphrase")
    other = hash_password("another passphrase")
    path.write_text(f"amara:{old}\nbo:{other}\n")
    os.chmod(path, 0o600)
    book = PasswordBook.load(path, add_hint=HINT)

    assert not await book.check("amara", "wrong passphrase")
    assert read_password_file(path, add_hint=HINT)["amara"] == old

    assert await book.check("amara", "a long passphrase")
    on_disk = read_password_file(path, add_hint=HINT)
    assert on_disk["amara"].startswith("$argon2id$")
    assert on_disk["bo"] == other
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert book["amara"] == on_disk["amara"]
    assert files_in(tmp_path) == ["operators.txt"]  # no temporary file left behind
    assert await PasswordBook.load(path, add_hint=HINT).check("amara", "a long passphrase")


async def test_an_upgrade_leaves_a_password_reset_meanwhile_alone(tmp_path: Path) -> None:
    """If an administrator reset the operator's password after the app loaded the file, the
    old password's successful sign-in does not overwrite the new line."""
    path = tmp_path / "operators.txt"
    path.write_text(f"amara:{old_scrypt_line('a long passphrase')}\n")
    book = PasswordBook.load(path, add_hint=HINT)
    set_password(path, "amara", "the new passphrase", add_hint=HINT)
    reset = read_password_file(path, add_hint=HINT)["amara"]
    assert await book.check("amara", "a long passphrase")
    assert read_password_file(path, add_hint=HINT)["amara"] == reset


async def test_checks_run_off_the_event_loop_at_most_two_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While passwords are being checked, the event loop keeps running other work; a burst
    of five sign-ins runs at most two hashes at once (each takes 64 MiB)."""
    release = threading.Event()
    two_running = asyncio.Event()
    loop = asyncio.get_running_loop()
    running = 0
    most = 0
    lock = threading.Lock()
    real = passwords.verify_password

    def slow_verify(password: str, stored: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            if running == 2:
                loop.call_soon_threadsafe(two_running.set)
        try:
            assert release.wait(10), "the test never released the hash"
            return real(password, stored)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(passwords, "verify_password", slow_verify)
    book = PasswordBook({"amara": hash_password("a long passphrase")})
    checks = [asyncio.ensure_future(book.check("amara", "a long passphrase")) for _ in range(5)]
    await two_running.wait()  # the loop turns while the hashing threads run
    for _ in range(50):  # ... and keeps turning while they are busy
        await asyncio.sleep(0)
    assert running == 2
    assert not any(check.done() for check in checks)
    release.set()
    assert await asyncio.gather(*checks) == [True] * 5
    assert most == 2


async def test_an_unknown_name_costs_a_hash_like_a_known_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name that does not exist is checked against a dummy hash: the same work, False."""
    calls: list[str] = []
    real = passwords.verify_password

    def counting(password: str, stored: str) -> bool:
        calls.append(stored[:9])
        return real(password, stored)

    monkeypatch.setattr(passwords, "verify_password", counting)
    book = PasswordBook({"amara": hash_password("a long passphrase")})
    assert not await book.check("nobody", "a long passphrase")
    assert not await book.check("amara", "wrong passphrase")
    assert calls == ["$argon2id"] * 2
