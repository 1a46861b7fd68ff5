"""The carbon policy: hand-computed cases and its invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.domain.carbon import (
    CarbonReading,
    EmissionRateTarget,
    IntensityBandTarget,
)
from climatik.policies.carbon import (
    cap_for_carbon,
    cap_within_budget,
    caps_with_carbon,
    emissions_g,
    plan_carbon_budget,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SLOT = timedelta(minutes=30)


def reading(intensity: float, slot: int = 0) -> CarbonReading:
    return CarbonReading(intensity, T0 + slot * SLOT, T0 + (slot + 1) * SLOT)


def test_emission_rate_target_divides_by_intensity_and_pue() -> None:
    # 2000 g/h at 250 g/kWh and PUE 1.25 allows 2000 / (250 * 1.25) kW = 6.4 kW.
    cap = cap_for_carbon(reading(250), 10_000, 1_000, EmissionRateTarget(2000, pue=1.25))
    assert cap.cap_w == pytest.approx(6400)
    assert "carbon cap" in cap.reason


def test_emission_rate_target_is_clamped_to_floor_and_base() -> None:
    target = EmissionRateTarget(2000)
    assert cap_for_carbon(reading(10), 10_000, 1_000, target).cap_w == 10_000
    assert cap_for_carbon(reading(5_000), 10_000, 1_000, target).cap_w == 1_000
    assert cap_for_carbon(reading(0), 10_000, 1_000, target).cap_w == 10_000


def test_band_is_linear_between_clean_and_dirty() -> None:
    band = IntensityBandTarget(100, 300)
    assert cap_for_carbon(reading(100), 10_000, 2_000, band).cap_w == 10_000
    assert cap_for_carbon(reading(200), 10_000, 2_000, band).cap_w == pytest.approx(6_000)
    assert cap_for_carbon(reading(300), 10_000, 2_000, band).cap_w == 2_000
    assert cap_for_carbon(reading(900), 10_000, 2_000, band).cap_w == 2_000


def test_band_refuses_clean_above_dirty() -> None:
    with pytest.raises(ValueError, match="must be below dirty"):
        IntensityBandTarget(300, 100)


def test_reading_refuses_nan_and_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        reading(float("nan"))
    with pytest.raises(ValueError, match="non-negative"):
        reading(-1)


def test_emissions_of_a_constant_load() -> None:
    # 1 kW for 2 h at 200 g/kWh with PUE 1.5 emits 1 * 2 * 1.5 * 200 = 600 g.
    assert emissions_g(1000, 200, 7200, pue=1.5) == pytest.approx(600)


def test_budget_goes_to_the_cleanest_slots_first() -> None:
    forecast = [reading(300, 0), reading(100, 1), reading(200, 2)]
    # Floor 0 W; each half-hour at 1000 W costs 0.5 kWh * intensity: 150, 50, 100 g.
    plan = plan_carbon_budget(forecast, base_cap_w=1000, floor_w=0, remaining_budget_g=100)
    assert plan.slot_caps_w == pytest.approx((0, 1000, 500))
    assert plan.planned_emissions_g == pytest.approx(100)


def test_budget_below_the_floor_keeps_the_floor() -> None:
    forecast = [reading(300, 0), reading(100, 1)]
    plan = plan_carbon_budget(forecast, base_cap_w=1000, floor_w=200, remaining_budget_g=0)
    assert plan.slot_caps_w == (200, 200)


def test_cap_within_budget_uses_the_slot_covering_now() -> None:
    forecast = [reading(300, 0), reading(100, 1)]
    cap = cap_within_budget(
        forecast, T0 + timedelta(minutes=5), base_cap_w=1000, floor_w=0, remaining_budget_g=50
    )
    assert cap.cap_w == 0  # 50 g buys the clean slot, not this dirty one
    later = cap_within_budget(
        forecast, T0 + SLOT, base_cap_w=1000, floor_w=0, remaining_budget_g=50
    )
    assert later.cap_w == pytest.approx(1000)


def test_cap_within_budget_without_a_covering_slot_falls_to_the_floor() -> None:
    cap = cap_within_budget(
        [reading(100, 4)], T0, base_cap_w=1000, floor_w=300, remaining_budget_g=1e9
    )
    assert cap.cap_w == 300


intensities = st.floats(min_value=0, max_value=2_000, allow_nan=False)
targets = st.one_of(
    st.builds(
        EmissionRateTarget,
        st.floats(min_value=1, max_value=1e6),
        st.floats(min_value=1.0, max_value=3.0),
    ),
    st.tuples(st.floats(0, 500), st.floats(1, 1_000)).map(
        lambda pair: IntensityBandTarget(pair[0], pair[0] + pair[1])
    ),
)
caps = st.tuples(st.floats(1, 1e6), st.floats(0, 1)).map(lambda p: (p[0], p[0] * p[1]))


@given(intensities, intensities, targets, caps)
def test_a_dirtier_grid_never_raises_the_cap(
    low: float,
    high: float,
    target: EmissionRateTarget | IntensityBandTarget,
    cap: tuple[float, float],
) -> None:
    low, high = sorted((low, high))
    base_w, floor_w = cap
    clean_cap = cap_for_carbon(reading(low), base_w, floor_w, target).cap_w
    dirty_cap = cap_for_carbon(reading(high), base_w, floor_w, target).cap_w
    assert dirty_cap <= clean_cap + 1e-9 * base_w
    assert floor_w - 1e-9 <= dirty_cap <= base_w
    assert floor_w - 1e-9 <= clean_cap <= base_w


@given(
    st.lists(intensities, min_size=1, max_size=48),
    st.floats(0, 1e5),
    caps,
    intensities,
)
def test_budget_plan_stays_in_bounds_and_budget_and_is_monotone(
    forecast_values: list[float],
    budget_g: float,
    cap: tuple[float, float],
    dirtier_now: float,
) -> None:
    base_w, floor_w = cap
    forecast = [reading(v, i) for i, v in enumerate(forecast_values)]
    plan = plan_carbon_budget(
        forecast, base_cap_w=base_w, floor_w=floor_w, remaining_budget_g=budget_g
    )
    floor_cost = sum(emissions_g(floor_w, r.intensity_g_per_kwh, 1800) for r in forecast)
    assert plan.planned_emissions_g <= max(budget_g, floor_cost) * (1 + 1e-9) + 1e-6
    assert all(floor_w - 1e-9 <= c <= base_w * (1 + 1e-12) for c in plan.slot_caps_w)
    # A dirtier current slot never earns a higher cap for that slot.
    if dirtier_now >= forecast_values[0]:
        worse = [reading(dirtier_now, 0), *forecast[1:]]
        worse_plan = plan_carbon_budget(
            worse, base_cap_w=base_w, floor_w=floor_w, remaining_budget_g=budget_g
        )
        assert worse_plan.slot_caps_w[0] <= plan.slot_caps_w[0] + 1e-6 * base_w


@given(
    base=st.floats(1_000.0, 1e6),
    share=st.floats(0.0, 2.0),
    any_deferrable=st.booleans(),
)
def test_a_carbon_cap_binds_batch_work_when_there_is_some_else_everything(
    base: float, share: float, any_deferrable: bool
) -> None:
    carbon = max(1.0, base * share)
    cap_w, deferrable_cap_w = caps_with_carbon(base, carbon, any_deferrable=any_deferrable)
    if any_deferrable:
        assert cap_w == base
        assert deferrable_cap_w is None or deferrable_cap_w == min(carbon, base) < base
    else:
        assert cap_w == min(carbon, base)
        assert deferrable_cap_w is None
