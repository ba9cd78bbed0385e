"""Exchange: a vessel's link session and the shore's side of the link, as sans-IO machines.

Nothing here touches a socket, an event loop, a clock or a random source: bytes and the
time (``now``, seconds) come in as arguments, and what to publish, when to wake and what
happened come out (aioquic's design). Storage stays outside too: the vessel's outbox and
the shore's store are the record, and the code that drives a machine (the *shell*: the
link's asyncio task, or a test) answers its events with them.

**The vessel** (:class:`VesselExchange`, one per satellite session)::

    CONNECTING --link_up--> DRAINING --quiet--> BATCHING --(batches made)--> OFFERING
        --offer--> PUBLISHING --(all published)--> AWAITING_ACKS --(all acknowledged
        or ack wait over)--> DONE                    any live state --link_lost--> BROKEN

1. ``link_up(now, unacknowledged)``: the link is connected and subscribed; the shell says
   which uplink batches the outbox holds unacknowledged (their acknowledgement may be
   queued at the broker).
2. DRAINING: every downlink payload goes to ``receive(data, now)``. A downlink batch is
   verified with the shore's key and handed out as :class:`DownlinkReceived`; the shell
   applies it to the outbox and answers :meth:`~VesselExchange.downlink_applied` (only
   then do its ``BatchAck`` envelopes count) or :meth:`~VesselExchange.downlink_not_applied`.
   Bytes that are not a downlink batch for this vessel become :class:`DownlinkRefused`
   (logged and skipped: the shore resends what the vessel does not acknowledge). The drain
   ends after ``quiet_s`` without downlink, or ``drain_limit_s`` in all (a timer).
3. BATCHING: :class:`MakeBatch` events ask for the session's messages in batches of at
   most ``max_batch_messages`` (halved while the outbox says a batch would be too big); one
   batch is asked for even with no message, so contact changes and the downlink
   acknowledgement go up. Then :class:`BatchesWanted`: the shell hands over the outbox's
   unacknowledged batches with :meth:`~VesselExchange.offer`.
4. PUBLISHING: :meth:`~VesselExchange.data_to_send` gives the next batch to publish, oldest
   first, byte-identical; the shell answers :meth:`~VesselExchange.published` once the
   broker took it. A batch acknowledged meanwhile is not published again.
5. AWAITING_ACKS: until every published batch is acknowledged or refused, or ``ack_wait_s``
   passes (a timer). :class:`SessionDone` ends it.

**Batches that only acknowledge** (:func:`protocol.envelopes.acknowledges_only`), as TCP
treats a pure ACK: such a batch is never acknowledged for its own sake, so nobody waits
for an answer to it or resends it for want of one. Acknowledgements are cumulative and
idempotent: the next batch carries them again, and a lost one costs at most one resend
of the batch with content it acknowledged (resent until some ``BatchAck`` covers it,
which then makes a new acknowledgement due). The vessel (here and in the outbox):

* acknowledges a downlink batch with content, new or resent, and never one that only
  acknowledges (it is still applied, its ``BatchAck`` counted, and de-duplicated);
* publishes an ack-only batch until the broker takes it (``OfferedBatch.sent``), then
  never again, and does not wait for its acknowledgement. It stays open in the outbox
  until a later ``BatchAck`` covers it (the shore's window holds it). Only a later batch
  acknowledged (or refused) since it was sent, while it is not, proves it lost ashore
  (``OfferedBatch.overtaken``); it is then published once more, so that the shore's
  replay window keeps no hole that every later ``BatchAck`` would have to carry.

**The shore** (:class:`ShoreExchange`, one per vessel, for the relay's life): uplink bytes
go to ``receive(data, now)``; an authentic batch becomes :class:`UplinkBatchReceived`,
which the store commits before the shell answers :meth:`~ShoreExchange.uplink_stored`
(or :meth:`~ShoreExchange.uplink_rejected`). Only then is an acknowledgement owed: at once
(:class:`AckDue`) for a batch with content. A batch that only acknowledges makes no batch
due: its number joins the replay window, and it is covered by the ``BatchAck`` of the
next downlink batch made for another reason (it rides along with items; alone it never
goes). The acknowledgement states and their changes are the table :data:`SHORE_TRANSITIONS`.
:meth:`~ShoreExchange.data_to_send` makes a signed downlink batch (``BatchAck`` from the
replay window, plus queued envelopes; :class:`DownlinkBatchMade` tells the store) and
resends unacknowledged ones: after ``resend_after_s`` if the vessel was heard from since
the last send, after ``resend_max_s`` in any case; a batch that only acknowledges is never
resent (a lost one makes the vessel resend, and it is acknowledged again).

**Coalescing** (:func:`downlink_release_due`, the one rule the relay's store follows too):
what is queued for a vessel that is away waits ashore while a downlink batch with
envelopes is unacknowledged (*in flight*); it goes down, all of it in as few batches as
the batch size allows, when the vessel's uplink shows it is in a session (a ``BatchAck``
due at once, or its acknowledgement of the batch in flight), when nothing is in flight,
or at once for an envelope that must not wait (an SOS's outcome). So a vessel that
connects a few times a day finds at most one batch waiting at the broker and gets the
rest with the answer to its uplink, instead of one small batch per relay pass, each
paying its own header, signature and MQTT/TLS/TCP framing.

Every state change of either machine is looked up in its one table
(:data:`VESSEL_TRANSITIONS`, :data:`SHORE_TRANSITIONS`); a pair that is not there raises
:class:`~protocol.errors.NotAllowedInState`, naming the event and the state, and changes
nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from protocol.batch import Batch, Direction, decode_batch, encode_batch, read_batch_header
from protocol.codebook import Codebook
from protocol.compact import LinkKeys, decode_compact, is_compact
from protocol.envelopes import BatchAck, Envelope, acknowledges_only
from protocol.errors import LimitExceeded, NotAllowedInState, ProtocolError, Reason
from protocol.replay import RangeSet
from protocol.signing import SIGNATURE_BYTES, SigningKey, VerifyKey

__all__ = [
    "SHORE_TRANSITIONS",
    "VESSEL_TRANSITIONS",
    "AckDue",
    "BatchAcknowledged",
    "BatchRefused",
    "BatchesWanted",
    "DownlinkAcknowledged",
    "DownlinkBatchMade",
    "DownlinkReceived",
    "DownlinkRefused",
    "MakeBatch",
    "OfferedBatch",
    "OutgoingBatch",
    "SessionDone",
    "ShoreEvent",
    "ShoreExchange",
    "ShoreInput",
    "ShoreSettings",
    "ShoreState",
    "UplinkBatchReceived",
    "UplinkRefused",
    "VesselEvent",
    "VesselExchange",
    "VesselInput",
    "VesselSettings",
    "VesselState",
    "VesselStatistics",
    "downlink_release_due",
    "downlink_resend_at",
    "read_downlink",
]


# --- the vessel's states and their table -----------------------------------------------


class VesselState(Enum):
    """Where a vessel's session is."""

    CONNECTING = "connecting"  # made; the link is not up yet
    DRAINING = "draining"  # reading the downlink the broker kept, until it is quiet
    BATCHING = "batching"  # the outbox puts the session's messages into batches
    OFFERING = "offering"  # waiting for the outbox's unacknowledged batches
    PUBLISHING = "publishing"  # handing batches to the broker, oldest first
    AWAITING_ACKS = "awaiting_acks"  # waiting (bounded) for the shore's BatchAck
    DONE = "done"  # the session is over; the shell disconnects
    BROKEN = "broken"  # the link broke off; nothing more happens in this session


