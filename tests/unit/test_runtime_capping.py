"""The built-in controllers' informers, as wired into a manager: Jobs and ConfigMaps are only
ever listed and watched in the GPU-tuning namespace, whatever namespace the rest watches, which
is what lets RBAC grant them through a Role there (deploy/base/gpu-tuning.yaml) instead of a
ClusterRole."""

from __future__ import annotations

import pytest

from climatik.domain.gpu import TUNE_NODE_LABEL
from climatik.kube.client import CONFIGMAPS, KubeClient
from climatik.reconcilers.gpu_tuning import JOBS
from climatik.runtime.controllers import BUILTIN_CONTROLLERS
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
