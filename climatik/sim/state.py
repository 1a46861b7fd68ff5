"""The state a run advances: every policy's arrays (leading policy axis), grouped by what
they describe, and how a run starts.

Each step of the time loop (`sim.steps_*`) reads the `World` and reads or writes the parts of
`TwinState` it names; nothing else holds state between steps. The starting state is a warm
start: the replicas the first arrivals need, the room at its first load's supply setting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from climatik.domain.capping import CappingState
from climatik.domain.placement import RecirculationEstimate
from climatik.policies.observations import HEAT_HISTORY_SAMPLES, IdlePower
from climatik.sim import physics
from climatik.sim.backlog import AgedQueue
from climatik.sim.result import History
from climatik.sim.scenario import Scenario
from climatik.sim.steps_plan import Planner
from climatik.sim.world import FloatArray, HeatMatrix, IntArray, World


@dataclass(slots=True, eq=False)
class Timing:
    """Each service's request time and phase powers at each policy's clock (policies x
    services). The arrays are updated in place, so every holder sees a moved clock."""

    clock: FloatArray
    """Clock ratio (f / f_max)."""
    pre_s: FloatArray
    dec_s: FloatArray
    busy_s: FloatArray
    pre_dyn_w: FloatArray
    dec_dyn_w: FloatArray
    mu: FloatArray
    """Requests per second per replica at full batch."""
    pre_share: FloatArray

    @classmethod
    def at(cls, clock: FloatArray, scenario: Scenario) -> Timing:
        """The timing at the given clocks."""
        timing = cls(clock, *(np.zeros(clock.shape) for _ in range(7)))
        timing.update(scenario)
        return timing

    def update(self, scenario: Scenario) -> None:
        """Recompute everything from `clock` (after a clock moved)."""
        gpu = scenario.racks.gpu_curve
        for j, s in enumerate(scenario.services):
            pre, dec = physics.request_busy_s(
                s.model_class, s.prompt_tokens, s.output_tokens, self.clock[:, j]
            )
            self.pre_s[:, j], self.dec_s[:, j] = pre, dec
        self.busy_s[:] = self.pre_s + self.dec_s
        prefill_w = physics.gpu_phase_power_w(gpu.prefill_max_w, self.clock, gpu)
        decode_w = physics.gpu_phase_power_w(gpu.decode_max_w, self.clock, gpu)
        self.pre_dyn_w[:] = prefill_w - gpu.idle_w
        self.dec_dyn_w[:] = decode_w - gpu.idle_w
        self.mu[:] = 1.0 / self.busy_s
        self.pre_share[:] = self.pre_s / self.busy_s


@dataclass(slots=True, eq=False)
class Fleet:
    """Where each policy's replicas run (one per server), each service's request queue and
    the autoscaler's memory."""

    host: IntArray
    """Service index of the replica on each server, -1 where the server is free."""
    ready_at: FloatArray
    born: FloatArray
    rr_next: IntArray
    """Round-robin placement's next server."""
    queue: FloatArray
    """Requests waiting per service."""
    wanted: IntArray
    """The autoscaler's wish before the ceiling clamps it."""
    rec_hist: IntArray
    """The autoscaler's recent recommendations (scale-down stabilisation window)."""
    aged: dict[int, AgedQueue]
    """Deferrable services' queues by age, by service index (their `queue` is the sum)."""
    migrated_at: FloatArray
    """When each policy last moved a replica to a cooler place (-inf: never)."""


@dataclass(slots=True, eq=False)
class Room:
    """The physical room per policy: server power, inlets, their lagged rise and the supply air."""

    srv_w: FloatArray
    inlet: FloatArray
    rise: FloatArray
    supply: FloatArray


@dataclass(slots=True, eq=False)
class Ring:
    """The last lag + window steps of what Prometheus would hold, indexed by step modulo length."""

    site: FloatArray
    svc_w: FloatArray
    svc_tok: FloatArray
    svc_queue: FloatArray
    rack_w: FloatArray
    rack_in: FloatArray
    srv_w: FloatArray
    srv_in: FloatArray
    supply: FloatArray


