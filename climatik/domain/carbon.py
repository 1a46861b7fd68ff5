"""Grid carbon intensity as the policies see it.

Average intensities (UK National Grid, Electricity Maps) and marginal ones (WattTime's MOER)
measure different things; the `signal` field travels with every reading so no code path can
compare one with the other by accident.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
"""One lb/MWh is 453.59237 g per 1000 kWh."""


class CarbonSignal(enum.StrEnum):
    """What a carbon reading measures."""

    AVERAGE = "Average"
    """Location-based average intensity of the grid mix (gCO2eq/kWh)."""
    MARGINAL = "Marginal"
    """Marginal operating emissions rate of the next kWh (converted to gCO2/kWh)."""


@dataclass(frozen=True, slots=True)
class CarbonReading:
    """One grid intensity value for one time slot."""

    intensity_g_per_kwh: float
    slot_start: datetime
    slot_end: datetime
    signal: CarbonSignal = CarbonSignal.AVERAGE
    is_forecast: bool = False
    region: str = ""

    def __post_init__(self) -> None:
        if not self.intensity_g_per_kwh >= 0:  # also refuses NaN
            msg = f"carbon intensity must be a non-negative number, got {self.intensity_g_per_kwh}"
            raise ValueError(msg)
        if self.slot_end <= self.slot_start:
            msg = f"carbon slot ends ({self.slot_end}) before it starts ({self.slot_start})"
            raise ValueError(msg)

    def covers(self, moment: datetime) -> bool:
        """True when `moment` falls inside this reading's slot."""
        return self.slot_start <= moment < self.slot_end


@dataclass(frozen=True, slots=True)
class EmissionRateTarget:
    """Hold emissions at a rate: cap = target / (intensity x PUE)."""

    grams_per_hour: float
    pue: float = 1.0


@dataclass(frozen=True, slots=True)
class IntensityBandTarget:
    """Full cap at or below `clean`, the floor at or above `dirty`, linear in between."""

    clean_g_per_kwh: float
    dirty_g_per_kwh: float

    def __post_init__(self) -> None:
        if not self.clean_g_per_kwh < self.dirty_g_per_kwh:
            msg = (
                f"clean intensity ({self.clean_g_per_kwh}) must be below dirty intensity "
                f"({self.dirty_g_per_kwh})"
            )
            raise ValueError(msg)


CarbonTarget = EmissionRateTarget | IntensityBandTarget


@dataclass(frozen=True, slots=True)
class CarbonCap:
    """The cap a carbon policy chose, with the reason in words."""

    cap_w: float
    reason: str
