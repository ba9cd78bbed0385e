"""Merkle: RFC 9162 (Certificate Transparency v2) tree hashing, inclusion and consistency proofs.

The transparency log of compliance reports is an append-only list of leaves; its state at
``tree_size`` leaves is one 32-byte root hash, the Merkle Tree Hash of RFC 9162 §2.1.1::

    MTH({})       = SHA-256()
    MTH({d0})     = SHA-256(0x00 || d0)                      leaf hash
    MTH(D[n])     = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   node hash,
                    k the largest power of two smaller than n

An *inclusion proof* (§2.1.3) shows that a leaf is the ``index``-th of a tree with a given
root; a *consistency proof* (§2.1.4) shows that the tree of ``second_size`` leaves extends
the tree of ``first_size`` leaves without changing any of them. The generators that take
the list of leaf hashes are the reference (linear in the size); the log itself asks
:func:`root_plan`, :func:`inclusion_plan` and :func:`consistency_plan` which complete
subtrees (:data:`Node`) it needs, reads those from its tiles (:mod:`protocol.tiles`) and
combines them with :func:`combine`: O(log n) hashes. Verifiers need only hashes, sizes and
the proof, and answer with :class:`ProofInvalid` naming what does not add up. Pure: no
I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from protocol.errors import LocalProtocolError, Reason

__all__ = [
    "EMPTY_ROOT",
    "HASH_BYTES",
    "Node",
    "Plan",
    "ProofInvalid",
    "combine",
    "consistency_plan",
    "consistency_proof",
    "inclusion_plan",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_nodes",
    "root_hash",
    "root_plan",
    "verify_consistency",
    "verify_inclusion",
]

HASH_BYTES = 32
#: The root of the empty tree: SHA-256 of nothing.
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofInvalid(LocalProtocolError):
    """An inclusion or consistency proof that does not lead to the stated root."""

    reason = Reason.MALFORMED


def leaf_hash(leaf: bytes) -> bytes:
    """The hash of one leaf: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    for position, value in enumerate(hashes):
        if not isinstance(value, bytes) or len(value) != HASH_BYTES:
            raise ValueError(f"{what} {position} is not a {HASH_BYTES}-byte hash")


