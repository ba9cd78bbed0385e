"""The demo's published keys: seeds anyone can derive, for tests and in-process demos only.

These seeds are public (they are SHA-256 of fixed phrases), so a key made from one protects
nothing: whoever has this source can sign as the shore or open a report sealed to the
union. They live here, in the demo, and nowhere else. The shipboard and shore config
loaders refuse every key derived from them (:data:`common.keyfiles.PUBLISHED_DEMO_KEYS`,
pinned to these seeds by a test) unless the caller passes ``allow_demo_keys=True``, which
only the demo and tests do. ``vessel-relay demo`` itself makes fresh keys in its work
directory (:mod:`vessel_relay.demo.setup`).
"""

from __future__ import annotations

import hashlib

import nacl.public

from protocol.signing import SigningKey

#: Public demo seeds: anyone can derive these keys.
DEMO_SHORE_SEED = hashlib.sha256(b"vessel-relay demo shore signing key").digest()
DEMO_UNION_SEED = hashlib.sha256(b"vessel-relay demo union key").digest()

#: What the demo union is called in configs made from these keys.
DEMO_UNION_NAME = "Demo Union (demo key: not secret)"


def demo_shore_signing_key() -> SigningKey:
    """The demo shore's Ed25519 signing key (public knowledge)."""
    return SigningKey.from_seed(DEMO_SHORE_SEED)


def demo_union_private_key() -> bytes:
    """The demo union's X25519 private key (public knowledge)."""
    return DEMO_UNION_SEED


def demo_union_public_key() -> bytes:
    """The demo union's X25519 public key, the one reports are sealed to."""
    return bytes(nacl.public.PrivateKey(DEMO_UNION_SEED).public_key)


def derived_public_keys() -> dict[bytes, str]:
    """Every public key made from a demo seed (Ed25519 and X25519 alike), with its name."""
    keys: dict[bytes, str] = {}
    for seed, what in ((DEMO_SHORE_SEED, "demo shore"), (DEMO_UNION_SEED, "demo union")):
        keys[SigningKey.from_seed(seed).verify_key.key] = f"the {what} key (Ed25519)"
        keys[bytes(nacl.public.PrivateKey(seed).public_key)] = f"the {what} key (X25519)"
    return keys
