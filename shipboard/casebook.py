"""Casebook: each crew member's own list of the cases they filed, sealed with their PIN.

A repository of the vessel database: it owns the table ``casebooks`` (migration set
``casebook``, :mod:`shipboard.schema`). Every crew member has exactly one row of exactly
:data:`~shipboard.schema.CASEBOOK_BYTES`, from their registration on: random bytes until
they first file, then a ``nacl.secret.SecretBox`` under a key derived from the case key
their PIN unlocks at sign-in (:func:`casebook_key`). Random bytes and a box look alike, so
the disk does not say who filed; only the signed-in reporter reads theirs
(:meth:`Casebook.read`), and the duress PIN's throwaway case key opens nothing (an empty
casebook).

Inside the box: a two-byte length, then a CBOR list of cases, zeros up to the fixed size.
A case (:class:`CaseEntry`) is its case number, the union, when it was filed, the receipt
code (mode B; mode A keeps it on the phone) and the intake mode. A casebook holds the last
:data:`MAX_CASES` cases (an older one then leaves the page's list; the union keeps it).

Written only inside the lane's placement transaction (:meth:`Casebook.add_case`) and when
a crew member is registered (:meth:`Casebook.blank`, inside the crew register's). A new
PIN derives a new case key: the old casebook then opens for nobody and reads as empty, as
the old cases' tags already did.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret

from protocol.cbor import dumps, strict_loads
from protocol.errors import ProtocolError
from shipboard.database import OnDatabase, Transaction
from shipboard.schema import CASEBOOK_BYTES

__all__ = ["MAX_CASES", "CaseEntry", "Casebook", "casebook_key"]

#: Most cases one casebook holds (the oldest leaves the list beyond this).
MAX_CASES = 48
_BOX_OVERHEAD = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES
#: Bytes inside the box: a length of two bytes, the CBOR list, zeros.
_PLAIN_BYTES = CASEBOOK_BYTES - _BOX_OVERHEAD


def casebook_key(case_key: bytes) -> bytes:
    """The casebook's secret key, derived from the case key the reporter's PIN unlocks."""
    return hashlib.blake2b(case_key, digest_size=32, person=b"vr-casebook-key").digest()


@dataclass(frozen=True, slots=True)
class CaseEntry:
    """One case as the reporter's casebook keeps it."""

    case_number: str
    union_id: int
    #: When it was filed on board (whole minutes since 1970, UTC).
    filed_minutes: int
    #: The receipt code (mode B); None when the phone keeps it (mode A).
    receipt_code: str | None
    #: "B" (sealed by the agent) or "A" (sealed on the phone).
    mode: str

    @property
    def report_number(self) -> int:
        """The number after the dash (the API's ``message_seq`` for this case)."""
        return int(self.case_number.rpartition("-")[2])

    def _wire(self) -> list[object]:
        return [
            self.case_number,
            self.union_id,
            self.filed_minutes,
            self.receipt_code or "",
            self.mode,
        ]


def _seal(entries: list[CaseEntry], key: bytes) -> bytes:
    """The casebook box of ``entries`` (the newest :data:`MAX_CASES`), exactly
    :data:`~shipboard.schema.CASEBOOK_BYTES`; the oldest cases leave if they do not fit."""
    kept = list(entries[-MAX_CASES:])
    while True:
        body = dumps([entry._wire() for entry in kept])
        if len(body) + 2 <= _PLAIN_BYTES:
            break
        kept.pop(0)  # a casebook of long numbers: keep what fits, newest last
    plain = len(body).to_bytes(2, "big") + body
    plain += bytes(_PLAIN_BYTES - len(plain))
    box = nacl.secret.SecretBox(key)
    sealed = bytes(box.encrypt(plain, os.urandom(nacl.secret.SecretBox.NONCE_SIZE)))
    assert len(sealed) == CASEBOOK_BYTES
    return sealed


def _open(box_bytes: bytes, key: bytes) -> list[CaseEntry]:
    """The cases in a casebook box; empty if it does not open with ``key`` (random bytes
    of someone who never filed, another PIN's box, or a duress sign-in)."""
    try:
        plain = nacl.secret.SecretBox(key).decrypt(box_bytes)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return []
    length = int.from_bytes(plain[:2], "big")
    try:
        raw = strict_loads(
            plain[2 : 2 + length], max_depth=2, max_length=MAX_CASES, what="casebook"
        )
    except ProtocolError:
        # Only the signed-in reporter's key opens a box, so a line here would tell the
        # journal's reader who has filed; the reporter sees an empty list instead.
        return []
    entries: list[CaseEntry] = []
    for item in raw if isinstance(raw, list) else []:
        if (
            isinstance(item, list)
            and len(item) == 5
            and isinstance(item[0], str)
            and isinstance(item[1], int)
            and isinstance(item[2], int)
            and isinstance(item[3], str)
            and item[4] in ("A", "B")
        ):
            entries.append(CaseEntry(item[0], item[1], item[2], item[3] or None, item[4]))
    return entries


class Casebook:
    """The crew members' casebooks (see the module docstring)."""

    def __init__(self, on: OnDatabase) -> None:
        self.database = on.database

    # written inside other repositories' transactions -------------------------------------

    @staticmethod
    def blank(tx: Transaction, crew: int) -> None:
        """Give a crew member being registered their casebook: random bytes of the size."""
        tx.execute(
            "INSERT OR IGNORE INTO casebooks (crew, box) VALUES (?, ?)",
            (crew, os.urandom(CASEBOOK_BYTES)),
        )

    @staticmethod
    def add_case(tx: Transaction, crew: int, case_key: bytes, entry: CaseEntry) -> None:
        """Add a case to the crew member's casebook (inside the filing's transaction)."""
        key = casebook_key(case_key)
        row = tx.execute("SELECT box FROM casebooks WHERE crew = ?", (crew,)).fetchone()
        entries = _open(bytes(row[0]), key) if row is not None else []
        tx.execute(
            "INSERT INTO casebooks (crew, box) VALUES (?, ?) "
            "ON CONFLICT (crew) DO UPDATE SET box = excluded.box",
            (crew, _seal([*entries, entry], key)),
        )

    # upkeep and reading ------------------------------------------------------------------

    def ensure_all(self) -> int:
        """Give every registered crew member without a casebook one (random bytes); how
        many were made (a file written by a release that did not make them at
        registration). One transaction."""
        with self.database.transaction("make the casebooks") as db:
            missing = [
                int(crew)
                for (crew,) in db.execute(
                    "SELECT crew FROM crew WHERE crew NOT IN (SELECT crew FROM casebooks)"
                )
            ]
            for crew in missing:
                self.blank(db, crew)
        return len(missing)

    def read(self, crew: int, case_key: bytes) -> list[CaseEntry]:
        """The signed-in reporter's cases, oldest first (empty for anyone else's key)."""
        with self.database.reading() as db:
            row = db.execute("SELECT box FROM casebooks WHERE crew = ?", (crew,)).fetchone()
        return [] if row is None else _open(bytes(row[0]), casebook_key(case_key))

    def sizes(self) -> list[int]:
        """Every casebook's size on disk (all the same; for tests and the status page)."""
        with self.database.reading() as db:
            return [int(n) for (n,) in db.execute("SELECT LENGTH(box) FROM casebooks")]
