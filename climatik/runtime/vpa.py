"""Wiring of the VPA-hold controller (`climatik.reconcilers.vpa_hold`, issue 23).

Interval driven per PowerCappingConfig, woken early by a change of the config's spec or of its
`status.racks` (the power-cap reconciler's rack readings) and by any change of a
VerticalPodAutoscaler in a config's namespace (a user setting a mode back by hand is seen at
once). Started only with `CLIMATIK_VPA__ENABLED=true` (see `controllers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from climatik.kube.informer import EventHandlers
from climatik.kube.resources import NODES, VERTICAL_POD_AUTOSCALERS
from climatik.kube.store import index_by_namespace
from climatik.reconcilers.cached_fields import NODE_FIELDS
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.targets import NAMESPACE_INDEX
from climatik.reconcilers.vpa_hold import VpaHoldReconciler
from climatik.runtime.capping import config_handlers, configs_in_namespace, workload_caches
from climatik.runtime.reconcile import Controller, ControllerContext


def vpa_hold_controller(ctx: ControllerContext) -> Controller:
    """The VPA-hold controller: one worker, one key per config."""
    settings = ctx.controller_settings.vpa
    queue = ctx.new_queue("vpa-hold")
    configs = ctx.informer(POWER_CAPPING_CONFIGS, indexers={"namespace": index_by_namespace})
    configs.add_handlers(config_handlers(queue, status_fields=("racks",)))
    vpas = ctx.informer(VERTICAL_POD_AUTOSCALERS, indexers={NAMESPACE_INDEX: index_by_namespace})
    wake = configs_in_namespace(configs, queue)

    def changed(_old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        wake(new)

    vpas.add_handlers(EventHandlers(on_add=wake, on_update=changed, on_delete=wake))
    reconciler = VpaHoldReconciler(
        ctx.client,
        configs=configs,
        workloads=workload_caches(ctx),
        vpas=vpas,
        nodes=ctx.informer(NODES, fields=NODE_FIELDS),
        events=ctx.events,
        settings=settings,
    )
    return Controller(
        "vpa-hold", reconciler, queue, reconcile_timeout_s=settings.reconcile_timeout_s
    )
