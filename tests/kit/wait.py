"""Waiting, with a deadline, for what no event can tell.

Wait on an event when the code under test can give one (an ``asyncio.Event`` it sets, a
fake's callback, the fake clock's autojump: :mod:`tests.kit.clock`). Poll only what
cannot tell us: another process's port, files or scrape, a sink filled from its own
thread. :func:`eventually` polls a predicate until it holds and, if it never does, fails
saying what was awaited, for how long, and (``explain``) what a reader needs to see, such
as the tail of a process's log. :func:`eventually_blocking` is the same for synchronous
code; :func:`until_started` waits for a uvicorn server, which has no event for it.

A predicate may raise to give up early (a process that exited will never listen).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Protocol

#: A predicate: truthy when it holds; may be ``async`` (or return an awaitable).
Predicate = Callable[[], object]


class NeverHappened(AssertionError):
    """A predicate did not hold within its deadline."""


def _message(
    predicate: Predicate, timeout_s: float, what: str, explain: Callable[[], str] | None
) -> str:
    name = what or getattr(predicate, "__qualname__", repr(predicate))
    text = f"waited {timeout_s:g} s for {name}, and it never held"
    if explain is not None:
        text += f"\n{explain()}"
    return text


async def _holds(predicate: Predicate) -> bool:
    result = predicate()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


async def eventually(
    predicate: Predicate,
    timeout_s: float,
    interval_s: float = 0.05,
    *,
    what: str = "",
    explain: Callable[[], str] | None = None,
) -> None:
    """Return once ``predicate()`` is truthy (checked at once, then every ``interval_s``);
    raise :class:`NeverHappened` after ``timeout_s`` seconds of the event loop's time.

    ``predicate`` may be a coroutine function (``async def``) or return an awaitable;
    exceptions it raises propagate at once.
    """
    if timeout_s <= 0 or interval_s <= 0:
        raise ValueError(f"timeout_s and interval_s must be positive ({timeout_s}, {interval_s})")
    scope = asyncio.timeout(timeout_s)
    try:
        async with scope:
            while not await _holds(predicate):  # noqa: ASYNC110 - polling is this helper's job
                await asyncio.sleep(interval_s)
    except TimeoutError:
        if not scope.expired():
            raise  # the predicate's own TimeoutError
        raise NeverHappened(_message(predicate, timeout_s, what, explain)) from None


def eventually_blocking(
    predicate: Callable[[], object],
    timeout_s: float,
    interval_s: float = 0.05,
    *,
    what: str = "",
    explain: Callable[[], str] | None = None,
) -> None:
    """:func:`eventually` for synchronous code (it blocks the calling thread)."""
    if timeout_s <= 0 or interval_s <= 0:
        raise ValueError(f"timeout_s and interval_s must be positive ({timeout_s}, {interval_s})")
    deadline = time.monotonic() + timeout_s
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            raise NeverHappened(_message(predicate, timeout_s, what, explain))
        time.sleep(min(interval_s, left))


class _Server(Protocol):
    started: bool


async def until_started(
    server: _Server, task: asyncio.Future[None], timeout_s: float = 10.0
) -> None:
    """Until a uvicorn ``server`` running as ``task`` has started (uvicorn has no event
    for it); if the task ends first, its error (or a NeverHappened) is raised at once."""

    def started() -> bool:
        if task.done():
            task.result()  # the server's own error, if it failed
            raise NeverHappened("the server stopped before it started")
        return server.started

    await eventually(started, timeout_s, 0.01, what="the server to start")
