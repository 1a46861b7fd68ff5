"""`climatik simulate --routing`: the routing twin's table, in the fleet summary's layout.

One row per routing policy (the `oracle` yardstick labelled as such), the columns of
`routing.METRIC_KEYS` each in one unit with its direction, then each policy's tokens per joule
against `least-loaded`'s and where each policy's tokens were generated, per replica group.
"""

from __future__ import annotations

from climatik.sim.routing import RoutingResult
from climatik.sim.routing_scenario import RoutingScenario
from climatik.sim.summary import COUNT, ENERGY, Column, format_column, lay_out, wrap

SECONDS = ((1.0, "s"),)

ROUTING_COLUMNS: tuple[Column, ...] = (
    Column("tokens", "tokens", "higher", COUNT, "Output tokens of the requests served."),
    Column(
        "energy_kwh",
        "energy",
        "lower",
        ENERGY,
        "IT energy of the service's servers (GPUs, base and overhead) until the last request "
        "ended.",
        to_base=1000.0,
    ),
    Column(
        "tokens_per_joule",
        "tokens/J",
        "higher",
        ((1.0, ""),),
        "Output tokens per joule of IT energy.",
        decimals=4,
    ),
    Column("ttft_p50_s", "TTFT p50", "lower", SECONDS, "Median time to first token.", decimals=3),
    Column(
        "ttft_p95_s",
        "TTFT p95",
        "lower",
        SECONDS,
        "95th percentile time to first token; a request given up counts as never served.",
        decimals=3,
    ),
    Column(
        "tbt_p95_s",
        "TBT p95",
        "lower",
        SECONDS,
        "95th percentile over requests of their mean time between tokens.",
        decimals=3,
    ),
    Column(
        "slo_attainment",
        "SLO",
        "higher",
        ((1.0, "%"),),
        "Requests served within both latency objectives (TTFT and mean TBT).",
        to_base=100.0,
        decimals=1,
    ),
)

ORACLE_LABEL = "oracle (exact)"


def _row_name(policy: str) -> str:
    return ORACLE_LABEL if policy == "oracle" else policy


def _replicas_line(scenario: RoutingScenario) -> str:
    groups = ", ".join(
        f"{g.count} x {g.gpu_model} at {g.clock_mhz or g.gpu.max_clock_mhz:g} MHz ({g.name})"
        for g in scenario.replicas
    )
    return f"{sum(g.count for g in scenario.replicas)} replicas of {scenario.model}: {groups}"


def routing_table(result: RoutingResult, scenario: RoutingScenario) -> str:
    """The run's table and notes, in at most 100 columns."""
    names = list(result.policies)
    lines = wrap(
        f"routing scenario {result.scenario}: {result.duration_s / 3600:g} h simulated, "
        f"{_replicas_line(scenario)}; decode power {result.decode_power}; SLO TTFT "
        f"{scenario.slo.ttft_s:g} s, TBT {scenario.slo.tbt_s:g} s"
    )
    formatted = [
        format_column(c, [result.policies[n][c.key] for n in names]) for c in ROUTING_COLUMNS
    ]
    headers = [
        ["routing", *(c.title for c in ROUTING_COLUMNS)],
        ["", *(f.unit for f in formatted)],
    ]
    rows = [[_row_name(n), *(f.cells[i] for f in formatted)] for i, n in enumerate(names)]
    lines += ["", *lay_out(headers, rows), ""]
    base = result.policies.get("least-loaded")
    if base is not None and base["tokens_per_joule"] > 0:
        gains = {
            n: result.policies[n]["tokens_per_joule"] / base["tokens_per_joule"] - 1
            for n in names
            if n != "least-loaded"
        }
        parts = [f"{_row_name(n)} {100 * gain:+.1f} %" for n, gain in gains.items()]
        lines += wrap("tokens/J against least-loaded: " + ", ".join(parts))
        bound = result.bound_tokens_per_joule
        base_tpj = base["tokens_per_joule"]
        gap = bound - base_tpj
        if gap > 0:
            of_bound = [
                f"{_row_name(n)} {100 * gain * base_tpj / gap:.0f} %" for n, gain in gains.items()
            ]
            lines += wrap(
                f"bound: {bound:.4f} tokens/J (every token at the cheapest replica's cost, "
                "capacity and latency ignored); share of the bound's gain over least-loaded: "
                + ", ".join(of_bound)
            )
    given_up = [f"{_row_name(n)} {result.policies[n]['timed_out']:,.0f}" for n in names]
    if any(result.policies[n]["timed_out"] for n in names):
        lines += wrap("requests given up (queued past queue_timeout_s): " + ", ".join(given_up))
    for name in names:
        shares = result.details[name]["token_share_by_group"]
        assert isinstance(shares, dict)
        where = ", ".join(f"{group} {100 * share:.0f} %" for group, share in shares.items())
        lines += wrap(f"tokens by replica group, {_row_name(name)}: {where}")
    lines += wrap(
        "↑ higher is better, ↓ lower is better. TTFT: time to first token (queue + prefill); "
        "TBT: a request's mean time between tokens; a request given up never gets a first "
        "token and misses its SLO. "
        f"{ORACLE_LABEL}: the tokens-per-watt picker fed exact, instant state, with batch "
        "slots for room (no latency budgets), a yardstick for what the router's readings cost "
        "in efficiency, not a bound."
    )
    return "\n".join(lines)
