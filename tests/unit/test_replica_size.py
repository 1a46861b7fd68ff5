"""GPUs per replica in the VPA-hold reconciler: read from the pods, the nodes and the measured
status; written to `status.replicaSizes`, with an Event when fragmentation blocks replicas; and
shown by `climatik explain`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from climatik.api.explain import explain
from climatik.domain.config import ReplicaSizingConfig
from climatik.kube.store import index_by_namespace
from climatik.policies.gpus_per_replica import DEFAULT_SLO
from climatik.reconcilers.replica_size import free_gpus_per_node, pod_gpus, slo_goal
from climatik.reconcilers.settings import VpaSettings
from climatik.reconcilers.targets import NAMESPACE_INDEX, WorkloadCaches
from climatik.reconcilers.vpa_hold import VpaHoldReconciler
from tests.unit.helpers.placement_objects import DEPLOYMENT, NS, config, node, pod
from tests.unit.helpers.status_world import StoreCache
from tests.unit.test_placement_reconciler import Events, RecordingClient
from tests.unit.test_vpa_hold import SCALED_OBJECT

KEY = f"{NS}/cap"


def gpu_pod(name: str, node_name: str, gpus: int, phase: str = "Running") -> dict[str, Any]:
    obj = pod(name, node_name, phase=phase)
    obj["spec"]["containers"] = [
        {"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
    ]
    if not node_name:
        del obj["spec"]["nodeName"]
    return obj


def gpu_node(name: str, gpus: int) -> dict[str, Any]:
    obj = node(name, "rack-a")
    obj["status"] = {"allocatable": {"nvidia.com/gpu": str(gpus)}}
    return obj


def _config(watts_per_replica: float, tokens_per_watt: float) -> dict[str, Any]:
    obj = config()
    obj["status"] = {
        "targets": [
            {
                "name": "chat",
                "kind": "ScaledObject",
                "currentReplicas": 2,
                "wattsPerReplica": watts_per_replica,
                "tokensPerWatt": tokens_per_watt,
            }
        ]
    }
    return obj


def _reconciler(
    pods: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    obj: dict[str, Any],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[VpaHoldReconciler, RecordingClient, Events]:
    client, events = RecordingClient(), Events()
    vpas = StoreCache()
    vpas.store.add_indexer(NAMESPACE_INDEX, index_by_namespace)
    reconciler = VpaHoldReconciler(
        client,  # type: ignore[arg-type]
        configs=StoreCache(obj),
        workloads=WorkloadCaches(
            scaled_objects=StoreCache(SCALED_OBJECT),
            inference_services=StoreCache(),
            deployments=StoreCache(DEPLOYMENT),
            pods=StoreCache(*pods),
        ),
        vpas=vpas,
        nodes=StoreCache(*nodes),
        events=events,
        settings=VpaSettings(interval_s=5.0),
        clock=clock,
    )
    return reconciler, client, events


def _replica_sizes(client: RecordingClient) -> list[dict[str, Any]]:
    (status_patch, *_) = [p for p in reversed(client.patches) if p[3] == "status"]
    sizes: list[dict[str, Any]] = status_patch[2]["status"]["replicaSizes"]
    return sizes


def test_free_gpus_are_allocatable_less_what_bound_pods_hold() -> None:
    pods = [gpu_pod("a", "n0", 4), gpu_pod("b", "n0", 2), gpu_pod("c", "", 8, "Pending")]
    done = gpu_pod("d", "n1", 8, "Succeeded")
    assert pod_gpus(pods[0]) == 4
    free = free_gpus_per_node([gpu_node("n0", 8), gpu_node("n1", 8)], [*pods, done])
    assert free == {"n0": 2, "n1": 8}


async def test_a_lightly_loaded_target_is_recommended_fewer_gpus_in_status() -> None:
    # Two replicas of 8 GPUs serving 100 tokens/s at 650 W each: idle GPUs dominate.
    watts = 650.0
    obj = _config(watts, 100.0 / (2 * watts))
    pods = [gpu_pod("chat-0", "a-0", 8), gpu_pod("chat-1", "a-1", 8)]
    reconciler, client, events = _reconciler(pods, [gpu_node("a-0", 8), gpu_node("a-1", 8)], obj)
    await reconciler.reconcile(KEY)
    (entry,) = _replica_sizes(client)
    assert entry["name"] == "chat"
    assert entry["currentGpus"] == 8
    assert entry["recommendedGpus"] == 4
    assert entry["reason"] == "Efficiency"
    assert entry["recommendedTokensPerJoule"] > entry["currentTokensPerJoule"]
    assert not [e for e in events.recorded if e[2] == "GpusFragmented"]

    obj["status"]["replicaSizes"] = _replica_sizes(client)
    text = explain(obj)
    assert "GPUs per replica of chat: 8" in text
    assert "recommended 4" in text
    assert "for more tokens per joule" in text


async def test_the_configs_slo_goal_decides_whether_fewer_gpus_are_good_enough() -> None:
    # 200 tokens/s on one 4-GPU replica: 99.67 % of requests predicted within the SLO.
    watts = 650.0
    pods = [gpu_pod("chat-0", "a-0", 8), gpu_pod("chat-1", "a-1", 8)]
    nodes = [gpu_node("a-0", 8), gpu_node("a-1", 8)]
    entries = {}
    for goal in (95, 99.99):
        obj = _config(watts, 200.0 / (2 * watts))
        obj["spec"]["replicaSizing"] = {"sloAttainmentPercent": goal}
        reconciler, client, _ = _reconciler(pods, nodes, obj)
        await reconciler.reconcile(KEY)
        (entries[goal],) = _replica_sizes(client)
    assert entries[95]["recommendedGpus"] == 4
    assert entries[95]["reason"] == "Efficiency"
    assert entries[99.99]["recommendedGpus"] == 8
    assert entries[99.99]["reason"] == "Keep"

    obj["status"]["replicaSizes"] = [entries[95]]
    assert "recommended 4 (0.395 tokens/J, 99.7% within SLO)" in explain(obj), (
        "a share just short of 100 % is not rounded up to it"
    )


async def test_pending_replicas_on_fragmented_gpus_get_the_size_that_fits_and_one_event() -> None:
    watts = 1200.0
    obj = _config(watts, 600.0 / (2 * watts))
    pods = [
        gpu_pod("chat-0", "a-0", 8),
        gpu_pod("chat-1", "", 8, "Pending"),
        gpu_pod("other", "a-1", 4),
    ]
    reconciler, client, events = _reconciler(pods, [gpu_node("a-0", 8), gpu_node("a-1", 8)], obj)
    await reconciler.reconcile(KEY)
    await reconciler.reconcile(KEY)
    (entry,) = _replica_sizes(client)
    assert entry["reason"] == "Fragmented"
    assert entry["recommendedGpus"] == 4
    fragmented = [e for e in events.recorded if e[2] == "GpusFragmented"]
    assert len(fragmented) == 1, "one Event per change, not one per round"
    assert "4 GPUs per replica" in fragmented[0][3]


async def test_targets_without_gpus_have_no_replica_size() -> None:
    obj = _config(300.0, 0.1)
    reconciler, client, _ = _reconciler([pod("chat-0", "a-0")], [node("a-0", "rack-a")], obj)
    await reconciler.reconcile(KEY)
    (status_patch, *_) = [p for p in reversed(client.patches) if p[3] == "status"]
    assert "replicaSizes" not in status_patch[2]["status"]


def test_the_default_replica_sizing_is_the_policys_default_goal() -> None:
    assert slo_goal(ReplicaSizingConfig()) == DEFAULT_SLO
