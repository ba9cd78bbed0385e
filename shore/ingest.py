"""Ingest: uplink batches from the broker, verified, de-duplicated and committed.

For each MQTT payload on ``vr/{vessel}/u``::

    read_batch_header          -> unknown bytes, wrong direction, topic mismatch: quarantine
    look up the vessel's keys  -> unknown vessel: quarantine (UNKNOWN_VESSEL)
    verify the signature       -> no valid key signs it: quarantine (SIGNATURE_INVALID)
    decode_batch               -> an authentic batch we cannot accept: quarantine AND refuse
                                  it for good (``BatchAck.rejected``) so the vessel stops
    check_lane_blocks          -> a grievance lane block of another size than this relay's
                                  lane, or two blocks for one place: refused for good too
    store.ingest_batch         -> ONE transaction: batch, contacts, messages (ON CONFLICT DO
                                  NOTHING), delivery rows, ACCEPTED_ASHORE receipts, lane
                                  blocks (once per vessel, period and index), the replay
                                  window, "acknowledgement pending"
    ring the doorbells         -> the downlink sends the BatchAck, delivery workers wake

A **compact frame** (``protocol.compact``: first byte 0x03, a batch of one or a few
envelopes under an 8-byte tag, as an SBD link sends it) takes the same way with the tag in
place of the signature: its clear header (the vessel) must match the topic; the
vessel must be registered; the tag must check under the link keys of one of the vessel's
valid keys and the shore key (else SIGNATURE_INVALID, quarantined only, as a forged batch);
then the batch it carries is decoded, checked and stored exactly as a batch, in the same
replay window, and an authentic frame that cannot be accepted is refused for good.

No authentic batch can stop the relay. Once the signature verified, every failure to
decode, check or store the batch ends in a typed refusal: a ``ProtocolError`` (from
``decode_batch``, or from a check in the store) is refused with its own reason; any other
exception (content that no check caught, or a bug) is rolled back, logged ONCE with its
traceback for the operator, and refused with ``Reason.UNPROCESSABLE``. Both go the same way:
quarantined, and refused for good (``store.reject_batch``), so the vessel stops resending
and fails the batch's messages with the reason. Only a :class:`~shore.store.StoreError`
(the database itself failed) leaves the batch unacknowledged, for the vessel to resend.
:meth:`Ingestor.run` is the outer guard: whatever escapes one payload is logged and
counted, and ingest goes on with the next; it never ends the MQTT service's task group.

Forged or garbled bytes never reach the vessel's replay window or ``rejected`` list: an
attacker cannot make the relay refuse a batch number the real vessel will use.

Why a crash loses nothing acknowledged. aiomqtt PUBACKs a QoS 1 message as soon as it is
in its in-memory queue, before this code sees it, so the MQTT acknowledgement promises
nothing. The vessel keeps each batch (byte-identical) in its outbox and resends it until
a *signed* ``BatchAck`` from the shore covers it, and a ``BatchAck`` is only ever built
from the replay window, which :meth:`~shore.store.RelayStore.ingest_batch` advances in the same
transaction that stores the batch. So if the relay dies between the PUBACK and the commit,
the batch is simply not acknowledged; the vessel resends it in its next session, and the
resent copy is stored then. If it dies after the commit but before the ``BatchAck`` left,
the resent copy is recognised (same hash) and acknowledged again, never stored twice.

Logs carry vessel ids, batch numbers, sizes and reasons, never text, names or addresses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import aiomqtt

from common.logs import enter_batch_scope, fresh_scope
from protocol.batch import Batch, Direction, read_batch_header
from protocol.codebook import Codebook
from protocol.compact import (
    LinkKeys,
    decode_compact,
    is_compact,
    open_compact,
    read_compact_header,
    sealed_batch_seq,
)
from protocol.envelopes import LaneBlock
from protocol.errors import MalformedBatch, ProtocolError, Reason, UnprocessableBatch
from protocol.lane import LaneShape
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from protocol.topics import uplink_topic_vessel
from shore.decoding import BatchDecoder, InlineDecoder
from shore.downlink import DownlinkBell
from shore.store.errors import StoreError
from shore.store.registry import VesselKey, keys_valid_at
from shore.store.uplink import IngestOutcome, IngestResult

log = logging.getLogger(__name__)


class IngestStore(Protocol):
    """What ingest needs of the store (``shore.store.RelayStore`` has it)."""

    async def vessel_keys(self, vessel_id: int) -> tuple[VesselKey, ...] | None:
        """A registered vessel's keys (oldest first), or None."""

    async def ingest_batch(self, batch: Batch, data: bytes, now: float) -> IngestResult:
        """Store one verified batch and all it brings in ONE transaction (idempotent)."""

    async def reject_batch(
        self, vessel_id: int, batch_seq: int, reason: Reason, message: str, data: bytes, now: float
    ) -> None:
        """Quarantine an authentic batch and refuse it for good, in one transaction."""

    async def quarantine(
        self,
        data: bytes,
        reason: Reason,
        message: str,
        now: float,
        vessel_id: int | None = None,
        batch_seq: int | None = None,
    ) -> None:
        """Keep refused bytes for the operator."""


