"""What every unit of work of the store composes: the database and the repositories.

:class:`StoreParts` builds one repository per idea over one database; the units of work
(:mod:`~shore.store.ingest_units`, :mod:`~shore.store.delivery_units`,
:mod:`~shore.store.downlink_units`, :mod:`~shore.store.lane_units`,
:mod:`~shore.store.sos_units`) are its subclasses, and
:class:`~shore.store.relay_store.RelayStore` joins them.
"""

from __future__ import annotations

from shore.store.database import Database
from shore.store.deliveries import (
    DEFAULT_DEADLINE_S,
    DEFAULT_LEASE_S,
    DeliveryQueue,
    MessageTtl,
    PhraseLookup,
)
from shore.store.downlink import DownlinkQueue
from shore.store.escalations import Escalations
from shore.store.lane import LaneRepository
from shore.store.links import VesselLinks
from shore.store.refusals import Refusals
from shore.store.registry import Registry
from shore.store.sbd_fragments import SbdFragments
from shore.store.sos import SosAlerts
from shore.store.transparency_log import TransparencyLog
from shore.store.union_inbox import UnionInbox
from shore.store.uplink import Uplink


class StoreParts:
    """The database (``db``) and its repositories, each a public attribute::

        registry        vessels, keys, unions                   shore.store.registry
        links           per-vessel link state (replay window,   shore.store.links
                        acknowledgement owed, counters, heard)
        uplink          batches, messages, contacts             shore.store.uplink
        refusals        quarantine, batches refused for good    shore.store.refusals
        delivery_queue  deliveries, leases, attempts, outcomes  shore.store.deliveries
        union_inboxes   sealed reports handed to unions         shore.store.union_inbox
        downlink_queue  downlink items, batches, slot notes     shore.store.downlink
        lane            the grievance lane: uplink blocks,      shore.store.lane
                        unions' blocks for the downlink lane
        sos             SOS alerts                              shore.store.sos
        log             the transparency log                    shore.store.transparency_log
        escalations     cases a union passed to its second      shore.store.escalations
                        organisation (sealed packages)
        sbd_fragments   SBD fragments of payloads in progress   shore.store.sbd_fragments

    ``phrases`` expands quick-message codes for deliveries, ``lease_s`` is how long a
    delivery claim lasts, ``deadline_s`` how long a delivery may take from acceptance ashore,
    ``message_ttl`` how long a family message may wait from when it was written.
    """

    def __init__(
        self,
        db: Database,
        *,
        phrases: PhraseLookup | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
        message_ttl: MessageTtl | None = None,
    ) -> None:
        self.db = db
        self.phrases = phrases
        self.message_ttl = message_ttl or MessageTtl()
        dialect = db.dialect
        self.registry = Registry()
        self.links = VesselLinks(dialect)
        self.uplink = Uplink()
        self.refusals = Refusals()
        self.delivery_queue = DeliveryQueue(dialect, lease_s=lease_s, deadline_s=deadline_s)
        self.union_inboxes = UnionInbox()
        self.downlink_queue = DownlinkQueue()
        self.lane = LaneRepository(dialect)
        self.sos = SosAlerts(dialect)
        self.log = TransparencyLog(dialect)
        self.escalations = Escalations()
        self.sbd_fragments = SbdFragments()

    @property
    def lease_s(self) -> float:
        """How long a delivery claim lasts without an outcome."""
        return self.delivery_queue.lease_s

    @property
    def deadline_s(self) -> float:
        """How long a delivery may take, from acceptance ashore."""
        return self.delivery_queue.deadline_s
