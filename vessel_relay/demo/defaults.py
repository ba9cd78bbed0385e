"""A demo vessel's settings with the demo's published keys (tests and in-process demos).

:func:`demo_ship_document` is what ``ship init`` wrote before it stopped making up keys:
a vessel on loopback that trusts the demo shore key and seals grievances to the demo union,
both made from the public seeds of :mod:`vessel_relay.demo.keys`. The loaders refuse it
unless told ``allow_demo_keys=True``; :func:`demo_ship_config` does so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipboard.config import ShipConfig, parse_config, ship_document, union_table
from vessel_relay.demo.keys import (
    DEMO_UNION_NAME,
    demo_shore_signing_key,
    demo_union_public_key,
)


def demo_ship_document(data_dir: Path) -> dict[str, Any]:
    """A demo vessel (id 1) on loopback with the demo shore and the demo union, as TOML data.

    The demo's relay is of the same release, so it reads the subjects of crew messages."""
    document = ship_document(
        data_dir,
        vessel_id=1,
        name="Demo Vessel",
        broker="mqtt://127.0.0.1:1883",
        shore_public_key=demo_shore_signing_key().verify_key.hex(),
        unions=(union_table(1, DEMO_UNION_NAME, demo_union_public_key(), ("eng", "tha", "mya")),),
    )
    document["shore"]["relay_reads_subjects"] = True
    return document


def demo_ship_config(data_dir: Path) -> ShipConfig:
    """:func:`demo_ship_document` checked and read, with the demo's keys allowed."""
    return parse_config(
        demo_ship_document(data_dir), source="<demo>", base=data_dir, allow_demo_keys=True
    )
