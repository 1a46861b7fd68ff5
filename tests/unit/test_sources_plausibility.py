"""Hostile measurements: a value no real system produces is "no data", never a decision.

Whoever writes a PowerCappingConfig chooses the Prometheus the controller asks, so every value
may be hostile: negative watts, 5e307 W, NaN, 1e12 tokens/s, a 500 °C inlet. None of them may
reach the policies (whose domain types refuse them, which used to fail every reconcile).
"""

from __future__ import annotations

import math
from typing import Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from climatik.sources.plausibility import PlausibilityLimits, PlausibleRange
from climatik.sources.power import PrometheusPowerSource
from climatik.sources.power_queries import (
    PowerQueryConfig,
    TargetPods,
    TokensQueryConfig,
    build_grouped_power_queries,
    build_grouped_tokens_query,
)
from climatik.sources.power_readings import Reading
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_results import (
    InstantResult,
    NoData,
    NoDataReason,
    PodSamples,
    RangeResult,
    Sample,
    Vector,
)
from climatik.sources.racks import PrometheusRackSignalSource, RackNodes, RackSignalQueries

NOW = 1000.0
LIMITS = PlausibilityLimits(max_watts_per_server=10_000.0, max_tokens_per_s_per_pod=5_000.0)
POWER = PowerQueryConfig()
TOKENS = TokensQueryConfig()
_power = build_grouped_power_queries(POWER)
_tokens = build_grouped_tokens_query(TOKENS)
assert _power is not None
assert _power.gpu_watts is not None
assert _tokens is not None
CPU_Q, GPU_Q, FRESH_Q, TOKENS_Q = (
    _power.watts.promql,
    _power.gpu_watts.promql,
    _power.freshness.promql,
    _tokens.promql,
)
TOTAL_Q = "sum(site_watts)"
RACK_TEMP_Q = "max by (rack) (inlet_celsius)"


class Answers:
    """Answers every query from a table of samples; grouped queries are indexed by pod."""

    def __init__(self, table: dict[str, list[Sample]]) -> None:
        self.table = table

    @property
    def address(self) -> str:
        return "http://answers"

    @property
    def settings(self) -> PrometheusSettings:
        return PrometheusSettings(max_sample_age_s=60.0)

    async def query(
        self,
        promql: str,
        *,
        at_s: float | None = None,
        lookback_delta_s: float | Literal["default"] | None = "default",
        check_age: bool = True,
    ) -> InstantResult:
        samples = self.table.get(promql, [])
        finite = tuple(s for s in samples if math.isfinite(s.value))
        if not finite:
            return NoData(NoDataReason.NAN if samples else NoDataReason.EMPTY, promql)
        return Vector(samples=finite, dropped=len(samples) - len(finite))

    async def query_by_pod(
        self,
        promql: str,
        *,
        namespace_label: str,
        pod_label: str,
        lookback_delta_s: float | Literal["default"] | None = "default",
        asked_after_s: float | None = None,
    ) -> PodSamples:
        by_pod: dict[tuple[str, str], tuple[Sample, ...]] = {}
        for s in self.table.get(promql, []):
            key = (s.labels[namespace_label], s.labels[pod_label])
            by_pod[key] = (*by_pod.get(key, ()), s)
        return PodSamples(query=promql, by_pod=by_pod)

    async def query_range(
        self,
        promql: str,
        *,
        start_s: float,
        end_s: float,
        step_s: float,
        lookback_delta_s: float | Literal["default"] | None = "default",
        grouped: bool = False,
    ) -> RangeResult:
        return NoData(NoDataReason.EMPTY, promql)


def pod_sample(pod: str, value: float, *, vllm: bool = False, ns: str = "llm") -> Sample:
    labels = {"namespace": ns, "pod": pod} if vllm else {"pod_namespace": ns, "pod_name": pod}
    return Sample(labels=labels, value=value, timestamp_s=NOW)


def source(table: dict[str, list[Sample]]) -> PrometheusPowerSource:
    return PrometheusPowerSource(
        Answers(table), power=POWER, tokens=TOKENS, plausibility=LIMITS, clock=lambda: NOW
    )


