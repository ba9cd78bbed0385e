"""Delivery: workers that take due deliveries from the store and deliver each exactly once.

The store is the queue. A worker loops, a batch of deliveries at a time::

    claim_deliveries(now, limit, worker)   # ONE transaction: claims AND attempts recorded,
                                           # committed *before* anything leaves
      -> send each, ``concurrency`` at once: family e-mail (smarthost, over kept SMTP
         sessions; a voice message attached as Opus) | SMS (provider; a voice message as
         an expiring link, shore.voice_links) | sealed report to the union inbox
      -> finish_deliveries(ends, now)      # ONE transaction: delivered, failed with a
                                           # reason, or rescheduled (transient: backoff)

``finish_deliveries`` is where the store queues each receipt to the vessel
(:func:`shore.vocabulary.receipt_for` builds it: ``DeliveryReceipt(DELIVERED)`` or
``DeliveryFailure(reason)``) in the same transaction, so a final outcome and its receipt
are never apart.

A delivery claimed with an attempt recorded but never finished was claimed (and perhaps
sent) when a worker died: it may already be in the family's inbox. It is sent again with
the same Message-ID (the idempotency key ``<{vessel_id}.{message_seq}@{relay domain}>``)
and counted in :meth:`DeliveryWorker.statistics` as a *repeat*; so is the next attempt
after one that failed once the message was handed over (``maybe_sent``: a connection lost
during SMTP ``DATA``). A repeat is a *possible* duplicate: a worker killed mid-batch counts
the batch's unsent deliveries too. Grievance reports stay sealed: the worker hands the
ciphertext to the union inbox and never looks inside.

Logs name vessel ids, sequence numbers, outcomes and reasons; never addresses or text.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from common.logs import message_scope
from protocol.envelopes import FailureReason
from protocol.languages import Language
from shore.mail import (
    FamilyMail,
    InvalidAddress,
    MailIdentity,
    MailSender,
    ReplyAddressBook,
    ReplyRoute,
    VoiceAttachment,
    clean_header_text,
    render_family_mail,
)
from shore.retry import AttemptResult, RetryPolicy, decide
from shore.sms import SmsProvider
from shore.store.uplink import CodedVoice
from shore.vocabulary import (
    CONTACT_NOT_KNOWN_YET,
    AttemptEnd,
    DeliveryEnd,
    DeliveryOutcome,
    Destination,
)
from shore.voice import voice_attachment
from shore.voice_links import VoiceLinks, sms_text

log = logging.getLogger(__name__)


class DueDelivery(Protocol):
    """A claimed delivery, as the store hands it over (read-only attributes)."""

    @property
    def key(self) -> object:
        """The store's id of the delivery; passed back unchanged."""

    @property
    def vessel_id(self) -> int: ...
    @property
    def message_seq(self) -> int: ...
    @property
    def destination(self) -> Destination: ...

    @property
    def crew(self) -> int | None:
        """The crew member (None for a grievance report: the shore must not know who)."""

    @property
    def contact(self) -> int | None: ...
    @property
    def crew_name(self) -> str | None: ...
    @property
    def contact_lang(self) -> Language | None: ...

    @property
    def address(self) -> str | None:
        """The family's e-mail address or E.164 phone number."""

    @property
    def text(self) -> str | None:
        """The message text (quick codes already expanded by the store)."""

    @property
    def union(self) -> int | None: ...
    @property
    def sealed(self) -> bytes | None: ...

    @property
    def voice(self) -> CodedVoice | None:
        """A voice message's Codec2 speech (None for a written message)."""

    @property
    def subject(self) -> str | None:
        """The Subject line the crew member wrote (a mail from the vessel's SMTP door);
        the family mail's Subject. None: the relay's own ("Message from ...")."""

    @property
    def accepted_at(self) -> float:
        """When the message was accepted ashore (the deadline counts from here)."""

    @property
    def attempts(self) -> int:
        """Attempts recorded so far."""

    @property
    def unfinished_attempt(self) -> bool:
        """Whether the last recorded attempt never got an outcome (a possible duplicate)."""


