"""GPUs per replica applied to an InferenceService on the dev cluster with KServe's own
controller (`--with keda,kserve`): the roll Climatik's apply mode writes to the
InferenceService's predictor reaches the predictor Deployment KServe owns and its pods, for a
custom container and for a model on a ServingRuntime (whose container KServe merges it into).

The VPA-hold controller that decides the roll needs VPA's CRD, which this cluster does not
serve; its gates (opt-in, steady recommendation, under the cap, window, once) are unit-tested
(`tests/unit/test_replica_size_apply.py`), and the controller's loop runs against real VPA in
`test_replica_size_live.py`. What only KServe can tell is whether the patch is one it accepts
and carries to the pods: that is what runs here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.reconcilers.replica_size_apply import (
    APPLY_ANNOTATION,
    RESIZED_ANNOTATION,
    inference_service_roll_patch,
)
from tests.integration.conftest import Kubectl
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import kubectl_json

pytestmark = [
    pytest.mark.integration,
    pytest.mark.keda,
    pytest.mark.kserve,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

ISVC_LABEL = "serving.kserve.io/inferenceservice"


def _inference_service(predictor: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Standard-mode predictor of one 8-GPU replica, no autoscaler, on kwok nodes: a custom
    container unless `predictor` says otherwise."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "chat",
            "annotations": {
                "serving.kserve.io/deploymentMode": "Standard",
                "serving.kserve.io/autoscalerClass": "none",
                APPLY_ANNOTATION: "Apply",
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 1,
                "nodeSelector": {"type": "kwok"},
                "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                **(
                    predictor
                    or {
                        "containers": [
                            {
                                "name": "kserve-container",
                                "image": "vllm/vllm-openai:latest",
                                "args": ["--model", "llama-70b", "--tensor-parallel-size", "8"],
                                "resources": {"limits": {"nvidia.com/gpu": "8"}},
                            }
                        ]
                    }
                ),
            }
        },
    }


def _serving_runtime() -> dict[str, Any]:
    """A ServingRuntime for the `model` form: KServe merges the model's fields over its
    container."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "vllm-runtime"},
        "spec": {
            "supportedModelFormats": [{"name": "huggingface", "version": "1", "autoSelect": True}],
            "protocolVersions": ["v1", "v2"],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "vllm/vllm-openai:latest",
                    "args": ["--model_name={{.Name}}"],
                }
            ],
        },
    }


def _gpus_and_args(pod_spec: dict[str, Any]) -> tuple[str, list[str]]:
    container = next(c for c in pod_spec["containers"] if c["name"] == "kserve-container")
    return container["resources"]["limits"]["nvidia.com/gpu"], container.get("args", [])


async def _roll(kubectl: Kubectl) -> dict[str, Any]:
    """Read the InferenceService and write the roll as the apply mode does: a merge patch that
    carries the `resourceVersion` just read. KServe's controller writes the object too, so a
    write may meet 409 Conflict; the controller then reads again the next round, and so does
    this, a few times."""
    for _ in range(10):
        isvc = await kubectl_json(kubectl, "inferenceservice", "chat")
        patch: dict[str, Any] = dict(inference_service_roll_patch(isvc, 8, 4))
        result = await asyncio.to_thread(
            kubectl.run,
            "patch",
            "inferenceservice",
            "chat",
            "--type=merge",
            "-p",
            json.dumps(patch),
            check=False,
        )
        if result.returncode == 0:
            return patch
        assert "Conflict" in result.stderr, result.stderr
        await asyncio.sleep(1)
    raise AssertionError("the roll met a conflict ten times in a row")


async def _running(kubectl: Kubectl) -> list[dict[str, Any]]:
    pods = (await kubectl_json(kubectl, "pods", "-l", f"{ISVC_LABEL}=chat"))["items"]
    return [p for p in pods if p["status"].get("phase") == "Running"]


async def test_a_roll_of_the_predictor_reaches_kserves_deployment_and_its_pods(
    kserve_dev_cluster: ClusterInfo, kserve_kubectl: Kubectl
) -> None:
    kubectl = kserve_kubectl
    kubectl.apply(_inference_service())
    (pod,) = await eventually(lambda: _running(kubectl), lambda p: len(p) == 1, timeout_s=90)
    assert _gpus_and_args(pod["spec"])[0] == "8"

    await _roll(kubectl)

    deployment = await eventually(
        lambda: kubectl_json(kubectl, "deployment", "chat-predictor"),
        lambda d: _gpus_and_args(d["spec"]["template"]["spec"])[0] == "4",
        timeout_s=60,
    )
    _, args = _gpus_and_args(deployment["spec"]["template"]["spec"])
    assert args == ["--model", "llama-70b", "--tensor-parallel-size", "4"]
    (rolled,) = await eventually(
        lambda: _running(kubectl),
        lambda pods: len(pods) == 1 and _gpus_and_args(pods[0]["spec"])[0] == "4",
        timeout_s=90,
    )
    assert _gpus_and_args(rolled["spec"])[1][-1] == "4"
    stored = await kubectl_json(kubectl, "inferenceservice", "chat")
    assert stored["metadata"]["annotations"][RESIZED_ANNOTATION] == "8-4"
    assert stored["spec"]["predictor"]["maxReplicas"] == 1, "only the size changed"

    # KServe keeps the predictor it was told: ten seconds later the Deployment still has 4.
    await asyncio.sleep(10)
    again = await kubectl_json(kubectl, "deployment", "chat-predictor")
    assert _gpus_and_args(again["spec"]["template"]["spec"])[0] == "4"


async def test_a_roll_of_a_model_predictor_reaches_the_runtime_container(
    kserve_dev_cluster: ClusterInfo, kserve_kubectl: Kubectl
) -> None:
    """The common form: `spec.predictor.model` on a ServingRuntime. The roll edits only the
    model's resources and arguments; KServe merges them into the runtime's container."""
    kubectl = kserve_kubectl
    kubectl.apply(_serving_runtime())
    model = {
        "modelFormat": {"name": "huggingface"},
        "runtime": "vllm-runtime",
        "args": ["--model_id=meta-llama/Llama-3.1-70B", "--tensor-parallel-size=8"],
        "resources": {"limits": {"nvidia.com/gpu": "8"}},
    }
    kubectl.apply(_inference_service({"model": model}))
    (pod,) = await eventually(lambda: _running(kubectl), lambda p: len(p) == 1, timeout_s=90)
    assert _gpus_and_args(pod["spec"])[0] == "8"

    patch: Any = await _roll(kubectl)
    assert set(patch["spec"]["predictor"]) == {"model"}
    (rolled,) = await eventually(
        lambda: _running(kubectl),
        lambda pods: len(pods) == 1 and _gpus_and_args(pods[0]["spec"])[0] == "4",
        timeout_s=90,
    )
    args = _gpus_and_args(rolled["spec"])[1]
    assert "--tensor-parallel-size=4" in args
    assert "--model_id=meta-llama/Llama-3.1-70B" in args
    stored = await kubectl_json(kubectl, "inferenceservice", "chat")
    assert stored["spec"]["predictor"]["model"]["runtime"] == "vllm-runtime"
    assert stored["spec"]["predictor"]["model"]["modelFormat"] == {"name": "huggingface"}
