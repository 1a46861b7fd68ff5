"""GPUs per replica chosen through the day against every fixed size and against the physics'
ceiling, over a grid of diurnal days (docs/vpa.md, "GPUs per replica in the twin"): one 70B
service on H100 servers, its peak load and its trough as a share of the peak varied, and the
traffic's noise seed.

    python hack/replica_sizing.py [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from climatik.policies.gpus_per_replica import ModelProfile, SloGoal
from climatik.sim.replica_sizing import (
    GPUS_PER_SERVER,
    DayResult,
    SizingScenario,
    compare,
    oracle_day,
    run_day,
)
from climatik.sim.scenario import Traffic

PEAKS_RPS = (1.0, 2.0, 3.0, 4.0, 8.0)
TROUGHS = (0.05, 0.2)
GOAL = 0.10


def _cell(day: DayResult, best: DayResult, *, resizes: bool = False) -> str:
    gain = day.tokens_per_joule / best.tokens_per_joule - 1
    tail = f", {day.resizes}" if resizes else ""
    return f"{day.tokens_per_joule:.4f}, {day.slo_attainment:.3%}{tail} ({gain:+.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--slo-attainment",
        type=float,
        default=SloGoal().attainment * 100,
        help="the config's replicaSizing.sloAttainmentPercent: the share of requests a chosen "
        "size must be predicted to serve in time (default %(default)g)",
    )
    args = parser.parse_args()
    seeds = args.seeds
    slo = SloGoal(attainment=args.slo_attainment / 100)
    print(
        "| seed | peak req/s | trough | chosen every 15 min: tokens/J, SLO, resizes "
        "(vs best fixed) | chosen each hour | fixed 4 GPUs | fixed 8 GPUs | oracle each step |"
    )
    print("|---|---|---|---|---|---|---|---|")
    reached = {"15 min": 0, "hour": 0, "oracle": 0}
    below = dict.fromkeys(reached, 0.0)
    days = 0
    for seed in seeds:
        for peak in PEAKS_RPS:
            for trough in TROUGHS:
                scenario = SizingScenario(
                    traffic=Traffic(
                        peak_rps=peak, trough_fraction=trough, bursts_per_day=0.0, seed=seed
                    ),
                    # The twin's replica watts include the servers' base draw shared per GPU,
                    # so the idle the recommender subtracts is the GPU's idle plus that share.
                    profile=ModelProfile(idle_w_per_gpu=75.0 + 2200.0 / GPUS_PER_SERVER),
                    slo=slo,
                )
                chosen, fixed = compare(scenario)
                hourly = run_day(replace(scenario, decide_every_s=3600.0), None)
                oracle = oracle_day(scenario)
                best = max(fixed, key=lambda r: r.tokens_per_joule)
                days += 1
                for name, day in (("15 min", chosen), ("hour", hourly), ("oracle", oracle)):
                    if day.tokens_per_joule >= (1 + GOAL) * best.tokens_per_joule:
                        reached[name] += 1
                        below[name] = max(
                            below[name], 100 * (best.slo_attainment - day.slo_attainment)
                        )
                cells = " | ".join(_cell(r, best) for r in fixed)
                print(
                    f"| {seed} | {peak:g} | {trough:.0%} | {_cell(chosen, best, resizes=True)} | "
                    f"{_cell(hourly, best, resizes=True)} | {cells} | {_cell(oracle, best)} |"
                )
    print()
    print(
        f"days at >= {GOAL:.0%} more tokens/J than the best fixed size, of {days}: "
        + ", ".join(f"{name} {count}" for name, count in reached.items())
    )
    print(
        "on those days, SLO attainment at most this many points below the best fixed size's: "
        + ", ".join(f"{name} {points:.4f}" for name, points in below.items())
    )


if __name__ == "__main__":
    main()
