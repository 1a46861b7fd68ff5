"""The built-in controllers' informers, as wired into a manager: Jobs and ConfigMaps are only
ever listed and watched in the GPU-tuning namespace, whatever namespace the rest watches, which
is what lets RBAC grant them through a Role there (deploy/base/gpu-tuning.yaml) instead of a
ClusterRole. With ``CLIMATIK_GPU_TUNING__ENABLED=false`` the GPU-tuning controller is not built at
all, so an installation without that namespace and Role has no informer there to be refused; a
config that still asks for tuning then gets a ``GpuTuning`` condition and one Warning Event."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import structlog
from prometheus_client import CollectorRegistry

from climatik.api.status import (
    GPU_TUNING_CONDITION,
    GPU_TUNING_DISABLED_IN_CONTROLLER,
)
from climatik.domain.gpu import TUNE_NODE_LABEL
from climatik.kube.client import KubeClient
from climatik.kube.resources import CONFIGMAPS, DEPLOYMENTS, JOBS
from climatik.kube.watchstate import WatchEventType
from climatik.reconcilers.gpu_tuning import GpuTuningReconciler
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap import PowerCapReconciler
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.result import TerminalError
from climatik.reconcilers.settings import CappingSettings, GpuTuningSettings
from climatik.reconcilers.targets import WorkloadCaches
from climatik.runtime.capping import (
    PROMETHEUS_QUERIES_PER_RECONCILE,
    gpu_tuning_controller,
    power_cap_controller,
)
from climatik.runtime.controllers import BUILTIN_CONTROLLERS, controller_factories
from climatik.runtime.manager import Manager
from climatik.runtime.settings import (
    ControllerSettings,
    KubeSettings,
    LeaderElectionSettings,
    RuntimeSettings,
)
from tests.unit.helpers.status_world import (
    RecordedEvents,
    StatusClient,
    StoreCache,
    conditions_of,
    status_of,
)


def _manager(
    watched_namespace: str | None, controllers: ControllerSettings | None = None
) -> Manager:
    settings = RuntimeSettings(
        kube=KubeSettings(namespace=watched_namespace),
        leader_election=LeaderElectionSettings(enabled=False),
    )
    return Manager(
        settings,
        KubeClient(api_client=None),
        install_signal_handlers=False,
        controller_settings=controllers,
    )


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
        if i.resource in (JOBS, CONFIGMAPS) and i.field_selector is None
    }
    assert tuning == {(JOBS, TUNE_NODE_LABEL): "tuning", (CONFIGMAPS, TUNE_NODE_LABEL): "tuning"}
    # The only other ConfigMaps watched: placement's recirculation ConfigMaps, by name, in the
    # watched namespace (RBAC grants list and watch on that name only).
    (by_name,) = [i for i in informers if i.resource == CONFIGMAPS and i.field_selector]
    assert by_name.field_selector == "metadata.name=climatik-recirculation"
    assert by_name.namespace == watched_namespace
    # Everything else still follows the watched namespace (cluster-scoped ones have none).
    others = [i for i in informers if i.resource not in (JOBS, CONFIGMAPS)]
    assert others
    for informer in others:
        expected = watched_namespace if informer.resource.namespaced else None
        assert informer.namespace == expected, informer.resource


def test_gpu_tuning_is_started_by_default() -> None:
    assert GpuTuningSettings().enabled is True
    factories = controller_factories(ControllerSettings())
    assert factories == list(BUILTIN_CONTROLLERS)
    assert gpu_tuning_controller in factories


@pytest.mark.parametrize("value", ["false", "0", "False"])
async def test_disabled_gpu_tuning_builds_no_controller_and_no_informer_in_its_namespace(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__ENABLED", value)
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__JOB_NAMESPACE", "tuning")
    with structlog.testing.capture_logs() as logs:
        settings = ControllerSettings()
        factories = controller_factories(settings, ["climatik.runtime.capping:carbon_controller"])
    assert [e["event"] for e in logs] == ["gpu_tuning_disabled"]
    assert gpu_tuning_controller not in factories
    # The other built-ins keep their order; extra factories still follow them.
    assert factories[:-1] == [f for f in BUILTIN_CONTROLLERS if f is not gpu_tuning_controller]
    assert factories[-1].__name__ == "carbon_controller"
    manager = _manager(None, settings)
    for factory in factories[:-1]:
        manager.add_controller(factory)
    assert "gpu-tuning" not in {c.name for c in manager.controllers}
    assert "power-cap" in {c.name for c in manager.controllers}
    assert not [
        i
        for i in manager.informers
        if i.resource == JOBS or (i.resource == CONFIGMAPS and i.field_selector is None)
    ], "no tuning Jobs or result ConfigMaps are watched (placement's by-name watch remains)"
    assert not [i for i in manager.informers if i.namespace == "tuning"]


async def test_power_cap_without_gpu_tuning_gets_no_tuned_watts() -> None:
    # Tuned watts per replica reach the power-cap reconciler only as in-memory hints the
    # GPU-tuning controller leaves; with it absent there are none, and nothing else is read.
    settings = ControllerSettings(gpu_tuning=GpuTuningSettings(enabled=False))
    manager = _manager(None, settings)
    for factory in controller_factories(settings):
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


async def test_controllers_reconcile_several_configs_at_once_under_a_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = _manager(None)
    for factory in BUILTIN_CONTROLLERS:
        manager.add_controller(factory)
    settings = {c.name: (c.workers, c.reconcile_timeout_s) for c in manager.controllers}
    assert settings == {
        "power-cap": (8, 10.0),
        "carbon": (2, 120.0),
        "placement": (2, 60.0),
        "gpu-tuning": (1, 60.0),
    }

    monkeypatch.setenv("CLIMATIK_CAPPING__WORKERS", "3")
    monkeypatch.setenv("CLIMATIK_CAPPING__RECONCILE_TIMEOUT_S", "4.5")
    power_cap = _manager(None).add_controller(power_cap_controller)
    assert (power_cap.workers, power_cap.reconcile_timeout_s) == (3, 4.5)
    # The outbound pool has room for every worker's queries at once: a config whose
    # Prometheus never answers cannot take the connections another config needs.
    assert isinstance(power_cap.reconciler, PowerCapReconciler)
    session = await power_cap.reconciler._measurer._prometheus._session_factory()
    try:
        assert isinstance(session.connector, aiohttp.TCPConnector)
        assert session.connector.limit == 3 * PROMETHEUS_QUERIES_PER_RECONCILE
    finally:
        await session.close()


def _pcc(mode: str, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {"name": "cap", "namespace": "ns", "uid": "u1", "generation": generation},
        "spec": {"powerCapLimit": 1000, "deploymentName": "llm", "gpuTuning": {"mode": mode}},
    }


def _reconciler(
    configs: StoreCache, client: StatusClient, events: RecordedEvents, *, enabled: bool
) -> PowerCapReconciler:
    async def no_session() -> aiohttp.ClientSession:
        raise AssertionError("no Prometheus is configured, so none is asked")

    return PowerCapReconciler(
        client,
        configs=configs,
        workloads=WorkloadCaches(
            StoreCache(), StoreCache(), StoreCache(), StoreCache(), StoreCache()
        ),
        nodes=StoreCache(),
        events=events,
        metrics=CappingMetrics(CollectorRegistry()),
        settings=CappingSettings(),
        session_factory=no_session,
        gpu_tuning_enabled=enabled,
    )


@pytest.fixture(autouse=True)
def _no_default_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    """No controller-wide Prometheus either, so every reconcile here ends Misconfigured."""
    monkeypatch.delenv("CLIMATIK_CAPPING__PROMETHEUS_ADDRESS", raising=False)


async def _reconcile(reconciler: PowerCapReconciler) -> None:
    # No Prometheus anywhere: the reconcile ends Misconfigured, which must not hide the note.
    with pytest.raises(TerminalError, match="no Prometheus"):
        await reconciler.reconcile("ns/cap")


def _warnings(events: RecordedEvents) -> int:
    """How many GpuTuningDisabledInController Events were recorded."""
    return [e[1] for e in events.recorded].count("GpuTuningDisabledInController")


@pytest.mark.parametrize("mode", ["Recommend", "Apply"])
async def test_a_config_asking_for_disabled_gpu_tuning_is_told_once(
    mode: str,
) -> None:
    configs = StoreCache(_pcc(mode))
    client, events = StatusClient(configs), RecordedEvents()
    reconciler = _reconciler(configs, client, events, enabled=False)
    for _ in range(3):
        await _reconcile(reconciler)
    tuning = conditions_of(configs)[GPU_TUNING_CONDITION]
    assert tuning["status"] == "False"
    assert tuning["reason"] == GPU_TUNING_DISABLED_IN_CONTROLLER == "DisabledInController"
    assert "CLIMATIK_GPU_TUNING__ENABLED=false" in tuning["message"]
    assert mode in tuning["message"]
    # Everything else is reported as without the note.
    assert conditions_of(configs)["Ready"]["reason"] == "Misconfigured"
    warnings = [e for e in events.recorded if e[1] == "GpuTuningDisabledInController"]
    assert len(warnings) == 1, events.recorded
    assert warnings[0][0] == "Warning"
    assert "CLIMATIK_GPU_TUNING__ENABLED=false" in warnings[0][2]
    # A restarted controller finds the condition for this generation: no second Event.
    restarted = _reconciler(configs, client, events, enabled=False)
    await _reconcile(restarted)
    assert _warnings(events) == 1
    # A new spec generation still asking is told again.
    configs.store.upsert({**_pcc(mode, generation=2), "status": status_of(configs)})
    await _reconcile(restarted)
    assert _warnings(events) == 2


async def test_the_gpu_tuning_condition_goes_once_the_config_stops_asking() -> None:
    configs = StoreCache(_pcc("Apply"))
    client, events = StatusClient(configs), RecordedEvents()
    reconciler = _reconciler(configs, client, events, enabled=False)
    await _reconcile(reconciler)
    assert GPU_TUNING_CONDITION in conditions_of(configs)
    configs.store.upsert({**_pcc("Disabled", generation=2), "status": status_of(configs)})
    await _reconcile(reconciler)
    assert GPU_TUNING_CONDITION not in conditions_of(configs)
    assert "Ready" in conditions_of(configs)
    assert _warnings(events) == 1


async def test_the_gpu_tuning_condition_goes_once_the_controller_tunes_again() -> None:
    configs = StoreCache(_pcc("Apply"))
    client, events = StatusClient(configs), RecordedEvents()
    await _reconcile(_reconciler(configs, client, events, enabled=False))
    assert GPU_TUNING_CONDITION in conditions_of(configs)
    # The controller restarts with tuning enabled; the spec is unchanged.
    await _reconcile(_reconciler(configs, client, events, enabled=True))
    assert GPU_TUNING_CONDITION not in conditions_of(configs)


async def test_a_refused_gpu_tuning_event_is_tried_again() -> None:
    configs = StoreCache(_pcc("Apply"))
    client, events = StatusClient(configs), RecordedEvents(refuse_first=True)
    reconciler = _reconciler(configs, client, events, enabled=False)
    # The first reconcile's Event is refused before any condition is written, so the second
    # tries again; after that it is told.
    for _ in range(3):
        await _reconcile(reconciler)
    assert _warnings(events) == 2


@pytest.mark.parametrize(("enabled", "mode"), [(True, "Apply"), (False, "Disabled")])
async def test_no_gpu_tuning_note_when_tuning_runs_or_is_not_asked_for(
    enabled: bool, mode: str
) -> None:
    configs = StoreCache(_pcc(mode))
    client, events = StatusClient(configs), RecordedEvents()
    await _reconcile(_reconciler(configs, client, events, enabled=enabled))
    assert GPU_TUNING_CONDITION not in conditions_of(configs)
    assert "Ready" in conditions_of(configs)
    assert "GpuTuningDisabledInController" not in [e[1] for e in events.recorded]


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("false", False)])
def test_the_power_cap_controller_reads_the_same_switch(
    value: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("CLIMATIK_GPU_TUNING__ENABLED", raising=False)
    else:
        monkeypatch.setenv("CLIMATIK_GPU_TUNING__ENABLED", value)
    reconciler = _manager(None).add_controller(power_cap_controller).reconciler
    assert isinstance(reconciler, PowerCapReconciler)
    assert reconciler._gpu_tuning_enabled is expected


def test_only_changes_a_decision_reads_wake_the_configs_of_a_namespace() -> None:
    """At 5,000 configs the controller-manager rewrote Deployment conditions 15 times a second;
    each update woke all 50 configs of its namespace (1,166 no-op reconciles a second against
    the 333 a 15 s round needs). Conditions are no news; replicas and selectors are."""
    manager = _manager(None)
    controller = manager.add_controller(power_cap_controller)
    informers = {i.resource: i for i in manager.informers}
    for i in range(3):
        informers[POWER_CAPPING_CONFIGS].apply(
            WatchEventType.ADDED,
            {"metadata": {"name": f"cap-{i}", "namespace": "llm", "resourceVersion": "1"}},
        )
    deployment: dict[str, Any] = {
        "metadata": {"name": "vllm", "namespace": "llm", "resourceVersion": "1"},
        "spec": {"selector": {"matchLabels": {"app": "vllm"}}},
        "status": {"replicas": 2, "conditions": [{"type": "Progressing", "status": "True"}]},
    }
    informers[DEPLOYMENTS].apply(WatchEventType.ADDED, deployment)
    queue = controller.queue
    while queue.get_nowait() is not None:
        pass
    for key in ("llm/cap-0", "llm/cap-1", "llm/cap-2"):
        queue.done(key)

    def updated(**status: Any) -> None:
        nonlocal deployment
        deployment = {
            **deployment,
            "metadata": {**deployment["metadata"], "resourceVersion": str(len(status) + 7)},
            "status": {**deployment["status"], **status},
        }
        informers[DEPLOYMENTS].apply(WatchEventType.MODIFIED, deployment)

    updated(conditions=[{"type": "Progressing", "status": "True", "lastUpdateTime": "now"}])
    assert len(queue) == 0
    updated(replicas=3)
    assert len(queue) == 3


async def test_factories_take_the_settings_built_at_start_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `climatik run` reads every root once; a factory that read the environment again would
    # see a different value here, and the power-cap reconciler could disagree with the list of
    # controllers about whether GPU tuning runs.
    monkeypatch.setenv("CLIMATIK_CAPPING__WORKERS", "3")
    monkeypatch.setenv("CLIMATIK_CARBON__WORKERS", "4")
    settings = ControllerSettings(gpu_tuning=GpuTuningSettings(enabled=False))
    monkeypatch.setenv("CLIMATIK_CAPPING__WORKERS", "6")
    monkeypatch.setenv("CLIMATIK_CARBON__WORKERS", "7")
    monkeypatch.setenv("CLIMATIK_GPU_TUNING__ENABLED", "true")
    manager = _manager(None, settings)
    for factory in controller_factories(settings):
        manager.add_controller(factory)
    workers = {c.name: c.workers for c in manager.controllers}
    assert workers == {"power-cap": 3, "carbon": 4, "placement": 2}
    power_cap = next(c for c in manager.controllers if c.name == "power-cap")
    assert isinstance(power_cap.reconciler, PowerCapReconciler)
    assert power_cap.reconciler._gpu_tuning_enabled is False
