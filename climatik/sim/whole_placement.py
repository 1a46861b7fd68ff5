"""The placement of whole replicas with the lowest hottest inlet rise (issue 19's yardstick).

`bounds.least_hottest_rise` lets any server draw any power, a floor no placement of whole
replicas reaches; here service j runs `replicas[j]` replicas, one per server, each drawing
`replica_w[j]` over the server's idle draw. Three ways to the placement, cheapest first:

- `enumerated`: every placement of a small room's replicas evaluated at once (exact, no
  solver; 8 servers and two services have at most 560 placements);
- `improved`: heaviest replicas first, then swaps that lower the hottest inlet (an upper
  solution: the caller measures its gap against a lower bound, e.g. the fractional floor);
- `least_hottest_rise_whole`: HiGHS's branch and bound from `improved`'s placement (exact
  where it finishes within its limits; where not, its gap is reported).

A run needs hundreds of these, one per block of replica counts and draws, so the default is
the first where the room allows it and the second otherwise; the MIP is asked for.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from climatik.sim.lp import OPTIMAL, Model

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ENUMERATION_LIMIT = 20_000
"""Placements up to which `enumerated` evaluates them all (a few MB of inlets at once)."""
SOFT_PEAK_C = 0.05
"""Temperature of the soft maximum `improved` descends: swaps that lower one of several
equally hot inlets count as progress (the hard maximum would stall on the tie)."""
SOURCES_SCANNED = 16
"""Past this many servers, `improved` moves only the loads that heat the hottest inlet most,
to the servers (four times as many) where the heaviest load would heat it least, or among
themselves."""
GREEDY = "greedy"
ENUMERATED = OPTIMAL


@dataclass(frozen=True, slots=True)
class WholePlacement:
    """A placement of whole replicas and how good it is known to be."""

    host: IntArray
    """Service index of the replica on each server, -1 where the server stays idle."""
    rise_c: float
    status: str
    """`OPTIMAL` (proven, by enumeration or the MIP), `GREEDY`, or HiGHS's status at a limit."""
    mip_gap: float
    """Relative gap to a proven lower bound (0: optimal; nan: not measured)."""


def placement_count(servers: int, replicas: IntArray) -> int:
    """How many ways whole replicas can sit one per server (a multinomial)."""
    count, free = 1, servers
    for n in replicas:
        if n > free:
            return 0
        count *= math.comb(free, int(n))
        free -= int(n)
    return count


def every_placement(servers: int, replicas: IntArray) -> IntArray:
    """Every host vector (placements x servers) seating `replicas[j]` replicas of service j."""
    hosts = [np.full(servers, -1, dtype=np.int64)]
    for j in np.flatnonzero(replicas > 0):
        grown = []
        for host in hosts:
            for seats in itertools.combinations(np.flatnonzero(host < 0), int(replicas[j])):
                seated = host.copy()
                seated[list(seats)] = j
                grown.append(seated)
        hosts = grown
    return np.array(hosts, dtype=np.int64)


def rise_of(d_matrix: FloatArray, idle_w: float, host: IntArray, replica_w: FloatArray) -> float:
    """The hottest inlet rise of one placement."""
    power = np.full(host.size, idle_w)
    seated = host >= 0
    power[seated] += replica_w[host[seated]]
    return float((d_matrix @ power).max())


def enumerated(
    d_matrix: FloatArray, idle_w: float, hosts: IntArray, replica_w: FloatArray
) -> WholePlacement:
    """The best of `hosts` (from `every_placement`): exact, the solver never runs."""
    over_idle = np.where(hosts >= 0, replica_w[np.maximum(hosts, 0)], 0.0)
    rises = (idle_w * d_matrix.sum(axis=1))[None, :] + over_idle @ d_matrix.T
    peaks = rises.max(axis=1)
    best = int(np.argmin(peaks))
    return WholePlacement(hosts[best].copy(), float(peaks[best]), ENUMERATED, 0.0)


def greedy_placement(
    d_matrix: FloatArray, idle_w: float, replicas: IntArray, replica_w: FloatArray
) -> WholePlacement:
    """Heaviest replicas first, each on the free server where it raises the hottest inlet
    least."""
    n = d_matrix.shape[0]
    host = np.full(n, -1, dtype=np.int64)
    order = sorted(
        (int(j) for j in np.flatnonzero(replicas > 0) for _ in range(int(replicas[j]))),
        key=lambda j: (-float(replica_w[j]), j),
    )
    rise = idle_w * d_matrix.sum(axis=1)
    for j in order:
        free = np.flatnonzero(host < 0)
        peaks = (rise[:, None] + d_matrix[:, free] * replica_w[j]).max(axis=0)
        server = int(free[int(np.argmin(peaks))])
        host[server] = j
        rise = rise + d_matrix[:, server] * replica_w[j]
    return WholePlacement(host, float(rise.max()), GREEDY, float("nan"))


def _soft_peak(rise: FloatArray) -> FloatArray:
    """log-sum-exp over the first axis at `SOFT_PEAK_C`: the maximum, ties counted."""
    top = rise.max(axis=0)
    return np.asarray(
        top + SOFT_PEAK_C * np.log(np.exp((rise - top) / SOFT_PEAK_C).sum(axis=0)),
        dtype=np.float64,
    )


