"""Merkle hashing, inclusion and consistency proofs: RFC 9162 / CT vectors and properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.merkle import (
    EMPTY_ROOT,
    ProofInvalid,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference leaves and roots (RFC 6962/9162 hashing; the
# values published with the CT and transparency-dev test suites).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (2, 8): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
HASHES = [leaf_hash(leaf) for leaf in CT_LEAVES]


def test_prefixes_are_rfc9162s() -> None:
    """A leaf is hashed behind 0x00 and a node behind 0x01, so neither can pose as the other."""
    assert leaf_hash(b"ab") == hashlib.sha256(b"\x00ab").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]


@pytest.mark.parametrize("size", range(9))
def test_ct_roots(size: int) -> None:
    """Our tree heads equal the published CT roots for every size 0..8."""
    assert root_hash(HASHES[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size"), sorted(CT_INCLUSION))
def test_ct_inclusion_proofs(index: int, size: int) -> None:
    """The published audit paths come out of our generator and pass our verifier."""
    proof = inclusion_proof(HASHES, index, size)
    assert [p.hex() for p in proof] == CT_INCLUSION[(index, size)]
    verify_inclusion(HASHES[index], index, size, proof, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("first", "second"), sorted(CT_CONSISTENCY))
def test_ct_consistency_proofs(first: int, second: int) -> None:
    """The published consistency proofs come out of our generator and pass our verifier."""
    proof = consistency_proof(HASHES, first, second)
    assert [p.hex() for p in proof] == CT_CONSISTENCY[(first, second)]
    verify_consistency(
        first, second, bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second]), proof
    )


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(b"leaf %d" % i) for i in range(n)]


def test_every_proof_in_small_trees() -> None:
    """Every inclusion proof (sizes 1..40) and every consistency proof (pairs up to 40) verifies."""
    leaves = _leaves(40)
    roots = [root_hash(leaves[:n]) for n in range(41)]
    for n in range(1, 41):
        for i in range(n):
            verify_inclusion(leaves[i], i, n, inclusion_proof(leaves, i, n), roots[n])
    for second in range(41):
        for first in range(second + 1):
            proof = consistency_proof(leaves, first, second)
            verify_consistency(first, second, roots[first], roots[second], proof)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=300),
    data=st.data(),
)
def test_inclusion_mutations_fail(n: int, data: st.DataObject) -> None:
    """A proof checked against another leaf, index, size or a changed step never verifies."""
    leaves = _leaves(n)
    root = root_hash(leaves)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = inclusion_proof(leaves, i, n)
    verify_inclusion(leaves[i], i, n, proof, root)
    if n > 1:
        other = data.draw(st.integers(min_value=0, max_value=n - 1).filter(lambda j: j != i))
        with pytest.raises(ProofInvalid):
            verify_inclusion(leaves[other], i, n, proof, root)
        with pytest.raises(ProofInvalid):
            verify_inclusion(leaves[i], other, n, proof, root)
        step = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = list(proof)
        bad[step] = bytes([bad[step][0] ^ 1]) + bad[step][1:]
        with pytest.raises(ProofInvalid):
            verify_inclusion(leaves[i], i, n, bad, root)
        with pytest.raises(ProofInvalid):
            verify_inclusion(leaves[i], i, n, proof[:-1], root)
    with pytest.raises(ProofInvalid):
        verify_inclusion(leaves[i], i, n, [*proof, leaves[0]], root)


@settings(max_examples=150, deadline=None)
@given(second=st.integers(min_value=2, max_value=300), data=st.data())
def test_consistency_mutations_fail(second: int, data: st.DataObject) -> None:
    """A rewritten leaf, a changed proof step or swapped sizes never pass as consistent."""
    leaves = _leaves(second)
    first = data.draw(st.integers(min_value=1, max_value=second - 1))
    first_root, second_root = root_hash(leaves[:first]), root_hash(leaves)
    proof = consistency_proof(leaves, first, second)
    verify_consistency(first, second, first_root, second_root, proof)
    changed = data.draw(st.integers(min_value=0, max_value=first - 1))
    rewritten = list(leaves)
    rewritten[changed] = leaf_hash(b"rewritten")
    with pytest.raises(ProofInvalid):
        verify_consistency(first, second, first_root, root_hash(rewritten), proof)
    with pytest.raises(ProofInvalid):
        verify_consistency(first, second, root_hash(rewritten[:first]), second_root, proof)
    step = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    bad = list(proof)
    bad[step] = bytes([bad[step][0] ^ 1]) + bad[step][1:]
    with pytest.raises(ProofInvalid):
        verify_consistency(first, second, first_root, second_root, bad)
    with pytest.raises(ProofInvalid):
        verify_consistency(first, second, first_root, second_root, proof[:-1])
    with pytest.raises(ProofInvalid):
        verify_consistency(second, first, second_root, first_root, proof)


def test_same_size_heads_must_agree() -> None:
    """Two heads of one size with different roots are a split view, never consistent."""
    leaves = _leaves(5)
    verify_consistency(5, 5, root_hash(leaves), root_hash(leaves), [])
    with pytest.raises(ProofInvalid, match="different roots"):
        verify_consistency(5, 5, root_hash(leaves), root_hash(_leaves(6)[1:]), [])


def test_generators_refuse_impossible_requests() -> None:
    """Asking for a leaf or size the log does not have is a caller's bug, said plainly."""
    with pytest.raises(ValueError, match="no leaf 8"):
        inclusion_proof(HASHES, 8, 8)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(HASHES, 5, 3)
    with pytest.raises(ValueError, match="32-byte hash"):
        root_hash([b"short"])
