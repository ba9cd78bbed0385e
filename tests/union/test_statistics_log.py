"""A union's signed grievance statistics logged in the relay's transparency log.

The union posts its signed aggregate over the union API ('union publish-stats'); the relay
checks it is signed by that union's registered key, names that union and suppresses small
cells, and appends a statistics leaf beside the vessels' batch leaves. Once the relay has
signed a checkpoint covering the leaf, the union gets a receipt (leaf, checkpoint,
inclusion proof) that an inspector checks offline with the shore's public key
('report verify-stats --receipt').
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from protocol.compliance import LogLeaf, ReportInvalid
from protocol.grievance_stats import (
    StatisticsInvalid,
    compute_statistics,
    sign_statistics,
    statistics_digest,
)
from protocol.signing import SigningKey
from protocol.statistics_log import StatisticsLeaf
from protocol.union_requests import MAX_STATISTICS_REQUEST_BYTES
from shore.store import SqliteStore
from shore.transparency import sign_head
from shore.union.client import RelayClient, RelayUnreachable
from shore.union.keys import UnionIdentity, init_union
from shore.union_api import UnionAccount, make_union_api
from tests.kit.ports import free_port
from tests.kit.wait import until_started
from vessel_relay.cli import app

runner = CliRunner()
SHORE_KEY = SigningKey.from_seed(bytes(range(1, 33)))
OTHER_SHORE_KEY = SigningKey.from_seed(bytes(range(2, 34)))


@dataclass
class Relay:
    store: SqliteStore
    union: UnionIdentity
    other: UnionIdentity


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    union = init_union(tmp_path / "union", 7, "Fishers' Union", url)
    other = init_union(tmp_path / "other", 8, "Other Union", url)
    store = await SqliteStore.open(tmp_path / "relay.db")
    accounts = [
        UnionAccount(7, union.signing_key.verify_key),
        UnionAccount(8, other.signing_key.verify_key),
    ]
    server = uvicorn.Server(
        uvicorn.Config(
            make_union_api(store, accounts),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    await until_started(server, task)
    try:
        yield Relay(store, union, other)
    finally:
        server.should_exit = True
        await task
        await store.close()


def _statistics(identity: UnionIdentity, last_month: str = "2026-12") -> dict[str, object]:
    body = compute_statistics(
        [],
        union_id=identity.union_id,
        union_name=identity.name,
        first_month="2026-01",
        last_month=last_month,
        made_minutes=int(time.time() // 60),
    )
    return sign_statistics(body, identity.signing_key)


async def _batches(store: SqliteStore, count: int) -> None:
    """Vessels' batch leaves, so the statistics leaf sits inside a real tree."""
    async with store.db.transaction() as tx:
        for seq in range(count):
            await store.log.append_encoded(tx, 1, seq, b"batch leaf %d" % seq, time.time())


