"""Clocks decided with the replicas under a binding cap (`clocks_under_cap`), and the power
model following a clock change (`clock_change_ratios`, `rescale_for_clock`)."""

from __future__ import annotations

import pytest

from climatik.domain.capping import CappingState, TargetLearnerState
from climatik.domain.gpu import ClockSample
from climatik.policies.gpu_clock import ClockTarget, clock_change_ratios, clocks_under_cap
from climatik.policies.power_model import rescale_for_clock

IDLE_W = 1000.0
# Per replica at full load: dynamic joules per token 1.0, 1.4 and 2.0 (watts over the 1 kW idle
# draw / tokens per second); the tuner's pick is 1500 MHz.
SWEEP = (
    ClockSample(clock_mhz=1000, tokens_per_s=800.0, watts=1800.0, p99_token_latency_s=0.05),
    ClockSample(clock_mhz=1500, tokens_per_s=1000.0, watts=2400.0, p99_token_latency_s=0.04),
    ClockSample(clock_mhz=2000, tokens_per_s=1100.0, watts=3200.0, p99_token_latency_s=0.03),
)


def target(
    name: str = "chat",
    *,
    demand: float | None = 2000.0,
    seats: int = 4,
    current: int = 1500,
    allowed: int = 4,
    priority: int = 0,
    latency_s: float | None = None,
    settled: bool = True,
    changeable: bool = True,
) -> ClockTarget:
    return ClockTarget(
        name=name,
        samples=SWEEP,
        tuned_mhz=1500,
        current_mhz=current,
        demand_tokens_per_s=demand,
        seats=seats,
        allowed_replicas=allowed,
        priority=priority,
        max_p99_token_latency_s=latency_s,
        settled=settled,
        changeable=changeable,
    )


def test_a_cap_with_room_keeps_the_tuned_clock() -> None:
    # 2,000 tokens/s at 1.4 J each: 2.8 kW of 10 kW.
    assert clocks_under_cap([target()], dynamic_budget_w=10_000.0, idle_w=IDLE_W) == {"chat": 1500}


def test_a_binding_cap_takes_the_clock_that_serves_the_most() -> None:
    # 3 kW: 2,143 tokens/s at 1500 MHz, all 3,000 at 1000 MHz (four replicas hold 3,200).
    picks = clocks_under_cap([target(demand=3000.0)], dynamic_budget_w=3000.0, idle_w=IDLE_W)
    assert picks == {"chat": 1000}


def test_a_slower_clock_must_still_fit_in_the_seats() -> None:
    # Two seats hold 1,600 tokens/s at 1000 MHz but 2,000 at 1500: 3 kW buys 2,000 at 1500.
    picks = clocks_under_cap(
        [target(demand=3000.0, seats=2)], dynamic_budget_w=3000.0, idle_w=IDLE_W
    )
    assert picks == {"chat": 1500}


def test_the_higher_tier_keeps_its_clock_and_the_lower_one_slows() -> None:
    # Premium's 1,500 tokens/s take 2.1 kW at its tuned clock; bulk gets the 0.9 kW left,
    # which serve more of its tokens at 1000 MHz.
    picks = clocks_under_cap(
        [target("bulk", demand=3000.0), target("premium", demand=1500.0, priority=2)],
        dynamic_budget_w=3000.0,
        idle_w=IDLE_W,
    )
    assert picks == {"premium": 1500, "bulk": 1000}


def test_a_clock_beyond_the_latency_bound_is_not_taken() -> None:
    picks = clocks_under_cap(
        [target(demand=3000.0, latency_s=0.045)], dynamic_budget_w=3000.0, idle_w=IDLE_W
    )
    assert picks == {"chat": 1500}


def test_a_lowered_clock_stays_while_its_seats_keep_up() -> None:
    # 2,000 tokens/s: four replicas at 1000 MHz hold 3,200, so the cheaper clock stays.
    slow = target(current=1000)
    assert clocks_under_cap([slow], dynamic_budget_w=10_000.0, idle_w=IDLE_W) == {"chat": 1000}


