"""An informer: a reflector filling a store, and event handlers told about every change.

Handlers are plain synchronous callables (in practice: compute a key and add it to a work queue),
called from the reflector's task in the order the server sent the events. They receive read-only
views (see ``store.py``). ``has_synced`` turns true after the first full list is in the store, which
is what ``/readyz`` and the manager wait for before starting workers.

A relist after 410 Gone replaces the store: objects that vanished meanwhile are reported to
``on_delete`` (with their last known state), new ones to ``on_add`` and changed ones to
``on_update``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from climatik.kube.client import KubeClient
from climatik.kube.reflector import RawObject, Reflector, ReflectorMetrics
from climatik.kube.resources import Resource
from climatik.kube.store import FrozenMapping, IndexFunc, Store, object_key
from climatik.kube.watchstate import WatchEventType, WatchSettings

log = structlog.get_logger(__name__)

AddHandler = Callable[[FrozenMapping], None]
UpdateHandler = Callable[[FrozenMapping, FrozenMapping], None]
DeleteHandler = Callable[[FrozenMapping], None]


@dataclass
class EventHandlers:
    """Callbacks for one consumer of an informer; any may be left out."""

    on_add: AddHandler | None = None
    on_update: UpdateHandler | None = None
    on_delete: DeleteHandler | None = None


@dataclass
class Informer:
    """A store kept in sync with the API server and a fan-out of its changes."""

    client: KubeClient
    resource: Resource
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None
    indexers: Mapping[str, IndexFunc] = field(default_factory=dict)
    settings: WatchSettings | None = None
    metrics: ReflectorMetrics | None = None
    # Applied to every object before it is cached (client-go's SetTransform), e.g. to drop
    # managedFields, which no controller reads and which are often the bulk of an object.
    transform: Callable[[RawObject], RawObject] | None = None

    def __post_init__(self) -> None:
        self.store = Store(self.indexers)
        self._handlers: list[EventHandlers] = []
        self._synced = asyncio.Event()
        self.reflector = Reflector(
            self.client,
            self.resource,
            self,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            settings=self.settings,
            metrics=self.metrics,
            transform=self.transform,
        )
        self.name = self.reflector.name

    def add_handlers(self, handlers: EventHandlers) -> None:
        """Register a consumer; it is told about objects already cached as adds."""
        self._handlers.append(handlers)
        if handlers.on_add is not None:
            for obj in self.store.objects():
                self._call(handlers.on_add, obj)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """Run the reflector until cancelled."""
        await self.reflector.run()

    # -- ReflectorSink ----------------------------------------------------------------------

    def replace(self, objs: list[RawObject], resource_version: str) -> None:
        # Objects from the reflector are transformed already (page by page, as they arrive).
        added, updated, deleted = self.store.replace(objs)
        for obj in deleted:
            self._dispatch_delete(obj)
        for obj in added:
            self._dispatch_add(obj)
        for old, new in updated:
            self._dispatch_update(old, new)
        if not self._synced.is_set():
            log.info("cache_synced", informer=self.name, objects=len(self.store))
        self._synced.set()

    def apply(self, event_type: WatchEventType, obj: RawObject) -> None:
        if event_type is WatchEventType.DELETED:
            # The DELETED event carries the object's final state; prefer it over the cached one.
            self.store.delete(object_key(obj))
            self._dispatch_delete(FrozenMapping(obj))
            return
        previous = self.store.upsert(obj)
        if previous is None:
            self._dispatch_add(FrozenMapping(obj))
        else:
            self._dispatch_update(previous, FrozenMapping(obj))

    # -- fan-out ----------------------------------------------------------------------------

    def _dispatch_add(self, obj: FrozenMapping) -> None:
        for handlers in self._handlers:
            if handlers.on_add is not None:
                self._call(handlers.on_add, obj)

    def _dispatch_update(self, old: FrozenMapping, new: FrozenMapping) -> None:
        for handlers in self._handlers:
            if handlers.on_update is not None:
                self._call(handlers.on_update, old, new)

    def _dispatch_delete(self, obj: FrozenMapping) -> None:
        for handlers in self._handlers:
            if handlers.on_delete is not None:
                self._call(handlers.on_delete, obj)

    def _call(self, handler: Callable[..., None], *args: Any) -> None:
        # A broken handler must not stop the cache from following the server.
        try:
            handler(*args)
        except Exception:
            log.exception("event_handler_failed", informer=self.name)


def strip_managed_fields(obj: RawObject) -> RawObject:
    """Drop ``metadata.managedFields`` (server-side apply bookkeeping no controller of ours reads).

    Safe to mutate: the reflector hands the informer freshly parsed objects nobody else holds.
    """
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return obj
