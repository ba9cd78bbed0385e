"""Union requests: the signed form of a union's HTTP request to the relay's union API.

Shared by the relay (``shore.union_api``, which checks) and the union's own app
(``shore.union.client``, which signs), so neither imports the other. Every request carries::

    X-Union: 7
    X-Time: 1764000000              # seconds since 1970, within MAX_SKEW_S of the relay's
    X-Nonce: <16 random bytes, hex>  # optional, but a client that may send the same
                                     # request twice in a second must send one
    X-Signature: <hex Ed25519 signature of request_to_sign(...)>

The signature binds method, path and query, time, body (by its SHA-256) and nonce, under a
domain string of its own, so it cannot be replayed against another route or as anything
else the union's key signs.

Sizes are part of the contract: a case note's body is at most :data:`MAX_NOTE_REQUEST_BYTES`
(the largest sealed note, base64 in JSON), and the relay refuses more before reading it. A
grievance lane note (``POST /union/v1/lane/notes``: the downlink blocks of one case note)
is at most :func:`lane_notes_request_bytes` of the relay's block size and queue cap. A
union's signed grievance statistics (``POST /union/v1/statistics``) is at most
:data:`MAX_STATISTICS_REQUEST_BYTES`.
"""

from __future__ import annotations

import hashlib

from protocol.sealing import PADDING_BUCKETS, SEAL_OVERHEAD

__all__ = [
    "DEFAULT_LANE_QUEUE_BLOCKS",
    "DOMAIN",
    "MAX_LANE_FETCH",
    "MAX_NONCE_CHARS",
    "MAX_NOTE_REQUEST_BYTES",
    "MAX_SEALED_NOTE_BYTES",
    "MAX_SKEW_S",
    "MAX_STATISTICS_DEPTH",
    "MAX_STATISTICS_REQUEST_BYTES",
    "lane_notes_request_bytes",
    "request_to_sign",
]

#: How far a request's X-Time may be from the relay's clock.
MAX_SKEW_S = 300
#: What every signed request starts with (so the signature means nothing elsewhere).
DOMAIN = b"vessel-relay union api v1\x00"
#: Longest X-Nonce (letters and digits).
MAX_NONCE_CHARS = 64
#: The largest sealed case note: the largest padding bucket, sealed.
MAX_SEALED_NOTE_BYTES = PADDING_BUCKETS[-1] + SEAL_OVERHEAD
#: The largest note request: ``{"status": N, "sealed_note": "<base64>"}`` with the largest
#: sealed note, and room for spacing and key order.
MAX_NOTE_REQUEST_BYTES = 4 * -(-MAX_SEALED_NOTE_BYTES // 3) + 256


#: The largest signed grievance statistics a union may post for the relay to log (a year of
#: a large union's per-vessel, per-owner and per-month rows fits many times over).
MAX_STATISTICS_REQUEST_BYTES = 1024 * 1024
#: Deepest nesting of a statistics document (document, body, group, row, stage, figures).
MAX_STATISTICS_DEPTH = 8

#: Most uplink lane blocks one ``GET /union/v1/lane`` answers with.
MAX_LANE_FETCH = 1024
#: Blocks a union may have waiting for one vessel's downlink lane (the relay's default;
#: ``GET /union/v1/lane/shape`` says the relay's own).
DEFAULT_LANE_QUEUE_BLOCKS = 64


def lane_notes_request_bytes(block_bytes: int, blocks: int) -> int:
    """The largest ``POST /union/v1/lane/notes`` body: ``{"vessel": V, "blocks": [...]}``
    with ``blocks`` blocks of ``block_bytes`` in base64, quoted, separated and indented
    (pretty-printed JSON fits), and room for the vessel."""
    return blocks * (4 * -(-block_bytes // 3) + 16) + 256


def request_to_sign(
    method: str, path_and_query: str, at_s: int, body: bytes, nonce: str = ""
) -> bytes:
    """The bytes a union signs for one request (see the module docstring).

    Ed25519 signatures are deterministic: without a nonce, the same request in the same
    second signs the same, and the relay refuses the second as a replay."""
    parts = [
        DOMAIN,
        method.upper().encode("ascii"),
        path_and_query.encode("utf-8"),
        str(at_s).encode("ascii"),
        hashlib.sha256(body).digest(),
    ]
    if nonce:
        parts.append(nonce.encode("ascii"))
    return b"\x00".join(parts)
