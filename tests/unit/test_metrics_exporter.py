"""The test exporter (hack/metrics_exporter.py): counters integrate the rates that were set, and
the exposition carries each exporter's own names and labels."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "metrics_exporter.py"


def load_exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("climatik_metrics_exporter", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


exporter_module = load_exporter()


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def value_of(text: str, metric: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        rendered = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(rendered.get(k) == v for k, v in labels.items()):
            return float(line.split("} ", 1)[1].split()[0])
    raise AssertionError(f"{metric} {labels} not in exposition")


def make(clock: Clock) -> Any:
    exporter = exporter_module.Exporter(clock=clock)
    exporter.upsert(
        {
            "namespace": "llm",
            "name": "vllm-0",
            "node": "n1",
            "cpu_watts": 100,
            "gpu_watts": 300,
            "tokens_per_s": 40,
        }
    )
    return exporter


def test_counters_integrate_rates_over_time() -> None:
    clock = Clock()
    exporter = make(clock)
    clock.now_s += 10
    exporter.render("all")
    exporter.set_values("llm/vllm-0", {"cpu_watts": 50, "gpu_watts": None})
    clock.now_s += 10
    text = exporter.render("all")
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
    clock = Clock()
    exporter = make(clock)
    exporter.set_values("llm/vllm-0", {"waiting_requests": 7, "tokens_per_request": 200})
    clock.now_s += 10
    text = exporter.render("vllm")
    assert value_of(text, "vllm:num_requests_waiting", pod="vllm-0") == 7
    finished = value_of(text, "vllm:e2e_request_latency_seconds_count", pod="vllm-0")
    assert finished == pytest.approx(40 * 10 / 200)  # 40 tokens/s for 10 s
    assert "# TYPE vllm:e2e_request_latency_seconds histogram" in text


def test_exposition_uses_each_exporters_labels() -> None:
    exporter = make(Clock())
    kepler = exporter.render("kepler")
    assert value_of(kepler, "kepler_pod_cpu_watts", pod_namespace="llm", zone="package") == 100
    assert value_of(kepler, "kepler_pod_gpu_watts", pod_name="vllm-0", vendor="nvidia") == 300
    assert value_of(kepler, "kepler_node_cpu_watts", node_name="n1", zone="package") == 100
    dcgm = exporter.render("dcgm")
    assert value_of(dcgm, "DCGM_FI_DEV_POWER_USAGE", pod="vllm-0", namespace="llm") == 300
    assert 'modelName="NVIDIA' in dcgm
    vllm = exporter.render("vllm")
    assert 'model_name="' in vllm


def test_nan_is_served_and_counters_do_not_absorb_it() -> None:
    clock = Clock()
    exporter = make(clock)
    exporter.set_values("llm/vllm-0", {"cpu_watts": "NaN"})
    clock.now_s += 10
    text = exporter.render("kepler")
    assert math.isnan(value_of(text, "kepler_pod_cpu_watts", zone="package"))
    assert value_of(text, "kepler_pod_cpu_joules_total", zone="package") == 0


def test_only_timestamped_pods_freeze() -> None:
    exporter = make(Clock())
    with pytest.raises(ValueError, match="timestamped"):
        exporter.set_values("llm/vllm-0", {"frozen": True})
    exporter.set_values("llm/vllm-0", {"timestamped": True})
    exporter.set_values("llm/vllm-0", {"frozen": True})
    first = exporter.render("kepler").splitlines()[2]
    assert re.search(r" \d{13}$", first)


def test_noise_jitters_the_power_gauge_within_its_bound_and_not_the_counters() -> None:
    clock = Clock()
    exporter = make(clock)
    exporter.upsert({"namespace": "llm", "name": "noisy", "cpu_watts": 200, "noise": 0.05})
    seen = set()
    for _ in range(20):
        text = exporter.render("kepler")
        watts = value_of(text, "kepler_pod_cpu_watts", pod_name="noisy", zone="package")
        assert 190.0 <= watts <= 210.0
        seen.add(watts)
    assert len(seen) > 1
    clock.now_s += 10
    text = exporter.render("kepler")
    joules = value_of(text, "kepler_pod_cpu_joules_total", pod_name="noisy", zone="package")
    assert joules == pytest.approx(2000.0)
