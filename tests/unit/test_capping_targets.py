"""Target resolution and ceiling patches of the power-cap reconciler (pure parts)."""

from __future__ import annotations

from typing import Any

import pytest

from climatik.api.convert import config_from_object
from climatik.domain.config import (
    LabelSelector,
    PowerCappingConfig,
    TargetKind,
    TargetRef,
)
from climatik.kube.resources import INFERENCE_SERVICES, SCALED_OBJECTS
from climatik.kube.store import Store
from climatik.reconcilers.actuation import ceiling_patch, restore_patch
from climatik.reconcilers.resources import (
    APPLIED_MAX_ANNOTATION,
    CAPPED_BY_ANNOTATION,
    DEFERRABLE_ANNOTATION,
    PRIORITY_ANNOTATION,
    USER_MAX_ANNOTATION,
)
from climatik.reconcilers.targets import WorkloadCaches, resolve_targets
from tests.json_paths import dig

NS = "serving"


def scaled_object(
    name: str,
    deployment: str,
    *,
    min_replicas: int | None = 1,
    max_replicas: int | None = 10,
    labels: dict[str, str] | None = None,
    owner_isvc: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"scaleTargetRef": {"name": deployment}}
    if min_replicas is not None:
        spec["minReplicaCount"] = min_replicas
    if max_replicas is not None:
        spec["maxReplicaCount"] = max_replicas
    meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": labels or {}}
    if owner_isvc:
        meta["ownerReferences"] = [{"kind": "InferenceService", "name": owner_isvc}]
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}


def deployment(name: str, app: str, replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": app}}},
        "status": {"replicas": replicas},
    }


def pod(name: str, labels: dict[str, str], node: str = "n1", **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "labels": labels, **extra}
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {"phase": "Running"}}


def config(**fields: Any) -> PowerCappingConfig:
    return PowerCappingConfig(namespace=NS, name="cap", generation=1, power_cap_w=1000, **fields)


def resolve(cfg: PowerCappingConfig, **objects: list[dict[str, Any]]) -> Any:
    return resolve_targets(
        cfg,
        scaled_objects=objects.get("sos", []),
        inference_services=objects.get("isvcs", []),
        deployments=objects.get("deps", []),
        pods=objects.get("pods", []),
        hpas=objects.get("hpas", []),
    )


def test_explicit_ref_resolves_pods_replicas_and_keda_defaults() -> None:
    so = scaled_object("llm-so", "llm", min_replicas=None, max_replicas=None)
    pods = [
        pod("llm-1", {"app": "llm"}, node="a"),
        pod("llm-2", {"app": "llm"}, node="b"),
        pod("other", {"app": "x"}),
        pod("dying", {"app": "llm"}, deletionTimestamp="2026-01-01T00:00:00Z"),
    ]
    result = resolve(
        config(targets=(TargetRef(TargetKind.SCALED_OBJECT, "llm-so"),)),
        sos=[so],
        deps=[deployment("llm", "llm", 2)],
        pods=pods,
    )
    assert result.missing == ()
    (target,) = result.targets
    assert (target.kind, target.name, target.min_replicas, target.applied_max_replicas) == (
        TargetKind.SCALED_OBJECT,
        "llm-so",
        0,
        100,
    )
    assert target.pods == ("llm-1", "llm-2")
    assert target.pod_nodes == ("a", "b")
    assert target.current_replicas == 2
    assert target.newest_pod_created_s is None  # no pod says when it was created


def test_the_youngest_serving_pod_says_when_new_samples_may_still_be_coming() -> None:
    pods = [
        pod("llm-1", {"app": "llm"}, creationTimestamp="2026-12-05T17:00:00Z"),
        pod("llm-2", {"app": "llm"}, creationTimestamp="2026-12-05T17:53:43Z"),
        pod("llm-3", {"app": "llm"}, creationTimestamp="not a time"),
        pod(
            "gone", {"app": "llm"}, creationTimestamp="2026-12-05T18:00:00Z", deletionTimestamp="x"
        ),
    ]
    result = resolve(
        config(targets=(TargetRef(TargetKind.SCALED_OBJECT, "llm-so"),)),
        sos=[scaled_object("llm-so", "llm")],
        deps=[deployment("llm", "llm", 3)],
        pods=pods,
    )
    (target,) = result.targets
    assert target.newest_pod_created_s == 1796493223.0  # 2026-12-05T17:53:43Z


