"""Lane: the grievance channel as fixed-size sealed blocks, per vessel, up and down.

Every lane period (:class:`LaneShape`) a vessel sends exactly ``blocks_per_period`` uplink
blocks of exactly ``block_bytes``, and the relay sends it exactly ``down_blocks_per_period``
downlink blocks of exactly ``down_block_bytes``, whatever happens. A block is nothing but
a libsodium sealed box: no header in the clear, so cover and real blocks differ only in
the key they were sealed to.

* **Uplink**: a fragment of a sealed grievance report, sealed to the union's X25519 key;
  or cover, sealed to a throwaway key whose private half nobody keeps. Unions find their
  blocks by trial decryption (:func:`open_up_block`): the relay cannot tell which union a
  block is for, or whether it is for anyone.
* **Downlink**: a fragment of a case note, sealed by the union to the reporter's reply
  key (:func:`seal_down_blocks`); or cover made by the relay (:func:`cover_down_block`).
  The vessel stores every downlink block; a signed-in reporter's reply key opens theirs
  (:func:`read_notes`).

Cover is always a real sealed box (to a throwaway key), never random bytes: the first
32 bytes of a sealed box are an X25519 public key, which has its top bit clear and lies
on Curve25519, while 32 random bytes fail either test half the time.

Inside the seal (``block_bytes - 48`` bytes)::

    magic    4   b"VRLU" (uplink) or b"VRLD" (downlink)
    version  1   1
    kind     1   0 cover, 1 fragment
    id       8   report id (uplink) or note id (downlink): random, drawn by the sealer
    index    2   big-endian, 0 .. count - 1
    count    2   big-endian, 1 .. MAX_FRAGMENTS
    length   2   big-endian, bytes of payload (1 .. capacity; 0 for cover)
    payload      the fragment
    zeros        up to the fixed size (checked when opened)

An uplink item (the reassembled payload) is a sealed report exactly as the union opens
it: :func:`protocol.sealing.seal_grievance_unpadded` (mode B carried by the lane),
:func:`protocol.sealing.seal_grievance` or the phone's sealed A1 bytes (mode A). A
downlink item is a case note's content as :mod:`protocol.cases` encodes it
(``b"VRN1" || CBOR``), unpadded: the block hides its length.

Pure: no I/O, no clock, no randomness of its own (ids and throwaway keys come from the
caller; libsodium draws each sealed box's ephemeral key).
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import nacl.exceptions
import nacl.public

from protocol.cases import CaseNote, open_case_note, seal_case_note
from protocol.errors import InvalidEnvelope, LimitExceeded, RemoteProtocolError, SealedBoxInvalid
from protocol.limits import MAX_LANE_BLOCK_BYTES, MIN_LANE_BLOCK_BYTES
from protocol.sealing import PADDING_BUCKETS, SEAL_OVERHEAD, pad, unpad

SECONDS_PER_DAY = 86_400
#: The shortest lane period (demos, tests and time-compressed benchmarks: a 30-day month
#: in six minutes has 3 s periods); every period must divide a day.
MIN_PERIOD_S = 1
UP_MAGIC = b"VRLU"
DOWN_MAGIC = b"VRLD"
VERSION = 1
#: Bytes of a report id or note id (random; only its sealer and its opener see it).
ID_BYTES = 8
#: Bytes of the header inside the seal: magic, version, kind, id, index, count, length.
HEADER_BYTES = len(UP_MAGIC) + 1 + 1 + ID_BYTES + 2 + 2 + 2
#: What a block spends on anything but payload.
BLOCK_OVERHEAD = SEAL_OVERHEAD + HEADER_BYTES
MIN_BLOCK_BYTES = MIN_LANE_BLOCK_BYTES
MAX_BLOCK_BYTES = MAX_LANE_BLOCK_BYTES
#: Most fragments of one item (a 64 KiB report in the smallest blocks needs 1,092).
MAX_FRAGMENTS = 2048
#: The largest sealed report any intake makes (the largest padding bucket, sealed).
MAX_REPORT_BYTES = PADDING_BUCKETS[-1] + SEAL_OVERHEAD
#: The largest case note content the downlink lane carries (a reply of ~2,500 Thai
#: characters); a longer reply is refused at the union, which asks for a shorter one.
MAX_NOTE_BYTES = 8192
MAX_BLOCKS_PER_PERIOD = 64


class BlockKind(enum.IntEnum):
    """What a block carries (known only to whoever opens it)."""

    COVER = 0
    FRAGMENT = 1


class MalformedLaneBlock(SealedBoxInvalid):
    """A lane block that opened with our key but whose content is not a lane fragment (or
    a block of no lane size at all): drop it and tell the operator; it is not a report."""


class FragmentConflict(SealedBoxInvalid):
    """Two fragments of one item disagree (another count, or other bytes at one index):
    the item cannot be trusted; drop it and wait for the sender to file it again."""


class ReassemblyLimit(LimitExceeded):
    """Reassembly would go over its memory bounds (open items, bytes, item size): keep the
    block stored, expire stale items (:meth:`Reassembler.expire`) and feed it again."""


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEnvelope(f"{what} is a whole number, not {value!r}")
    return value


def check_period(period_s: int, what: str = "a lane period") -> int:
    """``period_s`` if it is an allowed lane period: a divisor of a day, at least
    :data:`MIN_PERIOD_S` (so every day starts a period)."""
    _whole(period_s, what)
    if not MIN_PERIOD_S <= period_s <= SECONDS_PER_DAY or SECONDS_PER_DAY % period_s:
        raise InvalidEnvelope(
            f"{what} of {period_s} s is refused: choose a divisor of 86400 from "
            f"{MIN_PERIOD_S} s to 86400 s (21600 s, six hours, is the default)"
        )
    return period_s


def check_block_bytes(block_bytes: int, what: str = "a lane block") -> int:
    """``block_bytes`` if blocks of that size are allowed."""
    _whole(block_bytes, what)
    if not MIN_BLOCK_BYTES <= block_bytes <= MAX_BLOCK_BYTES:
        raise InvalidEnvelope(
            f"{what} of {block_bytes} bytes is refused: choose {MIN_BLOCK_BYTES} to "
            f"{MAX_BLOCK_BYTES} bytes"
        )
    return block_bytes


def payload_capacity(block_bytes: int) -> int:
    """Payload bytes one block of ``block_bytes`` carries."""
    return check_block_bytes(block_bytes) - BLOCK_OVERHEAD


def fragments_needed(item_bytes: int, block_bytes: int) -> int:
    """How many blocks of ``block_bytes`` an item of ``item_bytes`` takes (at least one)."""
    capacity = payload_capacity(block_bytes)
    return max(1, -(-_whole(item_bytes, "an item size") // capacity))


@dataclass(frozen=True, slots=True)
class LaneShape:
    """The lane's fixed traffic, the same for every vessel of a deployment.

    Uplink: ``blocks_per_period`` blocks of ``block_bytes`` every ``period_s``; downlink:
    ``down_blocks_per_period`` blocks of ``down_block_bytes`` every ``down_period_s``.
    The defaults (four 384-byte blocks up and one down a day: 1,920 bytes) are meant to
    fit, with MQTT and batch framing, in what one daily Iridium Certus session leaves
    after TLS (about 2,200 bytes); the benchmarks tune them."""

    period_s: int = 21_600
    blocks_per_period: int = 1
    block_bytes: int = 384
    down_period_s: int = SECONDS_PER_DAY
    down_blocks_per_period: int = 1
    down_block_bytes: int = 384

    def __post_init__(self) -> None:
        check_period(self.period_s, "the uplink lane period")
        check_period(self.down_period_s, "the downlink lane period")
        check_block_bytes(self.block_bytes, "an uplink lane block")
        check_block_bytes(self.down_block_bytes, "a downlink lane block")
        for name in ("blocks_per_period", "down_blocks_per_period"):
            value = _whole(getattr(self, name), name)
            if not 1 <= value <= MAX_BLOCKS_PER_PERIOD:
                raise InvalidEnvelope(
                    f"{name} = {value} is refused: from 1 to {MAX_BLOCKS_PER_PERIOD}"
                )

    @property
    def up_payload_bytes(self) -> int:
        """Report bytes one uplink block carries."""
        return payload_capacity(self.block_bytes)

    @property
    def down_payload_bytes(self) -> int:
        """Note bytes one downlink block carries."""
        return payload_capacity(self.down_block_bytes)

    def up_blocks_per_day(self) -> int:
        return self.blocks_per_period * (SECONDS_PER_DAY // self.period_s)

    def down_blocks_per_day(self) -> int:
        return self.down_blocks_per_period * (SECONDS_PER_DAY // self.down_period_s)

    def up_bytes_per_day(self) -> int:
        """Uplink block bytes a day (what the lane costs before framing)."""
        return self.up_blocks_per_day() * self.block_bytes

    def down_bytes_per_day(self) -> int:
        """Downlink block bytes a day (what the lane costs before framing)."""
        return self.down_blocks_per_day() * self.down_block_bytes

    def capacity_bytes_per_day(self) -> int:
        """Sealed report bytes the uplink lane carries a day."""
        return self.up_blocks_per_day() * self.up_payload_bytes

    def down_capacity_bytes_per_day(self) -> int:
        """Case note bytes the downlink lane carries a day."""
        return self.down_blocks_per_day() * self.down_payload_bytes

    def up_fragments(self, sealed_report_bytes: int) -> int:
        """Uplink blocks a sealed report of ``sealed_report_bytes`` takes."""
        return fragments_needed(sealed_report_bytes, self.block_bytes)

    def periods_to_send(self, sealed_report_bytes: int) -> int:
        """Uplink periods a report takes when it has the lane to itself."""
        return -(-self.up_fragments(sealed_report_bytes) // self.blocks_per_period)

    def period_of(self, seconds: float) -> int:
        """The uplink period (periods since 1970) that ``seconds`` falls in."""
        return int(seconds // self.period_s)

    def period_start(self, period: int) -> int:
        """When uplink period ``period`` starts, in seconds since 1970."""
        return period * self.period_s


@dataclass(frozen=True, slots=True)
class Fragment:
    """One piece of a report (uplink) or a case note (downlink), as its opener reads it."""

    item_id: bytes
    index: int
    count: int
    payload: bytes

    def __post_init__(self) -> None:
        if len(self.item_id) != ID_BYTES:
            raise InvalidEnvelope(f"a lane item id is {ID_BYTES} bytes, not {len(self.item_id)}")
        if not 1 <= self.count <= MAX_FRAGMENTS or not 0 <= self.index < self.count:
            raise InvalidEnvelope(
                f"fragment {self.index} of {self.count} is out of range "
                f"(at most {MAX_FRAGMENTS} fragments)"
            )
        if not self.payload:
            raise InvalidEnvelope("a lane fragment carries at least one byte")


# --- sealing and opening one block ---------------------------------------------------------


def _inner(magic: bytes, kind: BlockKind, fragment: Fragment | None, block_bytes: int) -> bytes:
    size = check_block_bytes(block_bytes) - SEAL_OVERHEAD
    if fragment is None:
        head = magic + bytes([VERSION, int(kind)]) + bytes(ID_BYTES + 6)
        return head + bytes(size - len(head))
    capacity = size - HEADER_BYTES
    if len(fragment.payload) > capacity:
        raise LimitExceeded(
            f"a {block_bytes}-byte lane block carries at most {capacity} bytes; this fragment "
            f"is {len(fragment.payload)}: cut the item with fragment_item()"
        )
    head = (
        magic
        + bytes([VERSION, int(kind)])
        + fragment.item_id
        + fragment.index.to_bytes(2, "big")
        + fragment.count.to_bytes(2, "big")
        + len(fragment.payload).to_bytes(2, "big")
    )
    return head + fragment.payload + bytes(capacity - len(fragment.payload))


def _seal(inner: bytes, public_key: bytes, whose: str) -> bytes:
    try:
        box = nacl.public.SealedBox(nacl.public.PublicKey(public_key))
    except (nacl.exceptions.TypeError, nacl.exceptions.ValueError) as exc:
        raise InvalidEnvelope(f"{whose} is not an X25519 public key: {exc}") from exc
    return box.encrypt(inner)


def _open(
    block: bytes, private_key: bytes, magic: bytes, block_bytes: int | None, what: str
) -> Fragment | None:
    if block_bytes is not None and len(block) != block_bytes:
        raise MalformedLaneBlock(
            f"{what} of {len(block)} bytes is not a lane block of this deployment "
            f"({block_bytes} bytes)"
        )
    if not MIN_BLOCK_BYTES <= len(block) <= MAX_BLOCK_BYTES:
        raise MalformedLaneBlock(f"{what} of {len(block)} bytes is no lane block size")
    try:
        box = nacl.public.SealedBox(nacl.public.PrivateKey(private_key))
    except (nacl.exceptions.TypeError, nacl.exceptions.ValueError) as exc:
        raise InvalidEnvelope(f"the key to open {what}s is not an X25519 key: {exc}") from exc
    try:
        inner = box.decrypt(block)
    except nacl.exceptions.CryptoError:
        return None  # sealed to someone else, or cover: not ours, and that is normal
    return _parse(inner, magic, what)


def _parse(inner: bytes, magic: bytes, what: str) -> Fragment | None:
    if len(inner) < HEADER_BYTES or not inner.startswith(magic):
        raise MalformedLaneBlock(f"{what} opened but is not a lane block (no {magic!r})")
    if inner[4] != VERSION:
        raise MalformedLaneBlock(f"{what} is lane version {inner[4]}; this software reads 1")
    try:
        kind = BlockKind(inner[5])
    except ValueError as exc:
        raise MalformedLaneBlock(f"{what} carries an unknown kind {inner[5]}") from exc
    if kind is BlockKind.COVER:
        return None  # cover sealed to a real key by mistake: still cover
    item_id = inner[6 : 6 + ID_BYTES]
    at = 6 + ID_BYTES
    index = int.from_bytes(inner[at : at + 2], "big")
    count = int.from_bytes(inner[at + 2 : at + 4], "big")
    length = int.from_bytes(inner[at + 4 : at + 6], "big")
    capacity = len(inner) - HEADER_BYTES
    if not 1 <= count <= MAX_FRAGMENTS or index >= count:
        raise MalformedLaneBlock(f"{what} says fragment {index} of {count}")
    if not 1 <= length <= capacity:
        raise MalformedLaneBlock(f"{what} says {length} payload bytes; it holds {capacity}")
    if any(inner[HEADER_BYTES + length :]):
        raise MalformedLaneBlock(f"{what} has bytes after its payload")
    return Fragment(item_id, index, count, inner[HEADER_BYTES : HEADER_BYTES + length])


def fragment_item(
    item: bytes, block_bytes: int, max_item_bytes: int = MAX_REPORT_BYTES
) -> list[bytes]:
    """Cut ``item`` (a sealed report, or a case note's content) into block payloads, in
    order; every piece but the last fills a block."""
    if not item:
        raise InvalidEnvelope("an empty item has nothing to send")
    if len(item) > max_item_bytes:
        raise LimitExceeded(
            f"an item of {len(item)} bytes is over the lane's {max_item_bytes}; shorten it"
        )
    capacity = payload_capacity(block_bytes)
    pieces = [item[at : at + capacity] for at in range(0, len(item), capacity)]
    if len(pieces) > MAX_FRAGMENTS:
        raise LimitExceeded(
            f"an item of {len(item)} bytes needs {len(pieces)} blocks of {block_bytes} bytes, "
            f"over {MAX_FRAGMENTS}; use larger blocks or a shorter item"
        )
    return pieces


def fragment_report(sealed_report: bytes, block_bytes: int) -> list[bytes]:
    """Cut a sealed report into uplink block payloads (see :func:`fragment_item`)."""
    return fragment_item(sealed_report, block_bytes, MAX_REPORT_BYTES)


def seal_up_block(fragment: Fragment, union_public_key: bytes, block_bytes: int) -> bytes:
    """One uplink block of exactly ``block_bytes``: ``fragment`` sealed to the union."""
    inner = _inner(UP_MAGIC, BlockKind.FRAGMENT, fragment, block_bytes)
    return _seal(inner, union_public_key, "the union's report key")


def seal_up_blocks(
    sealed_report: bytes, report_id: bytes, union_public_key: bytes, block_bytes: int
) -> list[bytes]:
    """Every uplink block of one report, index 0 first."""
    pieces = fragment_report(sealed_report, block_bytes)
    return [
        seal_up_block(Fragment(report_id, index, len(pieces), piece), union_public_key, block_bytes)
        for index, piece in enumerate(pieces)
    ]


def cover_up_block(throwaway_public_key: bytes, block_bytes: int) -> bytes:
    """An uplink cover block: sealed to a key whose private half the caller throws away."""
    inner = _inner(UP_MAGIC, BlockKind.COVER, None, block_bytes)
    return _seal(inner, throwaway_public_key, "a throwaway cover key")


def open_up_block(
    block: bytes, union_private_key: bytes, block_bytes: int | None = None
) -> Fragment | None:
    """The fragment in ``block`` if it is sealed to this union; None if it is not (another
    union's, or cover). Raises :class:`MalformedLaneBlock` for a block that opens but is
    malformed, or that has no lane size (``block_bytes``: the deployment's, if known)."""
    return _open(block, union_private_key, UP_MAGIC, block_bytes, "an uplink lane block")


# --- downlink: case notes ------------------------------------------------------------------

# ``protocol.cases`` encodes a note's fields only inside ``seal_case_note``; until it
# exposes that encoding, the lane goes through it with this key, which is PUBLIC (derived
# from a constant) and protects nothing: it only lets the one encoder and decoder of case
# notes be reused instead of copied.
_NOTE_CODEC_KEY = nacl.public.PrivateKey(
    hashlib.blake2b(b"vessel-relay lane note codec", digest_size=32).digest()
)


def note_content(note: CaseNote) -> bytes:
    """A case note's content as :mod:`protocol.cases` encodes it (``VRN1`` + CBOR)."""
    sealed = seal_case_note(note, bytes(_NOTE_CODEC_KEY.public_key))
    return unpad(nacl.public.SealedBox(_NOTE_CODEC_KEY).decrypt(sealed))


def read_note_content(content: bytes) -> CaseNote:
    """The case note in ``content`` (what :func:`note_content` made); typed errors only."""
    if len(content) > MAX_NOTE_BYTES:
        raise LimitExceeded(f"a case note of {len(content)} bytes is over {MAX_NOTE_BYTES}")
    sealed = nacl.public.SealedBox(_NOTE_CODEC_KEY.public_key).encrypt(pad(content))
    return open_case_note(sealed, bytes(_NOTE_CODEC_KEY))


def seal_down_blocks(
    note: CaseNote, reply_public_key: bytes, block_bytes: int, note_id: bytes
) -> list[bytes]:
    """Every downlink block of one case note, sealed by the union to the reporter's reply
    key (index 0 first). The relay queues them as they are; ``note_id`` is random."""
    content = note_content(note)
    pieces = fragment_item(content, block_bytes, MAX_NOTE_BYTES)
    blocks = []
    for index, piece in enumerate(pieces):
        inner = _inner(
            DOWN_MAGIC,
            BlockKind.FRAGMENT,
            Fragment(note_id, index, len(pieces), piece),
            block_bytes,
        )
        blocks.append(_seal(inner, reply_public_key, "the reporter's reply key"))
    return blocks


def cover_down_block(throwaway_public_key: bytes, block_bytes: int) -> bytes:
    """A downlink cover block, made by the relay: sealed to a throwaway key, so that it
    starts with a real X25519 key like every note block (random bytes would not)."""
    inner = _inner(DOWN_MAGIC, BlockKind.COVER, None, block_bytes)
    return _seal(inner, throwaway_public_key, "a throwaway cover key")


def open_down_block(
    block: bytes, reply_private_key: bytes, block_bytes: int | None = None
) -> Fragment | None:
    """The note fragment in ``block`` if it is sealed to this reply key, else None."""
    return _open(block, reply_private_key, DOWN_MAGIC, block_bytes, "a downlink lane block")


# --- reassembly ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Partial:
    count: int
    first_seen: float
    parts: dict[int, bytes]
    size: int


class Reassembler:
    """Puts items (reports, or notes) back together from fragments in any order.

    Items are keyed by ``(source, item id)``: ``source`` is who sent the blocks (the
    vessel id, for a union), so one vessel's fragments never mix with another's. A
    duplicate fragment is ignored, also after its item completed (the last
    ``remember_done`` items are remembered; a durable store dedupes beyond that). Memory
    is bounded: open items in all and per source, bytes held, bytes per item; over a
    bound, :class:`ReassemblyLimit` is raised and nothing is kept of that fragment.
    """

    def __init__(
        self,
        *,
        max_item_bytes: int = MAX_REPORT_BYTES,
        max_open: int = 1024,
        max_open_per_source: int = 64,
        max_bytes: int = 16 * MAX_REPORT_BYTES,
        remember_done: int = 4096,
    ) -> None:
        for name, value in (
            ("max_item_bytes", max_item_bytes),
            ("max_open", max_open),
            ("max_open_per_source", max_open_per_source),
            ("max_bytes", max_bytes),
            ("remember_done", remember_done),
        ):
            if _whole(value, name) < 1:
                raise InvalidEnvelope(f"{name} must be positive, not {value}")
        self.max_item_bytes = max_item_bytes
        self.max_open = max_open
        self.max_open_per_source = max_open_per_source
        self.max_bytes = max_bytes
        self.remember_done = remember_done
        self._open: dict[tuple[int, bytes], _Partial] = {}
        self._per_source: dict[int, int] = {}
        self._done: OrderedDict[tuple[int, bytes], None] = OrderedDict()
        self._bytes = 0

    @property
    def open_items(self) -> int:
        return len(self._open)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def add(self, fragment: Fragment, *, source: int = 0, now: float = 0.0) -> bytes | None:
        """Take one fragment; return the whole item when this fragment completes it."""
        key = (source, fragment.item_id)
        if key in self._done:
            return None
        partial = self._open.get(key)
        if partial is None:
            if len(self._open) >= self.max_open:
                raise ReassemblyLimit(f"{len(self._open)} items are open, the most allowed")
            if self._per_source.get(source, 0) >= self.max_open_per_source:
                raise ReassemblyLimit(
                    f"source {source} has {self.max_open_per_source} items open, the most "
                    "allowed for one sender"
                )
        else:
            if fragment.count != partial.count:
                self._drop(key)
                raise FragmentConflict(
                    f"item {fragment.item_id.hex()} from {source} was {partial.count} "
                    f"fragments and is now {fragment.count}; dropped"
                )
            known = partial.parts.get(fragment.index)
            if known is not None:
                if known == fragment.payload:
                    return None
                self._drop(key)
                raise FragmentConflict(
                    f"item {fragment.item_id.hex()} from {source} has two different "
                    f"fragments {fragment.index}; dropped"
                )
        size = len(fragment.payload) + (0 if partial is None else partial.size)
        if size > self.max_item_bytes:
            if partial is not None:
                self._drop(key)
            raise ReassemblyLimit(
                f"item {fragment.item_id.hex()} from {source} grows over "
                f"{self.max_item_bytes} bytes; dropped"
            )
        if self._bytes + len(fragment.payload) > self.max_bytes:
            raise ReassemblyLimit(f"reassembly holds {self._bytes} bytes, near its bound")
        if partial is None:
            partial = _Partial(fragment.count, now, {}, 0)
            self._open[key] = partial
            self._per_source[source] = self._per_source.get(source, 0) + 1
        partial.parts[fragment.index] = fragment.payload
        partial.size = size
        self._bytes += len(fragment.payload)
        if len(partial.parts) < partial.count:
            return None
        self._drop(key)
        self._done[key] = None
        while len(self._done) > self.remember_done:
            self._done.popitem(last=False)
        return b"".join(partial.parts[index] for index in range(partial.count))

    def expire(self, before: float) -> list[tuple[int, bytes]]:
        """Drop the open items first seen before ``before``; return their (source, id)."""
        stale = [key for key, partial in self._open.items() if partial.first_seen < before]
        for key in stale:
            self._drop(key)
        return stale

    def _drop(self, key: tuple[int, bytes]) -> None:
        partial = self._open.pop(key)
        self._bytes -= partial.size
        left = self._per_source[key[0]] - 1
        if left:
            self._per_source[key[0]] = left
        else:
            del self._per_source[key[0]]


@dataclass(frozen=True, slots=True)
class NotesRead:
    """What a reporter's reply key found among the stored downlink blocks."""

    notes: tuple[CaseNote, ...]
    #: notes of which some blocks have not arrived yet
    incomplete: int
    #: blocks that opened with the key but were malformed (or notes that did not decode)
    malformed: int


def read_notes(
    blocks: Iterable[bytes], reply_private_key: bytes, block_bytes: int | None = None
) -> NotesRead:
    """Trial-decrypt every stored downlink block with a signed-in reporter's reply key and
    put their notes back together, in the order their last block was stored. Cover and
    other reporters' blocks are skipped; nothing here says which was which."""
    reassembler = Reassembler(
        max_item_bytes=MAX_NOTE_BYTES,
        max_open=MAX_FRAGMENTS,
        max_open_per_source=MAX_FRAGMENTS,
        max_bytes=64 * MAX_NOTE_BYTES,
    )
    notes: list[CaseNote] = []
    malformed = 0
    for block in blocks:
        try:
            fragment = open_down_block(block, reply_private_key, block_bytes)
            if fragment is None:
                continue
            content = reassembler.add(fragment)
            if content is not None:
                notes.append(read_note_content(content))
        except RemoteProtocolError:
            malformed += 1
    return NotesRead(tuple(notes), reassembler.open_items, malformed)
