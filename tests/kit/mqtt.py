"""MQTT helpers: unique topics per test, vessel clients with persistent sessions, and the
model shore behind a real broker (:func:`shore_over_mqtt`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.topics import downlink_topic, uplink_topic
from tests.kit.model_shore import ModelShore

TOPIC_PREFIX = "vessel-relay/tests/"


def unique_topic() -> str:
    """A topic no other test (or earlier run against the same broker) uses."""
    return f"{TOPIC_PREFIX}{uuid.uuid4().hex}"


def unique_identifier(prefix: str = "v") -> str:
    """A short MQTT client identifier, unique to this test."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def persistent_client(
    host: str,
    port: int,
    identifier: str,
    *,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
    session_expiry_s: int = 3600,
    **kwargs: Any,
) -> aiomqtt.Client:
    """A client whose session (subscriptions, queued QoS 1 messages) outlives disconnects.

    As FIELD-NOTES say, this needs a fixed identifier and an explicit flag: with MQTT 5,
    `clean_start=False` plus a SessionExpiryInterval (else the session ends at disconnect);
    with MQTT 3.1.1, `clean_session=False`.
    """
    if protocol is aiomqtt.ProtocolVersion.V5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry_s
        return aiomqtt.Client(
            host,
            port,
            identifier=identifier,
            protocol=protocol,
            clean_start=False,
            properties=properties,
            **kwargs,
        )
    return aiomqtt.Client(
        host, port, identifier=identifier, protocol=protocol, clean_session=False, **kwargs
    )


async def next_message(client: aiomqtt.Client, timeout_s: float = 10.0) -> aiomqtt.Message:
    """The client's next message; MqttError if it disconnects, TimeoutError if none comes."""
    async with asyncio.timeout(timeout_s):
        return await anext(client.messages)


@contextlib.asynccontextmanager
async def shore_over_mqtt(
    shore: ModelShore,
    host: str,
    port: int,
    *,
    clock: Callable[[], float],
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
) -> AsyncIterator[ModelShore]:
    """``shore`` behind a real broker, where the relay sits: subscribed (a persistent
    session, ``relay-<vessel>``) to the vessel's uplink topic, it hears every payload and
    publishes what it sends then on the downlink topic (QoS 1). Yields once subscribed."""
    vessel_id = shore.vessel_id

    async def run(ready: asyncio.Event) -> None:
        async with persistent_client(host, port, f"relay-{vessel_id}", protocol=protocol) as client:
            await client.subscribe(uplink_topic(vessel_id), qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                now = clock()
                shore.receive(message.payload, now)
                for data in shore.send(now):
                    await client.publish(downlink_topic(vessel_id), data, qos=1)

    ready = asyncio.Event()
    task = asyncio.create_task(run(ready))
    waiter = asyncio.ensure_future(ready.wait())
    try:
        async with asyncio.timeout(10):
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        yield shore
    finally:
        waiter.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish_downlink(
    host: str,
    port: int,
    vessel_id: int,
    payloads: Sequence[bytes],
    *,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
) -> None:
    """Publish ``payloads`` on the vessel's downlink topic (QoS 1), as a shore would while
    the vessel is away: a persistent session of the vessel keeps them for it."""
    async with aiomqtt.Client(host, port, protocol=protocol) as client:
        for payload in payloads:
            await client.publish(downlink_topic(vessel_id), payload, qos=1)
