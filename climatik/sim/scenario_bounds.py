"""A scenario's bounds: the LPs of `climatik.sim.bounds` fed from the scenario alone (issue 16).

`compute_bounds(scenario, hours)` builds the LPs' inputs from the scenario: its demand and
carbon series as the twin generates them (`climatik.sim.workload`), its room and caps, and
per-request costs at every clock of the tuner's sweep from the twin's own physics
(`climatik.sim.physics`). Nothing here reads a policy's run; `climatik.sim.shares` sets a run
beside the bounds.

The cooling bound is a curve, not one number: the least cooling power the room can have at each
IT power (`ScenarioBounds.cooling_floor_kwh` integrates it over any IT power series).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from climatik.sim import bounds as lp
from climatik.sim import physics
from climatik.sim import whole_placement as wp
from climatik.sim.clocks import tuned_clock_ratios
from climatik.sim.envelopes import lower_frontier, upper_lines
from climatik.sim.lp import OPTIMAL
from climatik.sim.scenario import Scenario
from climatik.sim.workload import arrival_rates, carbon_slots

FloatArray = npt.NDArray[np.float64]

BLOCK_S = 300.0
"""Throughput and SLO LPs decide per block of whole control intervals: 5 minutes (the issue's
perfect-foresight bound decided every 5 minutes too)."""
MAX_BLOCKS = 2016
"""A week of 5-minute blocks; longer runs get longer blocks (the LPs grow faster than linearly)."""
COLOCATION_BLOCKS = 96
"""The co-location LP looks at the blocks with the highest load (the site's peak among them)."""
RISE_GRID = 48
"""IT powers at which the least hottest rise is solved (tangents bound it in between)."""
ENVELOPE_POINTS = 400
"""Samples of the SLO's met share over the served fraction, before its envelope is taken."""
ENVELOPE_LINES = 12
"""Lines of the SLO envelope kept (a subset only loosens it)."""
CLOCK_GROUPS = 6
"""The SLO bound's clock options: the sweep's clocks in this many runs of neighbours, each run
replaced by one option with the least energy, the least replica time and the best latency of
its clocks (a relaxation of every clock in it; one run would be the cheapest clock's energy
with the best clock's latency)."""
SEAT_POINTS = 300
"""Samples of the SLO's met share over replica-seconds per request (a geometric grid)."""
SLO_LINES_PER_CLOCK = 8
"""Lines of each clock option's SLO envelope (a subset only loosens it)."""
FRONTIER_SEGMENTS = 5
"""Segments of the clocks' energy frontier kept (a subset only loosens it)."""

PLACEMENT_BLOCK_S = 300.0
"""The whole-replica placement bound places each 5-minute block's replicas anew."""
PLACEMENT_MAX_BLOCKS = 288
"""A day of such blocks; longer runs get longer blocks (one MIP per distinct block)."""
PLACEMENT_MIP_TIME_LIMIT_S = 2.0
PLACEMENT_MIP_NODE_LIMIT = 5_000
"""Limits of one placement MIP (`exact_placement`): rooms of up to 24 servers mostly prove the
optimum within them, in a few to a few hundred milliseconds; where one stops, its gap is
reported. The node limit stops at the same placement on a busy machine, the time limit caps
a large room (128 servers: about 2 % after 1 s)."""
PLACEMENT_POWER_STEPS = 100
"""A replica's draw is rounded to this many steps of a server's dynamic range before the
greedy or the MIP (blocks that round alike share one search); the placement found is then
evaluated at the unrounded draws. Enumeration needs no rounding."""

SOLVER = "HiGHS (highspy) LP"


@dataclass(frozen=True, slots=True)
class Bound:
    """One bound: its figures, how the solver ended, and what it relaxes."""

    values: dict[str, object]
    status: str
    relaxations: tuple[str, ...]
    mip_gap: float = 0.0

    def as_json(self) -> dict[str, object]:
        """The bound's entry in `--json`."""
        return {
            "values": self.values,
            "status": self.status,
            "solver": SOLVER,
            "mip_gap": self.mip_gap,
            "relaxations": list(self.relaxations),
        }


@dataclass(frozen=True, slots=True)
class WholeReplicaCooling:
    """One run's cooling with its replicas placed exactly, block by block."""

    cooling_kwh: float
    peak_inlet_c: float
    """Steady inlets (no lag) of the placement found, at the supply air it needs."""
    time_above_redline_s: float
    mip_gap: float
    """The largest relative gap of any block's placement to a proven lower bound of its hottest
    rise (0: every placement proven optimal)."""
    solves: int
    """Searches (greedy or MIP) this evaluation added to the cache; enumerations not counted."""
    statuses: str


@dataclass(frozen=True, slots=True)
class WholeReplicaPlacer:
    """The placement of whole replicas with the lowest hottest inlet, per block of a run.

    Per block: each service's mean replica count (rounded; at least one where it drew power)
    at its mean draw per replica, one replica per server; the rest of the servers idle. With
    the supply air at redline - guard - the hottest rise (or fixed), the least hottest rise is
    the least cooling for the block's replicas. Placed by enumeration where the room's
    placements are few (exact); otherwise by `whole_placement.improved` (its gap to the
    fractional floor reported), or, with `exact`, by the MIP from there (its gap reported
    where a limit stopped it). Searches are cached by (counts, rounded draws)."""

    d_matrix: FloatArray
    idle_w: float
    dynamic_w: float
    block_steps: int
    supply_limits_c: tuple[float, float, float]
    redline_c: float
    step_s: float
    rise_curve: lp.RiseCurve
    """The fractional floor: the lower bound that `improved`'s gap is measured against."""
    exact: bool
    _cache: dict[tuple[tuple[int, ...], tuple[int, ...]], wp.WholePlacement]
    _every: dict[tuple[int, ...], npt.NDArray[np.int64]]

    def placement(
        self, replicas: npt.NDArray[np.int64], replica_w: FloatArray
    ) -> wp.WholePlacement:
        """The best placement found of `replicas` drawing `replica_w` each over idle."""
        n_srv = self.d_matrix.shape[0]
        counts = tuple(int(n) for n in replicas)
        if counts in self._every or wp.placement_count(n_srv, replicas) <= wp.ENUMERATION_LIMIT:
            if counts not in self._every:
                self._every[counts] = wp.every_placement(n_srv, replicas)
            return wp.enumerated(self.d_matrix, self.idle_w, self._every[counts], replica_w)
        quantum = self.dynamic_w / PLACEMENT_POWER_STEPS
        levels = np.maximum(np.rint(replica_w / quantum), 0).astype(np.int64)
        key = (counts, tuple(int(q) for q in levels))
        found = self._cache.get(key)
        if found is None:
            rounded = levels.astype(np.float64) * quantum
            if self.exact:
                found = wp.least_hottest_rise_whole(
                    self.d_matrix,
                    self.idle_w,
                    replicas,
                    rounded,
                    time_limit_s=PLACEMENT_MIP_TIME_LIMIT_S,
                    node_limit=PLACEMENT_MIP_NODE_LIMIT,
                )
            else:
                found = wp.improved(self.d_matrix, self.idle_w, replicas, rounded)
                total = n_srv * self.idle_w + float(replicas @ rounded)
                floor = float(self.rise_curve.lower_rise_c(np.array([total]))[0])
                gap = (found.rise_c - floor) / found.rise_c if found.rise_c > 0 else 0.0
                found = replace(found, mip_gap=max(gap, 0.0))
            self._cache[key] = found
        return found

    def evaluate(
        self,
        site_w: FloatArray,
        replicas: npt.NDArray[np.int64],
        service_w: FloatArray,
    ) -> WholeReplicaCooling:
        """Cooling, peak inlet and time above redline of one policy's run (per step: site
        IT power; replicas and IT power per service) with its replicas placed exactly."""
        steps = site_w.size
        n_srv = self.d_matrix.shape[0]
        aim_c, low_c, high_c = self.supply_limits_c
        rise = np.zeros(steps)
        gap, statuses, solves = 0.0, [], len(self._cache)
        for start in range(0, steps, self.block_steps):
            block = slice(start, min(start + self.block_steps, steps))
            mean_n = replicas[block].mean(axis=0)
            drew = service_w[block].mean(axis=0)
            counts = np.where(drew > 0, np.maximum(np.rint(mean_n), 1), 0).astype(np.int64)
            counts = _fit_seats(counts, mean_n, n_srv)
            per_replica = np.where(
                counts > 0, drew / np.maximum(counts, 1) - self.idle_w, 0.0
            ).clip(0.0, None)
            found = self.placement(counts, per_replica)
            statuses.append(found.status)
            gap = max(gap, found.mip_gap) if math.isfinite(found.mip_gap) else float("nan")
            power = np.full(n_srv, self.idle_w)
            seated = found.host >= 0
            power[seated] += per_replica[found.host[seated]]
            rise[block] = float((self.d_matrix @ power).max())
        supply = np.clip(aim_c - rise, low_c, high_c)
        cooling_w = site_w / physics.cop(supply)
        inlet = supply + rise
        return WholeReplicaCooling(
            cooling_kwh=float(cooling_w.sum() * self.step_s / physics.J_PER_KWH),
            peak_inlet_c=float(inlet.max()),
            time_above_redline_s=float((inlet > self.redline_c).sum() * self.step_s),
            mip_gap=gap,
            solves=len(self._cache) - solves,
            statuses=_summary(tuple(statuses)),
        )


def _fit_seats(
    counts: npt.NDArray[np.int64], mean_n: FloatArray, servers: int
) -> npt.NDArray[np.int64]:
    """Rounded counts that fit one replica per server: rounding up past the room is undone
    where the mean was furthest below its rounded count."""
    counts = counts.copy()
    while counts.sum() > servers:
        counts[int(np.argmax(counts - mean_n))] -= 1
    return counts


@dataclass(frozen=True, slots=True)
class ScenarioBounds:
    """Every bound of one scenario over one run length."""

    throughput: Bound
    cooling: Bound
    carbon: Bound
    peak_to_average: Bound
    rise_curve: lp.RiseCurve
    step_s: float
    supply_limits_c: tuple[float, float, float]
    """(redline - guard, min supply, max supply): how the CRAC sets the supply air."""
    whole: WholeReplicaPlacer
    """The exact placement of whole replicas, for a run's own replica counts."""

    def cooling_floor_kwh(self, site_w_per_step: FloatArray) -> float:
        """Least cooling energy any placement could have needed for this IT power series."""
        target, low, high = self.supply_limits_c
        rise = self.rise_curve.lower_rise_c(site_w_per_step)
        supply = np.clip(target - rise, low, high)
        cooling_w = site_w_per_step / physics.cop(supply)
        return float(cooling_w.sum() * self.step_s / physics.J_PER_KWH)


@dataclass(frozen=True, slots=True)
class _Serving:
    """Per service (rows) and clock (columns): what one request costs on the twin."""

    clock_ratio: FloatArray
    energy_j: FloatArray
    replica_s: FloatArray
    prefill_s: FloatArray


def _serving(scenario: Scenario) -> _Serving:
    racks = scenario.racks
    gpu = racks.gpu_curve
    ratios = physics.clock_sweep_mhz(gpu) / gpu.max_clock_mhz
    idle_server_w = racks.idle_server_w
    shape = (len(scenario.services), ratios.size)
    energy, seconds, prefill = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for j, service in enumerate(scenario.services):
        pre, dec = physics.request_busy_s(
            service.model_class, service.prompt_tokens, service.output_tokens, ratios
        )
        busy = pre + dec
        gpu_w = physics.gpu_power_w(ratios, pre / busy, dec / busy, gpu)
        server_w = physics.server_power_w(
            gpu_w, racks.gpus_per_server, gpu.idle_w, racks.server_base_w, racks.server_gpu_overhead
        )
        energy[j] = (server_w - idle_server_w) * busy
        seconds[j] = busy
        prefill[j] = pre
    return _Serving(ratios, energy, seconds, prefill)


def _room(scenario: Scenario) -> tuple[float, float, float]:
    """(idle server W, full server W, dynamic power budget W) under the site and rack caps."""
    racks = scenario.racks
    idle, full = racks.idle_server_w, racks.nameplate_server_w
    cap = scenario.caps.site_cap_w
    if scenario.caps.rack_max_w is not None:
        cap = min(cap, racks.count * scenario.caps.rack_max_w)
    return idle, full, max(0.0, cap - racks.servers * idle)


def _steps(scenario: Scenario, hours: float) -> int:
    return max(1, round(hours * 3600.0 / scenario.step_s))


def _blocks(scenario: Scenario, steps: int) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Block of every step, and each block's length in seconds."""
    per_ctrl = max(1, round(scenario.control_interval_s / scenario.step_s))
    intervals = max(
        round(BLOCK_S / (per_ctrl * scenario.step_s)), math.ceil(steps / per_ctrl / MAX_BLOCKS), 1
    )
    per_block = per_ctrl * intervals
    block_of = np.arange(steps) // per_block
    lengths = np.bincount(block_of).astype(np.float64) * scenario.step_s
    return block_of, lengths


def _slo_inputs(
    scenario: Scenario, serving: _Serving, rates: FloatArray, block_of: npt.NDArray[np.int64]
) -> tuple[FloatArray, list[list[tuple[FloatArray, FloatArray]]]]:
    """Upper bounds of the twin's met share per clock: all of a block served, or a fraction.

    Served in full (no queue) at clock c, a request meets its SLO with at most the twin's met
    fraction at the lowest utilisation the most replicas give at c (the block's quietest step).
    Served in part (x < 1 of the arrivals), the queue holds at least min((1/x - 1) step,
    timeout) seconds of work at utilisation 1; the met fraction at c is then at most h_c(x),
    and the lines returned are the least concave majorant of h_c sampled from above (h_c
    increases with x). Full: (blocks, services, clocks); lines: per service, per clock.
    """
    dt = scenario.step_s
    n_blocks = int(block_of[-1]) + 1
    servers = scenario.racks.servers
    n_c = serving.clock_ratio.size
    full = np.zeros((n_blocks, len(scenario.services), n_c))
    groups = _clock_groups(serving)
    lines: list[list[tuple[FloatArray, FloatArray]]] = []
    x = np.linspace(0.0, 1.0, ENVELOPE_POINTS + 1)
    for j, service in enumerate(scenario.services):
        model = service.model_class
        quietest = np.full(n_blocks, np.inf)
        np.minimum.at(quietest, block_of, rates[:, j])
        rate_max = min(service.max_replicas, servers) / serving.replica_s[j]
        util = quietest[:, None] / rate_max[None, :]
        wait = physics.ttft_wait_s(0.0, 1.0, serving.prefill_s[j][None, :], np.minimum(util, 1.0))
        met = physics.ttft_met_fraction(service.slo.ttft_s, serving.prefill_s[j][None, :], wait)
        tbt = physics.decode_step_s(model, np.minimum(util, 1.0), serving.clock_ratio[None, :])
        full[:, j, :] = np.where((util <= 1.0) & (tbt <= service.slo.tbt_s), met, 0.0)

        with np.errstate(divide="ignore"):
            backlog_s = np.minimum((1.0 / x - 1.0) * dt, service.queue_timeout_s)
        wait_part = backlog_s[:, None] + physics.ttft_wait_s(
            0.0, 1.0, serving.prefill_s[j][None, :], 1.0
        )
        part = physics.ttft_met_fraction(
            service.slo.ttft_s, serving.prefill_s[j][None, :], wait_part
        )
        tbt_full = physics.decode_step_s(model, 1.0, serving.clock_ratio)
        part = np.where(tbt_full[None, :] <= service.slo.tbt_s, part, 0.0)
        per_clock = []
        for group in groups:
            # On [x_i, x_i+1] h is at most h(x_i+1): the points (x_i, h(x_i+1)) lie above h.
            best = part[:, group].max(axis=1)
            above = np.append(best[1:], best[-1])
            per_clock.append(upper_lines(x, above, SLO_LINES_PER_CLOCK))
        lines.append(per_clock)
    grouped = np.stack([full[:, :, g].max(axis=2) for g in groups], axis=2)
    return grouped, lines


def _seat_lines(scenario: Scenario, serving: _Serving) -> list[list[tuple[FloatArray, FloatArray]]]:
    """Per service and clock option: lines above the met share as a function of the replica
    seconds held per request served in full (v).

    With n replicas at clock c and arrival rate lam, the utilisation is at least
    min(1, lam / (n mu_c)) = min(1, 1 / (v mu_c)), and the twin's met fraction (no queue, the
    in-replica wait and the TBT check) falls with it: phi_c(v) = met(min(1, 1 / (v mu_c))),
    increasing in v. Sampled from above on a grid (on [v_i, v_i+1] phi is at most
    phi(v_i+1)), up to its supremum at v -> inf, and replaced by its least concave majorant."""
    groups = _clock_groups(serving)
    mu = 1.0 / serving.replica_s  # requests per second one replica serves at each clock
    v = np.concatenate([[0.0], np.geomspace(0.2 / mu.max(), 1000.0 / mu.min(), SEAT_POINTS)])
    out: list[list[tuple[FloatArray, FloatArray]]] = []
    for j, service in enumerate(scenario.services):
        with np.errstate(divide="ignore"):
            util = np.minimum(1.0, 1.0 / (v[:, None] * mu[j][None, :]))
        wait = physics.ttft_wait_s(0.0, 1.0, serving.prefill_s[j][None, :], util)
        met = physics.ttft_met_fraction(service.slo.ttft_s, serving.prefill_s[j][None, :], wait)
        tbt = physics.decode_step_s(service.model_class, util, serving.clock_ratio[None, :])
        met = np.where(tbt <= service.slo.tbt_s, met, 0.0)
        # The supremum as v -> inf (utilisation -> 0), where the grid ends.
        wait0 = physics.ttft_wait_s(0.0, 1.0, serving.prefill_s[j], 0.0)
        sup = physics.ttft_met_fraction(service.slo.ttft_s, serving.prefill_s[j], wait0)
        tbt0 = physics.decode_step_s(service.model_class, 0.0, serving.clock_ratio)
        sup = np.where(tbt0 <= service.slo.tbt_s, sup, 0.0)
        per_clock = []
        for group in groups:
            best = met[:, group].max(axis=1)
            above = np.append(best[1:], sup[group].max())
            per_clock.append(upper_lines(v, np.maximum(above, best), SLO_LINES_PER_CLOCK))
        out.append(per_clock)
    return out


def _clock_groups(serving: _Serving) -> list[npt.NDArray[np.int64]]:
    """The sweep's clocks (columns) in `CLOCK_GROUPS` runs of neighbours."""
    columns = np.arange(serving.clock_ratio.size, dtype=np.int64)
    return [g for g in np.array_split(columns, min(CLOCK_GROUPS, columns.size)) if g.size]


def compute_bounds(
    scenario: Scenario, hours: float | None = None, *, exact_placement: bool = False
) -> ScenarioBounds:
    """Every bound of `scenario` over `hours` (default: its duration), from the scenario alone;
    `exact_placement` solves the whole-replica placements that enumeration cannot as MIPs."""
    run_h = float(hours if hours is not None else scenario.duration_h)
    dt = scenario.step_s
    steps = _steps(scenario, run_h)
    services = scenario.services
    rates = _rates(scenario, steps)
    serving = _serving(scenario)
    idle_w, full_w, budget_w = _room(scenario)
    servers = float(scenario.racks.servers)
    max_rep = np.array([min(s.max_replicas, servers) for s in services], dtype=np.float64)
    out_tokens = np.array([s.output_tokens for s in services], dtype=np.float64)
    timeout = np.array([s.queue_timeout_s for s in services], dtype=np.float64)

    block_of, block_s = _blocks(scenario, steps)
    n_blocks = block_s.size
    arrivals = np.zeros((n_blocks, len(services)))
    np.add.at(arrivals, block_of, rates * dt)
    budget = np.full(n_blocks, budget_w)

    frontier = [
        lower_frontier(serving.replica_s[j], serving.energy_j[j], FRONTIER_SEGMENTS)
        for j in range(len(services))
    ]
    width = max(f[0].size for f in frontier)
    frontier_s = np.full((len(services), width), np.nan)
    frontier_j = np.full((len(services), width), np.nan)
    for j, (sec, joules) in enumerate(frontier):
        frontier_s[j, : sec.size] = sec
        frontier_j[j, : joules.size] = joules
    tokens = lp.max_tokens(
        arrivals=arrivals,
        block_s=block_s,
        energy_j=frontier_j,
        replica_s=frontier_s,
        tokens_per_request=out_tokens,
        budget_w=budget,
        servers=servers,
        max_replicas=max_rep,
        backlog_limit=timeout * max_rep / serving.replica_s.min(axis=1),
    )
    full_met, lines = _slo_inputs(scenario, serving, rates, block_of)
    groups = _clock_groups(serving)
    slo = lp.max_slo_met(
        arrivals=arrivals,
        block_s=block_s,
        full_met=full_met,
        partial_lines=lines,
        energy_j=np.stack([serving.energy_j[:, g].min(axis=1) for g in groups], axis=1),
        replica_s=np.stack([serving.replica_s[:, g].min(axis=1) for g in groups], axis=1),
        budget_w=budget,
        servers=servers,
        max_replicas=max_rep,
        seat_lines=_seat_lines(scenario, serving),
    )
    arrived = arrivals.sum(axis=0)
    duration_s = steps * dt
    throughput = Bound(
        values={
            "tokens": tokens.tokens,
            "tokens_per_s": tokens.tokens / duration_s,
            "tokens_by_service": {
                s.name: float(t) for s, t in zip(services, tokens.tokens_by_service, strict=True)
            },
            "demand_tokens": float((arrived * out_tokens).sum()),
            "slo_attainment": float(slo.met.sum() / max(arrived.sum(), 1e-9)),
            "slo_attainment_by_service": {
                s.name: float(slo.met[:, j].sum() / max(arrived[j], 1e-9))
                for j, s in enumerate(services)
            },
            "block_s": float(block_s[0]),
            "dynamic_budget_w": budget_w,
        },
        status=f"tokens: {tokens.solution.status}; slo: {slo.solution.status}",
        relaxations=(
            "perfect knowledge of every arrival",
            "no replica start-up delay; replicas cost nothing but their server's seat "
            "(power follows work), so tokens and SLO decouple per block except for the queue",
            "fractional replicas, and a service's requests may be split over several clocks "
            "(LP relaxation of whole replicas at one clock per service); the clocks' joules "
            "against replica-seconds are replaced by a few lines under their frontier",
            f"decisions per {block_s[0]:g}-s block: power under the cap on average over the "
            "block, without noise, and a block's arrivals may be served anywhere in it",
            "rack caps enter as their sum (racks are identical, so the LP can spread load "
            "evenly); inlet limits are not imposed",
            "work may wait in the queue up to the service's timeout at its most replicas' rate; "
            "min replicas are not imposed",
            "SLO: a request meets its SLO only as the twin's latency formula allows at the "
            "lowest utilisation the most replicas give, and at most as the replica-seconds the "
            "service holds per request allow, the services sharing the servers (full service: "
            "Jensen over the block's steps on the concave majorant), or at utilisation 1 "
            "behind the queue its own block leaves (partial service); the queue carried from "
            "earlier blocks is forgotten, the met share is replaced by its concave majorant, "
            f"and each clock's energy goes with that clock's latency (a service runs one clock "
            f"at a time; a block may mix clocks step by step), the sweep's clocks taken in "
            f"{CLOCK_GROUPS} runs of neighbours, each with its cheapest energy and best latency",
            "tokens and SLO are bounded separately: one schedule need not reach both",
        ),
    )

    # Cooling: the least hottest rise at each IT power, over any share of power among servers.
    d_matrix = physics.room_heat_matrix(scenario)
    n_srv = scenario.racks.servers
    totals = np.linspace(n_srv * idle_w, n_srv * full_w, RISE_GRID)
    # No server draws less than idle; none is held under its nameplate (noise can exceed it).
    curve = lp.least_hottest_rise(d_matrix, np.full(n_srv, idle_w), np.full(n_srv, np.inf), totals)
    cool = scenario.cooling
    cooling = Bound(
        values={
            "it_power_w": totals.tolist(),
            "least_hottest_rise_c": curve.rise_c.tolist(),
        },
        status=_summary(curve.statuses),
        relaxations=(
            "per step, the least hottest inlet rise of the step's IT power over every way to "
            "share it among servers, each at least at its idle draw (an LP relaxation of "
            "placing whole replicas: no placement of the same IT power does better)",
            "steady inlets: no inlet lag, and the supply air follows at once (no slew)",
            "the supply is redline - guard - that rise, clamped to the unit's range; cooling "
            "= IT power / CoP(supply); evaluated on each policy's own IT power",
        ),
    )

    carbon = carbon_bound(scenario, run_h)
    colocation = _colocation_bound(
        scenario,
        tokens,
        np.nan_to_num(frontier_j),
        np.nan_to_num(frontier_s),
        block_s=block_s,
        idle_w=idle_w,
    )
    per_ctrl = max(1, round(scenario.control_interval_s / dt))
    block_steps = per_ctrl * max(
        round(PLACEMENT_BLOCK_S / (per_ctrl * dt)),
        math.ceil(steps / per_ctrl / PLACEMENT_MAX_BLOCKS),
        1,
    )
    whole = WholeReplicaPlacer(
        d_matrix=d_matrix,
        idle_w=idle_w,
        dynamic_w=full_w - idle_w,
        block_steps=block_steps,
        supply_limits_c=cool.supply_limits_c,
        redline_c=cool.redline_c,
        step_s=dt,
        rise_curve=curve,
        exact=exact_placement,
        _cache={},
        _every={},
    )
    return ScenarioBounds(
        throughput=throughput,
        cooling=cooling,
        carbon=carbon,
        peak_to_average=colocation,
        rise_curve=curve,
        step_s=dt,
        supply_limits_c=cool.supply_limits_c,
        whole=whole,
    )


def _summary(statuses: tuple[str, ...]) -> str:
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    return ", ".join(f"{s} x{n}" if n > 1 else s for s, n in counts.items())


def _rates(scenario: Scenario, steps: int) -> FloatArray:
    """Requests per second of every service at every step, as the twin generates them."""
    dt = scenario.step_s
    step_h = np.arange(steps, dtype=np.float64) * dt / 3600.0
    return np.stack(
        [arrival_rates(s.traffic, step_h, dt, scenario.source_dir) for s in scenario.services],
        axis=1,
    )


def carbon_bound(scenario: Scenario, hours: float | None = None) -> Bound:
    """The least emissions of the scenario's deferrable work moved within its deadlines."""
    run_h = float(hours if hours is not None else scenario.duration_h)
    steps = _steps(scenario, run_h)
    rates = _rates(scenario, steps)
    serving = _serving(scenario)
    _, _, budget_w = _room(scenario)
    services = scenario.services
    flexible = [j for j, s in enumerate(services) if s.deferrable]
    relaxations = (
        "perfect knowledge of arrivals and of every slot's carbon intensity",
        "deferrable work at the carbon-aware policy's tuned clock; every other service served "
        "as it arrives, at its tuned clock",
        "each deferrable request may be served in any slot from its arrival's to the one its "
        "deadline (min of TTFT objective and queue timeout) reaches, within the run",
        "capacity: the service's most replicas; power: the cap on average over a slot",
        "facility energy per IT joule held at its largest steady value under the cap (the "
        "supply air the hottest placement of the capped IT power needs), so the saving is not "
        "understated; the change of supply temperature that moving load causes is not "
        "modelled",
        "with min replicas (`saving_with_min_replicas_g`): the same, but in every step the "
        "replicas a deferrable service's minimum keeps running serve the work arriving while "
        "they have room, and in every slot at least the smaller of their capacity and the "
        "backlog the slot starts with plus that (a replica never idles with work queued), "
        "whatever the grid (a ceiling cannot stop them); the yardstick of a ceiling controller",
    )
    if not flexible:
        return Bound(
            values={"saving_g": 0.0, "deferrable_services": []},
            status="no deferrable work: nothing to move",
            relaxations=relaxations,
        )
    dt = scenario.step_s
    carbon = scenario.carbon
    slots = carbon_slots(carbon.generated, carbon.file, carbon.slot_s, run_h, scenario.source_dir)
    slot_of = np.minimum((np.arange(steps) * dt // carbon.slot_s).astype(int), slots.size - 1)
    n_slots = int(slot_of[-1]) + 1
    slot_len = np.bincount(slot_of, minlength=n_slots).astype(np.float64) * dt
    ratios, _ = tuned_clock_ratios(scenario)
    energy = np.zeros(len(services))
    seconds = np.zeros(len(services))
    for j, service in enumerate(services):
        pre, dec = physics.request_busy_s(
            service.model_class, service.prompt_tokens, service.output_tokens, ratios[j]
        )
        column = int(np.argmin(np.abs(serving.clock_ratio - ratios[j])))
        energy[j] = serving.energy_j[j, column]
        seconds[j] = float(pre + dec)
    fixed = [j for j in range(len(services)) if j not in flexible]
    fixed_w = np.minimum((rates[:, fixed] * energy[fixed]).sum(axis=1), budget_w)
    spent = np.bincount(slot_of, weights=fixed_w * dt, minlength=n_slots)
    arrivals = np.zeros((n_slots, len(flexible)))
    np.add.at(arrivals, slot_of, rates[:, flexible] * dt)
    # The facility energy of an IT joule at the coldest supply air the room can need under its
    # cap (the hottest rise any placement of the capped IT power causes): no larger overhead.
    idle_w, full_w, _ = _room(scenario)
    n_srv = scenario.racks.servers
    cap_w = min(scenario.caps.site_cap_w, n_srv * full_w)
    if scenario.caps.rack_max_w is not None:
        cap_w = min(cap_w, scenario.racks.count * scenario.caps.rack_max_w)
    worst_rise, rise_status = lp.greatest_hottest_rise(
        physics.room_heat_matrix(scenario), np.full(n_srv, idle_w), np.full(n_srv, full_w), cap_w
    )
    cool = scenario.cooling
    aim_c, low_c, high_c = cool.supply_limits_c
    coldest = float(np.clip(aim_c - worst_rise, low_c, high_c))
    overhead = 1.0 + cool.distribution_loss_fraction + 1.0 / float(physics.cop(coldest))
    window = np.array(
        [
            int(min(services[j].slo.ttft_s, services[j].queue_timeout_s) // carbon.slot_s)
            for j in flexible
        ],
        dtype=np.int64,
    )
    capacity = (
        slot_len[:, None]
        * np.array([services[j].max_replicas for j in flexible])[None, :]
        / seconds[flexible][None, :]
    )
    # What the minimum replicas serve of each step's arrivals (requests per step).
    floor_per_step = np.array([services[j].min_replicas for j in flexible]) * dt / seconds[flexible]
    kept = np.zeros((n_slots, len(flexible)))
    np.add.at(kept, slot_of, np.minimum(rates[:, flexible] * dt, floor_per_step[None, :]))
    # What they can serve in a slot: while work waits they serve it, whatever the grid.
    running = slot_len[:, None] * floor_per_step[None, :] / dt
    plans = [
        lp.least_shift_carbon(
            arrivals=arrivals,
            intensity_g_per_kwh=slots[:n_slots],
            energy_j=energy[flexible] * overhead,
            capacity=capacity,
            energy_budget_j=np.maximum(budget_w * slot_len - spent, 0.0) * overhead,
            window_slots=window,
            served_at_least=at_least,
            always_running=always,
        )
        for at_least, always in ((None, None), (kept, running))
    ]
    plan, floor_plan = plans
    statuses = {p.solution.status for p in plans} | {rise_status}
    return Bound(
        values={
            "deferrable_services": [services[j].name for j in flexible],
            "on_arrival_g": plan.on_arrival_g,
            "optimal_g": plan.optimal_g,
            "saving_g": plan.saving_g if plan.solution.optimal else float("nan"),
            "optimal_with_min_replicas_g": floor_plan.optimal_g,
            "saving_with_min_replicas_g": (
                floor_plan.saving_g if floor_plan.solution.optimal else float("nan")
            ),
            "facility_overhead": overhead,
            "coldest_supply_c": coldest,
        },
        status=OPTIMAL if statuses == {OPTIMAL} else ", ".join(sorted(statuses - {OPTIMAL})),
        relaxations=relaxations,
        mip_gap=max(p.solution.mip_gap for p in plans),
    )


def _colocation_bound(
    scenario: Scenario,
    tokens: lp.TokensPlan,
    energy_j: FloatArray,
    replica_s: FloatArray,
    *,
    block_s: FloatArray,
    idle_w: float,
) -> Bound:
    racks = scenario.racks
    relaxations = (
        "the loads of the throughput bound's schedule (noise-free), shared over racks "
        "per block with fractional shares (no placement of whole replicas does better)",
        f"the {COLOCATION_BLOCKS} blocks of highest site power, the peak among them (fewer "
        "blocks can only lower the sum of rack peaks)",
        "1 is the metric's floor (sum of peaks >= peak of the sum); the LP reaches it unless "
        "rack seats or rack caps force an uneven share",
    )
    if racks.count == 1:
        return Bound(values={"peak_to_average": 1.0}, status="one rack", relaxations=relaxations)
    service_w = (tokens.served * energy_j[None]).sum(axis=2) / block_s[:, None]
    service_servers = (tokens.served * replica_s[None]).sum(axis=2) / block_s[:, None]
    top = np.argsort(service_w.sum(axis=1))[::-1][:COLOCATION_BLOCKS]
    plan = lp.least_rack_peaks(
        service_w=service_w[top],
        service_servers=service_servers[top],
        rack_idle_w=np.full(racks.count, racks.servers_per_rack * idle_w),
        rack_servers=np.full(racks.count, float(racks.servers_per_rack)),
        rack_max_w=scenario.caps.rack_max_w,
    )
    return Bound(
        values={"peak_to_average": plan.peak_to_average},
        status=plan.solution.status,
        relaxations=relaxations,
    )
