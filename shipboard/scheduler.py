"""Scheduler: when a satellite session pays off, and which messages go, fairly (pure policy).

``plan(snapshot, profile, settings, now)`` is a pure function: no clock, no I/O, no
randomness. The link's loop calls it with a snapshot of the outbox and sleeps until
``Plan.timer`` (or until the outbox doorbell rings), aioquic's ``get_timer`` style.

The rules, in order:

1. **Reserved lane.** Grievance lane blocks, grievance reports and SOS are outside every
   quota and budget: they are never held for either. An SOS opens a session at once (not
   even the minimum gap between sessions applies); a lane block (report or cover: the
   same rule for both, so session timing says nothing) or an old-style report opens one
   when the grievance latency target is due, counted from the end of its lane period.
2. **Quota.** A crew member's family messages of this month may not carry more text bytes
   than their monthly quota (``ledger`` holds what was already carried). A message that
   would go over is held with reason ``QUOTA`` and a notice that states the balance left
   (so "quota exhausted" can never hide an owner's throttling: the numbers are in it).
   Messages of one crew member keep their order: once one is held, later ones wait too.
3. **Budget and fairness.** What the owner's monthly budget still allows, after the
   session's own overhead, is shared max-min fairly: round-robin by crew member, the one
   who has used the fewest text bytes this month first (ties: lower crew number), one
   message at a time, oldest first. A crew member whose next message no longer fits
   stops; the others go on. With equal demand, shares differ by at most one message.
   A session also has a size cap (``max_session_payload_bytes``); what does not fit is
   held with reason ``CAPACITY`` and goes in the next session, at once.
4. **Session economics.** A session is opened when an SOS waits, a latency target is due,
   the estimated session reaches the profile's billed minimum (``fill_target_bytes``:
   on Iridium Certus every session costs 5 KB anyway, so fill it), the vessel has not
   looked for news for ``profile.idle_poll_s``, or batches sent earlier are still
   unacknowledged after ``resend_after_s``. Otherwise everything waits (``WAITING``)
   and ``timer`` says when the next of those moments comes.

Estimates: the scheduler cannot encode, so it prices a message at
``payload_bytes * compression_ratio + ENVELOPE_LINK_BYTES``; the real batch is measured
by the link. Times are wall-clock seconds since 1970 (UTC), like the outbox's.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from protocol.months import Month
from protocol.quota import QuotaLedger
from shipboard.profiles import LinkProfile
from shipboard.states import RESERVED_KINDS, MessageKind

__all__ = [
    "ENVELOPE_LINK_BYTES",
    "RESERVED_KINDS",
    "Held",
    "HoldReason",
    "PendingLike",
    "Plan",
    "SchedulerSettings",
    "SessionReason",
    "Snapshot",
    "plan",
]

#: Link bytes an envelope costs besides its (compressed) text: skeleton entry, framing share.
ENVELOPE_LINK_BYTES = 12


class PendingLike(Protocol):
    """What the scheduler reads of a pending message (``shipboard.outbox.PendingMessage``)."""

    @property
    def message_seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def crew(self) -> int | None: ...
    @property
    def text_bytes(self) -> int: ...
    @property
    def payload_bytes(self) -> int: ...
    @property
    def accepted_at(self) -> float: ...


class SessionReason(StrEnum):
    """Why a session opens now."""

    SOS = "sos"
    GRIEVANCE_DUE = "grievance_due"
    LATENCY_DUE = "latency_due"
    SESSION_FULL = "session_full"
    POLL = "poll"
    RESEND = "resend"


class HoldReason(StrEnum):
    """Why a message stays on board for now."""

    WAITING = "waiting"  # no session now: filling the session, latency target not due
    QUOTA = "quota"  # the crew member's monthly text quota does not cover it
    BUDGET = "budget"  # the owner's monthly satellite budget does not cover it
    CAPACITY = "capacity"  # this session is full: it goes in the next one


@dataclass(frozen=True, slots=True)
class Held:
    """A message that does not go in this session, and why (no text, no names)."""

    message_seq: int
    crew: int | None
    reason: HoldReason
    #: For QUOTA: the crew member's quota bytes left this month, and what this one needs.
    remaining_bytes: int | None = None
    needed_bytes: int | None = None

    @property
    def notice(self) -> str:
        """A sentence for the crew member (translated by the web page from ``reason``)."""
        if self.reason is HoldReason.QUOTA:
            return (
                f"Your monthly text quota is used up: {self.remaining_bytes:,} bytes are "
                f"left and this message needs {self.needed_bytes:,}. It waits for next "
                "month. Reports to the union and SOS are not counted and still go."
            )
        if self.reason is HoldReason.BUDGET:
            return (
                "The vessel's satellite budget for this month is spent; your message waits "
                "on board. Your own quota is not affected. Reports and SOS still go."
            )
        if self.reason is HoldReason.CAPACITY:
            return "Saved on board; it goes in the next satellite session, right after this one."
        return "Saved on board; it goes with the next satellite session."


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the scheduler knows at one moment (the link builds it from the outbox)."""

    pending: Sequence[PendingLike]
    #: Text bytes already *carried* (put in batches) per crew member, per month.
    ledger: QuotaLedger
    #: The owner's satellite budget left this month, in billed bytes (reserved lane aside).
    remaining_budget_bytes: int
    #: The current quota month, and its start and end (seconds since 1970, UTC).
    month: Month
    month_start: float
    next_month_start: float
    #: When the last session ended (None: none since the agent started).
    last_session_at: float | None = None
    #: Uplink batches published earlier that no BatchAck has covered yet (not counting
    #: batches that only acknowledge the downlink: nobody waits for an answer to those).
    unacknowledged_batches: int = 0


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Tunables; the defaults are argued in the module and profile docstrings."""

    #: Latency target per kind, seconds (from config ``[latency_minutes]``).
    latency_s: Mapping[str, float] = field(
        default_factory=lambda: {
            MessageKind.SOS: 0.0,
            MessageKind.GRIEVANCE: 24 * 3600.0,
            MessageKind.MESSAGE: 6 * 3600.0,
        }
    )
    #: Link bytes of one session besides its batches: TCP open/close, TLS, MQTT CONNECT,
    #: SUBSCRIBE, PUBACKs, TCP/IP headers. Measured (shipboard.link docstring): ~2,220 B
    #: with TLS 1.3 resumed, ~3,000 B with a full handshake; FIELD-NOTES' tcpdump figures
    #: give ~2,600 B resumed. 2,600 sits between them.
    session_overhead_bytes: int = 2600
    #: Expected compressed size over UTF-8 size (FIELD-NOTES: batches of 20 at 16-44%).
    compression_ratio: float = 0.5
    #: Most estimated payload bytes in one session (bounds a session's length).
    max_session_payload_bytes: int = 64 * 1024
    #: Fewest seconds between two sessions (SOS excepted): bursts share one session.
    min_gap_s: float = 60.0
    #: Reopen a session to resend batches that are still unacknowledged after this long.
    resend_after_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Plan:
    """The scheduler's answer: open a session now or not, what goes, what waits, when next."""

    open_session: bool
    reason: SessionReason | None
    #: Message numbers for this session: reserved lane first, then family messages in
    #: fair order. Empty when no session opens.
    send: tuple[int, ...]
    held: tuple[Held, ...]
    #: When to plan again if the doorbell does not ring first (seconds since 1970); when a
    #: session opens, ``now``: plan again as soon as it ends.
    timer: float
    #: Estimated link bytes of the session (overhead included); 0 when none opens.
    estimated_link_bytes: int

    def held_for(self, reason: HoldReason) -> tuple[Held, ...]:
        """The held messages with this reason."""
        return tuple(held for held in self.held if held.reason is reason)


