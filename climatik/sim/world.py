"""The run's fixed inputs, the same for every policy compared: arrivals, carbon, the room's
geometry and heat matrix, each service's constants, and when the controller measures and
decides.

Built once per run and never changed by a step; what the policies change lives in
`sim.state`. Sharing one world is what makes the policies' differences their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from climatik.policies.ceiling_settings import CeilingSettings, HeadroomSettings, ThresholdSettings
from climatik.policies.observations import heat_coefficients
from climatik.sim import physics
from climatik.sim.clocks import ClockSetup, clock_setup
from climatik.sim.policy_specs import PolicySpec
from climatik.sim.scenario import Scenario
from climatik.sim.workload import arrival_rates, carbon_slots

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
HeatMatrix = tuple[dict[str, float], dict[str, tuple[tuple[str, float], ...]]]
"""Per place, its recirculation factor and its heat-matrix column (what placement scores)."""

EPOCH = datetime(2020, 1, 6, tzinfo=UTC)  # a Monday: hour 0 of every scenario
"""Simulated time zero. Only used to label carbon slots; the twin never reads a clock."""


@dataclass(frozen=True, slots=True, eq=False)
class World:
    """What every step reads and none writes (arrays: policies x servers or x services)."""

    scenario: Scenario
    specs: tuple[PolicySpec, ...]
    settings: tuple[CeilingSettings | None, ...]
    """Per policy, the ceiling policy's settings (None: it sets no ceilings)."""
    headroom: HeadroomSettings
    exact: bool
    """Policies see what the live controller cannot know (`Twin.exact_knowledge`)."""
    clocks: ClockSetup
    n_pol: int
    n_srv: int
    n_svc: int
    n_rack: int
    per_rack: int
    dt: float
    steps: int
    site_cap: float
    # Time series, one row per step.
    rates: FloatArray
    """Requests per second arriving per step and service."""
    carbon_step: FloatArray
    slot_of_step: IntArray
    carbon_slots: FloatArray
    """Intensity per carbon slot, to the run's end (what the provider's forecast is made of)."""
    # The room.
    d_matrix: FloatArray
    """Heat matrix: inlet rise of each server per watt of each server, in K/W."""
    rack_of: IntArray
    zone_of: IntArray
    place_ids: list[str]
    exact_heat: HeatMatrix
    """The room's own heat matrix, as a site's recirculation ConfigMap would give it."""
    lag_keep: float
    slew_c: float
    idle_server_w: float
    # Per service.
    out_tokens: FloatArray
    min_rep: IntArray
    max_rep: IntArray
    target_util: FloatArray
    drain_s: FloatArray
    timeout_s: FloatArray
    startup_s: FloatArray
    ttft_slo: FloatArray
    tbt_slo: FloatArray
    window: int
    """The autoscaler's scale-down stabilisation window, in steps."""
    # Measurement and control timing.
    lag_steps: int
    win_steps: int
    ring_len: int
    outage: BoolArray
    ctrl_steps: int
    settle_s: float
    """A clock has settled once a whole measurement window after it is older than the lag."""
    noise_scale: float
    series_len: int
    """Samples of the last hour of measured power (one per control interval)."""
    plot_every: int
    prog_every: int
    # Index helpers for the vectorised steps.
    pol_idx: IntArray
    svc_range: IntArray

    def control_due(self, k: int) -> bool:
        """Does the controller decide in step k (every control interval, once the
        measurement ring holds a whole lagged window)?"""
        return k % self.ctrl_steps == 0 and k >= self.ring_len


