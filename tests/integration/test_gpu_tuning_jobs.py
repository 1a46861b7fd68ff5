"""GPU tuning Jobs on the real control plane: created when power crosses the trigger, once per
node, pinned to the node; a result written by the real `climatik gpu-tune` entrypoint (on
simulated GPUs, since the cluster's nodes are kwok's) updates the power-cap controller's watts
per replica at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.domain.gpu import TUNE_NODE_LABEL, result_configmap_name
from climatik.runtime.capping import gpu_tuning_controller, power_cap_controller
from climatik.runtime.manager import Manager
from tests.integration.conftest import Kubectl
from tests.integration.polling import eventually
from tests.integration.workloads import (
    capping_config,
    deployment,
    kubectl_json,
    running_manager,
    running_pods,
    scaled_object,
    serve_watts,
    so_ref,
)

if TYPE_CHECKING:
    from tests.integration.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
async def controllers(
    dev_cluster: ClusterInfo, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Manager]:
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__INTERVAL_S", "1")
    monkeypatch.setenv("CLIMATIK_CAPPING__TUNING_GRACE_S", "3")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__JOB_NAMESPACE", namespace)
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__IMAGE", "climatik:test")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__RUNTIME_CLASS", "")
    factories = [power_cap_controller, gpu_tuning_controller]
    async with running_manager(dev_cluster, namespace, factories) as manager:
        yield manager


async def jobs(kubectl: Kubectl) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await kubectl_json(kubectl, "jobs", "-l", TUNE_NODE_LABEL))[
        "items"
    ]
    return items


def watts_per_replica(obj: dict[str, Any]) -> float | None:
    targets = (obj.get("status") or {}).get("targets") or []
    value = targets[0].get("wattsPerReplica") if targets else None
    return float(value) if value is not None else None


async def test_power_crossing_the_trigger_starts_one_job_per_node_and_results_feed_back(
    controllers: Manager,
    dev_cluster: ClusterInfo,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    kubectl.apply(deployment("llm", 2, {"app": "llm"}))
    kubectl.apply(scaled_object("llm", "llm", min_replicas=1, max_replicas=10))
    pods = await running_pods(kubectl, "llm", 2)
    nodes = sorted({p["spec"]["nodeName"] for p in pods})
    await serve_watts(metrics_exporter, namespace, pods, 200)  # 400 W of 1000: below 80 %
    config = capping_config("cap", prometheus.url, [so_ref("llm")], policy="Headroom", cap_w=1000)
    config["spec"]["gpuTuning"] = {"mode": "Apply", "minIntervalSeconds": 3600}
    kubectl.apply(config)
    await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: watts_per_replica(obj) is not None,
    )
    await asyncio.sleep(3)
    assert await jobs(kubectl) == [], "no tuning below the trigger"

    await serve_watts(metrics_exporter, namespace, pods, 420)  # 840 W: at 84 % of the cap
    created = await eventually(
        lambda: jobs(kubectl), lambda items: len(items) == len(nodes), timeout_s=30
    )
    await asyncio.sleep(4)  # several intervals later: still one Job per node
    assert len(await jobs(kubectl)) == len(nodes)
    by_node = {j["spec"]["template"]["spec"]["nodeName"]: j for j in created}
    assert sorted(by_node) == nodes
    container = created[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["gpu-tune", "--mode", "apply"]
    assert container["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN"]

    before = watts_per_replica(await kubectl_json(kubectl, "pcc", "cap"))
    assert before is not None
    # The Job locks the chosen clock, then writes its result: the power drops first. Without
    # the result the estimate would only decay towards the new power over minutes.
    expected_scale = 0.6
    await serve_watts(metrics_exporter, namespace, pods, 420 * expected_scale)
    # What the Job on the first node would do: the real entrypoint, on simulated GPUs.
    node = nodes[0]
    completed = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "climatik",
            "gpu-tune",
            "--simulate",
            "8",
            "--mode",
            "apply",
            "--settle-s",
            "0",
            "--measure-s",
            "0.01",
            "--result-configmap",
            f"{namespace}/{result_configmap_name(node)}",
            "--kubeconfig",
            str(dev_cluster.kubeconfig),
        ],
        env={**os.environ, "NODE_NAME": node},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    scale = document["choice"]["after"]["watts"] / document["choice"]["before"]["watts"]
    assert scale == pytest.approx(expected_scale, abs=0.1)
    after = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (watts_per_replica(obj) or before) <= before * (scale + 0.1),
        timeout_s=15,
    )
    assert watts_per_replica(after) == pytest.approx(before * scale, rel=0.1)
