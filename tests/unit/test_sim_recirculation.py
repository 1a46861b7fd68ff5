"""The local recirculation model's invariants (physics.generate_local_recirculation).

Whatever its parameters: no source recirculates all its exhaust (rows sum to less than 1, and
within the configured band), the heat reaching an inlet falls with distance along the row and
below its source, and a room that is the same seen from either end gets a matrix that is too.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from climatik.sim import physics
from climatik.sim.engine import Twin
from climatik.sim.scenario import Recirculation, ScenarioError, parse_scenario

rooms = st.tuples(st.integers(1, 8), st.integers(1, 8))
bands = st.tuples(st.floats(0.0, 0.6), st.floats(0.0, 0.39)).map(lambda b: (b[0], b[0] + b[1]))
decays = st.floats(0.05, 5.0)


def _local(racks: int, per_rack: int, band: tuple[float, float], **kw: float) -> np.ndarray:
    return physics.generate_local_recirculation(racks, per_rack, band[0], band[1], **kw)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(rooms, bands, decays, decays, decays, st.floats(0.0, 0.5), st.integers(0, 2**31))
def test_rows_stay_in_the_band_and_below_one(
    room: tuple[int, int],
    band: tuple[float, float],
    rack_decay: float,
    rise_decay: float,
    fall_decay: float,
    jitter: float,
    seed: int,
) -> None:
    matrix = _local(
        *room,
        band,
        seed=seed,
        rack_decay=rack_decay,
        rise_decay=rise_decay,
        fall_decay=fall_decay,
        jitter=jitter,
    )
    shares = matrix.sum(axis=1)
    assert (matrix >= 0).all()
    assert (shares < 1.0).all()
    assert shares.min() >= band[0] - 1e-12
    assert shares.max() <= band[1] + 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(1, 6), decays, decays, decays)
def test_heat_decays_with_distance_along_the_row(
    racks: int, per_rack: int, rack_decay: float, rise_decay: float, fall_decay: float
) -> None:
    matrix = _local(
        racks,
        per_rack,
        (0.1, 0.3),
        rack_decay=rack_decay,
        rise_decay=rise_decay,
        fall_decay=fall_decay,
        jitter=0.0,
    )
    # Source: the bottom server of the first rack; inlets at the same height, rack by rack.
    same_height = matrix[0, ::per_rack]
    assert (np.diff(same_height) < 0).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(3, 8), decays, decays)
def test_heat_decays_with_height_above_and_below_its_source(
    racks: int, per_rack: int, rise_decay: float, fall_decay: float
) -> None:
    matrix = _local(
        racks, per_rack, (0.1, 0.3), rise_decay=rise_decay, fall_decay=fall_decay, jitter=0.0
    )
    middle = per_rack // 2
    column = matrix[middle, :per_rack]  # the middle server's heat on its own rack's inlets
    assert (np.diff(column[middle:]) < 0).all()  # falling above it
    assert (np.diff(column[: middle + 1]) > 0).all()  # rising toward it from below


def test_it_rises_farther_than_it_falls_by_default() -> None:
    matrix = _local(1, 5, (0.1, 0.3), jitter=0.0)
    assert matrix[2, 3] > matrix[2, 1]


@settings(max_examples=40, deadline=None)
@given(rooms, bands, decays, decays, decays)
def test_a_room_the_same_from_either_end_gets_a_mirrored_matrix(
    room: tuple[int, int],
    band: tuple[float, float],
    rack_decay: float,
    rise_decay: float,
    fall_decay: float,
) -> None:
    racks, per_rack = room
    matrix = _local(
        racks,
        per_rack,
        band,
        rack_decay=rack_decay,
        rise_decay=rise_decay,
        fall_decay=fall_decay,
        jitter=0.0,
    )
    # Reverse the rack order, keep each server's height.
    mirror = (np.arange(racks)[::-1, None] * per_rack + np.arange(per_rack)[None, :]).ravel()
    assert np.allclose(matrix[np.ix_(mirror, mirror)], matrix, rtol=1e-12, atol=1e-15)


def test_more_of_the_heat_stays_local_than_in_the_uniform_generator() -> None:
    local = _local(4, 6, (0.1, 0.4), jitter=0.0)
    uniform = physics.generate_recirculation(4, 6, 0.1, 0.4, seed=11)
    rack_of, height = np.repeat(np.arange(4), 6), np.tile(np.arange(6), 4)
    # Its own inlet and the ones directly above and below it.
    nearest = (rack_of[:, None] == rack_of[None, :]) & (
        np.abs(height[:, None] - height[None, :]) <= 1
    )
    assert (local * nearest).sum() / local.sum() > 0.5
    assert (uniform * nearest).sum() / uniform.sum() < 0.3


def _room(recirculation: dict[str, object]) -> np.ndarray:
    scenario = parse_scenario(
        {
            "name": "r",
            "racks": {"count": 2, "servers_per_rack": 3, "recirculation": recirculation},
            "caps": {"site_cap_w": 60000},
            "services": [{"name": "chat"}],
        }
    )
    return physics.room_heat_matrix(scenario)


def test_new_scenarios_get_the_local_model_and_uniform_stays_the_first_generator() -> None:
    assert Recirculation().model == "local"
    k = np.full(6, 1.2 * 0.5 * 1005.0)
    local = physics.heat_matrix(physics.generate_local_recirculation(2, 3, 0.05, 0.35), k)
    uniform = physics.heat_matrix(physics.generate_recirculation(2, 3, 0.05, 0.35, 11), k)
    assert np.allclose(_room({}), local)
    assert np.allclose(_room({"model": "uniform"}), uniform)


def _fixed_room(fixed_supply_c: float) -> dict[str, object]:
    return {
        "name": "fixed",
        "duration_h": 1,
        "racks": {"count": 2, "servers_per_rack": 3},
        "caps": {"site_cap_w": 60000},
        "cooling": {"fixed_supply_c": fixed_supply_c},
        "services": [{"name": "chat", "traffic": {"peak_rps": 4, "bursts_per_day": 0}}],
    }


def test_a_fixed_supply_is_held_whatever_the_inlets() -> None:
    result = Twin(parse_scenario(_fixed_room(21.0)), ["uncapped"]).run()
    supply = np.asarray(result.history.supply_c)
    assert np.allclose(supply, 21.0)
    assert result.policies["uncapped"]["peak_inlet_c"] > 21.0


def test_a_fixed_supply_outside_the_units_range_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"cooling.fixed_supply_c: 30 °C is outside"):
        parse_scenario(_fixed_room(30.0))
