"""One replica's footprint with VPA's recommendation, and the seats it leaves per rack: the
policy, the quantities, the cache glue (which resources VPA applies) and the VPA-hold
reconciler's status and `climatik explain`."""

from __future__ import annotations

from typing import Any

import pytest

from climatik.api.explain import explain
from climatik.kube.quantity import parse_quantity
from climatik.kube.store import Store, thaw
from climatik.policies.replica_footprint import (
    ContainerSizing,
    free_on_node,
    replica_footprint,
    seats_by_rack,
    seats_on_node,
)
from climatik.reconcilers.replica_footprint import container_sizings, free_by_node
from tests.unit.helpers.placement_objects import NS
from tests.unit.test_vpa_hold import KEY, World, _vpa

GI = 2.0**30


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", 0.5),
        ("2", 2.0),
        (8, 8.0),
        ("363Mi", 363 * 2.0**20),
        ("1Gi", GI),
        ("1e3", 1000.0),
        ("1.5k", 1500.0),
        ("2E", 2e18),
        ("lots", None),
        ("", None),
        (None, None),
        (True, None),
    ],
)
def test_quantities_read_as_base_units_and_unreadable_ones_as_none(
    text: Any, value: float | None
) -> None:
    assert parse_quantity(text) == value


def _sizing(
    requests: dict[str, float],
    recommended: dict[str, float],
    controlled: tuple[str, ...] = ("cpu", "memory"),
    name: str = "vllm",
) -> ContainerSizing:
    return ContainerSizing(name, requests, recommended, frozenset(controlled))


def test_the_footprint_takes_vpas_target_where_vpa_applies_it_and_the_request_elsewhere() -> None:
    footprint = replica_footprint(
        [
            _sizing({"cpu": 0.01, "memory": 10e6, "nvidia.com/gpu": 4}, {"cpu": 2, "memory": 8e9}),
            # A sidecar VPA applies only memory to; its CPU request stays.
            _sizing({"cpu": 0.1, "memory": 1e6}, {"cpu": 1, "memory": 2e6}, ("memory",), "proxy"),
            # A container with its policy Off: its requests, whatever VPA recommends.
            _sizing({"cpu": 0.5}, {"cpu": 3}, (), "logger"),
        ]
    )
    assert footprint == {"cpu": 2.6, "memory": 8e9 + 2e6, "nvidia.com/gpu": 4}


def test_a_container_without_a_recommendation_keeps_its_requests() -> None:
    assert replica_footprint([_sizing({"cpu": 0.25}, {})]) == {"cpu": 0.25}


def test_seats_are_the_fewest_replicas_any_resource_allows_node_by_node() -> None:
    footprint = {"cpu": 2.0, "memory": 8 * GI}
    free = free_on_node({"cpu": 16, "memory": 64 * GI}, [{"cpu": 5, "memory": 4 * GI}])
    assert free == {"cpu": 11.0, "memory": 60 * GI}
    assert seats_on_node(footprint, free) == 5  # CPU binds: 11 / 2
    assert seats_on_node(footprint, {"cpu": 100.0}) == 0  # no memory is no room
    assert seats_on_node(footprint, {"cpu": -1.0, "memory": 64 * GI}) == 0  # overcommitted
    assert seats_on_node({}, free) is None  # asks for nothing: no figure
    seats = seats_by_rack(
        footprint,
        {"a-0": free, "a-1": {"cpu": 4.0, "memory": 8 * GI}, "b-0": free, "x": free},
        {"a-0": "rack-a", "a-1": "rack-a", "b-0": "rack-b"},
    )
    assert seats == {"rack-a": 6, "rack-b": 5}  # a node of no rack counts nowhere


def _recommending(**spec: Any) -> dict[str, Any]:
    vpa = _vpa(**spec)
    vpa["status"] = {
        "recommendation": {
            "containerRecommendations": [
                {"containerName": "vllm", "target": {"cpu": "587m", "memory": "363Mi"}},
                {"containerName": "proxy", "target": {"cpu": "100m", "memory": "50Mi"}},
            ]
        }
    }
    return vpa


