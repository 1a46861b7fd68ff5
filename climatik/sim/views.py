"""What a policy sees of the room when it places or removes a replica: by default only what
the live controller measures (lagged, averaged, absent in outages), with `exact_knowledge`
the room itself.

These are the inputs of `score_racks` and `score_scale_in`, built with the controller's own
observation builder (`observe_places`, `observe_racks`), so a twin figure is the shipped
controller's.
"""

from __future__ import annotations

import numpy as np

from climatik.domain.capping import RackObservation
from climatik.domain.placement import PlaceObservation
from climatik.policies.heat_fit import PlacePosition
from climatik.policies.observations import (
    PlaceReading,
    RackReading,
    heat_coefficients,
    observe_places,
    observe_racks,
    recirculation_from_history,
    refit_due,
    replica_added_watts,
    zone_watts,
)
from climatik.sim.scenario import Scenario
from climatik.sim.state import Seen, TwinState
from climatik.sim.world import FloatArray, HeatMatrix, IntArray, World


def heat_matrix(world: World, seen: Seen, p: int) -> HeatMatrix:
    """The heat matrix placement uses: exact, or fitted to history, refitted every
    `HEAT_REFIT_SAMPLES` samples (as the live reconciler does)."""
    if world.exact:
        return world.exact_heat
    place_ids = world.place_ids
    fit = seen.heat_fits.get(p)
    if fit is None or refit_due(fit[0], seen.heat_appended):
        samples = list(seen.heat_history)
        estimate = recirculation_from_history(
            place_ids,
            [h[0][p] for h in samples],
            [h[1][p] for h in samples],
            [float(h[2][p]) for h in samples],
            sample_s=world.scenario.control_interval_s,
            positions=place_positions(world),
        )
        coefficients = heat_coefficients(place_ids, estimate)
        fit = seen.heat_fits[p] = (seen.heat_appended, estimate, coefficients)
    return fit[2]


def place_positions(world: World) -> tuple[PlacePosition, ...]:
    """Where each server sits (its rack along the row, its height in the rack): the layout an
    operator labels nodes with, not the twin's heat matrix."""
    top = max(world.per_rack - 1, 1)
    return tuple(
        PlacePosition(rack=float(world.rack_of[i]), height=(i % world.per_rack) / top)
        for i in range(world.n_srv)
    )


def replica_w(world: World, st: TwinState, p: int, svc: int, now: float) -> float | None:
    """What a replica of `svc` adds: measured, the service's watts per running replica
    (the live reconciler's rule); exact, its ready replicas' mean over idle, else the
    server at the autoscaler's target utilisation."""
    fleet = st.fleet
    mine = (fleet.host[p] == svc) & (fleet.ready_at[p] <= now)
    if not world.exact:
        return replica_added_watts(float(st.seen.svc_w[p, svc]), int(mine.sum()))
    if mine.any():
        return max(0.0, float(st.room.srv_w[p, mine].mean()) - world.idle_server_w)
    return float(st.seen.replica_guess_w[p, svc])


def room_inlets(world: World, st: TwinState, p: int, now: float) -> dict[str, float] | None:
    """The room's inlets placement predicts from. Exact knowledge: steady inlets once
    every placed replica draws, supply + D · expected watts (starting replicas at their
    expected draw, so a burst of placements does not stack on a spot that only looks
    cool because it has not heated up yet). Measured: the measured inlets, as the live
    controller has them."""
    place_ids = world.place_ids
    if not world.exact:
        # Every server's measured inlet, as the live reconciler scores every rack: the
        # hottest inlet is often a full server's, which is no candidate.
        return {place_ids[i]: float(st.seen.srv_in[p, i]) for i in range(world.n_srv)}
    host, ready_at = st.fleet.host, st.fleet.ready_at
    expected = st.room.srv_w[p].copy()
    starting = (host[p] >= 0) & (ready_at[p] > now)
    for i in np.flatnonzero(starting):
        expected[i] = world.idle_server_w + (replica_w(world, st, p, int(host[p, i]), now) or 0.0)
    temps = st.room.supply[p] + world.d_matrix @ expected
    return {place_ids[i]: float(temps[i]) for i in range(world.n_srv)}


def series_order(world: World, seen: Seen) -> IntArray:
    """The power series' ring slots, oldest first."""
    n = seen.series_count
    if n < world.series_len:
        return np.arange(n, dtype=np.int64)
    return (np.arange(world.series_len, dtype=np.int64) + n) % world.series_len


def service_series(world: World, seen: Seen, p: int, svc: int) -> tuple[float, ...] | None:
    """The last hour of a service's measured power (None before the first measurement)."""
    order = series_order(world, seen)
    return tuple(float(v) for v in seen.series_svc_w[p, svc, order]) if order.size else None


def place_observations(
    world: World, st: TwinState, p: int, servers: IntArray
) -> list[PlaceObservation]:
    """What the policy sees of each server: the live controller's inputs, per chassis."""
    sc = world.scenario
    room, seen = st.room, st.seen
    n_rack, per_rack = world.n_rack, world.per_rack
    rack_of, zone_of = world.rack_of, world.zone_of
    if world.exact:
        chassis_w, chassis_in = room.srv_w[p], np.where(room.inlet[p] > 0, room.inlet[p], np.nan)
        rack_w = chassis_w.reshape(n_rack, per_rack).sum(axis=1)
    else:
        chassis_w, chassis_in, rack_w = seen.srv_w[p], seen.srv_in[p], seen.rack_w[p]
    supply_c = float(room.supply[p] if world.exact else seen.supply[p])
    limit_c = sc.caps.rack_max_inlet_c or sc.cooling.redline_c
    order = series_order(world, seen)
    rack_series = [tuple(float(v) for v in seen.series_rack_w[p, r, order]) for r in range(n_rack)]
    factors, columns = heat_matrix(world, seen, p)
    readings = [
        PlaceReading(
            place_id=world.place_ids[i],
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
    zone_w = zone_watts((str(zone_of[i]), float(chassis_w[i])) for i in range(world.n_srv))
    return observe_places(readings, factors=factors, columns=columns, zone_w=zone_w)


def rack_observations(
    scenario: Scenario,
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
    caps = scenario.caps
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
