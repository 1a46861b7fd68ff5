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

Two more tests on the same cluster: a config deleted while the controller is down gives its VPA
back when the controller returns (the `vpa-give-back` finalizer), and VPA's recommendation shows
as one replica's footprint in status and `climatik explain`, the footprint a new replica is then
admitted with.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from climatik.api.explain import explain
from climatik.devcluster.cluster import ClusterInfo
from climatik.reconcilers.resources import (
    VPA_GIVE_BACK_FINALIZER,
    VPA_HELD_BY_ANNOTATION,
    VPA_USER_MODE_ANNOTATION,
)
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
from tests.integration.test_vpa_live import (
    REQUESTS,
    _recommendation,
    _sized_deployment,
    _vpa,
    parse_quantity,
)

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


def _rack_a_headroom(obj: dict[str, Any]) -> tuple[int | None, int | None]:
    """Rack-a's replica headroom in `status.racks` and its seats in `status.replicaFootprints`."""
    status = obj.get("status") or {}
    headroom = [
        r.get("replicaHeadroom") for r in status.get("racks") or () if r["rackId"] == "rack-a"
    ]
    seats = [
        s["replicas"]
        for f in status.get("replicaFootprints") or ()
        for s in f.get("seats") or ()
        if s["rackId"] == "rack-a"
    ]
    return (headroom[0] if headroom else None), (min(seats) if seats else None)


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
        # 20 W left under maxPower pays for no replica of 490 W, whatever seats VPA leaves.
        assert _rack_a_headroom(config)[0] == 0

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
        # Cooled, rack-a has room again: no more replicas than its seats for VPA's footprint.
        config = await eventually(
            lambda: kubectl_json(vpa_kubectl, "powercappingconfig", "cap"),
            lambda c: (_rack_a_headroom(c)[0] or 0) >= 1 and _rack_a_headroom(c)[1] is not None,
            timeout_s=20,
        )
        headroom, seats = _rack_a_headroom(config)
        assert headroom is not None
        assert seats is not None
        assert 1 <= headroom <= seats
    for pod in pods:
        await metrics_exporter.delete_pod(namespace, pod["metadata"]["name"])
    print(
        f"rack-a measured {hot_w:.0f} W of {MAX_POWER_W} W: no eviction for {HELD_FOR_S:.0f} s; "
        f"pods' power halved -> rack measured {cool_w:.0f} W after {measured_s:.1f} s, Recreate "
        f"restored after {restored_s:.1f} s, the updater evicted after {evicted_s:.1f} s; "
        f"rack-a replica headroom hot 0, cooled {headroom} (seats {seats})"
    )


