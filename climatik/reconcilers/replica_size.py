"""GPUs per replica for a config's targets, from what the caches and the status say (issue 23).

Glue between the caches and `policies.gpus_per_replica`: a target's GPUs per replica are the
`nvidia.com/gpu` its pods ask for; its measured load and watts per replica are what the power-cap
reconciler wrote in `status.targets` (the same learned watts per replica the ceilings use); its
pods that are Pending unscheduled, and the free GPUs of every node (allocatable less what the
cached pods ask for), say whether it is blocked by fragmentation. Read only: the VPA-hold
reconciler writes the result into `status.replicaSizes` and records an Event when fragmentation
changes a recommendation. Where the controller watches one namespace, pods of other namespaces
are not seen, so free GPUs are then an upper bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from climatik.api.status_models import PowerCappingConfigStatus, ReplicaSizeStatus, TargetStatus
from climatik.domain.config import ReplicaSizingConfig
from climatik.kube.cache import Cache
from climatik.kube.json import JsonObject, JsonValue, ObjectMeta, child, objects, text
from climatik.kube.store import FrozenMapping
from climatik.policies.gpus_per_replica import (
    DEFAULT_PROFILE,
    DEFAULT_SLO,
    ModelProfile,
    SizeInput,
    SizeReason,
    SizeRecommendation,
    SloGoal,
    recommend_size,
)
from climatik.reconcilers.resources import GPU_RESOURCE
from climatik.reconcilers.targets import ResolvedTarget


def _count(value: JsonValue | None) -> int:
    """A GPU quantity ("8", 8); 0 when absent or unreadable (GPUs are whole devices)."""
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0


def pod_gpus(pod: JsonObject) -> int:
    """GPUs a pod holds: per container its limit, else its request (they must be equal)."""
    total = 0
    for container in objects(child(pod, "spec"), "containers"):
        resources = child(container, "resources")
        amount = child(resources, "limits").get(GPU_RESOURCE)
        if amount is None:
            amount = child(resources, "requests").get(GPU_RESOURCE)
        total += _count(amount)
    return total


def free_gpus_per_node(nodes: Iterable[JsonObject], pods: Iterable[JsonObject]) -> dict[str, int]:
    """Allocatable `nvidia.com/gpu` of each node less the GPUs of the pods bound to it."""
    used: dict[str, int] = {}
    for pod in pods:
        bound_to = text(child(pod, "spec"), "nodeName")
        phase = text(child(pod, "status"), "phase")
        if bound_to and phase not in ("Succeeded", "Failed"):
            used[bound_to] = used.get(bound_to, 0) + pod_gpus(pod)
    free: dict[str, int] = {}
    for node in nodes:
        name = ObjectMeta.of(node).name
        allocatable = _count(child(child(node, "status"), "allocatable").get(GPU_RESOURCE))
        if name is not None and allocatable > 0:
            free[name] = max(0, allocatable - used.get(name, 0))
    return free


def _status_of(target: ResolvedTarget, status: PowerCappingConfigStatus | None) -> TargetStatus:
    for entry in (status.targets or ()) if status else ():
        if entry.name == target.name and str(entry.kind) == target.kind.value:
            return entry
    return TargetStatus(name=target.name, kind=target.kind.value)


def size_input(
    target: ResolvedTarget,
    status: PowerCappingConfigStatus | None,
    pods: Cache[FrozenMapping],
    free: dict[str, int],
    gpus_per_node: int,
) -> SizeInput | None:
    """The policy's input for one target; None when its pods ask for no GPU."""
    own = [
        pod
        for name in target.pods
        if (pod := pods.store.get(f"{target.namespace}/{name}")) is not None
    ]
    gpus = max((pod_gpus(p) for p in own), default=0)
    if gpus <= 0:
        return None
    measured = _status_of(target, status)
    replicas = measured.current_replicas or target.current_replicas
    watts = measured.watts_per_replica or 0.0
    tokens = (measured.tokens_per_watt or 0.0) * watts * replicas
    pending = sum(
        1
        for p in own
        if text(child(p, "status"), "phase") == "Pending" and not text(child(p, "spec"), "nodeName")
    )
    return SizeInput(
        gpus_per_replica=gpus,
        replicas=replicas,
        watts_per_replica=watts,
        tokens_per_s=tokens,
        gpus_per_node=max(gpus_per_node, gpus),
        free_gpus_per_node=tuple(free.values()),
        pending_replicas=pending,
    )


def slo_goal(sizing: ReplicaSizingConfig) -> SloGoal:
    """The config's `replicaSizing` as the policy's goal."""
    return SloGoal(
        ttft_s=sizing.max_time_to_first_token_s,
        tbt_s=sizing.max_inter_token_latency_s,
        attainment=sizing.slo_attainment,
    )


def to_status(name: str, current_gpus: int, found: SizeRecommendation) -> ReplicaSizeStatus:
    now, rec = found.current, found.recommended
    return ReplicaSizeStatus(
        name=name,
        current_gpus=current_gpus,
        recommended_gpus=rec.gpus_per_replica if rec else None,
        reason=found.reason.value,
        current_tokens_per_joule=now.tokens_per_joule if now else None,
        recommended_tokens_per_joule=rec.tokens_per_joule if rec and rec.replicas else None,
        current_slo_attainment=now.slo_attainment if now else None,
        recommended_slo_attainment=rec.slo_attainment if rec and rec.replicas else None,
    )


def replica_sizes(
    targets: Sequence[ResolvedTarget],
    status: PowerCappingConfigStatus | None,
    *,
    pods: Cache[FrozenMapping],
    nodes: Cache[FrozenMapping],
    profile: ModelProfile = DEFAULT_PROFILE,
    slo: SloGoal = DEFAULT_SLO,
) -> list[ReplicaSizeStatus]:
    """One entry per target whose pods ask for GPUs, in the targets' order."""
    free = free_gpus_per_node(nodes.store.objects(), pods.store.objects())
    allocatable = [
        _count(child(child(n, "status"), "allocatable").get(GPU_RESOURCE))
        for n in nodes.store.objects()
    ]
    gpus_per_node = max(allocatable, default=0)
    out = []
    for target in targets:
        measured = size_input(target, status, pods, free, gpus_per_node)
        if measured is None:
            continue
        found = recommend_size(measured, profile, slo)
        out.append(to_status(target.name, measured.gpus_per_replica, found))
    return out


def fragmentation_message(entry: ReplicaSizeStatus) -> str | None:
    """The Event's message when fragmentation is why a size is recommended."""
    if entry.reason != SizeReason.FRAGMENTED.value:
        return None
    return (
        f"{entry.name}: replicas of {entry.current_gpus} GPUs are Pending and no node has that "
        f"many free; {entry.recommended_gpus} GPUs per replica (tensor-parallel size) fit"
    )
