"""The informers keep every field the reconcilers read, and nothing else they would miss.

The readers (target resolution, patches, event routing, placement's template patch, GPU
tuning's metrics URLs) run on objects that record every field they touch; a field read but
not in `cached_fields.py` fails here rather than turning into a silent default in production.
They also run on pruned objects, and must decide exactly as on whole ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from climatik.api.convert import config_from_object
from climatik.domain.config import TargetKind
from climatik.domain.placement import PlaceScore
from climatik.kube.fields import IDENTITY, KEEP, FieldFilter, Fields, keep_fields, union
from climatik.kube.store import FrozenMapping, Store, thaw
from climatik.reconcilers import placement_template
from climatik.reconcilers.actuation import ceiling_patch, restore_patch
from climatik.reconcilers.cached_fields import (
    DEPLOYMENT_FIELDS,
    HPA_FIELDS,
    INFERENCE_SERVICE_FIELDS,
    POD_FIELDS,
    SCALED_OBJECT_FIELDS,
)
from climatik.reconcilers.gpu_tuning import _metrics_urls
from climatik.reconcilers.placement import _running
from climatik.reconcilers.placement_migration import is_ready
from climatik.reconcilers.placement_template import template_patch
from climatik.reconcilers.replica_footprint import container_sizings, pod_requests
from climatik.reconcilers.targets import Resolution, resolve_targets
from climatik.runtime.capping import _what_deployments_read, _what_targets_read
from tests.unit import cluster_objects as objects

NS = "serving"
Path = tuple[str, ...]
WHOLE = "*"


# -- the mechanism ------------------------------------------------------------------------------


def test_keep_fields_prunes_objects_and_every_element_of_arrays() -> None:
    fields: Fields = {"a": {"b": KEEP}, "c": KEEP}
    value = {"a": [{"b": 1, "x": 2}, {"x": 3}], "c": {"d": [1]}, "e": 4}
    assert keep_fields(value, fields) == {"a": [{"b": 1}, {}], "c": {"d": [1]}}
    assert keep_fields({"a": "not an object"}, fields) == {"a": "not an object"}


def test_union_keeps_what_either_keeps_and_none_means_everything() -> None:
    assert union({"a": {"b": KEEP}}, {"a": {"c": KEEP}, "d": KEEP}) == {
        "a": {"b": KEEP, "c": KEEP},
        "d": KEEP,
    }
    assert union({"a": {"b": KEEP}}, {"a": KEEP}) == {"a": KEEP}
    assert union({"a": KEEP}, None) is None


def test_filter_keeps_identity_drops_managed_fields_and_widens_to_whole_objects() -> None:
    pod = objects.pod(NS, 1)
    pruned = FieldFilter({"status": {"phase": KEEP}})(objects.pod(NS, 1))
    assert pruned == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {k: pod["metadata"][k] for k in IDENTITY["metadata"]},  # type: ignore[union-attr]
        "status": {"phase": "Running"},
    }
    widened = FieldFilter({"status": {"phase": KEEP}})
    widened.widen(None)
    whole = widened(objects.pod(NS, 1))
    del pod["metadata"]["managedFields"]
    assert whole == pod


# -- recording readers --------------------------------------------------------------------------


class _Recorded(Mapping[str, Any]):
    """A JSON object that notes each field read; iterating or comparing reads it whole."""

    def __init__(self, data: Mapping[str, Any], path: Path, reads: set[Path]) -> None:
        self._data, self._path, self._reads = data, path, reads

    def _child(self, key: str) -> Any:
        self._reads.add((*self._path, key))
        return _recorded(self._data[key], (*self._path, key), self._reads)

    def __getitem__(self, key: str) -> Any:
        return self._child(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._child(key) if key in self else default

    def __contains__(self, key: object) -> bool:
        self._reads.add((*self._path, str(key)))
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        self._reads.add((*self._path, WHOLE))
        return iter(self._data)

    def __len__(self) -> int:
        # Truthiness (`x or {}`): a pruned object is still an object.
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        self._reads.add((*self._path, WHOLE))
        return dict(self._data) == (dict(other) if isinstance(other, Mapping) else other)

    __hash__ = None  # type: ignore[assignment]


class _RecordedList(Sequence[Any]):
    def __init__(self, data: Sequence[Any], path: Path, reads: set[Path]) -> None:
        self._data, self._path, self._reads = data, path, reads

    def __getitem__(self, index: Any) -> Any:
        return _recorded(self._data[index], self._path, self._reads)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        self._reads.add((*self._path, WHOLE))
        return list(self._data) == other

    __hash__ = None  # type: ignore[assignment]


def _recorded(value: Any, path: Path, reads: set[Path]) -> Any:
    if isinstance(value, Mapping):
        return _Recorded(value, path, reads)
    if isinstance(value, list):
        return _RecordedList(value, path, reads)
    return value


def _kept(fields: Fields, path: Path) -> bool:
    node: Fields | bool = union(IDENTITY, fields) or KEEP
    for key in path:
        if node is True:
            return True
        if key == WHOLE or key not in node:  # type: ignore[operator]
            return False
        node = node[key]  # type: ignore[index]
    return True


def _config(**spec: Any) -> Any:
    obj = objects.power_capping_config(NS, 0)
    obj["spec"] = {"powerCapLimit": 2000, **spec}
    return config_from_object(obj)


def _cluster() -> dict[str, list[dict[str, Any]]]:
    return {
        "scaled_objects": [
            objects.scaled_object(NS, 1),
            objects.scaled_object(NS, 2, capped_by=f"{NS}/svc-00000"),
            objects.predictor_scaled_object(NS, 3),
        ],
        "inference_services": [objects.inference_service(NS, 3)],
        "deployments": [objects.deployment(NS, 1), objects.deployment(NS, 2)],
        "pods": [objects.pod(NS, 1), objects.pod(NS, 2, node="kwok-node-1", gpus=1)],
        "hpas": [objects.hpa(NS, 1), objects.hpa(NS, 2, limited=False)],
    }


KIND_FIELDS = {
    "scaled_objects": SCALED_OBJECT_FIELDS,
    "inference_services": INFERENCE_SERVICE_FIELDS,
    "deployments": DEPLOYMENT_FIELDS,
    "pods": POD_FIELDS,
    "hpas": HPA_FIELDS,
}
CONFIGS = (
    _config(
        scaleObjectRef=[
            {"kind": "ScaledObject", "metadata": {"name": "svc-00001"}},
            {"kind": "ScaledObject", "metadata": {"name": "isvc-00003-predictor"}},
        ]
    ),
    _config(deploymentName="svc-00002"),
    _config(targetSelector={"matchLabels": {"tier": "serving"}}),
)


VPA: dict[str, Any] = {
    "spec": {"updatePolicy": {"updateMode": "Recreate"}},
    "status": {
        "recommendation": {
            "containerRecommendations": [
                {"containerName": "vllm", "target": {"cpu": "2", "memory": "8Gi"}}
            ]
        }
    },
}
"""A VerticalPodAutoscaler for one replica's footprint (VPAs are cached whole)."""


