"""One fake clock for the whole suite: wall-clock seconds that only move when told to.

``FakeClock`` is what every component takes as ``clock`` (a callable returning seconds
since 1970, UTC): ``clock()`` reads it, ``clock.now`` is the same number (and may be set),
``clock.advance(s)`` moves it on. It is also what the asyncio shells take as ``timers``
(:class:`shipboard.link.Timers`): ``monotonic()`` and ``wait_for(awaitable, timeout_s)``.

``wait_for`` jumps time the way trio's ``MockClock(autojump_threshold=0)`` does: it lets
every task that is ready run (a few loop cycles), then runs the idle hooks (the fake
link's ``pump``: deliver what is in flight, let the shore answer), and only if the
awaitable still has not finished does it advance the clock by ``timeout_s`` and give up.
So a three-day outage takes microseconds, and a scenario never waits on a wall clock.
This is deterministic as long as nothing else in the test works in a thread *while* a
shell waits (the kit's shore runs inside the pump, so it does not).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: 2026-09-21 22:13:20 UTC, the suite's usual "now".
DEFAULT_START = 1_790_000_000.0
#: Loop cycles a waiting shell gives ready tasks before the clock jumps.
READY_CYCLES = 8


class FakeClock:
    """Seconds since 1970 (UTC) that move only with :meth:`advance` (or autojump)."""

    def __init__(self, now: float = DEFAULT_START) -> None:
        self.now = now
        self._idle_hooks: list[Callable[[], Awaitable[object]]] = []
        #: Seconds :meth:`wait_for` and :meth:`sleep` jumped, in total.
        self.jumped_s = 0.0

    def __call__(self) -> float:
        return self.now

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r})"

    def advance(self, seconds: float) -> float:
        """Move the clock on by ``seconds`` (not backwards); the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self.now += seconds
        return self.now

    # --- what the asyncio shells need (shipboard.link.Timers) ------------------------------

    def monotonic(self) -> float:
        """The same seconds: they never go back."""
        return self.now

    def on_idle(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Run ``hook`` whenever a shell waits and nothing is ready (the fake link's pump)."""
        self._idle_hooks.append(hook)

    async def _settle(self, done: Callable[[], bool]) -> bool:
        for _ in range(READY_CYCLES):
            if done():
                return True
            await asyncio.sleep(0)
        return done()

    async def wait_for(self, awaitable: Awaitable[T], timeout_s: float) -> T | None:
        """The awaitable's result if it finishes before ``timeout_s`` of fake time; else
        None, with the clock moved on by ``timeout_s`` (the awaitable is cancelled)."""
        task = asyncio.ensure_future(awaitable)
        try:
            if not await self._settle(task.done):
                for hook in list(self._idle_hooks):
                    await hook()
                    if await self._settle(task.done):
                        break
            if task.done():
                return task.result()
            self.advance(max(0.0, timeout_s))
            self.jumped_s += max(0.0, timeout_s)
            return None
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def sleep(self, seconds: float) -> None:
        """Let ready tasks and idle hooks run, then jump ``seconds`` ahead."""
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.wait_for(never, seconds)
