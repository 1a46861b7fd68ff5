"""What a config holds and gives back (issue 15): its own records, its namespace, its finalizer.

The reconciler runs against in-memory caches and a client that applies patches to them; power
comes from the loopback Prometheus of `test_powercap_hostile_measurements` (100 W per pod, two
pods). The cases are the ones integration tests cannot set up cheaply: an object capped by an
earlier version (annotations, no records, no finalizer), a refused restore, a deleted config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from climatik.api.status import apply_merge_patch
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import JsonDict, ObjectMeta
from climatik.kube.resources import Resource
from climatik.kube.store import thaw
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap import PowerCapReconciler
from climatik.reconcilers.resources import (
    CAPPED_BY_ANNOTATION,
    GIVE_BACK_FINALIZER,
    POWER_CAPPING_CONFIGS,
    USER_MAX_ANNOTATION,
)
from climatik.reconcilers.result import Result, TerminalError
from climatik.reconcilers.settings import CappingSettings
from climatik.reconcilers.targets import WorkloadCaches
from climatik.sources.address import HTTPSession
from tests.json_paths import dict_at, dig
from tests.unit.helpers.capping_world import (
    NS,
    FakePrometheus,
    objects,
    prometheus,
)
from tests.unit.helpers.status_world import RecordedEvents, StoreCache

__all__ = ["prometheus"]  # the fixture, used by name

KEY = f"{NS}/cap"


class Api(KubeClient):
    """Applies every merge patch to the cached object (configs and ScaledObjects), as the API
    server and a watch would; `refuse` makes patches of one ScaledObject fail."""

    def __init__(self, configs: StoreCache, scaled_objects: StoreCache) -> None:
        super().__init__(api_client=None)
        self.caches = {POWER_CAPPING_CONFIGS.plural: configs, "scaledobjects": scaled_objects}
        self.patched: list[tuple[str, str, dict[str, Any]]] = []
        self.refuse: dict[str, ApiError] = {}
        self.config_conflicts = 0
        """How many of the next patches of a config's main resource answer 409."""

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        if name in self.refuse and resource.plural == "scaledobjects":
            raise self.refuse[name]
        if resource == POWER_CAPPING_CONFIGS and subresource is None and self.config_conflicts:
            self.config_conflicts -= 1
            raise ApiError(409, {"reason": "Conflict"})
        self.patched.append((f"{namespace}/{name}", resource.plural, dict(patch)))
        cache = self.caches[resource.plural]
        current = cache.store.get(f"{namespace}/{name}")
        if current is None:
            raise ApiError(404, {"reason": "NotFound"})
        updated: dict[str, Any] = apply_merge_patch(thaw(current), patch)
        updated["metadata"].pop("resourceVersion", None)
        cache.store.upsert(updated)
        return updated


def scaled_objects(workloads: WorkloadCaches) -> StoreCache:
    """The test's own ScaledObject cache, which it may write (reconcilers only read caches)."""
    cache = workloads.scaled_objects
    assert isinstance(cache, StoreCache)
    return cache


def capped_by_an_earlier_version(workloads: WorkloadCaches, *, capped_by: str = KEY) -> None:
    """The target as a controller before records left it: ceiling 2, user max 4, annotated."""
    cached = workloads.scaled_objects.store.get(f"{NS}/chat")
    assert cached is not None
    so = thaw(cached)
    dict_at(so, "spec")["maxReplicaCount"] = 2
    dict_at(so, "metadata")["annotations"] = {
        USER_MAX_ANNOTATION: "4",
        CAPPED_BY_ANNOTATION: capped_by,
    }
    scaled_objects(workloads).store.upsert(so)


async def run(
    prometheus: FakePrometheus, configs: StoreCache, workloads: WorkloadCaches, api: Api
) -> RecordedEvents:
    return (await run_for_result(prometheus, configs, workloads, api))[0]


