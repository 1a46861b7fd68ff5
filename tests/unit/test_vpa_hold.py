"""Holding VPA's evictions on racks near their limits: the policy, and the reconciler over
in-memory caches with a recording client (what it patches, the Events and the condition)."""

from __future__ import annotations

from typing import Any

import pytest

from climatik.domain.config import RackConstraint
from climatik.kube.resources import VERTICAL_POD_AUTOSCALERS
from climatik.kube.store import Store, index_by_namespace
from climatik.policies.vpa_hold import HoldThresholds, RackReading, racks_to_hold
from climatik.reconcilers.resources import VPA_HELD_BY_ANNOTATION, VPA_USER_MODE_ANNOTATION
from climatik.reconcilers.settings import VpaSettings
from climatik.reconcilers.targets import NAMESPACE_INDEX, WorkloadCaches
from climatik.reconcilers.vpa_hold import VpaHoldReconciler
from climatik.runtime.controllers import controller_factories
from climatik.runtime.settings import ControllerSettings
from climatik.runtime.vpa import vpa_hold_controller
from tests.unit.helpers.placement_objects import DEPLOYMENT, NS, config, node, pod
from tests.unit.helpers.status_world import StoreCache
from tests.unit.test_placement_reconciler import Events, RecordingClient
from tests.unit.test_runtime_capping import _manager

LIMITS = {
    "rack-a": RackConstraint("rack-a", max_power_w=40_000, max_temperature_celsius=30),
    "rack-b": RackConstraint("rack-b", max_power_w=40_000),
}


def _reading(rack: str, watts: float | None, inlet: float | None = None) -> RackReading:
    return RackReading(rack, watts, inlet)


@pytest.mark.parametrize(
    ("watts", "inlet", "held"),
    [
        (38_000, None, True),  # 95 % of maxPower
        (37_999, None, False),
        (30_000, 29.0, True),  # 1 degree below maxTemperature
        (30_000, 28.9, False),
        (None, None, False),  # nothing measured: nothing to hold for
    ],
)
def test_a_rack_is_held_from_95_percent_of_its_power_or_1_degree_below_its_temperature(
    watts: float | None, inlet: float | None, held: bool
) -> None:
    hold = racks_to_hold([_reading("rack-a", watts, inlet)], LIMITS, frozenset())
    assert ("rack-a" in hold) is held


@pytest.mark.parametrize(
    ("watts", "inlet", "still_held"),
    [
        (36_500, None, True),  # below the hold point, above the release point
        (35_999, None, False),  # below 90 %
        (30_000, 28.5, True),  # cooler than the hold point, within 2 degrees
        (30_000, 27.9, False),
        (None, None, True),  # no reading: a held rack is not taken as cool
    ],
)
def test_a_held_rack_is_released_only_below_the_release_point(
    watts: float | None, inlet: float | None, still_held: bool
) -> None:
    hold = racks_to_hold([_reading("rack-a", watts, inlet)], LIMITS, frozenset({"rack-a"}))
    assert ("rack-a" in hold) is still_held


def test_only_racks_with_a_constraint_are_held() -> None:
    readings = [_reading("rack-c", 1e9), _reading("rack-b", 39_000)]
    assert racks_to_hold(readings, LIMITS, frozenset({"rack-c"})) == {"rack-b"}
    tight = HoldThresholds(hold_fraction=0.5, release_fraction=0.4)
    assert racks_to_hold([_reading("rack-b", 20_000)], LIMITS, (), tight) == {"rack-b"}


def test_settings_refuse_a_release_point_above_the_hold_point() -> None:
    with pytest.raises(ValueError, match="release_fraction"):
        VpaSettings(hold_fraction=0.9, release_fraction=0.95)


KEY = f"{NS}/cap"


def _config(rack_a_watts: float | None) -> dict[str, Any]:
    obj = config()
    if rack_a_watts is not None:
        obj["status"] = {"racks": [{"rackId": "rack-a", "powerWatts": rack_a_watts}]}
    return obj


SCALED_OBJECT = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "chat", "namespace": NS},
    "spec": {"scaleTargetRef": {"name": "chat"}, "minReplicaCount": 1, "maxReplicaCount": 8},
}


