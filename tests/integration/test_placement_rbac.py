"""Power capping and rack placement as deployed, with deploy/base's RBAC, which grants no write
to any pod: `patch` on pods (for `controller.kubernetes.io/pod-deletion-cost`) comes only from a
per-namespace Role (deploy/overlays/pod-deletion-cost, Helm `rbac.podDeletionCost.namespaces`).

The controllers run in a real manager as the controller's ServiceAccount with a real bound
token, so the API server refuses the deletion-cost patches with a real 403. Capping and the
rest of placement keep working, the config says what is missing and how to grant it (one
Warning Event, not one per reconcile), and once the overlay's Role is applied in the namespace
the deletion costs follow without a restart.

Rack signals come from a static source the test sets; everything else is the real thing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.kube.resources import NODES
from climatik.kube.store import index_by_namespace
from climatik.reconcilers.placement import PlacementReconciler
from climatik.reconcilers.placement_deletion_costs import DELETION_COST_ANNOTATION
from climatik.reconcilers.placement_webhook import PlacementSnapshot
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.settings import PlacementSettings
from climatik.runtime.capping import power_cap_controller, workload_caches
from climatik.runtime.manager import Manager
from climatik.runtime.placement import placement_metrics, watch_recirculation
from climatik.runtime.reconcile import (
    Controller,
    ControllerContext,
    ControllerFactory,
    enqueue_handlers,
)
from climatik.sources.cooling import CoolingController, DryRunCoolingController
from climatik.sources.racks import RackSignals, RackSignalSource, StaticRackSignalSource
from tests.integration.conftest import SESSION_TOPOLOGY, Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.service_accounts import (
    CONTROLLER_SA,
    DEPLOY,
    apply_all,
    delete_cluster_scoped,
    moved_rbac,
    render,
    token_kubeconfig,
)
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
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

RACK_KEY = SESSION_TOPOLOGY.rack_label_key
CONTROLLER_RBAC = {
    ("ServiceAccount", CONTROLLER_SA),
    ("ClusterRole", "climatik-controller"),
    ("ClusterRoleBinding", "climatik-controller"),
}
DELETION_COST_RBAC = {
    ("Role", "climatik-pod-deletion-cost"),
    ("RoleBinding", "climatik-pod-deletion-cost"),
}
RETRY_S = 2.0


@dataclasses.dataclass(frozen=True)
class Deployed:
    kubeconfig: Path
    suffix: str


@pytest.fixture
def deployed(dev_cluster: ClusterInfo, namespace: str, tmp_path: Path) -> Iterator[Deployed]:
    """The controller's ServiceAccount with deploy/base's ClusterRole, in the test namespace."""
    admin = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, namespace)
    suffix = uuid.uuid4().hex[:8]
    objs = moved_rbac(
        render(dev_cluster, DEPLOY / "base"),
        CONTROLLER_RBAC,
        {"climatik-system": namespace},
        suffix,
    )
    try:
        apply_all(dev_cluster, objs, namespace)
        kubeconfig = token_kubeconfig(admin, CONTROLLER_SA, namespace, tmp_path / "sa.yaml")
        yield Deployed(kubeconfig, suffix)
    finally:
        delete_cluster_scoped(admin, objs)


def placement_factory(signals: RackSignalSource, snapshot: PlacementSnapshot) -> ControllerFactory:
    """The placement controller as climatik/runtime/placement.py wires it, on static signals."""

    def factory(ctx: ControllerContext) -> Controller:
        queue = ctx.new_queue("placement")
        configs = ctx.informer(POWER_CAPPING_CONFIGS, indexers={"namespace": index_by_namespace})
        configs.add_handlers(enqueue_handlers(queue))
        cooling = DryRunCoolingController()

        async def source_for(_config: Any) -> RackSignalSource:
            return signals

        async def cooling_for(_config: Any) -> CoolingController:
            return cooling

        settings = PlacementSettings(interval_s=1.0, deletion_cost_retry_s=RETRY_S)
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


@dataclasses.dataclass
class Running:
    manager: Manager
    signals: StaticRackSignalSource
    snapshot: PlacementSnapshot


@pytest.fixture
async def controllers(
    dev_cluster: ClusterInfo,
    namespace: str,
    deployed: Deployed,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Running]:
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__ENABLED", "false")
    signals, snapshot = StaticRackSignalSource(), PlacementSnapshot()
    factories = [power_cap_controller, placement_factory(signals, snapshot)]
    as_controller = dataclasses.replace(dev_cluster, kubeconfig=deployed.kubeconfig)
    async with running_manager(as_controller, namespace, factories) as manager:
        yield Running(manager, signals, snapshot)


def spread_over_racks(manifest: dict[str, Any]) -> dict[str, Any]:
    labels = manifest["spec"]["selector"]["matchLabels"]
    manifest["spec"]["template"]["spec"]["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": RACK_KEY,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": labels},
        }
    ]
    return manifest


async def deletion_costs(kubectl: Kubectl) -> dict[str, str | None]:
    pods = (await kubectl_json(kubectl, "pods", "-l", "app=llm"))["items"]
    return {
        p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(
            DELETION_COST_ANNOTATION
        )
        for p in pods
    }


async def test_without_pod_patch_rights_capping_and_placement_work_and_say_what_is_missing(
    controllers: Running,
    dev_cluster: ClusterInfo,
    kubectl: Kubectl,
    namespace: str,
    deployed: Deployed,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    as_controller = Kubectl(dev_cluster.kubectl, deployed.kubeconfig, namespace)
    refused = as_controller.run("auth", "can-i", "patch", "pods", check=False)
    assert refused.stdout.strip() == "no", "deploy/base must not grant patch on pods"
    no_eviction = as_controller.run(
        "auth", "can-i", "create", "pods", "--subresource=eviction", check=False
    )
    assert no_eviction.stdout.strip() == "no", "deploy/base must not grant evictions"
    # rack-a hot but within its limit: its replicas are the ones to remove first on scale-in.
    controllers.signals.set(
        RackSignals("rack-a", watts=30_000.0, inlet_c=28.5),
        RackSignals("rack-b", watts=12_000.0, inlet_c=21.0),
    )
    kubectl.apply(spread_over_racks(deployment("llm", 4, {"app": "llm"})))
    kubectl.apply(scaled_object("llm", "llm", min_replicas=1, max_replicas=10))
    pods = await running_pods(kubectl, "llm", 4)
    await serve_watts(metrics_exporter, namespace, pods, 330)  # 1320 W of 1000: over the cap
    config = capping_config("cap", prometheus.url, [so_ref("llm")], policy="Threshold", cap_w=1000)
    config["spec"]["rackConstraints"] = [
        {"rackId": "rack-a", "maxPower": 40_000, "maxTemperature": 30},
        {"rackId": "rack-b", "maxPower": 40_000, "maxTemperature": 30},
    ]
    config["spec"]["placement"] = {"mode": "Webhook", "rackLabelKey": RACK_KEY}
    config["spec"]["cooling"] = {"mode": "DryRun", "redlineCelsius": 27}
    kubectl.apply(config)

    # Capping works: the ceiling comes down from the user's 10.
    await ceiling_becomes(kubectl, "llm", 4)

    # Placement works: new pods are steered to the cool rack (the webhook's snapshot) ...
    async def published() -> Any:
        return controllers.snapshot.lookup(namespace, "llm")

    found = await eventually(published, lambda f: f is not None)
    assert found is not None
    assert found.preferred[0][0] == "rack-b"
    # ... and the config says scale-in order is unavailable, and how to grant it. The two
    # reconcilers write their conditions independently: wait for both, not the first.
    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (
            "Scale-in order is unavailable"
            in condition(obj, "RacksWithinLimits").get("message", "")
            and condition(obj, "Capping") != {}
        ),
    )
    racks = condition(pcc, "RacksWithinLimits")
    assert racks["reason"] == "WithinLimits"
    assert f"patch pods in namespace {namespace}" in racks["message"]
    assert "rbac.podDeletionCost.namespaces" in racks["message"]
    assert condition(pcc, "Capping").get("status") == "True"
    assert controllers.manager.ready()  # every cache synced: nothing else was refused
    registry = controllers.manager.metrics.registry
    allowed = registry.get_sample_value(
        "climatik_placement_deletion_costs_allowed", {"config": f"{namespace}/cap"}
    )
    assert allowed == 0.0

    await asyncio.sleep(3 * RETRY_S)  # several retries later: still one Warning
    events = await kubectl_json(
        kubectl,
        "events",
        "--field-selector",
        "involvedObject.name=cap,reason=DeletionCostForbidden",
    )
    (warning,) = events["items"]
    assert (warning["type"], warning.get("count", 1)) == ("Warning", 1)
    assert set((await deletion_costs(kubectl)).values()) == {None}

    # The documented fix: the overlay's Role and RoleBinding, in this namespace.
    grant = moved_rbac(
        render(dev_cluster, DEPLOY / "overlays" / "pod-deletion-cost"),
        DELETION_COST_RBAC,
        {"llm": namespace, "climatik-system": namespace},
        deployed.suffix,
    )
    apply_all(dev_cluster, grant, namespace)
    costs = await eventually(
        lambda: deletion_costs(kubectl),
        lambda c: len(c) == 4 and None not in c.values(),
        timeout_s=30,
    )
    rack_of = {n: r for r, nodes in dev_cluster.nodes_by_rack.items() for n in nodes}
    by_pod = {p["metadata"]["name"]: rack_of[p["spec"]["nodeName"]] for p in pods}
    hot = {costs[name] for name, rack in by_pod.items() if rack == "rack-a"}
    cool = {costs[name] for name, rack in by_pod.items() if rack == "rack-b"}
    assert max(int(c or 0) for c in hot) < min(int(c or 0) for c in cool), costs
    await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: "Scale-in order" not in condition(obj, "RacksWithinLimits").get("message", ""),
    )
    # Granted in this namespace only.
    elsewhere = as_controller.run("auth", "can-i", "patch", "pods", "-n", "default", check=False)
    assert elsewhere.stdout.strip() == "no"
    # The same Role lets placement.migration evict here (and, again, nowhere else).
    evict = as_controller.run(
        "auth", "can-i", "create", "pods", "--subresource=eviction", check=False
    )
    assert evict.stdout.strip() == "yes"
    evict_elsewhere = as_controller.run(
        "auth", "can-i", "create", "pods", "--subresource=eviction", "-n", "default", check=False
    )
    assert evict_elsewhere.stdout.strip() == "no"
