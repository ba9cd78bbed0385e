"""Operators' and caseworkers' logins: throttled per name, Argon2id, old hashes upgraded,
hashing off the event loop, a token on every form (the login form too)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from pathlib import Path

import argon2
import httpx
import pytest

import common.passwords as passwords
from common.passwords import PasswordBook, hash_password
from common.serving import AsgiServer
from common.signins import SignInGuard
from shore.dashboard.auth import read_operators
from shore.union.web import read_caseworkers
from tests.kit.clock import FakeClock
from tests.shore.doors import (
    PASSWORD,
    Door,
    client_for,
    dashboard_door,
    form_token,
    log_in,
    union_web_door,
)

DOORS = [dashboard_door, union_web_door]
IDS = ["operators (dashboard)", "caseworkers (union web app)"]


@pytest.fixture
def evaluated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords whose hash was computed, in order (cheap Argon2id parameters)."""
    monkeypatch.setattr(
        passwords, "_HASHER", argon2.PasswordHasher(time_cost=1, memory_cost=256, parallelism=1)
    )
    seen: list[str] = []
    real = passwords.verify_password

    def counting(password: str, stored: str) -> bool:
        seen.append(password)
        return real(password, stored)

    monkeypatch.setattr(passwords, "verify_password", counting)
    return seen


async def try_login(
    client: httpx.AsyncClient, door: Door, name: str, password: str
) -> httpx.Response:
    token = await form_token(client)
    return await client.post("/login", data=door.login_form(name, password, token))


@pytest.mark.parametrize("make", DOORS, ids=IDS)
async def test_wrong_passwords_pause_one_name_until_the_back_off_passes(
    make: object, tmp_path: Path, evaluated: list[str]
) -> None:
    """Five wrong passwords for one name are each evaluated and answered 401; then even the
    right password is refused unevaluated with 429, a page saying when to try again and a
    Retry-After; a colleague signs in meanwhile; a made-up name is paused with the very same
    answers; after the five-minute back-off the right password works."""
    clock = FakeClock()
    assert callable(make)
    async with make(tmp_path, guard=SignInGuard(clock=clock)) as door:
        async with client_for(door.app, "10.2.0.1") as client:
            for attempt in range(5):
                answer = await try_login(client, door, door.login_name, f"wrong {attempt}")
                assert answer.status_code == 401
                assert "Wrong" in answer.text
            assert len(evaluated) == 5
            paused = await try_login(client, door, door.login_name, PASSWORD)
            assert paused.status_code == 429
            assert "Try again in 5 minute(s)" in paused.text
            assert paused.headers["retry-after"] == "300"
            assert len(evaluated) == 5  # the right password was not even checked

        async with client_for(door.app, "10.2.0.2") as colleague:
            answer = await try_login(colleague, door, "colleague", "whatever it is")
            assert answer.status_code == 401  # unknown name: same answer as a wrong password
            for attempt in range(4):
                await try_login(colleague, door, "colleague", f"guess {attempt}")
            ghost = await try_login(colleague, door, "colleague", "and another")
            assert ghost.status_code == 429
            assert ghost.headers["retry-after"] == "300"

        clock.now += 300
        async with client_for(door.app, "10.2.0.1") as client:
            token = await log_in(client, door)
            assert token


@pytest.mark.parametrize("make", DOORS, ids=IDS)
async def test_other_names_are_unaffected_by_a_paused_one(
    make: object, tmp_path: Path, evaluated: list[str]
) -> None:
    """While one login name is paused, another person with the right password signs in
    from the same office address."""
    assert callable(make)
    books = {"amara": hash_password(PASSWORD), "thida": hash_password(PASSWORD)}
    books["bo"] = books["amara"]
    kwargs = {"operators": books} if make is dashboard_door else {"caseworkers": books}
    async with make(tmp_path, **kwargs) as door, client_for(door.app, "10.3.0.1") as client:
        for attempt in range(5):
            await try_login(client, door, door.login_name, f"wrong {attempt}")
        assert (await try_login(client, door, door.login_name, PASSWORD)).status_code == 429
        assert (await try_login(client, door, "bo", PASSWORD)).status_code == 303


