"""Deferrable work planned by carbon, at every control interval, for the policies that follow
carbon: the controller's own planner (`plan_deferrable_work`) on what the live controller can
know.

What it sees: the provider's forecast, modelled as the true series with an error that grows
with the lead time (`Carbon.forecast_error_fraction` at 24 h ahead, the square root of the lead
in between, the current slot exact), issued once a slot and the same for every policy; the
arrivals, inferred from measured served requests and the measured waiting queue (vLLM's
`num_requests_waiting`) per interval; a replica's throughput, learned from replicas that had
work waiting (the model's full-batch rate until then); the backlog's ages, from those arrivals
first in first out (`queued_by_arrival`). The expected arrival rate is the mean of the last
deadline's worth of arrivals. Every deadline is also cut at the run's end, as the carbon bound
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
    DeferrableTarget,
    plan_deferrable_work,
    queued_by_arrival,
    within_measured_power,
)
from climatik.sim.world import EPOCH, World

THROUGHPUT_LEARNING = 0.1
"""Weight of a new saturated sample in the learned throughput per replica."""
_FORECAST_STREAM = 6151


@dataclass(slots=True, eq=False)
class TargetMemory:
    """What the controller remembers of one deferrable target under one policy."""

    arrivals: dict[int, float] = field(default_factory=dict)
    """Requests that arrived per carbon slot (inferred from measurements)."""
    last_queue: float | None = None
    per_replica_rps: float | None = None
    plan: DeferrablePlan | None = None


@dataclass(slots=True, eq=False)
class Planner:
    """The forecasts issued so far and every (policy, target)'s memory."""

    forecasts: dict[int, tuple[CarbonReading, ...]] = field(default_factory=dict)
    memory: dict[tuple[int, int], TargetMemory] = field(default_factory=dict)


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
    memory = planner.memory.setdefault((p, j), TargetMemory())
    slot = min(int(now_s // slot_s), world.carbon_slots.size - 1)
    interval_s = sc.control_interval_s
    if have_data and math.isfinite(served_rps) and math.isfinite(waiting):
        previous = memory.last_queue if memory.last_queue is not None else 0.0
        arrived = max(0.0, served_rps * interval_s + waiting - previous)
        memory.arrivals[slot] = memory.arrivals.get(slot, 0.0) + arrived
        memory.last_queue = waiting
        if replicas > 0 and waiting >= replicas:
            sample = served_rps / replicas
            learned = memory.per_replica_rps
            memory.per_replica_rps = (
                sample if learned is None else learned + THROUGHPUT_LEARNING * (sample - learned)
            )
    deadline = timedelta(seconds=service.deadline_s)
    oldest = slot - math.ceil(service.deadline_s / slot_s)
    for old in [s for s in memory.arrivals if s < oldest]:
        del memory.arrivals[old]
    history = [
        (EPOCH + timedelta(seconds=s * slot_s), memory.arrivals[s]) for s in sorted(memory.arrivals)
    ]
    span_s = min(service.deadline_s, now_s - max(oldest, 0) * slot_s + 1e-9)
    expected_rps = sum(a for _, a in history) / max(span_s, interval_s)
    if slot not in planner.forecasts:
        planner.forecasts[slot] = forecast_from(world, slot)
    now = EPOCH + timedelta(seconds=now_s)
    target = DeferrableTarget(
        name=service.name,
        queued=queued_by_arrival(history, memory.last_queue or 0.0, deadline),
        arrivals_per_s=expected_rps,
        deadline=deadline,
        requests_per_replica_s=memory.per_replica_rps or nominal_rps,
        min_replicas=service.min_replicas,
        max_replicas=service.max_replicas,
        horizon_end=EPOCH + timedelta(seconds=world.steps * world.dt),
    )
    memory.plan = plan_deferrable_work(target, planner.forecasts[slot], now)
    return within_measured_power(
        memory.plan.ceiling,
        replicas=replicas,
        min_replicas=service.min_replicas,
        measured_w=measured_w,
        budget_w=budget_w,
        replica_w=replica_w,
    )


def deferrable_services(world: World) -> list[int]:
    """The services whose work the carbon-aware policies plan."""
    return [j for j, s in enumerate(world.scenario.services) if s.deferrable]
