"""The examples, applied unchanged to the dev cluster with KEDA (and KServe), work there.

The examples name Prometheus where most sites have it, `prometheus-server.monitoring.svc:9090`,
in their autoscaling metric (KEDA's operator queries it) and in their PowerCappingConfig
(Climatik queries it). Neither runs in a pod on the dev cluster: KEDA's operator reaches the name
through the dev cluster's service proxy and an ExternalName Service pointing at the test's
Prometheus, and the controller through a connect-to rule (`CLIMATIK_OUTBOUND__CONNECT_TO`), as
`climatik demo` sets them. With vLLM's queue and DCGM's GPU watts played by the exporter, KEDA
scales the workload on its queue and the config's cap brings its ceiling down through KEDA's HPA
(and, for the InferenceService, KServe).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.devcluster.service_proxy import connect_to_rule, local_service
from climatik.reconcilers.resources import USER_MAX_ANNOTATION
from climatik.runtime.capping import power_cap_controller
from climatik.runtime.manager import Manager
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import kubectl_json, running_manager, running_pods

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMESPACE = "llm"  # the examples' Prometheus queries name it
MODEL = "Qwen/Qwen2.5-7B-Instruct"
PROMETHEUS = ("monitoring", "prometheus-server", 9090)


@contextmanager
def example_namespace(cluster: ClusterInfo, prometheus: PrometheusServer) -> Iterator[Kubectl]:
    """kubectl in namespace `llm`, with the examples' Prometheus address leading to the
    test's (as `climatik demo` publishes its own); both namespaces are deleted afterwards."""
    namespace, name, port = PROMETHEUS
    monitoring = Kubectl(cluster.kubectl, cluster.kubeconfig, namespace)
    service = local_service(namespace, name, port, prometheus.port)
    monitoring.run(
        "apply", "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": service})
    )
    kubectl = Kubectl(cluster.kubectl, cluster.kubeconfig, NAMESPACE)
    kubectl.run("create", "namespace", NAMESPACE)
    try:
        yield kubectl
    finally:
        for gone in (NAMESPACE, namespace):
            kubectl.run("delete", "namespace", gone, "--wait=false", check=False)


@asynccontextmanager
async def controller(
    cluster: ClusterInfo, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Manager]:
    """Climatik's power-cap controller outside the cluster, reaching the in-cluster address by
    a connect-to rule."""
    namespace, name, port = PROMETHEUS
    rule = connect_to_rule(namespace, name, port, prometheus.port)
    monkeypatch.setenv("CLIMATIK_OUTBOUND__CONNECT_TO", json.dumps([rule]))
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    async with running_manager(cluster, NAMESPACE, [power_cap_controller]) as manager:
        yield manager


async def apply_unchanged(kubectl: Kubectl, example: str) -> None:
    path = EXAMPLES / example
    assert "http://prometheus-server.monitoring.svc:9090" in path.read_text(encoding="utf-8")
    await asyncio.to_thread(kubectl.run, "apply", "-f", str(path))


async def draw_gpu_watts(
    exporter: ExporterHandle, pods: list[dict[str, Any]], watts: float, model: str | None = None
) -> None:
    """DCGM's GPU watts (the examples' preset) for each pod, one GPU each."""
    await exporter.add_pods(
        [
            {
                "namespace": NAMESPACE,
                "name": p["metadata"]["name"],
                "node": p["spec"].get("nodeName", ""),
                "cpu_watts": 0.0,
                "gpu_watts": watts,
                "gpus": 1,
                "tokens_per_s": watts / 10,
                **({"model_name": model} if model else {}),
            }
            for p in pods
        ]
    )


