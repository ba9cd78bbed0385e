"""Ship config documents with a test's own keys (never the demo's published ones).

``ship run`` and every loader without ``allow_demo_keys`` refuse the demo's keys, so a
test that writes a ship.toml and loads or runs it the way a vessel would starts from
:func:`own_keys_document`: the demo's settings, with a fresh shore key and a fresh union.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nacl.public

from protocol.signing import SigningKey
from vessel_relay.demo.defaults import demo_ship_document


def own_keys_document(data_dir: Path, *, shore_public_key: str | None = None) -> dict[str, Any]:
    """The demo vessel's document with a new union key and the given (or a new) shore key."""
    document = demo_ship_document(data_dir)
    document["shore"]["public_key"] = (
        shore_public_key or SigningKey.from_seed(os.urandom(32)).verify_key.hex()
    )
    union_key = bytes(nacl.public.PrivateKey.generate().public_key)
    document["unions"][0].update(name="Test Union", public_key=union_key.hex())
    return document
