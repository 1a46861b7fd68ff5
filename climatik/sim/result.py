"""What a twin run produces: the metrics of SIMULATOR.md per policy, their details, and the
downsampled series the plots draw.

The `--json` document is `SimResult.as_json`; reports, plots and bounds read these types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

METRIC_KEYS = (
    "cap_violation_ws",
    "max_overshoot_pct",
    "tokens",
    "tokens_per_s",
    "tokens_per_joule",
    "energy_kwh",
    "cooling_kwh",
    "peak_inlet_c",
    "time_above_redline_s",
    "carbon_g",
    "carbon_g_per_1k_tokens",
    "slo_attainment",
    "peak_to_average",
)


@dataclass
class History:
    """Downsampled time series for plots (one column per sample)."""

    hours: list[float] = field(default_factory=list)
    site_w: list[FloatArray] = field(default_factory=list)
    cap_w: list[FloatArray] = field(default_factory=list)
    replicas: list[FloatArray] = field(default_factory=list)
    ceilings: list[FloatArray] = field(default_factory=list)
    """The replica ceiling (maxReplicaCount) each policy set, per service."""
    max_inlet_c: list[FloatArray] = field(default_factory=list)
    supply_c: list[FloatArray] = field(default_factory=list)
    carbon_g_per_kwh: list[float] = field(default_factory=list)
    carbon_g: list[FloatArray] = field(default_factory=list)
    """Cumulative emissions per policy."""


@dataclass
class SimResult:
    """What a run produced: the metrics of SIMULATOR.md per policy, details and plot series."""

    scenario: str
    duration_s: float
    policies: dict[str, dict[str, float]]
    details: dict[str, dict[str, object]]
    history: History
    service_names: list[str]
    site_cap_w: float
    redline_c: float
    step_s: float
    site_w_per_step: FloatArray
    """IT power of the site in every step, one column per policy (what the cooling bound is
    evaluated on: the least cooling each step's IT power could have needed)."""
    replicas_per_step: IntArray | None = None
    """Replicas of each service in every step (steps x policies x services): what the
    whole-replica placement bound places (None: not recorded, no such bound)."""
    service_w_per_step: FloatArray | None = None
    """IT power of each service's servers in every step (steps x policies x services)."""
    knowledge: str = "measured"
    """What the policies saw: "measured" (only what the live controller measures) or
    "exact" (the `--exact-knowledge` variant)."""

    def as_json(self) -> dict[str, object]:
        """The `--json` document: scenario, duration and the metric keys per policy."""
        return {
            "scenario": self.scenario,
            "knowledge": self.knowledge,
            "duration_s": self.duration_s,
            "policies": self.policies,
            "details": self.details,
        }
