"""The store's errors::

StoreError                  a storage failure, or a refused change (base class)
├── StoreUnavailable        the database cannot be opened, reached or written; nothing changed
├── RegistryError           a registry change that cannot be made as asked
├── DeliveryNotFound        the delivery named is not there, or not in a state for the action
├── MigrationRefused        the database holds migrations this relay does not know
└── LaneQueueFull           a union's blocks waiting for a vessel's downlink lane are at
                            their cap
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's own errors (a storage failure, or a refused change)."""


class StoreUnavailable(StoreError):
    """The database cannot be opened, reached or written; nothing was changed."""


class RegistryError(StoreError):
    """A registry change that cannot be made as asked (the message says why and what to do)."""


class DeliveryNotFound(StoreError):
    """The delivery named is not there, or not in a state the action applies to."""


class MigrationRefused(StoreError):
    """The database was migrated by a relay this one does not understand (a newer one)."""


class LaneQueueFull(StoreError):
    """A union's blocks waiting for a vessel's downlink lane would go over the cap: nothing
    was queued; the union posts them again once the lane has carried some (one period's
    blocks at a time)."""

    def __init__(self, vessel_id: int, union: int, waiting: int, new: int, cap: int) -> None:
        self.vessel_id = vessel_id
        self.union = union
        self.waiting = waiting
        self.new = new
        self.cap = cap
        super().__init__(
            f"union {union} has {waiting} blocks waiting for vessel {vessel_id}'s downlink "
            f"lane; {new} more would go over its {cap}: nothing was queued, post them again "
            "once the lane has carried some"
        )
