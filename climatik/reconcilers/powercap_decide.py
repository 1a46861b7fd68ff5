"""The power-cap reconciler's policy step: one round's measurements become its ceilings.

Pure glue over the observation builder and the policy (no I/O): the reconciler calls it every
control interval, and a replay of a twin trace (`tests/integration/test_replay.py`) calls the
same function on readings taken from Prometheus at the trace's decision times, so what is
compared with the twin is the controller's own step, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from climatik.api.status_models import DeferrablePlanStatus
from climatik.domain.capping import CapObservation, CappingState, CeilingPlan
from climatik.domain.config import PowerCappingConfig
from climatik.policies.capping_spec import batch_can_yield, policy_settings
from climatik.policies.ceilings import decide_replica_ceilings
from climatik.policies.observations import (
    IdlePower,
    ceiling_settings,
    learn_idle_power,
    measured_watts_per_replica,
    observe_cap,
    observe_racks,
    track_free_nodes,
)
from climatik.reconcilers.powercap_measure import (
    Measured,
    RackRound,
    planned_max_replicas,
    target_observation,
)
from climatik.reconcilers.targets import ResolvedTarget


@dataclass(frozen=True, slots=True)
class CapRound:
    """What one round decided, and the learned state to carry to the next."""

    observation: CapObservation
    plan: CeilingPlan
    idle: IdlePower


def decide_round(
    config: PowerCappingConfig,
    key: str,
    targets: Sequence[ResolvedTarget],
    measured: Measured,
    racks: RackRound,
    *,
    cap_w: float,
    state: CappingState,
    idle: IdlePower,
    learning: bool,
    plans: Sequence[DeferrablePlanStatus] | None,
    wall_now: datetime,
    now_s: float,
    seats: Mapping[str, int] | None = None,
) -> CapRound:
    """Learn the idle draw from this round's idle nodes, build the observation and decide.

    `learning=False` (just after GPU clocks changed) holds every target like missing data.
    `seats` are, per rack, the replicas of the targets' footprint (VPA's recommendation) its
    nodes can still take (`fewest_seats`); a rack's headroom counts them, not its free nodes."""
    idle = learn_idle_power(track_free_nodes(idle, racks.free_nodes), racks.idle_node_watts)
    observed = [
        target_observation(
            t,
            measured.per_target.get(t.key) if learning else None,
            planned_max_replicas(plans, str(t.kind), t.name, wall_now)
            if t.deadline_s is not None
            else None,
        )
        for t in targets
    ]
    observation = observe_cap(
        scope=key,
        base_cap_w=config.power_cap_w,
        cap_w=cap_w,
        measured_w=measured.scope_w,
        targets=observed,
        racks=observe_racks(
            [replace(r, seats=(seats or {}).get(r.rack_id)) for r in racks.readings],
            per_replica_w=measured_watts_per_replica(observed),
            idle_w=idle.watts,
        ),
        per_target_budget=batch_can_yield(config, (t.deferrable for t in targets)),
    )
    # Idle nodes are inside the measurement only when the config's own query measures
    # the scope (node-level power); per-pod sums leave them out.
    settings = ceiling_settings(
        policy_settings(config), idle, scope_measures_nodes=bool(config.metrics)
    )
    plan = decide_replica_ceilings(observation, settings, state, now_s)
    return CapRound(observation, plan, idle)
