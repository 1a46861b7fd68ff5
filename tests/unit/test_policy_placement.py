"""The placement policy: hand-computed cases and its invariants."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from climatik.policies.placement import (
    InletReading,
    PlacementStrategy,
    PlacementWeights,
    PlaceObservation,
    PlaceScore,
    SupplySettings,
    cooling_cop,
    estimate_recirculation,
    order_pods_for_scale_in,
    pearson_correlation,
    predicted_peak_inlet_c,
    preferred_rack_weights,
    recommend_supply_setpoints,
    score_racks,
    score_scale_in,
    soft_peak_c,
)


def place(place_id: str, hrf: float = 0.1, **kw: object) -> PlaceObservation:
    return PlaceObservation(place_id=place_id, recirculation_c_per_kw=hrf, **kw)  # type: ignore[arg-type]


def test_cop_follows_the_published_curve() -> None:
    # 0.0068 * 400 + 0.0008 * 20 + 0.458 = 3.194
    assert cooling_cop(20.0) == pytest.approx(3.194)
    assert cooling_cop(27.0) > cooling_cop(15.0)


def test_minhr_prefers_least_recirculation() -> None:
    ranked = score_racks(
        [place("a", 0.5), place("b", 0.1), place("c", 0.3)], PlacementStrategy.MINHR
    )
    assert [s.place_id for s in ranked] == ["b", "c", "a"]


def test_zone_prefers_least_loaded_zone_then_least_recirculation() -> None:
    places = [
        place("a", 0.1, zone="z1", zone_watts=20_000),
        place("b", 0.4, zone="z2", zone_watts=5_000),
        place("c", 0.2, zone="z2", zone_watts=5_000),
    ]
    ranked = score_racks(places, PlacementStrategy.ZONE)
    assert [s.place_id for s in ranked] == ["c", "b", "a"]


def test_climatik_terms_add_up_by_their_weights() -> None:
    weights = PlacementWeights()
    obs = place("a", 0.2, inlet_c=22.0, max_inlet_c=27.0, watts=10_000, max_watts=30_000)
    (score,) = score_racks([obs], weights=weights)
    expected = -1.0 * 0.2 + 0.5 * 5.0 + 0.05 * 20.0
    assert score.score == pytest.approx(expected)
    assert "5.0 °C headroom" in score.reason


def test_hot_rack_loses_to_cool_rack_with_same_recirculation() -> None:
    hot = place("hot", 0.2, inlet_c=26.0, max_inlet_c=27.0)
    cool = place("cool", 0.2, inlet_c=20.0, max_inlet_c=27.0)
    assert score_racks([hot, cool])[0].place_id == "cool"


def test_over_limit_rack_ranks_last_even_with_the_best_terms() -> None:
    over = place("over", 0.0, inlet_c=20.0, max_inlet_c=27.0, watts=31_000, max_watts=30_000)
    ok = place("ok", 5.0, inlet_c=26.5, max_inlet_c=27.0)
    ranked = score_racks([over, ok])
    assert [s.place_id for s in ranked] == ["ok", "over"]
    assert not ranked[1].admissible
    assert "limit" in ranked[1].reason
    assert [rack for rack, _ in preferred_rack_weights(ranked)] == ["ok"]


def test_a_rack_without_a_seat_ranks_last_and_is_not_preferred() -> None:
    """VPA's footprint fits no node of the best rack: it goes after a rack at its limit."""
    full = place("full", 0.0, inlet_c=20.0, max_inlet_c=27.0, seats=0)
    over = place("over", 0.0, inlet_c=20.0, max_inlet_c=27.0, watts=31_000, max_watts=30_000)
    ok = place("ok", 5.0, inlet_c=26.5, max_inlet_c=27.0, seats=2)
    unknown = place("unknown", 5.0, inlet_c=26.6, max_inlet_c=27.0)
    ranked = score_racks([full, over, ok, unknown])
    assert [s.place_id for s in ranked] == ["ok", "unknown", "over", "full"]
    assert ranked[-1].admissible
    assert not ranked[-1].seated
    assert "no node seats one more replica" in ranked[-1].reason
    assert [rack for rack, _ in preferred_rack_weights(ranked)] == ["ok", "unknown"]
    # Which replica goes first on scale-in does not depend on seats.
    assert [s.place_id for s in score_scale_in([full, ok])] == [
        s.place_id for s in score_scale_in([dataclasses.replace(full, seats=None), ok])
    ]