async def run_for_result(
    prometheus: FakePrometheus, configs: StoreCache, workloads: WorkloadCaches, api: Api
) -> tuple[RecordedEvents, Result]:
    events = RecordedEvents()
    async with HTTPSession() as session:

        async def session_factory() -> aiohttp.ClientSession:
            return session

        reconciler = PowerCapReconciler(
            api,
            configs=configs,
            workloads=workloads,
            nodes=StoreCache(),
            events=events,
            metrics=CappingMetrics(CollectorRegistry()),
            settings=CappingSettings(),
            session_factory=session_factory,
        )
        result = await reconciler.reconcile(KEY)
    return events, result


def config_of(configs: StoreCache) -> dict[str, Any]:
    obj = configs.store.get(KEY)
    assert obj is not None
    config: dict[str, Any] = thaw(obj)
    return config


def delete(configs: StoreCache) -> None:
    obj = config_of(configs)
    obj["metadata"]["deletionTimestamp"] = "2026-12-05T12:00:00Z"
    configs.store.upsert(obj)


def ceiling(workloads: WorkloadCaches) -> tuple[int, dict[str, str]]:
    so = workloads.scaled_objects.store.get(f"{NS}/chat")
    assert so is not None
    ceiling = dig(so, "spec", "maxReplicaCount")
    assert isinstance(ceiling, int)
    return ceiling, dict(ObjectMeta.of(so).annotations)


async def test_a_hold_from_before_records_gets_its_record_and_finalizer(
    prometheus: FakePrometheus,
) -> None:
    """A reviewer's finding: a target capped before upgrading was recorded but never given the
    finalizer, so deleting its config left the ceiling lowered for good."""
    prometheus.cpu_watts = "480"  # 960 W of 1000: the ceiling stays held
    configs, workloads = objects(prometheus.url, policy={"type": "Threshold"})
    capped_by_an_earlier_version(workloads)
    api = Api(configs, scaled_objects(workloads))
    await run(prometheus, configs, workloads, api)
    obj = config_of(configs)
    assert GIVE_BACK_FINALIZER in obj["metadata"]["finalizers"]
    assert obj["status"]["heldTargets"] == [{"kind": "ScaledObject", "name": "chat"}]

    delete(configs)
    await run(prometheus, configs, workloads, api)
    assert ceiling(workloads) == (4, {})
    assert GIVE_BACK_FINALIZER not in (config_of(configs)["metadata"].get("finalizers") or ())


async def test_a_deleted_config_gives_back_only_its_own_records_in_its_namespace(
    prometheus: FakePrometheus,
) -> None:
    configs, workloads = objects(prometheus.url)
    capped_by_an_earlier_version(workloads, capped_by=f"{NS}/someone-else")
    elsewhere: JsonDict = {
        "metadata": {
            "name": "chat",
            "namespace": "other",
            "annotations": {USER_MAX_ANNOTATION: "500", CAPPED_BY_ANNOTATION: KEY},
        },
        "spec": {"maxReplicaCount": 1},
    }
    scaled_objects(workloads).store.upsert(elsewhere)
    obj = config_of(configs)
    obj["metadata"]["finalizers"] = [GIVE_BACK_FINALIZER]
    obj["status"] = {"heldTargets": [{"kind": "ScaledObject", "name": "chat"}]}
    configs.store.upsert(obj)
    delete(configs)
    api = Api(configs, scaled_objects(workloads))
    await run(prometheus, configs, workloads, api)
    # Its record names chat in its own namespace, but another config holds that one now;
    # the object in `other` names this config, but that is only an annotation.
    assert [p for p in api.patched if p[1] == "scaledobjects"] == []
    assert ceiling(workloads)[0] == 2
    assert GIVE_BACK_FINALIZER not in (config_of(configs)["metadata"].get("finalizers") or ())


