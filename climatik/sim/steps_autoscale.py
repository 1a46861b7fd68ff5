"""Autoscaling, one step, as KEDA's HPA does it: target utilisation with the queue to drain,
immediate scale-up, scale-down stabilised over a window, everything within the ceiling
(an HPA drops to a lowered max at once).
"""

from __future__ import annotations

import numpy as np

from climatik.sim.replicas import place, remove
from climatik.sim.state import TwinState
from climatik.sim.world import FloatArray, IntArray, World


def autoscale(
    world: World, st: TwinState, *, lam: FloatArray, n_tot: IntArray, k: int, now_s: float
) -> None:
    """Scale every policy's services toward what their load wants; updates `st.fleet`."""
    fleet, timing = st.fleet, st.timing
    min_rep, ceiling = world.min_rep, st.control.ceiling
    wanted = np.ceil(
        (lam + fleet.queue / world.drain_s) / (timing.mu * world.target_util) - 1e-9
    ).astype(np.int64)
    fleet.wanted = wanted
    desired = np.clip(wanted, min_rep, np.maximum(ceiling, min_rep))
    fleet.rec_hist[:, :, k % world.window] = desired
    stabilised = fleet.rec_hist.max(axis=2)
    target = np.where(desired >= n_tot, desired, np.minimum(n_tot, stabilised))
    target = np.clip(target, min_rep, np.maximum(ceiling, min_rep))
    for p, j in zip(*np.nonzero(target != n_tot), strict=True):
        change = int(target[p, j] - n_tot[p, j])
        for _ in range(abs(change)):
            if change > 0:
                if not place(world, st, int(p), int(j), now_s):
                    break
            else:
                remove(world, st, int(p), int(j), now_s)
