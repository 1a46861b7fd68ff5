"""What an API object is, typed: JSON values, and readers that narrow them without raising.

The API server hands us JSON, and some of it is written by users (annotations, labels, specs of
third-party kinds), so no field can be trusted to have the type its schema says. Typing objects as
:data:`JsonObject` instead of ``Mapping[str, Any]`` makes mypy insist that every read narrows;
the readers here are those narrowings, written once: a field of the wrong type reads as absent,
exactly as the ``(obj.get("spec") or {}).get(...)`` chains they replace treated a missing one,
and never raises. They copy nothing (a cached :class:`~climatik.kube.store.FrozenMapping` comes
back as the same read-only view), so they are cheap enough for the 5,000-config hot paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Final, TypeAlias, cast

JsonScalar: TypeAlias = bool | int | float | str | None
JsonValue: TypeAlias = "JsonScalar | Sequence[JsonValue] | Mapping[str, JsonValue]"
JsonObject: TypeAlias = Mapping[str, JsonValue]
"""An object as read (from a cache, a webhook request): read-only, any field may be anything."""
JsonArray: TypeAlias = Sequence[JsonValue]
JsonDict: TypeAlias = dict[str, JsonValue]
"""An object we build ourselves (a patch, a body) before sending it."""

EMPTY: Final[JsonObject] = MappingProxyType({})
"""What :func:`child` reads for an absent object: shared, and read-only so nobody fills it."""


def as_object(value: JsonValue) -> JsonObject:
    """``value`` if it is a JSON object, else :data:`EMPTY`."""
    return value if isinstance(value, Mapping) else EMPTY


def as_array(value: JsonValue) -> JsonArray:
    """``value`` if it is a JSON array, else an empty one (a string is not an array here)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return value
    return ()


def as_text(value: JsonValue) -> str | None:
    return value if isinstance(value, str) else None


def as_integer(value: JsonValue) -> int | None:
    """An integer, or None (a bool is not an integer, nor is 1.0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def child(obj: JsonObject, key: str) -> JsonObject:
    """The object under ``key``; :data:`EMPTY` when absent or not an object."""
    value = obj.get(key)
    return value if isinstance(value, Mapping) else EMPTY


def items(obj: JsonObject, key: str) -> JsonArray:
    """The array under ``key``; empty when absent or not an array."""
    return as_array(obj.get(key))


def objects(obj: JsonObject, key: str) -> Iterator[JsonObject]:
    """The objects in the array under ``key``, skipping elements that are not objects."""
    for value in as_array(obj.get(key)):
        if isinstance(value, Mapping):
            yield value


def text(obj: JsonObject, key: str) -> str | None:
    """The string under ``key``; None when absent or not a string."""
    value = obj.get(key)
    return value if isinstance(value, str) else None


def integer(obj: JsonObject, key: str) -> int | None:
    """The integer under ``key``; None when absent or not an integer (bools are not)."""
    return as_integer(obj.get(key))


def strings(obj: JsonObject, key: str) -> Mapping[str, str]:
    """The string-to-string map under ``key`` (labels, annotations); values that are not strings
    are dropped. Usually every value is a string and the map comes back as it is, uncopied."""
    found = child(obj, key)
    for value in found.values():
        if not isinstance(value, str):
            return {k: v for k, v in found.items() if isinstance(v, str)}
    return cast("Mapping[str, str]", found)  # checked just above: every value is a str


class ObjectMeta:
    """A typed view of an object's ``metadata``; each field narrows on read, none raises.

    A view, not a parse: making one costs one lookup, so it can be made per read.
    """

    __slots__ = ("raw",)

    def __init__(self, metadata: JsonObject) -> None:
        self.raw: Final = metadata

    @classmethod
    def of(cls, obj: JsonObject) -> ObjectMeta:
        """The metadata of ``obj`` (empty when it has none, or it is not an object)."""
        return cls(child(obj, "metadata"))

    @property
    def name(self) -> str | None:
        return text(self.raw, "name")

    @property
    def namespace(self) -> str | None:
        return text(self.raw, "namespace")

    @property
    def uid(self) -> str | None:
        return text(self.raw, "uid")

    @property
    def resource_version(self) -> str | None:
        return text(self.raw, "resourceVersion")

    @property
    def generation(self) -> int | None:
        return integer(self.raw, "generation")

    @property
    def labels(self) -> Mapping[str, str]:
        return strings(self.raw, "labels")

    @property
    def annotations(self) -> Mapping[str, str]:
        return strings(self.raw, "annotations")

    @property
    def owner_references(self) -> Iterator[JsonObject]:
        return objects(self.raw, "ownerReferences")

    @property
    def finalizers(self) -> tuple[str, ...]:
        return tuple(f for f in items(self.raw, "finalizers") if isinstance(f, str))

    @property
    def creation_timestamp(self) -> str | None:
        return text(self.raw, "creationTimestamp")

    @property
    def deletion_timestamp(self) -> str | None:
        return text(self.raw, "deletionTimestamp")


def strict_child(obj: JsonObject, key: str) -> JsonObject:
    """The object under ``key`` (:data:`EMPTY` when absent, null or empty, as ``obj.get(key) or
    {}`` read it), raising TypeError when it is anything else.

    For input whose malformed parts must stop the work rather than read as absent: an admission
    patch that adds into a field that is not an object would be refused, so the webhook answers
    such a pod without one.
    """
    value = obj.get(key)
    if isinstance(value, Mapping):
        return value
    if not value:
        return EMPTY
    raise TypeError(f"{key} is a {type(value).__name__}, not an object")
