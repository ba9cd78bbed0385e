"""Statistics leaves in the relay's transparency log, on SQLite and PostgreSQL.

A union's signed aggregate is logged once (the same digest again keeps its leaf), never
counts as a vessel's leaf, and gets a receipt only once a signed head covers it; a leaf of
another union or a vessel is not handed out as this union's statistics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol.merkle import leaf_hash, verify_inclusion
from protocol.statistics_log import StatisticsLeaf
from shore.store import RelayStore, SqliteStore
from shore.store.errors import RegistryError
from shore.store.postgres import PostgresStore
from shore.transparency import sign_head
from tests.shore.store_fixtures import SHORE_KEY, T0, PostgresServer
from tests.shore.test_store import postgres  # noqa: F401 (the session's PostgreSQL server)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RelayStore]:
    """A fresh store of each backend."""
    opened: RelayStore
    if request.param == "sqlite":
        opened = await SqliteStore.open(tmp_path / "relay.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        opened = await PostgresStore.open(server.create_database())
    try:
        yield opened
    finally:
        await opened.close()


async def test_statistics_are_logged_once_and_proven_after_the_next_head(
    store: RelayStore,
) -> None:
    """Two vessel batches, then union 7's statistics (leaf 2), union 8's (leaf 3), and union
    7's again, which keeps leaf 2. No receipt before a head; after one, the proof puts the
    leaf in the signed root. Vessel 1's leaves stay its two."""
    async with store.db.transaction() as tx:
        for seq in range(2):
            await store.log.append_encoded(tx, 1, seq, b"batch %d" % seq, T0)
    digest = bytes(range(32))
    assert await store.log_statistics(7, digest, T0) == (
        2,
        StatisticsLeaf(7, int(T0 // 60), digest).encode(),
        True,
    )
    index8, _, new8 = await store.log_statistics(8, digest, T0 + 60)
    assert (index8, new8) == (3, True)
    index, leaf, new = await store.log_statistics(7, digest, T0 + 120)
    assert (index, new) == (2, False)
    assert StatisticsLeaf.decode(leaf).logged_minutes == int(T0 // 60)
    assert await store.statistics_receipt(7, 2) is None

    await sign_head(store, SHORE_KEY, T0 + 180)
    found = await store.statistics_receipt(7, 2)
    assert found is not None
    data, head, proof = found
    assert data == leaf
    assert head.head.tree_size == 4
    verify_inclusion(leaf_hash(data), 2, head.head.tree_size, proof, head.head.root)
    with pytest.raises(RegistryError, match="not statistics of union 8"):
        await store.statistics_receipt(8, 2)
    with pytest.raises(RegistryError):
        await store.statistics_receipt(7, 0)  # a vessel's batch
    with pytest.raises(RegistryError):
        await store.statistics_receipt(7, 99)
    async with store.db.transaction() as tx:
        assert [i for i, _ in await store.log.vessel_leaves(tx, 1)] == [0, 1]
