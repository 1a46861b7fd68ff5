"""A run's policies beside its scenario's bounds: the `bound` row and each share of bound.

share of bound = (policy - baseline) / (bound - baseline): the part of the bound's gain over a
reference policy of the same run (`BASELINES`) that the policy captures; 1 is the bound, 0 the
baseline, below 0 worse than the baseline. None where the run has no baseline, where the bound
gains nothing over it, or (tokens and SLO) where the policy breaks the cap the bound keeps.

Cooling is only comparable at the same IT load, so each policy's cooling is set against the
least cooling of its own IT power (`ScenarioBounds.cooling_floor_kwh`, the "same loads" of the
issue): the cooling share is of the excess over that floor, the baseline's excess being the gain
(with equal loads this is the formula above). The floor lets any server draw any power; the
second cooling share (`cooling_whole_kwh`) sets each policy against the exact placement of its
own whole replicas (`WholeReplicaPlacer`), a yardstick a placement can reach. Carbon is per
thousand tokens, against the same policy without carbon input, the bound being its emissions
less the most that moving deferrable work can save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from climatik.sim.result import SimResult
from climatik.sim.scenario_bounds import ScenarioBounds, WholeReplicaCooling

SHARE_KEYS = (
    "tokens",
    "slo_attainment",
    "cooling_kwh",
    "cooling_whole_kwh",
    "carbon_g_per_1k_tokens",
    "peak_to_average",
)
COOLING_KEYS = frozenset({"cooling_kwh", "cooling_whole_kwh"})
"""Cooling against the fractional floor, and against the exact placement of whole replicas."""
BASELINES: dict[str, tuple[str, ...]] = {
    # The first of these in the run is the baseline of a share.
    "tokens": ("static",),
    "slo_attainment": ("static",),
    "cooling_kwh": (
        "placement-random",
        "placement-round-robin",
        "static",
        "seed-threshold",
        "uncapped",
    ),
    "cooling_whole_kwh": (
        "placement-random",
        "placement-round-robin",
        "static",
        "seed-threshold",
        "uncapped",
    ),
    "carbon_g_per_1k_tokens": ("climatik-no-carbon",),
    "peak_to_average": ("placement-round-robin", "static", "seed-threshold", "uncapped"),
}
"""Reference policies: nameplate ceilings for serving, random (else round-robin) placement for
cooling, the same policy without carbon input for emissions, round-robin for peak-to-average."""
THROUGHPUT_KEYS = frozenset({"tokens", "slo_attainment"})
BOUND_ROW = "bound"


@dataclass(frozen=True, slots=True)
class Comparison:
    """A run beside its bounds: the `bound` row, the baselines and every share of bound."""

    bounds: ScenarioBounds
    bound_row: dict[str, float]
    baselines: dict[str, str | None]
    shares: dict[str, dict[str, float | None]]
    cooling_floor_kwh: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)
    whole_replica: dict[str, WholeReplicaCooling] = field(default_factory=dict)
    """Per policy: its cooling, peak inlet and time above redline with its own replicas placed
    exactly (empty where the run did not record its replicas)."""
    carbon_with_min_replicas: dict[str, float | None] = field(default_factory=dict)
    """Each policy's share of the carbon bound that keeps deferrable services' minimum
    replicas serving (`saving_with_min_replicas_g`): what a ceiling controller can reach."""

    def as_json(self) -> dict[str, object]:
        """The `"bounds"` entry of `--json`."""
        cooling = self.bounds.cooling.as_json()
        values = dict(self.bounds.cooling.values)
        values["floor_kwh_by_policy"] = self.cooling_floor_kwh
        values["whole_replica_by_policy"] = {
            name: {
                "cooling_kwh": whole.cooling_kwh,
                "peak_inlet_c": whole.peak_inlet_c,
                "time_above_redline_s": whole.time_above_redline_s,
                "mip_gap": whole.mip_gap,
                "status": whole.statuses,
            }
            for name, whole in self.whole_replica.items()
        }
        cooling["values"] = values
        return {
            "throughput": self.bounds.throughput.as_json(),
            "cooling": cooling,
            "carbon": self.bounds.carbon.as_json(),
            "peak_to_average": self.bounds.peak_to_average.as_json(),
            "bound_row": self.bound_row,
            "baselines": self.baselines,
            "share_of_bound": self.shares,
            "carbon_share_of_bound_with_min_replicas": self.carbon_with_min_replicas,
            "notes": self.notes,
        }


COOLING_EXCESS_NEGLIGIBLE = 1e-9
"""A baseline's cooling within this share of its floor gains nothing a placement could share."""
NEGLIGIBLE_VIOLATION = 0.001
"""A policy keeps the cap when its violation is at most this share of cap x duration (W*s)."""


