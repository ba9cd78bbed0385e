"""States: every state of an outbox message and every allowed change, in one table.

Also the outbox's other words, as enums whose values are what the tables store: what a
message is (:class:`MessageKind`) and where a stored batch stands (:class:`BatchState`).

Everything that changes a message's state lives here (h11's rule): the outbox asks
:func:`next_state` before it writes a new state, and an event that the table does not
list for the current state raises :class:`~shipboard.errors.IllegalTransition` naming
the event and the state. ::

    accepted --batch--> batched --send--> sent --shore_ack / accepted_ashore--> acknowledged
                           |               |                                       |
                           +---------------+--- delivered --> delivered <----------+
                           +---------------+--- failed / rejected --> failed <-----+

Late or repeated news from the shore (a second receipt, an acknowledgement that comes
after the delivery receipt, a resend reported after the acknowledgement) leaves the state
as it is: those rows map a state to itself, so they are listed, not silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from shipboard.errors import IllegalTransition


class MessageKind(StrEnum):
    """What an outbox message is; the value is what the outbox stores."""

    MESSAGE = "message"  # a crew member's message to a family contact (counts on their quota)
    GRIEVANCE = "grievance"  # a sealed report sent on its own, or an old daily slot
    SOS = "sos"  # an SOS (the reserved lane; sent at once)
    LANE = "lane"  # a grievance lane block released at the end of its period (report or cover)


#: Kinds outside every crew quota, with capacity of their own (the scheduler's lane).
RESERVED_KINDS = frozenset({MessageKind.GRIEVANCE, MessageKind.SOS, MessageKind.LANE})


class BatchState(StrEnum):
    """Where a stored uplink batch stands; the value is what the outbox stores."""

    MADE = "made"  # its bytes are stored; never published yet
    SENT = "sent"  # published at least once (broker PUBACK); not yet the shore's
    ACKED = "acked"  # a BatchAck covered it: the shore committed it
    REJECTED = "rejected"  # the shore refused it for good (BatchAck.rejected)


#: Batches still owed to the shore: resent, byte-identical, until acknowledged.
OPEN_BATCH_STATES = (BatchState.MADE, BatchState.SENT)


class MessageState(StrEnum):
    """Where a message is on its way; the value is what the outbox stores."""

    ACCEPTED = "accepted"  # committed on board, waiting for a batch
    BATCHED = "batched"  # inside a batch whose bytes are stored, not yet published
    SENT = "sent"  # its batch was published at least once (broker PUBACK)
    ACKNOWLEDGED = "acknowledged"  # the shore committed it (BatchAck or ACCEPTED_ASHORE)
    DELIVERED = "delivered"  # the family (or union) received it
    FAILED = "failed"  # it cannot be delivered; failure_reason says why


class MessageEvent(StrEnum):
    """What can happen to a message."""

    BATCH = "batch"  # make_batch() put it in a batch
    SEND = "send"  # its batch was published (mark_sent)
    SHORE_ACK = "shore_ack"  # a BatchAck covers its batch
    ACCEPTED_ASHORE = "accepted_ashore"  # DeliveryReceipt(stage=ACCEPTED_ASHORE)
    DELIVERED = "delivered"  # DeliveryReceipt(stage=DELIVERED)
    FAILED = "failed"  # DeliveryFailure
    REJECTED = "rejected"  # the shore refused its batch for good (BatchAck.rejected)


S = MessageState
E = MessageEvent

#: (state, event) -> new state. A pair that is not here is illegal.
TRANSITIONS: Mapping[tuple[MessageState, MessageEvent], MessageState] = {
    (S.ACCEPTED, E.BATCH): S.BATCHED,
    # publishing (and re-publishing) a batch
    (S.BATCHED, E.SEND): S.SENT,
    (S.SENT, E.SEND): S.SENT,
    (S.ACKNOWLEDGED, E.SEND): S.ACKNOWLEDGED,
    (S.DELIVERED, E.SEND): S.DELIVERED,
    (S.FAILED, E.SEND): S.FAILED,
    # the shore's application acknowledgement (it may arrive before mark_sent committed)
    (S.BATCHED, E.SHORE_ACK): S.ACKNOWLEDGED,
    (S.SENT, E.SHORE_ACK): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, E.SHORE_ACK): S.ACKNOWLEDGED,
    (S.DELIVERED, E.SHORE_ACK): S.DELIVERED,
    (S.FAILED, E.SHORE_ACK): S.FAILED,
    (S.BATCHED, E.ACCEPTED_ASHORE): S.ACKNOWLEDGED,
    (S.SENT, E.ACCEPTED_ASHORE): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, E.ACCEPTED_ASHORE): S.ACKNOWLEDGED,
    (S.DELIVERED, E.ACCEPTED_ASHORE): S.DELIVERED,
    (S.FAILED, E.ACCEPTED_ASHORE): S.FAILED,
    # the end of the way
    (S.BATCHED, E.DELIVERED): S.DELIVERED,
    (S.SENT, E.DELIVERED): S.DELIVERED,
    (S.ACKNOWLEDGED, E.DELIVERED): S.DELIVERED,
    (S.DELIVERED, E.DELIVERED): S.DELIVERED,
    (S.BATCHED, E.FAILED): S.FAILED,
    (S.SENT, E.FAILED): S.FAILED,
    (S.ACKNOWLEDGED, E.FAILED): S.FAILED,
    (S.FAILED, E.FAILED): S.FAILED,
    (S.BATCHED, E.REJECTED): S.FAILED,
    (S.SENT, E.REJECTED): S.FAILED,
    (S.FAILED, E.REJECTED): S.FAILED,
}

#: States in which a message is finished on board.
FINAL_STATES = frozenset({S.DELIVERED, S.FAILED})


def next_state(
    state: MessageState, event: MessageEvent, message_seq: int | None = None
) -> MessageState:
    """The state after ``event``; raise :class:`IllegalTransition` if the table forbids it."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(event.value, state.value, message_seq) from None
