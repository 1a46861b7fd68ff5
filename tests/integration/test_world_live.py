"""The world on the dev cluster: it follows the pods that really exist.

`climatik world --scenario` watches the cluster's inference pods on the rack-labelled kwok
nodes and publishes, for a real Prometheus to scrape, what the twin's physics make of them:
pods appear and their series appear with each exporter's labels; a replica added takes its
share of the requests, so the load per pod falls and the first pod's node draws less.

It also plays the GPU-tuning Jobs the controller builds (kwok completes their pods at once): the
Job's node sweeps its clocks, the result lands in the ConfigMap the Job names, and an applied
clock stays on that node, whose GPUs then report it and draw less.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from climatik.devcluster.cluster import ClusterInfo
from climatik.domain.config import GpuTuningConfig, GpuTuningMode, PowerCappingConfig, SloBounds
from climatik.domain.gpu import TUNE_RESULT_KEY, result_configmap_name
from climatik.policies.gpu_tuning import watts_scale
from climatik.reconcilers.gpu_tuning import build_job
from climatik.reconcilers.settings import GpuTuningSettings
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import running_pods

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import (
        ExporterFactory,
        ExporterHandle,
        PrometheusServer,
        ScrapingFactory,
    )

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

SPEED = 10.0  # a 10 s scenario step each wall second; the model's 60 s start-up takes 6 s
CHAT_RPS = 2.0  # one chat replica serves about 3.4 requests/s: one is busy, two share it
FLAT = {"trough_fraction": 1.0, "weekend_fraction": 1.0, "bursts_per_day": 0, "noise_fraction": 0}
SCENARIO = {
    "name": "world-live",
    "duration_h": 1,
    "caps": {"site_cap_w": 80000},
    "services": [{"name": "chat", "traffic": {**FLAT, "peak_rps": CHAT_RPS}}],
}


def chat_deployment(replicas: int) -> dict[str, Any]:
    """Each replica holds a whole node's 8 GPUs, so the scheduler gives each its own node."""
    labels = {"app": "chat"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:latest",
                            "resources": {"limits": {"nvidia.com/gpu": "8"}},
                        }
                    ],
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                },
            },
        },
    }


@pytest.fixture
def speed() -> float:
    return SPEED


@pytest.fixture
def world(
    dev_cluster: ClusterInfo,
    kubectl: Kubectl,
    tmp_path: Path,
    exporter_factory: ExporterFactory,
    speed: float,
) -> ExporterHandle:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    return exporter_factory(
        [
            "--scenario",
            str(scenario),
            "--speed",
            str(speed),
            "--namespace",
            kubectl.namespace,
            "--kubeconfig",
            str(dev_cluster.kubeconfig),
        ]
    )


@pytest.fixture
def world_prometheus(
    world: ExporterHandle, prometheus_scraping: ScrapingFactory
) -> PrometheusServer:
    return prometheus_scraping(world)


