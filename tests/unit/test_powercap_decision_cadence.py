"""A config is decided once a control interval, whatever wakes its key (the live loop's cadence
is the twin's). Events on its targets (the controller's own ceiling writes among them, which
KServe echoes into its ScaledObject) used to start a decision each, on the same measurements,
and their bounded steps compounded: 4 -> 5 -> 6 -> 5 within 0.4 s in the KServe demo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from prometheus_client import CollectorRegistry

from climatik.domain.capping import CappingState
from climatik.kube.client import ApiError
from climatik.kube.store import thaw
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap import EARLIEST_DECISION_SHARE, PowerCapReconciler
from climatik.reconcilers.settings import CappingSettings
from climatik.reconcilers.targets import WorkloadCaches
from climatik.sources.address import HTTPSession
from tests.json_paths import dict_at
from tests.unit.helpers.capping_world import FakePrometheus, objects, prometheus
from tests.unit.helpers.status_world import RecordedEvents, StoreCache
from tests.unit.test_powercap_give_back import KEY, Api, scaled_objects

__all__ = ["prometheus"]  # the fixture, used by name

INTERVAL_S = 15.0


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@asynccontextmanager
async def cadence_reconciler(
    api: Api,
    configs: StoreCache,
    workloads: WorkloadCaches,
    registry: CollectorRegistry,
    clock: Clock,
) -> AsyncIterator[PowerCapReconciler]:
    """The power-cap reconciler on the test's objects, a fake clock and a real HTTP session."""
    async with HTTPSession() as session:

        async def session_factory() -> aiohttp.ClientSession:
            return session

        yield PowerCapReconciler(
            api,
            configs=configs,
            workloads=workloads,
            nodes=StoreCache(),
            events=RecordedEvents(),
            metrics=CappingMetrics(registry),
            settings=CappingSettings(interval_s=INTERVAL_S),
            session_factory=session_factory,
            clock=clock,
        )


def decisions(registry: CollectorRegistry) -> float:
    """Ceiling decisions counted so far, over every action and reason."""
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "climatik_decisions"
        for sample in metric.samples
        if sample.name == "climatik_decisions_total"
    )


def bump_generation(configs: StoreCache) -> None:
    obj = configs.store.get(KEY)
    assert obj is not None
    config = thaw(obj)
    meta = dict_at(config, "metadata")
    generation = meta["generation"]
    assert isinstance(generation, int)
    meta["generation"] = generation + 1
    dict_at(config, "spec")["powerCapLimit"] = 900
    configs.store.upsert(config)


async def test_a_key_woken_early_waits_for_its_interval_and_a_spec_change_is_decided_at_once(
    prometheus: FakePrometheus,
) -> None:
    prometheus.cpu_watts = "480"  # 960 W of 1000: the policy acts
    configs, workloads = objects(prometheus.url, policy={"type": "Threshold"})
    api = Api(configs, scaled_objects(workloads))
    registry = CollectorRegistry()
    clock = Clock()
    async with cadence_reconciler(api, configs, workloads, registry, clock) as reconciler:
        first = await reconciler.reconcile(KEY)
        decided = decisions(registry)
        assert decided > 0
        assert first.requeue_after == INTERVAL_S

        # Woken by an event a second later (a target changed, or our own write came back).
        clock.now_s += 1.0
        early = await reconciler.reconcile(KEY)
        assert decisions(registry) == decided
        assert early.requeue_after == INTERVAL_S - 1.0

        # Woken again at the interval (or a little before it, by the lateness lead): decides.
        clock.now_s += EARLIEST_DECISION_SHARE * INTERVAL_S
        await reconciler.reconcile(KEY)
        assert decisions(registry) > decided
        decided = decisions(registry)

        # The user changed the spec: no waiting for the interval.
        bump_generation(configs)
        clock.now_s += 0.5
        await reconciler.reconcile(KEY)
        assert decisions(registry) > decided


async def test_a_refused_ceiling_write_keeps_nothing_the_round_learned(
    prometheus: FakePrometheus,
) -> None:
    """The round is decided again at once on a fresh read; had it kept what it learned, the
    retry would learn the same measurement twice (one steady round too many)."""
    prometheus.cpu_watts = "480"  # 960 W of 1000: the headroom policy lowers the ceiling
    configs, workloads = objects(prometheus.url, policy={"type": "Headroom"})
    api = Api(configs, scaled_objects(workloads))
    api.refuse["chat"] = ApiError(409, {"reason": "Conflict"})
    clock = Clock()
    async with cadence_reconciler(
        api, configs, workloads, CollectorRegistry(), clock
    ) as reconciler:
        refused = await reconciler.reconcile(KEY)
        assert refused.requeue_after is not None
        assert refused.requeue_after < INTERVAL_S  # retried at once
        assert reconciler.learned_state(KEY) == CappingState()  # nothing kept
        del api.refuse["chat"]
        await reconciler.reconcile(KEY)
        learned = reconciler.learned_state(KEY)
        assert learned is not None
        assert learned.targets["chat"].samples == 1
