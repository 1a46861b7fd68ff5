"""The twin's time loop: every policy of a run advanced together, step by step, on one world.

All policies see the same arrivals, the same carbon series and the same room; their state lives
in arrays with a leading policy axis, so one numpy operation advances all of them. Every control
interval each policy's decision code runs on what a Prometheus scrape would show (lagged,
averaged, a little noisy, absent during outages): the capping policies are exactly the
controller's own functions (`decide_replica_ceilings`, `score_racks`, `score_scale_in`,
`cap_for_carbon`, `choose_gpu_clock`).

Modelled on purpose: KEDA/HPA scaling (target utilisation, immediate scale-up, stabilised
scale-down, an HPA that drops to a lowered max at once), replica start-up delay, a fluid request
queue with timeouts, SLOs from queueing and batch latency, heat recirculation with inlet lag,
supply-temperature control, CoP cooling and location-based carbon.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from climatik.domain.capping import CappingState, RackObservation
from climatik.domain.carbon import CarbonReading, IntensityBandTarget
from climatik.domain.gpu import ClockSample
from climatik.domain.placement import PlaceObservation, RecirculationEstimate
from climatik.policies.carbon import cap_for_carbon
from climatik.policies.ceilings import (
    CeilingSettings,
    HeadroomSettings,
    ThresholdSettings,
    decide_replica_ceilings,
    rescale_for_clock,
)
from climatik.policies.gpu_clock import (
    ClockBounds,
    ClockTarget,
    choose_gpu_clock,
    clock_change_ratios,
    clocks_under_cap,
)
from climatik.policies.observations import (
    HEAT_HISTORY_SAMPLES,
    IdlePower,
    PlaceReading,
    RackReading,
    ceiling_settings,
    demand_tokens_per_s,
    heat_coefficients,
    learn_idle_power,
    measured_watts_per_replica,
    observe_cap,
    observe_places,
    observe_racks,
    observe_target,
    recirculation_from_history,
    refit_due,
    replica_added_watts,
    zone_watts,
)
from climatik.policies.placement import (
    PlacementStrategy,
    order_pods_for_scale_in,
    score_racks,
    score_scale_in,
)
from climatik.sim import physics
from climatik.sim.policy_specs import POLICY_SPECS
from climatik.sim.scenario import Scenario
from climatik.sim.workload import arrival_rates, carbon_slots

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EPOCH = datetime(2020, 1, 6, tzinfo=UTC)  # a Monday: hour 0 of every scenario
"""Simulated time zero. Only used to label carbon slots; the twin never reads a clock."""


METRIC_KEYS = (
    "cap_violation_ws",
    "max_overshoot_pct",
    "tokens",
    "tokens_per_s",
    "tokens_per_joule",
    "energy_kwh",
    "cooling_kwh",
    "peak_inlet_c",
    "time_above_redline_s",
    "carbon_g",
    "carbon_g_per_1k_tokens",
    "slo_attainment",
    "peak_to_average",
)


@dataclass
class History:
    """Downsampled time series for plots (one column per sample)."""

    hours: list[float] = field(default_factory=list)
    site_w: list[FloatArray] = field(default_factory=list)
    cap_w: list[FloatArray] = field(default_factory=list)
    replicas: list[FloatArray] = field(default_factory=list)
    ceilings: list[FloatArray] = field(default_factory=list)
    """The replica ceiling (maxReplicaCount) each policy set, per service."""
    max_inlet_c: list[FloatArray] = field(default_factory=list)
    supply_c: list[FloatArray] = field(default_factory=list)
    carbon_g_per_kwh: list[float] = field(default_factory=list)
    carbon_g: list[FloatArray] = field(default_factory=list)
    """Cumulative emissions per policy."""


@dataclass
class SimResult:
    """What a run produced: the metrics of SIMULATOR.md per policy, details and plot series."""

    scenario: str
    duration_s: float
    policies: dict[str, dict[str, float]]
    details: dict[str, dict[str, object]]
    history: History
    service_names: list[str]
    site_cap_w: float
    redline_c: float
    step_s: float
    site_w_per_step: FloatArray
    """IT power of the site in every step, one column per policy (what the cooling bound is
    evaluated on: the least cooling each step's IT power could have needed)."""
    knowledge: str = "measured"
    """What the policies saw: "measured" (only what the live controller measures) or
    "exact" (the `--exact-knowledge` variant)."""

    def as_json(self) -> dict[str, object]:
        """The `--json` document: scenario, duration and the metric keys per policy."""
        return {
            "scenario": self.scenario,
            "knowledge": self.knowledge,
            "duration_s": self.duration_s,
            "policies": self.policies,
            "details": self.details,
        }


def static_ceilings(scenario: Scenario) -> list[int]:
    """Nameplate provisioning: every active server may draw its full prefill power.

    Idle servers still draw their idle power, so the replicas allowed are the whole replicas
    whose nameplate increase over idle fits what the idle room leaves under the cap. They are
    shared among services in proportion to their maximums (largest remainder), at least the
    minimum each.
    """
    racks = scenario.racks
    nameplate, idle = racks.nameplate_server_w, racks.idle_server_w
    total = int((scenario.caps.site_cap_w - racks.servers * idle) // (nameplate - idle))
    total = max(0, min(racks.servers, total))
    maxes = [s.max_replicas for s in scenario.services]
    quota = [total * m / sum(maxes) for m in maxes]
    shares = [int(q) for q in quota]
    order = sorted(range(len(quota)), key=lambda i: quota[i] - shares[i], reverse=True)
    for index in order[: total - sum(shares)]:
        shares[index] += 1
    return [
        max(s.min_replicas, min(s.max_replicas, share))
        for s, share in zip(scenario.services, shares, strict=True)
    ]


def clock_sweeps(scenario: Scenario) -> list[list[ClockSample]]:
    """Per service, the GPU-tuning Job's samples measured on the twin: one replica at full
    batch at every clock of the sweep, a little noisy like real measurements."""
    racks = scenario.racks
    gpu = racks.gpu_curve
    rng = np.random.default_rng(scenario.seed + 101)
    clocks = physics.clock_sweep_mhz(gpu)
    sweeps: list[list[ClockSample]] = []
    for service in scenario.services:
        model = service.model_class
        samples: list[ClockSample] = []
        for clock in clocks:
            ratio = float(clock / gpu.max_clock_mhz)
            pre, dec = physics.request_busy_s(
                model, service.prompt_tokens, service.output_tokens, ratio
            )
            busy = float(pre + dec)
            tokens = service.output_tokens / busy
            gpu_w = physics.gpu_power_w(ratio, float(pre) / busy, float(dec) / busy, gpu)
            watts = float(
                physics.server_power_w(
                    gpu_w,
                    racks.gpus_per_server,
                    gpu.idle_w,
                    racks.server_base_w,
                    racks.server_gpu_overhead,
                )
            )
            tbt = float(physics.decode_step_s(model, 1.0, ratio))
            samples.append(
                ClockSample(
                    clock_mhz=round(float(clock)),
                    tokens_per_s=tokens * (1 + rng.normal(0, 0.01)),
                    watts=watts * (1 + rng.normal(0, 0.01)),
                    p99_token_latency_s=tbt,
                )
            )
        sweeps.append(samples)
    return sweeps


def clock_bounds(scenario: Scenario) -> list[ClockBounds]:
    """Per service, the SLO bounds a clock must respect: p99 token latency within 0.8 x its
    time-between-tokens objective."""
    return [ClockBounds(max_p99_token_latency_s=0.8 * s.slo.tbt_s) for s in scenario.services]


def tuned_clock_ratios(scenario: Scenario) -> tuple[list[float], list[str]]:
    """Per service, the clock `choose_gpu_clock` picks from a sweep measured on the twin."""
    gpu = scenario.racks.gpu_curve
    ratios: list[float] = []
    reasons: list[str] = []
    for service, samples, limits in zip(
        scenario.services, clock_sweeps(scenario), clock_bounds(scenario), strict=True
    ):
        choice = choose_gpu_clock(samples, limits)
        ratios.append(choice.clock_mhz / gpu.max_clock_mhz)
        reasons.append(f"{service.name}: {choice.reason}")
    return ratios, reasons


def per_replica_slowdown(
    scenario: Scenario, clock_ratios: list[float]
) -> dict[str, dict[str, float]]:
    """What each service's tuned clock costs one replica against the maximum clock.

    `decode_tokens_per_s` is SIMULATOR.md's replica throughput (B / t_dec at full batch);
    `requests_per_s` also counts prefill, which slows with 1/f. Under a binding cap the watts
    saved buy more replicas, so the service's own throughput can rise while each replica slows.
    """
    out: dict[str, dict[str, float]] = {}
    for service, ratio in zip(scenario.services, clock_ratios, strict=True):
        model = service.model_class
        decode = float(
            physics.decode_step_s(model, 1.0, 1.0) / physics.decode_step_s(model, 1.0, ratio)
        )
        fast = sum(physics.request_busy_s(model, service.prompt_tokens, service.output_tokens, 1.0))
        slow = sum(
            physics.request_busy_s(model, service.prompt_tokens, service.output_tokens, ratio)
        )
        out[service.name] = {
            "decode_tokens_per_s": 1.0 - decode,
            "requests_per_s": 1.0 - float(fast / slow),
        }
    return out


class Twin:
    """One run of a scenario for a list of policies."""

    def __init__(
        self,
        scenario: Scenario,
        policies: list[str] | None = None,
        hours: float | None = None,
        seed: int | None = None,
        headroom: HeadroomSettings | None = None,
        *,
        exact_knowledge: bool = False,
    ) -> None:
        self.scenario = scenario
        self.policy_names = list(policies or scenario.policies)
        for name in self.policy_names:
            if name not in POLICY_SPECS:
                msg = f"unknown policy {name!r}; known: {', '.join(POLICY_SPECS)}"
                raise ValueError(msg)
        self.specs = [POLICY_SPECS[name] for name in self.policy_names]
        self.hours = float(hours if hours is not None else scenario.duration_h)
        self.seed = scenario.seed if seed is None else seed
        self.headroom = headroom or HeadroomSettings()
        self.threshold = ThresholdSettings()
        self.exact_knowledge = exact_knowledge
        """Give the policies what the live controller cannot know (the server idle draw, the
        room's heat matrix, unlagged noiseless chassis power and inlets for placement): the
        labelled variant that shows what that knowledge is worth. Off: only measurements."""

    # The loop is long on purpose: one flat pass over arrays is what keeps it fast and readable
    # as a whole (each block is one physical process, in the order they happen).
    def run(self, progress: Callable[[float], None] | None = None) -> SimResult:
        sc = self.scenario
        racks = sc.racks
        gpu = racks.gpu_curve
        services = sc.services
        n_pol, n_srv, n_svc = len(self.specs), racks.servers, len(services)
        n_rack, per_rack = racks.count, racks.servers_per_rack
        dt = sc.step_s
        steps = max(1, round(self.hours * 3600.0 / dt))
        # Common random numbers: every policy sees the same power and measurement noise, drawn
        # once per step whatever the set of policies compared, so a policy's figures do not
        # depend on which others run beside it and differences are the policies' own.
        noise_rng = np.random.default_rng(self.seed)
        placement_rng = np.random.default_rng([self.seed, 7919])
        demand_rng = np.random.default_rng([self.seed, 4099])
        hours: FloatArray = np.arange(steps, dtype=np.float64) * dt / 3600.0

        rates = np.stack(
            [arrival_rates(s.traffic, hours, dt, sc.source_dir) for s in services], axis=1
        )
        slots = carbon_slots(
            sc.carbon.generated, sc.carbon.file, sc.carbon.slot_s, self.hours, sc.source_dir
        )
        slot_of_step = np.minimum(
            (np.arange(steps) * dt // sc.carbon.slot_s).astype(int), slots.size - 1
        )
        carbon_step = slots[slot_of_step]

        # Room geometry and heat.
        d_matrix = physics.room_heat_matrix(sc)
        hrf = physics.recirculation_factors_c_per_kw(d_matrix)
        rack_of = np.repeat(np.arange(n_rack), per_rack)
        slot_in_rack = np.tile(np.arange(per_rack), n_rack)
        zone_of = rack_of * racks.zones_per_rack + (slot_in_rack * racks.zones_per_rack // per_rack)
        lag_keep = math.exp(-dt / sc.cooling.inlet_tau_s)
        slew_c = sc.cooling.supply_slew_c_per_min * dt / 60.0

        # Service parameters per policy (clocks differ by policy).
        clock = np.ones((n_pol, n_svc))
        clock_reasons: list[str] = []
        if any(s.tuned_clocks for s in self.specs):
            tuned, clock_reasons = tuned_clock_ratios(sc)
            for p, spec in enumerate(self.specs):
                if spec.tuned_clocks:
                    clock[p] = tuned
        # Where clocks are decided with the replicas under the cap (`clocks_under_cap`), each
        # policy's clocks move during the run; the arrays below follow them in place.
        joint = [s.joint_clocks and s.tuned_clocks and s.ceilings == "headroom" for s in self.specs]
        sweeps = clock_sweeps(sc) if any(joint) else []
        limits = clock_bounds(sc)
        tuned_mhz = (
            [round(float(r) * gpu.max_clock_mhz) for r in clock[joint.index(True)]]
            if any(joint)
            else []
        )
        pre_s = np.zeros((n_pol, n_svc))
        dec_s = np.zeros((n_pol, n_svc))
        busy_s = np.zeros((n_pol, n_svc))
        pre_dyn_w = np.zeros((n_pol, n_svc))
        dec_dyn_w = np.zeros((n_pol, n_svc))
        mu = np.zeros((n_pol, n_svc))  # requests per second per replica at full batch
        pre_share = np.zeros((n_pol, n_svc))

        def set_timing() -> None:
            """Each service's request time and phase powers at each policy's clock."""
            for j, s in enumerate(services):
                pre, dec = physics.request_busy_s(
                    s.model_class, s.prompt_tokens, s.output_tokens, clock[:, j]
                )
                pre_s[:, j], dec_s[:, j] = pre, dec
            busy_s[:] = pre_s + dec_s
            pre_dyn_w[:] = physics.gpu_phase_power_w(gpu.prefill_max_w, clock, gpu) - gpu.idle_w
            dec_dyn_w[:] = physics.gpu_phase_power_w(gpu.decode_max_w, clock, gpu) - gpu.idle_w
            mu[:] = 1.0 / busy_s
            pre_share[:] = pre_s / busy_s

        set_timing()
        clock_s = np.zeros((n_pol, n_svc))
        """Seconds x clock ratio, per policy and service: the run's mean clock."""
        clock_changes = np.zeros(n_pol, dtype=np.int64)
        clock_set_s = np.full((n_pol, n_svc), -np.inf)
        """When each policy last changed each service's clock (simulated seconds)."""
        out_tokens = np.array([s.output_tokens for s in services], dtype=np.float64)
        min_rep = np.array([s.min_replicas for s in services])
        max_rep = np.array([s.max_replicas for s in services])
        target_util = np.array([s.autoscaler.target_utilisation for s in services])
        drain_s = np.array([s.autoscaler.queue_drain_s for s in services])
        timeout_s = np.array([s.queue_timeout_s for s in services])
        startup_s = np.array([s.model_class.startup_s for s in services])
        ttft_slo = np.array([s.slo.ttft_s for s in services])
        tbt_slo = np.array([s.slo.tbt_s for s in services])
        window = max(1, round(max(s.autoscaler.scale_down_window_s for s in services) / dt))
        idle_server_w = racks.idle_server_w

        # Ceilings.
        ceiling = np.tile(max_rep, (n_pol, 1)).astype(np.int64)
        static = static_ceilings(sc)
        for p, spec in enumerate(self.specs):
            if spec.ceilings == "static":
                ceiling[p] = static
        states = [CappingState() for _ in self.specs]
        settings: list[CeilingSettings | None] = [
            self.threshold
            if s.ceilings == "threshold"
            else self.headroom
            if s.ceilings == "headroom"
            else None
            for s in self.specs
        ]
        site_cap = sc.caps.site_cap_w
        cap_eff = np.full(n_pol, site_cap)
        carbon_band = sc.caps.carbon

        # Replicas: one per server. Warm start at what the first arrivals need.
        host = np.full((n_pol, n_srv), -1, dtype=np.int64)
        ready_at = np.full((n_pol, n_srv), np.inf)
        born = np.zeros((n_pol, n_srv))
        rr_next = np.zeros(n_pol, dtype=np.int64)
        queue = np.zeros((n_pol, n_svc))
        want0 = np.ceil(rates[0] / (mu * target_util)).astype(np.int64)
        want0 = np.clip(want0, min_rep, ceiling)
        srv_w = np.full((n_pol, n_srv), idle_server_w)
        inlet = np.zeros((n_pol, n_srv))
        # Heat and cooling state (placement predicts inlets from it).
        rise = np.zeros((n_pol, n_srv))
        supply = np.full(
            n_pol,
            np.clip(
                sc.cooling.redline_c - sc.cooling.supply_guard_c,
                sc.cooling.min_supply_c,
                sc.cooling.max_supply_c,
            ),
        )

        # What one replica adds to its server's draw before any is measured: the server at the
        # autoscaler's target utilisation, at the policy's clock.
        guess_gpu_w = gpu.idle_w + target_util[None, :] * (
            pre_share * pre_dyn_w + (1 - pre_share) * dec_dyn_w
        )
        replica_guess_w = (
            physics.server_power_w(
                guess_gpu_w,
                racks.gpus_per_server,
                gpu.idle_w,
                racks.server_base_w,
                racks.server_gpu_overhead,
            )
            - idle_server_w
        )
        place_ids = [f"{i:05d}" for i in range(n_srv)]
        exact = self.exact_knowledge
        # The room's own heat matrix: what placement sees with exact knowledge (as a site's
        # recirculation ConfigMap would give it); measured runs learn theirs from history.
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
        # What the controller last measured, per policy (NaN: no data), refreshed every
        # control interval; and the history it fits the heat matrix to.
        seen_srv_w = np.full((n_pol, n_srv), np.nan)
        seen_srv_in = np.full((n_pol, n_srv), np.nan)
        seen_rack_w = np.full((n_pol, n_rack), np.nan)
        seen_svc_w = np.full((n_pol, n_svc), np.nan)
        # (server watts, inlets, supply air) per policy: the supply is read as a config with a
        # supply-temperature query reads it, and lets the fit follow the cooling unit.
        heat_history: deque[tuple[FloatArray, FloatArray, FloatArray]] = deque(
            maxlen=HEAT_HISTORY_SAMPLES
        )
        seen_supply = np.full(n_pol, np.nan)
        # Per policy: when it was fitted, the fit, and its coefficients (built once per fit).
        heat_fits: dict[
            int,
            tuple[
                int,
                RecirculationEstimate | None,
                tuple[dict[str, float], dict[str, tuple[tuple[str, float], ...]]],
            ],
        ] = {}
        heat_appended = [0]
        idle = [IdlePower(idle_server_w if exact else None) for _ in self.specs]

        def heat(p: int) -> tuple[dict[str, float], dict[str, tuple[tuple[str, float], ...]]]:
            """The heat matrix placement uses: exact, or fitted to history, refitted every
            `HEAT_REFIT_SAMPLES` samples (as the live reconciler does)."""
            if exact:
                return exact_heat
            fit = heat_fits.get(p)
            if fit is None or refit_due(fit[0], heat_appended[0]):
                samples = list(heat_history)
                estimate = recirculation_from_history(
                    place_ids,
                    [h[0][p] for h in samples],
                    [h[1][p] for h in samples],
                    [float(h[2][p]) for h in samples],
                )
                coefficients = heat_coefficients(place_ids, estimate)
                fit = heat_fits[p] = (heat_appended[0], estimate, coefficients)
            return fit[2]

        def replica_w(p: int, svc: int, now: float) -> float | None:
            """What a replica of `svc` adds: measured, the service's watts per running replica
            (the live reconciler's rule); exact, its ready replicas' mean over idle, else the
            server at the autoscaler's target utilisation."""
            mine = (host[p] == svc) & (ready_at[p] <= now)
            if not exact:
                return replica_added_watts(float(seen_svc_w[p, svc]), int(mine.sum()))
            if mine.any():
                return max(0.0, float(srv_w[p, mine].mean()) - idle_server_w)
            return float(replica_guess_w[p, svc])

        def room_inlets(p: int, now: float) -> dict[str, float] | None:
            """The room's inlets placement predicts from. Exact knowledge: steady inlets once
            every placed replica draws, supply + D · expected watts (starting replicas at their
            expected draw, so a burst of placements does not stack on a spot that only looks
            cool because it has not heated up yet). Measured: the measured inlets, as the live
            controller has them."""
            if not exact:
                # Every server's measured inlet, as the live reconciler scores every rack: the
                # hottest inlet is often a full server's, which is no candidate.
                return {place_ids[i]: float(seen_srv_in[p, i]) for i in range(n_srv)}
            expected = srv_w[p].copy()
            starting = (host[p] >= 0) & (ready_at[p] > now)
            for i in np.flatnonzero(starting):
                expected[i] = idle_server_w + (replica_w(p, int(host[p, i]), now) or 0.0)
            temps = supply[p] + d_matrix @ expected
            return {place_ids[i]: float(temps[i]) for i in range(n_srv)}

        # The last hour of measured rack and service power, one sample per control interval,
        # for the smoothing term (the live controller fetches the same hour from Prometheus).
        series_len = max(3, round(3600.0 / sc.control_interval_s))
        series_rack_w = np.zeros((n_pol, n_rack, series_len))
        series_svc_w = np.zeros((n_pol, n_svc, series_len))
        series_count = [0]

        def series_order() -> IntArray:
            n = series_count[0]
            if n < series_len:
                return np.arange(n, dtype=np.int64)
            return (np.arange(series_len, dtype=np.int64) + n) % series_len

        def service_series(p: int, svc: int) -> tuple[float, ...] | None:
            order = series_order()
            return tuple(float(v) for v in series_svc_w[p, svc, order]) if order.size else None

        def observations(p: int, servers: IntArray) -> list[PlaceObservation]:
            """What the policy sees of each server: the live controller's inputs, per chassis."""
            if exact:
                chassis_w, chassis_in = srv_w[p], np.where(inlet[p] > 0, inlet[p], np.nan)
                rack_w = chassis_w.reshape(n_rack, per_rack).sum(axis=1)
            else:
                chassis_w, chassis_in, rack_w = seen_srv_w[p], seen_srv_in[p], seen_rack_w[p]
            supply_c = float(supply[p] if exact else seen_supply[p])
            limit_c = sc.caps.rack_max_inlet_c or sc.cooling.redline_c
            order = series_order()
            rack_series = [
                tuple(float(v) for v in series_rack_w[p, r, order]) for r in range(n_rack)
            ]
            factors, columns = heat(p)
            readings = [
                PlaceReading(
                    place_id=place_ids[i],
                    watts=float(rack_w[rack_of[i]]),
                    inlet_c=float(chassis_in[i]),
                    max_inlet_c=limit_c,
                    max_watts=sc.caps.rack_max_w,
                    zone=str(zone_of[i]),
                    supply_c=supply_c,
                    load_series_w=rack_series[rack_of[i]],
                )
                for i in servers
            ]
            zone_w = zone_watts((str(zone_of[i]), float(chassis_w[i])) for i in range(n_srv))
            return observe_places(readings, factors=factors, columns=columns, zone_w=zone_w)

        def place(p: int, svc: int, now: float) -> bool:
            free = np.flatnonzero(host[p] < 0)
            if free.size == 0:
                return False
            spec = self.specs[p]
            if spec.placement == "random":
                choice = int(placement_rng.choice(free))
            elif spec.placement == "round-robin":
                after = free[free >= rr_next[p]]
                choice = int(after[0] if after.size else free[0])
                rr_next[p] = (choice + 1) % n_srv
            else:
                obs = observations(p, free)
                strategy = PlacementStrategy(spec.placement)
                if strategy is PlacementStrategy.CLIMATIK:
                    ranked = score_racks(
                        obs,
                        strategy,
                        service_series_w=service_series(p, svc),
                        added_watts=replica_w(p, svc, now),
                        inlets_c=room_inlets(p, now),
                    )
                else:
                    ranked = score_racks(obs, strategy)
                choice = int(ranked[0].place_id)
            host[p, choice] = svc
            ready_at[p, choice] = now + startup_s[svc]
            born[p, choice] = now
            return True

        def remove(p: int, svc: int) -> None:
            mine = np.flatnonzero(host[p] == svc)
            if mine.size == 0:
                return
            # Not-ready pods go first (as the ReplicaSet does); then the newest, or with
            # Climatik's pod-deletion-cost the one the live controller would delete first:
            # the replica whose removal lowers the hottest inlet most (`score_scale_in`).
            starting = ready_at[p, mine] > now_s
            if self.specs[p].remove_hottest:
                keep = score_scale_in(
                    observations(p, mine),
                    removed_watts=replica_w(p, svc, now_s),
                    inlets_c=room_inlets(p, now_s),
                    service_series_w=service_series(p, svc),
                )
                cost = order_pods_for_scale_in({f"{i:05d}": f"{i:05d}" for i in mine}, keep)
                key = np.array([-cost[f"{i:05d}"] for i in mine], dtype=np.float64)
            else:
                key = born[p, mine]
            order = np.lexsort((-key, ~starting))
            victim = mine[order[0]]
            host[p, victim] = -1
            ready_at[p, victim] = np.inf

        now_s = 0.0
        for p in range(n_pol):
            for j in range(n_svc):
                for _ in range(int(want0[p, j])):
                    place(p, j, -1e9)
        rec_hist = np.repeat(want0[:, :, None], window, axis=2).astype(np.int64)
        wanted = want0.copy()  # the autoscaler's wish before the ceiling clamps it

        # Measurement ring (what Prometheus would hold).
        lag_steps = round(sc.measurement.lag_s / dt)
        win_steps = max(1, round(sc.measurement.window_s / dt))
        ring_len = lag_steps + win_steps
        ring_site = np.zeros((ring_len, n_pol))
        ring_svc_w = np.zeros((ring_len, n_pol, n_svc))
        ring_svc_tok = np.zeros((ring_len, n_pol, n_svc))
        ring_svc_queue = np.zeros((ring_len, n_pol, n_svc))
        ring_rack_w = np.zeros((ring_len, n_pol, n_rack))
        ring_rack_in = np.zeros((ring_len, n_pol, n_rack))
        ring_srv_w = np.zeros((ring_len, n_pol, n_srv))
        ring_srv_in = np.zeros((ring_len, n_pol, n_srv))
        ring_supply = np.zeros((ring_len, n_pol))
        outage = np.zeros(steps, dtype=bool)
        for window_out in sc.measurement.outages:
            start = int(window_out.start_h * 3600 / dt)
            outage[start : start + int(window_out.duration_h * 3600 / dt)] = True
        ctrl_steps = max(1, round(sc.control_interval_s / dt))
        # A clock has settled once a whole measurement window after it is older than the lag.
        settle_s = sc.measurement.lag_s + sc.measurement.window_s
        noise_scale = math.sqrt(min(1.0, sc.measurement.noise_correlation_s / dt))

        # Accumulators.
        viol_ws = np.zeros(n_pol)
        overshoot = np.zeros(n_pol)
        episodes = np.zeros(n_pol, dtype=np.int64)
        run_len = np.zeros(n_pol)
        longest = np.zeros(n_pol)
        tokens = np.zeros((n_pol, n_svc))
        arrived_req = np.zeros((n_pol, n_svc))
        met_req = np.zeros((n_pol, n_svc))
        it_j = np.zeros(n_pol)
        cool_j = np.zeros(n_pol)
        fac_j = np.zeros(n_pol)
        carbon_g = np.zeros(n_pol)
        peak_inlet = np.full(n_pol, -np.inf)
        above_s = np.zeros(n_pol)
        rack_peak = np.zeros((n_pol, n_rack))
        site_peak = np.zeros(n_pol)
        writes = np.zeros(n_pol, dtype=np.int64)
        errors: list[list[float]] = [[] for _ in self.specs]
        """Per policy, measured minus predicted scope power at every decision (headroom)."""
        rack_blocked = np.zeros(n_pol, dtype=np.int64)
        history = History()
        site_w_per_step = np.zeros((steps, n_pol))
        plot_every = max(1, steps // 600)
        prog_every = max(1, steps // 100)

        gpus = racks.gpus_per_server
        overhead = racks.server_gpu_overhead
        pol_idx = np.arange(n_pol)[:, None]
        svc_range = np.arange(n_svc)

        for k in range(steps):
            now_s = k * dt
            lam = rates[k]
            # --- serving ---------------------------------------------------------------------
            active = host >= 0
            ready = active & (ready_at <= now_s)
            safe_host = np.where(active, host, 0)
            onehot = host[:, :, None] == svc_range[None, None, :]  # (P, N, S)
            n_tot = onehot.sum(axis=1)
            n_ready = (onehot & ready[:, :, None]).sum(axis=1)
            cap_rps = n_ready * mu
            demand = queue / dt + lam
            served = np.minimum(demand, cap_rps)
            queue = queue + (lam - served) * dt
            max_q = np.maximum(cap_rps, 1e-9) * timeout_s
            dropped = np.maximum(0.0, queue - max_q)
            queue -= dropped
            util = np.where(cap_rps > 0, served / np.maximum(cap_rps, 1e-12), 0.0)

            arrived = lam * dt
            wait_s = physics.ttft_wait_s(queue, cap_rps, pre_s, util)
            met_frac = physics.ttft_met_fraction(ttft_slo, pre_s, wait_s)
            for j, s in enumerate(services):
                tbt = physics.decode_step_s(s.model_class, util[:, j], clock[:, j])
                met_frac[:, j] *= tbt <= tbt_slo[j]
            arrived_req += arrived
            met_req += met_frac * np.maximum(arrived - dropped, 0.0)
            tokens_step = served * dt * out_tokens
            tokens += tokens_step
            clock_s += clock * dt

            # --- power -----------------------------------------------------------------------
            u_srv = np.where(ready, util[pol_idx, safe_host], 0.0)
            share_srv = pre_share[pol_idx, safe_host]
            busy_pre = u_srv * share_srv
            busy_dec = u_srv - busy_pre
            # P_g with the per-service phase powers at each policy's clock (computed once).
            gpu_w = (
                gpu.idle_w
                + busy_pre * pre_dyn_w[pol_idx, safe_host]
                + busy_dec * dec_dyn_w[pol_idx, safe_host]
            )
            dyn_w = gpu_w - gpu.idle_w
            cv = 0.15 + 0.45 * share_srv
            sigma = (1 + overhead) * math.sqrt(gpus) * cv * dyn_w * noise_scale
            srv_w = physics.server_power_w(gpu_w, gpus, gpu.idle_w, racks.server_base_w, overhead)
            srv_w = srv_w + noise_rng.standard_normal(n_srv)[None, :] * sigma
            site_w = srv_w.sum(axis=1)
            site_w_per_step[k] = site_w
            rack_w = srv_w.reshape(n_pol, n_rack, per_rack).sum(axis=2)
            svc_w = np.einsum("pn,pns->ps", srv_w, onehot)

            # --- heat and cooling --------------------------------------------------------------
            steady_rise = srv_w @ d_matrix.T
            if k == 0:
                # Start from the thermal steady state of the first load, not a cold room.
                rise = steady_rise
                supply = np.clip(
                    sc.cooling.redline_c - sc.cooling.supply_guard_c - rise.max(axis=1),
                    sc.cooling.min_supply_c,
                    sc.cooling.max_supply_c,
                )
            rise = lag_keep * rise + (1 - lag_keep) * steady_rise
            inlet = supply[:, None] + rise
            supply_now = supply.copy()
            max_in = inlet.max(axis=1)
            rack_in = inlet.reshape(n_pol, n_rack, per_rack).max(axis=2)
            cooling_w = site_w / physics.cop(supply)
            facility_w = site_w * (1 + sc.cooling.distribution_loss_fraction) + cooling_w
            wanted_supply = sc.cooling.redline_c - sc.cooling.supply_guard_c - rise.max(axis=1)
            supply = np.clip(
                supply + np.clip(wanted_supply - supply, -slew_c, slew_c),
                sc.cooling.min_supply_c,
                sc.cooling.max_supply_c,
            )

            # --- metrics ---------------------------------------------------------------------
            over = site_w - site_cap
            in_violation = over > 0
            viol_ws += np.maximum(over, 0) * dt
            overshoot = np.maximum(overshoot, over / site_cap)
            episodes += in_violation & (run_len == 0)
            run_len = np.where(in_violation, run_len + dt, 0.0)
            longest = np.maximum(longest, run_len)
            it_j += site_w * dt
            cool_j += cooling_w * dt
            fac_j += facility_w * dt
            carbon_g += physics.carbon_g(carbon_step[k], facility_w, dt)
            peak_inlet = np.maximum(peak_inlet, max_in)
            above_s += (max_in > sc.cooling.redline_c) * dt
            rack_peak = np.maximum(rack_peak, rack_w)
            site_peak = np.maximum(site_peak, site_w)

            slot = k % ring_len
            ring_site[slot] = site_w
            ring_svc_w[slot] = svc_w
            ring_svc_tok[slot] = tokens_step / dt
            ring_svc_queue[slot] = queue
            ring_rack_w[slot] = rack_w
            ring_rack_in[slot] = rack_in
            ring_srv_w[slot] = srv_w
            ring_srv_in[slot] = inlet
            ring_supply[slot] = supply_now

            if k % plot_every == 0:
                history.hours.append(now_s / 3600.0)
                history.site_w.append(site_w.copy())
                history.cap_w.append(cap_eff.copy())
                history.replicas.append(n_tot.astype(np.float64))
                history.ceilings.append(ceiling.astype(np.float64))
                history.max_inlet_c.append(max_in.copy())
                history.supply_c.append(supply.copy())
                history.carbon_g_per_kwh.append(float(carbon_step[k]))
                history.carbon_g.append(carbon_g.copy())

            # --- control: the policies decide on what Prometheus shows ----------------------
            if k % ctrl_steps == 0 and k >= ring_len:
                have_data = not outage[k]
                picks = [(k - lag_steps - i) % ring_len for i in range(win_steps)]

                def measured(ring: FloatArray, picks: list[int] = picks) -> FloatArray:
                    mean = ring[picks].mean(axis=0)
                    noise = noise_rng.normal(0.0, sc.measurement.noise_fraction, mean.shape[1:])
                    return np.asarray(mean * (1 + noise), dtype=np.float64)

                m_site = measured(ring_site)
                m_svc_w = measured(ring_svc_w)
                m_svc_tok = ring_svc_tok[picks].mean(axis=0)
                # Waiting requests (vLLM's num_requests_waiting), with their own noise stream:
                # adding the signal leaves every other draw as it was.
                m_svc_queue = ring_svc_queue[picks].mean(axis=0) * (
                    1 + demand_rng.normal(0.0, sc.measurement.noise_fraction, (n_pol, n_svc))
                )
                m_rack_w = measured(ring_rack_w)
                m_rack_in = ring_rack_in[picks].mean(axis=0)
                m_srv_w = measured(ring_srv_w)
                m_srv_in = ring_srv_in[picks].mean(axis=0)
                m_supply = ring_supply[picks].mean(axis=0)
                if have_data:
                    slot_h = series_count[0] % series_len
                    series_rack_w[:, :, slot_h] = m_rack_w
                    series_svc_w[:, :, slot_h] = m_svc_w
                    series_count[0] += 1
                    seen_srv_w[:], seen_srv_in[:] = m_srv_w, m_srv_in
                    seen_rack_w[:], seen_svc_w[:] = m_rack_w, m_svc_w
                    seen_supply[:] = m_supply
                    heat_history.append((m_srv_w, m_srv_in, m_supply))
                    heat_appended[0] += 1
                    if not exact:
                        # Nodes that host no replica show the idle draw (the live rule).
                        for p in range(n_pol):
                            idle[p] = learn_idle_power(idle[p], m_srv_w[p, host[p] < 0])
                else:
                    for seen in (seen_srv_w, seen_srv_in, seen_rack_w, seen_svc_w, seen_supply):
                        seen.fill(np.nan)
                if carbon_band is not None:
                    slot_start = EPOCH + timedelta(
                        seconds=float(slot_of_step[k] * sc.carbon.slot_s)
                    )
                    reading = CarbonReading(
                        intensity_g_per_kwh=float(carbon_step[k]),
                        slot_start=slot_start,
                        slot_end=slot_start + timedelta(seconds=sc.carbon.slot_s),
                    )
                    carbon_cap = cap_for_carbon(
                        reading,
                        base_cap_w=site_cap,
                        floor_w=carbon_band.floor_fraction * site_cap,
                        target=IntensityBandTarget(
                            carbon_band.clean_g_per_kwh, carbon_band.dirty_g_per_kwh
                        ),
                    ).cap_w
                else:
                    carbon_cap = site_cap
                for p, spec in enumerate(self.specs):
                    setting = settings[p]
                    if setting is None:
                        continue
                    cap_eff[p] = carbon_cap if spec.carbon else site_cap
                    targets = [
                        observe_target(
                            name=s.name,
                            current_replicas=int(n_tot[p, j]),
                            min_replicas=s.min_replicas,
                            user_max_replicas=s.max_replicas,
                            applied_max_replicas=int(ceiling[p, j]),
                            watts=float(m_svc_w[p, j]) if have_data else None,
                            tokens_per_s=float(m_svc_tok[p, j]) if have_data else None,
                            demand_tokens_per_s=(
                                demand_tokens_per_s(
                                    float(m_svc_tok[p, j]),
                                    float(m_svc_queue[p, j]),
                                    float(out_tokens[j]),
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
                    rack_obs = self._rack_observations(
                        have_data=have_data,
                        m_rack_w=m_rack_w[p],
                        m_rack_in=m_rack_in[p],
                        free=(host[p] < 0).reshape(n_rack, per_rack).sum(axis=1),
                        per_replica_w=measured_watts_per_replica(targets),
                        idle_w=idle[p].watts,
                    )
                    observation = observe_cap(
                        scope="site",
                        base_cap_w=site_cap,
                        cap_w=float(cap_eff[p]),
                        measured_w=float(m_site[p]) if have_data else None,
                        targets=targets,
                        racks=rack_obs,
                        per_target_budget=isinstance(setting, HeadroomSettings),
                    )
                    # The site measurement covers every server, idle ones included.
                    setting = ceiling_settings(setting, idle[p], scope_measures_nodes=True)
                    plan = decide_replica_ceilings(observation, setting, states[p], now_s)
                    states[p] = plan.state
                    if plan.prediction_error_w is not None:
                        errors[p].append(plan.prediction_error_w)
                    for j, decision in enumerate(plan.decisions):
                        if decision.changed:
                            writes[p] += 1
                        ceiling[p, j] = decision.new_max_replicas
                    if any(r.at_limit for r in rack_obs):
                        rack_blocked[p] += 1
                    idle_w = idle[p].watts
                    if joint[p] and have_data and idle_w is not None:
                        moved = self._decide_clocks(
                            p,
                            clock=clock,
                            ceiling=ceiling,
                            states=states,
                            sweeps=sweeps,
                            limits=limits,
                            tuned_mhz=tuned_mhz,
                            idle_w=idle_w,
                            cap_w=observation.cap_w,
                            site_w=float(m_site[p]),
                            service_w=m_svc_w[p],
                            replicas=n_tot[p],
                            free=int((host[p] < 0).sum()),
                            predicted_w=plan.predicted_w,
                            settled=now_s - clock_set_s[p] >= settle_s,
                        )
                        if moved.any():
                            clock_changes[p] += int(moved.sum())
                            clock_set_s[p, moved] = now_s
                            set_timing()

            # --- autoscaling (KEDA / HPA) ----------------------------------------------------
            wanted = np.ceil((lam + queue / drain_s) / (mu * target_util) - 1e-9).astype(np.int64)
            desired = np.clip(wanted, min_rep, np.maximum(ceiling, min_rep))
            rec_hist[:, :, k % window] = desired
            stabilised = rec_hist.max(axis=2)
            target = np.where(desired >= n_tot, desired, np.minimum(n_tot, stabilised))
            target = np.clip(target, min_rep, np.maximum(ceiling, min_rep))
            for p, j in zip(*np.nonzero(target != n_tot), strict=True):
                change = int(target[p, j] - n_tot[p, j])
                for _ in range(abs(change)):
                    if change > 0:
                        if not place(int(p), int(j), now_s):
                            break
                    else:
                        remove(int(p), int(j))

            if progress is not None and k % prog_every == 0:
                progress(k / steps)
        if progress is not None:
            progress(1.0)

        duration_s = steps * dt
        results: dict[str, dict[str, float]] = {}
        details: dict[str, dict[str, object]] = {}
        redline = sc.cooling.redline_c
        for p, name in enumerate(self.policy_names):
            total_tokens = float(tokens[p].sum())
            results[name] = {
                "cap_violation_ws": float(viol_ws[p]),
                "max_overshoot_pct": float(max(0.0, overshoot[p]) * 100.0),
                "tokens": total_tokens,
                "tokens_per_s": total_tokens / duration_s,
                "tokens_per_joule": total_tokens / float(it_j[p]) if it_j[p] > 0 else 0.0,
                "energy_kwh": float(it_j[p] / physics.J_PER_KWH),
                "cooling_kwh": float(cool_j[p] / physics.J_PER_KWH),
                "peak_inlet_c": float(peak_inlet[p]),
                "time_above_redline_s": float(above_s[p]),
                "carbon_g": float(carbon_g[p]),
                "carbon_g_per_1k_tokens": (
                    float(carbon_g[p]) / total_tokens * 1000.0 if total_tokens > 0 else 0.0
                ),
                "slo_attainment": float(met_req[p].sum() / max(arrived_req[p].sum(), 1e-9)),
                "peak_to_average": float(rack_peak[p].sum() / max(site_peak[p], 1e-9)),
            }
            details[name] = {
                "violation_episodes": int(episodes[p]),
                "longest_violation_s": float(longest[p]),
                "cap_violation_pct_of_cap_time": float(
                    viol_ws[p] / (site_cap * duration_s) * 100.0
                ),
                "slo_attainment_by_service": {
                    s.name: float(met_req[p, j] / max(arrived_req[p, j], 1e-9))
                    for j, s in enumerate(services)
                },
                "tokens_per_facility_joule": (
                    float(tokens[p].sum() / fac_j[p]) if fac_j[p] > 0 else 0.0
                ),
                "facility_kwh": float(fac_j[p] / physics.J_PER_KWH),
                "ceiling_writes": int(writes[p]),
                "control_steps_with_a_rack_at_limit": int(rack_blocked[p]),
                "gpu_clock_mhz": {
                    s.name: round(float(clock_s[p, j]) / duration_s * gpu.max_clock_mhz)
                    for j, s in enumerate(services)
                },
                "gpu_clock_changes": int(clock_changes[p]),
                "carbon_basis": "location-based (grid average intensity x facility energy)",
            }
            if errors[p]:
                # The power model's error: the measured site power at a decision against what
                # the previous decision predicted for its ceilings (mean absolute and bias).
                err = np.asarray(errors[p])
                details[name]["power_prediction_error_pct_of_cap"] = float(
                    np.abs(err).mean() / site_cap * 100.0
                )
                details[name]["power_prediction_bias_pct_of_cap"] = float(
                    err.mean() / site_cap * 100.0
                )
        if clock_reasons:
            losses = per_replica_slowdown(sc, tuned)
            for p, spec in enumerate(self.specs):
                if spec.tuned_clocks:
                    details[self.policy_names[p]]["gpu_clock_reason"] = clock_reasons
                    details[self.policy_names[p]]["gpu_clock_per_replica_loss"] = losses
        return SimResult(
            scenario=sc.name,
            duration_s=duration_s,
            policies=results,
            details=details,
            history=history,
            service_names=[s.name for s in services],
            site_cap_w=site_cap,
            redline_c=redline,
            step_s=dt,
            site_w_per_step=site_w_per_step,
            knowledge="exact" if exact else "measured",
        )

    def _decide_clocks(
        self,
        p: int,
        *,
        clock: FloatArray,
        ceiling: IntArray,
        states: list[CappingState],
        sweeps: list[list[ClockSample]],
        limits: list[ClockBounds],
        tuned_mhz: list[int],
        idle_w: float,
        cap_w: float,
        site_w: float,
        service_w: FloatArray,
        replicas: IntArray,
        free: int,
        predicted_w: float | None,
        settled: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.bool_]:
        """Policy p's clocks decided with its replicas (`clocks_under_cap`) on what the
        controller measures: the dynamic watts the cap leaves (the cap less the margin, less
        the measured site power that is not the targets' work), each target's demand envelope
        and its seats. A changed clock rescales the target's power model by the sweep's
        ratios (`rescale_for_clock`). A clock rises only into what both the plan's prediction
        and the measured site power leave under the cap, and only once settled. Returns which
        services' clocks changed."""
        services = self.scenario.services
        max_mhz = self.scenario.racks.gpu_curve.max_clock_mhz
        dynamic_w = sum(
            max(0.0, float(service_w[j]) - int(replicas[j]) * idle_w) for j in range(len(services))
        )
        usable_w = cap_w * (1.0 - self.headroom.safety_margin_fraction)
        budget_w = usable_w - (site_w - dynamic_w)
        current = [round(float(clock[p, j]) * max_mhz) for j in range(len(services))]
        learners = states[p].targets
        picks = clocks_under_cap(
            [
                ClockTarget(
                    name=s.name,
                    samples=tuple(sweeps[j]),
                    tuned_mhz=tuned_mhz[j],
                    current_mhz=current[j],
                    demand_tokens_per_s=(
                        learners[s.name].demand_tokens_per_s if s.name in learners else None
                    ),
                    seats=min(s.max_replicas, int(replicas[j]) + free),
                    allowed_replicas=max(int(replicas[j]), int(ceiling[p, j])),
                    priority=s.priority,
                    max_p99_token_latency_s=limits[j].max_p99_token_latency_s,
                    settled=bool(settled[j]),
                )
                for j, s in enumerate(services)
            ],
            dynamic_budget_w=budget_w,
            idle_w=idle_w,
            spare_w=None if predicted_w is None else usable_w - max(predicted_w, site_w),
        )
        moved = np.zeros(len(services), dtype=bool)
        for j, s in enumerate(services):
            new = picks[s.name]
            if new == current[j]:
                continue
            ratios = clock_change_ratios(sweeps[j], current[j], new, idle_w)
            if ratios is None:
                continue
            states[p] = rescale_for_clock(states[p], s.name, *ratios)
            clock[p, j] = new / max_mhz
            moved[j] = True
        return moved

    def _rack_observations(
        self,
        *,
        have_data: bool,
        m_rack_w: FloatArray,
        m_rack_in: FloatArray,
        free: IntArray,
        per_replica_w: float | None,
        idle_w: float | None,
    ) -> tuple[RackObservation, ...]:
        """The scenario's rack limits with what the controller measures of each rack (none
        when the scenario sets no rack limit, as a config without `rackConstraints`)."""
        caps = self.scenario.caps
        if caps.rack_max_w is None and caps.rack_max_inlet_c is None:
            return ()
        readings = [
            RackReading(
                rack_id=f"rack-{r}",
                watts=float(m_rack_w[r]) if have_data else None,
                inlet_c=float(m_rack_in[r]) if have_data else None,
                max_watts=caps.rack_max_w,
                max_inlet_c=caps.rack_max_inlet_c,
                free_nodes=int(free[r]),
            )
            for r in range(len(m_rack_w))
        ]
        return observe_racks(readings, per_replica_w=per_replica_w, idle_w=idle_w)