def test_a_clock_rises_only_into_the_spare_watts_and_once_settled() -> None:
    # 3,500 tokens/s: 3,200 at 1000 MHz, all at 1500 MHz. The four replicas its ceiling
    # allows, saturated, draw 3.2 kW at 1000 MHz and 5.6 kW at 1500: 2.4 kW more.
    slow = target(current=1000, demand=3500.0)

    def picks(one: ClockTarget, spare_w: float) -> dict[str, int]:
        return clocks_under_cap([one], dynamic_budget_w=10_000.0, idle_w=IDLE_W, spare_w=spare_w)

    assert picks(slow, 2300.0) == {"chat": 1000}
    assert picks(slow, 2500.0) == {"chat": 1500}
    assert picks(target(current=1000, demand=3500.0, settled=False), 2500.0) == {"chat": 1000}


def test_boost_above_tuned_only_when_asked_and_at_the_users_maximum() -> None:
    # Four seats saturated at 1500 MHz (4,000 of 5,000 tokens/s); 2000 MHz serves 4,400.
    full = target(demand=5000.0)
    assert clocks_under_cap([full], dynamic_budget_w=20_000.0, idle_w=IDLE_W) == {"chat": 1500}
    assert clocks_under_cap([full], dynamic_budget_w=20_000.0, idle_w=IDLE_W, boost=True) == {
        "chat": 2000
    }
    held = target(demand=5000.0, allowed=3)
    assert clocks_under_cap([held], dynamic_budget_w=20_000.0, idle_w=IDLE_W, boost=True) == {
        "chat": 1500
    }


def test_a_clock_changed_lately_holds_and_its_watts_are_spent_first() -> None:
    # The cap binds as in `test_a_binding_cap_takes_the_clock_that_serves_the_most`, but the
    # clock changed lately: it holds.
    held = target(demand=3000.0, changeable=False)
    assert clocks_under_cap([held], dynamic_budget_w=3000.0, idle_w=IDLE_W) == {"chat": 1500}
    # Premium holds 2000 MHz, where its 1,000 tokens/s take 2 kW (2 J each): bulk's 1,500
    # tokens/s get the 1 kW left, which serve the most of them at 1000 MHz.
    premium = target("premium", demand=1000.0, current=2000, priority=2, changeable=False)
    picks = clocks_under_cap(
        [premium, target("bulk", demand=1500.0)], dynamic_budget_w=3000.0, idle_w=IDLE_W
    )
    assert picks == {"premium": 2000, "bulk": 1000}
    # Without a budget a held clock is still held, where others go back to their tuned one.
    slow = target(current=1000, demand=None, changeable=False)
    assert clocks_under_cap([slow], dynamic_budget_w=None, idle_w=IDLE_W) == {"chat": 1000}


def test_without_a_demand_or_idle_draw_every_clock_stays_as_it_is() -> None:
    # Going back to the tuned clock here would raise a lowered one with no spare-watt check.
    slow = target(current=1000, demand=None)
    assert clocks_under_cap([slow], dynamic_budget_w=100.0, idle_w=IDLE_W) == {"chat": 1000}
    assert clocks_under_cap([target()], dynamic_budget_w=100.0, idle_w=None) == {"chat": 1500}
    assert clocks_under_cap([slow], dynamic_budget_w=None, idle_w=IDLE_W) == {"chat": 1000}


def test_clock_change_ratios_come_from_the_sweep() -> None:
    ratios = clock_change_ratios(SWEEP, 1500, 1000, IDLE_W)
    assert ratios == pytest.approx((1.0 / 1.4, 0.8, 1800.0 / 2400.0))
    assert clock_change_ratios(SWEEP, 1500, 1234, IDLE_W) is None


def test_rescale_for_clock_scales_what_was_measured_and_skips_the_next_round() -> None:
    learner = TargetLearnerState(
        watts_per_replica=2400.0,
        joules_per_token=1.4,
        tokens_per_replica=1000.0,
        demand_tokens_per_s=2000.0,
        replicas_seen=4,
    )
    state = CappingState(targets={"chat": learner})
    after = rescale_for_clock(state, "chat", 0.5, 0.8, 0.75).targets["chat"]
    assert after.joules_per_token == pytest.approx(0.7)
    assert after.tokens_per_replica == pytest.approx(800.0)
    assert after.watts_per_replica == pytest.approx(1800.0)
    assert after.demand_tokens_per_s == 2000.0
    assert after.replicas_seen is None
    assert rescale_for_clock(state, "other", 0.5, 0.8, 0.75) is state
