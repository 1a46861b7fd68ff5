"""One replica's footprint from VPA's recommendation, read from the caches (issue 23).

Glue between the caches and `policies.replica_footprint`: for a target whose Deployment has a
VerticalPodAutoscaler, each container of one of its pods (its name and requests) is paired with
the VPA's `status.recommendation.containerRecommendations[].target` for it, and with the
resources VPA applies to it (`resourcePolicy.containerPolicies[]`: the container's own policy or
`*`, `controlledResources` defaulting to cpu and memory, nothing when its mode or the VPA's
`updateMode` is `Off`). Free resources per node are allocatable less the requests of the pods
bound to it, as the scheduler counts them (a pod slot of the node's allocatable `pods`
included); nodes are grouped into racks by the config's rack label. Seats count resources only,
not the pods' node selector, affinity or taints. Read only: the VPA-hold reconciler writes the
result into `status.replicaFootprints`, and the power-cap and placement reconcilers read the
seats back from there (`fewest_seats`) for rack headroom and preferred racks. Where the
controller watches one namespace, pods of other namespaces are not seen, so seats are then an
upper bound.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from climatik.api.status_models import RackSeats, ReplicaFootprintStatus
from climatik.kube.cache import Cache
from climatik.kube.json import JsonObject, ObjectMeta, child, items, labels_of, objects, text
from climatik.kube.quantity import parse_quantity
from climatik.kube.store import FrozenMapping
from climatik.policies.replica_footprint import (
    ContainerSizing,
    free_on_node,
    replica_footprint,
    seats_by_rack,
)
from climatik.reconcilers.resources import GPU_RESOURCE
from climatik.reconcilers.targets import ResolvedTarget

FITTED = ("cpu", "memory", GPU_RESOURCE)
"""The resources a replica's containers are fitted on: VPA's two, and the GPUs it holds."""
POD_SLOTS = "pods"
"""A node's allocatable pods: every replica takes one, whatever it asks for."""
VPA_DEFAULT_CONTROLLED = ("cpu", "memory")


def _amounts(resources: JsonObject, names: Sequence[str] = FITTED) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        amount = parse_quantity(resources.get(name))
        if amount is not None:
            out[name] = amount
    return out


def pod_requests(pod: JsonObject) -> dict[str, float]:
    """The fitted resources a pod requests, summed over its containers, and its pod slot."""
    total: dict[str, float] = {POD_SLOTS: 1.0}
    for container in objects(child(pod, "spec"), "containers"):
        for name, amount in _amounts(child(child(container, "resources"), "requests")).items():
            total[name] = total.get(name, 0.0) + amount
    return total


def _controlled(vpa: JsonObject, container: str) -> frozenset[str]:
    """The resources VPA applies to this container's new pods."""
    if text(child(child(vpa, "spec"), "updatePolicy"), "updateMode") == "Off":
        return frozenset()
    policies = list(objects(child(child(vpa, "spec"), "resourcePolicy"), "containerPolicies"))
    own = [p for p in policies if text(p, "containerName") == container]
    policy = (own or [p for p in policies if text(p, "containerName") in ("*", None)] or [{}])[0]
    if text(policy, "mode") == "Off":
        return frozenset()
    listed = [r for r in items(policy, "controlledResources") if isinstance(r, str)]
    return frozenset(listed or VPA_DEFAULT_CONTROLLED)


def _recommended(vpa: JsonObject) -> dict[str, dict[str, float]]:
    recommendation = child(child(vpa, "status"), "recommendation")
    return {
        str(text(entry, "containerName")): _amounts(child(entry, "target"))
        for entry in objects(recommendation, "containerRecommendations")
    }


def container_sizings(pod: JsonObject, vpa: JsonObject) -> list[ContainerSizing]:
    """Each container of the pod with what it asks for and what VPA would give it."""
    recommended = _recommended(vpa)
    return [
        ContainerSizing(
            name=str(text(container, "name")),
            requests=_amounts(child(child(container, "resources"), "requests")),
            recommended=recommended.get(str(text(container, "name")), {}),
            controlled=_controlled(vpa, str(text(container, "name"))),
        )
        for container in objects(child(pod, "spec"), "containers")
    ]


def free_by_node(
    nodes: Iterable[JsonObject], pods: Iterable[JsonObject]
) -> dict[str, dict[str, float]]:
    """Per node, allocatable less the requests of the pods bound to it (not finished)."""
    bound: dict[str, list[dict[str, float]]] = {}
    for pod in pods:
        bound_to = text(child(pod, "spec"), "nodeName")
        if bound_to and text(child(pod, "status"), "phase") not in ("Succeeded", "Failed"):
            bound.setdefault(bound_to, []).append(pod_requests(pod))
    out: dict[str, dict[str, float]] = {}
    for node in nodes:
        name = ObjectMeta.of(node).name
        if name is not None:
            allocatable = _amounts(
                child(child(node, "status"), "allocatable"), (*FITTED, POD_SLOTS)
            )
            out[name] = free_on_node(allocatable, bound.get(name, ()))
    return out


def replica_footprints(
    with_vpa: Sequence[tuple[ResolvedTarget, JsonObject]],
    *,
    pods: Cache[FrozenMapping],
    nodes: Cache[FrozenMapping],
    rack_label: str,
) -> list[ReplicaFootprintStatus]:
    """One entry per target with a VPA and a pod to read its containers from."""
    if not with_vpa:
        return []
    free = free_by_node(nodes.store.objects(), pods.store.objects())
    rack_of = {
        name: rack
        for node in nodes.store.objects()
        if (name := ObjectMeta.of(node).name) is not None
        and isinstance(rack := labels_of(node).get(rack_label), str)
    }
    out = []
    for target, vpa in with_vpa:
        pod = next(
            (
                found
                for name in target.pods
                if (found := pods.store.get(f"{target.namespace}/{name}")) is not None
            ),
            None,
        )
        vpa_name = ObjectMeta.of(vpa).name
        if pod is None or vpa_name is None:
            continue
        sizings = container_sizings(pod, vpa)
        applies = any(set(c.controlled) & set(c.recommended) for c in sizings)
        footprint = {**replica_footprint(sizings), POD_SLOTS: 1.0}
        requested = pod_requests(pod)
        seats = seats_by_rack(footprint, free, rack_of)
        out.append(
            ReplicaFootprintStatus(
                name=target.name,
                vertical_pod_autoscaler=vpa_name,
                source="VpaTarget" if applies else "Requests",
                cpu_cores=footprint.get("cpu"),
                memory_bytes=footprint.get("memory"),
                requested_cpu_cores=requested.get("cpu"),
                requested_memory_bytes=requested.get("memory"),
                seats=[RackSeats(rack_id=r, replicas=n) for r, n in sorted(seats.items())] or None,
            )
        )
    return out


def fewest_seats(
    footprints: Iterable[ReplicaFootprintStatus] | None, targets: Collection[str]
) -> dict[str, int]:
    """Per rack, the fewest seats over the footprints of `targets` (by target name) that
    report the rack: the rack's room for one more replica of whichever of them is largest
    there. Racks no such footprint reports are left out (no seat count known)."""
    seats: dict[str, int] = {}
    for footprint in footprints or ():
        if footprint.name not in targets:
            continue
        for rack in footprint.seats or ():
            seats[rack.rack_id] = min(rack.replicas, seats.get(rack.rack_id, rack.replicas))
    return seats
