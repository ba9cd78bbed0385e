"""Compact frames: a batch of one or a few envelopes that fits one 50-byte SBD credit.

A signed batch (:mod:`protocol.batch`) spends 64 bytes on its Ed25519 signature and about
twenty on its CBOR header and frame framing: a lone 40-character message costs 110 to 160
bytes, three or four Iridium SBD credits of 50 bytes. A compact frame carries the same
:class:`~protocol.batch.Batch` (vessel, batch number, batch time, envelopes) with an
8-byte tag under a key that vessel and shore share, varints instead of CBOR where the
field is fixed, and the texts coded with the same per-language codecs.

Compact frames travel **up only** (vessel to shore). See "What the tag does not give".

Wire format, version 1::

    byte 0     0x03 (compact uplink; 0x04 is reserved and refused)
    uvarint    vessel id                                          (in the clear)
    8 bytes    tag  = HMAC-SHA256(mac key, byte 0 || vessel id || plaintext)[:8]
    rest       ChaCha20(encryption key, nonce = tag || 0x00000000, plaintext)

    plaintext  uvarint batch_seq (from 1; the same numbers as the vessel's batches)
               uvarint batch_minutes
               uvarint length of the rows, then the rows: a CBOR array with one array
                 per envelope, [kind, presence mask (kinds with optional fields only),
                 relative time, the present fields in schema order]
               per language with text, ascending: uvarint (dictionary id * 4 + codec),
                 uvarint payload length, payload (:func:`protocol.compression.encode_frame`,
                 no skeleton)
               zeros up to the padded length

**Keys.** Nothing new is exchanged or configured: both ends already hold the vessel's
Ed25519 key pair on one side, the shore's on the other, and each other's public key. Each
Ed25519 key is mapped to its X25519 form (libsodium's ``crypto_sign_ed25519_*_to_curve25519``),
the X25519 shared secret goes through HKDF-SHA256 with both public keys and the vessel id,
giving a MAC key and an encryption key (:class:`LinkKeys`). A vessel with a new key gets
new link keys with it; the shore tries every key of the vessel that is valid at the time,
as it does for signatures.

**Why a tag of 8 bytes.** Nobody can check a guess offline: the keys never leave the two
ends, and a forgery is only found out by sending it to the relay, which refuses it and
counts it. With a 64-bit tag a forger needs on average 2^63 tries, each a
separate satellite message (an SBD message costs about 16 cents) or an MQTT publish with
the relay's broker login; at a thousand tries a second that is 290 million years. A
4-byte tag (LoRaWAN's) would fall to a broker login within weeks; a 16-byte one would
push 9% of the short crew messages (40 characters at most; eng, ind, vie, mya, tha dev
lines) from one credit into two. The tag is also the cipher's nonce (a synthetic IV: the
same frame always gives the same bytes, and a batch number used twice with different
content by a restored vessel database reveals only whether the two plaintexts are equal,
and forges nothing).

**What the tag does not give.** A MAC proves the frame to vessel and shore only: either
of them could have made it. Third parties (an inspector checking the monthly compliance
report) rely on the vessel's *signature* elsewhere: the agent's monthly statement is
signed with the vessel's Ed25519 key and lists every acknowledged batch by number and
SHA-256 of its bytes, compact frames included, and the shore's transparency log holds the
same hashes. So a compact frame is bound to the vessel by its signature over the month's
statement, at the cost of 64 bytes once a month instead of once a message.

And the keys can be derived by whoever holds the vessel's private key, which lies on the
vessel computer the owner controls. Uplink, that changes nothing (the owner could sign
batches with that key already); downlink it would: a compact frame "from the shore" could
be made on board, with a BatchAck that makes the agent drop what it has not sent (the
grievance lane's blocks among it) or a family "reply" that never came. So the shore
always *signs* what it sends; the agent never applies a compact frame from the downlink.

**Confidentiality.** Unlike a batch on MQTT, a compact frame may cross links without TLS
(the SBD modem's serial line, the provider's portal, which the vessel owner's account
reads): everything but the first byte and the vessel id is encrypted. Static keys
give no forward secrecy: whoever later steals the vessel's or the shore's private key and
kept the frames can read them.

**Padding.** By default the frame is padded with zeros inside the encrypted part to the
next multiple of :data:`PAD_QUANTUM` (50 bytes: one SBD credit, billed whole anyway), so
its length tells only how many credits it takes, which the bill tells the owner anyway.
An SOS, a lane block and a family message that take the same number of credits have the
same length, and all lane blocks have one length (they are all 384-byte sealed boxes).

Decoding checks the size, reads the clear header, checks the tag (in constant time)
*before* anything of the plaintext is read, then enforces the limits of
:class:`~protocol.limits.Limits` while it decodes. Only :mod:`protocol.errors` types
escape.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from protocol.batch import Batch, Direction, join_texts
from protocol.cbor import dumps, strict_loads
from protocol.codebook import Codebook, Codec
from protocol.compression import Frame, decode_frame, encode_frame
from protocol.envelopes import (
    AGE_KEY,
    ENVELOPE_TYPES,
    KIND_KEY,
    Envelope,
    Kind,
    text_language,
    to_skeleton,
)
from protocol.errors import (
    LimitExceeded,
    LocalProtocolError,
    MalformedBatch,
    SignatureInvalid,
)
from protocol.languages import Language
from protocol.limits import DEFAULT_LIMITS, MINUTES_RANGE, Limits, minutes_in_range
from protocol.signing import KEY_BYTES, SigningKey, VerifyKey

__all__ = [
    "COMPACT_UPLINK",
    "PAD_QUANTUM",
    "TAG_BYTES",
    "CompactHeader",
    "LinkKeys",
    "decode_compact",
    "encode_compact",
    "is_compact",
    "open_compact",
    "read_compact_header",
    "seal_compact",
    "sealed_batch_seq",
]

#: Bytes of the authentication tag (see the module docstring for why 8).
TAG_BYTES = 8
#: Compact frames are padded to a multiple of this many bytes: one Iridium SBD credit.
PAD_QUANTUM = 50
#: Most envelopes in one compact frame ("one or a few messages").
MAX_COMPACT_ENVELOPES = 64
_NONCE_TAIL = bytes(4)
_KDF_SALT = b"vessel-relay compact frame v1"
_MIN_FRAME_BYTES = 1 + 1 + TAG_BYTES + 2  # direction, vessel, tag, seq and minutes


#: First byte of a compact frame (version 1, vessel to shore). Distinct from the batch
#: directions (0x01, 0x02), so one look tells a compact frame from a batch, and a relay of
#: the release before quarantines it as "not a batch" instead of misreading it.
COMPACT_UPLINK = 0x03
#: Reserved for compact downlink frames, which are never made (see the module docstring).
COMPACT_DOWNLINK_RESERVED = 0x04


# --- keys --------------------------------------------------------------------------------


def _hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256 (extract with :data:`_KDF_SALT`, then expand)."""
    prk = hmac.new(_KDF_SALT, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _x25519_private(key: SigningKey) -> bytes:
    return bytes(nacl.signing.SigningKey(key.seed).to_curve25519_private_key())


def _x25519_public(key: VerifyKey) -> bytes:
    try:
        return bytes(nacl.signing.VerifyKey(key.key).to_curve25519_public_key())
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError) as exc:
        raise LocalProtocolError(
            f"public key {key.hex()[:12]}... is not a usable Ed25519 key: check the config"
        ) from exc


