"""Grievance statistics: a union's anonymous, signed aggregate of its cases (UNGP 31 metrics).

From one anonymous :class:`CaseFacts` per case (vessel, owner, flag, category, when each
stage was reached, whether it was escalated; no text, no reporter) :func:`compute_statistics`
counts reports by category and ILO forced-labour indicator, outcomes and escalations; times
to acknowledge, in each stage and to close; and the same per vessel, per owner and per
month. :func:`sign_statistics` signs the result with the union's Ed25519 key and
:func:`verify_statistics` checks it offline (``vessel-relay report verify-stats``): the
signature over the canonical JSON (any number changed fails), and the suppression rule.

**Suppression** (no report can be picked out): a count from 1 to ``threshold - 1`` (5 by
default) is published as ``null`` with its place listed in ``suppressed``; zero counts are
left out; a time (median and mean, in hours) is published only for a group of at least
``threshold`` cases. A vessel, owner or month with fewer than ``threshold`` reports is
published as one suppressed row. Where a table has a total and exactly one of its cells (or
rows) is suppressed, the smallest other is suppressed too, so the hidden one cannot be
found by subtraction within that table. Every number in a published count cell is
therefore ``>= threshold``. (Not done: complementary suppression *across* tables, e.g. one
vessel's hidden outcome cell against the total's; see :data:`DEFINITIONS`.)

Definitions: :data:`DEFINITIONS` (the file carries them too).

Pure: no clock, no I/O; the caller gives the facts, the period and the time of making.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol.envelopes import CaseStatus
from protocol.errors import LocalProtocolError, SignatureInvalid
from protocol.sealing import GrievanceCategory
from protocol.signing import SigningKey, VerifyKey

__all__ = [
    "DEFAULT_THRESHOLD",
    "FORMAT",
    "CaseFacts",
    "StatisticsInvalid",
    "compute_statistics",
    "ilo_indicator",
    "month_of",
    "sign_statistics",
    "statistics_csv",
    "statistics_digest",
    "verify_statistics",
]

FORMAT = "vessel-relay grievance statistics v1"
DEFAULT_THRESHOLD = 5
_CONTEXT = b"vessel-relay grievance statistics v1\x00"
#: What the measures mean, carried in every file.
DEFINITIONS = (
    "A case is acknowledged when it first leaves 'received' for another stage than "
    "'closed'; time to acknowledge runs from 'received' to then. Time in a stage runs from "
    "entering it to leaving it (cases still in it are not counted). Time to close runs from "
    "'received' to 'resolved' or 'closed'. The outcome is the final stage, or 'open'. An "
    "escalated case was not acknowledged within its deadline and went to the union's second "
    "organisation. Months are UTC calendar months of 'received'. Counts from 1 to "
    "threshold-1 are null (suppressed), zero counts are left out, and times are given only "
    "for groups of at least threshold cases. Suppression is complementary within a table, "
    "not across tables."
)
_NOT_ILO = "not an ILO indicator"
_FINAL = (CaseStatus.RESOLVED, CaseStatus.CLOSED)
_TIMED_STAGES = (
    CaseStatus.RECEIVED,
    CaseStatus.ACKNOWLEDGED,
    CaseStatus.IN_PROGRESS,
    CaseStatus.REFERRED,
)


class StatisticsInvalid(LocalProtocolError):
    """A statistics file that does not verify, or facts that cannot be counted."""


def ilo_indicator(category: GrievanceCategory) -> str | None:
    """The ILO forced-labour indicator a category is (the first 11), else None."""
    if category <= GrievanceCategory.EXCESSIVE_OVERTIME:
        return category.name.lower()
    return None


def month_of(minutes: int) -> str:
    """The UTC calendar month (``YYYY-MM``) of a time in minutes since the epoch."""
    return datetime.datetime.fromtimestamp(minutes * 60, datetime.UTC).strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """One case, anonymously: where it came from, what about, and when it moved."""

    vessel: int
    owner: str
    flag: str
    category: GrievanceCategory
    #: (stage, minutes) in the order reached; the first is (RECEIVED, when filed).
    stages: tuple[tuple[CaseStatus, int], ...]
    escalated: bool = False

    def __post_init__(self) -> None:
        if not self.stages or self.stages[0][0] is not CaseStatus.RECEIVED:
            raise StatisticsInvalid("a case's stages start with 'received'")
        times = [at for _, at in self.stages]
        if times != sorted(times):
            raise StatisticsInvalid("a case's stages are not in time order")

    @property
    def received(self) -> int:
        return self.stages[0][1]

    @property
    def month(self) -> str:
        return month_of(self.received)

    @property
    def outcome(self) -> str:
        last = self.stages[-1][0]
        return last.name.lower() if last in _FINAL else "open"

    def acknowledged_after(self) -> int | None:
        """Minutes from received to acknowledged (None: not acknowledged). An escalation
        moves a case to "referred" without the union acknowledging it: not counted."""
        for index, (stage, at) in enumerate(self.stages[1:]):
            if stage is CaseStatus.CLOSED:
                return None
            if self.escalated and index == 0 and stage is CaseStatus.REFERRED:
                continue
            return at - self.received
        return None

    def closed_after(self) -> int | None:
        """Minutes from received to its final stage (None: still open)."""
        stage, at = self.stages[-1]
        return at - self.received if stage in _FINAL else None

    def time_in(self) -> dict[CaseStatus, list[int]]:
        """Minutes spent in each stage it left (a stage entered twice counts twice)."""
        spent: dict[CaseStatus, list[int]] = defaultdict(list)
        for (stage, at), (_, left) in zip(self.stages, self.stages[1:], strict=False):
            spent[stage].append(left - at)
        return spent


class _Table:
    """One table of counts with the suppression rule applied when published."""

    def __init__(self, threshold: int, *, has_total: bool) -> None:
        self.threshold = threshold
        self.has_total = has_total
        self.counts: Counter[str] = Counter()

    def publish(self, where: str, suppressed: list[str]) -> dict[str, int | None]:
        cells = {key: n for key, n in sorted(self.counts.items()) if n > 0}
        hidden = {key for key, n in cells.items() if n < self.threshold}
        if self.has_total and len(hidden) == 1:
            shown = sorted((n, key) for key, n in cells.items() if key not in hidden)
            if shown:
                hidden.add(shown[0][1])
        for key in sorted(hidden):
            suppressed.append(f"{where}.{key}")
        return {key: (None if key in hidden else n) for key, n in cells.items()}


def _times(values: Sequence[int], threshold: int) -> dict[str, float | int | None]:
    """Count, median and mean hours of a group (times only for ``threshold`` or more)."""
    count = len(values)
    if count < threshold:
        return {"cases": None if count else 0, "median_hours": None, "mean_hours": None}
    return {
        "cases": count,
        "median_hours": round(statistics.median(values) / 60, 2),
        "mean_hours": round(statistics.fmean(values) / 60, 2),
    }


def _group(
    facts: Sequence[CaseFacts], threshold: int, where: str, suppressed: list[str]
) -> dict[str, object]:
    """The measures of one group of cases (all of them, a vessel, an owner or a month)."""
    reports = len(facts)
    outcomes = _Table(threshold, has_total=True)
    escalated = sum(f.escalated for f in facts)
    acknowledged: list[int] = []
    closed: list[int] = []
    in_stage: dict[CaseStatus, list[int]] = defaultdict(list)
    for case in facts:
        outcomes.counts[case.outcome] += 1
        ack = case.acknowledged_after()
        if ack is not None:
            acknowledged.append(ack)
        done = case.closed_after()
        if done is not None:
            closed.append(done)
        for stage, spent in case.time_in().items():
            in_stage[stage].extend(spent)
    escalations = _Table(threshold, has_total=False)
    escalations.counts["escalated"] = escalated
    return {
        "reports": reports if reports >= threshold else None,
        "outcomes": outcomes.publish(f"{where}.outcomes", suppressed),
        "escalations": escalations.publish(f"{where}.escalations", suppressed).get("escalated", 0),
        "time_to_acknowledge": _times(acknowledged, threshold),
        "time_to_close": _times(closed, threshold),
        "time_in_stage": {
            stage.name.lower(): _times(in_stage.get(stage, []), threshold)
            for stage in _TIMED_STAGES
        },
    }


def compute_statistics(
    facts: Iterable[CaseFacts],
    *,
    union_id: int,
    union_name: str,
    first_month: str,
    last_month: str,
    made_minutes: int,
    threshold: int = DEFAULT_THRESHOLD,
) -> dict[str, object]:
    """The aggregate of the cases received from ``first_month`` to ``last_month`` (``YYYY-MM``,
    inclusive), suppression applied; the body that :func:`sign_statistics` signs."""
    if threshold < 2:
        raise StatisticsInvalid("the suppression threshold must be at least 2")
    if not first_month <= last_month:
        raise StatisticsInvalid(f"the period {first_month} to {last_month} is empty")
    chosen = [f for f in facts if first_month <= f.month <= last_month]
    suppressed: list[str] = []
    categories = _Table(threshold, has_total=True)
    indicators = _Table(threshold, has_total=True)
    for case in chosen:
        categories.counts[case.category.name.lower()] += 1
        indicators.counts[ilo_indicator(case.category) or _NOT_ILO] += 1
    per: dict[str, dict[str, list[CaseFacts]]] = {"vessel": {}, "owner": {}, "month": {}}
    for case in chosen:
        per["vessel"].setdefault(str(case.vessel), []).append(case)
        per["owner"].setdefault(case.owner or "unknown", []).append(case)
        per["month"].setdefault(case.month, []).append(case)
    return {
        "format": FORMAT,
        "union": {"id": union_id, "name": union_name},
        "period": {"from": first_month, "to": last_month},
        "made_minutes": made_minutes,
        "threshold": threshold,
        "definitions": DEFINITIONS,
        "total": _group(chosen, threshold, "total", suppressed),
        "by_category": categories.publish("by_category", suppressed),
        "by_ilo_indicator": indicators.publish("by_ilo_indicator", suppressed),
        "per_vessel": _rows(per["vessel"], threshold, "per_vessel", suppressed),
        "per_owner": _rows(per["owner"], threshold, "per_owner", suppressed),
        "per_month": _rows(per["month"], threshold, "per_month", suppressed),
        "suppressed": suppressed,
    }


def _rows(
    groups: Mapping[str, list[CaseFacts]], threshold: int, where: str, suppressed: list[str]
) -> dict[str, object]:
    """One row per vessel, owner or month; rows under the threshold hidden whole (and, when
    exactly one is, the smallest other too: the rows add up to the total)."""
    hidden = {key for key, group in groups.items() if len(group) < threshold}
    if len(hidden) == 1:
        shown = sorted((len(g), key) for key, g in groups.items() if key not in hidden)
        if shown:
            hidden.add(shown[0][1])
    ordered = sorted(groups, key=lambda k: (int(k), k) if k.isdigit() else (0, k))
    rows: dict[str, object] = {}
    for key in ordered:
        if key in hidden:
            suppressed.append(f"{where}.{key}")
            rows[key] = {"reports": None, "suppressed": True}
        else:
            rows[key] = _group(groups[key], threshold, f"{where}.{key}", suppressed)
    return rows


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def statistics_digest(document: Mapping[str, object]) -> bytes:
    """The SHA-256 of a signed aggregate (body and signature, canonical JSON): what the
    relay's transparency log records of it (:mod:`protocol.statistics_log`)."""
    return hashlib.sha256(_canonical(dict(document))).digest()