class IngestObserver(Protocol):
    """Told of every payload handled (``shore.metrics.RelayMetrics`` is one)."""

    def observe_ingest(
        self,
        vessel_id: int | None,
        outcome: str,
        link_bytes: int,
        new_messages: int,
        repeated_messages: int,
        seconds: float,
        quarantine_reason: str | None = None,
    ) -> None:
        """One uplink payload handled (outcome: stored, duplicate, rejected, quarantined)."""


@dataclass
class IngestStatistics:
    """Counters since start (ids and sizes only)."""

    batches_stored: int = 0
    batches_duplicate: int = 0
    batches_rejected: int = 0
    quarantined: int = 0
    messages_stored: int = 0
    messages_duplicate: int = 0
    store_errors: int = 0
    #: Authentic batches refused with ``Reason.UNPROCESSABLE``: an unexpected failure while
    #: storing them (each one is a missing check in ``protocol`` or a bug; see the log).
    unprocessable: int = 0
    #: Payloads that failed in a way even the refusal could not handle (logged; dropped).
    handler_failures: int = 0
    link_bytes: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    #: grievance lane blocks stored
    lane_blocks: int = 0
    #: lane blocks not stored because their place held another block already
    lane_conflicts: int = 0


class _BatchName(Protocol):
    """What a refusal needs of a batch: whose, which number, and how to name it."""

    @property
    def vessel_id(self) -> int: ...
    @property
    def batch_seq(self) -> int: ...
    @property
    def where(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _CompactName:
    """An authentic compact frame's vessel and batch number (for refusals and logs)."""

    vessel_id: int
    batch_seq: int

    @property
    def where(self) -> str:
        return f"compact batch {self.batch_seq} from vessel {self.vessel_id}"


class Ingestor:
    """Turns uplink payloads into committed batches (or quarantine entries).

    ``doorbells`` are set after each commit (the downlink task and the delivery workers
    wait on them; a :class:`~shore.downlink.DownlinkBell` is rung with the batch's
    vessel). ``clock`` gives wall-clock seconds. ``shore_key`` (the relay's signing key) is
    needed for compact frames: their link keys come from it and the vessel's key; without
    it compact frames are quarantined.

    ``decoder`` decodes the batches (default: in this process; ``shore.decoding.
    ProcessDecoder`` in worker processes). ``concurrency`` is how many payloads
    :meth:`run` ingests at once (default 1, one after the other): above 1, a vessel's
    payloads are still ingested one at a time, in the order they arrived, while other
    vessels' are decoded and stored beside them (worth it with a ``ProcessDecoder``).
    """

    def __init__(
        self,
        store: IngestStore,
        codebook: Codebook,
        *,
        limits: Limits = DEFAULT_LIMITS,
        doorbells: Iterable[asyncio.Event | DownlinkBell] = (),
        clock: Callable[[], float] = time.time,
        metrics: IngestObserver | None = None,
        lane: LaneShape | None = None,
        shore_key: SigningKey | None = None,
        decoder: BatchDecoder | None = None,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError("ingest concurrency must be at least 1")
        self.shore_key = shore_key
        self.decoder = decoder or InlineDecoder(codebook, limits)
        self.concurrency = concurrency
        self.metrics = metrics
        self.lane = lane or LaneShape()
        self.store = store
        self.codebook = codebook
        self.limits = limits
        self.doorbells = tuple(doorbells)
        self.clock = clock
        self.stats = IngestStatistics()

    async def _quarantine(
        self,
        data: bytes,
        reason: Reason,
        message: str,
        vessel_id: int | None = None,
        batch_seq: int | None = None,
    ) -> None:
        await self.store.quarantine(data, reason, message, self.clock(), vessel_id, batch_seq)
        self.stats.quarantined += 1
        by = self.stats.quarantined_by_reason
        by[reason.name] = by.get(reason.name, 0) + 1
        log.warning(
            "quarantined %d bytes (vessel %s batch %s): %s",
            len(data),
            vessel_id,
            batch_seq,
            reason.name,
        )

    async def handle(self, topic: str, data: bytes) -> IngestOutcome | Reason:
        """Ingest one payload; returns what became of it (an outcome, or the quarantine reason).

        Raises :class:`~shore.store.StoreError` when the store fails: nothing was committed
        and nothing is acknowledged, so the vessel's resend will bring the batch again.
        Log lines carry the batch's correlation id (``common.logs``).
        """
        stats, started = self.stats, time.perf_counter()
        before = (stats.messages_stored, stats.messages_duplicate)
        with fresh_scope():
            result = await self._handle(topic, data)
        if self.metrics is not None:
            reason = result.name if isinstance(result, Reason) else None
            self.metrics.observe_ingest(
                uplink_topic_vessel(topic),
                "quarantined" if isinstance(result, Reason) else result.value,
                len(data),
                stats.messages_stored - before[0],
                stats.messages_duplicate - before[1],
                time.perf_counter() - started,
                reason,
            )
        return result

    async def _handle(self, topic: str, data: bytes) -> IngestOutcome | Reason:
        self.stats.link_bytes += len(data)
        topic_vessel = uplink_topic_vessel(topic)
        if topic_vessel is None:
            await self._quarantine(data, Reason.MALFORMED, f"payload on unexpected topic {topic!r}")
            return Reason.MALFORMED
        if is_compact(data):
            return await self._handle_compact(topic, topic_vessel, data)
        try:
            header = read_batch_header(data, limits=self.limits)
        except ProtocolError as exc:
            await self._quarantine(data, exc.reason, exc.message, topic_vessel)
            return exc.reason
        if header.direction is not Direction.UPLINK or header.vessel_id != topic_vessel:
            message = f"{header.where} ({header.direction.name.lower()}) arrived on {topic}"
            await self._quarantine(data, Reason.MALFORMED, message, topic_vessel, header.batch_seq)
            return Reason.MALFORMED
        vessel_id, batch_seq = header.vessel_id, header.batch_seq
        enter_batch_scope(vessel_id, batch_seq)
        now = self.clock()
        keys = await self.store.vessel_keys(vessel_id)
        if keys is None:
            message = f"{header.where}: vessel {vessel_id} is not registered"
            await self._quarantine(data, Reason.UNKNOWN_VESSEL, message, vessel_id, batch_seq)
            return Reason.UNKNOWN_VESSEL
        verify_key = _signing_key_of(data, keys_valid_at(keys, now))
        if verify_key is None:
            message = (
                f"the signature of {header.where} matches none of the vessel's valid keys: "
                "forged, corrupted, or signed with a revoked key"
            )
            await self._quarantine(data, Reason.SIGNATURE_INVALID, message, vessel_id, batch_seq)
            return Reason.SIGNATURE_INVALID

        async def decode() -> Batch:
            return await self.decoder.decode(data, verify_key)

        return await self._store(header, decode, data, now)

    async def _handle_compact(
        self, topic: str, topic_vessel: int, data: bytes
    ) -> IngestOutcome | Reason:
        """A compact frame: the tag in place of the signature, then the batch way."""
        try:
            header = read_compact_header(data, limits=self.limits)
        except ProtocolError as exc:
            await self._quarantine(data, exc.reason, exc.message, topic_vessel)
            return exc.reason
        if header.vessel_id != topic_vessel:
            message = f"{header.where} arrived on {topic}"
            await self._quarantine(data, Reason.MALFORMED, message, topic_vessel)
            return Reason.MALFORMED
        vessel_id = header.vessel_id
        if self.shore_key is None:
            message = f"{header.where}: this relay has no shore key to check compact frames"
            await self._quarantine(data, Reason.MALFORMED, message, vessel_id)
            return Reason.MALFORMED
        now = self.clock()
        vessel_keys = await self.store.vessel_keys(vessel_id)
        if vessel_keys is None:
            message = f"{header.where}: vessel {vessel_id} is not registered"
            await self._quarantine(data, Reason.UNKNOWN_VESSEL, message, vessel_id)
            return Reason.UNKNOWN_VESSEL
        valid = keys_valid_at(vessel_keys, now)
        opened = _link_keys_of(data, vessel_id, self.shore_key, valid)
        if opened is None:
            message = (
                f"the tag of {header.where} matches the link keys of none of the vessel's "
                "valid keys: forged, corrupted, or made with a revoked key"
            )
            await self._quarantine(data, Reason.SIGNATURE_INVALID, message, vessel_id)
            return Reason.SIGNATURE_INVALID
        keys, plaintext = opened
        try:
            batch_seq = sealed_batch_seq(plaintext)
        except ProtocolError as exc:
            # authentic, but without a batch number there is nothing to refuse by number
            await self._quarantine(data, exc.reason, f"{header.where}: {exc.message}", vessel_id)
            return exc.reason
        enter_batch_scope(vessel_id, batch_seq)

        async def decode() -> Batch:
            return decode_compact(data, keys=keys, codebook=self.codebook, limits=self.limits)

        return await self._store(_CompactName(vessel_id, batch_seq), decode, data, now)

    async def _store(
        self,
        header: _BatchName,
        decode: Callable[[], Awaitable[Batch]],
        data: bytes,
        now: float,
    ) -> IngestOutcome | Reason:
        """Decode, check and store an authentic batch; refuse it typed when that fails."""
        vessel_id, batch_seq = header.vessel_id, header.batch_seq
        try:
            batch = await decode()
            check_lane_blocks(batch, self.lane.block_bytes)
            result = await self.store.ingest_batch(batch, data, now)
        except (StoreError, MemoryError):
            # the relay failed (its database, its memory), not the batch: nothing committed,
            # nothing acknowledged, the vessel resends it
            raise
        except ProtocolError as exc:
            # Signed by the vessel, so refusing it for good cannot be abused by a forger.
            return await self._refuse(header, exc.reason, exc.message, data, now)
        except Exception as exc:
            return await self._refuse_unexpected(header, exc, data, now)
        stats = self.stats
        if result.outcome is IngestOutcome.STORED:
            stats.batches_stored += 1
        elif result.outcome is IngestOutcome.DUPLICATE:
            stats.batches_duplicate += 1
        else:
            stats.batches_rejected += 1
        stats.messages_stored += result.new_messages
        stats.messages_duplicate += result.duplicate_messages
        stats.lane_blocks += result.lane_blocks
        log.info(
            "vessel %d batch %d %s: %d bytes, %d new messages, %d repeated, %d contacts, "
            "%d lane blocks, %d downlink batches acknowledged",
            vessel_id,
            batch_seq,
            result.outcome.value,
            len(data),
            result.new_messages,
            result.duplicate_messages,
            result.contacts,
            result.lane_blocks,
            result.downlink_acked,
        )
        if result.lane_conflicts:
            stats.lane_conflicts += result.lane_conflicts
            log.warning(
                "vessel %d batch %d: %d lane blocks name a place (period, index) that holds "
                "another block already; the first ones stay (did the vessel lose its lane "
                "reservoir?)",
                vessel_id,
                batch_seq,
                result.lane_conflicts,
            )
        self._ring(vessel_id)
        return result.outcome

    async def _refuse(
        self, header: _BatchName, reason: Reason, message: str, data: bytes, now: float
    ) -> IngestOutcome | Reason:
        """Quarantine an authentic batch and refuse it for good (``BatchAck.rejected``).

        Should recording the refusal itself fail (other than the database failing), the
        batch is only quarantined: logged with its traceback, left unacknowledged.
        """
        vessel_id, batch_seq = header.vessel_id, header.batch_seq
        try:
            await self.store.reject_batch(vessel_id, batch_seq, reason, message, data, now)
        except StoreError:
            raise
        except Exception:
            log.exception(
                "vessel %d batch %d: recording its refusal (%s) failed; quarantined only",
                vessel_id,
                batch_seq,
                reason.name,
            )
            await self._quarantine(data, reason, message, vessel_id, batch_seq)
            return reason
        self.stats.batches_rejected += 1
        self.stats.quarantined += 1
        by = self.stats.quarantined_by_reason
        by[reason.name] = by.get(reason.name, 0) + 1
        log.warning("vessel %d batch %d refused for good: %s", vessel_id, batch_seq, reason.name)
        self._ring(vessel_id)
        return IngestOutcome.REJECTED

    async def _refuse_unexpected(
        self, header: _BatchName, exc: Exception, data: bytes, now: float
    ) -> IngestOutcome | Reason:
        """The last line of defence: storing an authentic batch failed unexpectedly.

        The store's transaction has rolled back. The failure is logged once, with its
        traceback, for the operator; the batch is refused with ``Reason.UNPROCESSABLE``.
        """
        self.stats.unprocessable += 1
        log.error(
            "vessel %d batch %d: storing this authentic batch failed (%s); refusing it as "
            "UNPROCESSABLE, its bytes are in quarantine. A check is missing in protocol/ "
            "or there is a bug: please report this traceback",
            header.vessel_id,
            header.batch_seq,
            type(exc).__name__,
            exc_info=exc,
        )
        refusal = UnprocessableBatch(
            f"{header.where} is signed by the vessel but the relay failed to store it "
            f"({type(exc).__name__}: {str(exc)[:200]}); refused for good, see the relay log"
        )
        return await self._refuse(header, refusal.reason, refusal.message, data, now)

    def _ring(self, vessel_id: int) -> None:
        for bell in self.doorbells:
            if isinstance(bell, DownlinkBell):
                bell.ring(vessel_id)  # the downlink looks at this vessel only
            else:
                bell.set()

    async def run(self, client: aiomqtt.Client, stopping: asyncio.Event) -> None:
        """Ingest messages from a connected, subscribed client until ``stopping`` is set.

        Up to ``concurrency`` payloads are ingested at once, each vessel's one at a time in
        the order they arrived. The payloads being ingested when ``stopping`` is set are
        finished first. A store failure is logged and the payload dropped unacknowledged
        (the vessel resends). Any other exception from one payload is logged with its
        traceback and counted, and ingest goes on: one bad batch or one bad vessel never
        ends the task group.
        """
        messages = client.messages
        room = asyncio.Semaphore(self.concurrency)
        in_order: dict[str, asyncio.Lock] = {}
        running: set[asyncio.Task[None]] = set()
        try:
            while not stopping.is_set():
                message = await _next_or_stop(messages, stopping)
                if message is None:
                    return
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode("utf-8")
                topic = str(message.topic)
                if self.concurrency == 1:
                    await self._handle_logged(topic, bytes(payload))
                    continue
                await room.acquire()
                turn = in_order.setdefault(topic, asyncio.Lock())
                task = asyncio.create_task(self._in_turn(turn, room, topic, bytes(payload)))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _in_turn(
        self, turn: asyncio.Lock, room: asyncio.Semaphore, topic: str, payload: bytes
    ) -> None:
        # Tasks start in the order they were made, so they take their vessel's turn in the
        # order the payloads arrived (asyncio.Lock is first come, first served).
        try:
            async with turn:
                await self._handle_logged(topic, payload)
        finally:
            room.release()

    async def _handle_logged(self, topic: str, payload: bytes) -> None:
        try:
            await self.handle(topic, payload)
        except StoreError:
            self.stats.store_errors += 1
            log.exception("store failed; batch on %s left unacknowledged", topic)
        except Exception:
            self.stats.handler_failures += 1
            log.exception(
                "ingest failed on a %d-byte payload on %s; it is dropped unacknowledged "
                "and ingest goes on",
                len(payload),
                topic,
            )


async def _next_or_stop(
    messages: AsyncIterator[aiomqtt.Message], stopping: asyncio.Event
) -> aiomqtt.Message | None:
    """The next message, or None once ``stopping`` is set."""
    get = asyncio.ensure_future(anext(messages))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not get.done():
            get.cancel()
            await asyncio.gather(get, return_exceptions=True)
    if get.cancelled() or not get.done():
        return None
    message: aiomqtt.Message = get.result()
    return message


def check_lane_blocks(batch: Batch, block_bytes: int) -> None:
    """Raise :class:`~protocol.errors.MalformedBatch` if the batch carries a grievance lane
    block of another size than this relay's lane (``block_bytes``: a vessel and its relay
    must agree on the lane's shape), or two blocks for one place (period, index)."""
    places: set[tuple[int, int]] = set()
    for envelope in batch.envelopes:
        if not isinstance(envelope, LaneBlock):
            continue
        where = (
            f"batch {batch.batch_seq} from vessel {batch.vessel_id}: lane block "
            f"(period {envelope.period}, index {envelope.index})"
        )
        if len(envelope.block) != block_bytes:
            raise MalformedBatch(
                f"{where} is {len(envelope.block)} bytes; this relay's lane blocks are "
                f"{block_bytes} bytes (the vessel and the relay must use the same lane shape)"
            )
        place = (envelope.period, envelope.index)
        if place in places:
            raise MalformedBatch(f"{where} is in the batch twice; a place holds one block")
        places.add(place)


def _link_keys_of(
    data: bytes, vessel_id: int, shore_key: SigningKey, keys: Iterable[bytes]
) -> tuple[LinkKeys, bytes] | None:
    """The link keys (of the first of the vessel's ``keys``) whose tag checks on ``data``,
    with the opened plaintext; None when none does."""
    for raw in keys:
        link_keys = LinkKeys.for_shore(vessel_id, shore_key, VerifyKey(raw))
        try:
            _, plaintext = open_compact(data, link_keys)
        except ProtocolError:
            continue
        return link_keys, plaintext
    return None


def _signing_key_of(data: bytes, keys: Iterable[bytes]) -> VerifyKey | None:
    """The first of ``keys`` whose signature check passes on ``data``, or None."""
    signed, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    for raw in keys:
        key = VerifyKey(raw)
        try:
            key.verify(signed, signature)
        except ProtocolError:
            continue
        return key
    return None
