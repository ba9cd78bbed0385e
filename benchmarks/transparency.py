"""Transparency log at fleet scale: appends, roots, proofs, head signing and a vessel-month
report on a tiled log of a million to a hundred million leaves.

For each size a fresh SQLite store is made (the relay's own, migrations and all) and its
log is **bulk-built directly as tiles** (C2SP tlog-tiles, :mod:`protocol.tiles`), not
through the ingest: the other vessels' leaf hashes are pseudo-random 32-byte values
(SHAKE-256 of the tile number; their leaves are not stored, only their hashes in the
level-0 tiles), while one benchmark vessel's month of batches (``--vessel-batches``,
default one an hour for 30 days) are real leaves, stored in ``log_leaves`` and hashed into
their tiles, spread over the log's last 1.2 million leaves (a month at the fleet rate of
``docs/capacity.md``, 40,000 batches a day). Then, on that log:

- **append_per_s**: leaves appended through the log's append (the one the ingest calls:
  lock, leaf row, tiles, size), one transaction (and fsync) each;
- **root_ms**: the root of the whole log, read from its tiles (median);
- **inclusion_proof_ms** / **consistency_proof_ms**: one proof for a random leaf / from a
  random earlier size to the whole log (median);
- **sign_head_ms**: signing and storing a checkpoint (``shore.transparency.sign_head``:
  size, root from tiles, Ed25519 note signature, one short transaction; median);
- **vessel_month_report_ms**: the benchmark vessel's whole compliance report for the month
  (``shore.reports.build_report``: its leaves, an inclusion proof for each, consistency
  proofs for the month's heads, the figures, the shore's signature; median).

Usage::

    python benchmarks/transparency.py                          # 10^6 and 10^8, a table
    python benchmarks/transparency.py --json                   # {"sizes": [...]}
    python benchmarks/transparency.py --sizes 1000000,10000000 --dir /var/tmp/tlog

A hundred million leaves take about 3.3 GB of tiles in the store (``--dir``: where the
stores are made, a temporary directory by default; each store is removed after its size
unless ``--keep``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from protocol.compliance import ComplianceReport, CrewBytes, LogLeaf  # noqa: E402
from protocol.merkle import HASH_BYTES, leaf_hash  # noqa: E402
from protocol.signing import SigningKey  # noqa: E402
from protocol.tiles import TILE_WIDTH, TileBuilder, TileId, tile_root  # noqa: E402
from shore.reports import build_report  # noqa: E402
from shore.store import RelayStore, SqliteStore, VesselInfo  # noqa: E402
from shore.transparency import (  # noqa: E402
    consistency_proofs,
    inclusion_proofs,
    root,
    sign_head,
)

SHORE_KEY = SigningKey.from_seed(hashlib.sha256(b"vessel-relay transparency benchmark").digest())
VESSEL_KEY = SigningKey.from_seed(hashlib.sha256(b"vessel-relay benchmark vessel").digest())
VESSEL = 4242
MONTH = 202611
MONTH_START = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
REPORT_AT = datetime(2026, 12, 1, 6, 0, tzinfo=UTC).timestamp()
#: A month of the fleet's batches at 40,000 a day (docs/capacity.md).
FLEET_MONTH_LEAVES = 1_200_000
#: Tiles written per transaction while building.
BUILD_CHUNK_TILES = 2048
DEFAULT_SIZES = (1_000_000, 100_000_000)


@dataclass(frozen=True, slots=True)
class SizeResult:
    """One size's figures (the keys of ``--json``)."""

    leaves: int
    append_per_s: float
    root_ms: float
    inclusion_proof_ms: float
    consistency_proof_ms: float
    sign_head_ms: float
    vessel_month_report_ms: float