def test_smoothing_keeps_correlated_services_apart() -> None:
    service = [1.0, 5.0, 1.0, 5.0, 1.0, 5.0]
    in_phase = place("in", 0.1, load_series_w=(10.0, 50.0, 10.0, 50.0, 10.0, 50.0))
    out_phase = place("out", 0.1, load_series_w=(50.0, 10.0, 50.0, 10.0, 50.0, 10.0))
    ranked = score_racks([in_phase, out_phase], service_series_w=service)
    assert ranked[0].place_id == "out"
    assert ranked[0].correlation == pytest.approx(-1.0)
    assert ranked[1].correlation == pytest.approx(1.0)
    assert ranked[0].score - ranked[1].score == pytest.approx(2.0 * PlacementWeights().correlation)


def test_cooler_supply_air_costs_more_cooling() -> None:
    warm = place("warm", 0.1, supply_c=24.0)
    cold = place("cold", 0.1, supply_c=14.0)
    assert score_racks([cold, warm])[0].place_id == "warm"


def test_zone_balance_in_climatik_score() -> None:
    busy = place("busy", 0.1, zone="z1", zone_watts=40_000)
    idle = place("idle", 0.1, zone="z2", zone_watts=0)
    ranked = score_racks([busy, idle])
    assert ranked[0].place_id == "idle"


