"""Bounds on what any policy can reach in the twin: linear programs solved by HiGHS.

Each function below is one linear program over plain arrays (no scenario, no twin), so each can
be checked on an instance small enough to solve by hand; `climatik.sim.scenario_bounds` builds
their inputs from a scenario with the twin's own physics and traces. HiGHS (through `highspy`)
solves them (`climatik.sim.lp` builds and hands them over); nothing here searches or iterates
on its own.

- `max_tokens`: requests served per block under an energy budget, a server count and replica
  limits, with a backlog that carries work to later blocks only as far as the twin's queue can.
- `max_slo_met`: requests that can meet their SLO, with the met share of a block's arrivals
  bounded by a concave envelope of the twin's latency formula.
- `least_hottest_rise`: the lowest hottest-inlet rise the room can have at a given IT power.
- `least_shift_carbon`: deferrable work moved within its deadlines and capacity to clean slots
  (with replicas that always run and serve what waits, a small MIP: one binary per slot).
- `least_rack_peaks`: service loads shared over racks to minimise the sum of the rack peaks.

All but that one are LPs (no integer variables), so their MIP gap is 0 and HiGHS's status is
the whole story; the carbon MIP reports its gap and uses its proven lower end (the placement of
whole replicas, also a MIP, is `climatik.sim.whole_placement`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from climatik.sim.lp import OPTIMAL, LpSolution, Model, new_highs, solution_of

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

J_PER_KWH = 3.6e6

SLOPE_FLOOR = 1e-6
"""Envelope lines flatter than this are left out of the SLO bound's seat envelope: HiGHS would
drop their coefficients as zeros, which would move them below the curve."""


@dataclass(frozen=True, slots=True)
class TokensPlan:
    """The optimum of `max_tokens`."""

    solution: LpSolution
    served: FloatArray
    """Requests served per (block, service, clock)."""
    tokens_by_service: FloatArray

    @property
    def tokens(self) -> float:
        """Tokens served in all."""
        return float(self.tokens_by_service.sum())


def max_tokens(
    *,
    arrivals: FloatArray,
    block_s: FloatArray,
    energy_j: FloatArray,
    replica_s: FloatArray,
    tokens_per_request: FloatArray,
    budget_w: FloatArray,
    servers: float,
    max_replicas: FloatArray,
    backlog_limit: FloatArray,
) -> TokensPlan:
    """Most tokens any schedule of replicas and clocks can serve.

    Blocks b (consecutive time windows of `block_s`), services j, clocks c. `arrivals[b, j]`
    requests arrive; serving one at clock c costs `energy_j[j, c]` joules over idle and
    `replica_s[j, c]` replica-seconds (NaN: clock not allowed). Variables: s[b, j, c] served,
    q[b, j] backlog at the block's end (at most `backlog_limit[j]`), d[b, j] dropped:

        max  sum tokens_per_request[j] * s[b, j, c]
        s.t. sum_c s[b, j, c] + q[b, j] - q[b-1, j] + d[b, j] = arrivals[b, j]   (q[-1] = 0)
             sum_jc energy_j[j, c] * s[b, j, c]  <= budget_w[b] * block_s[b]
             sum_jc replica_s[j, c] * s[b, j, c] <= servers * block_s[b]
             sum_c replica_s[j, c] * s[b, j, c]  <= max_replicas[j] * block_s[b]

    Replicas are fractional and cost nothing but the servers they occupy (power follows work),
    so this is the LP relaxation of choosing whole replicas and one clock per service.
    """
    n_b, n_s = arrivals.shape
    n_c = energy_j.shape[1]
    allowed = np.isfinite(energy_j) & np.isfinite(replica_s)
    energy = np.where(allowed, energy_j, 0.0)
    seconds = np.where(allowed, replica_s, 0.0)
    model = Model()
    served = model.cols(
        (n_b, n_s, n_c),
        cost=tokens_per_request[None, :, None],
        upper=np.where(allowed, np.inf, 0.0)[None],
    )
    backlog = model.cols((n_b, n_s), upper=backlog_limit[None, :])
    dropped = model.cols((n_b, n_s))

    balance = model.rows((n_b, n_s), lower=arrivals, upper=arrivals)
    model.coef(balance[:, :, None], served, 1.0)
    model.coef(balance, backlog, 1.0)
    model.coef(balance[1:], backlog[:-1], -1.0)
    model.coef(balance, dropped, 1.0)
    power = model.rows((n_b,), upper=budget_w * block_s)
    model.coef(power[:, None, None], served, energy[None])
    room = model.rows((n_b,), upper=servers * block_s)
    model.coef(room[:, None, None], served, seconds[None])
    replicas = model.rows((n_b, n_s), upper=block_s[:, None] * max_replicas[None, :])
    model.coef(replicas[:, :, None], served, seconds[None])

    solution = model.solve(maximize=True)
    amounts = solution.x[served] if solution.optimal else np.zeros((n_b, n_s, n_c))
    return TokensPlan(
        solution=solution,
        served=amounts,
        tokens_by_service=amounts.sum(axis=(0, 2)) * tokens_per_request,
    )


@dataclass(frozen=True, slots=True)
class SloPlan:
    """The optimum of `max_slo_met`."""

    solution: LpSolution
    met: FloatArray
    """Requests per (block, service) that may meet their SLO."""
    served_fraction: FloatArray
    """Share of a block's arrivals served, per (block, service), all clocks together."""