class VesselInput(Enum):
    """What can happen to a vessel's session (the keys of :data:`VESSEL_TRANSITIONS`)."""

    LINK_UP = "link_up"  # link_up(): connected and subscribed
    DOWNLINK = "downlink"  # receive(): a payload arrived on the downlink topic
    DOWNLINK_APPLIED = "downlink_applied"  # downlink_applied() / downlink_not_applied()
    QUIET = "quiet"  # handle_timer() while draining: no downlink for quiet_s
    BATCH_ANSWERED = "batch_answered"  # batch_made() / batch_too_big() / nothing_to_batch()
    BATCHES_MADE = "batches_made"  # (internal) every batch of the session is made
    OFFER = "offer"  # offer(): the outbox's unacknowledged batches
    PUBLISHED = "published"  # published(): the broker took a batch
    ALL_PUBLISHED = "all_published"  # (internal) nothing left to publish
    ALL_ACKNOWLEDGED = "all_acknowledged"  # (internal) nothing left to wait for
    ACK_WAIT_OVER = "ack_wait_over"  # handle_timer() while awaiting acks
    LINK_LOST = "link_lost"  # link_lost(): the connection broke off


_V = VesselState
_I = VesselInput
_LIVE = (_V.CONNECTING, _V.DRAINING, _V.BATCHING, _V.OFFERING, _V.PUBLISHING, _V.AWAITING_ACKS)
_READING = (_V.DRAINING, _V.BATCHING, _V.OFFERING, _V.PUBLISHING, _V.AWAITING_ACKS, _V.DONE)

#: (state, input) -> next state. A pair that is not here raises NotAllowedInState.
VESSEL_TRANSITIONS: Mapping[tuple[VesselState, VesselInput], VesselState] = {
    (_V.CONNECTING, _I.LINK_UP): _V.DRAINING,
    # downlink keeps flowing in every state while the connection is open (DONE included:
    # a payload already read when the session ended is still applied)
    **{(state, _I.DOWNLINK): state for state in _READING},
    **{(state, _I.DOWNLINK_APPLIED): state for state in _READING},
    (_V.DRAINING, _I.QUIET): _V.BATCHING,
    (_V.BATCHING, _I.BATCH_ANSWERED): _V.BATCHING,
    (_V.BATCHING, _I.BATCHES_MADE): _V.OFFERING,
    (_V.OFFERING, _I.OFFER): _V.PUBLISHING,
    (_V.PUBLISHING, _I.PUBLISHED): _V.PUBLISHING,
    (_V.PUBLISHING, _I.ALL_PUBLISHED): _V.AWAITING_ACKS,
    (_V.AWAITING_ACKS, _I.ALL_ACKNOWLEDGED): _V.DONE,
    (_V.AWAITING_ACKS, _I.ACK_WAIT_OVER): _V.DONE,
    **{(state, _I.LINK_LOST): _V.BROKEN for state in _LIVE},
}


