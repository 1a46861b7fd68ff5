"""The routing twin: one service's replicas, request by request, under each routing policy.

The fleet twin's services are fluids spread evenly over their replicas, so it cannot say which
replica a request goes to. Here every request is one: Poisson arrivals at the scenario's traffic
rate, lognormal prompt and output lengths, each sent at once by a router to one replica
(`routing_replica.Replica`: continuous batching with the twin's step times and power). Every
policy sees the same requests, so the rows of a run differ only by routing.

- `round-robin`: the next replica in turn.
- `least-loaded`: the fewest of the router's own requests open (ties by name).
- `tokens-per-watt`: `policies.routing.pick_endpoint`, the live router's function, fed what the
  live router reads: each replica's vLLM gauges (running, waiting, KV usage) and its tokens per
  GPU joule as a rate over `scrape.rate_window_s`, all as of the replica's last Prometheus
  scrape (every `scrape.interval_s`, staggered, so seconds old), its load curve fitted from its
  last `CURVE_WINDOWS` scrape windows with tokens (`policies.load_curve`: the GPU energy counter
  and vLLM's inter-token latency `_sum` and `_count`), its mean time to first token over the
  last window, plus the router's own open requests now and when that scrape was taken.
  Nothing else.
- `oracle`: the same picker fed exact, instant state (age 0, each replica's tokens per joule
  at its batch with this request added) and batch slots for room (no latency budgets): a
  labelled yardstick for what the router's readings cost in efficiency, not a bound.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace

import numpy as np

from climatik.domain.routing import EndpointReading, LoadCounters, LoadCurve, RoutingSettings
from climatik.policies.load_curve import CURVE_WINDOWS, LoadWindows, RecentSends
from climatik.policies.routing import pick_endpoint
from climatik.sim.routing_replica import (
    INF,
    Replica,
    Requests,
    prefill_seconds,
    replica_physics,
)
from climatik.sim.routing_scenario import RoutingScenario
from climatik.sim.workload import arrival_rates

RATE_STEP_S = 10.0
"""Step of the arrival-rate series; arrivals are Poisson within each step."""


@dataclass(frozen=True, slots=True)
class Workload:
    """The requests every policy of a run serves: arrival times, prompt and output lengths."""

    arrival_s: list[float]
    prompt_tokens: list[int]
    output_tokens: list[int]


def generate_workload(scenario: RoutingScenario, hours: float, seed: int) -> Workload:
    """Poisson arrivals at the traffic's rate from `start_hour`, and lengths around the means."""
    steps = max(1, math.ceil(hours * 3600.0 / RATE_STEP_S))
    start_s = np.arange(steps) * RATE_STEP_S
    hours_since_monday = np.asarray(scenario.start_hour + start_s / 3600.0, dtype=np.float64)
    rates = arrival_rates(scenario.traffic, hours_since_monday, RATE_STEP_S)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rates * RATE_STEP_S)
    arrival = np.repeat(start_s, counts) + rng.uniform(0.0, RATE_STEP_S, int(counts.sum()))
    arrival = np.sort(arrival[arrival < hours * 3600.0])
    n = arrival.size
    req = scenario.requests

    def lengths(mean: int) -> list[int]:
        sigma = req.length_sigma
        drawn = rng.lognormal(-0.5 * sigma * sigma, sigma, n) if sigma > 0 else np.ones(n)
        clipped = np.clip(np.rint(mean * drawn), 1, 8 * mean).astype(np.int64)
        return [int(x) for x in clipped]

    return Workload(arrival.tolist(), lengths(req.prompt_tokens), lengths(req.output_tokens))


@dataclass(slots=True)
class Sample:
    """One Prometheus scrape of a replica."""

    t: float
    running: int
    waiting: int
    kv_cache_usage: float
    tokens: float
    gpu_j: float
    open_requests: int
    """The router's own open requests to it at that moment (to compute `added_since_reading`)."""
    decode_s: float
    decode_tokens: float
    prefill_s: float
    prefills: int


