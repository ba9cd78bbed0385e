"""The access log: who opened, exported, replied to, changed or assigned which case, and when.

One row per action, written in the transaction of the action itself (an "open" in its own),
in ``union.db``'s ``access_log`` table. Rows are append-only twice over: SQLite triggers
refuse any UPDATE or DELETE, and each row carries the SHA-256 of the row before it and of
itself (:func:`verify_records`), so a row removed or changed with other tools shows. The log
names caseworkers, actions and case numbers, never what anybody wrote; it is kept when a
closed case is purged. It is shown on the case page and exported as CSV or JSON.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from dataclasses import asdict, dataclass
from enum import Enum

__all__ = [
    "AccessAction",
    "AccessLogBroken",
    "AccessRecord",
    "record_access",
    "records",
    "to_csv",
    "to_json",
    "verify_records",
]

GENESIS = bytes(32)


class AccessAction(Enum):
    """What a caseworker (or the union's own machine) did to a case."""

    OPEN = "open"
    EXPORT = "export"
    REPLY = "reply"
    STATUS = "status"
    ASSIGN = "assign"
    NOTE = "note"
    ESCALATE = "escalate"
    PURGE = "purge"


class AccessLogBroken(Exception):
    """The access log's hash chain does not hold: a row was changed or removed."""


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One access: who, what, which case, when (Unix seconds), a detail without content."""

    seq: int
    at: float
    caseworker: str
    case_number: str
    action: str
    detail: str
    previous: bytes
    digest: bytes

    def body(self) -> bytes:
        return _body(self.seq, self.at, self.caseworker, self.case_number, self.action, self.detail)


def _body(seq: int, at: float, who: str, case: str, action: str, detail: str) -> bytes:
    return json.dumps([seq, repr(float(at)), who, case, action, detail], ensure_ascii=False).encode(
        "utf-8"
    )


def record_access(
    db: sqlite3.Connection,
    *,
    at: float,
    caseworker: str,
    case_number: str,
    action: AccessAction,
    detail: str = "",
) -> AccessRecord:
    """Append one access (in the caller's transaction)."""
    last = db.execute("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq = 1 if last is None else int(last[0]) + 1
    previous = GENESIS if last is None else bytes(last[1])
    digest = hashlib.sha256(
        previous + _body(seq, at, caseworker, case_number, action.value, detail)
    ).digest()
    db.execute(
        "INSERT INTO access_log (seq, at, caseworker, case_number, action, detail, previous, "
        "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, caseworker, case_number, action.value, detail, previous, digest),
    )
    return AccessRecord(seq, at, caseworker, case_number, action.value, detail, previous, digest)


def records(db: sqlite3.Connection, case_number: str | None = None) -> list[AccessRecord]:
    """The log (one case's rows, or all), oldest first."""
    sql = "SELECT seq, at, caseworker, case_number, action, detail, previous, hash FROM access_log"
    args: tuple[str, ...] = ()
    if case_number is not None:
        sql += " WHERE case_number = ?"
        args = (case_number,)
    rows = db.execute(sql + " ORDER BY seq", args).fetchall()
    return [
        AccessRecord(int(r[0]), float(r[1]), r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7]))
        for r in rows
    ]


def verify_records(log: list[AccessRecord]) -> None:
    """Check the whole log's chain (every row from the first); :class:`AccessLogBroken`."""
    previous = GENESIS
    for expected_seq, row in enumerate(log, 1):
        if row.seq != expected_seq:
            raise AccessLogBroken(f"access log row {expected_seq} is missing")
        if row.previous != previous or hashlib.sha256(previous + row.body()).digest() != row.digest:
            raise AccessLogBroken(f"access log row {row.seq} was changed")
        previous = row.digest


_FIELDS = ("seq", "at", "caseworker", "case_number", "action", "detail", "previous", "digest")


def _row(record: AccessRecord) -> dict[str, object]:
    row = asdict(record)
    row["previous"] = record.previous.hex()
    row["digest"] = record.digest.hex()
    return row


def to_csv(log: list[AccessRecord]) -> str:
    """The log as CSV (a header line, then one line per access; no cell starts a formula)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in log:
        writer.writerow({key: _cell(value) for key, value in _row(record).items()})
    return out.getvalue()


def _cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula is written as text (``'=...``)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_json(log: list[AccessRecord]) -> str:
    """The log as JSON: ``{"format": ..., "records": [...]}``."""
    return json.dumps(
        {"format": "vessel-relay union access log v1", "records": [_row(r) for r in log]},
        ensure_ascii=False,
        indent=1,
    )
