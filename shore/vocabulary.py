"""Vocabulary: the shore's words for messages and deliveries, as enums, in one place.

Both the store (:mod:`shore.store`) and the services that use it (the delivery worker, the
SOS alerter, the dashboard, the reports) import these, so this module imports nothing of
the shore. Each enum's values are the words the database has always held (``messages.kind``,
``messages.state``, ``deliveries.outcome``, ``batches.state``): a relay database made by an
older version reads the same. They are :class:`~enum.StrEnum` so a value compares equal to
its word.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from protocol.envelopes import (
    Channel,
    CrewMessage,
    DeliveryFailure,
    DeliveryReceipt,
    Envelope,
    FailureReason,
    GrievanceReport,
    ReceiptStage,
    Sos,
    VoiceNote,
)

#: The detail of a family message's attempt made before its contact was known (its vessel's
#: contact book change may come in a later batch, or one ingested a moment later by another
#: worker): it is tried again, and at once when a contact of its vessel arrives.
CONTACT_NOT_KNOWN_YET = "contact not known yet"


class MessageKind(StrEnum):
    """What a stored message is (``messages.kind``)."""

    MESSAGE = "message"  # a crew member's message to a family contact
    GRIEVANCE = "grievance"  # a grievance report, sealed to a union
    SOS = "sos"  # an SOS: alerts, no delivery

    @classmethod
    def of(cls, envelope: Envelope) -> MessageKind | None:
        """The kind of an uplink envelope that is stored as a message (None for the rest:
        contact book changes, acknowledgements)."""
        if isinstance(envelope, CrewMessage | VoiceNote):
            return cls.MESSAGE
        if isinstance(envelope, GrievanceReport):
            return cls.GRIEVANCE
        if isinstance(envelope, Sos):
            return cls.SOS
        return None


class MessageState(StrEnum):
    """Where a stored message stands (``messages.state``)."""

    ACCEPTED = "accepted"  # stored ashore, its delivery queued
    DELIVERED = "delivered"
    FAILED = "failed"
    ALERT = "alert"  # an SOS whose alerts are still being sent


class DeliveryOutcome(StrEnum):
    """How a delivery (or an SOS's alerts) ended for good (``deliveries.outcome``)."""

    DELIVERED = "delivered"
    FAILED = "failed"

    @property
    def message_state(self) -> MessageState:
        """The message's state once its delivery ended so."""
        return MessageState(self.value)


class AttemptEnd(StrEnum):
    """How one delivery attempt by a worker ended (the metrics' ``outcome`` label)."""

    DELIVERED = "delivered"  # the final outcome: delivered
    FAILED = "failed"  # the final outcome: failed for good
    RETRY = "retry"  # failed for now: rescheduled
    LOST = "lost"  # not sent: the claim had lapsed and another worker took it


@dataclass(frozen=True, slots=True)
class DeliveryEnd:
    """How the attempt on one claimed delivery ended, as a worker hands it back to the store.

    ``outcome`` DELIVERED or FAILED (with ``reason``) ends the delivery; None means try
    again at ``retry_at``. ``maybe_sent``: the attempt failed after the message was handed
    over, so it may have arrived: the next attempt is counted as a repeat.
    """

    key: object
    outcome: DeliveryOutcome | None
    reason: FailureReason | None = None
    retry_at: float | None = None
    detail: str = ""
    maybe_sent: bool = False

    def __post_init__(self) -> None:
        if self.outcome is None and self.retry_at is None:
            raise ValueError("a delivery that is not over needs the time to try again")
        if self.outcome is DeliveryOutcome.FAILED and self.reason is None:
            raise ValueError("a failed delivery needs a FailureReason")


class BatchState(StrEnum):
    """What became of a stored uplink batch (``batches.state``)."""

    STORED = "stored"
    REJECTED = "rejected"


class Destination(Enum):
    """Where a delivery goes."""

    EMAIL = "email"
    SMS = "sms"
    UNION = "union"

    @classmethod
    def for_channel(cls, channel: Channel) -> Destination:
        """The destination of a family contact's channel."""
        return cls.EMAIL if channel is Channel.EMAIL else cls.SMS


def receipt_for(
    message_seq: int, outcome: DeliveryOutcome | str, reason: FailureReason | None, now: float
) -> DeliveryReceipt | DeliveryFailure:
    """The downlink envelope that tells the crew member a delivery's final outcome.

    Raises ``ValueError`` for an ``outcome`` that is not a :class:`DeliveryOutcome`."""
    minutes = int(now // 60)
    if DeliveryOutcome(outcome) is DeliveryOutcome.DELIVERED:
        return DeliveryReceipt(message_seq, ReceiptStage.DELIVERED, minutes)
    return DeliveryFailure(message_seq, reason or FailureReason.PROVIDER_ERROR, minutes)