async def _cli(*args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_a_statistics_leaf_is_its_own_kind() -> None:
    """A statistics leaf round-trips, and neither it nor a batch leaf reads as the other."""
    leaf = StatisticsLeaf(7, 29_000_000, bytes(range(32)))
    assert StatisticsLeaf.decode(leaf.encode()) == leaf
    with pytest.raises(ReportInvalid):
        LogLeaf.decode(leaf.encode())
    batch = LogLeaf(1, 2, 3, 4, 5, (), bytes(32))
    with pytest.raises(StatisticsInvalid, match="not a version 1 statistics leaf"):
        StatisticsLeaf.decode(batch.encode())
    with pytest.raises(StatisticsInvalid):
        StatisticsLeaf(7, 1, b"short")


async def test_published_statistics_get_a_receipt_an_inspector_checks_offline(
    relay: Relay, tmp_path: Path
) -> None:
    """The union publishes its statistics: logged at once as a leaf after the vessels'
    batches; the receipt comes once the relay signs its next checkpoint; posting again
    keeps the same leaf; the inspector's check passes with the file, the receipt and the
    shore's key, and fails with other statistics, another shore key or a changed proof."""
    await _batches(relay.store, 5)
    document = _statistics(relay.union)
    stats_file = tmp_path / "stats.json"
    stats_file.write_text(json.dumps(document, indent=1), encoding="utf-8")
    receipt_file = tmp_path / "stats.receipt.json"
    where = ["--dir", str(relay.union.directory)]

    code, out, err = await _cli(
        "union", "publish-stats", *where, str(stats_file), "-o", str(receipt_file)
    )
    assert code == 0, err
    assert "logged by the relay as leaf 5; no signed checkpoint covers it yet" in out
    assert not receipt_file.exists()
    async with relay.store.db.transaction() as tx:
        assert len(await relay.store.log.vessel_leaves(tx, 1)) == 5

    await sign_head(relay.store, SHORE_KEY, time.time())
    await _batches_after(relay.store)
    code, out, err = await _cli(
        "union", "publish-stats", *where, str(stats_file), "-o", str(receipt_file)
    )
    assert code == 0, err
    assert f"already logged by the relay as leaf 5; receipt: {receipt_file}" in out
    receipt = json.loads(receipt_file.read_text(encoding="utf-8"))
    assert receipt["leaf_index"] == 5
    assert receipt["checkpoint"]["tree_size"] == 6
    leaf = StatisticsLeaf.decode(bytes.fromhex(receipt["leaf"]))
    assert (leaf.union_id, leaf.document_sha256) == (7, statistics_digest(document))

    shore = ["--shore-key", SHORE_KEY.verify_key.key.hex()]
    verify = ["report", "verify-stats", str(stats_file), "--receipt", str(receipt_file)]
    code, out, err = await _cli(*verify, *shore)
    assert code == 0, err
    assert "OK: logged by the relay as leaf 5" in out
    assert "checkpoint of 6 leaves" in out

    code, _, err = await _cli(*verify, "--shore-key", OTHER_SHORE_KEY.verify_key.key.hex())
    assert code == 1
    assert "not signed by this shore key" in err

    later = tmp_path / "later.json"
    later.write_text(json.dumps(_statistics(relay.union, "2026-11")), encoding="utf-8")
    code, _, err = await _cli(
        "report", "verify-stats", str(later), "--receipt", str(receipt_file), *shore
    )
    assert code == 1
    assert "logs other statistics than this file" in err

    changed = dict(receipt)
    proof = list(receipt["inclusion_proof"])
    proof[0] = "00" * 32
    changed["inclusion_proof"] = proof
    changed_file = tmp_path / "changed.receipt.json"
    changed_file.write_text(json.dumps(changed), encoding="utf-8")
    code, _, err = await _cli(
        "report", "verify-stats", str(stats_file), "--receipt", str(changed_file), *shore
    )
    assert code == 1
    assert "not in the signed log" in err

    code, _, err = await _cli("report", "verify-stats", str(stats_file), *shore)
    assert code == 2
    assert "give the relay's receipt too" in err


async def _batches_after(store: SqliteStore) -> None:
    """A vessel batch logged after the checkpoint: the receipt is of the signed tree."""
    async with store.db.transaction() as tx:
        await store.log.append_encoded(tx, 2, 0, b"a later batch", time.time())


async def test_the_relay_logs_only_a_unions_own_honest_statistics(relay: Relay) -> None:
    """The relay refuses statistics signed by another union's key, naming another union,
    or publishing a count under the threshold, and a body over the route's limit before
    reading it; a union cannot fetch the receipt of another union's leaf. Nothing refused
    reaches the log."""
    mine = json.dumps(_statistics(relay.union)).encode()
    other = RelayClient(relay.other)
    own = RelayClient(relay.union)
    try:
        with pytest.raises(RelayUnreachable, match="signed by another key") as refused:
            await asyncio.to_thread(other.publish_statistics, mine)
        assert refused.value.status == 400

        body = compute_statistics(
            [], union_id=7, union_name="x", first_month="2026-01", last_month="2026-02",
            made_minutes=1,
        )  # fmt: skip
        forged = json.dumps(sign_statistics(body, relay.other.signing_key)).encode()
        with pytest.raises(RelayUnreachable, match="name another union than 8"):
            await asyncio.to_thread(other.publish_statistics, forged)

        small = dict(body)
        small["total"] = dict(body["total"]) | {"reports": 2}
        leaky = json.dumps(sign_statistics(small, relay.union.signing_key)).encode()
        with pytest.raises(RelayUnreachable, match="under the threshold"):
            await asyncio.to_thread(own.publish_statistics, leaky)

        huge = b'{"statistics": "' + b"x" * MAX_STATISTICS_REQUEST_BYTES + b'"}'
        with pytest.raises(RelayUnreachable) as too_big:
            await asyncio.to_thread(own.publish_statistics, huge)
        assert too_big.value.status == 413

        async with relay.store.db.transaction() as tx:
            assert (await relay.store.log.sizes(tx))[0] == 0

        index, new = await asyncio.to_thread(own.publish_statistics, mine)
        assert (index, new) == (0, True)
        assert await asyncio.to_thread(own.statistics_receipt, index) is None
        with pytest.raises(RelayUnreachable, match="not statistics of union 8") as theirs:
            await asyncio.to_thread(other.statistics_receipt, index)
        assert theirs.value.status == 404
    finally:
        other.close()
        own.close()