def test_pearson_correlation_edges() -> None:
    assert pearson_correlation([1, 2], [1, 2]) is None
    assert pearson_correlation([1, 1, 1, 1], [1, 2, 3, 4]) is None
    assert pearson_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # Aligned at the end: only the last three of the longer series count.
    assert pearson_correlation([9, 9, 1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert pearson_correlation([1, math.nan, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1.0)


def test_affinity_weights_span_1_to_100_best_first() -> None:
    scores = [
        PlaceScore("a", 3.0, True, ""),
        PlaceScore("b", 1.0, True, ""),
        PlaceScore("c", 2.0, True, ""),
        PlaceScore("x", 9.0, False, ""),
    ]
    assert preferred_rack_weights(scores) == (("a", 100), ("c", 50), ("b", 1))
    assert preferred_rack_weights(scores, max_racks=1) == (("a", 100),)
    equal = [PlaceScore("a", 1.0, True, ""), PlaceScore("b", 1.0, True, "")]
    assert preferred_rack_weights(equal) == (("a", 100), ("b", 100))


def test_deletion_costs_put_the_worst_rack_first() -> None:
    scores = score_racks(
        [
            place("cool", 0.1, inlet_c=20.0, max_inlet_c=27.0),
            place("warm", 0.1, inlet_c=24.0, max_inlet_c=27.0),
            place("over", 0.1, inlet_c=28.0, max_inlet_c=27.0),
        ]
    )
    costs = order_pods_for_scale_in(
        {"p1": "cool", "p2": "warm", "p3": "over", "p4": None, "p5": "unknown-rack"}, scores
    )
    assert costs == {"p1": 2, "p2": 1, "p3": -1, "p4": 0, "p5": 0}
    # The ReplicaSet deletes the lowest cost first: the over-limit rack, then the warm one.
    assert min(costs, key=lambda p: costs[p]) == "p3"


def test_estimate_recirculation_recovers_a_known_matrix() -> None:
    rng = np.random.default_rng(7)
    d_true = np.array([[0.8, 0.3, 0.0], [0.1, 1.2, 0.4], [0.0, 0.2, 0.6]])  # °C per kW
    power_w = rng.uniform(2_000, 12_000, size=(200, 3))
    supply = rng.uniform(16, 20, size=200)
    inlet = supply[:, None] + (power_w / 1000.0) @ d_true.T + rng.normal(0, 0.02, (200, 3))
    est = estimate_recirculation(["a", "b", "c"], power_w, inlet, supply)
    got = np.array(est.matrix_c_per_kw)
    assert np.abs(got - d_true).max() < 0.02
    assert est.factor("b") == pytest.approx(d_true[:, 1].sum(), abs=0.03)
    assert est.rms_residual_c < 0.05
    # Without the supply series the intercept absorbs a constant supply temperature.
    inlet_const = 18.0 + (power_w / 1000.0) @ d_true.T
    est2 = estimate_recirculation(["a", "b", "c"], power_w, inlet_const)
    assert np.abs(np.array(est2.matrix_c_per_kw) - d_true).max() < 0.01


def test_estimate_recirculation_needs_enough_samples() -> None:
    with pytest.raises(ValueError, match="at least"):
        estimate_recirculation(["a", "b"], [[1, 2], [3, 4]], [[20, 21], [22, 23]])


def test_supply_setpoint_raises_until_hottest_inlet_meets_redline() -> None:
    readings = [
        InletReading("r1", 22.0, "z1", supply_c=18.0, it_watts=30_000),
        InletReading("r2", 24.0, "z1", supply_c=18.0, it_watts=20_000),
        InletReading("r3", 28.0, "z2", supply_c=20.0),
        InletReading("r4", math.nan, "z3"),
    ]
    settings_ = SupplySettings(redline_c=27.0, guard_c=0.5, max_step_c=2.0)
    z1, z2 = recommend_supply_setpoints(readings, settings_)
    # z1: hottest 24 °C, target 26.5 °C -> +2.5, bounded to +2 -> 20 °C.
    assert (z1.group, z1.hottest_place_id, z1.change_c, z1.supply_c) == ("z1", "r2", 2.0, 20.0)
    assert z1.cop == pytest.approx(cooling_cop(20.0))
    assert z1.cooling_watts == pytest.approx(50_000 / cooling_cop(20.0))
    assert "raise" in z1.reason
    # z2 is above the redline: lower, bounded by the step.
    assert z2.change_c == pytest.approx(-1.5)
    assert z2.supply_c == pytest.approx(18.5)


def test_supply_setpoint_clamped_to_unit_limits_without_supply_reading() -> None:
    (rec,) = recommend_supply_setpoints(
        [InletReading("r1", 26.0, "r1", supply_c=26.5)], SupplySettings(max_supply_c=27.0)
    )
    assert rec.supply_c == 27.0
    assert rec.change_c == pytest.approx(0.5)
    (rel,) = recommend_supply_setpoints([InletReading("r1", 20.0, "r1")])
    assert rel.supply_c is None
    assert rel.change_c == 2.0


# -- the predicted hottest inlet (heat-matrix columns) ---------------------------------------

# Two places: "a" heats the hottest inlet (b's, 26 °C) by 0.4 °C/kW, "b" heats it by 0.1 °C/kW.
COLUMN_A = (("a", 0.1), ("b", 0.4))
COLUMN_B = (("a", 0.4), ("b", 0.1))


def test_predicted_peak_is_the_hottest_inlet_after_the_added_heat() -> None:
    inlets = {"a": 24.0, "b": 26.0, "c": 25.0}
    a = place("a", 0.5, inlet_rise_c_per_kw=COLUMN_A)
    # 5 kW at a: b rises 2 °C to 28, a 0.5 °C to 24.5, c (not in the column) stays.
    assert predicted_peak_inlet_c(a, inlets, 5_000.0) == pytest.approx(28.0)
    # Removing 5 kW at a cools b to 24: the hottest is then c at 25 °C.
    assert predicted_peak_inlet_c(a, inlets, -5_000.0) == pytest.approx(25.0)
    assert predicted_peak_inlet_c(place("x"), inlets, 5_000.0) is None  # no column
    assert predicted_peak_inlet_c(a, {}, 5_000.0) is None  # no inlets


def test_a_replica_goes_where_it_raises_the_hottest_inlet_least() -> None:
    # a is cooler (more own headroom, less recirculation factor), but its heat lands on b's
    # inlet, the room's hottest: one 5 kW replica there would raise it 2 °C, at b only 0.5 °C.
    a = place("a", 0.3, inlet_c=24.0, max_inlet_c=30.0, inlet_rise_c_per_kw=COLUMN_A)
    b = place("b", 0.5, inlet_c=26.0, max_inlet_c=30.0, inlet_rise_c_per_kw=COLUMN_B)
    assert score_racks([a, b])[0].place_id == "a"  # without the replica's watts: as before
    ranked = score_racks([a, b], added_watts=5_000.0)
    assert ranked[0].place_id == "b"
    by_id = {s.place_id: s for s in ranked}
    assert by_id["b"].peak_inlet_change_c == pytest.approx(0.5)
    assert by_id["a"].peak_inlet_change_c == pytest.approx(2.0)
    assert "hottest inlet" in by_id["b"].reason


def test_inlets_beyond_the_candidates_count() -> None:
    # Only a and b are free; the full rack c's inlet (27 °C) is the one a would heat.
    a = place("a", inlet_c=22.0, inlet_rise_c_per_kw=(("c", 0.3),))
    b = place("b", inlet_c=22.0, inlet_rise_c_per_kw=(("a", 0.3), ("b", 0.3)))
    inlets = {"a": 22.0, "b": 22.0, "c": 27.0}
    assert score_racks([a, b], added_watts=5_000.0, inlets_c=inlets)[0].place_id == "b"
    assert score_racks([a, b], added_watts=5_000.0)[0].place_id == "a"  # c unseen: a tie, by id


def test_without_columns_the_factor_decides_as_before() -> None:
    places = [place("a", 0.9, inlet_c=22.0), place("b", 0.2, inlet_c=22.0)]
    plain = score_racks(places)
    with_watts = score_racks(places, added_watts=5_000.0)
    assert [(s.place_id, s.score) for s in plain] == [(s.place_id, s.score) for s in with_watts]
    assert plain[0].place_id == "b"
    assert all(s.peak_inlet_change_c is None for s in with_watts)


def test_a_place_over_its_limit_is_refused_even_if_it_would_heat_nothing() -> None:
    over = place("a", inlet_c=31.0, max_inlet_c=30.0, inlet_rise_c_per_kw=(("a", 0.0),))
    ok = place("b", inlet_c=26.0, max_inlet_c=30.0, inlet_rise_c_per_kw=COLUMN_B)
    ranked = score_racks([over, ok], added_watts=50_000.0)
    assert [s.place_id for s in ranked] == ["b", "a"]
    assert not ranked[1].admissible
    assert "a" not in dict(preferred_rack_weights(ranked))


def test_scale_in_removes_the_replica_that_cools_the_hottest_inlet_most() -> None:
    a = place("a", 0.5, inlet_c=24.0, max_inlet_c=30.0, inlet_rise_c_per_kw=COLUMN_A)
    b = place("b", 0.5, inlet_c=26.0, max_inlet_c=30.0, inlet_rise_c_per_kw=COLUMN_B)
    # Without a prediction the hotter place b goes first (its score is lower).
    plain = order_pods_for_scale_in({"pa": "a", "pb": "b"}, score_scale_in([a, b]))
    assert plain["pb"] < plain["pa"]
    # Removing 5 kW at a cools b's inlet by 2 °C, at b by 0.5 °C: a's replica goes first.
    keep = score_scale_in([a, b], removed_watts=5_000.0)
    costs = order_pods_for_scale_in({"pa": "a", "pb": "b"}, keep)
    assert costs["pa"] < costs["pb"]
    # After it b's inlet reads 24 °C and a's 23.5 °C: the hottest drops from 26 to 24 °C.
    assert {s.place_id: s.peak_inlet_change_c for s in keep}["a"] == pytest.approx(-2.0)
    # A place over its limit still goes before any other.
    hot = dataclasses.replace(b, inlet_c=31.0)
    costs = order_pods_for_scale_in(
        {"pa": "a", "pb": "b"}, score_scale_in([a, hot], removed_watts=5_000.0)
    )
    assert costs["pb"] < 0 < costs["pa"]


inlet_t = st.floats(10.0, 40.0)
coefficient = st.floats(0.0, 2.0)


@given(
    st.dictionaries(st.sampled_from("abcd"), inlet_t, min_size=1),
    st.lists(st.tuples(st.sampled_from("abcd"), coefficient), max_size=4),
    st.lists(st.tuples(st.sampled_from("abcd"), coefficient), max_size=4),
    st.floats(0.0, 20_000.0),
    st.one_of(st.none(), inlet_t),
)
@settings(max_examples=300)
def test_a_higher_predicted_peak_never_ranks_first_when_all_else_is_equal(
    inlets: dict[str, float],
    column_x: list[tuple[str, float]],
    column_y: list[tuple[str, float]],
    added_watts: float,
    own_inlet: float | None,
) -> None:
    x = place("x", 0.4, inlet_c=own_inlet, max_inlet_c=45.0, inlet_rise_c_per_kw=tuple(column_x))
    y = dataclasses.replace(x, place_id="y", inlet_rise_c_per_kw=tuple(column_y))
    room = {**inlets}
    if own_inlet is not None:  # the candidates' own inlets are part of the room
        room.update(x=own_inlet, y=own_inlet)
    peak_x = predicted_peak_inlet_c(x, room, added_watts)
    peak_y = predicted_peak_inlet_c(y, room, added_watts)
    # With the plain hottest inlet (softness 0). The default soft peak charges for heating an
    # inlet just under the peak, so a place that raises the peak by a hair may rank above one
    # that heats a near-peak inlet by more: that is its purpose, not a fault.
    hard = PlacementWeights(peak_softness_c=0.0)
    ranked = score_racks([x, y], weights=hard, added_watts=added_watts, inlets_c=inlets)
    by_id = {s.place_id: s.score for s in ranked}
    if peak_x is not None and peak_y is not None:
        if peak_x > peak_y + 1e-9:
            assert by_id["x"] < by_id["y"]
            assert ranked[0].place_id == "y"
        elif peak_y > peak_x + 1e-9:
            assert ranked[0].place_id == "x"
    for s in ranked:
        assert s.peak_inlet_change_c is None or s.peak_inlet_change_c >= 0.0


@given(
    st.dictionaries(st.sampled_from("abcd"), inlet_t, min_size=1),
    st.lists(st.tuples(st.sampled_from("abcd"), coefficient), max_size=4),
    st.floats(0.0, 20_000.0),
    st.floats(0.0, 1.0),
)
def test_a_place_that_heats_the_room_less_never_scores_lower(
    inlets: dict[str, float],
    column: list[tuple[str, float]],
    added_watts: float,
    shrink: float,
) -> None:
    # The penalty is the predicted rise of the hottest inlet: monotone in the place's column.
    x = place("x", 0.4, inlet_rise_c_per_kw=tuple(column))
    milder = place("x", 0.4, inlet_rise_c_per_kw=tuple((k, v * shrink) for k, v in column))
    (before,) = score_racks([x], added_watts=added_watts, inlets_c=inlets)
    (after,) = score_racks([milder], added_watts=added_watts, inlets_c=inlets)
    assert after.score >= before.score - 1e-9


# -- invariants ------------------------------------------------------------------------------

any_float = st.floats(allow_nan=True, allow_infinity=True)
reading = st.one_of(st.none(), st.floats(-1e12, 1e12))
series = st.lists(st.floats(-1e6, 1e6), max_size=8).map(tuple)


@st.composite
def observations(draw: st.DrawFn, place_id: str | None = None) -> PlaceObservation:
    return PlaceObservation(
        place_id=place_id or draw(st.text("abcdef", min_size=1, max_size=3)),
        recirculation_c_per_kw=draw(any_float),
        inlet_c=draw(reading),
        max_inlet_c=draw(reading),
        watts=draw(reading),
        max_watts=draw(reading),
        zone=draw(st.sampled_from(["", "z1", "z2"])),
        zone_watts=draw(reading),
        supply_c=draw(st.one_of(st.none(), any_float)),
        load_series_w=draw(series),
        inlet_rise_c_per_kw=draw(
            st.lists(
                st.tuples(st.text("abcdef", min_size=1, max_size=3), any_float), max_size=3
            ).map(tuple)
        ),
        seats=draw(st.one_of(st.none(), st.integers(0, 3))),
    )


@given(
    st.lists(observations(), min_size=1, max_size=6, unique_by=lambda p: p.place_id),
    st.sampled_from(list(PlacementStrategy)),
    st.one_of(st.none(), series),
    st.one_of(st.none(), any_float),
)
def test_scores_are_finite_and_admissible_first(
    places: list[PlaceObservation],
    strategy: PlacementStrategy,
    service: tuple[float, ...] | None,
    added_watts: float | None,
) -> None:
    ranked = score_racks(places, strategy, service_series_w=service, added_watts=added_watts)
    keep = score_scale_in(places, added_watts, service_series_w=service)
    assert all(math.isfinite(s.score) for s in keep)
    assert [s.admissible for s in keep] == sorted((s.admissible for s in keep), reverse=True)
    assert len(ranked) == len(places)
    assert all(math.isfinite(s.score) for s in ranked)
    # No place without a seat before one with, and among those alike no inadmissible place
    # before an admissible one; neither kind is preferred.
    flags = [(s.seated, s.admissible) for s in ranked]
    assert flags == sorted(flags, reverse=True)
    seats = {p.place_id: p.seats for p in places}
    assert all(s.seated == (seats[s.place_id] != 0) for s in ranked)
    weighted = {rack for rack, _ in preferred_rack_weights(ranked)}
    assert weighted.isdisjoint({s.place_id for s in ranked if not (s.admissible and s.seated)})
    costs = order_pods_for_scale_in({f"pod-{s.place_id}": s.place_id for s in ranked}, ranked)
    for s in ranked:
        assert (costs[f"pod-{s.place_id}"] > 0) == s.admissible


@given(
    observations("x"),
    observations("y"),
    st.floats(0, 1e6),
    st.floats(0, 1e9),
    st.sampled_from(list(PlacementStrategy)),
)
@settings(max_examples=200)
def test_more_headroom_never_lowers_a_score(
    base: PlaceObservation,
    other: PlaceObservation,
    cooler_by_c: float,
    fewer_watts: float,
    strategy: PlacementStrategy,
) -> None:
    def score_of(obs: PlaceObservation) -> float:
        return next(s.score for s in score_racks([obs, other], strategy) if s.place_id == "x")

    cooler = dataclasses.replace(
        base, inlet_c=None if base.inlet_c is None else base.inlet_c - cooler_by_c
    )
    lighter = dataclasses.replace(
        base, watts=None if base.watts is None else base.watts - fewer_watts
    )
    assert score_of(cooler) >= score_of(base)
    assert score_of(lighter) >= score_of(base)


@given(st.lists(observations(), min_size=2, max_size=6, unique_by=lambda p: p.place_id))
def test_a_rack_over_its_limit_is_never_preferred(places: list[PlaceObservation]) -> None:
    over = dataclasses.replace(places[0], inlet_c=50.0, max_inlet_c=30.0)
    ranked = score_racks([over, *places[1:]])
    if any(p.admissible and p.seats != 0 for p in places[1:]):
        assert ranked[0].place_id != over.place_id
    assert over.place_id not in dict(preferred_rack_weights(ranked))


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(-50, 120), st.floats(10, 27)),
        min_size=1,
        max_size=8,
    )
)
def test_setpoints_stay_within_unit_limits_and_move_toward_the_redline(
    rows: list[tuple[str, float, float]],
) -> None:
    settings_ = SupplySettings()
    readings = [
        InletReading(f"r{i}", inlet, group, supply_c=supply)
        for i, (group, inlet, supply) in enumerate(rows)
    ]
    for rec in recommend_supply_setpoints(readings, settings_):
        assert rec.supply_c is not None
        assert settings_.min_supply_c <= rec.supply_c <= settings_.max_supply_c
        assert abs(rec.change_c) <= settings_.max_step_c + 1e-9
        target = settings_.redline_c - settings_.guard_c
        if rec.hottest_inlet_c > target:
            assert rec.change_c <= 0


