"""Limits: the hard bounds every decoder enforces before it allocates.

A batch from the link is untrusted until its signature verifies, and even a signed batch
may come from a buggy or compromised vessel. These bounds keep decoding cheap and
bounded in memory and time whatever the bytes say.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import LimitExceeded


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