def max_slo_met(
    *,
    arrivals: FloatArray,
    block_s: FloatArray,
    full_met: FloatArray,
    partial_lines: Sequence[Sequence[tuple[FloatArray, FloatArray]]],
    energy_j: FloatArray,
    replica_s: FloatArray,
    budget_w: FloatArray,
    servers: float,
    max_replicas: FloatArray,
    seat_lines: Sequence[Sequence[tuple[FloatArray, FloatArray]]] | None = None,
) -> SloPlan:
    """Most requests that can meet their SLO under the same budget as `max_tokens`.

    A service runs one clock c at a time, and a request served at c costs that clock's
    `energy_j[j, c]` and `replica_s[j, c]` (NaN: clock not allowed) and meets its SLO only as
    that clock's latency allows. In a block either all of a service's arrivals are served at c
    (then at most `full_met[b, j, c]` of them meet the SLO), or a fraction x < 1 is (then at
    most H_jc(x), H_jc concave and increasing, given as the lines `H_jc(x) = min_l a_l + b_l x`
    of `partial_lines[j][c]`). The convex hull of these cases over clocks (weights z and w,
    y = w * x, per clock) is the LP:

        max  sum arrivals[b, j] * (full_met[b, j, c] * z[b, j, c] + t[b, j, c])
        s.t. sum_c z + w <= 1,   y <= w,   t <= a_l * w + b_l * y   (every line l of j, c)
             sum_jc arrivals * energy_j[j, c] * (z + y)  <= budget_w[b] * block_s[b]
             sum_jc arrivals * replica_s[j, c] * (z + y) <= servers * block_s[b]
             sum_c arrivals * replica_s[j, c] * (z + y)  <= max_replicas[j] * block_s[b]

    A block whose steps run different clocks is a mix of these cases weighted by the steps'
    arrivals, so it lies in the hull too: a schedule may change clocks every step.

    With `seat_lines`, served in full at c the met share also depends on the seats the service
    holds: at most Phi_jc(v) with v its replica-seconds per request (more replicas, a lower
    utilisation), Phi_jc concave and increasing, given as lines `a_l + b_l v`. Over a block's
    steps the met requests are then at most A z Phi(s / (A z)) (Jensen, weights the steps'
    arrivals) for s[b, j, c] the replica-seconds it holds in full service, which enter the
    server and replica rows instead of the busy time (and are at least the busy time):

        A f <= a_l A z + b_l s  (every line l of j, c),   f <= full_met z,   s >= A r z
        sum_jc s + A r y <= servers * block_s,   sum_c s + A r y <= max_replicas * block_s
    """
    n_b, n_s, n_c = full_met.shape
    allowed = np.isfinite(energy_j) & np.isfinite(replica_s)
    energy = np.where(allowed, energy_j, 0.0)
    seconds = np.where(allowed, replica_s, 0.0)
    open_ = allowed[None].astype(float)
    model = Model()
    shape = (n_b, n_s, n_c)
    seated = seat_lines is not None
    full = model.cols(
        shape,
        cost=0.0 if seated else arrivals[:, :, None] * full_met,
        upper=open_ * (full_met > 0),
    )
    weight = model.cols(shape, upper=np.broadcast_to(open_, shape))
    partial = model.cols(shape, upper=np.broadcast_to(open_, shape))
    met = model.cols(
        shape,
        cost=np.broadcast_to(arrivals[:, :, None], shape),
        upper=np.broadcast_to(open_, shape),
    )

    one_case = model.rows((n_b, n_s), upper=1.0)
    model.coef(one_case[:, :, None], full, 1.0)
    model.coef(one_case[:, :, None], weight, 1.0)
    within = model.rows(shape, upper=0.0)
    model.coef(within, partial, 1.0)
    model.coef(within, weight, -1.0)
    for j, per_clock in enumerate(partial_lines):
        for c, (intercepts, slopes) in enumerate(per_clock):
            if not allowed[j, c]:
                continue
            envelope = model.rows((intercepts.size, n_b), upper=0.0)
            model.coef(envelope, met[None, :, j, c], 1.0)
            model.coef(envelope, weight[None, :, j, c], -intercepts[:, None])
            model.coef(envelope, partial[None, :, j, c], -slopes[:, None])
    power = model.rows((n_b,), upper=budget_w * block_s)
    room = model.rows((n_b,), upper=servers * block_s)
    replicas = model.rows((n_b, n_s), upper=block_s[:, None] * max_replicas[None, :])
    load = arrivals[:, :, None]
    for cols in (full, partial):
        model.coef(power[:, None, None], cols, load * energy[None])
    model.coef(room[:, None, None], partial, load * seconds[None])
    model.coef(replicas[:, :, None], partial, load * seconds[None])
    full_share = full
    if seat_lines is None:
        model.coef(room[:, None, None], full, load * seconds[None])
        model.coef(replicas[:, :, None], full, load * seconds[None])
    else:
        # f: the met share served in full; s: the replica-seconds held for it.
        full_share = model.cols(shape, cost=np.broadcast_to(load, shape), upper=1.0)
        # In replicas held on average over the block (s / block_s): better scaled for HiGHS.
        seats = model.cols(shape)
        span = block_s[:, None, None]
        capped = model.rows(shape, upper=0.0)
        model.coef(capped, full_share, 1.0)
        model.coef(capped, full, -full_met)
        busy = model.rows(shape, lower=0.0, upper=np.inf)
        model.coef(busy, seats, np.broadcast_to(span, shape))
        model.coef(busy, full, -load * seconds[None])
        model.coef(room[:, None, None], seats, np.broadcast_to(span, shape))
        model.coef(replicas[:, :, None], seats, np.broadcast_to(span, shape))
        for j, per_clock in enumerate(seat_lines):
            for c, (intercepts, slopes) in enumerate(per_clock):
                if not allowed[j, c]:
                    continue
                # A line that is flat to within the solver's tolerance is left out (a subset of
                # the lines only loosens the envelope; f <= full_met z still holds).
                keep = slopes > SLOPE_FLOOR
                a, b = intercepts[keep], slopes[keep]
                held = model.rows((a.size, n_b), upper=0.0)
                model.coef(held, full_share[None, :, j, c], arrivals[None, :, j])
                model.coef(held, full[None, :, j, c], -a[:, None] * arrivals[None, :, j])
                model.coef(held, seats[None, :, j, c], -b[:, None] * block_s[None, :])

    solution = model.solve(maximize=True)
    x = solution.x if solution.optimal else np.zeros(model.n_col)
    met_full = x[full_share] if seated else full_met * x[full]
    return SloPlan(
        solution=solution,
        met=arrivals * (met_full + x[met]).sum(axis=2),
        served_fraction=(x[full] + x[partial]).sum(axis=2),
    )


