"""Canary assignment by hashing the ticket id, and the gate's significance test."""

from __future__ import annotations

import math

from router.deploy import Deployment, canary_bucket
from router.gate import worse_p_value


def test_canary_buckets_are_fixed_uniform_and_nested() -> None:
    ids = [f"t-{i}" for i in range(20_000)]
    buckets = [canary_bucket(i) for i in ids]
    assert buckets == [canary_bucket(i) for i in ids]  # a ticket never moves
    assert all(0 <= b < 100 for b in buckets)
    share = sum(b < 5 for b in buckets) / len(ids)
    assert abs(share - 0.05) < 0.005  # 20k draws: sd 0.0015
    in_5 = {i for i, b in zip(ids, buckets, strict=True) if b < 5}
    in_20 = {i for i, b in zip(ids, buckets, strict=True) if b < 20}
    assert in_5 <= in_20  # raising the share only adds tickets


def test_a_deployment_sends_each_ticket_to_one_space() -> None:
    d = Deployment(live="sp-a", canary="sp-b", canary_percent=30)
    for i in range(1000):
        ticket = f"x{i}"
        assert d.space_for(ticket) == ("sp-b" if canary_bucket(ticket) < 30 else "sp-a")
    assert Deployment(live="sp-a").space_for("x1") == "sp-a"
    assert Deployment().space_for("x1") is None
    assert Deployment(live="sp-a", canary="sp-b", canary_percent=30).serving() == ("sp-a", "sp-b")


def test_the_sign_test_separates_bad_luck_from_a_real_drop() -> None:
    assert worse_p_value(0, 0) == 1.0
    assert worse_p_value(1, 0) == 0.5  # one query lost of one changed: no evidence
    assert math.isclose(worse_p_value(5, 0), 1 / 32)
    assert worse_p_value(6, 4) > 0.3
    assert worse_p_value(25, 0) < 1e-6  # a slice whose documents broke
    assert math.isclose(worse_p_value(3, 3), 0.65625)


def test_outcomes_judge_only_with_enough_decisions_each() -> None:
    from router.gate import outcome_check
    from router.outcomes import OutcomeCounts
    from router.settings import GateSettings

    settings = GateSettings(min_outcome_decisions=200, outcome_tolerance=0.05)
    base = OutcomeCounts("sp-a", decisions=1000, auto=800, resolved=600, escalated=50)
    few = OutcomeCounts("sp-b", decisions=150, auto=120, resolved=10, escalated=100)
    check = outcome_check(few, base, settings)
    assert check.status == "skip" and "150 candidate" in check.reasons[0]  # bad, but not evidence
    same = OutcomeCounts("sp-b", decisions=300, auto=240, resolved=175, escalated=20)
    assert outcome_check(same, base, settings).status == "pass"  # 0.583 vs 0.600: within tolerance
    worse = OutcomeCounts("sp-b", decisions=300, auto=240, resolved=150, escalated=40)
    check = outcome_check(worse, base, settings)
    assert check.status == "fail"
    assert [r.split(" rate")[0] for r in check.reasons] == ["resolution", "escalation"]
    assert outcome_check(None, None, settings).status == "skip"
