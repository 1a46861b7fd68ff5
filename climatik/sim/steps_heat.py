"""Heat and cooling, one step: inlets follow the heat matrix with a lag, the cooling unit
slews its supply air toward the redline less its guard (or holds a fixed supply), and cooling
power follows the CoP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from climatik.sim import physics
from climatik.sim.state import Room
from climatik.sim.steps_power import Drawn
from climatik.sim.world import FloatArray, World


@dataclass(frozen=True, slots=True, eq=False)
class Cooled:
    """The step's temperatures and facility power per policy (inlets are in `Room.inlet`)."""

    max_in: FloatArray
    rack_in: FloatArray
    supply_now: FloatArray
    """The supply air during the step (`Room.supply` already holds the next step's)."""
    cooling_w: FloatArray
    facility_w: FloatArray


def move_heat(world: World, room: Room, drawn: Drawn, *, first: bool) -> Cooled:
    """Advance inlets and supply one step; `first` starts from the first load's steady
    state, not a cold room. Sets `room.rise`, `room.inlet` and `room.supply`."""
    cooling = world.scenario.cooling
    aim_c, low_c, high_c = cooling.supply_limits_c
    steady_rise = room.srv_w @ world.d_matrix.T
    rise, supply = room.rise, room.supply
    if first:
        rise = steady_rise
        supply = np.clip(aim_c - rise.max(axis=1), low_c, high_c)
    lag_keep = world.lag_keep
    rise = lag_keep * rise + (1 - lag_keep) * steady_rise
    inlet = supply[:, None] + rise
    supply_now = supply.copy()
    max_in = inlet.max(axis=1)
    rack_in = inlet.reshape(world.n_pol, world.n_rack, world.per_rack).max(axis=2)
    site_w = drawn.site_w
    cooling_w = site_w / physics.cop(supply)
    facility_w = site_w * (1 + cooling.distribution_loss_fraction) + cooling_w
    wanted_supply = aim_c - rise.max(axis=1)
    room.supply = np.clip(
        supply + np.clip(wanted_supply - supply, -world.slew_c, world.slew_c), low_c, high_c
    )
    room.rise, room.inlet = rise, inlet
    return Cooled(
        max_in=max_in,
        rack_in=rack_in,
        supply_now=supply_now,
        cooling_w=cooling_w,
        facility_w=facility_w,
    )
