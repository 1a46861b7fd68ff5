"""The opt-in apply mode of GPUs per replica: the template rewrite, and the gates (opt-in,
a steady recommendation, under the cap, no held rack, once)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from climatik.kube.client import ApiError
from climatik.kube.store import Store
from climatik.reconcilers.replica_size_apply import (
    APPLY_ANNOTATION,
    RESIZED_ANNOTATION,
    STABLE_ROUNDS,
    inference_service_roll_patch,
    resized_containers,
    resized_predictor,
    roll_patch,
)
from tests.unit.helpers.placement_objects import DEPLOYMENT, NS
from tests.unit.test_replica_size import KEY, _config, _reconciler, gpu_node, gpu_pod

VLLM = {
    "name": "vllm",
    "image": "vllm/vllm-openai",
    "args": ["--model", "llama-70b", "--tensor-parallel-size", "8"],
    "resources": {
        "requests": {"cpu": "4", "nvidia.com/gpu": "8"},
        "limits": {"nvidia.com/gpu": "8"},
    },
}
SIDECAR = {"name": "proxy", "image": "envoy", "args": ["--tensor-parallel-size=8"]}


def _deployment(*, opted_in: bool = True, resized: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(DEPLOYMENT)
    annotations = {APPLY_ANNOTATION: "Apply"} if opted_in else {}
    if resized is not None:
        annotations[RESIZED_ANNOTATION] = resized
    obj["metadata"] = {**obj["metadata"], "annotations": annotations, "resourceVersion": "9"}
    obj["spec"]["template"]["spec"]["containers"] = [copy.deepcopy(VLLM), SIDECAR]
    return obj


def test_gpu_containers_get_the_new_count_and_tensor_parallel_size_and_others_are_kept() -> None:
    inline = copy.deepcopy(VLLM)
    inline["args"] = ["--tensor-parallel-size=8"]
    obj = _deployment()
    obj["spec"]["template"]["spec"]["containers"] = [VLLM, inline, SIDECAR]
    vllm, vllm_inline, sidecar = resized_containers(obj, 4)
    assert vllm["args"] == ["--model", "llama-70b", "--tensor-parallel-size", "4"]
    assert vllm["resources"] == {
        "requests": {"cpu": "4", "nvidia.com/gpu": "4"},
        "limits": {"nvidia.com/gpu": "4"},
    }
    assert vllm_inline["args"] == ["--tensor-parallel-size=4"]
    assert sidecar == SIDECAR, "a container that asks for no GPU is not touched"
    patch = roll_patch(obj, 8, 4)
    assert patch["metadata"] == {
        "annotations": {RESIZED_ANNOTATION: "8-4"},
        "resourceVersion": "9",
    }


def _fragmented(
    deployment: dict[str, Any],
    measured_w: float = 1200.0,
    *,
    window: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[Any, Any, Any]:
    obj = _config(1200.0, 600.0 / 2400.0)
    obj["status"]["measuredPowerWatts"] = measured_w
    obj["status"]["effectiveCapWatts"] = 100_000
    if window is not None:
        obj["spec"]["replicaSizing"] = {"applyWindow": window}
    pods = [
        gpu_pod("chat-0", "a-0", 8),
        gpu_pod("chat-1", "", 8, "Pending"),
        gpu_pod("other", "a-1", 4),
    ]
    nodes = [gpu_node("a-0", 8), gpu_node("a-1", 8)]
    reconciler, client, events = _reconciler(pods, nodes, obj, clock)
    client.objects[("deployments", "chat")] = deployment
    store = reconciler._workloads.deployments.store
    assert isinstance(store, Store)
    store.upsert(deployment)
    return reconciler, client, events


def _rolls(client: Any) -> list[dict[str, Any]]:
    return [p[2] for p in client.patches if p[0] == "deployments"]


async def test_an_opted_in_deployment_is_rolled_once_after_a_steady_recommendation() -> None:
    reconciler, client, events = _fragmented(_deployment())
    for _ in range(STABLE_ROUNDS - 1):
        await reconciler.reconcile(KEY)
    assert _rolls(client) == [], "not before the recommendation has held"
    await reconciler.reconcile(KEY)
    (patch,) = _rolls(client)
    (vllm, _) = patch["spec"]["template"]["spec"]["containers"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert [e for e in events.recorded if e[2] == "GpusPerReplicaApplied"]
    # The API server now has the marker; the cache may lag, the GET before a roll does not.
    client.objects[("deployments", "chat")] = _deployment(resized="8-4")
    for _ in range(STABLE_ROUNDS):
        await reconciler.reconcile(KEY)
    assert len(_rolls(client)) == 1, "once"


async def test_nothing_is_rolled_over_the_cap_without_opt_in_or_after_a_roll() -> None:
    for deployment, measured_w in (
        (_deployment(), 150_000.0),
        (_deployment(opted_in=False), 1200.0),
        (_deployment(resized="8-4"), 1200.0),
    ):
        reconciler, client, _ = _fragmented(deployment, measured_w)
        for _ in range(STABLE_ROUNDS + 1):
            await reconciler.reconcile(KEY)
        assert _rolls(client) == []


async def test_a_refused_roll_is_a_warning_event_and_no_crash() -> None:
    reconciler, client, events = _fragmented(_deployment())
    client.patch_errors["deployments"] = ApiError(403, {"reason": "Forbidden"})
    for _ in range(STABLE_ROUNDS):
        await reconciler.reconcile(KEY)
    assert [e for e in events.recorded if e[2] == "GpusPerReplicaNotApplied"]


async def test_a_roll_waits_for_the_apply_window_with_one_event_then_rolls_inside_it() -> None:
    now = [datetime(2026, 1, 15, 12, 0, tzinfo=UTC)]  # 13:00 in Berlin
    window = {"start": "01:00", "end": "05:00", "timeZone": "Europe/Berlin"}
    reconciler, client, events = _fragmented(_deployment(), window=window, clock=lambda: now[0])
    for _ in range(STABLE_ROUNDS + 2):
        await reconciler.reconcile(KEY)
    assert _rolls(client) == [], "not outside the window"
    (waiting,) = [e for e in events.recorded if e[2] == "GpusPerReplicaWaiting"]
    assert "01:00-05:00 Europe/Berlin" in waiting[3]
    now[0] = datetime(2026, 1, 16, 1, 30, tzinfo=UTC)  # 02:30 in Berlin
    await reconciler.reconcile(KEY)
    (patch,) = _rolls(client)
    (vllm, _) = patch["spec"]["template"]["spec"]["containers"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "4"


def _isvc(*, predictor: dict[str, Any], opted_in: bool = True) -> dict[str, Any]:
    annotations = {APPLY_ANNOTATION: "Apply"} if opted_in else {}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "chat",
            "namespace": NS,
            "labels": {"serving": "isvc"},
            "annotations": annotations,
            "resourceVersion": "11",
        },
        "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 4, **predictor}},
    }


def test_an_inference_services_predictor_is_resized_in_whichever_form_it_takes() -> None:
    custom = _isvc(predictor={"containers": [copy.deepcopy(VLLM), SIDECAR]})
    patch: Any = inference_service_roll_patch(custom, 8, 4)
    assert patch["metadata"] == {
        "annotations": {RESIZED_ANNOTATION: "8-4"},
        "resourceVersion": "11",
    }
    (vllm, sidecar) = patch["spec"]["predictor"]["containers"]
    assert vllm["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert vllm["args"][-1] == "4"
    assert sidecar == SIDECAR
    assert set(patch["spec"]["predictor"]) == {"containers"}, "replicas bounds are not touched"

    model = {
        "modelFormat": {"name": "huggingface"},
        "args": ["--model_id=meta-llama/Llama-3.1-70B", "--tensor-parallel-size=8"],
        "resources": {"limits": {"nvidia.com/gpu": "8"}, "requests": {"cpu": "8"}},
    }
    predictor = resized_predictor(_isvc(predictor={"model": model}), 4)
    assert predictor == {
        "model": {
            "args": ["--model_id=meta-llama/Llama-3.1-70B", "--tensor-parallel-size=4"],
            "resources": {"limits": {"nvidia.com/gpu": "4"}, "requests": {"cpu": "8"}},
        }
    }, "only what changes; modelFormat stays as the user wrote it"


def _fragmented_isvc(isvc: dict[str, Any]) -> tuple[Any, Any, Any]:
    """An InferenceService target whose 8-GPU replica is Pending on fragmented GPUs, under
    the cap: 4 GPUs per replica recommended."""
    obj = _config(1200.0, 600.0 / 2400.0)
    del obj["spec"]["deploymentName"]
    obj["spec"]["targetSelector"] = {"matchLabels": {"serving": "isvc"}}
    obj["status"]["measuredPowerWatts"] = 1200.0
    obj["status"]["effectiveCapWatts"] = 100_000
    obj["status"]["targets"][0]["kind"] = "InferenceService"
    pods = [
        gpu_pod("chat-0", "a-0", 8),
        gpu_pod("chat-1", "", 8, "Pending"),
        gpu_pod("other", "a-1", 4),
    ]
    for p in pods[:2]:
        p["metadata"]["labels"] = {"serving.kserve.io/inferenceservice": "chat"}
    reconciler, client, events = _reconciler(pods, [gpu_node("a-0", 8), gpu_node("a-1", 8)], obj)
    isvcs = reconciler._workloads.inference_services.store
    assert isinstance(isvcs, Store)
    isvcs.upsert(isvc)
    client.objects[("inferenceservices", "chat")] = isvc
    return reconciler, client, events


async def test_an_opted_in_inference_service_is_rolled_through_its_predictor_once() -> None:
    isvc = _isvc(predictor={"containers": [copy.deepcopy(VLLM)]})
    reconciler, client, events = _fragmented_isvc(isvc)
    for _ in range(STABLE_ROUNDS):
        await reconciler.reconcile(KEY)
    assert _rolls(client) == [], "never KServe's predictor Deployment"
    (patch,) = [p[2] for p in client.patches if p[0] == "inferenceservices"]
    (vllm,) = patch["spec"]["predictor"]["containers"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert [e for e in events.recorded if e[2] == "GpusPerReplicaApplied"]
    client.objects[("inferenceservices", "chat")] = {
        **isvc,
        "metadata": {
            **isvc["metadata"],
            "annotations": {APPLY_ANNOTATION: "Apply", RESIZED_ANNOTATION: "8-4"},
        },
    }
    for _ in range(STABLE_ROUNDS):
        await reconciler.reconcile(KEY)
    assert len([p for p in client.patches if p[0] == "inferenceservices"]) == 1, "once"


async def test_a_predictor_out_of_reach_is_not_marked_rolled_and_says_why_once() -> None:
    runtime_gpus = {"model": {"modelFormat": {"name": "huggingface"}, "runtime": "vllm-70b"}}
    multi_node = {
        "containers": [copy.deepcopy(VLLM)],
        "workerSpec": {"tensorParallelSize": 8, "pipelineParallelSize": 2},
    }
    for predictor, why in (
        (runtime_gpus, "no container of its predictor asks for nvidia.com/gpu"),
        (multi_node, "multi-node predictor (workerSpec)"),
    ):
        reconciler, client, events = _fragmented_isvc(_isvc(predictor=predictor))
        for _ in range(STABLE_ROUNDS + 3):
            await reconciler.reconcile(KEY)
        assert not [p for p in client.patches if p[0] == "inferenceservices"], why
        (warning,) = [e for e in events.recorded if e[2] == "GpusPerReplicaNotApplied"]
        assert why in warning[3]
