"""The relay supervisor: one process, one task group, every service of the shore relay.

::

    run_relay(config, stopping)
      open the store (SQLite or PostgreSQL)
      TaskGroup
      ├── MQTT service (reconnect loop, capped jittered backoff)
      │     one persistent session ``relay-{n}``, subscribed QoS 1 to the uplink topics
      │     TaskGroup: Ingestor.run (uplink)  +  Downlink.run (publish to vr/{vessel}/d)
      │   or, with [broker] kind = "nats", the NATS service (shore.nats_broker): uplink
      │     pulled from a JetStream consumer shared by every worker, downlink over MQTT
      ├── delivery workers (shore.delivery), when [delivery] enabled (SMS by [sms])
      ├── SOS alerter (shore.alerts), when [alerts] enabled
      ├── daily signed tree head of the transparency log (shore.transparency), idempotent
      ├── retention (shore.retention): family messages past their time to live fail,
      │     delivered content purged after [retention] content_days, erased from the files
      ├── family reply SMTP server (shore.replies), when [replies] enabled
      ├── SMS reply webhook (shore.replies.SmsWebhook), when [sms] webhook = true; the
      │     same public app plays voice messages sent to SMS contacts (shore.voice_links)
      └── union API (shore.union_api, uvicorn), when [union_api] enabled
      close the store

Stopping: the caller sets ``stopping`` (``vessel-relay shore run`` does on SIGTERM or
SIGINT). Each service finishes what it is doing (the batch being committed, the delivery
being sent) and returns; the caller bounds that with a grace period, then cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.codebooks import default_codebook
from common.keyfiles import KeyFileError, read_secret
from common.serving import AsgiServer
from protocol.envelopes import Channel
from protocol.fragments import PayloadKind
from protocol.phrases import phrase
from protocol.signing import SigningKey
from protocol.topics import SHARED_UPLINKS, UPLINKS, uplink_topic
from protocol.voice import VoiceMode
from shore.alerts import AlertConfig, SosAlerter
from shore.broker_login import (
    BrokerLogin,
    broker_login,
    nats_tls_context,
    unusable_ca,
    verifying_context,
)
from shore.config import ConfigError, RelayConfig
from shore.decoding import BatchDecoder, InlineDecoder, ProcessDecoder, started_or_in_place
from shore.delivery import DeliveryConfig, DeliveryWorker
from shore.downlink import Downlink, DownlinkBell, DownlinkConfig
from shore.ingest import Ingestor
from shore.mail import MailIdentity, MailSender, ReplyAddressBook, ReplyRoute, SmtpConfig
from shore.metrics import RelayMetrics
from shore.nats_broker import downlink_config as nats_downlink_config
from shore.nats_broker import nats_service
from shore.replies import (
    ContactInfo,
    ReplyServer,
    ReplyServerConfig,
    SmsWebhook,
    SmsWebhookConfig,
)
from shore.reply_voice import VoiceReplyConfig
from shore.retention import RetentionConfig, RetentionKeeper
from shore.sbd import (
    MoWebhook,
    MtSender,
    SbdConfig,
    SbdDownlink,
    SbdFragmentStore,
    StoredReassembly,
    parse_vessels,
)
from shore.sbd_auth import ProviderJwt, choose_auth, load_provider_key
from shore.sms import SmsConfig, SmsProvider
from shore.store.deliveries import MessageTtl
from shore.store.ops import OperatorQueries
from shore.store.postgres import PostgresStore
from shore.store.relay_store import RelayStore
from shore.store.sqlite import SqliteStore
from shore.transparency import run_daily_heads
from shore.union_api import (
    make_union_api,
    serve_union_api,
    silence_alert_source,
    union_accounts,
)
from shore.voice_links import VoiceLinks, VoiceTarget, voice_routes

log = logging.getLogger(__name__)


async def open_store(config: RelayConfig) -> RelayStore:
    """The store the configuration names (quick-message codes expand with protocol.phrases,
    in the family contact's language, else the crew member's, else English)."""
    lease_s = config.store.lease_s
    ttl = message_ttl(config)
    if config.store.backend == "postgres":
        return await PostgresStore.open(
            config.store.dsn, phrases=phrase, lease_s=lease_s, message_ttl=ttl
        )
    return await SqliteStore.open(
        config.path(config.store.path), phrases=phrase, lease_s=lease_s, message_ttl=ttl
    )


def message_ttl(config: RelayConfig) -> MessageTtl:
    """The family messages' time to live that ``[retention]`` sets."""
    retention = config.retention
    return MessageTtl(
        retention.message_ttl_days * 86400,
        tuple((vessel, days * 86400) for vessel, days in retention.vessel_message_ttl_days),
    )


