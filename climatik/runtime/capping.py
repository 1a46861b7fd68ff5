"""Wiring of the power-cap reconciler into the manager: informers, event routing, session.

A PowerCappingConfig is reconciled when it changes, when anything it may target changes
(ScaledObjects, InferenceServices, Deployments and pods of its namespace), when an object it
still holds a ceiling on changes (so a deleted config gives ceilings back, even after a
restart), and every `interval_s` for fresh measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
import structlog

from climatik.domain.gpu import TUNE_NODE_LABEL
from climatik.kube.cache import Cache
from climatik.kube.informer import EventHandlers
from climatik.kube.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    INFERENCE_SERVICES,
    JOBS,
    NODES,
    PODS,
    SCALED_OBJECTS,
)
from climatik.kube.store import FrozenMapping, index_by_namespace, object_key
from climatik.kube.workqueue import WorkQueue
from climatik.reconcilers.cached_fields import (
    DEPLOYMENT_FIELDS,
    HPA_FIELDS,
    INFERENCE_SERVICE_FIELDS,
    NODE_FIELDS,
    POD_FIELDS,
    SCALED_OBJECT_FIELDS,
)
from climatik.reconcilers.carbon import CarbonReconciler
from climatik.reconcilers.clock_board import ClockBoard
from climatik.reconcilers.gpu_tuning import ALLOWED_NAMESPACES_ENV, GpuTuningReconciler
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap import PowerCapReconciler
from climatik.reconcilers.powercap_measure import prometheus_pool
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.settings import (
    CAPPING_ALLOWED_HOSTS_ENV,
    DEPRECATED_ALLOWED_PROMETHEUS_HOSTS_ENV,
    DEPRECATED_APPLY_NAMESPACES_ENV,
)
from climatik.reconcilers.targets import WorkloadCaches, limited_by_ceiling
from climatik.reconcilers.tuning_hints import TuningHints
from climatik.runtime.reconcile import Controller, ControllerContext
from climatik.sources.address import ConnectTo, HTTPSession

log = structlog.get_logger(__name__)

PROMETHEUS_QUERIES_PER_RECONCILE = 8
"""At most this many queries of one power-cap reconcile are in flight (PrometheusPowerSource's
`max_concurrency`): the session's pool holds that many per worker, so no reconcile ever waits
for a connection another config's silent Prometheus is holding."""


def capping_metrics(ctx: ControllerContext) -> CappingMetrics:
    """One set of capping metrics per manager, shared by the reconcilers that report them."""
    return ctx.shared(CappingMetrics, lambda: CappingMetrics(ctx.metrics.registry))


def tuning_hints(ctx: ControllerContext) -> TuningHints:
    """The hints the GPU-tuning controller leaves for the power-cap controller of one manager."""
    return ctx.shared(TuningHints, TuningHints)


def clock_board(ctx: ControllerContext) -> ClockBoard:
    """The clocks the GPU-tuning and power-cap controllers of one manager hand each other."""
    return ctx.shared(ClockBoard, ClockBoard)


def workload_caches(ctx: ControllerContext) -> WorkloadCaches:
    """The shared informers targets are resolved from (the manager dedups informers)."""
    return WorkloadCaches(
        scaled_objects=ctx.informer(SCALED_OBJECTS, fields=SCALED_OBJECT_FIELDS),
        inference_services=ctx.informer(INFERENCE_SERVICES, fields=INFERENCE_SERVICE_FIELDS),
        deployments=ctx.informer(DEPLOYMENTS, fields=DEPLOYMENT_FIELDS),
        pods=ctx.informer(PODS, fields=POD_FIELDS),
    )


class SharedSession:
    """The controller's outbound HTTP session, opened on first use inside the running loop."""

    def __init__(self, *, connection_limit: int = 32, connect_to: Iterable[ConnectTo] = ()) -> None:
        self._owner = HTTPSession(connection_limit=connection_limit, connect_to=connect_to)
        self._session: aiohttp.ClientSession | None = None

    async def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = await self._owner.__aenter__()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._owner.close()
            self._session = None