class _Pods:
    """An informer of these pods (recorded ones stay recorded)."""

    def __init__(self, pods: Sequence[Any]) -> None:
        self.store = Store()
        for pod in pods:
            self.store.upsert(pod)


def _decide(cluster: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Any]:
    """Everything the reconcilers derive from the cached workload objects."""
    out: list[Any] = []
    for config in CONFIGS:
        resolution: Resolution = resolve_targets(config, **cluster)
        out.append(resolution.missing)
        for target in resolution.targets:
            out.append(replace(target, obj={}))
            out.append(ceiling_patch(target, 1, config.key))
            out.append(ceiling_patch(target, 100, config.key))
            out.append(restore_patch(target.obj, target.kind))
            pods = _Pods(cluster["pods"])
            out.extend(_metrics_urls([target], n, pods, 8000) for n in set(target.pod_nodes))
    for so in cluster["scaled_objects"]:
        out.append(_what_targets_read(so))
        out.append(restore_patch(so, TargetKind.SCALED_OBJECT))
    out.extend(_what_targets_read(isvc) for isvc in cluster["inference_services"])
    scores = [PlaceScore("rack-1", 1.0, True, ""), PlaceScore("rack-2", 0.5, True, "")]
    for deployment in cluster["deployments"]:
        out.append(_what_deployments_read(deployment))
        out.append(template_patch(deployment, "climatik-project.ai/rack", scores))
    out.extend(_running(pod) for pod in cluster["pods"])
    out.extend(is_ready(pod) for pod in cluster["pods"])
    out.extend(pod_requests(pod) for pod in cluster["pods"])
    out.extend(container_sizings(pod, VPA) for pod in cluster["pods"])
    return out


def _recording_thaw(value: Any) -> Any:
    """`thaw` copies a value whole: that is a read of all of it."""
    if isinstance(value, _Recorded | _RecordedList):
        value._reads.add((*value._path, WHOLE))
        value = value._data
    return thaw(value)


def test_every_field_the_reconcilers_read_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement_template, "thaw", _recording_thaw)
    reads: dict[str, set[Path]] = {kind: set() for kind in KIND_FIELDS}
    recorded = {
        kind: [_Recorded(obj, (), reads[kind]) for obj in objs] for kind, objs in _cluster().items()
    }
    _decide(recorded)
    for kind, paths in reads.items():
        assert paths, f"no reader read {kind}"
        dropped = sorted(".".join(p) for p in paths if not _kept(KIND_FIELDS[kind], p))
        assert not dropped, f"{kind}: read but not cached: {dropped}"


def test_reconcilers_decide_the_same_on_cached_objects() -> None:
    whole = {kind: [FrozenMapping(o) for o in objs] for kind, objs in _cluster().items()}
    cached = {
        kind: [FrozenMapping(FieldFilter(KIND_FIELDS[kind])(o)) for o in objs]
        for kind, objs in _cluster().items()
    }
    assert _decide(cached) == _decide(whole)
