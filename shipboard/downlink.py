"""Downlink: what the agent does with one batch from the shore, and why nothing stops it.

No downlink batch can stop the agent. Bytes that are not an authentic batch for this
vessel (garbled before the signature, forged, another vessel's) are logged and skipped:
the shore resends what the vessel does not acknowledge, and a forger cannot make the
vessel skip a batch number (:func:`protocol.exchange.read_downlink` is the one rule for
that). An authentic batch that does not decode, or whose envelopes the outbox refuses (a
state change the state table forbids, content that no check caught, a bug), is rolled
back and refused for good with a typed reason (``Outbox.refuse_downlink``: the next
``BatchAck`` covers it and names it in ``rejected``, so the shore stops resending it), and
the session goes on with the rest of the traffic. An unexpected failure is logged once with
its traceback. Only the agent's own failure (``OutboxUnavailable``: its disk;
``MemoryError``) ends the session, to be retried.

Synchronous: the link's shell runs these in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

from protocol.batch import Batch
from protocol.codebook import Codebook
from protocol.errors import NotAllowedInState, ProtocolError, Reason, UnprocessableBatch
from protocol.exchange import DownlinkRefused, read_downlink
from protocol.signing import VerifyKey
from shipboard.errors import IllegalTransition, OutboxUnavailable

__all__ = [
    "DownlinkApplier",
    "DownlinkOutcome",
    "DownlinkRefusals",
    "DownlinkResultLike",
    "DownlinkVerdict",
    "apply_downlink_batch",
    "apply_downlink_payload",
    "record_refusal",
]

logger = logging.getLogger("shipboard.link")
Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class DownlinkResultLike(Protocol):
    """What applying a downlink batch changed (``shipboard.outbox.DownlinkResult``)."""

    @property
    def duplicate(self) -> bool: ...
    @property
    def acknowledged_batches(self) -> tuple[int, ...]: ...
    @property
    def rejected_batches(self) -> tuple[int, ...]: ...


class DownlinkApplier(Protocol):
    """The part of the outbox that applies downlink batches."""

    def apply_downlink(self, batch: Batch, now: float) -> DownlinkResultLike:
        """Apply a verified downlink batch in one transaction (duplicates change nothing)."""
        ...


@runtime_checkable
class DownlinkRefusals(Protocol):
    """An outbox that can refuse an authentic downlink batch for good (the real one can)."""

    def refuse_downlink(self, batch_seq: int, reason: Reason, now: float) -> bool: ...


class DownlinkOutcome(Enum):
    """What became of one downlink payload."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    #: Authentic, but it does not decode or cannot be applied: refused for good (the
    #: next BatchAck covers it and names the reason); nothing of it was applied.
    REFUSED = "refused"
    #: Not an authentic batch for this vessel (garbled, forged, another vessel's): skipped.
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class DownlinkVerdict:
    """The outcome of one downlink payload, with what it changed or why it was refused."""

    outcome: DownlinkOutcome
    result: DownlinkResultLike | None = None
    reason: Reason | None = None


def apply_downlink_batch(
    outbox: DownlinkApplier, batch: Batch, now: float, log: Log = logger
) -> DownlinkVerdict:
    """Apply one authentic, decoded downlink batch, or refuse it for good (typed).

    Raises only :class:`~shipboard.errors.OutboxUnavailable` or ``MemoryError`` (the
    agent failed, not the batch: nothing was changed, and the shore's resend brings it).
    """
    where = f"downlink batch {batch.batch_seq}"
    try:
        result = outbox.apply_downlink(batch, now)
    except (OutboxUnavailable, MemoryError):
        raise
    except ProtocolError as exc:
        refusal: ProtocolError = exc
    except IllegalTransition as exc:
        refusal = NotAllowedInState(f"{where} asks for a step the outbox forbids: {exc}")
    except Exception as exc:
        log.error(
            "applying authentic %s failed (%s); refusing it as UNPROCESSABLE. A check is "
            "missing in protocol/ or there is a bug: please report this traceback",
            where,
            type(exc).__name__,
            exc_info=exc,
        )
        refusal = UnprocessableBatch(f"{where}: applying it failed ({type(exc).__name__})")
    else:
        outcome = DownlinkOutcome.DUPLICATE if result.duplicate else DownlinkOutcome.APPLIED
        return DownlinkVerdict(outcome, result)
    return record_refusal(outbox, batch.batch_seq, refusal.reason, refusal.message, now, log)


def record_refusal(
    outbox: DownlinkApplier,
    batch_seq: int,
    reason: Reason,
    detail: str,
    now: float,
    log: Log = logger,
) -> DownlinkVerdict:
    """Refuse authentic downlink batch ``batch_seq`` for good in the outbox (if it can)."""
    log.warning(
        "authentic downlink batch %d refused for good (%s): %s", batch_seq, reason.name, detail
    )
    if not isinstance(outbox, DownlinkRefusals):
        return DownlinkVerdict(DownlinkOutcome.REFUSED, reason=reason)
    try:
        outbox.refuse_downlink(batch_seq, reason, now)
    except (OutboxUnavailable, MemoryError):
        raise
    except Exception:
        log.exception("recording the refusal of downlink batch %d failed; skipped", batch_seq)
        return DownlinkVerdict(DownlinkOutcome.IGNORED, reason=reason)
    return DownlinkVerdict(DownlinkOutcome.REFUSED, reason=reason)


def apply_downlink_payload(
    outbox: DownlinkApplier,
    data: bytes,
    *,
    vessel_id: int,
    shore_verify_key: VerifyKey,
    codebook: Codebook,
    now: float,
    log: Log = logger,
) -> DownlinkVerdict:
    """Verify, decode and apply one downlink payload; never raises for what the bytes say.

    Raises only :class:`~shipboard.errors.OutboxUnavailable` or ``MemoryError``.
    """
    batch = read_downlink(data, vessel_id=vessel_id, shore_key=shore_verify_key, codebook=codebook)
    if isinstance(batch, DownlinkRefused):
        if batch.batch_seq is None:
            log.warning(
                "downlink payload of %d bytes skipped (%s): %s",
                batch.link_bytes,
                batch.reason.name,
                batch.detail,
            )
            return DownlinkVerdict(DownlinkOutcome.IGNORED, reason=batch.reason)
        return record_refusal(outbox, batch.batch_seq, batch.reason, batch.detail, now, log)
    return apply_downlink_batch(outbox, batch, now, log)
