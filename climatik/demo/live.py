"""The live run's figures in `simulate`'s terms: the world's own tally turned into the metrics
of a twin row, so the demo's `live` row reads beside the twin's for the same window.

Pure. The world keeps its tally in simulated time (`climatik_world_*` on `/metrics/world`), as
the twin does; what the world does not model (cooling energy, inlets above the redline, carbon,
rack peaks) is NaN, shown `n/a` in the table and null in the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from climatik.sim.result import METRIC_KEYS


@dataclass(frozen=True, slots=True)
class WorldTotals:
    """The world's running totals at the end of a run (simulated seconds, joules, watts)."""

    simulated_s: float
    energy_j: float
    cap_violation_ws: float
    max_overshoot_w: float
    tokens: Mapping[str, float]
    arrived: Mapping[str, float]
    met_slo: Mapping[str, float]


def live_metrics(totals: WorldTotals, cap_w: float) -> dict[str, float]:
    """The twin's metric keys for the live run; those the world does not tally are NaN."""
    tokens = sum(totals.tokens.values())
    arrived = sum(totals.arrived.values())
    figures = dict.fromkeys(METRIC_KEYS, math.nan)
    figures.update(
        cap_violation_ws=totals.cap_violation_ws,
        max_overshoot_pct=100.0 * totals.max_overshoot_w / cap_w,
        tokens=tokens,
        tokens_per_s=tokens / totals.simulated_s if totals.simulated_s > 0 else math.nan,
        tokens_per_joule=tokens / totals.energy_j if totals.energy_j > 0 else math.nan,
        energy_kwh=totals.energy_j / 3.6e6,
        slo_attainment=sum(totals.met_slo.values()) / arrived if arrived > 0 else math.nan,
    )
    return figures


def slo_by_service(totals: WorldTotals) -> dict[str, float]:
    """Each service's share of requests that met its SLOs (the twin's detail of that name)."""
    return {
        name: totals.met_slo.get(name, 0.0) / arrived
        for name, arrived in sorted(totals.arrived.items())
        if arrived > 0
    }
