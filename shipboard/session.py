"""Session: one satellite session's exchange (``protocol.exchange``) joined to the outbox.

:class:`VesselSession` answers the pure :class:`~protocol.exchange.VesselExchange`'s
events with the outbox, which is the record: a verified downlink batch is applied
(``apply_downlink``), batches are made (``make_batch``), the unacknowledged ones are read
(``unacknowledged_batches``) and each publish is recorded (``mark_sent``). It is
synchronous and does no I/O of its own besides the outbox, so the link's asyncio shell
(:func:`shipboard.link.run_session`) runs each call in a worker thread, one at a time, and
tests drive it directly over the fake link. Times: the exchange's timers run on the
shell's monotonic clock (``now`` arguments); the outbox's records on the wall clock
(``clock``, seconds since 1970 UTC).

Logs carry batch numbers, sizes and states, never message text (logger
``shipboard.link``: the session is part of the link).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from common.logs import batch_scope
from protocol.batch import Batch
from protocol.codebook import Codebook
from protocol.errors import LimitExceeded, Reason
from protocol.exchange import (
    BatchAcknowledged,
    BatchesWanted,
    BatchRefused,
    DownlinkReceived,
    DownlinkRefused,
    MakeBatch,
    OfferedBatch,
    OutgoingBatch,
    SessionDone,
    VesselExchange,
    VesselSettings,
    VesselState,
)
from protocol.signing import SigningKey
from shipboard.downlink import DownlinkResultLike, apply_downlink_batch, record_refusal
from shipboard.errors import NothingToSend

__all__ = [
    "DownlinkResultLike",
    "OutboxPort",
    "SendsOverLinks",
    "SessionReport",
    "StoredBatchLike",
    "VesselSession",
]

logger = logging.getLogger("shipboard.link")


class StoredBatchLike(Protocol):
    """An uplink batch whose bytes are stored (``shipboard.outbox.StoredBatch``)."""

    @property
    def batch_seq(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    @property
    def ack_only(self) -> bool: ...
    @property
    def send_count(self) -> int: ...
    @property
    def overtaken(self) -> bool: ...


class OutboxPort(Protocol):
    """The outbox as one session uses it (wl2k-go's mailbox, four calls); synchronous,
    called through ``asyncio.to_thread``.

    ``shipboard.outbox.Outbox`` implements it (and ``refuse_downlink``, which
    :mod:`shipboard.downlink` uses when it is there); tests use an in-memory fake.
    """

    def unacknowledged_batches(self) -> Sequence[StoredBatchLike]:
        """Uplink batches no BatchAck has covered, oldest first."""
        ...

    def make_batch(
        self, message_seqs: Sequence[int], codebook: Codebook, signing_key: SigningKey, now: float
    ) -> tuple[int, bytes]:
        """A new stored batch of these messages (plus contact changes and a downlink ack);
        raises ``NothingToSend`` when there is nothing at all to say."""
        ...

    def mark_sent(self, batch_seq: int, now: float) -> None:
        """The broker took the batch (PUBACK): not yet the shore's acknowledgement."""
        ...

    def apply_downlink(self, batch: Batch, now: float) -> DownlinkResultLike:
        """Apply a verified downlink batch in one transaction (duplicates change nothing)."""
        ...


@runtime_checkable
class SendsOverLinks(Protocol):
    """An outbox that keeps which link carried each send (``shipboard.outbox.Outbox``):
    the statement's bytes per crew member and link. One without it (a test's fake) is told
    ``mark_sent`` only."""

    def mark_sent_over(self, batch_seq: int, now: float, link: str) -> None:
        """``mark_sent``, over the link whose profile is named ``link``."""
        ...


@dataclass(frozen=True, slots=True)
class SessionReport:
    """What one session did (ids and sizes only)."""

    published: tuple[int, ...]
    acknowledged: tuple[int, ...]
    rejected: tuple[int, ...]
    unacknowledged_after: int
    downlink_applied: int
    downlink_duplicates: int
    downlink_refused: int
    uplink_payload_bytes: int
    downlink_payload_bytes: int
    tls_resumed: bool | None


class _VesselLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[vessel {extra['vessel']}] {msg}", kwargs


def vessel_log(vessel_id: int) -> logging.LoggerAdapter[logging.Logger]:
    """The link's logger, each line prefixed ``[vessel N]``."""
    return _VesselLog(logger, {"vessel": vessel_id})


class VesselSession:
    """A :class:`VesselExchange` whose events are answered with the outbox.

    Each method feeds the exchange, then answers every event it produced before
    returning; call them one at a time (the shell awaits each in a worker thread).
    """

    def __init__(
        self,
        settings: VesselSettings,
        outbox: OutboxPort,
        *,
        signing_key: SigningKey,
        clock: Callable[[], float],
        link: str | None = None,
    ) -> None:
        self.exchange = VesselExchange(settings)
        #: The profile name of the link this session runs on (kept with each send).
        self.link = link
        self.outbox = outbox
        self.signing_key = signing_key
        self.clock = clock
        self.vessel_id = settings.vessel_id
        self.log = vessel_log(settings.vessel_id)
        #: Set once the exchange said the session is over.
        self.finished: SessionDone | None = None
        self._asked: tuple[int, ...] = ()

    # --- what the shell reads ----------------------------------------------------------------

    @property
    def state(self) -> VesselState:
        """The exchange's state."""
        return self.exchange.state

    @property
    def done(self) -> bool:
        """The session is over (or broke off): the shell disconnects."""
        return self.exchange.state in (VesselState.DONE, VesselState.BROKEN)

    def next_timer(self) -> float | None:
        """When the exchange wants :meth:`handle_timer` (shell's monotonic seconds)."""
        return self.exchange.next_timer()

    def data_to_send(self, now: float) -> list[OutgoingBatch]:
        """The next batch to publish (byte-identical to earlier copies), if any."""
        return self.exchange.data_to_send(now)

    def report(self, tls_resumed: bool | None = None) -> SessionReport:
        """What the session did."""
        tally = self.exchange.statistics()
        return SessionReport(
            published=tally.published,
            acknowledged=tally.acknowledged,
            rejected=tally.rejected,
            unacknowledged_after=tally.unacknowledged_after,
            downlink_applied=tally.downlink_applied,
            downlink_duplicates=tally.downlink_duplicates,
            downlink_refused=tally.downlink_refused,
            uplink_payload_bytes=tally.uplink_payload_bytes,
            downlink_payload_bytes=tally.downlink_payload_bytes,
            tls_resumed=tls_resumed,
        )

    # --- inputs --------------------------------------------------------------------------------

    def start(self, now: float, message_seqs: Sequence[int] = ()) -> None:
        """The link is up: read which batches are open, then drain the downlink."""
        open_batches = [stored.batch_seq for stored in self.outbox.unacknowledged_batches()]
        self.exchange.link_up(now, open_batches, message_seqs)
        self._answer(now)

    def receive(self, data: bytes, now: float) -> None:
        """A downlink payload arrived."""
        self.exchange.receive(data, now)
        self._answer(now)

    def handle_timer(self, now: float) -> None:
        """The exchange's timer is due."""
        self.exchange.handle_timer(now)
        self._answer(now)

    def published(self, batch_seq: int, link_bytes: int, now: float) -> None:
        """The broker took ``batch_seq``: record the send, then go on."""
        if self.link is not None and isinstance(self.outbox, SendsOverLinks):
            self.outbox.mark_sent_over(batch_seq, self.clock(), self.link)
        else:
            self.outbox.mark_sent(batch_seq, self.clock())
        self.exchange.published(batch_seq, now)
        with batch_scope(self.vessel_id, batch_seq):
            self.log.info("batch %d published (%d bytes)", batch_seq, link_bytes)
        self._answer(now)

    def link_lost(self) -> None:
        """The connection broke off (nothing more is asked of the outbox)."""
        if not self.done:
            self.exchange.link_lost()

    # --- answering the exchange's events with the outbox ---------------------------------------

    def _answer(self, now: float) -> None:
        exchange = self.exchange
        while (event := exchange.next_event()) is not None:
            if isinstance(event, DownlinkReceived):
                self._apply(event)
            elif isinstance(event, DownlinkRefused):
                if event.batch_seq is not None:  # authentic but undecodable: refused for good
                    record_refusal(
                        self.outbox,
                        event.batch_seq,
                        event.reason,
                        event.detail,
                        self.clock(),
                        self.log,
                    )
                else:  # not provably the shore's: skipped; the shore resends what we do
                    # not acknowledge
                    self.log.warning(
                        "downlink payload of %d bytes skipped (%s): %s",
                        event.link_bytes,
                        event.reason.name,
                        event.detail,
                    )
            elif isinstance(event, MakeBatch):
                self._make_batch(event.message_seqs)
            elif isinstance(event, BatchesWanted):
                stored = self.outbox.unacknowledged_batches()
                exchange.offer(
                    [
                        OfferedBatch(
                            s.batch_seq,
                            s.data,
                            s.ack_only,
                            sent=s.send_count > 0,
                            overtaken=s.overtaken,
                        )
                        for s in stored
                    ],
                    now,
                )
            elif isinstance(event, BatchAcknowledged):
                with batch_scope(self.vessel_id, event.batch_seq):
                    self.log.info("batch %d acknowledged by the shore", event.batch_seq)
            elif isinstance(event, BatchRefused):
                with batch_scope(self.vessel_id, event.batch_seq):
                    self.log.warning(
                        "batch %d refused by the shore (reason %d)", event.batch_seq, event.reason
                    )
            else:
                self.finished = event

    def _apply(self, event: DownlinkReceived) -> None:
        batch = event.batch
        verdict = apply_downlink_batch(self.outbox, batch, self.clock(), self.log)
        if verdict.result is None:  # refused for good (or its refusal could not be recorded)
            self.exchange.downlink_not_applied(batch.batch_seq, verdict.reason or Reason.MALFORMED)
            return
        self.exchange.downlink_applied(batch.batch_seq, duplicate=verdict.result.duplicate)

    def _make_batch(self, message_seqs: tuple[int, ...]) -> None:
        try:
            batch_seq, data = self.outbox.make_batch(
                message_seqs, self.exchange.settings.codebook, self.signing_key, self.clock()
            )
        except NothingToSend:
            self.exchange.nothing_to_batch()
            return
        except LimitExceeded:
            self.exchange.batch_too_big()  # raises again when one message alone is too big
            return
        with batch_scope(self.vessel_id, batch_seq):
            self.log.info(
                "batch %d made: %d messages, %d bytes", batch_seq, len(message_seqs), len(data)
            )
        self.exchange.batch_made(batch_seq)