def test_deployment_name_finds_its_scaled_object_and_user_max_comes_from_the_annotation() -> None:
    so = scaled_object("so", "llm", max_replicas=4, annotations={USER_MAX_ANNOTATION: "12"})
    result = resolve(config(deployment_name="llm"), sos=[so], deps=[deployment("llm", "llm", 4)])
    (target,) = result.targets
    assert (target.applied_max_replicas, target.user_max_replicas) == (4, 12)


def test_missing_references_are_reported_not_raised() -> None:
    result = resolve(
        config(
            targets=(
                TargetRef(TargetKind.SCALED_OBJECT, "gone"),
                TargetRef(TargetKind.INFERENCE_SERVICE, "also-gone"),
            ),
            deployment_name="nothing",
        )
    )
    assert result.targets == ()
    assert "ScaledObject serving/gone not found" in result.missing
    assert "InferenceService serving/also-gone not found" in result.missing


def test_kserve_owned_scaled_object_is_capped_through_its_inference_service() -> None:
    so = scaled_object("chat-predictor", "chat-predictor", owner_isvc="chat", max_replicas=8)
    isvc = {
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {"predictor": {"minReplicas": 2, "maxReplicas": 8}},
    }
    pods = [pod("chat-1", {"serving.kserve.io/inferenceservice": "chat"})]
    result = resolve(
        config(targets=(TargetRef(TargetKind.SCALED_OBJECT, "chat-predictor"),)),
        sos=[so],
        isvcs=[isvc],
        pods=pods,
    )
    (target,) = result.targets
    assert (target.kind, target.name, target.min_replicas, target.applied_max_replicas) == (
        TargetKind.INFERENCE_SERVICE,
        "chat",
        2,
        8,
    )
    assert target.pods == ("chat-1",)


def test_selector_matches_labels_and_ignores_other_namespaces() -> None:
    mine = scaled_object("a", "a", labels={"team": "llm"})
    theirs = scaled_object("b", "b", labels={"team": "llm"})
    theirs["metadata"]["namespace"] = "elsewhere"
    unrelated = scaled_object("c", "c", labels={"team": "web"})
    selector = LabelSelector(match_labels=(("team", "llm"),))
    result = resolve(config(target_selector=selector), sos=[mine, theirs, unrelated])
    assert [t.name for t in result.targets] == ["a"]


def test_lowering_remembers_the_user_max_and_restoring_forgets_it() -> None:
    (target,) = resolve(
        config(deployment_name="llm"), sos=[scaled_object("so", "llm", min_replicas=2)]
    ).targets
    resource, patch = ceiling_patch(target, 5, "serving/cap")
    assert resource == SCALED_OBJECTS
    assert patch == {
        "metadata": {
            "annotations": {
                USER_MAX_ANNOTATION: "10",
                APPLIED_MAX_ANNOTATION: "5",
                CAPPED_BY_ANNOTATION: "serving/cap",
            }
        },
        "spec": {"maxReplicaCount": 5},
    }
    _, below_min = ceiling_patch(target, 0, "serving/cap")
    assert dig(below_min, "spec", "maxReplicaCount") == 2  # never below minReplicaCount
    _, restored = ceiling_patch(target, 10, "serving/cap")
    assert restored == {
        "metadata": {
            "annotations": {
                USER_MAX_ANNOTATION: None,
                APPLIED_MAX_ANNOTATION: None,
                CAPPED_BY_ANNOTATION: None,
            }
        },
        "spec": {"maxReplicaCount": 10},
    }


def test_every_ceiling_write_is_conditional_on_the_version_it_was_decided_on() -> None:
    so = scaled_object("so", "llm")
    so["metadata"]["resourceVersion"] = "4711"
    (target,) = resolve(config(deployment_name="llm"), sos=[so]).targets
    for ceiling in (3, 10):
        _, patch = ceiling_patch(target, ceiling, "serving/cap")
        assert dig(patch, "metadata", "resourceVersion") == "4711"
    restore = restore_patch(
        {
            **so,
            "metadata": {
                **so["metadata"],
                "annotations": {USER_MAX_ANNOTATION: "10", CAPPED_BY_ANNOTATION: "serving/cap"},
            },
        },
        TargetKind.SCALED_OBJECT,
    )
    assert restore is not None
    assert dig(restore, "metadata", "resourceVersion") == "4711"


