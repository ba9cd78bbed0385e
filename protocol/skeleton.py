"""Skeleton columns: a batch's envelope maps stored column by column, for compression.

Each envelope is an integer-keyed CBOR map (:func:`protocol.envelopes.to_skeleton`).
Twenty such maps repeat the same keys twenty times, which costs several bytes per
message even after compression. A batch therefore stores them *transposed*: one CBOR map
``{key: [values...]}`` with one column per key, in envelope order. The kind column
(key 0) says which keys each envelope has; a presence column (key 31) holds one bit mask
per envelope whose kind has optional fields; sequence numbers (key 1) and relative times
(key 4) are stored as differences from the previous envelope's, which are mostly 0 or 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from protocol.envelopes import AGE_KEY, ENVELOPE_TYPES, KIND_KEY, Kind
from protocol.errors import LimitExceeded, MalformedBatch

PRESENCE_KEY = 31
_DELTA_KEYS = (1, AGE_KEY)


def _schema(kind: Kind) -> tuple[tuple[int, bool], ...]:
    """(key, optional) pairs of a kind, in wire order, relative time first."""
    fields = ENVELOPE_TYPES[kind].FIELDS
    return ((AGE_KEY, False), *((spec.key, spec.optional) for spec in fields))


def to_columns(entries: Sequence[Mapping[int, object]]) -> dict[int, list[object]]:
    """Transpose envelope maps into columns (see the module docstring)."""
    columns: dict[int, list[object]] = {KIND_KEY: []}
    previous = dict.fromkeys(_DELTA_KEYS, 0)
    for entry in entries:
        kind = Kind(int(entry[KIND_KEY]))  # type: ignore[call-overload]
        columns[KIND_KEY].append(int(kind))
        mask = 0
        bit = 0
        has_optional = False
        for key, optional in _schema(kind):
            value = entry.get(key, 0 if key == AGE_KEY else None)
            if optional:
                has_optional = True
                if value is not None:
                    mask |= 1 << bit
                bit += 1
            if value is None:
                continue
            if key in previous:
                assert isinstance(value, int)
                value, previous[key] = value - previous[key], value
            columns.setdefault(key, []).append(value)
        if has_optional:
            columns.setdefault(PRESENCE_KEY, []).append(mask)
    return columns


def from_columns(columns: object, *, max_envelopes: int) -> list[dict[int, object]]:
    """Rebuild envelope maps from columns; raise :class:`MalformedBatch` on any mismatch."""
    if not isinstance(columns, dict) or not all(
        isinstance(key, int) and isinstance(value, list) for key, value in columns.items()
    ):
        raise MalformedBatch("batch skeleton is not a map of columns")
    kinds = columns.get(KIND_KEY)
    if not kinds:
        raise MalformedBatch("batch skeleton has no envelopes")
    if len(kinds) > max_envelopes:
        raise LimitExceeded(
            f"batch skeleton has {len(kinds)} envelopes, over the limit of {max_envelopes}"
        )
    cursors = dict.fromkeys(columns, 0)
    cursors[KIND_KEY] = len(kinds)
    previous = dict.fromkeys(_DELTA_KEYS, 0)

    def take(key: int) -> object:
        column = columns.get(key)
        index = cursors.get(key, 0)
        if column is None or index >= len(column):
            raise MalformedBatch(f"batch skeleton column {key} is too short")
        cursors[key] = index + 1
        return column[index]

    entries = []
    for kind_value in kinds:
        if isinstance(kind_value, bool) or not isinstance(kind_value, int):
            raise MalformedBatch(f"envelope kind {kind_value!r} is not a number")
        try:
            kind = Kind(kind_value)
        except ValueError:
            raise MalformedBatch(
                f"envelope kind {kind_value} is not known to this version"
            ) from None
        schema = _schema(kind)
        mask = 0
        if any(optional for _, optional in schema):
            raw_mask = take(PRESENCE_KEY)
            if isinstance(raw_mask, bool) or not isinstance(raw_mask, int) or raw_mask < 0:
                raise MalformedBatch(f"presence mask {raw_mask!r} is not a bit mask")
            mask = raw_mask
        entry: dict[int, object] = {KIND_KEY: kind_value}
        bit = 0
        for key, optional in schema:
            if optional:
                present = bool(mask >> bit & 1)
                bit += 1
                if not present:
                    continue
            value = take(key)
            if key in previous:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise MalformedBatch(f"skeleton column {key} holds {value!r}, not a number")
                value = previous[key] + value
                if abs(value) >= 2**53:
                    raise MalformedBatch(f"skeleton column {key} runs out of range")
                previous[key] = value
            entry[key] = value
        if mask >> bit:
            raise MalformedBatch(f"presence mask {mask} names fields a {kind.name} lacks")
        entries.append(entry)
    for key, used in cursors.items():
        if used != len(columns[key]):
            raise MalformedBatch(f"batch skeleton column {key} has values no envelope uses")
    return entries
