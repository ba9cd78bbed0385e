"""Registry repository: vessels, their Ed25519 public keys, and their crew's unions.

Tables ``vessels``, ``vessel_keys`` and ``vessel_unions`` (migration set ``registry``). A
key is valid from a time until it is revoked; rotation keeps two valid for a while.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shore.store.database import Tx, optional_float
from shore.store.errors import RegistryError
from shore.store.migrations import Migration, MigrationSet

MIGRATIONS = MigrationSet(
    "registry",
    (
        Migration(
            "0001_vessels",
            """
        CREATE TABLE vessels (
            vessel_id {int} PRIMARY KEY,
            name TEXT NOT NULL,
            flag TEXT NOT NULL,
            registration TEXT NOT NULL,
            owner TEXT NOT NULL,
            added_at {real} NOT NULL,
            UNIQUE (flag, registration)
        );
        CREATE TABLE vessel_keys (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            public_key {blob} NOT NULL,
            valid_from {real} NOT NULL,
            revoked_at {real},
            PRIMARY KEY (vessel_id, public_key)
        );
        CREATE TABLE vessel_unions (
            vessel_id {int} NOT NULL REFERENCES vessels (vessel_id),
            union_id {int} NOT NULL,
            PRIMARY KEY (vessel_id, union_id)
        );
        """,
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class VesselInfo:
    """What the operator registers about a vessel."""

    name: str
    flag: str
    registration: str
    owner: str
    unions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for field_name in ("name", "flag", "registration", "owner"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip():
                raise RegistryError(f"vessel {field_name} must not be empty")
        if any(isinstance(u, bool) or not isinstance(u, int) or u < 0 for u in self.unions):
            raise RegistryError(f"union ids are whole numbers, not {self.unions!r}")


@dataclass(frozen=True, slots=True)
class VesselKey:
    """One of a vessel's public keys: batches verify with it from ``valid_from`` until revoked."""

    public_key: bytes
    valid_from: float
    revoked_at: float | None = None

    def valid_at(self, now: float) -> bool:
        """Whether batches received at ``now`` may verify with this key."""
        return self.valid_from <= now and (self.revoked_at is None or now < self.revoked_at)


@dataclass(frozen=True, slots=True)
class VesselRecord:
    """A registered vessel, with its keys (oldest first) and when it was last heard from."""

    vessel_id: int
    info: VesselInfo
    added_at: float
    keys: tuple[VesselKey, ...]
    last_heard_at: float | None = None

    def keys_valid_at(self, now: float) -> tuple[bytes, ...]:
        """The public keys that verify batches received at ``now``."""
        return keys_valid_at(self.keys, now)


def keys_valid_at(keys: Sequence[VesselKey], now: float) -> tuple[bytes, ...]:
    """Those of ``keys`` that verify batches received at ``now``, oldest first."""
    return tuple(key.public_key for key in keys if key.valid_at(now))


@dataclass(frozen=True, slots=True)
class RegisteredVessel:
    """A vessel as the registry holds it (the link state adds when it was last heard)."""

    vessel_id: int
    info: VesselInfo
    added_at: float
    keys: tuple[VesselKey, ...]

    def with_last_heard(self, last_heard_at: float | None) -> VesselRecord:
        """The full record."""
        return VesselRecord(self.vessel_id, self.info, self.added_at, self.keys, last_heard_at)


