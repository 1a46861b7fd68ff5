"""The manager: wires informers, queues, reconcile workers, leader election and the HTTP server.

Guarantees:
- One shared :class:`KubeClient` (one connection pool) for everything.
- Informers and queues run on every replica, so a standby's caches are warm when it takes over;
  reconcile workers run only on the leader, and each controller's only once the informers it asked
  for have synced. One controller's cache that never syncs (its list refused by RBAC, say) holds
  back that controller alone, not the others; ``/readyz`` still waits for every cache.
- Every write goes through the client's write gate, which asks the leader elector; the moment the
  renew deadline passes (even inside a frozen process) the gate closes. Losing leadership also
  shuts every queue and cancels every worker at once, and ``run`` returns 1 so the process exits
  non-zero and the Deployment restarts it as a fresh standby.
- Long-lived tasks live in one ``asyncio.TaskGroup`` and are guarded: a crash or an early return is
  logged by name and stops the process (exit 2) rather than leaving a half-working controller.
- SIGTERM/SIGINT: stop handing out keys, let in-flight reconciles finish (``shutdown_grace_s``),
  release the lease so a standby takes over within seconds, stop informers and the HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import structlog

from climatik.kube.client import KubeClient
from climatik.kube.events import EventRecorder
from climatik.kube.fields import FieldFilter, Fields
from climatik.kube.informer import EventHandlers, Informer
from climatik.kube.leaderelection import (
    KubeLeaseClient,
    LeaderElectionConfig,
    LeaderElector,
    LeaseClient,
    Outcome,
)
from climatik.kube.resources import LEASES, Resource
from climatik.kube.store import IndexFunc
from climatik.kube.watchstate import WatchSettings
from climatik.kube.workqueue import WorkQueue
from climatik.runtime.heap import freeze_live_objects, tune_collector
from climatik.runtime.http import HttpServer
from climatik.runtime.metrics import RuntimeMetrics
from climatik.runtime.reconcile import Controller, ControllerFactory, run_worker
from climatik.runtime.settings import ControllerSettings, RuntimeSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")

EXIT_OK = 0
EXIT_LEADERSHIP_LOST = 1
EXIT_CRASHED = 2


class LeadershipLostError(Exception):
    """The lease could not be renewed before the deadline."""


class TaskExitedError(Exception):
    """A task that should run until shutdown returned on its own."""


async def _guarded(name: str, coro: Coroutine[Any, Any, Any]) -> None:
    """Run a long-lived coroutine; log by name if it crashes or returns early."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("task_crashed", task=name)
        raise
    log.error("task_exited_early", task=name)
    raise TaskExitedError(name)