def _vpa(
    name: str = "chat",
    *,
    deployment: str = "chat",
    mode: str | None = "Recreate",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    }
    if mode is not None:
        spec["updatePolicy"] = {"updateMode": mode}
    return {
        "apiVersion": "autoscaling.k8s.io/v1",
        "kind": "VerticalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": NS,
            "resourceVersion": "41",
            "annotations": annotations or {},
        },
        "spec": spec,
    }


class World:
    """A config capping Deployment `chat` (one pod on rack-a, one on rack-b) and its VPAs."""

    def __init__(self, rack_a_watts: float | None, *vpas: dict[str, Any]) -> None:
        self.configs = StoreCache(_config(rack_a_watts))
        self.vpas = StoreCache(*vpas)
        self.client = RecordingClient()
        self.events = Events()
        self.reconciler = VpaHoldReconciler(
            self.client,  # type: ignore[arg-type]
            configs=self.configs,
            workloads=WorkloadCaches(
                scaled_objects=StoreCache(SCALED_OBJECT),
                inference_services=StoreCache(),
                deployments=StoreCache(DEPLOYMENT),
                pods=StoreCache(pod("chat-0", "a-0"), pod("chat-1", "b-0")),
            ),
            vpas=self.vpas,
            nodes=StoreCache(node("a-0", "rack-a"), node("b-0", "rack-b")),
            events=self.events,
            settings=VpaSettings(interval_s=5.0),
        )
        self.vpas.store.add_indexer(NAMESPACE_INDEX, index_by_namespace)

    def set_rack_a(self, watts: float) -> None:
        store = self.configs.store
        assert isinstance(store, Store)
        store.upsert(_config(watts))

    def vpa_patches(self) -> list[tuple[str, dict[str, Any]]]:
        return [(p[1], p[2]) for p in self.client.patches if p[0] == "verticalpodautoscalers"]

    def condition(self) -> dict[str, Any]:
        (status_patch, *_) = [p for p in reversed(self.client.patches) if p[3] == "status"]
        (found,) = status_patch[2]["status"]["conditions"]
        return dict(found)


async def test_a_vpa_whose_pods_sit_on_a_hot_rack_is_switched_to_initial_and_remembered() -> None:
    world = World(38_500, _vpa())
    result = await world.reconciler.reconcile(KEY)
    assert result.requeue_after == 5.0
    ((name, patch),) = world.vpa_patches()
    assert name == "chat"
    assert patch["spec"] == {"updatePolicy": {"updateMode": "Initial"}}
    assert patch["metadata"] == {
        "annotations": {VPA_USER_MODE_ANNOTATION: "Recreate", VPA_HELD_BY_ANNOTATION: KEY},
        "resourceVersion": "41",  # refused if the user changed the VPA since it was read
    }
    reasons = {(e[0], e[2]) for e in world.events.recorded}
    assert reasons == {("chat", "EvictionsHeld"), ("cap", "VpaEvictionsHeld")}
    condition = world.condition()
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "VpaEvictionsHeld",
        "True",
        "RacksNearLimit",
    )
    assert "chat (racks rack-a)" in condition["message"]


async def test_the_users_mode_comes_back_when_the_rack_cools_below_the_release_point() -> None:
    held = _vpa(
        mode="Initial",
        annotations={VPA_USER_MODE_ANNOTATION: "InPlaceOrRecreate", VPA_HELD_BY_ANNOTATION: KEY},
    )
    world = World(38_500, held)
    await world.reconciler.reconcile(KEY)
    assert world.vpa_patches() == []  # still hot, already held: nothing to write

    world.set_rack_a(37_000)  # cooler than the hold point, not below the release point
    await world.reconciler.reconcile(KEY)
    assert world.vpa_patches() == []

    world.set_rack_a(30_000)
    await world.reconciler.reconcile(KEY)
    ((_, patch),) = world.vpa_patches()
    assert patch["spec"] == {"updatePolicy": {"updateMode": "InPlaceOrRecreate"}}
    assert patch["metadata"]["annotations"] == {
        VPA_USER_MODE_ANNOTATION: None,
        VPA_HELD_BY_ANNOTATION: None,
    }
    assert ("chat", "EvictionsReleased") in {(e[0], e[2]) for e in world.events.recorded}
    assert world.condition()["status"] == "False"