class Registry:
    """The registry's SQL; every method runs in the transaction it is given."""

    async def add(
        self, tx: Tx, info: VesselInfo, public_key: bytes, now: float, vessel_id: int | None
    ) -> int:
        """Register a vessel with its first key; returns its id (the next free one if None).

        Raises :class:`RegistryError` for a flag and registration already registered, or a
        vessel id already taken."""
        clash = await tx.fetchrow(
            "SELECT vessel_id FROM vessels WHERE flag = $1 AND registration = $2",
            info.flag,
            info.registration,
        )
        if clash is not None:
            raise RegistryError(
                f"a vessel with flag {info.flag} and registration {info.registration} "
                f"is already registered as vessel {clash[0]}"
            )
        if vessel_id is None:
            row = await tx.fetchrow("SELECT COALESCE(MAX(vessel_id), 0) + 1 FROM vessels")
            assert row is not None
            vessel_id = int(row[0])
        elif await tx.fetchrow("SELECT 1 FROM vessels WHERE vessel_id = $1", vessel_id):
            raise RegistryError(f"vessel id {vessel_id} is already taken")
        await tx.execute(
            "INSERT INTO vessels (vessel_id, name, flag, registration, owner, added_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            vessel_id,
            info.name,
            info.flag,
            info.registration,
            info.owner,
            float(now),
        )
        await tx.execute(
            "INSERT INTO vessel_keys (vessel_id, public_key, valid_from) VALUES ($1, $2, $3)",
            vessel_id,
            public_key,
            float(now),
        )
        await tx.executemany(
            "INSERT INTO vessel_unions (vessel_id, union_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            [(vessel_id, union) for union in info.unions],
        )
        return vessel_id

    async def vessels(self, tx: Tx, vessel_id: int | None = None) -> list[RegisteredVessel]:
        """Every registered vessel by id (or the one with ``vessel_id``), with keys and unions."""
        where, args = ("WHERE vessel_id = $1", (vessel_id,)) if vessel_id is not None else ("", ())
        rows = await tx.fetch(
            "SELECT vessel_id, name, flag, registration, owner, added_at "
            f"FROM vessels {where} ORDER BY vessel_id",
            *args,
        )
        found = []
        for vid, name, flag, registration, owner, added_at in rows:
            keys = await tx.fetch(
                "SELECT public_key, valid_from, revoked_at FROM vessel_keys "
                "WHERE vessel_id = $1 ORDER BY valid_from, public_key",
                vid,
            )
            unions = await tx.fetch(
                "SELECT union_id FROM vessel_unions WHERE vessel_id = $1 ORDER BY union_id",
                vid,
            )
            found.append(
                RegisteredVessel(
                    vessel_id=int(vid),
                    info=VesselInfo(
                        name, flag, registration, owner, tuple(int(u[0]) for u in unions)
                    ),
                    added_at=float(added_at),
                    keys=tuple(
                        VesselKey(bytes(k), float(since), optional_float(revoked))
                        for k, since, revoked in keys
                    ),
                )
            )
        return found

    async def keys(self, tx: Tx, vessel_id: int) -> tuple[VesselKey, ...] | None:
        """A registered vessel's keys (oldest first), in one statement; None when the vessel
        is not registered (what ingest needs of the registry for each batch)."""
        rows = await tx.fetch(
            "SELECT k.public_key, k.valid_from, k.revoked_at FROM vessels v "
            "LEFT JOIN vessel_keys k ON k.vessel_id = v.vessel_id WHERE v.vessel_id = $1 "
            "ORDER BY k.valid_from, k.public_key",
            vessel_id,
        )
        if not rows:
            return None
        return tuple(
            VesselKey(bytes(key), float(since), optional_float(revoked))
            for key, since, revoked in rows
            if key is not None
        )

    async def listing(
        self, tx: Tx, after: int | None = None, limit: int | None = None
    ) -> list[tuple[int, str, str]]:
        """(vessel_id, name, flag) of every registered vessel, by id; or of at most
        ``limit`` vessels with ids above ``after`` (a page: the primary key's order)."""
        if after is None and limit is None:
            rows = await tx.fetch("SELECT vessel_id, name, flag FROM vessels ORDER BY vessel_id")
        else:
            rows = await tx.fetch(
                "SELECT vessel_id, name, flag FROM vessels WHERE vessel_id > $1 "
                "ORDER BY vessel_id LIMIT $2",
                -1 if after is None else after,
                2**62 if limit is None else limit,
            )
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def count(self, tx: Tx) -> int:
        """How many vessels are registered."""
        row = await tx.fetchrow("SELECT COUNT(*) FROM vessels")
        assert row is not None
        return int(row[0])

    async def added_times(self, tx: Tx) -> dict[int, float]:
        """vessel_id -> when it was registered, for every registered vessel."""
        rows = await tx.fetch("SELECT vessel_id, added_at FROM vessels")
        return {int(r[0]): float(r[1]) for r in rows}

    async def require(self, tx: Tx, vessel_id: int) -> None:
        """Raise :class:`RegistryError` unless the vessel is registered."""
        if await tx.fetchrow("SELECT 1 FROM vessels WHERE vessel_id = $1", vessel_id) is None:
            raise RegistryError(f"vessel {vessel_id} is not registered; see 'shore vessel list'")

    async def add_key(self, tx: Tx, vessel_id: int, public_key: bytes, valid_from: float) -> None:
        """Add a key valid from ``valid_from`` (a key already there is left as it is)."""
        await self.require(tx, vessel_id)
        await tx.execute(
            "INSERT INTO vessel_keys (vessel_id, public_key, valid_from) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            vessel_id,
            public_key,
            float(valid_from),
        )

    async def revoke_key(self, tx: Tx, vessel_id: int, public_key: bytes, at: float) -> None:
        """Revoke a key from ``at`` (an earlier revocation stands)."""
        await self.require(tx, vessel_id)
        row = await tx.fetchrow(
            "SELECT revoked_at FROM vessel_keys WHERE vessel_id = $1 AND public_key = $2",
            vessel_id,
            public_key,
        )
        if row is None:
            raise RegistryError(
                f"vessel {vessel_id} has no key {public_key.hex()[:12]}...; see 'shore vessel show'"
            )
        if row[0] is None or float(row[0]) > at:
            await tx.execute(
                "UPDATE vessel_keys SET revoked_at = $3 WHERE vessel_id = $1 AND public_key = $2",
                vessel_id,
                public_key,
                float(at),
            )

    async def set_unions(self, tx: Tx, vessel_id: int, unions: Sequence[int]) -> None:
        """Replace the unions of a vessel's crew."""
        await self.require(tx, vessel_id)
        await tx.execute("DELETE FROM vessel_unions WHERE vessel_id = $1", vessel_id)
        await tx.executemany(
            "INSERT INTO vessel_unions (vessel_id, union_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            [(vessel_id, int(u)) for u in unions],
        )

    async def vessel_names(self, tx: Tx, vessel_ids: Sequence[int]) -> dict[int, VesselInfo]:
        """The registered information of some vessels (unions left out), by id."""
        found: dict[int, VesselInfo] = {}
        for vessel_id in sorted(set(vessel_ids)):
            row = await tx.fetchrow(
                "SELECT name, flag, registration, owner FROM vessels WHERE vessel_id = $1",
                vessel_id,
            )
            if row is not None:
                found[vessel_id] = VesselInfo(*row)
        return found
