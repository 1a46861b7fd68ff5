"""Value types of rack-aware placement and cooling: what a place is, how it scores, what to set.

A *place* is a rack (or a chassis in the twin) that could take a replica. Its observation carries
what placement needs to know about it: how much of its heat recirculates to other inlets (MinHR's
heat recirculation factor), how close it is to its temperature and power limits, which zone it is
in, the supply-air temperature that cools it (cooling efficiency) and its recent power history
(power smoothing). Every field but the id and the recirculation factor may be unknown (`None` or
empty), because real sites rarely export all of them; the policy treats unknown as "no opinion",
never as zero headroom or zero power.

Guarantees: values are frozen, units are in the names (°C, W, kW), and a place with a measured
value at or beyond a limit is never `admissible`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class PlacementStrategy(enum.StrEnum):
    """How places are ranked."""

    MINHR = "minhr"
    """Least heat recirculation first (Moore et al. 2005)."""
    ZONE = "zone"
    """Least loaded zone first (zone-based discretization), then least recirculation."""
    CLIMATIK = "climatik"
    """Weighted: predicted hottest inlet, recirculation, zone balance, headroom, cooling
    efficiency and smoothing."""


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
    supply_c: float | None = None
    """Supply-air temperature of the cooling serving this place (sets its CoP)."""
    load_series_w: tuple[float, ...] = ()
    """Recent power of the place, oldest first, on the same time grid as a service's series."""
    inlet_rise_c_per_kw: tuple[tuple[str, float], ...] = ()
    """This place's column of the heat matrix D (Tang et al. 2008): per inlet, by place id, how
    many °C that inlet rises per kW dissipated here (its own inlet included). Its sum is the
    recirculation factor. Empty when only the factor is known; then the score falls back to it."""
    seats: int | None = None
    """How many more replicas of the workload being placed its nodes can take (one replica's
    footprint from VPA's recommendation, issue 23); 0: none fits; `None`: not known."""

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
    """How much each term counts in the climatik score.

    The score is a sum of terms in "points"; each weight converts one unit of its quantity into
    points, so the defaults read as exchange rates: 1 °C/kW less recirculation is worth as much
    as 2 °C more thermal headroom or 20 kW more power headroom.
    """

    recirculation_per_c_per_kw: float = 1.0
    thermal_per_c: float = 0.5
    power_per_kw: float = 0.05
    zone_per_kw: float = 0.02
    """Penalty per kW the place's zone draws above the mean of the candidate zones."""
    cooling_per_kw_per_kw: float = 2.0
    """Penalty per kW of cooling power needed per kW of heat (1 / CoP at the supply air)."""
    correlation: float = 1.0
    """Penalty per unit of Pearson correlation between the service's power and the place's."""
    peak_inlet_per_c: float = 10.0
    """Penalty per °C of the room's hottest inlet once the replica's heat is added at the place,
    predicted from its heat-matrix column (placement); per °C its removal would lower that inlet
    (scale-in). The hottest inlet is what the supply air is set by, so it sets cooling energy;
    at 10 it dominates the other terms, which then break ties (measured in the twin: 3 gave
    less cooling saving on all three placement scenarios, see docs/placement.md)."""
    peak_softness_c: float = 0.5
    """How far under the hottest inlet an inlet still counts (τ of `soft_peak_c`): the peak
    terms score the change of the soft peak, so a place that heats an inlet just under the
    peak costs more than one that heats a cool inlet. 0: the plain hottest inlet."""
    max_thermal_headroom_c: float = 15.0
    """Headroom beyond this counts no more: a cold rack is not infinitely better."""
    max_power_headroom_kw: float = 50.0


@dataclass(frozen=True, slots=True)
class PlaceScore:
    """A place's rank key: higher `score` is better; inadmissible places come last."""

    place_id: str
    score: float
    admissible: bool
    reason: str
    correlation: float | None = None
    """Pearson correlation used by the smoothing term (None when not computed)."""
    peak_inlet_change_c: float | None = None
    """Predicted change of the room's hottest inlet if a replica is added here (placement, >= 0)
    or removed from here (scale-in, <= 0); None when the heat-matrix column is unknown."""
    seated: bool = True
    """False when no node of the place can take one more replica (its `seats` are 0): such a
    place ranks last and is never preferred."""


