"""The world's exposition: counters follow what was set over time, and each family carries its
exporter's own names and labels (FACTS.md), timestamps and special values."""

from __future__ import annotations

import math
import re

import pytest

from climatik.world.exposition.text import escape_label_value, format_value
from climatik.world.readings import Readings, parse_number
from tests.unit.fakeclock import FakeClock
from tests.unit.world_helpers import WALL_S, make_readings, samples, scrape, value_of


def test_counters_integrate_rates_over_time() -> None:
    clock = FakeClock()
    readings = make_readings(clock)
    clock.advance(10)
    scrape(readings)
    readings.set_values("llm/vllm-0", {"cpu_watts": 50, "gpu_watts": None})
    clock.advance(10)
    text = scrape(readings)
    # 100 W for 10 s then 50 W for 10 s, package zone.
    assert value_of(text, "kepler_pod_cpu_joules_total", zone="package") == pytest.approx(1500)
    assert value_of(text, "kepler_pod_cpu_joules_total", zone="core") == pytest.approx(1200)
    # GPU 300 W for 10 s, then no GPU: Kepler 0.7's container total counts both.
    total = value_of(text, "kepler_container_joules_total", mode="dynamic") + value_of(
        text, "kepler_container_joules_total", mode="idle"
    )
    assert total == pytest.approx(1500 + 3000)
    assert value_of(text, "vllm:generation_tokens_total", pod="vllm-0") == pytest.approx(800)
    assert "DCGM_FI_DEV_POWER_USAGE{" not in text


def test_vllm_backlog_and_finished_requests_follow_what_was_set() -> None:
    """The demand a capping policy reads: the queue as set, and finished requests counted at
    tokens per second over tokens per request, as vLLM's latency histogram's count."""
    clock = FakeClock()
    readings = make_readings(clock)
    readings.set_values("llm/vllm-0", {"waiting_requests": 7, "tokens_per_request": 200})
    clock.advance(10)
    text = scrape(readings, "vllm")
    assert value_of(text, "vllm:num_requests_waiting", pod="vllm-0") == 7
    assert value_of(text, "vllm:num_requests_running", pod="vllm-0") == 2  # ceil(40 / 30)
    finished = value_of(text, "vllm:e2e_request_latency_seconds_count", pod="vllm-0")
    assert finished == pytest.approx(40 * 10 / 200)  # 40 tokens/s for 10 s
    assert "# TYPE vllm:e2e_request_latency_seconds histogram" in text
    readings.set_values("llm/vllm-0", {"running_requests": 12.5})
    assert value_of(scrape(readings, "vllm"), "vllm:num_requests_running") == 12.5


def test_each_family_has_its_exporters_label_set() -> None:
    readings = make_readings(FakeClock())
    readings.set_node("n1", {"inlet_c": 24.5, "idle_cpu_watts": 40})
    text = scrape(readings)
    kepler_pod = {"pod_id", "pod_name", "pod_namespace", "state", "node_name", "zone"}
    label_sets = {
        "kepler_pod_cpu_watts": kepler_pod,
        "kepler_pod_gpu_watts": kepler_pod - {"zone"} | {"gpu", "gpu_uuid", "gpu_name", "vendor"},
        "kepler_node_cpu_watts": {"zone", "path", "node_name"},
        "kepler_container_joules_total": {
            "container_namespace",
            "pod_name",
            "container_name",
            "container_id",
            "mode",
        },
        "DCGM_FI_DEV_POWER_USAGE": {
            "gpu",
            "UUID",
            "device",
            "modelName",
            "Hostname",
            "DCGM_FI_DRIVER_VERSION",
            "container",
            "namespace",
            "pod",
        },
        "vllm:num_requests_waiting": {"model_name", "engine", "namespace", "pod"},
        "ipmi_temperature_celsius": {"id", "name", "node"},
    }
    for metric, expected in label_sets.items():
        found = samples(text, metric)
        assert found, metric
        assert all(set(labels) == expected for labels, _, _ in found), metric
    assert value_of(text, "kepler_pod_gpu_watts", pod_name="vllm-0", vendor="nvidia") == 300
    assert value_of(text, "kepler_node_cpu_watts", node_name="n1", zone="package") == 140
    assert value_of(text, "DCGM_FI_DEV_POWER_USAGE", pod="vllm-0", namespace="llm") == 300
    assert value_of(text, "ipmi_temperature_celsius", node="n1") == 24.5


