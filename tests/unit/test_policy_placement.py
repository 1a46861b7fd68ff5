"""Rack scoring: MinHR, zone-based and Climatik's combined score."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from climatik.policies.placement import PlacementStrategy, PlaceObservation, score_racks


def test_minhr_prefers_the_place_that_recirculates_least() -> None:
    places = [
        PlaceObservation("a", recirculation_c_per_kw=0.8),
        PlaceObservation("b", recirculation_c_per_kw=0.2),
        PlaceObservation("c", recirculation_c_per_kw=0.5),
    ]
    ranked = score_racks(places, PlacementStrategy.MINHR)
    assert [s.place_id for s in ranked] == ["b", "c", "a"]


def test_zone_based_balances_load_by_zone() -> None:
    places = [
        PlaceObservation("a", 0.1, zone="z1", zone_watts=30_000.0),
        PlaceObservation("b", 0.9, zone="z2", zone_watts=10_000.0),
    ]
    assert score_racks(places, PlacementStrategy.ZONE)[0].place_id == "b"


def test_climatik_prefers_thermal_headroom_at_equal_recirculation() -> None:
    places = [
        PlaceObservation("hot", 0.5, inlet_c=26.0, max_inlet_c=27.0),
        PlaceObservation("cool", 0.5, inlet_c=22.0, max_inlet_c=27.0),
    ]
    assert score_racks(places)[0].place_id == "cool"


def test_a_place_at_a_limit_ranks_last_whatever_its_score() -> None:
    places = [
        PlaceObservation("full", 0.0, watts=30_000.0, max_watts=30_000.0),
        PlaceObservation("ok", 5.0, watts=10_000.0, max_watts=30_000.0),
    ]
    ranked = score_racks(places, PlacementStrategy.MINHR)
    assert [s.place_id for s in ranked] == ["ok", "full"]
    assert not ranked[1].admissible
    assert "limit" in ranked[1].reason


@given(
    st.lists(st.tuples(st.floats(0, 2), st.floats(15, 30), st.booleans()), min_size=1, max_size=12),
    st.sampled_from(list(PlacementStrategy)),
)
def test_admissible_places_always_come_first(
    rows: list[tuple[float, float, bool]], strategy: PlacementStrategy
) -> None:
    places = [
        PlaceObservation(
            f"p{i}",
            hrf,
            inlet_c=inlet,
            max_inlet_c=27.0,
            zone=f"z{i % 2}",
            zone_watts=1000.0 * i,
            watts=100.0 if ok else 200.0,
            max_watts=150.0,
        )
        for i, (hrf, inlet, ok) in enumerate(rows)
    ]
    ranked = score_racks(places, strategy)
    flags = [s.admissible for s in ranked]
    assert flags == sorted(flags, reverse=True)
    assert sorted(s.place_id for s in ranked) == sorted(p.place_id for p in places)