def vessel_leaves(count: int) -> list[bytes]:
    """The benchmark vessel's month: ``count`` batches spread evenly over 30 days, each
    with text of a few crew members (real, encoded log leaves)."""
    leaves: list[bytes] = []
    span_minutes = 30 * 24 * 60
    for k in range(count):
        minutes = int(MONTH_START // 60) + k * span_minutes // max(count, 1)
        crew = tuple(CrewBytes(1 + (k + j) % 30, MONTH, 40 + 7 * j) for j in range(3))
        leaf = LogLeaf(
            vessel_id=VESSEL,
            batch_seq=k + 1,
            first_minutes=minutes - 30,
            last_minutes=minutes,
            received_minutes=minutes + 5,
            crew_bytes=tuple(sorted(crew)),
            batch_sha256=hashlib.sha256(b"batch %d" % k).digest(),
        )
        leaves.append(leaf.encode())
    return leaves


def vessel_positions(size: int, count: int) -> list[int]:
    """Where the vessel's leaves sit: evenly over the log's last month of leaves."""
    window = min(size, FLEET_MONTH_LEAVES)
    first = size - window
    return [first + k * window // count for k in range(count)]


async def build_log(
    store: RelayStore,
    size: int,
    placed: dict[int, bytes],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Fill the store's empty log with ``size`` leaves, tiles written directly.

    ``placed`` maps positions to the real leaves stored there; every other leaf hash is
    pseudo-random. Level-0 tiles are made and written in chunks; their roots are kept in
    memory (32 bytes per 256 leaves) and tiled into the higher levels at the end.
    """
    async with store.db.transaction() as tx:
        if await store.log.lock(tx) != 0:
            raise RuntimeError("the benchmark builds into an empty log only")
        await tx.executemany(
            "INSERT INTO log_leaves (leaf_index, vessel_id, batch_seq, leaf, leaf_hash, "
            "appended_at) VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (index, VESSEL, LogLeaf.decode(data).batch_seq, data, leaf_hash(data), REPORT_AT)
                for index, data in sorted(placed.items())
            ],
        )
    hashed = {index: leaf_hash(data) for index, data in placed.items()}
    level1: list[bytes] = []
    tile_count = -(-size // TILE_WIDTH)
    for chunk_start in range(0, tile_count, BUILD_CHUNK_TILES):
        tiles: dict[TileId, bytes] = {}
        for number in range(chunk_start, min(tile_count, chunk_start + BUILD_CHUNK_TILES)):
            first = number * TILE_WIDTH
            width = min(TILE_WIDTH, size - first)
            data = bytearray(
                hashlib.shake_256(b"other vessels %d" % number).digest(width * HASH_BYTES)
            )
            for index in range(first, first + width):
                if index in hashed:
                    offset = (index - first) * HASH_BYTES
                    data[offset : offset + HASH_BYTES] = hashed[index]
            tiles[(0, number)] = bytes(data)
            if width == TILE_WIDTH:
                level1.append(tile_root(bytes(data)))
        async with store.db.transaction() as tx:
            await store.log.put_tiles(tx, tiles)
        if progress is not None:
            progress(min(size, (chunk_start + BUILD_CHUNK_TILES) * TILE_WIDTH), size)
    # levels 1 and up: the level-1 hashes tiled like leaves, one level up
    upper = TileBuilder.resume(0, {})
    upper.extend(level1)
    async with store.db.transaction() as tx:
        await store.log.put_tiles(
            tx, {(level + 1, index): data for (level, index), data in upper.changed().items()}
        )
        await tx.execute("UPDATE log_state SET tree_size = $1, tiled_size = $1 WHERE id = 1", size)


async def _median_ms(action: Callable[[], Awaitable[object]], runs: int) -> float:
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        await action()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


async def measure_size(
    size: int,
    directory: Path,
    *,
    batches: int = 720,
    samples: int = 30,
    appends: int = 300,
    progress: Callable[[str], None] | None = None,
) -> tuple[SizeResult, ComplianceReport]:
    """Build a log of ``size`` leaves in a store under ``directory`` and measure it; also
    returns the vessel-month report made (it verifies against the shore key)."""
    rng = random.Random(size)
    store = await SqliteStore.open(directory / f"transparency-{size}.db")
    try:
        await store.add_vessel(
            VesselInfo("Benchmark Star", "TH", "TH-4242", "Owner"),
            VESSEL_KEY.verify_key.key,
            MONTH_START,
            vessel_id=VESSEL,
        )
        count = min(batches, size)
        placed = dict(zip(vessel_positions(size, count), vessel_leaves(count), strict=True))
        began = time.perf_counter()

        def built(done: int, total: int) -> None:
            if progress is not None and (done == total or done % (TILE_WIDTH * 65_536) == 0):
                rate = done / max(time.perf_counter() - began, 1e-9)
                progress(f"  {size:,}: {done:,} of {total:,} leaves tiled ({rate:,.0f}/s)")

        await build_log(store, size, placed, progress=built)
        if progress is not None:
            progress(f"  {size:,}: built in {time.perf_counter() - began:,.1f} s")
        root_ms = await _median_ms(lambda: root(store), samples)
        inclusion_ms = await _median_ms(
            lambda: inclusion_proofs(store, [rng.randrange(size)], size), samples
        )
        consistency_ms = await _median_ms(
            lambda: consistency_proofs(store, [rng.randrange(1, size + 1)], size), samples
        )
        clock = iter(range(10**9))
        sign_ms = await _median_ms(
            lambda: sign_head(store, SHORE_KEY, REPORT_AT - 600 + next(clock)), min(samples, 10)
        )
        reports: list[ComplianceReport] = []

        async def report() -> None:
            reports.append(await build_report(store, VESSEL, MONTH, SHORE_KEY, REPORT_AT))

        report_ms = await _median_ms(report, 3)
        start = time.perf_counter()
        for k in range(appends):
            leaf = LogLeaf(VESSEL, 10_000 + k, 1, 2, 3, (), bytes(32)).encode()
            async with store.db.transaction() as tx:
                await store.log.append_encoded(tx, VESSEL, 10_000 + k, leaf, REPORT_AT)
        append_per_s = round(appends / (time.perf_counter() - start), 1)
    finally:
        await store.close()
    result = SizeResult(
        leaves=size,
        append_per_s=append_per_s,
        root_ms=root_ms,
        inclusion_proof_ms=inclusion_ms,
        consistency_proof_ms=consistency_ms,
        sign_head_ms=sign_ms,
        vessel_month_report_ms=report_ms,
    )
    return result, reports[-1]


async def run(
    sizes: Sequence[int],
    directory: Path | None = None,
    *,
    keep: bool = False,
    batches: int = 720,
    samples: int = 30,
    appends: int = 300,
    progress: Callable[[str], None] | None = None,
) -> list[SizeResult]:
    """Measure each size in turn (a fresh store each)."""
    results: list[SizeResult] = []
    for size in sizes:
        made = Path(tempfile.mkdtemp(prefix="vr-tlog-", dir=directory))
        try:
            result, _ = await measure_size(
                size, made, batches=batches, samples=samples, appends=appends, progress=progress
            )
            results.append(result)
        finally:
            if not keep:
                shutil.rmtree(made, ignore_errors=True)
    return results


def to_json(results: Sequence[SizeResult]) -> str:
    """The ``--json`` document: ``{"sizes": [{"leaves": N, ...}, ...]}``."""
    return json.dumps({"sizes": [asdict(r) for r in results]}, indent=1)


def print_table(results: Sequence[SizeResult]) -> None:
    """The figures as a table (milliseconds are medians)."""
    print(
        f"{'leaves':>13}  {'appends/s':>9}  {'root ms':>8}  {'inclusion ms':>12}  "
        f"{'consistency ms':>14}  {'sign head ms':>12}  {'vessel-month report ms':>22}"
    )
    for r in results:
        print(
            f"{r.leaves:>13,}  {r.append_per_s:>9,.0f}  {r.root_ms:>8.2f}  "
            f"{r.inclusion_proof_ms:>12.2f}  {r.consistency_proof_ms:>14.2f}  "
            f"{r.sign_head_ms:>12.2f}  {r.vessel_month_report_ms:>22.1f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated log sizes in leaves (default: 1000000,100000000)",
    )
    parser.add_argument("--json", action="store_true", help="print {'sizes': [...]} as JSON")
    parser.add_argument("--dir", type=Path, default=None, help="where to make the stores")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument("--vessel-batches", type=int, default=720, help="the vessel's month")
    parser.add_argument("--samples", type=int, default=30, help="runs per median")
    parser.add_argument("--appends", type=int, default=300, help="appends timed")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be whole numbers separated by commas, not {args.sizes!r}")
    if any(s < 1 for s in sizes):
        parser.error("every size must be at least one leaf")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = asyncio.run(
        run(
            sizes,
            args.dir,
            keep=args.keep,
            batches=args.vessel_batches,
            samples=args.samples,
            appends=args.appends,
            progress=progress,
        )
    )
    if args.json:
        print(to_json(results))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
