"""The one observation builder: what the controller measures becomes what the policies read.

The live reconcilers and the twin both build the policies' observations here, so a twin figure
is a figure of the controller that ships (ARCHITECTURE.md, decision 9). Every input is something
the controller measures or reads from the cluster: pod and node watts, node idle power learned
from nodes that serve no work, rack power and inlet with their limits, vLLM tokens, replica
counts, the heat matrix (configured, or estimated from history). Nothing here knows the twin's
physics, so the twin cannot hand a policy more than the controller has.

Pure: no I/O, no clock; learned state (idle power) travels in the values returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from climatik.domain.capping import CapObservation, RackObservation, TargetObservation
from climatik.domain.placement import PlaceObservation, RecirculationEstimate
from climatik.policies.carbon import caps_with_carbon
from climatik.policies.ceiling_settings import CeilingSettings, HeadroomSettings
from climatik.policies.heat_fit import PlacePosition, estimate_recirculation

INLET_GUARD_C = 0.3
"""A rack this close to its inlet limit takes no more replicas: inlets lag their heat."""

IDLE_WEIGHT = 0.1
"""Moving-average weight of one round of idle-node readings (idle draw drifts slowly)."""

IDLE_BAND = 0.1
"""A reading more than this share above the round's lowest (or above the estimate) is not idle
draw: the node served work within the measurement's lag and rate window (a replica just left
it). Idle draw varies by a few percent between alike nodes and over minutes; a replica's work
adds 30 % or more of it."""

HEAT_HISTORY_SAMPLES = 720
"""Complete readings kept to fit the heat matrix to (six hours at a 30-s interval)."""

HEAT_REFIT_SAMPLES = 10
"""New readings between two fits of the heat matrix: one more of hundreds moves the fit little,
and a fit over a room of servers costs a least-squares solve per inlet."""

IDLE_SAMPLE_NODES = 3
"""Nodes without work read per round for the idle draw (the first ones by name, so configs that
share racks ask the same few queries): idle draw is much alike across a rack's nodes."""

Column = tuple[tuple[str, float], ...]
"""A heat-matrix column: per inlet place id, °C of rise per kW dissipated at the place."""


def _usable(value: float | None) -> float | None:
    """A measurement the policies may use: finite and non-negative, else no data."""
    return value if value is not None and math.isfinite(value) and value >= 0 else None


# --- racks -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RackGrouping:
    """Nodes by rack and each rack's zone: the one grouping placement and capping share."""

    nodes_by_rack: Mapping[str, tuple[str, ...]]
    zone_of_rack: Mapping[str, str]


def group_nodes_by_rack(
    nodes: Iterable[tuple[str, Mapping[str, str]]], rack_label: str, zone_label: str | None = None
) -> RackGrouping:
    """Group `(node name, labels)` by the rack label; a rack's zone is its first node's zone."""
    by_rack: dict[str, list[str]] = {}
    zones: dict[str, str] = {}
    for name, labels in nodes:
        rack = labels.get(rack_label)
        if not rack:
            continue
        by_rack.setdefault(rack, []).append(name)
        zone = labels.get(zone_label) if zone_label else None
        if zone:
            zones.setdefault(rack, zone)
    return RackGrouping({r: tuple(sorted(n)) for r, n in by_rack.items()}, zones)


# --- idle power ------------------------------------------------------------------------------


IDLE_SETTLE_ROUNDS = 3
"""Decisions in a row a node must have hosted no replica before its reading is idle draw: a
node freed within a measurement lag plus a rate window still shows its replica's work (the
twin's `default`, started cold, first read 4.8 kW for a 2.8 kW floor from a node freed a
decision before). The same count as `HeadroomSettings.settle_rounds`, for the same reason."""


@dataclass(frozen=True, slots=True)
class IdlePower:
    """A node's idle draw, learned from nodes while they serve no work; `None`: not seen yet."""

    watts: float | None = None
    samples: int = 0
    free_rounds: Mapping[str, int] = field(default_factory=dict)
    """Per node hosting no replica now, the decisions in a row it has hosted none."""

    def settled_nodes(self) -> list[str]:
        """Nodes free long enough to read idle draw from, the longest free first."""
        settled = [n for n, r in self.free_rounds.items() if r >= IDLE_SETTLE_ROUNDS]
        return sorted(settled, key=lambda n: (-self.free_rounds[n], n))


def track_free_nodes(previous: IdlePower, free_nodes: Iterable[str]) -> IdlePower:
    """Count, per node that hosts no replica this round, the rounds in a row it has hosted
    none; a node hosting one again starts over."""
    rounds = {n: previous.free_rounds.get(n, 0) + 1 for n in set(free_nodes)}
    return replace(previous, free_rounds=rounds)