def rack_source(
    table: dict[str, list[Sample]], queries: RackSignalQueries
) -> PrometheusRackSignalSource:
    return PrometheusRackSignalSource(
        Answers(table), queries, plausibility=LIMITS, clock=lambda: NOW
    )


TARGET = TargetPods("llm/chat", "llm", ("a", "b"))


def test_range_names_the_value_and_the_bound() -> None:
    bounds = LIMITS.pod_watts(2)
    assert bounds == PlausibleRange(0.0, 20_000.0, "W", "2 pod(s) x 10000 W per server at most")
    assert bounds.problem(20_000.0) is None
    assert bounds.problem(-50.0) == (
        "-50 W is outside the plausible range 0..20000 W: 2 pod(s) x 10000 W per server at most"
    )
    assert bounds.problem(math.nan) is not None
    assert LIMITS.server_watts(0).high == 10_000.0  # at least one server's worth
    with pytest.raises(ValueError, match="positive"):
        PlausibilityLimits(max_watts_per_server=0.0)


@pytest.mark.parametrize(
    ("cpu", "why"),
    [
        ({"a": -50.0, "b": -50.0}, "a negative sample (-50) for pod(s) a, b"),
        ({"a": 5e307, "b": 1.0}, "5e+307 W is outside the plausible range 0..20000 W"),
        ({"a": 15_000.0, "b": 15_000.0}, "30000 W is outside the plausible range 0..20000 W"),
    ],
)
async def test_implausible_target_watts_are_no_data_naming_query_value_and_bound(
    cpu: dict[str, float], why: str
) -> None:
    table = {
        CPU_Q: [pod_sample(p, v) for p, v in cpu.items()],
        FRESH_Q: [pod_sample("a", NOW)],
    }
    result = (await source(table).measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, NoData)
    assert result.watts.reason is NoDataReason.IMPLAUSIBLE
    assert why in result.watts.message
    assert CPU_Q in result.watts.message
    assert result.watts_or_none is None


async def test_implausible_tokens_are_no_data_and_do_not_hide_power() -> None:
    table = {
        CPU_Q: [pod_sample("a", 300.0)],
        TOKENS_Q: [pod_sample("a", -5.0, vllm=True)],
    }
    negative = (await source(table).measure_targets([TARGET]))["llm/chat"]
    assert negative.watts_or_none == 300.0
    assert isinstance(negative.tokens_per_s, NoData)
    assert negative.tokens_per_s.reason is NoDataReason.IMPLAUSIBLE
    table[TOKENS_Q] = [pod_sample("a", 6_000.0, vllm=True), pod_sample("b", 6_000.0, vllm=True)]
    too_many = (await source(table).measure_targets([TARGET]))["llm/chat"]
    assert too_many.tokens_per_s_or_none is None
    assert "12000 tokens/s" in too_many.tokens_per_s.message  # type: ignore[union-attr]


async def test_scope_total_is_bounded_by_the_node_count() -> None:
    table = {TOTAL_Q: [Sample({}, 25_000.0, NOW)]}
    assert await source(table).measure_total(TOTAL_Q, servers=3) == Reading(25_000.0, NOW, TOTAL_Q)
    over = await source(table).measure_total(TOTAL_Q, servers=2)
    assert isinstance(over, NoData)
    assert over.reason is NoDataReason.IMPLAUSIBLE
    assert "2 node(s)" in over.message
    negative = await source({TOTAL_Q: [Sample({}, -1.0, NOW)]}).measure_total(TOTAL_Q)
    assert isinstance(negative, NoData)


