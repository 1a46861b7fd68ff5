"""Power capping end to end: a real API server, a real Prometheus scraping Kepler-format
metrics for the test's pods, and the power-cap controller running in a real manager.

The ScaledObject comes from KEDA's own CRD; no KEDA operator runs, so the Deployment's replica
count is what the test sets, exactly as KEDA's HPA would have left it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.reconcilers.resources import CAPPED_BY_ANNOTATION, USER_MAX_ANNOTATION
from climatik.runtime.capping import power_cap_controller
from climatik.runtime.manager import Manager
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import (
    capping_config,
    ceiling_becomes,
    condition,
    deployment,
    kubectl_json,
    running_manager,
    running_pods,
    scaled_object,
    serve_watts,
    so_ref,
)

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import (
        ExporterHandle,
        PrometheusFactory,
        PrometheusServer,
    )

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

STEP_DOWN_INTERVAL_S = 20
"""Long beside the 1 s decisions and scrapes of these tests, so a wait is unmistakable: the
second step-down of the threshold test follows the first by about 6 s without it."""


@pytest.fixture
async def controller(
    dev_cluster: ClusterInfo, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Manager]:
    """The power-cap controller in a real manager, scoped to the test's namespace."""
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    async with running_manager(dev_cluster, namespace, [power_cap_controller]) as manager:
        yield manager


async def test_threshold_policy_follows_the_design_document(
    controller: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    kubectl.apply(deployment("llm", 3, {"app": "llm"}))
    kubectl.apply(scaled_object("llm", "llm", min_replicas=1, max_replicas=10))
    pods = await running_pods(kubectl, "llm", 3)
    await serve_watts(metrics_exporter, namespace, pods, 200)  # 600 W of 1000: below 80 %
    kubectl.apply(
        capping_config(
            "cap",
            prometheus.url,
            [so_ref("llm")],
            policy="Threshold",
            cap_w=1000,
            step_down_interval_s=STEP_DOWN_INTERVAL_S,
        )
    )

    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (
            condition(obj, "MetricsAvailable").get("status") == "True"
            and (obj.get("status") or {}).get("measuredPowerWatts") == pytest.approx(600, rel=0.01)
        ),
    )
    assert condition(pcc, "Capping")["status"] == "False"
    so = await kubectl_json(kubectl, "scaledobject", "llm")
    assert so["spec"]["maxReplicaCount"] == 10
    assert USER_MAX_ANNOTATION not in (so["metadata"].get("annotations") or {})

    await serve_watts(metrics_exporter, namespace, pods, 280)  # 840 W: >= 80 %, current + 1
    so = await ceiling_becomes(kubectl, "llm", 4)
    stepped_down_s = time.monotonic()
    annotations = so["metadata"]["annotations"]
    assert annotations[USER_MAX_ANNOTATION] == "10"
    assert annotations[CAPPED_BY_ANNOTATION] == f"{namespace}/cap"

    await serve_watts(metrics_exporter, namespace, pods, 330)  # 990 W: >= 95 %, current
    await ceiling_becomes(kubectl, "llm", 3)
    # Under the cap itself the second step-down waited the interval (seen up to a poll and a
    # kubectl call late, at most a second early).
    waited_s = time.monotonic() - stepped_down_s
    assert waited_s >= STEP_DOWN_INTERVAL_S - 3, waited_s
    pcc = await kubectl_json(kubectl, "pcc", "cap")
    assert condition(pcc, "Capping")["status"] == "True"
    assert pcc["status"]["lastDecision"]["action"] == "Cap"

    await serve_watts(metrics_exporter, namespace, pods, 100)  # 300 W: released
    so = await ceiling_becomes(kubectl, "llm", 10)
    assert USER_MAX_ANNOTATION not in (so["metadata"].get("annotations") or {})
    events = await asyncio.to_thread(
        kubectl.run, "get", "events", "--field-selector", "involvedObject.name=cap", "-o", "json"
    )
    reasons = {e["reason"] for e in json.loads(events.stdout)["items"]}
    assert {"CeilingLowered", "CeilingRestored"} <= reasons
    columns = await asyncio.to_thread(kubectl.run, "get", "pcc", "cap")
    assert "CAP" in columns.stdout.upper()
    explained = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "climatik",
            "explain",
            "cap",
            "-n",
            namespace,
            "--kubeconfig",
            str(kubectl.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Cap in force: 1000 W (the static limit)" in explained.stdout
    assert "Last decision" in explained.stdout
    assert "ScaledObject llm: 3 running, ceiling 10" in explained.stdout


async def test_a_stopped_prometheus_holds_ceilings_and_says_so(
    controller: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus_factory: PrometheusFactory,
) -> None:
    server = prometheus_factory()
    kubectl.apply(deployment("chat", 2, {"app": "chat"}))
    kubectl.apply(scaled_object("chat", "chat", min_replicas=1, max_replicas=8))
    pods = await running_pods(kubectl, "chat", 2)
    await serve_watts(metrics_exporter, namespace, pods, 480)  # 960 W of 1000: hold at 2
    kubectl.apply(
        capping_config("cap", server.url, [so_ref("chat")], policy="Threshold", cap_w=1000)
    )
    await ceiling_becomes(kubectl, "chat", 2)

    await asyncio.to_thread(server.stop)
    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "MetricsAvailable").get("status") == "False",
    )
    assert condition(pcc, "MetricsAvailable")["reason"] == "PrometheusUnreachable"
    await asyncio.sleep(3)  # several decision intervals without data
    so = await kubectl_json(kubectl, "scaledobject", "chat")
    assert so["spec"]["maxReplicaCount"] == 2, "no data must hold the ceiling, not move it"
    events = await asyncio.to_thread(
        kubectl.run, "get", "events", "--field-selector", "reason=MetricsUnavailable", "-o", "json"
    )
    assert json.loads(events.stdout)["items"], "a MetricsUnavailable Event is recorded"

    await asyncio.to_thread(server.start)
    await serve_watts(metrics_exporter, namespace, pods, 100)
    await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "MetricsAvailable").get("status") == "True",
        timeout_s=60,
    )
    await ceiling_becomes(kubectl, "chat", 8, timeout_s=60)


