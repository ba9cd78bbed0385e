"""The pure exchange (``protocol.exchange``): time is an argument, the link is a list.

aioquic's way: ``now`` is chosen by the test (``now = vessel.next_timer()``), packets are
moved by hand over the fake link pair, the outbox is a small in-memory record
(``memory.py``) and the shore the kit's model shore (``tests/kit/model_shore.py``).
Hypothesis checks every (state, input) pair against the tables, and random loss,
duplication, reordering and restarts against the promises: no batch is acknowledged twice,
nothing acknowledged is missing ashore, nothing is stored twice, and once the link behaves
every message gets through.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol import exchange as exchange_module
from protocol.batch import Batch, Direction, encode_batch, read_batch_header
from protocol.envelopes import BatchAck, DeliveryReceipt, Envelope, ReceiptStage, Reply
from protocol.errors import NotAllowedInState, Reason
from protocol.exchange import (
    SHORE_TRANSITIONS,
    VESSEL_TRANSITIONS,
    MakeBatch,
    ShoreExchange,
    ShoreInput,
    ShoreState,
    VesselExchange,
    VesselInput,
    VesselState,
    downlink_release_due,
    read_downlink,
)
from protocol.languages import Language
from protocol.replay import RangeSet
from tests.exchange.memory import (
    CODEBOOK,
    T0,
    VESSEL,
    MemoryVessel,
    shore_settings,
    vessel_settings,
)
from tests.kit.fakelink import DOWN, UP, LinkPair
from tests.kit.model_shore import ModelShore, serve_on_fakelink
from tests.shore.store_fixtures import SHORE_KEY


def run_until_published(vessel: VesselExchange, record: MemoryVessel, pair: LinkPair) -> float:
    """Start a session at T0, let the drain time out, publish everything; the time."""
    now = T0
    record.start(vessel, now)
    now = vessel.next_timer() or now
    vessel.handle_timer(now)
    record.answer(vessel, now)
    publish_all(vessel, record, pair, now)
    return now


def publish_all(vessel: VesselExchange, record: MemoryVessel, pair: LinkPair, now: float) -> None:
    while outgoing := vessel.data_to_send(now):
        for batch in outgoing:
            pair.send(UP, batch.data)
            record.published(batch.batch_seq)
            vessel.published(batch.batch_seq, now)
            record.answer(vessel, now)


def vessel_step(vessel: VesselExchange, record: MemoryVessel, pair: LinkPair, now: float) -> None:
    for data in pair.take(DOWN):
        vessel.receive(data, now)
        record.answer(vessel, now)
    publish_all(vessel, record, pair, now)


# --- single sessions, by hand ----------------------------------------------------------------


def test_a_session_drains_publishes_and_ends_when_the_shore_acknowledges() -> None:
    """Two messages: the drain ends after quiet_s, one batch goes up, the shore's BatchAck
    and receipts come down, and the session is done without waiting out ack_wait_s."""
    pair, record, shore = LinkPair(), MemoryVessel(), ModelShore(shore_settings())
    record.write(), record.write()
    vessel = VesselExchange(vessel_settings())
    record.start(vessel, T0)
    assert vessel.state is VesselState.DRAINING
    assert vessel.next_timer() == T0 + 2.0  # quiet_s
    now = T0 + 2.0
    vessel.handle_timer(now)
    record.answer(vessel, now)
    publish_all(vessel, record, pair, now)
    assert vessel.state is VesselState.AWAITING_ACKS
    pair.deliver()
    serve_on_fakelink(shore, pair, now + 1)
    pair.deliver()
    vessel_step(vessel, record, pair, now + 2)
    assert vessel.state is VesselState.DONE
    assert vessel.statistics().acknowledged == (1,)
    assert sorted(shore.messages) == [1, 2]
    assert record.receipts == {1: 1, 2: 1}


def test_the_session_waits_for_the_ack_then_gives_up_at_the_ack_wait() -> None:
    """A batch goes up and nothing comes back: the session waits exactly ack_wait_s after
    the last publish, then ends with the batch still open (resent next session)."""
    pair, record = LinkPair(), MemoryVessel()
    record.write()
    vessel = VesselExchange(vessel_settings())
    now = run_until_published(vessel, record, pair)
    assert vessel.state is VesselState.AWAITING_ACKS
    assert vessel.next_timer() == now + 30.0
    vessel.handle_timer(now + 29.9)
    assert vessel.state is VesselState.AWAITING_ACKS
    vessel.handle_timer(now + 30.0)
    record.answer(vessel, now + 30.0)
    assert vessel.state is VesselState.DONE
    assert vessel.statistics().unacknowledged_after == 1
    assert record.open_batches() == [1]


def test_an_ack_only_batch_is_published_once_and_not_waited_for() -> None:
    """With nothing to say but "we got your downlink", the batch goes up and the session
    ends at once: nobody acknowledges such a batch. The next session does not send it
    again, though it is still open (no BatchAck covered it yet)."""
    pair, record = LinkPair(), MemoryVessel()
    record.downlink_seen.add(1)
    record.ack_pending = True
    vessel = VesselExchange(vessel_settings())
    run_until_published(vessel, record, pair)
    assert vessel.statistics().published == (1,)
    assert record.batches[1].ack_only
    assert vessel.state is VesselState.DONE
    assert vessel.next_timer() is None
    again = VesselExchange(vessel_settings())
    run_until_published(again, record, pair)
    assert again.statistics().published == ()
    assert again.state is VesselState.DONE
    assert record.open_batches() == [1]


def _up_seqs(payloads: list[bytes]) -> list[int]:
    return [read_batch_header(data).batch_seq for data in payloads]


def poll(record: MemoryVessel, shore: ModelShore, pair: LinkPair, now: float) -> VesselExchange:
    """One whole session at ``now``, as a vessel polling on VSAT has one: downlink that
    waited is read, batches go up, the shore answers, until the session is over."""
    serve_on_fakelink(shore, pair, now)  # the relay runs between sessions too (resends)
    vessel = VesselExchange(vessel_settings())
    record.start(vessel, now)
    for _ in range(20):
        pair.deliver()
        serve_on_fakelink(shore, pair, now)
        pair.deliver()
        vessel_step(vessel, record, pair, now)
        if vessel.state is VesselState.DONE:
            return vessel
        timer = vessel.next_timer()
        assert timer is not None
        now = max(now, timer)
        vessel.handle_timer(now)
        record.answer(vessel, now)
        publish_all(vessel, record, pair, now)
    raise AssertionError(f"the session did not end: {vessel.state}")


def _shore_batch(seq: int, *envelopes: Envelope) -> bytes:
    return encode_batch(
        list(envelopes),
        direction=Direction.DOWNLINK,
        vessel_id=VESSEL,
        batch_seq=seq,
        batch_minutes=int(T0 // 60),
        signing_key=SHORE_KEY,
        codebook=CODEBOOK,
    )


def test_a_downlink_batch_that_only_acknowledges_is_applied_but_never_acknowledged() -> None:
    """The shore's answer to a batch is nothing but its BatchAck, and it arrives twice:
    the vessel's batch is acknowledged, the copy counts as a duplicate, and the vessel owes
    nothing for it: the next session sends nothing at all."""
    pair, record = LinkPair(), MemoryVessel()
    record.write()
    vessel = VesselExchange(vessel_settings())
    now = run_until_published(vessel, record, pair)
    bare = _shore_batch(1, BatchAck(up_to=1, written_minutes=int(T0 // 60)))
    for _ in range(2):
        vessel.receive(bare, now)
        record.answer(vessel, now)
    assert vessel.state is VesselState.DONE
    tally = vessel.statistics()
    assert (tally.acknowledged, tally.downlink_applied, tally.downlink_duplicates) == ((1,), 1, 1)
    assert not record.ack_pending
    later = VesselExchange(vessel_settings())
    run_until_published(later, record, pair)
    assert later.statistics().published == ()
    assert len(pair.sent_payloads(UP)) == 1  # the message's batch, and nothing since
    reply = _shore_batch(2, Reply(1, 1, 1, int(T0 // 60), Language.ENG, "we miss you"))
    last = VesselExchange(vessel_settings())
    record.start(last, now)
    last.receive(reply, now)
    record.answer(last, now)
    assert record.ack_pending  # content is acknowledged, as ever


def test_an_idle_vessel_polling_for_a_week_sends_one_bare_acknowledgement() -> None:
    """A message goes up; the shore's BatchAck and receipt come down. Polling every 15
    minutes for a week with nothing to say, the vessel acknowledges that downlink once and
    then sends nothing, and the shore nothing either. A message written on day four is
    acknowledged at once, as is the shore's answer to it (once)."""
    pair, record, shore = LinkPair(), MemoryVessel(), ModelShore(shore_settings())
    record.write()
    now = T0
    for quarter in range(7 * 24 * 4):
        if quarter == 4 * 24 * 4:
            record.write()
        vessel = poll(record, shore, pair, now)
        assert vessel.statistics().unacknowledged_after == 0
        now += 15 * 60
    sent_up = _up_seqs(pair.sent_payloads(UP))
    assert sent_up == [1, 2, 3, 4]  # message, its bare ack; message, its bare ack
    assert [record.batches[seq].ack_only for seq in sent_up] == [False, True, False, True]
    assert len(pair.sent_payloads(DOWN)) == 2  # the answers to the two messages, once each
    assert set(record.acknowledged) == {1, 2, 3}  # batch 2 covered by the second answer
    assert sorted(shore.messages) == [1, 2]


