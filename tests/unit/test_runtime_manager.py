"""The manager gates workers on leadership, stops writers when it is lost, releases on stop.

Two managers share an in-memory lease (the Kubernetes side is covered by the integration tests);
timing is shortened so a failover takes about a second.
"""

from __future__ import annotations

import asyncio
import copy
import gc
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from climatik.kube.client import ApiError, KubeClient, NotLeaderError
from climatik.kube.fields import KEEP
from climatik.kube.resources import CONFIGMAPS, NODES, Resource
from climatik.kube.workqueue import WorkQueue
from climatik.runtime.capping import capping_metrics, tuning_hints
from climatik.runtime.http import HttpServer
from climatik.runtime.manager import EXIT_LEADERSHIP_LOST, EXIT_OK, Manager
from climatik.runtime.metrics import RuntimeMetrics
from climatik.runtime.reconcile import Controller, ControllerContext, Result
from climatik.runtime.settings import KubeSettings, LeaderElectionSettings, RuntimeSettings
from tests.unit.fakelease import MemoryLease


class Probe:
    def __init__(self, identity: str, log: list[str], client: KubeClient) -> None:
        self.identity = identity
        self.log = log
        self.client = client

    async def reconcile(self, key: str) -> Result:
        # Stand-in for a write: the manager's gate must allow it only on the leader.
        if not self.client.write_gate():
            raise NotLeaderError(self.identity)
        self.log.append(self.identity)
        return Result(requeue_after=0.05)


def _manager(identity: str, lease: MemoryLease, log: list[str]) -> Manager:
    settings = RuntimeSettings(
        leader_election=LeaderElectionSettings(
            identity=identity,
            lease_duration_s=1.5,
            renew_deadline_s=1.0,
            retry_period_s=0.2,
        )
    )
    settings.http.host = "127.0.0.1"
    settings.http.port = 0
    client = KubeClient(api_client=None)
    manager = Manager(settings, client, lease_client=lease, install_signal_handlers=False)

    def factory(ctx: ControllerContext) -> Controller:
        queue: WorkQueue[str] = ctx.new_queue("probe")
        queue.add("ns/x")
        return Controller("probe", Probe(identity, log, client), queue)

    manager.add_controller(factory)
    return manager


async def test_only_the_leader_reconciles_and_a_stopped_leader_hands_over() -> None:
    lease, log = MemoryLease(), list[str]()
    a = _manager("a", lease, log)
    run_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.3)
    b = _manager("b", lease, log)
    run_b = asyncio.create_task(b.run())
    await asyncio.sleep(0.5)
    assert set(log) == {"a"}
    assert lease.record is not None
    assert lease.record.holder_identity == "a"
    assert b.metrics.registry.get_sample_value("climatik_leader_is_leader") == 0
    a.request_stop()
    assert await asyncio.wait_for(run_a, 5) == EXIT_OK
    released_at = len(lease.writes)
    assert lease.writes[released_at - 1].holder_identity == ""
    count_at_stop = len(log)
    await asyncio.sleep(1.0)  # b retries every 0.2-0.44 s and finds the lease free
    assert "b" in log[count_at_stop:]
    assert "a" not in log[count_at_stop:]
    b.request_stop()
    assert await asyncio.wait_for(run_b, 5) == EXIT_OK


async def test_a_leader_that_cannot_renew_stops_writing_and_exits_non_zero() -> None:
    lease, log = MemoryLease(), list[str]()
    a = _manager("a", lease, log)
    run_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.3)
    assert log
    lease.fail = True  # the API server becomes unreachable
    assert await asyncio.wait_for(run_a, 3) == EXIT_LEADERSHIP_LOST
    assert not a.may_write()
    count = len(log)
    await asyncio.sleep(0.2)
    assert len(log) == count


async def test_probes_and_metrics_endpoints() -> None:
    metrics = RuntimeMetrics()
    ready = False
    server = HttpServer(metrics.registry, lambda: ready, host="127.0.0.1", port=0)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503
            ready = True
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 200
            metrics.reconcile_total.labels(controller="c", result="success").inc()
            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
        assert 'climatik_reconcile_total{controller="c",result="success"} 1.0' in text
        assert "climatik_build_info{version=" in text
        assert "climatik_leader_is_leader 0.0" in text
    finally:
        await server.stop()


def _bare_manager(watched_namespace: str | None) -> Manager:
    settings = RuntimeSettings(
        kube=KubeSettings(namespace=watched_namespace),
        leader_election=LeaderElectionSettings(enabled=False),
    )
    return Manager(settings, KubeClient(api_client=None), install_signal_handlers=False)


@pytest.mark.parametrize("watched_namespace", [None, "prod"])
async def test_an_informer_may_name_its_own_namespace(watched_namespace: str | None) -> None:
    manager = _bare_manager(watched_namespace)
    default = manager.informer(CONFIGMAPS, label_selector="x")
    scoped = manager.informer(CONFIGMAPS, namespace="tuning", label_selector="x")
    assert default.namespace == watched_namespace
    assert scoped.namespace == "tuning"
    assert scoped is not default
    # Shared per (resource, namespace, selector), like every informer of the manager.
    assert manager.informer(CONFIGMAPS, namespace="tuning", label_selector="x") is scoped
    assert manager.informer(CONFIGMAPS, label_selector="x") is default


async def test_a_cluster_scoped_informer_refuses_a_namespace() -> None:
    manager = _bare_manager("prod")
    assert manager.informer(NODES).namespace is None
    with pytest.raises(ValueError, match="cluster-scoped"):
        manager.informer(NODES, namespace="tuning")


