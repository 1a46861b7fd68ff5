"""Which objects a PowerCappingConfig caps, read from the informer caches.

Pure functions over cached objects: explicit `scaleObjectRef`s, the `deploymentName`'s
ScaledObjects, or a label selector over ScaledObjects and InferenceServices. A ScaledObject
owned by a KServe InferenceService is capped through the InferenceService (KServe reverts edits
to objects it owns). Defaults follow KEDA (`minReplicaCount` 0, `maxReplicaCount` 100) and KServe
(`minReplicas` 1). The user's `priority` and `deferrable` annotations are read from the object
the ceiling lives on; a value that does not parse falls back to the default and is reported, never
raised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from climatik.domain.config import LabelSelector, PowerCappingConfig, TargetKind
from climatik.kube.cache import Cache
from climatik.kube.json import (
    EMPTY,
    JsonObject,
    ObjectMeta,
    child,
    items,
    labels_of,
    objects,
    text,
)
from climatik.kube.resources import INFERENCE_SERVICES
from climatik.kube.store import FrozenMapping, index_by_namespace
from climatik.reconcilers.resources import (
    APPLIED_MAX_ANNOTATION,
    CEILING_ANNOTATIONS,
    DEFERRABLE_ANNOTATION,
    GPU_RESOURCE,
    KSERVE_ISVC_LABEL,
    PRIORITY_ANNOTATION,
    USER_MAX_ANNOTATION,
)

NAMESPACE_INDEX = "namespace"
KEDA_DEFAULT_MIN = 0
KEDA_DEFAULT_MAX = 100
KSERVE_DEFAULT_MIN = 1
DEFAULT_PRIORITY = 0
DEFAULT_DEFERRABLE = False


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """One capped workload: the object whose ceiling is written and the pods that serve it."""

    kind: TargetKind
    """ScaledObject, or InferenceService when KServe owns the scaling."""
    name: str
    namespace: str
    min_replicas: int
    applied_max_replicas: int
    user_max_replicas: int
    current_replicas: int
    pods: tuple[str, ...]
    pod_nodes: tuple[str, ...]
    """The node of each pod in `pods` ('' while unscheduled)."""
    obj: JsonObject
    """The cached object the ceiling lives on."""
    limited_by_ceiling: bool | None = None
    """KEDA's HPA says it wants more replicas than the ceiling (`ScalingLimited`,
    `TooManyReplicas`); None when no HPA reports on it."""
    priority: int = DEFAULT_PRIORITY
    """From `climatik-project.ai/priority`: a higher priority keeps its replicas first."""
    deferrable: bool = DEFAULT_DEFERRABLE
    """From `climatik-project.ai/deferrable`: its work may wait, so it yields to a carbon cap."""
    deadline_s: float | None = None
    """From a duration in `climatik-project.ai/deferrable` ("24h"): each request's deadline
    after arrival; its work is then planned into clean slots instead of capped."""
    annotation_problems: tuple[str, ...] = ()
    """Annotations that did not parse (the defaults are used instead), for Events and status."""
    copied_to_pods: str | None = None
    """Why writing this target's ceiling restarts its pods (KServe copying Climatik's annotations
    into the predictor's pod template), or None."""
    newest_pod_created_s: float | None = None
    """When the youngest of `pods` was created (wall clock); None when no pod says."""
    gpu_pods: tuple[str, ...] = ()
    """Those of `pods` whose containers request or limit `nvidia.com/gpu`: their power is
    mostly GPU power, which the measurement preset must see."""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Resolution:
    targets: tuple[ResolvedTarget, ...]
    missing: tuple[str, ...]
    """Human descriptions of references that point at nothing."""


def _owner(obj: JsonObject, kind: str) -> str | None:
    for ref in ObjectMeta.of(obj).owner_references:
        if ref.get("kind") == kind:
            return str(ref.get("name"))
    return None