def test_a_lost_bare_acknowledgement_is_never_waited_for_nor_resent_on_its_own() -> None:
    """The vessel's batch that only acknowledges the shore's receipt is lost: no session
    waits or asks for it. The shore, not having heard, resends its receipt after
    resend_max_s; the vessel acknowledges the copy once. When a later BatchAck shows the
    shore moved past the lost batch, it goes up once more, so the shore's replay window
    keeps no hole; then nothing more is sent."""
    pair, record, shore = LinkPair(), MemoryVessel(), ModelShore(shore_settings())
    record.write()
    now = T0
    poll(record, shore, pair, now)  # batch 1: the message; the receipt comes down
    now += 900
    vessel = VesselExchange(vessel_settings())
    record.start(vessel, now)
    pair.deliver()
    vessel_step(vessel, record, pair, now)
    now = vessel.next_timer() or now
    vessel.handle_timer(now)
    record.answer(vessel, now)
    publish_all(vessel, record, pair, now)  # batch 2: the bare acknowledgement...
    assert vessel.state is VesselState.DONE  # ... not waited for
    assert pair.drop() == 1  # ... and lost
    for _ in range(8):  # two hours of polls
        now += 900
        poll(record, shore, pair, now)
    assert _up_seqs(pair.sent_payloads(UP)) == [1, 2, 3]  # 3: the resent receipt's ack
    assert shore.exchange.seen == RangeSet(1, ((3, 3),))
    record.write()
    for _ in range(8):
        now += 900
        poll(record, shore, pair, now)
    assert _up_seqs(pair.sent_payloads(UP)) == [1, 2, 3, 4, 2, 5]
    assert shore.exchange.seen == RangeSet(5)  # the hole is filled
    assert sorted(shore.messages) == [1, 2]
    assert set(record.acknowledged) == {1, 3, 4}


