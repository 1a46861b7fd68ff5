"""The twin's steps one at a time, on the default scenario's world: each keeps the invariant
of the physical process it models."""

from __future__ import annotations

import numpy as np
import pytest

from climatik.policies.ceiling_settings import HeadroomSettings, ThresholdSettings
from climatik.sim import physics
from climatik.sim.policy_specs import POLICY_SPECS
from climatik.sim.replicas import place, warm_start
from climatik.sim.scenario import Outage, load_scenario
from climatik.sim.state import TwinState, initial_state
from climatik.sim.steps_autoscale import autoscale
from climatik.sim.steps_heat import move_heat
from climatik.sim.steps_measure import learn, read, record_sample
from climatik.sim.steps_power import draw_power
from climatik.sim.steps_serve import serve
from climatik.sim.world import IntArray, World, build_world

POLICIES = ["climatik", "uncapped"]


def started(*, outage_h: float | None = None) -> tuple[World, TwinState]:
    """An hour of the default scenario, warm-started (optionally with an outage at hour 0)."""
    scenario = load_scenario("default")
    if outage_h is not None:
        measurement = scenario.measurement.model_copy(
            update={"outages": [Outage(start_h=0.0, duration_h=outage_h)]}
        )
        scenario = scenario.model_copy(update={"measurement": measurement})
    world = build_world(
        scenario,
        [POLICY_SPECS[name] for name in POLICIES],
        1.0,
        HeadroomSettings(),
        ThresholdSettings(),
        exact=False,
    )
    st = initial_state(world, scenario.seed)
    warm_start(world, st)
    return world, st


def replicas(world: World, st: TwinState) -> IntArray:
    counts: IntArray = (st.fleet.host[:, :, None] == world.svc_range).sum(axis=1)
    return counts


def test_serving_conserves_requests_when_nothing_times_out() -> None:
    world, st = started()
    # Warm-started at what the first arrivals need: nothing waits long enough to time out.
    for k in range(5):
        before = st.fleet.queue.copy()
        lam = world.rates[k]
        served = serve(world, st.timing, st.fleet, lam, k * world.dt)
        served_requests = served.tokens / world.out_tokens
        np.testing.assert_allclose(before + lam * world.dt - served_requests, st.fleet.queue)
        assert (served.met <= served.arrived + 1e-9).all()


def test_constant_power_keeps_the_rise_and_moves_the_supply_within_its_slew() -> None:
    world, st = started()
    served = serve(world, st.timing, st.fleet, world.rates[0], 0.0)
    drawn = draw_power(world, st.timing, st.room, served, st.rng)
    first = move_heat(world, st.room, drawn, first=True)
    inlet, supply = st.room.inlet.copy(), st.room.supply.copy()
    # The same load again: inlets already sit at its steady rise, only the supply air moves.
    second = move_heat(world, st.room, drawn, first=False)
    np.testing.assert_allclose(st.room.inlet - (supply - first.supply_now)[:, None], inlet)
    np.testing.assert_array_equal(second.supply_now, supply)
    assert (np.abs(st.room.supply - supply) <= world.slew_c + 1e-12).all()


def advance(world: World, st: TwinState, steps: int) -> None:
    """Serve, draw, heat and record the first `steps` steps (no control, no scaling)."""
    for k in range(steps):
        served = serve(world, st.timing, st.fleet, world.rates[k], k * world.dt)
        drawn = draw_power(world, st.timing, st.room, served, st.rng)
        cooled = move_heat(world, st.room, drawn, first=k == 0)
        record_sample(world, st.ring, k, served=served, drawn=drawn, room=st.room, cooled=cooled)


def test_an_outage_hides_the_readings_and_keeps_what_was_learned() -> None:
    world, st = started(outage_h=1.0)
    k = world.ring_len
    advance(world, st, k + 1)
    reading = read(world, st.ring, st.rng, k)
    assert not reading.have_data
    learn(world, st.seen, reading, st.fleet.host)
    assert np.isnan(st.seen.srv_w).all()
    assert np.isnan(st.seen.svc_w).all()
    assert st.seen.series_count == 0
    assert len(st.seen.heat_history) == 0


def test_a_reading_outside_an_outage_is_learned() -> None:
    world, st = started()
    k = world.ring_len
    advance(world, st, k + 1)
    reading = read(world, st.ring, st.rng, k)
    assert reading.have_data
    learn(world, st.seen, reading, st.fleet.host)
    assert st.seen.series_count == 1
    assert len(st.seen.heat_history) == 1
    np.testing.assert_array_equal(st.seen.srv_w, reading.srv_w)
    # The window that ended a lag ago (steps 1 .. win), with 1 % noise.
    window = st.ring.site[1 : world.win_steps + 1].mean(axis=0)
    assert reading.site_w == pytest.approx(window, rel=0.05)


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    world, st = started()
    for p in range(world.n_pol):
        for j in range(world.n_svc):
            while replicas(world, st)[p, j] < world.min_rep[j] + 2:
                assert place(world, st, p, j, -1e9)
    high = replicas(world, st)
    # The autoscaler recently asked for every replica running.
    st.fleet.rec_hist[:] = high[:, :, None]
    st.fleet.queue[:] = 0.0
    idle = np.zeros(world.n_svc)
    for k in range(world.window - 1):
        autoscale(world, st, lam=idle, n_tot=replicas(world, st), k=k, now_s=k * world.dt)
        np.testing.assert_array_equal(replicas(world, st), high)
    last = world.window - 1
    autoscale(world, st, lam=idle, n_tot=replicas(world, st), k=last, now_s=last * world.dt)
    np.testing.assert_array_equal(replicas(world, st), np.tile(world.min_rep, (world.n_pol, 1)))


def test_a_moved_clock_moves_the_request_time_and_rate() -> None:
    world, st = started()
    timing = st.timing
    service = world.scenario.services[0]
    timing.clock[0, 0] = 0.6
    timing.update(world.scenario)
    pre, dec = physics.request_busy_s(
        service.model_class, service.prompt_tokens, service.output_tokens, 0.6
    )
    assert timing.busy_s[0, 0] == pytest.approx(float(pre + dec))
    assert timing.mu[0, 0] == pytest.approx(1.0 / float(pre + dec))
    # The uncapped policy does not tune: its replicas still serve at the maximum clock.
    assert timing.clock[1, 0] == 1.0
    assert timing.mu[0, 0] < timing.mu[1, 0]
