"""The mutating admission webhook that steers new pods toward the best racks.

Placement acts at pod creation, so no running replica restarts (ARCHITECTURE decision 5): for a
Pod CREATE of a managed workload, the answer is a JSONPatch that adds
`preferredDuringSchedulingIgnoredDuringExecution` node-affinity terms toward the best racks
(weights 1..100 from the rack scores) and, when the config asks for it, a
`requiredDuringScheduling` `NotIn` for racks over their limits. The scores come from
`PlacementSnapshot`, kept fresh by the placement reconciler; the handler itself does no I/O.

Guarantees:
- It never blocks: every answer is `allowed: true`; any internal error, a stale or missing
  snapshot, an unmanaged pod or an unexpected request gives no patch at all.
- It touches only managed pods: the pod must carry `climatik-project.ai/managed: "true"` (the
  MutatingWebhookConfiguration's objectSelector says the same, this is the second lock) and be
  owned, through its ReplicaSet, by a Deployment that a config targets.
- It never makes a pod unschedulable by itself: racks are excluded only while at least one
  rack stays allowed, and existing required terms keep their meaning (the `NotIn` is ANDed into
  every existing term, never added as a new ORed term).
- It is idempotent: a pod already carrying the placement annotation is left alone, so a
  reinvocation does not stack terms.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from climatik.kube.json import JsonDict, JsonObject, JsonValue, items, objects, strict_child
from climatik.kube.store import thaw
from climatik.reconcilers.placement_metrics import PlacementMetrics

log = structlog.get_logger(__name__)

MANAGED_LABEL = "climatik-project.ai/managed"
PLACEMENT_ANNOTATION = "climatik-project.ai/placement"
POD_TEMPLATE_HASH = "pod-template-hash"
ADMISSION_API_VERSION = "admission.k8s.io/v1"


@dataclass(frozen=True, slots=True)
class WorkloadPlacement:
    """Where new pods of one Deployment should go, as of `computed_at_s` (monotonic)."""

    config_key: str
    namespace: str
    deployment: str
    rack_label_key: str
    preferred: tuple[tuple[str, int], ...]
    """(rack, weight 1..100), best first."""
    excluded: tuple[str, ...]
    """Racks new pods must avoid (over a limit, and the config excludes such racks)."""
    computed_at_s: float
    seatless: tuple[str, ...] = ()
    """Racks left out of `preferred` because no node there seats one more replica (VPA's
    footprint); shown in the pod's annotation, never required away (the scheduler filters)."""


class PlacementSnapshot:
    """The reconciler's latest placement per managed Deployment, read by the webhook.

    Single event loop, no awaits inside methods: each update replaces a config's entries at once,
    so the webhook never sees half of an update.
    """

    def __init__(self) -> None:
        self._by_workload: dict[tuple[str, str], WorkloadPlacement] = {}
        self._by_config: dict[str, set[tuple[str, str]]] = {}

    def update(self, config_key: str, placements: Iterable[WorkloadPlacement]) -> None:
        """Replace everything `config_key` placed with `placements`."""
        self.remove(config_key)
        keys: set[tuple[str, str]] = set()
        for placement in placements:
            key = (placement.namespace, placement.deployment)
            self._by_workload[key] = placement
            keys.add(key)
        self._by_config[config_key] = keys

    def remove(self, config_key: str) -> None:
        for key in self._by_config.pop(config_key, set()):
            existing = self._by_workload.get(key)
            if existing is not None and existing.config_key == config_key:
                del self._by_workload[key]

    def lookup(self, namespace: str, deployment: str) -> WorkloadPlacement | None:
        return self._by_workload.get((namespace, deployment))

    def __len__(self) -> int:
        return len(self._by_workload)


def owning_deployment(pod: JsonObject) -> str | None:
    """The Deployment that owns `pod` through its ReplicaSet, from the pod alone.

    A Deployment names its ReplicaSets `<deployment>-<pod-template-hash>` and stamps the hash
    on every pod, so no ReplicaSet lookup (and no API call inside admission) is needed.
    """
    metadata = strict_child(pod, "metadata")
    labels = strict_child(metadata, "labels")
    template_hash = labels.get(POD_TEMPLATE_HASH)
    for ref in objects(metadata, "ownerReferences"):
        if ref.get("kind") != "ReplicaSet" or not ref.get("controller"):
            continue
        name = str(ref.get("name", ""))
        suffix = f"-{template_hash}"
        if template_hash and name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _rack_requirement(key: str, operator: str, racks: Iterable[str]) -> JsonDict:
    return {"key": key, "operator": operator, "values": list[JsonValue](sorted(racks))}