async def test_a_refused_give_back_is_reported_and_does_not_stop_capping(
    prometheus: FakePrometheus,
) -> None:
    """A reviewer's finding: a 403 or 422 on one restore raised before anything was measured,
    so one bad object stopped capping and the fail-safe for every target of the config."""
    configs, workloads = objects(prometheus.url, deploymentName="other")
    capped_by_an_earlier_version(workloads)
    obj = config_of(configs)
    obj["metadata"]["finalizers"] = [GIVE_BACK_FINALIZER]
    obj["status"] = {"heldTargets": [{"kind": "ScaledObject", "name": "chat"}]}
    configs.store.upsert(obj)
    api = Api(configs, scaled_objects(workloads))
    api.refuse["chat"] = ApiError(422, {"reason": "Invalid", "message": "webhook said no"})
    events = await run(prometheus, configs, workloads, api)
    status = config_of(configs)["status"]
    assert status["heldTargets"] == [{"kind": "ScaledObject", "name": "chat"}]
    assert any(reason == "GiveBackFailed" for _, reason, _ in events.recorded)
    assert any(c["type"] == "MetricsAvailable" for c in status["conditions"])  # it went on

    delete(configs)
    await run(prometheus, configs, workloads, api)
    assert GIVE_BACK_FINALIZER in config_of(configs)["metadata"]["finalizers"]  # still owed
    del api.refuse["chat"]
    await run(prometheus, configs, workloads, api)
    assert ceiling(workloads) == (4, {})
    assert GIVE_BACK_FINALIZER not in (config_of(configs)["metadata"].get("finalizers") or ())


async def test_a_config_that_moves_under_the_finalizer_patch_is_decided_again(
    prometheus: FakePrometheus,
) -> None:
    """The finalizer patch carries the config's resourceVersion; another writer (the carbon
    reconciler's status) may win the race. That is a retry a second later, not a failed
    reconcile with a traceback (seen 2 times in the 5,000-config benchmark)."""
    prometheus.cpu_watts = "480"
    configs, workloads = objects(prometheus.url, policy={"type": "Threshold"})
    capped_by_an_earlier_version(workloads)
    api = Api(configs, scaled_objects(workloads))
    api.config_conflicts = 1
    _, result = await run_for_result(prometheus, configs, workloads, api)
    assert result.requeue_after == 1.0
    assert GIVE_BACK_FINALIZER not in (config_of(configs)["metadata"].get("finalizers") or ())
    _, result = await run_for_result(prometheus, configs, workloads, api)
    assert GIVE_BACK_FINALIZER in config_of(configs)["metadata"]["finalizers"]


def make_invalid(configs: StoreCache) -> None:
    """A spec the controller's own checks refuse (a percentage over 100)."""
    obj = config_of(configs)
    obj["spec"]["policy"] = {"holdingThresholdPercent": 250}
    obj["metadata"]["generation"] = 2
    configs.store.upsert(obj)


async def test_an_invalid_spec_is_reported_and_not_retried(prometheus: FakePrometheus) -> None:
    configs, workloads = objects(prometheus.url)
    make_invalid(configs)
    api = Api(configs, scaled_objects(workloads))
    with pytest.raises(TerminalError, match=r"spec\.policy\.holdingThresholdPercent"):
        await run(prometheus, configs, workloads, api)
    (ready,) = [c for c in config_of(configs)["status"]["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.policy.holdingThresholdPercent" in ready["message"]
    assert ready["observedGeneration"] == 2
    assert [p for p in api.patched if p[1] == "scaledobjects"] == []


async def test_a_deleted_config_whose_spec_turned_invalid_still_gives_back(
    prometheus: FakePrometheus,
) -> None:
    """Giving back reads the config's records, not its spec: a spec the controller cannot
    read must not keep the finalizer, and the lowered ceiling, in place."""
    prometheus.cpu_watts = "480"
    configs, workloads = objects(prometheus.url, policy={"type": "Threshold"})
    capped_by_an_earlier_version(workloads)
    api = Api(configs, scaled_objects(workloads))
    await run(prometheus, configs, workloads, api)
    assert GIVE_BACK_FINALIZER in config_of(configs)["metadata"]["finalizers"]

    make_invalid(configs)
    delete(configs)
    _, result = await run_for_result(prometheus, configs, workloads, api)
    assert result == Result()
    assert ceiling(workloads) == (4, {})
    assert GIVE_BACK_FINALIZER not in (config_of(configs)["metadata"].get("finalizers") or ())
