"""Workloads and polling helpers shared by the capping integration tests.

Objects are plain manifests (Deployments on kwok nodes, KEDA ScaledObjects, PowerCappingConfigs);
the helpers read the cluster through the cluster's own kubectl, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from climatik.devcluster.cluster import ClusterInfo
from climatik.kube.client import KubeClient
from climatik.runtime.manager import Manager
from climatik.runtime.reconcile import ControllerFactory
from climatik.runtime.settings import RuntimeSettings
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import ExporterHandle

API = "powercapping.climatik-project.ai/v1"


def deployment(name: str, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest"}],
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                },
            },
        },
    }


def scaled_object(
    name: str, deployment_name: str, *, min_replicas: int = 1, max_replicas: int = 10
) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": deployment_name},
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": "http://prometheus:9090",
                        "query": "sum(vllm:num_requests_waiting)",
                        "threshold": "5",
                    },
                }
            ],
        },
    }


def capping_config(
    name: str,
    prometheus_url: str,
    refs: list[dict[str, Any]],
    *,
    policy: str,
    cap_w: int,
    step_down_interval_s: int = 0,
) -> dict[str, Any]:
    """A config measuring Kepler's pod power through `prometheus_url`. Step-downs do not wait
    by default (`stepDownIntervalSeconds: 0`, not the CRD's 30 s): the tests decide every
    second, and a 30 s wait would stretch every scenario that steps down twice."""
    return {
        "apiVersion": API,
        "kind": "PowerCappingConfig",
        "metadata": {"name": name},
        "spec": {
            "powerCapLimit": cap_w,
            "scaleObjectRef": refs,
            "policy": {"type": policy, "stepDownIntervalSeconds": step_down_interval_s},
            "powerMeasurement": {"preset": "KeplerPod", "prometheusAddress": prometheus_url},
            "failSafe": {"maxMetricAgeSeconds": 30, "holdSeconds": 600},
        },
    }


def so_ref(name: str) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name}}


async def kubectl_json(kubectl: Kubectl, *args: str) -> Any:
    result = await asyncio.to_thread(kubectl.run, "get", *args, "-o", "json")
    return json.loads(result.stdout)


async def running_pods(kubectl: Kubectl, app: str, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        items = (await kubectl_json(kubectl, "pods", "-l", f"app={app}"))["items"]
        return [p for p in items if p["status"].get("phase") == "Running"]

    return await eventually(probe, lambda pods: len(pods) == count, timeout_s=90)


async def serve_watts(
    exporter: ExporterHandle, namespace: str, pods: list[dict[str, Any]], watts: float
) -> None:
    await exporter.add_pods(
        [
            {
                "namespace": namespace,
                "name": p["metadata"]["name"],
                "node": p["spec"].get("nodeName", ""),
                "cpu_watts": watts,
                "gpu_watts": None,
                "tokens_per_s": watts / 10,
            }
            for p in pods
        ]
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or ():
        if item["type"] == type_:
            return dict(item)
    return {}


async def ceiling_becomes(
    kubectl: Kubectl, name: str, expected: int, timeout_s: float = 45
) -> dict[str, Any]:
    so: dict[str, Any] = await eventually(
        lambda: kubectl_json(kubectl, "scaledobject", name),
        lambda obj: obj["spec"].get("maxReplicaCount") == expected,
        timeout_s=timeout_s,
    )
    return so


@asynccontextmanager
async def running_manager(
    cluster: ClusterInfo, namespace: str | None, factories: Sequence[ControllerFactory]
) -> AsyncIterator[Manager]:
    """Controllers in a real manager scoped to one namespace (None: every namespace, as in
    production), stopped in order at the end."""
    settings = RuntimeSettings(
        kube={"kubeconfig": str(cluster.kubeconfig), "namespace": namespace},
        leader_election={"enabled": False},
        http={"host": "127.0.0.1", "port": 0},
    )
    client = await KubeClient.from_config(str(cluster.kubeconfig))
    manager = Manager(settings, client, install_signal_handlers=False)
    for factory in factories:
        manager.add_controller(factory)
    task = asyncio.create_task(manager.run(), name="manager")
    try:
        yield manager
    finally:
        manager.request_stop()
        await asyncio.wait_for(task, 30)
        await client.close()
