"""GPUs per replica chosen each hour against every fixed size, over a grid of diurnal days
(docs/vpa.md, "GPUs per replica in the twin"): one 70B service on H100 servers, its peak load
and its trough as a share of the peak varied, nothing else.

    python hack/replica_sizing.py
"""

from __future__ import annotations

from climatik.policies.gpus_per_replica import ModelProfile
from climatik.sim.replica_sizing import GPUS_PER_SERVER, SizingScenario, compare
from climatik.sim.scenario import Traffic

PEAKS_RPS = (1.0, 2.0, 3.0, 4.0, 8.0)
TROUGHS = (0.05, 0.2)


def main() -> None:
    print(
        "| peak req/s | trough | chosen each hour: tokens/J, SLO, resizes | "
        "fixed 4 GPUs: tokens/J, SLO | fixed 8 GPUs: tokens/J, SLO | vs best fixed |"
    )
    print("|---|---|---|---|---|---|")
    for peak in PEAKS_RPS:
        for trough in TROUGHS:
            scenario = SizingScenario(
                traffic=Traffic(peak_rps=peak, trough_fraction=trough, bursts_per_day=0.0),
                # The twin's replica watts include the servers' base draw shared per GPU, so the
                # idle the recommender subtracts is the GPU's idle plus that share.
                profile=ModelProfile(idle_w_per_gpu=75.0 + 2200.0 / GPUS_PER_SERVER),
            )
            chosen, fixed = compare(scenario)
            best = max(fixed, key=lambda r: r.tokens_per_joule)
            cells = " | ".join(f"{r.tokens_per_joule:.4f}, {r.slo_attainment:.2%}" for r in fixed)
            gain = chosen.tokens_per_joule / best.tokens_per_joule - 1
            print(
                f"| {peak:g} | {trough:.0%} | {chosen.tokens_per_joule:.4f}, "
                f"{chosen.slo_attainment:.2%}, {chosen.resizes} | {cells} | {gain:+.1%} |"
            )


if __name__ == "__main__":
    main()
