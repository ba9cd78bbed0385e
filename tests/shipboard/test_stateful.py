"""A hypothesis state machine over the real SQLite outbox and the kit's model shore (the
pure shore exchange and its record): intake, batching, publishing, lost / duplicated /
reordered packets both ways, the shore's resends, agent crashes (the outbox closed and
reopened) and shore crashes (what it had not yet sent is lost; it restarts from its
record), and receipts.

Invariants after every step: no message the shore acknowledged is missing ashore; the
shore never holds the same words under two keys nor two words under one key (none
delivered twice); every accepted message is still in the outbox; no crew member's used
quota exceeds the quota.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from common.codebooks import default_codebook
from protocol.envelopes import (
    CrewMessage,
)
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.crew import CrewRegister
from shipboard.errors import NothingToSend, QuotaExceeded
from shipboard.outbox import Outbox
from tests.kit.model_shore import ModelShore

VESSEL = 5
QUOTA_BYTES = 120
T0 = 1_790_000_000.0
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
SHORE_KEY = SigningKey.from_seed(bytes(range(1, 33)))
CODEBOOK = default_codebook()
ACKED_STATES = ("acknowledged", "delivered", "failed")


class OutboxAndShore(RuleBasedStateMachine):
    """The vessel's outbox and a model shore joined by a lossy, reordering network."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="vr-stateful-"))
        self.outbox = Outbox.open(self.directory / "outbox.sqlite3", VESSEL)
        self.now = T0
        self.crew: list[tuple[int, int]] = []  # (crew, contact)
        self.accepted: dict[int, str] = {}  # message_seq -> words (acknowledged with 250)
        self.words = 0
        self.uplink: list[bytes] = []  # packets in flight, any order
        self.downlink: list[bytes] = []
        # The shore: the pure exchange and its record (committed before it acknowledges).
        self.shore = ModelShore.for_keys(CODEBOOK, VESSEL_KEY, SHORE_KEY, VESSEL)

    @initialize()
    def sign_on_crew(self) -> None:
        register = CrewRegister(self.outbox)
        for index in range(3):
            member, _ = register.add(
                name=f"Crew {index}",
                document=f"SB-{index:05d}",
                nationality="KH",
                language=Language.KHM,
                now=self.now,
            )
            contact = register.add_contact(
                member.crew,
                channel="email",
                address=f"home{index}@example.org",
                name="Home",
                language=None,
                now=self.now,
            )
            self.crew.append((member.crew, contact.contact))

    def teardown(self) -> None:
        self.outbox.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- intake ------------------------------------------------------------------------

    @rule(who=st.integers(0, 2), length=st.integers(1, 40))
    def crew_member_writes(self, who: int, length: int) -> None:
        crew, contact = self.crew[who]
        self.words += 1
        text = f"m{self.words} " + "x" * length
        try:
            accepted = self.outbox.accept_message(
                crew=crew,
                contact=contact,
                lang=Language.ENG,
                now=self.now,
                quota_bytes=QUOTA_BYTES,
                body=text,
            )
        except QuotaExceeded:
            return
        self.accepted[accepted.message_seq] = text

    # --- the link ----------------------------------------------------------------------

    @rule(share=st.floats(0.0, 1.0))
    def agent_makes_a_batch(self, share: float) -> None:
        pending = [p.message_seq for p in self.outbox.pending_messages(self.now)]
        chosen = pending[: max(1, round(len(pending) * share))] if pending else []
        with contextlib.suppress(NothingToSend):
            self.outbox.make_batch(chosen, CODEBOOK, VESSEL_KEY, self.now)

    @rule()
    def agent_publishes_what_is_unacknowledged(self) -> None:
        for batch in self.outbox.unacknowledged_batches():
            self.uplink.append(batch.data)
            self.outbox.mark_sent(batch.batch_seq, self.now)

    @precondition(lambda self: self.uplink)
    @rule(data=st.data(), duplicate=st.booleans())
    def network_carries_an_uplink_packet(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.uplink) - 1))
        packet = self.uplink[index] if duplicate else self.uplink.pop(index)
        self.shore.receive(packet, self.now)
        self.downlink += self.shore.send(self.now)

    @precondition(lambda self: self.uplink)
    @rule(data=st.data())
    def network_loses_an_uplink_packet(self, data: st.DataObject) -> None:
        del self.uplink[data.draw(st.integers(0, len(self.uplink) - 1))]

    @precondition(lambda self: self.downlink)
    @rule(data=st.data(), duplicate=st.booleans())
    def network_carries_a_downlink_packet(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.downlink) - 1))
        packet = self.downlink[index] if duplicate else self.downlink.pop(index)
        self.outbox.apply_downlink(self.shore.downlink_batch(packet), self.now)

    @precondition(lambda self: self.downlink)
    @rule(data=st.data())
    def network_loses_a_downlink_packet(self, data: st.DataObject) -> None:
        del self.downlink[data.draw(st.integers(0, len(self.downlink) - 1))]

    @rule(minutes=st.integers(1, 120))
    def time_passes(self, minutes: int) -> None:
        self.now += minutes * 60.0

    @rule()
    def shore_resends_what_is_due(self) -> None:
        """The relay's pass: unacknowledged downlink batches whose resend time came."""
        self.downlink += self.shore.send(self.now)

    # --- crashes -----------------------------------------------------------------------

    @rule()
    def agent_crashes_and_restarts(self) -> None:
        """The process dies: nothing in memory survives; the SQLite outbox is reopened."""
        self.outbox.close()
        self.outbox = Outbox.open(self.directory / "outbox.sqlite3", VESSEL)

    @rule()
    def shore_crashes_before_sending(self) -> None:
        """The shore committed, then died before its downlink left: those packets are lost,
        and it starts again from its record."""
        self.downlink.clear()
        self.shore.restart()

    # --- invariants --------------------------------------------------------------------

    def outbox_messages(self) -> dict[int, tuple[str, str]]:
        with self.outbox.reading() as db:
            rows = db.execute("SELECT message_seq, body, state FROM messages").fetchall()
        return {int(seq): (str(body), str(state)) for seq, body, state in rows}

    def shore_words(self) -> dict[int, str]:
        """The words of every message kept ashore, by number."""
        kept = self.shore.messages
        return {s: m.body or "" for s, m in kept.items() if isinstance(m, CrewMessage)}

    @invariant()
    def nothing_acknowledged_is_missing_ashore(self) -> None:
        ashore = self.shore_words()
        for seq, (words, state) in self.outbox_messages().items():
            if state in ACKED_STATES:
                assert ashore.get(seq) == words, f"message {seq} is {state}"

    @invariant()
    def every_accepted_message_is_kept_with_its_words(self) -> None:
        kept = self.outbox_messages()
        for seq, words in self.accepted.items():
            assert kept[seq][0] == words

    @invariant()
    def the_shore_holds_each_message_once(self) -> None:
        # under one number the model shore keeps one envelope (other words fail the test)
        ashore = self.shore_words()
        assert len(ashore) == len(self.shore.messages)
        assert len(set(ashore.values())) == len(ashore), "the same words under two numbers"
        for seq, words in ashore.items():
            assert self.accepted[seq] == words

    @invariant()
    def quota_never_negative(self) -> None:
        for crew, _ in self.crew:
            status = self.outbox.quota_status(crew, QUOTA_BYTES, self.now)
            assert status.quota_bytes - status.used_bytes >= 0


OutboxAndShore.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOutboxAndShore = OutboxAndShore.TestCase
