"""The JSON readers: right values through, anything else reads as absent, nothing raises."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.kube.json import (
    EMPTY,
    JsonObject,
    JsonValue,
    ObjectMeta,
    as_array,
    as_integer,
    as_object,
    as_text,
    child,
    integer,
    items,
    labels_of,
    objects,
    strict_child,
    strings,
    text,
)
from climatik.kube.store import FrozenList, FrozenMapping

POD: JsonObject = {
    "metadata": {
        "name": "llm-0",
        "namespace": "serving",
        "uid": "u-1",
        "resourceVersion": "42",
        "generation": 3,
        "labels": {"app": "llm", "rack": "r1"},
        "annotations": {"a": "1", "bad": 7, "worse": {"x": 1}},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "llm-abc"}, "junk", 5],
        "finalizers": ["climatik-project.ai/give-back", 9],
        "creationTimestamp": "2026-12-06T05:00:00Z",
    },
    "spec": {"containers": [{"name": "c"}], "nodeName": "n1", "replicas": True},
    "status": "Running",
}

keys = st.sampled_from(
    [
        "metadata",
        "spec",
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "deletionTimestamp",
        "",
    ]
)
"""Field names the readers look for, so arbitrary JSON lands where they read it."""
json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(keys | st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=30,
)


def test_readers_return_the_value_when_it_has_the_type() -> None:
    spec = child(POD, "spec")
    assert spec["nodeName"] == "n1"
    assert text(spec, "nodeName") == "n1"
    assert [c["name"] for c in objects(spec, "containers")] == ["c"]
    assert len(items(spec, "containers")) == 1
    assert integer(child(POD, "metadata"), "generation") == 3


def test_a_field_of_the_wrong_type_reads_as_absent() -> None:
    assert child(POD, "status") is EMPTY  # a string, not an object
    assert child(POD, "missing") is EMPTY
    assert items(POD, "status") == ()  # a string is not an array
    assert text(POD, "spec") is None
    assert integer(child(POD, "spec"), "replicas") is None  # a bool is not an integer
    assert integer({"n": 1.0}, "n") is None
    assert as_integer(5) == 5
    assert as_text(5) is None
    assert as_object([1]) is EMPTY
    assert as_array("abc") == ()


def test_empty_is_read_only() -> None:
    with pytest.raises(TypeError):
        EMPTY["x"] = 1  # type: ignore[index]  # what the test shows


def test_object_meta_reads_each_field_narrowed() -> None:
    meta = ObjectMeta.of(POD)
    assert (meta.name, meta.namespace, meta.uid) == ("llm-0", "serving", "u-1")
    assert meta.resource_version == "42"
    assert meta.generation == 3
    assert meta.labels == {"app": "llm", "rack": "r1"}
    assert labels_of(POD) == meta.labels
    assert meta.annotations == {"a": "1"}  # values that are not strings are dropped
    assert [r["name"] for r in meta.owner_references] == ["llm-abc"]
    assert meta.finalizers == ("climatik-project.ai/give-back",)
    assert meta.creation_timestamp == "2026-12-06T05:00:00Z"
    assert meta.deletion_timestamp is None
    assert ObjectMeta.of({"metadata": "nope"}).name is None


def test_labels_that_are_all_strings_come_back_uncopied() -> None:
    labels = {"app": "llm"}
    assert strings({"labels": labels}, "labels") is labels


def test_readers_copy_nothing_from_a_cached_view() -> None:
    raw: JsonObject = {"metadata": {"labels": {"app": "llm"}}, "spec": {"items": [{"x": 1}]}}
    view = FrozenMapping(raw)
    spec = child(view, "spec")
    assert isinstance(spec, FrozenMapping)
    assert isinstance(items(spec, "items"), FrozenList)
    assert isinstance(ObjectMeta.of(view).labels, FrozenMapping)


def test_strict_child_reads_falsy_as_empty_and_refuses_other_types() -> None:
    assert strict_child({"spec": {"a": 1}}, "spec") == {"a": 1}
    falsy_values: tuple[JsonValue, ...] = (None, "", 0, [], False)
    for falsy in falsy_values:
        assert strict_child({"spec": falsy}, "spec") is EMPTY
    with pytest.raises(TypeError, match="spec is a str"):
        strict_child({"spec": "not a mapping"}, "spec")


@given(obj=st.dictionaries(keys, json_values, max_size=6), key=keys)
def test_readers_never_raise_and_return_their_declared_types(obj: JsonObject, key: str) -> None:
    for view in (obj, FrozenMapping(obj)):
        assert isinstance(child(view, key), Mapping)
        found = items(view, key)
        assert not isinstance(found, str | Mapping)
        assert all(isinstance(o, Mapping) for o in objects(view, key))
        assert isinstance(text(view, key), str | None)
        value = integer(view, key)
        assert value is None or (isinstance(value, int) and not isinstance(value, bool))
        labels = strings(view, key)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
        meta = ObjectMeta.of(view)
        for field in (meta.name, meta.namespace, meta.uid, meta.resource_version):
            assert isinstance(field, str | None)
        assert isinstance(meta.generation, int | None)
        assert all(isinstance(v, str) for v in meta.annotations.values())
        assert isinstance(meta.labels, Mapping)
        assert labels_of(view) == meta.labels
        assert all(isinstance(r, Mapping) for r in meta.owner_references)
        assert all(isinstance(f, str) for f in meta.finalizers)
        assert isinstance(meta.deletion_timestamp, str | None)


def test_a_views_items_and_values_are_read_only_views_too() -> None:
    view = FrozenMapping({"spec": {"x": 1}, "list": [1], "n": 2})
    assert dict(view.items()) == {"spec": {"x": 1}, "list": [1], "n": 2}
    kinds = [type(v) for v in view.values()]
    assert kinds == [FrozenMapping, FrozenList, int]
    assert [type(v) for _, v in view.items()] == kinds
    assert ("n", 2) in view.items()
    assert len(view.values()) == 3