class DeliveryStore(Protocol):
    """The store methods a delivery worker needs (``shore.store.RelayStore`` has them)."""

    async def claim_deliveries(self, now: float, limit: int, worker: str) -> Sequence[DueDelivery]:
        """Claim up to ``limit`` due deliveries and record an attempt on each, in one
        transaction (the deliveries as they were before this attempt)."""

    async def release_claims(self, worker: str) -> int:
        """Give back every unfinished claim of ``worker`` (a restarted worker's own)."""

    async def finish_deliveries(self, ends: Sequence[DeliveryEnd], now: float) -> None:
        """Record the attempts' ends (final outcomes with their receipts to the vessels, or
        the next try), in one transaction."""

    async def deliver_to_union_inbox(
        self, union: int, vessel_id: int, message_seq: int, sealed: bytes, now: float
    ) -> None:
        """Put a sealed report in the union's inbox (idempotent per vessel and sequence)."""


class DeliveryObserver(Protocol):
    """Told of every attempt (``shore.metrics.RelayMetrics`` is one)."""

    def observe_delivery(
        self,
        destination: str,
        outcome: str,
        attempt_seconds: float,
        since_accepted_s: float | None,
        repeat: bool,
    ) -> None:
        """One delivery attempt (outcome: delivered, failed, retry)."""


