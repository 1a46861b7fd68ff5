"""The Kubernetes side of reconciler unit tests, written once: caches that are plain stores (the
`Cache[FrozenMapping]` of `climatik.kube.cache`), a client that applies merge patches of the
config to its cache as the API server and a watch would, and recorded Events (an `EventSink`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from climatik.api.status import apply_merge_patch
from climatik.kube.client import KubeClient
from climatik.kube.json import child
from climatik.kube.resources import Resource
from climatik.kube.store import Store, thaw


class StoreCache:
    """An informer as the reconciler reads it: only its store."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        self.store = Store()
        for obj in objs:
            self.store.upsert(obj)


class StatusClient(KubeClient):
    """Applies status merge patches to the cached config, like the API server and a watch would;
    any other write fails the test (subclasses add the writes they expect)."""

    def __init__(self, configs: StoreCache) -> None:
        super().__init__(api_client=None)
        self.configs = configs
        self.status_patches: list[dict[str, Any]] = []

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        assert subresource == "status", (resource, name, patch)
        self.status_patches.append(dict(patch))
        return self.apply_to_config(name, patch, namespace)

    def apply_to_config(
        self, name: str, patch: Mapping[str, Any], namespace: str | None
    ) -> dict[str, Any]:
        """The cached config with `patch` merged in, stored back (without a resourceVersion, so
        the next conditional write is not refused)."""
        current = self.configs.store.get(f"{namespace}/{name}")
        assert current is not None
        updated: dict[str, Any] = apply_merge_patch(thaw(current), patch)
        updated["metadata"].pop("resourceVersion", None)
        self.configs.store.upsert(updated)
        return updated


class RecordedEvents:
    """Events as (type, reason, message); with `refuse_first`, the first one is dropped as an
    API server refusing it (e.g. a passing 500) would."""

    def __init__(self, *, refuse_first: bool = False) -> None:
        self.recorded: list[tuple[str, str, str]] = []
        self._refuse_first = refuse_first

    async def record(
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> bool:
        self.recorded.append((event_type, reason, message))
        return not (self._refuse_first and len(self.recorded) == 1)

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.recorded]


def status_of(configs: StoreCache) -> dict[str, Any]:
    obj = configs.store.get("ns/cap")
    assert obj is not None
    status: dict[str, Any] = thaw(child(obj, "status"))
    return status


def conditions_of(configs: StoreCache) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status_of(configs).get("conditions") or ()}