def learn_idle_power(
    previous: IdlePower, idle_node_watts: Mapping[str, float | None], weight: float = IDLE_WEIGHT
) -> IdlePower:
    """Fold this round's readings of the nodes that host no replica into the estimate.

    Only nodes free for `IDLE_SETTLE_ROUNDS` decisions count (`track_free_nodes` first), and
    of their readings only those within `IDLE_BAND` of the round's lowest, and of the estimate
    so far: a node freed less than a lag plus a rate window ago still shows its replica's
    work, and taking it for idle draw (the twin's `default` learned 3.0-3.4 kW for a 2.8 kW
    floor) makes every target's dynamic energy look smaller than it is."""
    settled = set(previous.settled_nodes())
    readings = [
        w for w in (_usable(v) for n, v in idle_node_watts.items() if n in settled) if w is not None
    ]
    if not readings:
        return previous
    ceiling_w = min(readings) * (1.0 + IDLE_BAND)
    if previous.watts:
        ceiling_w = min(ceiling_w, previous.watts * (1.0 + IDLE_BAND))
    idle = [w for w in readings if w <= ceiling_w]
    if not idle:
        return previous
    mean = sum(idle) / len(idle)
    if previous.watts is None:
        return replace(previous, watts=mean, samples=1)
    return replace(
        previous,
        watts=previous.watts + weight * (mean - previous.watts),
        samples=previous.samples + 1,
    )


def ceiling_settings(
    settings: CeilingSettings, idle: IdlePower, *, scope_measures_nodes: bool
) -> CeilingSettings:
    """The headroom policy's idle credit: the learned idle draw when the scope's measurement
    includes idle nodes (a new replica then displaces idle power already counted), else 0."""
    if not isinstance(settings, HeadroomSettings):
        return settings
    credit = idle.watts if scope_measures_nodes and idle.watts is not None else 0.0
    pending = scope_measures_nodes and idle.watts is None
    return replace(settings, idle_watts_per_replica=credit, idle_pending=pending)


# --- capping ---------------------------------------------------------------------------------


def observe_target(
    *,
    name: str,
    current_replicas: int,
    min_replicas: int,
    user_max_replicas: int,
    applied_max_replicas: int,
    watts: float | None,
    tokens_per_s: float | None,
    limited_by_ceiling: bool | None,
    priority: int,
    deferrable: bool,
    demand_tokens_per_s: float | None = None,
) -> TargetObservation:
    """One target as measured; an unusable reading (NaN, negative) is no data, never zero.

    `demand_tokens_per_s` is what its demand asks for (arrivals plus the backlog the autoscaler
    drains, from its trigger metric); without it the policy charges every replica full load."""
    return TargetObservation(
        name=name,
        current_replicas=current_replicas,
        min_replicas=min_replicas,
        user_max_replicas=user_max_replicas,
        applied_max_replicas=applied_max_replicas,
        watts=_usable(watts),
        tokens_per_s=_usable(tokens_per_s),
        limited_by_ceiling=limited_by_ceiling,
        priority=priority,
        deferrable=deferrable,
        demand_tokens_per_s=_usable(demand_tokens_per_s),
    )


BACKLOG_DRAIN_S = 60.0
"""Time over which a target's waiting requests count as demand (KEDA's queue-length scaling
drains a backlog over about a minute)."""


def demand_tokens_per_s(
    tokens_per_s: float | None,
    waiting_requests: float | None,
    tokens_per_request: float | None,
    drain_s: float = BACKLOG_DRAIN_S,
) -> float | None:
    """What a target's demand asks for, in tokens per second, from what vLLM exports: the
    tokens it serves plus its waiting requests' tokens drained over `drain_s`. Served tokens
    alone miss the demand a saturated target turns away; its backlog shows it. `None` when
    the backlog is not measured (the policy then charges every replica full load)."""
    served = _usable(tokens_per_s)
    waiting = _usable(waiting_requests)
    per_request = _usable(tokens_per_request)
    if served is None or waiting is None or per_request is None:
        return None
    return served + waiting * per_request / drain_s


def measured_watts_per_replica(targets: Sequence[TargetObservation]) -> float | None:
    """What one replica of the scope draws: measured target watts over their replicas."""
    measured = [t for t in targets if t.watts is not None and t.current_replicas > 0]
    replicas = sum(t.current_replicas for t in measured)
    if not replicas:
        return None
    return sum(t.watts or 0.0 for t in measured) / replicas