def keeps_cap(result: SimResult, policy: str) -> bool:
    """Whether `policy` stayed under the site cap, but for a negligible violation.

    The throughput bound keeps the cap; a policy that breaks it may serve more, so its tokens
    and SLO are not set against the bound (their share of bound is left out)."""
    allowed = NEGLIGIBLE_VIOLATION * result.site_cap_w * result.duration_s
    return result.policies[policy]["cap_violation_ws"] <= allowed


def _baseline(key: str, result: SimResult) -> str | None:
    return next((name for name in BASELINES[key] if name in result.policies), None)


def _share(policy: float, baseline: float, bound: float) -> float | None:
    """(policy - baseline) / (bound - baseline); None when the bound gains nothing."""
    gain = bound - baseline
    if not math.isfinite(gain) or abs(gain) <= 1e-12 * max(abs(bound), abs(baseline), 1.0):
        return None
    return (policy - baseline) / gain + 0.0  # no "-0 %" for the baseline itself


PROVEN_GAP = 1e-4
"""HiGHS's default relative MIP gap: a placement within it counts as proven optimal."""


def _gap_words(gap: float) -> str:
    """The worst placement's gap in words (no exponent notation in the summary)."""
    if gap <= PROVEN_GAP:
        return "every placement proven optimal (enumerated, or to HiGHS's 0.01 % gap)"
    if not math.isfinite(gap):
        return "some placements without a proven gap"
    return (
        f"placements found by search, each block's hottest rise within {gap * 100:.1f} % of a "
        "proven lower bound (--exact-placement: a MIP)"
    )


