"""The one sign-in guard: wrong secrets per person, across doors, with a growing back-off."""

from __future__ import annotations

import threading

import pytest

from common.signins import GuardPolicy, SignInGuard, SignInThrottled
from tests.kit.clock import FakeClock


def wrong(guard: SignInGuard, who: object, times: int) -> None:
    for _ in range(times):
        guard.begin(who).failed()


def test_five_wrong_pins_pause_the_person_and_nobody_else() -> None:
    """A stranger types five wrong PINs for crew member 7: 7 is paused, 8 is not."""
    clock = FakeClock()
    guard = SignInGuard(clock=clock)
    wrong(guard, 7, 5)
    with pytest.raises(SignInThrottled) as caught:
        guard.begin(7)
    assert caught.value.retry_after_minutes == 5
    guard.begin(8).succeeded()
    clock.now += 301
    guard.begin(7).succeeded()


def test_pauses_grow_and_are_capped_then_start_small_again() -> None:
    """Each exhausted window in a row doubles the pause up to an hour; a long quiet resets it."""
    clock = FakeClock()
    guard = SignInGuard(clock=clock)
    pauses = []
    for _ in range(6):
        wrong(guard, 7, 5)
        pauses.append(guard.retry_after_s(7))
        clock.now += guard.retry_after_s(7)
    assert pauses == [300, 600, 1200, 2400, 3600, 3600]
    clock.now += 3601
    wrong(guard, 7, 5)
    assert guard.retry_after_s(7) == 300


def test_at_most_five_evaluated_per_window_even_when_concurrent() -> None:
    """Guesses begun together on several doors cannot pass the count: reservations count."""
    guard = SignInGuard(clock=FakeClock())
    attempts = [guard.begin(7) for _ in range(5)]
    with pytest.raises(SignInThrottled):
        guard.begin(7)
    for attempt in attempts:
        attempt.failed()
    with pytest.raises(SignInThrottled):
        guard.begin(7)


def test_success_clears_the_count_and_abandoned_attempts_do_not_count() -> None:
    """A right PIN starts the count again; a check that failed on storage is not a guess."""
    guard = SignInGuard(clock=FakeClock())
    wrong(guard, 7, 4)
    guard.begin(7).succeeded()
    wrong(guard, 7, 4)
    for _ in range(10):
        with guard.begin(7):
            pass  # neither succeeded nor failed: abandoned
    guard.begin(7).failed()
    assert guard.paused(7)


def test_old_wrong_pins_leave_the_window() -> None:
    """Four wrong PINs today and one more an hour later do not pause anyone."""
    clock = FakeClock()
    guard = SignInGuard(clock=clock)
    wrong(guard, 7, 4)
    clock.now += 301
    wrong(guard, 7, 1)
    assert not guard.paused(7)


def test_made_up_crew_numbers_cannot_grow_memory() -> None:
    """Guesses at a million made-up crew numbers keep the table at its bound."""
    guard = SignInGuard(GuardPolicy(max_people=100), clock=FakeClock())
    wrong(guard, 7, 5)
    for who in range(1000, 3000):
        guard.begin(who).failed()
    assert len(guard._people) <= 100
    assert guard.paused(7)  # paused people are evicted last


def test_thread_safe_counting() -> None:
    """Doors on several threads: never more than five evaluations in one window."""
    guard = SignInGuard(clock=FakeClock())
    evaluated = []

    def door() -> None:
        for _ in range(20):
            try:
                attempt = guard.begin(7)
            except SignInThrottled:
                continue
            evaluated.append(1)
            attempt.failed()

    threads = [threading.Thread(target=door) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(evaluated) == 5


def test_policy_refuses_nonsense() -> None:
    """A policy that could never let anyone in is a programming error."""
    with pytest.raises(ValueError, match="attempts"):
        GuardPolicy(attempts=0)