@dataclass(slots=True, eq=False)
class Seen:
    """What the controller last measured per policy (NaN: no data), refreshed every control
    interval, and what it learned from it: the heat history and fits, the idle draw, the last
    hour of rack and service power."""

    srv_w: FloatArray
    srv_in: FloatArray
    rack_w: FloatArray
    svc_w: FloatArray
    supply: FloatArray
    heat_history: deque[tuple[FloatArray, FloatArray, FloatArray]]
    """(server watts, inlets, supply air) per policy: the supply is read as a config with a
    supply-temperature query reads it, and lets the fit follow the cooling unit."""
    heat_fits: dict[int, tuple[int, RecirculationEstimate | None, HeatMatrix]]
    """Per policy: when it was fitted, the fit, and its coefficients (built once per fit)."""
    heat_appended: int
    idle: list[IdlePower]
    series_rack_w: FloatArray
    """The last hour of measured rack and service power, one sample per control interval, for
    the smoothing term (the live controller fetches the same hour from Prometheus)."""
    series_svc_w: FloatArray
    series_count: int
    replica_guess_w: FloatArray
    """What one replica adds to its server's draw before any is measured: the server at the
    autoscaler's target utilisation, at the policy's starting clock."""


@dataclass(slots=True, eq=False)
class Control:
    """What the controller decided per policy and what it counts of its own actions."""

    ceiling: IntArray
    """The replica ceiling (maxReplicaCount) per service."""
    cap_eff: FloatArray
    """The cap in force (the carbon cap for policies that follow carbon)."""
    states: list[CappingState]
    clock_set_s: FloatArray
    """When each policy last changed each service's clock (simulated seconds)."""
    clock_changes: IntArray
    writes: IntArray
    rack_blocked: IntArray
    errors: list[list[float]]
    """Per policy, measured minus predicted scope power at every decision (headroom)."""


@dataclass(slots=True, eq=False)
class Tally:
    """The run's accumulated figures per policy, and the plot series."""

    viol_ws: FloatArray
    overshoot: FloatArray
    episodes: IntArray
    run_len: FloatArray
    longest: FloatArray
    tokens: FloatArray
    arrived_req: FloatArray
    met_req: FloatArray
    it_j: FloatArray
    cool_j: FloatArray
    fac_j: FloatArray
    carbon_g: FloatArray
    peak_inlet: FloatArray
    above_s: FloatArray
    rack_peak: FloatArray
    site_peak: FloatArray
    clock_s: FloatArray
    """Seconds x clock ratio, per policy and service: the run's mean clock."""
    site_w_per_step: FloatArray
    replicas_per_step: IntArray
    """Replicas of each service in every step (steps x policies x services), starting ones
    included: what the whole-replica placement bound places."""
    service_w_per_step: FloatArray
    """IT power of each service's servers in every step (steps x policies x services)."""
    history: History


@dataclass(slots=True, eq=False)
class Streams:
    """The run's random streams. Common random numbers: every policy sees the same power and
    measurement noise, drawn once per step whatever the set of policies compared, so a
    policy's figures do not depend on which others run beside it."""

    noise: np.random.Generator
    placement: np.random.Generator
    demand: np.random.Generator
    """Noise of the waiting-requests signal, a stream of its own so that adding the signal
    left every other draw as it was."""


@dataclass(slots=True, eq=False)
class TwinState:
    """Everything a run advances, by concern."""

    timing: Timing
    fleet: Fleet
    room: Room
    ring: Ring
    seen: Seen
    control: Control
    tally: Tally
    rng: Streams
    planner: Planner


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