class Manager:
    """Owns the controller process's moving parts; ``run`` returns the exit status."""

    def __init__(
        self,
        settings: RuntimeSettings,
        client: KubeClient,
        *,
        metrics: RuntimeMetrics | None = None,
        lease_client: LeaseClient | None = None,
        install_signal_handlers: bool = True,
        controller_settings: ControllerSettings | None = None,
    ) -> None:
        self.settings = settings
        # `climatik run` reads these once and passes them; a manager built without them (tests,
        # benchmarks) reads the environment here, once, never again per factory.
        self.controller_settings = controller_settings or ControllerSettings()
        self.client = client
        self.metrics = metrics or RuntimeMetrics()
        self.identity = settings.leader_election.identity
        self.events = EventRecorder(client, host=self.identity)
        self.controllers: list[Controller] = []
        self._informers: dict[tuple[Any, ...], Informer] = {}
        self._field_filters: dict[tuple[Any, ...], FieldFilter] = {}
        # The informers each controller asked for while its factory ran, in registration order.
        self._controller_informers: list[tuple[Informer, ...]] = []
        self._requested: list[Informer] | None = None
        self._install_signal_handlers = install_signal_handlers
        self._stop_requested = asyncio.Event()
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._services: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
        self._shared: dict[type, object] = {}
        self._workers_task: asyncio.Task[None] | None = None
        self.watch_settings = WatchSettings(
            inactivity_timeout_s=settings.kube.watch_inactivity_timeout_s
        )
        le = settings.leader_election
        self.elector: LeaderElector | None = None
        if le.enabled:
            self.elector = LeaderElector(
                LeaderElectionConfig(
                    identity=le.identity,
                    lease_duration_s=le.lease_duration_s,
                    renew_deadline_s=le.renew_deadline_s,
                    retry_period_s=le.retry_period_s,
                    jitter=le.jitter,
                ),
                lease_client or KubeLeaseClient(client, le.lease_name, settings.lease_namespace()),
                on_started_leading=self._started_leading,
                on_stopped_leading=self._stop_writers,
                on_new_leader=lambda holder: log.info("leader_observed", leader=holder),
            )
            if lease_client is None:
                self._watch_lease(le.lease_name, settings.lease_namespace())
        client.write_gate = self.may_write
        self.http = HttpServer(
            self.metrics.registry, self.ready, host=settings.http.host, port=settings.http.port
        )

    def _watch_lease(self, name: str, namespace: str) -> None:
        """Nudge the elector when the Lease is released, so a standby takes over in well under
        a second instead of at its next 2-4.4 s poll."""
        elector = self.elector
        assert elector is not None

        def check(lease: Mapping[str, Any]) -> None:
            if not (lease.get("spec") or {}).get("holderIdentity"):
                elector.nudge()

        informer = Informer(
            self.client,
            LEASES,
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            settings=self.watch_settings,
            metrics=self.metrics,
        )
        informer.add_handlers(
            EventHandlers(
                on_add=check,
                on_update=lambda _old, new: check(new),
                on_delete=lambda _obj: elector.nudge(),
            )
        )
        self._informers[("lease", namespace, name)] = informer

    # -- ControllerContext ------------------------------------------------------------------

    def shared(self, kind: type[T], make: Callable[[], T]) -> T:
        found = self._shared.get(kind)
        if found is None:
            found = self._shared[kind] = make()
        if not isinstance(found, kind):
            raise TypeError(f"shared {kind.__name__}: made a {type(found).__name__}")
        return found

    @property
    def namespace(self) -> str | None:
        return self.settings.kube.namespace

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
        fields: Fields | None = None,
    ) -> Informer:
        """The shared informer for ``resource`` (created on first use).

        It caches the union of the ``fields`` its consumers read (``climatik.kube.fields``);
        a consumer that names none gets whole objects.

        A namespaced resource is watched in ``namespace`` when given, else in the watched
        namespace (every namespace when that is unset). Naming one lets a controller that only
        ever reads objects it keeps in one namespace (GPU tuning Jobs) list and watch there
        alone, so RBAC can grant it through a Role instead of a ClusterRole.
        """
        if not resource.namespaced:
            if namespace is not None:
                raise ValueError(f"{resource.plural} are cluster-scoped: no namespace to watch")
        elif namespace is None:
            namespace = self.namespace
        key = (resource, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            self._field_filters[key] = FieldFilter(fields)
            informer = Informer(
                self.client,
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                indexers=dict(indexers or {}),
                settings=self.watch_settings,
                metrics=self.metrics,
                transform=self._field_filters[key],
            )
            self._informers[key] = informer
        else:
            if informer.reflector.lists_done:
                raise RuntimeError(f"{informer.name}: consumers are wired up before it lists")
            self._field_filters[key].widen(fields)
            for name, func in (indexers or {}).items():
                informer.store.add_indexer(name, func)
        # By identity: informers are dataclasses, and `==` would compare their fields.
        if self._requested is not None and all(i is not informer for i in self._requested):
            self._requested.append(informer)
        return informer

    def new_queue(
        self, name: str, *, max_in_flight_per_namespace: int | None = None
    ) -> WorkQueue[str]:
        return WorkQueue(
            name, metrics=self.metrics, max_in_flight_per_group=max_in_flight_per_namespace
        )

    def add_cleanup(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run `cleanup` when the manager stops (e.g. close a controller's HTTP session)."""
        self._cleanups.append(cleanup)

    def add_service(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `run()` on every replica for the manager's lifetime (e.g. an admission webhook
        server); it is guarded like an informer: returning or crashing stops the process."""
        self._services[name] = run

    def add_controller(self, factory: ControllerFactory) -> Controller:
        """Build a controller; the informers its factory asks for are the ones it waits on."""
        requested: list[Informer] = []
        self._requested = requested
        try:
            controller = factory(self)
        finally:
            self._requested = None
        self.controllers.append(controller)
        self._controller_informers.append(tuple(requested))
        log.info(
            "controller_registered",
            controller=controller.name,
            workers=controller.workers,
            reconcile_timeout_s=controller.reconcile_timeout_s,
        )
        return controller

    # -- state ------------------------------------------------------------------------------

    @property
    def informers(self) -> Iterable[Informer]:
        return self._informers.values()

    def ready(self) -> bool:
        return all(informer.has_synced() for informer in self._informers.values())

    def may_write(self) -> bool:
        return self.elector.may_write() if self.elector is not None else True

    def request_stop(self) -> None:
        if not self._stop_requested.is_set():
            log.info("shutdown_requested")
        self._stop_requested.set()

    # -- leadership callbacks ---------------------------------------------------------------

    def _started_leading(self) -> None:
        self.metrics.leader_is_leader.set(1)

    def _stop_writers(self) -> None:
        """Stop every writer at once: no new keys, in-flight reconciles cancelled."""
        self.metrics.leader_is_leader.set(0)
        for controller in self.controllers:
            controller.queue.shut_down()
        if self._workers_task is not None and not self._workers_task.done():
            self._workers_task.cancel()

    # -- run --------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until a signal (0), lost leadership (1) or a crashed task (2)."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if self._install_signal_handlers else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)
        log.info(
            "manager_starting",
            identity=self.identity,
            namespace=self.namespace or "*",
            leader_election=self.elector is not None,
            controllers=[c.name for c in self.controllers],
        )
        exit_code = EXIT_OK
        tune_collector(self.settings.heap)
        try:
            await self.http.start()
            log.info("http_server_started", port=self.http.port)
            await self._supervise()
        except* LeadershipLostError:
            log.error("leadership_lost_exiting", identity=self.identity)
            exit_code = EXIT_LEADERSHIP_LOST
        except* Exception:
            log.exception("manager_crashed")
            exit_code = EXIT_CRASHED
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            self.metrics.leader_is_leader.set(0)
            await self.http.stop()
            for cleanup in reversed(self._cleanups):
                try:
                    await cleanup()
                except Exception:
                    log.exception("cleanup_failed")
        log.info("manager_stopped", exit_code=exit_code)
        return exit_code

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as group:
            infra = [
                group.create_task(
                    _guarded(f"informer:{i.name}", i.run()), name=f"informer:{i.name}"
                )
                for i in self._informers.values()
            ]
            infra += [
                group.create_task(_guarded(f"service:{name}", run()), name=f"service:{name}")
                for name, run in self._services.items()
            ]
            elector_task = (
                group.create_task(self._lead(), name="leader-election")
                if self.elector is not None
                else None
            )
            if self.settings.heap.freeze_after_sync:
                infra.append(group.create_task(self._freeze_when_synced(), name="heap-freeze"))
            self._workers_task = group.create_task(self._work(), name="workers")
            stop_task = group.create_task(self._stop_requested.wait(), name="stop-signal")
            await stop_task
            # Orderly shutdown: finish in-flight writes, then release the lease, then the rest.
            await self._stop_workers()
            if elector_task is not None:
                elector_task.cancel()
                await asyncio.wait({elector_task})
            for task in infra:
                task.cancel()

    async def _freeze_when_synced(self) -> None:
        """Freeze the heap once every cache holds its first list (`runtime/heap.py`)."""
        await asyncio.gather(*(informer.wait_synced() for informer in self._informers.values()))
        freeze_live_objects()

    async def _lead(self) -> None:
        assert self.elector is not None
        outcome = await self.elector.run()
        if outcome is Outcome.LOST:
            raise LeadershipLostError(self.identity)

    async def _work(self) -> None:
        if self.elector is not None:
            await self.elector.leading_event.wait()
        async with asyncio.TaskGroup() as group:
            for controller, informers in zip(
                self.controllers, self._controller_informers, strict=True
            ):
                group.create_task(
                    self._run_controller(controller, informers),
                    name=f"controller:{controller.name}",
                )
        # Workers return once their queue shuts down; then wait here until the manager stops.
        await asyncio.Future()

    async def _run_controller(self, controller: Controller, informers: Iterable[Informer]) -> None:
        """Start one controller's workers once its own caches have synced."""
        pending = [informer.name for informer in informers if not informer.has_synced()]
        if pending:
            log.info("controller_waiting_for_caches", controller=controller.name, caches=pending)
        await asyncio.gather(*(informer.wait_synced() for informer in informers))
        log.info("workers_started", controller=controller.name, workers=controller.workers)
        async with asyncio.TaskGroup() as group:
            for index in range(controller.workers):
                group.create_task(
                    run_worker(controller, self.metrics),
                    name=f"worker:{controller.name}:{index}",
                )

    async def _stop_workers(self) -> None:
        queues = [controller.queue for controller in self.controllers]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.shutdown_grace_s):
                await asyncio.gather(*(queue.drain() for queue in queues))
        if self._workers_task is not None:
            self._workers_task.cancel()
            await asyncio.wait({self._workers_task})


async def run_manager(
    settings: RuntimeSettings,
    factories: Iterable[ControllerFactory],
    *,
    controller_settings: ControllerSettings | None = None,
    client_factory: Callable[[], Coroutine[Any, Any, KubeClient]] | None = None,
) -> int:
    """Build the client and manager, register controllers, run, close the client.

    A client built from the kubeconfig is first checked to reach its API server, so a wrong
    address fails at once with that address (exit 1, as controller-runtime's managers do)
    instead of every informer retrying it forever.
    """
    if client_factory is None:
        client = await KubeClient.from_config(
            settings.kube.kubeconfig, request_timeout_s=settings.kube.request_timeout_s
        )
        try:
            await client.check_reachable(settings.kube.request_timeout_s)
        except BaseException:
            await client.close()
            raise
    else:
        client = await client_factory()
    try:
        manager = Manager(settings, client, controller_settings=controller_settings)
        for factory in factories:
            manager.add_controller(factory)
        return await manager.run()
    finally:
        await client.close()
