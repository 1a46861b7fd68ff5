"""GPUs per replica on the dev cluster (issue 23): the VPA-hold controller writes
`status.replicaSizes` through the real API server (the CRD's schema validates it), recommends
the size that fits when a replica is Pending on fragmented GPUs, with an Event, `climatik
explain` shows the recommendation, and a Deployment that opted in is rolled to it once, not
while the config is over its cap.

Every node of the cluster (8 GPUs each) gets a 4-GPU filler pod bound to it, so a replica of
8 GPUs cannot be scheduled anywhere; the target's measured load and the config's measured
power are written in the status as the power-cap reconciler would (no Prometheus here).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from climatik.api.explain import explain
from climatik.devcluster.cluster import ClusterInfo
from climatik.reconcilers.replica_size_apply import APPLY_ANNOTATION, RESIZED_ANNOTATION
from climatik.runtime.vpa import vpa_hold_controller
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import API, deployment, kubectl_json, running_manager

pytestmark = [pytest.mark.integration, pytest.mark.vpa, pytest.mark.slow, pytest.mark.timeout(300)]

WATTS_PER_REPLICA = 1200.0
TOKENS_PER_S = 600.0


def _bound_pod(name: str, node: str) -> dict[str, Any]:
    template = deployment("unused", 1, {"app": "filler"})["spec"]["template"]
    template["spec"]["nodeName"] = node
    template["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "4"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "filler"}},
        "spec": template["spec"],
    }


def _config() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "PowerCappingConfig",
        "metadata": {"name": "cap"},
        "spec": {"powerCapLimit": 100_000, "deploymentName": "chat"},
    }


def _scaled_object() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "chat"},
        "spec": {
            "scaleTargetRef": {"name": "chat"},
            "minReplicaCount": 1,
            "maxReplicaCount": 4,
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}],
        },
    }


def _measured(kubectl: Kubectl, power_w: float) -> None:
    """What the power-cap reconciler writes from its measurements (the cap is 100 kW)."""
    target = {
        "name": "chat",
        "kind": "ScaledObject",
        "currentReplicas": 1,
        "wattsPerReplica": WATTS_PER_REPLICA,
        "tokensPerWatt": TOKENS_PER_S / WATTS_PER_REPLICA,
    }
    kubectl.run(
        "patch", "powercappingconfig", "cap", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {
            "targets": [target], "measuredPowerWatts": power_w, "effectiveCapWatts": 100_000,
        }}),
    )  # fmt: skip


def _size(obj: dict[str, Any]) -> dict[str, Any]:
    sizes = (obj.get("status") or {}).get("replicaSizes") or [{}]
    return dict(sizes[0])


def _template(deployment: dict[str, Any]) -> tuple[str, list[str]]:
    """The GPUs and arguments of the Deployment's one container."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["resources"]["limits"]["nvidia.com/gpu"], container.get("args", [])


async def test_a_replica_pending_on_fragmented_gpus_is_resized_to_fit_once_under_the_cap(
    vpa_dev_cluster: ClusterInfo, vpa_kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIMATIK_VPA__INTERVAL_S", "1")
    nodes = [n for rack in vpa_dev_cluster.nodes_by_rack.values() for n in rack]
    for index, node in enumerate(nodes):
        vpa_kubectl.apply(_bound_pod(f"filler-{index}", node))
    chat = deployment("chat", 1, {"app": "chat"})
    chat["metadata"]["annotations"] = {APPLY_ANNOTATION: "Apply"}
    (container,) = chat["spec"]["template"]["spec"]["containers"]
    container["resources"] = {"limits": {"nvidia.com/gpu": "8"}}
    container["args"] = ["--model", "llama-70b", "--tensor-parallel-size", "8"]
    vpa_kubectl.apply(chat)
    vpa_kubectl.apply(_scaled_object())
    vpa_kubectl.apply(_config())
    _measured(vpa_kubectl, power_w=150_000)  # over the 100 kW cap

    async with running_manager(vpa_dev_cluster, vpa_kubectl.namespace, [vpa_hold_controller]):
        config = await eventually(
            lambda: kubectl_json(vpa_kubectl, "powercappingconfig", "cap"),
            lambda c: _size(c).get("reason") == "Fragmented",
            timeout_s=60,
        )
        size = _size(config)
        assert size["currentGpus"] == 8
        assert size["recommendedGpus"] == 4
        events = await kubectl_json(
            vpa_kubectl, "events", "--field-selector", "reason=GpusFragmented"
        )
        (event,) = events["items"]
        assert "4 GPUs per replica" in event["message"]
        text = explain(config)
        assert "GPUs per replica of chat: 8" in text
        assert "recommended 4" in text
        print(text)

        # Over the cap: a steady recommendation for many rounds, and no roll.
        await asyncio.sleep(10)
        assert _template(await kubectl_json(vpa_kubectl, "deployment", "chat"))[0] == "8"

        _measured(vpa_kubectl, power_w=1200)
        rolled = await eventually(
            lambda: kubectl_json(vpa_kubectl, "deployment", "chat"),
            lambda d: _template(d)[0] == "4",
            timeout_s=30,
        )
        assert _template(rolled)[1] == ["--model", "llama-70b", "--tensor-parallel-size", "4"]
        assert rolled["metadata"]["annotations"][RESIZED_ANNOTATION] == "8-4"
        generation = rolled["metadata"]["generation"]

        async def running_chat() -> list[dict[str, Any]]:
            pods = (await kubectl_json(vpa_kubectl, "pods", "-l", "app=chat"))["items"]
            return [p for p in pods if p["status"].get("phase") == "Running"]

        (pod,) = await eventually(running_chat, lambda pods: len(pods) == 1, timeout_s=60)
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "4"

        # Once: whatever is recommended at 4 GPUs now, the Deployment is not rolled again.
        await asyncio.sleep(10)
        again = await kubectl_json(vpa_kubectl, "deployment", "chat")
        assert again["metadata"]["generation"] == generation
        print(explain(await kubectl_json(vpa_kubectl, "powercappingconfig", "cap")))
