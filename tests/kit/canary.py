"""Canary texts and a scanner that looks for them in files and in captured MQTT traffic.

A canary is a grievance text nobody would write by chance: a fixed marker in one script
(Burmese Unicode, Burmese Zawgyi, Khmer, Thai, Lao, English) and a serial number written in
that script's own digits (ASCII for English), distinct per report. A :class:`Needles` set
finds any of them in bytes, as UTF-8, UTF-16-LE or UTF-16-BE:

* every marker word of four characters or more (each canary holds all of its marker's
  words, so no canary can be present without them), and the Zawgyi words both as typed and
  as converted to Unicode at intake;
* every run of four or more digits of one script whose value is one of the serials filed
  (one regular expression per script and encoding, so a thousand serials cost one pass).

:func:`expand` adds what decompresses out of the bytes (zstd frames and zlib streams found
anywhere in them), and :class:`MqttStreams` rebuilds the MQTT packets of each link-emulator
session from the segments its capture hook saw, to take out every PUBLISH payload.
"""

from __future__ import annotations

import random
import re
import unicodedata
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from protocol.languages import Language
from protocol.text import zawgyi_to_unicode
from vessel_relay.link_emulator import Direction

ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")
MIN_WORD_CHARS = 4


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of canary: its marker, the language it is filed in, its digits."""

    name: str
    lang: Language
    marker: str
    zero: str  # the script's digit zero ("0" for English)


KINDS = (
    Kind("burmese", Language.MYA, "ကနရီမြန်မာ လစာမရသေးပါ", "\u1040"),
    Kind("zawgyi", Language.MYA, "ကနရီ ေဇာ္ဂ်ီ လစာ", "\u1040"),
    Kind("khmer", Language.KHM, "កាណារីខ្មែរ ប្រាក់ខែមិនទាន់", "\u17e0"),
    Kind("thai", Language.THA, "คานารีไทย ค่าจ้างค้างจ่าย", "\u0e50"),
    Kind("lao", Language.LAO, "ຄານາຣີລາວ ຄ່າຈ້າງຍັງບໍ່ໄດ້", "\u0ed0"),
    Kind("english", Language.ENG, "canary-english unpaid-wages-cnry", "0"),
)
FIRST_SERIAL = 1000


def digits(number: int, zero: str) -> str:
    """``number`` written with the digits that start at ``zero``."""
    return "".join(chr(ord(zero) + int(d)) for d in str(number))


#: Letters (no digits) of each script, for the filler of long canaries.
LETTERS = {
    "burmese": "".join(chr(c) for c in range(0x1000, 0x1021)),
    "zawgyi": "".join(chr(c) for c in range(0x1000, 0x1021)),
    "khmer": "".join(chr(c) for c in range(0x1780, 0x17A3)),
    "thai": "".join(chr(c) for c in range(0x0E01, 0x0E2F)),
    "lao": "ກຂຄງຈຊຍດຕຖທນບປຜຝພຟມຢຣລວສຫອຮ",
    "english": "abcdefghijklmnopqrstuvwxyz",
}
LONG_FILLER_CHARS = 400


@dataclass(frozen=True, slots=True)
class Canary:
    kind: Kind
    serial: int
    long: bool = False
    """With random letters after it: it spans several blocks of the grievance lane."""

    @property
    def text(self) -> str:
        text = f"{self.kind.marker} {digits(self.serial, self.kind.zero)}"
        if not self.long:
            return text
        rng = random.Random(self.serial)
        letters = LETTERS[self.kind.name]
        filler = "".join(rng.choice(letters) for _ in range(LONG_FILLER_CHARS))
        words = " ".join(filler[i : i + 6] for i in range(0, len(filler), 6))
        return f"{text} {words}"


def canaries(count: int) -> list[Canary]:
    """``count`` distinct canaries, the kinds in turn, serials from 1000; every third round
    long (so that it spans several blocks of the lane, and a report's blocks mix with
    other reports' on board)."""
    return [
        Canary(KINDS[n % len(KINDS)], FIRST_SERIAL + n, long=(n // len(KINDS)) % 3 == 2)
        for n in range(count)
    ]


def _digit_pattern(zero: str, encoding: str) -> bytes:
    alternatives = b"|".join(re.escape(chr(ord(zero) + d).encode(encoding)) for d in range(10))
    return b"(?:" + alternatives + b"){4,}"


@dataclass
class Needles:
    """What must never be found: marker words and serials, in every encoding."""

    words: list[str]
    serials: set[int]
    zeros: list[str]
    _fixed: list[tuple[str, bytes]] = field(init=False)
    _runs: list[tuple[str, re.Pattern[bytes]]] = field(init=False)

    def __post_init__(self) -> None:
        self._fixed = [
            (f"{word!r} in {encoding}", word.encode(encoding))
            for word in sorted(set(self.words))
            for encoding in ENCODINGS
        ]
        self._runs = [
            (encoding, re.compile(_digit_pattern(zero, encoding)))
            for zero in sorted(set(self.zeros))
            if zero != "0"  # ASCII serials are found through their marker words
            for encoding in ENCODINGS
        ]

    @classmethod
    def of(cls, texts: Iterable[tuple[str, int, str]]) -> Needles:
        """From (marker, serial, digit zero) triples; Zawgyi markers also converted."""
        words: list[str] = []
        serials: set[int] = set()
        zeros: list[str] = []
        for marker, serial, zero in texts:
            for reading in {marker, zawgyi_to_unicode(marker)}:
                words += [w for w in reading.split() if len(w) >= MIN_WORD_CHARS]
            serials.add(serial)
            zeros.append(zero)
        return cls(words, serials, zeros)

    @classmethod
    def for_canaries(cls, filed: Iterable[Canary]) -> Needles:
        return cls.of((c.kind.marker, c.serial, c.kind.zero) for c in filed)

    @property
    def count(self) -> int:
        return len(self._fixed) + len(self._runs)

    def find(self, data: bytes) -> list[str]:
        """What of this set ``data`` holds, described (empty: nothing)."""
        found = [what for what, needle in self._fixed if needle in data]
        for encoding, pattern in self._runs:
            for match in pattern.finditer(data):
                text = match.group().decode(encoding, "replace")
                value = int("".join(str(unicodedata.digit(ch, 0)) for ch in text))
                if value in self.serials:
                    found.append(f"serial {value} in {encoding}")
        return found

    def find_text(self, text: str) -> list[str]:
        return self.find(text.encode("utf-8"))


def expand(data: bytes, limit: int = 64 * 1024 * 1024) -> Iterator[tuple[str, bytes]]:
    """``data`` itself, then everything that decompresses out of a region of it: each zstd
    frame (from its magic number) and each zlib stream (from a plausible header)."""
    yield "raw", data
    start = 0
    while (at := data.find(b"\x28\xb5\x2f\xfd", start)) >= 0:
        start = at + 1
        try:
            out = zstandard.ZstdDecompressor().decompressobj().decompress(data[at:])
        except zstandard.ZstdError:
            continue
        if out:
            yield f"zstd at {at}", out[:limit]
    for header in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda"):
        start = 0
        while (at := data.find(header, start)) >= 0:
            start = at + 1
            try:
                out = zlib.decompressobj().decompress(data[at:], limit)
            except zlib.error:
                continue
            if out:
                yield f"zlib at {at}", out


@dataclass
class Scan:
    """Hits (where and what) and how much was looked at."""

    hits: list[str] = field(default_factory=list)
    files: int = 0
    file_bytes: int = 0
    decompressed_regions: int = 0

    def bytes_(self, where: str, data: bytes, needles: Needles) -> None:
        for form, region in expand(data):
            if form != "raw":
                self.decompressed_regions += 1
            self.hits += [f"{where} ({form}): {what}" for what in needles.find(region)]


def scan_files(roots: Iterable[Path], needles: Needles, skip: Iterable[Path] = ()) -> Scan:
    """Every file under ``roots`` (outside ``skip``), raw and decompressed."""
    skipped = tuple(skip)
    scan = Scan()
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in paths:
            if not path.is_file() or any(folder in path.parents for folder in skipped):
                continue
            data = path.read_bytes()
            scan.files += 1
            scan.file_bytes += len(data)
            scan.bytes_(str(path), data, needles)
    return scan


@dataclass(frozen=True, slots=True)
class Publish:
    session: int
    direction: Direction
    topic: str
    payload: bytes


class MqttStreams:
    """A link-emulator capture hook that keeps each session's bytes, per direction, and
    reads them back as MQTT 5 packets (a stream cut mid-packet by a kill ends there)."""

    def __init__(self) -> None:
        self.streams: dict[tuple[int, Direction], bytearray] = defaultdict(bytearray)

    def __call__(self, session: int, direction: Direction, segment: bytes) -> None:
        self.streams[(session, direction)] += segment

    @property
    def total_bytes(self) -> int:
        return sum(len(stream) for stream in self.streams.values())

    def publishes(self) -> list[Publish]:
        found = []
        for (session, direction), stream in sorted(
            self.streams.items(), key=lambda item: (item[0][0], item[0][1].value)
        ):
            for first, body in _packets(bytes(stream)):
                if first >> 4 == 3:
                    topic, payload = _publish(first, body)
                    found.append(Publish(session, direction, topic, payload))
        return found


def _varint(data: bytes, at: int) -> tuple[int, int] | None:
    value = shift = 0
    for i in range(4):
        if at + i >= len(data):
            return None
        byte = data[at + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at + i + 1
    raise ValueError(f"malformed MQTT length at byte {at}")


def _packets(data: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at < len(data):
        read = _varint(data, at + 1)
        if read is None:
            return
        length, start = read
        if start + length > len(data):
            return
        yield data[at], data[start : start + length]
        at = start + length


def _publish(first: int, body: bytes) -> tuple[str, bytes]:
    topic_length = int.from_bytes(body[:2], "big")
    at = 2 + topic_length
    topic = body[2:at].decode("utf-8", "replace")
    if (first >> 1) & 3:
        at += 2  # packet identifier
    read = _varint(body, at)
    if read is None:
        raise ValueError("a PUBLISH packet ends inside its properties")
    properties, at = read
    return topic, body[at + properties :]
