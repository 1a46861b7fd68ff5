"""Kubernetes resource quantities ("500m", "363Mi", "1e3", 8) as plain numbers.

CPU comes out in cores and memory in bytes, the units the scheduler compares requests against
allocatable in. An unreadable quantity is None, never zero: a request nobody can read must not
look like a free one.
"""

from __future__ import annotations

import re

from climatik.kube.json import JsonValue

_SUFFIXES = {
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?:[eE](?P<exponent>[+-]?\d+))?"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$"
)


def parse_quantity(value: JsonValue | None) -> float | None:
    """The quantity as a number of base units; None when absent or not a quantity."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    found = _QUANTITY.match(value.strip())
    if found is None:
        return None
    number = float(found["number"])
    if found["exponent"] is not None:
        number *= 10.0 ** int(found["exponent"])
    return number * _SUFFIXES[found["suffix"]]
