"""The message state table: every (state, event) pair either moves as the table says or
raises an error that names the event and the state."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipboard.errors import IllegalTransition
from shipboard.states import FINAL_STATES, TRANSITIONS, MessageEvent, MessageState, next_state


@given(st.sampled_from(MessageState), st.sampled_from(MessageEvent))
def test_every_state_and_event(state: MessageState, event: MessageEvent) -> None:
    """Any event in any state either follows the one table or is refused by name."""
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition) as refused:
            next_state(state, event, 17)
        assert refused.value.event == event.value
        assert refused.value.state == state.value
        assert f"'{event.value}'" in str(refused.value)
        assert "message 17" in str(refused.value)


@given(st.sampled_from(sorted(FINAL_STATES)), st.sampled_from(MessageEvent))
def test_final_states_never_go_back(state: MessageState, event: MessageEvent) -> None:
    """A delivered or failed message never becomes pending again, whatever news comes late."""
    with contextlib.suppress(IllegalTransition):
        assert next_state(state, event) is state


def test_only_an_accepted_message_can_be_batched() -> None:
    """A message goes into exactly one batch: batching is allowed only from 'accepted'."""
    allowed = [state for state in MessageState if (state, MessageEvent.BATCH) in TRANSITIONS]
    assert allowed == [MessageState.ACCEPTED]
    assert all(
        (MessageState.ACCEPTED, event) not in TRANSITIONS
        for event in MessageEvent
        if event is not MessageEvent.BATCH
    )
