"""What moving deferrable work in time can save on a twin scenario, at most.

The bound is the twin's own carbon bound (`climatik.sim.scenario_bounds.carbon_bound`, an LP
solved by HiGHS): the deferrable services' work, as it arrives, moved to the cleanest slots it
may reach within its deadline (the smaller of its TTFT objective and its queue timeout), within
its most replicas' capacity and the site cap, with perfect knowledge of arrivals and carbon.
`docs/simulate.md` ("Bounds") lists what it relaxes. It also prints the saving when the
minimum replicas a ceiling cannot stop serve the work that arrives and waits (the yardstick of
a ceiling controller).

For scale, the saving is also set against one run of the carbon-blind `climatik-no-carbon`
(`--no-run` skips it): its emissions and its emissions per thousand tokens.

    python hack/carbon_shift_bound.py carbon-swing
"""

from __future__ import annotations

import argparse
import sys

from climatik.sim.engine import Twin
from climatik.sim.scenario import load_scenario
from climatik.sim.scenario_bounds import carbon_bound

POLICY = "climatik-no-carbon"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="carbon-swing")
    parser.add_argument("--hours", type=float, help="instead of the scenario's duration")
    parser.add_argument("--no-run", action="store_true", help="skip the carbon-blind run")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    bound = carbon_bound(scenario, args.hours)
    values = bound.values
    flexible = values["deferrable_services"]
    if not flexible:
        sys.exit(f"{args.scenario} has no deferrable services: nothing can be shifted")
    on_arrival = float(values["on_arrival_g"])  # type: ignore[arg-type]
    optimal = float(values["optimal_g"])  # type: ignore[arg-type]
    saving = float(values["saving_g"])  # type: ignore[arg-type]
    print(f"scenario {args.scenario}: deferrable {', '.join(map(str, flexible))}")
    print(f"  LP status      {bound.status} (HiGHS, MIP gap {bound.mip_gap:g})")
    print(f"  on arrival     {on_arrival / 1000:.2f} kg CO2")
    print(f"  moved at best  {optimal / 1000:.2f} kg CO2")
    print(f"  saving         {saving / 1000:.2f} kg ({saving / on_arrival:.1%} of the work's own)")
    with_min = float(values["saving_with_min_replicas_g"])  # type: ignore[arg-type]
    print(f"  with min replicas serving what waits: saving {with_min / 1000:.2f} kg")
    if args.no_run:
        return
    result = Twin(scenario, [POLICY], hours=args.hours).run()
    figures = result.policies[POLICY]
    print(
        f"  {POLICY}: {figures['carbon_g'] / 1000:.1f} kg, "
        f"{figures['carbon_g_per_1k_tokens']:.4f} g per 1k tokens"
    )
    per_1k = saving / figures["tokens"] * 1000.0
    print(
        f"  bound: at most {saving / figures['carbon_g']:.1%} less CO2 than {POLICY} "
        f"({figures['carbon_g_per_1k_tokens'] - per_1k:.4f} g per 1k of its tokens)"
    )


if __name__ == "__main__":
    main()
