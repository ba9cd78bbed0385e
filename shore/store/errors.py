"""The store's errors::

StoreError                  a storage failure, or a refused change (base class)
├── StoreUnavailable        the database cannot be opened, reached or written; nothing changed
├── RegistryError           a registry change that cannot be made as asked
├── DeliveryNotFound        the delivery named is not there, or not in a state for the action
└── MigrationRefused        the database holds migrations this relay does not know
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
