"""The recirculation ConfigMap's `racks.yaml`: untrusted YAML made into rack coefficients.

The ConfigMap (docs/placement.md) gives per rack a recirculation factor (`recirculationCPerKw`),
optionally a cooling `zone`, its column of the heat matrix (`inletRiseCPerKw`) and its place
along the row (`rowPosition`). Anyone who may
edit ConfigMaps in the namespace writes it, so `parse_recirculation` never raises, keeps the
usable part, names every unusable part in words, and takes time about linear in the capped text.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sized
from dataclasses import dataclass
from datetime import date
from typing import Any

import yaml

RECIRCULATION_KEY = "racks.yaml"
"""The ConfigMap key holding the document."""
FACTOR_FIELD = "recirculationCPerKw"
COLUMN_FIELD = "inletRiseCPerKw"
POSITION_FIELD = "rowPosition"
MAX_RECIRCULATION_BYTES = 256 * 1024
"""Largest `racks.yaml` read; a larger one is ignored whole (the estimate applies)."""
QUOTE_HINT = "quote rack names in racks.yaml"
_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML was built with it: faster, and it refuses deep nesting itself."""


@dataclass(frozen=True, slots=True)
class RackCoefficients:
    """The usable part of one rack's entry in the recirculation ConfigMap."""

    factor_c_per_kw: float | None = None
    column: tuple[tuple[str, float], ...] = ()
    """Per inlet rack, °C of rise per kW dissipated here; only known racks, finite and ≥ 0."""
    zone: str | None = None
    position: float | None = None
    """Where the rack stands along its row, in racks (neighbours 1 apart): with every rack's,
    the estimate from history is drawn toward the geometric prior (`heat_fit`)."""


def _number(value: Any) -> float | None:
    """`value` as a finite float; None for anything else (YAML booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _show(value: Any) -> str:
    """`value` in at most about 40 characters, in time independent of its size.

    The ConfigMap is untrusted: `repr` of a container walks all of it, and a few hundred bytes
    of YAML aliases ("billion laughs") make a list of billions of elements that share storage.
    So only scalars are shown; a container is described by its type and length."""
    if isinstance(value, str | bytes):
        text = repr(value[:40])
        return text if len(value) <= 40 else text + "..."
    if value is None or isinstance(value, bool | float | date):
        return repr(value)
    if isinstance(value, int):
        # repr of a huge int is quadratic (and refused past 4300 digits): show its size.
        return repr(value) if abs(value) < 10**30 else "a number of more than 30 digits"
    if isinstance(value, Sized):
        return f"{_kind(value)} of {len(value)} items"
    return _kind(value)


def _kind(value: Any) -> str:
    names = {
        list: "a list",
        dict: "a mapping",
        set: "a set",
        str: "a string",
        bytes: "binary data",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "empty" if value is None else names.get(type(value), f"a {type(value).__name__}")


def _name(key: Any) -> str:
    """A rack name from the ConfigMap, for messages: a string key shortened, anything else shown."""
    if isinstance(key, str):
        return key if len(key) <= 64 else key[:61] + "..."
    return _show(key)


def key_names(data: Mapping[str, object]) -> str:
    """The keys of a ConfigMap's data, for a message naming what it holds instead (capped)."""
    text = ", ".join(sorted(str(k) for k in data)) or "none"
    return text if len(text) <= 200 else text[:197] + "..."


