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


def test_a_target_first_seen_at_its_tuned_clock_changed_from_the_top_one() -> None:
    # The model learned while the nodes ran their default, the sweep's top clock (2000 MHz,
    # 3.2 kW a replica); they run 1500 MHz now (2.4 kW): rescaled by 2.4 / 3.2.
    memory = ClockMemory()
    state = follow_clock_changes(memory, LEARNED, {"chat": PROFILE}, idle_w=IDLE_W, now_s=100.0)
    assert watts(state) == pytest.approx(2400.0)
    assert memory.running["chat"] == ClockHistory(1500, 100.0)
    # Nothing changed since: nothing moves.
    again = follow_clock_changes(memory, state, {"chat": PROFILE}, idle_w=IDLE_W, now_s=130.0)
    assert watts(again) == pytest.approx(2400.0)
    assert memory.running["chat"] == ClockHistory(1500, 100.0)


def test_a_lock_to_a_slower_clock_rescales_and_a_model_not_learned_yet_is_left_alone() -> None:
    memory = ClockMemory(running={"chat": ClockHistory(1500, -math.inf)})
    slower = {"chat": dataclasses.replace(PROFILE, current_mhz=1000)}
    state = follow_clock_changes(
        memory,
        dataclasses.replace(LEARNED, targets={"chat": TargetLearnerState(2400.0)}),
        slower,
        idle_w=IDLE_W,
        now_s=200.0,
    )
    assert watts(state) == pytest.approx(1800.0)  # the sweep's 1.8 kW at 1000 MHz
    assert memory.running["chat"] == ClockHistory(1000, 200.0)
    fresh = ClockMemory()
    untouched = follow_clock_changes(fresh, CappingState(), slower, idle_w=IDLE_W, now_s=200.0)
    assert untouched.targets == {}
    assert fresh.running["chat"] == ClockHistory(1000, 200.0)
