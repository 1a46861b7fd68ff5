"""The seams reconcilers are typed against: the manager's informers and event recorder are a
`Cache` and an `EventSink` as they are (mypy checks the assignments below), and what a reconciler
reads through the seam is what the informer cached."""

from __future__ import annotations

from typing import Any

from climatik.kube.cache import Cache, EventSink
from climatik.kube.client import KubeClient
from climatik.kube.events import EventRecorder
from climatik.kube.informer import Informer
from climatik.kube.resources import PODS
from climatik.kube.store import FrozenMapping, index_by_namespace
from climatik.kube.watchstate import WatchEventType
from tests.json_paths import dig


def pod(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "1"}}


async def test_an_informer_is_a_cache_reconcilers_read() -> None:
    client = KubeClient(api_client=None)
    informer = Informer(client, PODS)
    cache: Cache[FrozenMapping] = informer
    cache.store.add_indexer("namespace", index_by_namespace)
    before = cache.store.index_version("namespace", "llm")
    informer.apply(WatchEventType.ADDED, pod("llm", "a"))
    informer.apply(WatchEventType.ADDED, pod("other", "b"))
    got = cache.store.get("llm/a")
    assert got is not None
    assert dig(got, "metadata", "name") == "a"
    assert [dig(o, "metadata", "name") for o in cache.store.by_index("namespace", "llm")] == ["a"]
    assert cache.store.index_version("namespace", "llm") != before
    assert len(cache.store.objects()) == 2


def test_the_event_recorder_is_an_event_sink() -> None:
    sink: EventSink = EventRecorder(KubeClient(api_client=None))
    assert callable(sink.record)
