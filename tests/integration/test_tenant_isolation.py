"""Tenant isolation of power capping, against a real API server (issue 15).

The controller runs cluster-wide and acts on other teams' workloads: what one namespace writes
must never move another namespace's ceilings, a user's own edits win over remembered values, and
ceilings are given back only by the config's own records.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.domain.config import TargetKind
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.resources import SCALED_OBJECTS
from climatik.reconcilers.actuation import ceiling_patch
from climatik.reconcilers.resources import (
    APPLIED_MAX_ANNOTATION,
    CAPPED_BY_ANNOTATION,
    GIVE_BACK_FINALIZER,
    USER_MAX_ANNOTATION,
)
from climatik.reconcilers.targets import ResolvedTarget
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
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def other_kubectl(dev_cluster: ClusterInfo) -> Iterator[Kubectl]:
    """kubectl bound to a second fresh namespace: another tenant."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, "default")
    admin.run("create", "namespace", name)
    yield Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, name)
    admin.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def cluster_wide(
    dev_cluster: ClusterInfo, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Manager]:
    """The power-cap controller watching every namespace, as it runs in production."""
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    async with running_manager(dev_cluster, None, [power_cap_controller]) as manager:
        yield manager


async def _capped(
    kubectl: Kubectl, namespace: str, exporter: ExporterHandle, prometheus: PrometheusServer
) -> list[dict[str, Any]]:
    """`web` (3 pods, max 10) capped by config `cap` to 3 under the Threshold rule."""
    kubectl.apply(deployment("web", 3, {"app": "web"}))
    kubectl.apply(scaled_object("web", "web", min_replicas=1, max_replicas=10))
    pods = await running_pods(kubectl, "web", 3)
    await serve_watts(exporter, namespace, pods, 330)  # 990 W of 1000: ceiling = current
    kubectl.apply(
        capping_config("cap", prometheus.url, [so_ref("web")], policy="Threshold", cap_w=1000)
    )
    await ceiling_becomes(kubectl, "web", 3)
    return pods


