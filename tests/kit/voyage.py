"""A vessel and the shore as shipped, joined by the fake link, on one fake clock.

- :class:`KitVessel`: the real SQLite :class:`~shipboard.outbox.Outbox` (one crew member,
  one family contact) and the real session shell :func:`shipboard.link.run_session` over
  the fake link's vessel end. ``crash_mid_publish`` kills a session while its batch is
  going up, and the outbox is reopened from its file, as after a SIGKILL.
- :class:`KitShore`: the real relay's :class:`~shore.ingest.Ingestor`, SQLite store and
  :class:`~shore.downlink.Downlink`, answering inside the fake link's ``pump`` (so a
  scenario is deterministic). ``crash()`` loses what reaches it until ``restart()``, which
  reopens the store from its file with nothing of the old memory.
- :func:`voyage`: both, ready. A scenario is then a handful of lines::

      async with voyage(tmp_path) as (vessel, shore, link, clock):
          seqs = vessel.write(3)
          report = await vessel.session()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from common.codebooks import default_codebook
from protocol.languages import Language
from protocol.topics import uplink_topic
from shipboard.crew import CrewRegister
from shipboard.link import LinkSettings, SessionReport, run_session
from shipboard.outbox import Outbox
from shipboard.profiles import VSAT
from shore.downlink import Downlink, DownlinkConfig
from shore.ingest import Ingestor
from shore.store import SqliteStore, VesselInfo
from tests.kit.clock import FakeClock
from tests.kit.fakelink import DOWN, LinkPair
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY

VESSEL = 7
CODEBOOK = default_codebook()


class KitShore:
    """The relay's ingest, store and downlink for one vessel, on the fake link."""

    def __init__(self, directory: Path, pair: LinkPair, config: DownlinkConfig) -> None:
        self.directory = directory
        self.pair = pair
        self.clock = pair.clock
        self.config = config
        self.up = False
        #: Uplink payloads that reached the relay while it was down (lost with it).
        self.lost = 0
        self.store: SqliteStore | None = None
        self.ingestor: Ingestor | None = None
        self.downlink: Downlink | None = None

    async def start(self) -> None:
        """Open the store (registering the vessel the first time) and start answering."""
        store = await SqliteStore.open(self.directory / "relay.db")
        if await store.get_vessel(VESSEL) is None:
            info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
            await store.add_vessel(info, VESSEL_KEY.verify_key.key, self.clock() - 3600, VESSEL)
        self.store = store
        self.ingestor = Ingestor(store, CODEBOOK, clock=self.clock, shore_key=SHORE_KEY)
        self.downlink = Downlink(store, SHORE_KEY, CODEBOOK, self.config, clock=self.clock)
        self.up = True

    async def crash(self) -> None:
        """The relay dies: its memory is gone; what reaches it now is lost."""
        self.up = False
        if self.store is not None:
            await self.store.close()
        self.store = self.ingestor = self.downlink = None

    async def restart(self) -> None:
        """Start again from the store's file."""
        if self.up:
            await self.crash()
        await self.start()

    # --- the fake link's shore end ------------------------------------------------------------

    async def on_uplink(self, data: bytes) -> None:
        if self.ingestor is None:
            self.lost += 1
            return
        await self.ingestor.handle(uplink_topic(VESSEL), data)

    async def tick(self) -> None:
        if self.downlink is not None:
            await self.downlink.publish_due(self._publish)

    async def _publish(self, topic: str, data: bytes) -> None:
        self.pair.send(DOWN, data)

    # --- what a scenario asserts ----------------------------------------------------------------

    def _store(self) -> SqliteStore:
        if self.store is None:
            raise RuntimeError("the kit shore is down")
        return self.store

    async def delivered(self, message_seq: int) -> None:
        """The family's mail server took the message: the relay records it and queues its
        DELIVERED receipt, as its delivery worker does."""
        await self._store().finish_delivery((VESSEL, message_seq), "delivered", None, self.clock())

    async def family_replies(self, crew: int, contact: int, text: str) -> int:
        """A family's reply to a crew member reaches the relay and is queued; its number."""
        return await self._store().queue_reply(
            VESSEL, crew, contact, text, Language.ENG, False, self.clock()
        )

    async def stored_seqs(self) -> list[int]:
        """Message numbers stored ashore, one entry per stored row."""
        return [m.message_seq for m in await self._store().messages(VESSEL)]

    async def stored_batches(self) -> list[int]:
        """Uplink batch numbers stored ashore (the replay window)."""
        window = await self._store().replay_window(VESSEL)
        above = [seq for first, last in window.ranges for seq in range(first, last + 1)]
        return [*range(1, window.up_to + 1), *above]