async def test_a_shared_informer_caches_what_any_of_its_consumers_reads() -> None:
    manager = _bare_manager(None)
    nodes = manager.informer(NODES, fields={"spec": {"podCIDR": KEEP}})
    manager.informer(NODES, fields={"status": {"phase": KEEP}})
    node = {
        "metadata": {"name": "n", "managedFields": [{}], "labels": {"a": "b"}},
        "spec": {"podCIDR": "10.0.0.0/24", "taints": []},
        "status": {"phase": "Running", "images": []},
    }
    assert nodes.transform is not None
    assert nodes.transform(copy.deepcopy(node)) == {
        "metadata": {"name": "n"},
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {"phase": "Running"},
    }
    # A consumer that names no fields (one plugged in by import path) sees whole objects.
    manager.informer(NODES)
    whole = nodes.transform(copy.deepcopy(node))
    assert whole["status"]["images"] == []
    assert "managedFields" not in whole["metadata"]
    nodes.reflector.lists_done = 1
    with pytest.raises(RuntimeError, match="before it lists"):
        manager.informer(NODES, fields={"spec": KEEP})


class RbacClient(KubeClient):
    """Lists succeed (empty) in every namespace but the refused ones, which answer 403 until
    allowed, like a missing Role; watches stay open and quiet."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__(api_client=None)
        self.refused = refused

    async def list(
        self, resource: Resource, namespace: str | None = None, **_: Any
    ) -> dict[str, Any]:
        if namespace in self.refused:
            raise ApiError(
                403, {"reason": "Forbidden", "message": f"{resource.plural} in {namespace}"}
            )
        return {"kind": "ConfigMapList", "metadata": {"resourceVersion": "1"}, "items": []}

    async def open_stream(
        self, path: str, query: Mapping[str, Any], client_timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        await asyncio.Future()  # a watch with nothing to say
        raise AssertionError("unreachable")


class Reconciled:
    """Sets its event on the first reconcile."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def reconcile(self, key: str) -> Result:
        self.event.set()
        return Result()


async def test_a_controller_whose_cache_never_syncs_holds_back_only_itself() -> None:
    client = RbacClient(refused={"tuning"})
    settings = RuntimeSettings(leader_election=LeaderElectionSettings(enabled=False))
    settings.http.host = "127.0.0.1"
    settings.http.port = 0
    manager = Manager(settings, client, install_signal_handlers=False)
    capping, tuning = Reconciled(), Reconciled()

    def probe(name: str, namespace: str | None, reconciler: Reconciled) -> Any:
        def factory(ctx: ControllerContext) -> Controller:
            ctx.informer(CONFIGMAPS, namespace=namespace)
            queue: WorkQueue[str] = ctx.new_queue(name)
            queue.add("ns/x")
            return Controller(name, reconciler, queue)

        return factory

    manager.add_controller(probe("capping", None, capping))
    manager.add_controller(probe("tuning", "tuning", tuning))
    run = asyncio.create_task(manager.run())
    try:
        await asyncio.wait_for(capping.event.wait(), 5)
        await asyncio.sleep(0.3)
        assert not tuning.event.is_set()
        assert not manager.ready()  # /readyz still says a cache is missing
        # The Role appears: the refused list is retried with backoff and the controller starts.
        client.refused.clear()
        await asyncio.wait_for(tuning.event.wait(), 5)
        assert manager.ready()
    finally:
        manager.request_stop()
        assert await asyncio.wait_for(run, 5) == EXIT_OK


async def test_the_heap_is_frozen_once_every_cache_has_listed_and_not_before() -> None:
    """A full collection walks the caches' millions of objects (runtime/heap.py): they are
    frozen once listed. A cache still refused leaves the heap as it is."""
    client = RbacClient(refused={"tuning"})
    settings = RuntimeSettings(leader_election=LeaderElectionSettings(enabled=False))
    settings.http.host = "127.0.0.1"
    settings.http.port = 0
    settings.heap.young_threshold = 12_345
    manager = Manager(settings, client, install_signal_handlers=False)
    tuning = Reconciled()

    def factory(ctx: ControllerContext) -> Controller:
        ctx.informer(CONFIGMAPS, namespace="tuning")
        queue: WorkQueue[str] = ctx.new_queue("tuning")
        queue.add("ns/x")
        return Controller("tuning", tuning, queue)

    manager.add_controller(factory)
    thresholds = gc.get_threshold()
    gc.unfreeze()
    run = asyncio.create_task(manager.run())
    try:
        await asyncio.sleep(0.3)
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_freeze_count() == 0
        client.refused.clear()
        await asyncio.wait_for(tuning.event.wait(), 5)
        async with asyncio.timeout(5):
            while gc.get_freeze_count() == 0:  # noqa: ASYNC110 (the collector has no event)
                await asyncio.sleep(0.01)
    finally:
        manager.request_stop()
        assert await asyncio.wait_for(run, 5) == EXIT_OK
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_what_controllers_share_is_one_object_per_manager() -> None:
    """The GPU-tuning controller's hints must reach the power-cap controller of the same
    manager, and never another manager's (module globals keyed by `id()` could hand a new
    manager a collected one's object)."""
    first, second = _bare_manager(None), _bare_manager(None)
    hints = tuning_hints(first)
    assert tuning_hints(first) is hints
    assert tuning_hints(second) is not hints
    assert capping_metrics(first) is capping_metrics(first)
    assert capping_metrics(first).power_watts is not capping_metrics(second).power_watts
    with pytest.raises(TypeError, match="made a"):
        first.shared(int, lambda: "not an int")  # type: ignore[arg-type,return-value]
