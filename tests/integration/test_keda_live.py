"""KEDA's own operator and metrics adapter drive a Deployment on the dev cluster (`--with keda`).

This is the loop Climatik acts through: a Prometheus query becomes KEDA's external metric, the
aggregation layer serves it to the HPA that KEDA owns, the HPA scales a Deployment of kwok pods,
and a lowered ScaledObject `maxReplicaCount` (the one thing Climatik writes) reaches the HPA and
the Deployment. `up`/`down` with KEDA leaves nothing behind, as without it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo, DevClusterError, down, read_state, up
from climatik.devcluster.keda import APISERVICE_NAME
from climatik.devcluster.topology import Rack, Topology
from tests.integration.conftest import Kubectl
from tests.integration.helpers.host_processes import listening_ports, processes_mentioning
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import deployment, kubectl_json, running_pods

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.keda,
    pytest.mark.slow,
    pytest.mark.timeout(420),
]

THRESHOLD = 10  # waiting requests per replica
# The HPA reacts to a change of its spec at once (HPAGeneration), not at its next 15 s sync; a
# ceiling that took a sync period would let a capped service overshoot its power for that long.
CEILING_REACHES_WITHIN_S = 10.0


def _scaled_object(name: str, prometheus_url: str, query: str, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": 1,
            "maxReplicaCount": max_replicas,
            "pollingInterval": 5,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": query,
                        "threshold": str(THRESHOLD),
                    },
                }
            ],
        },
    }


def _external_metric(cluster: ClusterInfo, namespace: str, hpa: dict[str, Any]) -> float | None:
    """The HPA's external metric as the API server serves it through KEDA's adapter (None while
    the adapter has no value)."""
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    selector = ",".join(f"{k}={v}" for k, v in metric["selector"]["matchLabels"].items())
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric['name']}"
        f"?labelSelector={urllib.parse.quote(selector)}"
    )
    resp = cluster.admin_client().get(path)
    if resp.status != 200 or not resp.body.get("items"):
        return None
    value: str = resp.body["items"][0]["value"]  # a Quantity: "65" or "6500m"
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


async def _metric_becomes(
    cluster: ClusterInfo, namespace: str, hpa: dict[str, Any], expected: float
) -> None:
    await eventually(
        lambda: asyncio.to_thread(_external_metric, cluster, namespace, hpa),
        lambda value: value == expected,
        timeout_s=30,
    )


def _replicas_are(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda deployment: bool(deployment["spec"]["replicas"] == count)


async def test_prometheus_trigger_scales_the_deployment_and_a_lower_ceiling_reaches_it(
    keda_dev_cluster: ClusterInfo,
    keda_kubectl: Kubectl,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    namespace = keda_kubectl.namespace
    query = f'sum(vllm:num_requests_waiting{{namespace="{namespace}"}})'
    await metrics_exporter.add_pods(
        [{"namespace": namespace, "name": "load", "node": "", "waiting_requests": 5}]
    )
    try:
        keda_kubectl.apply(deployment("llm", 1, {"app": "llm"}))
        await running_pods(keda_kubectl, "llm", 1)
        keda_kubectl.apply(_scaled_object("llm", prometheus.url, query, max_replicas=10))

        # KEDA's operator made the HPA; its metric comes through the aggregation layer.
        hpa = await eventually(
            lambda: kubectl_json(keda_kubectl, "hpa"),
            lambda hpas: len(hpas["items"]) == 1,
            timeout_s=60,
        )
        hpa = hpa["items"][0]
        assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ScaledObject"
        assert hpa["spec"]["maxReplicas"] == 10
        await _metric_becomes(keda_dev_cluster, namespace, hpa, 5)

        for waiting, replicas in ((35, 4), (65, 7)):
            await metrics_exporter.set(namespace, "load", waiting_requests=waiting)
            await eventually(
                lambda: kubectl_json(keda_kubectl, "deployment", "llm"),
                _replicas_are(replicas),
                timeout_s=90,
            )
            await running_pods(keda_kubectl, "llm", replicas)

        patched = time.monotonic()
        keda_kubectl.run(
            "patch", "scaledobject", "llm", "--type=merge", "-p", '{"spec":{"maxReplicaCount":3}}'
        )
        await eventually(
            lambda: kubectl_json(keda_kubectl, "hpa", hpa["metadata"]["name"]),
            lambda h: h["spec"]["maxReplicas"] == 3,
            timeout_s=CEILING_REACHES_WITHIN_S,
            interval_s=0.1,
        )
        hpa_s = time.monotonic() - patched
        await eventually(
            lambda: kubectl_json(keda_kubectl, "deployment", "llm"),
            _replicas_are(3),
            timeout_s=CEILING_REACHES_WITHIN_S - hpa_s,
            interval_s=0.1,
        )
        deployment_s = time.monotonic() - patched
        print(
            f"maxReplicaCount 10 -> 3 reached the HPA in {hpa_s:.1f} s, "
            f"the Deployment in {deployment_s:.1f} s"
        )
        await running_pods(keda_kubectl, "llm", 3)
        # Demand still asks for 7: the ceiling, not the metric, holds the Deployment at 3.
        await _metric_becomes(keda_dev_cluster, namespace, hpa, 65)
    finally:
        await metrics_exporter.delete_pod(namespace, "load")


@pytest.mark.timeout(300)
def test_up_with_keda_then_down_leaves_no_process_or_port(cluster_dir: Path) -> None:
    small = Topology(racks=(Rack(name="r1", nodes=1, gpus_per_node=8),))
    info = up(cluster_dir, small, addons=("keda",))
    state = read_state(cluster_dir)
    assert state is not None
    assert info.addons == ("keda",)
    assert len(state["processes"]) == 8
    api = info.admin_client()
    apiservice = api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE_NAME}")
    assert apiservice.body["spec"]["service"]["port"] == info.ports["keda-adapter"]
    assert api.get("/apis/external.metrics.k8s.io/v1beta1").status == 200
    ports = set(info.ports.values())
    assert ports & listening_ports(), "the cluster should be listening while up"
    # The same cluster is reused when asked for again; one without KEDA is not pretended.
    assert up(cluster_dir, small, addons=("keda",)).api_url == info.api_url
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
            "keda-operator",
            "keda-adapter",
        ]
    )
    assert not processes_mentioning(str(cluster_dir)), "a component outlived down"
    assert not ports & listening_ports(), "a port is still listening after down"
    assert read_state(cluster_dir) is None
