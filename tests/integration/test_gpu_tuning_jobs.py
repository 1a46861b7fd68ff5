"""GPU tuning Jobs on the real control plane: created when power crosses the trigger, once per
node, pinned to the node; a result written by the real `climatik gpu-tune` entrypoint (on
simulated GPUs, since the cluster's nodes are kwok's) updates the power-cap controller's watts
per replica at once.

The controllers run as a ServiceAccount holding exactly deploy/base's RBAC (rendered by
kustomize, moved into this test's namespaces), and the tuning Jobs live in a namespace of their
own, as installed: the controller lists and watches Jobs and ConfigMaps there only, and may not
anywhere else. The result is written as the tuner's ServiceAccount, with its Role alone.

Tuning Jobs run only for configs of the namespaces the controller's
`CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES` names (none by default; here the test's own, unless a
test says otherwise), in either mode, since even a recommending sweep locks the node's clocks:
elsewhere no Job is created, and the config is told why.

Switched off as deploy/overlays/no-gpu-tuning installs it (its RBAC, without the tuning
namespace or any Role there, and its `CLIMATIK_GPU_TUNING__ENABLED=false`), the built-in
controllers still cap power, and a config asking for tuning is told why none happens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.domain.gpu import TUNE_NODE_LABEL, result_configmap_name
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.resources import CONFIGMAPS, JOBS
from climatik.runtime.capping import gpu_tuning_controller, power_cap_controller
from climatik.runtime.controllers import controller_factories
from climatik.runtime.manager import Manager
from climatik.runtime.settings import ControllerSettings
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.service_accounts import (
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
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

BASE = DEPLOY / "base"
NO_GPU_TUNING = DEPLOY / "overlays" / "no-gpu-tuning"
CONTROLLER_SA = "climatik-controller"
TUNER_SA = "climatik-gpu-tuner"
# deploy/base's objects for the controller's and the tuner's permissions (kind, name).
RBAC_OBJECTS = {
    ("ServiceAccount", CONTROLLER_SA),
    ("ClusterRole", "climatik-controller"),
    ("ClusterRoleBinding", "climatik-controller"),
    ("Role", "climatik-gpu-tuning-controller"),
    ("RoleBinding", "climatik-gpu-tuning-controller"),
    ("ServiceAccount", TUNER_SA),
    ("Role", "climatik-gpu-tune"),
    ("RoleBinding", "climatik-gpu-tune"),
}
# What deploy/overlays/no-gpu-tuning keeps of them: the controller's own, none in the tuning
# namespace.
CONTROLLER_RBAC_OBJECTS = {
    ("ServiceAccount", CONTROLLER_SA),
    ("ClusterRole", "climatik-controller"),
    ("ClusterRoleBinding", "climatik-controller"),
}


@dataclasses.dataclass(frozen=True)
class Accounts:
    """This test's tuning namespace and a kubeconfig for each ServiceAccount."""

    tuning_ns: str
    controller: Path
    tuner: Path


@pytest.fixture
def accounts(dev_cluster: ClusterInfo, namespace: str, tmp_path: Path) -> Iterator[Accounts]:
    """The controller's ServiceAccount in the test namespace (its own namespace and the one it
    watches), the tuner's in a tuning namespace of its own, both with deploy/base's RBAC."""
    admin = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, namespace)
    tuning_ns = f"{namespace}-gpu"
    suffix = uuid.uuid4().hex[:8]
    objs = moved_rbac(
        render(dev_cluster, BASE),
        RBAC_OBJECTS,
        {"climatik-system": namespace, "climatik-gpu-tuning": tuning_ns},
        suffix,
    )
    admin.run("create", "namespace", tuning_ns)
    try:
        apply_all(dev_cluster, objs, namespace)
        yield Accounts(
            tuning_ns,
            controller=token_kubeconfig(admin, CONTROLLER_SA, namespace, tmp_path / "sa.yaml"),
            tuner=token_kubeconfig(admin, TUNER_SA, tuning_ns, tmp_path / "tuner.yaml"),
        )
    finally:
        delete_cluster_scoped(admin, objs)
        admin.run("delete", "namespace", tuning_ns, "--wait=false", check=False)


@pytest.fixture
def allowed_namespaces(namespace: str) -> list[str]:
    """What the controller's CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES names: the test's own
    namespace, unless a test parametrizes this."""
    return [namespace]


