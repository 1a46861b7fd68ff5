"""The built-in controllers' informers, as wired into a manager: Jobs and ConfigMaps are only
ever listed and watched in the GPU-tuning namespace, whatever namespace the rest watches, which
is what lets RBAC grant them through a Role there (deploy/base/gpu-tuning.yaml) instead of a
ClusterRole. With ``CLIMATIK_GPU_TUNING__ENABLED=false`` the GPU-tuning controller is not built at
all, so an installation without that namespace and Role has no informer there to be refused."""

from __future__ import annotations

import pytest
import structlog

from climatik.domain.gpu import TUNE_NODE_LABEL
from climatik.kube.client import CONFIGMAPS, KubeClient
from climatik.reconcilers.gpu_tuning import JOBS, GpuTuningReconciler
from climatik.reconcilers.powercap import PowerCapReconciler
from climatik.reconcilers.settings import GpuTuningSettings
from climatik.runtime.capping import gpu_tuning_controller, power_cap_controller
from climatik.runtime.controllers import BUILTIN_CONTROLLERS, controller_factories
from climatik.runtime.manager import Manager
from climatik.runtime.settings import KubeSettings, LeaderElectionSettings, RuntimeSettings


def _manager(watched_namespace: str | None) -> Manager:
    settings = RuntimeSettings(
        kube=KubeSettings(namespace=watched_namespace),
        leader_election=LeaderElectionSettings(enabled=False),
    )
    return Manager(settings, KubeClient(api_client=None), install_signal_handlers=False)


@pytest.mark.parametrize("watched_namespace", [None, "prod"])
async def test_jobs_and_configmaps_are_watched_in_the_tuning_namespace_only(
    watched_namespace: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__JOB_NAMESPACE", "tuning")
    manager = _manager(watched_namespace)
    for factory in BUILTIN_CONTROLLERS:
        manager.add_controller(factory)
    informers = list(manager.informers)
    tuning = {
        (i.resource, i.label_selector): i.namespace
        for i in informers
        if i.resource in (JOBS, CONFIGMAPS)
    }
    assert tuning == {(JOBS, TUNE_NODE_LABEL): "tuning", (CONFIGMAPS, TUNE_NODE_LABEL): "tuning"}
    # Everything else still follows the watched namespace (cluster-scoped ones have none).
    others = [i for i in informers if i.resource not in (JOBS, CONFIGMAPS)]
    assert others
    for informer in others:
        expected = watched_namespace if informer.resource.namespaced else None
        assert informer.namespace == expected, informer.resource


def test_gpu_tuning_is_started_by_default() -> None:
    assert GpuTuningSettings().enabled is True
    factories = controller_factories()
    assert factories == list(BUILTIN_CONTROLLERS)
    assert gpu_tuning_controller in factories


@pytest.mark.parametrize("value", ["false", "0", "False"])
async def test_disabled_gpu_tuning_builds_no_controller_and_no_informer_in_its_namespace(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__ENABLED", value)
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__JOB_NAMESPACE", "tuning")
    with structlog.testing.capture_logs() as logs:
        factories = controller_factories(["climatik.runtime.capping:carbon_controller"])
    assert [e["event"] for e in logs] == ["gpu_tuning_disabled"]
    assert gpu_tuning_controller not in factories
    # The other built-ins keep their order; extra factories still follow them.
    assert factories[:-1] == [f for f in BUILTIN_CONTROLLERS if f is not gpu_tuning_controller]
    assert factories[-1].__name__ == "carbon_controller"
    manager = _manager(None)
    for factory in factories[:-1]:
        manager.add_controller(factory)
    assert "gpu-tuning" not in {c.name for c in manager.controllers}
    assert "power-cap" in {c.name for c in manager.controllers}
    assert not [i for i in manager.informers if i.resource in (JOBS, CONFIGMAPS)]
    assert not [i for i in manager.informers if i.namespace == "tuning"]


async def test_power_cap_without_gpu_tuning_gets_no_tuned_watts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tuned watts per replica reach the power-cap reconciler only as in-memory hints the
    # GPU-tuning controller leaves; with it absent there are none, and nothing else is read.
    manager = _manager(None)
    for factory in controller_factories(gpu_tuning=GpuTuningSettings(enabled=False)):
        manager.add_controller(factory)
    power_cap = next(c for c in manager.controllers if c.name == "power-cap")
    assert isinstance(power_cap.reconciler, PowerCapReconciler)
    hints = power_cap.reconciler._hints
    assert hints is not None
    assert hints.take("ns/config") is None
    # With tuning on, that same hints object is what the tuning controller writes to.
    on = _manager(None)
    capping = on.add_controller(power_cap_controller).reconciler
    tuning = on.add_controller(gpu_tuning_controller).reconciler
    assert isinstance(capping, PowerCapReconciler)
    assert isinstance(tuning, GpuTuningReconciler)
    assert tuning._hints is capping._hints