def test_a_batch_that_is_too_big_is_halved() -> None:
    """The outbox says six messages do not fit: the exchange asks for three, then three."""
    vessel = VesselExchange(vessel_settings(max_batch_messages=6))
    vessel.link_up(T0, (), [1, 2, 3, 4, 5, 6])
    vessel.handle_timer(T0 + 2.0)
    assert vessel.next_event() == MakeBatch((1, 2, 3, 4, 5, 6))
    vessel.batch_too_big()
    assert vessel.next_event() == MakeBatch((1, 2, 3))
    vessel.batch_made(1)
    assert vessel.next_event() == MakeBatch((4, 5, 6))


def test_a_link_lost_mid_session_ends_it_and_nothing_more_is_allowed() -> None:
    """The satellite drops while publishing: the session is broken; a late publish
    confirmation is refused with an error naming the event and the state."""
    vessel = VesselExchange(vessel_settings())
    vessel.link_up(T0)
    vessel.link_lost()
    assert vessel.state is VesselState.BROKEN
    with pytest.raises(NotAllowedInState, match="'published' is not allowed in state 'broken'"):
        vessel.published(1, T0)


def test_the_shore_owes_an_ack_at_once_for_content_and_lazily_for_an_ack() -> None:
    """A batch with a message makes the BatchAck due now; one that only acknowledges the
    downlink makes it owed, carried by the next batch the shore has a reason to send."""
    pair, record, shore = LinkPair(), MemoryVessel(), ModelShore(shore_settings())
    record.downlink_seen.add(1)
    record.ack_pending = True
    run_until_published(VesselExchange(vessel_settings()), record, pair)
    pair.deliver()
    serve_on_fakelink(shore, pair, T0)
    assert shore.exchange.state is ShoreState.ACK_OWED
    assert pair.in_flight == []  # nothing sent for it
    record.write()
    run_until_published(VesselExchange(vessel_settings()), record, pair)
    pair.deliver()
    serve_on_fakelink(shore, pair, T0)
    assert shore.exchange.state is ShoreState.NOTHING_OWED
    assert len(pair.in_flight) == 1  # the BatchAck (with the receipt)