async def test_rack_power_and_inlet_temperature_are_bounded() -> None:
    racks = [RackNodes("r1", ("n1", "n2")), RackNodes("r2", ())]
    per_rack_power = 'sum(node_watts{node=~"$nodes"})'
    table = {
        'sum(node_watts{node=~"n1|n2"})': [Sample({}, 25_000.0, NOW)],
        RACK_TEMP_Q: [Sample({"rack": "r1"}, 24.0, NOW), Sample({"rack": "r2"}, 150.0, NOW)],
    }
    queries = RackSignalQueries(
        power_query=per_rack_power, inlet_temperature_query=RACK_TEMP_Q, history_window_s=0
    )
    result = await rack_source(table, queries).read_racks(racks[:1])
    assert result["r1"].watts is None
    assert (
        "watts: implausible value: 25000 W is outside the plausible range 0..20000 W: 2 node(s)"
        in result["r1"].problems[0]
    )
    assert result["r1"].inlet_c == 24.0
    hot = (await rack_source(table, queries).read_racks(racks))["r2"]
    assert hot.inlet_c is None
    assert any("inlet_c: implausible value: 150 °C" in p for p in hot.problems)


_HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-50.0, 5e307, -0.0, 0.0, 1e-320, 1e300, 9_999.0, 10_001.0]),
)
_PODS = st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(  # finite values whose sum overflows (math.fsum would raise)
    cpu={"a": 1e308, "b": 1e308},
    gpu={},
    tokens={"a": 1e308, "b": 1e308},
    total=[1e308, 1e308],
    temperature=20.0,
    pods=[["a", "b"]],
    nodes=1,
)
@given(
    cpu=st.dictionaries(st.sampled_from(["a", "b", "c", "x"]), _HOSTILE, max_size=4),
    gpu=st.dictionaries(st.sampled_from(["a", "b", "c", "x"]), _HOSTILE, max_size=4),
    tokens=st.dictionaries(st.sampled_from(["a", "b", "c", "x"]), _HOSTILE, max_size=4),
    total=st.lists(_HOSTILE, max_size=3),
    temperature=_HOSTILE,
    pods=st.lists(_PODS, min_size=1, max_size=3),
    nodes=st.integers(min_value=0, max_value=4),
)
async def test_no_reading_is_ever_negative_non_finite_or_out_of_bound(
    cpu: dict[str, float],
    gpu: dict[str, float],
    tokens: dict[str, float],
    total: list[float],
    temperature: float,
    pods: list[list[str]],
    nodes: int,
) -> None:
    table = {
        CPU_Q: [pod_sample(p, v) for p, v in cpu.items()],
        GPU_Q: [pod_sample(p, v) for p, v in gpu.items()],
        FRESH_Q: [pod_sample(p, NOW) for p in cpu],
        TOKENS_Q: [pod_sample(p, v, vllm=True) for p, v in tokens.items()],
        TOTAL_Q: [Sample({"gpu": str(i)}, v, NOW) for i, v in enumerate(total)],
        RACK_TEMP_Q: [Sample({"rack": "r1"}, temperature, NOW)],
        "sum(rack_watts)": [Sample({"rack": "r1"}, v, NOW) for v in total[:1]],
    }
    queries = RackSignalQueries(
        power_query="sum(rack_watts)", inlet_temperature_query=RACK_TEMP_Q, history_window_s=0
    )
    measure = source(table)
    targets = [TargetPods(f"llm/t{i}", "llm", tuple(p)) for i, p in enumerate(pods)]
    node_names = tuple(f"n{i}" for i in range(nodes))

    def check(outcome: object, high: float) -> None:
        if isinstance(outcome, Reading):
            assert math.isfinite(outcome.value)
            assert 0.0 <= outcome.value <= high

    for target in targets:
        measured = (await measure.measure_targets([target]))[target.key]
        check(measured.watts, LIMITS.pod_watts(len(target.pods)).high)
        check(measured.tokens_per_s, LIMITS.pod_tokens_per_s(len(target.pods)).high)
    check(await measure.measure_total(TOTAL_Q, servers=nodes), LIMITS.server_watts(nodes).high)
    rack = (await rack_source(table, queries).read_racks([RackNodes("r1", node_names)]))["r1"]
    if rack.watts is not None:
        assert math.isfinite(rack.watts)
        assert 0.0 <= rack.watts <= LIMITS.server_watts(nodes).high
    if rack.inlet_c is not None:
        assert -30.0 <= rack.inlet_c <= 100.0
