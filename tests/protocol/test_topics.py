"""Topics: one place names the link's MQTT topics, and reads a vessel id back."""

from __future__ import annotations

import pytest

from protocol.topics import (
    NATS_UPLINKS,
    SHARED_UPLINKS,
    UPLINKS,
    downlink_topic,
    topic_of_subject,
    uplink_topic,
    uplink_topic_vessel,
)


def test_topics_round_trip() -> None:
    """Vessel 42 publishes on vr/42/u and reads vr/42/d; the relay reads 42 back."""
    assert uplink_topic(42) == "vr/42/u"
    assert downlink_topic(42) == "vr/42/d"
    assert uplink_topic_vessel(uplink_topic(42)) == 42
    assert SHARED_UPLINKS == "$share/relay/" + UPLINKS == "$share/relay/vr/+/u"


@pytest.mark.parametrize(
    "topic", ["vr/42/d", "vr//u", "vr/x/u", "vr/42/u/extra", "vr/" + "9" * 16 + "/u", "vr/٤٢/u"]
)
def test_other_topics_name_no_vessel(topic: str) -> None:
    """A downlink topic, a malformed one, or digits of another script name no vessel."""
    assert uplink_topic_vessel(topic) is None


def test_nats_subjects_map_back_to_topics() -> None:
    """A NATS cluster's MQTT gateway carries vr/42/u as the subject vr.42.u; the relay's
    stream captures vr.*.u and reads the topic (and so the vessel) back from the subject."""
    assert UPLINKS.replace("/", ".").replace("+", "*") == NATS_UPLINKS
    assert topic_of_subject("vr.42.u") == uplink_topic(42)
    assert uplink_topic_vessel(topic_of_subject("vr.42.u")) == 42