def test_a_pod_with_several_gpus_serves_one_series_per_gpu_that_sum_to_its_power() -> None:
    clock = FakeClock()
    readings = make_readings(clock)
    readings.upsert({"namespace": "llm", "name": "big", "node": "n1", "gpus": 4, "gpu_watts": 2000})
    clock.advance(10)
    text = scrape(readings, "dcgm")
    big = [
        (labels, v)
        for labels, v, _ in samples(text, "DCGM_FI_DEV_POWER_USAGE")
        if labels["pod"] == "big"
    ]
    # vllm-0 holds GPU 0 of n1; big gets the next four, each with its own UUID.
    assert sorted(labels["gpu"] for labels, _ in big) == ["1", "2", "3", "4"]
    assert len({labels["UUID"] for labels, _ in big}) == 4
    assert sum(v for _, v in big) == pytest.approx(2000)
    energy = [
        v
        for labels, v, _ in samples(text, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
        if labels["pod"] == "big"
    ]
    assert sum(energy) == pytest.approx(2000 * 10 * 1000)  # mJ


def test_each_gpu_reports_its_pods_sm_clock_the_maximum_until_one_is_set() -> None:
    readings = make_readings(FakeClock())
    readings.upsert({"namespace": "llm", "name": "big", "node": "n1", "gpus": 2, "gpu_watts": 900})
    readings.set_values("llm/big", {"sm_clock_mhz": 1470})
    clocks = {
        (labels["pod"], labels["gpu"]): v
        for labels, v, _ in samples(scrape(readings, "dcgm"), "DCGM_FI_DEV_SM_CLOCK")
    }
    assert clocks == {("vllm-0", "0"): 1980.0, ("big", "1"): 1470.0, ("big", "2"): 1470.0}


def test_nan_is_served_and_counters_do_not_absorb_it() -> None:
    clock = FakeClock()
    readings = make_readings(clock)
    readings.set_values("llm/vllm-0", {"cpu_watts": "NaN", "gpu_watts": "+Inf"})
    clock.advance(10)
    text = scrape(readings)
    assert math.isnan(value_of(text, "kepler_pod_cpu_watts", zone="package"))
    assert value_of(text, "kepler_pod_cpu_joules_total", zone="package") == 0
    assert value_of(text, "DCGM_FI_DEV_POWER_USAGE") == math.inf
    assert "} +Inf" in text


def test_only_timestamped_pods_freeze_and_a_frozen_pod_keeps_its_moment() -> None:
    clock = FakeClock()
    wall = [WALL_S]
    readings = Readings(clock=clock, wall_clock=lambda: wall[0])
    readings.upsert({"namespace": "llm", "name": "p", "cpu_watts": 10})
    with pytest.raises(ValueError, match="timestamped"):
        readings.set_values("llm/p", {"frozen": True})
    readings.set_values("llm/p", {"timestamped": True})
    stamps = {ts for _, _, ts in samples(scrape(readings, "kepler"), "kepler_pod_cpu_watts")}
    assert stamps == {str(int(WALL_S * 1000))}
    readings.set_values("llm/p", {"frozen": True})
    wall[0] += 60
    clock.advance(60)
    text = scrape(readings, "kepler")
    assert {ts for _, _, ts in samples(text, "kepler_pod_cpu_watts")} == {str(int(WALL_S * 1000))}
    assert value_of(text, "kepler_pod_cpu_joules_total", zone="package") == 0
    # Node series never carry timestamps: they belong to no pod.
    assert {ts for _, _, ts in samples(text, "kepler_node_cpu_watts")} == {None}


def test_noise_jitters_the_power_gauge_within_its_bound_and_not_the_counters() -> None:
    clock = FakeClock()
    readings = make_readings(clock)
    readings.upsert({"namespace": "llm", "name": "noisy", "cpu_watts": 200, "noise": 0.05})
    seen = set()
    for seed in range(20):
        text = scrape(readings, "kepler", seed=seed)
        watts = value_of(text, "kepler_pod_cpu_watts", pod_name="noisy", zone="package")
        assert 190.0 <= watts <= 210.0
        seen.add(watts)
    assert len(seen) > 1
    clock.advance(10)
    text = scrape(readings, "kepler")
    joules = value_of(text, "kepler_pod_cpu_joules_total", pod_name="noisy", zone="package")
    assert joules == pytest.approx(2000.0)


def test_an_unknown_family_is_refused() -> None:
    with pytest.raises(KeyError):
        scrape(make_readings(FakeClock()), "kepler08")


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), (3, 3.0), ("2.5", 2.5), ("+Inf", math.inf), ("-inf", -math.inf)],
)
def test_parse_number(given: object, expected: float | None) -> None:
    assert parse_number(given) == expected


@pytest.mark.parametrize("bad", [True, [1], "watts"])
def test_parse_number_refuses_what_is_not_a_number(bad: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages differ by type
        parse_number(bad)


def test_text_format_escapes_and_special_values() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert format_value(math.nan) == "NaN"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(2.0) == "2.0"
    assert re.fullmatch(r"\d+\.\d+", format_value(1 / 3))
