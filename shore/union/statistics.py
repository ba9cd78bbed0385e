"""The union's grievance statistics: its cases counted, suppressed, signed and exported.

The counting and the suppression rule are :mod:`protocol.grievance_stats` (pure, and what an
inspector's ``vessel-relay report verify-stats`` checks); this module takes the anonymous
facts from the union's store (:meth:`shore.union.inbox.UnionInbox.case_facts`: no text, no
reporter; purged cases keep their facts), signs the aggregate with the union's signing key
and writes it as JSON or CSV. Statistics need no passphrase: the facts are not encrypted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from protocol.grievance_stats import (
    DEFAULT_THRESHOLD,
    compute_statistics,
    month_of,
    sign_statistics,
    statistics_csv,
)
from shore.union.inbox import InboxError, UnionInbox

__all__ = ["make_statistics", "statistics_files", "year_to_date"]


def year_to_date(now_s: float) -> tuple[str, str]:
    """The default period: January of this year to this month (UTC)."""
    month = month_of(int(now_s // 60))
    return f"{month[:4]}-01", month


def _check_month(text: str) -> str:
    if len(text) != 7 or text[4] != "-" or not (text[:4] + text[5:]).isdigit():
        raise InboxError(f"{text!r} is not a month; write it as YYYY-MM, e.g. 2026-03")
    if not 1 <= int(text[5:]) <= 12:
        raise InboxError(f"{text!r} is not a month; months run from 01 to 12")
    return text


def make_statistics(
    inbox: UnionInbox,
    *,
    first_month: str,
    last_month: str,
    threshold: int = DEFAULT_THRESHOLD,
) -> dict[str, object]:
    """The signed aggregate of the cases received in the period (months inclusive)."""
    first, last = _check_month(first_month), _check_month(last_month)
    if first > last:
        raise InboxError(f"the period runs backwards: {first} is after {last}")
    if threshold < 2:
        raise InboxError("the suppression threshold must be at least 2 (5 is usual)")
    body = compute_statistics(
        inbox.case_facts(),
        union_id=inbox.identity.union_id,
        union_name=inbox.identity.name,
        first_month=first,
        last_month=last,
        made_minutes=int(inbox.clock() // 60),
        threshold=threshold,
    )
    return sign_statistics(body, inbox.identity.signing_key)


def statistics_files(document: dict[str, object]) -> tuple[bytes, bytes]:
    """The signed JSON and the CSV of a signed aggregate."""
    body = document["statistics"]
    assert isinstance(body, dict)
    as_json = json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True).encode()
    return as_json, statistics_csv(body).encode()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file, fsynced, then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