@dataclass(frozen=True, slots=True)
class RiseCurve:
    """The least hottest-inlet rise at each of a grid of IT powers (`least_hottest_rise`)."""

    total_w: FloatArray
    rise_c: FloatArray
    slope_c_per_w: FloatArray
    """d rise / d total at each grid point (the LP's dual of the power row)."""
    statuses: tuple[str, ...]

    def lower_rise_c(self, total_w: FloatArray) -> FloatArray:
        """A lower bound of the least rise at any IT power.

        The least rise is the optimum of an LP as a function of its right-hand side, hence
        convex in the total: every grid point's tangent lies below it everywhere.
        """
        ok = np.array([s == OPTIMAL for s in self.statuses])
        tangents = self.rise_c[ok][None, :] + self.slope_c_per_w[ok][None, :] * (
            np.asarray(total_w, dtype=np.float64)[..., None] - self.total_w[ok][None, :]
        )
        return np.asarray(np.maximum(tangents.max(axis=-1), 0.0), dtype=np.float64)


def least_hottest_rise(
    d_matrix: FloatArray, lower_w: FloatArray, upper_w: FloatArray, totals_w: FloatArray
) -> RiseCurve:
    """The lowest possible hottest inlet rise when the room draws each of `totals_w`.

    Servers i draw p_i between `lower_w[i]` (idle) and `upper_w[i]`; inlets rise by D p
    (Tang et al.'s heat-recirculation matrix). For each total P:

        min  t   s.t.  (D p)_i <= t  for every server i,   sum_i p_i = P,   lower <= p <= upper

    Any placement of whole replicas is one such p, so t(P) is at or below the hottest rise of
    every placement of the same IT power. One HiGHS instance is re-solved from its last basis
    as P moves along the grid.
    """
    n = d_matrix.shape[0]
    model = Model()
    power = model.cols((n,), lower=lower_w, upper=upper_w)
    hottest = model.cols((1,), cost=1.0, lower=-np.inf)
    inlets = model.rows((n,), upper=0.0)
    model.coef(inlets[:, None], power[None, :], d_matrix)
    model.coef(inlets, hottest[0], -1.0)
    total = model.rows((1,), lower=float(totals_w[0]), upper=float(totals_w[0]))
    model.coef(total, power, 1.0)
    highs = new_highs()
    highs.passModel(model.to_highs(maximize=False))
    rises = np.zeros(totals_w.size)
    slopes = np.zeros(totals_w.size)
    statuses: list[str] = []
    for k, watts in enumerate(totals_w):
        highs.changeRowBounds(int(total[0]), float(watts), float(watts))
        highs.run()
        solution = solution_of(highs)
        statuses.append(solution.status)
        if solution.optimal:
            rises[k] = solution.objective
            slopes[k] = solution.row_duals[int(total[0])]
    return RiseCurve(
        total_w=np.asarray(totals_w, dtype=np.float64),
        rise_c=rises,
        slope_c_per_w=slopes,
        statuses=tuple(statuses),
    )


