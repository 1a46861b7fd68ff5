"""What the reconcilers read of each cached workload kind: all the informers keep of them.

Pods, Deployments, ScaledObjects and KEDA's HPAs number one per config or more, and the API
server sends far more of each than a decision reads (`climatik.kube.fields`). These trees list
every field read by target resolution (`targets.py`), actuation, placement, GPU tuning and the
event routing in `climatik.runtime.capping`; `tests/unit/test_cached_fields.py` runs those
readers on recording objects and fails when one reads a field not listed here. Writes are merge
patches built from scratch, never from a cached object, so nothing dropped here is written back.
PowerCappingConfigs, Jobs and ConfigMaps are cached whole.
"""

from __future__ import annotations

from typing import Final

from climatik.kube.fields import KEEP, Fields
from climatik.reconcilers.resources import GPU_RESOURCE

OBJECT_META: Final[Fields] = dict.fromkeys(
    (
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
    ),
    KEEP,
)
"""Metadata but `managedFields`: labels feed selectors, annotations carry the user's max and
priority (and ours), owners say KServe scales a ScaledObject, deletion stops a pod counting."""

_TOP: Final[Fields] = {"apiVersion": KEEP, "kind": KEEP, "metadata": OBJECT_META}

_GPU_COUNT: Final[Fields] = {GPU_RESOURCE: KEEP}
_FITTED: Final[Fields] = {"cpu": KEEP, "memory": KEEP, GPU_RESOURCE: KEEP}
"""What a replica is fitted on: CPU and memory (VPA's) and GPUs."""

POD_FIELDS: Final[Fields] = {
    **_TOP,
    "spec": {
        "nodeName": KEEP,
        "containers": {
            "name": KEEP,
            "resources": {"requests": _FITTED, "limits": _GPU_COUNT},
        },
    },
    "status": {"phase": KEEP, "podIP": KEEP, "containerStatuses": {"ready": KEEP}},
}
"""Serving pods: phase, each container's readiness (placement moves only ready replicas of
settled workloads),
node (racks, GPU tuning), IP (vLLM metrics for GPU tuning), each
container's `nvidia.com/gpu` count (a GPU pod's watts must include its GPUs') and its name and
CPU and memory requests (one replica's footprint against VPA's recommendation, and what bound
pods leave free on a node)."""

DEPLOYMENT_FIELDS: Final[Fields] = {
    **_TOP,
    "spec": {"selector": KEEP, "template": {"spec": {"affinity": KEEP}}},
    "status": {"replicas": KEEP},
}
"""The pod selector, the replica count, and the template's affinity (placement's template mode
rewrites the node affinity and keeps the user's own)."""

SCALED_OBJECT_FIELDS: Final[Fields] = {
    **_TOP,
    "spec": {
        "minReplicaCount": KEEP,
        "maxReplicaCount": KEEP,
        "scaleTargetRef": KEEP,
        "advanced": {"horizontalPodAutoscalerConfig": {"name": KEEP}},
    },
}
"""The ceiling and floor, what it scales, and the name of KEDA's HPA for it."""

INFERENCE_SERVICE_FIELDS: Final[Fields] = {
    **_TOP,
    "spec": {"predictor": {"minReplicas": KEEP, "maxReplicas": KEEP}},
}
"""The predictor's floor and ceiling (the model and container specs are never read)."""

HPA_FIELDS: Final[Fields] = {
    **_TOP,
    "status": {"conditions": {"type": KEEP, "status": KEEP, "reason": KEEP}},
}
"""KEDA's HPAs: whether `ScalingLimited` says the ceiling holds the autoscaler back."""

NODE_FIELDS: Final[Fields] = {**_TOP, "status": {"allocatable": {**_FITTED, "pods": KEEP}}}
"""Nodes are grouped into racks and zones by their labels; of their status only the GPUs, CPU,
memory and pods they can allocate are kept (free GPUs per node for GPUs per replica, and seats for
one replica's footprint)."""
