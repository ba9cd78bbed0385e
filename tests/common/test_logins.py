"""The sign-in rule of the web apps, the CSRF check they share, and the uvicorn door helper."""

from __future__ import annotations

import asyncio
import socket

import argon2
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import common.passwords as passwords
from common.csrf import csrf_ok, csrf_token, new_session_token
from common.logins import ADDRESS_POLICY, Logins
from common.passwords import PasswordBook, hash_password
from common.serving import AsgiServer
from common.signins import SignInGuard, SignInThrottled
from tests.kit.clock import FakeClock


@pytest.fixture
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at a tiny cost, so tests of counting do not spend seconds hashing."""
    monkeypatch.setattr(
        passwords, "_HASHER", argon2.PasswordHasher(time_cost=1, memory_cost=256, parallelism=1)
    )


@pytest.mark.usefixtures("cheap_hashing")
async def test_five_wrong_passwords_pause_the_name_then_the_right_one_waits() -> None:
    """Five wrong passwords for one name are evaluated; the sixth try, right password or
    not, is refused unevaluated until the pause passes; another name signs in meanwhile; a
    name that does not exist is counted and paused the same way."""
    clock = FakeClock()
    logins = Logins(
        PasswordBook({"amara": hash_password("right passphrase"), "bo": hash_password("bo's one")}),
        SignInGuard(clock=clock),
        SignInGuard(ADDRESS_POLICY, clock=clock),
    )
    for _ in range(5):
        assert not await logins.sign_in("amara", "wrong passphrase", "10.0.0.1")
    with pytest.raises(SignInThrottled) as paused:
        await logins.sign_in("amara", "right passphrase", "10.0.0.2")
    assert 299 <= paused.value.retry_after_s <= 300
    assert await logins.sign_in("bo", "bo's one", "10.0.0.1")
    for _ in range(5):
        assert not await logins.sign_in("ghost", "anything at all", "10.0.0.3")
    with pytest.raises(SignInThrottled):
        await logins.sign_in("ghost", "anything at all", "10.0.0.3")
    clock.now += 300
    assert await logins.sign_in("amara", "right passphrase", "10.0.0.2")


@pytest.mark.usefixtures("cheap_hashing")
async def test_one_address_guessing_across_many_names_is_paused() -> None:
    """An address that tries wrong passwords on many names is paused after twenty, for
    every name; its own right password in between does not wipe that count; other
    addresses sign in as usual."""
    clock = FakeClock()
    logins = Logins(
        PasswordBook({"amara": hash_password("right passphrase")}),
        SignInGuard(clock=clock),
        SignInGuard(ADDRESS_POLICY, clock=clock),
    )
    for index in range(19):
        assert not await logins.sign_in(f"name{index}", "guess", "192.0.2.9")
    assert await logins.sign_in("amara", "right passphrase", "192.0.2.9")
    assert not await logins.sign_in("name19", "guess", "192.0.2.9")
    with pytest.raises(SignInThrottled):
        await logins.sign_in("amara", "right passphrase", "192.0.2.9")
    assert await logins.sign_in("amara", "right passphrase", "198.51.100.4")


async def test_a_check_that_fails_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the check itself breaks (not the person's fault), the attempt is given back."""
    clock = FakeClock()
    logins = Logins(PasswordBook({}), SignInGuard(clock=clock), SignInGuard(clock=clock))

    def broken(password: str, stored: str) -> bool:
        raise OSError("disk gone")

    monkeypatch.setattr(passwords, "verify_password", broken)
    for _ in range(7):
        with pytest.raises(OSError, match="disk gone"):
            await logins.sign_in("amara", "x", "10.0.0.1")
    assert not logins.by_name.paused(("name", "amara"))


def test_csrf_token_is_made_once_checked_in_constant_form_and_renewed() -> None:
    """A session gets one token for all its forms; a form passes only with that token; a
    sign-in renews it; an empty session or a non-text field never passes."""
    session: dict[str, object] = {}
    assert not csrf_ok(session, "")
    token = csrf_token(session)
    assert csrf_token(session) == token
    assert csrf_ok(session, token)
    assert not csrf_ok(session, token + "x")
    assert not csrf_ok(session, None)
    assert not csrf_ok(session, ["list"])
    assert not csrf_ok(session, "\ud800")
    renewed = new_session_token(session)
    assert renewed != token
    assert not csrf_ok(session, token)


async def test_door_serves_on_a_free_port_and_stops() -> None:
    """A door bound on port 0 answers at once on its port and stops cleanly; a port in use
    is an error naming the door."""

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    door = AsgiServer(app, "127.0.0.1", 0, name="test door")
    await door.start()
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{door.port}/")
        assert answer.text == "hello"
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = AsgiServer(app, "127.0.0.1", taken.getsockname()[1], name="second door")
            with pytest.raises(OSError, match="second door cannot listen"):
                await busy.start()
    finally:
        await door.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{door.port}/")


async def test_door_serves_until_stopping() -> None:
    """``serve_until`` returns once the supervisor's stopping event is set."""

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    stopping, started = asyncio.Event(), asyncio.Event()
    door = AsgiServer(Starlette(routes=[Route("/", hello)]), "127.0.0.1", 0, name="door")
    serving = asyncio.ensure_future(door.serve_until(stopping, started))
    await started.wait()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{door.port}/")).text == "hello"
    stopping.set()
    async with asyncio.timeout(10):
        await serving