def greatest_hottest_rise(
    d_matrix: FloatArray, lower_w: FloatArray, upper_w: FloatArray, total_w: float
) -> tuple[float, str]:
    """The highest hottest-inlet rise any placement of `total_w` can cause, and its status.

    The maximum over servers i of  max (D p)_i  s.t.  sum_i p_i = total_w, lower <= p <= upper:
    one LP per server, re-solved from the last basis with server i's row of D as the objective.
    """
    n = d_matrix.shape[0]
    model = Model()
    power = model.cols((n,), lower=lower_w, upper=upper_w)
    total = model.rows((1,), lower=total_w, upper=total_w)
    model.coef(total, power, 1.0)
    highs = new_highs()
    highs.passModel(model.to_highs(maximize=True))
    worst = -np.inf
    statuses: list[str] = []
    columns = np.arange(n, dtype=np.int32)
    for i in range(n):
        highs.changeColsCost(n, columns, np.asarray(d_matrix[i], dtype=np.float64))
        highs.run()
        solution = solution_of(highs)
        statuses.append(solution.status)
        if solution.optimal:
            worst = max(worst, solution.objective)
    bad = [s for s in statuses if s != OPTIMAL]
    return float(worst), bad[0] if bad else OPTIMAL


CARBON_MIP_NODE_LIMIT = 5_000
"""Branch-and-bound nodes the carbon MIP may use (work-conserving replicas); it needs a few
on the built-in scenarios. A node limit, unlike a time limit, answers the same on a busy
machine; where it stops the search, the gap says how far the saving may be overstated."""

CARBON_MIP_FEASIBILITY = 1e-9
"""How far the carbon MIP's point may miss a row, in requests. HiGHS's default (1e-6) let it
serve a millionth of a request less than arrived, and its presolve call a feasible model with
such an arrival infeasible (found by the property test)."""


@dataclass(frozen=True, slots=True)
class CarbonPlan:
    """The optimum of `least_shift_carbon`, with the same work served as it arrives."""

    solution: LpSolution
    optimal_g: float
    on_arrival_g: float
    served: FloatArray
    """Requests served per (slot, service)."""

    @property
    def saving_g(self) -> float:
        """What moving the work saves at most."""
        return self.on_arrival_g - self.optimal_g


