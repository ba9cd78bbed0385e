"""Sign-ins: one guard per process that counts wrong PINs and passwords per person.

Every door that takes a secret (the crew API's ``/api/login``, the crew page's sign-in,
SMTP AUTH on the agent; the caseworkers' and operators' logins ashore) asks the same
:class:`SignInGuard` before it checks the secret, so wrong guesses count per person across
all doors together::

    attempt = guard.begin(crew)        # SignInThrottled if this person is paused
    if pin_is_right:
        attempt.succeeded()            # the person's count starts again
    else:
        attempt.failed()               # counted; the fifth in a window starts a pause

The rule, stated once (:class:`GuardPolicy`): at most ``attempts`` secrets are *evaluated*
per person in any ``window_s``. Reaching that count pauses the person for ``window_s``; each
further pause without a success in between is twice as long, up to ``max_pause_s`` (after a
quiet ``max_pause_s`` the pauses start small again). A pause
is a back-off, not a lock that needs anybody (a captain, an operator) to lift it, and it
says when to try again. An attempt is reserved in :meth:`SignInGuard.begin`, so concurrent
guesses on several doors cannot slip past the count.

The guard keeps at most ``max_people`` entries (least recently used first out, paused
people last), so guesses at made-up crew numbers cannot grow memory without bound. It is
thread-safe: aiosmtpd's AUTH hook and the web app may call it from different threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

__all__ = ["Attempt", "GuardPolicy", "SignInGuard", "SignInThrottled"]


class SignInThrottled(Exception):
    """Too many wrong secrets for this person lately: try again after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1.0, retry_after_s)
        self.retry_after_minutes = max(1, math.ceil(self.retry_after_s / 60))
        super().__init__(
            f"too many wrong attempts; try again in {self.retry_after_minutes} minute(s)"
        )


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """How many wrong secrets are evaluated per person, and how the pause grows."""

    attempts: int = 5
    window_s: float = 300.0
    max_pause_s: float = 3600.0
    max_people: int = 10_000

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.window_s <= 0 or self.max_pause_s < self.window_s:
            raise ValueError("GuardPolicy: attempts >= 1, window_s > 0, max_pause_s >= window_s")
        if self.max_people < 1:
            raise ValueError("GuardPolicy: max_people >= 1")

    def pause_s(self, strikes: int) -> float:
        """The pause after the ``strikes``-th exhausted window in a row (1, 2, ...)."""
        return float(min(self.window_s * 2 ** min(strikes - 1, 32), self.max_pause_s))


@dataclass
class _Person:
    failures: list[float] = field(default_factory=list)  # times of wrong secrets in the window
    in_flight: int = 0  # attempts begun and not yet finished
    strikes: int = 0  # exhausted windows in a row
    paused_until: float = 0.0


class Attempt:
    """One reserved evaluation of a secret; finish it with exactly one of the three calls.

    Leaving it unfinished (for instance when the check itself failed on a storage error)
    is :meth:`abandoned`: it gives the reservation back without counting.
    """

    __slots__ = ("_done", "_guard", "_who")

    def __init__(self, guard: SignInGuard, who: Hashable) -> None:
        self._guard, self._who, self._done = guard, who, False

    def succeeded(self) -> None:
        """The secret was right: the person's count and back-off start again."""
        self._finish(self._guard._succeeded)

    def failed(self) -> None:
        """The secret was wrong: counted against the person."""
        self._finish(self._guard._failed)

    def abandoned(self) -> None:
        """The secret could not be checked (not the person's fault): not counted."""
        self._finish(self._guard._abandoned)

    def _finish(self, how: Callable[[Hashable], None]) -> None:
        if self._done:
            return
        self._done = True
        how(self._who)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abandoned()


class SignInGuard:
    """Wrong secrets per person, across every door of one process (see the module doc)."""

    def __init__(
        self, policy: GuardPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or GuardPolicy()
        self.clock = clock
        self._people: OrderedDict[Hashable, _Person] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, who: Hashable) -> Attempt:
        """Reserve one evaluation for ``who``; raises :class:`SignInThrottled` when paused."""
        with self._lock:
            now = self.clock()
            person = self._person(who)
            if now < person.paused_until:
                raise SignInThrottled(person.paused_until - now)
            self._forget_old(person, now)
            if len(person.failures) + person.in_flight >= self.policy.attempts:
                # only reachable while other attempts are in flight: wait for them
                oldest = person.failures[0] if person.failures else now
                raise SignInThrottled(oldest + self.policy.window_s - now)
            person.in_flight += 1
            return Attempt(self, who)

    def retry_after_s(self, who: Hashable) -> float:
        """Seconds until ``who`` may try again (0 when not paused)."""
        with self._lock:
            person = self._people.get(who)
            if person is None:
                return 0.0
            return max(0.0, person.paused_until - self.clock())

    def paused(self, who: Hashable) -> bool:
        """Whether ``who`` is paused now."""
        return self.retry_after_s(who) > 0

    def _person(self, who: Hashable) -> _Person:
        person = self._people.get(who)
        if person is None:
            person = self._people[who] = _Person()
            self._evict()
        else:
            self._people.move_to_end(who)
        return person

    def _evict(self) -> None:
        if len(self._people) <= self.policy.max_people:
            return
        now = self.clock()
        for key, person in self._people.items():  # oldest first; keep paused and busy ones
            if person.in_flight == 0 and person.paused_until <= now:
                del self._people[key]
                return
        self._people.popitem(last=False)

    def _forget_old(self, person: _Person, now: float) -> None:
        horizon = now - self.policy.window_s
        person.failures = [at for at in person.failures if at > horizon]

    def _succeeded(self, who: Hashable) -> None:
        with self._lock:
            self._people.pop(who, None)

    def _failed(self, who: Hashable) -> None:
        with self._lock:
            now = self.clock()
            person = self._person(who)
            person.in_flight = max(0, person.in_flight - 1)
            self._forget_old(person, now)
            person.failures.append(now)
            if len(person.failures) >= self.policy.attempts:
                if now - person.paused_until > self.policy.max_pause_s:
                    person.strikes = 0  # the last pause is long over: start small again
                person.strikes += 1
                person.paused_until = now + self.policy.pause_s(person.strikes)
                person.failures.clear()

    def _abandoned(self, who: Hashable) -> None:
        with self._lock:
            person = self._people.get(who)
            if person is not None:
                person.in_flight = max(0, person.in_flight - 1)