def sign_statistics(body: Mapping[str, object], key: SigningKey) -> dict[str, object]:
    """The signed document: the body, the union's public key and the signature."""
    public = key.verify_key.key
    signed = dict(body) | {"signing_key": public.hex()}
    return {"statistics": signed, "signature": key.sign(_CONTEXT + _canonical(signed)).hex()}


def _count_cells(body: Mapping[str, object]) -> Iterable[tuple[str, object]]:
    """Every published count cell (path, value) of a body."""
    for table in ("by_category", "by_ilo_indicator"):
        cells = body.get(table)
        if isinstance(cells, dict):
            for key, value in cells.items():
                yield f"{table}.{key}", value
    groups: list[tuple[str, object]] = [("total", body.get("total"))]
    for per in ("per_vessel", "per_owner", "per_month"):
        rows = body.get(per)
        if isinstance(rows, dict):
            groups.extend((f"{per}.{key}", row) for key, row in rows.items())
    for where, group in groups:
        if not isinstance(group, dict):
            continue
        yield f"{where}.reports", group.get("reports")
        yield f"{where}.escalations", group.get("escalations")
        outcomes = group.get("outcomes")
        if isinstance(outcomes, dict):
            for key, value in outcomes.items():
                yield f"{where}.outcomes.{key}", value
        timed = [("time_to_acknowledge", group.get("time_to_acknowledge"))]
        timed.append(("time_to_close", group.get("time_to_close")))
        stages = group.get("time_in_stage")
        if isinstance(stages, dict):
            timed.extend((f"time_in_stage.{k}", v) for k, v in stages.items())
        for name, measure in timed:
            if isinstance(measure, dict):
                yield f"{where}.{name}.cases", measure.get("cases")


