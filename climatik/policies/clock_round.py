"""Clocks decided with the replicas, from one capping round's observation and plan.

`gpu_clock.clocks_under_cap` decides each target's clock from what the cap leaves for work; this
module feeds it what a capping round has: the measured scope and targets, the ceilings just
decided, the power model's demand envelopes, and per target what the GPU-tuning Jobs told (the
sweep of one of its nodes, the clock its nodes run). The live power-cap reconciler calls
`clocks_for_round`; the twin (`sim.clocks`) shares `dynamic_budget_w` and `spare_w`, so both
share the cap the same way. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from climatik.domain.capping import CapObservation, CappingState, CeilingPlan
from climatik.domain.gpu import ClockSample
from climatik.policies.gpu_clock import CLOCK_CHANGE_INTERVAL_S, ClockTarget, clocks_under_cap


@dataclass(frozen=True, slots=True)
class ClockProfile:
    """What the GPU-tuning Jobs told about one target's clocks."""

    samples: tuple[ClockSample, ...]
    """A sweep on one of its nodes: a replica at full load per clock."""
    tuned_mhz: int
    """That sweep's pick (`choose_gpu_clock`)."""
    current_mhz: int
    """The fastest clock its nodes run (a node untouched runs the sweep's top clock)."""

    @property
    def top_mhz(self) -> int:
        """The sweep's fastest clock: what a GPU runs before any lock."""
        return max(s.clock_mhz for s in self.samples)


@dataclass(frozen=True, slots=True)
class ClockHistory:
    """A target's clock and when it last changed: as its nodes run it (what the power
    measured follows), or as the power-cap reconciler last asked for it."""

    mhz: int
    changed_s: float


def dynamic_budget_w(
    usable_w: float, site_w: float, targets: Sequence[tuple[float, int]], idle_w: float
) -> float:
    """The dynamic watts the cap leaves for the targets' work: the usable cap less what the
    measurement holds that is not their work (idle draw of every node, anything untargeted).
    `targets` are each target's measured watts and running replicas."""
    dynamic_w = sum(max(0.0, watts - replicas * idle_w) for watts, replicas in targets)
    return usable_w - (site_w - dynamic_w)


def spare_w(usable_w: float, site_w: float, predicted_w: float | None) -> float | None:
    """What both the plan's prediction and the measurement leave under the usable cap: the
    only watts a faster clock may take (the ceilings spent the rest)."""
    return None if predicted_w is None else usable_w - max(predicted_w, site_w)


def clocks_for_round(
    observation: CapObservation,
    plan: CeilingPlan,
    state: CappingState,
    profiles: Mapping[str, ClockProfile],
    *,
    running: Mapping[str, ClockHistory],
    requested: Mapping[str, ClockHistory],
    idle_w: float | None,
    safety_margin_fraction: float,
    max_p99_token_latency_s: float | None,
    settle_s: float,
    change_interval_s: float = CLOCK_CHANGE_INTERVAL_S,
    now_s: float,
) -> dict[str, int]:
    """Each profiled target's clock for this round (`clocks_under_cap`); empty without a
    measurement, an idle draw or a profile. A target's clock is the one last `requested`
    (its nodes follow: a node swept later runs its own pick until locked), else its sweep's
    pick. It may not rise while its nodes run another, or changed less than `settle_s`
    ago (the power measured still mixes two clocks), and a request made less than
    `change_interval_s` ago holds."""
    if observation.measured_w is None or idle_w is None or not profiles:
        return {}
    profiled = [t for t in observation.targets if t.name in profiles]
    if len(profiled) < len(observation.targets) or any(t.watts is None for t in profiled):
        # Watts no profile or measurement accounts for would be spent twice.
        return {}
    headroom = [r.replica_headroom for r in observation.racks]
    free = None if not headroom or None in headroom else sum(h or 0 for h in headroom)
    usable_w = observation.cap_w * (1.0 - safety_margin_fraction)
    site_w = observation.measured_w
    ceilings = plan.ceilings

    def since(name: str, history: Mapping[str, ClockHistory]) -> float:
        seen = history.get(name)
        return now_s - seen.changed_s if seen is not None else float("inf")

    def current(name: str) -> int:
        # Before any request the sweeps' pick, or the clock its nodes run if slower (after a
        # restart, locks made before it: a rise from them must pass the spare-watt check).
        # Nodes not swept yet run their default, and holding that (the hysteresis) would undo
        # the tuning.
        asked = requested.get(name)
        profile = profiles[name]
        return asked.mhz if asked is not None else min(profile.tuned_mhz, profile.current_mhz)

    targets = []
    for t in profiled:
        profile = profiles[t.name]
        learner = state.targets.get(t.name)
        seats = (
            t.user_max_replicas
            if free is None
            else min(t.user_max_replicas, t.current_replicas + free)
        )
        targets.append(
            ClockTarget(
                name=t.name,
                samples=profile.samples,
                tuned_mhz=profile.tuned_mhz,
                current_mhz=current(t.name),
                demand_tokens_per_s=learner.demand_tokens_per_s if learner is not None else None,
                seats=seats,
                allowed_replicas=max(t.current_replicas, ceilings.get(t.name, 0)),
                priority=t.priority,
                max_p99_token_latency_s=max_p99_token_latency_s,
                settled=(
                    profile.current_mhz == current(t.name) and since(t.name, running) >= settle_s
                ),
                changeable=since(t.name, requested) >= change_interval_s,
            )
        )
    return clocks_under_cap(
        targets,
        dynamic_budget_w=dynamic_budget_w(
            usable_w, site_w, [(t.watts or 0.0, t.current_replicas) for t in profiled], idle_w
        ),
        idle_w=idle_w,
        spare_w=spare_w(usable_w, site_w, plan.predicted_w),
    )
