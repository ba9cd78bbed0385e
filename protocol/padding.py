"""Padding: Padmé size classes, so a batch's length on the wire says little about its content.

Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication
with PURBs", PETS 2019) rounds a length ``L`` up so that only its top
``floor(log2(floor(log2 L))) + 1`` significant bits are kept. The overhead is at most
about ``1 / (2 * log2 L)``: under 12% from 100 bytes on, under 6.3% from 1,000 bytes on,
and a length reveals ``O(log log L)`` bits instead of ``O(log L)``.

:func:`padme` gives the class of a length; :func:`zero_padding_item` builds the CBOR byte
string of zeros that :func:`protocol.batch.encode_batch` appends inside the signed part of
a batch to reach it. Pure arithmetic: no I/O, no randomness.
"""

from __future__ import annotations

from protocol.errors import LocalProtocolError


def padme(length: int) -> int:
    """The Padmé size class of ``length``: the smallest allowed length ``>= length``.

    >>> [padme(n) for n in (0, 1, 2, 9, 100, 1000, 1001)]
    [0, 1, 2, 10, 104, 1024, 1024]
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise LocalProtocolError(f"a length to pad is a whole number of bytes, not {length!r}")
    if length < 2:
        return length
    exponent = length.bit_length() - 1  # floor(log2 length)
    size_bits = exponent.bit_length()  # floor(log2 exponent) + 1
    last_bits = exponent - size_bits
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask


def is_padme(length: int) -> bool:
    """Whether ``length`` is itself a Padmé size class."""
    return padme(length) == length


def zero_padding_item(size: int) -> bytes:
    """A CBOR byte string of zeros that takes exactly ``size`` bytes (``size >= 1``).

    The shortest head is used where it fits; otherwise a wider length head (CBOR allows
    it, and our strict reader accepts it), so every size is reachable.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise LocalProtocolError(f"a padding item takes at least 1 byte, not {size!r}")
    if size <= 24:
        return bytes([0x40 + size - 1]) + bytes(size - 1)
    if size <= 2 + 0xFF:
        return bytes([0x58, size - 2]) + bytes(size - 2)
    if size <= 3 + 0xFFFF:
        return b"\x59" + (size - 3).to_bytes(2, "big") + bytes(size - 3)
    if size <= 5 + 0xFFFFFFFF:
        return b"\x5a" + (size - 5).to_bytes(4, "big") + bytes(size - 5)
    raise LocalProtocolError(f"padding of {size} bytes is beyond any batch")