# --- every (state, input) pair ----------------------------------------------------------------


def _vessel_in(state: VesselState) -> VesselExchange:
    """A vessel exchange brought to ``state`` by ordinary steps."""
    vessel = VesselExchange(vessel_settings())
    record, pair = MemoryVessel(), LinkPair()
    if state is VesselState.CONNECTING:
        return vessel
    if state is VesselState.BROKEN:
        vessel.link_up(T0)
        vessel.link_lost()
        return vessel
    record.write()
    vessel.link_up(T0, (), [1])
    if state is VesselState.DRAINING:
        return vessel
    vessel.handle_timer(T0 + 2.0)
    vessel.next_event()  # MakeBatch((1,))
    if state is VesselState.BATCHING:
        return vessel
    record._make_batch((1,), T0)
    vessel.batch_made(1)
    vessel.next_event()  # BatchesWanted
    if state is VesselState.OFFERING:
        return vessel
    vessel.offer([record.batches[1]], T0)
    if state is VesselState.PUBLISHING:
        return vessel
    (outgoing,) = vessel.data_to_send(T0)
    pair.send(UP, outgoing.data)
    vessel.published(1, T0)
    if state is VesselState.AWAITING_ACKS:
        return vessel
    vessel.handle_timer(T0 + 100.0)
    assert vessel.state is VesselState.DONE
    return vessel


