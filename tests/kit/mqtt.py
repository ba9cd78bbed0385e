"""MQTT helpers: unique topics per test, and vessel clients with persistent sessions."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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