@pytest.mark.parametrize("make", DOORS, ids=IDS)
async def test_login_and_logout_need_the_form_token(make: object, tmp_path: Path) -> None:
    """A login form posted from another site (no session, no token) is refused before any
    password is checked; a signed-in person is not signed out by a forged logout."""
    assert callable(make)
    async with make(tmp_path) as door, client_for(door.app) as client:
        forged = await client.post(
            "/login", data={door.login_field: door.login_name, "password": PASSWORD}
        )
        assert forged.status_code == 403
        assert "expired" in forged.text
        await log_in(client, door)
        refused = await client.post("/logout", data={"csrf": "not the token"})
        assert refused.status_code == 403
        assert (await client.get("/")).status_code == 200


def scrypt_line(name: str, password: str) -> str:
    salt = bytes(range(16))
    digest = hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1, dklen=32)
    return f"{name}:scrypt:16384:8:1:{salt.hex()}:{digest.hex()}\n"


async def test_an_operator_with_an_old_scrypt_hash_signs_in_and_is_upgraded(
    tmp_path: Path,
) -> None:
    """An operators file written before Argon2id: the operator signs in to the dashboard
    with the same password, and the file now holds an Argon2id hash for them (0600)."""
    path = tmp_path / "operators.txt"
    path.write_text(scrypt_line("amara", PASSWORD))
    path.chmod(0o600)
    async with (
        dashboard_door(tmp_path, operators=read_operators(path)) as door,
        client_for(door.app) as client,
    ):
        await log_in(client, door)
    stored = read_operators(path)["amara"]
    assert stored.startswith("$argon2id$")
    assert path.stat().st_mode & 0o777 == 0o600


async def test_a_caseworker_with_an_old_scrypt_hash_signs_in_and_is_upgraded(
    tmp_path: Path,
) -> None:
    """The same for the union's caseworkers file."""
    async with union_web_door(tmp_path) as door:
        directory = tmp_path / "union"
        path = directory / "caseworkers.txt"
        path.write_text(scrypt_line("thida", PASSWORD))
        path.chmod(0o600)
        book = read_caseworkers(directory)
        assert isinstance(book, PasswordBook)
    async with (
        union_web_door(tmp_path / "again", caseworkers=book) as door,
        client_for(door.app) as client,
    ):
        await log_in(client, door)
    assert read_caseworkers(directory)["thida"].startswith("$argon2id$")


@pytest.mark.parametrize("make", DOORS, ids=IDS)
async def test_a_page_is_served_while_a_password_is_being_hashed(
    make: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over loopback with uvicorn: while one person's password is being hashed (held in its
    thread by the test), another person's page loads; then the sign-in completes."""
    release = threading.Event()
    hashing = asyncio.Event()
    loop = asyncio.get_running_loop()
    real = passwords.verify_password

    def held(password: str, stored: str) -> bool:
        loop.call_soon_threadsafe(hashing.set)
        assert release.wait(20), "the test never released the hash"
        return real(password, stored)

    monkeypatch.setattr(passwords, "verify_password", held)
    assert callable(make)
    async with make(tmp_path) as door:
        server = AsgiServer(door.app, "127.0.0.1", 0, name=door.name)
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            async with (
                httpx.AsyncClient(base_url=base) as first,
                httpx.AsyncClient(base_url=base) as second,
            ):
                token = await form_token(first)
                signing_in = asyncio.ensure_future(
                    first.post("/login", data=door.login_form(door.login_name, PASSWORD, token))
                )
                async with asyncio.timeout(10):
                    await hashing.wait()
                    page = await second.get("/login")
                assert page.status_code == 200
                assert re.search(r'name="csrf"', page.text)
                assert not signing_in.done()
                release.set()
                async with asyncio.timeout(20):
                    answer = await signing_in
                assert answer.status_code == 303
        finally:
            release.set()
            await server.stop()