async def test_a_mode_the_user_sets_during_the_hold_is_kept() -> None:
    changed = _vpa(
        mode="Off",
        annotations={VPA_USER_MODE_ANNOTATION: "Recreate", VPA_HELD_BY_ANNOTATION: KEY},
    )
    world = World(38_500, changed)
    await world.reconciler.reconcile(KEY)
    ((_, patch),) = world.vpa_patches()
    assert "spec" not in patch  # Off stays
    assert patch["metadata"]["annotations"][VPA_USER_MODE_ANNOTATION] is None


async def test_vpas_that_do_not_evict_or_are_not_the_configs_are_left_alone() -> None:
    world = World(
        38_500,
        _vpa("initial", mode="Initial"),
        _vpa("off", mode="Off"),
        _vpa("other-deployment", deployment="batch"),
        _vpa(
            "held-by-another-config",
            mode="Initial",
            annotations={VPA_USER_MODE_ANNOTATION: "Recreate", VPA_HELD_BY_ANNOTATION: f"{NS}/x"},
        ),
    )
    await world.reconciler.reconcile(KEY)
    world.set_rack_a(10_000)
    await world.reconciler.reconcile(KEY)
    assert world.vpa_patches() == []


async def test_a_vpa_without_a_mode_evicts_by_default_and_is_held() -> None:
    world = World(39_000, _vpa(mode=None))
    await world.reconciler.reconcile(KEY)
    ((_, patch),) = world.vpa_patches()
    assert patch["metadata"]["annotations"][VPA_USER_MODE_ANNOTATION] == "Recreate"


async def test_no_reading_for_the_rack_holds_nothing_new() -> None:
    world = World(None, _vpa())
    await world.reconciler.reconcile(KEY)
    assert world.vpa_patches() == []
    condition = world.condition()
    assert (condition["status"], condition["message"]) == ("False", "no rack is near its limit")


def test_the_vpa_hold_controller_runs_only_when_enabled() -> None:
    assert VpaSettings().enabled is False
    assert vpa_hold_controller not in controller_factories(ControllerSettings())
    settings = ControllerSettings(vpa=VpaSettings(enabled=True))
    factories = controller_factories(settings)
    assert factories[-1] is vpa_hold_controller
    manager = _manager(None, settings)
    for factory in factories:
        manager.add_controller(factory)
    controller = next(c for c in manager.controllers if c.name == "vpa-hold")
    assert isinstance(controller.reconciler, VpaHoldReconciler)
    assert VERTICAL_POD_AUTOSCALERS in {i.resource for i in manager.informers}


def _held(name: str = "chat", *, deployment: str = "chat") -> dict[str, Any]:
    return _vpa(
        name,
        deployment=deployment,
        mode="Initial",
        annotations={VPA_USER_MODE_ANNOTATION: "Recreate", VPA_HELD_BY_ANNOTATION: KEY},
    )


async def test_a_vpa_that_is_no_longer_a_targets_gets_its_mode_back_even_on_a_hot_rack() -> None:
    # Its targetRef now names a Deployment the config does not cap.
    world = World(39_000, _held("moved", deployment="batch"))
    await world.reconciler.reconcile(KEY)
    ((name, patch),) = world.vpa_patches()
    assert name == "moved"
    assert patch["spec"] == {"updatePolicy": {"updateMode": "Recreate"}}


async def test_a_deleted_config_gives_back_every_vpa_it_held_and_no_other() -> None:
    other = _vpa(
        "other",
        mode="Initial",
        annotations={VPA_USER_MODE_ANNOTATION: "Auto", VPA_HELD_BY_ANNOTATION: f"{NS}/x"},
    )
    world = World(39_000, _held(), other)
    store = world.configs.store
    assert isinstance(store, Store)
    store.delete(KEY)
    await world.reconciler.reconcile(KEY)
    ((name, patch),) = world.vpa_patches()
    assert name == "chat"
    assert patch["spec"] == {"updatePolicy": {"updateMode": "Recreate"}}
    assert [(e[0], e[2]) for e in world.events.recorded] == [("chat", "EvictionsReleased")]
    assert "was deleted" in world.events.recorded[0][3]
