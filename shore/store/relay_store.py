"""The relay's store: one database, its repositories, and the units of work over them.

:class:`RelayStore` holds the :class:`~shore.store.database.Database` (``db``) and one
repository per idea, each owning its tables and its migration set
(:class:`~shore.store.parts.StoreParts` lists them). Each of its methods is one *unit of
work*: ONE transaction (``db.transaction()``) in which it asks the repositories it needs,
handing each the transaction. No repository touches another's tables; what crosses them
happens in a unit of work. The units are grouped by flow::

    registry units       here                    vessels and keys (registry + link state)
    IngestUnits          shore.store.ingest_units    a batch stored or refused, read back
    DeliveryUnits        shore.store.delivery_units  claims, attempts, outcomes + receipts
    DownlinkUnits        shore.store.downlink_units  queued envelopes, signed batches
    LaneUnits            shore.store.lane_units      the grievance lane (unions, downlink lane)
    SosUnits             shore.store.sos_units       SOS alerts
    RetentionUnits       shore.store.retention_units content purged after the retention
    SbdUnits             shore.store.sbd_units       SBD fragments held until their payload is kept

Every service depends only on a small protocol of its own (``shore.ingest.IngestStore``,
``shore.delivery.DeliveryStore``, ``shore.downlink.DownlinkStore``, ``shore.alerts.SosStore``,
``shore.union_api.UnionApiStore``, ``shore.registry.RegistryStore``,
``shore.reports.ReportStore``, ``shore.transparency.LogStore``), which this class satisfies.

Durability, stated once: every method that writes is one transaction; when it returns, its
change is committed (SQLite: WAL, ``synchronous=FULL``). Every insert of something that
came over the link is idempotent: a resent batch, a replayed message or a second
``finish_delivery`` changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shore.store.deliveries import MIGRATIONS as DELIVERY_MIGRATIONS
from shore.store.deliveries import PhraseLookup
from shore.store.delivery_units import DeliveryUnits
from shore.store.downlink import MIGRATIONS as DOWNLINK_MIGRATIONS
from shore.store.downlink_units import DownlinkUnits
from shore.store.escalations import MIGRATIONS as ESCALATION_MIGRATIONS
from shore.store.ingest_units import IngestUnits
from shore.store.lane import MIGRATIONS as LANE_MIGRATIONS
from shore.store.lane_units import LaneUnits
from shore.store.links import MIGRATIONS as LINK_MIGRATIONS
from shore.store.migrations import MigrationSet, migrate
from shore.store.refusals import MIGRATIONS as REFUSAL_MIGRATIONS
from shore.store.registry import MIGRATIONS as REGISTRY_MIGRATIONS
from shore.store.registry import VesselInfo, VesselKey, VesselRecord
from shore.store.retention_units import RetentionUnits
from shore.store.sbd_fragments import MIGRATIONS as SBD_FRAGMENT_MIGRATIONS
from shore.store.sbd_units import SbdUnits
from shore.store.sos import MIGRATIONS as SOS_MIGRATIONS
from shore.store.sos_units import SosUnits
from shore.store.transparency_log import MIGRATIONS as LOG_MIGRATIONS
from shore.store.union_inbox import MIGRATIONS as UNION_INBOX_MIGRATIONS
from shore.store.uplink import MIGRATIONS as UPLINK_MIGRATIONS

__all__ = ["MIGRATION_SETS", "PhraseLookup", "RelayStore"]

#: Every repository's migration set, in the order they apply (tables referenced by
#: foreign keys first).
MIGRATION_SETS: tuple[MigrationSet, ...] = (
    REGISTRY_MIGRATIONS,
    LINK_MIGRATIONS,
    UPLINK_MIGRATIONS,
    REFUSAL_MIGRATIONS,
    DELIVERY_MIGRATIONS,
    UNION_INBOX_MIGRATIONS,
    DOWNLINK_MIGRATIONS,
    SOS_MIGRATIONS,
    LOG_MIGRATIONS,
    LANE_MIGRATIONS,
    ESCALATION_MIGRATIONS,
    SBD_FRAGMENT_MIGRATIONS,
)

_log = logging.getLogger(__name__)


class RelayStore(
    IngestUnits, DeliveryUnits, DownlinkUnits, LaneUnits, SosUnits, RetentionUnits, SbdUnits
):
    """The relay's store over one open database (see the module docstring).

    Open one with :meth:`shore.store.sqlite.SqliteStore.open` or
    :meth:`shore.store.postgres.PostgresStore.open` (or build one over an open
    :class:`~shore.store.database.Database` and call :meth:`migrate`).
    """

    async def migrate(self) -> list[tuple[str, str]]:
        """Apply pending migrations of every repository; (set, name) of those applied.

        Then gives a transparency log made before the tiles existed its tiles, from its
        leaves (:meth:`build_log_tiles`)."""
        applied = await migrate(self.db, MIGRATION_SETS)
        await self.build_log_tiles()
        return applied

    async def build_log_tiles(self) -> int:
        """Build the log's tiles from its leaves where they lag (after an upgrade), in
        steps of one short transaction each, logging the progress; returns the leaves the
        tiles hold. A no-op once built (every append extends them)."""
        logged = False
        while True:
            async with self.db.transaction() as tx:
                size = await self.log.lock(tx)
                tiled = await self.log.build_tiles(tx, size)
            if tiled >= size and not logged:
                return tiled
            logged = True
            _log.info(
                "transparency log tiles: %d of %d leaves built (%.0f%%)",
                tiled,
                size,
                100 * tiled / size,
            )
            if tiled >= size:
                return tiled

    async def close(self) -> None:
        """Close the database; the store is unusable afterwards."""
        await self.db.close()

    async def add_vessel(
        self, info: VesselInfo, public_key: bytes, now: float, vessel_id: int | None = None
    ) -> int:
        """Register a vessel with its first key; returns its vessel id (assigned if None)."""
        async with self.db.transaction() as tx:
            vessel_id = await self.registry.add(tx, info, public_key, now, vessel_id)
            await self.links.open(tx, vessel_id)
        return vessel_id

    async def get_vessel(self, vessel_id: int) -> VesselRecord | None:
        """A registered vessel, or None."""
        found = await self._vessels(vessel_id)
        return found[0] if found else None

    async def vessel_keys(self, vessel_id: int) -> tuple[VesselKey, ...] | None:
        """A registered vessel's keys, oldest first, or None (one statement: ingest asks
        for each batch)."""
        async with self.db.transaction() as tx:
            return await self.registry.keys(tx, vessel_id)

    async def list_vessels(self) -> Sequence[VesselRecord]:
        """Every registered vessel, by id."""
        return await self._vessels(None)

    async def _vessels(self, vessel_id: int | None) -> list[VesselRecord]:
        async with self.db.transaction() as tx:
            vessels = await self.registry.vessels(tx, vessel_id)
            heard = await self.links.last_heard(tx, vessel_id)
        return [v.with_last_heard(heard[v.vessel_id]) for v in vessels if v.vessel_id in heard]

    async def add_vessel_key(
        self, vessel_id: int, public_key: bytes, valid_from: float, now: float
    ) -> None:
        """Add a key (rotation): batches verify with it from ``valid_from``."""
        async with self.db.transaction() as tx:
            await self.registry.add_key(tx, vessel_id, public_key, valid_from)

    async def revoke_vessel_key(self, vessel_id: int, public_key: bytes, at: float) -> None:
        """Revoke a key from ``at``: batches received later do not verify with it."""
        async with self.db.transaction() as tx:
            await self.registry.revoke_key(tx, vessel_id, public_key, at)

    async def set_vessel_unions(self, vessel_id: int, unions: Sequence[int]) -> None:
        """Replace the unions of a vessel's crew."""
        async with self.db.transaction() as tx:
            await self.registry.set_unions(tx, vessel_id, unions)
