"""`gpuTuning.mode: Apply` only where the controller's settings allow it.

An applied clock stays locked on every GPU of a node, whoever runs there, so a config author
alone may not choose it: `CLIMATIK_GPU_TUNING__APPLY_NAMESPACES` (empty by default) names the
namespaces that may. Elsewhere the reconciler still tunes, as `Recommend`, and says why: a
`GpuTuning` condition (False, `ApplyNotAllowed`) and one Warning Event per spec generation.
The Kubernetes side is a client that applies status patches to the cache and records Jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from climatik.api.status import (
    GPU_TUNING_APPLY_NOT_ALLOWED,
    GPU_TUNING_CONDITION,
    apply_merge_patch,
)
from climatik.kube.client import KubeClient, Resource
from climatik.kube.store import Store, thaw
from climatik.reconcilers.gpu_tuning import GpuTuningReconciler, TuningHints
from climatik.reconcilers.settings import GpuTuningSettings
from climatik.reconcilers.targets import WorkloadCaches

NS = "team-a"
KEY = f"{NS}/cap"


class _Cache:
    def __init__(self, *objs: dict[str, Any]) -> None:
        self.store = Store()
        for obj in objs:
            self.store.upsert(obj)


class _Client(KubeClient):
    """Records created Jobs (into the Job cache too, as the informer would); applies status
    merge patches to the cached config."""

    def __init__(self, configs: _Cache) -> None:
        super().__init__(api_client=None)
        self.configs = configs
        self.job_cache = _Cache()
        self.jobs: list[dict[str, Any]] = []
        self.status_patches: list[dict[str, Any]] = []

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        assert resource.plural == "jobs", resource
        self.jobs.append(dict(body))
        self.job_cache.store.upsert(dict(body))
        return dict(body)

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        assert subresource == "status", (resource, name, patch)
        self.status_patches.append(dict(patch))
        current = self.configs.store.get(f"{namespace}/{name}")
        assert current is not None
        updated: dict[str, Any] = apply_merge_patch(thaw(current), patch)
        updated["metadata"].pop("resourceVersion", None)
        self.configs.store.upsert(updated)
        return updated


class _Events:
    def __init__(self, *, refuse_first: bool = False) -> None:
        self.recorded: list[tuple[str, str, str]] = []
        self._refuse_first = refuse_first

    async def record(
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> bool:
        self.recorded.append((event_type, reason, message))
        return not (self._refuse_first and len(self.recorded) == 1)


def _pcc(mode: str, *, generation: int = 1, namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {"name": "cap", "namespace": namespace, "uid": "u1", "generation": generation},
        "spec": {
            "powerCapLimit": 1000,
            "scaleObjectRef": [{"metadata": {"name": "llm"}}],
            "gpuTuning": {"mode": mode},
        },
        # 900 W of 1000: past the 80 % trigger, so a Job is due on the pod's node.
        "status": {"measuredPowerWatts": 900},
    }


def _workloads(namespace: str = NS) -> WorkloadCaches:
    scaled_object = {
        "metadata": {"name": "llm", "namespace": namespace},
        "spec": {"scaleTargetRef": {"name": "llm"}, "maxReplicaCount": 4},
    }
    deployment = {
        "metadata": {"name": "llm", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "llm"}}},
        "status": {"replicas": 1},
    }
    pod = {
        "metadata": {"name": "llm-0", "namespace": namespace, "labels": {"app": "llm"}},
        "spec": {"nodeName": "gpu-1"},
        "status": {"phase": "Running", "podIP": "10.0.0.7"},
    }
    return WorkloadCaches(_Cache(scaled_object), _Cache(), _Cache(deployment), _Cache(pod))


def _reconciler(
    configs: _Cache,
    *,
    allowed: list[str] | None = None,
    client: _Client | None = None,
    events: _Events | None = None,
    namespace: str = NS,
) -> tuple[GpuTuningReconciler, _Client, _Events]:
    client = client or _Client(configs)
    events = events or _Events()
    settings = GpuTuningSettings(
        job_namespace="tuning", apply_namespaces=allowed or [], interval_s=5.0
    )
    reconciler = GpuTuningReconciler(
        client,
        configs=configs,
        workloads=_workloads(namespace),
        jobs=client.job_cache,
        results=_Cache(),
        events=events,
        hints=TuningHints(),
        settings=settings,
        wall_clock=lambda: datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
        clock=lambda: 1e9,
    )
    return reconciler, client, events


def _mode_args(client: _Client) -> list[str]:
    return [j["spec"]["template"]["spec"]["containers"][0]["args"][2] for j in client.jobs]


def _tuning_condition(configs: _Cache, key: str = KEY) -> dict[str, Any] | None:
    obj = configs.store.get(key)
    assert obj is not None
    conditions = (obj.get("status") or {}).get("conditions") or ()
    return next((dict(c) for c in conditions if c["type"] == GPU_TUNING_CONDITION), None)


def _warnings(events: _Events) -> list[tuple[str, str, str]]:
    return [e for e in events.recorded if e[1] == "GpuTuningApplyNotAllowed"]


def test_no_namespace_may_apply_by_default() -> None:
    assert GpuTuningSettings().apply_namespaces == []


def test_the_setting_reads_a_json_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__APPLY_NAMESPACES", '["llm", "batch"]')
    assert GpuTuningSettings().apply_namespaces == ["llm", "batch"]


async def test_apply_in_a_namespace_not_allowed_runs_as_recommend_and_is_told_once() -> None:
    configs = _Cache(_pcc("Apply"))
    reconciler, client, events = _reconciler(configs, allowed=["other"])
    for _ in range(3):
        await reconciler.reconcile(KEY)
    assert _mode_args(client) == ["recommend"]  # tuned, but nothing stays locked
    condition = _tuning_condition(configs)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", GPU_TUNING_APPLY_NOT_ALLOWED)
    assert condition["reason"] == "ApplyNotAllowed"
    assert "CLIMATIK_GPU_TUNING__APPLY_NAMESPACES" in condition["message"]
    assert f"namespace {NS}" in condition["message"]
    assert condition["observedGeneration"] == 1
    (warning,) = _warnings(events)
    assert warning[0] == "Warning"
    assert "gpuTuning.applyNamespaces" in warning[2]
    (started,) = [e for e in events.recorded if e[1] == "GpuTuningStarted"]
    assert "as Recommend" in started[2]
    # A steady refusal writes the status once, not on every reconcile.
    assert len(client.status_patches) == 1


async def test_a_restarted_controller_does_not_repeat_the_warning_but_a_new_generation_does() -> (
    None
):
    configs = _Cache(_pcc("Apply"))
    first, client, events = _reconciler(configs)
    await first.reconcile(KEY)
    restarted, _, _ = _reconciler(configs, client=client, events=events)
    await restarted.reconcile(KEY)
    assert len(_warnings(events)) == 1
    obj = configs.store.get(KEY)
    assert obj is not None
    configs.store.upsert({**_pcc("Apply", generation=2), "status": thaw(obj["status"])})
    await restarted.reconcile(KEY)
    assert len(_warnings(events)) == 2
    condition = _tuning_condition(configs)
    assert condition is not None
    assert condition["observedGeneration"] == 2


async def test_a_refused_warning_event_is_sent_again() -> None:
    configs = _Cache(_pcc("Apply"))
    reconciler, _, events = _reconciler(configs, events=_Events(refuse_first=True))
    for _ in range(3):
        await reconciler.reconcile(KEY)
    assert len(_warnings(events)) == 2


@pytest.mark.parametrize("allowed", [[NS], ["*"], ["x", NS]])
async def test_apply_where_allowed_locks_the_clock_and_says_nothing(allowed: list[str]) -> None:
    configs = _Cache(_pcc("Apply"))
    reconciler, client, events = _reconciler(configs, allowed=allowed)
    await reconciler.reconcile(KEY)
    assert _mode_args(client) == ["apply"]
    assert _tuning_condition(configs) is None
    assert _warnings(events) == []
    assert client.status_patches == []


@pytest.mark.parametrize("mode", ["Recommend", "Disabled"])
async def test_configs_not_asking_for_apply_are_not_warned(mode: str) -> None:
    configs = _Cache(_pcc(mode))
    reconciler, client, events = _reconciler(configs)
    await reconciler.reconcile(KEY)
    assert _mode_args(client) == (["recommend"] if mode == "Recommend" else [])
    assert _warnings(events) == []
    assert client.status_patches == []


@pytest.mark.parametrize(
    ("mode", "allowed"), [("Recommend", []), ("Disabled", []), ("Apply", [NS])]
)
async def test_the_condition_goes_once_apply_is_no_longer_refused(
    mode: str, allowed: list[str]
) -> None:
    configs = _Cache(_pcc("Apply"))
    reconciler, client, _ = _reconciler(configs)
    await reconciler.reconcile(KEY)
    assert _tuning_condition(configs) is not None
    obj = configs.store.get(KEY)
    assert obj is not None
    # The spec changes, or the administrator allows the namespace (a restart with the setting).
    configs.store.upsert({**_pcc(mode, generation=2), "status": thaw(obj["status"])})
    after, _, _ = _reconciler(configs, allowed=allowed, client=client)
    await after.reconcile(KEY)
    assert _tuning_condition(configs) is None


async def test_a_condition_of_another_reason_is_left_alone() -> None:
    # The power-cap reconciler's DisabledInController note is not this reconciler's to remove.
    cfg = _pcc("Recommend")
    cfg["status"]["conditions"] = [
        {
            "type": GPU_TUNING_CONDITION,
            "status": "False",
            "reason": "DisabledInController",
            "message": "x",
            "lastTransitionTime": "2026-11-29T12:00:00Z",
        }
    ]
    configs = _Cache(cfg)
    reconciler, client, _ = _reconciler(configs)
    await reconciler.reconcile(KEY)
    assert client.status_patches == []
    condition = _tuning_condition(configs)
    assert condition is not None
    assert condition["reason"] == "DisabledInController"
