"""``[broker]``: the relay's MQTT broker by default, or a NATS cluster, checked at start-up."""

from __future__ import annotations

from typing import Any

import pytest

from shore.config import ConfigError, parse_config
from shore.nats_broker import consumer_config, downlink_config, stream_config

CLUSTER: dict[str, Any] = {
    "kind": "nats",
    "nats_urls": ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"],
    "mqtt_urls": ["mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1884"],
}


def test_mqtt_is_the_default_broker() -> None:
    """A relay configured as before (no [broker]) keeps using its [mqtt] broker."""
    config = parse_config({"mqtt": {"url": "mqtt://127.0.0.1:1883"}})
    assert config.broker.kind == "mqtt"
    assert config.broker.nats_urls == ()


def test_a_nats_cluster_is_configured_with_its_stream_and_shared_consumer() -> None:
    """An operator points three workers at a NATS cluster: one replicated work-queue stream
    on every vessel's uplink subject, one durable consumer with explicit acks, and a
    downlink over MQTT 3.1.1 to the first node's gateway."""
    config = parse_config({"broker": {**CLUSTER, "ack_wait_s": 5}})
    stream = stream_config(config.broker)
    assert (stream.name, stream.subjects, stream.num_replicas) == ("VR_UPLINK", ["vr.*.u"], 3)
    assert stream.retention is not None
    assert stream.retention.value == "workqueue"
    consumer = consumer_config(config.broker)
    assert (consumer.durable_name, consumer.ack_wait, consumer.filter_subject) == (
        "relay",
        5.0,
        "vr.*.u",
    )
    assert consumer.ack_policy is not None
    assert consumer.ack_policy.value == "explicit"
    node = downlink_config(config)
    assert (node.mqtt.url, node.mqtt.protocol) == ("mqtt://127.0.0.1:1883", "3.1.1")
    assert downlink_config(config, "mqtt://127.0.0.1:1884").mqtt_host_port[1] == 1884


def test_the_mqtt_login_and_tls_keys_apply_to_each_nats_gateway() -> None:
    """With a NATS cluster, [mqtt]'s user, password file and CA serve every node's MQTT
    gateway; a CA file with a plain mqtt:// gateway is refused naming that gateway."""
    tls = {**CLUSTER, "mqtt_urls": ["mqtts://nats-1.example.org", "mqtts://nats-2.example.org"]}
    login = {"username": "relay", "password_file": "mqtt.password", "ca_file": "ca.pem"}
    config = parse_config({"broker": tls, "mqtt": login})
    assert downlink_config(config).mqtt_tls
    assert downlink_config(config).mqtt_host_port == ("nats-1.example.org", 8883)
    with pytest.raises(ConfigError, match=r"mqtt_urls: \[mqtt\] ca_file is only used with TLS"):
        parse_config({"broker": CLUSTER, "mqtt": {"ca_file": "ca.pem"}})


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        ({"kind": "kafka"}, 'expected "mqtt" or "nats"'),
        ({**CLUSTER, "nats_urls": []}, "needs nats_urls"),
        ({**CLUSTER, "nats_urls": ["http://x:4222"]}, "expected nats://HOST:PORT"),
        ({**CLUSTER, "nats_urls": ["nats://relay:secret@x:4222"]}, "password_file"),
        ({**CLUSTER, "mqtt_urls": []}, "needs mqtt_urls"),
        ({**CLUSTER, "mqtt_urls": ["ws://x"]}, "mqtt_urls: [mqtt] url = 'ws://x'"),
        ({**CLUSTER, "stream": "vr uplink"}, "letters, digits"),
        ({**CLUSTER, "replicas": 7}, "expected 1 to 5"),
        ({**CLUSTER, "ack_wait_s": 0}, "ack_wait_s must be positive"),
        ({**CLUSTER, "fetch_batch": 0}, "expected 1 to 256"),
        ({**CLUSTER, "servers": []}, "has no key 'servers'"),
    ],
)
def test_a_wrong_broker_table_is_refused_saying_what_to_write(
    broker: dict[str, Any], expected: str
) -> None:
    """A mistyped [broker] table stops the relay at start-up with the key and the fix."""
    with pytest.raises(ConfigError, match=r"relay\.toml: \[broker\]") as caught:
        parse_config({"broker": broker}, "relay.toml")
    assert expected in str(caught.value)
