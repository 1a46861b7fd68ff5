"""Cache only the fields the controllers read (client-go's informer TransformFunc).

At 5,000 configs the caches hold 20,000 workload objects, and most of each is never read: a
pod's containers, volumes and container statuses, a Deployment's template, a ScaledObject's
triggers. A :data:`Fields` tree names what to keep, ``{"status": {"phase": KEEP}}``, where
``KEEP`` keeps a value whole and a list is pruned element by element with the tree it is under.

Every consumer of a shared informer names the fields it reads, and the informer keeps their
union; a consumer that names none keeps whole objects (minus ``managedFields``), so a
controller plugged in by import path sees what the API server sent. The name, namespace, uid,
resourceVersion, kind and apiVersion are always kept: the store keys by them and events name
objects by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

from climatik.kube.reflector import RawObject

KEEP: Final = True
Fields: TypeAlias = Mapping[str, "Fields | Literal[True]"]

IDENTITY: Final[Fields] = {
    "apiVersion": KEEP,
    "kind": KEEP,
    "metadata": {"name": KEEP, "namespace": KEEP, "uid": KEEP, "resourceVersion": KEEP},
}
"""What the store, relists and Event recording need of every object."""


def keep_fields(value: Any, fields: Fields) -> Any:
    """A copy of ``value`` with only ``fields`` (absent ones stay absent); a value that is not
    the object or array the tree expects is kept as it is, for its reader to judge."""
    if isinstance(value, dict):
        kept = {}
        for key, sub in value.items():
            tree = fields.get(key)
            if tree is not None:
                kept[key] = sub if tree is True else keep_fields(sub, tree)
        return kept
    if isinstance(value, list):
        return [keep_fields(item, fields) for item in value]
    return value


def union(a: Fields | None, b: Fields | None) -> Fields | None:
    """Fields kept by either tree (``None``: the whole object)."""
    if a is None or b is None:
        return None
    merged: dict[str, Fields | Literal[True]] = dict(a)
    for key, sub in b.items():
        mine = merged.get(key)
        if mine is None:
            merged[key] = sub
        elif mine is True or sub is True:
            merged[key] = KEEP
        else:
            merged[key] = union(mine, sub) or KEEP
    return merged


class FieldFilter:
    """An informer transform keeping the union of what its consumers read.

    Widened by each consumer while controllers are wired up, before the informer lists: a
    consumer added later would find objects cached without its fields.
    """

    def __init__(self, fields: Fields | None) -> None:
        self.fields: Fields | None = None if fields is None else union(IDENTITY, fields)

    def widen(self, fields: Fields | None) -> None:
        self.fields = union(self.fields, fields)

    def __call__(self, obj: RawObject) -> RawObject:
        # Safe to mutate: the reflector hands over freshly parsed objects nobody else holds.
        metadata = obj.get("metadata")
        if isinstance(metadata, dict):
            # Server-side apply bookkeeping, often the bulk of an object; nothing reads it.
            metadata.pop("managedFields", None)
        if self.fields is None:
            return obj
        pruned: RawObject = keep_fields(obj, self.fields)
        return pruned
