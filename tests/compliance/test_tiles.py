"""The tiled log against the linear RFC 9162 reference: roots and proofs agree, any size."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.merkle import (
    Node,
    combine,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    range_nodes,
    root_hash,
    root_plan,
)
from protocol.tiles import (
    TILE_WIDTH,
    TileBuilder,
    TileId,
    edge_tile_ids,
    subtree_hash,
    tile_path,
    tiles_for,
)


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _tiles(hashes: list[bytes]) -> dict[TileId, bytes]:
    builder = TileBuilder.resume(0, {})
    builder.extend(hashes)
    return builder.changed()


def _from_tiles(plan: list[list[Node]], tiles: dict[TileId, bytes]) -> list[bytes]:
    nodes = {node for step in plan for node in step}
    assert tiles_for(nodes) <= set(tiles)
    return combine(plan, {node: subtree_hash(node, tiles) for node in nodes})


# Sizes around tile boundaries (256, 65,536) and random ones, up to about 70,000 leaves.
SIZES = st.one_of(
    st.integers(1, 600),
    st.sampled_from([255, 256, 257, 511, 512, 65_535, 65_536, 65_537]),
    st.integers(600, 70_000),
)
ALL = _leaves(70_000)
ALL_TILES = _tiles(ALL)


@settings(max_examples=60, deadline=None)
@given(size=SIZES, data=st.data())
def test_tiled_roots_and_proofs_equal_the_linear_ones(size: int, data: st.DataObject) -> None:
    """For a log of any size, the root, an inclusion proof and a consistency proof read
    from tiles are byte for byte those of the linear RFC 9162 code."""
    hashes = ALL[:size]
    assert _from_tiles(root_plan(size), ALL_TILES) == [root_hash(hashes)]
    index = data.draw(st.integers(0, size - 1))
    assert _from_tiles(inclusion_plan(index, size), ALL_TILES) == inclusion_proof(
        hashes, index, size
    )
    first = data.draw(st.integers(0, size))
    assert _from_tiles(consistency_plan(first, size), ALL_TILES) == consistency_proof(
        hashes, first, size
    )


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 3_000), split=st.data())
def test_appending_in_steps_builds_the_same_tiles(size: int, split: st.DataObject) -> None:
    """A log appended one batch at a time (the ingest, resuming from the stored edge tiles)
    ends with exactly the tiles of a log built at once."""
    hashes = ALL[:size]
    stored: dict[TileId, bytes] = {}
    done = 0
    while done < size:
        step = split.draw(st.integers(1, size - done))
        edge = {t: stored[t] for t in edge_tile_ids(done) if t in stored}
        builder = TileBuilder.resume(done, edge)
        builder.extend(hashes[done : done + step])
        stored.update(builder.changed())
        done += step
    assert stored == _tiles(hashes)


def test_reads_are_logarithmic() -> None:
    """At 10^8 leaves a root, an inclusion proof and a consistency proof each need only a
    few tiles per level (four levels), not the leaves."""
    size = 100_000_000
    for plan in (
        root_plan(size),
        inclusion_plan(54_321_987, size),
        consistency_plan(99_999_001, size),
    ):
        tiles = tiles_for(node for step in plan for node in step)
        assert len(tiles) <= 2 * 4 + 2


def test_a_subtree_not_complete_in_the_tiles_is_refused() -> None:
    """Tiles read for a smaller tree cannot answer for a bigger one: a clear error."""
    tiles = _tiles(ALL[:300])
    with pytest.raises(ValueError, match="holds 44 hashes"):
        subtree_hash((5, 9), tiles)  # leaves 288..319, beyond 300


def test_resume_refuses_edge_tiles_of_another_size() -> None:
    """Stored tiles that do not match the log's size are refused, not silently extended."""
    tiles = _tiles(ALL[:300])
    with pytest.raises(ValueError, match="needs 45"):
        TileBuilder.resume(301, tiles)


def test_tile_paths_follow_tlog_tiles() -> None:
    """Tile names are those of C2SP tlog-tiles (index groups of three, partial widths)."""
    assert tile_path(0, 1_234_067, TILE_WIDTH) == "tile/0/x001/x234/067"
    assert tile_path(1, 7, 3) == "tile/1/007.p/3"
    assert tile_path(2, 0, TILE_WIDTH) == "tile/2/000"


def test_range_nodes_cover_each_leaf_once() -> None:
    """A run of leaves is covered by aligned complete subtrees, each leaf exactly once."""
    for start in range(0, 70):
        for end in range(start, 140):
            covered = [
                leaf for h, i in range_nodes(start, end) for leaf in range(i << h, (i + 1) << h)
            ]
            assert covered == list(range(start, end))


def test_leaf_hashes_are_sha256_of_leaves() -> None:
    """The tiles hold RFC 9162 leaf hashes (a sanity anchor for the fixtures above)."""
    assert ALL[0] == hashlib.sha256(b"\x00" + (0).to_bytes(4, "big")).digest()
