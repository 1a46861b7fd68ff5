"""Template mode's actuation: the merge patch that points a Deployment's pod template at racks.

Design document §10.5 taken literally: the pod template's node affinity requires the admissible
racks and prefers the best one. Every change is a rollout of the whole Deployment, so the patch
is None unless something would change; the user's own node affinity is remembered in an
annotation the first time and kept in every patch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from climatik.domain.placement import PlaceScore
from climatik.kube.json import (
    JsonDict,
    JsonObject,
    JsonValue,
    ObjectMeta,
    as_object,
    child,
    items,
    objects,
)
from climatik.kube.store import thaw

ORIGINAL_AFFINITY_ANNOTATION = "climatik-project.ai/original-node-affinity"
"""The user's own node affinity of a Deployment, kept while Template mode owns the template."""
TEMPLATE_RACKS_ANNOTATION = "climatik-project.ai/placement-racks"
"""What Template mode last wrote, in words, and when it may next change."""


def template_patch(
    deployment: JsonObject, rack_label_key: str, scores: Sequence[PlaceScore]
) -> JsonDict | None:
    """The merge patch that points the Deployment's pod template at the best racks, or None.

    Design document §10.5: `requiredDuringScheduling... In [racks]`, here the admissible racks
    (with one rack hot out of two, exactly the document's `In [rack1]`), plus a preferred term
    for the best rack (one with a seat for a replica, where any has). The user's own node
    affinity (remembered in an annotation the first time) is kept: our requirement is ANDed
    into each of its required terms, its preferred terms stay.
    None when there is no admissible rack or nothing would change.
    """
    admissible = [s for s in scores if s.admissible]
    if not admissible:
        return None
    best = min(admissible, key=lambda s: (not s.seated, -s.score, s.place_id)).place_id
    allowed = sorted(s.place_id for s in admissible)
    annotations = ObjectMeta.of(deployment).annotations
    pod_spec = child(child(child(deployment, "spec"), "template"), "spec")
    current = thaw(child(pod_spec, "affinity").get("nodeAffinity"))
    original: JsonObject
    if ORIGINAL_AFFINITY_ANNOTATION in annotations:
        original = as_object(json.loads(annotations[ORIGINAL_AFFINITY_ANNOTATION]))
        original_text = annotations[ORIGINAL_AFFINITY_ANNOTATION]
    else:
        original = thaw(as_object(current))  # a deep copy
        original_text = json.dumps(original, sort_keys=True)
    in_allowed: JsonDict = {"key": rack_label_key, "operator": "In", "values": list(allowed)}
    required: JsonDict = dict(child(original, "requiredDuringSchedulingIgnoredDuringExecution"))
    terms: list[JsonDict] = [dict(t) for t in objects(required, "nodeSelectorTerms")] or [{}]
    for term in terms:
        term["matchExpressions"] = [*items(term, "matchExpressions"), in_allowed]
    required["nodeSelectorTerms"] = terms
    preferred: list[JsonValue] = [
        *items(original, "preferredDuringSchedulingIgnoredDuringExecution"),
        {
            "weight": 100,
            "preference": {
                "matchExpressions": [{"key": rack_label_key, "operator": "In", "values": [best]}]
            },
        },
    ]
    desired: JsonDict = {
        **original,
        "requiredDuringSchedulingIgnoredDuringExecution": required,
        "preferredDuringSchedulingIgnoredDuringExecution": preferred,
    }
    if current == desired:
        return None
    note = f"best {best}; allowed {','.join(allowed)}"
    return {
        "metadata": {
            "annotations": {
                ORIGINAL_AFFINITY_ANNOTATION: original_text,
                TEMPLATE_RACKS_ANNOTATION: note,
            }
        },
        "spec": {"template": {"spec": {"affinity": {"nodeAffinity": desired}}}},
    }
