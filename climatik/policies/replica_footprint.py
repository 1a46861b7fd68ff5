"""One replica's footprint with VPA's recommendation, and how many more fit each rack (issue 23).

VPA sizes CPU and memory, and those decide which nodes can take a replica; GPUs per replica and
watts per replica are not VPA's (the power model's watts stay the ones the ceilings and
placement use). For a target with a VerticalPodAutoscaler whose mode applies recommendations
(anything but `Off`), the next replica is admitted with the recommendation's `target` for each
container and resource VPA controls, and keeps its own request for the rest: that is the
footprint to fit, not the requests the Deployment's template writes. A rack's seats are how many
such replicas its nodes can still take, node by node: on each, the fewest over the footprint's
resources of `floor(free / per replica)`, free being allocatable less what bound pods request.

Pure: resources are plain numbers by name (`cpu` in cores, `memory` in bytes, extended resources
in their units).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

Amounts = Mapping[str, float]
"""Amounts of resources by name."""


@dataclass(frozen=True, slots=True)
class ContainerSizing:
    """One container of a replica: what it asks for now, and what VPA would give it."""

    name: str
    requests: Amounts
    recommended: Amounts
    """VPA's `target` for this container (empty: no recommendation for it)."""
    controlled: Collection[str]
    """The resources VPA applies to this container (empty: its policy's mode is `Off`)."""


def replica_footprint(containers: Iterable[ContainerSizing]) -> dict[str, float]:
    """What one new replica asks for: per container and resource, VPA's target where VPA
    applies one, else the container's own request; summed over containers."""
    total: dict[str, float] = {}
    for container in containers:
        names = set(container.requests) | {
            r for r in container.recommended if r in container.controlled
        }
        for resource in names:
            if resource in container.controlled and resource in container.recommended:
                amount = container.recommended[resource]
            else:
                amount = container.requests.get(resource, 0.0)
            total[resource] = total.get(resource, 0.0) + amount
    return total


def free_on_node(allocatable: Amounts, bound: Iterable[Amounts]) -> dict[str, float]:
    """What a node can still allocate: allocatable less the requests of the pods bound to it."""
    free = dict(allocatable)
    for requests in bound:
        for resource, amount in requests.items():
            if resource in free:
                free[resource] -= amount
    return free


def seats_on_node(footprint: Amounts, free: Amounts) -> int | None:
    """Replicas of `footprint` that fit in `free`; None when the footprint asks for nothing."""
    fits: list[int] = []
    for resource, need in footprint.items():
        if need > 0:
            fits.append(max(0, math.floor(free.get(resource, 0.0) / need + 1e-9)))
    return min(fits) if fits else None


def seats_by_rack(
    footprint: Amounts, free_by_node: Mapping[str, Amounts], rack_of: Mapping[str, str]
) -> dict[str, int]:
    """Per rack, replicas of `footprint` its nodes can still take (racks of known nodes only;
    an empty footprint fits without bound and gives no figure)."""
    seats: dict[str, int] = {}
    for node, free in free_by_node.items():
        rack = rack_of.get(node)
        fit = seats_on_node(footprint, free)
        if rack is None or fit is None:
            continue
        seats[rack] = seats.get(rack, 0) + fit
    return seats