def make_decoder(config: RelayConfig) -> BatchDecoder:
    """The worker's batch decoder: ``[relay] decode_processes`` processes, or in place."""
    processes = config.relay.decode_processes
    if processes <= 0:
        return InlineDecoder(default_codebook())
    return ProcessDecoder(default_codebook, processes=processes)


def ingest_concurrency(config: RelayConfig) -> int:
    """Payloads ingested at once: enough to keep the decoding processes and the store busy
    together (1, one after the other, when decoding in place)."""
    return 4 * config.relay.decode_processes if config.relay.decode_processes > 0 else 1


def read_token(path: Path, what: str = "the provider's auth token") -> str:
    """A provider's API token (or ``what`` else) from a text file only its owner can read."""
    try:
        if path.stat().st_mode & 0o077:
            raise KeyFileError(f"token file {path} is readable by others; run: chmod 600 {path}")
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read token file {path}: {exc.strerror}") from exc
    if not token:
        raise KeyFileError(f"token file {path} is empty; write {what} in it")
    return token


def smtp_config(config: RelayConfig) -> SmtpConfig:
    """The smarthost as ``[delivery]`` gives it, its password file and CA read now: the one
    place family mail, reply notices and SOS alert e-mails get their :class:`SmtpConfig`.

    Raises :class:`KeyFileError` naming the key when a file cannot be used."""
    section, where = config.delivery, f"{config.source}: [delivery]"
    password = None
    if section.smtp_password_file:
        try:
            password = read_token(config.path(section.smtp_password_file), "the smarthost password")
        except KeyFileError as exc:
            raise KeyFileError(f"{where} smtp_password_file: {exc}") from exc
    starttls, use_tls = section.smtp_tls_flags
    context = None
    if section.smtp_tls != "none":
        ca_file = config.path(section.smtp_ca_file) if section.smtp_ca_file else None
        try:
            context = verifying_context(ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise KeyFileError(
                f"{where} smtp_ca_file: cannot use {ca_file} ({unusable_ca(exc)}); give the "
                "PEM certificate of the CA that signed the smarthost's certificate"
            ) from exc
    return SmtpConfig(
        host=section.smtp_host,
        port=section.smtp_port,
        starttls=starttls,
        use_tls=use_tls,
        username=section.smtp_username or None,
        password=password,
        timeout_s=section.smtp_timeout_s,
        connections=section.smtp_connections,
        pipelining=section.smtp_pipelining,
        tls_context=context,
    )


def make_sbd(
    config: RelayConfig, ingestor: Ingestor, store: SbdFragmentStore
) -> tuple[MoWebhook, SbdDownlink, MtSender] | None:
    """The SBD webhook, downlink router and MT sender when ``[sbd] enabled``: every whole
    payload the webhook reassembles goes through the ingest as if it came on the vessel's
    uplink topic (same signature check, same replay window). Fragments wait in ``store``
    for the rest of their payload (a restart loses none)."""
    section = config.sbd
    if not section.enabled:
        return None
    try:
        vessels = parse_vessels(section.vessels)
        provider_jwt = None
        if section.provider_public_key_file:
            provider_jwt = ProviderJwt(
                load_provider_key(config.path(section.provider_public_key_file)),
                issuer=section.provider_jwt_issuer,
                max_age_s=section.jwt_max_age_s,
            )
        auth = choose_auth(section.webhook_auth, has_key=provider_jwt is not None)
        sbd = SbdConfig(
            vessels,
            webhook_secret=(
                read_token(config.path(section.webhook_secret_file)) if auth.needs_secret else ""
            ),
            provider_jwt=provider_jwt,
            auth=auth,
            provider_url=section.provider_url,
            username=section.username,
            password=read_token(config.path(section.password_file)),
        )
    except ValueError as exc:
        raise ConfigError(f"{config.source}: {exc}") from exc
    sender = MtSender(sbd)
    router = SbdDownlink(
        sender, window_s=section.downlink_window_s, max_payload_bytes=section.downlink_max_bytes
    )

    async def on_payload(vessel_id: int, kind: PayloadKind, payload: bytes) -> None:
        if kind not in (PayloadKind.BATCH, PayloadKind.COMPACT):
            # No reader: refuse, so the provider keeps it and retries, rather than
            # answering 200 for something nobody kept.
            raise NotImplementedError(f"vessel {vessel_id}: no reader for {kind.name} payloads")
        # A signed batch and a compact frame both go the uplink topic's way: the ingest
        # tells them apart by their first byte, and checks the vessel the topic names
        # against the one the signature or the compact frame's tag proves.
        await ingestor.handle(uplink_topic(vessel_id), payload)

    webhook = MoWebhook(sbd, on_payload, reassembly=StoredReassembly(store))
    webhook.heard = router.heard
    return webhook, router, sender


def make_sms_provider(config: RelayConfig) -> SmsProvider | None:
    """The SMS provider adapter when ``[sms] enabled``; its token is read from its file."""
    section = config.sms
    if not section.enabled:
        return None
    token = read_token(config.path(section.auth_token))
    return SmsProvider(
        SmsConfig(
            account_sid=section.account_sid,
            auth_token=token,
            from_number=section.from_number,
            base_url=section.base_url,
            timeout_s=section.timeout_s,
        )
    )


def make_voice_links(config: RelayConfig, shore_key: SigningKey) -> VoiceLinks | None:
    """The voice links when the relay has a public web app (``[sms] webhook = true``):
    pages at the webhook's origin, under a key derived from the shore key (every worker
    makes and opens the same links)."""
    section = config.sms
    if not (section.enabled and section.webhook):
        return None
    parts = urlsplit(section.webhook_url)
    return VoiceLinks(shore_key.seed, f"{parts.scheme}://{parts.netloc}", section.voice_link_days)


def make_sms_webhook(
    config: RelayConfig, store: RelayStore, voice_links: VoiceLinks | None = None
) -> SmsWebhook | None:
    """The inbound SMS webhook when ``[sms] webhook = true``: a family's SMS reply is routed
    to the crew member who last wrote to that number; with ``voice_links``, the same public
    app plays voice messages sent to SMS contacts."""
    section = config.sms
    if not (section.enabled and section.webhook):
        return None
    token = read_token(config.path(section.auth_token))

    async def voice_target(vessel_id: int, message_seq: int) -> VoiceTarget | None:
        found = await store.voice_note(vessel_id, message_seq)
        if found is None or found.voice is None:
            return None
        return VoiceTarget(found.voice, found.contact_lang)

    async def route_for(
        family_number: str, relay_number: str
    ) -> tuple[ReplyRoute, ContactInfo] | None:
        if relay_number != section.from_number:
            return None
        found = await store.contacts_with_address(Channel.SMS, family_number)
        if not found:
            return None
        contact = found[0]
        return ReplyRoute(contact.vessel_id, contact.crew, contact.contact), ContactInfo(
            contact.lang
        )

    return SmsWebhook(
        SmsWebhookConfig(
            public_url=section.webhook_url,
            auth_token=token,
            host=section.webhook_host,
            port=section.webhook_port,
        ),
        route_for,
        store.queue_reply,
        routes=() if voice_links is None else voice_routes(voice_links, voice_target),
    )


def make_alerter(
    config: RelayConfig, store: RelayStore, sms: SmsProvider | None
) -> SosAlerter | None:
    """The SOS alerter when ``[alerts] enabled``."""
    section = config.alerts
    if not section.enabled:
        return None
    delivery = config.delivery
    mail = MailSender(smtp_config(config)) if section.emails else None
    return SosAlerter(
        store,
        AlertConfig(
            emails=section.emails,
            sms=section.sms,
            retry_max_s=section.retry_max_s,
            tick_s=section.tick_s,
        ),
        MailIdentity(delivery.relay_domain, delivery.from_address),
        mail,
        sms,
    )


def make_client(config: RelayConfig, login: BrokerLogin | None = None) -> aiomqtt.Client:
    """The relay worker's MQTT client: fixed id, persistent session (FIELD-NOTES), logged in
    with ``login`` (user name, password, TLS; :func:`shore.broker_login.broker_login` reads
    it from ``[mqtt]`` when not given)."""
    host, port = config.mqtt_host_port
    mqtt = config.mqtt
    # A user name matters even without a password: amqtt queues offline messages only
    # for clients with one (FIELD-NOTES).
    login = broker_login(config) if login is None else login
    common: dict[str, Any] = {
        "identifier": config.client_id,
        "keepalive": mqtt.keepalive_s,
        "timeout": mqtt.publish_timeout_s,
        "username": login.username,
        "password": login.password,
        "tls_context": login.tls_context,
    }
    if mqtt.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = mqtt.session_expiry_s
        return aiomqtt.Client(
            host,
            port,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            **common,
        )
    return aiomqtt.Client(
        host, port, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False, **common
    )


async def retire_worker(config: RelayConfig, worker: int) -> None:
    """End relay worker ``worker``'s persistent session at the broker, for good: connect
    under its client id with a clean start (MQTT 5, session expiry 0) or a clean session
    (3.1.1), logged in as ``config``'s workers are, and disconnect.

    A stopped worker's session stays in the shared subscription until it expires
    (``[mqtt] session_expiry_s``, a week by default), and the broker keeps queueing it its
    share of the vessels' batches: with one worker of two retired, every other batch
    would wait there, and be acknowledged only when the vessel sent it again. What was
    queued for the session is dropped with it; the vessels resend those batches (they keep
    every batch until the relay acknowledges it). Stop the worker first: a worker still
    running is taken over, reconnects and subscribes again."""
    if config.broker.kind == "nats":
        raise ValueError(
            "a NATS cluster's workers share a JetStream consumer, not broker sessions: "
            "a stopped worker holds nothing back, there is no session to retire"
        )
    if worker < 1:
        raise ValueError(f"a worker number is 1 or more, not {worker}")
    host, port = config.mqtt_host_port
    login = broker_login(config)
    common: dict[str, Any] = {
        "identifier": f"relay-{worker}",
        "timeout": config.mqtt.publish_timeout_s,
        "username": login.username,
        "password": login.password,
        "tls_context": login.tls_context,
    }
    client: aiomqtt.Client
    if config.mqtt.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0
        client = aiomqtt.Client(
            host,
            port,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            properties=properties,
            **common,
        )
    else:
        client = aiomqtt.Client(
            host, port, protocol=aiomqtt.ProtocolVersion.V311, clean_session=True, **common
        )
    async with client:
        pass
    log.info("relay-%d: its broker session was ended", worker)


#: CONNACK codes that mean "your login is wrong": MQTT 3.1.1 (4, 5) and MQTT 5 (0x86, 0x87).
_LOGIN_REFUSED = {4, 5, 0x86, 0x87}


def _login_hint(error: Exception) -> str:
    """A pointer to the configuration when the broker refused the relay's login."""
    if not isinstance(error, MqttConnectError):
        return ""  # other codes (publish, subscribe) reuse the same numbers
    value = getattr(error.rc, "value", error.rc)
    if isinstance(value, int) and value in _LOGIN_REFUSED:
        return ": the broker refused the login; check [mqtt] username and password_file"
    return ""


def uplink_subscription(config: RelayConfig) -> str:
    """Shared subscription with MQTT 5 (several workers share the load); plain with 3.1.1."""
    return SHARED_UPLINKS if config.mqtt.protocol == "5" else UPLINKS


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
    doorbell: DownlinkBell,
    on_subscribed: Callable[[], None] | None = None,
    metrics: RelayMetrics | None = None,
    login: BrokerLogin | None = None,
    sbd_downlink: SbdDownlink | None = None,
) -> None:
    """Connect, subscribe, ingest and publish; reconnect with capped, jittered backoff.

    ``sbd_downlink``: small downlink batches for vessels on their SBD fallback also go
    down over SBD (``shore.sbd.SbdDownlink``).

    ``login`` is read from ``[mqtt]`` once, here, when not given (its TLS context then
    serves every reconnection)."""
    backoff = 1.0
    topic = uplink_subscription(config)
    login = broker_login(config) if login is None else login
    while not stopping.is_set():
        client = make_client(config, login)
        try:
            async with client:
                await client.subscribe(topic, qos=1)
                # mqtt_broker, not the URL: the URL may hold a password
                log.info("%s subscribed to %s at %s", config.client_id, topic, config.mqtt_broker)
                backoff = 1.0
                if metrics is not None:
                    metrics.broker_up()
                if on_subscribed is not None:
                    on_subscribed()

                async def publish(to: str, data: bytes, client: aiomqtt.Client = client) -> None:
                    await client.publish(to, data, qos=1, timeout=config.mqtt.publish_timeout_s)
                    if metrics is not None:
                        metrics.observe_downlink(int(to.split("/")[1]), len(data))

                routed = sbd_downlink.wrap(publish) if sbd_downlink is not None else publish
                async with asyncio.TaskGroup() as group:
                    group.create_task(ingestor.run(client, stopping))
                    group.create_task(downlink.run(routed, stopping, doorbell))
        except* aiomqtt.MqttError as errors:
            if metrics is not None:
                metrics.broker_down()
            log.warning(
                "broker link lost (%s)%s; reconnecting in %.0f s",
                errors.exceptions[0],
                _login_hint(errors.exceptions[0]),
                backoff,
            )
        if stopping.is_set():
            return
        await _pause(stopping, backoff * (0.5 + random.random() / 2))
        backoff = min(backoff * 2, config.mqtt.reconnect_max_s)