@dataclass(frozen=True, slots=True)
class LinkKeys:
    """The symmetric keys of one vessel's compact frames: a MAC key and an encryption key.

    Vessel and shore derive the same keys from what they already hold
    (:meth:`for_vessel`, :meth:`for_shore`); ``vessel_key`` names the vessel key they came
    from, so the shore can tell which of a vessel's keys a frame was made under.
    """

    vessel_id: int
    vessel_key: VerifyKey
    mac: bytes = field(repr=False)
    enc: bytes = field(repr=False)

    @classmethod
    def for_vessel(cls, vessel_id: int, vessel_key: SigningKey, shore_key: VerifyKey) -> LinkKeys:
        """The vessel's side: its own signing key and the shore's public key."""
        return cls._derive(
            vessel_id, _x25519_private(vessel_key), _x25519_public(shore_key),
            vessel_key.verify_key, shore_key,
        )  # fmt: skip

    @classmethod
    def for_shore(cls, vessel_id: int, shore_key: SigningKey, vessel_key: VerifyKey) -> LinkKeys:
        """The shore's side: its own signing key and the vessel's public key."""
        return cls._derive(
            vessel_id, _x25519_private(shore_key), _x25519_public(vessel_key),
            vessel_key, shore_key.verify_key,
        )  # fmt: skip

    @classmethod
    def _derive(
        cls,
        vessel_id: int,
        own_private: bytes,
        peer_public: bytes,
        vessel_public: VerifyKey,
        shore_public: VerifyKey,
    ) -> LinkKeys:
        _check_uint("vessel_id", vessel_id)
        try:
            shared = nacl.bindings.crypto_scalarmult(own_private, peer_public)
        except nacl.exceptions.RuntimeError as exc:  # libsodium refuses low-order points
            raise LocalProtocolError(
                "the peer's public key gives no shared secret (a low-order point): "
                "check the key in the config"
            ) from exc
        if not any(shared):
            raise LocalProtocolError("the peer's public key gives an all-zero shared secret")
        context = vessel_id.to_bytes(8, "big") + vessel_public.key + shore_public.key
        okm = _hkdf_sha256(shared, b"uplink" + context, 2 * KEY_BYTES)
        return cls(vessel_id, vessel_public, okm[:KEY_BYTES], okm[KEY_BYTES:])