def least_shift_carbon(
    *,
    arrivals: FloatArray,
    intensity_g_per_kwh: FloatArray,
    energy_j: FloatArray,
    capacity: FloatArray,
    energy_budget_j: FloatArray,
    window_slots: IntArray,
    served_at_least: FloatArray | None = None,
    always_running: FloatArray | None = None,
) -> CarbonPlan:
    """Least emissions of deferrable work served within its deadline and the slots' capacity.

    Slots t (carbon intensity CI[t]), deferrable services j. `arrivals[a, j]` requests arrive in
    slot a and must be served in a slot t with a <= t <= min(a + window_slots[j], last slot);
    slot t serves at most `capacity[t, j]` of service j and spends at most `energy_budget_j[t]`
    joules on all of them; one request costs `energy_j[j]` joules (facility energy). With
    y[j, a, t] the requests of slot a served in slot t:

        min  sum CI[t] * energy_j[j] * y[j, a, t] / 3.6e6
        s.t. sum_t y[j, a, t] = arrivals[a, j]
             served_at_least[t, j] <= sum_a y[j, a, t] <= capacity[t, j]
             sum_ja energy_j[j] * y[j, a, t] <= energy_budget_j[t]

    `served_at_least` (default none) is work a slot must serve whatever its intensity: what
    replicas that run anyway serve of the work arriving while they have room.

    `always_running[t, j]` (default none) is what replicas that run anyway can serve in slot t.
    A replica serves whatever waits (vLLM, like the twin's queue, never idles with work
    queued): starting a slot with a backlog B, it serves at least min(always_running, B +
    served_at_least), since a queue that starts B fuller can only be busy longer (with
    departures D(T) = min(mu T, inf_s [B + A(s) + mu (T - s)]), D_B >= min(mu T, B + D_0)).
    Work held back is served by them in dirty slots too. With s[t, j] what slot t serves,
    A[t, j] what arrived before it, L[t, j] its `served_at_least` and a binary full[t, j]:

        s[t, j] >= always_running[t, j] * full[t, j]
        sum_{u<=t} s[u, j] >= (A[t, j] + L[t, j]) * (1 - full[t, j])

    so s >= min(always_running, backlog + L); the bound is then a MIP (one binary per slot and
    service).
    """
    n_t, n_j = arrivals.shape
    lags = int(window_slots.max(initial=0)) + 1
    arrive = np.arange(n_t)[:, None, None]
    lag = np.arange(lags)[None, None, :]
    serve = arrive + lag
    usable = (lag <= window_slots[None, :, None]) & (serve < n_t)
    serve_at = np.minimum(serve, n_t - 1)
    cost = intensity_g_per_kwh[serve_at] * energy_j[None, :, None] / J_PER_KWH
    model = Model()
    moved = model.cols((n_t, n_j, lags), cost=cost, upper=np.where(usable, np.inf, 0.0))
    every = model.rows((n_t, n_j), lower=arrivals, upper=arrivals)
    model.coef(every[:, :, None], moved, usable.astype(float))
    at_least = np.zeros((n_t, n_j)) if served_at_least is None else served_at_least
    room = model.rows((n_t, n_j), lower=np.minimum(at_least, capacity), upper=capacity)
    model.coef(room[serve_at, np.arange(n_j)[None, :, None]], moved, usable.astype(float))
    power = model.rows((n_t,), upper=energy_budget_j)
    model.coef(power[serve_at], moved, usable * energy_j[None, :, None])
    if always_running is not None:
        _serve_the_backlog(
            model,
            moved,
            usable=usable,
            serve_at=serve_at,
            arrivals=arrivals,
            served_at_least=at_least,
            always_running=always_running,
        )
    solution = model.solve(
        node_limit=CARBON_MIP_NODE_LIMIT, feasibility_tolerance=CARBON_MIP_FEASIBILITY
    )
    served = np.zeros((n_t, n_j))
    if solution.optimal:
        amounts = np.where(usable, solution.x[moved], 0.0)
        np.add.at(served, (serve_at, np.arange(n_j)[None, :, None]), amounts)
    on_arrival = float((intensity_g_per_kwh[:, None] * arrivals * energy_j[None, :]).sum())
    return CarbonPlan(
        solution=solution,
        # A MIP's optimum is bracketed within its gap: its proven lower end keeps the saving an
        # upper bound (an LP's gap is 0).
        optimal_g=solution.objective * (1.0 - solution.mip_gap),
        on_arrival_g=on_arrival / J_PER_KWH,
        served=served,
    )