# --- the vessel's events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DownlinkReceived:
    """A verified downlink batch for this vessel: apply it to the outbox, then answer
    ``downlink_applied(batch.batch_seq, duplicate=...)`` or ``downlink_not_applied``."""

    batch: Batch
    link_bytes: int


@dataclass(frozen=True, slots=True)
class DownlinkRefused:
    """A downlink payload the vessel does not apply.

    ``batch_seq`` is None for bytes that are not (provably) a batch of the shore's for this
    vessel (garbled before the signature, forged, another vessel's): skipped, since the
    shore resends what is not acknowledged and a forger must not make the vessel skip a
    batch number. It is the batch's number for an *authentic* batch that does not decode:
    refused for good (the shell records the refusal; the next BatchAck names it).
    """

    link_bytes: int
    reason: Reason
    detail: str
    batch_seq: int | None = None

    @property
    def authentic(self) -> bool:
        """Signed by the shore for this vessel (so refused for good, not skipped)."""
        return self.batch_seq is not None


def downlink_resend_at(
    last_sent_at: float | None,
    last_heard_at: float | None,
    resend_after_s: float,
    resend_max_s: float,
) -> float:
    """When the shore (re)sends an unacknowledged downlink batch that carries items (the
    one rule; a batch that only acknowledges goes once and is never resent).

    Never sent: at once (``-inf``). Sent: ``resend_after_s`` after the last send if the
    vessel was heard from since (it had its chance to acknowledge), ``resend_max_s`` after
    it in any case (the broker may have lost it)."""
    if last_sent_at is None:
        return float("-inf")
    if last_heard_at is not None and last_heard_at > last_sent_at:
        return last_sent_at + min(resend_after_s, resend_max_s)
    return last_sent_at + resend_max_s


def downlink_release_due(owed: ShoreState, *, waiting: int, urgent: bool, in_flight: int) -> bool:
    """Whether the shore puts what waits for a vessel into downlink batches now (the one
    coalescing rule; a release takes every waiting envelope, split only at the batch size
    limit).

    ``owed``: what the shore owes the vessel; ``waiting``: envelopes queued and not in a
    batch; ``urgent``: one of them must not wait (an SOS's outcome); ``in_flight``:
    downlink batches carrying envelopes that the vessel has not acknowledged.

    - A ``BatchAck`` due at once (:attr:`ShoreState.ACK_DUE`): the vessel is in a session
      waiting for it, so it goes now, with everything waiting.
    - Nothing waits: nothing to release (an acknowledgement owed lazily waits too).
    - An urgent envelope: now.
    - Nothing in flight: now; the batch waits at the broker for the vessel's next session
      (and is resent by :func:`downlink_resend_at`).
    - Otherwise the envelopes wait ashore: the vessel has not collected the batch in
      flight yet. Its next uplink acknowledges that batch (then nothing is in flight) or
      brings content (then a ``BatchAck`` is due): either releases them in that session.
    """
    if waiting < 0 or in_flight < 0:
        raise ValueError("waiting and in_flight count envelopes and batches: not negative")
    if owed is ShoreState.ACK_DUE:
        return True
    if not waiting:
        return False
    return urgent or not in_flight


def read_downlink(
    data: bytes, *, vessel_id: int, shore_key: VerifyKey, codebook: Codebook
) -> Batch | DownlinkRefused:
    """One downlink payload as a decoded batch, or why it is not applied (the one rule).

    Order matters: the header says whose batch it claims to be, the signature says whether
    the shore made it, and only then is it decoded, so nothing unauthenticated is ever
    decompressed and only an authentic batch can be refused for good.
    """
    try:
        header = read_batch_header(data)
        if header.direction is not Direction.DOWNLINK or header.vessel_id != vessel_id:
            detail = f"{header.where} is not a downlink batch for vessel {vessel_id}"
            return DownlinkRefused(len(data), Reason.MALFORMED, detail)
        shore_key.verify(data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:], what=header.where)
    except ProtocolError as exc:
        return DownlinkRefused(len(data), exc.reason, exc.message)
    try:
        return decode_batch(
            data, codebook=codebook, verify_key=shore_key, direction=Direction.DOWNLINK
        )
    except ProtocolError as exc:
        return DownlinkRefused(len(data), exc.reason, exc.message, header.batch_seq)


@dataclass(frozen=True, slots=True)
class MakeBatch:
    """Put these messages (plus contact changes and a downlink acknowledgement) in a new
    stored batch; answer ``batch_made``, ``batch_too_big`` or ``nothing_to_batch``."""

    message_seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BatchesWanted:
    """Hand over the outbox's unacknowledged uplink batches with ``offer``."""


@dataclass(frozen=True, slots=True)
class BatchAcknowledged:
    """The shore's BatchAck (applied to the outbox) covers this uplink batch."""

    batch_seq: int


@dataclass(frozen=True, slots=True)
class BatchRefused:
    """The shore refused this uplink batch for good (``reason``: a protocol Reason code)."""

    batch_seq: int
    reason: int