def test_a_place_without_a_column_is_not_mistaken_for_a_cool_one() -> None:
    # "hot" has no heat-matrix column yet (a partial ConfigMap, or history still filling): its
    # rise is estimated from its recirculation factor instead of counting as none.
    cool = place("cool", 0.5, inlet_c=22.0, max_inlet_c=32.0, inlet_rise_c_per_kw=(("cool", 0.1),))
    hot = place("hot", 0.5, inlet_c=30.0, max_inlet_c=32.0)
    ranked = score_racks([hot, cool], PlacementStrategy.CLIMATIK, added_watts=5_000.0)
    assert [s.place_id for s in ranked] == ["cool", "hot"]
    assert ranked[1].peak_inlet_change_c == pytest.approx(2.5)  # 0.5 °C/kW x 5 kW


@pytest.mark.parametrize("strategy", [PlacementStrategy.MINHR, PlacementStrategy.CLIMATIK])
def test_a_negative_recirculation_factor_is_no_better_than_none(
    strategy: PlacementStrategy,
) -> None:
    # -5 °C/kW (a typo, or a noisy estimate) counts as 0: it ties with a perfect place.
    ranked = score_racks([place("a", -5.0), place("b", 0.0)], strategy)
    assert ranked[0].score == ranked[1].score


temps = st.lists(st.floats(-20.0, 60.0), min_size=1, max_size=30)


