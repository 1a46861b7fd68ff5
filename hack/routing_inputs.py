"""What each of the tokens-per-watt picker's rules earns on a routing scenario.

Runs `least-loaded`, `tokens-per-watt` and the `oracle` yardstick, then the picker with its
rules taken away one at a time (docs/simulate.md, "Routing"):

- `windowed-efficiency`: the picker before issue 22's fix: each replica's tokens per joule
  as the windowed rate of its last scrape (0 while it idles) and batch slots for room;
- `curve-no-budgets`: efficiency from each replica's learned load curve at the batch the
  request would join, batch slots for room;
- `curve-tpot-budget`: the curve and the time-per-output-token budget, no TTFT budget.

    python hack/routing_inputs.py hetero-routing --hours 2
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from climatik.domain.routing import EndpointReading, RoutingSettings
from climatik.sim.routing import (
    Router,
    generate_workload,
    policy_details,
    policy_figures,
    run_policy,
)
from climatik.sim.routing_replica import Replica
from climatik.sim.routing_scenario import load_routing_scenario


def _without_budgets(settings: RoutingSettings) -> RoutingSettings:
    return replace(settings, tpot_budget_s=None, ttft_budget_s=None)


class WindowedEfficiency(Router):
    def __init__(self, policy: str, replicas: list[Replica], settings: RoutingSettings) -> None:
        super().__init__(policy, replicas, _without_budgets(settings))

    def measured_readings(self, t: float) -> list[EndpointReading]:
        return [replace(r, curve=None) for r in super().measured_readings(t)]


class CurveNoBudgets(Router):
    def __init__(self, policy: str, replicas: list[Replica], settings: RoutingSettings) -> None:
        super().__init__(policy, replicas, _without_budgets(settings))


class CurveTpotBudget(Router):
    def __init__(self, policy: str, replicas: list[Replica], settings: RoutingSettings) -> None:
        super().__init__(policy, replicas, replace(settings, ttft_budget_s=None))


VARIANTS: dict[str, tuple[str, type[Router]]] = {
    "least-loaded": ("least-loaded", Router),
    "tokens-per-watt": ("tokens-per-watt", Router),
    "oracle": ("oracle", Router),
    "windowed-efficiency": ("tokens-per-watt", WindowedEfficiency),
    "curve-no-budgets": ("tokens-per-watt", CurveNoBudgets),
    "curve-tpot-budget": ("tokens-per-watt", CurveTpotBudget),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="hetero-routing")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    scenario = load_routing_scenario(args.scenario)
    seed = args.seed if args.seed is not None else scenario.seed
    workload = generate_workload(scenario, args.hours, seed)
    print(
        f"{'fed':20} {'tokens/J':>9} {'SLO %':>6} {'TTFT p95':>9} {'TBT p95':>8}  tokens by group"
    )
    for name, (policy, router_class) in VARIANTS.items():
        run = run_policy(scenario, workload, policy, args.hours, router_class)
        figures = policy_figures(run, scenario)
        shares = policy_details(run)["token_share_by_group"]
        assert isinstance(shares, dict)
        where = ", ".join(f"{group} {100 * share:.0f} %" for group, share in shares.items())
        print(
            f"{name:20} {figures['tokens_per_joule']:9.4f} {100 * figures['slo_attainment']:6.1f}"
            f" {figures['ttft_p95_s']:8.3f}s {figures['tbt_p95_s']:7.3f}s  {where}"
        )


if __name__ == "__main__":
    main()