@dataclass(slots=True)
class Scrapes:
    """A replica's recent scrapes: the newest is the reading, the window gives the rate, and
    the windows between successive scrapes the load curve (`policies.load_curve.LoadWindows`,
    as the live router keeps them)."""

    samples: deque[Sample] = field(default_factory=deque)
    tokens_per_joule: float | None = None
    load: LoadWindows = field(default_factory=lambda: LoadWindows(CURVE_WINDOWS))

    @property
    def curve(self) -> LoadCurve | None:
        return self.load.curve

    def add(self, sample: Sample, window_s: float) -> None:
        self.samples.append(sample)
        while len(self.samples) > 2 and sample.t - self.samples[1].t >= window_s:
            self.samples.popleft()
        oldest = self.samples[0]
        joules = sample.gpu_j - oldest.gpu_j
        self.tokens_per_joule = (sample.tokens - oldest.tokens) / joules if joules > 0 else None
        self.load.add(
            LoadCounters(
                t=sample.t,
                decode_s=sample.decode_s,
                decode_tokens=sample.decode_tokens,
                gpu_joules=sample.gpu_j,
                prefill_s=sample.prefill_s,
                prefills=sample.prefills,
            )
        )


@dataclass
class PolicyRun:
    """What one routing policy did with the run's requests."""

    requests: Requests
    replicas: list[Replica]
    end_s: float
    picks: Counter[str]


class Router:
    """Chooses a replica for each request under one policy.

    A subclass may feed the picker other readings (`measured_readings`) to find out which
    input matters, as `hack/routing_inputs.py` does; the policies of `climatik simulate` use
    this class as it is.
    """

    def __init__(self, policy: str, replicas: list[Replica], settings: RoutingSettings) -> None:
        self.policy = policy
        self.replicas = replicas
        self.settings = settings
        self.turn = 0
        self.scrapes = [Scrapes() for _ in replicas]
        self.picks: Counter[str] = Counter()
        self.index = {r.name: i for i, r in enumerate(replicas)}
        self.by_name = sorted(range(len(replicas)), key=lambda i: replicas[i].name)
        self.oracle_settings = replace(settings, tpot_budget_s=None, ttft_budget_s=None)
        """The oracle's exact tokens per joule needs no curve, and without one no budget applies:
        it is the picker of batch slots on exact state."""
        self.sent_at = [RecentSends() for _ in replicas]
        """When this router sent each replica its recent requests (within the TTFT budget)."""

    def choose(self, t: float) -> int:
        if self.policy == "round-robin":
            chosen = self.turn % len(self.replicas)
            self.turn += 1
            return chosen
        if self.policy == "least-loaded":
            return min(self.by_name, key=lambda i: self.replicas[i].open_requests)
        if self.policy == "oracle":
            pick = pick_endpoint(self.exact_readings(), self.oracle_settings)
        else:
            pick = pick_endpoint(self.measured_readings(t), self.settings)
        self.picks[pick.reason.value] += 1
        assert pick.endpoint is not None  # every replica is healthy
        chosen = self.index[pick.endpoint]
        self.sent_at[chosen].sent(t)
        return chosen

    def _sent_recently(self, i: int, t: float) -> int:
        """Requests sent to replica `i` within the last `ttft_budget_s` (0 without one)."""
        return self.sent_at[i].within(self.settings.ttft_budget_s, t)

    def measured_readings(self, t: float) -> list[EndpointReading]:
        """What the live router knows at `t`: the last scrapes and its own open counts."""
        readings = []
        for i, (replica, scrapes) in enumerate(zip(self.replicas, self.scrapes, strict=True)):
            if not scrapes.samples:
                readings.append(EndpointReading(replica.name, open_requests=replica.open_requests))
                continue
            last = scrapes.samples[-1]
            readings.append(
                EndpointReading(
                    name=replica.name,
                    tokens_per_joule=scrapes.tokens_per_joule,
                    running=float(last.running),
                    waiting=float(last.waiting),
                    kv_cache_usage=last.kv_cache_usage,
                    age_s=t - last.t,
                    added_since_reading=replica.open_requests - last.open_requests,
                    open_requests=replica.open_requests,
                    curve=scrapes.curve,
                    sent_recently=self._sent_recently(i, t),
                )
            )
        return readings

    def exact_readings(self) -> list[EndpointReading]:
        """The oracle's: exact gauges now, tokens per joule at the batch with one more."""
        return [
            EndpointReading(
                name=r.name,
                tokens_per_joule=r.decode_tokens_per_joule(r.running + 1),
                running=float(r.running),
                waiting=float(len(r.waiting)),
                kv_cache_usage=r.kv_cache_usage,
                age_s=0.0,
                open_requests=r.open_requests,
            )
            for r in self.replicas
        ]

    def scrape(self, i: int, t: float, window_s: float) -> None:
        replica = self.replicas[i]
        replica.advance(t)
        sample = Sample(
            t,
            replica.running,
            len(replica.waiting),
            replica.kv_cache_usage,
            replica.tokens,
            replica.gpu_j,
            replica.open_requests,
            replica.decode_s,
            replica.decode_tokens,
            replica.prefill_sum_s,
            replica.prefill_count,
        )
        self.scrapes[i].add(sample, window_s)


