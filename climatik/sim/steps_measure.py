"""Measuring: what Prometheus would hold of each step, and what the controller reads of it
at a control interval (a lagged window's mean, a little noisy, absent during outages) and
learns from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from climatik.policies.observations import learn_idle_power, track_free_nodes
from climatik.sim.state import Ring, Room, Seen, Streams
from climatik.sim.steps_heat import Cooled
from climatik.sim.steps_power import Drawn
from climatik.sim.steps_serve import Served
from climatik.sim.world import FloatArray, IntArray, World


@dataclass(frozen=True, slots=True, eq=False)
class Reading:
    """One control interval's measurements per policy. Drawn even during an outage (so the
    noise streams stay aligned), but then `have_data` is False and no policy sees them."""

    have_data: bool
    site_w: FloatArray
    svc_w: FloatArray
    svc_tok: FloatArray
    svc_queue: FloatArray
    rack_w: FloatArray
    rack_in: FloatArray
    srv_w: FloatArray
    srv_in: FloatArray
    supply: FloatArray


def record_sample(
    world: World,
    ring: Ring,
    k: int,
    *,
    served: Served,
    drawn: Drawn,
    room: Room,
    cooled: Cooled,
) -> None:
    """Keep step k's figures where the controller's queries will find them."""
    slot = k % world.ring_len
    ring.site[slot] = drawn.site_w
    ring.svc_w[slot] = drawn.svc_w
    ring.svc_tok[slot] = served.tokens / world.dt
    ring.svc_queue[slot] = served.queue
    ring.rack_w[slot] = drawn.rack_w
    ring.rack_in[slot] = cooled.rack_in
    ring.srv_w[slot] = room.srv_w
    ring.srv_in[slot] = room.inlet
    ring.supply[slot] = cooled.supply_now


def read(world: World, ring: Ring, rng: Streams, k: int) -> Reading:
    """What the controller's queries return at step k: the mean of a window that ends the
    measurement lag ago; power readings carry noise common to every policy."""
    noise_fraction = world.scenario.measurement.noise_fraction
    picks = [(k - world.lag_steps - i) % world.ring_len for i in range(world.win_steps)]

    def measured(values: FloatArray) -> FloatArray:
        mean = values[picks].mean(axis=0)
        noise = rng.noise.normal(0.0, noise_fraction, mean.shape[1:])
        return np.asarray(mean * (1 + noise), dtype=np.float64)

    site_w = measured(ring.site)
    svc_w = measured(ring.svc_w)
    svc_tok = ring.svc_tok[picks].mean(axis=0)
    # Waiting requests (vLLM's num_requests_waiting), with their own noise stream.
    svc_queue = ring.svc_queue[picks].mean(axis=0) * (
        1 + rng.demand.normal(0.0, noise_fraction, (world.n_pol, world.n_svc))
    )
    rack_w = measured(ring.rack_w)
    rack_in = ring.rack_in[picks].mean(axis=0)
    srv_w = measured(ring.srv_w)
    return Reading(
        have_data=not world.outage[k],
        site_w=site_w,
        svc_w=svc_w,
        svc_tok=svc_tok,
        svc_queue=svc_queue,
        rack_w=rack_w,
        rack_in=rack_in,
        srv_w=srv_w,
        srv_in=ring.srv_in[picks].mean(axis=0),
        supply=ring.supply[picks].mean(axis=0),
    )


def learn(world: World, seen: Seen, reading: Reading, host: IntArray) -> None:
    """Refresh what the controller has seen: the last readings (NaN in an outage), the power
    series, the heat history and, from measurements only, the idle draw of nodes that host
    no replica (the live rule)."""
    if not reading.have_data:
        for values in (seen.srv_w, seen.srv_in, seen.rack_w, seen.svc_w, seen.supply):
            values.fill(np.nan)
        return
    slot_h = seen.series_count % world.series_len
    seen.series_rack_w[:, :, slot_h] = reading.rack_w
    seen.series_svc_w[:, :, slot_h] = reading.svc_w
    seen.series_count += 1
    seen.srv_w[:], seen.srv_in[:] = reading.srv_w, reading.srv_in
    seen.rack_w[:], seen.svc_w[:] = reading.rack_w, reading.svc_w
    seen.supply[:] = reading.supply
    seen.heat_history.append((reading.srv_w, reading.srv_in, reading.supply))
    seen.heat_appended += 1
    if not world.exact:
        for p in range(world.n_pol):
            free = np.flatnonzero(host[p] < 0)
            tracked = track_free_nodes(seen.idle[p], (str(i) for i in free))
            watts = {str(i): float(reading.srv_w[p, i]) for i in free}
            seen.idle[p] = learn_idle_power(tracked, watts)
