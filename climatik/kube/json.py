"""What an API object is, typed: JSON values, their read-only views, and readers that narrow.

The API server hands us JSON, and some of it is written by users (annotations, labels, specs of
third-party kinds), so no field can be trusted to have the type its schema says. Typing objects as
:data:`JsonObject` instead of ``Mapping[str, Any]`` makes mypy insist that every read narrows;
the readers here are those narrowings, written once: a field of the wrong type reads as absent,
exactly as the ``(obj.get("spec") or {}).get(...)`` chains they replace treated a missing one,
and never raises. Cached objects are :class:`FrozenMapping` views (see ``store.py`` for why);
they live here so the readers can recognise them without the cost of an ABC check, and the
readers copy nothing (a view comes back as a view): cheap enough for the 5,000-config hot paths.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, Sequence, ValuesView
from typing import Final, TypeAlias, TypeVar, cast, overload

JsonScalar: TypeAlias = bool | int | float | str | None
JsonValue: TypeAlias = "JsonScalar | Sequence[JsonValue] | Mapping[str, JsonValue]"
JsonObject: TypeAlias = Mapping[str, JsonValue]
"""An object as read (from a cache, a webhook request): read-only, any field may be anything."""
JsonArray: TypeAlias = Sequence[JsonValue]
JsonDict: TypeAlias = dict[str, JsonValue]
"""An object we build ourselves (a patch, a body) before sending it."""
_T = TypeVar("_T")


class FrozenMapping(Mapping[str, JsonValue]):
    """A read-only view of a JSON object; nested objects and arrays are read-only views too.

    What the informer caches hand out (``store.py`` says why), copying nothing.
    """

    __slots__ = ("_data",)

    def __init__(self, data: JsonObject) -> None:
        self._data = data

    def __getitem__(self, key: str) -> JsonValue:
        return _freeze(self._data[key])

    @overload
    def get(self, key: str, /) -> JsonValue: ...
    @overload
    def get(self, key: str, default: JsonValue | _T, /) -> JsonValue | _T: ...
    def get(self, key: str, default: object = None) -> object:
        # Mapping's own `get` goes through __getitem__ and a KeyError per miss, and a call of
        # `_freeze` costs as much as the lookup: reconcilers call this millions of times a
        # minute at scale. JSON values are exactly dict, list or a scalar.
        value = self._data.get(key, _MISSING)
        if type(value) is dict:
            return FrozenMapping(value)
        if type(value) is list:
            return FrozenList(value)
        return default if value is _MISSING else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def items(self) -> ItemsView[str, JsonValue]:
        # Mapping's own views look every key up again through __getitem__; label and selector
        # maps are walked per pod and per target at scale.
        return _FrozenItems(self)

    def values(self) -> ValuesView[JsonValue]:
        return _FrozenValues(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMapping):
            return self._data == other._data
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to dicts, which are unhashable

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"


class _FrozenItems(ItemsView[str, JsonValue]):
    __slots__ = ()
    _mapping: FrozenMapping

    def __iter__(self) -> Iterator[tuple[str, JsonValue]]:
        for key, value in self._mapping._data.items():
            yield key, _freeze(value)


class _FrozenValues(ValuesView[JsonValue]):
    __slots__ = ()
    _mapping: FrozenMapping

    def __iter__(self) -> Iterator[JsonValue]:
        for value in self._mapping._data.values():
            yield _freeze(value)


class FrozenList(Sequence[JsonValue]):
    """A read-only view of a JSON array."""

    __slots__ = ("_data",)

    def __init__(self, data: Sequence[JsonValue]) -> None:
        self._data = data

    @overload
    def __getitem__(self, index: int) -> JsonValue: ...
    @overload
    def __getitem__(self, index: slice) -> FrozenList: ...
    def __getitem__(self, index: int | slice) -> JsonValue:
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


def _freeze(value: JsonValue) -> JsonValue:
    if isinstance(value, dict):
        return FrozenMapping(value)
    if isinstance(value, list):
        return FrozenList(value)
    return value


EMPTY: Final[JsonObject] = FrozenMapping({})
"""What :func:`child` reads for an absent object: shared, and read-only so nobody fills it."""


def as_object(value: JsonValue) -> JsonObject:
    """``value`` if it is a JSON object, else :data:`EMPTY`."""
    # A cached view, a parsed dict (the store's indexers) or nothing are by far the most
    # common cases: `type() is` and `is None` answer them without Mapping's ABC check.
    if type(value) is FrozenMapping or type(value) is dict:
        return value
    if value is None:
        return EMPTY
    return value if isinstance(value, Mapping) else EMPTY


def as_array(value: JsonValue) -> JsonArray:
    """``value`` if it is a JSON array, else an empty one (a string is not an array here)."""
    if type(value) is FrozenList or type(value) is list:
        return value
    if value is None or type(value) is str:
        return ()
    return value if isinstance(value, Sequence) else ()


def as_text(value: JsonValue) -> str | None:
    return value if isinstance(value, str) else None


def as_integer(value: JsonValue) -> int | None:
    """An integer, or None (a bool is not an integer, nor is 1.0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def child(obj: JsonObject, key: str) -> JsonObject:
    """The object under ``key``; :data:`EMPTY` when absent or not an object."""
    value = obj.get(key)  # as_object, inlined: this is the readers' hottest call
    if type(value) is FrozenMapping or type(value) is dict:
        return value
    if value is None:
        return EMPTY
    return value if isinstance(value, Mapping) else EMPTY


def items(obj: JsonObject, key: str) -> JsonArray:
    """The array under ``key``; empty when absent or not an array."""
    return as_array(obj.get(key))


def objects(obj: JsonObject, key: str) -> Iterator[JsonObject]:
    """The objects in the array under ``key``, skipping elements that are not objects."""
    for value in as_array(obj.get(key)):
        if type(value) is FrozenMapping or type(value) is dict or isinstance(value, Mapping):
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


def labels_of(obj: JsonObject) -> JsonObject:
    """``ObjectMeta.of(obj).labels`` without making the view: labels are read per pod per
    selector, the one metadata read hot enough for the difference to show."""
    return child(child(obj, "metadata"), "labels")


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
    def labels(self) -> JsonObject:
        """The labels as stored, unchecked: they are read per pod per selector at scale, so
        compare them with ``==`` (a value that is not a string equals no label value), or
        :func:`strings` them where a ``Mapping[str, str]`` is needed."""
        return child(self.raw, "labels")

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
