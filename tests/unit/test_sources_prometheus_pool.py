"""The shared Prometheus read layer against a real loopback HTTP server that counts requests.

One request per (server, query shape) per TTL however many targets and configs ask; identical
per-config queries coalesced; a server that does not answer fails fast for everyone after the
first timeout, and is probed again once per cool-down.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from climatik.sources.address import HTTPSession
from climatik.sources.breaker import BreakerSettings
from climatik.sources.power import PrometheusPowerSource
from climatik.sources.power_queries import PowerQueryConfig, TargetPods, TokensQueryConfig
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_pool import PrometheusPool
from climatik.sources.prometheus_results import (
    NoData,
    NoDataReason,
    PrometheusHTTPError,
    PrometheusTimeoutError,
    PrometheusUnreachableError,
    Vector,
)
from tests.loopback import serving


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Server:
    url: str = ""
    queries: Counter[str] = field(default_factory=Counter)
    hang: bool = False
    bad_query: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)
    sample_time: float = field(default_factory=time.time)
    new_pods: list[tuple[str, str]] = field(default_factory=list)
    """(namespace, pod) pairs that also draw 10 W and make 5 tokens/s."""

    def result(self, query: str) -> list[dict[str, Any]]:
        """Every pod p<t>-<i> of namespace ns<c> draws 10 W and generates 5 tokens/s."""
        if "timestamp(" in query:
            value = str(self.sample_time)
        elif "gpu" in query:
            return []
        else:
            value = "5" if "tokens" in query else "10"
        if " by (" not in query:
            return [{"metric": {}, "value": [self.sample_time, value]}]
        ns_label, pod_label = (
            ("namespace", "pod") if "tokens" in query else ("pod_namespace", "pod_name")
        )
        return [
            {
                "metric": {ns_label: f"ns{c}", pod_label: f"p{t}-{i}"},
                "value": [self.sample_time, value],
            }
            for c in range(3)
            for t in range(4)
            for i in range(2)
        ] + [
            {"metric": {ns_label: ns, pod_label: pod}, "value": [self.sample_time, value]}
            for ns, pod in self.new_pods
        ]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def handle(request: web.Request) -> web.StreamResponse:
        query = str((await request.post())["query"])
        state.queries[query] += 1
        if state.hang:
            await state.released.wait()
        if state.bad_query:
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400
            )
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": state.result(query)}}
        )

    app = web.Application()
    app.router.add_post("/api/v1/query", handle)
    async with serving(app, shutdown_timeout_s=0.5) as state.url:
        try:
            yield state
        finally:
            state.released.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with HTTPSession() as shared:
        yield shared


def pool_for(session: aiohttp.ClientSession, clock: Clock, **kwargs: Any) -> PrometheusPool:
    async def session_factory() -> aiohttp.ClientSession:
        return session

    return PrometheusPool(session_factory, clock=clock, **kwargs)


SETTINGS = PrometheusSettings(timeout_s=2.0, max_sample_age_s=60.0)


def config_targets(config: int) -> list[TargetPods]:
    """Config `config` (namespace ns<config>) caps four targets of two pods each."""
    ns = f"ns{config}"
    return [TargetPods(f"{ns}/t{t}", ns, (f"p{t}-0", f"p{t}-1")) for t in range(4)]


async def test_every_target_of_every_config_costs_one_request_per_shape_per_ttl(
    server: Server, session: aiohttp.ClientSession
) -> None:
    clock = Clock(1000.0)
    pool = pool_for(session, clock, cache_ttl_s=5.0)
    sources = [
        PrometheusPowerSource(
            pool.querier(server.url, SETTINGS), power=PowerQueryConfig(), tokens=TokensQueryConfig()
        )
        for _ in range(3)
    ]

    async def reconcile_all() -> list[float | None]:
        measured = await asyncio.gather(
            *(source.measure_targets(config_targets(c)) for c, source in enumerate(sources))
        )
        return [m.watts_or_none for per_config in measured for m in per_config.values()]

    # 3 configs x 4 targets x 2 pods, at 10 W a pod; concurrently, then again within the TTL.
    assert await reconcile_all() == [20.0] * 12
    assert await reconcile_all() == [20.0] * 12
    shapes = (
        "kepler_pod_cpu_watts",
        "kepler_pod_gpu_watts",
        "timestamp(",
        "tokens",
        "num_requests_waiting",
        "e2e_request_latency_seconds_count",
    )
    assert len(server.queries) == len(shapes)
    assert all(n == 1 for n in server.queries.values()), server.queries
    assert all(any(shape in q for q in server.queries) for shape in shapes)

    # Past the TTL the kept answers are handed over while one read per shape refreshes them.
    clock.now += 5.0
    assert await reconcile_all() == [20.0] * 12
    for _ in range(200):
        if sorted(server.queries.values()) == [2] * len(shapes):
            break
        await asyncio.sleep(0.01)
    assert sorted(server.queries.values()) == [2] * len(shapes)
    assert await reconcile_all() == [20.0] * 12
    assert sorted(server.queries.values()) == [2] * len(shapes)
    await pool.close()


async def test_identical_per_config_queries_are_asked_once(
    server: Server, session: aiohttp.ClientSession
) -> None:
    pool = pool_for(session, Clock(0.0))
    custom = PowerQueryConfig(custom_query='sum(site_watts{ns="$namespace",pod=~"$pods"})')
    target = config_targets(0)[0]
    sources = [
        PrometheusPowerSource(pool.querier(server.url, SETTINGS), power=custom) for _ in range(5)
    ]
    results = await asyncio.gather(*(s.measure_targets([target]) for s in sources))
    assert {r[target.key].watts_or_none for r in results} == {10.0}
    assert list(server.queries.values()) == [1]
    await pool.close()


async def test_a_kept_answer_is_judged_for_age_when_used(
    server: Server, session: aiohttp.ClientSession
) -> None:
    wall = Clock(time.time())
    server.sample_time = wall.now
    pool = PrometheusPool(
        lambda: _session(session), clock=Clock(0.0), wall_clock=wall, cache_ttl_s=5.0
    )
    querier = pool.querier(server.url, SETTINGS)
    assert isinstance(await querier.query("sum(site_watts)"), Vector)
    wall.now += 61.0  # older than the 60 s maximum by now, though still kept
    stale = await querier.query("sum(site_watts)")
    assert isinstance(stale, NoData)
    assert stale.reason is NoDataReason.STALE
    assert list(server.queries.values()) == [1]
    await pool.close()


async def _session(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    return session


async def test_a_server_that_does_not_answer_fails_fast_for_the_next_caller(
    server: Server, session: aiohttp.ClientSession
) -> None:
    server.hang = True
    clock = Clock(0.0)
    pool = pool_for(session, clock, breaker=BreakerSettings(5.0, 60.0))
    hung = PrometheusSettings(timeout_s=0.3, max_sample_age_s=60.0)
    querier = pool.querier(server.url, hung)
    with pytest.raises(PrometheusTimeoutError):
        await querier.query("sum(a)")
    started = time.monotonic()
    with pytest.raises(PrometheusUnreachableError) as fast:
        await querier.query("sum(b)")  # another tenant's query
    assert time.monotonic() - started < 0.1
    assert "is failing fast since its last failure" in fast.value.message
    assert "did not answer within 0.3 s" in fast.value.message
    assert "next try in 5 s" in fast.value.message
    assert fast.value.reason == "PrometheusUnreachable"
    assert set(server.queries) == {"sum(a)"}  # nothing more reached the server
    # The same address with other settings (another config's) is the same server: also fast.
    other = pool.querier(server.url, PrometheusSettings(timeout_s=0.3, max_sample_age_s=30.0))
    with pytest.raises(PrometheusUnreachableError, match="failing fast"):
        await other.query("sum(c)")
    await pool.close()


async def test_after_the_cool_down_one_probe_goes_through_and_reopens_or_closes_it(
    server: Server, session: aiohttp.ClientSession
) -> None:
    server.hang = True
    clock = Clock(0.0)
    pool = pool_for(session, clock, cache_ttl_s=0.0, breaker=BreakerSettings(5.0, 60.0))
    querier = pool.querier(server.url, PrometheusSettings(timeout_s=0.3, max_sample_age_s=60.0))
    with pytest.raises(PrometheusTimeoutError):
        await querier.query("sum(a)")
    clock.now += 5.0
    # The probe still finds no answer: open again, for twice as long.
    with pytest.raises(PrometheusTimeoutError):
        await querier.query("sum(b)")
    with pytest.raises(PrometheusUnreachableError, match="next try in 10 s"):
        await querier.query("sum(c)")
    assert set(server.queries) == {"sum(a)", "sum(b)"}

    server.hang = False
    server.released.set()
    clock.now += 10.0
    assert isinstance(await querier.query("sum(d)"), Vector)  # the probe: closes it
    assert isinstance(await querier.query("sum(e)"), Vector)
    assert set(server.queries) == {"sum(a)", "sum(b)", "sum(d)", "sum(e)"}
    await pool.close()


async def test_an_error_answer_is_an_answer_and_does_not_trip_the_breaker(
    server: Server, session: aiohttp.ClientSession
) -> None:
    server.bad_query = True
    pool = pool_for(session, Clock(0.0))
    querier = pool.querier(server.url, SETTINGS)
    for query in ("sum(", "max("):
        with pytest.raises(PrometheusHTTPError, match="bad_data"):
            await querier.query(query)
    assert set(server.queries) == {"sum(", "max("}
    await pool.close()


async def test_a_dead_server_still_fails_fast_while_another_address_is_in_use(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A reviewer's finding: asking a new address dropped every closed breaker, including one
    whose first request was still out, so the dead server's timeout landed on a forgotten
    breaker and every round waited out a full timeout again."""
    server.hang = True
    clock = Clock(0.0)
    pool = pool_for(session, clock, breaker=BreakerSettings(5.0, 60.0))
    hung = PrometheusSettings(timeout_s=0.3, max_sample_age_s=60.0)
    dead = pool.querier(server.url, hung)
    first = asyncio.create_task(dead.query("sum(a)"))
    await asyncio.sleep(0.05)  # the first request is out
    # Meanwhile another tenant's config asks another address (refused at once: port 9).
    other = pool.querier("http://127.0.0.1:9", hung)
    with pytest.raises(PrometheusUnreachableError):
        await other.query("sum(x)")
    with pytest.raises(PrometheusTimeoutError):
        await first
    started = time.monotonic()
    with pytest.raises(PrometheusUnreachableError, match="failing fast"):
        await dead.query("sum(b)")
    assert time.monotonic() - started < 0.1
    await pool.close()


