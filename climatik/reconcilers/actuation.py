"""The merge patches that move a target's ceiling (design decision 2 of ARCHITECTURE.md).

Only `spec.maxReplicaCount` of a ScaledObject (or `spec.predictor.maxReplicas` of a KServe
InferenceService) ever changes, by JSON merge patch; never `Deployment.spec.replicas`, which the
HPA owns. The user's own ceiling is remembered in an annotation the first time Climatik lowers
it, the ceiling Climatik wrote beside it (so a later edit by someone else is recognised as the
user's new max), and the annotations are removed when the ceiling is restored, leaving the
object as the user wrote it. A ceiling is never written below `minReplicaCount` (KEDA's webhook
refuses it).

Every patch carries the `resourceVersion` the decision was computed from: the API server
refuses it (409) if the object changed since, so a write prepared on stale state never
overwrites a change made meanwhile (a user editing the ceiling mid-decision, or the new
leader's ceiling when a paused old leader wakes up). If nothing changed the object since, such
a late write does land, and the leader decides again at its next interval.
"""

from __future__ import annotations

from collections.abc import Mapping

from climatik.domain.config import TargetKind
from climatik.kube.json import JsonDict, JsonObject, ObjectMeta, child
from climatik.kube.resources import INFERENCE_SERVICES, SCALED_OBJECTS, Resource
from climatik.reconcilers.resources import (
    APPLIED_MAX_ANNOTATION,
    CAPPED_BY_ANNOTATION,
    CEILING_ANNOTATIONS,
    USER_MAX_ANNOTATION,
)
from climatik.reconcilers.targets import ResolvedTarget, user_max_of

_RELEASED: dict[str, str | None] = dict.fromkeys(CEILING_ANNOTATIONS)


def resource_of(kind: TargetKind) -> Resource:
    """Where a target kind's ceiling lives."""
    return INFERENCE_SERVICES if kind is TargetKind.INFERENCE_SERVICE else SCALED_OBJECTS


def _spec(kind: TargetKind, ceiling: int) -> JsonDict:
    if kind is TargetKind.INFERENCE_SERVICE:
        return {"predictor": {"maxReplicas": ceiling}}
    return {"maxReplicaCount": ceiling}


def _metadata(obj: JsonObject, annotations: Mapping[str, str | None]) -> JsonDict:
    metadata: JsonDict = {"annotations": dict(annotations)}
    resource_version = ObjectMeta.of(obj).raw.get("resourceVersion")
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return metadata


def holds_below_user_max(target: ResolvedTarget, new_max_replicas: int) -> bool:
    """Whether `ceiling_patch` leaves `target` below its user's own ceiling (a hold)."""
    return max(new_max_replicas, target.min_replicas) < target.user_max_replicas


def ceiling_patch(
    target: ResolvedTarget, new_max_replicas: int, config_key: str
) -> tuple[Resource, JsonDict]:
    """The resource and merge-patch body that set `target`'s ceiling to `new_max_replicas`."""
    ceiling = max(new_max_replicas, target.min_replicas)
    annotations: Mapping[str, str | None]
    if not holds_below_user_max(target, new_max_replicas):
        ceiling = target.user_max_replicas
        annotations = _RELEASED
    else:
        annotations = {
            USER_MAX_ANNOTATION: str(target.user_max_replicas),
            APPLIED_MAX_ANNOTATION: str(ceiling),
            CAPPED_BY_ANNOTATION: config_key,
        }
    return resource_of(target.kind), {
        "metadata": _metadata(target.obj, annotations),
        "spec": _spec(target.kind, ceiling),
    }


def restore_patch(obj: JsonObject, kind: TargetKind) -> JsonDict | None:
    """The patch that gives an object its user's ceiling back, or None if it holds none.

    When the ceiling was changed by someone else during the cap, that value is the user's and
    stays; only the annotations go.
    """
    annotations = child(ObjectMeta.of(obj).raw, "annotations")
    if not any(name in annotations for name in _RELEASED):
        return None
    user_max = user_max_of(obj, kind)
    patch: JsonDict = {"metadata": _metadata(obj, _RELEASED)}
    if user_max is not None:
        patch["spec"] = _spec(kind, user_max)
    return patch
