"""The relay on a NATS cluster: ingest from a shared JetStream consumer, downlink over MQTT.

``[broker] kind = "nats"``. Vessels keep speaking MQTT 3.1.1, to any node's MQTT gateway.
The gateway turns ``vr/{vessel}/u`` into the subject ``vr.{vessel}.u``, which a JetStream
stream (``[broker] stream``, ``replicas`` copies, work-queue retention) captures. Every
relay worker pulls from ONE durable consumer (``[broker] durable``), so each batch goes to
one worker at a time; MQTT shared subscriptions (``$share/...``) are accepted by the
gateway but receive nothing (FIELD-NOTES), which is why ingest does not use them::

    nats_service
    ├── jetstream_ingest   connect (every node's URL, over TLS with tls:// ones; nats-py
    │                      reconnects on its own, each failure logged with its fix),
    │                      make the stream and the consumer if missing, then
    │                      fetch -> Ingestor.handle -> ack        (stored, duplicate, refused,
    │                                                             quarantined: all final)
    │                                   StoreError -> nak         (another try, later)
    │                                   a bug      -> term        (logged; the vessel resends)
    └── mqtt_downlink      an MQTT 3.1.1 client to one node's gateway (the next on failure),
                           Downlink.run publishing vr/{vessel}/d at QoS 1; the gateway keeps it
                           in the cluster for the vessel's persistent session on any node

Why nothing is lost. A batch is acknowledged to JetStream only after
:meth:`~shore.ingest.Ingestor.handle` returned, that is after its transaction committed (or
it was refused or quarantined for good). A worker that dies before its ack leaves the batch
pending; after ``ack_wait_s`` JetStream gives it to another worker. A batch stored twice
that way is recognised by its hash and counted as a repeat, never stored twice. And the
vessel's own guarantee holds regardless of the broker: it resends until a signed
``BatchAck`` covers the batch. The downlink marks a batch sent only after the gateway's
PUBACK; a node lost before that means a resend through the next node.

TLS. With ``tls://`` URLs the relay checks each node's certificate against ``[broker]
nats_ca_file`` (or the system's CAs) and the host in the URL, and sends its password only
inside TLS. nats-py itself decides on TLS from the node's greeting, which comes in clear: a
node (or a man in the middle) saying it needs no TLS would get the password in clear, and a
node asking for TLS on a nats:// URL would be answered with TLS trusting the system's CAs.
:class:`RelayNatsClient` refuses both (:class:`NatsTlsMismatch`) before anything is sent.

Logs carry subjects, sizes and reasons, never content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiomqtt
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from protocol.topics import NATS_UPLINKS, topic_of_subject
from shore.broker_login import BrokerLogin, broker_login, nats_tls_context
from shore.config import BrokerSection, RelayConfig
from shore.downlink import Downlink, DownlinkBell
from shore.ingest import Ingestor
from shore.metrics import RelayMetrics
from shore.store.errors import StoreError

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

log = logging.getLogger(__name__)

#: The relay's MQTT client for a configuration and login (``shore.relay.make_client``).
MakeClient = Callable[[RelayConfig, BrokerLogin], aiomqtt.Client]

#: How long a fetch waits on the server for batches before asking again.
FETCH_WAIT_S = 5.0
#: Stream retention: a batch nobody acknowledged for this long is dropped (the vessel
#: still has it and resends it).
STREAM_MAX_AGE_S = 7 * 24 * 3600.0
#: A batch whose store failed is offered again after this long.
STORE_RETRY_S = 5.0
#: How often a worker asks the consumer how many batches wait (``ingest_pending``).
PENDING_EVERY_S = 5.0
#: How long a node has to answer a connection (TCP, TLS, the greeting, the login).
CONNECT_TIMEOUT_S = 5
#: A connection failure that persists is logged again after this long (nats-py tries each
#: node about every second).
FAILURE_LOG_EVERY_S = 60.0


class NatsTlsMismatch(nats.errors.Error):
    """A node's client port and ``[broker] nats_urls`` disagree on TLS: the node requires
    TLS and its URL says nats://, or its URL says tls:// and the node offers no TLS (then
    nothing is sent to it, the password least of all). The message names the node and the
    fix."""


class RelayNatsClient(NatsClient):
    """nats-py's client, held to what ``nats_urls`` say about TLS (see the module), that
    logs why a connection failed in one line with the fix: once per reason, then every
    :data:`FAILURE_LOG_EVERY_S` while it persists."""

    def __init__(self, config: RelayConfig) -> None:
        super().__init__()
        self._config = config
        self._wants_tls = config.nats_tls
        #: when each failure was last logged (loop time)
        self._logged: dict[str, float] = {}

    def _node(self) -> str:
        server = self._current_server
        if server is None:
            return "a node"
        return f"{server.uri.scheme}://{server.uri.hostname}:{server.uri.port}"

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        # nats-py calls this with the node's greeting, before TLS and before CONNECT (which
        # carries the password), on the first connection and on every reconnection
        if initial_connection:
            node = self._node()
            if self._wants_tls and not info.get("tls_required"):
                raise NatsTlsMismatch(
                    f"{node} offers no TLS, so the relay sends it nothing (not its password): "
                    "give the node's client port a tls block (deploy/nats/nats-node.conf), or "
                    "check that nothing between the relay and the node strips TLS"
                )
            if not self._wants_tls and info.get("tls_required"):
                raise NatsTlsMismatch(
                    f"{node} requires TLS and [broker] nats_urls says nats://; write every "
                    "node as tls://HOST:PORT, with nats_ca_file for a private CA"
                )
        await super()._process_info(info, initial_connection)

    def failure(self, exc: Exception) -> str:
        """Why connecting failed, in a sentence that says what to do."""
        node, broker = self._node(), self._config.broker
        if isinstance(exc, ssl.SSLCertVerificationError):
            trusted = (
                f"[broker] nats_ca_file {self._config.path(broker.nats_ca_file)}"
                if broker.nats_ca_file
                else "the system's CAs ([broker] nats_ca_file is empty)"
            )
            return (
                f"{node}'s TLS certificate is refused ({exc.verify_message}): it must be "
                f"signed by the CA in {trusted} and name the host of its nats_urls entry"
            )
        if isinstance(exc, ssl.SSLError):
            return (
                f"TLS with {node} failed ({exc.reason or exc}); check that its client port "
                "has a tls block (deploy/nats/nats-node.conf)"
            )
        if isinstance(exc, nats.errors.AuthorizationError):
            return (
                f"{node} refused the relay's login ({self._config.mqtt_username or 'no user'}): "
                "check [mqtt] username and password_file against the nodes' users.conf"
            )
        if isinstance(exc, NatsTlsMismatch):
            return str(exc)
        # a failure to reach a node comes before nats-py names it its current server
        if isinstance(exc, TimeoutError):
            return f"a node did not answer within {CONNECT_TIMEOUT_S} s"
        if isinstance(exc, OSError):
            return f"a node cannot be reached ({exc})"
        return f"{node}: {type(exc).__name__}: {exc}"

    async def report(self, exc: Exception) -> None:
        """nats-py's error callback: log the failure (see the class)."""
        reason = self.failure(exc)
        now = asyncio.get_running_loop().time()
        last = self._logged.get(reason)
        if last is not None and now - last < FAILURE_LOG_EVERY_S:
            return
        if len(self._logged) >= 64:  # reasons seldom vary; keep the memory bounded anyway
            self._logged.clear()
        self._logged[reason] = now
        log.warning("%s cannot use the NATS cluster: %s", self._config.client_id, reason)


