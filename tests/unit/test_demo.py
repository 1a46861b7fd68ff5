"""The demo's pure parts: the objects it applies for a scenario, the scrape configuration, and
its progress line."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from climatik.api.resource import PowerCappingConfig
from climatik.demo.cli import sigterm_as_interrupt
from climatik.demo.manifests import (
    SITE_POWER_QUERY,
    demo_objects,
    replicas_query,
    requests_per_replica,
    site_cap_w,
)
from climatik.demo.progress import (
    ServedFigures,
    ServiceState,
    Snapshot,
    progress_line,
    summary_lines,
)
from climatik.demo.scrape import JOBS, scrape_config
from climatik.policies.ceiling_settings import HeadroomSettings
from climatik.sim.clocks import clock_bounds
from climatik.sim.scenario import load_scenario

PROMETHEUS = "http://127.0.0.1:9090"


def test_each_service_gets_a_deployment_and_a_scaled_object_and_one_config_caps_them() -> None:
    scenario = load_scenario("default")
    # Read back as JSON, as kubectl sends it.
    objects: list[dict[str, Any]] = json.loads(
        json.dumps(demo_objects(scenario, "demo", PROMETHEUS))
    )
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("Deployment", "chat"),
        ("Deployment", "summarise"),
        ("ScaledObject", "chat"),
        ("ScaledObject", "summarise"),
        ("PowerCappingConfig", "demo-power-cap"),
    ]
    chat_so = objects[2]["spec"]
    assert chat_so["minReplicaCount"] == 1
    assert chat_so["maxReplicaCount"] == 7
    trigger = chat_so["triggers"][0]["metadata"]
    assert trigger["query"] == replicas_query("demo", "chat")
    assert trigger["threshold"] == str(requests_per_replica(scenario.services[0]))
    chat_pod = objects[0]["spec"]["template"]["spec"]["containers"][0]
    assert chat_pod["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert chat_pod["args"] == ["--model", "llama-70b-tp8"]
    config = PowerCappingConfig.model_validate(objects[4])
    assert config.spec.power_cap_limit == pytest.approx(scenario.caps.site_cap_w)
    assert [m.query for m in config.spec.metrics or []] == [SITE_POWER_QUERY]
    assert [r.metadata.name for r in config.spec.scale_object_ref or []] == ["chat", "summarise"]


def test_the_live_loop_runs_the_twins_tuning_and_the_autoscalers_windows_compressed() -> None:
    # At 10x, HPA windows in wall seconds would hold ten times as many simulated seconds as
    # the twin's autoscaler: the scale-down window and the scale-up period are compressed.
    scenario = load_scenario("default")
    objects = demo_objects(scenario, "demo", PROMETHEUS, speed=10.0)
    chat_so: dict[str, Any] = json.loads(json.dumps(objects[2]))["spec"]
    behavior = chat_so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    window_s = scenario.services[0].autoscaler.scale_down_window_s
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == round(window_s / 10.0)
    assert {p["periodSeconds"] for p in behavior["scaleUp"]["policies"]} == {2}
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    # The twin's margin and hysteresis, not the CRD's more cautious defaults.
    config = PowerCappingConfig.model_validate(objects[4])
    twin = HeadroomSettings()
    assert config.spec.policy.safety_margin_percent == round(100 * twin.safety_margin_fraction)
    assert config.spec.policy.hysteresis_percent == round(100 * twin.hysteresis_fraction)


def test_gpu_tuning_asks_for_the_twins_clock_bounds_an_hour_apart_in_simulated_time() -> None:
    scenario = load_scenario("default")
    untuned = PowerCappingConfig.model_validate(demo_objects(scenario, "demo", PROMETHEUS)[4])
    assert untuned.spec.gpu_tuning.mode == "Disabled"
    objects = demo_objects(scenario, "demo", PROMETHEUS, speed=10.0, gpu_tuning="Apply")
    tuning = PowerCappingConfig.model_validate(objects[4]).spec.gpu_tuning
    assert tuning.mode == "Apply"
    assert tuning.min_interval_seconds == 360
    tightest = min(clock_bounds(scenario), key=lambda b: b.max_p99_token_latency_s or 0.0)
    assert tightest.max_p99_token_latency_s is not None
    assert tuning.slo_bounds is not None
    assert tuning.slo_bounds.max_inter_token_latency_milliseconds == int(
        tightest.max_p99_token_latency_s * 1000
    )


def test_the_cap_is_the_scenarios_site_cap_over_every_nodes_power() -> None:
    scenario = load_scenario("default")
    assert site_cap_w(scenario) == pytest.approx(50000)
    # Node series, not pod series: the servers' floors count, as in the twin's site power.
    assert "kepler_node_" in SITE_POWER_QUERY
    assert "kepler_pod_" not in SITE_POWER_QUERY


def test_keda_scales_at_the_models_batch_times_the_target_utilisation() -> None:
    chat, summarise = load_scenario("default").services
    assert requests_per_replica(chat) == round(chat.model_class.max_batch * 0.7)
    assert requests_per_replica(summarise) == round(summarise.model_class.max_batch * 0.7)
    assert 'pod=~"chat-.*"' in replicas_query("demo", "chat")


def test_scrape_config_has_every_exporters_job_against_the_target() -> None:
    config: dict[str, Any] = json.loads(json.dumps(scrape_config("127.0.0.1:9400", 2.0)))
    jobs = config["scrape_configs"]
    assert [j["job_name"] for j in jobs] == [job for job, *_ in JOBS]
    dcgm = next(j for j in jobs if j["job_name"] == "dcgm")
    assert dcgm["static_configs"][0]["labels"]["pod"].startswith("nvidia-dcgm-exporter")
    assert config["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s"}


def test_progress_line_shows_power_against_cap_and_replicas_against_ceilings() -> None:
    snap = Snapshot(
        elapsed_s=120,
        simulated_h=14.33,
        pods_w=30100,
        cap_w=50000,
        site_w=47900,
        services={
            "summarise": ServiceState(ready=1, wanted=2, ceiling=None),
            "chat": ServiceState(ready=3, wanted=4, ceiling=7),
        },
    )
    line = progress_line(snap)
    assert "site   47.9 / 50.0 kW ( 96 %)" in line
    assert "pods   30.1 kW" in line
    assert line.endswith("chat 3/4 <= 7  summarise 1/2 <= -")
    empty = progress_line(Snapshot(0, 12.0, None, 50000, None, {}))
    assert "site    --  / 50.0 kW  pods    --  kW" in empty


def test_summary_reads_the_worlds_figures_as_simulate_names_them() -> None:
    lines = summary_lines(
        7200.0,
        3.6e6 * 80,
        {
            "chat": ServedFigures(tokens=1_234_567, arrived=1000, met_slo=950),
            "idle": ServedFigures(tokens=0, arrived=0, met_slo=0),
        },
    )
    assert lines == [
        "simulated 2.00 h, IT energy 80.0 kWh",
        "chat: 1,234,567 tokens, SLO attainment 95.0 %",
        "idle: 0 tokens, SLO attainment -",
    ]
    assert summary_lines(None, None, {}) == ["the world reported no figures"]


def test_sigterm_stops_the_demo_like_ctrl_c() -> None:
    """`timeout` or a CI runner ends the demo with SIGTERM: the stack must still come down."""
    before = signal.getsignal(signal.SIGTERM)
    torn_down = []

    def run_until_terminated() -> None:
        with sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler runs in the main thread at the next bytecode
            finally:
                torn_down.append(True)

    with pytest.raises(KeyboardInterrupt):
        run_until_terminated()
    assert torn_down == [True]
    assert signal.getsignal(signal.SIGTERM) is before
