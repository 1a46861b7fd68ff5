"""Serving, one step: each service's ready replicas serve its arrivals and queue, the queue
times requests out, and the SLOs are met or missed (a fluid queue per service and policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from climatik.sim import physics
from climatik.sim.state import Fleet, Timing
from climatik.sim.world import BoolArray, FloatArray, IntArray, World


@dataclass(frozen=True, slots=True, eq=False)
class Served:
    """What one step served, per policy and server or service."""

    ready: BoolArray
    """Servers whose replica is ready (policies x servers)."""
    safe_host: IntArray
    """Each server's service index, 0 where the server is free (for gathering)."""
    onehot: BoolArray
    """Server runs service (policies x servers x services)."""
    n_tot: IntArray
    """Replicas per service, starting ones included."""
    util: FloatArray
    queue: FloatArray
    """Requests waiting after the step."""
    tokens: FloatArray
    """Output tokens served in the step."""
    arrived: FloatArray
    """Requests arrived in the step, per service (the same for every policy)."""
    met: FloatArray
    """Requests that met their SLOs."""


def serve(world: World, timing: Timing, fleet: Fleet, lam: FloatArray, now_s: float) -> Served:
    """Advance the queues one step at the given arrival rates; updates `fleet.queue`."""
    dt = world.dt
    host = fleet.host
    active = host >= 0
    ready = active & (fleet.ready_at <= now_s)
    safe_host = np.where(active, host, 0)
    onehot = host[:, :, None] == world.svc_range[None, None, :]  # (P, N, S)
    n_tot = onehot.sum(axis=1)
    n_ready = (onehot & ready[:, :, None]).sum(axis=1)
    cap_rps = n_ready * timing.mu
    demand = fleet.queue / dt + lam
    served = np.minimum(demand, cap_rps)
    queue = fleet.queue + (lam - served) * dt
    max_q = np.maximum(cap_rps, 1e-9) * world.timeout_s
    dropped = np.maximum(0.0, queue - max_q)
    queue -= dropped
    util = np.where(cap_rps > 0, served / np.maximum(cap_rps, 1e-12), 0.0)

    arrived = lam * dt
    wait_s = physics.ttft_wait_s(queue, cap_rps, timing.pre_s, util)
    met_frac = physics.ttft_met_fraction(world.ttft_slo, timing.pre_s, wait_s)
    met = met_frac * np.maximum(arrived - dropped, 0.0)
    for j, aged in fleet.aged.items():
        # Deferrable work: waits by age, meets its objective when served in time.
        left, met[:, j], dropped[:, j] = aged.step(
            np.full(world.n_pol, arrived[j]), served[:, j] * dt, now_s
        )
        queue[:, j] = left
    fleet.queue = queue
    for j, s in enumerate(world.scenario.services):
        tbt = physics.decode_step_s(s.model_class, util[:, j], timing.clock[:, j])
        met[:, j] *= tbt <= world.tbt_slo[j]
    return Served(
        ready=ready,
        safe_host=safe_host,
        onehot=onehot,
        n_tot=n_tot,
        util=util,
        queue=queue,
        tokens=served * dt * world.out_tokens,
        arrived=arrived,
        met=met,
    )