def verify_statistics(
    document: Mapping[str, object], expected_key: bytes | None = None
) -> dict[str, object]:
    """Check a signed aggregate offline; returns its body, or raises
    :class:`StatisticsInvalid` saying what is wrong. ``expected_key``: the union's public
    key as the union gave it (else the key named in the file is checked and the caller
    must compare its fingerprint)."""
    body = document.get("statistics")
    signature = document.get("signature")
    if not isinstance(body, dict) or not isinstance(signature, str):
        raise StatisticsInvalid("not a signed grievance statistics file")
    if body.get("format") != FORMAT:
        raise StatisticsInvalid(f"not a {FORMAT!r} file")
    try:
        named = bytes.fromhex(str(body.get("signing_key")))
        VerifyKey(named).verify(
            _CONTEXT + _canonical(body), bytes.fromhex(signature), what="grievance statistics"
        )
    except (ValueError, SignatureInvalid) as exc:
        raise StatisticsInvalid(
            f"the signature does not verify: a number or word was changed after signing ({exc})"
        ) from exc
    if expected_key is not None and named != expected_key:
        raise StatisticsInvalid("signed by another key than the union's you were given")
    threshold = body.get("threshold")
    if not isinstance(threshold, int) or threshold < 2:
        raise StatisticsInvalid("the file states no suppression threshold")
    for where, value in _count_cells(body):
        if value is None or value == 0:
            continue
        if not isinstance(value, int) or value < threshold:
            raise StatisticsInvalid(
                f"{where} is {value!r}, under the threshold of {threshold}: it could identify "
                "a reporter"
            )
    return body


