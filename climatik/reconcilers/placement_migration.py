"""Moving a running replica to a cooler rack (`spec.placement.migration`, opt-in).

Placement steers new pods and the scale-in order; a replica placed well when it started stays
where it is while the room's load moves around it. With migration enabled, each round the
reconciler asks the placement policy (`choose_migration`) whether moving one ready replica of a
workload from the rack it sits on to the workload's best-ranked rack (the one the webhook, or
the template's affinity, steers a new pod to) would lower the room's hottest inlet by
`minGainCelsius`; the best such move over the config's workloads is made by evicting that pod
through the Eviction API. The ReplicaSet then starts its replacement, placed as every new pod.

Safety: at most one move per config per `minIntervalSeconds`, counted from every attempt; never
from a workload with fewer than `minReadyReplicas` ready replicas, with a replica starting or
with one terminating (a scale or a move in flight); the Eviction API keeps the workload's
PodDisruptionBudget, and a refusal (429) waits for the next interval. A 403 (no `create` on
`pods/eviction` in the namespace: docs/security.md) is a Warning Event once per config and
the condition's message, like the deletion-cost refusal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from climatik.domain.placement import Migration, MigrationSettings, PlaceObservation
from climatik.kube.cache import EventSink
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import JsonObject, ObjectMeta, child, objects
from climatik.policies.placement import choose_migration
from climatik.reconcilers.placement_metrics import PlacementMetrics

log = structlog.get_logger(__name__)

HTTP_TOO_MANY_REQUESTS = 429
"""The Eviction API's answer while a PodDisruptionBudget allows no disruption."""


@dataclass(frozen=True, slots=True)
class MoveCandidate:
    """One workload as migration sees it this round."""

    namespace: str
    deployment: str
    ready_pods: Mapping[str, tuple[str, ...]]
    """Ready pods (by name, sorted) per rack id."""
    settled: bool
    """No pod starting or terminating: no scale and no move in flight."""
    target: PlaceObservation | None
    """The rack a new pod of the workload is steered to (its best-ranked rack)."""
    replica_watts: float | None
    """What one replica adds to its rack's draw (busy minus idle)."""


def is_ready(pod: JsonObject) -> bool:
    """Running with every container ready (serving), and not being deleted.

    From the containers' `ready`, not the pod's `Ready` condition: the same for a serving pod
    without readiness gates, and the cache keeps one flag per container instead of every
    condition (a sixth of the pod cache's bytes)."""
    if ObjectMeta.of(pod).deletion_timestamp:
        return False
    status = child(pod, "status")
    if status.get("phase") != "Running":
        return False
    containers = list(objects(status, "containerStatuses"))
    return bool(containers) and all(c.get("ready") is True for c in containers)


def best_move(
    candidates: Sequence[MoveCandidate],
    observations: Mapping[str, PlaceObservation],
    settings: MigrationSettings,
) -> tuple[MoveCandidate, Migration] | None:
    """The move that lowers the hottest inlet most over the config's settled workloads."""
    best: tuple[MoveCandidate, Migration] | None = None
    for candidate in candidates:
        ready = sum(len(pods) for pods in candidate.ready_pods.values())
        if not candidate.settled or candidate.target is None or ready < settings.min_ready:
            continue
        sources = [observations[r] for r in sorted(candidate.ready_pods) if r in observations]
        move = choose_migration(
            sources, candidate.target, candidate.replica_watts, None, settings.min_gain_c
        )
        if move is not None and (best is None or move.gain_c > best[1].gain_c):
            best = (candidate, move)
    return best


class Migrations:
    """Makes at most one move per config per interval, and remembers refusals."""

    def __init__(
        self,
        client: KubeClient,
        events: EventSink,
        metrics: PlacementMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._events = events
        self._metrics = metrics
        self._clock = clock
        self._attempted_s: dict[str, float] = {}
        self._forbidden: set[str] = set()
        """Configs whose namespace refused the last eviction (HTTP 403)."""

    def forget(self, config_key: str) -> None:
        self._attempted_s.pop(config_key, None)
        self._forbidden.discard(config_key)

    def problem(self, config_key: str, namespace: str) -> str:
        """Why moves are unavailable for this config, in words ("" when they are not)."""
        if config_key not in self._forbidden:
            return ""
        return (
            "Replica migration is unavailable: the API server refused (HTTP 403) to evict pods "
            f"in namespace {namespace}. Grant the controller's ServiceAccount create on "
            f"pods/eviction in {namespace} (the Role of deploy/overlays/pod-deletion-cost, "
            "Helm rbac.podDeletionCost.namespaces; docs/security.md)"
        )

    async def maybe_move(
        self,
        obj: JsonObject,
        config_key: str,
        settings: MigrationSettings,
        candidates: Sequence[MoveCandidate],
        observations: Mapping[str, PlaceObservation],
    ) -> Migration | None:
        """Evict the pod of the best move, when one is due and predicted to gain enough."""
        now = self._clock()
        last = self._attempted_s.get(config_key)
        if last is not None and now - last < settings.min_interval_s:
            return None
        chosen = best_move(candidates, observations, settings)
        if chosen is None:
            return None
        candidate, move = chosen
        pod = candidate.ready_pods[move.source][0]
        self._attempted_s[config_key] = now
        outcome = await self._evict(candidate.namespace, pod)
        self._metrics.migrations.labels(config_key, outcome).inc()
        where = f"{candidate.namespace}/{pod} ({candidate.deployment})"
        if outcome == "evicted":
            self._forbidden.discard(config_key)
            log.info("replica_migrated", pod=where, reason=move.reason, gain_c=move.gain_c)
            await self._events.record(obj, "Normal", "ReplicaMigrated", f"{where}: {move.reason}")
            return move
        if outcome == "forbidden" and config_key not in self._forbidden:
            self._forbidden.add(config_key)
            await self._events.record(
                obj, "Warning", "MigrationForbidden", self.problem(config_key, candidate.namespace)
            )
        log.info("replica_migration_not_made", pod=where, outcome=outcome, reason=move.reason)
        return None

    async def _evict(self, namespace: str, pod: str) -> str:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        }
        try:
            await self._client.request(
                "POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction", body=body
            )
        except ApiError as error:
            if error.is_not_found:
                return "gone"
            if error.status == HTTP_TOO_MANY_REQUESTS:
                return "budget"
            if error.is_forbidden:
                return "forbidden"
            raise
        return "evicted"
