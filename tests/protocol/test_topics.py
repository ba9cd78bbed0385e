"""Topics: one place names the link's MQTT topics, and reads a vessel id back."""

from __future__ import annotations

import pytest

from protocol.topics import (
    SHARED_UPLINKS,
    UPLINKS,
    downlink_topic,
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
