"""Topics: the MQTT topic names of the link, in one place (docs/contract.md).

``vr/{vessel}/u`` carries a vessel's batches to the shore, ``vr/{vessel}/d`` the shore's
batches to that vessel. Short on purpose: a topic rides every PUBLISH on a per-byte link
(7-9 bytes; MQTT 5 topic aliases would save ~5 bytes a publish and cost a property each
way, so they are not used). Relay workers subscribe to every vessel's uplink, shared among
them with MQTT 5 (``$share/relay/...``) or plainly with 3.1.1 (every worker gets every
batch; ingest de-duplicates). The broker's ACLs (``deploy/``) give vessel ``n`` exactly
``vr/n/u`` to publish and ``vr/n/d`` to read.
"""

from __future__ import annotations

import re

__all__ = [
    "NATS_UPLINKS",
    "SHARED_UPLINKS",
    "UPLINKS",
    "downlink_topic",
    "topic_of_subject",
    "uplink_topic",
    "uplink_topic_vessel",
]

#: Every vessel's uplink (a relay worker's subscription with MQTT 3.1.1).
UPLINKS = "vr/+/u"
#: Every vessel's uplink, shared among the relay's workers (MQTT 5 shared subscription).
SHARED_UPLINKS = "$share/relay/" + UPLINKS

#: Every vessel's uplink as a NATS subject: what a NATS broker's MQTT gateway makes of
#: ``vr/+/u`` (levels joined by ``.``); the relay's JetStream stream captures it.
NATS_UPLINKS = "vr.*.u"

_UPLINK = re.compile(r"vr/([0-9]{1,15})/u")


def uplink_topic(vessel_id: int) -> str:
    """The topic vessel ``vessel_id`` publishes its batches to."""
    return f"vr/{vessel_id}/u"


def downlink_topic(vessel_id: int) -> str:
    """The topic the shore publishes vessel ``vessel_id``'s batches to."""
    return f"vr/{vessel_id}/d"


def uplink_topic_vessel(topic: str) -> int | None:
    """The vessel id in an uplink topic ``vr/{vessel}/u``, or None for any other topic."""
    match = _UPLINK.fullmatch(topic)
    return int(match.group(1)) if match else None


def topic_of_subject(subject: str) -> str:
    """The MQTT topic a NATS subject carries (``vr.42.u`` -> ``vr/42/u``): NATS's MQTT
    gateway maps each ``/`` of a topic to ``.``, and our topics use neither ``.`` nor empty
    levels, so the mapping is one-to-one on them."""
    return subject.replace(".", "/")