@pytest.fixture
async def controllers(
    dev_cluster: ClusterInfo,
    namespace: str,
    accounts: Accounts,
    allowed_namespaces: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Manager]:
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES", json.dumps(allowed_namespaces))
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__INTERVAL_S", "1")
    monkeypatch.setenv("CLIMATIK_CAPPING__TUNING_GRACE_S", "3")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__JOB_NAMESPACE", accounts.tuning_ns)
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__IMAGE", "climatik:test")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__RUNTIME_CLASS", "")
    factories = [power_cap_controller, gpu_tuning_controller]
    as_controller = dataclasses.replace(dev_cluster, kubeconfig=accounts.controller)
    async with running_manager(as_controller, namespace, factories) as manager:
        yield manager


@pytest.fixture
async def controllers_without_tuning(
    dev_cluster: ClusterInfo, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Manager]:
    """Every built-in controller the switch leaves on, as deploy/overlays/no-gpu-tuning runs
    them: its CLIMATIK_GPU_TUNING__ENABLED, and its RBAC alone (no tuning namespace at all)."""
    rendered = render(dev_cluster, NO_GPU_TUNING)
    (controller,) = [
        o
        for o in rendered
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "climatik-controller"
    ]
    env = {
        e["name"]: e.get("value")
        for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["CLIMATIK_GPU_TUNING__ENABLED"] == "false"
    assert not [o for o in rendered if o["metadata"].get("namespace") == "climatik-gpu-tuning"]
    admin = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, namespace)
    suffix = uuid.uuid4().hex[:8]
    objs = moved_rbac(rendered, CONTROLLER_RBAC_OBJECTS, {"climatik-system": namespace}, suffix)
    try:
        apply_all(dev_cluster, objs, namespace)
        kubeconfig = token_kubeconfig(admin, CONTROLLER_SA, namespace, tmp_path / "sa.yaml")
        monkeypatch.setenv("CLIMATIK_GPU_TUNING__ENABLED", env["CLIMATIK_GPU_TUNING__ENABLED"])
        # A namespace that does not exist: nothing may be listed or watched there.
        monkeypatch.setenv("CLIMATIK_GPU_TUNING__JOB_NAMESPACE", f"{namespace}-gpu")
        monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
        as_controller = dataclasses.replace(dev_cluster, kubeconfig=kubeconfig)
        async with running_manager(
            as_controller, namespace, controller_factories(ControllerSettings())
        ) as manager:
            yield manager
    finally:
        delete_cluster_scoped(admin, objs)


async def jobs(kubectl: Kubectl) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await kubectl_json(kubectl, "jobs", "-l", TUNE_NODE_LABEL))[
        "items"
    ]
    return items


async def _status(call: Awaitable[Any]) -> int:
    """The HTTP status the API server answers a call with."""
    try:
        await call
    except ApiError as error:
        return error.status
    return 200


async def test_the_controller_reads_jobs_and_configmaps_in_the_tuning_namespace_only(
    dev_cluster: ClusterInfo, accounts: Accounts, namespace: str
) -> None:
    client = await KubeClient.from_config(str(accounts.controller))
    try:
        for resource in (JOBS, CONFIGMAPS):
            assert await _status(client.list(resource, accounts.tuning_ns)) == 200
            assert await _status(client.list(resource, namespace)) == 403
            assert await _status(client.list(resource, "default")) == 403
            assert await _status(client.list(resource)) == 403  # every namespace at once
    finally:
        await client.close()
    # The informers watch too; the API server answers for the account itself.
    as_controller = Kubectl(dev_cluster.kubectl, accounts.controller, namespace)
    for kind in ("jobs.batch", "configmaps"):
        allowed = as_controller.run(
            "auth", "can-i", "watch", kind, f"--namespace={accounts.tuning_ns}", check=False
        )
        assert allowed.stdout.strip() == "yes", allowed.stderr
        for elsewhere in (f"--namespace={namespace}", "--all-namespaces"):
            refused = as_controller.run("auth", "can-i", "watch", kind, elsewhere, check=False)
            assert refused.stdout.strip() == "no", (kind, elsewhere, refused.stderr)


def watts_per_replica(obj: dict[str, Any]) -> float | None:
    targets = (obj.get("status") or {}).get("targets") or []
    value = targets[0].get("wattsPerReplica") if targets else None
    return float(value) if value is not None else None


