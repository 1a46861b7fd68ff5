"""Reading into API objects and patches in tests, typed: a path that is not there fails the test.

Code under test narrows every JSON read (``climatik.kube.json``) so that hostile input reads as
absent; a test wants the opposite, to fail loudly when the object it built or got back does not
have the shape it asserts. ``dig(job, "spec", "template", "spec", "containers", 0)`` is
``job["spec"]["template"]["spec"]["containers"][0]`` with each step checked.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

from climatik.kube.json import JsonArray, JsonObject, JsonValue


def dig(value: JsonValue, *path: str | int) -> JsonValue:
    """The value at ``path`` (object keys, array indexes); fails the test when it is not there."""
    for step in path:
        if isinstance(step, str):
            assert isinstance(value, Mapping), f"{step!r}: {value!r} is not an object"
            assert step in value, f"{step!r} not in {sorted(value)}"
            value = value[step]
        else:
            assert isinstance(value, Sequence), f"[{step}]: {value!r} is not an array"
            assert not isinstance(value, str), f"[{step}]: {value!r} is not an array"
            value = value[step]
    return value


def obj_at(value: JsonValue, *path: str | int) -> JsonObject:
    """The object at ``path``; fails the test when there is none."""
    found = dig(value, *path)
    assert isinstance(found, Mapping), f"{path}: {found!r} is not an object"
    return found


def dict_at(value: JsonValue, *path: str | int) -> MutableMapping[str, JsonValue]:
    """The mutable object at ``path`` (a test editing what it built); fails when there is none."""
    found = dig(value, *path)
    assert isinstance(found, MutableMapping), f"{path}: {found!r} is not a mutable object"
    return found


def list_at(value: JsonValue, *path: str | int) -> JsonArray:
    """The array at ``path``; fails the test when there is none."""
    found = dig(value, *path)
    assert isinstance(found, Sequence), f"{path}: {found!r} is not an array"
    assert not isinstance(found, str), f"{path}: {found!r} is not an array"
    return found


def text_at(value: JsonValue, *path: str | int) -> str:
    """The string at ``path``; fails the test when there is none."""
    found = dig(value, *path)
    assert isinstance(found, str), f"{path}: {found!r} is not a string"
    return found