POD: dict[str, Any] = {
    "metadata": {"name": "chat-0", "namespace": NS},
    "spec": {
        "nodeName": "a-0",
        "containers": [
            {"name": "vllm", "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}},
            {"name": "proxy", "resources": {"requests": {"cpu": "20m"}}},
        ],
    },
    "status": {"phase": "Running"},
}


def test_vpa_applies_cpu_and_memory_by_default_per_container_policy_and_nothing_when_off() -> None:
    by_default = {c.name: c for c in container_sizings(POD, _recommending())}
    assert by_default["vllm"].recommended == {"cpu": 0.587, "memory": 363 * 2.0**20}
    assert set(by_default["vllm"].controlled) == {"cpu", "memory"}

    vpa = _recommending()
    vpa["spec"]["resourcePolicy"] = {
        "containerPolicies": [
            {"containerName": "*", "controlledResources": ["memory"]},
            {"containerName": "proxy", "mode": "Off"},
        ]
    }
    policed = {c.name: c for c in container_sizings(POD, vpa)}
    assert set(policed["vllm"].controlled) == {"memory"}
    assert set(policed["proxy"].controlled) == set()
    off = container_sizings(POD, _recommending(mode="Off"))
    assert all(not c.controlled for c in off)
    held = container_sizings(POD, _recommending(mode="Initial"))  # new pods still get it
    assert all(set(c.controlled) == {"cpu", "memory"} for c in held)


def test_free_resources_count_bound_pods_that_have_not_finished() -> None:
    node: dict[str, Any] = {
        "metadata": {"name": "a-0"},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}},
    }
    done: dict[str, Any] = {
        **POD,
        "metadata": {"name": "old", "namespace": NS},
        "status": {"phase": "Succeeded"},
    }
    node["status"]["allocatable"]["pods"] = "2"
    free = free_by_node([node], [POD, done])
    assert free == {"a-0": {"cpu": pytest.approx(3.97), "memory": 8 * GI - 10 * 2**20, "pods": 1}}


def _sized(world: World) -> None:
    """Nodes of 4 CPUs and 16 GiB; the config's pods (one per rack) asking 10m and 10 MiB."""
    nodes, pods = world.nodes.store, world.pods.store
    assert isinstance(nodes, Store)
    assert isinstance(pods, Store)
    for name in ("a-0", "b-0"):
        node: dict[str, Any] = thaw(nodes.get(name))  # type: ignore[assignment]
        node["status"] = {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"}}
        nodes.upsert(node)
    for name in ("chat-0", "chat-1"):
        pod: dict[str, Any] = thaw(pods.get(f"{NS}/{name}"))  # type: ignore[assignment]
        pod["spec"]["containers"] = [POD["spec"]["containers"][0]]
        pods.upsert(pod)


def _footprints(world: World) -> list[dict[str, Any]]:
    (status_patch, *_) = [p for p in reversed(world.client.patches) if p[3] == "status"]
    return list(status_patch[2]["status"]["replicaFootprints"])


async def test_the_vpa_hold_reconciler_reports_the_footprint_and_seats_per_rack() -> None:
    world = World(10_000, _recommending())  # a cool rack: nothing held, the footprint still told
    _sized(world)
    await world.reconciler.reconcile(KEY)
    (footprint,) = _footprints(world)
    assert footprint["name"] == "chat"
    assert footprint["verticalPodAutoscaler"] == "chat"
    assert footprint["source"] == "VpaTarget"
    assert footprint["cpuCores"] == pytest.approx(0.587)
    # 3.99 CPUs left on each rack's node, 6 replicas of 0.587 (memory would allow 45).
    assert footprint["seats"] == [
        {"rackId": "rack-a", "replicas": 6},
        {"rackId": "rack-b", "replicas": 6},
    ]
    obj = dict(world.configs.store.get(KEY) or {})
    obj["status"] = {"replicaFootprints": [footprint]}
    assert (
        "One replica of chat: 0.587 CPU, 363 MiB (VPA chat's target; its pods ask 0.01 CPU, "
        "10 MiB now); "
        "replicas that still fit: 6 on rack-a, 6 on rack-b. Its watts are the power model's."
    ) in explain(obj)


async def test_a_target_without_a_vpa_has_no_footprint_entry() -> None:
    world = World(10_000, _recommending(deployment="batch"))
    await world.reconciler.reconcile(KEY)
    (status_patch, *_) = [p for p in reversed(world.client.patches) if p[3] == "status"]
    assert (
        "replicaFootprints" not in status_patch[2]["status"]
        or not status_patch[2]["status"]["replicaFootprints"]
    )
