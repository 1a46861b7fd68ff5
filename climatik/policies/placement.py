"""Where the next replica should go: rack (or chassis) scores from heat and power headroom.

MinHR (Moore et al. 2005) ranks places by their heat recirculation factor: the inlet temperature
rise, summed over every inlet, that one watt dissipated at the place causes. Climatik's score
combines that with the place's thermal headroom (redline minus hottest inlet) and power headroom,
and refuses places at or over a power or temperature limit. Zone-based discretization groups
places into zones and balances load by zone.

Guarantees: pure and deterministic (ties break by place id); an inadmissible place never ranks
above an admissible one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class PlacementStrategy(enum.StrEnum):
    """How places are ranked."""

    MINHR = "minhr"
    ZONE = "zone"
    CLIMATIK = "climatik"


@dataclass(frozen=True, slots=True)
class PlaceObservation:
    """One rack or chassis that could take a replica."""

    place_id: str
    recirculation_c_per_kw: float
    """Heat recirculation factor: total inlet rise (°C, over all inlets) per kW dissipated here."""
    inlet_c: float | None = None
    max_inlet_c: float | None = None
    watts: float | None = None
    max_watts: float | None = None
    zone: str = ""
    zone_watts: float | None = None
    """Power of the place's whole zone (zone-based discretization balances this)."""

    @property
    def thermal_headroom_c(self) -> float | None:
        """Degrees left before the temperature limit, when both are known."""
        if self.inlet_c is None or self.max_inlet_c is None:
            return None
        return self.max_inlet_c - self.inlet_c

    @property
    def power_headroom_w(self) -> float | None:
        """Watts left before the power limit, when both are known."""
        if self.watts is None or self.max_watts is None:
            return None
        return self.max_watts - self.watts

    @property
    def admissible(self) -> bool:
        """False when the place is at or over a measured limit."""
        thermal = self.thermal_headroom_c
        power = self.power_headroom_w
        return (thermal is None or thermal > 0) and (power is None or power > 0)


@dataclass(frozen=True, slots=True)
class PlacementWeights:
    """How much each term counts in the climatik score (per unit: °C/kW, °C, kW)."""

    recirculation_per_c_per_kw: float = 1.0
    thermal_per_c: float = 0.5
    power_per_kw: float = 0.05


@dataclass(frozen=True, slots=True)
class PlaceScore:
    """A place's rank key: higher `score` is better; inadmissible places come last."""

    place_id: str
    score: float
    admissible: bool
    reason: str


def score_racks(
    places: Sequence[PlaceObservation],
    strategy: PlacementStrategy = PlacementStrategy.CLIMATIK,
    weights: PlacementWeights | None = None,
) -> tuple[PlaceScore, ...]:
    """Score every place, best first (admissible before inadmissible, then score, then id)."""
    weights = weights or PlacementWeights()
    scores: list[PlaceScore] = []
    for place in places:
        hrf = place.recirculation_c_per_kw
        match strategy:
            case PlacementStrategy.MINHR:
                score = -hrf
                reason = f"recirculation {hrf:.3f} °C/kW"
            case PlacementStrategy.ZONE:
                zone_kw = (place.zone_watts or 0.0) / 1000.0
                # Least loaded zone first; inside a zone, least recirculation.
                score = -zone_kw - 1e-3 * hrf
                reason = f"zone {place.zone or '-'} at {zone_kw:.1f} kW"
            case PlacementStrategy.CLIMATIK:
                thermal = place.thermal_headroom_c or 0.0
                power_kw = (place.power_headroom_w or 0.0) / 1000.0
                score = (
                    -weights.recirculation_per_c_per_kw * hrf
                    + weights.thermal_per_c * thermal
                    + weights.power_per_kw * power_kw
                )
                reason = (
                    f"recirculation {hrf:.3f} °C/kW, {thermal:.1f} °C and {power_kw:.1f} kW "
                    "headroom"
                )
        admissible = place.admissible
        if not admissible:
            reason += "; at a power or temperature limit"
        scores.append(PlaceScore(place.place_id, score, admissible, reason))
    scores.sort(key=lambda s: (not s.admissible, -s.score, s.place_id))
    return tuple(scores)