def test_a_ceiling_changed_by_the_user_during_a_cap_becomes_their_max() -> None:
    """Capped at 4 from 10, the user lowers the ceiling to 2: releasing must not restore 10."""
    annotations = {USER_MAX_ANNOTATION: "10", APPLIED_MAX_ANNOTATION: "4"}
    edited = scaled_object("so", "llm", max_replicas=2, annotations=annotations)
    (target,) = resolve(config(deployment_name="llm"), sos=[edited]).targets
    assert (target.applied_max_replicas, target.user_max_replicas) == (2, 2)
    _, release = ceiling_patch(target, 10, "serving/cap")
    assert dig(release, "spec", "maxReplicaCount") == 2
    restore = restore_patch(edited, TargetKind.SCALED_OBJECT)
    assert restore is not None
    assert dig(restore, "spec", "maxReplicaCount") == 2
    # Untouched since Climatik wrote it: the remembered max still counts.
    untouched = scaled_object("so", "llm", max_replicas=4, annotations=annotations)
    (target,) = resolve(config(deployment_name="llm"), sos=[untouched]).targets
    assert target.user_max_replicas == 10


def test_deployment_name_with_a_differently_named_scaled_object_is_not_missing() -> None:
    """`deploymentName` resolves through scaleTargetRef; it is not a ScaledObject's name."""
    obj = {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {"name": "cap", "namespace": NS, "generation": 1},
        "spec": {"powerCapLimit": 1000, "deploymentName": "llm"},
    }
    cfg = config_from_object(obj)
    result = resolve(cfg, sos=[scaled_object("llm-autoscaler", "llm")])
    assert result.missing == ()
    assert [t.name for t in result.targets] == ["llm-autoscaler"]
    assert resolve(cfg, sos=[]).missing == (f"no ScaledObject in {NS} scales Deployment llm",)


def test_inference_service_ceiling_goes_to_the_predictor() -> None:
    isvc = {
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {"predictor": {"maxReplicas": 6}},
    }
    (target,) = resolve(
        config(targets=(TargetRef(TargetKind.INFERENCE_SERVICE, "chat"),)), isvcs=[isvc]
    ).targets
    resource, patch = ceiling_patch(target, 3, "serving/cap")
    assert resource == INFERENCE_SERVICES
    assert patch["spec"] == {"predictor": {"maxReplicas": 3}}


@pytest.mark.parametrize("kind", [TargetKind.SCALED_OBJECT, TargetKind.INFERENCE_SERVICE])
def test_restore_patch_uses_the_remembered_user_max(kind: TargetKind) -> None:
    held = {"metadata": {"annotations": {USER_MAX_ANNOTATION: "9", CAPPED_BY_ANNOTATION: "x/y"}}}
    patch = restore_patch(held, kind)
    assert patch is not None
    value = (
        dig(patch, "spec", "predictor", "maxReplicas")
        if kind is TargetKind.INFERENCE_SERVICE
        else dig(patch, "spec", "maxReplicaCount")
    )
    assert value == 9
    assert restore_patch({"metadata": {}}, kind) is None


def hpa(name: str, status: str | None, reason: str = "TooManyReplicas") -> dict[str, Any]:
    conditions = (
        [] if status is None else [{"type": "ScalingLimited", "status": status, "reason": reason}]
    )
    return {"metadata": {"name": name, "namespace": NS}, "status": {"conditions": conditions}}


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [("True", "TooManyReplicas", True), ("True", "TooFewReplicas", False), ("False", "X", False)],
)
def test_keda_hpa_says_whether_the_ceiling_holds_the_autoscaler(
    status: str, reason: str, expected: bool
) -> None:
    so = scaled_object("llm", "llm")
    (target,) = resolve(
        config(deployment_name="llm"), sos=[so], hpas=[hpa("keda-hpa-llm", status, reason)]
    ).targets
    assert target.limited_by_ceiling is expected


