"""``[broker]``: the relay's MQTT broker by default, or a NATS cluster, checked at start-up."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import pytest

from shore.broker_login import BrokerLogin, BrokerLoginError, nats_tls_context
from shore.config import ConfigError, parse_config
from shore.nats_broker import consumer_config, downlink_config, stream_config
from tests.kit.tls import make_test_ca

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
        ({**CLUSTER, "nats_urls": ["http://x:4222"]}, "expected tls://HOST:PORT (TLS)"),
        (
            {**CLUSTER, "nats_urls": ["tls://x:4222", "nats://y:4222"]},
            "mixes nats:// and tls://",
        ),
        ({**CLUSTER, "nats_ca_file": "ca.pem"}, "nats_ca_file is only used with TLS"),
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


TLS_CLUSTER: dict[str, Any] = {
    **CLUSTER,
    "nats_urls": ["tls://nats-1.example.org:4222", "tls://nats-2.example.org:4222"],
}


def test_a_cluster_over_tls_checks_the_nodes_against_its_nats_ca_file(tmp_path: Path) -> None:
    """An operator writes the nodes as tls:// with the CA that signed their client-port
    certificates: the relay's NATS connection then requires a certificate from that CA
    naming the node's host (host names checked, TLS 1.2 or newer)."""
    make_test_ca(tmp_path)
    config = parse_config(
        {"relay": {"data_dir": str(tmp_path)}, "broker": {**TLS_CLUSTER, "nats_ca_file": "ca.pem"}}
    )
    assert config.nats_tls
    context = nats_tls_context(config, BrokerLogin("relay", "secret"))
    assert context is not None
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    trusted = context.get_ca_certs()
    assert [dict(entry[0] for entry in cert["subject"]) for cert in trusted] == [
        {"commonName": "vessel-relay test CA"}
    ]


def test_a_cluster_over_tls_without_a_ca_file_trusts_the_system_cas() -> None:
    """Nodes with certificates from a public CA: tls:// URLs and no nats_ca_file, and the
    relay checks them against the system's CAs, host names too."""
    config = parse_config({"broker": TLS_CLUSTER})
    context = nats_tls_context(config, BrokerLogin("relay", "secret"))
    assert context is not None
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not parse_config({"broker": CLUSTER}).nats_tls


def test_an_unusable_nats_ca_file_stops_the_relay_naming_the_key(tmp_path: Path) -> None:
    """A nats_ca_file that is missing, or is not a PEM certificate, is refused at start
    with the [broker] key to fix."""
    (tmp_path / "junk.pem").write_text("not a certificate\n", encoding="utf-8")
    for name in ("missing.pem", "junk.pem"):
        config = parse_config(
            {"relay": {"data_dir": str(tmp_path)}, "broker": {**TLS_CLUSTER, "nats_ca_file": name}},
            "relay.toml",
        )
        with pytest.raises(BrokerLoginError, match=r"relay\.toml: \[broker\] nats_ca_file"):
            nats_tls_context(config, BrokerLogin("relay", "secret"))


def test_a_password_sent_in_clear_to_a_remote_nats_node_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A relay whose nats_urls are nats:// to hosts off this machine, with a password,
    would send it (and every batch) in clear: it starts, but its log says to use tls://.
    On loopback, or without a password, nothing is said."""
    remote = {**CLUSTER, "nats_urls": ["nats://10.0.0.1:4222", "nats://127.0.0.1:4222"]}
    with caplog.at_level(logging.WARNING, logger="shore.broker_login"):
        assert (
            nats_tls_context(parse_config({"broker": remote}), BrokerLogin("relay", "pw")) is None
        )
        assert nats_tls_context(parse_config({"broker": remote}), BrokerLogin("relay")) is None
        assert nats_tls_context(parse_config({"broker": CLUSTER}), BrokerLogin("r", "pw")) is None
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert "in clear to 10.0.0.1;" in warnings[0]
    assert "tls://HOST:4222 with nats_ca_file" in warnings[0]
