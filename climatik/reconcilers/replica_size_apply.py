"""The opt-in apply mode of GPUs per replica (issue 23): roll a Deployment or an
InferenceService to the recommended `nvidia.com/gpu` and `--tensor-parallel-size`, once, never
while over the cap.

A Deployment, or an InferenceService, opts in with the annotation
`climatik-project.ai/gpus-per-replica: Apply` (the object rolled is the user's, so the user says
so on it). A KServe target is rolled through its InferenceService's predictor, never through
the predictor Deployment KServe owns (KServe reverts edits of it). It is rolled when the
recommendation differs from its size and has held for `STABLE_ROUNDS` rounds, the config's
measured power is known and below its cap in force, none of the config's racks is held for
being near its limits (a rollout surges pods), and the config's apply window (if any) is open.
The roll is one JSON merge patch of the pod template's containers (of the predictor, for an
InferenceService), carrying the `resourceVersion` of the object read just before (one changed
meanwhile answers 409 and is tried again next round): each container that asks for GPUs gets
the new count in its requests and limits, and a `--tensor-parallel-size` argument (`N` after
it, or `=N`) the new size. `climatik-project.ai/gpus-resized: <from>-<to>` on the object
records the roll, and an object that carries it is never rolled again (once means once: a user
who wants another roll removes the annotation), so two sizes never take turns. Patching
Deployments needs the opt-in RBAC that placement's Template mode uses (docs/security.md);
InferenceServices are patched already for their ceilings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from climatik.api.status_models import PowerCappingConfigStatus, ReplicaSizeStatus
from climatik.kube.json import JsonDict, JsonObject, JsonValue, ObjectMeta, child, objects, strings
from climatik.kube.store import thaw
from climatik.reconcilers.resources import GPU_RESOURCE

APPLY_ANNOTATION = "climatik-project.ai/gpus-per-replica"
APPLY_VALUE = "Apply"
RESIZED_ANNOTATION = "climatik-project.ai/gpus-resized"
STABLE_ROUNDS = 3
"""Rounds a recommendation must hold before a workload is rolled to it."""
APPLIED_REASONS = frozenset({"Efficiency", "Slo", "Fragmented"})

_TP_FLAG = "--tensor-parallel-size"
_TP_INLINE = re.compile(r"^--tensor-parallel-size=\d+$")


def opted_in(obj: JsonObject) -> bool:
    """The user asked for rolls on this Deployment or InferenceService."""
    return strings(child(obj, "metadata"), "annotations").get(APPLY_ANNOTATION) == APPLY_VALUE


def resized_marker(current: int, recommended: int) -> str:
    return f"{current}-{recommended}"


def under_cap(status: PowerCappingConfigStatus | None) -> bool:
    """The config's measured power is known and below the cap in force."""
    if status is None or status.measured_power_watts is None or not status.effective_cap_watts:
        return False
    return status.measured_power_watts < status.effective_cap_watts


def wanted(entry: ReplicaSizeStatus) -> int | None:
    """The size to roll to, or None when the entry recommends no change."""
    if entry.reason not in APPLIED_REASONS or entry.recommended_gpus is None:
        return None
    if entry.recommended_gpus in (0, entry.current_gpus):
        return None
    return entry.recommended_gpus


def _args(values: Sequence[JsonValue], gpus: int) -> list[JsonValue]:
    out = list(values)
    for index, value in enumerate(out):
        if value == _TP_FLAG and index + 1 < len(out):
            out[index + 1] = str(gpus)
        elif isinstance(value, str) and _TP_INLINE.match(value):
            out[index] = f"{_TP_FLAG}={gpus}"
    return out