async def test_power_crossing_the_trigger_starts_one_job_per_node_and_results_feed_back(
    controllers: Manager,
    dev_cluster: ClusterInfo,
    kubectl: Kubectl,
    namespace: str,
    accounts: Accounts,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    tuning = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, accounts.tuning_ns)
    kubectl.apply(deployment("llm", 2, {"app": "llm"}))
    kubectl.apply(scaled_object("llm", "llm", min_replicas=1, max_replicas=10))
    pods = await running_pods(kubectl, "llm", 2)
    nodes = sorted({p["spec"]["nodeName"] for p in pods})
    await serve_watts(metrics_exporter, namespace, pods, 200)  # 400 W of 1000: below 80 %
    config = capping_config("cap", prometheus.url, [so_ref("llm")], policy="Headroom", cap_w=1000)
    config["spec"]["gpuTuning"] = {"mode": "Apply", "minIntervalSeconds": 3600}
    kubectl.apply(config)
    await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: watts_per_replica(obj) is not None,
    )
    await asyncio.sleep(3)
    assert await jobs(tuning) == [], "no tuning below the trigger"

    await serve_watts(metrics_exporter, namespace, pods, 420)  # 840 W: at 84 % of the cap
    created = await eventually(
        lambda: jobs(tuning), lambda items: len(items) == len(nodes), timeout_s=30
    )
    await asyncio.sleep(4)  # several intervals later: still one Job per node
    assert len(await jobs(tuning)) == len(nodes)
    by_node = {j["spec"]["template"]["spec"]["nodeName"]: j for j in created}
    assert sorted(by_node) == nodes
    container = created[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["gpu-tune", "--mode", "apply"]
    assert container["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN"]

    before = watts_per_replica(await kubectl_json(kubectl, "pcc", "cap"))
    assert before is not None
    # The Job locks the chosen clock, then writes its result: the power drops first. Without
    # the result the estimate would only decay towards the new power over minutes.
    expected_scale = 0.6
    await serve_watts(metrics_exporter, namespace, pods, 420 * expected_scale)
    # What each node's Job would do: the real entrypoint, on simulated GPUs. A result belongs
    # to its node: it rescales the replicas there, so the target's watts per replica move by
    # the share of its replicas on the node.
    # The estimate also decays towards the lower power between results (2 % of the gap a
    # round, while a Job's process starts), so each result is checked against the estimate
    # read just before its Job, not one compounded from the first.
    expected = before
    for node in nodes:
        now = watts_per_replica(await kubectl_json(kubectl, "pcc", "cap")) or expected
        scale = await run_tuning_job(accounts, node)
        assert scale == pytest.approx(expected_scale, abs=0.1)
        on_node = sum(1 for p in pods if p["spec"]["nodeName"] == node) / len(pods)
        share = 1.0 + on_node * (scale - 1.0)
        expected *= share
        after = await eventually(
            lambda: kubectl_json(kubectl, "pcc", "cap"),
            rescaled_to(now * share, before),
            timeout_s=15,
        )
        assert watts_per_replica(after) == pytest.approx(now * share, rel=0.05)
    # Every replica's node tuned: the whole target draws about the tuned share (results taken
    # in separate reconciles compound, a few per cent above the exact mean).
    assert expected == pytest.approx(before * expected_scale, rel=0.15)


def rescaled_to(expected_w: float, before_w: float) -> Callable[[dict[str, Any]], bool]:
    """The config's watts per replica has come down to about `expected_w`."""
    return lambda obj: (watts_per_replica(obj) or before_w) <= expected_w * 1.05


async def run_tuning_job(accounts: Accounts, node: str) -> float:
    """Run `climatik gpu-tune` as the node's Job would (simulated GPUs, applying, writing the
    result ConfigMap as the tuner's ServiceAccount); the watts scale it measured."""
    completed = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "climatik",
            "gpu-tune",
            "--simulate",
            "8",
            "--mode",
            "apply",
            "--settle-s",
            "0",
            "--measure-s",
            "0.01",
            "--result-configmap",
            f"{accounts.tuning_ns}/{result_configmap_name(node)}",
            "--kubeconfig",
            str(accounts.tuner),
        ],
        env={**os.environ, "NODE_NAME": node},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    return float(document["choice"]["after"]["watts"] / document["choice"]["before"]["watts"])


