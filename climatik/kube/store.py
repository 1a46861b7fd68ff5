"""The informer cache: objects keyed ``namespace/name`` with indexes, handed out read-only.

Only the informer writes here (from one asyncio task), so no locks are needed; everyone else reads.
Cached objects are shared by every reader, so a reader that mutated one would corrupt the cache for
all (client-go's rule: never mutate cached objects). We enforce it rather than ask for it: readers
get a :class:`FrozenMapping` view, a zero-copy wrapper whose nested dicts and lists come back as
further read-only views. Reading is as cheap as a dict lookup, nothing is copied on ingest (which
keeps a 5,000-object sync fast), and any attempt to assign raises ``TypeError``. A reconciler that
wants to build a modified copy calls :func:`thaw`, which returns a fresh deep copy.

Indexers map an object to the index values it belongs to (by namespace, by a label such as the
rack, by owner uid); ``by_index`` answers "all objects with this value" without a scan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

RawObject = dict[str, Any]
IndexFunc = Callable[[Mapping[str, Any]], list[str]]


class FrozenMapping(Mapping[str, Any]):
    """A read-only view of a JSON object; nested objects and arrays are read-only views too."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return _freeze(self._data[key])

    def get(self, key: str, default: Any = None) -> Any:
        # Mapping's own `get` goes through __getitem__ and a KeyError per miss, and a call of
        # `_freeze` costs as much as the lookup: reconcilers call this millions of times a
        # minute at scale. JSON values are exactly dict, list or a scalar.
        value = self._data.get(key, _MISSING)
        kind = type(value)
        if kind is dict:
            return FrozenMapping(value)
        if kind is list:
            return FrozenList(value)
        return default if value is _MISSING else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMapping):
            return self._data == other._data
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to dicts, which are unhashable

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"


class FrozenList(Sequence[Any]):
    """A read-only view of a JSON array."""

    __slots__ = ("_data",)

    def __init__(self, data: Sequence[Any]) -> None:
        self._data = data

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> FrozenList: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return FrozenList(self._data[index])
        return _freeze(self._data[index])

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenList):
            return list(self._data) == list(other._data)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self._data) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FrozenList({self._data!r})"


_MISSING = object()


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenMapping(value)
    if isinstance(value, list):
        return FrozenList(value)
    return value


def freeze(obj: Mapping[str, Any]) -> FrozenMapping:
    """A read-only view of ``obj`` (no copy)."""
    return obj if isinstance(obj, FrozenMapping) else FrozenMapping(obj)


def thaw(value: Any) -> Any:
    """A mutable deep copy of a (possibly frozen) JSON value, for building patches or bodies."""
    if isinstance(value, FrozenMapping | FrozenList):
        value = value._data
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name``, or ``name`` for cluster-scoped objects (client-go's MetaNamespaceKey)."""
    metadata = obj["metadata"]
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if namespace else str(metadata["name"])


def split_key(key: str) -> tuple[str | None, str]:
    """The inverse of :func:`object_key`: ``(namespace or None, name)``."""
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else (None, namespace)


# -- indexers -------------------------------------------------------------------------------

BY_NAMESPACE = "namespace"
BY_OWNER_UID = "owner-uid"


def index_by_namespace(obj: Mapping[str, Any]) -> list[str]:
    namespace = obj["metadata"].get("namespace")
    return [namespace] if namespace else []


def index_by_owner_uid(obj: Mapping[str, Any]) -> list[str]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or () if "uid" in ref]


def index_by_label(label: str) -> IndexFunc:
    """Index objects by the value of one label, e.g. the rack a node sits in."""

    def index(obj: Mapping[str, Any]) -> list[str]:
        value = (obj["metadata"].get("labels") or {}).get(label)
        return [value] if value is not None else []

    return index


class Store:
    """A keyed cache with indexes. Not thread-safe by design: one event loop owns it."""

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._items: dict[str, RawObject] = {}
        self._indexers: dict[str, IndexFunc] = dict(indexers or {})
        # index name -> index value -> keys
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        # index name -> index value -> how many writes touched it (see `index_version`)
        self._versions: dict[str, dict[str, int]] = {name: {} for name in self._indexers}
        self._writes = 0

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Add an index (no-op if one of that name exists); existing objects are indexed now."""
        if name in self._indexers:
            return
        self._indexers[name] = func
        self._indices[name] = {}
        self._versions[name] = {}
        index = self._indices[name]
        for key, obj in self._items.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)

    # -- writes (the informer only) ---------------------------------------------------------

    def upsert(self, obj: RawObject) -> FrozenMapping | None:
        """Add or replace one object; return the previous version (read-only) if there was one."""
        key = object_key(obj)
        self._writes += 1
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        self._index(key, obj)
        return FrozenMapping(old) if old is not None else None

    def delete(self, key: str) -> FrozenMapping | None:
        """Remove one object; return it (read-only) if it was there."""
        old = self._items.pop(key, None)
        if old is None:
            return None
        self._writes += 1
        self._unindex(key, old)
        return FrozenMapping(old)

    def replace(
        self, objs: Iterable[RawObject]
    ) -> tuple[list[FrozenMapping], list[tuple[FrozenMapping, FrozenMapping]], list[FrozenMapping]]:
        """Make the cache exactly ``objs`` (a relist): return (added, (old, new) updated, deleted).

        An object counts as updated only when its resourceVersion changed, so a relist does not
        wake every reconciler for objects that did not move.
        """
        fresh = {object_key(obj): obj for obj in objs}
        added: list[FrozenMapping] = []
        updated: list[tuple[FrozenMapping, FrozenMapping]] = []
        deleted = [self.delete(key) for key in list(self._items) if key not in fresh]
        for key, obj in fresh.items():
            old = self._items.get(key)
            self.upsert(obj)
            if old is None:
                added.append(FrozenMapping(obj))
            elif _resource_version(old) != _resource_version(obj):
                updated.append((FrozenMapping(old), FrozenMapping(obj)))
        return added, updated, [d for d in deleted if d is not None]

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str) -> FrozenMapping | None:
        obj = self._items.get(key)
        return FrozenMapping(obj) if obj is not None else None

    def objects(self) -> list[FrozenMapping]:
        return [FrozenMapping(obj) for obj in self._items.values()]

    def keys(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def by_index(self, index_name: str, value: str) -> list[FrozenMapping]:
        """All objects whose indexer ``index_name`` yields ``value``."""
        keys = self._indices[index_name].get(value, set())
        return [FrozenMapping(self._items[k]) for k in sorted(keys)]

    def index_values(self, index_name: str) -> list[str]:
        return sorted(self._indices[index_name])

    @property
    def version(self) -> int:
        """A number that changes whenever any object is added, changed or removed."""
        return self._writes

    def index_version(self, index_name: str, value: str) -> int:
        """A number that changes whenever an object with this index value is added, changed
        or removed: a reader that derived something from `by_index(index_name, value)` may
        keep it while the number stays the same (one namespace's targets, say)."""
        return self._versions[index_name].get(value, 0)

    # -- index maintenance ------------------------------------------------------------------

    def _index(self, key: str, obj: RawObject) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            versions = self._versions[name]
            for value in func(obj):
                index.setdefault(value, set()).add(key)
                versions[value] = versions.get(value, 0) + 1

    def _unindex(self, key: str, obj: RawObject) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            versions = self._versions[name]
            for value in func(obj):
                versions[value] = versions.get(value, 0) + 1
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    rv = obj.get("metadata", {}).get("resourceVersion")
    return str(rv) if rv is not None else None
