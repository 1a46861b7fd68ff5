"""Where a replica starts and which one leaves: each policy's placement strategy on the twin's
servers (one replica per server).

Random and round-robin stand for the scheduler without Climatik; the other strategies are the
controller's own scoring (`score_racks` at creation, `score_scale_in` through the
pod-deletion-cost) on what the policy sees (`sim.views`).
"""

from __future__ import annotations

import numpy as np

from climatik.domain.placement import Migration, MigrationSettings, PlaceObservation, PlaceScore
from climatik.policies.placement import (
    PlacementStrategy,
    choose_migration,
    order_pods_for_scale_in,
    removal_could_gain,
    score_racks,
    score_scale_in,
)
from climatik.sim.state import TwinState
from climatik.sim.views import place_observations, replica_w, room_inlets, service_series
from climatik.sim.world import IntArray, World

MIGRATION = MigrationSettings()
"""The live controller's defaults for `spec.placement.migration`."""


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
        choice = int(_ranked(world, st, p, svc, now=now, free=free)[0].place_id)
    _start(world, st, p, server=choice, svc=svc, now=now)
    return True


def _ranked(
    world: World,
    st: TwinState,
    p: int,
    svc: int,
    *,
    now: float,
    free: IntArray,
    seen: list[PlaceObservation] | None = None,
) -> tuple[PlaceScore, ...]:
    """The free servers as the policy's strategy ranks them for one more replica of `svc`
    (`seen`: every server's observation, when the caller has built them already)."""
    obs = place_observations(world, st, p, free) if seen is None else [seen[i] for i in free]
    strategy = PlacementStrategy(world.specs[p].placement)
    if strategy is not PlacementStrategy.CLIMATIK:
        return score_racks(obs, strategy)
    return score_racks(
        obs,
        strategy,
        service_series_w=service_series(world, st.seen, p, svc),
        added_watts=replica_w(world, st, p, svc, now),
        inlets_c=room_inlets(world, st, p, now),
    )


def _start(world: World, st: TwinState, p: int, *, server: int, svc: int, now: float) -> None:
    fleet = st.fleet
    fleet.host[p, server] = svc
    fleet.ready_at[p, server] = now + world.startup_s[svc]
    fleet.born[p, server] = now


def migrate(world: World, st: TwinState, p: int, now: float) -> None:
    """Move at most one of policy p's ready replicas to a cooler free server
    (`choose_migration`), as the live placement reconciler evicts one: the replacement starts
    where the policy's ranking puts a new replica, the old one stops at once (its pod is
    evicted), so the service is a replica short for the start-up."""
    fleet, settings = st.fleet, MIGRATION
    if now - fleet.migrated_at[p] < settings.min_interval_s:
        return
    free = np.flatnonzero(fleet.host[p] < 0)
    if free.size == 0:
        return
    inlets = room_inlets(world, st, p, now)
    seen = place_observations(world, st, p, np.arange(world.n_srv))
    best: tuple[Migration, int] | None = None
    for svc in range(world.n_svc):
        mine = fleet.host[p] == svc
        ready = np.flatnonzero(mine & (fleet.ready_at[p] <= now))
        if ready.size < settings.min_ready or ready.size < int(mine.sum()):
            continue
        sources, watts = [seen[i] for i in ready], replica_w(world, st, p, svc, now)
        if not removal_could_gain(sources, watts, inlets, settings.min_gain_c):
            continue  # no move from these can gain enough: spare ranking the free servers
        top = int(_ranked(world, st, p, svc, now=now, free=free, seen=seen)[0].place_id)
        move = choose_migration(sources, seen[top], watts, inlets, settings.min_gain_c)
        if move is not None and (best is None or move.gain_c > best[0].gain_c):
            best = (move, svc)
    if best is None:
        return
    move, svc = best
    _start(world, st, p, server=int(move.target), svc=svc, now=now)
    source = int(move.source)
    fleet.host[p, source] = -1
    fleet.ready_at[p, source] = np.inf
    fleet.migrated_at[p] = now


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