def _delivery_services(
    config: RelayConfig,
    store: RelayStore,
    sms: SmsProvider | None = None,
    voice_links: VoiceLinks | None = None,
) -> tuple[list[DeliveryWorker], ReplyServer | None, MailSender | None]:
    """The delivery workers and the reply server, sharing one :class:`MailSender` (its
    kept SMTP sessions; the caller closes it)."""
    section = config.delivery
    if not (section.enabled or config.replies.enabled):
        return [], None, None
    identity = MailIdentity(section.relay_domain, section.from_address)
    book = ReplyAddressBook([read_secret(config.path(section.reply_key))], section.reply_domain)
    mail = MailSender(smtp_config(config))
    workers = []
    if section.enabled:
        workers = [
            DeliveryWorker(
                store,
                mail,
                identity,
                book,
                sms,
                config=DeliveryConfig(worker=f"{config.client_id}-d{n}"),
                voice_links=voice_links,
            )
            for n in range(1, section.workers + 1)
        ]
    server = None
    if config.replies.enabled:

        async def lookup(route: ReplyRoute) -> ContactInfo | None:
            found = await store.contact(route.vessel_id, route.crew, route.contact)
            return None if found is None else ContactInfo(found.lang)

        replies = config.replies
        voice = (
            VoiceReplyConfig(
                vessels=frozenset(replies.voice_vessels),
                max_seconds=replies.voice_max_seconds,
                mode=VoiceMode.from_label(replies.voice_mode),
            )
            if replies.voice_vessels
            else None
        )
        server = ReplyServer(
            ReplyServerConfig(host=replies.host, port=replies.port),
            book,
            lookup,
            store.queue_reply,
            identity,
            notices=mail,
            voice=voice,
            on_spoken_reply=None if voice is None else store.queue_spoken_reply,
        )
    return workers, server, mail


