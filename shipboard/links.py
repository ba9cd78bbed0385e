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
prices tie. With the main link paused or down past ``[sbd] after_down_minutes``, SOS,
reports and lane blocks take the fallback; family messages wait for the main link.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
    "SbdCarrier",
    "choose",
    "interface_up",
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


def credits(payload_bytes: int) -> int:
    """SBD credits for a payload sent as fragments of 340 bytes."""
    terms = LinkTerms(IRIDIUM_SBD, SBD_MO_BYTES, True, ALL_KINDS)
    return math.ceil(terms.billed_bytes(payload_bytes) / SBD_CREDIT_BYTES)
