"""Daily slots: one fixed-size sealed item per crew member per day, whatever it carries.

Every crew member has a **daily slot** of ``slot_bytes`` (default 2 KiB, configurable upwards
only: :func:`check_slot_bytes`). The slot always travels and holds one of:

* a grievance report (sealed to the union's key),
* a case message (the reporter adding to their case, sealed to the union's key),
* **cover**: random-looking bytes sealed to a throwaway key that nobody keeps.

All three are the same envelope kind (a ``GrievanceReport``) with a sealed part of exactly
``slot_bytes``: the outbox row, the batch and the link see the same length and the same
header, so the owner cannot tell a grievance from cover. Only the union, opening the slot
with its private key, learns what it holds (cover does not open, and is dropped).

Wire form of ``sealed`` (``slot_bytes`` in all)::

    b"VRS1" | crew (2 bytes, big-endian) | day (4 bytes, days since 1970) | sealed box

The crew number and the day are in the clear on purpose: the relay records slot arrivals
per crew member to notice a vessel that drops someone's slots (:func:`silence_alerts`).
They say nothing new: every crew member has a slot every day.

Inside the sealed box: ``b"VRSC" | kind (1 byte) | ISO/IEC 7816-4 padded payload``.

Pure: no I/O, no clock; libsodium makes the sealed box's ephemeral key.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import nacl.exceptions
import nacl.public

from protocol.errors import InvalidEnvelope, LimitExceeded, SealedBoxInvalid

#: The default (and smallest) daily slot, in bytes of sealed data.
DEFAULT_SLOT_BYTES = 2048
#: The largest slot a vessel may configure (a slot rides every batch day; keep it small).
MAX_SLOT_BYTES = 64 * 1024
SLOT_MAGIC = b"VRS1"
_INNER_MAGIC = b"VRSC"
HEADER_BYTES = len(SLOT_MAGIC) + 2 + 4
#: What a libsodium sealed box adds: an ephemeral X25519 key and a Poly1305 tag.
SEAL_OVERHEAD = 32 + 16
SECONDS_PER_DAY = 86_400
#: The default slot period: one slot per crew member per union per day.
DEFAULT_SLOT_PERIOD_S = SECONDS_PER_DAY
#: The shortest slot period (demos and tests); a period must divide a day.
MIN_SLOT_PERIOD_S = 10


class SlotKind(enum.IntEnum):
    """What a slot carries (known only to whoever opens it)."""

    COVER = 0
    GRIEVANCE = 1
    CASE_MESSAGE = 2


@dataclass(frozen=True, slots=True)
class SlotHeader:
    """The clear part of a slot: whose slot it is and for which day."""

    crew: int
    day: int


@dataclass(frozen=True, slots=True)
class OpenedSlot:
    """A slot the union opened: its header, what it carries and the payload."""

    header: SlotHeader
    kind: SlotKind
    payload: bytes


def check_slot_bytes(slot_bytes: int) -> int:
    """``slot_bytes`` if it is allowed: at least the default, at most :data:`MAX_SLOT_BYTES`."""
    if isinstance(slot_bytes, bool) or not isinstance(slot_bytes, int):
        raise InvalidEnvelope(f"a slot size is a whole number of bytes, not {slot_bytes!r}")
    if slot_bytes < DEFAULT_SLOT_BYTES:
        raise InvalidEnvelope(
            f"a daily slot of {slot_bytes} bytes is smaller than the floor of "
            f"{DEFAULT_SLOT_BYTES}; slots may be raised, never lowered"
        )
    if slot_bytes > MAX_SLOT_BYTES:
        raise InvalidEnvelope(
            f"a daily slot of {slot_bytes} bytes is over {MAX_SLOT_BYTES}; choose a smaller one"
        )
    return slot_bytes


def payload_capacity(slot_bytes: int = DEFAULT_SLOT_BYTES) -> int:
    """The largest payload a slot of ``slot_bytes`` carries."""
    return check_slot_bytes(slot_bytes) - HEADER_BYTES - SEAL_OVERHEAD - len(_INNER_MAGIC) - 2


def check_slot_period(period_s: int) -> int:
    """``period_s`` if it is an allowed slot period: from :data:`MIN_SLOT_PERIOD_S` to a day,
    dividing a day (so every day starts a period and the header's day is well defined)."""
    if isinstance(period_s, bool) or not isinstance(period_s, int):
        raise InvalidEnvelope(f"a slot period is a whole number of seconds, not {period_s!r}")
    if not MIN_SLOT_PERIOD_S <= period_s <= SECONDS_PER_DAY or SECONDS_PER_DAY % period_s:
        raise InvalidEnvelope(
            f"a slot period of {period_s} s is refused: choose a divisor of 86400 from "
            f"{MIN_SLOT_PERIOD_S} s to 86400 s (a day, the default)"
        )
    return period_s


def period_of(seconds: float, period_s: int = DEFAULT_SLOT_PERIOD_S) -> int:
    """The slot period (periods of ``period_s`` since 1970) of a time in seconds."""
    return int(seconds // period_s)


def day_of(seconds: float) -> int:
    """The slot day (UTC days since 1970) of a time in seconds since 1970."""
    return int(seconds // SECONDS_PER_DAY)


def seal_slot(
    header: SlotHeader,
    kind: SlotKind,
    payload: bytes,
    public_key: bytes,
    slot_bytes: int = DEFAULT_SLOT_BYTES,
) -> bytes:
    """A slot of exactly ``slot_bytes``: ``payload`` sealed to ``public_key``.

    For cover, pass ``SlotKind.COVER``, an empty payload and a throwaway public key whose
    private half the caller discards at once."""
    if not 0 <= header.crew < 2**16 or not 0 <= header.day < 2**32:
        raise InvalidEnvelope(f"slot header out of range: crew {header.crew}, day {header.day}")
    capacity = payload_capacity(slot_bytes)
    if len(payload) > capacity:
        raise LimitExceeded(
            f"a slot carries at most {capacity} bytes; this payload is {len(payload)}: "
            "shorten it or send the rest in the next day's slot"
        )
    inner = _INNER_MAGIC + bytes([int(kind)]) + payload + b"\x80"
    inner += bytes(capacity + len(_INNER_MAGIC) + 2 - len(inner))
    try:
        box = nacl.public.SealedBox(nacl.public.PublicKey(public_key))
    except (nacl.exceptions.TypeError, nacl.exceptions.ValueError) as exc:
        raise InvalidEnvelope(f"a slot is sealed to an X25519 public key: {exc}") from exc
    clear = SLOT_MAGIC + header.crew.to_bytes(2, "big") + header.day.to_bytes(4, "big")
    sealed = clear + box.encrypt(inner)
    if len(sealed) != slot_bytes:  # pragma: no cover - arithmetic above guarantees it
        raise AssertionError(f"slot of {len(sealed)} bytes, not {slot_bytes}")
    return sealed


def slot_header(sealed: bytes) -> SlotHeader | None:
    """The clear header of a slot, or None if ``sealed`` is not a slot (an older report)."""
    if len(sealed) < DEFAULT_SLOT_BYTES or not sealed.startswith(SLOT_MAGIC):
        return None
    return SlotHeader(int.from_bytes(sealed[4:6], "big"), int.from_bytes(sealed[6:10], "big"))


def open_slot(sealed: bytes, private_key: bytes) -> OpenedSlot | None:
    """Open a slot with the union's private key; None for cover (or anyone else's slot)."""
    header = slot_header(sealed)
    if header is None:
        raise SealedBoxInvalid("not a slot: no slot header")
    try:
        inner = nacl.public.SealedBox(nacl.public.PrivateKey(private_key)).decrypt(
            sealed[HEADER_BYTES:]
        )
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError):
        return None
    end = inner.rstrip(b"\x00")
    if not inner.startswith(_INNER_MAGIC) or not end.endswith(b"\x80") or len(end) < 6:
        raise SealedBoxInvalid("the slot opened but its content is malformed")
    try:
        kind = SlotKind(inner[len(_INNER_MAGIC)])
    except ValueError as exc:
        raise SealedBoxInvalid(f"the slot carries an unknown kind ({exc})") from exc
    return OpenedSlot(header, kind, end[len(_INNER_MAGIC) + 1 : -1])


# --- silence -----------------------------------------------------------------------------


class SilenceKind(enum.Enum):
    """Why the union is alerted."""

    CREW_MEMBER_SILENT = "crew member silent"
    VESSEL_SILENT = "vessel silent"
    #: the vessel syncs but its grievance lane blocks (:mod:`protocol.lane`) stopped
    LANE_SILENT = "lane silent"


@dataclass(frozen=True, slots=True)
class SilenceAlert:
    """A vessel that stopped syncing, or a crew member whose slots stopped while it syncs."""

    kind: SilenceKind
    vessel: int
    #: seconds since 1970: last sync (vessel), start of last slot day (crew), arrival of
    #: the last lane block (lane)
    since: float
    crew: int | None = None

    def as_json(self) -> dict[str, object]:
        found: dict[str, object] = {
            "kind": self.kind.value,
            "vessel": self.vessel,
            "since": self.since,
        }
        if self.crew is not None:
            found["crew"] = self.crew
        return found


def silence_alerts(
    *,
    vessel_last_sync: Mapping[int, float | None],
    last_slot_day: Mapping[tuple[int, int], int],
    now: float,
    expected_gap_s: Mapping[int, float],
    crew_grace_days: int = 1,
    last_lane_block: Mapping[int, float] | None = None,
    lane_gap_s: float = 1.5 * SECONDS_PER_DAY,
) -> list[SilenceAlert]:
    """The alerts for these vessels at ``now``.

    * "vessel silent": the vessel's last sync is older than its link profile's expected
      gap (``expected_gap_s[vessel]``), or it never synced.
    * "lane silent" (vessels on the grievance lane, those in ``last_lane_block``: when
      their latest lane block arrived): the vessel still syncs, but its last sync is more
      than ``lane_gap_s`` after its latest lane block. Lane blocks leave every lane period
      whatever they hold and ride the next session within the grievance latency target,
      so ``lane_gap_s`` is that target plus one lane period, with margin: a vessel that
      syncs without them is holding the lane back. Their crew are not judged by slots.
    * "crew member silent" (vessels still on daily slots): the vessel still syncs, but a
      crew member's last slot is more than ``crew_grace_days`` days older than the last
      sync's day (slots travel daily: a syncing vessel that carries nobody's slot for that
      crew member is dropping it).
    """
    lanes = last_lane_block or {}
    alerts: list[SilenceAlert] = []
    for vessel, last in sorted(vessel_last_sync.items()):
        gap = expected_gap_s.get(vessel, SECONDS_PER_DAY)
        if last is None or now - last > gap:
            alerts.append(SilenceAlert(SilenceKind.VESSEL_SILENT, vessel, last or 0.0))
            continue
        lane = lanes.get(vessel)
        if lane is not None:
            if last - lane > lane_gap_s:
                alerts.append(SilenceAlert(SilenceKind.LANE_SILENT, vessel, lane))
            continue
        sync_day = day_of(last)
        for (slot_vessel, crew), day in sorted(last_slot_day.items()):
            if slot_vessel == vessel and sync_day - day > crew_grace_days:
                alerts.append(
                    SilenceAlert(
                        SilenceKind.CREW_MEMBER_SILENT, vessel, float(day * SECONDS_PER_DAY), crew
                    )
                )
    return alerts


# --- downlink slots ----------------------------------------------------------------------

#: A sealed case note in the 1,024-byte padding bucket (``protocol.cases.seal_case_note``
#: of a note with a reply of up to about 900 bytes): 1,024 + 48.
DOWNLINK_NOTE_BYTES = 1024 + SEAL_OVERHEAD
#: The smaller sealed case note (a stage change without a long reply): 256 + 48.
SHORT_NOTE_BYTES = 256 + SEAL_OVERHEAD
DOWNLINK_MAGIC = b"VRD1"
#: A downlink slot item: magic, crew, day, then :data:`DOWNLINK_NOTE_BYTES` of body.
DOWNLINK_SLOT_BYTES = len(DOWNLINK_MAGIC) + 2 + 4 + DOWNLINK_NOTE_BYTES


def downlink_slot(header: SlotHeader, sealed_note: bytes | None, filler: bytes) -> bytes:
    """The relay's downlink slot item for one crew member and period: exactly
    :data:`DOWNLINK_SLOT_BYTES`, whether it carries a sealed case note or nothing.

    The body is the sealed note followed by ``filler`` (random bytes the caller draws, as
    long as needed to fill :data:`DOWNLINK_NOTE_BYTES`). For cover, ``sealed_note`` is a
    note-sized sealed box to a throwaway key (:func:`cover_note`), so every body starts
    with a real X25519 key and looks alike. A note is either :data:`SHORT_NOTE_BYTES` or
    :data:`DOWNLINK_NOTE_BYTES` long; a longer one does not fit a slot."""
    if sealed_note is None or len(sealed_note) not in (SHORT_NOTE_BYTES, DOWNLINK_NOTE_BYTES):
        raise LimitExceeded(
            f"a downlink slot carries a sealed case note of {SHORT_NOTE_BYTES} or "
            f"{DOWNLINK_NOTE_BYTES} bytes, not {None if sealed_note is None else len(sealed_note)}"
            "; send a longer note on its own"
        )
    missing = DOWNLINK_NOTE_BYTES - len(sealed_note)
    if len(filler) < missing:
        raise InvalidEnvelope(f"a downlink slot needs {missing} bytes of filler")
    clear = DOWNLINK_MAGIC + header.crew.to_bytes(2, "big") + header.day.to_bytes(4, "big")
    return clear + sealed_note + filler[:missing]


def cover_note(throwaway_public_key: bytes) -> bytes:
    """A short-note-sized sealed box to a throwaway key: the body of a cover downlink slot."""
    box = nacl.public.SealedBox(nacl.public.PublicKey(throwaway_public_key))
    return box.encrypt(bytes(SHORT_NOTE_BYTES - SEAL_OVERHEAD))


def downlink_slot_notes(item: bytes) -> tuple[SlotHeader, tuple[bytes, bytes]] | None:
    """The header of a downlink slot item and its two candidate sealed notes (short and
    long prefix of the body): the vessel tries both with the reporter's reply key; cover
    opens with neither and is dropped. None if ``item`` is not a downlink slot."""
    if len(item) != DOWNLINK_SLOT_BYTES or not item.startswith(DOWNLINK_MAGIC):
        return None
    header = SlotHeader(int.from_bytes(item[4:6], "big"), int.from_bytes(item[6:10], "big"))
    body = item[10:]
    return header, (body[:SHORT_NOTE_BYTES], body)