def configs_in_namespace(
    configs: Cache[FrozenMapping], queue: WorkQueue[str]
) -> Callable[[Mapping[str, Any]], None]:
    """Wake the configs of an object's own namespace: only they may act on it (an annotation
    naming a config elsewhere is no reason to wake that config)."""

    def enqueue(obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        for config in configs.store.by_index("namespace", meta.get("namespace") or ""):
            queue.add(object_key(config))

    return enqueue


_WAKING_METADATA = ("generation", "deletionTimestamp")
"""A new spec, or a deletion waiting on a finalizer, is work for every config reconciler."""


def config_handlers(queue: WorkQueue[str], status_fields: tuple[str, ...] = ()) -> EventHandlers:
    """Enqueue a config on add, delete, spec change, or a change of the named status fields.

    A reconciler's own status writes must not wake it again (that would be a hot loop of
    measure-write-measure); the power-cap reconciler does want to hear of the carbon
    reconciler's new effective cap.
    """

    def key(obj: Mapping[str, Any]) -> str:
        meta = obj["metadata"]
        return f"{meta.get('namespace')}/{meta['name']}"

    def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        old_status, new_status = old.get("status") or {}, new.get("status") or {}
        if any(old["metadata"].get(f) != new["metadata"].get(f) for f in _WAKING_METADATA) or any(
            old_status.get(f) != new_status.get(f) for f in status_fields
        ):
            queue.add(key(new))

    return EventHandlers(
        on_add=lambda obj: queue.add(key(obj)),
        on_update=changed,
        on_delete=lambda obj: queue.add(key(obj)),
    )


def _when_changed(
    read: Callable[[Mapping[str, Any]], tuple[Any, ...]],
    nudge: Callable[[Mapping[str, Any]], None],
) -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]:
    """An update handler that nudges only when `read` sees a difference."""

    def on_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        if read(old) != read(new):
            nudge(new)

    return on_update