async def test_kserve_owned_scaled_object_is_capped_through_the_inference_service(
    controller: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    kubectl.apply(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {
                "name": "chat",
                "annotations": {
                    "serving.kserve.io/autoscalerClass": "keda",
                    "serving.kserve.io/deploymentMode": "Standard",
                },
            },
            "spec": {
                "predictor": {
                    "minReplicas": 1,
                    "maxReplicas": 6,
                    "containers": [{"name": "kserve-container", "image": "vllm/vllm-openai"}],
                }
            },
        }
    )
    isvc = await kubectl_json(kubectl, "inferenceservice", "chat")
    predictor = scaled_object("chat-predictor", "chat-predictor", min_replicas=1, max_replicas=6)
    predictor["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "name": "chat",
            "uid": isvc["metadata"]["uid"],
            "controller": True,
        }
    ]
    kubectl.apply(predictor)
    labels = {"app": "chat-predictor", "serving.kserve.io/inferenceservice": "chat"}
    kubectl.apply(deployment("chat-predictor", 2, labels))
    pods = await running_pods(kubectl, "chat-predictor", 2)
    await serve_watts(metrics_exporter, namespace, pods, 490)  # 980 W: >= 95 %, hold at 2
    kubectl.apply(
        capping_config(
            "cap", prometheus.url, [so_ref("chat-predictor")], policy="Threshold", cap_w=1000
        )
    )
    isvc = await eventually(
        lambda: kubectl_json(kubectl, "inferenceservice", "chat"),
        lambda obj: obj["spec"]["predictor"].get("maxReplicas") == 2,
        timeout_s=45,
    )
    assert isvc["metadata"]["annotations"][USER_MAX_ANNOTATION] == "6"
    so = await kubectl_json(kubectl, "scaledobject", "chat-predictor")
    assert so["spec"]["maxReplicaCount"] == 6, "KServe owns the ScaledObject: leave it alone"
    assert USER_MAX_ANNOTATION not in (so["metadata"].get("annotations") or {})


async def test_min_replica_count_holds_and_a_deleted_scaled_object_is_a_condition(
    controller: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    kubectl.apply(deployment("big", 4, {"app": "big"}))
    kubectl.apply(scaled_object("big", "big", min_replicas=3, max_replicas=10))
    pods = await running_pods(kubectl, "big", 4)
    await serve_watts(metrics_exporter, namespace, pods, 800)  # 3200 W of 1000
    kubectl.apply(
        capping_config("cap", prometheus.url, [so_ref("big")], policy="Headroom", cap_w=1000)
    )
    so = await ceiling_becomes(kubectl, "big", 3, timeout_s=60)
    await asyncio.sleep(3)
    so = await kubectl_json(kubectl, "scaledobject", "big")
    assert so["spec"]["maxReplicaCount"] == 3, "never below KEDA's minReplicaCount"

    kubectl.run("delete", "scaledobject", "big")
    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "TargetsResolved").get("status") == "False",
    )
    assert "not found" in condition(pcc, "TargetsResolved")["message"]
    assert condition(pcc, "Ready")["status"] == "False"


async def test_headroom_tracks_a_ramp_without_oscillating(
    controller: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    kubectl.apply(deployment("ramp", 4, {"app": "ramp"}))
    kubectl.apply(scaled_object("ramp", "ramp", min_replicas=1, max_replicas=12))
    pods = await running_pods(kubectl, "ramp", 4)
    await serve_watts(metrics_exporter, namespace, pods, 100)  # 400 W of 2000
    kubectl.apply(
        capping_config("cap", prometheus.url, [so_ref("ramp")], policy="Headroom", cap_w=2000)
    )
    await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "MetricsAvailable").get("status") == "True",
    )
    ceilings: list[int] = []

    async def sample(seconds: float) -> None:
        for _ in range(int(seconds / 0.5)):
            so = await kubectl_json(kubectl, "scaledobject", "ramp")
            value = so["spec"]["maxReplicaCount"]
            if not ceilings or ceilings[-1] != value:
                ceilings.append(value)
            await asyncio.sleep(0.5)

    # Watts per replica ramps 100 -> 450: the allowed replicas fall from 12 to about 4.
    for watts in (100, 200, 300, 400, 450, 450):
        await serve_watts(metrics_exporter, namespace, pods, watts)
        await sample(4)
    final = ceilings[-1]
    assert final < 12, f"the ceiling came down under pressure: {ceilings}"
    assert final * 450 <= 2000, f"the final ceiling fits the cap: {ceilings}"
    assert final >= 4, (
        f"the 4 running replicas fit (1800 W of 2000) and keep their place: {ceilings}"
    )
    # Monotone under a monotone ramp: a ceiling that goes down never comes back up meanwhile.
    assert ceilings == sorted(ceilings, reverse=True), f"oscillated: {ceilings}"
    writes = len(ceilings) - 1
    assert writes <= 8, f"too many ceiling writes over the ramp: {ceilings}"
