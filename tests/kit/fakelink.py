"""A fake satellite link (and broker) between one vessel and the shore, for scenarios.

``LinkPair`` holds the packets in flight, like h11's ``ConnectionPair`` and trio's
``FakeNet``: a test decides what becomes of them. Two ways to use it:

- **By hand**, with the pure exchange objects (``protocol.exchange``): ``send(UP, data)``
  puts a packet in flight; ``deliver()``, ``drop()``, ``duplicate()`` and ``reorder()`` act
  on what is in flight; ``take(UP)`` / ``take(DOWN)`` hand the delivered payloads to the test.
- **Under the shells**: ``pair.vessel_link()`` is a :class:`shipboard.transport.Link` for
  ``run_session``; a shore attached with ``attach_shore`` answers inside ``pump()``, which
  the fake clock runs whenever the vessel's shell waits (``clock.on_idle``). Faults are then
  armed ahead: ``lose_next(DOWN)``, ``duplicate_next(UP, 3)``, ``reorder()`` (delivered
  newest first until ``in_order()``), ``trickle(max_bytes=...)`` (the uplink carries that
  many bytes a second of fake time, so a publish takes a while), ``cut()`` / ``restore()``.

The broker is modelled as kind: downlink published while the vessel is away waits in
flight until it connects (a persistent session). A ``cut()`` drops the vessel's
connection and loses the *uplink* in flight (it never reached the broker); downlink stays
queued. Every payload is counted (``statistics``), and delivered bytes are never changed.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from shipboard.transport import LinkClosed, LinkDown
from tests.kit.clock import FakeClock


class Way(enum.Enum):
    """Which way a packet travels."""

    UP = "up"  # vessel -> shore
    DOWN = "down"  # shore -> vessel


UP = Way.UP
DOWN = Way.DOWN


@dataclass
class Packet:
    """One payload in flight."""

    way: Way
    data: bytes


@dataclass
class LinkStatistics:
    """What the link did with payloads, by way."""

    sent: dict[Way, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})
    delivered: dict[Way, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})
    lost: dict[Way, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})
    up_bytes_crossed: int = 0
    connects: int = 0
    refused_connects: int = 0


class ShoreEnd(Protocol):
    """A shore attached to the pair: it hears uplink and publishes with ``pair.send``."""

    async def on_uplink(self, data: bytes) -> None: ...

    async def tick(self) -> None: ...


class LinkPair:
    """A vessel and the shore joined by a fake link; see the module docstring."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.in_flight: list[Packet] = []
        self._delivered: dict[Way, deque[bytes]] = {UP: deque(), DOWN: deque()}
        self.statistics = LinkStatistics()
        self.is_cut = False
        self.vessel_connected = False
        self._newest_first = False
        self._trickle: int | None = None
        self._lose: dict[Way, int] = {UP: 0, DOWN: 0}
        self._copies: dict[Way, int] = {UP: 0, DOWN: 0}
        self._cut_after_up_bytes: int | None = None
        self._up_bytes_seen: list[tuple[int, asyncio.Event]] = []
        self._arrived = asyncio.Event()
        self._shore: ShoreEnd | None = None
        self._sent_log: dict[Way, list[bytes]] = {UP: [], DOWN: []}

    # --- sending and delivering (by hand) ---------------------------------------------------

    def send(self, way: Way, data: bytes) -> None:
        """Put a payload in flight (armed faults apply here; a cut link loses uplink)."""
        self.statistics.sent[way] += 1
        self._sent_log[way].append(data)
        if (way is UP and self.is_cut) or self._lose[way]:
            if not (way is UP and self.is_cut):
                self._lose[way] -= 1
            self.statistics.lost[way] += 1
            return
        copies = 1
        if self._copies[way]:
            self._copies[way] -= 1
            copies = 2
        self.in_flight.extend(Packet(way, data) for _ in range(copies))

    def _pick(self, way: Way | None) -> list[int]:
        """Indexes of the packets that can move now, in delivery order. Under the shells
        downlink waits at the broker while the vessel is not connected."""

        def movable(packet: Packet) -> bool:
            if way is not None and packet.way is not way:
                return False
            return packet.way is UP or self.vessel_connected or self._shore is None

        indexes = [i for i, packet in enumerate(self.in_flight) if movable(packet)]
        return indexes[::-1] if self._newest_first else indexes

    def deliver(self, count: int | None = None, way: Way | None = None) -> int:
        """Deliver up to ``count`` packets in flight (all: None), oldest first unless
        ``reorder()`` was called; how many arrived."""
        picked = self._pick(way)
        if count is not None:
            picked = picked[:count]
        for index in picked:
            packet = self.in_flight[index]
            self._delivered[packet.way].append(packet.data)
            self.statistics.delivered[packet.way] += 1
        chosen = set(picked)
        self.in_flight = [p for i, p in enumerate(self.in_flight) if i not in chosen]
        if picked:
            self._arrived.set()
        return len(picked)

    def drop(self, count: int = 1, way: Way | None = None) -> int:
        """Lose up to ``count`` packets in flight, oldest first; how many."""
        picked = set(self._pick(way)[:count])
        for index in picked:
            self.statistics.lost[self.in_flight[index].way] += 1
        self.in_flight = [p for i, p in enumerate(self.in_flight) if i not in picked]
        return len(picked)

    def duplicate(self, count: int = 1, way: Way | None = None) -> int:
        """Deliver up to ``count`` packets in flight and keep a copy of each in flight."""
        picked = self._pick(way)[:count]
        for index in picked:
            packet = self.in_flight[index]
            self._delivered[packet.way].append(packet.data)
            self.statistics.delivered[packet.way] += 1
        if picked:
            self._arrived.set()
        return len(picked)

    def reorder(self) -> None:
        """From now on, deliver the newest packet in flight first (until ``in_order()``)."""
        self._newest_first = True

    def in_order(self) -> None:
        """Deliver oldest first again."""
        self._newest_first = False

    def sent_payloads(self, way: Way) -> list[bytes]:
        """Every payload sent that way, in order, whatever became of it."""
        return list(self._sent_log[way])

    def take(self, way: Way) -> list[bytes]:
        """The payloads delivered that way and not yet taken, in arrival order."""
        taken = list(self._delivered[way])
        self._delivered[way].clear()
        return taken

    # --- the link's moods -------------------------------------------------------------------

    def cut(self) -> None:
        """The satellite drops: uplink in flight is lost, nothing gets through until
        ``restore()``, and the vessel's connection breaks."""
        self.is_cut = True
        self.vessel_connected = False
        lost = [p for p in self.in_flight if p.way is UP]
        self.statistics.lost[UP] += len(lost)
        self.in_flight = [p for p in self.in_flight if p.way is DOWN]
        self._arrived.set()  # wakes a waiting receive, which then raises LinkDown

    def restore(self) -> None:
        """The satellite is back."""
        self.is_cut = False

    def trickle(self, max_bytes: int | None) -> None:
        """The uplink carries at most ``max_bytes`` a second of fake time (None: no limit)."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._trickle = max_bytes

    def cut_after(self, up_bytes: int) -> None:
        """Cut the link once ``up_bytes`` more uplink bytes have crossed (mid-publish)."""
        self._cut_after_up_bytes = self.statistics.up_bytes_crossed + up_bytes

    def lose_next(self, way: Way, count: int = 1) -> None:
        """The next ``count`` payloads sent that way are lost."""
        self._lose[way] += count

    def duplicate_next(self, way: Way, count: int = 1) -> None:
        """The next ``count`` payloads sent that way arrive twice."""
        self._copies[way] += count

    def up_bytes_crossed(self, at_least: int) -> asyncio.Event:
        """An event set once ``at_least`` uplink bytes have crossed in all."""
        event = asyncio.Event()
        if self.statistics.up_bytes_crossed >= at_least:
            event.set()
        else:
            self._up_bytes_seen.append((at_least, event))
        return event

    def _crossed(self, count: int) -> None:
        self.statistics.up_bytes_crossed += count
        total = self.statistics.up_bytes_crossed
        for at_least, event in self._up_bytes_seen:
            if total >= at_least:
                event.set()
        if self._cut_after_up_bytes is not None and total >= self._cut_after_up_bytes:
            self._cut_after_up_bytes = None
            self.cut()

    # --- the shells -------------------------------------------------------------------------

    def attach_shore(self, shore: ShoreEnd) -> None:
        """Let ``shore`` hear the uplink (inside ``pump``); the clock pumps when idle."""
        self._shore = shore
        self.clock.on_idle(self.pump)

    async def pump(self) -> None:
        """Deliver what is in flight until nothing moves: uplink to the shore (which may
        answer), downlink to the vessel while it is connected."""
        shore = self._shore
        for _ in range(1000):
            if shore is not None:
                await shore.tick()
            if not self._pick(None):
                return
            index = self._pick(None)[0]
            packet = self.in_flight.pop(index)
            self.statistics.delivered[packet.way] += 1
            if packet.way is UP and shore is not None:
                await shore.on_uplink(packet.data)
            else:
                self._delivered[packet.way].append(packet.data)
                self._arrived.set()
        raise RuntimeError("the fake link kept pumping: do the ends answer each other forever?")

    def vessel_link(self) -> FakeLink:
        """The vessel's end as a :class:`shipboard.transport.Link` (for ``run_session``)."""
        return FakeLink(self)


