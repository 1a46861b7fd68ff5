"""Template mode's patch: the admissible racks required, the best preferred, the user's own
node affinity kept, and no patch (no rollout) when nothing would change."""

from __future__ import annotations

import json

from climatik.domain.placement import PlaceScore
from climatik.reconcilers.placement_template import ORIGINAL_AFFINITY_ANNOTATION, template_patch
from tests.json_paths import dig, list_at, obj_at, text_at
from tests.unit.helpers.placement_objects import DEPLOYMENT, KEY


def test_template_patch_keeps_the_users_affinity_and_is_stable() -> None:
    user = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}
            ]
        }
    }
    deployment = json.loads(json.dumps(DEPLOYMENT))
    deployment["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": user}
    scores = [
        PlaceScore("rack-a", 1.0, True, ""),
        PlaceScore("rack-b", 2.0, True, ""),
        PlaceScore("rack-c", 9.0, False, ""),
    ]
    patch = template_patch(deployment, KEY, scores)
    assert patch is not None
    original = text_at(patch, "metadata", "annotations", ORIGINAL_AFFINITY_ANNOTATION)
    assert json.loads(original) == user
    desired = obj_at(patch, "spec", "template", "spec", "affinity", "nodeAffinity")
    (term,) = list_at(
        desired, "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"
    )
    assert dig(term, "matchExpressions") == [
        {"key": "gpu", "operator": "In", "values": ["h100"]},
        {"key": KEY, "operator": "In", "values": ["rack-a", "rack-b"]},
    ]
    best = dig(desired, "preferredDuringSchedulingIgnoredDuringExecution", 0, "preference")
    assert dig(best, "matchExpressions", 0, "values") == ["rack-b"]
    # Applied: the template now holds `desired` and the annotation the original -> no change.
    deployment["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": desired}
    deployment["metadata"]["annotations"] = dig(patch, "metadata", "annotations")
    assert template_patch(deployment, KEY, scores) is None
    assert template_patch(deployment, KEY, [PlaceScore("rack-a", 1.0, False, "")]) is None
