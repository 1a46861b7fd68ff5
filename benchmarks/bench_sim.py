"""How fast the twin runs: simulated seconds per wall-clock second.

For `default` and `large` it times one run of the scenario's policies advanced together (the
way `climatik simulate` runs them), and, as the baseline measured in the same run, the same
policies run one after the other (one twin per policy, as a simulator without the policy axis
would). The ratio is what vectorising across policies buys. The baseline is timed on a shorter
window (`--baseline-hours`) so the whole benchmark stays within minutes on two cores.

    .venv/bin/python benchmarks/bench_sim.py [--large-hours H] [--baseline-hours H]
"""

from __future__ import annotations

import argparse
import time

from climatik.sim.engine import Twin
from climatik.sim.scenario import load_scenario


def _time_run(name: str, policies: list[str], hours: float) -> float:
    scenario = load_scenario(name)
    start = time.perf_counter()
    Twin(scenario, policies, hours=hours).run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-hours", type=float, default=None, help="default: the full week")
    parser.add_argument("--baseline-hours", type=float, default=6.0)
    args = parser.parse_args()

    rows = []
    for name, hours in (("default", None), ("large", args.large_hours)):
        scenario = load_scenario(name)
        run_hours = hours if hours is not None else scenario.duration_h
        policies = list(scenario.policies)
        batched_s = _time_run(name, policies, run_hours)
        base_h = min(args.baseline_hours, run_hours)
        together_s = _time_run(name, policies, base_h)
        one_by_one_s = sum(_time_run(name, [p], base_h) for p in policies)
        rows.append(
            (
                name,
                scenario.racks.servers * scenario.racks.gpus_per_server,
                len(policies),
                run_hours,
                batched_s,
                run_hours * 3600.0 / batched_s,
                base_h,
                one_by_one_s / together_s,
            )
        )

    header = (
        f"{'scenario':<10} {'GPUs':>5} {'policies':>8} {'sim h':>6} {'wall s':>8} "
        f"{'sim s / wall s':>15} {'baseline window h':>18} {'speed-up vs one-by-one':>23}"
    )
    print(header)
    print("-" * len(header))
    for name, gpus, n_pol, sim_h, wall_s, rate, base_h, ratio in rows:
        print(
            f"{name:<10} {gpus:>5} {n_pol:>8} {sim_h:>6.0f} {wall_s:>8.1f} {rate:>15.0f} "
            f"{base_h:>18.1f} {ratio:>22.2f}x"
        )


if __name__ == "__main__":
    main()