def initial_state(world: World, seed: int) -> TwinState:
    """The state at hour 0, before any replica is placed (`steps_autoscale.warm_start` places
    the first arrivals' replicas)."""
    sc = world.scenario
    racks, cooling = sc.racks, sc.cooling
    gpu = racks.gpu_curve
    n_pol, n_srv, n_svc, n_rack = world.n_pol, world.n_srv, world.n_svc, world.n_rack
    timing = Timing.at(world.clocks.start.copy(), sc)

    ceiling = np.tile(world.max_rep, (n_pol, 1)).astype(np.int64)
    static = static_ceilings(sc)
    for p, spec in enumerate(world.specs):
        if spec.ceilings == "static":
            ceiling[p] = static
    # Warm start at what the first arrivals need.
    want0 = np.ceil(world.rates[0] / (timing.mu * world.target_util)).astype(np.int64)
    want0 = np.clip(want0, world.min_rep, ceiling)

    guess_gpu_w = gpu.idle_w + world.target_util[None, :] * (
        timing.pre_share * timing.pre_dyn_w + (1 - timing.pre_share) * timing.dec_dyn_w
    )
    replica_guess_w = (
        physics.server_power_w(
            guess_gpu_w,
            racks.gpus_per_server,
            gpu.idle_w,
            racks.server_base_w,
            racks.server_gpu_overhead,
        )
        - world.idle_server_w
    )
    ring_len = world.ring_len
    return TwinState(
        timing=timing,
        fleet=Fleet(
            host=np.full((n_pol, n_srv), -1, dtype=np.int64),
            ready_at=np.full((n_pol, n_srv), np.inf),
            born=np.zeros((n_pol, n_srv)),
            rr_next=np.zeros(n_pol, dtype=np.int64),
            queue=np.zeros((n_pol, n_svc)),
            wanted=want0.copy(),
            rec_hist=np.repeat(want0[:, :, None], world.window, axis=2).astype(np.int64),
            aged={
                j: AgedQueue.empty(n_pol, s.slo.ttft_s, s.queue_timeout_s, world.dt)
                for j, s in enumerate(sc.services)
                if s.deferrable
            },
            migrated_at=np.full(n_pol, -np.inf),
        ),
        room=Room(
            srv_w=np.full((n_pol, n_srv), world.idle_server_w),
            inlet=np.zeros((n_pol, n_srv)),
            rise=np.zeros((n_pol, n_srv)),
            supply=np.full(n_pol, np.clip(*cooling.supply_limits_c)),
        ),
        ring=Ring(
            site=np.zeros((ring_len, n_pol)),
            svc_w=np.zeros((ring_len, n_pol, n_svc)),
            svc_tok=np.zeros((ring_len, n_pol, n_svc)),
            svc_queue=np.zeros((ring_len, n_pol, n_svc)),
            rack_w=np.zeros((ring_len, n_pol, n_rack)),
            rack_in=np.zeros((ring_len, n_pol, n_rack)),
            srv_w=np.zeros((ring_len, n_pol, n_srv)),
            srv_in=np.zeros((ring_len, n_pol, n_srv)),
            supply=np.zeros((ring_len, n_pol)),
        ),
        seen=Seen(
            srv_w=np.full((n_pol, n_srv), np.nan),
            srv_in=np.full((n_pol, n_srv), np.nan),
            rack_w=np.full((n_pol, n_rack), np.nan),
            svc_w=np.full((n_pol, n_svc), np.nan),
            supply=np.full(n_pol, np.nan),
            heat_history=deque(maxlen=HEAT_HISTORY_SAMPLES),
            heat_fits={},
            heat_appended=0,
            idle=[IdlePower(world.idle_server_w if world.exact else None) for _ in world.specs],
            series_rack_w=np.zeros((n_pol, n_rack, world.series_len)),
            series_svc_w=np.zeros((n_pol, n_svc, world.series_len)),
            series_count=0,
            replica_guess_w=replica_guess_w,
        ),
        control=Control(
            ceiling=ceiling,
            cap_eff=np.full(n_pol, world.site_cap),
            states=[CappingState() for _ in world.specs],
            clock_set_s=np.full((n_pol, n_svc), -np.inf),
            clock_changes=np.zeros(n_pol, dtype=np.int64),
            writes=np.zeros(n_pol, dtype=np.int64),
            rack_blocked=np.zeros(n_pol, dtype=np.int64),
            errors=[[] for _ in world.specs],
        ),
        tally=Tally(
            viol_ws=np.zeros(n_pol),
            overshoot=np.zeros(n_pol),
            episodes=np.zeros(n_pol, dtype=np.int64),
            run_len=np.zeros(n_pol),
            longest=np.zeros(n_pol),
            tokens=np.zeros((n_pol, n_svc)),
            arrived_req=np.zeros((n_pol, n_svc)),
            met_req=np.zeros((n_pol, n_svc)),
            it_j=np.zeros(n_pol),
            cool_j=np.zeros(n_pol),
            fac_j=np.zeros(n_pol),
            carbon_g=np.zeros(n_pol),
            peak_inlet=np.full(n_pol, -np.inf),
            above_s=np.zeros(n_pol),
            rack_peak=np.zeros((n_pol, n_rack)),
            site_peak=np.zeros(n_pol),
            clock_s=np.zeros((n_pol, n_svc)),
            site_w_per_step=np.zeros((world.steps, n_pol)),
            replicas_per_step=np.zeros((world.steps, n_pol, n_svc), dtype=np.int64),
            service_w_per_step=np.zeros((world.steps, n_pol, n_svc)),
            history=History(),
        ),
        rng=Streams(
            noise=np.random.default_rng(seed),
            placement=np.random.default_rng([seed, 7919]),
            demand=np.random.default_rng([seed, 4099]),
        ),
        planner=Planner(),
    )
