"""Transport: the seam between a link session and the satellite link that carries it.

A session (:func:`shipboard.link.run_session`) needs four things of a link, and nothing
else (wl2k-go's ``transport`` interfaces; httpx's one-method transport)::

    await link.connect()              connected, subscribed to the vessel's downlink topic
    await link.publish(data, timeout_s)   one uplink batch, returns once the broker took it
    await link.receive()              the next downlink payload (waits for one)
    await link.close()                disconnect (no idle connection, no pings)

Every one of them raises :class:`LinkDown` when the link cannot be had or breaks off
(the satellite dropped, the broker is gone, a timeout): nothing is lost then, since the
outbox keeps every batch until the shore acknowledges it. :class:`LinkClosed` is the
other case (trio's rule): *we* closed the link and then used it, a bug.

Implementations: :class:`shipboard.mqtt_link.MqttLink` (aiomqtt, the real one) and the
test kit's fake link (``tests/kit/fakelink.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from protocol.topics import downlink_topic, uplink_topic
from shipboard.config import ShipConfig
from shipboard.profiles import LinkProfile, profile_named

__all__ = [
    "Link",
    "LinkClosed",
    "LinkDown",
    "LinkError",
    "LinkSettings",
    "downlink_topic",
    "uplink_topic",
]


class LinkError(Exception):
    """Base of the link's errors."""


class LinkDown(LinkError):
    """The session could not start or broke off (satellite dropped, broker gone, timeout).

    Nothing is lost: every batch stays in the outbox until the shore acknowledges it.
    """


class LinkClosed(LinkError):
    """The link was used after we closed it (a bug in the caller)."""


class Link(Protocol):
    """What a session needs of a satellite link (see the module docstring)."""

    async def connect(self) -> None:
        """Connect and subscribe to the downlink; raises :class:`LinkDown`."""
        ...

    async def publish(self, data: bytes, timeout_s: float) -> None:
        """Publish one uplink batch; returns once the broker took it (not the shore's
        acknowledgement). Raises :class:`LinkDown` if the link breaks or ``timeout_s``
        passes first."""
        ...

    async def receive(self) -> bytes:
        """The next downlink payload, waiting for one; raises :class:`LinkDown` when the
        connection is lost."""
        ...

    def receive_nowait(self) -> bytes | None:
        """A downlink payload that has already arrived, or None."""
        ...

    async def close(self) -> None:
        """Disconnect; safe to call more than once and after a failure."""
        ...

    @property
    def tls_resumed(self) -> bool | None:
        """Whether the connection's TLS handshake was resumed (None: no TLS, or unknown)."""
        ...


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """How to reach the shore's broker and how long to wait for what."""

    vessel_id: int
    host: str
    port: int
    profile: LinkProfile
    mqtt_version: str = "5"  # or "3.1.1"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive_s: int = 600
    #: How long the broker keeps the vessel's subscription and queued downlink while it is
    #: away (MQTT 5 ``SessionExpiryInterval``; 3.1.1's kept state never expires).
    broker_state_expiry_s: int = 30 * 86_400
    #: After subscribing, the downlink is taken as drained once nothing came for this long
    #: (None: two round trips plus half a second, from the profile).
    downlink_quiet_s: float | None = None
    #: Longest wait for the shore's BatchAck after publishing (and longest downlink drain).
    ack_wait_s: float = 30.0
    #: Most messages in one uplink batch (halved when a batch would be over the limit).
    max_batch_messages: int = 500
    #: No MQTT wait is shorter than this, however fast the link (aiomqtt's default is 10 s).
    min_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.mqtt_version not in ("5", "3.1.1"):
            raise ValueError(f'mqtt_version must be "5" or "3.1.1", not {self.mqtt_version!r}')
        if not 0 < self.keepalive_s <= 65_535:
            raise ValueError("keepalive_s must be 1 to 65535 (an MQTT limit)")

    @classmethod
    def from_config(cls, config: ShipConfig, **overrides: Any) -> LinkSettings:
        """Settings from the vessel's config (the broker URL, MQTT version, profile)."""
        settings = cls(
            vessel_id=config.vessel.vessel_id,
            host=config.shore.host,
            port=config.shore.port,
            profile=profile_named(config.link.profile),
            mqtt_version=config.shore.mqtt_version,
            username=config.shore.username,
            password=config.shore.password,
        )
        return replace(settings, **overrides) if overrides else settings

    @property
    def quiet_s(self) -> float:
        """How long a silence ends the downlink drain."""
        if self.downlink_quiet_s is not None:
            return self.downlink_quiet_s
        return 4 * self.profile.latency_s + 0.5

    @property
    def command_timeout_s(self) -> float:
        """Timeout for CONNECT, SUBSCRIBE and DISCONNECT on this link."""
        return self.profile.transfer_timeout_s(512, floor_s=self.min_timeout_s)

    def publish_timeout_s(self, payload_bytes: int) -> float:
        """Timeout for one QoS 1 publish of ``payload_bytes`` (until its PUBACK)."""
        return self.profile.transfer_timeout_s(payload_bytes + 64, floor_s=self.min_timeout_s)
