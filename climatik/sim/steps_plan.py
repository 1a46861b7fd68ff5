"""Deferrable work planned by carbon, at every control interval, for the policies that follow
carbon: the controller's own planner (`plan_deferrable_work`) on what the live controller can
know.

What it sees: the provider's forecast, modelled as the true series with an error that grows
with the lead time (`Carbon.forecast_error_fraction` at 24 h ahead, the square root of the lead
in between, the current slot exact), issued once a slot and the same for every policy; the
arrivals, inferred from measured served requests and the measured waiting queue (vLLM's
`num_requests_waiting`) per interval; a replica's throughput, learned from replicas that had
work waiting (the model's full-batch rate until then); the backlog's ages, from those arrivals
first in first out. That is the live carbon controller's `DeferrableTracker`, fed the twin's
measurements, with arrivals kept per carbon slot. The expected arrival rate is the mean of the
last deadline's worth of arrivals. Every deadline is also cut at the run's end, as the carbon bound
cuts it: work the run cannot see finish is not planned past it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from climatik.domain.carbon import CarbonReading
from climatik.policies.deferrable import (
    DeferrablePlan,
    admitted_replicas,
    plan_deferrable_work,
    within_admitted,
)
from climatik.policies.deferrable_tracking import DeferrableReading, DeferrableTracker
from climatik.sim.world import EPOCH, World

_FORECAST_STREAM = 6151


@dataclass(slots=True, eq=False)
class Planner:
    """The forecasts issued so far and every (policy, target)'s tracker and last plan."""

    forecasts: dict[int, tuple[CarbonReading, ...]] = field(default_factory=dict)
    trackers: dict[tuple[int, int], DeferrableTracker] = field(default_factory=dict)
    plans: dict[tuple[int, int], DeferrablePlan] = field(default_factory=dict)


def forecast_from(world: World, issued: int) -> tuple[CarbonReading, ...]:
    """The provider's forecast issued at the start of carbon slot `issued`, to the run's end."""
    sc = world.scenario
    slot_s = sc.carbon.slot_s
    series = world.carbon_slots[issued:]
    lead_h = np.arange(series.size) * slot_s / 3600.0
    rng = np.random.default_rng([sc.seed, _FORECAST_STREAM, issued])
    sigma = sc.carbon.forecast_error_fraction * np.sqrt(np.minimum(1.0, lead_h / 24.0))
    values = np.maximum(0.0, series * (1.0 + sigma * rng.standard_normal(series.size)))
    start = EPOCH + timedelta(seconds=issued * slot_s)
    step = timedelta(seconds=slot_s)
    return tuple(
        CarbonReading(float(v), start + i * step, start + (i + 1) * step, is_forecast=i > 0)
        for i, v in enumerate(values)
    )


def plan_ceiling(
    world: World,
    planner: Planner,
    *,
    p: int,
    j: int,
    now_s: float,
    have_data: bool,
    served_rps: float,
    waiting: float,
    replicas: int,
    nominal_rps: float,
    measured_w: float | None,
    budget_w: float,
    replica_w: float | None,
) -> int:
    """Policy p's ceiling for deferrable service j now, from its plan (kept on the planner)."""
    sc = world.scenario
    service = sc.services[j]
    slot_s = sc.carbon.slot_s
    slot = min(int(now_s // slot_s), world.carbon_slots.size - 1)
    deadline = timedelta(seconds=service.deadline_s)
    tracker = planner.trackers.setdefault(
        (p, j), DeferrableTracker(deadline, bucket=timedelta(seconds=slot_s))
    )
    now = EPOCH + timedelta(seconds=now_s)
    if have_data and math.isfinite(served_rps) and math.isfinite(waiting):
        slot_start = EPOCH + timedelta(seconds=slot * slot_s)
        tracker.observe(DeferrableReading(now, slot_start, served_rps, waiting, replicas))
    admitted = admitted_replicas(
        service.max_replicas,
        replicas=replicas,
        min_replicas=service.min_replicas,
        measured_w=measured_w,
        budget_w=budget_w,
        replica_w=replica_w,
    )
    tracker.learn_admitted(now, admitted)
    if slot not in planner.forecasts:
        planner.forecasts[slot] = forecast_from(world, slot)
    target = tracker.target(
        service.name,
        min_replicas=service.min_replicas,
        max_replicas=service.max_replicas,
        nominal_per_replica_rps=nominal_rps,
        horizon_end=EPOCH + timedelta(seconds=world.steps * world.dt),
    )
    if target is None:  # no reading yet: the user's maximum, as the live controller
        return service.max_replicas
    plan = planner.plans[p, j] = plan_deferrable_work(target, planner.forecasts[slot], now)
    return within_admitted(plan.ceiling, admitted)


def deferrable_services(world: World) -> list[int]:
    """The services whose work the carbon-aware policies plan."""
    return [j for j, s in enumerate(world.scenario.services) if s.deferrable]
