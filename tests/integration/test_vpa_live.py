"""VPA's own recommender, updater and admission controller resize kwok pods on the dev cluster
(`--with vpa`).

This is the loop Climatik will coordinate with (issue 23): kwok reports each pod's usage from its
annotations as a kubelet's resource metrics, metrics-server serves them through the aggregation
layer, the recommender writes a recommendation into the VerticalPodAutoscaler's status, the
updater evicts a pod whose requests are out of the recommended bounds, and the admission
controller gives its replacement the recommended requests. `up`/`down` with VPA leaves nothing
behind, as without it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from climatik.devcluster.cluster import ClusterInfo, DevClusterError, down, read_state, up
from climatik.devcluster.topology import Rack, Topology
from climatik.devcluster.vpa import (
    APISERVICE_NAME,
    USAGE_CPU_ANNOTATION,
    USAGE_MEMORY_ANNOTATION,
    WEBHOOK_CONFIGURATION,
)
from tests.integration.conftest import Kubectl
from tests.integration.helpers.host_processes import listening_ports, processes_mentioning
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import deployment, kubectl_json, running_pods

pytestmark = [
    pytest.mark.integration,
    pytest.mark.vpa,
    pytest.mark.slow,
    pytest.mark.timeout(420),
]

USAGE_CPU = "500m"
USAGE_MEMORY = "300Mi"
# Far below the usage and below VPA's floors (25 millicores, 250 MiB): out of any bounds the
# recommender can give, however young its histograms are.
REQUESTS = {"cpu": "10m", "memory": "10Mi"}


_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_SUFFIXES: dict[str, float] = {**_BINARY, **_DECIMAL}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity as a number ("500m" -> 0.5, "300Mi" -> 314572800); no exponents."""
    for suffix, factor in _SUFFIXES.items():  # two-letter suffixes first: "Mi" before "M"
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _sized_deployment(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment of kwok pods that use USAGE_* while requesting REQUESTS."""
    manifest = deployment(name, replicas, {"app": name})
    template = manifest["spec"]["template"]
    template["metadata"]["annotations"] = {
        USAGE_CPU_ANNOTATION: USAGE_CPU,
        USAGE_MEMORY_ANNOTATION: USAGE_MEMORY,
    }
    template["spec"]["containers"][0]["resources"] = {"requests": dict(REQUESTS)}
    return manifest


def _vpa(name: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling.k8s.io/v1",
        "kind": "VerticalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "updatePolicy": {"updateMode": mode},
        },
    }


def _pod_metrics(cluster: ClusterInfo, namespace: str) -> dict[str, dict[str, float]]:
    """Container usage per pod as the resource metrics API serves it (`kubectl top pods`)."""
    resp = cluster.admin_client().get(f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods")
    if resp.status != 200:
        return {}
    return {
        item["metadata"]["name"]: {
            resource: parse_quantity(value)
            for resource, value in item["containers"][0]["usage"].items()
        }
        for item in resp.body.get("items", [])
        if item.get("containers")
    }


def _recommendation(vpa: dict[str, Any]) -> dict[str, Any] | None:
    """The one container's recommendation in the VPA's status, or None before there is one."""
    containers = vpa.get("status", {}).get("recommendation", {}).get("containerRecommendations")
    return containers[0] if containers else None


async def test_the_recommender_sizes_pods_from_kwok_usage_and_the_updater_replaces_them(
    vpa_dev_cluster: ClusterInfo, vpa_kubectl: Kubectl
) -> None:
    namespace = vpa_kubectl.namespace
    # Two replicas: the updater evicts nothing from a controller with fewer (its --min-replicas).
    vpa_kubectl.apply(_sized_deployment("web", 2))
    originals = {p["metadata"]["name"] for p in await running_pods(vpa_kubectl, "web", 2)}

    # kwok's usage annotations come back through metrics-server and the aggregation layer; CPU is
    # a rate of kwok's cumulative counter over two scrapes, so it lands near, not at, 500m.
    usage = await eventually(
        lambda: asyncio.to_thread(_pod_metrics, vpa_dev_cluster, namespace),
        lambda metrics: (
            set(metrics) == originals
            and all(u["cpu"] == pytest.approx(0.5, rel=0.1) for u in metrics.values())
        ),
        timeout_s=90,
        interval_s=2,
    )
    for pod_usage in usage.values():
        assert pod_usage["memory"] == parse_quantity(USAGE_MEMORY)

    vpa_kubectl.apply(_vpa("web", "Recreate"))
    created = time.monotonic()
    vpa = await eventually(
        lambda: kubectl_json(vpa_kubectl, "verticalpodautoscaler", "web"),
        lambda v: _recommendation(v) is not None,
        timeout_s=120,
        interval_s=2,
    )
    recommended_s = time.monotonic() - created
    recommendation = _recommendation(vpa)
    assert recommendation is not None
    target = {k: parse_quantity(v) for k, v in recommendation["target"].items()}
    lower = {k: parse_quantity(v) for k, v in recommendation["lowerBound"].items()}
    # Sized from the usage, with the recommender's safety margin, and above what is requested.
    assert target["cpu"] >= 0.5
    assert target["memory"] >= parse_quantity(USAGE_MEMORY)
    assert lower["cpu"] > parse_quantity(REQUESTS["cpu"])
    assert lower["memory"] > parse_quantity(REQUESTS["memory"])

    # The updater evicts an original pod; its replacement gets the recommended requests from the
    # admission controller's webhook, which says so in an annotation.
    async def replacements() -> list[dict[str, Any]]:
        pods = (await kubectl_json(vpa_kubectl, "pods", "-l", "app=web"))["items"]
        return [p for p in pods if p["metadata"]["name"] not in originals]

    resized = await eventually(replacements, lambda pods: len(pods) >= 1, timeout_s=120)
    replaced_s = time.monotonic() - created
    print(
        f"VPA created -> recommendation in {recommended_s:.1f} s, "
        f"first pod replaced with its requests in {replaced_s:.1f} s"
    )
    pod = resized[0]
    requests = pod["spec"]["containers"][0]["resources"]["requests"]
    for resource in ("cpu", "memory"):
        # Within the first recommendation's bounds (it may have moved since), not the template's.
        assert parse_quantity(requests[resource]) >= lower[resource]
        assert parse_quantity(requests[resource]) > parse_quantity(REQUESTS[resource])
    assert "vpaUpdates" in pod["metadata"]["annotations"]
    events = await kubectl_json(vpa_kubectl, "events", "--field-selector", "reason=EvictedByVPA")
    assert {e["involvedObject"]["name"] for e in events["items"]} <= originals
    assert events["items"], "the updater should record the eviction as an Event"


@pytest.mark.timeout(300)
def test_up_with_vpa_then_down_leaves_no_process_or_port(cluster_dir: Path) -> None:
    small = Topology(racks=(Rack(name="r1", nodes=1, gpus_per_node=8),))
    info = up(cluster_dir, small, addons=("vpa",))
    state = read_state(cluster_dir)
    assert state is not None
    assert info.addons == ("vpa",)
    api = info.admin_client()
    apiservice = api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE_NAME}")
    assert apiservice.body["spec"]["service"]["port"] == info.ports["metrics-server"]
    webhook = api.get(
        f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}"
    )
    url = webhook.body["webhooks"][0]["clientConfig"]["url"]
    assert url == f"https://127.0.0.1:{info.ports['vpa-admission-controller']}"
    node = api.get("/api/v1/nodes/r1-node-0").body
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == info.ports["kwok-server"]
    ports = set(info.ports.values())
    assert ports & listening_ports(), "the cluster should be listening while up"
    with pytest.raises(DevClusterError, match="other add-ons"):
        up(cluster_dir, small)

    stopped = down(cluster_dir)
    assert sorted(stopped) == sorted(
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "service-proxy",
            "metrics-server",
            "vpa-recommender",
            "vpa-updater",
            "vpa-admission-controller",
        ]
    )
    assert not processes_mentioning(str(cluster_dir)), "a component outlived down"
    assert not ports & listening_ports(), "a port is still listening after down"
    assert read_state(cluster_dir) is None