class FakeLink:
    """The vessel's end of a :class:`LinkPair`, behind the ``Link`` seam."""

    def __init__(self, pair: LinkPair) -> None:
        self.pair = pair
        self.closed = False
        self.connected = False

    @property
    def tls_resumed(self) -> bool | None:
        return None

    def _check(self) -> None:
        if self.closed:
            raise LinkClosed("this fake link was closed")
        if self.pair.is_cut or (self.connected and not self.pair.vessel_connected):
            raise LinkDown("the fake satellite link is cut")

    async def connect(self) -> None:
        self._check()
        self.pair.statistics.connects += 1
        self.pair.vessel_connected = self.connected = True

    async def publish(self, data: bytes, timeout_s: float) -> None:
        pair = self.pair
        self._check()
        rate = pair._trickle
        if rate is None:
            pair._crossed(len(data))
        else:
            left = len(data)
            while left:
                step = min(rate, left)
                pair._crossed(step)
                left -= step
                self._check()  # a cut mid-publish loses the partial batch
                await pair.clock.sleep(1.0)
        self._check()
        pair.send(UP, data)

    def receive_nowait(self) -> bytes | None:
        delivered = self.pair._delivered[DOWN]
        return delivered.popleft() if delivered else None

    async def receive(self) -> bytes:
        while True:
            self._check()
            data = self.receive_nowait()
            if data is not None:
                return data
            self.pair._arrived.clear()
            await self.pair._arrived.wait()

    async def close(self) -> None:
        if self.connected and not self.closed:
            self.pair.vessel_connected = False
        self.closed = True