def _mth(leaves: Sequence[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a tree whose leaves hash to ``leaf_hashes`` (in order)."""
    _check_hashes(leaf_hashes, "leaf hash")
    return _mth(leaf_hashes)


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of the first ``tree_size`` leaves."""
    _check_hashes(leaf_hashes, "leaf hash")
    if not 0 <= index < tree_size <= len(leaf_hashes):
        raise ValueError(
            f"no leaf {index} in a tree of {tree_size} leaves ({len(leaf_hashes)} known)"
        )
    return _path(index, leaf_hashes[:tree_size])


def _path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def consistency_proof(
    leaf_hashes: Sequence[bytes], first_size: int, second_size: int
) -> list[bytes]:
    """The proof that the tree of ``second_size`` leaves extends that of ``first_size``."""
    _check_hashes(leaf_hashes, "leaf hash")
    if not 0 <= first_size <= second_size <= len(leaf_hashes):
        raise ValueError(
            f"no consistency proof from {first_size} to {second_size} leaves "
            f"({len(leaf_hashes)} known)"
        )
    if first_size == 0 or first_size == second_size:
        return []
    return _subproof(first_size, leaf_hashes[:second_size], True)


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [_mth(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), _mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), _mth(leaves[:k])]


# --- proofs from complete subtrees (what a tiled log reads) -----------------------------------

Node = tuple[int, int]
"""A complete subtree: (height, index), the leaves ``index * 2**height`` .. ``(index + 1) *
2**height - 1``; height 0 is a leaf hash."""

Plan = list[list[Node]]
"""Hashes to compute, in order; each the Merkle Tree Hash of a run of leaves, given as the
complete subtrees that cover the run from left to right (:func:`combine` folds them)."""


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees covering leaves ``start .. end - 1``, left to right, each as
    large as its position allows."""
    found: list[Node] = []
    while start < end:
        height = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << height) > end:
            height -= 1
        found.append((height, start >> height))
        start += 1 << height
    return found


def root_plan(tree_size: int) -> Plan:
    """The subtrees whose fold is the root of a tree of ``tree_size`` leaves ([] if empty)."""
    if tree_size < 0:
        raise ValueError(f"a tree has no {tree_size} leaves")
    return [range_nodes(0, tree_size)] if tree_size else []


def inclusion_plan(index: int, tree_size: int) -> Plan:
    """The audit path of leaf ``index`` in a tree of ``tree_size`` leaves, as subtrees."""
    if not 0 <= index < tree_size:
        raise ValueError(f"no leaf {index} in a tree of {tree_size} leaves")
    steps: Plan = []
    start, end, m = 0, tree_size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            steps.append(range_nodes(start + k, end))
            end = start + k
        else:
            steps.append(range_nodes(start, start + k))
            start, m = start + k, m - k
    steps.reverse()
    return steps


def consistency_plan(first_size: int, second_size: int) -> Plan:
    """The consistency proof from ``first_size`` to ``second_size`` leaves, as subtrees."""
    if not 0 <= first_size <= second_size:
        raise ValueError(f"no consistency proof from {first_size} to {second_size} leaves")
    if first_size == 0 or first_size == second_size:
        return []
    steps: Plan = []
    start, end, m, whole = 0, second_size, first_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            steps.append(range_nodes(start + k, end))
            end = start + k
        else:
            steps.append(range_nodes(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        steps.append(range_nodes(start, end))
    steps.reverse()
    return steps


def combine(plan: Plan, subtrees: Mapping[Node, bytes]) -> list[bytes]:
    """The hashes of ``plan``, from the hashes of its subtrees (folded right to left)."""
    found: list[bytes] = []
    for nodes in plan:
        value = subtrees[nodes[-1]]
        for node in reversed(nodes[:-1]):
            value = node_hash(subtrees[node], value)
        found.append(value)
    return found


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofInvalid` unless ``proof`` puts leaf hash ``leaf`` at ``index``.

    RFC 9162 §2.1.3.2, step by step.
    """
    where = f"inclusion proof of leaf {index} in a tree of {tree_size} leaves"
    if len(leaf) != HASH_BYTES or len(root) != HASH_BYTES:
        raise ProofInvalid(f"{where}: a hash is not {HASH_BYTES} bytes")
    if any(len(step) != HASH_BYTES for step in proof):
        raise ProofInvalid(f"{where}: a proof step is not {HASH_BYTES} bytes")
    if not 0 <= index < tree_size:
        raise ProofInvalid(f"{where}: the index is outside the tree")
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofInvalid(f"{where}: the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid(f"{where}: the proof is shorter than the tree is deep")
    if r != root:
        raise ProofInvalid(f"{where}: it leads to another root than the tree head's")


def verify_consistency(
    first_size: int,
    second_size: int,
    first_root: bytes,
    second_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Raise :class:`ProofInvalid` unless ``proof`` shows the second tree extends the first.

    RFC 9162 §2.1.4.2, step by step.
    """
    where = f"consistency proof from {first_size} to {second_size} leaves"
    if len(first_root) != HASH_BYTES or len(second_root) != HASH_BYTES:
        raise ProofInvalid(f"{where}: a root is not {HASH_BYTES} bytes")
    if any(len(step) != HASH_BYTES for step in proof):
        raise ProofInvalid(f"{where}: a proof step is not {HASH_BYTES} bytes")
    if not 0 <= first_size <= second_size:
        raise ProofInvalid(f"{where}: the first tree is bigger than the second")
    if first_size == second_size:
        if proof:
            raise ProofInvalid(f"{where}: two heads of one size need an empty proof")
        if first_root != second_root:
            raise ProofInvalid(f"{where}: two heads of one size have different roots")
        return
    if first_size == 0:
        if proof:
            raise ProofInvalid(f"{where}: the empty tree needs an empty proof")
        if first_root != EMPTY_ROOT:
            raise ProofInvalid(f"{where}: the empty tree's root is not SHA-256()")
        return
    if not proof:
        raise ProofInvalid(f"{where}: the proof is empty")
    path = list(proof)
    if first_size & (first_size - 1) == 0:  # a power of two: the first root is a node here
        path.insert(0, first_root)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofInvalid(f"{where}: the proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid(f"{where}: the proof is shorter than needed")
    if fr != first_root:
        raise ProofInvalid(f"{where}: it does not lead to the first tree head's root")
    if sr != second_root:
        raise ProofInvalid(f"{where}: it does not lead to the second tree head's root")
