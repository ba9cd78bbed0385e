"""A union's published statistics in the relay's transparency log (a leaf of their own).

A union posts its signed grievance statistics (:mod:`protocol.grievance_stats`) to the
relay (``POST /union/v1/statistics``); the relay appends a :class:`StatisticsLeaf` to the
same log as the vessels' batches, so the aggregate an inspector holds can be shown to be
the one published, and a union cannot show different numbers to different people without
the log showing both. The leaf holds the union, when the relay logged it and the SHA-256 of
the signed document (:func:`~protocol.grievance_stats.statistics_digest`); no numbers.

A :class:`StatisticsReceipt` is what the relay answers once a signed checkpoint covers the
leaf: the leaf, its index, the checkpoint and the inclusion proof. :func:`verify_receipt`
checks, offline with the shore's public key, that the receipt's leaf names this very
document and this union, that the proof puts it in the checkpoint's tree and that the
shore signed the checkpoint.

Leaf bytes (canonical CBOR array)::

    ["vessel-relay statistics leaf", 1, union_id, logged_minutes, sha256(document)]

A batch leaf (:class:`protocol.compliance.LogLeaf`) starts with the integer 1, so neither
kind decodes as the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from protocol.cbor import dumps, strict_loads
from protocol.compliance import SignedTreeHead
from protocol.errors import ProtocolError
from protocol.grievance_stats import StatisticsInvalid, statistics_digest
from protocol.merkle import ProofInvalid, leaf_hash, verify_inclusion
from protocol.signing import VerifyKey

__all__ = [
    "LEAF_TAG",
    "RECEIPT_FORMAT",
    "StatisticsLeaf",
    "StatisticsReceipt",
    "verify_receipt",
]

LEAF_TAG = "vessel-relay statistics leaf"
_LEAF_VERSION = 1
RECEIPT_FORMAT = "vessel-relay statistics receipt v1"
_MAX_PROOF_STEPS = 64


@dataclass(frozen=True, slots=True)
class StatisticsLeaf:
    """One union's signed aggregate, as the relay's log records it."""

    union_id: int
    logged_minutes: int
    document_sha256: bytes

    def __post_init__(self) -> None:
        if not 0 < self.union_id < 2**31:
            raise StatisticsInvalid(f"a statistics leaf's union {self.union_id} is out of range")
        if not 0 <= self.logged_minutes < 2**40:
            raise StatisticsInvalid("a statistics leaf's time is out of range")
        if len(self.document_sha256) != 32:
            raise StatisticsInvalid("a statistics leaf's document hash is not 32 bytes")

    def encode(self) -> bytes:
        """The leaf's canonical bytes, which the log hashes."""
        return dumps(
            [LEAF_TAG, _LEAF_VERSION, self.union_id, self.logged_minutes, self.document_sha256]
        )

    @classmethod
    def decode(cls, data: bytes) -> StatisticsLeaf:
        """A leaf from its canonical bytes; :class:`StatisticsInvalid` for anything else."""
        try:
            value = strict_loads(data, max_depth=2, max_length=256, what="statistics leaf")
        except ProtocolError as exc:
            raise StatisticsInvalid(f"a statistics leaf is not readable: {exc.message}") from exc
        if (
            not isinstance(value, list)
            or len(value) != 5
            or value[:2] != [LEAF_TAG, _LEAF_VERSION]
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value[2:4])
            or not isinstance(value[4], bytes)
        ):
            raise StatisticsInvalid("not a version 1 statistics leaf")
        leaf = cls(int(value[2]), int(value[3]), bytes(value[4]))
        if leaf.encode() != data:
            raise StatisticsInvalid("a statistics leaf is not in canonical form")
        return leaf


@dataclass(frozen=True, slots=True)
class StatisticsReceipt:
    """The relay's proof that it logged a signed aggregate: the leaf at ``index``, and its
    inclusion ``proof`` in the tree of the signed checkpoint ``head``."""

    index: int
    leaf: bytes
    head: SignedTreeHead
    proof: tuple[bytes, ...]

    def to_obj(self) -> dict[str, object]:
        return {
            "format": RECEIPT_FORMAT,
            "leaf_index": self.index,
            "leaf": self.leaf.hex(),
            "checkpoint": self.head.to_obj(),
            "inclusion_proof": [step.hex() for step in self.proof],
        }

    @classmethod
    def from_obj(cls, obj: object) -> StatisticsReceipt:
        """A receipt from its JSON object; :class:`StatisticsInvalid` says what is wrong."""
        if not isinstance(obj, dict) or obj.get("format") != RECEIPT_FORMAT:
            raise StatisticsInvalid(f"not a {RECEIPT_FORMAT} file")
        try:
            index = obj["leaf_index"]
            steps = obj["inclusion_proof"]
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise ValueError("leaf_index is not a number of 0 or more")
            if not isinstance(steps, list) or len(steps) > _MAX_PROOF_STEPS:
                raise ValueError(f"inclusion_proof is not a list of at most {_MAX_PROOF_STEPS}")
            proof = tuple(bytes.fromhex(str(step)) for step in steps)
            leaf = bytes.fromhex(str(obj["leaf"]))
            head = SignedTreeHead.from_obj(obj["checkpoint"])
        except (KeyError, ValueError, TypeError, ProtocolError) as exc:
            raise StatisticsInvalid(f"the receipt is malformed: {exc}") from exc
        return cls(index, leaf, head, proof)


def verify_receipt(
    document: Mapping[str, object], receipt: StatisticsReceipt, shore_key: bytes
) -> StatisticsLeaf:
    """Check that ``receipt`` proves ``document`` (a signed aggregate, checked already with
    :func:`~protocol.grievance_stats.verify_statistics`) is in the log of the shore whose
    public key is ``shore_key``; returns the leaf. :class:`StatisticsInvalid` says which
    check failed."""
    leaf = StatisticsLeaf.decode(receipt.leaf)
    body = document.get("statistics")
    named = body.get("union") if isinstance(body, dict) else None
    union = named.get("id") if isinstance(named, dict) else None
    if leaf.union_id != union:
        raise StatisticsInvalid(
            f"the receipt logs statistics of union {leaf.union_id}, not of union {union}"
        )
    if leaf.document_sha256 != statistics_digest(document):
        raise StatisticsInvalid(
            "the receipt logs other statistics than this file (a number, the period or the "
            "signature differs from what the relay logged)"
        )
    head = receipt.head.head
    try:
        VerifyKey(shore_key).verify(
            head.signed_bytes(), receipt.head.shore_signature, what="checkpoint"
        )
    except ProtocolError as exc:
        raise StatisticsInvalid(
            f"the checkpoint of size {head.tree_size} is not signed by this shore key"
        ) from exc
    try:
        verify_inclusion(
            leaf_hash(receipt.leaf), receipt.index, head.tree_size, receipt.proof, head.root
        )
    except ProofInvalid as exc:
        raise StatisticsInvalid(f"the leaf is not in the signed log: {exc}") from exc
    return leaf
