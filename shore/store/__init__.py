"""The shore relay's store: one database, small repositories, one transaction seam.

::

    database        Tx, Dialect, Database: the connection and its public transaction()
    sqlite          SqliteDatabase (WAL, synchronous=FULL) and SqliteStore
    postgres        PostgresDatabase (asyncpg pool) and PostgresStore (import it from there)
    migrations      named migration sets, recorded in store_migrations (set, name, applied_at)
    registry        vessels, keys, unions                          (repository)
    links           per-vessel link state: replay window, acknowledgement owed
    uplink          batches, messages, contacts
    refusals        quarantine, batches refused for good
    deliveries      the delivery queue: leases, attempts, outcomes
    union_inbox     sealed reports handed to unions
    downlink        downlink items, signed downlink batches, slot notes
    lane            the grievance lane: uplink blocks, unions' blocks for the downlink lane
    sos             SOS alerts
    sbd_fragments   SBD fragments held until their payload is whole and kept
    transparency_log  leaves, hash tiles (C2SP tlog-tiles), checkpoints, co-signatures
    parts           StoreParts: the database and one instance of each repository
    *_units         the units of work, by flow: ingest, delivery, downlink, sos
    relay_store     RelayStore: all the units of work (and the registry's) over StoreParts
    ops             OperatorQueries: what the dashboard and the metrics read

A repository owns its tables and its migration set and runs its SQL in a transaction it is
handed; a unit of work (:class:`RelayStore`'s methods, :mod:`shore.transparency`'s tasks,
:class:`~shore.store.ops.OperatorQueries`) opens that transaction and composes them.

This package imports nothing of the shore but :mod:`shore.vocabulary`; the services above it
each depend on a small protocol of their own. Names most callers need are re-exported here;
:class:`~shore.store.postgres.PostgresStore` is not (it imports asyncpg).
"""

from __future__ import annotations

from shore.store.database import Database, Dialect, Tx
from shore.store.deliveries import Delivery, DeliveryKey, DeliveryRecord
from shore.store.downlink import DownlinkBatch, DownlinkEncoder, SlotItemMaker
from shore.store.errors import (
    DeliveryNotFound,
    LaneQueueFull,
    MigrationRefused,
    RegistryError,
    StoreError,
    StoreUnavailable,
)
from shore.store.lane import LaneStored, LaneUpBlock
from shore.store.lane_units import CoverMaker, LanePeriodsQueued
from shore.store.links import ReplayWindow
from shore.store.refusals import QuarantineEntry
from shore.store.registry import VesselInfo, VesselKey, VesselRecord
from shore.store.relay_store import PhraseLookup, RelayStore
from shore.store.sos import SosAlertDue, SosAlertRecord
from shore.store.sqlite import SqliteStore
from shore.store.uplink import ContactRecord, IngestOutcome, IngestResult, MessageRecord

__all__ = [
    "ContactRecord",
    "CoverMaker",
    "Database",
    "Delivery",
    "DeliveryKey",
    "DeliveryNotFound",
    "DeliveryRecord",
    "Dialect",
    "DownlinkBatch",
    "DownlinkEncoder",
    "IngestOutcome",
    "IngestResult",
    "LanePeriodsQueued",
    "LaneQueueFull",
    "LaneStored",
    "LaneUpBlock",
    "MessageRecord",
    "MigrationRefused",
    "PhraseLookup",
    "QuarantineEntry",
    "RegistryError",
    "RelayStore",
    "ReplayWindow",
    "SlotItemMaker",
    "SosAlertDue",
    "SosAlertRecord",
    "SqliteStore",
    "StoreError",
    "StoreUnavailable",
    "Tx",
    "VesselInfo",
    "VesselKey",
    "VesselRecord",
]
