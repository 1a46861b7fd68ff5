"""The VPA hold end to end on the dev cluster (issue 23, `--with vpa`): measured rack power, the
power-cap reconciler and the VPA-hold controller in one manager, against VPA's own updater.

A capped Deployment's pods run on rack-a. The world's exporter serves their power; a real
Prometheus scrapes it; the power-cap reconciler measures rack-a through its rack query and writes
`status.racks`; the VPA-hold controller reads that. With rack-a measured at 98 % of its `maxPower`,
the VerticalPodAutoscaler in `Recreate` mode, whose recommendation is far above the pods'
requests, is switched to `Initial`, and the updater evicts nothing for a minute. When the pods'
power drops to half, the measured rack cools, the user's `Recreate` comes back and the updater
evicts.

The rack query is Kepler's node power restricted to this test's namespace: the session's exporter
is shared, and other clusters' tests serve pods on nodes of the same names (`rack-a-node-0`...).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.reconcilers.resources import VPA_HELD_BY_ANNOTATION, VPA_USER_MODE_ANNOTATION
from climatik.runtime.capping import power_cap_controller
from climatik.runtime.vpa import vpa_hold_controller
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import (
    API,
    condition,
    kubectl_json,
    running_manager,
    running_pods,
    serve_watts,
)
from tests.integration.test_vpa_live import _recommendation, _sized_deployment, _vpa

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.vpa,
    pytest.mark.slow,
    pytest.mark.timeout(420),
]

MAX_POWER_W = 1000
HELD_FOR_S = 60.0


def _config(name: str, deployment: str, namespace: str, prometheus_url: str) -> dict[str, Any]:
    rack_power = (
        f'sum(kepler_pod_cpu_watts{{zone="package",pod_namespace="{namespace}",'
        'node_name=~"$nodes"})'
    )
    return {
        "apiVersion": API,
        "kind": "PowerCappingConfig",
        "metadata": {"name": name},
        "spec": {
            "powerCapLimit": 100_000,
            "deploymentName": deployment,
            "rackConstraints": [{"rackId": "rack-a", "maxPower": MAX_POWER_W}],
            "powerMeasurement": {
                "preset": "KeplerPod",
                "prometheusAddress": prometheus_url,
                "rackPowerQuery": rack_power,
            },
        },
    }


def _scaled_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": 2,
            "maxReplicaCount": 4,
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}],
        },
    }


async def _rack_a_reads(kubectl: Kubectl, config: str, fraction: float) -> float:
    """Rack-a's power as the power-cap reconciler wrote it, once at `fraction` of maxPower."""

    def rack_a(obj: dict[str, Any]) -> float | None:
        racks = (obj.get("status") or {}).get("racks") or ()
        watts = [r.get("powerWatts") for r in racks if r["rackId"] == "rack-a"]
        return watts[0] if watts else None

    config_obj = await eventually(
        lambda: kubectl_json(kubectl, "powercappingconfig", config),
        lambda c: rack_a(c) == pytest.approx(fraction * MAX_POWER_W),
        timeout_s=30,
    )
    watts = rack_a(config_obj)
    assert watts is not None
    return watts


async def _evictions(kubectl: Kubectl) -> list[dict[str, Any]]:
    events = await kubectl_json(kubectl, "events", "--field-selector", "reason=EvictedByVPA")
    return list(events["items"])


