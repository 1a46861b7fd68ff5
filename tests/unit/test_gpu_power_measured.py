"""GPU power the preset does not see (issue 20, item 1).

Kepler exports `kepler_pod_gpu_watts` only with its experimental GPU support on, and the
KeplerPod preset counts absent GPU series as 0 W: a GPU service would be capped on its CPU
power alone. Pods that request `nvidia.com/gpu` are found from the cache, and those without GPU
series are named (with the series and the fix) while capping goes on with what is measured.
"""

from __future__ import annotations

from typing import Any

import pytest

from climatik.api.status_models import ConditionStatus, ConditionType
from climatik.domain.config import MeasurementPreset, TargetKind
from climatik.reconcilers.powercap_report import GPU_POWER_NOT_MEASURED, gpu_power_condition
from climatik.reconcilers.targets import ResolvedTarget, requests_gpu
from climatik.sources.power import PrometheusPowerSource
from climatik.sources.power_queries import PowerQueryConfig, TargetPods, build_grouped_power_queries
from climatik.sources.power_readings import (
    DCGM_GPU_FIX,
    KEPLER_GPU_FIX,
    GpuCoverage,
    Reading,
    TargetMeasurement,
    gpu_coverage,
)
from climatik.sources.prometheus_results import PodSamples, Sample, Vector
from tests.unit import cluster_objects as objects
from tests.unit.helpers.prometheus_table import CPU_Q, FRESH_Q, GPU_Q, POWER, TableQuerier, per_pod


def _pod_with(resources: dict[str, Any]) -> dict[str, Any]:
    pod = objects.pod("llm", 1)
    pod["spec"]["containers"][0]["resources"] = resources
    return pod


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}, True),
        ({"limits": {"nvidia.com/gpu": 2}}, True),  # extended resources may set limits only
        ({"requests": {"nvidia.com/gpu": "many"}}, True),  # unreadable: assume it asks
        ({"requests": {"nvidia.com/gpu": "0"}, "limits": {"nvidia.com/gpu": "0"}}, False),
        ({"requests": {"cpu": "4", "amd.com/gpu": "1"}}, False),
        ({}, False),
    ],
)
def test_a_pod_requests_gpus_by_its_containers_nvidia_gpu_count(
    resources: dict[str, Any], expected: bool
) -> None:
    assert requests_gpu(_pod_with(resources)) is expected


