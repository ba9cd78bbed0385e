"""Training: zstd dictionaries from sample messages, reproducibly.

Pure: lines in, dictionary bytes out. The same lines, size and id always give the same
bytes (COVER training with a fixed parameter search, one thread), so the dictionaries
the package ships can be rebuilt from the public corpus and checked by their hash.
"""

from __future__ import annotations

from collections.abc import Sequence

import zstandard

from protocol.errors import LocalProtocolError

#: Parameter search steps for the COVER trainer (fixed, so training is reproducible).
_COVER_STEPS = 40
MIN_SAMPLES = 8


def train_zstd_dictionary(lines: Sequence[str], *, size: int, dictionary_id: int) -> bytes:
    """Train a zstd dictionary of at most ``size`` bytes from one message per line."""
    samples: list[bytes | bytearray | memoryview] = [
        line.encode("utf-8") for line in lines if line.strip()
    ]
    if len(samples) < MIN_SAMPLES:
        raise LocalProtocolError(
            f"training needs at least {MIN_SAMPLES} non-empty lines, got {len(samples)}"
        )
    if size < 1024:
        raise LocalProtocolError(f"a dictionary of {size} bytes is too small; use 1K or more")
    try:
        dictionary = zstandard.train_dictionary(
            size, samples, dict_id=dictionary_id, steps=_COVER_STEPS, threads=1
        )
    except zstandard.ZstdError as exc:
        raise LocalProtocolError(
            f"zstd could not train a {size}-byte dictionary from {len(samples)} lines "
            f"({exc}); give more text or a smaller --size"
        ) from exc
    return dictionary.as_bytes()


def parse_size(text: str) -> int:
    """``16K`` -> 16384, ``1M`` -> 1048576, ``4096`` -> 4096."""
    value = text.strip().upper()
    factor = 1
    if value.endswith(("K", "KB", "KIB")):
        factor, value = 1024, value.rstrip("KIB")
    elif value.endswith(("M", "MB", "MIB")):
        factor, value = 1024 * 1024, value.rstrip("MIB")
    try:
        return int(value) * factor
    except ValueError:
        raise LocalProtocolError(f"size {text!r} is not like 16K, 1M or 4096") from None
