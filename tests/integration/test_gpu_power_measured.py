"""GPU pods whose power the preset does not see (issue 20, item 1), on the dev cluster.

Two GPU services in one namespace, both measured with the KeplerPod preset through a real
Prometheus scraping the metrics exporter: one whose pods have `kepler_pod_gpu_watts` series
(Kepler's GPU support on) and one whose pods have none (Kepler's chart default). The second's
config gets a Warning Event and `GpuPowerMeasured=False` naming the series and the fix, and is
still capped on the watts that are measured; the first gets `GpuPowerMeasured=True` and no
Warning. No KEDA operator runs; the ScaledObjects come from KEDA's own CRD.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.runtime.capping import power_cap_controller
from climatik.runtime.manager import Manager
from climatik.sources.power import NEW_POD_GRACE_S
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import (
    capping_config,
    condition,
    deployment,
    kubectl_json,
    running_manager,
    running_pods,
    scaled_object,
    so_ref,
)

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
async def controller(
    dev_cluster: ClusterInfo, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Manager]:
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    async with running_manager(dev_cluster, namespace, [power_cap_controller]) as manager:
        yield manager


def gpu_deployment(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pods request one GPU each, as vLLM's do."""
    manifest = deployment(name, replicas, {"app": name})
    gpu = {"nvidia.com/gpu": "1"}
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": gpu,
        "limits": gpu,
    }
    return manifest


async def serve(
    exporter: ExporterHandle,
    namespace: str,
    pods: list[dict[str, Any]],
    *,
    cpu_watts: float,
    gpu_watts: float | None,
) -> None:
    await exporter.add_pods(
        [
            {
                "namespace": namespace,
                "name": p["metadata"]["name"],
                "node": p["spec"].get("nodeName", ""),
                "cpu_watts": cpu_watts,
                "gpu_watts": gpu_watts,
                "tokens_per_s": 10.0,
            }
            for p in pods
        ]
    )


async def warnings_about(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    result = await asyncio.to_thread(
        kubectl.run,
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    )
    return [e for e in json.loads(result.stdout)["items"] if e["reason"] == "GpuPowerNotMeasured"]


async def test_gpu_pods_without_gpu_series_are_named_and_still_capped(
    controller: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    for name in ("seen", "unseen"):
        kubectl.apply(gpu_deployment(name, 2))
        kubectl.apply(scaled_object(name, name, min_replicas=1, max_replicas=8))
    seen_pods = await running_pods(kubectl, "seen", 2)
    unseen_pods = await running_pods(kubectl, "unseen", 2)
    await serve(metrics_exporter, namespace, seen_pods, cpu_watts=50, gpu_watts=300)
    await serve(metrics_exporter, namespace, unseen_pods, cpu_watts=50, gpu_watts=None)
    for name in ("seen", "unseen"):
        kubectl.apply(
            capping_config(
                f"{name}-cap", prometheus.url, [so_ref(name)], policy="Headroom", cap_w=5000
            )
        )

    # Pods are judged once past the grace for their first samples to reach Prometheus.
    unseen = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "unseen-cap"),
        lambda obj: condition(obj, "GpuPowerMeasured").get("status") == "False",
        timeout_s=NEW_POD_GRACE_S + 30,
    )
    gpu = condition(unseen, "GpuPowerMeasured")
    assert gpu["reason"] == "GpuPowerNotMeasured"
    for pod in unseen_pods:
        assert pod["metadata"]["name"] in gpu["message"]
    assert f'kepler_pod_gpu_watts{{pod_namespace="{namespace}"}} has no series' in gpu["message"]
    assert "experimental.gpu.enabled=true" in gpu["message"]
    assert "preset: DCGM" in gpu["message"]
    # Capping goes on with what is measured: the CPU watts alone.
    assert condition(unseen, "MetricsAvailable")["status"] == "True"
    assert unseen["status"]["measuredPowerWatts"] == pytest.approx(100, rel=0.01)
    assert condition(unseen, "Ready")["status"] == "True"
    for involved in ("unseen-cap", "unseen"):  # the config and its ScaledObject
        events = await eventually(partial(warnings_about, kubectl, involved), bool)
        assert events[0]["type"] == "Warning"
        assert "experimental.gpu.enabled=true" in events[0]["message"]

    seen = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "seen-cap"),
        lambda obj: condition(obj, "GpuPowerMeasured").get("status") == "True",
    )
    assert condition(seen, "GpuPowerMeasured")["reason"] == "GpuPowerMeasured"
    assert seen["status"]["measuredPowerWatts"] == pytest.approx(700, rel=0.01)
    for involved in ("seen-cap", "seen"):
        found = await warnings_about(kubectl, involved)
        assert not found, [e["message"] for e in found]

    # Kepler's GPU support switched on: the condition turns True.
    await serve(metrics_exporter, namespace, unseen_pods, cpu_watts=50, gpu_watts=300)
    unseen = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "unseen-cap"),
        lambda obj: condition(obj, "GpuPowerMeasured").get("status") == "True",
    )
    assert unseen["status"]["measuredPowerWatts"] == pytest.approx(700, rel=0.01)