@dataclass(frozen=True, slots=True)
class DeliveryStatistics:
    """Counters for the status page."""

    attempts: int
    delivered: int
    failed: int
    retries_scheduled: int
    #: Attempts made for a delivery whose previous attempt never finished (possible duplicate).
    repeats: int
    #: Deliveries left claimed because the store failed mid-way (they come back later).
    errors: int
    failed_by_reason: dict[str, int]


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How a worker claims and paces work."""

    worker: str = "relay-1"
    batch_size: int = 20
    concurrency: int = 8
    #: The longest a worker sleeps when there is nothing due (the doorbell wakes it sooner).
    idle_s: float = 5.0
    #: Pause after the store failed, before trying again.
    error_pause_s: float = 5.0
    #: Characters of the crew member's name in front of an SMS (the family's phone shows
    #: only the relay's number).
    sms_name_chars: int = 24


class DeliveryWorker:
    """Delivers due messages; ``await run(stopping, doorbell)`` inside the relay's task group.

    ``sms`` may be None when no SMS provider is configured: SMS deliveries then wait
    (transient) until the deadline. ``voice_links`` makes the links that bring a voice
    message to a contact reached by SMS; without it such a delivery fails for good.
    ``clock`` gives wall-clock seconds.
    """

    def __init__(
        self,
        store: DeliveryStore,
        mail: MailSender,
        identity: MailIdentity,
        reply_book: ReplyAddressBook,
        sms: SmsProvider | None = None,
        *,
        policy: RetryPolicy | None = None,
        config: DeliveryConfig | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        metrics: DeliveryObserver | None = None,
        voice_links: VoiceLinks | None = None,
    ) -> None:
        self.metrics = metrics
        self.voice_links = voice_links
        self.store = store
        self.mail = mail
        self.identity = identity
        self.reply_book = reply_book
        self.sms = sms
        self.policy = policy or RetryPolicy()
        self.config = config or DeliveryConfig()
        self.rng = rng or random.Random()
        self.clock = clock
        self._attempts = self._delivered = self._failed = 0
        self._retries = self._repeats = self._errors = 0
        self._by_reason: dict[str, int] = {}

    def statistics(self) -> DeliveryStatistics:
        """Counters since start."""
        return DeliveryStatistics(
            self._attempts,
            self._delivered,
            self._failed,
            self._retries,
            self._repeats,
            self._errors,
            dict(self._by_reason),
        )

    async def run(self, stopping: asyncio.Event, doorbell: asyncio.Event | None = None) -> None:
        """Deliver until ``stopping`` is set; a pass in progress finishes first.

        ``doorbell`` (set by ingest when new deliveries are queued) wakes the worker early.
        """
        bell = doorbell or asyncio.Event()
        # A worker that was killed mid-pass left its claims leased; the same worker, started
        # again, gives them back at once instead of waiting out the lease. A delivery whose
        # attempt was recorded is then sent again with the same Message-ID (a counted repeat).
        released = await self.store.release_claims(self.config.worker)
        if released:
            log.info("released %d deliveries claimed before a restart", released)
        while not stopping.is_set():
            try:
                done = await self.deliver_due()
            except Exception:
                self._errors += 1
                log.exception("delivery pass failed; retrying in %.0f s", self.config.error_pause_s)
                await _wait_any(stopping, None, self.config.error_pause_s)
                continue
            if done >= self.config.batch_size:
                continue  # more may be due right away
            bell.clear()
            await _wait_any(stopping, bell, self.config.idle_s)

    async def deliver_due(self) -> int:
        """One pass: claim up to a batch of due deliveries (their attempts recorded in the
        same transaction), send them, ``concurrency`` at once, and record how each ended in
        one transaction; how many were claimed."""
        due = await self.store.claim_deliveries(
            self.clock(), self.config.batch_size, self.config.worker
        )
        if not due:
            return 0
        limit = asyncio.Semaphore(self.config.concurrency)
        ended: list[tuple[DueDelivery, DeliveryEnd, float]] = []

        async def one(delivery: DueDelivery) -> None:
            async with limit:
                started = time.perf_counter()
                try:
                    with message_scope(delivery.vessel_id, delivery.message_seq):
                        end = await self._attempt(delivery)
                except Exception:
                    # The store failed (a report to the union inbox): the delivery stays
                    # claimed with its attempt unfinished, and comes back after its lease as
                    # a counted repeat.
                    self._errors += 1
                    log.exception(
                        "delivery of vessel %d message %d interrupted",
                        delivery.vessel_id,
                        delivery.message_seq,
                    )
                    return
                ended.append((delivery, end, time.perf_counter() - started))

        async with asyncio.TaskGroup() as group:
            for delivery in due:
                group.create_task(one(delivery))
        # If this raises (the store failed), every attempt of the batch stays unfinished:
        # the deliveries come back after their lease, counted as repeats.
        await self.store.finish_deliveries([end for _, end, _ in ended], self.clock())
        for delivery, end, seconds in ended:
            with message_scope(delivery.vessel_id, delivery.message_seq):
                self._count(delivery, end, seconds)
        return len(due)

    async def _attempt(self, delivery: DueDelivery) -> DeliveryEnd:
        """Send a claimed delivery whose attempt is on record; how the attempt ended."""
        attempt = delivery.attempts + 1
        if delivery.unfinished_attempt:
            self._repeats += 1
            log.warning(
                "vessel %d message %d: previous attempt never finished; resending (repeat)",
                delivery.vessel_id,
                delivery.message_seq,
            )
        self._attempts += 1
        result = await self._send(delivery)
        now = self.clock()
        decision = decide(result, attempt, delivery.accepted_at, now, self.policy, self.rng)
        detail = decision.result.detail
        if decision.retry_at is not None:
            return DeliveryEnd(
                delivery.key,
                None,
                decision.result.reason,
                retry_at=decision.retry_at,
                detail=detail,
                maybe_sent=result.maybe_sent,
            )
        if decision.delivered:
            return DeliveryEnd(delivery.key, DeliveryOutcome.DELIVERED, detail=detail)
        reason = decision.reason or FailureReason.PROVIDER_ERROR
        return DeliveryEnd(delivery.key, DeliveryOutcome.FAILED, reason, detail=detail)

    def _count(self, delivery: DueDelivery, end: DeliveryEnd, attempt_s: float) -> None:
        """Counters, the state change's log line and metrics, once ``end`` is committed."""
        where = f"vessel {delivery.vessel_id} message {delivery.message_seq}"
        if end.outcome is None:
            assert end.retry_at is not None
            self._retries += 1
            outcome = AttemptEnd.RETRY
            log.info(
                "%s: attempt %d failed (%s); retry in %.0f s",
                where,
                delivery.attempts + 1,
                end.detail,
                end.retry_at - self.clock(),
            )
        elif end.outcome is DeliveryOutcome.DELIVERED:
            self._delivered += 1
            outcome = AttemptEnd.DELIVERED
            log.info("%s: delivered (%s)", where, end.detail)
        else:
            reason = end.reason or FailureReason.PROVIDER_ERROR
            self._failed += 1
            self._by_reason[reason.name] = self._by_reason.get(reason.name, 0) + 1
            outcome = AttemptEnd.FAILED
            log.info("%s: failed %s (%s)", where, reason.name, end.detail)
        if self.metrics is not None:
            self.metrics.observe_delivery(
                delivery.destination.value,
                outcome,
                attempt_s,
                self.clock() - delivery.accepted_at,
                delivery.unfinished_attempt,
            )

    async def _send(self, delivery: DueDelivery) -> AttemptResult:
        destination = delivery.destination
        if destination is Destination.UNION:
            return await self._to_union(delivery)
        if not delivery.address:
            # Batches may arrive out of order: the contact's announcement can come after
            # the message. Wait for it (until the deadline) rather than fail at once.
            return AttemptResult.transient(FailureReason.UNKNOWN_CONTACT, CONTACT_NOT_KNOWN_YET)
        if delivery.voice is not None:
            if destination is not Destination.EMAIL:
                return await self._voice_to_sms(delivery, delivery.address, delivery.voice)
            try:
                attachment = await asyncio.to_thread(voice_attachment, delivery.voice)
            except ValueError as exc:
                return AttemptResult.permanent(FailureReason.REJECTED_BY_RELAY, f"voice: {exc}")
            return await self._to_email(delivery, delivery.address, "", attachment)
        if not delivery.text:
            return AttemptResult.permanent(FailureReason.REJECTED_BY_RELAY, "no text")
        if destination is Destination.EMAIL:
            return await self._to_email(delivery, delivery.address, delivery.text)
        return await self._to_sms(delivery, delivery.address, delivery.text)

    async def _to_email(
        self,
        delivery: DueDelivery,
        address: str,
        text: str,
        voice: VoiceAttachment | None = None,
    ) -> AttemptResult:
        if delivery.crew is None or delivery.contact is None:
            return AttemptResult.permanent(FailureReason.UNKNOWN_CONTACT, "no crew or contact")
        family_mail = FamilyMail(
            vessel_id=delivery.vessel_id,
            message_seq=delivery.message_seq,
            route=ReplyRoute(delivery.vessel_id, delivery.crew, delivery.contact),
            crew_name=delivery.crew_name or "",
            to_address=address,
            text=text,
            contact_lang=delivery.contact_lang,
            voice=voice,
            subject=delivery.subject,
        )
        try:
            message = render_family_mail(family_mail, self.identity, self.reply_book, self.clock())
        except InvalidAddress as exc:
            return AttemptResult.permanent(FailureReason.ADDRESS_INVALID, f"address: {exc}")
        return await self.mail.send(message)

    async def _to_sms(self, delivery: DueDelivery, number: str, text: str) -> AttemptResult:
        if self.sms is None:
            return AttemptResult.transient(FailureReason.PROVIDER_ERROR, "no SMS provider")
        name = clean_header_text(delivery.crew_name or "", self.config.sms_name_chars)
        body = f"{name}: {text}" if name else text
        return await self.sms.send(number, body)

    async def _voice_to_sms(
        self, delivery: DueDelivery, number: str, voice: CodedVoice
    ) -> AttemptResult:
        """An SMS with a link to a page of the relay that plays the voice message (the
        same link on every attempt: :mod:`shore.voice_links`)."""
        if self.voice_links is None:
            # this relay has no public web app to play it from ([sms] webhook = false)
            return AttemptResult.permanent(
                FailureReason.REJECTED_BY_RELAY, "voice messages to SMS need [sms] webhook"
            )
        if self.sms is None:
            return AttemptResult.transient(FailureReason.PROVIDER_ERROR, "no SMS provider")
        url, expires = self.voice_links.make(
            delivery.vessel_id, delivery.message_seq, delivery.accepted_at
        )
        name = clean_header_text(delivery.crew_name or "", self.config.sms_name_chars)
        seconds = -(-voice.duration_ms // 1000)
        text = sms_text(name, seconds, url, expires, delivery.contact_lang)
        return await self.sms.send(number, text)

    async def _to_union(self, delivery: DueDelivery) -> AttemptResult:
        if delivery.union is None or not delivery.sealed:
            return AttemptResult.permanent(FailureReason.REJECTED_BY_RELAY, "no union or report")
        await self.store.deliver_to_union_inbox(
            delivery.union,
            delivery.vessel_id,
            delivery.message_seq,
            delivery.sealed,
            self.clock(),
        )
        return AttemptResult.delivered("union inbox")


async def _wait_any(stopping: asyncio.Event, bell: asyncio.Event | None, timeout_s: float) -> None:
    """Wait until ``stopping`` or ``bell`` is set, or ``timeout_s`` passes."""
    waiters = [asyncio.ensure_future(stopping.wait())]
    if bell is not None:
        waiters.append(asyncio.ensure_future(bell.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
