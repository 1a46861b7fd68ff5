"""Which of the router's inputs misleads the tokens-per-watt picker on a routing scenario.

Runs `least-loaded`, `tokens-per-watt` and the `oracle` yardstick, then the picker fed one
input changed at a time (docs/simulate.md, "Routing"):

- `exact-gauges`: running, waiting and KV usage exact and instant, tokens per joule still the
  windowed rate of the last scrape;
- `physics-efficiency`: the scraped gauges, and tokens per joule from the physics at the scraped
  batch plus one (what a router that knew each replica's curve would use);
- `best-of-30-min`: the scraped gauges, and each replica's best windowed tokens per joule of
  the last 30 minutes (an idle replica keeps what it showed when it last had a batch).

    python hack/routing_inputs.py hetero-routing --hours 2
"""

from __future__ import annotations

import argparse
from collections import deque

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

MEMORY_S = 1800.0


class ExactGauges(Router):
    def measured_readings(self, t: float) -> list[EndpointReading]:
        readings = []
        for replica, scrapes in zip(self.replicas, self.scrapes, strict=True):
            if scrapes.tokens_per_joule is None:
                readings.append(EndpointReading(replica.name, open_requests=replica.open_requests))
                continue
            readings.append(
                EndpointReading(
                    replica.name,
                    tokens_per_joule=scrapes.tokens_per_joule,
                    running=float(replica.running),
                    waiting=float(len(replica.waiting)),
                    kv_cache_usage=replica.kv_cache_usage,
                    age_s=0.0,
                    open_requests=replica.open_requests,
                )
            )
        return readings


class PhysicsEfficiency(Router):
    def measured_readings(self, t: float) -> list[EndpointReading]:
        readings = super().measured_readings(t)
        return [
            reading
            if not scrapes.samples
            else _with_efficiency(
                reading, replica.decode_tokens_per_joule(scrapes.samples[-1].running + 1)
            )
            for reading, replica, scrapes in zip(readings, self.replicas, self.scrapes, strict=True)
        ]


class BestOf30Min(Router):
    def __init__(self, policy: str, replicas: list[Replica], settings: RoutingSettings) -> None:
        super().__init__(policy, replicas, settings)
        self.best: list[deque[tuple[float, float]]] = [deque() for _ in replicas]

    def scrape(self, i: int, t: float, window_s: float) -> None:
        super().scrape(i, t, window_s)
        history, scrapes = self.best[i], self.scrapes[i]
        if scrapes.tokens_per_joule is not None:
            history.append((t, scrapes.tokens_per_joule))
        while history and t - history[0][0] > MEMORY_S:
            history.popleft()
        if history:
            scrapes.tokens_per_joule = max(value for _, value in history)


def _with_efficiency(reading: EndpointReading, tokens_per_joule: float) -> EndpointReading:
    return EndpointReading(
        reading.name,
        tokens_per_joule=tokens_per_joule,
        running=reading.running,
        waiting=reading.waiting,
        kv_cache_usage=reading.kv_cache_usage,
        age_s=reading.age_s,
        added_since_reading=reading.added_since_reading,
        open_requests=reading.open_requests,
    )


VARIANTS: dict[str, tuple[str, type[Router]]] = {
    "least-loaded": ("least-loaded", Router),
    "tokens-per-watt": ("tokens-per-watt", Router),
    "oracle": ("oracle", Router),
    "exact-gauges": ("tokens-per-watt", ExactGauges),
    "physics-efficiency": ("tokens-per-watt", PhysicsEfficiency),
    "best-of-30-min": ("tokens-per-watt", BestOf30Min),
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
