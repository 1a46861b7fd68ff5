"""Rack placement end to end: a real kube-apiserver calling the controller's TLS admission webhook,
the real kube-scheduler placing pods on kwok nodes labelled by rack, and the real
kube-controller-manager's ReplicaSet controller honouring pod-deletion-cost on scale-in.

Rack signals come from a static source the test sets (the rack-signal protocol the reconciler
reads), so each test decides which rack is hot; everything else is the real thing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.kube.client import KubeClient
from climatik.kube.resources import NODES
from climatik.kube.store import index_by_namespace
from climatik.reconcilers.placement import PlacementReconciler
from climatik.reconcilers.placement_deletion_costs import DELETION_COST_ANNOTATION
from climatik.reconcilers.placement_template import ORIGINAL_AFFINITY_ANNOTATION
from climatik.reconcilers.placement_webhook import (
    MANAGED_LABEL,
    PLACEMENT_ANNOTATION,
    PlacementSnapshot,
    PlacementWebhook,
)
from climatik.reconcilers.resources import (
    POWER_CAPPING_CONFIGS,
)
from climatik.reconcilers.settings import PlacementSettings
from climatik.runtime.capping import workload_caches
from climatik.runtime.manager import Manager
from climatik.runtime.placement import placement_metrics, watch_recirculation
from climatik.runtime.reconcile import Controller, ControllerContext, enqueue_handlers
from climatik.runtime.settings import RuntimeSettings
from climatik.runtime.webhook import WebhookServer, start_webhook_server
from climatik.sources.cooling import CoolingController, DryRunCoolingController
from climatik.sources.racks import RackSignals, RackSignalSource, StaticRackSignalSource
from tests.certificates import self_signed
from tests.integration.conftest import SESSION_TOPOLOGY, Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.webhook import webhook_configuration

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

API = "powercapping.climatik-project.ai/v1"
RACK_KEY = SESSION_TOPOLOGY.rack_label_key
COOL = RackSignals("rack-b", watts=12_000.0, inlet_c=21.0)


@dataclass
class Placement:
    """The running pieces of one test: controller, webhook server, their inputs."""

    signals: StaticRackSignalSource
    snapshot: PlacementSnapshot
    server: WebhookServer
    client: KubeClient
    webhook_name: str


def placement_factory(
    signals: RackSignalSource, snapshot: PlacementSnapshot, settings: PlacementSettings
) -> Callable[[ControllerContext], Controller]:
    """How the manager wires the placement reconciler (informers, queue, events, metrics)."""

    def factory(ctx: ControllerContext) -> Controller:
        queue = ctx.new_queue("placement")
        configs = ctx.informer(POWER_CAPPING_CONFIGS, indexers={"namespace": index_by_namespace})
        configs.add_handlers(enqueue_handlers(queue))
        cooling = DryRunCoolingController()

        async def source_for(_config: Any) -> RackSignalSource:
            return signals

        async def cooling_for(_config: Any) -> CoolingController:
            return cooling

        reconciler = PlacementReconciler(
            ctx.client,
            configs=configs,
            workloads=workload_caches(ctx),
            nodes=ctx.informer(NODES),
            recirculation_maps=watch_recirculation(ctx, settings, configs, queue),
            signal_source=source_for,
            cooling=cooling_for,
            snapshot=snapshot,
            events=ctx.events,
            metrics=placement_metrics(ctx),
            settings=settings,
        )
        return Controller("placement", reconciler, queue)

    return factory


@pytest.fixture
async def placement(
    dev_cluster: ClusterInfo, namespace: str, tmp_path: Path
) -> AsyncIterator[Placement]:
    """The placement controller in a real manager plus its webhook, registered with the API."""
    signals = StaticRackSignalSource()
    snapshot = PlacementSnapshot()
    settings = PlacementSettings(interval_s=1.0, template_min_interval_s=0.0)
    runtime = RuntimeSettings(
        kube={"kubeconfig": str(dev_cluster.kubeconfig), "namespace": namespace},
        leader_election={"enabled": False},
        http={"host": "127.0.0.1", "port": 0},
    )
    client = await KubeClient.from_config(str(dev_cluster.kubeconfig))
    manager = Manager(runtime, client, install_signal_handlers=False)
    manager.add_controller(placement_factory(signals, snapshot, settings))
    cert_file, key_file = self_signed(tmp_path, "webhook")
    server = await start_webhook_server(
        PlacementWebhook(snapshot, metrics=None).handle, "127.0.0.1", 0, cert_file, key_file
    )
    webhook_name = f"climatik-placement-{uuid.uuid4().hex[:8]}"
    admin = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, namespace)
    admin.apply(webhook_configuration(webhook_name, namespace, server.url, cert_file.read_bytes()))
    task = asyncio.create_task(manager.run(), name="manager")
    try:
        yield Placement(signals, snapshot, server, client, webhook_name)
    finally:
        admin.run("delete", "mutatingwebhookconfiguration", webhook_name, check=False)
        manager.request_stop()
        await asyncio.wait_for(task, 30)
        await server.stop()
        await client.close()


def deployment(
    name: str, replicas: int, *, managed: bool = True, spread_racks: bool = False
) -> dict[str, Any]:
    labels = {"app": name}
    pod_labels = {**labels, **({MANAGED_LABEL: "true"} if managed else {})}
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "vllm",
                "image": "vllm/vllm-openai:latest",
                "resources": {
                    "requests": {"nvidia.com/gpu": "1"},
                    "limits": {"nvidia.com/gpu": "1"},
                },
            }
        ],
        "nodeSelector": {"type": "kwok"},
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
    }
    if spread_racks:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": RACK_KEY,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": labels},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": pod_labels}, "spec": spec},
        },
    }


def capping_config(
    name: str, deployment_name: str, *, mode: str = "Webhook", max_inlet_c: int = 30
) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "PowerCappingConfig",
        "metadata": {"name": name},
        "spec": {
            "powerCapLimit": 1_000_000,
            "deploymentName": deployment_name,
            "rackConstraints": [
                {"rackId": "rack-a", "maxPower": 40_000, "maxTemperature": max_inlet_c},
                {"rackId": "rack-b", "maxPower": 40_000, "maxTemperature": max_inlet_c},
            ],
            "placement": {"mode": mode, "rackLabelKey": RACK_KEY},
            "cooling": {"mode": "DryRun", "redlineCelsius": 27},
        },
    }


async def create_config(placement: Placement, namespace: str, body: dict[str, Any]) -> None:
    """Create through the API directly: kubectl's discovery can lag a CRD for a moment right
    after the cluster starts ("no matches for kind"), the API server itself does not."""
    await placement.client.create(POWER_CAPPING_CONFIGS, body, namespace)


def rack_of(dev_cluster: ClusterInfo) -> dict[str, str]:
    return {node: rack for rack, nodes in dev_cluster.nodes_by_rack.items() for node in nodes}


def scheduled_pods(kubectl: Kubectl, app: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kubectl.get_json("pods", "-l", f"app={app}")["items"]
    return [p for p in pods if p["spec"].get("nodeName")]


async def wait_scheduled(kubectl: Kubectl, app: str, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        return await asyncio.to_thread(scheduled_pods, kubectl, app)

    return await eventually(probe, lambda pods: len(pods) == count, timeout_s=90)


async def wait_ready(kubectl: Kubectl, deployment_name: str, count: int) -> None:
    async def probe() -> Any:
        return await asyncio.to_thread(kubectl.get_json, "deployment", deployment_name)

    await eventually(probe, lambda d: d["status"].get("readyReplicas") == count, timeout_s=90)


async def racks_of_live_pods(kubectl: Kubectl, racks: dict[str, str], app: str) -> list[str]:
    """The racks of `app`'s scheduled pods not being deleted, sorted."""
    pods = await asyncio.to_thread(scheduled_pods, kubectl, app)
    return sorted(
        racks[p["spec"]["nodeName"]] for p in pods if not p["metadata"].get("deletionTimestamp")
    )