def build_replicas(scenario: RoutingScenario, requests: Requests) -> list[Replica]:
    """The scenario's replicas, named `<group>-<n>`, with their prefill times for the run."""
    replicas = []
    for group in scenario.replicas:
        prefill = prefill_seconds(group, scenario, requests.prompt)
        replicas += [
            Replica(f"{group.name}-{n}", group, scenario, requests, prefill)
            for n in range(group.count)
        ]
    return replicas


def router_settings(scenario: RoutingScenario) -> RoutingSettings:
    """The picker's settings as a deployer sets them for this service."""
    router, slo = scenario.router, scenario.slo
    return RoutingSettings(
        max_reading_age_s=router.max_reading_age_s,
        kv_cache_limit=router.kv_cache_limit,
        max_batch=router.max_batch or scenario.model_class.max_batch,
        tpot_budget_s=slo.tbt_s if router.tpot_budget_s == "slo" else router.tpot_budget_s,
        ttft_budget_s=slo.ttft_s if router.ttft_budget_s == "slo" else router.ttft_budget_s,
    )


def run_policy(
    scenario: RoutingScenario,
    workload: Workload,
    policy: str,
    hours: float,
    router_class: type[Router] = Router,
) -> PolicyRun:
    """Serve every request of `workload` under `policy` until the last one is done, and at
    least `hours` (every replica's energy counts to the same end)."""
    requests = Requests(workload.arrival_s, workload.prompt_tokens, workload.output_tokens)
    replicas = build_replicas(scenario, requests)
    router = router_class(policy, replicas, router_settings(scenario))
    interval, window = scenario.scrape.interval_s, scenario.scrape.rate_window_s
    n = len(replicas)
    # Prometheus spreads its targets over the interval.
    scrape_next = [interval * (i + 1) / n for i in range(n)]
    arrival = workload.arrival_s
    total = len(arrival)
    scrapes_needed = policy == "tokens-per-watt"
    next_arrival = 0
    last = 0.0
    while True:
        ta = arrival[next_arrival] if next_arrival < total else INF
        r = min(range(n), key=lambda i: replicas[i].next_event)
        tr = replicas[r].next_event
        s = min(range(n), key=scrape_next.__getitem__) if scrapes_needed else 0
        ts = scrape_next[s] if scrapes_needed and next_arrival < total else INF
        now = min(ta, tr, ts)
        if now == INF:
            break
        last = now
        if tr == now:
            replicas[r].handle(now)
        elif ts == now:
            router.scrape(s, now, window)
            scrape_next[s] += interval
        else:
            replicas[router.choose(now)].arrive(next_arrival, now)
            next_arrival += 1
    end_s = max(last, hours * 3600.0)
    for replica in replicas:
        replica.finish_at(end_s)
    return PolicyRun(requests, replicas, end_s, router.picks)


METRIC_KEYS = (
    "requests",
    "timed_out",
    "tokens",
    "energy_kwh",
    "tokens_per_joule",
    "ttft_p50_s",
    "ttft_p95_s",
    "tbt_p95_s",
    "slo_attainment",
)


def energy_bound_j(scenario: RoutingScenario, workload: Workload, hours: float) -> float:
    """The least IT energy any routing could serve the workload with: every server's idle
    draw for the run, each prompt's prefill and each further token at the cheapest replica's
    cost above idle (decode at its cheapest batch). It ignores capacity and latency, so it is
    a loose floor, and tokens over it a ceiling on tokens per joule."""
    idle_w = 0.0
    prefill_j: np.ndarray | None = None
    decode_j_per_token = math.inf
    prompts = workload.prompt_tokens
    for group in scenario.replicas:
        step, _, srv_dec, _, srv_pre = replica_physics(group, scenario)
        idle = float(srv_dec[0])
        idle_w += group.count * idle
        pre = (srv_pre - idle) * np.asarray(prefill_seconds(group, scenario, prompts))
        prefill_j = pre if prefill_j is None else np.minimum(prefill_j, pre)
        batch = np.arange(1, step.size)
        per_token = (srv_dec[1:] - idle) * step[1:] / batch
        decode_j_per_token = min(decode_j_per_token, float(per_token.min()))
    further_tokens = sum(workload.output_tokens) - len(workload.output_tokens)
    dynamic = float(prefill_j.sum()) if prefill_j is not None else 0.0
    return idle_w * hours * 3600.0 + dynamic + further_tokens * decode_j_per_token


