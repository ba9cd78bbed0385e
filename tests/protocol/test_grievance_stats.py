"""The grievance statistics' arithmetic (pure): escalations and acknowledgement times
counted from made-up cases agree with counts made here; suppression holds for any facts."""

from __future__ import annotations

import random
import statistics
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.envelopes import CaseStatus
from protocol.grievance_stats import (
    CaseFacts,
    compute_statistics,
    sign_statistics,
    verify_statistics,
)
from protocol.sealing import GrievanceCategory
from protocol.signing import SigningKey

JAN_2026 = 29_453_760  # minutes: 2026-01-01 00:00 UTC
KEY = SigningKey.from_seed(bytes(range(32)))


def _case(rng: random.Random, vessel: int) -> CaseFacts:
    received = JAN_2026 + rng.randrange(0, 300 * 1440)
    escalated = rng.random() < 0.2
    stages = [(CaseStatus.RECEIVED, received)]
    at = received
    if escalated:
        at += 2 * 1440 + rng.randrange(1, 600)
        stages.append((CaseStatus.REFERRED, at))
        if rng.random() < 0.5:
            at += rng.randrange(60, 5000)
            stages.append((CaseStatus.IN_PROGRESS, at))
    elif rng.random() < 0.9:
        at += rng.randrange(30, 3000)
        stages.append((CaseStatus.ACKNOWLEDGED, at))
    return CaseFacts(
        vessel=vessel,
        owner=f"owner {vessel % 2}",
        flag="TH",
        category=rng.choice(list(GrievanceCategory)),
        stages=tuple(stages),
        escalated=escalated,
    )


def test_escalations_and_acknowledgement_times_match_counts_made_here() -> None:
    """400 cases on four vessels, a fifth of them escalated: the escalations per vessel and
    in total are those counted here; an escalation (received -> referred by the deadline)
    is not an acknowledgement, the union's later "in progress" is."""
    rng = random.Random(7)
    facts = [_case(rng, vessel) for vessel in (1, 2, 3, 4) for _ in range(100)]
    body = compute_statistics(
        facts,
        union_id=7,
        union_name="Union",
        first_month="2026-01",
        last_month="2026-12",
        made_minutes=JAN_2026 + 400 * 1440,
    )
    escalated = Counter(str(f.vessel) for f in facts if f.escalated)
    total = body["total"]
    assert isinstance(total, dict)
    assert total["escalations"] == sum(escalated.values())
    per_vessel = body["per_vessel"]
    assert isinstance(per_vessel, dict)
    for vessel, row in per_vessel.items():
        assert row["escalations"] == escalated[vessel]
    acks = []
    for f in facts:
        later = [
            (s, at) for s, at in f.stages[1:] if s is not CaseStatus.REFERRED or not f.escalated
        ]
        if later:
            acks.append(later[0][1] - f.received)
    assert total["time_to_acknowledge"]["cases"] == len(acks)
    assert total["time_to_acknowledge"]["median_hours"] == round(statistics.median(acks) / 60, 2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 6),
            st.sampled_from(list(GrievanceCategory)),
            st.integers(0, 360 * 1440),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_no_published_count_is_ever_under_the_threshold(
    cases: list[tuple[int, GrievanceCategory, int, bool]],
) -> None:
    """Whatever the cases, the signed aggregate verifies, and so it holds no count from 1
    to 4 (the verifier refuses one)."""
    facts = [
        CaseFacts(
            vessel=vessel,
            owner=f"o{vessel % 3}",
            flag="TH",
            category=category,
            stages=((CaseStatus.RECEIVED, JAN_2026 + offset),)
            + (((CaseStatus.CLOSED, JAN_2026 + offset + 60),) if closed else ()),
        )
        for vessel, category, offset, closed in cases
    ]
    body = compute_statistics(
        facts,
        union_id=7,
        union_name="Union",
        first_month="2026-01",
        last_month="2026-12",
        made_minutes=JAN_2026,
    )
    verify_statistics(sign_statistics(body, KEY), KEY.verify_key.key)