async def wait_snapshot(placement: Placement, namespace: str, deployment_name: str) -> None:
    async def probe() -> Any:
        return placement.snapshot.lookup(namespace, deployment_name)

    await eventually(probe, lambda found: found is not None, timeout_s=60)


async def test_managed_pods_land_on_the_cooler_rack_and_unmanaged_are_untouched(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str, placement: Placement
) -> None:
    # rack-a is hot but still under its 30 °C limit: a preference, not an exclusion.
    placement.signals.set(RackSignals("rack-a", watts=30_000.0, inlet_c=29.0), COOL)
    await create_config(placement, namespace, capping_config("cap", "llm"))
    kubectl.apply(deployment("llm", 0))
    await wait_snapshot(placement, namespace, "llm")
    found = placement.snapshot.lookup(namespace, "llm")
    assert found is not None
    assert found.preferred[0] == ("rack-b", 100)
    assert found.excluded == ()
    kubectl.run("scale", "deployment/llm", "--replicas=6")
    kubectl.apply(deployment("other", 3, managed=False))

    pods = await wait_scheduled(kubectl, "llm", 6)
    racks = rack_of(dev_cluster)
    assert sorted(racks[p["spec"]["nodeName"]] for p in pods) == ["rack-b"] * 6
    for pod in pods:
        assert PLACEMENT_ANNOTATION in pod["metadata"]["annotations"]
        node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in node_affinity
        terms = node_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        assert terms[0] == {
            "weight": 100,
            "preference": {
                "matchExpressions": [{"key": RACK_KEY, "operator": "In", "values": ["rack-b"]}]
            },
        }
    others = await wait_scheduled(kubectl, "other", 3)
    for pod in others:
        assert PLACEMENT_ANNOTATION not in (pod["metadata"].get("annotations") or {})
        assert "affinity" not in pod["spec"]