async def test_an_annotation_in_another_namespace_moves_nothing(
    cluster_wide: Manager,
    kubectl: Kubectl,
    other_kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    """Defect 1: evil/web annotated `capped-by: prod/no-such-config`, remembered max 500, made
    the give-back path patch prod/web from 10 to 500."""
    prod, evil = namespace, other_kubectl.namespace
    kubectl.apply(deployment("web", 1, {"app": "web"}))
    kubectl.apply(scaled_object("web", "web", min_replicas=1, max_replicas=10))
    forged = scaled_object("web", "web", min_replicas=1, max_replicas=2)
    forged["metadata"]["annotations"] = {
        CAPPED_BY_ANNOTATION: f"{prod}/no-such-config",
        USER_MAX_ANNOTATION: "500",
    }
    other_kubectl.apply(deployment("web", 1, {"app": "web"}))
    other_kubectl.apply(forged)
    # Evil's own config: proof the controller is reconciling that namespace meanwhile.
    await _capped_in(other_kubectl, evil, metrics_exporter, prometheus)
    forged["metadata"]["annotations"][CAPPED_BY_ANNOTATION] = f"{prod}/also-missing"
    other_kubectl.apply(forged)  # another event on the forged object
    await asyncio.sleep(3)  # three control periods

    victim = await kubectl_json(kubectl, "scaledobject", "web")
    assert victim["spec"]["maxReplicaCount"] == 10
    assert USER_MAX_ANNOTATION not in (victim["metadata"].get("annotations") or {})
    theirs = await kubectl_json(other_kubectl, "scaledobject", "web")
    assert theirs["spec"]["maxReplicaCount"] == 2, "an annotation alone gives nothing back"


async def _capped_in(
    kubectl: Kubectl, namespace: str, exporter: ExporterHandle, prometheus: PrometheusServer
) -> None:
    kubectl.apply(deployment("batch", 2, {"app": "batch"}))
    kubectl.apply(scaled_object("batch", "batch", min_replicas=1, max_replicas=8))
    pods = await running_pods(kubectl, "batch", 2)
    await serve_watts(exporter, namespace, pods, 480)  # 960 W of 1000: hold at 2
    kubectl.apply(
        capping_config("cap", prometheus.url, [so_ref("batch")], policy="Threshold", cap_w=1000)
    )
    await ceiling_becomes(kubectl, "batch", 2)


async def test_deleting_a_config_gives_back_what_it_holds_then_lets_go(
    cluster_wide: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    await _capped(kubectl, namespace, metrics_exporter, prometheus)
    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: bool((obj.get("status") or {}).get("heldTargets")),
    )
    assert pcc["status"]["heldTargets"] == [{"kind": "ScaledObject", "name": "web"}]
    assert GIVE_BACK_FINALIZER in pcc["metadata"]["finalizers"]

    await asyncio.to_thread(kubectl.run, "delete", "pcc", "cap", "--wait=false")
    so = await ceiling_becomes(kubectl, "web", 10)
    annotations = so["metadata"].get("annotations") or {}
    assert not {USER_MAX_ANNOTATION, APPLIED_MAX_ANNOTATION, CAPPED_BY_ANNOTATION} & set(
        annotations
    )
    await eventually(
        lambda: asyncio.to_thread(kubectl.run, "get", "pcc", "cap", check=False),
        lambda result: result.returncode != 0 and "NotFound" in result.stderr,
    )


async def test_a_target_dropped_from_the_spec_is_given_back(
    cluster_wide: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    await _capped(kubectl, namespace, metrics_exporter, prometheus)
    kubectl.apply(scaled_object("other", "web", min_replicas=1, max_replicas=5))
    kubectl.apply(
        capping_config("cap", prometheus.url, [so_ref("other")], policy="Threshold", cap_w=1000)
    )
    await ceiling_becomes(kubectl, "web", 10)
    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (
            {"kind": "ScaledObject", "name": "web"}
            not in ((obj.get("status") or {}).get("heldTargets") or [])
        ),
    )
    assert condition(pcc, "Ready")["status"] == "True"


async def test_a_ceiling_the_user_lowers_during_a_cap_is_theirs(
    cluster_wide: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    """Defect 8: lowering the ScaledObject's max to 2 while capped, then release, restored 10."""
    pods = await _capped(kubectl, namespace, metrics_exporter, prometheus)
    await asyncio.to_thread(
        kubectl.run,
        "patch",
        "scaledobject",
        "web",
        "--type=merge",
        "-p",
        '{"spec": {"maxReplicaCount": 2}}',
    )
    await serve_watts(metrics_exporter, namespace, pods, 50)  # 150 W: release
    so = await eventually(
        lambda: kubectl_json(kubectl, "scaledobject", "web"),
        lambda obj: CAPPED_BY_ANNOTATION not in (obj["metadata"].get("annotations") or {}),
    )
    assert so["spec"]["maxReplicaCount"] == 2
    await asyncio.sleep(2)
    so = await kubectl_json(kubectl, "scaledobject", "web")
    assert so["spec"]["maxReplicaCount"] == 2, "a release must not undo the user's edit"


async def test_deployment_name_with_another_scaled_object_name_is_ready(
    cluster_wide: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    """Defect 7: a config using deploymentName whose ScaledObject has another name reported
    Ready=False and a TargetMissing Warning every 2 s while capping worked."""
    kubectl.apply(deployment("llm", 2, {"app": "llm"}))
    kubectl.apply(scaled_object("llm-autoscaler", "llm", min_replicas=1, max_replicas=8))
    pods = await running_pods(kubectl, "llm", 2)
    await serve_watts(metrics_exporter, namespace, pods, 480)
    config = capping_config("cap", prometheus.url, [], policy="Threshold", cap_w=1000)
    del config["spec"]["scaleObjectRef"]
    config["spec"]["deploymentName"] = "llm"
    kubectl.apply(config)
    await ceiling_becomes(kubectl, "llm-autoscaler", 2)
    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "Ready").get("status") == "True",
    )
    assert condition(pcc, "TargetsResolved")["status"] == "True"
    events = await kubectl_json(kubectl, "events", "--field-selector", "reason=TargetMissing")
    assert events["items"] == []


async def test_a_ceiling_write_on_stale_state_is_refused(
    dev_cluster: ClusterInfo, kubectl: Kubectl, namespace: str
) -> None:
    """Fencing: a patch prepared from an object that has moved on since (a paused leader's
    in-flight write, say) is refused by the API server instead of landing."""
    kubectl.apply(scaled_object("web", "web", min_replicas=1, max_replicas=10))
    stale = await kubectl_json(kubectl, "scaledobject", "web")
    await asyncio.to_thread(
        kubectl.run,
        "patch",
        "scaledobject",
        "web",
        "--type=merge",
        "-p",
        '{"spec": {"maxReplicaCount": 6}}',
    )
    target = ResolvedTarget(
        kind=TargetKind.SCALED_OBJECT,
        name="web",
        namespace=namespace,
        min_replicas=1,
        applied_max_replicas=10,
        user_max_replicas=10,
        current_replicas=0,
        pods=(),
        pod_nodes=(),
        obj=stale,
    )
    resource, patch = ceiling_patch(target, 3, f"{namespace}/cap")
    client = await KubeClient.from_config(str(dev_cluster.kubeconfig))
    try:
        with pytest.raises(ApiError) as refused:
            await client.merge_patch(resource, "web", patch, namespace)
        assert refused.value.is_conflict
        fresh = await client.get(SCALED_OBJECTS, "web", namespace)
    finally:
        await client.close()
    assert fresh["spec"]["maxReplicaCount"] == 6
