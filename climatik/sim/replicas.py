"""Where a replica starts and which one leaves: each policy's placement strategy on the twin's
servers (one replica per server).

Random and round-robin stand for the scheduler without Climatik; the other strategies are the
controller's own scoring (`score_racks` at creation, `score_scale_in` through the
pod-deletion-cost) on what the policy sees (`sim.views`).
"""

from __future__ import annotations

import numpy as np

from climatik.policies.placement import (
    PlacementStrategy,
    order_pods_for_scale_in,
    score_racks,
    score_scale_in,
)
from climatik.sim.state import TwinState
from climatik.sim.views import place_observations, replica_w, room_inlets, service_series
from climatik.sim.world import World


def place(world: World, st: TwinState, p: int, svc: int, now: float) -> bool:
    """Start a replica of `svc` on a free server of policy p; False when none is free."""
    fleet = st.fleet
    free = np.flatnonzero(fleet.host[p] < 0)
    if free.size == 0:
        return False
    spec = world.specs[p]
    if spec.placement == "random":
        choice = int(st.rng.placement.choice(free))
    elif spec.placement == "round-robin":
        after = free[free >= fleet.rr_next[p]]
        choice = int(after[0] if after.size else free[0])
        fleet.rr_next[p] = (choice + 1) % world.n_srv
    else:
        obs = place_observations(world, st, p, free)
        strategy = PlacementStrategy(spec.placement)
        if strategy is PlacementStrategy.CLIMATIK:
            ranked = score_racks(
                obs,
                strategy,
                service_series_w=service_series(world, st.seen, p, svc),
                added_watts=replica_w(world, st, p, svc, now),
                inlets_c=room_inlets(world, st, p, now),
            )
        else:
            ranked = score_racks(obs, strategy)
        choice = int(ranked[0].place_id)
    fleet.host[p, choice] = svc
    fleet.ready_at[p, choice] = now + world.startup_s[svc]
    fleet.born[p, choice] = now
    return True


def remove(world: World, st: TwinState, p: int, svc: int, now: float) -> None:
    """Stop one replica of `svc` under policy p (none if it runs none)."""
    fleet = st.fleet
    mine = np.flatnonzero(fleet.host[p] == svc)
    if mine.size == 0:
        return
    # Not-ready pods go first (as the ReplicaSet does); then the newest, or with
    # Climatik's pod-deletion-cost the one the live controller would delete first:
    # the replica whose removal lowers the hottest inlet most (`score_scale_in`).
    starting = fleet.ready_at[p, mine] > now
    if world.specs[p].remove_hottest:
        keep = score_scale_in(
            place_observations(world, st, p, mine),
            removed_watts=replica_w(world, st, p, svc, now),
            inlets_c=room_inlets(world, st, p, now),
            service_series_w=service_series(world, st.seen, p, svc),
        )
        cost = order_pods_for_scale_in({f"{i:05d}": f"{i:05d}" for i in mine}, keep)
        key = np.array([-cost[f"{i:05d}"] for i in mine], dtype=np.float64)
    else:
        key = fleet.born[p, mine]
    order = np.lexsort((-key, ~starting))
    victim = mine[order[0]]
    fleet.host[p, victim] = -1
    fleet.ready_at[p, victim] = np.inf


def warm_start(world: World, st: TwinState) -> None:
    """Place the replicas the first arrivals need, ready before hour 0."""
    wanted = st.fleet.wanted
    for p in range(world.n_pol):
        for j in range(world.n_svc):
            for _ in range(int(wanted[p, j])):
                place(world, st, p, j, -1e9)


def cold_start(world: World, st: TwinState) -> None:
    """Start each service's minimum replicas at hour 0, none ready yet, the autoscaler's
    history at the minimum: a deployment just rolled out, as a live demo starts."""
    fleet = st.fleet
    fleet.wanted[:] = world.min_rep
    fleet.rec_hist[:] = world.min_rep[None, :, None]
    for p in range(world.n_pol):
        for j in range(world.n_svc):
            for _ in range(int(world.min_rep[j])):
                place(world, st, p, j, 0.0)