async def test_a_rack_measured_near_its_limit_holds_vpa_evictions_until_it_cools(
    vpa_dev_cluster: ClusterInfo,
    vpa_kubectl: Kubectl,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    monkeypatch.setenv("CLIMATIK_VPA__INTERVAL_S", "1")
    namespace = vpa_kubectl.namespace
    web = _sized_deployment("web", 2)
    web["spec"]["template"]["spec"]["nodeSelector"]["climatik-project.ai/rack"] = "rack-a"
    vpa_kubectl.apply(web)
    pods = await running_pods(vpa_kubectl, "web", 2)
    originals = {p["metadata"]["name"] for p in pods}
    await serve_watts(metrics_exporter, namespace, pods, 0.49 * MAX_POWER_W)
    vpa_kubectl.apply(_scaled_object("web"))
    vpa_kubectl.apply(_config("cap", "web", namespace, prometheus.url))

    async with running_manager(
        vpa_dev_cluster, namespace, [power_cap_controller, vpa_hold_controller]
    ):
        hot_w = await _rack_a_reads(vpa_kubectl, "cap", 0.98)
        vpa_kubectl.apply(_vpa("web", "Recreate"))
        vpa = await eventually(
            lambda: kubectl_json(vpa_kubectl, "verticalpodautoscaler", "web"),
            lambda v: v["spec"]["updatePolicy"]["updateMode"] == "Initial",
            timeout_s=20,
        )
        annotations = vpa["metadata"]["annotations"]
        assert annotations[VPA_USER_MODE_ANNOTATION] == "Recreate"
        assert annotations[VPA_HELD_BY_ANNOTATION] == f"{namespace}/cap"
        config = await eventually(
            lambda: kubectl_json(vpa_kubectl, "powercappingconfig", "cap"),
            lambda c: condition(c, "VpaEvictionsHeld").get("status") == "True",
            timeout_s=20,
        )
        assert "rack-a" in condition(config, "VpaEvictionsHeld")["message"]

        # The recommender sizes the pods far above their requests: out of bounds, so the updater
        # would evict them within its 10 s interval if the VPA were still in Recreate.
        vpa = await eventually(
            lambda: kubectl_json(vpa_kubectl, "verticalpodautoscaler", "web"),
            lambda v: _recommendation(v) is not None,
            timeout_s=120,
            interval_s=2,
        )
        recommendation = _recommendation(vpa)
        assert recommendation is not None
        held_since = time.monotonic()
        while time.monotonic() - held_since < HELD_FOR_S:
            assert await _evictions(vpa_kubectl) == [], "VPA evicted a pod on a held rack"
            await asyncio.sleep(5)
        pods = await running_pods(vpa_kubectl, "web", 2)
        assert {p["metadata"]["name"] for p in pods} == originals

        cooled = time.monotonic()
        await serve_watts(metrics_exporter, namespace, pods, 0.25 * MAX_POWER_W)
        cool_w = await _rack_a_reads(vpa_kubectl, "cap", 0.5)
        measured_s = time.monotonic() - cooled
        vpa = await eventually(
            lambda: kubectl_json(vpa_kubectl, "verticalpodautoscaler", "web"),
            lambda v: v["spec"]["updatePolicy"]["updateMode"] == "Recreate",
            timeout_s=20,
        )
        restored_s = time.monotonic() - cooled
        assert VPA_USER_MODE_ANNOTATION not in (vpa["metadata"].get("annotations") or {})
        evicted = await eventually(
            lambda: _evictions(vpa_kubectl), lambda items: len(items) >= 1, timeout_s=60
        )
        evicted_s = time.monotonic() - cooled
        assert {e["involvedObject"]["name"] for e in evicted} <= originals
        config = await kubectl_json(vpa_kubectl, "powercappingconfig", "cap")
        assert condition(config, "VpaEvictionsHeld")["status"] == "False"
        reasons = {e["reason"] for e in (await kubectl_json(vpa_kubectl, "events"))["items"]}
        assert {"VpaEvictionsHeld", "VpaEvictionsReleased"} <= reasons
    for pod in pods:
        await metrics_exporter.delete_pod(namespace, pod["metadata"]["name"])
    print(
        f"rack-a measured {hot_w:.0f} W of {MAX_POWER_W} W: no eviction for {HELD_FOR_S:.0f} s; "
        f"pods' power halved -> rack measured {cool_w:.0f} W after {measured_s:.1f} s, Recreate "
        f"restored after {restored_s:.1f} s, the updater evicted after {evicted_s:.1f} s"
    )