async def run_relay(
    config: RelayConfig,
    stopping: asyncio.Event,
    on_subscribed: Callable[[], None] | None = None,
    metrics: RelayMetrics | None = None,
) -> None:
    """Run every service of the relay until ``stopping`` is set (see the module docstring).

    With ``metrics``, ingest, downlink and delivery feed it, and its shared gauges are
    refreshed from the store (``shore.metrics``); serving it is the caller's business.
    """
    shore_key = SigningKey(read_secret(config.path(config.relay.shore_key)))
    # refuses a bad password file before anything starts
    login = broker_login(nats_downlink_config(config) if config.broker.kind == "nats" else config)
    # and a CA file of the NATS connection that cannot be used
    nats_tls = nats_tls_context(config, login) if config.broker.kind == "nats" else None
    codebook = default_codebook()
    store = await open_store(config)
    decoder = make_decoder(config)
    try:
        if isinstance(decoder, ProcessDecoder):
            decoder = await started_or_in_place(decoder, codebook)
        downlink_bell = DownlinkBell()
        delivery_bell = asyncio.Event()
        alert_bell = asyncio.Event()
        ingestor = Ingestor(
            store,
            codebook,
            doorbells=(downlink_bell, delivery_bell, alert_bell),
            metrics=metrics,
            lane=config.lane_shape,
            shore_key=shore_key,
            decoder=decoder,
            concurrency=ingest_concurrency(config),
        )
        down = config.downlink
        downlink = Downlink(
            store,
            shore_key,
            codebook,
            DownlinkConfig(
                down.tick_s,
                down.resend_after_s,
                down.resend_max_s,
                down.max_items,
                slot_period_s=down.slot_period_s,
            ),
        )
        sms = make_sms_provider(config)
        voice_links = make_voice_links(config, shore_key)
        workers, reply_server, mail = _delivery_services(config, store, sms, voice_links)
        for worker in workers:
            worker.metrics = metrics
        alerter = make_alerter(config, store, sms)
        webhook = make_sms_webhook(config, store, voice_links)
        sbd = make_sbd(config, ingestor, store)
        if sbd is not None:
            downlink.ack_within = sbd[1].ack_within
        if reply_server is not None:
            await reply_server.start()
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as group:
            if sms is not None:
                stack.push_async_callback(sms.aclose)
            if mail is not None:
                stack.push_async_callback(mail.aclose)
            if alerter is not None and alerter.mail is not None:
                stack.push_async_callback(alerter.mail.aclose)
            if webhook is not None:
                await webhook.serve()
                stack.push_async_callback(webhook.stop)  # it logs where it listens
            if sbd is not None:
                sbd_server = AsgiServer(
                    sbd[0].app, config.sbd.webhook_host, config.sbd.webhook_port, name="SBD webhook"
                )
                await sbd_server.start()
                stack.push_async_callback(sbd_server.stop)
                stack.push_async_callback(sbd[2].aclose)
            if alerter is not None:
                group.create_task(alerter.run(stopping, alert_bell))
            if config.broker.kind == "nats":
                group.create_task(
                    nats_service(
                        config,
                        ingestor,
                        downlink,
                        stopping,
                        downlink_bell,
                        make_client,
                        on_subscribed,
                        metrics,
                        nats_tls,
                    )
                )
            else:
                group.create_task(
                    mqtt_service(
                        config,
                        ingestor,
                        downlink,
                        stopping,
                        downlink_bell,
                        on_subscribed,
                        metrics,
                        login,
                        sbd[1] if sbd is not None else None,
                    )
                )
            if metrics is not None and metrics.fleet_gauges:
                group.create_task(metrics.refresh_forever(OperatorQueries(store), stopping))
            group.create_task(run_daily_heads(store, shore_key, stopping), name="tree-heads")
            keeper = RetentionKeeper(
                store,
                RetentionConfig(config.retention.content_days * 86400, config.retention.tick_s),
                metrics=metrics,
            )
            group.create_task(keeper.run(stopping), name="retention")
            for worker in workers:
                group.create_task(worker.run(stopping, delivery_bell))
            if reply_server is not None:
                group.create_task(reply_server.run(stopping))
            if config.union_api.enabled:
                api = config.union_api
                union_app = make_union_api(
                    store,
                    union_accounts(api),
                    alerts=silence_alert_source(
                        store, api.vessel_silent_after_s, api.lane_silent_after_s
                    ),
                    lane=config.lane_shape,
                    lane_queue_blocks=api.lane_queue_blocks,
                )
                group.create_task(serve_union_api(union_app, api.host, api.port, stopping))
    finally:
        try:
            await decoder.aclose()
        finally:
            await store.close()
