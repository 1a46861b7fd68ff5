"""Clocks decided with a capping round's replicas (`clock_round.clocks_for_round`): what the
live power-cap reconciler feeds `clocks_under_cap`."""

from __future__ import annotations

import dataclasses
import math

from climatik.domain.capping import (
    CapObservation,
    CappingState,
    CeilingAction,
    CeilingDecision,
    CeilingPlan,
    CeilingReason,
    RackObservation,
    TargetLearnerState,
    TargetObservation,
)
from climatik.policies.clock_round import (
    ClockHistory,
    ClockProfile,
    clocks_for_round,
    dynamic_budget_w,
)
from tests.unit.test_policy_clocks_under_cap import IDLE_W, SWEEP

PROFILE = ClockProfile(samples=SWEEP, tuned_mhz=1500, current_mhz=1500)


def round_inputs(
    *,
    headroom: int | None = 2,
    measured_w: float | None = 5000.0,
    demand: float = 3000.0,
    cap_w: float = 6000.0,
) -> tuple[CapObservation, CeilingPlan, CappingState]:
    """Chat runs 2 replicas drawing 2 kW over their 1 kW idle each; a free node idles beside
    them (5 kW measured). Under a 6 kW cap that leaves 3 kW for work: 2,143 tokens/s at the
    tuned 1500 MHz, 3,000 at 1000 MHz where four seats hold 3,200."""
    chat = TargetObservation(
        name="chat",
        current_replicas=2,
        min_replicas=1,
        user_max_replicas=4,
        applied_max_replicas=4,
        watts=4000.0,
    )
    observation = CapObservation(
        scope="ns/cap",
        cap_w=cap_w,
        measured_w=measured_w,
        targets=(chat,),
        racks=(RackObservation("r1", replica_headroom=headroom),),
    )
    state = CappingState(targets={"chat": TargetLearnerState(demand_tokens_per_s=demand)})
    decision = CeilingDecision(
        "chat", 4, 4, CeilingAction.HOLD, CeilingReason.WITHIN_HYSTERESIS, "held"
    )
    return observation, CeilingPlan("ns/cap", (decision,), state, predicted_w=5000.0), state


def decide(
    profiles: dict[str, ClockProfile] | None = None,
    running: dict[str, ClockHistory] | None = None,
    requested: dict[str, ClockHistory] | None = None,
    **inputs: float | int | None,
) -> dict[str, int]:
    observation, plan, state = round_inputs(**inputs)  # type: ignore[arg-type]
    return clocks_for_round(
        observation,
        plan,
        state,
        {"chat": PROFILE} if profiles is None else profiles,
        running=running or {},
        requested=requested or {},
        idle_w=IDLE_W,
        safety_margin_fraction=0.0,
        max_p99_token_latency_s=None,
        settle_s=60.0,
        change_interval_s=900.0,
        now_s=10_000.0,
    )


def test_the_budget_is_the_usable_cap_less_what_is_not_the_targets_work() -> None:
    # 5 kW measured, of which 2 kW are chat's work: 3 kW of idle draw stay outside the budget.
    assert dynamic_budget_w(6000.0, 5000.0, [(4000.0, 2)], IDLE_W) == 3000.0


def test_a_binding_cap_slows_the_clock_where_the_racks_have_seats() -> None:
    assert decide() == {"chat": 1000}


def test_without_seats_to_spare_the_tuned_clock_serves_more() -> None:
    # Two replicas hold 1,600 tokens/s at 1000 MHz but 2,000 at 1500.
    assert decide(headroom=0) == {"chat": 1500}


def test_a_clock_asked_for_lately_holds_until_the_interval_has_passed() -> None:
    assert decide(requested={"chat": ClockHistory(1500, 9_500.0)}) == {"chat": 1500}
    assert decide(requested={"chat": ClockHistory(1500, 9_000.0)}) == {"chat": 1000}
    assert decide(requested={"chat": ClockHistory(1500, -math.inf)}) == {"chat": 1000}
    # A node running another clock (a sweep's own pick, a node just tuned) does not restart
    # the interval: the request holds, and its nodes are brought to it.
    assert decide(
        running={"chat": ClockHistory(1500, 9_990.0)},
        requested={"chat": ClockHistory(1500, 9_000.0)},
    ) == {"chat": 1000}


def test_a_clock_rises_only_once_its_nodes_run_the_one_asked_for_and_have_settled() -> None:
    # 3,500 tokens/s: four seats hold 3,200 at 1000 MHz, all at 1500 MHz, and a 10 kW cap
    # leaves the 2.4 kW more they draw: back up, but only once every node runs 1000 MHz and
    # the measurement is all at it.
    rising = {"demand": 3500.0, "cap_w": 10_000.0}
    asked = {"chat": ClockHistory(1000, -math.inf)}
    at_1000 = {"chat": dataclasses.replace(PROFILE, current_mhz=1000)}
    assert decide(at_1000, {"chat": ClockHistory(1000, 0.0)}, asked, **rising) == {"chat": 1500}
    recent = {"chat": ClockHistory(1000, 9_990.0)}
    assert decide(at_1000, recent, asked, **rising) == {"chat": 1000}
    assert decide(None, {"chat": ClockHistory(1500, 0.0)}, asked, **rising) == {"chat": 1000}


def test_nothing_is_decided_without_a_measurement_or_a_profile_for_every_target() -> None:
    assert decide(measured_w=None) == {}
    assert decide(profiles={}) == {}
    assert decide(profiles={"other": PROFILE}) == {}


def test_before_any_request_a_target_starts_from_its_sweeps_pick_not_its_nodes_default() -> None:
    # A node not swept yet runs the GPUs' default, the top clock: holding it (a clock keeps
    # what serves as much) would undo the tuning on every node.
    unswept = {"chat": dataclasses.replace(PROFILE, current_mhz=2000)}
    assert decide(unswept, demand=1000.0, cap_w=20_000.0) == {"chat": 1500}


def test_after_a_restart_a_clock_locked_low_rises_only_through_the_checks() -> None:
    # No request remembered, the nodes locked at 1000 MHz and changed lately: 3,500 tokens/s
    # would be served best at 1500 MHz, but the rise waits for the measurement to settle.
    locked = {"chat": dataclasses.replace(PROFILE, current_mhz=1000)}
    recent = {"chat": ClockHistory(1000, 9_990.0)}
    assert decide(locked, recent, demand=3500.0, cap_w=10_000.0) == {"chat": 1000}