@dataclass(frozen=True, slots=True)
class SessionDone:
    """The session is over: disconnect. ``unacknowledged``: published batches the session
    waited for in vain (resent next session, whose timing is the scheduler's);
    ``answered_lazily``: ack-only batches still open (never waited for, and not published
    again unless a later batch is acknowledged without them: ``OfferedBatch.overtaken``)."""

    unacknowledged: tuple[int, ...]
    answered_lazily: tuple[int, ...]


VesselEvent = (
    DownlinkReceived
    | DownlinkRefused
    | MakeBatch
    | BatchesWanted
    | BatchAcknowledged
    | BatchRefused
    | SessionDone
)


@dataclass(frozen=True, slots=True)
class OfferedBatch:
    """An unacknowledged uplink batch as the outbox stores it (``StoredBatch`` fits).

    ``ack_only``: it carries nothing but a ``BatchAck``; ``sent``: the broker took it
    before; ``overtaken``: a later batch was acknowledged or refused since it was last
    sent, so the shore never stored it. An ack-only batch that was sent is published
    again only when overtaken."""

    batch_seq: int
    data: bytes
    ack_only: bool = False
    sent: bool = False
    overtaken: bool = False

    @property
    def to_publish(self) -> bool:
        """Whether a session publishes it (every batch with content while it is open)."""
        return not self.ack_only or not self.sent or self.overtaken


@dataclass(frozen=True, slots=True)
class OutgoingBatch:
    """A batch to publish now, byte-identical to every earlier copy."""

    batch_seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class VesselSettings:
    """What a vessel's session needs to know (times in seconds)."""

    vessel_id: int
    shore_key: VerifyKey
    codebook: Codebook
    #: The downlink drain ends after this long without a downlink payload.
    quiet_s: float = 0.5
    #: ... and after this long in all.
    drain_limit_s: float = 30.0
    #: Longest wait for the shore's BatchAck once everything is published.
    ack_wait_s: float = 30.0
    #: Most messages in one uplink batch (halved while a batch would be over the limit).
    max_batch_messages: int = 500

    def __post_init__(self) -> None:
        if not (self.quiet_s >= 0 and self.drain_limit_s >= 0 and self.ack_wait_s >= 0):
            raise ValueError("quiet_s, drain_limit_s and ack_wait_s must not be negative")
        if self.max_batch_messages < 1:
            raise ValueError("max_batch_messages must be at least 1")


@dataclass(frozen=True, slots=True)
class VesselStatistics:
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


def _not_allowed(role: str, event: Enum, state: Enum) -> NotAllowedInState:
    return NotAllowedInState(
        f"{role}: event {event.value!r} is not allowed in state {state.value!r}"
    )


# --- the vessel's machine ------------------------------------------------------------------


