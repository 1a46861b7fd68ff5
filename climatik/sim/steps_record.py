"""Recording: each step's figures added to the run's tallies and plot series, and the tallies
turned into the metrics of SIMULATOR.md at the end of the run.
"""

from __future__ import annotations

import numpy as np

from climatik.sim import physics
from climatik.sim.clocks import per_replica_slowdown
from climatik.sim.result import SimResult
from climatik.sim.state import TwinState
from climatik.sim.steps_heat import Cooled
from climatik.sim.steps_power import Drawn
from climatik.sim.steps_serve import Served
from climatik.sim.world import World


def tally_step(
    world: World, st: TwinState, k: int, *, served: Served, drawn: Drawn, cooled: Cooled
) -> None:
    """Add step k to the run's tallies: service, cap violations, energy, carbon, heat."""
    t, dt, site_cap = st.tally, world.dt, world.site_cap
    t.arrived_req += served.arrived
    t.met_req += served.met
    t.tokens += served.tokens
    t.clock_s += st.timing.clock * dt
    site_w = drawn.site_w
    t.site_w_per_step[k] = site_w
    t.replicas_per_step[k] = served.n_tot
    t.service_w_per_step[k] = drawn.svc_w
    over = site_w - site_cap
    in_violation = over > 0
    t.viol_ws += np.maximum(over, 0) * dt
    t.overshoot = np.maximum(t.overshoot, over / site_cap)
    t.episodes += in_violation & (t.run_len == 0)
    t.run_len = np.where(in_violation, t.run_len + dt, 0.0)
    t.longest = np.maximum(t.longest, t.run_len)
    t.it_j += site_w * dt
    t.cool_j += cooled.cooling_w * dt
    t.fac_j += cooled.facility_w * dt
    t.carbon_g += physics.carbon_g(world.carbon_step[k], cooled.facility_w, dt)
    t.peak_inlet = np.maximum(t.peak_inlet, cooled.max_in)
    t.above_s += (cooled.max_in > world.scenario.cooling.redline_c) * dt
    t.rack_peak = np.maximum(t.rack_peak, drawn.rack_w)
    t.site_peak = np.maximum(t.site_peak, site_w)


def sample_history(
    world: World, st: TwinState, k: int, *, served: Served, drawn: Drawn, cooled: Cooled
) -> None:
    """Keep step k for the plots (one step in `plot_every`)."""
    if k % world.plot_every:
        return
    history = st.tally.history
    history.hours.append(k * world.dt / 3600.0)
    history.site_w.append(drawn.site_w.copy())
    history.cap_w.append(st.control.cap_eff.copy())
    history.replicas.append(served.n_tot.astype(np.float64))
    history.ceilings.append(st.control.ceiling.astype(np.float64))
    history.max_inlet_c.append(cooled.max_in.copy())
    history.supply_c.append(st.room.supply.copy())
    history.carbon_g_per_kwh.append(float(world.carbon_step[k]))
    history.carbon_g.append(st.tally.carbon_g.copy())


def summarise(world: World, st: TwinState, policy_names: list[str]) -> SimResult:
    """The run's metrics and details per policy, from its tallies."""
    sc = world.scenario
    services = sc.services
    gpu = sc.racks.gpu_curve
    t, control = st.tally, st.control
    site_cap = world.site_cap
    duration_s = world.steps * world.dt
    results: dict[str, dict[str, float]] = {}
    details: dict[str, dict[str, object]] = {}
    for p, name in enumerate(policy_names):
        total_tokens = float(t.tokens[p].sum())
        results[name] = {
            "cap_violation_ws": float(t.viol_ws[p]),
            "max_overshoot_pct": float(max(0.0, t.overshoot[p]) * 100.0),
            "tokens": total_tokens,
            "tokens_per_s": total_tokens / duration_s,
            "tokens_per_joule": total_tokens / float(t.it_j[p]) if t.it_j[p] > 0 else 0.0,
            "energy_kwh": float(t.it_j[p] / physics.J_PER_KWH),
            "cooling_kwh": float(t.cool_j[p] / physics.J_PER_KWH),
            "peak_inlet_c": float(t.peak_inlet[p]),
            "time_above_redline_s": float(t.above_s[p]),
            "carbon_g": float(t.carbon_g[p]),
            "carbon_g_per_1k_tokens": (
                float(t.carbon_g[p]) / total_tokens * 1000.0 if total_tokens > 0 else 0.0
            ),
            "slo_attainment": float(t.met_req[p].sum() / max(t.arrived_req[p].sum(), 1e-9)),
            "peak_to_average": float(t.rack_peak[p].sum() / max(t.site_peak[p], 1e-9)),
        }
        details[name] = {
            "violation_episodes": int(t.episodes[p]),
            "longest_violation_s": float(t.longest[p]),
            "cap_violation_pct_of_cap_time": float(t.viol_ws[p] / (site_cap * duration_s) * 100.0),
            "slo_attainment_by_service": {
                s.name: float(t.met_req[p, j] / max(t.arrived_req[p, j], 1e-9))
                for j, s in enumerate(services)
            },
            "tokens_per_facility_joule": (
                float(t.tokens[p].sum() / t.fac_j[p]) if t.fac_j[p] > 0 else 0.0
            ),
            "facility_kwh": float(t.fac_j[p] / physics.J_PER_KWH),
            "ceiling_writes": int(control.writes[p]),
            "control_steps_with_a_rack_at_limit": int(control.rack_blocked[p]),
            "gpu_clock_mhz": {
                s.name: round(float(t.clock_s[p, j]) / duration_s * gpu.max_clock_mhz)
                for j, s in enumerate(services)
            },
            "gpu_clock_changes": int(control.clock_changes[p]),
            "carbon_basis": "location-based (grid average intensity x facility energy)",
        }
        if control.errors[p]:
            # The power model's error: the measured site power at a decision against what
            # the previous decision predicted for its ceilings (mean absolute and bias).
            err = np.asarray(control.errors[p])
            details[name]["power_prediction_error_pct_of_cap"] = float(
                np.abs(err).mean() / site_cap * 100.0
            )
            details[name]["power_prediction_bias_pct_of_cap"] = float(err.mean() / site_cap * 100.0)
    clocks = world.clocks
    if clocks.reasons:
        losses = per_replica_slowdown(sc, clocks.tuned)
        for p, spec in enumerate(world.specs):
            if spec.tuned_clocks:
                details[policy_names[p]]["gpu_clock_reason"] = clocks.reasons
                details[policy_names[p]]["gpu_clock_per_replica_loss"] = losses
    return SimResult(
        scenario=sc.name,
        duration_s=duration_s,
        policies=results,
        details=details,
        history=t.history,
        service_names=[s.name for s in services],
        site_cap_w=site_cap,
        redline_c=sc.cooling.redline_c,
        step_s=world.dt,
        site_w_per_step=t.site_w_per_step,
        replicas_per_step=t.replicas_per_step,
        service_w_per_step=t.service_w_per_step,
        knowledge="exact" if world.exact else "measured",
    )