async def test_path_spellings_of_one_server_share_its_breaker(
    server: Server, session: aiohttp.ClientSession
) -> None:
    server.hang = True
    pool = pool_for(session, Clock(0.0), breaker=BreakerSettings(5.0, 60.0))
    hung = PrometheusSettings(timeout_s=0.3, max_sample_age_s=60.0)
    with pytest.raises(PrometheusTimeoutError):
        await pool.querier(server.url, hung).query("sum(a)")
    with pytest.raises(PrometheusUnreachableError, match="failing fast"):
        await pool.querier(server.url + "/prefix/", hung).query("sum(a)")
    await pool.close()


async def test_configs_with_different_sample_ages_share_one_grouped_read(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """The grouped answer covers every pod: a tenant must not multiply cluster-wide queries by
    giving each of its configs another `maxMetricAgeSeconds`."""
    pool = pool_for(session, Clock(0.0))
    for age in (30.0, 60.0, 90.0, 3600.0):
        querier = pool.querier(server.url, PrometheusSettings(max_sample_age_s=age))
        await querier.query_by_pod(
            "sum by (pod_namespace, pod_name) (kepler_pod_cpu_watts)",
            namespace_label="pod_namespace",
            pod_label="pod_name",
        )
    assert sum(server.queries.values()) == 1
    await pool.close()


async def test_a_range_on_a_grid_is_asked_once_per_step(session: aiohttp.ClientSession) -> None:
    """Placement asks each config's rack history on a one-minute grid every 30 s: the window
    cannot change before the next step, so every config shares one answer until then."""
    asked: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        asked.append(str((await request.post())["query"]))
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": []}}
        )

    app = web.Application()
    app.router.add_post("/api/v1/query_range", handle)
    wall = Clock(10_030.0)  # 30 s into the step that ended at 10,000 s
    pool = PrometheusPool(lambda: _session(session), clock=wall, wall_clock=wall)
    async with serving(app) as url:
        querier = pool.querier(url, SETTINGS)
        try:
            for now in (10_030.0, 10_045.0, 10_059.0):
                wall.now = now
                await querier.query_range("sum(rack)", start_s=6_400.0, end_s=10_000.0, step_s=60.0)
            assert asked == ["sum(rack)"]
            wall.now = 10_061.0  # the next step: the caller asks a new window anyway
            await querier.query_range("sum(rack)", start_s=6_460.0, end_s=10_060.0, step_s=60.0)
            assert asked == ["sum(rack)", "sum(rack)"]
        finally:
            await pool.close()