async def test_the_vllm_keda_example_scales_on_its_queue_and_its_cap_bites(
    keda_dev_cluster: ClusterInfo,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with example_namespace(keda_dev_cluster, prometheus) as llm:
        async with controller(keda_dev_cluster, prometheus, monkeypatch):
            await _vllm_keda(llm, metrics_exporter)


async def _vllm_keda(llm: Kubectl, metrics_exporter: ExporterHandle) -> None:
    # vLLM's queue: 30 waiting at the trigger's 5 per replica asks KEDA for 6 replicas.
    await metrics_exporter.add_pods(
        [
            {
                "namespace": NAMESPACE,
                "name": "queue",
                "node": "",
                "waiting_requests": 30,
                "model_name": MODEL,
                "cpu_watts": 0.0,
                "gpu_watts": None,
            }
        ]
    )
    try:
        await apply_unchanged(llm, "vllm-keda.yaml")

        # KEDA's operator read the trigger through the service proxy: the HPA scales up.
        await eventually(
            lambda: kubectl_json(llm, "deployment", "vllm-deployment"),
            lambda d: d["spec"].get("replicas") == 6,
            timeout_s=120,
        )
        pods = await running_pods(llm, "vllm", 6)
        # DCGM's GPU watts for each replica: over the cap, Climatik lowers the ceiling, and
        # KEDA's HPA carries it to the Deployment.
        await draw_gpu_watts(metrics_exporter, pods, 600.0, MODEL)  # 3600 W of 3000
        scaled = await eventually(
            lambda: kubectl_json(llm, "scaledobject", "vllm-scaledobject"),
            lambda so: so["spec"]["maxReplicaCount"] < 8,
            timeout_s=90,
        )
        ceiling = scaled["spec"]["maxReplicaCount"]
        assert scaled["metadata"]["annotations"][USER_MAX_ANNOTATION] == "8"
        assert 1 <= ceiling <= 4, ceiling  # 2850 W left under the cap at 600 W a replica
        await eventually(
            lambda: kubectl_json(llm, "deployment", "vllm-deployment"),
            lambda d: d["spec"]["replicas"] <= ceiling,
            timeout_s=60,
        )
        config = await kubectl_json(llm, "pcc", "vllm-power-cap")
        ready = {c["type"]: c for c in config["status"]["conditions"]}
        assert ready["MetricsAvailable"]["status"] == "True", ready["MetricsAvailable"]
    finally:
        await metrics_exporter.delete_pod(NAMESPACE, "queue")


async def test_the_kserve_example_scales_on_its_running_requests_and_its_cap_bites(
    kserve_dev_cluster: ClusterInfo,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for `examples/kserve-keda.yaml`: KServe's controller makes the predictor and its
    ScaledObject (the `huggingface` model format selects KServe's own ClusterServingRuntime,
    which the dev cluster installs), KEDA scales it, and Climatik lowers the
    InferenceService's `maxReplicas`, which KServe carries to its ScaledObject."""
    with example_namespace(kserve_dev_cluster, prometheus) as llm:
        async with controller(kserve_dev_cluster, prometheus, monkeypatch):
            await _kserve_keda(llm, metrics_exporter)


async def _kserve_keda(llm: Kubectl, metrics_exporter: ExporterHandle) -> None:
    # 30 running at the metric's 8 per replica asks KEDA for 4 replicas; the query selects
    # the predictor's pods by name, so the exporter's stand-in is named like one.
    queue = "llama-chat-predictor-queue"
    await metrics_exporter.add_pods(
        [{"namespace": NAMESPACE, "name": queue, "node": "", "running_requests": 30}]
    )
    try:
        await apply_unchanged(llm, "kserve-keda.yaml")
        # KServe creates the predictor's Deployment (and its ScaledObject) a moment later.
        await eventually(
            lambda: named(llm, "deployment", "llama-chat-predictor"),
            lambda d: d is not None and d["spec"].get("replicas") == 4,
            timeout_s=120,
        )
        pods = await running_pods_of(llm, "serving.kserve.io/inferenceservice=llama-chat", 4)
        await draw_gpu_watts(metrics_exporter, pods, 800.0)  # 3200 W of 2400
        isvc = await eventually(
            lambda: kubectl_json(llm, "inferenceservice", "llama-chat"),
            lambda obj: obj["spec"]["predictor"]["maxReplicas"] < 6,
            timeout_s=90,
        )
        ceiling = isvc["spec"]["predictor"]["maxReplicas"]
        assert isvc["metadata"]["annotations"][USER_MAX_ANNOTATION] == "6"
        assert 1 <= ceiling <= 2, ceiling  # 2280 W left under the cap at 800 W a replica
        await eventually(
            lambda: kubectl_json(llm, "scaledobject", "llama-chat-predictor"),
            lambda so: so["spec"]["maxReplicaCount"] == ceiling,
            timeout_s=30,
        )
        await eventually(
            lambda: kubectl_json(llm, "deployment", "llama-chat-predictor"),
            lambda d: d["spec"]["replicas"] <= ceiling,
            timeout_s=60,
        )
    finally:
        await metrics_exporter.delete_pod(NAMESPACE, queue)


async def running_pods_of(kubectl: Kubectl, selector: str, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        items = (await kubectl_json(kubectl, "pods", "-l", selector))["items"]
        return [p for p in items if p["status"].get("phase") == "Running"]

    return await eventually(probe, lambda pods: len(pods) == count, timeout_s=90)


async def named(kubectl: Kubectl, kind: str, name: str) -> dict[str, Any] | None:
    """The object, or None while it does not exist."""
    result = await asyncio.to_thread(kubectl.run, "get", kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None
