"""Scale-in order: `controller.kubernetes.io/pod-deletion-cost` on the pods placement manages.

A lower cost on a hotter or fuller rack makes the ReplicaSet remove that replica first. A pod
is patched only when its value changes. `patch` on pods is granted per namespace
(docs/security.md), so a 403 is an expected answer, not a failure: that namespace is not tried
again for `deletion_cost_retry_s`, and `problem` says in words how to grant it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from climatik.domain.config import PlacementMode, PowerCappingConfig
from climatik.domain.placement import PlaceScore
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import JsonObject, ObjectMeta, child
from climatik.kube.resources import PODS
from climatik.policies.placement import order_pods_for_scale_in
from climatik.reconcilers.placement_metrics import PlacementMetrics

log = structlog.get_logger(__name__)

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"


@dataclass
class _Forbidden:
    """A namespace where the API refused a pod-deletion-cost patch (HTTP 403)."""

    retry_at_s: float
    """Monotonic time before which no pod of the namespace is patched."""


class DeletionCosts:
    """Keeps the deletion costs of a workload's pods current, and remembers refusals."""

    def __init__(
        self,
        client: KubeClient,
        metrics: PlacementMetrics,
        *,
        retry_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._retry_s = retry_s
        self._clock = clock
        self._forbidden: dict[str, _Forbidden] = {}
        """Namespaces whose pods the API refused to patch, until a patch there succeeds."""

    async def apply(
        self,
        config_key: str,
        namespace: str,
        pods: Sequence[JsonObject],
        scores: Sequence[PlaceScore],
        rack_of_node: Mapping[str, str],
    ) -> None:
        """Patch the pods of one workload whose cost changed (none while refused a moment ago)."""
        forbidden = self._forbidden.get(namespace)
        if forbidden is not None and self._clock() < forbidden.retry_at_s:
            return  # refused a moment ago: asking for every pod again changes nothing
        by_name = {str(ObjectMeta.of(p).name): p for p in pods}
        places = {
            name: rack_of_node.get(str(child(p, "spec").get("nodeName") or ""))
            for name, p in by_name.items()
        }
        costs = order_pods_for_scale_in(places, scores)
        for name, cost in costs.items():
            current = ObjectMeta.of(by_name[name]).annotations.get(DELETION_COST_ANNOTATION)
            if current == str(cost) or (current is None and cost == 0):
                continue
            try:
                await self._client.merge_patch(
                    PODS,
                    name,
                    {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}},
                    namespace,
                )
            except ApiError as error:
                if error.is_not_found:
                    continue  # the pod went away meanwhile
                if error.is_forbidden:
                    self._refused(namespace, name, error)
                    return
                raise
            self._forbidden.pop(namespace, None)
            self._metrics.deletion_cost_patches.labels(config_key).inc()
            log.info(
                "deletion_cost_applied",
                pod=f"{namespace}/{name}",
                rack=places[name],
                cost=cost,
            )

    def _refused(self, namespace: str, pod: str, error: ApiError) -> None:
        """Stop patching the namespace's pods for a while; the API's own words go to the log
        (the condition and Event keep one stable text, so they are not repeated per pod)."""
        self._forbidden[namespace] = _Forbidden(self._clock() + self._retry_s)
        log.warning(
            "deletion_cost_forbidden",
            pod=f"{namespace}/{pod}",
            error=str(error),
            retry_in_s=self._retry_s,
        )

    def problem(self, config: PowerCappingConfig) -> str:
        """Why scale-in order is unavailable for this config, in words ("" when it is not)."""
        namespace = config.namespace
        if config.placement.mode is PlacementMode.DISABLED or namespace not in self._forbidden:
            return ""
        minutes = self._retry_s / 60.0
        return (
            f"Scale-in order is unavailable: the API server refused (HTTP 403) to patch pods in "
            f"namespace {namespace}, so {DELETION_COST_ANNOTATION} is not kept current and "
            "scale-in removes replicas regardless of rack heat (new replicas are still placed). "
            f"Grant the controller's ServiceAccount patch on pods in {namespace}: Helm "
            "rbac.podDeletionCost.namespaces, or a Role like the one in "
            f"deploy/overlays/pod-deletion-cost (docs/security.md). Tried again every "
            f"{minutes:g} min; the log event deletion_cost_forbidden has the API's answer"
        )
