"""SOS without a PIN: the abuse limit that can never silence a real SOS.

Anyone on the vessel's Wi-Fi can send an SOS from the sign-in page by typing a crew
number, PIN or not (a crew member whose sign-in is paused, or who forgot the PIN, must
still reach the shore). Such an SOS is never refused. To keep a prankster from filling
the link, one more is *coalesced* into one already queued, and the person is told that
the SOS is on its way (it is: the one queued carries the alarm):

* the same crew number with the same note (or none) within ``repeat_window_s``: the
  person pressed twice, or someone repeats a prank; it joins the first;
* beyond ``distinct_per_hour`` SOS without a PIN in the last hour: every further one
  joins the latest one queued, until the hour has room again.

A new note for the same crew number is new information and is queued (within the hourly
cap). The rules hold in memory (a restart starts them afresh) and keep at most
``distinct_per_hour`` entries. Time comes in as an argument; the class is thread-safe
only under its caller's lock (:class:`shipboard.intake.Intake` holds one).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["SosLimitPolicy", "SosWithoutPinLimit"]


@dataclass(frozen=True, slots=True)
class SosLimitPolicy:
    """How SOS without a PIN are coalesced (see the module docstring)."""

    repeat_window_s: float = 600.0
    distinct_per_hour: int = 10

    def __post_init__(self) -> None:
        if self.repeat_window_s <= 0 or self.distinct_per_hour < 1:
            raise ValueError("SosLimitPolicy: repeat_window_s > 0 and distinct_per_hour >= 1")


@dataclass
class SosWithoutPinLimit:
    """Which queued SOS a new one without a PIN joins, if any (see the module docstring)."""

    policy: SosLimitPolicy = field(default_factory=SosLimitPolicy)
    #: (crew number, note) -> (message seq, when queued), within the repeat window.
    _recent: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)
    #: (when queued, message seq) of the SOS queued in the last hour, oldest first.
    _hour: deque[tuple[float, int]] = field(default_factory=deque)
    coalesced: int = 0

    def joins(self, crew: int, note: str | None, now: float) -> int | None:
        """The message seq of the queued SOS that this one joins, or None: queue it."""
        self._forget(now)
        earlier = self._recent.get((crew, note or ""))
        if earlier is not None:
            self.coalesced += 1
            return earlier[0]
        if len(self._hour) >= self.policy.distinct_per_hour:
            self.coalesced += 1
            return self._hour[-1][1]
        return None

    def queued(self, crew: int, note: str | None, message_seq: int, now: float) -> None:
        """Record an SOS without a PIN that was committed as ``message_seq``."""
        self._recent[(crew, note or "")] = (message_seq, now)
        self._hour.append((now, message_seq))

    def _forget(self, now: float) -> None:
        horizon = now - self.policy.repeat_window_s
        for key in [k for k, (_, at) in self._recent.items() if at <= horizon]:
            del self._recent[key]
        while self._hour and self._hour[0][0] <= now - 3600.0:
            self._hour.popleft()