class KitVessel:
    """The vessel's SQLite outbox and session shell, on the fake link."""

    def __init__(self, path: Path, pair: LinkPair, settings: LinkSettings) -> None:
        self.path = path
        self.pair = pair
        self.clock = pair.clock
        self.settings = settings
        self.outbox = Outbox.open(path, VESSEL)
        register = CrewRegister(self.outbox)
        member, _pin = register.add(
            name="Ko Ko", document="SB-1", nationality="MM", language=Language.MYA, now=self.clock()
        )
        family = register.add_contact(
            member.crew,
            channel="email",
            address="family@example.org",
            name="Family",
            language=Language.MYA,
            now=self.clock(),
        )
        self.crew, self.contact = member.crew, family.contact
        self.written = 0
        #: Every session's report, in order (failed sessions leave none).
        self.reports: list[SessionReport] = []

    def write(self, count: int = 1) -> list[int]:
        """``count`` messages to the family, committed by intake; their numbers."""
        seqs = []
        for _ in range(count):
            self.written += 1
            accepted = self.outbox.accept_message(
                crew=self.crew,
                contact=self.contact,
                lang=Language.ENG,
                now=self.clock(),
                quota_bytes=1 << 20,
                body=f"message {self.written}: all is well on board",
            )
            seqs.append(accepted.message_seq)
        return seqs

    def pending(self) -> list[int]:
        """Messages waiting for a batch."""
        return [p.message_seq for p in self.outbox.pending_messages(self.clock())]

    async def session(self, **overrides: object) -> SessionReport:
        """One session of the real shell (``overrides``: LinkSettings fields); raises
        ``LinkDown`` like the real one. Sends every pending message."""
        settings = dataclasses.replace(self.settings, **overrides)  # type: ignore[arg-type]
        report = await run_session(
            settings,
            self.outbox,
            signing_key=VESSEL_KEY,
            codebook=CODEBOOK,
            shore_verify_key=SHORE_KEY.verify_key,
            message_seqs=self.pending(),
            clock=self.clock,
            link=self.pair.vessel_link(),
            timers=self.clock,
        )
        self.reports.append(report)
        return report

    async def crash_mid_publish(self, after_up_bytes: int) -> None:
        """Start a session and kill the agent once ``after_up_bytes`` of uplink have crossed
        (use ``trickle`` so a batch takes a while); the outbox is reopened from its file."""
        crossed = self.pair.up_bytes_crossed(self.pair.statistics.up_bytes_crossed + after_up_bytes)
        task = asyncio.create_task(self.session())
        waiter = asyncio.create_task(crossed.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            raise AssertionError(f"the session ended before the crash: {task.result()}")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.reopen()

    def reopen(self) -> None:
        """The agent restarts: nothing in memory survives, the outbox file does."""
        self.outbox.close()
        self.outbox = Outbox.open(self.path, VESSEL)

    def states(self, seqs: Sequence[int]) -> list[str]:
        """The outbox state of each message."""
        found = [self.outbox.message_stages(seq) for seq in seqs]
        return [str(stages["state"]) if stages else "missing" for stages in found]

    def inbox_rows(self, kind: str) -> list[tuple[int | None, int | None, str | None]]:
        """(message_seq, code, stage) of every inbox row of ``kind`` (``reply``: code is
        the reply number; ``stage``: the message's stage), in the order they were kept."""
        with self.outbox.database.reading() as db:
            rows = db.execute(
                "SELECT message_seq, code, stage FROM inbox WHERE kind = ? ORDER BY entry",
                (kind,),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def acknowledged_batches(self) -> list[int]:
        """Every uplink batch any session saw acknowledged, in order, repeats included."""
        return [seq for report in self.reports for seq in report.acknowledged]


@contextlib.asynccontextmanager
async def voyage(
    directory: Path, clock: FakeClock | None = None, **downlink: object
) -> AsyncIterator[tuple[KitVessel, KitShore, LinkPair, FakeClock]]:
    """A vessel and the shore on a fake link and clock (``downlink``: DownlinkConfig fields)."""
    clock = clock or FakeClock()
    pair = LinkPair(clock)
    config = DownlinkConfig(**{"slots": False, "tick_s": 1.0, **downlink})  # type: ignore[arg-type]
    shore = KitShore(directory / "relay", pair, config)
    await shore.start()
    pair.attach_shore(shore)
    settings = LinkSettings(
        vessel_id=VESSEL,
        host="fake-satellite",
        port=0,
        profile=VSAT,
        downlink_quiet_s=5.0,
        ack_wait_s=60.0,
    )
    vessel = KitVessel(directory / "outbox.sqlite3", pair, settings)
    try:
        yield vessel, shore, pair, clock
    finally:
        vessel.outbox.close()
        if shore.up:
            await shore.crash()
