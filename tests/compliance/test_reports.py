"""Compliance reports from a simulated month: exact figures, and tampering that must fail."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from protocol.compliance import (
    ComplianceReport,
    LogLeaf,
    ProvenLeaf,
    TreeHead,
    cosign,
    rule_test,
    sign_tree_head,
    verify_report,
)
from protocol.merkle import root_hash
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from protocol.signing import SigningKey
from tests.compliance.month import CREW, Month
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY

SHORE = SHORE_KEY.verify_key.key
VESSEL = VESSEL_KEY.verify_key.key


def test_figures_equal_an_independent_count(month: Month) -> None:
    """A month of 30 crew members: every figure on the report equals the test's own count."""
    report, ledger = month.report, month.ledger
    assert report.statement is not None
    agent = {c.crew: c for c in report.statement.crew}
    shore = {c.crew: c for c in report.shore_crew}
    assert len(agent) == CREW
    for crew in agent:
        a = agent[crew]
        assert a.offered_bytes == ledger.offered.get(crew, 0)
        assert a.sent_bytes == ledger.received.get(crew, 0)
        assert a.delivered_bytes == ledger.delivered.get(crew, 0)
        assert a.failed_bytes == ledger.failed.get(crew, 0)
        assert a.quota_bytes == RULE_MONTHLY_TEXT_BYTES
    for crew, s in shore.items():
        assert s.sent_bytes == ledger.received.get(crew, 0)
        assert s.delivered_bytes == ledger.delivered.get(crew, 0)
        assert s.failed_bytes == ledger.failed.get(crew, 0)
    assert sum(ledger.offered.values()) > sum(ledger.received.values()) > 0
    assert report.disagreements == ()
    assert report.rule.met
    assert report.rule.crew_granted == CREW
    assert report.rule.used_bytes == sum(ledger.received.values())


def test_the_honest_report_verifies_offline(month: Month) -> None:
    """With the shore's and the vessel's public keys only, the report verifies."""
    assert verify_report(month.report, shore_key=SHORE, vessel_key=VESSEL) == []
    again = ComplianceReport.from_json(month.report.to_json())
    assert again == month.report
    assert verify_report(again, shore_key=SHORE, vessel_key=VESSEL) == []
    assert month.report.earlier_heads  # the month's daily heads, with consistency proofs


def test_one_altered_figure_fails(month: Month) -> None:
    """A figure changed after signing, or re-signed by the shore against its own log, fails."""
    crew = month.report.shore_crew[0]
    bumped = replace(crew, sent_bytes=crew.sent_bytes + 1)
    altered = replace(month.report, shore_crew=(bumped, *month.report.shore_crew[1:]))
    problems = verify_report(altered, shore_key=SHORE, vessel_key=VESSEL)
    assert "the shore's signature over the report does not match its contents" in problems
    resigned = altered.signed(SHORE_KEY)
    problems = verify_report(resigned, shore_key=SHORE, vessel_key=VESSEL)
    assert any(f"crew member {crew.crew}: the shore's figure" in p for p in problems)
    assert any("a disagreement is not listed" in p for p in problems)


def test_removed_leaf_fails(month: Month) -> None:
    """A leaf left out (even by the shore, re-signing) shows: the vessel's batch has no leaf."""
    dropped = month.report.leaves[3]
    batch_seq = LogLeaf.decode(dropped.leaf).batch_seq
    leaves = tuple(p for p in month.report.leaves if p != dropped)
    altered = replace(month.report, leaves=leaves).signed(SHORE_KEY)
    problems = verify_report(altered, shore_key=SHORE, vessel_key=VESSEL)
    assert any(f"batch {batch_seq}, which the vessel says" in p for p in problems)
    assert any("the log's leaves show" in p for p in problems)


def test_added_leaf_fails(month: Month) -> None:
    """A made-up leaf with a borrowed proof does not lead to the tree head's root."""
    real = LogLeaf.decode(month.report.leaves[0].leaf)
    fake = replace(real, batch_seq=99_999, batch_sha256=b"\x01" * 32)
    borrowed = month.report.leaves[0]
    added = ProvenLeaf(borrowed.index, fake.encode(), borrowed.proof)
    altered = replace(month.report, leaves=(*month.report.leaves, added)).signed(SHORE_KEY)
    problems = verify_report(altered, shore_key=SHORE, vessel_key=VESSEL)
    assert any("batch 99999" in p and "another root" in p for p in problems)


def test_back_dated_head_fails(month: Month) -> None:
    """A head dated before the leaves it includes were logged is refused, even if signed."""
    head = month.report.head.head
    early = sign_tree_head(
        TreeHead(head.tree_size, head.root, head.timestamp_minutes - 40_000), SHORE_KEY
    )
    altered = replace(month.report, head=early, earlier_heads=()).signed(SHORE_KEY)
    problems = verify_report(altered, shore_key=SHORE, vessel_key=VESSEL)
    assert any("back-dated head" in p for p in problems)