def placement_patch(pod: JsonObject, placement: WorkloadPlacement) -> list[JsonDict]:
    """The JSONPatch operations that add `placement` to `pod` ([] when there is nothing to add).

    Existing preferred terms are kept and ours appended; the `NotIn` requirement is ANDed into
    each existing required term (or forms the only term).
    """
    spec = strict_child(pod, "spec")
    affinity = spec.get("affinity")
    node_affinity = thaw(strict_child(strict_child(spec, "affinity"), "nodeAffinity"))
    key = placement.rack_label_key
    preferred = list(items(node_affinity, "preferredDuringSchedulingIgnoredDuringExecution"))
    for rack, weight in placement.preferred:
        preferred.append(
            {
                "weight": int(min(100, max(1, weight))),
                "preference": {"matchExpressions": [_rack_requirement(key, "In", [rack])]},
            }
        )
    if preferred:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    if placement.excluded:
        required = dict(
            strict_child(node_affinity, "requiredDuringSchedulingIgnoredDuringExecution")
        )
        terms: list[JsonDict] = [dict(t) for t in objects(required, "nodeSelectorTerms")]
        not_in = _rack_requirement(key, "NotIn", placement.excluded)
        if not terms:
            terms = [{"matchExpressions": [not_in]}]
        else:
            for term in terms:
                term["matchExpressions"] = [*items(term, "matchExpressions"), not_in]
        required["nodeSelectorTerms"] = terms
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    if not placement.preferred and not placement.excluded:
        return []
    ops: list[JsonDict] = []
    if affinity is None:
        ops.append(
            {"op": "add", "path": "/spec/affinity", "value": {"nodeAffinity": node_affinity}}
        )
    else:
        ops.append({"op": "add", "path": "/spec/affinity/nodeAffinity", "value": node_affinity})
    note = ", ".join(f"{rack}={weight}" for rack, weight in placement.preferred) or "-"
    if placement.excluded:
        note += f"; avoid {','.join(sorted(placement.excluded))}"
    if placement.seatless:
        note += f"; no seat {','.join(placement.seatless)}"
    annotations = strict_child(pod, "metadata").get("annotations")
    if annotations is None:
        ops.append(
            {"op": "add", "path": "/metadata/annotations", "value": {PLACEMENT_ANNOTATION: note}}
        )
    else:
        path = f"/metadata/annotations/{_escape_pointer(PLACEMENT_ANNOTATION)}"
        ops.append({"op": "add", "path": path, "value": note})
    return ops


class PlacementWebhook:
    """Turns an AdmissionReview (v1) for a Pod CREATE into an answer; never raises."""

    def __init__(
        self,
        snapshot: PlacementSnapshot,
        *,
        max_age_s: float = 300.0,
        metrics: PlacementMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot = snapshot
        self.max_age_s = max_age_s
        self.metrics = metrics
        self._clock = clock

    def handle(self, review: JsonObject) -> JsonDict:
        """The AdmissionReview to send back."""
        uid = ""
        try:
            request = strict_child(review, "request")
            uid = str(request.get("uid", ""))
            ops, why = self._decide(request)
        except Exception:
            log.exception("placement_webhook_failed", uid=uid)
            ops, why = [], "error"
        result = "patched" if ops else ("error" if why == "error" else "skipped")
        if self.metrics is not None:
            self.metrics.webhook_requests.labels(result=result).inc()
        response: JsonDict = {"uid": uid, "allowed": True}
        if ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        return {
            "apiVersion": ADMISSION_API_VERSION,
            "kind": "AdmissionReview",
            "response": response,
        }

    def _decide(self, request: JsonObject) -> tuple[list[JsonDict], str]:
        kind = strict_child(request, "kind")
        if kind.get("kind") != "Pod" or kind.get("group", "") != "":
            return [], "not a pod"
        if request.get("operation") != "CREATE" or request.get("subResource"):
            return [], "not a create"
        pod = strict_child(request, "object")
        metadata = strict_child(pod, "metadata")
        labels = strict_child(metadata, "labels")
        if labels.get(MANAGED_LABEL) != "true":
            return [], "not managed"
        if PLACEMENT_ANNOTATION in strict_child(metadata, "annotations"):
            return [], "already placed"
        namespace = str(request.get("namespace") or metadata.get("namespace") or "")
        deployment = owning_deployment(pod)
        if deployment is None:
            return [], "no owning deployment"
        placement = self.snapshot.lookup(namespace, deployment)
        if placement is None:
            return [], "no config targets the deployment"
        age_s = self._clock() - placement.computed_at_s
        if age_s > self.max_age_s:
            log.warning(
                "placement_snapshot_stale",
                config=placement.config_key,
                deployment=f"{namespace}/{deployment}",
                age_s=round(age_s, 1),
            )
            return [], "stale"
        ops = placement_patch(pod, placement)
        if ops:
            log.info(
                "pod_placement_patched",
                config=placement.config_key,
                deployment=f"{namespace}/{deployment}",
                preferred=placement.preferred,
                excluded=placement.excluded,
            )
        return ops, "placed"
