"""Errors: the one hierarchy that every decode path of ``protocol`` may raise.

Any bytes from the link either decode or raise a :class:`ProtocolError`; nothing else
escapes (the fuzz tests hold this invariant). Each error carries a stable
:class:`Reason` code that can travel back to the peer in a rejection receipt, and a
message that names the thing and says what to do.

::

    ProtocolError                      (base; never raised itself)
    ├── RemoteProtocolError            the peer sent something we cannot accept
    │   ├── MalformedBatch             bytes that are not a batch of ours (truncated, garbled)
    │   ├── SignatureInvalid           the signature does not match the key we hold
    │   ├── UnknownDictionary          a dictionary or model id we do not have
    │   ├── LimitExceeded              a size, count or depth over our hard limits
    │   ├── ReplayedBatch              a batch sequence number we have already seen
    │   ├── SealedBoxInvalid           a sealed report that does not open with our key
    │   └── UnprocessableBatch         an authentic batch the receiver failed to apply
    └── LocalProtocolError             we misused our own API (a bug, or bad local input)
        ├── InvalidEnvelope            an envelope that cannot be built as given
        ├── InvalidText                text rejected at intake (bad encoding, control chars)
        └── NotAllowedInState          a step that the state machine forbids now
"""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    """Stable reason codes; they travel on the link, so never renumber them."""

    MALFORMED = 1
    SIGNATURE_INVALID = 2
    UNKNOWN_DICTIONARY = 3
    LIMIT_EXCEEDED = 4
    REPLAYED = 5
    SEALED_BOX_INVALID = 6
    #: Authentic and decodable, but applying it failed on the receiver's side: content
    #: that no check of ``protocol`` caught, or a bug. Refused for good, kept for the operator.
    UNPROCESSABLE = 7
    INVALID_ENVELOPE = 20
    INVALID_TEXT = 21
    NOT_ALLOWED_IN_STATE = 22
    UNKNOWN_VESSEL = 30


class ProtocolError(Exception):
    """Base of every error the protocol package raises."""

    reason: Reason = Reason.MALFORMED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes we cannot accept: reject them, keep running."""


class LocalProtocolError(ProtocolError):
    """Our own side asked for something impossible (a bug, or bad local input)."""


class MalformedBatch(RemoteProtocolError):
    """Bytes that are not a well-formed batch (truncated, garbled, wrong version)."""

    reason = Reason.MALFORMED


class SignatureInvalid(RemoteProtocolError):
    """The batch's signature does not verify with the key we hold for its sender."""

    reason = Reason.SIGNATURE_INVALID


class UnknownDictionary(RemoteProtocolError):
    """The batch names a compression dictionary or model that we do not have."""

    reason = Reason.UNKNOWN_DICTIONARY


class LimitExceeded(RemoteProtocolError):
    """A declared or decoded size, count or depth is over the hard limits."""

    reason = Reason.LIMIT_EXCEEDED


class ReplayedBatch(RemoteProtocolError):
    """A batch (or message) sequence number that was already accepted."""

    reason = Reason.REPLAYED


class SealedBoxInvalid(RemoteProtocolError):
    """A sealed grievance report that does not open with the union's key."""

    reason = Reason.SEALED_BOX_INVALID


class UnprocessableBatch(RemoteProtocolError):
    """An authentic batch (its signature verified) that the receiver failed to apply.

    Raised by the receiving side's last line of defence when storing or applying a batch
    failed in a way no check of ``protocol`` foresaw (hostile content, or a bug on either
    side). The batch is refused for good, so its sender stops resending it, and its bytes
    are kept for the operator, who finds the traceback in the receiver's log.
    """

    reason = Reason.UNPROCESSABLE


class InvalidEnvelope(LocalProtocolError):
    """An envelope that cannot be built with the given fields."""

    reason = Reason.INVALID_ENVELOPE


class InvalidText(LocalProtocolError):
    """Text refused at intake; the message says what is wrong and where."""

    reason = Reason.INVALID_TEXT


class NotAllowedInState(LocalProtocolError):
    """A step that the state machine does not allow in its current state."""

    reason = Reason.NOT_ALLOWED_IN_STATE
