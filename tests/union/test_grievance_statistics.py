"""Grievance statistics (UNGP 31) over a simulated year: 1,000 reports to three unions from
six vessels of two owners (and one owner nobody recorded), moved on, closed, resolved or
left open; every published figure matches counts made independently from the simulation,
no count under the threshold is published, and the signed file verifies offline and fails
when any number is changed.

Reports are sealed to each union as a vessel seals them and fetched through the union's
own ``fetch`` (a stand-in for the relay's ``/union/v1/reports`` hands them over, so a year
runs in seconds); stages are moved with ``set_status`` at the simulated times.
"""

from __future__ import annotations

import datetime
import json
import random
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from typer.testing import CliRunner

from common.codebooks import default_codebook
from protocol.cases import make_receipt_code
from protocol.envelopes import CaseStatus
from protocol.grievance_stats import StatisticsInvalid, verify_statistics
from protocol.languages import Language
from protocol.sealing import GrievanceCategory, GrievancePlaintext, seal_grievance
from shore.union.client import RelayClient, RouteMissing, SealedReport
from shore.union.inbox import UnionInbox
from shore.union.keys import init_union, load_union
from shore.union.statistics import make_statistics, statistics_files
from vessel_relay.cli import app as cli_app

YEAR_START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
DAY = 86_400.0
VESSELS = {1: ("Sea Co", "TH"), 2: ("Sea Co", "TH"), 3: ("Sea Co", "TW"), 4: ("Blue Ltd", "TW")}
VESSELS |= {5: ("Blue Ltd", "TH"), 6: ("", "")}  # vessel 6: owner never recorded
UNIONS = (7, 8, 9)
THRESHOLD = 5


class HandOver:
    """The relay's ``/union/v1/reports`` for one union: each report handed over once."""

    def __init__(self) -> None:
        self.waiting: list[SealedReport] = []

    def reports(self) -> list[SealedReport]:
        given, self.waiting = self.waiting, []
        return given

    def lane_blocks(self, after: int, limit: int) -> object:
        raise RouteMissing("no lane in this simulation")

    def escalations(self, after: int) -> tuple[list[object], int]:
        """No union escalates to these (escalation is tests/union/test_escalation.py)."""
        return [], after

    def post_note(self, vessel: int, message_seq: int, status: CaseStatus, note: bytes) -> None:
        """Notes are not the subject here."""

    def close(self) -> None:
        """Nothing to close."""


@dataclass
class SimCase:
    """One report as the simulation made it (the independent record)."""

    union: int
    vessel: int
    category: GrievanceCategory
    number: int = 0
    stages: list[tuple[CaseStatus, int]] = field(default_factory=list)


def _plan(rng: random.Random) -> list[tuple[float, SimCase, list[tuple[CaseStatus, float]]]]:
    """1,000 reports over the year; each with the stage changes the union will make."""
    plans = []
    for _ in range(1000):
        filed = YEAR_START + rng.uniform(0, 360) * DAY
        case = SimCase(
            union=rng.choice(UNIONS),
            vessel=rng.choices(list(VESSELS), weights=[30, 25, 20, 15, 9, 1])[0],
            category=rng.choices(list(GrievanceCategory), weights=range(16, 0, -1))[0],
        )
        moves: list[tuple[CaseStatus, float]] = []
        at = filed
        fate = rng.random()
        if fate < 0.08:
            pass  # never acknowledged
        elif fate < 0.12:
            moves.append((CaseStatus.CLOSED, at + rng.uniform(1, 48) * 3600))
        else:
            at += rng.uniform(0.5, 120) * 3600
            moves.append((CaseStatus.ACKNOWLEDGED, at))
            if rng.random() < 0.85:
                at += rng.uniform(1, 14) * DAY
                moves.append((CaseStatus.IN_PROGRESS, at))
                if rng.random() < 0.3:
                    at += rng.uniform(1, 30) * DAY
                    moves.append((CaseStatus.REFERRED, at))
                end = rng.random()
                if end < 0.55:
                    at += rng.uniform(1, 60) * DAY
                    moves.append((CaseStatus.RESOLVED, at))
                elif end < 0.8:
                    at += rng.uniform(1, 60) * DAY
                    moves.append((CaseStatus.CLOSED, at))
        plans.append((filed, case, moves))
    return plans


