"""Deferrable work with a deadline, planned by the carbon reconciler into clean slots.

A target annotated `climatik-project.ai/deferrable: "24h"` has every request due 24 h after it
arrives. The power-cap reconciler measures it (vLLM's waiting requests and finished requests per
second, through the config's power and tokens sources) and writes that, with its replicas, its
minimum, its user's maximum and its deadline, into `status.targets`. Here, at every plan round,
those readings feed the target's `DeferrableTracker` (arrivals, throughput, done work, deadline
misses), and `plan_deferrable_work` plans its work into the provider's forecast: the ceiling it
sets now goes into `status.deferrablePlans`, which the power-cap reconciler enforces as the
target's maximum (raised up to the user's own in clean slots, lowered in dirty ones, the user's
maximum when behind plan or when the plan goes stale), raised no faster than the measured power
leaves room for (`within_measured_power`). What that room is at each hour of the day is
learned too, so the plan counts on the replicas a slot has been able to give rather than the
maximum. The same path as the carbon cap: status written here, ceilings written there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from climatik.api.status_models import DeferrablePlanStatus, TargetKindName, TargetStatus
from climatik.domain.carbon import CarbonReading
from climatik.policies.deferrable import (
    admitted_replicas,
    plan_deferrable_work,
    within_admitted,
)
from climatik.policies.deferrable_tracking import DeferrableReading, DeferrableTracker


@dataclass(frozen=True, slots=True)
class PowerRoom:
    """The scope's measured power and what planned work may use of the cap."""

    measured_w: float | None
    budget_w: float


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    """One target's plan this round, as written and as said."""

    status: DeferrablePlanStatus
    new_misses: float
    """Deadline misses counted this round."""
    reason: str


@dataclass(slots=True)
class DeferrablePlanning:
    """The trackers of one config's deferrable targets, kept between rounds."""

    trackers: dict[tuple[str, str], DeferrableTracker] = field(default_factory=dict)

    def plan(
        self,
        targets: Sequence[TargetStatus],
        forecast: Sequence[CarbonReading],
        *,
        now: datetime,
        slot_start: datetime,
        valid_until: datetime,
        power: PowerRoom,
    ) -> list[PlannedTarget]:
        """Observe and plan every target with a deadline; forget the others."""
        planned: list[PlannedTarget] = []
        seen: set[tuple[str, str]] = set()
        for target in targets:
            if target.deadline_seconds is None:
                continue
            key = (str(target.kind), target.name)
            seen.add(key)
            deadline = timedelta(seconds=target.deadline_seconds)
            tracker = self.trackers.get(key)
            if tracker is None or tracker.deadline != deadline:
                tracker = self.trackers[key] = DeferrableTracker(deadline)
            reading = _reading(target, now, slot_start)
            new_misses = tracker.observe(reading) if reading is not None else 0.0
            planned.append(
                _plan_one(
                    target,
                    tracker,
                    forecast,
                    now=now,
                    valid_until=valid_until,
                    new_misses=new_misses,
                    power=power,
                )
            )
        for gone in self.trackers.keys() - seen:
            del self.trackers[gone]
        return planned


def _reading(target: TargetStatus, now: datetime, slot_start: datetime) -> DeferrableReading | None:
    """What the power-cap reconciler measured of the target; None while it measures nothing."""
    waiting, finished = target.waiting_requests, target.finished_requests_per_second
    if waiting is None or finished is None:
        return None
    return DeferrableReading(now, slot_start, finished, waiting, target.current_replicas or 0)


def _plan_one(
    target: TargetStatus,
    tracker: DeferrableTracker,
    forecast: Sequence[CarbonReading],
    *,
    now: datetime,
    valid_until: datetime,
    new_misses: float,
    power: PowerRoom,
) -> PlannedTarget:
    top = target.user_max_replicas or 0
    floor = target.min_replicas or 0
    admitted = admitted_replicas(
        top,
        replicas=target.current_replicas or 0,
        min_replicas=floor,
        measured_w=power.measured_w,
        budget_w=power.budget_w,
        replica_w=target.watts_per_replica,
    )
    tracker.learn_admitted(now, admitted)
    view = tracker.target(target.name, min_replicas=floor, max_replicas=top)
    if view is None:
        ceiling, behind, backlog, planned_now = top, False, target.waiting_requests or 0.0, 0.0
        reason = "no throughput measured yet: the user's maximum"
    else:
        plan = plan_deferrable_work(view, forecast, now)
        ceiling, behind, backlog, planned_now = (
            plan.ceiling,
            plan.behind,
            plan.backlog,
            plan.planned_now,
        )
        reason = plan.reason
    ceiling = within_admitted(ceiling, admitted)
    status = DeferrablePlanStatus(
        kind=TargetKindName(str(target.kind)),
        name=target.name,
        planned_max_replicas=ceiling,
        valid_until=valid_until,
        backlog_requests=round(max(0.0, backlog), 1),
        planned_requests=round(max(0.0, planned_now), 1),
        done_requests=round(tracker.done, 1),
        deadline_misses=round(tracker.misses, 1),
        behind=behind,
    )
    return PlannedTarget(status, new_misses, reason)


def summary(planned: Sequence[PlannedTarget]) -> str:
    """The plan against what is done, for the `CarbonAvailable` message."""
    parts = []
    for p in planned:
        s = p.status
        part = (
            f"{s.name}: {s.done_requests:.0f} of {s.planned_requests:.0f} requests planned this "
            f"slot done, {s.backlog_requests:.0f} waiting, {s.deadline_misses:.0f} deadline "
            f"misses, ceiling {s.planned_max_replicas}"
        )
        if s.behind:
            part += " (behind plan: running regardless of carbon)"
        parts.append(part)
    return "deferrable work planned into clean slots: " + "; ".join(parts)