def test_another_vessels_leaves_fail(month: Month) -> None:
    """A leaf of another vessel (valid in the log) cannot count for this one."""
    other = month.other_leaf_report.leaves[0]
    altered = replace(month.report, leaves=(*month.report.leaves, other)).signed(SHORE_KEY)
    problems = verify_report(altered, shore_key=SHORE, vessel_key=VESSEL)
    assert any("belongs to vessel 77, not to vessel 4242" in p for p in problems)


def test_two_heads_for_one_size_fail(month: Month) -> None:
    """The shore signing two different roots for the same size is a split view."""
    head = month.report.head.head
    forked = sign_tree_head(
        TreeHead(head.tree_size, root_hash([b"\x02" * 32]), head.timestamp_minutes), SHORE_KEY
    )
    problems = verify_report(month.report, shore_key=SHORE, vessel_key=VESSEL, known_heads=[forked])
    assert any(f"two different tree heads for size {head.tree_size}" in p for p in problems)


def test_witness_cosignature(month: Month) -> None:
    """A union's co-signature verifies; a missing or forged one is reported."""
    union = SigningKey.from_seed(bytes(range(100, 132)))
    keys = {"union": union.verify_key.key}
    problems = verify_report(month.report, shore_key=SHORE, witness_keys=keys)
    assert "the tree head is not co-signed by witness 'union'" in problems
    signed_head = replace(month.report.head, witnesses=(cosign(month.report.head, "union", union),))
    cosigned = replace(month.report, head=signed_head).signed(SHORE_KEY)
    assert verify_report(cosigned, shore_key=SHORE, vessel_key=VESSEL, witness_keys=keys) == []
    bad = replace(signed_head.witnesses[0], signature=bytes(64))
    forged = replace(month.report, head=replace(signed_head, witnesses=(bad,))).signed(SHORE_KEY)
    problems = verify_report(forged, shore_key=SHORE, witness_keys=keys)
    assert "the tree head: witness 'union''s co-signature is invalid" in problems


def test_other_shore_key_fails(month: Month) -> None:
    """A report checked against another shore key fails on every shore signature."""
    stranger = SigningKey.from_seed(bytes(range(7, 39))).verify_key.key
    problems = verify_report(month.report, shore_key=stranger)
    assert "the shore's signature over the report does not match its contents" in problems


def test_throttled_vessel_fails_the_rule(month: Month) -> None:
    """An owner who granted 1 MiB to only 5 of 30 crew members fails (8 needed)."""
    assert month.report.statement is not None
    throttled = {
        c.crew: (RULE_MONTHLY_TEXT_BYTES if c.crew <= 5 else 200_000)
        for c in month.report.statement.crew
    }
    sent = {c.crew: c.sent_bytes for c in month.report.shore_crew}
    result = rule_test(throttled, sent)
    assert (result.crew_needed, result.crew_granted, result.met) == (8, 5, False)
    crew = tuple(replace(c, quota_bytes=throttled[c.crew]) for c in month.report.statement.crew)
    statement = replace(month.report.statement, crew=crew).signed(VESSEL_KEY)
    honest = replace(month.report, statement=statement, rule=result).signed(SHORE_KEY)
    assert verify_report(honest, shore_key=SHORE, vessel_key=VESSEL) == []
    claims_met = replace(honest, rule=replace(result, met=True, crew_granted=30)).signed(SHORE_KEY)
    problems = verify_report(claims_met, shore_key=SHORE, vessel_key=VESSEL)
    assert any("the rule's test says met" in p and "not met" in p for p in problems)


def test_statement_altered_on_board_fails(month: Month) -> None:
    """An agent statement changed after the vessel signed it fails the vessel key."""
    assert month.report.statement is not None
    days = month.report.statement.days_at_sea or 0
    statement = replace(month.report.statement, days_at_sea=days + 1)  # a figure changed
    altered = replace(month.report, statement=statement).signed(SHORE_KEY)
    problems = verify_report(altered, shore_key=SHORE, vessel_key=VESSEL)
    assert "the vessel's signature over the agent's statement is invalid" in problems


def test_nothing_personal_in_the_report(month: Month) -> None:
    """No message text and no recipient address appears anywhere in the report file."""
    text = month.report.to_json().decode()
    assert "example.org" not in text
    assert "สวัสดี" not in text
    assert "Hello from the boat" not in text


def test_paths_exist(month: Month) -> None:
    """The simulation left its databases for the CLI tests."""
    assert Path(month.outbox_path).exists()
    assert month.store_path is not None
    assert Path(month.store_path).exists()