async def test_a_rack_over_its_limit_is_excluded_and_reported(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str, placement: Placement
) -> None:
    placement.signals.set(RackSignals("rack-a", watts=30_000.0, inlet_c=31.5), COOL)
    await create_config(placement, namespace, capping_config("cap", "llm"))
    kubectl.apply(deployment("llm", 0))
    await wait_snapshot(placement, namespace, "llm")
    kubectl.run("scale", "deployment/llm", "--replicas=4")
    pods = await wait_scheduled(kubectl, "llm", 4)
    racks = rack_of(dev_cluster)
    assert {racks[p["spec"]["nodeName"]] for p in pods} == {"rack-b"}
    required = pods[0]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert required["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": RACK_KEY, "operator": "NotIn", "values": ["rack-a"]}]}
    ]

    async def probe() -> dict[str, Any] | None:
        obj = await placement.client.get(POWER_CAPPING_CONFIGS, "cap", namespace)
        conditions = (obj.get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "RacksWithinLimits"), None)

    found = await eventually(probe, lambda c: c is not None and c["status"] == "False")
    assert found is not None
    assert found["reason"] == "RackOverLimit"
    assert "rack-a" in found["message"]
    events = kubectl.get_json("events", "--field-selector", "reason=RackOverLimit")["items"]
    assert any(e["involvedObject"]["name"] == "cap" for e in events)
    cooling = kubectl.get_json("events", "--field-selector", "reason=CoolingRecommendation")
    assert cooling["items"], "the dry-run cooling recommendation is reported as an Event"


async def test_pods_are_still_created_when_the_webhook_is_down(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str, placement: Placement
) -> None:
    placement.signals.set(RackSignals("rack-a", watts=30_000.0, inlet_c=31.5), COOL)
    await create_config(placement, namespace, capping_config("cap", "llm"))
    kubectl.apply(deployment("llm", 0))
    await wait_snapshot(placement, namespace, "llm")
    await placement.server.stop()  # the API server now gets connection refused
    kubectl.run("scale", "deployment/llm", "--replicas=3")
    pods = await wait_scheduled(kubectl, "llm", 3)
    for pod in pods:
        assert PLACEMENT_ANNOTATION not in (pod["metadata"].get("annotations") or {})