@dataclass(frozen=True, slots=True)
class RecirculationEstimate:
    """Heat recirculation learned from history: inlet rise per kW, per pair of places.

    `matrix_c_per_kw[i][j]` is the rise of inlet i per kW dissipated at place j (Tang et al.'s
    D matrix); `factors_c_per_kw[j]` is its column sum, MinHR's heat recirculation factor.
    """

    place_ids: tuple[str, ...]
    matrix_c_per_kw: tuple[tuple[float, ...], ...]
    factors_c_per_kw: tuple[float, ...]
    rms_residual_c: float
    samples: int
    lag_s: float = 0.0
    """The inlets' first-order lag behind power that the fit found (0: none, or not fitted)."""

    def factor(self, place_id: str) -> float:
        """The heat recirculation factor of `place_id`."""
        return self.factors_c_per_kw[self.place_ids.index(place_id)]


@dataclass(frozen=True, slots=True)
class InletReading:
    """The inlet temperature of one place and the cooling group (rack or zone) that feeds it."""

    place_id: str
    inlet_c: float
    group: str
    supply_c: float | None = None
    """The group's current supply-air temperature, when measured."""
    it_watts: float | None = None


@dataclass(frozen=True, slots=True)
class SupplySettings:
    """How supply-air recommendations are bounded (ASHRAE redline, CRAC limits, slew)."""

    redline_c: float = 27.0
    guard_c: float = 0.5
    """Keep the hottest inlet this far below the redline (measurement noise, lag)."""
    min_supply_c: float = 10.0
    max_supply_c: float = 27.0
    max_step_c: float = 2.0
    """Largest change per recommendation; the room responds with minutes of lag."""

    def __post_init__(self) -> None:
        if not all(
            math.isfinite(v)
            for v in (self.redline_c, self.guard_c, self.min_supply_c, self.max_supply_c)
        ):
            raise ValueError("supply settings must be finite")
        if self.min_supply_c > self.max_supply_c:
            raise ValueError("min_supply_c must not exceed max_supply_c")
        if self.max_step_c <= 0 or self.guard_c < 0:
            raise ValueError("max_step_c must be positive and guard_c non-negative")


@dataclass(frozen=True, slots=True)
class SupplySetpoint:
    """A recommended supply-air temperature for one cooling group (a rack or a zone)."""

    group: str
    hottest_place_id: str
    hottest_inlet_c: float
    change_c: float
    """How much to move the supply air (positive: warmer, saves cooling energy)."""
    supply_c: float | None
    """The absolute setpoint, when the current supply temperature is known."""
    cop: float | None
    """Coefficient of performance at `supply_c`."""
    cooling_watts: float | None
    """Estimated cooling power at `supply_c` for the group's IT load, when both are known."""
    reason: str


@dataclass(frozen=True, slots=True)
class MigrationSettings:
    """When a running replica is moved to a cooler place (evicted, its replacement steered).

    A move costs the replica's start-up (break before make: the ReplicaSet starts the
    replacement when the old pod is evicted), so it is made only for a predicted gain on the
    room's hottest inlet, at most once per `min_interval_s`, and never from a workload with
    fewer than `min_ready` ready replicas or with one still starting (a scale-up in flight)."""

    min_gain_c: float = 0.1
    """Least predicted drop of the room's hottest inlet that justifies a move."""
    min_interval_s: float = 300.0
    """Least time between two moves of one config (the room settles in minutes)."""
    min_ready: int = 2
    """A workload with fewer ready replicas keeps them where they are."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_gain_c) and self.min_gain_c > 0):
            raise ValueError("min_gain_c must be a positive number of degrees")
        if not (math.isfinite(self.min_interval_s) and self.min_interval_s >= 0):
            raise ValueError("min_interval_s must be a non-negative number of seconds")
        if self.min_ready < 1:
            raise ValueError("min_ready must be at least 1")


@dataclass(frozen=True, slots=True)
class Migration:
    """One replica to move: from `source` to `target`, for a predicted `gain_c`."""

    source: str
    """The place a ready replica leaves (its pod is evicted)."""
    target: str
    """The place its replacement is steered to (the workload's best-ranked free place)."""
    gain_c: float
    """Predicted drop of the room's hottest inlet, °C (positive)."""
    reason: str