class VesselExchange:
    """One satellite session of a vessel (see the module docstring)."""

    def __init__(self, settings: VesselSettings) -> None:
        self.settings = settings
        self._state = VesselState.CONNECTING
        self._events: deque[VesselEvent] = deque()
        self._open: set[int] = set()  # uplink batches the outbox holds unacknowledged
        self._to_apply: dict[int, Batch] = {}  # downlink handed out, not yet confirmed
        self._timer_base = 0.0  # when the drain started, or when the ack wait began
        self._last_downlink = 0.0
        # batching
        self._remaining: list[int] = []
        self._chunk = 0
        self._asked: tuple[int, ...] | None = None
        self._made_any = False
        # publishing
        self._queue: deque[OfferedBatch] = deque()
        self._in_flight: OfferedBatch | None = None
        self._ack_only: set[int] = set()
        # the tally
        self._published: list[int] = []
        self._acknowledged: set[int] = set()
        self._rejected: set[int] = set()
        self._applied = self._duplicates = self._refused = 0
        self._up_bytes = self._down_bytes = 0

    # --- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> VesselState:
        """The current state."""
        return self._state

    def next_event(self) -> VesselEvent | None:
        """The next event for the shell, or None when there is none."""
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to be called (None: no timer)."""
        settings = self.settings
        if self._state is VesselState.DRAINING:
            return min(
                self._last_downlink + settings.quiet_s, self._timer_base + settings.drain_limit_s
            )
        if self._state is VesselState.AWAITING_ACKS:
            return self._timer_base + settings.ack_wait_s
        return None

    def waiting_for(self) -> frozenset[int]:
        """Published batches (not ack-only) that no BatchAck covered yet."""
        return frozenset(
            set(self._published) - self._ack_only - self._acknowledged - self._rejected
        )

    def statistics(self) -> VesselStatistics:
        """The session's tally so far."""
        return VesselStatistics(
            published=tuple(self._published),
            acknowledged=tuple(sorted(self._acknowledged)),
            rejected=tuple(sorted(self._rejected)),
            unacknowledged_after=len(self.waiting_for()),
            downlink_applied=self._applied,
            downlink_duplicates=self._duplicates,
            downlink_refused=self._refused,
            uplink_payload_bytes=self._up_bytes,
            downlink_payload_bytes=self._down_bytes,
        )

    # --- the table ----------------------------------------------------------------------------

    def _check(self, event: VesselInput) -> VesselState:
        try:
            return VESSEL_TRANSITIONS[(self._state, event)]
        except KeyError:
            raise _not_allowed(f"vessel {self.settings.vessel_id}", event, self._state) from None

    def _step(self, event: VesselInput) -> None:
        self._state = self._check(event)

    # --- inputs --------------------------------------------------------------------------------

    def link_up(
        self, now: float, unacknowledged: Iterable[int] = (), message_seqs: Sequence[int] = ()
    ) -> None:
        """Connected and subscribed: drain the downlink, then batch ``message_seqs``.

        ``unacknowledged``: the uplink batch numbers the outbox holds unacknowledged now.
        """
        self._step(VesselInput.LINK_UP)
        self._open = set(unacknowledged)
        self._remaining = list(dict.fromkeys(message_seqs))
        self._chunk = self.settings.max_batch_messages
        self._timer_base = self._last_downlink = now

    def receive(self, data: bytes, now: float) -> None:
        """A payload from the downlink topic."""
        self._step(VesselInput.DOWNLINK)
        self._down_bytes += len(data)
        self._last_downlink = now
        settings = self.settings
        batch = read_downlink(
            data,
            vessel_id=settings.vessel_id,
            shore_key=settings.shore_key,
            codebook=settings.codebook,
        )
        if isinstance(batch, DownlinkRefused):
            self._refused += 1
            self._events.append(batch)
            return
        self._to_apply[batch.batch_seq] = batch
        self._events.append(DownlinkReceived(batch, len(data)))

    def _take_to_apply(self, downlink_seq: int) -> Batch:
        self._check(VesselInput.DOWNLINK_APPLIED)
        try:
            return self._to_apply.pop(downlink_seq)
        except KeyError:
            raise NotAllowedInState(
                f"vessel {self.settings.vessel_id}: downlink batch {downlink_seq} was not "
                "handed out by receive() (or was answered already)"
            ) from None

    def downlink_applied(self, downlink_seq: int, *, duplicate: bool = False) -> None:
        """The outbox applied downlink batch ``downlink_seq`` (``duplicate``: it had before);
        its BatchAck envelopes now count."""
        batch = self._take_to_apply(downlink_seq)
        self._step(VesselInput.DOWNLINK_APPLIED)
        if duplicate:
            self._duplicates += 1
        else:
            self._applied += 1
        for envelope in batch.envelopes:
            if isinstance(envelope, BatchAck):
                self._apply_ack(envelope)
        if self._state is VesselState.PUBLISHING and self._in_flight is None:
            self._publish_or_wait(self._last_downlink)  # what is left may all be acknowledged
        self._check_all_acknowledged()

    def downlink_not_applied(self, downlink_seq: int, reason: Reason) -> None:
        """The outbox refused downlink batch ``downlink_seq`` (``reason``, which the shell
        logs): nothing in it counts, and the shore resends it while it is unacknowledged."""
        self._take_to_apply(downlink_seq)
        self._step(VesselInput.DOWNLINK_APPLIED)
        self._refused += 1

    def _apply_ack(self, ack: BatchAck) -> None:
        refused = {int(seq): int(reason) for seq, reason in ack.rejected or ()}
        for seq in sorted(self._open):
            if seq in refused:
                self._open.discard(seq)
                self._rejected.add(seq)
                self._events.append(BatchRefused(seq, refused[seq]))
            elif ack.covers(seq):
                self._open.discard(seq)
                self._acknowledged.add(seq)
                self._events.append(BatchAcknowledged(seq))

    def handle_timer(self, now: float) -> None:
        """Wake up at (or after) :meth:`next_timer`; earlier calls change nothing."""
        timer = self.next_timer()
        if timer is None or now < timer:
            return
        if self._state is VesselState.DRAINING:
            self._step(VesselInput.QUIET)
            self._next_batch()
        else:
            self._step(VesselInput.ACK_WAIT_OVER)
            self._done()

    # batching ------------------------------------------------------------------------------

    def _next_batch(self) -> None:
        if self._remaining or not self._made_any:
            self._asked = tuple(self._remaining[: self._chunk])
            self._events.append(MakeBatch(self._asked))
            return
        self._asked = None
        self._step(VesselInput.BATCHES_MADE)
        self._events.append(BatchesWanted())

    def _answered(self) -> tuple[int, ...]:
        self._check(VesselInput.BATCH_ANSWERED)
        if self._asked is None:
            raise NotAllowedInState(f"vessel {self.settings.vessel_id}: no batch was asked for")
        self._step(VesselInput.BATCH_ANSWERED)
        asked, self._asked = self._asked, None
        return asked

    def batch_made(self, batch_seq: int) -> None:
        """The outbox stored batch ``batch_seq`` holding the messages asked for."""
        asked = self._answered()
        self._remaining = self._remaining[len(asked) :]
        self._made_any = True
        self._open.add(batch_seq)
        self._next_batch()

    def batch_too_big(self) -> None:
        """The batch asked for would be over the limits: ask for half as many messages.

        Raises :class:`LimitExceeded` when a single message is already too big."""
        asked = self._answered()
        if len(asked) <= 1:
            self._asked = asked  # still unanswered: the shell's error ends the session
            raise LimitExceeded(
                f"message {asked[0] if asked else '-'} alone does not fit in a batch"
            )
        self._chunk = max(1, len(asked) // 2)
        self._next_batch()

    def nothing_to_batch(self) -> None:
        """The outbox had nothing at all to say: the batching is over."""
        self._answered()
        self._remaining = []
        self._made_any = True
        self._next_batch()

    # publishing ----------------------------------------------------------------------------

    def offer(self, batches: Iterable[OfferedBatch], now: float) -> None:
        """The outbox's unacknowledged batches, oldest first: publish them (an ack-only
        batch only if the broker never took it, or it was overtaken: ``to_publish``)."""
        self._step(VesselInput.OFFER)
        offered = sorted(batches, key=lambda b: b.batch_seq)
        self._open |= {b.batch_seq for b in offered}
        self._queue = deque(b for b in offered if b.to_publish)
        self._ack_only = {b.batch_seq for b in offered if b.ack_only}
        self._publish_or_wait(now)

    def data_to_send(self, now: float) -> list[OutgoingBatch]:
        """What to publish now: the next batch, while the previous one is not yet taken."""
        del now  # nothing here depends on the time; kept for the aioquic-shaped API
        if self._state is not VesselState.PUBLISHING or self._in_flight is not None:
            return []
        while self._queue:
            batch = self._queue.popleft()
            if batch.batch_seq in self._open:  # not acknowledged meanwhile
                self._in_flight = batch
                return [OutgoingBatch(batch.batch_seq, batch.data)]
        return []

    def published(self, batch_seq: int, now: float) -> None:
        """The broker took batch ``batch_seq`` (PUBACK): not the shore's acknowledgement."""
        self._check(VesselInput.PUBLISHED)
        flying = self._in_flight
        if flying is None or flying.batch_seq != batch_seq:
            raise NotAllowedInState(
                f"vessel {self.settings.vessel_id}: batch {batch_seq} was not handed out "
                "by data_to_send()"
            )
        self._step(VesselInput.PUBLISHED)
        self._in_flight = None
        self._published.append(batch_seq)
        self._up_bytes += len(flying.data)
        self._publish_or_wait(now)

    def _publish_or_wait(self, now: float) -> None:
        if any(b.batch_seq in self._open for b in self._queue):
            return
        self._step(VesselInput.ALL_PUBLISHED)
        self._timer_base = now
        self._check_all_acknowledged()

    def _check_all_acknowledged(self) -> None:
        if self._state is VesselState.AWAITING_ACKS and not self.waiting_for():
            self._step(VesselInput.ALL_ACKNOWLEDGED)
            self._done()

    def _done(self) -> None:
        lazily = tuple(sorted(self._open & self._ack_only))
        self._events.append(SessionDone(tuple(sorted(self.waiting_for())), lazily))

    def link_lost(self) -> None:
        """The connection broke off: the session ends here (the outbox keeps everything)."""
        self._step(VesselInput.LINK_LOST)
        self._in_flight = None
        self._queue.clear()


# --- the shore's acknowledgement states and their table -------------------------------------


class ShoreState(Enum):
    """What the shore owes a vessel."""

    NOTHING_OWED = "nothing_owed"
    ACK_OWED = "ack_owed"  # lazily: only ack-only batches came since the last BatchAck
    ACK_DUE = "ack_due"  # at once: a batch with content was stored (or refused for good)


class ShoreInput(Enum):
    """What changes what the shore owes (the keys of :data:`SHORE_TRANSITIONS`)."""

    STORED = "stored"  # uplink_stored(): a batch with content committed (or repeated)
    STORED_ACK_ONLY = "stored_ack_only"  # uplink_stored(): a batch that only acknowledges
    REJECTED = "rejected"  # uplink_rejected(): an authentic batch refused for good
    ACK_SENT = "ack_sent"  # data_to_send() made a downlink batch carrying the BatchAck


_S = ShoreState
_SI = ShoreInput

#: (state, input) -> next state. A pair that is not here raises NotAllowedInState.
SHORE_TRANSITIONS: Mapping[tuple[ShoreState, ShoreInput], ShoreState] = {
    **{(state, _SI.STORED): _S.ACK_DUE for state in ShoreState},
    **{(state, _SI.REJECTED): _S.ACK_DUE for state in ShoreState},
    (_S.NOTHING_OWED, _SI.STORED_ACK_ONLY): _S.ACK_OWED,
    (_S.ACK_OWED, _SI.STORED_ACK_ONLY): _S.ACK_OWED,
    (_S.ACK_DUE, _SI.STORED_ACK_ONLY): _S.ACK_DUE,
    (_S.ACK_OWED, _SI.ACK_SENT): _S.NOTHING_OWED,
    (_S.ACK_DUE, _SI.ACK_SENT): _S.NOTHING_OWED,
}


@dataclass(frozen=True, slots=True)
class UplinkBatchReceived:
    """An authentic uplink batch: commit it (idempotently) in the store, then answer
    ``uplink_stored`` (same bytes again count as stored) or ``uplink_rejected``."""

    batch: Batch
    data: bytes


@dataclass(frozen=True, slots=True)
class UplinkRefused:
    """Bytes that are not an authentic uplink batch of this vessel: quarantine them;
    nothing is acknowledged or refused (a forger must not touch the replay window)."""

    link_bytes: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class AckDue:
    """A BatchAck is owed at once: ``data_to_send`` will carry it."""

    vessel_id: int


@dataclass(frozen=True, slots=True)
class DownlinkBatchMade:
    """A new signed downlink batch: store its bytes (resends are byte-identical)."""

    downlink_seq: int
    data: bytes
    items: int


@dataclass(frozen=True, slots=True)
class DownlinkAcknowledged:
    """The vessel's BatchAck covers this downlink batch: it is not resent any more."""

    downlink_seq: int


ShoreEvent = UplinkBatchReceived | UplinkRefused | AckDue | DownlinkBatchMade | DownlinkAcknowledged


@dataclass(frozen=True, slots=True)
class ShoreSettings:
    """The shore's keys and pacing for one vessel (times in seconds)."""

    vessel_id: int
    vessel_key: VerifyKey
    shore_key: SigningKey
    codebook: Codebook
    #: Resend an unacknowledged downlink batch after this long if the vessel was heard since.
    resend_after_s: float = 3600.0
    #: ... and after this long in any case (the broker may have lost it).
    resend_max_s: float = 24 * 3600.0
    #: Most queued envelopes in one downlink batch.
    max_items: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.resend_after_s <= self.resend_max_s:
            raise ValueError("need 0 < resend_after_s <= resend_max_s")
        if self.max_items < 1:
            raise ValueError("max_items must be at least 1")


@dataclass(slots=True)
class _Downlink:
    downlink_seq: int
    data: bytes
    items: int
    last_sent_at: float | None = None


@dataclass(slots=True)
class _Received:
    batch: Batch
    has_content: bool
    acks: list[BatchAck] = field(default_factory=list)


class ShoreExchange:
    """The shore's side of one vessel's link (see the module docstring).

    Restarting: build it again from the store's record (``seen``: the replay window;
    ``next_downlink_seq``; the unacknowledged downlink batches with ``resume_downlink``).
    """

    def __init__(
        self,
        settings: ShoreSettings,
        *,
        seen: RangeSet | None = None,
        next_downlink_seq: int = 1,
        state: ShoreState = ShoreState.NOTHING_OWED,
    ) -> None:
        self.settings = settings
        self._state = state
        self._seen = RangeSet() if seen is None else seen.copy()
        self._rejected: dict[int, int] = {}
        self._next_downlink = next_downlink_seq
        self._unacked: dict[int, _Downlink] = {}
        self._items: deque[Envelope] = deque()
        self._urgent = False  # an envelope waiting that must not wait (an SOS's outcome)
        self._received: dict[int, _Received] = {}
        self._events: deque[ShoreEvent] = deque()
        self._last_heard: float | None = None
        self._to_send: list[int] = []  # resends handle_timer() found due
        self._fresh: list[bytes] = []  # batches made, not yet handed out
        self._link_keys: LinkKeys | None = None  # derived at the first compact frame

    @property
    def state(self) -> ShoreState:
        """What the shore owes the vessel now."""
        return self._state

    @property
    def seen(self) -> RangeSet:
        """A copy of the uplink batches stored (the replay window every BatchAck is made of)."""
        return self._seen.copy()

    def unacknowledged_downlink(self) -> tuple[int, ...]:
        """Downlink batches (with items) the vessel has not acknowledged yet."""
        return tuple(sorted(self._unacked))

    def next_event(self) -> ShoreEvent | None:
        """The next event for the shell, or None."""
        return self._events.popleft() if self._events else None

    def _step(self, event: ShoreInput) -> None:
        try:
            self._state = SHORE_TRANSITIONS[(self._state, event)]
        except KeyError:
            raise _not_allowed(
                f"shore, vessel {self.settings.vessel_id}", event, self._state
            ) from None

    # --- uplink --------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """A payload from the vessel's uplink topic: a signed batch, or a compact frame
        (``protocol.compact``, told apart by its first byte) checked under the link keys of
        the settings' two keys."""
        settings = self.settings
        try:
            if is_compact(data):
                if self._link_keys is None:
                    self._link_keys = LinkKeys.for_shore(
                        settings.vessel_id, settings.shore_key, settings.vessel_key
                    )
                batch = decode_compact(data, keys=self._link_keys, codebook=settings.codebook)
            else:
                batch = decode_batch(
                    data,
                    codebook=settings.codebook,
                    verify_key=settings.vessel_key,
                    direction=Direction.UPLINK,
                )
        except ProtocolError as exc:
            self._events.append(UplinkRefused(len(data), exc.reason, exc.message))
            return
        if batch.vessel_id != settings.vessel_id:
            detail = f"uplink batch {batch.batch_seq} names vessel {batch.vessel_id}"
            self._events.append(UplinkRefused(len(data), Reason.MALFORMED, detail))
            return
        self._last_heard = now
        acks = [e for e in batch.envelopes if isinstance(e, BatchAck)]
        self._received[batch.batch_seq] = _Received(
            batch, not acknowledges_only(batch.envelopes), acks
        )
        self._events.append(UplinkBatchReceived(batch, data))

    def _take_received(self, batch_seq: int) -> _Received:
        try:
            return self._received.pop(batch_seq)
        except KeyError:
            raise NotAllowedInState(
                f"shore, vessel {self.settings.vessel_id}: uplink batch {batch_seq} was not "
                "handed out by receive() (or was answered already)"
            ) from None

    def uplink_stored(self, batch_seq: int, now: float) -> None:
        """The store committed uplink batch ``batch_seq`` (or had the same bytes already):
        a BatchAck is owed, at once if it has content, lazily if it only acknowledges."""
        received = self._take_received(batch_seq)
        event = ShoreInput.STORED if received.has_content else ShoreInput.STORED_ACK_ONLY
        before = self._state
        self._step(event)
        self._seen.add(batch_seq)
        for ack in received.acks:
            for seq in sorted(self._unacked):
                if ack.covers(seq):
                    del self._unacked[seq]
                    self._events.append(DownlinkAcknowledged(seq))
        self._last_heard = now
        if self._state is ShoreState.ACK_DUE and before is not ShoreState.ACK_DUE:
            self._events.append(AckDue(self.settings.vessel_id))

    def uplink_rejected(self, batch_seq: int, reason: Reason, now: float) -> None:
        """The store refused authentic uplink batch ``batch_seq`` for good: the next
        BatchAck tells the vessel (``rejected``), so it stops resending."""
        self._take_received(batch_seq)
        before = self._state
        self._step(ShoreInput.REJECTED)
        self._rejected[batch_seq] = int(reason)
        self._last_heard = now
        if before is not ShoreState.ACK_DUE:
            self._events.append(AckDue(self.settings.vessel_id))

    # --- downlink ------------------------------------------------------------------------------

    def queue(self, envelopes: Iterable[Envelope], *, urgent: bool = False) -> None:
        """Envelopes for the vessel (receipts, replies, case updates...); ``urgent``: they
        must not wait behind a batch in flight (:func:`downlink_release_due`)."""
        before = len(self._items)
        self._items.extend(envelopes)
        if urgent and len(self._items) > before:
            self._urgent = True

    def waiting(self) -> int:
        """Envelopes queued and not in a batch yet (held while a batch is in flight)."""
        return len(self._items)

    def resume_downlink(
        self, downlink_seq: int, data: bytes, items: int, last_sent_at: float | None
    ) -> None:
        """After a restart: a stored downlink batch the vessel has not acknowledged."""
        if items:
            self._unacked[downlink_seq] = _Downlink(downlink_seq, data, items, last_sent_at)

    def _due_at(self, batch: _Downlink) -> float:
        settings = self.settings
        return downlink_resend_at(
            batch.last_sent_at, self._last_heard, settings.resend_after_s, settings.resend_max_s
        )

    def next_timer(self) -> float | None:
        """When the next downlink resend falls due (None: nothing unacknowledged)."""
        times = [self._due_at(batch) for batch in self._unacked.values()]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Queue every unacknowledged downlink batch whose resend is due at ``now``."""
        for seq in sorted(self._unacked):
            batch = self._unacked[seq]
            if self._due_at(batch) <= now and seq not in self._to_send:
                self._to_send.append(seq)

    def data_to_send(self, now: float) -> list[bytes]:
        """What to publish on the downlink now, oldest first: the resends
        :meth:`handle_timer` found due, and new batches when :func:`downlink_release_due`
        says so (a BatchAck due, and every envelope waiting, split only at ``max_items``;
        an owed lazy BatchAck rides along)."""
        release = downlink_release_due(
            self._state,
            waiting=len(self._items),
            urgent=self._urgent,
            in_flight=len(self._unacked),
        )
        if release:
            while self._state is ShoreState.ACK_DUE or self._items:
                self._make_batch(now)
            self._urgent = False
        out: list[bytes] = []
        for seq in sorted(self._to_send):
            batch = self._unacked.get(seq)
            if batch is not None:  # acknowledged meanwhile: not sent again
                batch.last_sent_at = now
                out.append(batch.data)
        self._to_send.clear()
        out.extend(self._fresh)
        self._fresh.clear()
        return out

    def _make_batch(self, now: float) -> None:
        settings = self.settings
        envelopes: list[Envelope] = []
        minutes = int(now // 60)
        carries_ack = self._state is not ShoreState.NOTHING_OWED
        if carries_ack:
            seen = self._seen
            envelopes.append(
                BatchAck(
                    up_to=seen.up_to,
                    written_minutes=minutes,
                    ranges=seen.ranges or None,
                    rejected=tuple(sorted(self._rejected.items())) or None,
                )
            )
        items = [self._items.popleft() for _ in range(min(len(self._items), settings.max_items))]
        envelopes.extend(items)
        seq = self._next_downlink
        data = encode_batch(
            envelopes,
            direction=Direction.DOWNLINK,
            vessel_id=settings.vessel_id,
            batch_seq=seq,
            batch_minutes=minutes,
            signing_key=settings.shore_key,
            codebook=settings.codebook,
        )
        if carries_ack:
            self._step(ShoreInput.ACK_SENT)
        self._next_downlink += 1
        self._events.append(DownlinkBatchMade(seq, data, len(items)))
        if items:  # resent until acknowledged; an ack-only batch goes once
            self._unacked[seq] = _Downlink(seq, data, len(items), last_sent_at=now)
        self._fresh.append(data)
