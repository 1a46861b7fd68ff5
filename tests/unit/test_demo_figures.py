"""The demo's figures: the live row from the world's totals, reaction times and ceiling flaps,
the step scenario, and the live row beside the twin's."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from climatik.api.resource import PowerCappingConfig
from climatik.demo.compare import LIVE_ROW, LiveSample, json_document, run_twin, with_live
from climatik.demo.live import WorldTotals, live_metrics, slo_by_service
from climatik.demo.manifests import DEMO_LABEL, demo_objects
from climatik.demo.stability import (
    ceiling_activity,
    changes,
    flaps,
    percentile,
    reactions,
)
from climatik.demo.step import square_wave, step_times_h, wall_times, write_step_scenario
from climatik.policies.ceiling_settings import HeadroomSettings, ThresholdSettings
from climatik.sim.engine import Twin
from climatik.sim.policy_specs import POLICY_SPECS
from climatik.sim.result import METRIC_KEYS
from climatik.sim.scenario import load_scenario
from climatik.sim.summary import summary_table
from climatik.sim.world import build_world
from climatik.world.site import twin_world

TOTALS = WorldTotals(
    simulated_s=1800.0,
    energy_j=3.6e6 * 20,
    cap_violation_ws=5000.0,
    max_overshoot_w=1000.0,
    tokens={"chat": 4e6, "summarise": 5e6},
    arrived={"chat": 1000.0, "summarise": 3000.0},
    met_slo={"chat": 100.0, "summarise": 2900.0},
)


def test_the_live_row_has_every_metric_and_nan_for_what_the_world_does_not_model() -> None:
    figures = live_metrics(TOTALS, cap_w=50_000.0)
    assert set(figures) == set(METRIC_KEYS)
    assert figures["tokens"] == pytest.approx(9e6)
    assert figures["tokens_per_s"] == pytest.approx(9e6 / 1800)
    assert figures["energy_kwh"] == pytest.approx(20.0)
    assert figures["slo_attainment"] == pytest.approx(3000 / 4000)
    assert figures["max_overshoot_pct"] == pytest.approx(2.0)
    assert figures["cap_violation_ws"] == 5000.0
    assert math.isnan(figures["carbon_g"])
    assert slo_by_service(TOTALS) == pytest.approx({"chat": 0.1, "summarise": 2900 / 3000})


def test_reaction_runs_from_the_step_to_power_back_under_the_cap() -> None:
    power = [(0, 40), (10, 45), (12, 60), (20, 55), (31, 49), (40, 48), (50, 70), (60, 70)]
    found = reactions([(float(t), float(w)) for t, w in power], 50.0, [10.0, 35.0, 45.0])
    assert [r.seconds for r in found] == [21.0, 0.0, None]  # back at 31; never over; still over
    assert reactions([(0.0, 60.0)], 50.0, []) == []  # no steps (no --step): nothing to time
    assert percentile([21.0, 0.0], 50) == pytest.approx(10.5)
    assert math.isnan(percentile([], 95))


def test_a_flap_is_a_second_reversal_in_a_row() -> None:
    assert changes([3, 3, 4, 2, 2, 5]) == [1, -1, 1]
    assert flaps([3, 4, 2, 5]) == 1  # up, down, up
    assert flaps([3, 4, 5, 4, 3]) == 0  # following demand up then down: no flap
    assert flaps([3, 4, 3, 4, 3]) == 2
    activity = ceiling_activity({"chat": [3, 4, 3, 4]}, simulated_s=7200.0)
    assert activity["chat"].changes_per_h == pytest.approx(1.5)
    assert activity["chat"].flaps_per_h == pytest.approx(0.5)


def test_the_step_scenario_steps_demand_and_caps_30_percent_under_the_high_level(
    tmp_path: Path,
) -> None:
    wave = square_wave(2.0, 9.0, start_hour=1.0, phase_h=0.5, duration_h=3.0)
    assert wave[0] == (0.0, 2.0)
    assert [rps for h, rps in wave if h in (1.5, 2.0, 2.5)] == [9.0, 2.0, 9.0]
    assert step_times_h(1.0, 0.5, 3.0) == [1.5, 2.5]
    assert wall_times([1.5], 1.0, [(0.0, 0.0), (5.0, 1700.0), (6.0, 1810.0)]) == [6.0]

    base = load_scenario("default")
    text = (Path(__file__).parents[2] / "climatik/sim/scenarios/default.yaml").read_text()
    path, steps = write_step_scenario(base, text, tmp_path, start_hour=12.0, phase_h=1 / 6)
    stepped = load_scenario(str(path))
    assert steps[:2] == pytest.approx([12 + 1 / 6, 12 + 3 / 6])
    assert all(s.traffic.trace_file for s in stepped.services)
    uncapped = run_twin(stepped, 12.0, 3600 / 3).policies  # headroom on the same window
    assert set(uncapped) == {"headroom"}
    cap = stepped.caps.site_cap_w
    # Uncapped, the high level draws about 30 % over the cap (the twin decides the cap).
    free = Twin(stepped, policies=["uncapped"], hours=1 / 3, start_hour=12.0).run()
    assert free.site_w_per_step.max() == pytest.approx(1.3 * cap, rel=0.01)
    assert free.site_w_per_step[:50].max() < cap  # the low phase is under it


def test_the_live_row_sits_beside_the_twins_in_table_json_and_plot_series() -> None:
    scenario = load_scenario("default")
    twin = run_twin(scenario, 12.0, 600.0)
    samples = [
        LiveSample(1.0, 0.0, 40_000.0, {"chat": 1, "summarise": 1}, {"chat": 7, "summarise": 4}),
        LiveSample(31.0, 300.0, 52_000.0, {"chat": 3, "summarise": 2}, {"chat": 3}),
    ]
    result = with_live(twin, TOTALS, samples, {"reaction_s": [12.0]})
    assert list(result.policies) == ["headroom", LIVE_ROW]
    assert result.site_w_per_step.shape == (twin.site_w_per_step.shape[0], 2)
    assert result.site_w_per_step[-1, 1] == 52_000.0
    assert result.history.replicas[0].shape == (2, 2)
    table = summary_table(result)
    assert "live" in table
    assert "n/a" in table
    # Valid JSON: what the world does not model is null, never NaN.
    text = json.dumps(json_document(result, {"start_hour": 12.0}), allow_nan=False)
    document: Any = json.loads(text)
    live = document["policies"][LIVE_ROW]
    assert live["carbon_g"] is None
    assert live["tokens"] == pytest.approx(9e6)
    assert document["details"][LIVE_ROW]["reaction_s"] == [12.0]


def test_the_config_measures_as_the_twin_does_and_reads_every_rack() -> None:
    scenario = load_scenario("default")
    objects = demo_objects(scenario, "demo", "http://p:9090", ["rack-a", "rack-b"])
    spec = PowerCappingConfig.model_validate(objects[-1]).spec
    racks = spec.rack_constraints or []
    assert [r.rack_id for r in racks] == ["rack-a", "rack-b"]
    assert all(r.max_power == 50_000 for r in racks)  # no rack limit: never binding
    # Per service, the whole servers its pods run on (floors included), as the twin's svc_w.
    query = spec.power_measurement.power_query if spec.power_measurement else None
    assert query is not None
    assert "kepler_node_cpu_watts" in query
    assert 'pod_name=~"$pods"' in query


def test_the_twins_window_sees_the_arrivals_the_world_plays_from_its_start_hour() -> None:
    scenario = load_scenario("default")
    played = twin_world(scenario)  # what `climatik world` steps through, wrapped
    window = build_world(
        scenario,
        [POLICY_SPECS["headroom"]],
        0.5,
        HeadroomSettings(),
        ThresholdSettings(),
        exact=False,
        start_hour=12.0,
    )
    first = round(12 * 3600 / scenario.step_s)
    assert window.steps == 180
    np.testing.assert_array_equal(window.rates, played.rates[first : first + 180])


def test_the_kserve_variant_selects_inference_services_by_label() -> None:
    scenario = load_scenario("default")
    objects = demo_objects(scenario, "demo", "http://p:9090", kserve=True)
    plain: Any = json.loads(json.dumps(objects))
    assert [(o["kind"], o["metadata"]["name"]) for o in plain] == [
        ("InferenceService", "chat"),
        ("InferenceService", "summarise"),
        ("PowerCappingConfig", "demo-power-cap"),
    ]
    chat = plain[0]
    assert chat["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert chat["spec"]["predictor"]["maxReplicas"] == 7
    spec = PowerCappingConfig.model_validate(objects[-1]).spec
    assert spec.scale_object_ref is None  # never KServe's ScaledObjects
    assert spec.target_selector is not None
    assert spec.target_selector.match_labels == {DEMO_LABEL: "true"}
