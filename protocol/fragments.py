"""Fragments: a payload cut to a small link's message size and put back together (pure).

Iridium short-burst data carries at most 340 bytes a message from the vessel (MO) and
270 to it (MT). Whatever rides on it (today a signed uplink or downlink batch; a compact
frame for lone messages later) is opaque here: :func:`fragment` cuts it into messages of
at most ``mtu`` bytes, :class:`Reassembler` puts them back together in any order, drops
duplicates, and checks that the pieces belong together. Authenticity is the payload's own
(a batch's Ed25519 signature, verified by the receiver *after* reassembly, over the whole
payload), and so is replay protection (the batch sequence number's replay window): a
fragment is never trusted on its own.

One message on the link::

    whole payload (fits one message)   kind (1 byte, 0x01-0x7f)  payload
    fragment                           kind | 0x80 (1 byte)       tag (4) index (1) count (1) piece

    compact frame, bare                the frame itself (its first byte, 0x03, names it)

``kind`` says what the payload is (:class:`PayloadKind`), so a receiver hands it to the
right decoder. ``tag`` is the first four bytes of BLAKE2b over the whole payload: the
fragments of one payload share it, a byte-identical resend gets the same tag (so its
fragments merge with those already held), and the reassembled payload must hash to it
(pieces of two payloads never mix unnoticed). A whole payload costs one byte of framing,
a fragment seven. A compact frame that fits one message goes *bare*, with no framing byte
at all: its own first byte (``protocol.compact.COMPACT_UPLINK``, 0x03) is no kind and has
no fragment flag, so it cannot be taken for anything else, and the frame (padded to whole
50-byte credits) stays within its credits instead of spilling one byte into the next.

The reassembler is bounded (payloads in progress, bytes held, age; ``now`` is an
argument, seconds of any clock the caller keeps), so a peer cannot make it hold
unbounded memory; :class:`ReassemblyLimits` holds those bounds, for this in-memory
reassembler and for any that keeps its pieces elsewhere (the relay's store), which use
:func:`read_link_message` and :func:`join_fragments` for the same rules.

By default it does *not* remember payloads it completed: a sender that
resends a whole payload (its acknowledgement was lost) must get it handed on again, so
that the receiver, which is idempotent (the batch's replay window), acknowledges it
again; a receiver that is not idempotent passes ``remember`` and gets late duplicates
dropped.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum

from protocol.compact import COMPACT_UPLINK
from protocol.errors import LocalProtocolError, MalformedBatch

__all__ = [
    "DEFAULT_REASSEMBLY_LIMITS",
    "FRAGMENT_HEADER_BYTES",
    "MAX_FRAGMENTS",
    "SBD_MO_BYTES",
    "SBD_MT_BYTES",
    "WHOLE_HEADER_BYTES",
    "LinkFragment",
    "PayloadKind",
    "Reassembled",
    "Reassembler",
    "ReassemblerStatistics",
    "ReassemblyLimits",
    "fragment",
    "join_fragments",
    "payload_tag",
    "read_link_message",
]

#: Iridium SBD: most bytes in one mobile-originated message (9602/9603 modems).
SBD_MO_BYTES = 340
#: Iridium SBD: most bytes in one mobile-terminated message.
SBD_MT_BYTES = 270
#: Framing of a payload that fits one message, and of each fragment.
WHOLE_HEADER_BYTES = 1
FRAGMENT_HEADER_BYTES = 7
#: Most fragments of one payload (the count is one byte).
MAX_FRAGMENTS = 255
_FRAGMENT_FLAG = 0x80
_TAG_BYTES = 4


class PayloadKind(IntEnum):
    """What a reassembled payload is; it travels in every message, so never renumber."""

    #: A signed batch (``protocol.batch``), uplink or downlink: verified after reassembly.
    BATCH = 1
    #: A compact frame for one or a few messages (``protocol.compact``); one that fits a
    #: single message goes bare (module docstring), a longer one as fragments of this kind.
    COMPACT = 2


def payload_tag(payload: bytes) -> bytes:
    """The four bytes that name ``payload`` in each of its fragments."""
    return hashlib.blake2b(payload, digest_size=16).digest()[:_TAG_BYTES]


def fragment(payload: bytes, kind: PayloadKind, mtu: int) -> list[bytes]:
    """``payload`` as link messages of at most ``mtu`` bytes each, in order.

    One message (one byte of framing) when it fits, else fragments of seven bytes of
    framing each. Raises :class:`LocalProtocolError` for an empty payload, an ``mtu``
    too small to carry a byte, or a payload that needs more than 255 fragments.
    """
    if not payload:
        raise LocalProtocolError("an empty payload cannot be sent: there is nothing to carry")
    if mtu <= FRAGMENT_HEADER_BYTES:
        raise LocalProtocolError(f"a message of {mtu} bytes cannot carry a fragment")
    kind = PayloadKind(kind)
    if kind is PayloadKind.COMPACT and payload[0] == COMPACT_UPLINK and len(payload) <= mtu:
        return [payload]  # bare (module docstring)
    if len(payload) + WHOLE_HEADER_BYTES <= mtu:
        return [bytes([kind]) + payload]
    room = mtu - FRAGMENT_HEADER_BYTES
    count = -(-len(payload) // room)
    if count > MAX_FRAGMENTS:
        raise LocalProtocolError(
            f"a payload of {len(payload)} bytes needs {count} fragments of {mtu} bytes; at "
            f"most {MAX_FRAGMENTS} can be sent: make smaller batches"
        )
    head = bytes([kind | _FRAGMENT_FLAG]) + payload_tag(payload)
    return [
        head + bytes([index, count]) + payload[index * room : (index + 1) * room]
        for index in range(count)
    ]


@dataclass(frozen=True, slots=True)
class Reassembled:
    """A whole payload, ready for its decoder (which verifies it)."""

    kind: PayloadKind
    payload: bytes
    #: How many link messages carried it.
    fragments: int


@dataclass(frozen=True, slots=True)
class LinkFragment:
    """One fragment as read from a link message (its payload is named by ``tag``)."""

    kind: PayloadKind
    tag: bytes
    index: int
    count: int
    piece: bytes


@dataclass(frozen=True, slots=True)
class ReassemblyLimits:
    """How much one reassembler holds (per peer: the relay keeps one per vessel).

    ``max_partial``: payloads in progress at once; ``max_held_bytes``: bytes of pieces
    held; over either, the oldest payload in progress is dropped (its sender resends what
    was never acknowledged). ``max_age_s``: a payload in progress older than this is
    dropped.
    """

    max_partial: int = 64
    max_held_bytes: int = 256 * 1024
    max_age_s: float = 14 * 86_400.0

    def __post_init__(self) -> None:
        if self.max_partial < 1 or self.max_held_bytes < 1 or self.max_age_s <= 0:
            raise LocalProtocolError("a reassembler's bounds must be positive")


#: The bounds every reassembler has unless told otherwise.
DEFAULT_REASSEMBLY_LIMITS = ReassemblyLimits()


def read_link_message(message: bytes) -> Reassembled | LinkFragment:
    """One link message: a whole payload (one message carried it) or a fragment.

    Raises :class:`MalformedBatch` for a message that is not one of ours (empty, too
    short, unknown kind, an index outside its count)."""
    if not message:
        raise MalformedBatch("an empty link message carries nothing")
    first = message[0]
    if first == COMPACT_UPLINK:  # a bare compact frame: whole, no framing byte
        return Reassembled(PayloadKind.COMPACT, message, 1)
    try:
        kind = PayloadKind(first & ~_FRAGMENT_FLAG)
    except ValueError:
        raise MalformedBatch(f"link message of unknown kind {first:#04x}") from None
    if not first & _FRAGMENT_FLAG:
        if len(message) < 2:
            raise MalformedBatch("a whole-payload message with no payload")
        return Reassembled(kind, message[1:], 1)
    if len(message) <= FRAGMENT_HEADER_BYTES:
        raise MalformedBatch(f"a fragment of {len(message)} bytes carries nothing")
    index, count = message[5], message[6]
    if count < 1 or index >= count:
        raise MalformedBatch(f"fragment {index} of {count} cannot exist")
    return LinkFragment(
        kind, message[1 : 1 + _TAG_BYTES], index, count, message[FRAGMENT_HEADER_BYTES:]
    )


def join_fragments(kind: PayloadKind, tag: bytes, pieces: dict[int, bytes]) -> Reassembled:
    """The whole payload from all its pieces (index -> piece, ``0 .. len - 1``).

    Raises :class:`MalformedBatch` when they do not hash to ``tag`` (garbled, or pieces of
    two payloads); the caller drops them, and the sender's resend starts again."""
    count = len(pieces)
    payload = b"".join(pieces[i] for i in range(count))
    if payload_tag(payload) != tag:
        raise MalformedBatch(
            f"the {count} fragments do not make the payload their tag names (garbled, "
            "or pieces of two payloads); dropped, the sender's resend starts it again"
        )
    return Reassembled(kind, payload, count)