async def test_scale_in_removes_the_hottest_racks_replicas_first(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str, placement: Placement
) -> None:
    # Both racks cool: the spread constraint puts two replicas on each.
    placement.signals.set(RackSignals("rack-a", watts=12_000.0, inlet_c=21.0), COOL)
    await create_config(placement, namespace, capping_config("cap", "llm"))
    kubectl.apply(deployment("llm", 4, spread_racks=True))
    pods = await wait_scheduled(kubectl, "llm", 4)
    racks = rack_of(dev_cluster)
    assert sorted(racks[p["spec"]["nodeName"]] for p in pods) == ["rack-a"] * 2 + ["rack-b"] * 2

    await wait_ready(kubectl, "llm", 4)
    # rack-a heats up (still within its limit): its replicas become the cheapest to delete.
    placement.signals.set(RackSignals("rack-a", watts=30_000.0, inlet_c=28.5))

    def costs() -> dict[str, str | None]:
        return {
            racks[p["spec"]["nodeName"]] + "/" + p["metadata"]["name"]: (
                p["metadata"].get("annotations") or {}
            ).get(DELETION_COST_ANNOTATION)
            for p in scheduled_pods(kubectl, "llm")
        }

    async def probe_costs() -> dict[str, str | None]:
        return await asyncio.to_thread(costs)

    found = await eventually(
        probe_costs,
        lambda c: (
            len(c) == 4 and all(v == ("2" if k.startswith("rack-b") else "1") for k, v in c.items())
        ),
    )
    assert len(found) == 4
    kubectl.run("scale", "deployment/llm", "--replicas=2")

    async def remaining() -> list[str]:
        return await racks_of_live_pods(kubectl, racks, "llm")

    assert await eventually(remaining, lambda r: len(r) == 2, timeout_s=60) == ["rack-b"] * 2


async def test_template_mode_patches_the_deployment_rack_affinity(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str, placement: Placement
) -> None:
    placement.signals.set(RackSignals("rack-a", watts=30_000.0, inlet_c=31.5), COOL)
    await create_config(placement, namespace, capping_config("cap", "llm", mode="Template"))
    kubectl.apply(deployment("llm", 2))

    async def template() -> Any:
        return await asyncio.to_thread(kubectl.get_json, "deployment", "llm")

    patched = await eventually(
        template,
        lambda d: "affinity" in d["spec"]["template"]["spec"],
    )
    node_affinity = patched["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    # Design document §10.5.1: required In the selected rack(s); rack-a is over its limit.
    assert node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": RACK_KEY, "operator": "In", "values": ["rack-b"]}]}
        ]
    }
    assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    assert json.loads(patched["metadata"]["annotations"][ORIGINAL_AFFINITY_ANNOTATION]) == {}
    assert placement.snapshot.lookup(namespace, "llm") is None  # the webhook stands aside
    # The rollout puts every replica on rack-b.

    async def on_racks() -> list[str]:
        pods = await asyncio.to_thread(scheduled_pods, kubectl, "llm")
        racks = rack_of(dev_cluster)
        return sorted(
            racks[p["spec"]["nodeName"]]
            for p in pods
            if not p["metadata"].get("deletionTimestamp") and "affinity" in p["spec"]
        )

    assert await eventually(on_racks, lambda r: len(r) == 2, timeout_s=90) == ["rack-b"] * 2
    events = kubectl.get_json("events", "--field-selector", "reason=TemplateAffinityUpdated")
    assert any(e["involvedObject"]["name"] == "llm" for e in events["items"])


async def test_a_bad_recirculation_config_map_is_a_warning_event_and_in_the_condition(
    kubectl: Kubectl, namespace: str, placement: Placement
) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "climatik-recirculation"},
            "data": {
                "racks.yaml": (
                    "rack-a: {recirculationCPerKw: 0.3, rowPosition: left}\n"
                    "rack-b: {recirculationCPerKw: 0.2, inletRiseCPerKw: {rack-z: 0.1}}\n"
                )
            },
        }
    )
    placement.signals.set(RackSignals("rack-a", watts=12_000.0, inlet_c=21.0), COOL)
    await create_config(placement, namespace, capping_config("cap", "llm"))

    async def probe() -> dict[str, Any] | None:
        obj = await placement.client.get(POWER_CAPPING_CONFIGS, "cap", namespace)
        conditions = (obj.get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "RacksWithinLimits"), None)

    found = await eventually(probe, lambda c: c is not None and "rack-z" in c["message"])
    assert found is not None
    assert "inletRiseCPerKw.rack-z" in found["message"]
    assert "rowPosition 'left' is not a finite number" in found["message"]
    await asyncio.sleep(3.0)  # a few more rounds (1 s apart): still one Event, sent once
    events = kubectl.get_json("events", "--field-selector", "reason=RecirculationConfigInvalid")
    (event,) = [e for e in events["items"] if e["involvedObject"]["name"] == "cap"]
    assert event["type"] == "Warning"
    assert event.get("count", 1) == 1
    assert f"ConfigMap {namespace}/climatik-recirculation" in event["message"]


