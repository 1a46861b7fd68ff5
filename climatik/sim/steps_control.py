"""Control, at every control interval: each policy's decision code runs on what the
controller has measured, as the live controller's does: the carbon cap (`cap_for_carbon`),
the replica ceilings (`decide_replica_ceilings`) and, for joint-clock policies, the clocks.
"""

from __future__ import annotations

from datetime import timedelta

from climatik.domain.carbon import CarbonReading, IntensityBandTarget
from climatik.policies.carbon import cap_for_carbon
from climatik.policies.ceiling_settings import HeadroomSettings
from climatik.policies.ceilings import decide_replica_ceilings
from climatik.policies.deferrable import PLANNED_WORK_MARGIN
from climatik.policies.gpu_clock import CLOCK_CHANGE_INTERVAL_S
from climatik.policies.observations import (
    ceiling_settings,
    demand_tokens_per_s,
    measured_watts_per_replica,
    observe_cap,
    observe_target,
)
from climatik.sim.clocks import decide_clocks
from climatik.sim.state import TwinState
from climatik.sim.steps_measure import Reading
from climatik.sim.steps_plan import deferrable_services, plan_ceiling
from climatik.sim.views import rack_observations
from climatik.sim.world import EPOCH, IntArray, World


def carbon_cap_w(world: World, k: int) -> float:
    """The site cap the carbon policy sets for step k's carbon slot (the site cap when the
    scenario sets no carbon band)."""
    sc = world.scenario
    band = sc.caps.carbon
    site_cap = world.site_cap
    if band is None:
        return site_cap
    slot_start = EPOCH + timedelta(seconds=float(world.slot_of_step[k] * sc.carbon.slot_s))
    reading = CarbonReading(
        intensity_g_per_kwh=float(world.carbon_step[k]),
        slot_start=slot_start,
        slot_end=slot_start + timedelta(seconds=sc.carbon.slot_s),
    )
    return cap_for_carbon(
        reading,
        base_cap_w=site_cap,
        floor_w=band.floor_fraction * site_cap,
        target=IntensityBandTarget(band.clean_g_per_kwh, band.dirty_g_per_kwh),
    ).cap_w


def decide(
    world: World, st: TwinState, reading: Reading, *, n_tot: IntArray, k: int, now_s: float
) -> None:
    """Every capping policy decides its ceilings (and joint clocks) on `reading`; updates
    `st.control` and, when a clock moves, `st.timing`."""
    sc = world.scenario
    services = sc.services
    control, fleet, seen, timing = st.control, st.fleet, st.seen, st.timing
    host, wanted, ceiling = fleet.host, fleet.wanted, control.ceiling
    have_data = reading.have_data
    site_cap = world.site_cap
    flexible = deferrable_services(world)
    # With deferrable work the carbon policy plans it (below) instead of a carbon cap, and keeps
    # its replicas within a share of the cap (`PLANNED_WORK_MARGIN`), as the live one does.
    carbon_cap = site_cap * (1.0 - PLANNED_WORK_MARGIN) if flexible else carbon_cap_w(world, k)
    for p, spec in enumerate(world.specs):
        setting = world.settings[p]
        if setting is None:
            continue
        control.cap_eff[p] = carbon_cap if spec.carbon else site_cap
        user_max = [s.max_replicas for s in services]
        if spec.carbon:
            for j in flexible:
                user_max[j] = plan_ceiling(
                    world,
                    st.planner,
                    p=p,
                    j=j,
                    now_s=now_s,
                    have_data=have_data,
                    served_rps=float(reading.svc_tok[p, j] / world.out_tokens[j]),
                    waiting=float(reading.svc_queue[p, j]),
                    replicas=int(n_tot[p, j]),
                    nominal_rps=float(timing.mu[p, j]),
                    measured_w=float(reading.site_w[p]) if have_data else None,
                    budget_w=carbon_cap,
                    replica_w=_learned_replica_w(st, p, services[j].name),
                )
        targets = [
            observe_target(
                name=s.name,
                current_replicas=int(n_tot[p, j]),
                min_replicas=s.min_replicas,
                user_max_replicas=user_max[j],
                applied_max_replicas=int(ceiling[p, j]),
                watts=float(reading.svc_w[p, j]) if have_data else None,
                tokens_per_s=float(reading.svc_tok[p, j]) if have_data else None,
                demand_tokens_per_s=(
                    demand_tokens_per_s(
                        float(reading.svc_tok[p, j]),
                        float(reading.svc_queue[p, j]),
                        float(world.out_tokens[j]),
                    )
                    if have_data
                    else None
                ),
                limited_by_ceiling=bool(wanted[p, j] > ceiling[p, j]),
                priority=s.priority,
                deferrable=s.deferrable,
            )
            for j, s in enumerate(services)
        ]
        rack_obs = rack_observations(
            sc,
            have_data=have_data,
            m_rack_w=reading.rack_w[p],
            m_rack_in=reading.rack_in[p],
            free=(host[p] < 0).reshape(world.n_rack, world.per_rack).sum(axis=1),
            per_replica_w=measured_watts_per_replica(targets),
            idle_w=seen.idle[p].watts,
        )
        observation = observe_cap(
            scope="site",
            base_cap_w=site_cap,
            cap_w=float(control.cap_eff[p]),
            measured_w=float(reading.site_w[p]) if have_data else None,
            targets=targets,
            racks=rack_obs,
            per_target_budget=isinstance(setting, HeadroomSettings),
        )
        # The site measurement covers every server, idle ones included.
        setting = ceiling_settings(setting, seen.idle[p], scope_measures_nodes=True)
        plan = decide_replica_ceilings(observation, setting, control.states[p], now_s)
        control.states[p] = plan.state
        if plan.prediction_error_w is not None:
            control.errors[p].append(plan.prediction_error_w)
        for j, decision in enumerate(plan.decisions):
            if decision.changed:
                control.writes[p] += 1
            ceiling[p, j] = decision.new_max_replicas
        if any(r.at_limit for r in rack_obs):
            control.rack_blocked[p] += 1
        idle_w = seen.idle[p].watts
        if world.clocks.joint[p] and have_data and idle_w is not None:
            moved = decide_clocks(
                sc,
                world.headroom,
                world.clocks,
                p,
                clock=timing.clock,
                ceiling=ceiling,
                states=control.states,
                idle_w=idle_w,
                cap_w=observation.cap_w,
                site_w=float(reading.site_w[p]),
                service_w=reading.svc_w[p],
                replicas=n_tot[p],
                free=int((host[p] < 0).sum()),
                predicted_w=plan.predicted_w,
                settled=now_s - control.clock_set_s[p] >= world.settle_s,
                changeable=now_s - control.clock_set_s[p] >= CLOCK_CHANGE_INTERVAL_S,
            )
            if moved.any():
                control.clock_changes[p] += int(moved.sum())
                control.clock_set_s[p, moved] = now_s
                timing.update(sc)


def _learned_replica_w(st: TwinState, p: int, name: str) -> float | None:
    """The headroom policy's learned watts of one replica of `name` (the live status's
    `wattsPerReplica`)."""
    learned = st.control.states[p].targets.get(name)
    return learned.watts_per_replica if learned is not None else None
