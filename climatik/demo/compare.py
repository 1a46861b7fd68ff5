"""The live run beside the twin: the twin run in-process on the same scenario, policy and
window, and the live figures added to its result as a `live` row, so `simulate`'s table, JSON
and report show both.

The live row's plot series are the demo's samples at the twin's plot times; what the world
does not model (inlets, supply air, carbon) is NaN there, a gap in the plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from climatik.demo.live import WorldTotals, live_metrics, slo_by_service
from climatik.sim.engine import Twin
from climatik.sim.result import History, SimResult
from climatik.sim.scenario import Scenario

LIVE_ROW = "live"
TWIN_POLICY = "headroom"
"""The twin's policy for the demo's PowerCappingConfig (Headroom ceilings, nothing else)."""
TWIN_POLICY_TUNED = "headroom-tuned"
"""The twin's policy when the demo's config applies tuned GPU clocks."""
TWIN_POLICY_JOINT_CLOCKS = "headroom-joint-clocks"
"""... and moves them with the replicas under the cap (`--clocks-under-cap`)."""


@dataclass(frozen=True, slots=True)
class LiveSample:
    """One look at the running demo."""

    wall_s: float
    """Seconds since the demo's loop started."""
    simulated_s: float
    """The world's simulated seconds since its start hour."""
    site_w: float
    serving: Mapping[str, int]
    """Ready replicas per service."""
    ceilings: Mapping[str, int]


def run_twin(
    scenario: Scenario, start_hour: float, simulated_s: float, policy: str = TWIN_POLICY
) -> SimResult:
    """The twin on the live run's window: from `start_hour`, as long as the world ran, and
    from the same start: each service's minimum replicas, just created."""
    hours = max(simulated_s, scenario.step_s) / 3600.0
    twin = Twin(scenario, policies=[policy], hours=hours, start_hour=start_hour, cold_start=True)
    return twin.run()


def _at(samples: Sequence[LiveSample], simulated_s: float) -> LiveSample | None:
    """The last sample at or before `simulated_s`, else the first."""
    before = [s for s in samples if s.simulated_s <= simulated_s]
    return before[-1] if before else (samples[0] if samples else None)


def _live_history(
    twin: History, samples: Sequence[LiveSample], services: Sequence[str], cap_w: float
) -> History:
    """The twin's plot series with the live run as one more policy column."""

    def per_service(values: Mapping[str, int] | None) -> list[float]:
        return [math.nan if values is None else float(values.get(n, math.nan)) for n in services]

    out = History(hours=list(twin.hours), carbon_g_per_kwh=list(twin.carbon_g_per_kwh))
    for i, hour in enumerate(twin.hours):
        seen = _at(samples, hour * 3600.0)
        site = math.nan if seen is None else seen.site_w
        out.site_w.append(np.append(twin.site_w[i], site))
        out.cap_w.append(np.append(twin.cap_w[i], cap_w))
        out.replicas.append(
            np.vstack([twin.replicas[i], per_service(None if seen is None else seen.serving)])
        )
        out.ceilings.append(
            np.vstack([twin.ceilings[i], per_service(None if seen is None else seen.ceilings)])
        )
        out.max_inlet_c.append(np.append(twin.max_inlet_c[i], math.nan))
        out.supply_c.append(np.append(twin.supply_c[i], math.nan))
        out.carbon_g.append(np.append(twin.carbon_g[i], math.nan))
    return out


def with_live(
    twin: SimResult,
    totals: WorldTotals,
    samples: Sequence[LiveSample],
    details: Mapping[str, object],
) -> SimResult:
    """The twin's result with the live run as a `live` row (figures, details, plot series)."""
    cap_w = twin.site_cap_w
    steps = twin.site_w_per_step.shape[0]
    live_site = [_at(samples, k * twin.step_s) for k in range(steps)]
    column = np.array([math.nan if s is None else s.site_w for s in live_site])
    return replace(
        twin,
        policies={**twin.policies, LIVE_ROW: live_metrics(totals, cap_w)},
        details={
            **twin.details,
            LIVE_ROW: {"slo_attainment_by_service": slo_by_service(totals), **details},
        },
        history=_live_history(twin.history, samples, twin.service_names, cap_w),
        site_w_per_step=np.column_stack([twin.site_w_per_step, column]),
    )


def _finite(value: object) -> object:
    """JSON has no NaN: what the world does not model is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_document(result: SimResult, window: Mapping[str, float]) -> object:
    """`simulate`'s JSON with the live row, and the window both ran on."""
    return _finite({**result.as_json(), "window": dict(window)})