@dataclass
class RoutingResult:
    """A routing run's figures: one row per policy, and where each policy sent its requests."""

    scenario: str
    duration_s: float
    decode_power: str
    policies: dict[str, dict[str, float]]
    details: dict[str, dict[str, object]]
    bound_tokens_per_joule: float
    """Tokens of the workload over `energy_bound_j`: no routing can do better."""

    def as_json(self) -> dict[str, object]:
        """The `--json` document."""
        return {
            "scenario": self.scenario,
            "mode": "routing",
            "duration_s": self.duration_s,
            "decode_power": self.decode_power,
            "policies": self.policies,
            "details": self.details,
            "bound": {"tokens_per_joule": self.bound_tokens_per_joule},
        }


def _quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile without interpolation, so a share of given-up requests (inf) above 1 - q
    makes it inf rather than nan."""
    if values.size == 0:
        return math.nan
    return float(np.quantile(values, q, method="inverted_cdf"))


def policy_figures(run: PolicyRun, scenario: RoutingScenario) -> dict[str, float]:
    """The row of one policy: tokens, IT energy, tokens per joule, TTFT, TBT, SLO."""
    req = run.requests
    arrival = np.asarray(req.arrival)
    served = np.asarray(req.served)
    output = np.asarray(req.output, dtype=np.float64)
    first = np.asarray(req.first_token)
    finish = np.asarray(req.finish)
    ttft = np.where(served, first - arrival, INF)
    decode_tokens = np.maximum(output - 1, 1)
    tbt = np.where(served & (output > 1), (finish - first) / decode_tokens, 0.0)
    tokens = float(output[served].sum())
    energy_j = sum(r.srv_j for r in run.replicas)
    met = served & (ttft <= scenario.slo.ttft_s) & (tbt <= scenario.slo.tbt_s)
    n = max(len(req.arrival), 1)
    return {
        "requests": float(len(req.arrival)),
        "timed_out": float(np.count_nonzero(req.timed_out)),
        "tokens": tokens,
        "energy_kwh": energy_j / 3.6e6,
        "tokens_per_joule": tokens / energy_j if energy_j > 0 else 0.0,
        "ttft_p50_s": _quantile(ttft, 0.5),
        "ttft_p95_s": _quantile(ttft, 0.95),
        "tbt_p95_s": _quantile(tbt[served & (output > 1)], 0.95),
        "slo_attainment": float(np.count_nonzero(met)) / n,
    }


def policy_details(run: PolicyRun) -> dict[str, object]:
    """Where the requests and tokens went (per replica and per group) and the picker's
    reasons."""
    tokens: dict[str, float] = {}
    energy: dict[str, float] = {}
    for replica in run.replicas:
        group = replica.group.name
        tokens[group] = tokens.get(group, 0.0) + replica.tokens
        energy[group] = energy.get(group, 0.0) + replica.srv_j / 3.6e6
    total = max(sum(tokens.values()), 1.0)
    return {
        "requests_by_replica": {r.name: r.sent for r in run.replicas},
        "token_share_by_group": {name: tokens[name] / total for name in tokens},
        "energy_kwh_by_group": energy,
        "picks": dict(run.picks),
        "end_s": run.end_s,
    }


def run_routing(
    scenario: RoutingScenario,
    policies: list[str] | None = None,
    hours: float | None = None,
    seed: int | None = None,
) -> RoutingResult:
    """Every policy on the same requests."""
    hours = hours if hours is not None else scenario.duration_h
    workload = generate_workload(scenario, hours, seed if seed is not None else scenario.seed)
    figures: dict[str, dict[str, float]] = {}
    details: dict[str, dict[str, object]] = {}
    for policy in policies or scenario.policies:
        run = run_policy(scenario, workload, policy, hours)
        figures[policy] = policy_figures(run, scenario)
        details[policy] = policy_details(run)
    bound = sum(workload.output_tokens) / energy_bound_j(scenario, workload, hours)
    return RoutingResult(
        scenario.name, hours * 3600.0, scenario.decode_power, figures, details, bound
    )
