"""The merge patches that move a target's ceiling (design decision 2 of ARCHITECTURE.md).

Only `spec.maxReplicaCount` of a ScaledObject (or `spec.predictor.maxReplicas` of a KServe
InferenceService) ever changes, by JSON merge patch; never `Deployment.spec.replicas`, which the
HPA owns. The user's own ceiling is remembered in an annotation the first time Climatik lowers
it and the annotations are removed when the ceiling is restored, leaving the object as the user
wrote it. A ceiling is never written below `minReplicaCount` (KEDA's webhook refuses it).
"""

from __future__ import annotations

from typing import Any

from climatik.domain.config import TargetKind
from climatik.kube.client import Resource
from climatik.reconcilers.resources import (
    CAPPED_BY_ANNOTATION,
    INFERENCE_SERVICES,
    SCALED_OBJECTS,
    USER_MAX_ANNOTATION,
)
from climatik.reconcilers.targets import ResolvedTarget


def ceiling_patch(
    target: ResolvedTarget, new_max_replicas: int, config_key: str
) -> tuple[Resource, dict[str, Any]]:
    """The resource and merge-patch body that set `target`'s ceiling to `new_max_replicas`."""
    ceiling = max(new_max_replicas, target.min_replicas)
    annotations: dict[str, str | None]
    if ceiling >= target.user_max_replicas:
        ceiling = target.user_max_replicas
        annotations = {USER_MAX_ANNOTATION: None, CAPPED_BY_ANNOTATION: None}
    else:
        annotations = {
            USER_MAX_ANNOTATION: str(target.user_max_replicas),
            CAPPED_BY_ANNOTATION: config_key,
        }
    if target.kind is TargetKind.INFERENCE_SERVICE:
        spec: dict[str, Any] = {"predictor": {"maxReplicas": ceiling}}
        resource = INFERENCE_SERVICES
    else:
        spec = {"maxReplicaCount": ceiling}
        resource = SCALED_OBJECTS
    return resource, {"metadata": {"annotations": annotations}, "spec": spec}


def restore_patch(obj: dict[str, Any] | Any, kind: TargetKind) -> dict[str, Any] | None:
    """The patch that gives an object its user's ceiling back, or None if it holds none."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    remembered = annotations.get(USER_MAX_ANNOTATION)
    if remembered is None:
        return None
    try:
        user_max = int(remembered)
    except ValueError:
        return None
    spec: dict[str, Any] = (
        {"predictor": {"maxReplicas": user_max}}
        if kind is TargetKind.INFERENCE_SERVICE
        else {"maxReplicaCount": user_max}
    )
    return {
        "metadata": {"annotations": {USER_MAX_ANNOTATION: None, CAPPED_BY_ANNOTATION: None}},
        "spec": spec,
    }