def compare(
    result: SimResult, bounds: ScenarioBounds, *, whole_replica: bool = False
) -> Comparison:
    """The run's `bound` row, baselines and shares of bound; with `whole_replica`, cooling also
    against the placement of each policy's own whole replicas (hundreds of searches: only
    where the run reports it)."""
    names = list(result.policies)
    floors = {
        name: bounds.cooling_floor_kwh(result.site_w_per_step[:, p]) for p, name in enumerate(names)
    }
    whole: dict[str, WholeReplicaCooling] = {}
    replicas, service_w = result.replicas_per_step, result.service_w_per_step
    if whole_replica and replicas is not None and service_w is not None:
        whole = {
            name: bounds.whole.evaluate(
                result.site_w_per_step[:, p], replicas[:, p], service_w[:, p]
            )
            for p, name in enumerate(names)
        }
    floors_by_key = {
        "cooling_kwh": floors,
        "cooling_whole_kwh": {name: w.cooling_kwh for name, w in whole.items()},
    }
    baselines = {key: _baseline(key, result) for key in SHARE_KEYS}
    thr = bounds.throughput.values
    row: dict[str, float] = {
        "tokens": float(thr["tokens"]),  # type: ignore[arg-type]
        "tokens_per_s": float(thr["tokens_per_s"]),  # type: ignore[arg-type]
        "slo_attainment": float(thr["slo_attainment"]),  # type: ignore[arg-type]
        "peak_to_average": float(bounds.peak_to_average.values["peak_to_average"]),  # type: ignore[arg-type]
    }
    notes: dict[str, str] = {}
    cooling_base = baselines["cooling_kwh"]
    if cooling_base is not None:
        row["cooling_kwh"] = floors[cooling_base]
        notes["cooling_kwh"] = (
            f"bound row: the least cooling for {cooling_base}'s IT power; shares are of the "
            "excess over each policy's own floor"
        )
        if cooling_base in whole:
            row["cooling_whole_kwh"] = whole[cooling_base].cooling_kwh
            notes["cooling_whole_kwh"] = (
                f"cooling (whole): against the best placement of each policy's own whole "
                f"replicas, block by block (bound row: {cooling_base}'s); "
                + _gap_words(max(w.mip_gap for w in whole.values()))
            )
    carbon_base = baselines["carbon_g_per_1k_tokens"]
    saving = float(bounds.carbon.values.get("saving_g", 0.0))  # type: ignore[arg-type]
    if carbon_base is not None and math.isfinite(saving):
        base = result.policies[carbon_base]
        if base["tokens"] > 0:
            row["carbon_g_per_1k_tokens"] = (
                base["carbon_g_per_1k_tokens"] - saving / base["tokens"] * 1000.0
            )
            notes["carbon_g_per_1k_tokens"] = (
                f"bound row: {carbon_base}'s emissions less the most that moving deferrable "
                "work can save, per thousand of its tokens"
            )
    with_min: dict[str, float | None] = {}
    fair = _carbon_with_min_replicas(result, bounds, carbon_base)
    if fair is not None:
        bound_g, with_min = fair
        notes["carbon_with_min_replicas"] = (
            f"carbon bound keeping deferrable services' minimum replicas serving: {bound_g:.4g} "
            "g per 1k tokens; share of it: "
            + ", ".join(f"{name} {_percent(share)}" for name, share in with_min.items())
        )
    shares: dict[str, dict[str, float | None]] = {}
    for name in [*names, BOUND_ROW]:
        figures = row if name == BOUND_ROW else result.policies[name]
        mine: dict[str, float | None] = {}
        for key in SHARE_KEYS:
            base_name = baselines[key]
            if base_name is None or key not in row:
                mine[key] = None
                continue
            if key in THROUGHPUT_KEYS and name != BOUND_ROW and not keeps_cap(result, name):
                mine[key] = None  # it breaks the cap the bound keeps
                continue
            if key in COOLING_KEYS:
                floor = floors_by_key[key]
                cooled = result.policies[base_name]["cooling_kwh"]
                excess_base = cooled - floor[base_name]
                excess = (
                    0.0 if name == BOUND_ROW else result.policies[name]["cooling_kwh"] - floor[name]
                )
                # A fixed supply air makes cooling the same for every placement of the same
                # IT power: the baseline's excess is rounding, not a gain to share.
                negligible = COOLING_EXCESS_NEGLIGIBLE * cooled
                mine[key] = (
                    None if abs(excess_base) <= negligible else _share(excess, excess_base, 0.0)
                )
            else:
                mine[key] = _share(figures[key], result.policies[base_name][key], row[key])
        shares[name] = mine
    return Comparison(
        bounds=bounds,
        bound_row=row,
        baselines=baselines,
        shares=shares,
        cooling_floor_kwh=floors,
        notes=notes,
        whole_replica=whole,
        carbon_with_min_replicas=with_min,
    )


def _carbon_with_min_replicas(
    result: SimResult, bounds: ScenarioBounds, base_name: str | None
) -> tuple[float, dict[str, float | None]] | None:
    """The carbon bound that keeps the minimum replicas serving, in g per thousand of the
    baseline's tokens, and each policy's share of it; None without one."""
    saving = float(bounds.carbon.values.get("saving_with_min_replicas_g", math.nan))  # type: ignore[arg-type]
    if base_name is None or not math.isfinite(saving):
        return None
    base = result.policies[base_name]
    if base["tokens"] <= 0:
        return None
    key = "carbon_g_per_1k_tokens"
    bound = base[key] - saving / base["tokens"] * 1000.0
    return bound, {
        name: _share(figures[key], base[key], bound) for name, figures in result.policies.items()
    }


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{round(share * 100)} %"