def statistics_csv(body: Mapping[str, object]) -> str:
    """The aggregate as CSV rows: table, group, measure, value (suppressed: empty)."""
    lines = ["table,group,measure,value"]

    def add(table: str, group: str, measure: str, value: object) -> None:
        shown = "" if value is None else str(value)
        lines.append(",".join(_csv_cell(x) for x in (table, group, measure, shown)))

    for table in ("by_category", "by_ilo_indicator"):
        cells = body.get(table)
        if isinstance(cells, dict):
            for key, value in cells.items():
                add(table, key, "reports", value)
    groups: list[tuple[str, str, object]] = [("total", "all", body.get("total"))]
    for per in ("per_vessel", "per_owner", "per_month"):
        rows = body.get(per)
        if isinstance(rows, dict):
            groups.extend((per, key, row) for key, row in rows.items())
    for table, key, group in groups:
        if not isinstance(group, dict):
            continue
        add(table, key, "reports", group.get("reports"))
        add(table, key, "escalations", group.get("escalations"))
        outcomes = group.get("outcomes")
        if isinstance(outcomes, dict):
            for outcome, value in outcomes.items():
                add(table, key, f"outcome {outcome}", value)
        measures = [("time to acknowledge", group.get("time_to_acknowledge"))]
        measures.append(("time to close", group.get("time_to_close")))
        stages = group.get("time_in_stage")
        if isinstance(stages, dict):
            measures.extend((f"time in {k.replace('_', ' ')}", v) for k, v in stages.items())
        for name, measure in measures:
            if isinstance(measure, dict):
                for field_name in ("cases", "median_hours", "mean_hours"):
                    add(
                        table,
                        key,
                        f"{name} {field_name.replace('_', ' ')}",
                        measure.get(field_name),
                    )
    return "\n".join(lines) + "\n"


def _csv_cell(text: str) -> str:
    if text[:1] in ("=", "+", "-", "@") and not text.lstrip("-").replace(".", "").isdigit():
        text = "'" + text  # a spreadsheet must not run a cell as a formula
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
