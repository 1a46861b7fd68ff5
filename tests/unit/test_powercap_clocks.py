"""The power-cap reconciler following clock changes (`powercap_clocks.follow_clock_changes`)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from climatik.domain.capping import CappingState, TargetLearnerState
from climatik.policies.clock_round import ClockHistory
from climatik.reconcilers.powercap_clocks import ClockMemory, follow_clock_changes
from tests.unit.test_policy_clock_round import PROFILE
from tests.unit.test_policy_clocks_under_cap import IDLE_W

LEARNED = CappingState(targets={"chat": TargetLearnerState(watts_per_replica=3200.0)})


def watts(state: CappingState) -> float | None:
    return state.targets["chat"].watts_per_replica


def test_a_target_first_seen_is_taken_as_learned_at_the_clock_it_runs() -> None:
    # After a restart, or when the option is switched on for a config whose tuning results
    # already rescaled the model, rescaling again from the top clock would under-charge it.
    memory = ClockMemory()
    state = follow_clock_changes(memory, LEARNED, {"chat": PROFILE}, idle_w=IDLE_W, now_s=100.0)
    assert watts(state) == pytest.approx(3200.0)
    assert memory.running["chat"] == ClockHistory(1500, -math.inf)


def test_a_lock_to_a_slower_clock_rescales_and_a_model_not_learned_yet_is_left_alone() -> None:
    # 2.4 kW a replica at 1500 MHz; the sweep's 1.8 kW at 1000 MHz once the nodes run it.
    memory = ClockMemory(running={"chat": ClockHistory(1500, -math.inf)})
    slower = {"chat": dataclasses.replace(PROFILE, current_mhz=1000)}
    at_1500 = CappingState(targets={"chat": TargetLearnerState(watts_per_replica=2400.0)})
    state = follow_clock_changes(memory, at_1500, slower, idle_w=IDLE_W, now_s=200.0)
    assert watts(state) == pytest.approx(1800.0)
    assert memory.running["chat"] == ClockHistory(1000, 200.0)
    again = follow_clock_changes(memory, state, slower, idle_w=IDLE_W, now_s=230.0)
    assert watts(again) == pytest.approx(1800.0)
    fresh = ClockMemory(running={"chat": ClockHistory(1500, -math.inf)})
    untouched = follow_clock_changes(fresh, CappingState(), slower, idle_w=IDLE_W, now_s=200.0)
    assert untouched.targets == {}
    assert fresh.running["chat"] == ClockHistory(1000, 200.0)