def _serve_the_backlog(
    model: Model,
    moved: IntArray,
    *,
    usable: npt.NDArray[np.bool_],
    serve_at: IntArray,
    arrivals: FloatArray,
    served_at_least: FloatArray,
    always_running: FloatArray,
) -> None:
    """`least_shift_carbon`'s work-conserving replicas: slot t serves at least the smaller of
    `always_running[t]` and the backlog it starts with plus `served_at_least[t]`. A binary per
    slot and service says which holds: 1, the replicas serve their capacity; 0, the slot ends
    with everything that arrived before it served, and its own `served_at_least` too."""
    n_t, n_j = arrivals.shape
    served = model.cols((n_t, n_j))
    tie = model.rows((n_t, n_j), lower=0.0, upper=0.0)  # served[t, j] = what slot t serves
    model.coef(tie, served, 1.0)
    model.coef(tie[serve_at, np.arange(n_j)[None, :, None]], moved, -usable.astype(float))
    full = model.cols((n_t, n_j), upper=1.0, integer=True)
    at_capacity = model.rows((n_t, n_j), lower=0.0, upper=np.inf)  # served - F full >= 0
    model.coef(at_capacity, served, 1.0)
    model.coef(at_capacity, full, -always_running)
    # Everything served up to t + M full >= M, with M all that arrived before t plus the slot's
    # own `served_at_least`: when full is 0 the backlog the slot starts with is served by its
    # end, beside what the slot serves anyway.
    arrived_before = np.vstack([np.zeros((1, n_j)), np.cumsum(arrivals, axis=0)[:-1]])
    must = arrived_before + served_at_least
    emptied = model.rows((n_t, n_j), lower=must, upper=np.inf)
    slot, earlier = np.nonzero(np.tril(np.ones((n_t, n_t), dtype=bool)))
    for j in range(n_j):
        model.coef(emptied[slot, j], served[earlier, j], 1.0)
    model.coef(emptied, full, must)


@dataclass(frozen=True, slots=True)
class ColocationPlan:
    """The optimum of `least_rack_peaks`."""

    solution: LpSolution
    peak_to_average: float
    """Sum of rack peaks over the peak of the site, at the optimum."""
    rack_peaks_w: FloatArray


def least_rack_peaks(
    *,
    service_w: FloatArray,
    service_servers: FloatArray,
    rack_idle_w: FloatArray,
    rack_servers: FloatArray,
    rack_max_w: float | None,
) -> ColocationPlan:
    """Services' loads shared over racks so that the sum of the rack peaks is least.

    Steps k, services j, racks r. Service j draws `service_w[k, j]` over idle on
    `service_servers[k, j]` servers; f[k, j, r] is the share of it in rack r:

        min  sum_r peak_r
        s.t. sum_r f[k, j, r] = 1
             rack_idle_w[r] + sum_j service_w[k, j] f[k, j, r] <= peak_r  (and <= rack_max_w)
             sum_j service_servers[k, j] f[k, j, r] <= rack_servers[r]

    The ratio is the twin's `peak_to_average` (sum of rack peaks / peak of the site's sum) of the
    best co-location: shares are fractional (replicas need not be whole), so no placement of
    whole replicas of the same loads does better.
    """
    n_k, n_j = service_w.shape
    n_r = rack_idle_w.size
    model = Model()
    share = model.cols((n_k, n_j, n_r), upper=1.0)
    peak = model.cols((n_r,), cost=1.0, lower=-np.inf)
    whole = model.rows((n_k, n_j), lower=1.0, upper=1.0)
    model.coef(whole[:, :, None], share, 1.0)
    draws = model.rows((n_k, n_r), upper=-rack_idle_w[None, :])
    model.coef(draws[:, None, :], share, service_w[:, :, None])
    model.coef(draws, peak[None, :], -1.0)
    if rack_max_w is not None:
        limit = model.rows((n_k, n_r), upper=rack_max_w - rack_idle_w[None, :])
        model.coef(limit[:, None, :], share, service_w[:, :, None])
    seats = model.rows((n_k, n_r), upper=rack_servers[None, :])
    model.coef(seats[:, None, :], share, service_servers[:, :, None])
    solution = model.solve()
    site_peak = float((rack_idle_w.sum() + service_w.sum(axis=1)).max())
    peaks = solution.x[peak] if solution.optimal else np.full(n_r, np.nan)
    return ColocationPlan(
        solution=solution,
        peak_to_average=float(peaks.sum() / site_peak) if site_peak > 0 else float("nan"),
        rack_peaks_w=peaks,
    )