def fill_target_bytes(profile: LinkProfile, settings: SchedulerSettings) -> int:
    """Estimated session bytes worth opening a session for, with no deadline pressing.

    The billed minimum when the profile has one (those bytes are paid anyway); without a
    minimum, four times the session overhead, so overhead stays under about a fifth —
    except on a cheap link (under $1/MB), where a message goes as soon as it comes.
    """
    if profile.min_session_bytes:
        return profile.min_session_bytes
    if profile.price_per_mb_usd < 1.0:
        return 0
    return 4 * settings.session_overhead_bytes


def _link_bytes(message: PendingLike, settings: SchedulerSettings) -> int:
    return math.ceil(message.payload_bytes * settings.compression_ratio) + ENVELOPE_LINK_BYTES


def _deadline(message: PendingLike, settings: SchedulerSettings) -> float:
    # lane blocks keep the grievance target (``[latency_minutes] grievance``)
    kind = MessageKind.GRIEVANCE if message.kind == MessageKind.LANE else message.kind
    latency = settings.latency_s.get(kind, settings.latency_s.get(MessageKind.MESSAGE, 0.0))
    return message.accepted_at + latency


@dataclass(slots=True)
class _Selection:
    send: list[int] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    link_bytes: int = 0
    crew_link_bytes: int = 0


def _budget_payload(snapshot: Snapshot, profile: LinkProfile, settings: SchedulerSettings) -> int:
    """Payload link bytes that the remaining budget can pay for in one session."""
    left = snapshot.remaining_budget_bytes
    if profile.billed_bytes(settings.session_overhead_bytes) > left:
        return 0
    return max(0, left - settings.session_overhead_bytes - (profile.increment_bytes - 1))