def resized_container(container: JsonObject, gpus: int) -> JsonDict:
    """The container with its GPU count and tensor-parallel size set to `gpus`; a container
    that asks for no GPU is returned unchanged."""
    new = thaw(container)
    resources = child(container, "resources")
    if not any(GPU_RESOURCE in child(resources, k) for k in ("requests", "limits")):
        return new
    new_resources = thaw(resources)
    for kind in ("requests", "limits"):
        amounts = child(resources, kind)
        if GPU_RESOURCE in amounts:
            new_resources[kind] = {**thaw(amounts), GPU_RESOURCE: str(gpus)}
    new["resources"] = new_resources
    for key in ("args", "command"):
        values = container.get(key)
        if isinstance(values, Sequence) and not isinstance(values, str):
            new[key] = _args(values, gpus)
    return new


def resized_containers(deployment: JsonObject, gpus: int) -> list[JsonDict]:
    """The pod template's containers with every GPU count and tensor-parallel size set to
    `gpus` (containers that ask for no GPU are unchanged)."""
    template_spec = child(child(child(deployment, "spec"), "template"), "spec")
    return [resized_container(c, gpus) for c in objects(template_spec, "containers")]


def _marker(obj: JsonObject, current: int, gpus: int) -> JsonDict:
    """The roll's record, with the `resourceVersion` read just before (compare-and-swap)."""
    metadata: JsonDict = {"annotations": {RESIZED_ANNOTATION: resized_marker(current, gpus)}}
    resource_version = ObjectMeta.of(obj).raw.get("resourceVersion")
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return metadata


def roll_patch(deployment: JsonObject, current: int, gpus: int) -> JsonDict:
    """The merge patch that rolls the Deployment to `gpus` per replica (compare-and-swap)."""
    return {
        "metadata": _marker(deployment, current, gpus),
        "spec": {"template": {"spec": {"containers": resized_containers(deployment, gpus)}}},
    }


def resized_predictor(isvc: JsonObject, gpus: int) -> JsonDict:
    """What changes in an InferenceService's `spec.predictor` to serve with `gpus` per replica.

    KServe builds the predictor's pod from either its `containers` (a custom predictor) or one
    container-shaped field (`model`, or a framework such as `huggingface`): each that asks for
    GPUs gets the new count and tensor-parallel size. The list is replaced whole (a merge patch
    cannot edit one item), a container-shaped field only in the keys that change."""
    predictor = child(child(isvc, "spec"), "predictor")
    out: JsonDict = {}
    containers = objects(predictor, "containers")
    if containers:
        resized = [resized_container(c, gpus) for c in containers]
        if resized != [thaw(c) for c in containers]:
            out["containers"] = resized
    for key, value in predictor.items():
        if key == "containers" or not isinstance(value, Mapping) or "resources" not in value:
            continue
        new = resized_container(value, gpus)
        changed = {k: v for k, v in new.items() if k in ("resources", "args", "command")}
        if new != thaw(value):
            out[key] = changed
    return out


def predictor_problem(isvc: JsonObject, gpus: int) -> str | None:
    """Why an InferenceService's predictor cannot be rolled to `gpus`, or None when it can:
    the roll edits the predictor's own containers, so GPUs its ServingRuntime sets, and the
    head and workers of a multi-node predictor, are out of its reach."""
    predictor = child(child(isvc, "spec"), "predictor")
    if "workerSpec" in predictor:
        return "a multi-node predictor (workerSpec) is not rolled"
    if not resized_predictor(isvc, gpus):
        return (
            f"no container of its predictor asks for {GPU_RESOURCE} "
            "(GPUs a ServingRuntime sets are not rolled)"
        )
    return None


def inference_service_roll_patch(isvc: JsonObject, current: int, gpus: int) -> JsonDict:
    """The merge patch that rolls an InferenceService's predictor to `gpus` per replica (KServe
    then rolls the predictor's Deployment: edits of that Deployment itself it reverts)."""
    return {
        "metadata": _marker(isvc, current, gpus),
        "spec": {"predictor": resized_predictor(isvc, gpus)},
    }


def already_rolled(obj: JsonObject) -> bool:
    """The object carries the record of a roll: never again (the user removes it to allow one)."""
    return RESIZED_ANNOTATION in strings(child(obj, "metadata"), "annotations")
