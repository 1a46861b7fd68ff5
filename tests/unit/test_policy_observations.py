"""The one observation builder, and that the twin builds no observation of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from climatik.domain.capping import TargetObservation
from climatik.domain.placement import RecirculationEstimate
from climatik.policies.ceiling_settings import HeadroomSettings, ThresholdSettings
from climatik.policies.observations import (
    IDLE_SETTLE_ROUNDS,
    IdlePower,
    RackReading,
    ceiling_settings,
    demand_tokens_per_s,
    group_nodes_by_rack,
    heat_coefficients,
    learn_idle_power,
    measured_watts_per_replica,
    observe_cap,
    observe_target,
    recirculation_from_history,
    replica_added_watts,
    replica_headroom,
    track_free_nodes,
    zone_watts,
)

OBSERVATIONS = {"CapObservation", "TargetObservation", "RackObservation", "PlaceObservation"}
PACKAGE = Path(__file__).resolve().parents[2] / "climatik"
SIM = PACKAGE / "sim"


def _calls(path: Path) -> set[str]:
    return {
        getattr(node.func, "id", None) or getattr(node.func, "attr", None) or ""
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
    }


def test_the_twin_constructs_no_observation_itself() -> None:
    """Every observation the twin hands a policy comes from the builder the reconcilers call."""
    built = []
    for path in sorted(SIM.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in OBSERVATIONS:
                    built.append(f"{path.name}:{node.lineno} {name}")
    assert built == []


def test_one_rack_pipeline_serves_capping_and_placement() -> None:
    """Racks are read by one reader and their nodes grouped by one function: power capping (rack
    caps, idle node power) and placement see the same readings of the same racks."""
    renders = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if _calls(path) & {"build_rack_query", "is_per_rack"}
    )
    assert renders == ["sources/racks.py"]
    for reconciler in ("powercap_measure.py", "placement_racks.py"):
        calls = _calls(PACKAGE / "reconcilers" / reconciler)
        assert {"read_racks", "group_nodes_by_rack"} <= calls, reconciler


def _target(watts: float | None, replicas: int, *, deferrable: bool = False) -> TargetObservation:
    return observe_target(
        name=f"t{replicas}{deferrable}",
        current_replicas=replicas,
        min_replicas=0,
        user_max_replicas=10,
        applied_max_replicas=10,
        watts=watts,
        tokens_per_s=None,
        limited_by_ceiling=None,
        priority=0,
        deferrable=deferrable,
    )


def test_unusable_readings_are_no_data_not_zero() -> None:
    target = _target(float("nan"), 2)
    assert target.watts is None
    assert _target(-5.0, 2).watts is None


def test_demand_is_what_is_served_plus_the_backlog_drained() -> None:
    # 1,000 tokens/s served and 30 requests of 200 tokens waiting, drained over a minute.
    assert demand_tokens_per_s(1000.0, 30.0, 200.0) == 1100.0
    assert demand_tokens_per_s(1000.0, 30.0, 200.0, drain_s=30.0) == 1200.0
    # Without the backlog there is no demand signal: served tokens alone miss what a
    # saturated target turns away.
    assert demand_tokens_per_s(1000.0, None, 200.0) is None
    assert demand_tokens_per_s(1000.0, float("nan"), 200.0) is None
    assert demand_tokens_per_s(None, 3.0, 200.0) is None


def test_watts_per_replica_counts_only_measured_targets() -> None:
    targets = [_target(3000.0, 2), _target(None, 5), _target(0.0, 0)]
    assert measured_watts_per_replica(targets) == 1500.0
    assert measured_watts_per_replica([_target(None, 3)]) is None


def _settled(*nodes: str) -> IdlePower:
    """An estimate that has seen `nodes` free for long enough to read idle draw from."""
    return IdlePower(free_rounds=dict.fromkeys(nodes, IDLE_SETTLE_ROUNDS))


def _watts(*values: float | None) -> dict[str, float | None]:
    return {f"n{i}": v for i, v in enumerate(values)}


def test_idle_power_is_learned_only_from_usable_idle_readings() -> None:
    start = _settled("n0", "n1", "n2", "n3")
    idle = learn_idle_power(start, _watts(2800.0, 2600.0, None, float("nan")))
    assert (idle.watts, idle.samples) == (2700.0, 1)
    assert learn_idle_power(idle, {}) == idle
    assert learn_idle_power(idle, _watts(2900.0), weight=0.5).watts == 2800.0


def test_a_node_freed_within_the_measurement_window_is_not_idle_draw() -> None:
    # The node's lagged rate window still holds its replica's work: 5.6 kW is no idle draw,
    # neither beside idle nodes in the same round nor on its own against the estimate.
    first = learn_idle_power(_settled("n0", "n1", "n2"), _watts(2800.0, 5600.0, 2810.0))
    assert (first.watts, first.samples) == (2805.0, 1)
    assert learn_idle_power(first, _watts(5600.0)) == first
    # Idle draw that drifts a little is still followed.
    assert learn_idle_power(first, _watts(2900.0), weight=0.5).watts == 2852.5


def test_a_node_is_read_for_idle_draw_only_once_it_has_been_free_for_a_while() -> None:
    # Freed this round: its reading still carries its replica's work, whatever it reads.
    idle = IdlePower()
    for rounds in range(1, IDLE_SETTLE_ROUNDS):
        idle = track_free_nodes(idle, ["a"])
        assert idle.free_rounds == {"a": rounds}
        assert idle.settled_nodes() == []
        assert learn_idle_power(idle, {"a": 4800.0}).watts is None
    idle = track_free_nodes(idle, ["a", "b"])
    assert idle.settled_nodes() == ["a"]
    assert learn_idle_power(idle, {"a": 2800.0, "b": 4800.0}).watts == 2800.0
    # A node that hosts a replica again starts over.
    assert track_free_nodes(idle, ["b"]).free_rounds == {"b": 2}


@given(st.lists(st.floats(0, 20000), min_size=1, max_size=8), st.integers(1, 20))
def test_idle_estimate_stays_within_what_was_seen(readings: list[float], rounds: int) -> None:
    idle = _settled(*_watts(*readings))
    for _ in range(rounds):
        idle = learn_idle_power(idle, _watts(*readings))
    assert idle.watts is not None
    assert min(readings) - 1e-6 <= idle.watts <= max(readings) + 1e-6


def test_idle_credit_only_when_the_scope_measures_nodes() -> None:
    idle = IdlePower(2800.0, 3)
    measured = ceiling_settings(HeadroomSettings(), idle, scope_measures_nodes=True)
    assert isinstance(measured, HeadroomSettings)
    assert measured.idle_watts_per_replica == 2800.0
    assert not measured.idle_pending
    pods_only = ceiling_settings(HeadroomSettings(), idle, scope_measures_nodes=False)
    assert isinstance(pods_only, HeadroomSettings)
    assert pods_only.idle_watts_per_replica == 0.0
    assert not pods_only.idle_pending
    unseen = ceiling_settings(HeadroomSettings(), IdlePower(), scope_measures_nodes=True)
    assert isinstance(unseen, HeadroomSettings)
    assert unseen.idle_watts_per_replica == 0.0
    # Whole nodes measured, their idle draw not learned yet: the energy model waits.
    assert unseen.idle_pending
    assert ceiling_settings(ThresholdSettings(), idle, scope_measures_nodes=True) == (
        ThresholdSettings()
    )


def _rack(watts: float | None, free: int | None, inlet: float | None = None) -> RackReading:
    return RackReading("r", watts, inlet, max_watts=30000.0, max_inlet_c=27.0, free_nodes=free)


def test_replica_headroom_from_power_free_nodes_and_inlet() -> None:
    # 10 kW left, a replica adds 10 kW - 2.8 kW idle: one fits.
    assert replica_headroom(_rack(20000.0, 4), 10000.0, 2800.0) == 1
    assert replica_headroom(_rack(10000.0, 2), 5000.0, None) == 2  # bounded by free nodes
    assert replica_headroom(_rack(10000.0, 4, inlet=26.8), 5000.0, None) == 0
    assert replica_headroom(_rack(None, 4), 5000.0, None) is None  # no reading: unknown
    assert replica_headroom(_rack(10000.0, None), 5000.0, None) is None


@given(
    st.floats(0, 60000),
    st.integers(0, 16),
    st.one_of(st.none(), st.floats(1, 20000)),
    st.one_of(st.none(), st.floats(0, 5000)),
)
def test_replica_headroom_never_exceeds_free_nodes_nor_goes_negative(
    watts: float, free: int, per_replica: float | None, idle: float | None
) -> None:
    headroom = replica_headroom(_rack(watts, free), per_replica, idle)
    assert headroom is not None
    assert 0 <= headroom <= free
    if watts >= 30000.0 and per_replica is not None:
        assert headroom == 0


def _seated(watts: float, free: int | None, seats: int | None) -> RackReading:
    return RackReading(
        "r", watts, None, max_watts=30000.0, max_inlet_c=27.0, free_nodes=free, seats=seats
    )


def test_replica_headroom_counts_seats_of_the_footprint_where_known() -> None:
    # 4 free nodes but VPA's footprint seats 1 replica: the seat bounds it.
    assert replica_headroom(_seated(10000.0, 4, 1), 5000.0, None) == 1
    # No seat left for the footprint: none, whatever the power headroom.
    assert replica_headroom(_seated(10000.0, 4, 0), 5000.0, None) == 0
    # A small footprint seats 40 on one free node: the first replica displaces the node's
    # 2 kW idle draw (3 kW), the others add all of their 5 kW: 3 + 3 x 5 <= 20 kW left.
    assert replica_headroom(_seated(10000.0, 1, 40), 5000.0, 2000.0) == 4
    # Seats without a free node: every replica adds its whole watts.
    assert replica_headroom(_seated(10000.0, 0, 40), 5000.0, 2000.0) == 4
    assert replica_headroom(_seated(10000.0, None, 40), 5000.0, None) == 4
    # Without a seat count the free nodes stand in, as before (the twin's servers).
    assert replica_headroom(_seated(10000.0, 2, None), 5000.0, None) == 2


@given(
    st.floats(0, 60000),
    st.one_of(st.none(), st.integers(0, 16)),
    st.integers(0, 500),
    st.floats(1, 20000),
    st.one_of(st.none(), st.floats(0, 5000)),
)
def test_replica_headroom_never_exceeds_seats_nor_the_power_headroom(
    watts: float, free: int | None, seats: int, per_replica: float, idle: float | None
) -> None:
    headroom = replica_headroom(_seated(watts, free, seats), per_replica, idle)
    assert headroom is not None
    assert 0 <= headroom <= seats
    # What the added replicas draw fits the rack's power headroom: those on free nodes at
    # their watts over the idle draw (at least 1 W), the others at all of their watts.
    on_free = min(headroom, free or 0)
    added_w = on_free * max(per_replica - (idle or 0.0), 1.0) + (headroom - on_free) * max(
        per_replica, 1.0
    )
    assert added_w <= max(0.0, 30000.0 - watts) + 1e-6
    # And one more replica would not fit, unless the seats ran out first.
    if headroom < seats:
        marginal = (
            max(per_replica - (idle or 0.0), 1.0)
            if headroom < (free or 0)
            else max(per_replica, 1.0)
        )
        assert added_w + marginal > 30000.0 - watts - 1e-6


@given(
    st.floats(0, 60000),
    st.integers(0, 16),
    st.one_of(st.none(), st.floats(1, 20000)),
    st.one_of(st.none(), st.floats(0, 5000)),
)
def test_replica_headroom_without_seats_is_the_free_nodes_figure(
    watts: float, free: int, per_replica: float | None, idle: float | None
) -> None:
    """The twin gives no seats: its headroom stays min(free servers, power ÷ marginal watts)."""
    headroom = replica_headroom(_rack(watts, free), per_replica, idle)
    expected = free
    if per_replica is not None:
        marginal = max(per_replica - (idle or 0.0), 1.0)
        expected = min(free, max(0, int((30000.0 - watts) // marginal)))
    assert headroom == expected


def test_carbon_cap_binds_deferrable_targets_only_under_a_per_target_budget() -> None:
    targets = [_target(1000.0, 1), _target(1000.0, 2, deferrable=True)]
    split = observe_cap(
        scope="s", base_cap_w=50000.0, cap_w=40000.0, measured_w=2000.0, targets=targets
    )
    assert (split.cap_w, split.deferrable_cap_w) == (50000.0, 40000.0)
    whole = observe_cap(
        scope="s",
        base_cap_w=50000.0,
        cap_w=40000.0,
        measured_w=2000.0,
        targets=targets,
        per_target_budget=False,
    )
    assert (whole.cap_w, whole.deferrable_cap_w) == (40000.0, None)


def test_one_grouping_of_nodes_by_rack_with_zones() -> None:
    grouping = group_nodes_by_rack(
        [
            ("n2", {"rack": "a", "zone": "z1"}),
            ("n1", {"rack": "a"}),
            ("n3", {"rack": "b"}),
            ("n4", {}),
        ],
        "rack",
        "zone",
    )
    assert grouping.nodes_by_rack == {"a": ("n1", "n2"), "b": ("n3",)}
    assert grouping.zone_of_rack == {"a": "z1"}


def test_heat_matrix_is_learned_from_history_and_configured_values_win() -> None:
    rng = np.random.default_rng(1)
    d = np.array([[0.5, 0.2], [0.1, 0.4]])  # °C per kW
    power = rng.uniform(1000.0, 9000.0, size=(40, 2))
    inlet = 18.0 + power @ d.T / 1000.0
    assert recirculation_from_history(["a", "b"], power[:5].tolist(), inlet[:5].tolist()) is None
    estimate = recirculation_from_history(["a", "b"], power.tolist(), inlet.tolist())
    assert isinstance(estimate, RecirculationEstimate)
    assert np.allclose(estimate.matrix_c_per_kw, d, atol=1e-2)
    factors, columns = heat_coefficients(["a", "b"], estimate, {"a": 9.0})
    assert factors["a"] == 9.0
    assert abs(factors["b"] - 0.6) < 1e-2
    assert dict(columns["b"]).keys() == {"a", "b"}
    assert heat_coefficients(["a"], None) == ({"a": 0.0}, {})


def test_heat_matrix_fit_follows_the_supply_air_the_cooling_unit_moves() -> None:
    # The cooling unit holds the hottest inlet near its target by moving the supply air, so
    # the inlets alone barely follow the power; inlet minus the measured supply does.
    rng = np.random.default_rng(2)
    d = np.array([[0.5, 0.2], [0.1, 0.4]])  # °C per kW
    power = rng.uniform(1000.0, 9000.0, size=(60, 2))
    rise = power @ d.T / 1000.0
    supply = np.clip(26.5 - rise.max(axis=1), 15.0, 27.0)
    inlet = supply[:, None] + rise
    blind = recirculation_from_history(["a", "b"], power.tolist(), inlet.tolist())
    assert blind is not None
    assert not np.allclose(blind.matrix_c_per_kw, d, atol=0.1)
    supplies = [(float(s), float(s)) for s in supply]
    seen = recirculation_from_history(["a", "b"], power.tolist(), inlet.tolist(), supplies)
    assert seen is not None
    assert np.allclose(seen.matrix_c_per_kw, d, atol=1e-2)
    # A sample without a supply reading: the fit cannot subtract it, so it does without.
    gap = recirculation_from_history(
        ["a", "b"], power.tolist(), inlet.tolist(), [*supplies[:-1], None]
    )
    assert gap == blind


def test_replica_added_watts_and_zone_watts() -> None:
    assert replica_added_watts(9000.0, 3) == 3000.0
    assert replica_added_watts(9000.0, 3, idle_w=2800.0) == 200.0
    assert replica_added_watts(None, 3) is None
    assert replica_added_watts(9000.0, 0) is None
    assert zone_watts([("z", 1.0), ("z", None), ("y", 2.0), ("z", float("nan"))]) == {
        "z": 1.0,
        "y": 2.0,
    }