RECIRCULATION = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "climatik-recirculation"},
    "data": {
        # rack-a's heat lands on its own inlet; rack-b's mostly on its own, a little on a's.
        "racks.yaml": (
            "rack-a: {recirculationCPerKw: 0.6, inletRiseCPerKw: {rack-a: 0.5, rack-b: 0.1}}\n"
            "rack-b: {recirculationCPerKw: 0.3, inletRiseCPerKw: {rack-a: 0.1, rack-b: 0.2}}\n"
        )
    },
}


def migrating_config(name: str, deployment_name: str) -> dict[str, Any]:
    body = capping_config(name, deployment_name)
    body["spec"]["placement"]["migration"] = {
        "enabled": True,
        "minGainCelsius": 0.2,
        "minIntervalSeconds": 30,
        "minReadyReplicas": 2,
    }
    return body


async def place_three_on_rack_a(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str, placement: Placement
) -> dict[str, str]:
    """Three ready replicas of `llm`, all on rack-a (the cooler rack when they start); then
    rack-a heats up (inside its limit) and rack-b is the cooler one. Each replica draws 2 kW."""
    kubectl.apply(RECIRCULATION)
    placement.signals.set(
        RackSignals("rack-a", watts=12_000.0, inlet_c=20.0),
        RackSignals("rack-b", watts=12_000.0, inlet_c=24.0),
    )
    placement.signals.set_service_series(namespace, (6_000.0, 6_000.0, 6_000.0))
    await create_config(placement, namespace, migrating_config("cap", "llm"))
    kubectl.apply(deployment("llm", 0))
    await wait_snapshot(placement, namespace, "llm")
    kubectl.run("scale", "deployment/llm", "--replicas=3")
    pods = await wait_scheduled(kubectl, "llm", 3)
    racks = rack_of(dev_cluster)
    assert sorted(racks[p["spec"]["nodeName"]] for p in pods) == ["rack-a"] * 3

    await wait_ready(kubectl, "llm", 3)
    placement.signals.set(
        RackSignals("rack-a", watts=30_000.0, inlet_c=27.0),
        RackSignals("rack-b", watts=12_000.0, inlet_c=21.0),
    )
    return racks


async def test_migration_moves_a_replica_off_the_hot_rack(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str, placement: Placement
) -> None:
    """Issue 19: a replica placed well when it started is moved once its rack turns hot. The
    move is an eviction through the real API (the ReplicaSet controller starts the
    replacement), and the webhook steers the replacement to the cooler rack."""
    racks = await place_three_on_rack_a(dev_cluster, kubectl, namespace, placement)

    async def on_racks() -> list[str]:
        return await racks_of_live_pods(kubectl, racks, "llm")

    # 2 kW leave rack-a (-1.0 °C there) for rack-b (+0.4 °C there): 27 -> 26.2 °C.
    found = await eventually(on_racks, lambda r: "rack-b" in r, timeout_s=90)
    assert len(found) <= 3
    events = kubectl.get_json("events", "--field-selector", "reason=ReplicaMigrated")["items"]
    (event,) = [e for e in events if e["involvedObject"]["name"] == "cap"]
    assert "from rack-a to rack-b" in event["message"]
    assert "from 27.00 to 26.20 °C" in event["message"]
    # One move per interval (30 s): the other two stay on rack-a meanwhile.
    await asyncio.sleep(5.0)
    assert (await on_racks()).count("rack-a") == 2


async def test_migration_waits_for_the_disruption_budget(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str, placement: Placement
) -> None:
    """A PodDisruptionBudget that allows no disruption holds every replica where it is: the
    Eviction API refuses (429) and nothing is deleted."""
    kubectl.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "llm"},
            "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "llm"}}},
        }
    )
    racks = await place_three_on_rack_a(dev_cluster, kubectl, namespace, placement)
    await asyncio.sleep(8.0)  # eight rounds: the first attempt is refused, the next wait
    pods = await asyncio.to_thread(scheduled_pods, kubectl, "llm")
    assert sorted(racks[p["spec"]["nodeName"]] for p in pods) == ["rack-a"] * 3
    assert not any(p["metadata"].get("deletionTimestamp") for p in pods)
    events = kubectl.get_json("events", "--field-selector", "reason=ReplicaMigrated")["items"]
    assert not [e for e in events if e["involvedObject"]["name"] == "cap"]