def _query(prometheus: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def query(prometheus: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    return await asyncio.to_thread(_query, prometheus, promql)


def by_label(series: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {s["metric"][label]: float(s["value"][1]) for s in series}


async def test_pods_appear_with_their_series_and_a_replica_added_shares_the_load(
    kubectl: Kubectl, world: ExporterHandle, world_prometheus: PrometheusServer
) -> None:
    ns = kubectl.namespace
    kubectl.apply(chat_deployment(1))
    (first,) = await running_pods(kubectl, "chat", 1)
    pod, node = first["metadata"]["name"], first["spec"]["nodeName"]

    # Every exporter's series for the pod, with that exporter's labels, once the pod serves.
    running_q = f'vllm:num_requests_running{{namespace="{ns}"}}'
    running = await eventually(
        lambda: query(world_prometheus, running_q),
        lambda series: len(series) == 1 and float(series[0]["value"][1]) > 0,
        timeout_s=60,
    )
    assert running[0]["metric"]["pod"] == pod
    assert running[0]["metric"]["model_name"] == "llama-70b-tp8"
    dcgm = await query(world_prometheus, f'DCGM_FI_DEV_POWER_USAGE{{exported_namespace="{ns}"}}')
    assert len(dcgm) == 8  # the pod's eight GPUs
    assert {s["metric"]["exported_pod"] for s in dcgm} == {pod}
    assert {s["metric"]["Hostname"] for s in dcgm} == {node}
    kepler = await query(
        world_prometheus, f'kepler_pod_cpu_watts{{pod_namespace="{ns}",zone="package"}}'
    )
    assert [(s["metric"]["pod_name"], s["metric"]["node_name"]) for s in kepler] == [(pod, node)]
    assert kepler[0]["metric"]["pod_id"] == first["metadata"]["uid"]
    inlet = await query(world_prometheus, f'ipmi_temperature_celsius{{node="{node}"}}')
    assert 10.0 < float(inlet[0]["value"][1]) < 45.0
    # The scenario's requests, all served by the one pod: 2 requests/s of 256 tokens (rates
    # are physical: only the scenario's demand curve runs faster than the wall clock).
    await eventually(
        lambda: query(
            world_prometheus, f'rate(vllm:generation_tokens_total{{namespace="{ns}"}}[5s])'
        ),
        lambda series: (
            len(series) == 1
            and float(series[0]["value"][1]) == pytest.approx(CHAT_RPS * 256, rel=0.05)
        ),
        timeout_s=30,
    )

    node_power_q = (
        f'sum(kepler_node_cpu_watts{{node_name="{node}",zone="package"}})'
        f' + sum(DCGM_FI_DEV_POWER_USAGE{{Hostname="{node}"}})'
    )
    (before,) = await query(world_prometheus, node_power_q)
    load_before = float(running[0]["value"][1])

    kubectl.apply(chat_deployment(2))
    pods = await running_pods(kubectl, "chat", 2)
    second = next(p for p in pods if p["metadata"]["name"] != pod)
    assert second["spec"]["nodeName"] != node

    # Once the second replica has started, each pod runs half the requests and the first
    # pod's node draws less.
    shared = await eventually(
        lambda: query(world_prometheus, running_q),
        lambda series: (
            len(series) == 2 and all(float(s["value"][1]) < 0.6 * load_before for s in series)
        ),
        timeout_s=60,
    )
    loads = by_label(shared, "pod")
    assert loads[pod] == pytest.approx(load_before / 2, rel=0.05)
    # Kepler's and DCGM's series are other scrape jobs than vLLM's: wait for their next scrape.
    await eventually(
        lambda: query(world_prometheus, node_power_q),
        lambda series: (
            len(series) == 1 and float(series[0]["value"][1]) < float(before["value"][1]) - 100
        ),
        timeout_s=30,
    )

    # The replica goes away: its series go, and the first pod carries the load again.
    kubectl.apply(chat_deployment(1))
    await eventually(
        lambda: query(world_prometheus, running_q),
        lambda series: len(series) == 1 and float(series[0]["value"][1]) > 0.9 * load_before,
        timeout_s=60,
    )


def tuning_job(namespace: str, node: str) -> dict[str, Any]:
    """The Job the GPU-tuning reconciler builds for a config in `namespace` asking to apply."""
    config = PowerCappingConfig(
        namespace=namespace,
        name="cap",
        generation=1,
        power_cap_w=80000,
        gpu_tuning=GpuTuningConfig(
            mode=GpuTuningMode.APPLY, slo=SloBounds(max_inter_token_latency_s=0.08)
        ),
    )
    settings = GpuTuningSettings(
        job_namespace=namespace,
        allowed_namespaces=[namespace],
        service_account="default",
        runtime_class=None,
    )
    return build_job(config, node, [], settings, datetime.now(UTC))


@pytest.mark.parametrize("speed", [50.0])  # the sweep's 8 x 50 simulated seconds in 8 s
async def test_a_tuning_job_is_played_on_its_node_and_its_applied_clock_stays_there(
    kubectl: Kubectl, world: ExporterHandle, world_prometheus: PrometheusServer
) -> None:
    ns = kubectl.namespace
    kubectl.apply(chat_deployment(1))
    (first,) = await running_pods(kubectl, "chat", 1)
    node = first["spec"]["nodeName"]
    clock_q = f'DCGM_FI_DEV_SM_CLOCK{{Hostname="{node}"}}'
    power_q = f'sum(DCGM_FI_DEV_POWER_USAGE{{Hostname="{node}"}})'
    serving = await eventually(
        lambda: query(world_prometheus, power_q),
        lambda series: len(series) == 1 and float(series[0]["value"][1]) > 8 * 150,
        timeout_s=60,
    )
    busy_w = float(serving[0]["value"][1])
    (top,) = {float(s["value"][1]) for s in await query(world_prometheus, clock_q)}

    kubectl.apply(tuning_job(ns, node))
    result_name = result_configmap_name(node)
    configmap = await eventually(
        lambda: asyncio.to_thread(kubectl.get_json, "configmap", "--ignore-not-found"),
        lambda listing: any(i["metadata"]["name"] == result_name for i in listing["items"]),
        timeout_s=60,
    )
    (item,) = [i for i in configmap["items"] if i["metadata"]["name"] == result_name]
    result = json.loads(item["data"][TUNE_RESULT_KEY])
    assert result["node"] == node
    assert result["mode"] == "apply"
    applied = result["appliedClockMHz"]
    assert applied is not None
    assert applied < top
    assert [s["clockMHz"] for s in result["samples"]] == result["plannedClocksMHz"]
    scale = watts_scale(result)
    assert scale is not None
    assert scale < 1.0

    # The node's eight GPUs report the applied clock and draw less at the same demand.
    await eventually(
        lambda: query(world_prometheus, clock_q),
        lambda series: len(series) == 8 and {float(s["value"][1]) for s in series} == {applied},
        timeout_s=30,
    )
    await eventually(
        lambda: query(world_prometheus, power_q),
        lambda series: len(series) == 1 and float(series[0]["value"][1]) < 0.95 * busy_w,
        timeout_s=30,
    )
