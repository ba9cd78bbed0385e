"""The relay supervisor: one process, one task group, every service of the shore relay.

::

    run_relay(config, stopping)
      open the store (SQLite or PostgreSQL)
      TaskGroup
      ├── MQTT service (reconnect loop, capped jittered backoff)
      │     one persistent session ``relay-{n}``, subscribed QoS 1 to the uplink topics
      │     TaskGroup: Ingestor.run (uplink)  +  Downlink.run (publish to vr/{vessel}/d)
      ├── delivery workers (shore.delivery), when [delivery] enabled
      └── family reply SMTP server (shore.replies), when [replies] enabled
      close the store

Stopping: the caller sets ``stopping`` (``vessel-relay shore run`` does on SIGTERM or
SIGINT). Each service finishes what it is doing (the batch being committed, the delivery
being sent) and returns; the caller bounds that with a grace period, then cancels.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.languages import Language
from protocol.signing import SigningKey
from shore.config import RelayConfig
from shore.delivery import DeliveryConfig, DeliveryWorker
from shore.downlink import Downlink, DownlinkConfig
from shore.ingest import Ingestor
from shore.mail import MailIdentity, MailSender, ReplyAddressBook, ReplyRoute, SmtpConfig
from shore.replies import ContactInfo, ReplyServer, ReplyServerConfig
from shore.store_postgres import PostgresStore
from shore.store_sql import SqlStore
from shore.store_sqlite import SqliteStore
from vessel_relay.codebooks import default_codebook
from vessel_relay.keyfiles import read_secret

log = logging.getLogger(__name__)

SHARED_UPLINK = "$share/relay/vr/+/u"
UPLINK = "vr/+/u"


async def open_store(config: RelayConfig) -> SqlStore:
    """The store the configuration names."""
    if config.store.backend == "postgres":
        return await PostgresStore.open(config.store.dsn)
    return await SqliteStore.open(config.path(config.store.path))


def make_client(config: RelayConfig) -> aiomqtt.Client:
    """The relay worker's MQTT client: fixed id, persistent session (FIELD-NOTES)."""
    host, port = config.mqtt_host_port
    mqtt = config.mqtt
    # Credentials may ride in the URL (mqtt://relay@host:1883): amqtt queues offline
    # messages only for clients with a user name (FIELD-NOTES).
    parts = urlsplit(mqtt.url)
    if mqtt.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = mqtt.session_expiry_s
        return aiomqtt.Client(
            host,
            port,
            identifier=config.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=mqtt.keepalive_s,
            timeout=mqtt.publish_timeout_s,
            username=parts.username,
            password=parts.password,
        )
    return aiomqtt.Client(
        host,
        port,
        identifier=config.client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=False,
        keepalive=mqtt.keepalive_s,
        timeout=mqtt.publish_timeout_s,
        username=parts.username,
        password=parts.password,
    )


def uplink_subscription(config: RelayConfig) -> str:
    """Shared subscription with MQTT 5 (several workers share the load); plain with 3.1.1."""
    return SHARED_UPLINK if config.mqtt.protocol == "5" else UPLINK


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        pass


async def mqtt_service(
    config: RelayConfig,
    ingestor: Ingestor,
    downlink: Downlink,
    stopping: asyncio.Event,
    doorbell: asyncio.Event,
    on_subscribed: Callable[[], None] | None = None,
) -> None:
    """Connect, subscribe, ingest and publish; reconnect with capped, jittered backoff."""
    backoff = 1.0
    topic = uplink_subscription(config)
    while not stopping.is_set():
        client = make_client(config)
        try:
            async with client:
                await client.subscribe(topic, qos=1)
                log.info("%s subscribed to %s at %s", config.client_id, topic, config.mqtt.url)
                backoff = 1.0
                if on_subscribed is not None:
                    on_subscribed()

                async def publish(to: str, data: bytes, client: aiomqtt.Client = client) -> None:
                    await client.publish(to, data, qos=1, timeout=config.mqtt.publish_timeout_s)

                async with asyncio.TaskGroup() as group:
                    group.create_task(ingestor.run(client, stopping))
                    group.create_task(downlink.run(publish, stopping, doorbell))
        except* aiomqtt.MqttError as errors:
            log.warning(
                "broker link lost (%s); reconnecting in %.0f s", errors.exceptions[0], backoff
            )
        if stopping.is_set():
            return
        await _pause(stopping, backoff * (0.5 + random.random() / 2))
        backoff = min(backoff * 2, config.mqtt.reconnect_max_s)


def _delivery_services(
    config: RelayConfig, store: SqlStore
) -> tuple[list[DeliveryWorker], ReplyServer | None]:
    section = config.delivery
    if not (section.enabled or config.replies.enabled):
        return [], None
    identity = MailIdentity(section.relay_domain, section.from_address)
    book = ReplyAddressBook([read_secret(config.path(section.reply_key))], section.reply_domain)
    mail = MailSender(SmtpConfig(host=section.smtp_host, port=section.smtp_port))
    workers = []
    if section.enabled:
        workers = [
            DeliveryWorker(
                store,
                mail,
                identity,
                book,
                config=DeliveryConfig(worker=f"{config.client_id}-d{n}"),
            )
            for n in range(1, section.workers + 1)
        ]
    server = None
    if config.replies.enabled:

        async def lookup(route: ReplyRoute) -> ContactInfo | None:
            found = await store.contact(route.vessel_id, route.crew, route.contact)
            return None if found is None else ContactInfo(found.lang)

        async def on_reply(
            vessel_id: int,
            crew: int,
            contact: int,
            text: str,
            lang: Language,
            truncated: bool,
            now: float,
        ) -> None:
            await store.queue_reply(vessel_id, crew, contact, text, lang, truncated, now)

        server = ReplyServer(
            ReplyServerConfig(host=config.replies.host, port=config.replies.port),
            book,
            lookup,
            on_reply,
            identity,
            notices=mail,
        )
    return workers, server


async def run_relay(
    config: RelayConfig,
    stopping: asyncio.Event,
    on_subscribed: Callable[[], None] | None = None,
) -> None:
    """Run every service of the relay until ``stopping`` is set (see the module docstring)."""
    shore_key = SigningKey(read_secret(config.path(config.relay.shore_key)))
    codebook = default_codebook()
    store = await open_store(config)
    try:
        downlink_bell = asyncio.Event()
        delivery_bell = asyncio.Event()
        ingestor = Ingestor(store, codebook, doorbells=(downlink_bell, delivery_bell))
        down = config.downlink
        downlink = Downlink(
            store,
            shore_key,
            codebook,
            DownlinkConfig(down.tick_s, down.resend_after_s, down.resend_max_s, down.max_items),
        )
        workers, reply_server = _delivery_services(config, store)
        if reply_server is not None:
            await reply_server.start()
        async with asyncio.TaskGroup() as group:
            group.create_task(
                mqtt_service(config, ingestor, downlink, stopping, downlink_bell, on_subscribed)
            )
            for worker in workers:
                group.create_task(worker.run(stopping, delivery_bell))
            if reply_server is not None:
                group.create_task(reply_server.run(stopping))
    finally:
        await store.close()
