"""The seams reconcilers see of the kube layer: a read-only cache and a sink for Events.

Reconcilers read informer caches and record Events; they never write a cache nor need the
informer or recorder behind them. Typing them against these protocols (instead of `Any`) says
so, lets mypy check every read, and lets a unit test hand in a plain `Store` or a list of
recorded Events. `Informer` and `EventRecorder` satisfy them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from climatik.kube.json import JsonObject
from climatik.kube.store import IndexFunc

T_co = TypeVar("T_co", covariant=True)


class CacheStore(Protocol[T_co]):
    """What a reconciler may ask of a cache's store: reads, and an index to read by."""

    def get(self, key: str) -> T_co | None:
        """The object stored under `namespace/name` (or `name`), None when there is none."""
        ...

    def objects(self) -> Sequence[T_co]: ...

    def __len__(self) -> int:
        """How many objects the store holds (without copying them out)."""
        ...

    def by_index(self, index_name: str, value: str) -> Sequence[T_co]: ...

    def index_version(self, index_name: str, value: str) -> int:
        """Moves whenever an object under `value` of the index changes (memoization key)."""
        ...

    @property
    def version(self) -> int:
        """Moves whenever any object of the store changes (memoization key)."""
        ...

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Index the store by `func` (idempotent for one name), at wiring time."""
        ...


class Cache(Protocol[T_co]):
    """An informer's cache as a reconciler sees it: a store it reads, never writes.

    Informers keep API objects as `FrozenMapping`s: `Cache[FrozenMapping]`.
    """

    @property
    def store(self) -> CacheStore[T_co]: ...


class EventSink(Protocol):
    """Where a reconciler records Kubernetes Events about an object."""

    async def record(self, obj: JsonObject, event_type: str, reason: str, message: str) -> bool:
        """Record (or aggregate) one Event; whether it was recorded (not dropped as spam)."""
        ...