def test_no_hpa_or_a_renamed_one_is_handled() -> None:
    so = scaled_object("llm", "llm")
    (unknown,) = resolve(config(deployment_name="llm"), sos=[so]).targets
    assert unknown.limited_by_ceiling is None
    so["spec"]["advanced"] = {"horizontalPodAutoscalerConfig": {"name": "custom"}}
    (renamed,) = resolve(
        config(deployment_name="llm"), sos=[so], hpas=[hpa("custom", "True")]
    ).targets
    assert renamed.limited_by_ceiling is True


# -- the user's priority and deferrable annotations ---------------------------------------------


def isvc_with(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "namespace": NS, "annotations": annotations},
        "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 4}},
    }


def so_with(annotations: dict[str, str]) -> dict[str, Any]:
    return scaled_object("so", "llm", annotations=annotations)


def test_absent_annotations_keep_the_defaults_and_report_nothing() -> None:
    (target,) = resolve(config(deployment_name="llm"), sos=[so_with({})]).targets
    assert (target.priority, target.deferrable, target.annotation_problems) == (0, False, ())


@pytest.mark.parametrize(
    ("priority", "deferrable", "expected"),
    [
        ("2", "true", (2, True)),
        ("-1", "false", (-1, False)),
        (" +3 ", "TRUE", (3, True)),
        ("0", "False", (0, False)),
    ],
)
def test_valid_annotations_set_priority_and_deferrable(
    priority: str, deferrable: str, expected: tuple[int, bool]
) -> None:
    annotations = {PRIORITY_ANNOTATION: priority, DEFERRABLE_ANNOTATION: deferrable}
    (so_target,) = resolve(config(deployment_name="llm"), sos=[so_with(annotations)]).targets
    (isvc_target,) = resolve(
        config(targets=(TargetRef(TargetKind.INFERENCE_SERVICE, "chat"),)),
        isvcs=[isvc_with(annotations)],
    ).targets
    for target in (so_target, isvc_target):
        assert (target.priority, target.deferrable) == expected
        assert target.annotation_problems == ()


@pytest.mark.parametrize("bad", ["high", "1.5", "", "true", "1e3", "٣", "9999999999"])
def test_an_unparsable_priority_keeps_the_default_and_says_where(bad: str) -> None:
    annotations = {PRIORITY_ANNOTATION: bad, DEFERRABLE_ANNOTATION: "true"}
    (target,) = resolve(config(deployment_name="llm"), sos=[so_with(annotations)]).targets
    assert target.priority == 0
    assert target.deferrable is True, "the other annotation still counts"
    (problem,) = target.annotation_problems
    assert f"ScaledObject {NS}/so" in problem
    assert PRIORITY_ANNOTATION in problem
    assert repr(bad) in problem


@pytest.mark.parametrize("bad", ["yes", "1", "", "on", "truee"])
def test_an_unparsable_deferrable_is_not_deferrable_and_says_where(bad: str) -> None:
    annotations = {DEFERRABLE_ANNOTATION: bad, PRIORITY_ANNOTATION: "5"}
    (target,) = resolve(
        config(targets=(TargetRef(TargetKind.INFERENCE_SERVICE, "chat"),)),
        isvcs=[isvc_with(annotations)],
    ).targets
    assert target.deferrable is False
    assert target.priority == 5
    (problem,) = target.annotation_problems
    assert f"InferenceService {NS}/chat" in problem
    assert DEFERRABLE_ANNOTATION in problem


def test_kserve_annotations_are_read_from_the_inference_service_not_its_scaled_object() -> None:
    so = scaled_object(
        "chat-predictor",
        "chat-predictor",
        owner_isvc="chat",
        annotations={PRIORITY_ANNOTATION: "9", DEFERRABLE_ANNOTATION: "true"},
    )
    (target,) = resolve(
        config(targets=(TargetRef(TargetKind.SCALED_OBJECT, "chat-predictor"),)),
        sos=[so],
        isvcs=[isvc_with({PRIORITY_ANNOTATION: "1"})],
    ).targets
    assert (target.kind, target.priority, target.deferrable) == (
        TargetKind.INFERENCE_SERVICE,
        1,
        False,
    )


