"""The cache: keys, indexes, relist diffs, read-only views; and the informer's fan-out."""

from __future__ import annotations

from typing import Any

import pytest

from climatik.kube.client import KubeClient
from climatik.kube.informer import EventHandlers, Informer
from climatik.kube.resources import CONFIGMAPS
from climatik.kube.store import (
    BY_NAMESPACE,
    BY_OWNER_UID,
    FrozenMapping,
    Store,
    index_by_label,
    index_by_namespace,
    index_by_owner_uid,
    object_key,
    split_key,
    thaw,
)
from climatik.kube.watchstate import WatchEventType
from tests.json_paths import dict_at, dig, list_at, obj_at, text_at


def _obj(
    name: str,
    namespace: str | None = "ns",
    rv: str = "1",
    rack: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "resourceVersion": rv}
    if namespace:
        metadata["namespace"] = namespace
    if rack:
        metadata["labels"] = {"rack": rack}
    if owner:
        metadata["ownerReferences"] = [{"uid": owner, "kind": "Deployment", "name": "d"}]
    return {"metadata": metadata, "spec": {"items": [{"x": 1}]}}


def _store() -> Store:
    return Store(
        {
            BY_NAMESPACE: index_by_namespace,
            "rack": index_by_label("rack"),
            BY_OWNER_UID: index_by_owner_uid,
        }
    )


def test_keys_are_namespace_slash_name_or_name() -> None:
    assert object_key(_obj("a")) == "ns/a"
    assert object_key(_obj("n1", namespace=None)) == "n1"
    assert split_key("ns/a") == ("ns", "a")
    assert split_key("n1") == (None, "n1")


def test_indexes_follow_updates_and_deletes() -> None:
    store = _store()
    store.upsert(_obj("a", rack="r1", owner="u1"))
    store.upsert(_obj("b", rack="r1"))
    store.upsert(_obj("c", namespace="other", rack="r2", owner="u1"))
    assert [text_at(o, "metadata", "name") for o in store.by_index("rack", "r1")] == ["a", "b"]
    assert [text_at(o, "metadata", "name") for o in store.by_index(BY_OWNER_UID, "u1")] == [
        "a",
        "c",
    ]
    assert len(store.by_index(BY_NAMESPACE, "ns")) == 2
    store.upsert(_obj("b", rv="2", rack="r2"))  # moved racks
    assert [text_at(o, "metadata", "name") for o in store.by_index("rack", "r1")] == ["a"]
    assert [text_at(o, "metadata", "name") for o in store.by_index("rack", "r2")] == ["b", "c"]
    store.delete("ns/a")
    assert store.by_index("rack", "r1") == []
    assert store.index_values("rack") == ["r2"]
    assert store.delete("ns/a") is None


def test_replace_reports_added_changed_and_vanished() -> None:
    store = _store()
    store.upsert(_obj("keep", rv="1"))
    store.upsert(_obj("change", rv="1"))
    store.upsert(_obj("gone", rv="1", rack="r1"))
    added, updated, deleted = store.replace(
        [_obj("keep", rv="1"), _obj("change", rv="7"), _obj("new", rv="8")]
    )
    assert [text_at(o, "metadata", "name") for o in added] == ["new"]
    assert [
        (dig(o, "metadata", "resourceVersion"), dig(n, "metadata", "resourceVersion"))
        for o, n in updated
    ] == [("1", "7")]
    assert [text_at(o, "metadata", "name") for o in deleted] == ["gone"]
    assert sorted(store.keys()) == ["ns/change", "ns/keep", "ns/new"]
    assert store.by_index("rack", "r1") == []


def test_cached_objects_cannot_be_mutated_through_views() -> None:
    store = _store()
    store.upsert(_obj("a"))
    view = store.get("ns/a")
    assert view is not None
    with pytest.raises(TypeError):
        view["spec"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        obj_at(view, "spec", "items", 0)["x"] = 2  # type: ignore[index]  # read-only, as typed
    with pytest.raises(AttributeError):
        list_at(view, "spec", "items").append({})  # type: ignore[attr-defined]  # likewise
    assert dig(view, "spec", "items", 0, "x") == 1
    assert view == _obj("a")


def test_thaw_gives_an_independent_mutable_copy() -> None:
    store = _store()
    store.upsert(_obj("a"))
    view = store.get("ns/a")
    assert view is not None
    copy = thaw(view)
    dict_at(copy, "spec", "items", 0)["x"] = 99
    assert dig(view, "spec", "items", 0, "x") == 1
    assert isinstance(dig(copy, "spec", "items"), list)


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def handlers(self) -> EventHandlers:
        return EventHandlers(
            on_add=lambda o: self.events.append(("add", text_at(o, "metadata", "name"))),
            on_update=lambda old, new: self.events.append(
                ("update", text_at(new, "metadata", "name"))
            ),
            on_delete=lambda o: self.events.append(("delete", text_at(o, "metadata", "name"))),
        )


async def test_informer_fans_out_events_and_relists_emit_deletes() -> None:
    informer = Informer(KubeClient(api_client=None), CONFIGMAPS)
    recorder = _Recorder()
    informer.add_handlers(recorder.handlers())
    assert not informer.has_synced()
    informer.replace([_obj("a"), _obj("b")], "10")
    assert informer.has_synced()
    informer.apply(WatchEventType.MODIFIED, _obj("a", rv="11"))
    informer.apply(WatchEventType.ADDED, _obj("c", rv="12"))
    informer.apply(WatchEventType.DELETED, _obj("b", rv="13"))
    # A relist after 410: "a" vanished meanwhile, "c" changed, "d" appeared.
    informer.replace([_obj("c", rv="20"), _obj("d", rv="21")], "21")
    assert recorder.events == [
        ("add", "a"),
        ("add", "b"),
        ("update", "a"),
        ("add", "c"),
        ("delete", "b"),
        ("delete", "a"),
        ("add", "d"),
        ("update", "c"),
    ]
    assert sorted(informer.store.keys()) == ["ns/c", "ns/d"]


async def test_late_handlers_see_cached_objects_and_a_broken_handler_is_contained() -> None:
    informer = Informer(KubeClient(api_client=None), CONFIGMAPS)
    informer.replace([_obj("a")], "1")

    def broken(obj: FrozenMapping) -> None:
        raise RuntimeError("bug in a handler")

    informer.add_handlers(EventHandlers(on_add=broken))
    recorder = _Recorder()
    informer.add_handlers(recorder.handlers())
    informer.apply(WatchEventType.ADDED, _obj("b"))
    assert recorder.events == [("add", "a"), ("add", "b")]
    assert "ns/b" in informer.store


def test_an_index_version_moves_with_every_write_to_its_value() -> None:
    store = Store({"namespace": index_by_namespace})
    assert store.index_version("namespace", "a") == 0
    store.upsert({"metadata": {"name": "x", "namespace": "a", "resourceVersion": "1"}})
    after_add = store.index_version("namespace", "a")
    assert after_add > 0
    store.upsert({"metadata": {"name": "y", "namespace": "b", "resourceVersion": "2"}})
    assert store.index_version("namespace", "a") == after_add
    store.upsert({"metadata": {"name": "x", "namespace": "a", "resourceVersion": "3"}})
    after_update = store.index_version("namespace", "a")
    assert after_update > after_add
    store.delete("a/x")
    assert store.index_version("namespace", "a") > after_update
