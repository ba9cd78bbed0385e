"""Vessel registry: the operator's commands on vessels and their keys, over the store.

A vessel gets a small integer id (its MQTT topics are ``vr/{id}/u`` and ``vr/{id}/d``) and
an Ed25519 public key (its agent's ``ship keygen`` prints it). Keys are rotated with an
overlap: the new key is valid at once, the old one until it is revoked, so batches the
vessel signed before the switch still verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from protocol.errors import ProtocolError
from protocol.signing import VerifyKey
from shore.store.errors import RegistryError
from shore.store.registry import VesselInfo, VesselRecord


class RegistryStore(Protocol):
    """What the operator's vessel commands need of the store (``RelayStore`` has it)."""

    async def add_vessel(
        self, info: VesselInfo, public_key: bytes, now: float, vessel_id: int | None = None
    ) -> int:
        """Register a vessel with its first key; returns its vessel id."""

    async def get_vessel(self, vessel_id: int) -> VesselRecord | None:
        """A registered vessel, or None."""

    async def add_vessel_key(
        self, vessel_id: int, public_key: bytes, valid_from: float, now: float
    ) -> None:
        """Add a key valid from ``valid_from``."""

    async def revoke_vessel_key(self, vessel_id: int, public_key: bytes, at: float) -> None:
        """Revoke a key from ``at``."""


def parse_public_key(text: str) -> bytes:
    """A public key from 64 hex digits, or RegistryError saying what is wrong."""
    try:
        return VerifyKey.from_hex(text).key
    except ProtocolError as exc:
        raise RegistryError(f"{exc}; copy the key that 'ship keygen' printed") from exc


async def add_vessel(
    store: RegistryStore,
    info: VesselInfo,
    public_key_hex: str,
    now: float,
    vessel_id: int | None = None,
) -> int:
    """Register a vessel; returns its id."""
    return await store.add_vessel(info, parse_public_key(public_key_hex), now, vessel_id)


async def require_vessel(store: RegistryStore, vessel_id: int) -> VesselRecord:
    """A registered vessel, or RegistryError."""
    record = await store.get_vessel(vessel_id)
    if record is None:
        raise RegistryError(f"vessel {vessel_id} is not registered; see 'shore vessel list'")
    return record


async def rotate_key(
    store: RegistryStore,
    vessel_id: int,
    new_key_hex: str,
    now: float,
    revoke_old_after_s: float | None = None,
) -> tuple[bytes, ...]:
    """Add a new key valid from ``now``; with ``revoke_old_after_s``, revoke every other key
    that long from now. Returns the keys scheduled for revocation."""
    record = await require_vessel(store, vessel_id)
    new_key = parse_public_key(new_key_hex)
    await store.add_vessel_key(vessel_id, new_key, now, now)
    old = tuple(
        key.public_key
        for key in record.keys
        if key.public_key != new_key and key.revoked_at is None
    )
    if revoke_old_after_s is not None:
        for key in old:
            await store.revoke_vessel_key(vessel_id, key, now + revoke_old_after_s)
        return old
    return ()


async def revoke_key(store: RegistryStore, vessel_id: int, key_hex: str, at: float) -> None:
    """Revoke one key of a vessel from ``at`` (refused if it would leave no valid key)."""
    record = await require_vessel(store, vessel_id)
    key = parse_public_key(key_hex)
    remaining = [k for k in record.keys if k.public_key != key and k.revoked_at is None]
    if not remaining:
        raise RegistryError(
            f"revoking this key would leave vessel {vessel_id} without a key; "
            "add the new one first with 'shore vessel rotate-key'"
        )
    await store.revoke_vessel_key(vessel_id, key, at)


def describe(record: VesselRecord, now: float) -> Sequence[str]:
    """Lines for ``shore vessel show`` (no crew data: the registry holds none)."""
    info = record.info
    lines = [
        f"vessel {record.vessel_id}: {info.name}",
        f"  flag {info.flag}, registration {info.registration}, owner {info.owner}",
        f"  unions: {', '.join(map(str, info.unions)) or 'none'}",
        f"  topics: vr/{record.vessel_id}/u (up), vr/{record.vessel_id}/d (down)",
        "  last heard: "
        + ("never" if record.last_heard_at is None else f"{now - record.last_heard_at:.0f} s ago"),
    ]
    for key in record.keys:
        state = "valid" if key.valid_at(now) else "not valid now"
        if key.revoked_at is not None:
            state += f", revoked at {key.revoked_at:.0f}"
        lines.append(f"  key {key.public_key.hex()} ({state})")
    return lines
