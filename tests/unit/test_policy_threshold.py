"""The `threshold` policy reproduces the design document's 80 % / 95 % rule exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.domain.capping import (
    CapObservation,
    CappingState,
    CeilingAction,
    CeilingDecision,
    CeilingReason,
    RackObservation,
    TargetObservation,
)
from climatik.policies.ceiling_settings import FailSafeSettings, ThresholdSettings
from climatik.policies.ceilings import decide_replica_ceilings

CAP_W = 10_000.0


def observe(
    measured_w: float | None,
    current: int = 4,
    applied: int = 10,
    user_max: int = 10,
    min_replicas: int = 1,
    racks: tuple[RackObservation, ...] = (),
) -> CapObservation:
    return CapObservation(
        scope="ns/pcc",
        cap_w=CAP_W,
        measured_w=measured_w,
        targets=(
            TargetObservation(
                name="chat",
                current_replicas=current,
                min_replicas=min_replicas,
                user_max_replicas=user_max,
                applied_max_replicas=applied,
                watts=None if measured_w is None else measured_w,
            ),
        ),
        racks=racks,
    )


def decide(observation: CapObservation) -> CeilingDecision:
    plan = decide_replica_ceilings(observation, ThresholdSettings(), CappingState(), now_s=0.0)
    (decision,) = plan.decisions
    return decision


def ceiling(observation: CapObservation) -> int:
    return decide(observation).new_max_replicas


BELOW, NEAR, AT = (
    CeilingReason.BELOW_THRESHOLD,
    CeilingReason.POWER_NEAR_LIMIT,
    CeilingReason.POWER_AT_LIMIT,
)


@pytest.mark.parametrize(
    ("share", "expected", "code"),
    [
        (0.79, 10, BELOW),
        (0.7999, 10, BELOW),
        (0.80, 5, NEAR),
        (0.94, 5, NEAR),
        (0.9499, 5, NEAR),
        (0.95, 4, AT),
        (1.2, 4, AT),
    ],
)
def test_rule_is_exact_at_the_thresholds(share: float, expected: int, code: CeilingReason) -> None:
    decision = decide(observe(share * CAP_W, current=4))
    assert (decision.new_max_replicas, decision.code) == (expected, code)


def test_below_80_percent_releases_to_the_users_max_and_says_restore() -> None:
    plan = decide_replica_ceilings(
        observe(0.5 * CAP_W, current=3, applied=4), ThresholdSettings(), CappingState(), 0.0
    )
    (decision,) = plan.decisions
    assert decision.new_max_replicas == 10
    assert decision.action is CeilingAction.RESTORE


def test_never_below_min_replicas() -> None:
    assert ceiling(observe(0.99 * CAP_W, current=0, min_replicas=2)) == 2


def test_never_above_the_users_max() -> None:
    assert ceiling(observe(0.85 * CAP_W, current=10, user_max=10)) == 10


def test_rack_at_its_limit_holds_current_replicas() -> None:
    hot = RackObservation(rack_id="r1", inlet_c=27.5, max_inlet_c=27.0)
    decision = decide(observe(0.5 * CAP_W, current=4, racks=(hot,)))
    assert (decision.new_max_replicas, decision.code) == (4, CeilingReason.RACK_AT_LIMIT)


def test_rack_approaching_its_limit_allows_one_more() -> None:
    warm = RackObservation(rack_id="r1", watts=8_500.0, max_watts=10_000.0)
    decision = decide(observe(0.5 * CAP_W, current=4, racks=(warm,)))
    assert (decision.new_max_replicas, decision.code) == (5, CeilingReason.RACK_NEAR_LIMIT)


def test_missing_data_holds_then_falls_to_the_safe_ceiling() -> None:
    settings = ThresholdSettings(
        fail_safe=FailSafeSettings(max_data_age_s=120, safe_max_replicas=3)
    )
    state = CappingState()
    held = decide_replica_ceilings(observe(None, applied=7), settings, state, now_s=100.0)
    assert held.ceiling("chat") == 7
    assert held.decisions[0].code is CeilingReason.NO_POWER_DATA
    later = decide_replica_ceilings(observe(None, applied=7), settings, held.state, now_s=219.0)
    assert later.ceiling("chat") == 7
    expired = decide_replica_ceilings(observe(None, applied=7), settings, later.state, now_s=220.0)
    assert expired.ceiling("chat") == 3
    assert expired.decisions[0].action is CeilingAction.SAFE
    assert expired.decisions[0].code is CeilingReason.SAFE_CEILING
    # Data returns: the outage clock resets.
    back = decide_replica_ceilings(observe(0.5 * CAP_W), settings, expired.state, now_s=230.0)
    assert back.state.no_data_since_s is None


@given(
    share=st.floats(0.0, 2.0),
    current=st.integers(0, 30),
    min_replicas=st.integers(0, 5),
    extra=st.integers(0, 30),
)
def test_ceiling_always_within_min_and_user_max(
    share: float, current: int, min_replicas: int, extra: int
) -> None:
    user_max = min_replicas + extra
    value = ceiling(
        observe(
            share * CAP_W,
            current=current,
            min_replicas=min_replicas,
            user_max=user_max,
            applied=user_max,
        )
    )
    assert min_replicas <= value <= user_max
