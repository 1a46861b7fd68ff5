"""How PrometheusPowerSource turns Prometheus answers into readings: no data is never zero,
stale data is no data, one bad query does not hide another."""

from __future__ import annotations

import math

import pytest

from climatik.sources.power import PrometheusPowerSource, PrometheusQueryShapeError
from climatik.sources.power_queries import PowerQueryConfig, TargetPods, build_power_query
from climatik.sources.power_readings import Reading
from climatik.sources.prometheus_results import (
    NoData,
    NoDataReason,
    PrometheusHTTPError,
    PrometheusUnreachableError,
    Sample,
    Vector,
)
from tests.unit.helpers.prometheus_table import (
    CPU_Q,
    FINISHED_Q,
    FRESH_Q,
    GPU_Q,
    POWER,
    TARGET,
    TOKENS,
    TOKENS_Q,
    WAITING_Q,
    TableQuerier,
    one,
    per_pod,
)

# ---------------------------------------------------------------------------------------------
# PrometheusPowerSource over a querier that answers from a table


async def test_target_reading_sums_its_own_pods_cpu_gpu_and_tokens() -> None:
    querier = TableQuerier(
        {
            CPU_Q: per_pod({"a": 100.0, "b": 50.0, "c": 1000.0}),
            GPU_Q: per_pod({"a": 150.0}),
            FRESH_Q: per_pod({"a": 995.0, "b": 990.0}),
            TOKENS_Q: per_pod({"a": 30.0, "b": 10.0}, labels="vllm"),
        }
    )
    source = PrometheusPowerSource(querier, power=POWER, tokens=TOKENS, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    # Pod c is not the target's; pod b has no GPU series (0 W of GPU).
    assert result.watts == Reading(value=300.0, measured_at_s=995.0, query=CPU_Q)
    assert result.tokens_per_s == Reading(value=40.0, measured_at_s=1000.0, query=TOKENS_Q)
    assert result.watts_or_none == 300.0
    assert result.tokens_per_s_or_none == 40.0


async def test_a_config_reads_only_its_own_namespace_and_pods() -> None:
    answers = per_pod({"a": 100.0}, ns="other")  # same pod name, another namespace
    querier = TableQuerier({CPU_Q: answers, FRESH_Q: per_pod({"a": 999.0}, ns="other")})
    source = PrometheusPowerSource(querier, power=POWER, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, NoData)
    assert result.watts.reason is NoDataReason.EMPTY
    assert "of namespace llm" in result.watts.message


async def test_many_targets_cost_one_query_per_shape() -> None:
    targets = [TargetPods(f"llm/t{i}", "llm", (f"p{i}-0", f"p{i}-1")) for i in range(20)]
    pods = {p: 10.0 for t in targets for p in t.pods}
    querier = TableQuerier(
        {
            CPU_Q: per_pod(pods),
            FRESH_Q: per_pod(dict.fromkeys(pods, 999.0)),
            TOKENS_Q: per_pod(pods, labels="vllm"),
        }
    )
    source = PrometheusPowerSource(querier, power=POWER, tokens=TOKENS, clock=lambda: 1000.0)
    result = await source.measure_targets(targets)
    assert {m.watts_or_none for m in result.values()} == {20.0}
    assert sorted(querier.asked) == sorted([CPU_Q, GPU_Q, FRESH_Q, TOKENS_Q, WAITING_Q, FINISHED_Q])


async def test_demand_is_read_from_vllms_backlog_and_finished_requests_in_the_same_batch() -> None:
    """What a target's demand asks beyond what it serves: its pods' queued requests, and tokens
    per request from generated tokens over finished requests, each one grouped query for every
    pod; a backlog that is not exported is no demand reading (the policy charges full load)."""
    targets = [TargetPods(f"llm/t{i}", "llm", (f"p{i}-0", f"p{i}-1")) for i in range(3)]
    pods = [p for t in targets for p in t.pods]
    querier = TableQuerier(
        {
            CPU_Q: per_pod(dict.fromkeys(pods, 300.0)),
            FRESH_Q: per_pod(dict.fromkeys(pods, 999.0)),
            TOKENS_Q: per_pod(dict.fromkeys(pods, 100.0), labels="vllm"),
            WAITING_Q: per_pod({p: 3.0 for p in pods if not p.startswith("p2")}, labels="vllm"),
            FINISHED_Q: per_pod(dict.fromkeys(pods, 0.5), labels="vllm"),
        }
    )
    source = PrometheusPowerSource(querier, power=POWER, tokens=TOKENS, clock=lambda: 1000.0)
    result = await source.measure_targets(targets)
    first = result["llm/t0"]
    assert first.waiting_requests_or_none == 6.0
    assert first.tokens_per_request == pytest.approx(200.0)  # 200 tokens/s over 1 request/s
    assert result["llm/t2"].waiting_requests_or_none is None  # not exported for its pods
    assert sorted(querier.asked) == sorted([CPU_Q, GPU_Q, FRESH_Q, TOKENS_Q, WAITING_Q, FINISHED_Q])


async def test_raw_samples_from_the_future_make_watts_implausible() -> None:
    querier = TableQuerier(
        {CPU_Q: per_pod({"a": 300.0}), FRESH_Q: per_pod({"a": 1900.0})}, max_age_s=60.0
    )
    source = PrometheusPowerSource(querier, power=POWER, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, NoData)
    assert result.watts.reason is NoDataReason.IMPLAUSIBLE
    assert "900 s ahead" in result.watts.message


async def test_old_raw_samples_make_watts_stale() -> None:
    querier = TableQuerier(
        {CPU_Q: per_pod({"a": 300.0}), FRESH_Q: per_pod({"a": 900.0})}, max_age_s=60.0
    )
    source = PrometheusPowerSource(querier, power=POWER, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, NoData)
    assert result.watts.reason is NoDataReason.STALE
    assert "100 s old" in result.watts.message
    assert result.watts_or_none is None
    assert result.tokens_per_s is None


async def test_empty_power_is_no_data_never_zero() -> None:
    source = PrometheusPowerSource(TableQuerier({}), power=POWER, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, NoData)
    assert result.watts_or_none is None


async def test_one_nan_pod_makes_its_target_no_data_but_not_the_others() -> None:
    other = TargetPods(key="llm/other", namespace="llm", pods=("c",))
    querier = TableQuerier(
        {CPU_Q: per_pod({"a": math.nan, "b": 50.0, "c": 70.0}), GPU_Q: per_pod({"c": math.inf})}
    )
    source = PrometheusPowerSource(querier, power=POWER, clock=lambda: 1000.0)
    result = await source.measure_targets([TARGET, other])
    nan = result["llm/chat"].watts
    assert isinstance(nan, NoData)
    assert nan.reason is NoDataReason.NAN
    inf = result["llm/other"].watts
    assert isinstance(inf, NoData)
    assert inf.reason is NoDataReason.INFINITE


async def test_pods_without_series_are_left_out_of_the_sum() -> None:
    querier = TableQuerier({CPU_Q: per_pod({"a": 120.0})})
    source = PrometheusPowerSource(querier, power=POWER, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert result.watts_or_none == 120.0


async def test_target_without_pods_draws_zero_without_asking() -> None:
    querier = TableQuerier({})
    source = PrometheusPowerSource(querier, power=POWER, tokens=TOKENS, clock=lambda: 1000.0)
    empty = TargetPods(key="llm/idle", namespace="llm", pods=())
    result = (await source.measure_targets([empty]))["llm/idle"]
    assert result.watts == Reading(value=0.0, measured_at_s=1000.0, query=None)
    assert querier.asked == []


async def test_token_failure_does_not_hide_power() -> None:
    error = PrometheusHTTPError("bad", status=400, error_type="bad_data", error="parse error")
    querier = TableQuerier(
        {CPU_Q: per_pod({"a": 300.0}), FRESH_Q: per_pod({"a": 999.0}), TOKENS_Q: error}
    )
    source = PrometheusPowerSource(querier, power=POWER, tokens=TOKENS, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert result.watts_or_none == 300.0
    assert result.tokens_per_s is error


async def test_unreachable_is_an_error_value_per_quantity() -> None:
    error = PrometheusUnreachableError("down")
    querier = TableQuerier({CPU_Q: error, GPU_Q: error, FRESH_Q: error, TOKENS_Q: error})
    source = PrometheusPowerSource(querier, power=POWER, tokens=TOKENS)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert result.watts is error
    assert result.tokens_per_s is error


async def test_custom_query_stays_per_target() -> None:
    config = PowerQueryConfig(custom_query='sum(my_watts{ns="$namespace",pod=~"$pods"})')
    query = build_power_query(config, "llm", TARGET.pods)
    querier = TableQuerier({query: one(42.0)})
    source = PrometheusPowerSource(querier, power=config, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert result.watts == Reading(42.0, 1000.0, query)
    assert querier.asked == [query]


async def test_unaggregated_custom_query_is_a_shape_error() -> None:
    config = PowerQueryConfig(custom_query='my_watts{pod=~"$pods"}')
    query = build_power_query(config, "llm", TARGET.pods)
    two = Vector(
        samples=(
            Sample(labels={"pod": "a"}, value=1.0, timestamp_s=1.0),
            Sample(labels={"pod": "b"}, value=2.0, timestamp_s=1.0),
        )
    )
    source = PrometheusPowerSource(TableQuerier({query: two}), power=config)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, PrometheusQueryShapeError)
    assert "wrap it in sum()" in result.watts.message
    assert "with labels pod" in result.watts.message
    assert "'a'" not in result.watts.message, "label values may be another tenant's data"


async def test_partially_unusable_aggregate_is_no_data() -> None:
    config = PowerQueryConfig(custom_query='sum(my_watts{pod=~"$pods"})')
    query = build_power_query(config, "llm", TARGET.pods)
    partial = Vector(samples=one(5.0).samples, dropped=1)
    source = PrometheusPowerSource(TableQuerier({query: partial}), power=config)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, NoData)


async def test_empty_answer_with_old_raw_samples_is_reported_stale() -> None:
    # Prometheus's lookback (= max age) hid the old sample; the freshness query still finds it.
    querier = TableQuerier({FRESH_Q: per_pod({"b": 700.0})}, max_age_s=60.0)
    source = PrometheusPowerSource(querier, power=POWER, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, NoData)
    assert result.watts.reason is NoDataReason.STALE
    assert "300 s old, maximum 60 s" in result.watts.message


async def test_measure_total_sums_every_series_of_a_fixed_query() -> None:
    query = 'DCGM_FI_DEV_POWER_USAGE{exported_namespace="llm"}'
    two = Vector(
        samples=(
            Sample(labels={"gpu": "0"}, value=300.0, timestamp_s=999.0),
            Sample(labels={"gpu": "1"}, value=250.0, timestamp_s=998.0),
        )
    )
    source = PrometheusPowerSource(TableQuerier({query: two}))
    assert await source.measure_total(query) == Reading(550.0, 998.0, query)
    partial = Vector(samples=two.samples, dropped=1)
    assert isinstance(
        await PrometheusPowerSource(TableQuerier({query: partial})).measure_total(query), NoData
    )
    error = PrometheusUnreachableError("down")
    assert await PrometheusPowerSource(TableQuerier({query: error})).measure_total(query) is error


async def test_one_negative_pod_is_not_hidden_by_the_sum() -> None:
    """A reviewer's finding: -500 W on one pod beside +600 W on another summed to a plausible
    100 W; a negative sample is implausible whatever the others say."""
    querier = TableQuerier(
        {CPU_Q: per_pod({"a": -500.0, "b": 600.0}), FRESH_Q: per_pod({"a": 999.0})}
    )
    source = PrometheusPowerSource(querier, power=POWER, clock=lambda: 1000.0)
    result = (await source.measure_targets([TARGET]))["llm/chat"]
    assert isinstance(result.watts, NoData)
    assert result.watts.reason is NoDataReason.IMPLAUSIBLE
    assert "negative sample (-500)" in result.watts.message