def _int(value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        return int(value)
    except ValueError:
        return default


def ceiling_of(obj: JsonObject, kind: TargetKind) -> int | None:
    """The ceiling in force on a ScaledObject (KEDA's default 100 when unset) or an
    InferenceService (None when unset: KServe then leaves it to its ScaledObject)."""
    spec = child(obj, "spec")
    if kind is TargetKind.INFERENCE_SERVICE:
        return _int(child(spec, "predictor").get("maxReplicas"), 0) or None
    return _int(spec.get("maxReplicaCount"), KEDA_DEFAULT_MAX)


def _user_max(obj: JsonObject, applied: int) -> int:
    """The user's own ceiling: the one remembered while Climatik holds a lower one, unless the
    ceiling in force is not the one Climatik last wrote, in which case someone changed it during
    the cap and the new value is the user's (lowering their max mid-cap must not be undone)."""
    annotations = ObjectMeta.of(obj).annotations
    written = annotations.get(APPLIED_MAX_ANNOTATION)
    if written is not None and _int(written, applied) != applied:
        return applied
    remembered = _int(annotations.get(USER_MAX_ANNOTATION), -1)
    return remembered if remembered >= 0 else applied


def user_max_of(obj: JsonObject, kind: TargetKind) -> int | None:
    """The ceiling to give back to an object Climatik capped (None when none is known)."""
    applied = ceiling_of(obj, kind)
    if applied is None:
        remembered = _int(ObjectMeta.of(obj).annotations.get(USER_MAX_ANNOTATION), -1)
        return remembered if remembered >= 0 else None
    return _user_max(obj, applied)


def _describe(obj: JsonObject, kind: TargetKind) -> str:
    meta = ObjectMeta.of(obj)
    return f"{kind} {meta.namespace}/{meta.name}"


def priority_of(obj: JsonObject, kind: TargetKind) -> tuple[int, str | None]:
    """The user's priority for a target and, when the annotation does not parse, why.

    Only a plain integer counts ("2", "-1"); anything else ("high", "1.5", "") keeps the default
    rather than guessing, so a typo cannot quietly promote batch work over serving.
    """
    raw = ObjectMeta.of(obj).annotations.get(PRIORITY_ANNOTATION)
    if raw is None:
        return DEFAULT_PRIORITY, None
    text = str(raw).strip()
    digits = text[1:] if text[:1] in {"+", "-"} else text
    if digits.isascii() and digits.isdigit() and len(digits) <= 9:
        return int(text), None
    return DEFAULT_PRIORITY, (
        f"{_describe(obj, kind)}: annotation {PRIORITY_ANNOTATION}={str(raw)[:64]!r} is not an "
        f"integer of at most 9 digits; using priority {DEFAULT_PRIORITY}"
    )


class Deferrable(NamedTuple):
    """What `climatik-project.ai/deferrable` says of a target's work."""

    deferrable: bool
    deadline_s: float | None
    """Each request's deadline after its arrival (a duration value); None for "true"/"false"."""
    problem: str | None
    """Why the value was not understood (the default is used instead)."""


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(h|m|s)")
_DURATION_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0}
MIN_DEADLINE_S = 60.0
"""A shorter deadline is not deferrable work: it cannot wait for a carbon slot."""


def parse_deadline_s(text: str) -> float | None:
    """Seconds in a Go-style duration of hours, minutes and seconds ("24h", "1h30m", "90m",
    "2.5h"); None when it is not one."""
    position, total = 0, 0.0
    while position < len(text):
        part = _DURATION_PART.match(text, position)
        if part is None:
            return None
        total += float(part.group(1)) * _DURATION_UNIT_S[part.group(2)]
        position = part.end()
    return total if text and math.isfinite(total) else None


def deferrable_of(obj: JsonObject, kind: TargetKind) -> Deferrable:
    """Whether a target's work may wait for a cleaner grid, and by how long.

    "true"/"false" in any case: deferrable (a carbon cap holds it back) or not. A Go-style
    duration of at least a minute ("24h", "6h30m"): deferrable, each request due that long
    after it arrives, so the carbon reconciler plans the work into the cleanest forecast slots
    before its deadlines. Anything else keeps the default (not deferrable) and is reported, so
    a typo never lets carbon hold back serving work."""
    raw = ObjectMeta.of(obj).annotations.get(DEFERRABLE_ANNOTATION)
    if raw is None:
        return Deferrable(DEFAULT_DEFERRABLE, None, None)
    text = str(raw).strip().lower()
    if text in {"true", "false"}:
        return Deferrable(text == "true", None, None)
    deadline_s = parse_deadline_s(text)
    if deadline_s is not None and deadline_s >= MIN_DEADLINE_S:
        return Deferrable(True, deadline_s, None)
    return Deferrable(
        DEFAULT_DEFERRABLE,
        None,
        f"{_describe(obj, kind)}: annotation {DEFERRABLE_ANNOTATION}={str(raw)[:64]!r} is not "
        f'"true", "false" or a deadline of at least {MIN_DEADLINE_S:.0f} s such as "24h" or '
        f'"6h30m"; using {str(DEFAULT_DEFERRABLE).lower()}',
    )