async def test_a_kept_answer_older_than_a_new_pod_is_asked_again_at_most_once_a_second(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A config created beside another config's kept answer must not wait a whole interval for
    its first decision because that answer was asked before its pods had samples; a pod that
    never gets samples stops costing questions once it is no longer new."""
    wall = Clock(time.time())
    server.sample_time = wall.now
    pool = PrometheusPool(lambda: _session(session), clock=wall, wall_clock=wall, cache_ttl_s=5.0)

    def source() -> PrometheusPowerSource:
        querier = pool.querier(server.url, SETTINGS)
        return PrometheusPowerSource(querier, power=PowerQueryConfig(), clock=wall)

    await source().measure_targets(config_targets(0))  # the answer every config now shares
    asked = sum(server.queries.values())
    wall.now += 2.0
    server.new_pods = [("fresh", "web-0")]
    new = TargetPods("fresh/web", "fresh", ("web-0",), newest_pod_created_s=wall.now - 1.0)
    measured = await source().measure_targets([new])
    assert measured[new.key].watts_or_none == 10.0
    assert sum(server.queries.values()) == 2 * asked  # every grouped shape asked once more

    # Asked again within a second: the fresh answer is shared, nothing more is asked.
    wall.now += 0.5
    server.new_pods = []
    silent = TargetPods("quiet/web", "quiet", ("web-0",), newest_pod_created_s=wall.now - 1.0)
    assert (await source().measure_targets([silent]))[silent.key].watts_or_none is None
    assert sum(server.queries.values()) == 2 * asked

    # A pod older than the grace that Prometheus never heard of costs no question.
    wall.now += 2.0
    old = TargetPods("quiet/web", "quiet", ("web-0",), newest_pod_created_s=wall.now - 600.0)
    assert (await source().measure_targets([old]))[old.key].watts_or_none is None
    assert sum(server.queries.values()) == 2 * asked
    await pool.close()


async def test_a_config_that_finds_every_answer_kept_measures_without_a_task(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """Thousands of configs measure from the same kept answers each round: the ones after the
    first take them as they are, without a task per query and per target."""
    pool = pool_for(session, Clock(1000.0), cache_ttl_s=5.0)

    def source() -> PrometheusPowerSource:
        querier = pool.querier(server.url, SETTINGS)
        return PrometheusPowerSource(querier, power=PowerQueryConfig(), tokens=TokensQueryConfig())

    first = await source().measure_targets(config_targets(0))
    loop = asyncio.get_running_loop()
    started: list[object] = []

    def counting_factory(
        loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        started.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting_factory)
    try:
        second = await source().measure_targets(config_targets(0))
    finally:
        loop.set_task_factory(None)
    assert started == []
    assert {k: m.watts_or_none for k, m in second.items()} == {
        k: m.watts_or_none for k, m in first.items()
    }
    await pool.close()