def build_world(
    scenario: Scenario,
    specs: Sequence[PolicySpec],
    hours: float,
    headroom: HeadroomSettings,
    threshold: ThresholdSettings,
    *,
    exact: bool,
    start_hour: float | None = None,
) -> World:
    """Everything the run's steps read, derived once from the scenario.

    With `start_hour`, a window of `hours` from that hour of the scenario's own series, the
    arrivals (bursts and noise included) and carbon the world process plays from that hour
    (`climatik world --start-hour`), so a live demo and the twin see the same demand."""
    sc = scenario
    racks = sc.racks
    services = sc.services
    n_srv, n_rack, per_rack = racks.servers, racks.count, racks.servers_per_rack
    dt = sc.step_s
    steps = max(1, round(hours * 3600.0 / dt))
    first = 0 if start_hour is None else round(start_hour * 3600.0 / dt)
    series_steps = (
        steps if start_hour is None else max(round(sc.duration_h * 3600.0 / dt), first + steps)
    )
    step_hours: FloatArray = np.arange(series_steps, dtype=np.float64) * dt / 3600.0

    rates = np.stack(
        [arrival_rates(s.traffic, step_hours, dt, sc.source_dir) for s in services], axis=1
    )[first : first + steps]
    slots = carbon_slots(
        sc.carbon.generated,
        sc.carbon.file,
        sc.carbon.slot_s,
        series_steps * dt / 3600.0,
        sc.source_dir,
    )
    slot_of_step = np.minimum(
        ((first + np.arange(steps)) * dt // sc.carbon.slot_s).astype(int), slots.size - 1
    )

    d_matrix = physics.room_heat_matrix(sc)
    hrf = physics.recirculation_factors_c_per_kw(d_matrix)
    rack_of = np.repeat(np.arange(n_rack), per_rack)
    slot_in_rack = np.tile(np.arange(per_rack), n_rack)
    zone_of = rack_of * racks.zones_per_rack + (slot_in_rack * racks.zones_per_rack // per_rack)
    place_ids = [f"{i:05d}" for i in range(n_srv)]
    exact_heat = heat_coefficients(
        place_ids,
        None,
        {place_ids[i]: float(hrf[i]) for i in range(n_srv)},
        {
            place_ids[i]: tuple(
                (place_ids[j], float(d_matrix[j, i] * 1000.0)) for j in range(n_srv)
            )
            for i in range(n_srv)
        },
    )

    settings: tuple[CeilingSettings | None, ...] = tuple(
        threshold if s.ceilings == "threshold" else headroom if s.ceilings == "headroom" else None
        for s in specs
    )

    lag_steps = round(sc.measurement.lag_s / dt)
    win_steps = max(1, round(sc.measurement.window_s / dt))
    outage = np.zeros(steps, dtype=bool)
    for window_out in sc.measurement.outages:
        start = int(window_out.start_h * 3600 / dt) - first
        end = start + int(window_out.duration_h * 3600 / dt)
        outage[max(0, start) : max(0, end)] = True

    return World(
        scenario=sc,
        specs=tuple(specs),
        settings=settings,
        headroom=headroom,
        exact=exact,
        clocks=clock_setup(sc, specs),
        n_pol=len(specs),
        n_srv=n_srv,
        n_svc=len(services),
        n_rack=n_rack,
        per_rack=per_rack,
        dt=dt,
        steps=steps,
        site_cap=sc.caps.site_cap_w,
        rates=rates,
        carbon_step=slots[slot_of_step],
        slot_of_step=slot_of_step,
        carbon_slots=slots,
        d_matrix=d_matrix,
        rack_of=rack_of,
        zone_of=zone_of,
        place_ids=place_ids,
        exact_heat=exact_heat,
        lag_keep=math.exp(-dt / sc.cooling.inlet_tau_s),
        slew_c=sc.cooling.supply_slew_c_per_min * dt / 60.0,
        idle_server_w=racks.idle_server_w,
        out_tokens=np.array([s.output_tokens for s in services], dtype=np.float64),
        min_rep=np.array([s.min_replicas for s in services]),
        max_rep=np.array([s.max_replicas for s in services]),
        target_util=np.array([s.autoscaler.target_utilisation for s in services]),
        drain_s=np.array([s.autoscaler.queue_drain_s for s in services]),
        timeout_s=np.array([s.queue_timeout_s for s in services]),
        startup_s=np.array([s.model_class.startup_s for s in services]),
        ttft_slo=np.array([s.slo.ttft_s for s in services]),
        tbt_slo=np.array([s.slo.tbt_s for s in services]),
        window=max(1, round(max(s.autoscaler.scale_down_window_s for s in services) / dt)),
        lag_steps=lag_steps,
        win_steps=win_steps,
        ring_len=lag_steps + win_steps,
        outage=outage,
        ctrl_steps=max(1, round(sc.control_interval_s / dt)),
        settle_s=sc.measurement.lag_s + sc.measurement.window_s,
        noise_scale=math.sqrt(min(1.0, sc.measurement.noise_correlation_s / dt)),
        series_len=max(3, round(3600.0 / sc.control_interval_s)),
        plot_every=max(1, steps // 600),
        prog_every=max(1, steps // 100),
        pol_idx=np.arange(len(specs))[:, None],
        svc_range=np.arange(len(services)),
    )
