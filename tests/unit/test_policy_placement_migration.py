"""Moving a running replica to a cooler place: hand-computed cases and invariants
(`choose_migration`, and the live reconciler's gates in `placement_migration`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from climatik.domain.placement import MigrationSettings, PlaceObservation
from climatik.policies.placement import choose_migration, removal_could_gain
from climatik.reconcilers.placement_migration import MoveCandidate, best_move, is_ready

# a's heat lands mostly on a's own inlet, b's mostly on b's.
COLUMN_A = (("a", 0.5), ("b", 0.1))
COLUMN_B = (("a", 0.1), ("b", 0.2))


def place(place_id: str, column: tuple[tuple[str, float], ...], **kw: Any) -> PlaceObservation:
    return PlaceObservation(place_id, 0.3, inlet_rise_c_per_kw=column, **kw)


A = place("a", COLUMN_A, inlet_c=26.0, max_inlet_c=30.0)
B = place("b", COLUMN_B, inlet_c=22.0, max_inlet_c=30.0)


def test_a_replica_moves_off_the_hot_place_by_the_predicted_gain() -> None:
    # 2 kW leave a (a -1.0 °C, b -0.2 °C) and arrive at b (a +0.2 °C, b +0.4 °C):
    # a 26 -> 25.2, b 22 -> 22.2; the hottest inlet falls by 0.8 °C.
    move = choose_migration([A], B, 2_000.0, None, 0.1)
    assert move is not None
    assert (move.source, move.target) == ("a", "b")
    assert move.gain_c == pytest.approx(0.8)
    assert "from 26.00 to 25.20 °C" in move.reason


def test_no_move_below_the_least_gain_or_without_what_it_needs() -> None:
    assert choose_migration([A], B, 2_000.0, None, 0.81) is None
    assert choose_migration([A], B, None, None, 0.1) is None  # watts unknown
    assert choose_migration([A], B, 0.0, None, 0.1) is None
    assert choose_migration([A], A, 2_000.0, None, 0.1) is None  # nowhere else to go
    blind = dataclasses.replace(B, inlet_rise_c_per_kw=())
    assert choose_migration([A], blind, 2_000.0, None, 0.1) is None  # target's heat unknown
    # A move from the cool place to the hot one never pays.
    assert choose_migration([B], A, 2_000.0, None, 0.1) is None


def test_never_toward_a_place_over_its_limit_or_without_a_seat() -> None:
    over = dataclasses.replace(B, inlet_c=31.0)
    assert choose_migration([A], over, 2_000.0, None, 0.1) is None
    seatless = dataclasses.replace(B, seats=0)
    assert choose_migration([A], seatless, 2_000.0, None, 0.1) is None


def test_inlets_beyond_the_places_are_predicted_too() -> None:
    # c (not a candidate) is the room's hottest and only b's heat reaches it: moving to b
    # would heat the peak, so no move.
    b_heats_c = dataclasses.replace(B, inlet_rise_c_per_kw=(*COLUMN_B, ("c", 0.5)))
    assert choose_migration([A], b_heats_c, 2_000.0, {"c": 27.0}, 0.1) is None
    assert choose_migration([A], b_heats_c, 2_000.0, None, 0.1) is not None


temps = st.floats(15.0, 35.0)
rises = st.floats(0.0, 1.0)


@given(
    st.lists(st.tuples(temps, st.lists(rises, min_size=4, max_size=4)), min_size=4, max_size=4),
    st.integers(0, 3),
    st.floats(100.0, 10_000.0),
    st.floats(0.01, 2.0),
)
@settings(max_examples=300)
def test_the_move_is_the_best_one_and_its_gain_is_what_the_matrix_predicts(
    rows: list[tuple[float, list[float]]], target_index: int, watts: float, min_gain: float
) -> None:
    ids = ["p0", "p1", "p2", "p3"]
    inlets = np.array([t for t, _ in rows])
    d = np.array([column for _, column in rows]).T  # d[k, i]: inlet k per kW at place i
    places = [
        place(ids[i], tuple(zip(ids, d[:, i], strict=True)), inlet_c=float(inlets[i]))
        for i in range(4)
    ]
    target = places[target_index]
    sources = [p for i, p in enumerate(places) if i != target_index]
    move = choose_migration(sources, target, watts, None, min_gain)
    room = {ids[i]: float(inlets[i]) for i in range(4)}
    if not removal_could_gain(sources, watts, room, min_gain):
        assert move is None  # the bound a caller may skip the ranking on
    kw = watts / 1000.0
    gains = {
        ids[i]: inlets.max() - (inlets - d[:, i] * kw + d[:, target_index] * kw).max()
        for i in range(4)
        if i != target_index
    }
    best = max(gains.values())
    if best < min_gain - 1e-9:
        assert move is None
        return
    if best >= min_gain + 1e-9:
        assert move is not None
    if move is not None:
        assert move.gain_c >= min_gain
        assert move.gain_c == pytest.approx(gains[move.source], abs=1e-9)
        assert move.gain_c == pytest.approx(best, abs=1e-9)
        assert move.target == target.place_id != move.source


def pod(name: str, *, phase: str = "Running", ready: bool = True, deleting: bool = False) -> Any:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    containers = [{"name": "vllm", "ready": ready}, {"name": "proxy", "ready": True}]
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": containers}}


def test_only_running_ready_pods_not_being_deleted_are_ready() -> None:
    assert is_ready(pod("p"))
    assert not is_ready(pod("p", ready=False))  # one container not ready
    assert not is_ready(pod("p", phase="Pending"))
    assert not is_ready(pod("p", deleting=True))
    assert not is_ready({"metadata": {"name": "p"}, "status": {"phase": "Running"}})


def candidate(name: str, **kw: Any) -> MoveCandidate:
    values: dict[str, Any] = {
        "namespace": "llm",
        "deployment": name,
        "ready_pods": {"a": (f"{name}-1", f"{name}-2")},
        "settled": True,
        "target": B,
        "replica_watts": 2_000.0,
    }
    return MoveCandidate(**{**values, **kw})


def test_the_best_move_over_settled_workloads_with_enough_ready_replicas() -> None:
    observations = {"a": A, "b": B}
    rules = MigrationSettings(min_gain_c=0.1, min_ready=2)
    small, large = candidate("small", replica_watts=1_000.0), candidate("large")
    chosen = best_move([small, large], observations, rules)
    assert chosen is not None
    assert chosen[0].deployment == "large"
    assert chosen[1].gain_c == pytest.approx(0.8)
    # A workload still scaling, short of ready replicas or with nowhere to go stays put.
    assert best_move([candidate("x", settled=False)], observations, rules) is None
    assert best_move([candidate("x", ready_pods={"a": ("x-1",)})], observations, rules) is None
    assert best_move([candidate("x", target=None)], observations, rules) is None


def test_migration_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="min_gain_c"):
        MigrationSettings(min_gain_c=0.0)
    with pytest.raises(ValueError, match="min_interval_s"):
        MigrationSettings(min_interval_s=-1.0)
    with pytest.raises(ValueError, match="min_ready"):
        MigrationSettings(min_ready=0)
