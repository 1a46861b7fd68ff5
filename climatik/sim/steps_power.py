"""Power, one step: every server's draw from its GPUs' prefill and decode shares at its
service's clock, with the common power noise, summed per rack, service and site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from climatik.sim import physics
from climatik.sim.state import Room, Streams, Timing
from climatik.sim.steps_serve import Served
from climatik.sim.world import FloatArray, World


@dataclass(frozen=True, slots=True, eq=False)
class Drawn:
    """The step's IT power per policy, summed three ways (servers are in `Room.srv_w`)."""

    site_w: FloatArray
    rack_w: FloatArray
    svc_w: FloatArray


def draw_power(world: World, timing: Timing, room: Room, served: Served, rng: Streams) -> Drawn:
    """Every server's power this step; sets `room.srv_w`."""
    racks = world.scenario.racks
    gpu = racks.gpu_curve
    gpus, overhead = racks.gpus_per_server, racks.server_gpu_overhead
    pol_idx, safe_host = world.pol_idx, served.safe_host
    u_srv = np.where(served.ready, served.util[pol_idx, safe_host], 0.0)
    share_srv = timing.pre_share[pol_idx, safe_host]
    busy_pre = u_srv * share_srv
    busy_dec = u_srv - busy_pre
    # P_g with the per-service phase powers at each policy's clock (computed once).
    gpu_w = (
        gpu.idle_w
        + busy_pre * timing.pre_dyn_w[pol_idx, safe_host]
        + busy_dec * timing.dec_dyn_w[pol_idx, safe_host]
    )
    dyn_w = gpu_w - gpu.idle_w
    cv = 0.15 + 0.45 * share_srv
    sigma = (1 + overhead) * math.sqrt(gpus) * cv * dyn_w * world.noise_scale
    srv_w = physics.server_power_w(gpu_w, gpus, gpu.idle_w, racks.server_base_w, overhead)
    srv_w = srv_w + rng.noise.standard_normal(world.n_srv)[None, :] * sigma
    room.srv_w = srv_w
    return Drawn(
        site_w=srv_w.sum(axis=1),
        rack_w=srv_w.reshape(world.n_pol, world.n_rack, world.per_rack).sum(axis=2),
        svc_w=np.einsum("pn,pns->ps", srv_w, served.onehot),
    )