@pytest.mark.parametrize("allowed_namespaces", [["another-team"]])
async def test_tuning_in_a_namespace_not_allowed_creates_no_job_and_says_so(
    controllers: Manager,
    dev_cluster: ClusterInfo,
    kubectl: Kubectl,
    namespace: str,
    accounts: Accounts,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    tuning = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, accounts.tuning_ns)
    kubectl.apply(deployment("llm", 2, {"app": "llm"}))
    kubectl.apply(scaled_object("llm", "llm", min_replicas=1, max_replicas=10))
    pods = await running_pods(kubectl, "llm", 2)
    await serve_watts(metrics_exporter, namespace, pods, 420)  # 840 W: at 84 % of the cap
    config = capping_config("cap", prometheus.url, [so_ref("llm")], policy="Headroom", cap_w=1000)
    # Recommend too: its sweep locks every GPU clock of the node while it runs.
    config["spec"]["gpuTuning"] = {"mode": "Recommend", "minIntervalSeconds": 3600}
    kubectl.apply(config)

    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (
            (obj.get("status") or {}).get("measuredPowerWatts", 0) >= 800
            and condition(obj, "GpuTuning").get("reason") == "TuningNotAllowed"
        ),
        timeout_s=30,
    )
    told = condition(pcc, "GpuTuning")
    assert told["status"] == "False"
    assert "CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES" in told["message"]
    assert f"namespace {namespace}" in told["message"]
    # Capping goes on as usual.
    assert condition(pcc, "MetricsAvailable")["status"] == "True"
    # Past the trigger for several reconciles at a 1 s interval (an allowed namespace gets its
    # Jobs within a second or two): none in the tuning namespace, nor anywhere the test owns.
    await asyncio.sleep(4)
    assert await jobs(tuning) == []
    assert await jobs(kubectl) == []

    # Asking for Apply instead is a new generation: told again, still no Job.
    config["spec"]["gpuTuning"]["mode"] = "Apply"
    kubectl.apply(config)
    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "GpuTuning").get("observedGeneration") == 2,
    )
    assert condition(pcc, "GpuTuning")["reason"] == "TuningNotAllowed"
    await asyncio.sleep(3)
    assert await jobs(tuning) == []
    events = await kubectl_json(
        kubectl,
        "events",
        "--field-selector",
        "involvedObject.name=cap,reason=GpuTuningNotAllowed",
    )
    warnings = events["items"]
    assert [(w["type"], w.get("count", 1)) for w in warnings] == [("Warning", 1)] * 2, warnings
    assert all("gpuTuning.allowedNamespaces" in w["message"] for w in warnings)
    assert not (
        await kubectl_json(
            kubectl, "events", "--field-selector", "involvedObject.name=cap,reason=GpuTuningStarted"
        )
    )["items"]


async def test_with_gpu_tuning_off_as_the_overlay_installs_it_capping_works_and_says_so(
    controllers_without_tuning: Manager,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    manager = controllers_without_tuning
    assert "gpu-tuning" not in {c.name for c in manager.controllers}
    assert "power-cap" in {c.name for c in manager.controllers}
    assert not [
        i for i in manager.informers if i.resource == JOBS or i.namespace not in (namespace, None)
    ]
    kubectl.apply(deployment("llm", 3, {"app": "llm"}))
    kubectl.apply(scaled_object("llm", "llm", min_replicas=1, max_replicas=10))
    pods = await running_pods(kubectl, "llm", 3)
    await serve_watts(metrics_exporter, namespace, pods, 330)  # 990 W of 1000: hold at current
    config = capping_config("cap", prometheus.url, [so_ref("llm")], policy="Threshold", cap_w=1000)
    config["spec"]["gpuTuning"] = {"mode": "Apply"}
    kubectl.apply(config)

    await ceiling_becomes(kubectl, "llm", 3)  # from the user's 10
    pcc = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "Capping").get("status") == "True",
    )
    assert condition(pcc, "MetricsAvailable")["status"] == "True"
    assert condition(pcc, "Ready")["status"] == "True"
    tuning = condition(pcc, "GpuTuning")
    assert (tuning.get("status"), tuning.get("reason")) == ("False", "DisabledInController"), pcc
    assert "CLIMATIK_GPU_TUNING__ENABLED=false" in tuning["message"]
    # Every cache synced: the overlay's RBAC refuses nothing the controllers ask for.
    assert manager.ready()

    await asyncio.sleep(3)  # three more reconciles at a 1 s interval
    events = await kubectl_json(
        kubectl,
        "events",
        "--field-selector",
        "involvedObject.name=cap,reason=GpuTuningDisabledInController",
    )
    (warning,) = events["items"]
    assert (warning["type"], warning.get("count", 1)) == ("Warning", 1)
    assert "CLIMATIK_GPU_TUNING__ENABLED=false" in warning["message"]
