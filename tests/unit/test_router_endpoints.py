"""The router's pure parts: EndpointSlices read as upstreams, the endpoint table's counts and
ages, vLLM's gauges parsed from `/metrics`, and score refreshes that fail without blocking."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from climatik.domain.routing import PickReason, RoutingSettings
from climatik.policies.routing import pick_endpoint
from climatik.router.metrics import RouterMetrics
from climatik.router.scores import ScoreRefresher, parse_load
from climatik.router.slices import Upstream, upstreams_from_slices
from climatik.router.table import EndpointTable, Scores


def endpoint_slice(
    endpoints: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "namespace": "ns"},
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"name": "http", "port": 8000}],
    }


def pod(name: str, ip: str, **conditions: bool) -> dict[str, Any]:
    return {
        "addresses": [ip],
        "conditions": conditions,
        "targetRef": {"kind": "Pod", "name": name, "namespace": "ns"},
    }


def test_slices_give_one_upstream_per_pod_with_its_health() -> None:
    slices = [
        endpoint_slice(
            [
                pod("a", "10.0.0.1", ready=True),
                pod("b", "10.0.0.2", ready=False, serving=True, terminating=True),
                pod("c", "10.0.0.3"),  # conditions unknown: read as ready
                {"addresses": []},  # no address: nothing to send to
            ]
        )
    ]
    assert upstreams_from_slices(slices, None) == [
        Upstream("a", "ns", "10.0.0.1", 8000, healthy=True),
        Upstream("b", "ns", "10.0.0.2", 8000, healthy=False),
        Upstream("c", "ns", "10.0.0.3", 8000, healthy=True),
    ]


def test_the_named_port_is_used_and_a_slice_without_it_contributes_nothing() -> None:
    ports = [{"name": "metrics", "port": 9000}, {"name": "http", "port": 8000}]
    slices = [
        endpoint_slice([pod("a", "10.0.0.1")], ports),
        endpoint_slice([pod("b", "10.0.0.2")], [{"name": "grpc", "port": 9}, {"port": "x"}]),
    ]
    assert upstreams_from_slices(slices, "http") == [Upstream("a", "ns", "10.0.0.1", 8000)]


def test_an_endpoint_without_a_pod_is_named_by_its_address_and_ipv6_is_bracketed() -> None:
    (only,) = upstreams_from_slices([endpoint_slice([{"addresses": ["fd00::1"]}])], None)
    assert only.name == "fd00::1:8000"
    assert only.base_url == "http://[fd00::1]:8000"


def test_an_endpoint_healthy_in_any_slice_is_healthy() -> None:
    slices = [
        endpoint_slice([pod("a", "10.0.0.1", ready=False)]),
        endpoint_slice([pod("a", "10.0.0.1", ready=True)]),
    ]
    assert [u.healthy for u in upstreams_from_slices(slices, None)] == [True]


def test_hostile_slices_read_as_absent_fields() -> None:
    slices: list[dict[str, Any]] = [{"endpoints": "x", "ports": [{"port": 8000}]}, {"ports": 3}, {}]
    assert upstreams_from_slices(slices, None) == []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_table_counts_what_it_sent_since_the_last_reading() -> None:
    clock = Clock()
    table = EndpointTable(clock)
    table.set_upstreams([Upstream("a", "ns", "10.0.0.1", 80)])
    table.opened("a")
    table.opened("a")
    table.record("a", Scores(tokens_per_joule=2.0, running=5, waiting=0))
    table.opened("a")
    clock.now += 3
    (reading,) = table.readings()
    assert (reading.open_requests, reading.added_since_reading) == (3, 1)
    assert reading.age_s == 3
    table.closed("a")
    table.closed("a")
    (reading,) = table.readings()
    assert (reading.open_requests, reading.added_since_reading) == (1, -1)


def test_survivors_keep_their_counts_and_the_removed_are_forgotten() -> None:
    table = EndpointTable(Clock())
    table.set_upstreams([Upstream("a", "ns", "h", 80), Upstream("b", "ns", "h", 81)])
    table.opened("a")
    table.opened("b")
    table.set_upstreams([Upstream("a", "ns", "h", 80, healthy=False)])
    table.closed("b")  # a request to a removed endpoint finishing is harmless
    (reading,) = table.readings()
    assert (reading.name, reading.healthy, reading.open_requests) == ("a", False, 1)
    assert table.upstream("b") is None


def test_an_efficiency_that_stops_coming_goes_stale_while_the_load_keeps_arriving() -> None:
    clock = Clock()
    table = EndpointTable(clock)
    table.set_upstreams([Upstream("a", "ns", "h", 80)])
    table.record("a", Scores(tokens_per_joule=2.0, running=1, waiting=0, kv_cache_usage=0.1))
    clock.now += 60
    table.record("a", Scores(running=2, waiting=0))  # the pod's own /metrics only
    (reading,) = table.readings()
    assert reading.running == 2
    assert reading.tokens_per_joule == 2.0
    assert reading.age_s == 60
    assert pick_endpoint([reading], RoutingSettings()).reason is PickReason.NO_DATA


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 3.0
vllm:num_requests_running{model_name="b"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 2.0
# HELP vllm:e2e_request_latency_seconds Histogram.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="a"} 4.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="a"} 0.25
"""


def test_vllm_gauges_are_read_from_metrics_text_and_summed_over_models() -> None:
    assert parse_load(VLLM_METRICS) == Scores(running=4.0, waiting=2.0, kv_cache_usage=0.25)


def test_metrics_text_without_the_gauges_or_malformed_is_no_data() -> None:
    assert parse_load("up 1\n") == Scores()
    assert parse_load("vllm:num_requests_running{oops 1\n") == Scores()
    assert parse_load('vllm:num_requests_running{model_name="a"} NaN\n') == Scores()


class Hanging:
    name = "prometheus"

    async def read(self, upstreams: Sequence[Upstream]) -> Mapping[str, Scores]:
        await asyncio.Event().wait()
        raise AssertionError("never answers")


class Answering:
    name = "pods"

    async def read(self, upstreams: Sequence[Upstream]) -> Mapping[str, Scores]:
        return {u.name: Scores(running=1, waiting=0) for u in upstreams}


async def test_a_hanging_source_is_given_up_on_and_the_other_still_records() -> None:
    table = EndpointTable()
    table.set_upstreams([Upstream("a", "ns", "h", 80)])
    metrics = RouterMetrics()
    refresher = ScoreRefresher(table, [Hanging(), Answering()], metrics, timeout_s=0.05)
    answered, hung = await asyncio.gather(
        refresher.refresh(Answering()), refresher.refresh(Hanging())
    )
    assert (answered, hung) == (True, False)
    assert table.readings()[0].running == 1
    failures = metrics.registry.get_sample_value(
        "climatik_router_score_refresh_failures_total", {"source": "prometheus"}
    )
    assert failures == 1
