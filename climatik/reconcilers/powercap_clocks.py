"""The power-cap reconciler's side of clocks decided with the replicas (`clocksUnderCap`).

Each round it reads the targets' clock profiles off the `ClockBoard` (the GPU-tuning
reconciler posts them from the tuning Jobs' results), folds every clock change the nodes show
into the power model (what it learned at the old clock times the sweep's ratios, as the twin
does when it sets a clock), decides each target's clock with the round's ceilings
(`clock_round.clocks_for_round`) and posts the requests back for the lock Jobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from climatik.domain.capping import CappingState
from climatik.domain.config import PowerCappingConfig
from climatik.policies.capping_spec import policy_settings
from climatik.policies.ceiling_settings import HeadroomSettings
from climatik.policies.clock_round import ClockHistory, ClockProfile, clocks_for_round
from climatik.policies.gpu_clock import clock_change_ratios
from climatik.policies.power_model import rescale_for_clock
from climatik.reconcilers.powercap_decide import CapRound

log = structlog.get_logger(__name__)


@dataclass
class ClockMemory:
    """Per config, what the reconciler remembers of its targets' clocks."""

    running: dict[str, ClockHistory] = field(default_factory=dict)
    """Each target's clock as its nodes run it, and when that changed."""
    requested: dict[str, ClockHistory] = field(default_factory=dict)
    """Each target's clock as last asked for, and when the request changed."""


def follow_clock_changes(
    memory: ClockMemory,
    state: CappingState,
    profiles: Mapping[str, ClockProfile],
    *,
    idle_w: float | None,
    now_s: float,
) -> CappingState:
    """The power model after the clock changes the profiles show since the last round.

    A target seen for the first time is taken as learned at the clock its nodes run now: after a
    restart, or with the option switched on for a config whose tuning results already rescaled
    the model, rescaling it again from the top clock would under-charge it (2.4 kW a replica
    became 1.8 in review). Where the model did learn at the top clock it over-charges until it
    relearns: the safe side."""
    for name, profile in profiles.items():
        seen = memory.running.get(name)
        if seen is None:
            memory.running[name] = ClockHistory(profile.current_mhz, -math.inf)
            continue
        before = seen.mhz
        if before == profile.current_mhz:
            continue
        ratios = clock_change_ratios(profile.samples, before, profile.current_mhz, idle_w or 0.0)
        learned = name in state.targets
        if learned and ratios is not None:
            state = rescale_for_clock(state, name, *ratios)
        memory.running[name] = ClockHistory(profile.current_mhz, now_s)
        log.info(
            "gpu_clock_changed",
            target=name,
            before_mhz=before,
            mhz=profile.current_mhz,
            rescaled=learned and ratios is not None,
        )
    return state


def request_clocks(
    memory: ClockMemory,
    config: PowerCappingConfig,
    decided: CapRound,
    profiles: Mapping[str, ClockProfile],
    *,
    settle_s: float,
    now_s: float,
) -> dict[str, int]:
    """Each target's clock decided with this round's ceilings, remembered as requested; the
    requests to post (every target's latest, including those this round left alone)."""
    settings = policy_settings(config)
    if not isinstance(settings, HeadroomSettings):
        return {}
    clocks = clocks_for_round(
        decided.observation,
        decided.plan,
        decided.plan.state,
        profiles,
        running=memory.running,
        requested=memory.requested,
        idle_w=decided.idle.watts,
        safety_margin_fraction=settings.safety_margin_fraction,
        max_p99_token_latency_s=config.gpu_tuning.slo.max_inter_token_latency_s,
        settle_s=settle_s,
        change_interval_s=config.gpu_tuning.clock_change_interval_s,
        now_s=now_s,
    )
    for name, mhz in clocks.items():
        asked = memory.requested.get(name)
        if asked is not None and asked.mhz == mhz:
            continue
        # A first request for the sweep's own pick changes nothing: no interval starts.
        moved = asked is not None or mhz != profiles[name].tuned_mhz
        memory.requested[name] = ClockHistory(mhz, now_s if moved else -math.inf)
        log.info("gpu_clock_requested", target=name, mhz=mhz)
    return {name: asked.mhz for name, asked in memory.requested.items()}
