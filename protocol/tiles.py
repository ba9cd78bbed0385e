"""Tiles: the transparency log's Merkle tree stored as C2SP ``tlog-tiles`` hash tiles.

The tree of :mod:`protocol.merkle` (RFC 9162 hashing) is kept as *tiles* of height 8, the
layout of Certificate Transparency's static logs and Go's checksum database: a tile at
level ``L`` and index ``N`` holds, in order, the hashes of the complete subtrees of
``256**L`` leaves numbered ``256*N .. 256*N + W - 1`` (level 0: the leaf hashes). A *full*
tile holds 256 hashes and never changes again; the rightmost tile of a level is *partial*
(``W`` < 256) and grows as leaves are appended. A tile of width ``W`` is a prefix of every
later version of itself, so one stored copy per (level, index) serves every tree size.

Any complete subtree (height ``h``, index ``k``: leaves ``k*2**h .. (k+1)*2**h - 1``) is
found in exactly one tile, the one at level ``h // 8``, where it is ``2**(h % 8)``
consecutive hashes to combine. A root or a proof needs at most two subtrees per height,
hence a few tiles per level: O(log n) reads whatever the size of the log.

:class:`TileBuilder` turns appended leaf hashes into the tiles that change (used by each
append and by bulk builds); :func:`tiles_for` says which tiles a set of subtrees needs, and
:func:`subtree_hash` reads one subtree out of its tile. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol.merkle import HASH_BYTES, Node, node_hash

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileBuilder",
    "TileId",
    "edge_tile_ids",
    "subtree_hash",
    "tile_path",
    "tile_root",
    "tiles_for",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT

TileId = tuple[int, int]
"""(level, index) of a tile."""


def _tile_span(node: Node) -> tuple[TileId, int, int]:
    """The tile holding subtree ``node``, and the first position and count of its hashes."""
    height, index = node
    level, rest = divmod(height, TILE_HEIGHT)
    first = index << rest  # position among the level's stored hashes
    return (level, first >> TILE_HEIGHT), first & (TILE_WIDTH - 1), 1 << rest


def tiles_for(nodes: Iterable[Node]) -> set[TileId]:
    """The tiles that hold the subtrees ``nodes``."""
    return {_tile_span(node)[0] for node in nodes}


def subtree_hash(
    node: Node,
    tiles: Mapping[TileId, bytes],
    cache: dict[tuple[TileId, int, int], bytes] | None = None,
) -> bytes:
    """The hash of complete subtree ``node`` from the tiles (those of :func:`tiles_for`).

    ``cache`` keeps the inner hashes computed, for the next subtree of the same tiles (a
    report's proofs share most of theirs). Raises ``KeyError`` if its tile is missing and
    ``ValueError`` if the tile is too narrow: the subtree is not complete in the tree the
    tiles were read for.
    """
    tile_id, first, count = _tile_span(node)
    tile = tiles[tile_id]
    if len(tile) < (first + count) * HASH_BYTES:
        raise ValueError(
            f"tile {tile_id} holds {len(tile) // HASH_BYTES} hashes; subtree {node} needs "
            f"{first + count}"
        )
    memo: dict[tuple[TileId, int, int], bytes] = {} if cache is None else cache

    def inner(height: int, position: int) -> bytes:
        if height == 0:
            start = position * HASH_BYTES
            return tile[start : start + HASH_BYTES]
        key = (tile_id, height, position)
        found = memo.get(key)
        if found is None:
            found = memo[key] = node_hash(
                inner(height - 1, 2 * position), inner(height - 1, 2 * position + 1)
            )
        return found

    rest = count.bit_length() - 1
    return inner(rest, first >> rest)


def tile_path(level: int, index: int, width: int) -> str:
    """The tile's path in the C2SP ``tlog-tiles`` layout: ``tile/<L>/<N>[.p/<W>]``.

    ``<N>`` is written in groups of three digits, all but the last prefixed with ``x``
    (index 1234067 is ``x001/x234/067``).
    """
    if not 0 < width <= TILE_WIDTH:
        raise ValueError(f"a tile holds 1 to {TILE_WIDTH} hashes, not {width}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    path = f"tile/{level}/{'/'.join(reversed(groups))}"
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


def tile_root(tile: bytes) -> bytes:
    """The hash of the subtree a full tile holds (the hash its level + 1 stores)."""
    if len(tile) != TILE_WIDTH * HASH_BYTES:
        raise ValueError(f"a full tile is {TILE_WIDTH * HASH_BYTES} bytes, not {len(tile)}")
    hashes = [tile[i : i + HASH_BYTES] for i in range(0, len(tile), HASH_BYTES)]
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


@dataclass(slots=True)
class TileBuilder:
    """The right edge of a tiled tree: appends leaf hashes, says which tiles changed.

    ``edge`` holds the rightmost tile of each level (partial, or just completed), as the
    store has them; ``size`` is the number of leaves. Start from the stored edge with
    :meth:`resume`, append, then write :meth:`changed` (and :meth:`clear_changed`).
    """

    size: int
    edge: dict[int, tuple[int, bytearray]]
    _changed: set[int]
    _full: dict[TileId, bytes]

    @classmethod
    def resume(cls, size: int, edge_tiles: Mapping[TileId, bytes]) -> TileBuilder:
        """A builder for a tree of ``size`` leaves whose edge tiles are ``edge_tiles``
        (:func:`edge_tile_ids` of that size; missing ones count as empty)."""
        edge: dict[int, tuple[int, bytearray]] = {}
        for level, index in edge_tile_ids(size):
            data = edge_tiles.get((level, index), b"")
            expected = (size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH
            if len(data) != expected * HASH_BYTES:
                raise ValueError(
                    f"tile ({level}, {index}) holds {len(data) // HASH_BYTES} hashes; a tree "
                    f"of {size} leaves needs {expected} there"
                )
            edge[level] = (index, bytearray(data))
        return cls(size, edge, set(), {})

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (and every subtree hash it completes)."""
        if len(leaf_hash) != HASH_BYTES:
            raise ValueError(f"a leaf hash is {HASH_BYTES} bytes, not {len(leaf_hash)}")
        value = leaf_hash
        position = self.size
        level = 0
        while True:
            index = position >> TILE_HEIGHT
            current = self.edge.get(level)
            if current is None or current[0] != index:
                current = (index, bytearray())
                self.edge[level] = current
            tile = current[1]
            tile += value
            self._changed.add(level)
            if len(tile) < TILE_WIDTH * HASH_BYTES:
                break
            self._full[(level, index)] = bytes(tile)
            value = tile_root(self._full[(level, index)])
            position = index
            level += 1
        self.size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaf hashes in order."""
        for value in leaf_hashes:
            self.append(value)

    def changed(self) -> dict[TileId, bytes]:
        """The tiles changed since the last :meth:`clear_changed`: (level, index) -> hashes."""
        found = dict(self._full)
        for level in sorted(self._changed):
            index, tile = self.edge[level]
            found[(level, index)] = bytes(tile)
        return found

    def clear_changed(self) -> None:
        """Forget the changes (they are stored); full tiles are dropped from the edge."""
        self._changed.clear()
        self._full.clear()
        for level in list(self.edge):
            if len(self.edge[level][1]) == TILE_WIDTH * HASH_BYTES:
                del self.edge[level]


def edge_tile_ids(size: int) -> list[TileId]:
    """The partial tiles of a tree of ``size`` leaves: the ones the next append may change."""
    found: list[TileId] = []
    level = 0
    while True:
        stored = size >> (TILE_HEIGHT * level)
        if stored == 0:
            break
        if stored % TILE_WIDTH:
            found.append((level, stored >> TILE_HEIGHT))
        level += 1
    return found


def complete_nodes(size: int, nodes: Sequence[Node]) -> bool:
    """Whether every subtree in ``nodes`` is complete in a tree of ``size`` leaves."""
    return all((index + 1) << height <= size for height, index in nodes)
