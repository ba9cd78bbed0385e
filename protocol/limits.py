"""Limits: the hard bounds every decoder enforces before it allocates.

A batch from the link is untrusted until its signature verifies, and even a signed batch
may come from a buggy or compromised vessel. These bounds keep decoding cheap and
bounded in memory and time whatever the bytes say.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import LimitExceeded

#: Times on the wire are whole minutes since 1970-01-01 00:00 UTC, from 0 up to (not
#: including) this one: 3000-01-01 00:00 UTC. A vessel's clock is never that far off, and
#: every date computed from a time in this range (a month, a day, a local time in any
#: zone, the month after) stays far inside what ``datetime`` can represent (year 9999).
#: A signed batch naming a time outside it is refused as malformed, never stored.
MAX_MINUTES = 541_728_000


def minutes_in_range(value: object) -> bool:
    """Whether ``value`` is a wire time: a whole number of minutes in ``[0, MAX_MINUTES)``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_MINUTES


#: The allowed range of wire times, as error messages say it.
MINUTES_RANGE = f"0 to {MAX_MINUTES - 1} minutes since 1970 (before the year 3000)"


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits for decoding one batch (defaults suit a satellite link)."""

    #: Bytes of one batch on the wire (header, frames and signature).
    max_batch_bytes: int = 256 * 1024
    #: Bytes of all decompressed output of one batch, frames added up.
    max_decompressed_bytes: int = 1024 * 1024
    #: Frames (one per language and codec) in one batch.
    max_frames: int = 16
    #: Envelopes in one batch.
    max_envelopes: int = 4096
    #: Characters of one text (a message, a reply, a note).
    max_text_chars: int = 16_384
    #: Bytes of one opaque field (a sealed grievance report, a dictionary chunk).
    max_blob_bytes: int = 64 * 1024
    #: Nesting depth of CBOR containers.
    max_cbor_depth: int = 5
    #: Items in one CBOR array or map.
    max_container_length: int = 4096

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"limit {name} must be a positive integer, not {value!r}")

    def check(self, what: str, value: int, limit: int) -> None:
        """Raise :class:`LimitExceeded` when ``value`` is over ``limit``."""
        if value > limit:
            raise LimitExceeded(f"{what} is {value}, over the limit of {limit}")


DEFAULT_LIMITS = Limits()


#: The smallest and largest grievance-lane block (:mod:`protocol.lane`): a sealed box of
#: a fixed size that every vessel of a deployment shares.
MIN_LANE_BLOCK_BYTES = 128
MAX_LANE_BLOCK_BYTES = 8192
