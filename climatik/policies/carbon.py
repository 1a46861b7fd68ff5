"""Carbon-aware caps: how much power a service may draw given the grid's carbon intensity.

Every function here is pure and monotone: a dirtier grid never yields a higher cap, and the cap
always stays within `[floor_w, base_cap_w]`, where `base_cap_w` is the user's `powerCapLimit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from climatik.domain.carbon import (
    CarbonCap,
    CarbonReading,
    CarbonTarget,
    EmissionRateTarget,
    IntensityBandTarget,
)

_SECONDS_PER_HOUR = 3600.0
_WATTS_PER_KW = 1000.0


def emissions_g(
    power_w: float, intensity_g_per_kwh: float, seconds: float, pue: float = 1.0
) -> float:
    """Grams of CO2 emitted by `power_w` of IT load for `seconds` (location based, x PUE)."""
    energy_kwh = power_w * pue * seconds / _SECONDS_PER_HOUR / _WATTS_PER_KW
    return energy_kwh * intensity_g_per_kwh


def cap_for_carbon(
    reading: CarbonReading,
    base_cap_w: float,
    floor_w: float,
    target: CarbonTarget,
) -> CarbonCap:
    """The effective cap for the grid intensity in `reading`, clamped to [floor, base cap]."""
    floor_w = min(floor_w, base_cap_w)
    intensity = reading.intensity_g_per_kwh
    match target:
        case EmissionRateTarget(grams_per_hour=rate, pue=pue):
            # A carbon-free grid leaves nothing to limit.
            wanted_w = base_cap_w if intensity <= 0 else rate * _WATTS_PER_KW / (intensity * pue)
            why = f"{rate:g} gCO2/h at {intensity:g} g/kWh and PUE {pue:g}"
        case IntensityBandTarget(clean_g_per_kwh=clean, dirty_g_per_kwh=dirty):
            dirtiness = min(1.0, max(0.0, (intensity - clean) / (dirty - clean)))
            wanted_w = base_cap_w - dirtiness * (base_cap_w - floor_w)
            why = f"{intensity:g} g/kWh is {dirtiness:.0%} of the way from {clean:g} to {dirty:g}"
    cap_w = min(base_cap_w, max(floor_w, wanted_w))
    if cap_w >= base_cap_w:
        bound = "full cap"
    elif cap_w <= floor_w:
        bound = "floor"
    else:
        bound = "carbon cap"
    return CarbonCap(cap_w=cap_w, reason=f"{bound} {cap_w:.0f} W: {why}")


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """Caps for the remaining slots of a carbon budget, in the forecast's order."""

    slot_caps_w: tuple[float, ...]
    planned_emissions_g: float


def plan_carbon_budget(
    forecast: Sequence[CarbonReading],
    *,
    base_cap_w: float,
    floor_w: float,
    remaining_budget_g: float,
    pue: float = 1.0,
) -> BudgetPlan:
    """Spend a carbon budget on the cleanest slots first.

    Every slot keeps at least `floor_w` (serving never stops for carbon); the budget left over
    buys watts above the floor slot by slot from the cleanest to the dirtiest. This is the
    fractional knapsack optimum: it maximises energy (and so work) for the emissions allowed.
    """
    floor_w = min(floor_w, base_cap_w)
    hours = [(r.slot_end - r.slot_start).total_seconds() / _SECONDS_PER_HOUR for r in forecast]
    # Grams per watt held for the whole slot.
    cost_g_per_w = [
        r.intensity_g_per_kwh * pue * h / _WATTS_PER_KW
        for r, h in zip(forecast, hours, strict=True)
    ]
    caps = [floor_w] * len(forecast)
    spent = sum(floor_w * c for c in cost_g_per_w)
    left = remaining_budget_g - spent
    for index in sorted(range(len(forecast)), key=lambda i: (cost_g_per_w[i], i)):
        if left <= 0:
            break
        room_w = base_cap_w - floor_w
        cost = cost_g_per_w[index]
        extra_w = room_w if cost <= 0 else min(room_w, left / cost)
        caps[index] += extra_w
        left -= extra_w * cost
        spent += extra_w * cost
    return BudgetPlan(slot_caps_w=tuple(caps), planned_emissions_g=spent)


def cap_within_budget(
    forecast: Sequence[CarbonReading],
    now: datetime,
    *,
    base_cap_w: float,
    floor_w: float,
    remaining_budget_g: float,
    pue: float = 1.0,
) -> CarbonCap:
    """The cap for the slot covering `now` under a budget plan over the forecast from now on."""
    upcoming = [r for r in forecast if r.slot_end > now]
    if not upcoming or not upcoming[0].covers(now):
        return CarbonCap(cap_w=min(floor_w, base_cap_w), reason="no forecast covers now: floor")
    plan = plan_carbon_budget(
        upcoming,
        base_cap_w=base_cap_w,
        floor_w=floor_w,
        remaining_budget_g=remaining_budget_g,
        pue=pue,
    )
    cap_w = plan.slot_caps_w[0]
    return CarbonCap(
        cap_w=cap_w,
        reason=(
            f"budget plan: {cap_w:.0f} W now at {upcoming[0].intensity_g_per_kwh:g} g/kWh, "
            f"{remaining_budget_g:.0f} g left over {len(upcoming)} slots"
        ),
    )


def caps_with_carbon(
    base_cap_w: float, carbon_cap_w: float, *, any_deferrable: bool
) -> tuple[float, float | None]:
    """Where a carbon cap binds: `(cap_w, deferrable_cap_w)` for a `CapObservation`.

    When some targets' work can wait (batch), the carbon cap holds back only them and the
    others keep the full cap: a dirty grid delays batch work instead of failing interactive
    requests. When none can wait, the carbon cap is the cap of the whole scope.
    """
    carbon_cap_w = min(carbon_cap_w, base_cap_w)
    if not any_deferrable:
        return carbon_cap_w, None
    return base_cap_w, (carbon_cap_w if carbon_cap_w < base_cap_w else None)