def _column(
    rack: str, raw: Any, known_racks: Collection[str]
) -> tuple[tuple[tuple[str, float], ...], list[str]]:
    """A ConfigMap `inletRiseCPerKw` mapping as a heat-matrix column, and what was dropped."""
    if not isinstance(raw, Mapping):
        return (), [
            f"rack {rack}: {COLUMN_FIELD} is {_kind(raw)}, not a mapping of inlet rack to "
            "°C per kW; ignored"
        ]
    entries: list[tuple[str, float]] = []
    problems: list[str] = []
    for key in sorted(raw, key=_name):
        value = raw[key]
        number = _number(value)
        where = f"rack {rack}: {COLUMN_FIELD}.{_name(key)}"
        if not isinstance(key, str):
            problems.append(f"{where}: the key is not a string ({QUOTE_HINT}); ignored")
        elif number is None:
            problems.append(f"{where} {_show(value)} is not a finite number; ignored")
        elif number < 0:
            problems.append(f"{where} {number:g} is negative (heat never cools an inlet); ignored")
        elif key not in known_racks:
            problems.append(
                f"{where} names a rack no node carries and no rackConstraint names; ignored"
            )
        else:
            entries.append((key, number))
    return tuple(entries), problems


def _number_field(
    rack: str, entry: Mapping[Any, Any], field: str, problems: list[str]
) -> float | None:
    """`entry[field]` as a finite number; None when absent, or (named in `problems`) when it
    is not one."""
    if field not in entry:
        return None
    raw = entry[field]
    number = _number(raw)
    if number is None:
        problems.append(f"rack {rack}: {field} {_show(raw)} is not a finite number; ignored")
    return number


def parse_recirculation(
    text: str, rack_ids: Collection[str], *, loader: type[Any] = _LOADER
) -> tuple[dict[str, RackCoefficients], list[str]]:
    """The usable part of `racks.yaml`, and every part that is not, in words (stable order).

    A bad part is dropped and the rest kept: a rack whose factor or column is dropped falls back
    to the estimate from history, exactly as a rack the ConfigMap does not name. The text is
    untrusted (anyone who may edit ConfigMaps in the namespace): this never raises, and takes
    time about linear in the text's size, which is capped (no `repr` of what YAML aliases may
    have made huge). Pure, so the reconciler runs it off the event loop."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RECIRCULATION_BYTES:
        return {}, [
            f"is {size} bytes, more than the {MAX_RECIRCULATION_BYTES} read; all of it is ignored"
        ]
    try:
        parsed = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, never the full one
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as error:
        # RecursionError: deep nesting with the pure-Python loader; ValueError and friends:
        # constructors of odd scalars (an integer of more than 4300 digits, a bad timestamp).
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        return {}, [f"not valid YAML ({detail}); all of it is ignored"]
    if parsed is None:
        return {}, []
    if not isinstance(parsed, Mapping):
        return {}, [
            f"the document is {_kind(parsed)}, not a mapping of rack to settings; "
            "all of it is ignored"
        ]
    known = frozenset(rack_ids)
    racks: dict[str, RackCoefficients] = {}
    problems: list[str] = []
    for key in sorted(parsed, key=_name):
        entry = parsed[key]
        if not isinstance(key, str):
            # YAML 1.1 reads `no:` as False, `010:` as 8 and `null:` as None.
            problems.append(f"key {_show(key)} is not a string ({QUOTE_HINT}); ignored")
            continue
        rack = _name(key)
        if key not in known:
            problems.append(
                f"rack {rack} names a rack no node carries and no rackConstraint names; ignored"
            )
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"rack {rack}: the entry is {_kind(entry)}, not a mapping; ignored")
            continue
        factor = _number_field(rack, entry, FACTOR_FIELD, problems)
        if factor is not None and factor < 0:
            problems.append(
                f"rack {rack}: {FACTOR_FIELD} {factor:g} is negative (heat never cools an "
                "inlet); ignored"
            )
            factor = None
        column: tuple[tuple[str, float], ...] = ()
        if COLUMN_FIELD in entry:
            column, dropped = _column(rack, entry[COLUMN_FIELD], known)
            problems.extend(dropped)
        zone = entry.get("zone")
        if zone is not None and not isinstance(zone, str):
            problems.append(f"rack {rack}: zone is {_kind(zone)}, not a string; ignored")
            zone = None
        position = _number_field(rack, entry, POSITION_FIELD, problems)
        racks[key] = RackCoefficients(factor, column, zone or None, position)
    return racks, problems
