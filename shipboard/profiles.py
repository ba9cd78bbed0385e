"""Profiles: what a satellite link costs and how it behaves, one frozen value per link.

A :class:`LinkProfile` answers three questions for the scheduler, the link and the
benchmark: how many bytes will the provider *bill* for a session of N link bytes
(:meth:`LinkProfile.billed_bytes`), how long may a transfer of N bytes take
(:meth:`LinkProfile.transfer_timeout_s`), and how often an idle vessel should look for
news from the shore (:attr:`LinkProfile.idle_poll_s`).

Where each figure comes from (``D`` = the project's domain notes, DOMAIN.md; ``F`` = its
field notes, FIELD-NOTES.md, both kept outside this repository; ``A`` = our assumption, to
be replaced by a real tariff):

================== ================= =================== ================
figure             iridium-certus    fleetbroadband      vsat
================== ================= =================== ================
min billed/session 5 KB = 5,120 B D  none            A   none        A
billing increment  1 KB          A   1 KB            A   1 B         A
price per MB       $10           A   $18.78          D   $0.01       A
bandwidth          22 kbit/s     A   150 kbit/s      A   2 Mbit/s    A
one-way latency    0.5 s         A   0.7 s           A   0.05 s      A
idle poll          24 h          A   6 h             A   15 min      A
monthly cap        none              none                50 GB       A
================== ================= =================== ================

- "5 KB" is read as 5,120 bytes: the stricter reading (it bills more), as
  :mod:`protocol.quota` reads the rule's "1 MB" as 1 MiB. A price "per MB" is read
  per 1,000,000 bytes, the reading that makes each byte dearer.
- The Certus bandwidth and latency are those of ``vessel_relay.link_emulator.CERTUS_100``
  (22 kbit/s Certus 100; latency a rough assumption there too). FleetBroadband 150 and
  a Ku-band/LEO VSAT are typical class figures, not measurements. The Certus per-second
  floor for long sessions (DOMAIN) is not modelled: our sessions last seconds.
- The idle poll sets how late a family's reply or a case update can reach an idle vessel.
  On Certus each poll is a whole billed session, so it is 24 h: the grievance lane opens
  a session a day anyway (its blocks are due a day after their period ends), so an idle
  month is about 30 sessions (~150 KB billed) and a poll never adds one; FleetBroadband
  has no session minimum, so a poll costs only its ~1.1 KB of overhead and 6 h is cheap;
  a VSAT poll costs nothing that matters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "FLEETBROADBAND",
    "IRIDIUM_CERTUS",
    "PROFILES",
    "VSAT",
    "LinkProfile",
    "profile_named",
]

#: Bytes in a "MB" of a tariff (the reading that makes bytes dearer; an assumption).
TARIFF_MB_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """A satellite link's billing and behaviour (see the module docstring for sources)."""

    name: str
    #: Every session is billed at least this many bytes (0: no minimum).
    min_session_bytes: int
    #: Billed bytes are rounded up to a multiple of this.
    increment_bytes: int
    #: Tariff, US dollars per 1,000,000 billed bytes.
    price_per_mb_usd: float
    #: Link rate in each direction, bits per second.
    bandwidth_bps: int
    #: One-way latency of the link, seconds.
    latency_s: float
    #: How often an idle vessel opens a session to fetch what the shore queued, seconds.
    idle_poll_s: float
    #: A provider's monthly cap in bytes, if any (None: no cap).
    monthly_cap_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.min_session_bytes < 0:
            raise ValueError(f"{self.name}: min_session_bytes must not be negative")
        if self.increment_bytes < 1:
            raise ValueError(f"{self.name}: increment_bytes must be at least 1")
        if self.bandwidth_bps < 1 or self.latency_s < 0 or self.idle_poll_s <= 0:
            raise ValueError(f"{self.name}: bandwidth, latency and idle poll must be positive")
        if self.price_per_mb_usd < 0:
            raise ValueError(f"{self.name}: a price cannot be negative")

    def billed_bytes(self, session_link_bytes: int) -> int:
        """Bytes the provider bills for one session that carried ``session_link_bytes``.

        Rounded up to the billing increment, and never below the session minimum. A
        session that never happened (0 bytes) costs nothing.
        """
        if session_link_bytes < 0:
            raise ValueError(f"a session cannot carry {session_link_bytes} bytes")
        if session_link_bytes == 0:
            return 0
        rounded = math.ceil(session_link_bytes / self.increment_bytes) * self.increment_bytes
        return max(self.min_session_bytes, rounded)

    def cost_usd(self, billed_bytes: int) -> float:
        """What ``billed_bytes`` cost under this tariff, in US dollars."""
        return billed_bytes / TARIFF_MB_BYTES * self.price_per_mb_usd

    def transfer_s(self, link_bytes: int) -> float:
        """Time to push ``link_bytes`` through the link one way, latency included."""
        return self.latency_s + link_bytes * 8 / self.bandwidth_bps

    def transfer_timeout_s(self, link_bytes: int, *, floor_s: float = 10.0) -> float:
        """A timeout for sending ``link_bytes`` and hearing back (publish and PUBACK).

        Three times the round trip plus the transfer time, never under ``floor_s``: a
        2 KB batch at 2.4 kbit/s takes ~7 s, so aiomqtt's fixed 10 s default is too short
        on a slow link and too long to notice a dead one on a fast link.
        """
        estimate = 3 * (2 * self.latency_s) + 2 * link_bytes * 8 / self.bandwidth_bps
        return max(floor_s, estimate)


IRIDIUM_CERTUS = LinkProfile(
    name="iridium-certus",
    min_session_bytes=5 * 1024,
    increment_bytes=1024,
    price_per_mb_usd=10.0,
    bandwidth_bps=22_000,
    latency_s=0.5,
    idle_poll_s=24 * 3600.0,
)
FLEETBROADBAND = LinkProfile(
    name="fleetbroadband",
    min_session_bytes=0,
    increment_bytes=1024,
    price_per_mb_usd=18.78,
    bandwidth_bps=150_000,
    latency_s=0.7,
    idle_poll_s=6 * 3600.0,
)
VSAT = LinkProfile(
    name="vsat",
    min_session_bytes=0,
    increment_bytes=1,
    price_per_mb_usd=0.01,
    bandwidth_bps=2_000_000,
    latency_s=0.05,
    idle_poll_s=15 * 60.0,
    monthly_cap_bytes=50 * 1000**3,
)

#: The built-in profiles by name (``[link] profile = "..."`` in the vessel's config).
PROFILES: Mapping[str, LinkProfile] = MappingProxyType(
    {profile.name: profile for profile in (IRIDIUM_CERTUS, FLEETBROADBAND, VSAT)}
)


def profile_named(name: str) -> LinkProfile:
    """The built-in profile called ``name``; ``KeyError`` naming the known ones if none."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise KeyError(f"no link profile {name!r}; known profiles: {known}") from None