async def test_a_config_deleted_while_the_controller_is_down_gives_its_vpa_back_on_return(
    vpa_dev_cluster: ClusterInfo, vpa_kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finalizer `vpa-give-back`: the deletion waits for the controller to come back, which
    restores the user's mode and then lets the config go. Rack readings are written into the
    config's status by hand here (no power-cap reconciler runs)."""
    monkeypatch.setenv("CLIMATIK_VPA__INTERVAL_S", "1")
    web = _sized_deployment("web", 1)
    web["spec"]["template"]["spec"]["nodeSelector"]["climatik-project.ai/rack"] = "rack-a"
    vpa_kubectl.apply(web)
    await running_pods(vpa_kubectl, "web", 1)
    vpa_kubectl.apply(_scaled_object("web"))
    vpa_kubectl.apply(_config("cap", "web", vpa_kubectl.namespace, "http://127.0.0.1:9"))
    hot = {"status": {"racks": [{"rackId": "rack-a", "powerWatts": 0.98 * MAX_POWER_W}]}}
    vpa_kubectl.run(
        "patch", "powercappingconfig", "cap", "--subresource=status", "--type=merge",
        "-p", json.dumps(hot),
    )  # fmt: skip
    vpa_kubectl.apply(_vpa("web", "Recreate"))

    async with running_manager(vpa_dev_cluster, vpa_kubectl.namespace, [vpa_hold_controller]):
        await eventually(
            lambda: kubectl_json(vpa_kubectl, "verticalpodautoscaler", "web"),
            lambda v: v["spec"]["updatePolicy"]["updateMode"] == "Initial",
            timeout_s=20,
        )
        config = await kubectl_json(vpa_kubectl, "powercappingconfig", "cap")
        assert VPA_GIVE_BACK_FINALIZER in config["metadata"]["finalizers"]

    # The controller is down: the deletion waits on the finalizer and the VPA stays held.
    vpa_kubectl.run("delete", "powercappingconfig", "cap", "--wait=false")
    await asyncio.sleep(3)
    config = await kubectl_json(vpa_kubectl, "powercappingconfig", "cap")
    assert config["metadata"].get("deletionTimestamp")
    vpa = await kubectl_json(vpa_kubectl, "verticalpodautoscaler", "web")
    assert vpa["spec"]["updatePolicy"]["updateMode"] == "Initial"

    started = time.monotonic()
    async with running_manager(vpa_dev_cluster, vpa_kubectl.namespace, [vpa_hold_controller]):
        vpa = await eventually(
            lambda: kubectl_json(vpa_kubectl, "verticalpodautoscaler", "web"),
            lambda v: v["spec"]["updatePolicy"]["updateMode"] == "Recreate",
            timeout_s=20,
        )
        restored_s = time.monotonic() - started
        assert VPA_USER_MODE_ANNOTATION not in (vpa["metadata"].get("annotations") or {})
        await eventually(
            lambda: asyncio.to_thread(
                vpa_kubectl.run, "get", "powercappingconfig", "cap", check=False
            ),
            lambda done: done.returncode != 0 and "NotFound" in done.stderr,
            timeout_s=20,
        )
        gone_s = time.monotonic() - started
    print(
        f"config deleted while the controller was down: Recreate restored {restored_s:.1f} s "
        f"after it came back, the config gone after {gone_s:.1f} s"
    )


def _seats(
    nodes: list[dict[str, Any]], pods: list[dict[str, Any]], cpu: float, memory: float
) -> int:
    """Replicas of (cpu, memory) that fit the nodes, less what the given pods request and one
    pod slot each: counted here from kubectl's objects, independently of the controller's
    code."""
    total = 0
    for node in nodes:
        allocatable = node["status"]["allocatable"]
        free_cpu = parse_quantity(allocatable["cpu"])
        free_memory = parse_quantity(allocatable["memory"])
        free_slots = parse_quantity(allocatable["pods"])
        for pod in pods:
            if pod["spec"].get("nodeName") == node["metadata"]["name"]:
                free_slots -= 1
                for container in pod["spec"]["containers"]:
                    requests = container.get("resources", {}).get("requests", {})
                    free_cpu -= parse_quantity(requests.get("cpu", "0"))
                    free_memory -= parse_quantity(requests.get("memory", "0"))
        total += min(int(free_cpu // cpu), int(free_memory // memory), int(free_slots))
    return total


async def test_vpas_recommendation_is_one_replicas_footprint_in_status_explain_and_new_pods(
    vpa_dev_cluster: ClusterInfo, vpa_kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VPA's real recommender sizes the pods; the VPA-hold controller reports the footprint of
    one replica (the recommendation's target, not the template's requests) and the seats it
    leaves on rack-a, and a replica added afterwards is admitted by VPA with exactly it."""
    monkeypatch.setenv("CLIMATIK_VPA__INTERVAL_S", "1")
    web = _sized_deployment("web", 2)
    web["spec"]["template"]["spec"]["nodeSelector"]["climatik-project.ai/rack"] = "rack-a"
    vpa_kubectl.apply(web)
    originals = {p["metadata"]["name"] for p in await running_pods(vpa_kubectl, "web", 2)}
    vpa_kubectl.apply(_scaled_object("web"))
    vpa_kubectl.apply(_config("cap", "web", vpa_kubectl.namespace, "http://127.0.0.1:9"))
    vpa_kubectl.apply(_vpa("web", "Initial"))  # new pods get the target; none is evicted

    def footprint(config: dict[str, Any]) -> dict[str, Any] | None:
        found = (config.get("status") or {}).get("replicaFootprints") or ()
        return found[0] if found else None

    async def config_and_target() -> tuple[dict[str, Any], dict[str, float] | None]:
        config = await kubectl_json(vpa_kubectl, "powercappingconfig", "cap")
        vpa = await kubectl_json(vpa_kubectl, "verticalpodautoscaler", "web")
        recommendation = _recommendation(vpa)
        target = (
            {k: parse_quantity(v) for k, v in recommendation["target"].items()}
            if recommendation
            else None
        )
        return config, target

    async with running_manager(vpa_dev_cluster, vpa_kubectl.namespace, [vpa_hold_controller]):
        started = time.monotonic()
        config, target = await eventually(
            config_and_target,
            lambda found: (
                found[1] is not None
                and (entry := footprint(found[0])) is not None
                and entry["source"] == "VpaTarget"
                and entry["cpuCores"] == pytest.approx(found[1]["cpu"])
                and entry["memoryBytes"] == pytest.approx(found[1]["memory"])
            ),
            timeout_s=150,
            interval_s=2,
        )
        reported_s = time.monotonic() - started
        assert target is not None
        entry = footprint(config)
        assert entry is not None
        assert entry["requestedCpuCores"] == pytest.approx(parse_quantity(REQUESTS["cpu"]))
        nodes = (await kubectl_json(vpa_kubectl, "nodes", "-l", "climatik-project.ai/rack=rack-a"))[
            "items"
        ]
        pods = (await kubectl_json(vpa_kubectl, "pods"))["items"]
        expected = _seats(nodes, pods, target["cpu"], target["memory"])
        assert {"rackId": "rack-a", "replicas": expected} in entry["seats"]
        told = explain(config)
        assert f"One replica of web: {target['cpu']:.3g} CPU" in told
        assert "VPA web's target" in told

        vpa_kubectl.run("scale", "deployment", "web", "--replicas=3")
        pods = await running_pods(vpa_kubectl, "web", 3)
        (added,) = [p for p in pods if p["metadata"]["name"] not in originals]
        requests = added["spec"]["containers"][0]["resources"]["requests"]
        assert parse_quantity(requests["cpu"]) == pytest.approx(entry["cpuCores"])
        assert parse_quantity(requests["memory"]) == pytest.approx(entry["memoryBytes"])
    print(
        f"footprint {entry['cpuCores']:.3f} CPU, {entry['memoryBytes'] / 2**20:.0f} MiB (pods ask "
        f"{REQUESTS['cpu']}, {REQUESTS['memory']}) in status {reported_s:.1f} s after the "
        f"controller started; rack-a seats {expected}; the added replica was admitted with "
        f"{requests['cpu']} CPU, {requests['memory']} memory\n{told}"
    )