@dataclass(slots=True)
class ReassemblerStatistics:
    """Counters since the reassembler was made (for logs and the status page)."""

    completed: int = 0
    duplicates_dropped: int = 0
    expired: int = 0
    evicted: int = 0


@dataclass(slots=True)
class _Partial:
    kind: PayloadKind
    count: int
    first_seen: float
    pieces: dict[int, bytes] = field(default_factory=dict)

    @property
    def held_bytes(self) -> int:
        return sum(len(piece) for piece in self.pieces.values())


class Reassembler:
    """Fragments in, whole payloads out: any order, duplicates dropped, bounded.

    ``max_partial``, ``max_held_bytes``, ``max_age_s``: see :class:`ReassemblyLimits`
    (the defaults are :data:`DEFAULT_REASSEMBLY_LIMITS`'s); a payload in progress too old
    is dropped at the next :meth:`add`. ``remember``: how many completed tags are kept to
    drop late duplicates (0, the default: none; see the module docstring).
    """

    def __init__(
        self,
        *,
        max_partial: int = DEFAULT_REASSEMBLY_LIMITS.max_partial,
        max_held_bytes: int = DEFAULT_REASSEMBLY_LIMITS.max_held_bytes,
        max_age_s: float = DEFAULT_REASSEMBLY_LIMITS.max_age_s,
        remember: int = 0,
    ) -> None:
        if remember < 0:
            raise LocalProtocolError("a reassembler's bounds must be positive")
        self.limits = ReassemblyLimits(max_partial, max_held_bytes, max_age_s)
        self._max_partial = max_partial
        self._max_held = max_held_bytes
        self._max_age_s = max_age_s
        self._remember = remember
        self._partial: OrderedDict[tuple[int, bytes, int], _Partial] = OrderedDict()
        self._done: OrderedDict[tuple[int, bytes], None] = OrderedDict()
        self.statistics = ReassemblerStatistics()

    @property
    def in_progress(self) -> int:
        """Payloads of which some but not all fragments arrived."""
        return len(self._partial)

    def add(self, message: bytes, now: float) -> Reassembled | None:
        """Take one link message; the whole payload once its last fragment is in, else None.

        Raises :class:`MalformedBatch` for a message that is not one of ours (too short,
        unknown kind, index outside its count, a piece that contradicts one held, or
        pieces that do not hash to their tag); the payload in progress it belonged to is
        dropped then, and the sender's resend starts it again.
        """
        self._expire(now)
        read = read_link_message(message)
        if isinstance(read, Reassembled):
            return self._whole(read.kind, read.payload)
        kind, tag, index, count, piece = read.kind, read.tag, read.index, read.count, read.piece
        if (kind, tag) in self._done:
            self._done.move_to_end((kind, tag))
            self.statistics.duplicates_dropped += 1
            return None
        key = (int(kind), tag, count)
        partial = self._partial.get(key)
        if partial is None:
            partial = _Partial(kind, count, now)
            self._partial[key] = partial
        held = partial.pieces.get(index)
        if held is not None:
            if held != piece:
                del self._partial[key]
                raise MalformedBatch(
                    f"fragment {index} of {count} arrived twice with different bytes; the "
                    "payload in progress is dropped and waits for the sender's resend"
                )
            self.statistics.duplicates_dropped += 1
            return None
        partial.pieces[index] = piece
        if len(partial.pieces) < count:
            self._bound()
            return None
        del self._partial[key]
        whole = join_fragments(kind, tag, partial.pieces)
        return self._complete(kind, tag, whole.payload, count)

    def forget(self, done: Reassembled) -> None:
        """Forget that ``done`` was completed: the receiver could not keep it (its store
        failed), so the sender's resend must be reassembled again, not dropped."""
        self._done.pop((int(done.kind), payload_tag(done.payload)), None)

    def _whole(self, kind: PayloadKind, payload: bytes) -> Reassembled | None:
        """A payload that came in one message (a late duplicate of a remembered one: None)."""
        whole_tag = payload_tag(payload)
        if (kind, whole_tag) in self._done:
            self._done.move_to_end((kind, whole_tag))
            self.statistics.duplicates_dropped += 1
            return None
        return self._complete(kind, whole_tag, payload, 1)

    def _complete(self, kind: PayloadKind, tag: bytes, payload: bytes, count: int) -> Reassembled:
        if self._remember:
            self._done[(int(kind), tag)] = None
            while len(self._done) > self._remember:
                self._done.popitem(last=False)
        self.statistics.completed += 1
        return Reassembled(kind, payload, count)

    def _expire(self, now: float) -> None:
        for key in [k for k, p in self._partial.items() if now - p.first_seen > self._max_age_s]:
            del self._partial[key]
            self.statistics.expired += 1

    def _bound(self) -> None:
        while len(self._partial) > self._max_partial or (
            self._partial and sum(p.held_bytes for p in self._partial.values()) > self._max_held
        ):
            self._partial.popitem(last=False)
            self.statistics.evicted += 1