def improved(
    d_matrix: FloatArray, idle_w: float, replicas: IntArray, replica_w: FloatArray
) -> WholePlacement:
    """`greedy_placement`, then the swap of two servers' loads (a replica and an idle server,
    or replicas of two services) that lowers the soft peak of the inlets most, while one
    does; at most one swap per server and replica."""
    n = d_matrix.shape[0]
    start = greedy_placement(d_matrix, idle_w, replicas, replica_w)
    host = start.host.copy()
    load = np.where(host >= 0, replica_w[np.maximum(host, 0)], 0.0)
    rise = idle_w * d_matrix.sum(axis=1) + d_matrix @ load
    best_host, best_rise = host.copy(), float(rise.max())
    for _ in range(n + int(replicas.sum())):
        sources = destinations = np.arange(n)
        if n > SOURCES_SCANNED:
            hottest = d_matrix[int(np.argmax(rise))]
            sources = np.argsort(-(hottest * load), kind="stable")[:SOURCES_SCANNED]
            relief = hottest * (load.max() - load)  # what the heaviest load adds there
            destinations = np.argsort(relief, kind="stable")[: 4 * SOURCES_SCANNED]
            destinations = np.union1d(destinations, sources)
        # watts leaving each source for each destination, and the rise after the swap, per
        # (inlet k, source s, destination t)
        moved = load[sources][:, None] - load[destinations][None, :]
        heat = d_matrix[:, destinations][:, None, :] - d_matrix[:, sources][:, :, None]
        after = rise[:, None, None] + heat * moved[None, :, :]
        soft = _soft_peak(after)
        s, t = np.unravel_index(int(np.argmin(soft)), soft.shape)
        if soft[s, t] >= _soft_peak(rise[:, None])[0] - 1e-9:
            break
        pair = np.array([int(sources[s]), int(destinations[t])])
        host[pair] = host[pair[::-1]]
        load[pair] = load[pair[::-1]]
        rise = after[:, s, t]
        if rise.max() < best_rise:  # the soft peak may fall while the hottest inlet rises
            best_host, best_rise = host.copy(), float(rise.max())
    return WholePlacement(best_host, best_rise, GREEDY, float("nan"))


def least_hottest_rise_whole(
    d_matrix: FloatArray,
    idle_w: float,
    replicas: IntArray,
    replica_w: FloatArray,
    *,
    time_limit_s: float | None = None,
    node_limit: int | None = None,
) -> WholePlacement:
    """The placement of whole replicas, one per server, with the lowest hottest inlet rise.

    x[i, j] = 1 puts one of service j's replicas on server i:

        min  t   s.t.  sum_j x[i, j] <= 1,   sum_i x[i, j] = replicas[j],
                       idle_w * sum_i D[k, i] + sum_ij D[k, i] replica_w[j] x[i, j] <= t

    The MIP that `bounds.least_hottest_rise` relaxes (there any server may draw any power).
    HiGHS's branch and bound starts from `improved` and proves the optimum, or stops at
    `time_limit_s` or `node_limit` with its best placement and the relative gap to its lower
    bound (the LP relaxation's where the search had none yet).
    """
    n = d_matrix.shape[0]
    used = np.flatnonzero(replicas > 0)
    host = np.full(n, -1, dtype=np.int64)
    base = idle_w * d_matrix.sum(axis=1)
    if used.size == 0:
        return WholePlacement(host, float(base.max()), OPTIMAL, 0.0)
    start = improved(d_matrix, idle_w, replicas, replica_w)

    def build(integer: bool) -> tuple[Model, IntArray, IntArray]:
        model = Model()
        put = model.cols((n, used.size), upper=1.0, integer=integer)
        hottest = model.cols((1,), cost=1.0, lower=-np.inf)
        seat = model.rows((n,), upper=1.0)
        model.coef(seat[:, None], put, 1.0)
        count = model.rows((used.size,), lower=replicas[used], upper=replicas[used])
        model.coef(count[None, :], put, 1.0)
        inlets = model.rows((n,), upper=-base)
        model.coef(
            inlets[:, None, None],
            put[None, :, :],
            d_matrix[:, :, None] * replica_w[used][None, None, :],
        )
        model.coef(inlets, hottest[0], -1.0)
        return model, put, hottest

    model, put, hottest = build(integer=True)
    guess = np.zeros(model.n_col)
    seated = np.flatnonzero(start.host >= 0)
    guess[put[seated, np.searchsorted(used, start.host[seated])]] = 1.0
    guess[hottest[0]] = start.rise_c
    solution = model.solve(time_limit_s=time_limit_s, node_limit=node_limit, start=guess)
    if not math.isfinite(solution.objective) or solution.objective > start.rise_c:
        solution_x, rise = guess, start.rise_c
    else:
        solution_x, rise = solution.x, solution.objective
    gap = solution.mip_gap
    if solution.status != OPTIMAL and not 0.0 <= gap < 1.0:
        relaxed = build(integer=False)[0].solve()
        gap = (rise - relaxed.objective) / rise if relaxed.optimal and rise > 0 else float("nan")
    chosen = solution_x[put] > 0.5
    seats, which = np.nonzero(chosen)
    host[seats] = used[which]
    return WholePlacement(host, float(rise), solution.status, float(gap))
