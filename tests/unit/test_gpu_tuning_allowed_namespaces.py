"""Tuning Jobs only where the controller's settings allow them.

Every tuning Job changes the clocks of every GPU of its node, whoever runs there: the sweep locks
each clock it measures (for up to the Job's deadline) and `Apply` keeps the chosen one. So a
config author alone may not start one, in either mode: `CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES`
(empty by default; the deprecated `CLIMATIK_GPU_TUNING__APPLY_NAMESPACES` is read while it is
empty) names the namespaces that may. Elsewhere the reconciler creates no Job, reads no result
back, and says why: a `GpuTuning` condition (False, `TuningNotAllowed`) and one Warning Event
per spec generation. The Kubernetes side is a client that applies status patches to the cache
and records Jobs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from climatik.api.status import (
    GPU_TUNING_CONDITION,
    GPU_TUNING_NOT_ALLOWED,
)
from climatik.domain.gpu import TUNE_NODE_LABEL, TUNE_RESULT_KEY, result_configmap_name
from climatik.kube.client import KubeClient
from climatik.kube.json import child, objects
from climatik.kube.resources import Resource
from climatik.kube.store import thaw
from climatik.reconcilers.gpu_tuning import GpuTuningReconciler
from climatik.reconcilers.settings import GpuTuningSettings
from climatik.reconcilers.targets import WorkloadCaches
from climatik.reconcilers.tuning_hints import TuningHints
from climatik.runtime.capping import gpu_tuning_controller
from climatik.runtime.manager import Manager
from climatik.runtime.settings import KubeSettings, LeaderElectionSettings, RuntimeSettings
from tests.json_paths import text_at
from tests.unit.helpers.status_world import RecordedEvents, StatusClient, StoreCache

NS = "team-a"
KEY = f"{NS}/cap"


class _Client(StatusClient):
    """Records created Jobs (into the Job cache too, as the informer would); applies status
    merge patches to the cached config."""

    def __init__(self, configs: StoreCache) -> None:
        super().__init__(configs)
        self.job_cache = StoreCache()
        self.jobs: list[dict[str, Any]] = []

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        assert resource.plural == "jobs", resource
        self.jobs.append(dict(body))
        self.job_cache.store.upsert(dict(body))
        return dict(body)


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
    return WorkloadCaches(
        StoreCache(scaled_object), StoreCache(), StoreCache(deployment), StoreCache(pod)
    )


def _applied_result() -> dict[str, Any]:
    """A result ConfigMap on the pod's node: another config's Job applied a clock there."""
    document = {
        "mode": "apply",
        "appliedClockMHz": 1400,
        "choice": {"before": {"watts": 800}, "after": {"watts": 600}},
    }
    return {
        "metadata": {
            "name": result_configmap_name("gpu-1"),
            "namespace": "tuning",
            "resourceVersion": "7",
            "labels": {TUNE_NODE_LABEL: "gpu-1"},
        },
        "data": {TUNE_RESULT_KEY: json.dumps(document)},
    }


def _reconciler(
    configs: StoreCache,
    *,
    allowed: list[str] | None = None,
    client: _Client | None = None,
    events: RecordedEvents | None = None,
    namespace: str = NS,
    hints: TuningHints | None = None,
) -> tuple[GpuTuningReconciler, _Client, RecordedEvents]:
    client = client or _Client(configs)
    events = events or RecordedEvents()
    settings = GpuTuningSettings(
        job_namespace="tuning", allowed_namespaces=allowed or [], interval_s=5.0
    )
    reconciler = GpuTuningReconciler(
        client,
        configs=configs,
        workloads=_workloads(namespace),
        jobs=client.job_cache,
        results=StoreCache(_applied_result()),
        events=events,
        hints=hints or TuningHints(),
        settings=settings,
        wall_clock=lambda: datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
        clock=lambda: 1e9,
    )
    return reconciler, client, events


def _mode_args(client: _Client) -> list[str]:
    return [text_at(j, "spec", "template", "spec", "containers", 0, "args", 2) for j in client.jobs]


def _tuning_condition(configs: StoreCache, key: str = KEY) -> dict[str, Any] | None:
    obj = configs.store.get(key)
    assert obj is not None
    conditions = objects(child(obj, "status"), "conditions")
    return next((dict(c) for c in conditions if c.get("type") == GPU_TUNING_CONDITION), None)


def _warnings(events: RecordedEvents) -> list[tuple[str, str, str]]:
    return [e for e in events.recorded if e[1] == "GpuTuningNotAllowed"]


def test_no_namespace_may_tune_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES", raising=False)
    monkeypatch.delenv("CLIMATIK_GPU_TUNING__APPLY_NAMESPACES", raising=False)
    assert GpuTuningSettings().allowed_namespaces == []


def test_the_setting_reads_a_json_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES", '["llm", "batch"]')
    assert GpuTuningSettings().allowed_namespaces == ["llm", "batch"]


@pytest.mark.parametrize(
    ("allowed", "deprecated", "expected"),
    [
        (None, '["llm"]', ["llm"]),  # a release-old installation
        ("[]", '["llm"]', ["llm"]),  # an overlay patching the old name onto the new base
        ('["batch"]', '["llm"]', ["batch"]),  # the new name wins
        ('["*"]', None, ["*"]),
    ],
)
def test_the_deprecated_name_is_read_while_the_new_one_is_empty(
    allowed: str | None,
    deprecated: str | None,
    expected: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (
        ("CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES", allowed),
        ("CLIMATIK_GPU_TUNING__APPLY_NAMESPACES", deprecated),
    ):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert GpuTuningSettings().allowed_namespaces == expected


def test_the_deprecated_name_is_logged_when_the_controller_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES", raising=False)
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__APPLY_NAMESPACES", '["llm"]')
    manager = Manager(
        RuntimeSettings(kube=KubeSettings(), leader_election=LeaderElectionSettings(enabled=False)),
        KubeClient(api_client=None),
        install_signal_handlers=False,
    )
    with structlog.testing.capture_logs() as logs:
        reconciler = manager.add_controller(gpu_tuning_controller).reconciler
    assert isinstance(reconciler, GpuTuningReconciler)
    assert reconciler._settings.allowed_namespaces == ["llm"]
    (deprecated,) = [e for e in logs if e["event"] == "deprecated_setting"]
    assert deprecated["setting"] == "CLIMATIK_GPU_TUNING__APPLY_NAMESPACES"
    assert deprecated["use"] == "CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES"


@pytest.mark.parametrize("mode", ["Recommend", "Apply"])
async def test_tuning_in_a_namespace_not_allowed_runs_no_job_and_is_told_once(mode: str) -> None:
    configs = StoreCache(_pcc(mode))
    hints = TuningHints()
    reconciler, client, events = _reconciler(configs, allowed=["other"], hints=hints)
    for _ in range(3):
        result = await reconciler.reconcile(KEY)
    # Even a recommending sweep locks the node's clocks while it runs: no Job at all.
    assert client.jobs == []
    assert [e for e in events.recorded if e[1] == "GpuTuningStarted"] == []
    # No result on the node feeds back: watts per replica come from measurements only.
    assert hints.take(KEY) is None
    assert result.requeue_after is None  # nothing to poll for; a spec change wakes it
    condition = _tuning_condition(configs)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", GPU_TUNING_NOT_ALLOWED)
    assert condition["reason"] == "TuningNotAllowed"
    assert "CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES" in condition["message"]
    assert f"namespace {NS}" in condition["message"]
    assert f"mode is {mode}" in condition["message"]
    assert condition["observedGeneration"] == 1
    (warning,) = _warnings(events)
    assert warning[0] == "Warning"
    assert "gpuTuning.allowedNamespaces" in warning[2]
    # A steady refusal writes the status once, not on every reconcile.
    assert len(client.status_patches) == 1


async def test_a_restarted_controller_does_not_repeat_the_warning_but_a_new_generation_does() -> (
    None
):
    configs = StoreCache(_pcc("Recommend"))
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
    assert client.jobs == []


async def test_a_refused_warning_event_is_sent_again() -> None:
    configs = StoreCache(_pcc("Recommend"))
    reconciler, _, events = _reconciler(configs, events=RecordedEvents(refuse_first=True))
    first = await reconciler.reconcile(KEY)
    assert first.requeue_after == 5.0  # polled again for the Event owed
    for _ in range(2):
        await reconciler.reconcile(KEY)
    assert len(_warnings(events)) == 2


@pytest.mark.parametrize("mode", ["Recommend", "Apply"])
@pytest.mark.parametrize("allowed", [[NS], ["*"], ["x", NS]])
async def test_tuning_where_allowed_runs_the_job_of_its_mode_and_says_nothing(
    allowed: list[str], mode: str
) -> None:
    configs = StoreCache(_pcc(mode))
    hints = TuningHints()
    reconciler, client, events = _reconciler(configs, allowed=allowed, hints=hints)
    await reconciler.reconcile(KEY)
    assert _mode_args(client) == [mode.lower()]
    assert hints.take(KEY) is not None  # the node's applied result feeds back
    assert _tuning_condition(configs) is None
    assert _warnings(events) == []
    assert client.status_patches == []


async def test_a_config_not_asking_for_tuning_is_not_warned() -> None:
    configs = StoreCache(_pcc("Disabled"))
    reconciler, client, events = _reconciler(configs)
    await reconciler.reconcile(KEY)
    assert client.jobs == []
    assert _warnings(events) == []
    assert client.status_patches == []


@pytest.mark.parametrize(
    ("mode", "allowed"), [("Disabled", []), ("Recommend", [NS]), ("Apply", ["*"])]
)
async def test_the_condition_goes_once_tuning_is_no_longer_refused(
    mode: str, allowed: list[str]
) -> None:
    configs = StoreCache(_pcc("Recommend"))
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
    assert _mode_args(client) == ([] if mode == "Disabled" else [mode.lower()])


async def test_the_condition_an_earlier_release_wrote_is_replaced_then_removed() -> None:
    # Upgraded from a release that gated Apply alone: its ApplyNotAllowed condition is this
    # reconciler's too, so it neither lingers nor stands for a warning already sent.
    cfg = _pcc("Apply")
    cfg["status"]["conditions"] = [
        {
            "type": GPU_TUNING_CONDITION,
            "status": "False",
            "reason": "ApplyNotAllowed",
            "message": "Tuning runs as Recommend instead",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-11-29T12:00:00Z",
        }
    ]
    configs = StoreCache(cfg)
    refusing, client, events = _reconciler(configs)
    await refusing.reconcile(KEY)
    condition = _tuning_condition(configs)
    assert condition is not None
    assert condition["reason"] == GPU_TUNING_NOT_ALLOWED
    assert len(_warnings(events)) == 1
    assert client.jobs == []
    # The same upgraded config where its namespace is allowed: the old condition goes.
    configs = StoreCache(cfg)
    allowing, client, _ = _reconciler(configs, allowed=[NS])
    await allowing.reconcile(KEY)
    assert _tuning_condition(configs) is None
    assert _mode_args(client) == ["apply"]


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
    configs = StoreCache(cfg)
    reconciler, client, _ = _reconciler(configs, allowed=[NS])
    await reconciler.reconcile(KEY)
    assert client.status_patches == []
    condition = _tuning_condition(configs)
    assert condition is not None
    assert condition["reason"] == "DisabledInController"