def test_a_second_container_asking_for_a_gpu_makes_a_gpu_pod() -> None:
    pod = objects.pod("llm", 1)
    pod["spec"]["containers"].append(
        {"name": "sidecar", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    )
    assert requests_gpu(pod)
    assert not requests_gpu(objects.pod("llm", 1))


def _samples(*pods: str, namespace: str = "llm") -> PodSamples:
    return PodSamples(
        query="q",
        by_pod={(namespace, p): (Sample({}, 100.0, 1000.0),) for p in pods},
    )


GPU_TARGET = TargetPods("llm/chat", "llm", ("a", "b", "c"), gpu_pods=("a", "b"))


def test_kepler_gpu_pods_without_gpu_series_are_named_with_series_and_fix() -> None:
    coverage = gpu_coverage(POWER, GPU_TARGET, _samples("a", "c"))
    assert coverage == GpuCoverage(
        ("a", "b"),
        ("b",),
        'kepler_pod_gpu_watts{pod_namespace="llm"}',
        KEPLER_GPU_FIX,
    )
    assert "experimental.gpu.enabled" in coverage.message("ScaledObject chat")
    assert "preset: DCGM" in coverage.message("ScaledObject chat")
    # The same pod names in another namespace are not these pods' series.
    other = gpu_coverage(POWER, GPU_TARGET, _samples("a", "b", namespace="other"))
    assert other is not None
    assert other.unmeasured == ("a", "b")
    assert gpu_coverage(POWER, GPU_TARGET, _samples("a", "b")) == GpuCoverage(("a", "b"), ())


def test_a_gpu_pod_kepler_does_not_report_yet_is_not_judged() -> None:
    # Pod b is new: Kepler has not reported it at all, so no GPU series says nothing yet.
    fresh = gpu_coverage(POWER, GPU_TARGET, _samples("a"), watched=_samples("a", "c"))
    assert fresh == GpuCoverage(("a",), ())
    # Once Kepler reports b's CPU power but not its GPU power, GPU support is off.
    off = gpu_coverage(POWER, GPU_TARGET, _samples("a"), watched=_samples("a", "b"))
    assert off is not None
    assert off.unmeasured == ("b",)


def test_kepler_without_gpu_queries_misses_every_gpu_pod() -> None:
    coverage = gpu_coverage(PowerQueryConfig(kepler_include_gpu=False), GPU_TARGET, None)
    assert coverage is not None
    assert coverage.unmeasured == ("a", "b")


def test_dcgm_gpu_pods_without_series_are_named() -> None:
    config = PowerQueryConfig(preset=MeasurementPreset.DCGM)
    assert gpu_coverage(config, GPU_TARGET, _samples("a")) == GpuCoverage(
        ("a", "b"),
        ("b",),
        'DCGM_FI_DEV_POWER_USAGE{exported_namespace="llm"}',
        DCGM_GPU_FIX,
    )
    assert gpu_coverage(config, GPU_TARGET, _samples("a", "b")) == GpuCoverage(("a", "b"), ())


def test_no_gpu_pods_kepler07_and_custom_queries_are_not_judged() -> None:
    cpu_only = TargetPods("llm/chat", "llm", ("a",))
    assert gpu_coverage(POWER, cpu_only, None) is None
    kepler07 = PowerQueryConfig(preset=MeasurementPreset.KEPLER_07)
    assert gpu_coverage(kepler07, GPU_TARGET, None) is None
    custom = PowerQueryConfig(custom_query='sum(x{pod=~"$pods"})')
    assert gpu_coverage(custom, GPU_TARGET, None) is None


async def test_the_source_measures_what_it_can_and_names_gpu_pods_it_cannot() -> None:
    target = TargetPods("llm/chat", "llm", ("a", "b"), gpu_pods=("a", "b"))
    querier = TableQuerier(
        {
            CPU_Q: per_pod({"a": 100.0, "b": 50.0}),
            GPU_Q: per_pod({"a": 300.0}),
            FRESH_Q: per_pod({"a": 995.0, "b": 995.0}),
        }
    )
    source = PrometheusPowerSource(querier, power=POWER, clock=lambda: 1000.0)
    result = (await source.measure_targets([target]))["llm/chat"]
    # Capping goes on: the reading is what is measured (b's GPUs count 0 W) ...
    assert result.watts == Reading(value=450.0, measured_at_s=995.0, query=CPU_Q)
    # ... and b is named.
    assert result.gpu_coverage is not None
    assert result.gpu_coverage.unmeasured == ("b",)

    # A pod created within the grace period may not have reached Prometheus yet.
    young = TargetPods("llm/chat", "llm", ("a", "b"), 1000.0 - 10, gpu_pods=("a", "b"))
    assert (await source.measure_targets([young]))["llm/chat"].gpu_coverage is None

    querier.answers[GPU_Q] = per_pod({"a": 300.0, "b": 250.0})
    result = (await source.measure_targets([target]))["llm/chat"]
    assert result.gpu_coverage == GpuCoverage(("a", "b"), ())


async def test_the_dcgm_source_judges_its_own_power_answer() -> None:
    config = PowerQueryConfig(preset=MeasurementPreset.DCGM)
    grouped = build_grouped_power_queries(config)
    assert grouped is not None

    def dcgm(values: dict[str, float]) -> Vector:
        return Vector(
            samples=tuple(
                Sample({"exported_namespace": "llm", "exported_pod": pod}, value, 995.0)
                for pod, value in values.items()
            )
        )

    querier = TableQuerier(
        {grouped.watts.promql: dcgm({"a": 300.0}), grouped.freshness.promql: dcgm({"a": 995.0})}
    )
    source = PrometheusPowerSource(querier, power=config, clock=lambda: 1000.0)
    target = TargetPods("llm/chat", "llm", ("a", "b"), gpu_pods=("a", "b"))
    result = (await source.measure_targets([target]))["llm/chat"]
    assert isinstance(result.watts, Reading)
    assert result.gpu_coverage is not None
    assert result.gpu_coverage.unmeasured == ("b",)

    # A pod created within the grace period may not have reached Prometheus yet.
    young = TargetPods("llm/chat", "llm", ("a", "b"), 1000.0 - 10, gpu_pods=("a", "b"))
    result = (await source.measure_targets([young]))["llm/chat"]
    assert result.gpu_coverage is None


def _target(name: str, gpu_pods: tuple[str, ...]) -> ResolvedTarget:
    return ResolvedTarget(
        kind=TargetKind.SCALED_OBJECT,
        name=name,
        namespace="llm",
        min_replicas=1,
        applied_max_replicas=8,
        user_max_replicas=8,
        current_replicas=2,
        pods=(f"{name}-0", f"{name}-1"),
        pod_nodes=("n", "n"),
        obj={},
        gpu_pods=gpu_pods,
    )


def _measured(target: ResolvedTarget, coverage: GpuCoverage | None) -> dict[str, TargetMeasurement]:
    reading = Reading(100.0, 1000.0, "q")
    return {target.key: TargetMeasurement(target.key, reading, None, gpu_coverage=coverage)}


def test_the_condition_is_false_naming_series_and_fix_true_when_seen_absent_without_gpus() -> None:
    chat = _target("chat", ("chat-0", "chat-1"))
    gap = GpuCoverage(
        ("chat-0", "chat-1"), ("chat-1",), "kepler_pod_gpu_watts{...}", KEPLER_GPU_FIX
    )
    condition = gpu_power_condition([chat], _measured(chat, gap))
    assert condition is not None
    assert (condition.type, condition.status, condition.reason) == (
        ConditionType.GPU_POWER_MEASURED,
        ConditionStatus.FALSE,
        GPU_POWER_NOT_MEASURED,
    )
    message = condition.message
    assert message.startswith("ScaledObject chat: pod(s) chat-1 request nvidia.com/gpu but ")
    assert "kepler_pod_gpu_watts{...}" in message
    assert KEPLER_GPU_FIX in message

    seen = gpu_power_condition([chat], _measured(chat, GpuCoverage(("chat-0", "chat-1"), ())))
    assert seen is not None
    assert (seen.status, seen.reason) == (ConditionStatus.TRUE, "GpuPowerMeasured")

    cpu_only = _target("batch", ())
    assert gpu_power_condition([cpu_only], _measured(cpu_only, None)) is None


def test_the_condition_stays_as_it_is_while_gpu_pods_cannot_be_judged() -> None:
    chat = _target("chat", ("chat-0", "chat-1"))
    # Not measured this round (the measuring budget ran out).
    assert gpu_power_condition([chat], {}) is None
    # chat-1 not scraped yet: chat-0 alone proves nothing about the whole target.
    assert gpu_power_condition([chat], _measured(chat, GpuCoverage(("chat-0",), ()))) is None
    # A preset without GPU series of its own (Kepler07, a custom query).
    assert gpu_power_condition([chat], _measured(chat, None)) is None