def _select(snapshot: Snapshot, profile: LinkProfile, settings: SchedulerSettings) -> _Selection:
    selection = _Selection()
    ordered = sorted(snapshot.pending, key=lambda m: (m.accepted_at, m.message_seq))
    by_crew: dict[int, list[PendingLike]] = {}
    for message in ordered:
        if message.kind in RESERVED_KINDS or message.crew is None:
            selection.send.append(message.message_seq)
            selection.link_bytes += _link_bytes(message, settings)
        else:
            by_crew.setdefault(message.crew, []).append(message)

    # Quota: per crew member, in order; the first message over quota stops that member.
    ledger = snapshot.ledger
    quota_month_used: dict[int, int] = {}
    eligible: dict[int, list[PendingLike]] = {}
    for crew, messages in by_crew.items():
        used = _used_this_month(snapshot, crew)
        quota_month_used[crew] = used
        fits: list[PendingLike] = []
        for index, message in enumerate(messages):
            counted = message.accepted_at >= snapshot.month_start
            if counted and used + message.text_bytes > ledger.quota_bytes:
                remaining = max(0, ledger.quota_bytes - used)
                selection.held.extend(
                    Held(m.message_seq, crew, HoldReason.QUOTA, remaining, m.text_bytes)
                    for m in messages[index:]
                )
                break
            if counted:
                used += message.text_bytes
            fits.append(message)
        eligible[crew] = fits

    # Budget and session size, shared max-min fairly: least-used crew member first.
    budget = _budget_payload(snapshot, profile, settings)
    session_room = max(0, settings.max_session_payload_bytes - selection.link_bytes)
    room = min(budget, session_room)
    limited_by = HoldReason.BUDGET if budget < session_room else HoldReason.CAPACITY
    heap = [(quota_month_used[crew], crew) for crew in sorted(eligible) if eligible[crew]]
    heapq.heapify(heap)
    cursor = dict.fromkeys(eligible, 0)
    while heap:
        usage, crew = heapq.heappop(heap)  # usage: text bytes this month, sent or chosen
        queue = eligible[crew]
        message = queue[cursor[crew]]
        cost = _link_bytes(message, settings)
        if cost > room:
            continue  # this crew member stops here; the rest are held below
        room -= cost
        selection.send.append(message.message_seq)
        selection.link_bytes += cost
        selection.crew_link_bytes += cost
        cursor[crew] += 1
        if cursor[crew] < len(queue):
            heapq.heappush(heap, (usage + message.text_bytes, crew))
    for crew, queue in eligible.items():
        selection.held.extend(Held(m.message_seq, crew, limited_by) for m in queue[cursor[crew] :])
    return selection


def _used_this_month(snapshot: Snapshot, crew: int) -> int:
    return snapshot.ledger.used_bytes(crew, snapshot.month)


def plan(
    snapshot: Snapshot,
    profile: LinkProfile,
    settings: SchedulerSettings,
    now: float,
) -> Plan:
    """The plan for this moment (see the module docstring for the rules)."""
    selection = _select(snapshot, profile, settings)
    chosen = set(selection.send)
    pending = {m.message_seq: m for m in snapshot.pending}
    estimate = settings.session_overhead_bytes + selection.link_bytes
    last = snapshot.last_session_at
    gap_ends = now if last is None else last + settings.min_gap_s

    reason: SessionReason | None = None
    deadlines = [_deadline(pending[seq], settings) for seq in selection.send]
    if any(pending[seq].kind == MessageKind.SOS for seq in chosen):
        reason = SessionReason.SOS
    elif now >= gap_ends:
        reserved_due = any(
            pending[seq].kind in RESERVED_KINDS and _deadline(pending[seq], settings) <= now
            for seq in chosen
        )
        if reserved_due:
            reason = SessionReason.GRIEVANCE_DUE
        elif any(deadline <= now for deadline in deadlines):
            reason = SessionReason.LATENCY_DUE
        elif chosen and estimate >= fill_target_bytes(profile, settings):
            reason = SessionReason.SESSION_FULL
        elif last is None or now >= last + profile.idle_poll_s:
            reason = SessionReason.POLL
        elif snapshot.unacknowledged_batches and now >= last + settings.resend_after_s:
            reason = SessionReason.RESEND

    held = selection.held
    if reason is not None:
        # Plan again right after the session (it changes the snapshot).
        return Plan(
            open_session=True,
            reason=reason,
            send=tuple(selection.send),
            held=tuple(sorted(held, key=lambda h: h.message_seq)),
            timer=now,
            estimated_link_bytes=estimate,
        )
    waiting = [Held(seq, pending[seq].crew, HoldReason.WAITING) for seq in selection.send]
    return Plan(
        open_session=False,
        reason=None,
        send=(),
        held=tuple(sorted([*held, *waiting], key=lambda h: h.message_seq)),
        timer=_next_timer(snapshot, profile, settings, now, deadlines),
        estimated_link_bytes=0,
    )


def _next_timer(
    snapshot: Snapshot,
    profile: LinkProfile,
    settings: SchedulerSettings,
    now: float,
    deadlines: Sequence[float],
) -> float:
    """The next moment at which the plan may change without any new message."""
    last = snapshot.last_session_at
    base = now if last is None else last
    candidates = [base + profile.idle_poll_s, snapshot.next_month_start]
    candidates += deadlines
    if snapshot.unacknowledged_batches:
        candidates.append(base + settings.resend_after_s)
    gap_ends = now if last is None else last + settings.min_gap_s
    # Nothing but an SOS (which does not wait) can open a session before the gap ends,
    # and a timer that is not in the future would spin.
    return max(min(candidates), gap_ends, math.nextafter(now, math.inf))
