"""Which racks are too close to their limits for VPA to recreate pods on them (issue 23).

VPA applies a recommendation by evicting a pod so its replacement can be admitted with new
requests; on a rack at its power or temperature limit that churn adds load where there is no
room. A rack is held from `hold_fraction` of its `maxPower` (or `hold_margin_c` below its
`maxTemperature`) and released only once it is below `release_fraction` (and `release_margin_c`
below), so a rack hovering at the threshold does not flip VPA's mode every round. A held rack
with no reading stays held: missing data is never taken as a cool rack.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from climatik.domain.config import RackConstraint


@dataclass(frozen=True, slots=True)
class RackReading:
    """One rack's last measured power and inlet temperature (None: not measured)."""

    rack_id: str
    power_w: float | None
    inlet_celsius: float | None


@dataclass(frozen=True, slots=True)
class HoldThresholds:
    """Where holding starts and where it ends; release thresholds sit below the hold ones."""

    hold_fraction: float = 0.95
    release_fraction: float = 0.90
    hold_margin_c: float = 1.0
    release_margin_c: float = 2.0


def _near_limit(
    reading: RackReading, limit: RackConstraint, fraction: float, margin_c: float
) -> bool | None:
    """Whether the rack is at or above the given point; None when no limit set was measured."""
    answers: list[bool] = []
    if limit.max_power_w is not None and reading.power_w is not None:
        answers.append(reading.power_w >= fraction * limit.max_power_w)
    if limit.max_temperature_celsius is not None and reading.inlet_celsius is not None:
        answers.append(reading.inlet_celsius >= limit.max_temperature_celsius - margin_c)
    return any(answers) if answers else None


def racks_to_hold(
    readings: Iterable[RackReading],
    limits: Mapping[str, RackConstraint],
    held: Collection[str],
    thresholds: HoldThresholds = HoldThresholds(),
) -> frozenset[str]:
    """The racks whose pods VPA must not evict now, given the racks held until now.

    Only racks with a constraint can be held; a held rack whose constraint is gone is released.
    """
    by_rack = {r.rack_id: r for r in readings}
    hold: set[str] = set()
    for rack_id, limit in limits.items():
        reading = by_rack.get(rack_id, RackReading(rack_id, None, None))
        if rack_id in held:
            still_warm = _near_limit(
                reading, limit, thresholds.release_fraction, thresholds.release_margin_c
            )
            if still_warm is not False:  # warm, or unmeasured: keep holding
                hold.add(rack_id)
        elif _near_limit(reading, limit, thresholds.hold_fraction, thresholds.hold_margin_c):
            hold.add(rack_id)
    return frozenset(hold)
