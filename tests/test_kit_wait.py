"""The kit's waiting helpers (tests/kit/wait.py): poll until true, or fail saying what for.

A test that waits for another process or thread must end as soon as the thing happened
and, if it never does, fail with a message a reader can act on, not hang or pass.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.kit.wait import NeverHappened, eventually, eventually_blocking, until_started


async def test_eventually_returns_as_soon_as_the_predicate_holds() -> None:
    """A condition that becomes true on its third look ends the wait then, not later."""
    looks: list[float] = []

    def third_time() -> bool:
        looks.append(time.monotonic())
        return len(looks) == 3

    await eventually(third_time, timeout_s=10, interval_s=0.01)
    assert len(looks) == 3
    assert looks[-1] - looks[0] < 5  # nowhere near the deadline


async def test_eventually_awaits_an_async_predicate() -> None:
    """A condition that must itself await (a scrape, a store query) is awaited each look."""
    looks: list[int] = []

    async def third_scrape() -> bool:
        await asyncio.to_thread(looks.append, len(looks))
        return len(looks) == 3

    await eventually(third_scrape, timeout_s=10, interval_s=0.01)
    assert looks == [0, 1, 2]


async def test_eventually_fails_naming_what_it_waited_for_and_why() -> None:
    """A relay that never answers: the wait fails after its deadline, saying what was
    awaited, for how long, and the log tail it was given."""
    started = time.monotonic()
    with pytest.raises(NeverHappened) as failed:
        await eventually(
            lambda: False,
            timeout_s=0.1,
            interval_s=0.01,
            what="the relay's receipt",
            explain=lambda: "relay log: connection refused",
        )
    assert 0.1 <= time.monotonic() - started < 5
    assert "waited 0.1 s for the relay's receipt" in str(failed.value)
    assert "relay log: connection refused" in str(failed.value)
    assert isinstance(failed.value, AssertionError)  # pytest reports it as a failure


async def test_a_predicate_that_gives_up_ends_the_wait_at_once() -> None:
    """A process that exited will never listen: the predicate's own error ends the wait
    at once, and its own TimeoutError is not mistaken for the deadline."""

    def exited() -> bool:
        raise RuntimeError("the agent exited with status 2")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="status 2"):
        await eventually(exited, timeout_s=30)

    def slow_answer() -> bool:
        raise TimeoutError("the scrape timed out")

    with pytest.raises(TimeoutError, match="scrape"):
        await eventually(slow_answer, timeout_s=30)
    assert time.monotonic() - started < 5


async def test_eventually_refuses_a_deadline_that_is_not_positive() -> None:
    """A wait of zero seconds is a mistake in the test, told as such."""
    with pytest.raises(ValueError, match="positive"):
        await eventually(lambda: True, timeout_s=0)
    with pytest.raises(ValueError, match="positive"):
        eventually_blocking(lambda: True, timeout_s=1, interval_s=0)


def test_eventually_blocking_polls_and_fails_like_the_async_one() -> None:
    """Synchronous code (a subprocess starting) waits the same way."""
    looks = iter([False, False, True])
    eventually_blocking(lambda: next(looks), timeout_s=10, interval_s=0.01)
    with pytest.raises(NeverHappened, match=r"waited 0\.05 s for the demo's info file"):
        eventually_blocking(
            lambda: False, timeout_s=0.05, interval_s=0.01, what="the demo's info file"
        )


class _Server:
    started = False


async def test_until_started_waits_for_the_server_and_sees_it_fail() -> None:
    """A web server that starts is waited for; one that dies while starting fails the
    test at once with its own error."""
    server = _Server()

    async def serve() -> None:
        await asyncio.to_thread(lambda: None)  # binding takes a moment
        server.started = True
        await asyncio.Event().wait()  # serves until cancelled

    task = asyncio.create_task(serve())
    try:
        await until_started(server, task)
        assert server.started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def broken() -> None:
        raise OSError("address already in use")

    failing = asyncio.create_task(broken())
    started = time.monotonic()
    with pytest.raises(OSError, match="already in use"):
        await until_started(_Server(), failing)
    assert time.monotonic() - started < 5