@dataclass(frozen=True, slots=True)
class _UserIntent:
    """The `ResolvedTarget` fields the user's annotations set."""

    priority: int
    deferrable: bool
    deadline_s: float | None
    problems: tuple[str, ...]


def _user_intent(obj: JsonObject, kind: TargetKind) -> _UserIntent:
    priority, priority_problem = priority_of(obj, kind)
    deferrable = deferrable_of(obj, kind)
    problems = tuple(p for p in (priority_problem, deferrable.problem) if p is not None)
    return _UserIntent(priority, deferrable.deferrable, deferrable.deadline_s, problems)


def _selector_matches(selector: JsonObject, labels: JsonObject) -> bool:
    """Deployment-style selector (matchLabels only is what Deployments use in practice)."""
    if not selector:
        return False
    match_labels = child(selector, "matchLabels")
    expressions = items(selector, "matchExpressions")
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expression in expressions:
        if not isinstance(expression, Mapping):
            return False  # not a requirement we can read: match nothing rather than more
        key, operator = text(expression, "key") or "", expression.get("operator")
        values = items(expression, "values")
        present = key in labels
        if (
            (operator == "In" and (not present or labels[key] not in values))
            or (operator == "NotIn" and present and labels[key] in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def _serving_pods(pods: Iterable[JsonObject], match: Callable[[JsonObject], bool]) -> _ServingPods:
    chosen = sorted(
        (
            pod
            for pod in pods
            if match(labels_of(pod))
            and not ObjectMeta.of(pod).deletion_timestamp
            and child(pod, "status").get("phase") not in {"Succeeded", "Failed"}
        ),
        key=lambda pod: str(ObjectMeta.of(pod).name),
    )
    names = tuple(str(ObjectMeta.of(p).name) for p in chosen)
    nodes = tuple(str(child(p, "spec").get("nodeName") or "") for p in chosen)
    created = [_timestamp_s(ObjectMeta.of(p).creation_timestamp) for p in chosen]
    known = [c for c in created if c is not None]
    gpu_pods = tuple(str(ObjectMeta.of(p).name) for p in chosen if requests_gpu(p))
    return _ServingPods(names, nodes, max(known) if known else None, gpu_pods)


class _ServingPods(NamedTuple):
    names: tuple[str, ...]
    nodes: tuple[str, ...]
    newest_created_s: float | None
    gpu_pods: tuple[str, ...]


def requests_gpu(pod: JsonObject) -> bool:
    """Whether a container of `pod` requests or limits `nvidia.com/gpu` (an extended resource
    needs at least one of the two; a count that does not parse still counts as asking)."""
    for container in objects(child(pod, "spec"), "containers"):
        resources = child(container, "resources")
        for amounts in (child(resources, "requests"), child(resources, "limits")):
            count = amounts.get(GPU_RESOURCE)
            if count is not None and _int(count, 1) > 0:
                return True
    return False


def _timestamp_s(raw: object) -> float | None:
    """An RFC 3339 timestamp as the API server writes it, in seconds; None if unreadable."""
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        return None


def _deployment_replicas(deployment: JsonObject | None, pods: Sequence[str]) -> int:
    if deployment is None:
        return len(pods)
    return _int(child(deployment, "status").get("replicas"), len(pods))


def hpa_name(scaled_object: JsonObject) -> str:
    """The HPA KEDA keeps for a ScaledObject (`keda-hpa-<name>` unless the spec renames it)."""
    advanced = child(child(scaled_object, "spec"), "advanced")
    custom = child(advanced, "horizontalPodAutoscalerConfig").get("name")
    return str(custom) if custom else f"keda-hpa-{ObjectMeta.of(scaled_object).name}"


def limited_by_ceiling(hpa: JsonObject | None) -> bool | None:
    """Whether an HPA is held by its maxReplicas, from its `ScalingLimited` condition."""
    if hpa is None:
        return None
    for condition in objects(child(hpa, "status"), "conditions"):
        if condition.get("type") == "ScalingLimited":
            return bool(
                condition.get("status") == "True" and condition.get("reason") == "TooManyReplicas"
            )
    return None


def _from_scaled_object(
    so: JsonObject,
    deployments: Mapping[str, JsonObject],
    pods: Sequence[JsonObject],
    hpas: Mapping[str, JsonObject],
) -> ResolvedTarget:
    spec = child(so, "spec")
    applied = _int(spec.get("maxReplicaCount"), KEDA_DEFAULT_MAX)
    ref = child(spec, "scaleTargetRef")
    deployment = deployments.get(str(ref.get("name")))
    selector = child(child(deployment or EMPTY, "spec"), "selector")
    serving = _serving_pods(pods, lambda labels: _selector_matches(selector, labels))
    intent = _user_intent(so, TargetKind.SCALED_OBJECT)
    return ResolvedTarget(
        kind=TargetKind.SCALED_OBJECT,
        name=str(ObjectMeta.of(so).name),
        namespace=str(ObjectMeta.of(so).namespace),
        min_replicas=_int(spec.get("minReplicaCount"), KEDA_DEFAULT_MIN),
        applied_max_replicas=applied,
        user_max_replicas=max(_user_max(so, applied), _int(spec.get("minReplicaCount"), 0)),
        current_replicas=_deployment_replicas(deployment, serving.names),
        pods=serving.names,
        pod_nodes=serving.nodes,
        newest_pod_created_s=serving.newest_created_s,
        gpu_pods=serving.gpu_pods,
        obj=so,
        limited_by_ceiling=limited_by_ceiling(hpas.get(hpa_name(so))),
        priority=intent.priority,
        deferrable=intent.deferrable,
        deadline_s=intent.deadline_s,
        annotation_problems=intent.problems,
    )


def _copied_to_pods(isvc: JsonObject, predictor: JsonObject | None) -> str | None:
    """Whether KServe copied Climatik's annotations from `isvc` into its predictor's pod
    template: then each ceiling write changes the template and rolls every predictor pod."""
    template = child(child(child(predictor or EMPTY, "spec"), "template"), "metadata")
    copied = sorted(set(CEILING_ANNOTATIONS) & set(child(template, "annotations")))
    if not copied:
        return None
    return (
        f"{_describe(isvc, TargetKind.INFERENCE_SERVICE)}: KServe copies Climatik's annotations "
        f"({', '.join(copied)}) into the predictor's pod template, so each ceiling change "
        f"restarts its pods; add {', '.join(CEILING_ANNOTATIONS)} to "
        "serviceAnnotationDisallowedList in the inferenceService entry of KServe's "
        "inferenceservice-config ConfigMap "
        "(docs/power-capping.md)"
    )


def _from_inference_service(
    isvc: JsonObject,
    scaled_objects: Mapping[str, JsonObject],
    deployments: Mapping[str, JsonObject],
    pods: Sequence[JsonObject],
    hpas: Mapping[str, JsonObject],
) -> ResolvedTarget:
    name = str(ObjectMeta.of(isvc).name)
    predictor = child(child(isvc, "spec"), "predictor")
    so = scaled_objects.get(f"{name}-predictor")
    so_max = _int(child(so or EMPTY, "spec").get("maxReplicaCount"), KEDA_DEFAULT_MAX)
    applied = _int(predictor.get("maxReplicas"), 0) or so_max
    minimum = _int(predictor.get("minReplicas"), KSERVE_DEFAULT_MIN)
    serving = _serving_pods(pods, lambda labels: labels.get(KSERVE_ISVC_LABEL) == name)
    intent = _user_intent(isvc, TargetKind.INFERENCE_SERVICE)
    predictor_deployment = deployments.get(f"{name}-predictor")
    return ResolvedTarget(
        kind=TargetKind.INFERENCE_SERVICE,
        name=name,
        namespace=str(ObjectMeta.of(isvc).namespace),
        min_replicas=minimum,
        applied_max_replicas=applied,
        user_max_replicas=max(_user_max(isvc, applied), minimum),
        current_replicas=_deployment_replicas(predictor_deployment, serving.names),
        pods=serving.names,
        pod_nodes=serving.nodes,
        newest_pod_created_s=serving.newest_created_s,
        gpu_pods=serving.gpu_pods,
        obj=isvc,
        limited_by_ceiling=limited_by_ceiling(
            hpas.get(hpa_name(so) if so is not None else f"keda-hpa-{name}-predictor")
        ),
        priority=intent.priority,
        deferrable=intent.deferrable,
        deadline_s=intent.deadline_s,
        annotation_problems=intent.problems,
        copied_to_pods=_copied_to_pods(isvc, predictor_deployment),
    )


def _matches(selector: LabelSelector, obj: JsonObject) -> bool:
    return selector.matches(labels_of(obj))


@dataclass(frozen=True, slots=True)
class NamespaceObjects:
    """One namespace's cached objects by name (pods as a list): what every config of the
    namespace resolves its targets in, built once per change of the namespace."""

    scaled_objects: Mapping[str, JsonObject]
    inference_services: Mapping[str, JsonObject]
    deployments: Mapping[str, JsonObject]
    hpas: Mapping[str, JsonObject]
    pods: Sequence[JsonObject]

    @classmethod
    def of(
        cls,
        namespace: str,
        *,
        scaled_objects: Iterable[JsonObject],
        inference_services: Iterable[JsonObject],
        deployments: Iterable[JsonObject],
        pods: Iterable[JsonObject],
        hpas: Iterable[JsonObject] = (),
    ) -> NamespaceObjects:
        def local(objs: Iterable[JsonObject]) -> dict[str, JsonObject]:
            found: dict[str, JsonObject] = {}
            for o in objs:
                meta = child(o, "metadata")
                if meta.get("namespace") == namespace:
                    found[str(meta.get("name"))] = o
            return found

        return cls(
            local(scaled_objects),
            local(inference_services),
            local(deployments),
            local(hpas),
            tuple(local(pods).values()),
        )


def resolve_targets(
    config: PowerCappingConfig,
    *,
    scaled_objects: Iterable[JsonObject],
    inference_services: Iterable[JsonObject],
    deployments: Iterable[JsonObject],
    pods: Iterable[JsonObject],
    hpas: Iterable[JsonObject] = (),
) -> Resolution:
    """The targets of `config` among the cached objects of its namespace."""
    return resolve_in(
        config,
        NamespaceObjects.of(
            config.namespace,
            scaled_objects=scaled_objects,
            inference_services=inference_services,
            deployments=deployments,
            pods=pods,
            hpas=hpas,
        ),
    )


def resolve_in(config: PowerCappingConfig, objects: NamespaceObjects) -> Resolution:
    """The targets of `config` among `objects`, its namespace's."""
    namespace = config.namespace
    sos, isvcs, deps = objects.scaled_objects, objects.inference_services, objects.deployments
    autoscalers = objects.hpas
    pod_list = objects.pods
    wanted_sos: dict[str, None] = {}
    wanted_isvcs: dict[str, None] = {}
    missing: list[str] = []

    for ref in config.targets:
        if ref.kind is TargetKind.DEPLOYMENT:
            continue  # `deploymentName`: its ScaledObjects are found by scaleTargetRef below
        if ref.kind is TargetKind.INFERENCE_SERVICE:
            if ref.name in isvcs:
                wanted_isvcs[ref.name] = None
            else:
                missing.append(f"InferenceService {namespace}/{ref.name} not found")
        elif ref.name in sos:
            wanted_sos[ref.name] = None
        else:
            missing.append(f"ScaledObject {namespace}/{ref.name} not found")
    if config.deployment_name:
        found = [
            name
            for name, so in sos.items()
            if child(child(so, "spec"), "scaleTargetRef").get("name") == config.deployment_name
        ]
        if not found:
            missing.append(
                f"no ScaledObject in {namespace} scales Deployment {config.deployment_name}"
            )
        wanted_sos.update(dict.fromkeys(found))
    if config.target_selector is not None:
        wanted_sos.update(
            dict.fromkeys(n for n, o in sos.items() if _matches(config.target_selector, o))
        )
        wanted_isvcs.update(
            dict.fromkeys(n for n, o in isvcs.items() if _matches(config.target_selector, o))
        )

    # A ScaledObject that KServe owns is capped through its InferenceService.
    for name in list(wanted_sos):
        owner = _owner(sos[name], INFERENCE_SERVICES.kind)
        if owner is not None:
            del wanted_sos[name]
            if owner in isvcs:
                wanted_isvcs[owner] = None
            else:
                missing.append(f"InferenceService {namespace}/{owner} owning {name} not found")

    targets = [_from_scaled_object(sos[n], deps, pod_list, autoscalers) for n in sorted(wanted_sos)]
    targets += [
        _from_inference_service(isvcs[n], sos, deps, pod_list, autoscalers)
        for n in sorted(wanted_isvcs)
    ]
    return Resolution(tuple(targets), tuple(missing))


@dataclass(frozen=True, slots=True)
class WorkloadCaches:
    """The informer caches a config's targets are resolved from (shared by the reconcilers)."""

    scaled_objects: Cache[FrozenMapping]
    inference_services: Cache[FrozenMapping]
    deployments: Cache[FrozenMapping]
    pods: Cache[FrozenMapping]
    hpas: Cache[FrozenMapping] | None = None
    """KEDA's HPAs; only the power-cap reconciler needs them (None: not watched)."""
    _resolved: dict[str, tuple[tuple[PowerCappingConfig, tuple[int, ...]], Resolution]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Per config key: the resolution and what it was resolved from (the config and the
    namespace's version in every cache), kept while neither changes."""
    _namespaces: dict[str, tuple[tuple[int, ...], NamespaceObjects]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Per namespace: its objects by name, and the namespace version they were read at."""

    def __post_init__(self) -> None:
        # A config reads only its own namespace: with thousands of configs, scanning every
        # cached object per reconcile would make a round quadratic.
        for informer in self._informers():
            informer.store.add_indexer(NAMESPACE_INDEX, index_by_namespace)

    def _informers(self) -> tuple[Cache[FrozenMapping], ...]:
        caches = (self.scaled_objects, self.inference_services, self.deployments, self.pods)
        return (*caches, self.hpas) if self.hpas is not None else caches

    def resolve(self, config: PowerCappingConfig) -> Resolution:
        """The targets of `config` as the caches see them now.

        A config is reconciled every interval, and its namespace mostly has not changed since:
        the last resolution is reused until the config or any object of its namespace in these
        caches changes (at 5,000 configs, resolving afresh was a third of the controller's time).
        """
        version = self.namespace_version(config.namespace)
        stamp = (config, version)
        kept = self._resolved.get(config.key)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        resolution = self._resolve(config, version)
        self._resolved[config.key] = (stamp, resolution)
        return resolution

    def namespace_version(self, namespace: str) -> tuple[int, ...]:
        """Changes whenever an object of `namespace` changes in any of these caches: anything
        derived from them for one namespace may be kept while it stays the same."""
        return tuple(i.store.index_version(NAMESPACE_INDEX, namespace) for i in self._informers())

    def forget(self, config_key: str) -> None:
        """Drop what was kept for a config that is gone (and its namespace's objects, when it
        was the namespace's last config). Reconcilers call this on every reconcile of a config
        they stand aside for, so a config never resolved here costs a dict lookup, not a scan."""
        if self._resolved.pop(config_key, None) is None:
            return
        namespace = config_key.partition("/")[0]
        if not any(key.partition("/")[0] == namespace for key in self._resolved):
            self._namespaces.pop(namespace, None)

    def _resolve(self, config: PowerCappingConfig, version: tuple[int, ...]) -> Resolution:
        return resolve_in(config, self._objects(config.namespace, version))

    def _objects(self, namespace: str, version: tuple[int, ...]) -> NamespaceObjects:
        """The namespace's objects by name, built once per change of the namespace: its many
        configs share them (fifty configs of a namespace each scanning its objects made one
        pod's change cost fifty scans)."""
        kept = self._namespaces.get(namespace)
        if kept is not None and kept[0] == version:
            return kept[1]

        def local(informer: Cache[FrozenMapping]) -> list[JsonObject]:
            return list(informer.store.by_index(NAMESPACE_INDEX, namespace))

        objects = NamespaceObjects.of(
            namespace,
            scaled_objects=local(self.scaled_objects),
            inference_services=local(self.inference_services),
            deployments=local(self.deployments),
            pods=local(self.pods),
            hpas=local(self.hpas) if self.hpas is not None else (),
        )
        self._namespaces[namespace] = (version, objects)
        return objects
