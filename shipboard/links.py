"""Links: the ways out a vessel has, as the scheduler sees them, and the choice between them.

A vessel may have more than one way out: the broadband terminal that carries MQTT
(Certus, FleetBroadband, VSAT), an Iridium SBD modem, 4G or Wi-Fi in port. The scheduler
does not care how bytes move (that is :class:`shipboard.transport.Link`); it needs each
way's **terms** (:class:`LinkTerms`: billing minimum, increment and price, latency, the
largest message, and which kinds of message it may carry) and its **availability** now
(:class:`Availability`). A :class:`Carrier` gives both, and opens a ``Link`` for a
session: :class:`MqttCarrier` (the main link, which the owner may pause) and
:class:`SbdCarrier` (the fallback for SOS and the grievance lane, which the owner cannot
switch off: ``shipboard.config`` refuses it).

:func:`choose` is pure: given the carriers' terms and availability and what is to be
sent, the cheapest available carrier that may carry all of it, the main link first when
prices tie. :func:`route` is the link loop's one rule built on it: everything on the
cheapest way (the port link in port), SOS, reports and lane blocks on the fallback while
the main link is paused or down past ``[sbd] after_down_minutes``; family messages wait
for the main link or the port link unless the owner set ``[sbd] family_after_minutes``,
and then go over SBD only while the main link is down, not while it is paused.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from protocol.fragments import (
    FRAGMENT_HEADER_BYTES,
    SBD_MO_BYTES,
    WHOLE_HEADER_BYTES,
    Reassembler,
)
from shipboard.mqtt_link import MqttLink
from shipboard.profiles import LinkProfile
from shipboard.sbd_link import SBD_CREDIT_BYTES, SbdLink, SbdStatistics
from shipboard.sbd_modem import SbdModem
from shipboard.scheduler import PendingLike
from shipboard.states import RESERVED_KINDS, MessageKind
from shipboard.transport import Link, LinkSettings

__all__ = [
    "IRIDIUM_SBD",
    "PORT_4G",
    "Availability",
    "Carrier",
    "LinkTerms",
    "MqttCarrier",
    "PortCarrier",
    "Route",
    "SbdCarrier",
    "choose",
    "family_terms",
    "interface_up",
    "route",
]


class Availability(StrEnum):
    """Whether a way out can be used now."""

    UP = "up"
    #: The owner paused it (``[link] paused``); the SBD fallback cannot be paused.
    PAUSED = "paused"
    #: Sessions on it kept failing.
    DOWN = "down"


#: Iridium SBD's tariff, as the scheduler prices it: 50-byte credits, one at least per
#: message, about $0.16 a credit (DOMAIN: ~16 cents; an assumption until a real tariff),
#: i.e. $3,200 per 1,000,000 bytes; a session takes ~20 s (latency), 340 bytes a message.
IRIDIUM_SBD = LinkProfile(
    name="iridium-sbd",
    min_session_bytes=SBD_CREDIT_BYTES,
    increment_bytes=SBD_CREDIT_BYTES,
    price_per_mb_usd=3200.0,
    bandwidth_bps=340 * 8 // 20,
    latency_s=20.0,
    idle_poll_s=24 * 3600.0,
)


#: A cheap link in port (4G or the harbour's Wi-Fi), as the scheduler prices it: no session
#: minimum, a price under $1/MB (so anything waiting goes at once: ``scheduler.
#: fill_target_bytes``), polls every 5 minutes while in reach. Figures are assumptions.
PORT_4G = LinkProfile(
    name="port-4g",
    min_session_bytes=0,
    increment_bytes=1,
    price_per_mb_usd=0.5,
    bandwidth_bps=5_000_000,
    latency_s=0.05,
    idle_poll_s=300.0,
)


@dataclass(frozen=True, slots=True)
class LinkTerms:
    """What a way out costs and carries (the scheduler's view)."""

    profile: LinkProfile
    #: Largest message the link takes (None: a stream, any size).
    mtu_bytes: int | None
    #: Billing per message (SBD) rather than per session (IP links).
    per_message: bool
    #: Message kinds this way may carry.
    carries: frozenset[str]

    @property
    def name(self) -> str:
        """The profile's name."""
        return self.profile.name

    @property
    def latency_s(self) -> float:
        """One-way latency, seconds."""
        return self.profile.latency_s

    def billed_bytes(self, payload_bytes: int, session_overhead_bytes: int = 0) -> int:
        """Billed bytes to carry one payload of ``payload_bytes`` in a session.

        Per message: the payload in fragments of ``mtu_bytes``, each rounded up to whole
        credits. Per session: the profile's rule over payload and overhead.
        """
        if not self.per_message or self.mtu_bytes is None:
            return self.profile.billed_bytes(payload_bytes + session_overhead_bytes)
        if payload_bytes <= 0:
            return 0
        if payload_bytes + WHOLE_HEADER_BYTES <= self.mtu_bytes:
            return self.profile.billed_bytes(payload_bytes + WHOLE_HEADER_BYTES)
        room = self.mtu_bytes - FRAGMENT_HEADER_BYTES
        full, last = divmod(payload_bytes, room)
        billed = full * self.profile.billed_bytes(self.mtu_bytes)
        if last:
            billed += self.profile.billed_bytes(last + FRAGMENT_HEADER_BYTES)
        return billed

    def cost_usd(self, payload_bytes: int, session_overhead_bytes: int = 0) -> float:
        """What carrying the payload costs, in US dollars."""
        return self.profile.cost_usd(self.billed_bytes(payload_bytes, session_overhead_bytes))


class Carrier(Protocol):
    """A way out: its terms, whether it is available, and a link for one session."""

    @property
    def terms(self) -> LinkTerms: ...

    def availability(self, now: float) -> Availability: ...

    def open(self) -> Link: ...


ALL_KINDS = frozenset(kind.value for kind in MessageKind)


class MqttCarrier:
    """The main link (MQTT over the broadband terminal), paused when ``paused()`` says so
    and down after ``after_down_s`` of failed sessions."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        tls_context: ssl.SSLContext | None = None,
        paused: Callable[[], bool] = lambda: False,
        after_down_s: float = 15 * 60.0,
    ) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self._paused = paused
        self.after_down_s = after_down_s
        self._failing_since: float | None = None
        self._terms = LinkTerms(settings.profile, None, False, ALL_KINDS)

    @property
    def terms(self) -> LinkTerms:
        return self._terms

    def failed(self, now: float) -> None:
        """A session on this link failed at ``now``."""
        if self._failing_since is None:
            self._failing_since = now

    def succeeded(self) -> None:
        """A session on this link worked."""
        self._failing_since = None

    def availability(self, now: float) -> Availability:
        if self._paused():
            return Availability.PAUSED
        since = self._failing_since
        if since is not None and now - since >= self.after_down_s:
            return Availability.DOWN
        return Availability.UP

    def open(self) -> Link:
        return MqttLink(self.settings, self.tls_context)


class SbdCarrier:
    """The Iridium SBD fallback: carries SOS, reports and lane blocks only; never paused.

    ``modem``: makes the driver for one session (a device path in production). One
    reassembler and one statistics object live as long as the carrier.
    """

    def __init__(
        self,
        modem: Callable[[], SbdModem],
        *,
        mailbox_poll_s: float = 30.0,
        statistics: SbdStatistics | None = None,
    ) -> None:
        self._modem = modem
        self.mailbox_poll_s = mailbox_poll_s
        self.reassembler = Reassembler()
        self.statistics = statistics if statistics is not None else SbdStatistics()
        self._terms = LinkTerms(
            IRIDIUM_SBD, SBD_MO_BYTES, True, frozenset(kind.value for kind in RESERVED_KINDS)
        )

    @property
    def terms(self) -> LinkTerms:
        return self._terms

    def availability(self, now: float) -> Availability:
        return Availability.UP  # an SBD session that fails says so itself (LinkDown)

    def open(self) -> SbdLink:
        return SbdLink(
            self._modem(),
            self.reassembler,
            statistics=self.statistics,
            mailbox_poll_s=self.mailbox_poll_s,
        )


class PortCarrier:
    """A cheap link in port: MQTT to the same broker over 4G or Wi-Fi, usable while
    ``in_reach()`` says so (the agent's probe of that route). While it is, the link loop
    plans under its tariff, so everything waiting goes at once and the downlink is drained
    at every session."""

    def __init__(
        self,
        settings: LinkSettings,
        in_reach: Callable[[], bool],
        *,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self._in_reach = in_reach
        self._terms = LinkTerms(settings.profile, None, False, ALL_KINDS)

    @property
    def terms(self) -> LinkTerms:
        return self._terms

    def availability(self, now: float) -> Availability:
        return Availability.UP if self._in_reach() else Availability.DOWN

    def open(self) -> Link:
        return MqttLink(self.settings, self.tls_context)


def interface_up(name: str, sysfs: Path = Path("/sys/class/net")) -> bool:
    """Whether network interface ``name`` is up (Linux ``operstate``: "up", or "unknown"
    as point-to-point 4G links report it). Costs no byte on any link; the route the
    broker's connection then takes is the system's (the port link's route must be the
    preferred one while it is up)."""
    try:
        state = (sysfs / name / "operstate").read_text(encoding="ascii").strip()
    except OSError:
        return False
    return state in ("up", "unknown")


def choose(
    carriers: Sequence[tuple[LinkTerms, Availability]],
    kinds: Iterable[str],
    payload_bytes: int,
    session_overhead_bytes: int = 0,
) -> int | None:
    """Index of the cheapest available carrier that may carry every kind in ``kinds``
    (None: none can). Ties go to the earlier carrier (list the main link first)."""
    wanted = frozenset(kinds)
    best: tuple[float, int] | None = None
    for index, (terms, availability) in enumerate(carriers):
        if availability is not Availability.UP or not wanted <= terms.carries:
            continue
        overhead = 0 if terms.per_message else session_overhead_bytes
        cost = terms.cost_usd(max(payload_bytes, 1), overhead)
        if best is None or cost < best[0] - 1e-12:
            best = (cost, index)
    return None if best is None else best[1]


@dataclass(frozen=True, slots=True)
class Route:
    """Where the link loop sends what waits now (:func:`route`)."""

    #: The cheap link in port is the cheapest way for everything: the session opens on it.
    port: bool
    #: The SBD fallback carries the reserved lane now (SOS, reports, lane blocks).
    fallback: bool
    #: Family messages that go over the fallback too (waited past ``[sbd]
    #: family_after_minutes`` while the main link is down), oldest first.
    family_on_fallback: tuple[int, ...] = ()


def family_terms(sbd: LinkTerms) -> LinkTerms:
    """The SBD fallback's terms once it may carry family messages too."""
    return replace(sbd, carries=sbd.carries | {MessageKind.MESSAGE.value})


def route(
    *,
    main: tuple[LinkTerms, Availability],
    fallback: LinkTerms | None,
    port: tuple[LinkTerms, Availability] | None,
    pending: Sequence[PendingLike],
    now: float,
    main_failing: bool,
    family_after_s: float | None,
    session_overhead_bytes: int,
) -> Route:
    """The link loop's one rule for which way out to use now, made of :func:`choose`.

    - **Everything** that waits (poll and downlink included) goes on the cheapest
      available carrier that may carry all of it: in port, the port link unless the main
      link is cheaper still; else the main link while it is up.
    - **The reserved lane** (SOS, reports, lane blocks) takes SBD when it is the cheapest
      available way for them: while the main link is paused or down, or while its last
      session failed and an SOS waits (``main_failing``: the SOS does not wait for the
      main link to count as down). The owner cannot switch this off.
    - **Family messages** wait for the main link or the port link, unless the owner set
      ``[sbd] family_after_minutes`` (``family_after_s``): then those that have waited
      that long go over SBD while the main link is **down**, never while the owner paused
      it (a pause is the owner's word that family traffic waits), and only when SBD is the
      cheapest available way for them. They are billed against the owner's budget.
    """
    main_terms, main_state = main
    sos_waiting = any(m.kind == MessageKind.SOS for m in pending)
    effective = (
        Availability.DOWN
        if main_failing and sos_waiting and main_state is Availability.UP
        else main_state
    )
    carriers: list[tuple[LinkTerms, Availability]] = [(main_terms, effective)]
    sbd_index = port_index = -1
    if fallback is not None:
        sbd_index = len(carriers)
        carriers.append((fallback, Availability.UP))
    if port is not None:
        port_index = len(carriers)
        carriers.append(port)
    everything = choose(
        carriers,
        {m.kind for m in pending},
        sum(m.payload_bytes for m in pending),
        session_overhead_bytes,
    )
    if port is not None and everything == port_index:
        return Route(port=True, fallback=False)
    if fallback is None:
        return Route(port=False, fallback=False)
    reserved = [m for m in pending if m.kind in RESERVED_KINDS]
    on_fallback = (
        choose(
            carriers,
            {m.kind for m in reserved},
            sum(m.payload_bytes for m in reserved),
            session_overhead_bytes,
        )
        == sbd_index
    )
    family: tuple[int, ...] = ()
    if family_after_s is not None and main_state is Availability.DOWN:
        aged = sorted(
            (
                m
                for m in pending
                if m.kind == MessageKind.MESSAGE and now - m.accepted_at >= family_after_s
            ),
            key=lambda m: (m.accepted_at, m.message_seq),
        )
        widened = list(carriers)
        widened[sbd_index] = (family_terms(fallback), Availability.UP)
        if aged and (
            choose(
                widened,
                {MessageKind.MESSAGE.value},
                sum(m.payload_bytes for m in aged),
                session_overhead_bytes,
            )
            == sbd_index
        ):
            family = tuple(m.message_seq for m in aged)
    return Route(port=False, fallback=on_fallback or bool(family), family_on_fallback=family)


def credits(payload_bytes: int) -> int:
    """SBD credits for a payload sent as fragments of 340 bytes."""
    terms = LinkTerms(IRIDIUM_SBD, SBD_MO_BYTES, True, ALL_KINDS)
    return math.ceil(terms.billed_bytes(payload_bytes) / SBD_CREDIT_BYTES)