# --- primitives --------------------------------------------------------------------------


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_uvarint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """A LEB128 number of at most 8 bytes (below 2**56) at ``pos``, and the new pos."""
    value = 0
    for index in range(8):
        if pos + index >= len(data):
            raise MalformedBatch(f"compact frame is cut short in its {what}")
        byte = data[pos + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if index and not byte:
                raise MalformedBatch(f"compact frame {what} is not in its shortest form")
            return value, pos + index + 1
    raise MalformedBatch(f"compact frame {what} is longer than 8 bytes")


def _check_uint(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise LocalProtocolError(f"{name} must be a whole number from 0 to 2**53, not {value!r}")


def _tag(keys: LinkKeys, clear: bytes, plaintext: bytes) -> bytes:
    return hmac.new(keys.mac, clear + plaintext, hashlib.sha256).digest()[:TAG_BYTES]


def _chacha20(keys: LinkKeys, tag: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the ChaCha20 key stream (RFC 8439, counter from 1) under ``tag``.

    libsodium's ChaCha20-Poly1305 (IETF) encrypts with exactly this stream, so the stream
    is the ciphertext of zeros; its Poly1305 tag is not used (the HMAC is the tag).
    """
    if not data:
        return b""
    stream = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        bytes(len(data)), None, tag + _NONCE_TAIL, keys.enc
    )[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


# --- rows (the envelopes without their texts) --------------------------------------------


def _schema(kind: Kind) -> tuple[tuple[int, bool], ...]:
    """(key, optional) of a kind's fields in wire order, relative time first."""
    fields = ENVELOPE_TYPES[kind].FIELDS
    return ((AGE_KEY, False), *((spec.key, spec.optional) for spec in fields))


def _to_row(entry: dict[int, object]) -> list[object]:
    kind_value = entry[KIND_KEY]
    assert isinstance(kind_value, int)
    kind = Kind(kind_value)
    schema = _schema(kind)
    row: list[object] = [int(kind)]
    if any(optional for _, optional in schema):
        mask = 0
        for bit, (key, _) in enumerate(spec for spec in schema if spec[1]):
            if key in entry:
                mask |= 1 << bit
        row.append(mask)
    row.extend(entry[key] for key, optional in schema if not optional or key in entry)
    return row


def _from_row(row: object, where: str) -> dict[int, object]:
    if not isinstance(row, list) or not row:
        raise MalformedBatch(f"{where}: an envelope row is not [kind, fields...]")
    kind_value = row[0]
    if isinstance(kind_value, bool) or not isinstance(kind_value, int):
        raise MalformedBatch(f"{where}: envelope kind {kind_value!r} is not a number")
    try:
        kind = Kind(kind_value)
    except ValueError:
        raise MalformedBatch(f"{where}: envelope kind {kind_value} is not known") from None
    schema = _schema(kind)
    values = row[1:]
    optional_keys = [key for key, optional in schema if optional]
    present = {key for key, optional in schema if not optional}
    if optional_keys:
        if not values:
            raise MalformedBatch(f"{where}: a {kind.name} row has no presence mask")
        mask = values.pop(0)
        if (
            isinstance(mask, bool)
            or not isinstance(mask, int)
            or not 0 <= mask < 1 << len(optional_keys)
        ):
            raise MalformedBatch(f"{where}: a {kind.name} row has a bad presence mask {mask!r}")
        present |= {key for bit, key in enumerate(optional_keys) if mask >> bit & 1}
    keys = [key for key, _ in schema if key in present]
    if len(values) != len(keys):
        raise MalformedBatch(
            f"{where}: a {kind.name} row holds {len(values)} fields, its mask says {len(keys)}"
        )
    return {KIND_KEY: int(kind), **dict(zip(keys, values, strict=True))}


# --- frames ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompactHeader:
    """What a compact frame says in the clear: its vessel (and where its tag starts)."""

    vessel_id: int
    tag_at: int

    @property
    def where(self) -> str:
        """Names the frame in error messages: ``compact frame from vessel 42``."""
        return f"compact frame from vessel {self.vessel_id}"


def is_compact(data: bytes) -> bool:
    """Whether ``data`` starts like a compact frame (or the reserved downlink byte), and so
    is not a batch: such bytes go to :func:`read_compact_header`, which refuses the latter."""
    return bool(data) and data[0] in (COMPACT_UPLINK, COMPACT_DOWNLINK_RESERVED)


def read_compact_header(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> CompactHeader:
    """Read the clear part of a compact frame (to pick the keys), checking its size."""
    if not isinstance(data, bytes):
        raise MalformedBatch(f"a compact frame is bytes, not {type(data).__name__}")
    if len(data) > limits.max_batch_bytes:
        raise LimitExceeded(
            f"compact frame is {len(data)} bytes, over the limit of {limits.max_batch_bytes}"
        )
    if len(data) < _MIN_FRAME_BYTES:
        raise MalformedBatch(f"compact frame is only {len(data)} bytes: truncated")
    if data[0] == COMPACT_DOWNLINK_RESERVED:
        raise MalformedBatch(
            "a compact frame travelling from shore to vessel: the shore signs what it sends, "
            "and compact frames are never applied on the downlink"
        )
    if data[0] != COMPACT_UPLINK:
        raise MalformedBatch(
            f"frame starts with 0x{data[0]:02x}: not a compact frame, or a newer version"
        )
    vessel_id, tag_at = _read_uvarint(data, 1, "vessel id")
    if vessel_id >= 2**53:
        raise MalformedBatch(f"compact frame names vessel {vessel_id}, out of range")
    if len(data) < tag_at + TAG_BYTES + 2:
        raise MalformedBatch(f"compact frame is only {len(data)} bytes: truncated")
    return CompactHeader(vessel_id, tag_at)


def encode_compact(
    envelopes: Sequence[Envelope],
    *,
    keys: LinkKeys,
    batch_seq: int,
    batch_minutes: int,
    codebook: Codebook,
    codecs: Sequence[Codec] = (Codec.STORED, Codec.ZSTD, Codec.CONTEXT),
    limits: Limits = DEFAULT_LIMITS,
    pad_quantum: int | None = PAD_QUANTUM,
) -> bytes:
    """Encode, compress, authenticate and encrypt one compact uplink frame (deterministic).

    The vessel id is ``keys.vessel_id``. ``pad_quantum`` pads the frame to a multiple of
    that many bytes (``None``: unpadded, for measuring and tests).
    """
    _check_uint("batch_seq", batch_seq)
    if batch_seq == 0:
        raise LocalProtocolError("batch_seq starts at 1; 0 is never a batch")
    if not minutes_in_range(batch_minutes):
        raise LocalProtocolError(
            f"batch_minutes is {batch_minutes!r}, not a time from {MINUTES_RANGE}; check the clock"
        )
    if not envelopes:
        raise LocalProtocolError("a compact frame needs at least one envelope")
    if len(envelopes) > MAX_COMPACT_ENVELOPES:
        raise LimitExceeded(
            f"{len(envelopes)} envelopes do not fit one compact frame "
            f"(limit {MAX_COMPACT_ENVELOPES}); send a batch"
        )
    if pad_quantum is not None and pad_quantum < 1:
        raise LocalProtocolError(f"pad_quantum must be at least 1 byte, not {pad_quantum}")
    rows: list[list[object]] = []
    texts: dict[Language, list[str]] = {}
    for envelope in envelopes:
        entry = to_skeleton(envelope, batch_minutes)
        rows.append(_to_row(entry))
        language = text_language(entry)
        if language is not None:
            text = envelope.text
            assert text is not None
            texts.setdefault(language, []).append(text)
    rows_bytes = dumps(rows)
    plaintext = _uvarint(batch_seq) + _uvarint(batch_minutes)
    plaintext += _uvarint(len(rows_bytes)) + rows_bytes
    for language in sorted(texts):
        frame = encode_frame(codebook, language, None, texts[language], codecs=codecs)
        plaintext += _uvarint(frame.dictionary_id * 4 + int(frame.codec))
        plaintext += _uvarint(len(frame.payload)) + frame.payload
    clear = bytes([COMPACT_UPLINK]) + _uvarint(keys.vessel_id)
    unpadded = len(clear) + TAG_BYTES + len(plaintext)
    if unpadded > limits.max_batch_bytes:
        raise LimitExceeded(
            f"compact frame {batch_seq} is {unpadded} bytes, over the limit of "
            f"{limits.max_batch_bytes}; send fewer envelopes"
        )
    if pad_quantum is not None:
        target = min(-(-unpadded // pad_quantum) * pad_quantum, limits.max_batch_bytes)
        plaintext += bytes(target - unpadded)
    return seal_compact(plaintext, keys=keys)


def seal_compact(plaintext: bytes, *, keys: LinkKeys) -> bytes:
    """Authenticate and encrypt a compact frame's plaintext (layout in the module docstring).

    :func:`encode_compact` builds the plaintext; this is the step after it, public so that
    tools and the fuzz tests can seal plaintexts of their own (it needs the link keys).
    """
    clear = bytes([COMPACT_UPLINK]) + _uvarint(keys.vessel_id)
    tag = _tag(keys, clear, plaintext)
    return clear + tag + _chacha20(keys, tag, plaintext)


def open_compact(
    data: bytes, keys: LinkKeys, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[CompactHeader, bytes]:
    """Check the tag and decrypt: the header and the plaintext (not yet parsed).

    Raises :class:`SignatureInvalid` when the tag does not match (forged, corrupted, or
    made under other keys), before anything of the plaintext is read.
    """
    header = read_compact_header(data, limits=limits)
    if header.vessel_id != keys.vessel_id:
        raise SignatureInvalid(
            f"{header.where} was checked with the keys of vessel {keys.vessel_id}"
        )
    clear = data[: header.tag_at]
    tag = data[header.tag_at : header.tag_at + TAG_BYTES]
    plaintext = _chacha20(keys, tag, data[header.tag_at + TAG_BYTES :])
    if not hmac.compare_digest(tag, _tag(keys, clear, plaintext)):
        raise SignatureInvalid(
            f"the tag of {header.where} does not match the link keys of vessel key "
            f"{keys.vessel_key.hex()[:12]}...: forged, corrupted, or made under another key"
        )
    return header, plaintext


def sealed_batch_seq(plaintext: bytes) -> int:
    """The batch number an opened frame's plaintext starts with (from :func:`open_compact`).

    For a receiver that must name an authentic frame it cannot decode (to refuse that batch
    number for good). Raises :class:`MalformedBatch` when it holds no valid number.
    """
    batch_seq, _ = _read_uvarint(plaintext, 0, "batch number")
    if not 1 <= batch_seq < 2**53:
        raise MalformedBatch(f"compact frame names batch {batch_seq}; batches are 1 to 2**53")
    return batch_seq


def decode_compact(
    data: bytes,
    *,
    keys: LinkKeys,
    codebook: Codebook,
    limits: Limits = DEFAULT_LIMITS,
) -> Batch:
    """Authenticate, decrypt and decode a compact frame into the (uplink) batch it carries.

    ``keys`` are the link keys of the frame's vessel. Only :mod:`protocol.errors` types are
    raised.
    """
    header, plaintext = open_compact(data, keys, limits=limits)
    where = header.where
    batch_seq = sealed_batch_seq(plaintext)
    _, pos = _read_uvarint(plaintext, 0, "batch number")
    where = f"{where} batch {batch_seq}"
    batch_minutes, pos = _read_uvarint(plaintext, pos, "batch time")
    if not minutes_in_range(batch_minutes):
        raise MalformedBatch(f"{where}: time {batch_minutes} is not a time from {MINUTES_RANGE}")
    rows_length, pos = _read_uvarint(plaintext, pos, "rows length")
    if pos + rows_length > len(plaintext):
        raise MalformedBatch(f"{where} declares {rows_length} bytes of rows but holds fewer")
    rows = strict_loads(
        plaintext[pos : pos + rows_length],
        max_depth=limits.max_cbor_depth,
        max_length=max(MAX_COMPACT_ENVELOPES, limits.max_container_length),
        what=f"{where} rows",
    )
    pos += rows_length
    if not isinstance(rows, list) or not rows:
        raise MalformedBatch(f"{where}: its rows are not a list of envelopes")
    if len(rows) > MAX_COMPACT_ENVELOPES:
        raise LimitExceeded(f"{where} holds {len(rows)} envelopes, over {MAX_COMPACT_ENVELOPES}")
    entries = [_from_row(row, where) for row in rows]
    for entry in entries:
        for value in entry.values():
            if isinstance(value, bytes) and len(value) > limits.max_blob_bytes:
                raise LimitExceeded(
                    f"{where} holds a {len(value)}-byte field, over {limits.max_blob_bytes}"
                )
    languages = sorted({lang for entry in entries if (lang := text_language(entry)) is not None})
    budget = limits.max_decompressed_bytes
    frames: list[Frame] = []
    texts: dict[Language, list[str]] = {}
    for language in languages:
        code, pos = _read_uvarint(plaintext, pos, "frame codec")
        length, pos = _read_uvarint(plaintext, pos, "frame length")
        if pos + length > len(plaintext):
            raise MalformedBatch(f"{where}: a frame declares {length} bytes but holds fewer")
        try:
            codec = Codec(code & 3)
        except ValueError:
            raise MalformedBatch(f"{where}: a frame names codec {code & 3}, unknown") from None
        if code >> 2 >= 2**16:
            raise MalformedBatch(f"{where}: a frame names dictionary {code >> 2}, out of range")
        frame = Frame(codec, code >> 2, plaintext[pos : pos + length])
        pos += length
        _, frame_texts = decode_frame(
            codebook,
            frame,
            has_skeleton=False,
            budget=budget,
            max_texts=MAX_COMPACT_ENVELOPES,
            max_chars=limits.max_text_chars,
            where=where,
        )
        budget -= sum(len(text.encode("utf-8", "surrogatepass")) + 1 for text in frame_texts)
        frames.append(frame)
        texts[language] = frame_texts
    padding = plaintext[pos:]
    if padding.count(0) != len(padding):
        raise MalformedBatch(f"{where} has bytes other than zeros after its last frame")
    envelopes = join_texts(entries, texts, batch_minutes, where)
    return Batch(
        direction=Direction.UPLINK,
        vessel_id=header.vessel_id,
        batch_seq=batch_seq,
        batch_minutes=batch_minutes,
        envelopes=tuple(envelopes),
        frames=tuple(frames),
        padding_bytes=len(padding),
    )