@pytest.mark.parametrize("disallowed", [True, False])
def test_kserve_copying_the_ceiling_annotations_into_the_predictors_pods_is_said(
    disallowed: bool,
) -> None:
    """KServe copies an InferenceService's annotations into its predictor's pod template unless
    its config disallows them; then every ceiling write restarts the predictor's pods."""
    written = {USER_MAX_ANNOTATION: "4", APPLIED_MAX_ANNOTATION: "2", CAPPED_BY_ANNOTATION: "x/y"}
    predictor = deployment("chat-predictor", "chat", 2)
    template_annotations = {"prometheus.io/scrape": "true"}
    if not disallowed:
        template_annotations |= written
    predictor["spec"]["template"] = {"metadata": {"annotations": template_annotations}}
    (target,) = resolve(
        config(targets=(TargetRef(TargetKind.INFERENCE_SERVICE, "chat"),)),
        isvcs=[isvc_with(written)],
        deps=[predictor],
    ).targets
    if disallowed:
        assert target.copied_to_pods is None
        return
    assert target.copied_to_pods is not None
    assert f"InferenceService {NS}/chat" in target.copied_to_pods
    assert "serviceAnnotationDisallowedList" in target.copied_to_pods
    assert "restarts its pods" in target.copied_to_pods


class _Informer:
    def __init__(self, *objs: dict[str, Any]) -> None:
        self.store = Store()
        for obj in objs:
            self.store.upsert(obj)


def test_a_resolution_is_kept_until_the_config_or_its_namespace_changes() -> None:
    """At 5,000 configs resolving every reconcile afresh was a third of the controller's time;
    a namespace that did not change needs no new resolution, and one that did always gets it."""
    so = scaled_object("so", "llm")
    pods = _Informer()
    caches = WorkloadCaches(
        _Informer(so), _Informer(), _Informer(deployment("llm", "llm", 1)), pods
    )
    cfg = config(deployment_name="llm")
    first = caches.resolve(cfg)
    assert caches.resolve(cfg) is first
    elsewhere = pod("x-1", {"app": "llm"})
    elsewhere["metadata"]["namespace"] = "other"
    pods.store.upsert(elsewhere)
    assert caches.resolve(cfg) is first  # another namespace moved, not this one
    pods.store.upsert(pod("llm-1", {"app": "llm"}))
    second = caches.resolve(cfg)
    assert second is not first
    assert second.targets[0].pods == ("llm-1",)
    other_spec = PowerCappingConfig(
        namespace=NS, name="cap", generation=2, power_cap_w=500, deployment_name="llm"
    )
    assert caches.resolve(other_spec) is not second
    caches.forget(cfg.key)
    assert caches.resolve(cfg) is not second


class _CountingStore(Store):
    """A store counting the namespace scans made of it."""

    scans = 0

    def by_index(self, index_name: str, value: str) -> list[Any]:
        self.scans += 1
        return super().by_index(index_name, value)


def test_the_configs_of_a_namespace_share_one_scan_of_it_per_change() -> None:
    """Fifty configs of one namespace each scanning it made one pod's change cost fifty scans
    (and at 5,000 configs most of a round); the namespace's objects are read once per change
    and every config resolves among them, to the same result as a scan of its own."""
    pods = _Informer()
    pods.store = _CountingStore()
    objs = [scaled_object(f"so-{i}", f"llm-{i}") for i in range(5)]
    deps = [deployment(f"llm-{i}", f"llm-{i}", 1) for i in range(5)]
    caches = WorkloadCaches(_Informer(*objs), _Informer(), _Informer(*deps), pods)
    for i in range(5):
        pods.store.upsert(pod(f"llm-{i}-a", {"app": f"llm-{i}"}))
    configs = [
        PowerCappingConfig(
            namespace=NS,
            name=f"cap-{i}",
            generation=1,
            power_cap_w=500,
            deployment_name=f"llm-{i}",
        )
        for i in range(5)
    ]
    for cfg in configs:
        caches.resolve(cfg)
    assert pods.store.scans == 1
    pods.store.upsert(pod("llm-3-b", {"app": "llm-3"}))
    resolutions = [caches.resolve(cfg) for cfg in configs]
    assert pods.store.scans == 2
    assert resolutions[3].targets[0].pods == ("llm-3-a", "llm-3-b")
    assert resolutions == [
        resolve_targets(
            cfg,
            scaled_objects=objs,
            inference_services=[],
            deployments=deps,
            pods=list(pods.store.objects()),
        )
        for cfg in configs
    ]
