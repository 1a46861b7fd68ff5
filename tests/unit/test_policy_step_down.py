"""`policy.stepDownIntervalSeconds`: after a step-down, the next one of that target waits the
interval, unless power is above the cap itself or the fail-safe applies."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.domain.capping import (
    CapObservation,
    CappingState,
    CeilingAction,
    CeilingPlan,
    CeilingReason,
    StepDown,
    TargetLearnerState,
    TargetObservation,
)
from climatik.policies.ceiling_settings import (
    CeilingSettings,
    FailSafeSettings,
    HeadroomSettings,
    ThresholdSettings,
)
from climatik.policies.ceilings import decide_replica_ceilings
from climatik.policies.step_down import EARLY_S

CAP_W = 10_000.0
THRESHOLD = ThresholdSettings(step_down_interval_s=30.0)


def observe(
    measured_w: float | None,
    current: int,
    applied: int,
    *,
    user_max: int = 10,
    min_replicas: int = 1,
    other_w: float = 0.0,
) -> CapObservation:
    """One target drawing `measured_w` less `other_w` (the rest is untargeted load)."""
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
                watts=None if measured_w is None else measured_w - other_w,
            ),
        ),
    )


def only(plan: CeilingPlan) -> tuple[int, CeilingAction, CeilingReason]:
    (decision,) = plan.decisions
    return decision.new_max_replicas, decision.action, decision.code


def stepped_down_at_0(settings: CeilingSettings = THRESHOLD) -> CeilingPlan:
    """At 96 % of the cap the threshold rule lowers the ceiling from 10 to the 6 running."""
    plan = decide_replica_ceilings(observe(9_600.0, 6, 10), settings, CappingState(), 0.0)
    assert only(plan)[:2] == (6, CeilingAction.LOWER)
    return plan


def test_a_second_step_down_inside_the_interval_waits_then_happens() -> None:
    first = stepped_down_at_0()
    # The autoscaler followed to 5 replicas; still at 96 %: the rule wants 5.
    pressed = observe(9_600.0, 5, 6)
    early = decide_replica_ceilings(pressed, THRESHOLD, first.state, 15.0)
    assert only(early) == (6, CeilingAction.HOLD, CeilingReason.STEP_DOWN_WAITING)
    assert "last step-down 15 s ago (interval 30 s): holding 6, not 5" in early.decisions[0].reason
    on_time = decide_replica_ceilings(pressed, THRESHOLD, early.state, 30.0)
    assert only(on_time) == (5, CeilingAction.LOWER, CeilingReason.POWER_AT_LIMIT)
    # And that step-down starts the next wait.
    again = decide_replica_ceilings(observe(9_600.0, 4, 5), THRESHOLD, on_time.state, 45.0)
    assert only(again)[2] is CeilingReason.STEP_DOWN_WAITING


def test_a_decision_a_moment_early_counts_as_on_time() -> None:
    first = stepped_down_at_0()
    pressed = observe(9_600.0, 5, 6)
    jittered = decide_replica_ceilings(pressed, THRESHOLD, first.state, 30.0 - EARLY_S / 2)
    assert only(jittered)[:2] == (5, CeilingAction.LOWER)
    too_early = decide_replica_ceilings(pressed, THRESHOLD, first.state, 30.0 - 2 * EARLY_S)
    assert only(too_early)[:2] == (6, CeilingAction.HOLD)


def test_power_above_the_cap_itself_never_waits() -> None:
    first = stepped_down_at_0()
    breach = decide_replica_ceilings(observe(10_100.0, 5, 6), THRESHOLD, first.state, 5.0)
    assert only(breach) == (5, CeilingAction.LOWER, CeilingReason.POWER_AT_LIMIT)
    at_the_cap = decide_replica_ceilings(observe(CAP_W, 5, 6), THRESHOLD, first.state, 5.0)
    assert only(at_the_cap)[2] is CeilingReason.STEP_DOWN_WAITING


def test_the_fail_safe_ceiling_never_waits() -> None:
    settings = replace(
        THRESHOLD, fail_safe=FailSafeSettings(max_data_age_s=5.0, safe_max_replicas=2)
    )
    first = stepped_down_at_0(settings)
    gap = decide_replica_ceilings(observe(None, 6, 6), settings, first.state, 10.0)
    assert only(gap)[:2] == (6, CeilingAction.HOLD)
    safe = decide_replica_ceilings(observe(None, 6, 6), settings, gap.state, 15.0)
    assert only(safe) == (2, CeilingAction.SAFE, CeilingReason.SAFE_CEILING)


def test_raising_never_waits() -> None:
    first = stepped_down_at_0()
    released = decide_replica_ceilings(observe(5_000.0, 6, 6), THRESHOLD, first.state, 1.0)
    assert only(released) == (10, CeilingAction.RESTORE, CeilingReason.BELOW_THRESHOLD)


def test_a_step_down_not_in_force_makes_nothing_wait() -> None:
    first = stepped_down_at_0()
    # The write of 6 was refused on a conflict: 10 is still in force.
    refused = decide_replica_ceilings(observe(9_600.0, 6, 10), THRESHOLD, first.state, 1.0)
    assert only(refused)[:2] == (6, CeilingAction.LOWER)


def test_a_restarted_leader_forgets_and_may_step_down_sooner() -> None:
    stepped_down_at_0()
    fresh = decide_replica_ceilings(observe(9_600.0, 5, 6), THRESHOLD, CappingState(), 15.0)
    assert only(fresh)[:2] == (5, CeilingAction.LOWER)


def test_interval_zero_is_todays_behaviour() -> None:
    settings = replace(THRESHOLD, step_down_interval_s=0.0)
    first = stepped_down_at_0(settings)
    next_round = decide_replica_ceilings(observe(9_600.0, 5, 6), settings, first.state, 0.5)
    assert only(next_round)[:2] == (5, CeilingAction.LOWER)


def test_headroom_waits_too_and_drops_its_prediction_while_it_does() -> None:
    settings = HeadroomSettings(step_down_interval_s=30.0)
    learner = TargetLearnerState(watts_per_replica=1_000.0, samples=10, last_data_s=0.0)
    state = CappingState(targets={"chat": learner})
    # 8 x 1000 W beside 1500 W of other load fits 9,700 W usable; 10 do not: lowered to 8.
    first = decide_replica_ceilings(observe(9_500.0, 8, 10, other_w=1_500.0), settings, state, 0.0)
    assert only(first)[:2] == (8, CeilingAction.LOWER)
    assert first.state.step_downs == {"chat": StepDown(at_s=0.0, to_replicas=8)}
    # The other load grew by 300 W, still under the cap: the budget now admits 7.
    grown = observe(9_800.0, 8, 8, other_w=1_800.0)
    wanted = decide_replica_ceilings(
        grown, replace(settings, step_down_interval_s=0.0), first.state, 10.0
    )
    assert only(wanted)[:2] == (7, CeilingAction.LOWER)
    assert wanted.predicted_w is not None
    waiting = decide_replica_ceilings(grown, settings, first.state, 10.0)
    assert only(waiting) == (8, CeilingAction.HOLD, CeilingReason.STEP_DOWN_WAITING)
    assert waiting.decisions[0].planned_watts is None
    assert waiting.predicted_w is None
    assert waiting.state.predicted_w is None
    # The learner's memory goes on as without the wait.
    assert waiting.state.targets == wanted.state.targets


def test_targets_that_left_the_scope_are_forgotten() -> None:
    first = stepped_down_at_0()
    other = CapObservation("ns/pcc", CAP_W, 1_000.0, ())
    plan = decide_replica_ceilings(other, THRESHOLD, first.state, 1.0)
    assert plan.state.step_downs == {}


ROUNDS = st.lists(
    st.tuples(
        st.floats(0.5, 45.0),  # seconds since the last decision
        st.none() | st.floats(0.5, 1.2),  # measured share of the cap, or no data
        st.integers(1, 12),  # running replicas
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.parametrize("policy", ["threshold", "headroom"])
@given(steps=ROUNDS, interval_s=st.sampled_from([0.0, 15.0, 30.0, 120.0]))
def test_waiting_only_holds_a_ceiling_higher_and_never_through_a_breach(
    policy: str, steps: list[tuple[float, float | None, int]], interval_s: float
) -> None:
    """Beside the same decision without an interval, from the same state: the wait only keeps a
    ceiling higher, never lower, never above the user's max, and never when power is above the
    cap or the fail-safe applies; and two step-downs below the cap are an interval apart."""
    fail_safe = FailSafeSettings(max_data_age_s=60.0, safe_max_replicas=2)
    settings: CeilingSettings = (
        ThresholdSettings(step_down_interval_s=interval_s, fail_safe=fail_safe)
        if policy == "threshold"
        else HeadroomSettings(
            step_down_interval_s=interval_s,
            initial_watts_per_replica=800.0,
            fail_safe=fail_safe,
        )
    )
    no_wait = replace(settings, step_down_interval_s=0.0)
    state, now_s, applied = CappingState(), 0.0, 10
    last_lowered_s: float | None = None
    for gap_s, share, running in steps:
        now_s += gap_s
        measured = None if share is None else share * CAP_W
        observation = observe(measured, min(running, 10), applied, min_replicas=2)
        plan = decide_replica_ceilings(observation, settings, state, now_s)
        reference = decide_replica_ceilings(observation, no_wait, state, now_s)
        (decision,), (unwaited,) = plan.decisions, reference.decisions
        assert unwaited.new_max_replicas <= decision.new_max_replicas <= 10
        breach = measured is not None and measured > CAP_W
        if breach or unwaited.code is CeilingReason.SAFE_CEILING:
            assert decision == unwaited
        if decision.code is CeilingReason.STEP_DOWN_WAITING:
            assert decision.action is CeilingAction.HOLD
        if decision.new_max_replicas < applied:
            if last_lowered_s is not None and not breach and decision.action is CeilingAction.LOWER:
                assert now_s - last_lowered_s >= interval_s - EARLY_S
            last_lowered_s = now_s
        elif decision.new_max_replicas > applied:
            last_lowered_s = None  # raised since: that step-down is no longer in force
        applied = decision.new_max_replicas
        state = plan.state