@dataclass(frozen=True, slots=True)
class RackReading:
    """One rack as measured, with its limits and the nodes in it that host no replica."""

    rack_id: str
    watts: float | None
    inlet_c: float | None
    max_watts: float | None = None
    max_inlet_c: float | None = None
    free_nodes: int | None = None
    """Nodes of the rack without a replica of the scope's targets; `None`: unknown."""
    seats: int | None = None
    """Replicas of the targets' footprint the rack's nodes can still take (from VPA's
    recommendation, issue 23); `None`: not known, and its free nodes stand in (one replica a
    node, the twin's servers)."""


def replica_headroom(
    rack: RackReading, per_replica_w: float | None, idle_w: float | None
) -> int | None:
    """More replicas the rack takes: its seats (free nodes where no footprint is known), bounded
    by its power limit and 0 near its inlet limit. A replica on a free node adds its measured
    watts over the idle draw it displaces; one beyond the free nodes (several to a node, as a
    small footprint seats) adds all of its watts. `None` without a rack reading or a seat
    count: unknown, never 0."""
    watts, inlet = _usable(rack.watts), rack.inlet_c
    seats = rack.seats if rack.seats is not None else rack.free_nodes
    if seats is None or (watts is None and inlet is None):
        return None
    headroom = max(0, seats)
    if rack.max_watts is not None and watts is not None and per_replica_w is not None:
        headroom = min(
            headroom, power_replicas(rack.max_watts - watts, per_replica_w, idle_w, rack.free_nodes)
        )
    near_c = None if rack.max_inlet_c is None else rack.max_inlet_c - INLET_GUARD_C
    if near_c is not None and inlet is not None and math.isfinite(inlet) and inlet >= near_c:
        headroom = 0
    return headroom