def _what_targets_read(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What target resolution reads of a ScaledObject or InferenceService: its spec (the
    generation moves with it), labels (selectors), annotations (user max, priority, ours) and
    owners (KServe), and whether it is being deleted."""
    meta = obj.get("metadata") or {}
    return (
        meta.get("generation"),
        meta.get("labels"),
        meta.get("annotations"),
        meta.get("ownerReferences"),
        meta.get("deletionTimestamp"),
    )


def _what_deployments_read(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What target resolution reads of a Deployment: its pod selector and replica count."""
    return (
        (obj.get("spec") or {}).get("selector"),
        (obj.get("status") or {}).get("replicas"),
        (obj.get("metadata") or {}).get("deletionTimestamp"),
    )


def namespace_share(workers: int) -> int:
    """How many of a controller's workers one namespace may hold at once: half, so a tenant
    whose every reconcile waits on a slow Prometheus leaves the other half to everyone else."""
    return max(1, workers // 2)


def power_cap_controller(ctx: ControllerContext) -> Controller:
    """The power-cap controller: `CLIMATIK_CAPPING__WORKERS` configs at once, each reconcile
    under `CLIMATIK_CAPPING__RECONCILE_TIMEOUT_S`; decisions are cheap, waiting on a tenant's
    Prometheus is not, and one tenant's silent Prometheus must not hold up the others."""
    settings = ctx.controller_settings.capping
    if settings.deprecated_allowed_prometheus_hosts:
        log.warning(
            "deprecated_setting",
            setting=DEPRECATED_ALLOWED_PROMETHEUS_HOSTS_ENV,
            use=CAPPING_ALLOWED_HOSTS_ENV,
            note="read only while the new one is empty",
            allowed_hosts=settings.allowed_hosts,
        )
    queue = ctx.new_queue(
        "power-cap", max_in_flight_per_namespace=namespace_share(settings.workers)
    )
    configs = ctx.informer(POWER_CAPPING_CONFIGS, indexers={"namespace": index_by_namespace})
    configs.add_handlers(
        config_handlers(queue, status_fields=("effectiveCapWatts", "effectiveCapSource"))
    )
    nudge = configs_in_namespace(configs, queue)
    scaled_objects = ctx.informer(SCALED_OBJECTS, fields=SCALED_OBJECT_FIELDS)
    inference_services = ctx.informer(INFERENCE_SERVICES, fields=INFERENCE_SERVICE_FIELDS)
    deployments = ctx.informer(DEPLOYMENTS, fields=DEPLOYMENT_FIELDS)
    # An update wakes every config of the namespace only when it changes what a decision
    # reads: the controller-manager rewrites Deployment conditions all the time (15 updates a
    # second with 5,000 Deployments, each waking 50 configs), and none of that is news.
    for informer, read in (
        (scaled_objects, _what_targets_read),
        (inference_services, _what_targets_read),
        (deployments, _what_deployments_read),
    ):
        informer.add_handlers(
            EventHandlers(on_add=nudge, on_update=_when_changed(read, nudge), on_delete=nudge)
        )
    pods = ctx.informer(PODS, fields=POD_FIELDS)
    # Pod updates are frequent and carry nothing a decision needs before the next interval.
    pods.add_handlers(EventHandlers(on_add=nudge, on_delete=nudge))
    hpas = ctx.informer(HORIZONTAL_POD_AUTOSCALERS, fields=HPA_FIELDS)
    # KEDA's HPAs say whether a ceiling holds the autoscaler back; only that change matters.
    hpas.add_handlers(
        EventHandlers(
            on_add=nudge,
            on_update=lambda old, new: (
                nudge(new) if limited_by_ceiling(old) != limited_by_ceiling(new) else None
            ),
            on_delete=nudge,
        )
    )
    session = SharedSession(
        connection_limit=settings.workers * PROMETHEUS_QUERIES_PER_RECONCILE,
        connect_to=ctx.controller_settings.outbound.rules(),
    )
    ctx.add_cleanup(session.close)
    # One read layer for every config: shared answers and a breaker per Prometheus address.
    prometheus = prometheus_pool(settings, session.get)
    ctx.add_cleanup(prometheus.close)
    reconciler = PowerCapReconciler(
        ctx.client,
        configs=configs,
        workloads=WorkloadCaches(scaled_objects, inference_services, deployments, pods, hpas),
        nodes=ctx.informer(NODES, fields=NODE_FIELDS),
        events=ctx.events,
        metrics=capping_metrics(ctx),
        settings=settings,
        session_factory=session.get,
        prometheus=prometheus,
        hints=tuning_hints(ctx),
        clocks=clock_board(ctx),
        # The same switch that leaves the GPU-tuning controller out (controllers.py): with it
        # off, configs asking for tuning are told so instead of silently left untuned.
        gpu_tuning_enabled=ctx.controller_settings.gpu_tuning.enabled,
        # VPA footprints count only while the controller that writes them runs.
        vpa_footprints=ctx.controller_settings.vpa.enabled,
    )
    return Controller(
        "power-cap",
        reconciler,
        queue,
        workers=settings.workers,
        reconcile_timeout_s=settings.reconcile_timeout_s,
    )


def carbon_controller(ctx: ControllerContext) -> Controller:
    """The carbon controller: time driven per config, woken early by spec changes."""
    settings = ctx.controller_settings.carbon
    queue = ctx.new_queue("carbon", max_in_flight_per_namespace=namespace_share(settings.workers))
    configs = ctx.informer(POWER_CAPPING_CONFIGS, indexers={"namespace": index_by_namespace})
    configs.add_handlers(config_handlers(queue))
    session = SharedSession(connect_to=ctx.controller_settings.outbound.rules())
    ctx.add_cleanup(session.close)
    reconciler = CarbonReconciler(
        ctx.client,
        configs=configs,
        events=ctx.events,
        metrics=capping_metrics(ctx),
        settings=settings,
        session_factory=session.get,
    )
    return Controller(
        "carbon",
        reconciler,
        queue,
        workers=settings.workers,
        reconcile_timeout_s=settings.reconcile_timeout_s,
    )


def gpu_tuning_controller(ctx: ControllerContext) -> Controller:
    """The GPU-tuning controller: interval driven, woken by the power-cap reconciler's readings."""
    settings = ctx.controller_settings.gpu_tuning
    if settings.deprecated_apply_namespaces:
        log.warning(
            "deprecated_setting",
            setting=DEPRECATED_APPLY_NAMESPACES_ENV,
            use=ALLOWED_NAMESPACES_ENV,
            note="read only while the new one is empty; it now gates Recommend too",
            allowed_namespaces=settings.allowed_namespaces,
        )
    queue = ctx.new_queue("gpu-tuning")
    configs = ctx.informer(POWER_CAPPING_CONFIGS, indexers={"namespace": index_by_namespace})
    configs.add_handlers(
        config_handlers(queue, status_fields=("measuredPowerWatts", "racks", "targets"))
    )
    # The Jobs are created, and write their result ConfigMaps, in the tuning namespace only:
    # watching there alone is all the reconciler needs, and lets RBAC grant list/watch on Jobs
    # and ConfigMaps through a Role in that namespace instead of cluster-wide (docs/security.md).
    tuning_ns = settings.job_namespace
    reconciler = GpuTuningReconciler(
        ctx.client,
        configs=configs,
        workloads=workload_caches(ctx),
        jobs=ctx.informer(JOBS, namespace=tuning_ns, label_selector=TUNE_NODE_LABEL),
        results=ctx.informer(CONFIGMAPS, namespace=tuning_ns, label_selector=TUNE_NODE_LABEL),
        events=ctx.events,
        hints=tuning_hints(ctx),
        clocks=clock_board(ctx),
        settings=settings,
    )
    return Controller(
        "gpu-tuning", reconciler, queue, reconcile_timeout_s=settings.reconcile_timeout_s
    )