def _independent(cases: list[SimCase], first: str, last: str) -> dict[str, Counter[str]]:
    """Counts made straight from the simulation, without the code under test."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for case in cases:
        received = case.stages[0][1]
        month = datetime.datetime.fromtimestamp(received * 60, datetime.UTC).strftime("%Y-%m")
        if not first <= month <= last:
            continue
        owner = VESSELS[case.vessel][0] or "unknown"
        last_stage = case.stages[-1][0]
        outcome = last_stage.name.lower() if last_stage.value >= 5 else "open"
        ilo = case.category.name.lower() if case.category.value <= 11 else "not an ILO indicator"
        out["total"]["reports"] += 1
        out["category"][case.category.name.lower()] += 1
        out["ilo"][ilo] += 1
        out["total.outcomes"][outcome] += 1
        for key, name in ((str(case.vessel), "vessel"), (owner, "owner"), (month, "month")):
            out[name][key] += 1
            out[f"{name}.outcomes"][f"{key}.{outcome}"] += 1
    return out


def _ack_hours(cases: list[SimCase]) -> list[float]:
    found = []
    for case in cases:
        moves = case.stages[1:]
        if moves and moves[0][0] is not CaseStatus.CLOSED:
            found.append(moves[0][1] - case.stages[0][1])
    return found


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[UnionInbox, list[SimCase]]]:
    """Three unions' inboxes after the simulated year (built once for these tests)."""
    rng = random.Random(20261207)
    root = tmp_path_factory.mktemp("year")
    now = [YEAR_START]
    inboxes: dict[int, UnionInbox] = {}
    handovers: dict[int, HandOver] = {}
    for union in UNIONS:
        identity = init_union(root / str(union), union, f"Union {union}", "http://127.0.0.1:9")
        handovers[union] = HandOver()
        inboxes[union] = UnionInbox(
            load_union(identity.directory),
            default_codebook(),
            client=cast(RelayClient, handovers[union]),
            clock=lambda: now[0],
        )
        for vessel, (owner, flag) in VESSELS.items():
            if owner:
                inboxes[union].set_vessel(vessel, owner=owner, flag=flag)
    events: list[tuple[float, int, str, object]] = []
    for seq, (filed, case, moves) in enumerate(_plan(rng), 1):
        events.append((filed, seq, "file", (case, seq)))
        for stage, at in moves:
            events.append((at, seq, "move", (case, stage)))
    events.sort(key=lambda e: (e[0], e[1], e[2] != "file"))

    simulated: dict[int, list[SimCase]] = defaultdict(list)
    for at, _, kind, payload in events:
        now[0] = at
        if kind == "file":
            case, number = cast(tuple[SimCase, int], payload)
            inbox = inboxes[case.union]
            plain = GrievancePlaintext(
                case.category,
                "a report",
                Language.ENG,
                make_receipt_code(f"{number:015d}"),
                int(at // 60),
            )
            sealed = seal_grievance(plain, inbox.identity.box_public, default_codebook())
            handovers[case.union].waiting.append(SealedReport(case.vessel, number, sealed, at))
            assert inbox.fetch().new_cases == 1
            case.number = number
            case.stages.append((CaseStatus.RECEIVED, int(at // 60)))
            simulated[case.union].append(case)
        else:
            case, stage = cast(tuple[SimCase, CaseStatus], payload)
            reason = "settled with the owner" if stage is CaseStatus.CLOSED else None
            inboxes[case.union].set_status(f"{case.vessel}-{case.number}", stage, reason)
            case.stages.append((stage, int(at // 60)))
    yield {u: (inboxes[u], simulated[u]) for u in UNIONS}
    for inbox in inboxes.values():
        inbox.close()


Year = dict[int, tuple[UnionInbox, list[SimCase]]]


def _cells(body: dict[str, object], table: str) -> dict[str, int | None]:
    cells = body[table]
    assert isinstance(cells, dict)
    return cells


def _check_table(published: dict[str, object], expected: Counter[str], threshold: int) -> None:
    """Every published cell equals the independent count; a null hides a count that is
    under the threshold, or one other (complementary) cell; zero counts are absent."""
    assert set(published) == {k for k, n in expected.items() if n > 0}
    hidden = [k for k, v in published.items() if v is None]
    for key, value in published.items():
        if value is not None:
            assert value == expected[key], key
            assert value >= threshold, key
    small = [k for k in published if expected[k] < threshold]
    assert set(small) <= set(hidden)
    assert len(hidden) - len(small) <= (1 if len(small) == 1 else 0)
    assert len(hidden) != 1  # one hidden cell alone could be found from the total


def test_a_simulated_year_matches_independent_counts_exactly(year: Year) -> None:
    """For each union: reports by category and ILO indicator, outcomes, reports per vessel,
    owner and month, and the median and mean time to acknowledge, as the simulation
    counted them; nothing under the threshold is published."""
    assert sum(len(cases) for _, cases in year.values()) == 1000
    for union, (inbox, cases) in year.items():
        document = make_statistics(inbox, first_month="2026-01", last_month="2026-12")
        body = verify_statistics(document, inbox.identity.signing_key.verify_key.key)
        expected = _independent(cases, "2026-01", "2026-12")
        total = body["total"]
        assert isinstance(total, dict)
        assert total["reports"] == len(cases) == expected["total"]["reports"]
        _check_table(_cells(body, "by_category"), expected["category"], THRESHOLD)
        _check_table(_cells(body, "by_ilo_indicator"), expected["ilo"], THRESHOLD)
        _check_table(total["outcomes"], expected["total.outcomes"], THRESHOLD)
        for per, name in (("per_vessel", "vessel"), ("per_owner", "owner"), ("per_month", "month")):
            rows = body[per]
            assert isinstance(rows, dict)
            assert set(rows) == set(expected[name])
            published = {k: row["reports"] for k, row in rows.items()}
            _check_table(published, expected[name], THRESHOLD)
            for key, row in rows.items():
                if row.get("suppressed"):
                    assert set(row) == {"reports", "suppressed"}  # nothing else of it shows
                    continue
                outcomes = {
                    o: n
                    for k, n in expected[f"{name}.outcomes"].items()
                    if k.startswith(key + ".")
                    for o in [k[len(key) + 1 :]]
                }
                _check_table(row["outcomes"], Counter(outcomes), THRESHOLD)
        assert "unknown" in body["per_owner"]
        acks = _ack_hours(cases)
        assert total["time_to_acknowledge"]["cases"] == len(acks)
        assert total["time_to_acknowledge"]["median_hours"] == round(
            statistics.median(acks) / 60, 2
        )
        assert total["time_to_acknowledge"]["mean_hours"] == round(statistics.fmean(acks) / 60, 2)
        closed = [c.stages[-1][1] - c.stages[0][1] for c in cases if c.stages[-1][0].value >= 5]
        assert total["time_to_close"]["cases"] == len(closed)
        assert total["time_to_close"]["median_hours"] == round(statistics.median(closed) / 60, 2)
        referred = [
            later[1] - stage[1]
            for c in cases
            for stage, later in zip(c.stages, c.stages[1:], strict=False)
            if stage[0] is CaseStatus.REFERRED
        ]
        assert total["time_in_stage"]["referred"]["cases"] == len(referred)
        assert union in (7, 8, 9)


def test_a_quarter_suppresses_what_is_small(year: Year) -> None:
    """Over one month, cells are small: every count under 5 is null and listed as
    suppressed, times are given only for groups of 5 or more."""
    inbox, cases = year[7]
    document = make_statistics(inbox, first_month="2026-03", last_month="2026-03")
    body = verify_statistics(document)
    expected = _independent(cases, "2026-03", "2026-03")
    _check_table(_cells(body, "by_category"), expected["category"], THRESHOLD)
    assert body["suppressed"]
    for row in body["per_vessel"].values():
        if not row.get("suppressed"):
            for measure in [row["time_to_acknowledge"], row["time_to_close"]]:
                if measure["cases"] is None:
                    assert measure["median_hours"] is None


def test_the_signed_file_verifies_offline_and_fails_when_a_number_changes(
    year: Year, tmp_path: Path
) -> None:
    """`vessel-relay report verify-stats` accepts the union's file with its fingerprint,
    refuses another union's fingerprint, and refuses the file once any one number (or a
    suppressed cell filled in) is changed."""
    inbox, _ = year[8]
    document = make_statistics(inbox, first_month="2026-01", last_month="2026-12")
    as_json, as_csv = statistics_files(document)
    assert as_csv.startswith(b"table,group,measure,value\n")
    path = tmp_path / "stats.json"
    path.write_bytes(as_json)
    runner = CliRunner()
    from protocol.evidence import fingerprint

    mine = fingerprint(inbox.identity.signing_key.verify_key.key)
    ok = runner.invoke(cli_app, ["report", "verify-stats", str(path), "--fingerprint", mine])
    assert ok.exit_code == 0, ok.output
    assert "OK: grievance statistics of union 8" in ok.output
    other = fingerprint(year[9][0].identity.signing_key.verify_key.key)
    refused = runner.invoke(cli_app, ["report", "verify-stats", str(path), "--fingerprint", other])
    assert refused.exit_code == 1

    def changed(edit: object) -> int:
        altered = json.loads(as_json)
        assert callable(edit)
        edit(altered["statistics"])
        path.write_text(json.dumps(altered))
        return runner.invoke(cli_app, ["report", "verify-stats", str(path)]).exit_code

    assert changed(lambda b: b["total"].update(reports=b["total"]["reports"] + 1)) == 1
    first_category = next(k for k, v in document["statistics"]["by_category"].items() if v)
    assert changed(lambda b: b["by_category"].update({first_category: 999})) == 1
    assert changed(lambda b: b["per_month"]["2026-02"].update(escalations=7)) == 1
    hidden = next(k for k, v in document["statistics"]["by_category"].items() if v is None)
    assert changed(lambda b: b["by_category"].update({hidden: 3})) == 1
    # a file re-signed by someone else with a small cell still fails the threshold check
    from protocol.grievance_stats import sign_statistics
    from protocol.signing import SigningKey

    body = dict(document["statistics"])
    body["by_category"] = dict(body["by_category"]) | {hidden: 2}
    forged = sign_statistics(body, SigningKey.from_seed(bytes(32)))
    with pytest.raises(StatisticsInvalid, match="under the threshold"):
        verify_statistics(forged)
