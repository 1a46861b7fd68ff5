"""The twin's day of GPUs per replica chosen each hour, against every fixed size."""

from __future__ import annotations

from dataclasses import replace

from climatik.policies.gpus_per_replica import ModelProfile
from climatik.sim.replica_sizing import GPUS_PER_SERVER, SizingScenario, compare, run_day
from climatik.sim.scenario import Traffic

PROFILE = ModelProfile(idle_w_per_gpu=75.0 + 2200.0 / GPUS_PER_SERVER)


def _scenario(peak_rps: float, trough: float) -> SizingScenario:
    return SizingScenario(
        traffic=Traffic(peak_rps=peak_rps, trough_fraction=trough, bursts_per_day=0.0),
        profile=PROFILE,
    )


def test_a_day_whose_trough_and_peak_want_different_sizes_is_served_better_by_choosing() -> None:
    scenario = _scenario(2.0, 0.05)
    chosen, fixed = compare(scenario)
    assert chosen.sizes_used == (4, 8)
    assert chosen.slo_attainment >= scenario.slo.attainment
    for day in fixed:
        assert chosen.tokens_per_joule > day.tokens_per_joule, day.name
        assert chosen.tokens == day.tokens, "every way serves the same load"


def test_a_flat_load_that_one_size_serves_best_is_never_resized() -> None:
    scenario = _scenario(8.0, 1.0)
    chosen, fixed = compare(scenario)
    best = max(fixed, key=lambda r: r.tokens_per_joule)
    assert chosen.resizes == 0
    assert chosen.tokens_per_joule == best.tokens_per_joule


def test_a_resize_costs_the_new_replicas_start_up() -> None:
    scenario = _scenario(2.0, 0.05)
    free_start = replace(scenario, model=scenario.model.model_copy(update={"startup_s": 0.0}))
    paid, free = run_day(scenario, None), run_day(free_start, None)
    assert paid.resizes == free.resizes > 0
    assert paid.energy_j > free.energy_j
