"""GPUs per replica on the dev cluster (issue 23): the VPA-hold controller writes
`status.replicaSizes` through the real API server (the CRD's schema validates it), recommends
the size that fits when a replica is Pending on fragmented GPUs, with an Event, and `climatik
explain` shows the recommendation.

Every node of the cluster (8 GPUs each) gets a 4-GPU filler pod bound to it, so a replica of
8 GPUs cannot be scheduled anywhere; the target's measured load is written in
`status.targets` as the power-cap reconciler would (no Prometheus here).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from climatik.api.explain import explain
from climatik.devcluster.cluster import ClusterInfo
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


def _measured(kubectl: Kubectl) -> None:
    """What the power-cap reconciler writes for the target from its measurements."""
    target = {
        "name": "chat",
        "kind": "ScaledObject",
        "currentReplicas": 1,
        "wattsPerReplica": WATTS_PER_REPLICA,
        "tokensPerWatt": TOKENS_PER_S / WATTS_PER_REPLICA,
    }
    kubectl.run(
        "patch", "powercappingconfig", "cap", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"targets": [target]}}),
    )  # fmt: skip


def _size(obj: dict[str, Any]) -> dict[str, Any]:
    sizes = (obj.get("status") or {}).get("replicaSizes") or [{}]
    return dict(sizes[0])


async def test_a_replica_pending_on_fragmented_gpus_is_recommended_the_size_that_fits(
    vpa_dev_cluster: ClusterInfo, vpa_kubectl: Kubectl
) -> None:
    nodes = [n for rack in vpa_dev_cluster.nodes_by_rack.values() for n in rack]
    for index, node in enumerate(nodes):
        vpa_kubectl.apply(_bound_pod(f"filler-{index}", node))
    chat = deployment("chat", 1, {"app": "chat"})
    chat["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": "8"}
    }
    vpa_kubectl.apply(chat)
    vpa_kubectl.apply(_scaled_object())
    vpa_kubectl.apply(_config())
    _measured(vpa_kubectl)

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
        print(explain(config))

        # The fillers go, the replica is scheduled: the recommendation is about efficiency now.
        vpa_kubectl.run("delete", "pods", "-l", "app=filler", "--wait=false")
        config = await eventually(
            lambda: kubectl_json(vpa_kubectl, "powercappingconfig", "cap"),
            lambda c: _size(c).get("reason") not in (None, "Fragmented"),
            timeout_s=90,
        )
        size = _size(config)
        assert size["currentTokensPerJoule"] > 0
        assert 0 <= size["currentSloAttainment"] <= 1
        text = explain(config)
        assert "GPUs per replica of chat: 8" in text
        print(text)
