"""The VPA-hold controller against VPA's own updater on the dev cluster (issue 23, `--with vpa`).

A capped Deployment's pods run on rack-a, which the config's `status.racks` shows at 98 % of its
`maxPower` (written here as the power-cap reconciler would). Its VerticalPodAutoscaler in
`Recreate` mode gets a recommendation far above the pods' requests, so VPA's updater would evict
them at its next round; the controller switches the VPA to `Initial` first, and no pod is evicted
for a minute while the recommendation stays out of bounds. When the rack reads 50 %, the user's
`Recreate` comes back and the updater evicts.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.reconcilers.resources import VPA_HELD_BY_ANNOTATION, VPA_USER_MODE_ANNOTATION
from climatik.runtime.vpa import vpa_hold_controller
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import (
    API,
    condition,
    kubectl_json,
    running_manager,
    running_pods,
)
from tests.integration.test_vpa_live import _recommendation, _sized_deployment, _vpa

pytestmark = [
    pytest.mark.integration,
    pytest.mark.vpa,
    pytest.mark.slow,
    pytest.mark.timeout(420),
]

MAX_POWER_W = 1000
HELD_FOR_S = 60.0


def _config(name: str, deployment: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "PowerCappingConfig",
        "metadata": {"name": name},
        "spec": {
            "powerCapLimit": 100_000,
            "deploymentName": deployment,
            "rackConstraints": [{"rackId": "rack-a", "maxPower": MAX_POWER_W}],
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


def _set_rack_a(kubectl: Kubectl, config: str, watts: float) -> None:
    """What the power-cap reconciler writes from its rack readings."""
    body = {"status": {"racks": [{"rackId": "rack-a", "powerWatts": watts}]}}
    kubectl.run(
        "patch", "powercappingconfig", config, "--subresource=status", "--type=merge",
        "-p", json.dumps(body),
    )  # fmt: skip


async def _evictions(kubectl: Kubectl) -> list[dict[str, Any]]:
    events = await kubectl_json(kubectl, "events", "--field-selector", "reason=EvictedByVPA")
    return list(events["items"])


async def test_a_rack_near_its_limit_holds_vpa_evictions_until_it_cools(
    vpa_dev_cluster: ClusterInfo, vpa_kubectl: Kubectl
) -> None:
    namespace = vpa_kubectl.namespace
    web = _sized_deployment("web", 2)
    web["spec"]["template"]["spec"]["nodeSelector"]["climatik-project.ai/rack"] = "rack-a"
    vpa_kubectl.apply(web)
    originals = {p["metadata"]["name"] for p in await running_pods(vpa_kubectl, "web", 2)}
    vpa_kubectl.apply(_scaled_object("web"))
    vpa_kubectl.apply(_config("cap", "web"))
    _set_rack_a(vpa_kubectl, "cap", 0.98 * MAX_POWER_W)

    async with running_manager(vpa_dev_cluster, namespace, [vpa_hold_controller]):
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
        _set_rack_a(vpa_kubectl, "cap", 0.5 * MAX_POWER_W)
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
    print(
        f"no eviction for {HELD_FOR_S:.0f} s while held; after the rack cooled, Recreate was "
        f"restored in {restored_s:.1f} s and the updater evicted {evicted_s:.1f} s after"
    )