@given(temps, st.floats(0.01, 3.0))
def test_the_soft_peak_sits_between_the_peak_and_the_peak_plus_tau_log_n(
    values: list[float], tau: float
) -> None:
    arr = np.asarray(values)
    soft = soft_peak_c(arr, tau)
    assert arr.max() - 1e-9 <= soft <= arr.max() + tau * math.log(arr.size) + 1e-9
    assert soft_peak_c(arr, 0.0) == arr.max()


@given(temps, st.floats(0.01, 3.0), st.integers(0, 29), st.floats(0.0, 10.0))
def test_heating_any_inlet_never_lowers_the_soft_peak(
    values: list[float], tau: float, index: int, rise: float
) -> None:
    arr = np.asarray(values)
    warmer = arr.copy()
    warmer[index % arr.size] += rise
    assert soft_peak_c(warmer, tau) >= soft_peak_c(arr, tau) - 1e-9


def test_a_replica_heating_an_inlet_just_under_the_peak_ranks_below_one_heating_a_cool_one() -> (
    None
):
    # Neither passes the peak (27 °C at c): the plain hottest inlet cannot tell them apart, the
    # soft peak can: a's heat lands on b's inlet at 26.8 °C, b's on a's at 22 °C.
    a = place("a", 0.2, inlet_c=22.0, inlet_rise_c_per_kw=(("b", 0.1),))
    b = place("b", 0.2, inlet_c=26.8, inlet_rise_c_per_kw=(("a", 0.1),))
    inlets = {"c": 27.0}
    ranked = score_racks([a, b], added_watts=1_000.0, inlets_c=inlets)
    assert [s.place_id for s in ranked] == ["b", "a"]
    assert all(s.peak_inlet_change_c == 0.0 for s in ranked)
    hard = score_racks(
        [a, b],
        weights=PlacementWeights(peak_softness_c=0.0),
        added_watts=1_000.0,
        inlets_c=inlets,
    )
    assert hard[0].score == pytest.approx(hard[1].score)