def power_replicas(
    budget_w: float, per_replica_w: float, idle_w: float | None, free_nodes: int | None
) -> int:
    """Replicas `budget_w` pays for: the first `free_nodes` at their watts over the idle draw
    they displace (at least 1 W), the rest at their whole watts."""
    if not budget_w > 0:
        return 0
    marginal_w = max(per_replica_w - (idle_w or 0.0), 1.0)
    on_free = min(max(0, free_nodes or 0), int(budget_w // marginal_w))
    return on_free + int((budget_w - on_free * marginal_w) // max(per_replica_w, 1.0))


def observe_racks(
    readings: Sequence[RackReading], *, per_replica_w: float | None, idle_w: float | None
) -> tuple[RackObservation, ...]:
    """The capped scope's racks with their limits and replica headroom."""
    return tuple(
        RackObservation(
            rack_id=r.rack_id,
            watts=_usable(r.watts),
            max_watts=r.max_watts,
            inlet_c=r.inlet_c if r.inlet_c is not None and math.isfinite(r.inlet_c) else None,
            max_inlet_c=r.max_inlet_c,
            replica_headroom=replica_headroom(r, per_replica_w, idle_w),
        )
        for r in readings
    )


def observe_cap(
    *,
    scope: str,
    base_cap_w: float,
    cap_w: float,
    measured_w: float | None,
    targets: Sequence[TargetObservation],
    racks: Sequence[RackObservation] = (),
    per_target_budget: bool = True,
) -> CapObservation:
    """One capped scope; a lower (carbon) `cap_w` binds only deferrable targets when some are
    and the policy budgets per target (headroom; under threshold it is the whole scope's cap,
    else annotating a target would switch carbon capping off)."""
    any_deferrable = per_target_budget and any(t.deferrable for t in targets)
    scope_cap_w, deferrable_cap_w = caps_with_carbon(
        base_cap_w, cap_w, any_deferrable=any_deferrable
    )
    return CapObservation(
        scope=scope,
        cap_w=scope_cap_w,
        deferrable_cap_w=deferrable_cap_w,
        measured_w=_usable(measured_w),
        targets=tuple(targets),
        racks=tuple(racks),
    )


# --- placement -------------------------------------------------------------------------------


def refit_due(fitted_at: int | None, appended: int) -> bool:
    """Whether to fit the heat matrix again: never fitted, or `HEAT_REFIT_SAMPLES` new readings
    since (`fitted_at` and `appended` count readings appended to the history)."""
    return fitted_at is None or appended - fitted_at >= HEAT_REFIT_SAMPLES


def recirculation_from_history(
    place_ids: Sequence[str],
    power_w: Sequence[Sequence[float]],
    inlet_c: Sequence[Sequence[float]],
    supply_c: Sequence[float | Sequence[float] | None] | None = None,
    *,
    sample_s: float | None = None,
    positions: Sequence[PlacePosition] | None = None,
) -> RecirculationEstimate | None:
    """The heat matrix fitted to complete readings, once there are twice as many samples as
    unknowns (fewer fit noise); `None` before that or when the fit is impossible.

    `supply_c` is the supply air per sample: one value (one cooling unit), or one per place
    (`None`: not measured then).
    When every sample has it, the fit is of inlet minus supply (inlet = supply + D · power):
    the cooling unit moves the supply air against the hottest inlet, so without it the hottest
    inlets barely follow the power and their coefficients come out near 0 (in the twin's
    `heatwave` the fitted factors were 0-0.74 °C/kW against 0.22-0.95 true, residual 2.4 °C;
    with the supply, 0.39-1.15 and 0.1 °C).

    `sample_s` (the samples' spacing) lets the fit find the inlets' lag behind power, and
    `positions` (where each place sits) draws it toward the geometric prior
    (`climatik.policies.heat_fit`): on the twin's `fixed-supply` room the matrix was 68 % off
    the truth without either, mostly on the diagonal, since powers move together."""
    if len(power_w) < 2 * (len(place_ids) + 1):
        return None
    complete = supply_c is not None and len(supply_c) == len(power_w)
    if complete and supply_c is not None and all(s is not None for s in supply_c):
        supply = np.asarray(supply_c, dtype=np.float64)
    else:
        supply = None
    try:
        return estimate_recirculation(
            place_ids,
            np.asarray(power_w),
            np.asarray(inlet_c),
            supply,
            sample_s=sample_s,
            positions=positions,
        )
    except (ValueError, ArithmeticError):
        return None


def heat_coefficients(
    place_ids: Sequence[str],
    estimate: RecirculationEstimate | None,
    configured_factors: Mapping[str, float] | None = None,
    configured_columns: Mapping[str, Column] | None = None,
) -> tuple[dict[str, float], dict[str, Column]]:
    """Recirculation factor and heat-matrix column per place: configured, else estimated,
    else a factor of 0 and no column (the score then has no recirculation opinion)."""
    factors = dict(configured_factors or {})
    columns = dict(configured_columns or {})
    if estimate is not None:
        for j, place in enumerate(estimate.place_ids):
            factors.setdefault(place, estimate.factors_c_per_kw[j])
            columns.setdefault(
                place,
                tuple(
                    (inlet, row[j])
                    for inlet, row in zip(estimate.place_ids, estimate.matrix_c_per_kw, strict=True)
                ),
            )
    return {p: factors.get(p, 0.0) for p in place_ids}, {
        p: columns[p] for p in place_ids if p in columns
    }


@dataclass(frozen=True, slots=True)
class PlaceReading:
    """One place (a rack live, a chassis in the twin) as measured, with its limits."""

    place_id: str
    watts: float | None
    inlet_c: float | None
    max_inlet_c: float | None
    max_watts: float | None = None
    zone: str = ""
    supply_c: float | None = None
    load_series_w: tuple[float, ...] = ()


def zone_watts(pairs: Iterable[tuple[str, float | None]]) -> dict[str, float]:
    """Measured power per zone from `(zone, watts)` of its members (unmeasured ones skipped)."""
    out: dict[str, float] = {}
    for zone, watts in pairs:
        usable = _usable(watts)
        if usable is not None:
            out[zone] = out.get(zone, 0.0) + usable
    return out


def observe_places(
    readings: Sequence[PlaceReading],
    *,
    factors: Mapping[str, float],
    columns: Mapping[str, Column],
    zone_w: Mapping[str, float],
) -> list[PlaceObservation]:
    """What placement sees of each candidate place."""
    return [
        PlaceObservation(
            place_id=r.place_id,
            recirculation_c_per_kw=factors.get(r.place_id, 0.0),
            inlet_c=r.inlet_c if r.inlet_c is not None and math.isfinite(r.inlet_c) else None,
            max_inlet_c=r.max_inlet_c,
            watts=_usable(r.watts),
            max_watts=r.max_watts,
            zone=r.zone,
            zone_watts=zone_w.get(r.zone),
            supply_c=r.supply_c if r.supply_c is not None and math.isfinite(r.supply_c) else None,
            load_series_w=r.load_series_w,
            inlet_rise_c_per_kw=columns.get(r.place_id, ()),
        )
        for r in readings
    ]


def replica_added_watts(
    workload_w: float | None, running_replicas: int, idle_w: float | None = None
) -> float | None:
    """What one more replica adds: the workload's measured watts per running replica, less the
    node idle draw it displaces when that is known (else its whole share, an upper bound)."""
    usable = _usable(workload_w)
    if usable is None or running_replicas <= 0:
        return None
    return max(0.0, usable / running_replicas - (idle_w or 0.0))