def _downlink(shore: ModelShore | None = None) -> bytes:
    shore = shore or ModelShore(shore_settings())
    shore.exchange.queue([Reply(1, 1, 1, int(T0 // 60), Language.ENG, "hello")])
    (data,) = shore.exchange.data_to_send(T0)
    return data


def _publish_next(vessel: VesselExchange) -> None:
    vessel.data_to_send(T0)
    vessel.published(1, T0)


#: The public calls, and the table input each one is (``handle_timer`` is QUIET while
#: draining and ACK_WAIT_OVER while awaiting acks; internal inputs follow by themselves).
VESSEL_CALLS: dict[str, Callable[[VesselExchange], object]] = {
    "link_up": lambda v: v.link_up(T0),
    "receive": lambda v: v.receive(_downlink(), T0 + 1),
    "handle_timer": lambda v: v.handle_timer(T0 + 100.0),
    "nothing_to_batch": lambda v: v.nothing_to_batch(),
    "offer": lambda v: v.offer([], T0),
    "published": _publish_next,
    "link_lost": lambda v: v.link_lost(),
}
CALL_INPUT = {
    "link_up": VesselInput.LINK_UP,
    "receive": VesselInput.DOWNLINK,
    "nothing_to_batch": VesselInput.BATCH_ANSWERED,
    "offer": VesselInput.OFFER,
    "published": VesselInput.PUBLISHED,
    "link_lost": VesselInput.LINK_LOST,
}
TIMER_INPUT = {
    VesselState.DRAINING: VesselInput.QUIET,
    VesselState.AWAITING_ACKS: VesselInput.ACK_WAIT_OVER,
}
#: Inputs that follow by themselves when their state is entered (with no work left).
AUTOMATIC = {VesselInput.BATCHES_MADE, VesselInput.ALL_PUBLISHED, VesselInput.ALL_ACKNOWLEDGED}


def _closure(state: VesselState) -> set[VesselState]:
    reached = {state}
    for (source, event), target in VESSEL_TRANSITIONS.items():
        if source == state and event in AUTOMATIC:
            reached |= _closure(target)
    return reached


@pytest.mark.parametrize("state", list(VesselState), ids=lambda s: s.value)
@pytest.mark.parametrize("call", list(VESSEL_CALLS))
def test_every_vessel_state_and_input_follows_the_table(state: VesselState, call: str) -> None:
    """Each public step either moves the session as the table says or raises
    NotAllowedInState naming the step and the state, and then changes nothing. A timer
    outside the two timed states changes nothing."""
    vessel = _vessel_in(state)
    assert vessel.state is state
    if call == "handle_timer" and state not in TIMER_INPUT:
        VESSEL_CALLS[call](vessel)
        assert vessel.state is state
        return
    event = TIMER_INPUT[state] if call == "handle_timer" else CALL_INPUT[call]
    if (state, event) not in VESSEL_TRANSITIONS:
        before = vessel.statistics()
        with pytest.raises(NotAllowedInState, match=f"'{event.value}' is not allowed in state"):
            VESSEL_CALLS[call](vessel)
        assert vessel.state is state
        assert vessel.statistics() == before
        return
    VESSEL_CALLS[call](vessel)
    assert vessel.state in _closure(VESSEL_TRANSITIONS[(state, event)])


@given(
    start=st.sampled_from(list(ShoreState)),
    steps=st.lists(st.sampled_from(list(ShoreInput)), max_size=12),
)
def test_every_shore_state_and_input_follows_the_table(
    start: ShoreState, steps: list[ShoreInput]
) -> None:
    """Whatever the order of stored, ack-only, refused and sent, the shore's debt moves as
    the table says, and an ack sent when none is owed raises NotAllowedInState."""
    shore = ShoreExchange(shore_settings(), state=start)
    state = start
    for step in steps:
        expected = SHORE_TRANSITIONS.get((state, step))
        if expected is None:
            with pytest.raises(NotAllowedInState, match=f"'{step.value}' is not allowed"):
                shore._step(step)
            assert shore.state is state
        else:
            shore._step(step)
            assert shore.state is expected
            state = expected


def test_the_module_is_pure() -> None:
    """protocol/exchange.py imports no socket, event loop, clock, thread or randomness."""
    tree = ast.parse(Path(exchange_module.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"asyncio", "socket", "time", "random", "threading", "os", "ssl"}


# --- random schedules ---------------------------------------------------------------------------


class Schedules(RuleBasedStateMachine):
    """A vessel and a shore (pure machines, in-memory records) over a link that loses,
    duplicates and reorders, with sessions breaking off and the shore restarting."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = LinkPair()
        self.record = MemoryVessel()
        self.shore = ModelShore(shore_settings())
        self.vessel: VesselExchange | None = None
        self.now = T0

    def live(self) -> bool:
        return self.vessel is not None and self.vessel.state not in (
            VesselState.DONE,
            VesselState.BROKEN,
        )

    @rule()
    def crew_member_writes(self) -> None:
        self.record.write()

    @precondition(lambda self: not self.live())
    @rule()
    def session_opens(self) -> None:
        self.pair.take(DOWN)  # what reached a vessel that was not listening is gone
        self.vessel = VesselExchange(vessel_settings())
        self.record.start(self.vessel, self.now)

    @precondition(lambda self: self.live())
    @rule()
    def vessel_works(self) -> None:
        assert self.vessel is not None
        vessel_step(self.vessel, self.record, self.pair, self.now)

    @precondition(lambda self: self.live())
    @rule()
    def vessel_timer_fires(self) -> None:
        assert self.vessel is not None
        timer = self.vessel.next_timer()
        if timer is not None:
            self.now = max(self.now, timer)
            self.vessel.handle_timer(self.now)
            self.record.answer(self.vessel, self.now)
            publish_all(self.vessel, self.record, self.pair, self.now)

    @precondition(lambda self: self.live())
    @rule()
    def a_round_trip(self) -> None:
        """Everything in flight arrives, the shore answers, the answer arrives."""
        assert self.vessel is not None
        self.pair.deliver()
        serve_on_fakelink(self.shore, self.pair, self.now)
        self.pair.deliver()
        vessel_step(self.vessel, self.record, self.pair, self.now)

    @precondition(lambda self: self.live())
    @rule()
    def link_breaks(self) -> None:
        assert self.vessel is not None
        self.vessel.link_lost()

    @rule()
    def shore_works(self) -> None:
        serve_on_fakelink(self.shore, self.pair, self.now)

    @rule()
    def shore_restarts(self) -> None:
        self.shore.restart()

    @precondition(lambda self: self.pair.in_flight)
    @rule(count=st.integers(1, 4))
    def network_delivers(self, count: int) -> None:
        self.pair.deliver(count)

    @precondition(lambda self: self.pair.in_flight)
    @rule()
    def network_loses(self) -> None:
        self.pair.drop()

    @precondition(lambda self: self.pair.in_flight)
    @rule()
    def network_duplicates(self) -> None:
        self.pair.duplicate()

    @rule(newest_first=st.booleans())
    def network_reorders(self, newest_first: bool) -> None:
        if newest_first:
            self.pair.reorder()
        else:
            self.pair.in_order()

    @rule(minutes=st.integers(1, 120))
    def time_passes(self, minutes: int) -> None:
        self.now += minutes * 60.0

    @invariant()
    def no_batch_is_acknowledged_twice(self) -> None:
        assert all(count == 1 for count in self.record.acknowledged.values())

    @invariant()
    def nothing_acknowledged_is_missing_ashore(self) -> None:
        for batch_seq in self.record.acknowledged:
            for message_seq in self.record.batch_messages[batch_seq]:
                assert message_seq in self.shore.messages

    @invariant()
    def nothing_is_stored_twice_or_refused(self) -> None:
        # the model shore keeps each message once, and fails the test if a number comes
        # back with other words or a batch number with other bytes
        assert not self.shore.rejected
        assert not self.record.refused

    def teardown(self) -> None:
        """The link behaves from now on: a few clean sessions get every message through."""
        self.pair.in_order()
        self.pair.in_flight.clear()
        for _ in range(4):
            self.now += 7200.0
            vessel = VesselExchange(vessel_settings())
            self.pair.take(DOWN)
            self.record.start(vessel, self.now)
            for _ in range(50):
                if vessel.state in (VesselState.DONE, VesselState.BROKEN):
                    break
                self.pair.deliver()
                serve_on_fakelink(self.shore, self.pair, self.now)
                self.pair.deliver()
                vessel_step(vessel, self.record, self.pair, self.now)
                if not self.pair.in_flight and (timer := vessel.next_timer()) is not None:
                    self.now = max(self.now, timer)
                    vessel.handle_timer(self.now)
                    self.record.answer(vessel, self.now)
        self.no_batch_is_acknowledged_twice()
        written = set(range(1, self.record.written + 1))
        assert set(self.shore.messages) == written, "a message never got ashore"
        content = [s for s, b in self.record.batches.items() if not b.ack_only]
        assert set(content) <= set(self.record.acknowledged), "a batch was never acknowledged"


Schedules.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSchedules = Schedules.TestCase


def test_reason_codes_travel_in_a_refusal() -> None:
    """A batch the shore refuses for good is reported to the vessel with its reason, and
    the vessel stops waiting for it."""
    shore = ModelShore(shore_settings(), refuse=lambda batch: Reason.LIMIT_EXCEEDED)
    pair, record = LinkPair(), MemoryVessel()
    record.write()
    vessel = VesselExchange(vessel_settings())
    now = run_until_published(vessel, record, pair)
    pair.deliver()
    (data,) = pair.take(UP)
    shore.receive(data, now)  # authentic: the store refuses it for good
    assert shore.rejected == {1: Reason.LIMIT_EXCEEDED}
    assert not shore.batches
    for down in shore.send(now):
        vessel.receive(down, now)
        record.answer(vessel, now)
    assert record.refused == {1}
    assert not record.acknowledged
    assert vessel.state is VesselState.DONE


def test_the_downlink_resend_rule_is_one_function() -> None:
    """The relay's store and the pure shore machine resend on the same rule: at once when
    never sent; after resend_after_s once the vessel was heard from since the last send;
    after resend_max_s in any case; a batch that only acknowledges goes once."""
    from protocol.exchange import downlink_resend_at
    from shore.store.downlink import resend_due

    assert downlink_resend_at(None, None, 60, 600) == float("-inf")
    assert downlink_resend_at(100, 150, 60, 600) == 160
    assert downlink_resend_at(100, 90, 60, 600) == 700
    assert downlink_resend_at(100, None, 60, 600) == 700
    for now in (100, 159, 160, 699, 700):
        for heard in (None, 90, 150):
            expected = now >= downlink_resend_at(100, heard, 60, 600)
            assert resend_due(100, 3, heard, now, 60, 600) is expected
    assert resend_due(None, 0, None, 0, 60, 600)
    assert not resend_due(100, 0, 150, 10_000, 60, 600)


def test_the_downlink_release_rule() -> None:
    """What the shore queued goes down at once when the vessel is in a session (a BatchAck
    is due), when the vessel has collected everything sent before (nothing in flight), or
    when it must not wait (an SOS's outcome); otherwise it waits for the vessel to collect
    the batch in flight. An acknowledgement owed lazily never goes alone."""
    due = downlink_release_due
    assert due(ShoreState.ACK_DUE, waiting=0, urgent=False, in_flight=3)
    assert due(ShoreState.ACK_DUE, waiting=130, urgent=False, in_flight=1)
    for owed in (ShoreState.NOTHING_OWED, ShoreState.ACK_OWED):
        assert not due(owed, waiting=0, urgent=False, in_flight=0)
        assert due(owed, waiting=1, urgent=False, in_flight=0)
        assert not due(owed, waiting=130, urgent=False, in_flight=1)
        assert due(owed, waiting=2, urgent=True, in_flight=1)
    with pytest.raises(ValueError, match="not negative"):
        due(ShoreState.NOTHING_OWED, waiting=-1, urgent=False, in_flight=0)


def _receipt(seq: int) -> DeliveryReceipt:
    return DeliveryReceipt(seq, ReceiptStage.DELIVERED, int(T0 // 60))


def _down(data: bytes) -> Batch:
    batch = read_downlink(data, vessel_id=VESSEL, shore_key=SHORE_KEY.verify_key, codebook=CODEBOOK)
    assert isinstance(batch, Batch)
    return batch


def test_the_shore_holds_what_it_queues_until_the_vessel_collects_the_batch_in_flight() -> None:
    """The pure shore: the first receipt goes at once (nothing in flight); five more queued
    over the day wait; the vessel's acknowledgement-only batch covering the first releases
    them in one batch, with the owed BatchAck riding along; an SOS outcome queued while
    that batch is in flight goes at once; with max_items 2 a release of five is split in
    three, all sent together."""
    shore = ModelShore(shore_settings(max_items=2))
    exchange = shore.exchange
    exchange.queue([_receipt(1)])
    (first,) = exchange.data_to_send(T0)
    shore.answer(T0)
    assert [e.message_seq for e in _down(first).envelopes] == [1]  # type: ignore[union-attr]
    for hour in range(5):
        exchange.queue([_receipt(2 + hour)])
        assert exchange.data_to_send(T0 + 3600 * (hour + 1)) == []
    assert exchange.waiting() == 5
    pair, record = LinkPair(), MemoryVessel()
    record.downlink_seen.add(1)
    record.ack_pending = True
    now = run_until_published(VesselExchange(vessel_settings()), record, pair)
    pair.deliver()
    for data in pair.take(UP):
        exchange.receive(data, now)
        shore.answer(now)
    assert exchange.state is ShoreState.ACK_OWED
    released = [_down(data) for data in exchange.data_to_send(now)]
    shore.answer(now)
    assert [len(b.envelopes) for b in released] == [3, 2, 1]  # BatchAck + 2, 2, 1
    assert isinstance(released[0].envelopes[0], BatchAck)
    carried = [
        e.message_seq for b in released for e in b.envelopes if isinstance(e, DeliveryReceipt)
    ]
    assert carried == [2, 3, 4, 5, 6]
    assert exchange.unacknowledged_downlink() == (2, 3, 4)
    exchange.queue([_receipt(7)])
    assert exchange.data_to_send(now + 60) == []
    exchange.queue([_receipt(99)], urgent=True)  # the SOS's alert reached the rescue centre
    (sos,) = exchange.data_to_send(now + 61)
    assert [e.message_seq for e in _down(sos).envelopes] == [7, 99]  # type: ignore[union-attr]