def stream_config(broker: BrokerSection) -> StreamConfig:
    """The uplink stream: every vessel's ``vr.*.u``, ``replicas`` copies, each batch kept
    until one worker acknowledges it (work queue)."""
    return StreamConfig(
        name=broker.stream,
        subjects=[NATS_UPLINKS],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=broker.replicas,
        max_age=STREAM_MAX_AGE_S,
    )


def consumer_config(broker: BrokerSection) -> ConsumerConfig:
    """The one durable pull consumer every relay worker shares."""
    return ConsumerConfig(
        durable_name=broker.durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=broker.ack_wait_s,
        max_deliver=-1,
        filter_subject=NATS_UPLINKS,
    )


async def ensure_stream(js: JetStreamContext, broker: BrokerSection) -> None:
    """Make the uplink stream unless it exists (several workers may race; JetStream accepts
    an identical definition twice). An existing stream keeps its definition: a warning says
    so when its replicas differ from ``[broker] replicas``."""
    try:
        info = await js.stream_info(broker.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(stream_config(broker))
        log.info("made stream %s on %s, %d replicas", broker.stream, NATS_UPLINKS, broker.replicas)
        return
    if info.config.num_replicas != broker.replicas:
        log.warning(
            "stream %s has %s replicas, [broker] replicas says %d; it is left as it is",
            broker.stream,
            info.config.num_replicas,
            broker.replicas,
        )


async def ingest_one(ingestor: Ingestor, message: Msg) -> None:
    """Ingest one batch from the stream and settle it with JetStream (see the module)."""
    topic = topic_of_subject(message.subject)
    try:
        await ingestor.handle(topic, message.data)
    except StoreError:
        ingestor.stats.store_errors += 1
        log.exception("store failed; batch on %s handed back to the stream", topic)
        await message.nak(delay=STORE_RETRY_S)
        return
    except Exception:
        ingestor.stats.handler_failures += 1
        log.exception(
            "ingest failed on a %d-byte payload on %s; it is dropped from the stream (the "
            "vessel resends it) and ingest goes on",
            len(message.data),
            topic,
        )
        await message.term()
        return
    await message.ack()


async def _fetch_or_stop(
    subscription: JetStreamContext.PullSubscription, batch: int, stopping: asyncio.Event
) -> list[Msg] | None:
    """Batches from the consumer (maybe none), or None once ``stopping`` is set."""
    fetch = asyncio.ensure_future(subscription.fetch(batch, timeout=FETCH_WAIT_S))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not fetch.done():
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
    if fetch.cancelled():
        return None
    try:
        return fetch.result()
    except nats.errors.TimeoutError:
        return []


async def _connect_or_stop(
    client: RelayNatsClient,
    config: RelayConfig,
    login: BrokerLogin,
    tls: ssl.SSLContext | None,
    stopping: asyncio.Event,
) -> bool:
    """Connect ``client`` to one of the nodes (nats-py keeps trying them all until one
    accepts, each failure logged by :meth:`RelayNatsClient.report`); False if ``stopping``
    was set first (the attempt is abandoned: a relay stops even when no node answers)."""
    options: dict[str, Any] = {} if tls is None else {"tls": tls}
    connecting = asyncio.ensure_future(
        client.connect(
            servers=list(config.broker.nats_urls),
            name=config.client_id,
            user=login.username,
            password=login.password,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=CONNECT_TIMEOUT_S,
            error_cb=client.report,
            **options,
        )
    )
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({connecting, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
    if connecting.cancelled():
        return False
    connecting.result()  # a failure nats-py gave up on raises here
    return True


async def jetstream_ingest(
    config: RelayConfig,
    ingestor: Ingestor,
    stopping: asyncio.Event,
    ready: asyncio.Event,
    login: BrokerLogin,
    metrics: RelayMetrics | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Pull batches from the shared durable consumer and ingest them until ``stopping``;
    reconnect with capped, jittered backoff when the cluster cannot be reached. ``tls``:
    :func:`~shore.broker_login.nats_tls_context` (required with tls:// ``nats_urls``)."""
    if config.nats_tls and tls is None:
        raise ValueError("tls:// nats_urls need the context of nats_tls_context(config)")
    broker, backoff = config.broker, 1.0
    while not stopping.is_set():
        client = RelayNatsClient(config)
        try:
            if not await _connect_or_stop(client, config, login, tls, stopping):
                return
            js = client.jetstream()
            await ensure_stream(js, broker)
            subscription = await js.pull_subscribe(
                NATS_UPLINKS, durable=broker.durable, stream=broker.stream,
                config=consumer_config(broker),
            )  # fmt: skip
            log.info(
                "%s pulls %s from stream %s (consumer %s) at %s",
                config.client_id,
                NATS_UPLINKS,
                broker.stream,
                broker.durable,
                ", ".join(broker.nats_urls),
            )
            backoff = 1.0
            ready.set()
            if metrics is not None:
                metrics.broker_up()
            asked_at = -PENDING_EVERY_S
            while (
                batch := await _fetch_or_stop(subscription, broker.fetch_batch, stopping)
            ) is not None:
                for message in batch:
                    await ingest_one(ingestor, message)
                now = asyncio.get_running_loop().time()
                if metrics is not None and now - asked_at >= PENDING_EVERY_S:
                    asked_at = now
                    info = await subscription.consumer_info()
                    waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
                    metrics.observe_ingest_pending(waiting)
            return
        except (nats.errors.Error, OSError) as exc:
            if metrics is not None:
                metrics.broker_down()
            log.warning(
                "NATS cluster not reachable (%s: %s); trying again in %.0f s",
                type(exc).__name__,
                exc,
                backoff,
            )
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await client.close()
        await _pause(stopping, backoff * (0.5 + random.random() / 2))
        backoff = min(backoff * 2, config.mqtt.reconnect_max_s)


def downlink_config(config: RelayConfig, url: str | None = None) -> RelayConfig:
    """``config`` with ``[mqtt]`` pointed at one node's MQTT gateway (``url``, else the first
    of ``[broker] mqtt_urls``), MQTT 3.1.1: the only version NATS's gateway speaks."""
    chosen = config.broker.mqtt_urls[0] if url is None else url
    return replace(config, mqtt=replace(config.mqtt, url=chosen, protocol="3.1.1"))


async def mqtt_downlink(
    config: RelayConfig,
    downlink: Downlink,
    stopping: asyncio.Event,
    doorbell: DownlinkBell,
    ready: asyncio.Event,
    make_client: MakeClient,
    metrics: RelayMetrics | None = None,
) -> None:
    """Publish the downlink through one node's MQTT gateway; on failure move to the next
    node. Worker ``n`` starts at node ``n`` so the workers spread over the cluster."""
    urls = config.broker.mqtt_urls
    index = config.relay.worker - 1
    logins: dict[str, BrokerLogin] = {}
    backoff = 1.0
    while not stopping.is_set():
        url = urls[index % len(urls)]
        node = downlink_config(config, url)
        login = logins.setdefault(url, broker_login(node))
        try:
            async with make_client(node, login) as client:
                log.info("%s publishes the downlink at %s", config.client_id, node.mqtt_broker)
                backoff = 1.0
                ready.set()

                async def publish(to: str, data: bytes, client: aiomqtt.Client = client) -> None:
                    await client.publish(to, data, qos=1, timeout=config.mqtt.publish_timeout_s)
                    if metrics is not None:
                        metrics.observe_downlink(int(to.split("/")[1]), len(data))

                await downlink.run(publish, stopping, doorbell)
                return
        except aiomqtt.MqttError as exc:
            log.warning(
                "downlink to %s lost (%s); trying the next node in %.0f s",
                node.mqtt_broker,
                exc,
                backoff,
            )
        index += 1
        await _pause(stopping, backoff * (0.5 + random.random() / 2))
        backoff = min(backoff * 2, config.mqtt.reconnect_max_s)


async def nats_service(
    config: RelayConfig,
    ingestor: Ingestor,
    downlink: Downlink,
    stopping: asyncio.Event,
    doorbell: DownlinkBell,
    make_client: MakeClient,
    on_subscribed: Callable[[], None] | None = None,
    metrics: RelayMetrics | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Ingest from the cluster and publish the downlink through it until ``stopping``;
    ``on_subscribed`` is called once both the consumer and a downlink connection are up.
    ``tls``: the NATS connection's context, if the caller built it already (else built
    here by :func:`~shore.broker_login.nats_tls_context`)."""
    login = broker_login(downlink_config(config))
    if tls is None and config.nats_tls:
        tls = nats_tls_context(config, login)
    pulling, publishing = asyncio.Event(), asyncio.Event()

    async def announce() -> None:
        await pulling.wait()
        await publishing.wait()
        if on_subscribed is not None:
            on_subscribed()

    async with asyncio.TaskGroup() as group:
        announcing = group.create_task(announce())
        group.create_task(
            jetstream_ingest(config, ingestor, stopping, pulling, login, metrics, tls)
        )
        group.create_task(
            mqtt_downlink(config, downlink, stopping, doorbell, publishing, make_client, metrics)
        )
        await stopping.wait()
        announcing.cancel()


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
