"""The transparency log and the compliance report with the shore store on PostgreSQL: the
same simulated month gives the same figures, leaves and proofs as on SQLite, and verifies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.compliance import ComplianceReport, verify_report
from tests.compliance.month import Month
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY

SHORE = SHORE_KEY.verify_key.key
VESSEL = VESSEL_KEY.verify_key.key


def test_postgres_month_matches_the_independent_count(week_pg: Month) -> None:
    """On PostgreSQL (a week of traffic), every figure on the report equals the test's own
    count, the rule is met, and the report verifies offline."""
    report, ledger = week_pg.report, week_pg.ledger
    assert report.statement is not None
    for a in report.statement.crew:
        assert a.offered_bytes == ledger.offered.get(a.crew, 0)
        assert a.sent_bytes == ledger.received.get(a.crew, 0)
    for s in report.shore_crew:
        assert s.sent_bytes == ledger.received.get(s.crew, 0)
        assert s.delivered_bytes == ledger.delivered.get(s.crew, 0)
        assert s.failed_bytes == ledger.failed.get(s.crew, 0)
    assert {s.crew for s in report.shore_crew} == set(ledger.received)
    assert report.disagreements == ()
    assert report.rule.met
    assert report.earlier_heads
    assert verify_report(report, shore_key=SHORE, vessel_key=VESSEL) == []
    other = week_pg.other_leaf_report
    altered = replace(report, leaves=(*report.leaves, other.leaves[0])).signed(SHORE_KEY)
    problems = verify_report(altered, shore_key=SHORE, vessel_key=VESSEL)
    assert any("belongs to vessel 77, not to vessel 4242" in p for p in problems)


@pytest.mark.slow
def test_postgres_report_verifies_and_equals_sqlite(month_pg: Month, month: Month) -> None:
    """The PostgreSQL report verifies offline, has the month's daily heads with consistency
    proofs, and holds the same leaves, figures and tree heads as the SQLite one."""
    report = month_pg.report
    assert verify_report(report, shore_key=SHORE, vessel_key=VESSEL) == []
    again = ComplianceReport.from_json(report.to_json())
    assert verify_report(again, shore_key=SHORE, vessel_key=VESSEL) == []
    assert len(report.earlier_heads) >= 30
    assert [p.leaf for p in report.leaves] == [p.leaf for p in month.report.leaves]
    assert [p.index for p in report.leaves] == [p.index for p in month.report.leaves]
    assert report.shore_crew == month.report.shore_crew
    assert report.head.head == month.report.head.head
    assert report.rule == month.report.rule
    other = month_pg.other_leaf_report
    assert verify_report(other, shore_key=SHORE) == []
    altered = replace(report, leaves=(*report.leaves, other.leaves[0])).signed(SHORE_KEY)
    problems = verify_report(altered, shore_key=SHORE, vessel_key=VESSEL)
    assert any("belongs to vessel 77, not to vessel 4242" in p for p in problems)
