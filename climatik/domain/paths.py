"""How a field is named in error messages, for every resource a user writes (configs, scenarios)."""

from __future__ import annotations

from collections.abc import Sequence


def field_path(location: Sequence[int | str]) -> str:
    """`('spec', 'rackConstraints', 0, 'maxPower')` -> `spec.rackConstraints[0].maxPower`."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path
