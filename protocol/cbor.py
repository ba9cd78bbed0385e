"""Strict CBOR: the subset our wire format uses, checked before cbor2 decodes it.

Our envelopes use only unsigned and negative integers, byte and text strings, arrays,
maps, and the simple values false/true/null, all with definite lengths. cbor2 on its own
would also accept semantic tags (dates, bignums, shared references, MIME messages ...),
floats, indefinite lengths and trailing bytes. A short walk over the bytes refuses all
of those, and enforces the depth and container limits, before cbor2 builds anything.
"""

from __future__ import annotations

import cbor2

from protocol.errors import LimitExceeded, MalformedBatch


def _argument(data: bytes, pos: int, info: int, what: str) -> tuple[int, int]:
    """The argument of the item head at ``pos`` (after the initial byte) and the new pos."""
    if info < 24:
        return info, pos
    widths = {24: 1, 25: 2, 26: 4, 27: 8}
    width = widths.get(info)
    if width is None:
        raise MalformedBatch(f"{what}: indefinite or reserved CBOR length (info {info})")
    if pos + width > len(data):
        raise MalformedBatch(f"{what}: CBOR item is cut short")
    return int.from_bytes(data[pos : pos + width], "big"), pos + width


def check_cbor(
    data: bytes, *, max_depth: int, max_length: int, what: str = "envelope data"
) -> None:
    """Refuse anything outside our CBOR subset, or over the limits (one item, exact end)."""
    pos = 0
    # A stack of items still expected at each open container level.
    pending = [1]
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= len(data):
            raise MalformedBatch(f"{what}: CBOR data is cut short")
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        value, pos = _argument(data, pos + 1, info, what)
        if major in (0, 1):
            continue
        if major in (2, 3):
            if value > len(data) - pos:
                raise MalformedBatch(f"{what}: a CBOR string claims more bytes than there are")
            pos += value
            continue
        if major in (4, 5):
            if value > max_length:
                raise LimitExceeded(
                    f"{what}: a CBOR container has {value} items, over the limit of {max_length}"
                )
            if len(pending) >= max_depth + 1:
                raise LimitExceeded(f"{what}: CBOR nesting is deeper than {max_depth}")
            pending.append(value * 2 if major == 5 else value)
            continue
        if major == 7 and info in (20, 21, 22):
            continue
        kind = "tag" if major == 6 else "float or simple value"
        raise MalformedBatch(f"{what}: CBOR {kind} (0x{initial:02x}) is not allowed here")
    if pos != len(data):
        raise MalformedBatch(f"{what}: {len(data) - pos} stray bytes after the CBOR item")


def strict_loads(data: bytes, *, max_depth: int, max_length: int, what: str) -> object:
    """Check ``data`` with :func:`check_cbor`, then decode it with cbor2."""
    check_cbor(data, max_depth=max_depth, max_length=max_length, what=what)
    try:
        decoded: object = cbor2.loads(
            data, max_depth=max_depth + 1, allow_indefinite=False, allow_duplicate_keys=False
        )
    except cbor2.CBORDecodeError as exc:
        raise MalformedBatch(f"{what}: {exc}") from exc
    except (TypeError, ValueError, RecursionError, OverflowError) as exc:
        raise MalformedBatch(f"{what}: not decodable ({exc})") from exc
    return decoded


def dumps(value: object) -> bytes:
    """Encode with cbor2 in canonical form (shortest integers, definite lengths)."""
    return cbor2.dumps(value, canonical=True)
