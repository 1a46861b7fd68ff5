"""The router's request path against real local fake backends: forwarding, SSE passed through
unchanged, a retry when an endpoint cannot be reached, and a clean end when one dies mid-body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from climatik.domain.routing import RoutingSettings
from climatik.policies.routing import pick_endpoint
from climatik.router.metrics import RouterMetrics
from climatik.router.proxy import Proxy
from climatik.router.slices import Upstream
from climatik.router.table import EndpointTable, Scores
from tests.loopback import serving
from tests.router_backends import COMPLETION, FakeBackend, sse_chunk


@dataclass
class Router:
    url: str
    table: EndpointTable
    metrics: RouterMetrics
    client: aiohttp.ClientSession


def upstream(backend: FakeBackend) -> Upstream:
    return Upstream(backend.name, "ns", "127.0.0.1", backend.port)


@pytest.fixture
async def backends() -> AsyncIterator[list[FakeBackend]]:
    started = [FakeBackend("a", stream_chunks=40, chunk_delay_s=0.01), FakeBackend("b")]
    for backend in started:
        await backend.start()
    yield started
    for backend in started:
        await backend.stop()


@pytest.fixture
async def router(backends: list[FakeBackend]) -> AsyncIterator[Router]:
    table = EndpointTable()
    table.set_upstreams(upstream(b) for b in backends)
    metrics = RouterMetrics()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        app = web.Application()
        Proxy(table, session, metrics, RoutingSettings()).add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as client:
            yield Router(f"http://127.0.0.1:{port}", table, metrics, client)
        await runner.cleanup()


def sample(metrics: RouterMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_a_completion_is_forwarded_and_counted(router: Router) -> None:
    async with router.client.post(
        router.url + "/v1/completions", json={"model": "fake", "prompt": "hi"}
    ) as response:
        assert response.status == 200
        assert await response.json() == COMPLETION
        assert response.headers["x-backend"] in {"a", "b"}
    assert sample(router.metrics, "climatik_router_requests_total", {"code": "200"}) == 1
    # No readings yet: the pick fell back to the fewest open requests.
    assert sample(router.metrics, "climatik_router_picks_total", {"reason": "no_data"}) == 1
    assert sample(router.metrics, "climatik_router_added_latency_seconds_count") == 1
    assert all(r.open_requests == 0 for r in router.table.readings())


async def test_models_are_answered_by_an_endpoint(router: Router) -> None:
    async with router.client.get(router.url + "/v1/models") as response:
        assert response.status == 200
        assert (await response.json())["data"][0]["id"] == "fake"


async def test_the_most_efficient_endpoint_with_room_gets_the_request(router: Router) -> None:
    router.table.record("a", Scores(tokens_per_joule=1.0, running=1, waiting=0))
    router.table.record("b", Scores(tokens_per_joule=3.0, running=1, waiting=0))
    for _ in range(3):
        async with router.client.post(router.url + "/v1/completions", json={}) as response:
            assert response.headers["x-backend"] == "b"
    assert sample(router.metrics, "climatik_router_picks_total", {"reason": "efficient"}) == 3


async def test_a_stream_reaches_the_client_unchanged(
    router: Router, backends: list[FakeBackend]
) -> None:
    router.table.set_upstreams([upstream(backends[0])])
    async with router.client.post(
        router.url + "/v1/chat/completions", json={"stream": True}
    ) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        body = await response.read()
    expected = b"".join(sse_chunk(i) for i in range(40)) + b"data: [DONE]\n\n"
    assert body == expected


async def test_an_unreachable_endpoint_is_retried_once_on_another(
    router: Router, backends: list[FakeBackend]
) -> None:
    dead = FakeBackend("dead")
    await dead.start()
    dead_upstream = upstream(dead)
    await dead.stop()
    router.table.set_upstreams([dead_upstream, upstream(backends[1])])
    # The dead one is the most efficient, so it is picked first.
    router.table.record("dead", Scores(tokens_per_joule=9.0, running=0, waiting=0))
    router.table.record("b", Scores(tokens_per_joule=1.0, running=0, waiting=0))
    async with router.client.post(router.url + "/v1/completions", json={}) as response:
        assert response.status == 200
        assert response.headers["x-backend"] == "b"
    assert sample(router.metrics, "climatik_router_retries_total") == 1


async def test_no_reachable_endpoint_is_a_502_and_none_at_all_a_503(router: Router) -> None:
    dead = [FakeBackend("x"), FakeBackend("y")]
    for backend in dead:
        await backend.start()
        await backend.stop()
    router.table.set_upstreams(upstream(b) for b in dead)
    async with router.client.post(router.url + "/v1/completions", json={}) as response:
        assert response.status == 502
        assert (await response.json())["error"]["type"] == "upstream_error"
    router.table.set_upstreams([])
    async with router.client.post(router.url + "/v1/completions", json={}) as response:
        assert response.status == 503
    assert sample(router.metrics, "climatik_router_picks_total", {"reason": "no_endpoint"}) == 1


async def test_a_stream_cut_mid_way_ends_with_an_error_event_while_another_goes_on(
    router: Router, backends: list[FakeBackend]
) -> None:
    slow, steady = backends[0], FakeBackend("c", stream_chunks=40, chunk_delay_s=0.01)
    await steady.start()
    try:
        router.table.set_upstreams([upstream(slow), upstream(steady)])
        # Affinity sends each session to its own endpoint once both have readings.
        router.table.record("a", Scores(tokens_per_joule=1.0, running=0, waiting=0))
        router.table.record("c", Scores(tokens_per_joule=1.0, running=0, waiting=0))

        async def stream(to: str) -> tuple[str, bytes]:
            # A session key whose endpoint is `to` (rendezvous hashing is deterministic).
            key = next(k for k in (f"s{i}" for i in range(100)) if _owner(router, k) == to)
            async with router.client.post(
                router.url + "/v1/chat/completions",
                json={"stream": True},
                headers={"x-session-id": key},
            ) as response:
                return response.headers["x-backend"], await response.read()

        cut = asyncio.create_task(stream("a"))
        whole = asyncio.create_task(stream("c"))
        await asyncio.sleep(0.1)
        await slow.kill()
        cut_from, cut_body = await cut
        whole_from, whole_body = await whole
    finally:
        await steady.stop()
    assert (cut_from, whole_from) == ("a", "c")
    assert whole_body.endswith(b"data: [DONE]\n\n")
    events = cut_body.split(b"\n\n")
    assert b"[DONE]" not in cut_body
    last = json.loads(events[-2].removeprefix(b"data: "))
    assert last["error"]["type"] == "upstream_error"
    assert sample(router.metrics, "climatik_router_upstream_aborts_total") == 1


def _owner(router: Router, key: str) -> str | None:
    return pick_endpoint(router.table.readings(), RoutingSettings(), session_key=key).endpoint


async def test_a_body_cut_mid_way_is_aborted_or_a_502_never_a_short_success(
    router: Router,
) -> None:
    """A JSON answer streamed without a length and cut reaches the client as a broken body; one
    of known length cut before its end is a clean 502 (nothing had been relayed)."""

    async def unsized(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"choices": [')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def sized(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"choices": [')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", unsized)
    app.router.add_post("/v1/chat/completions", sized)
    async with serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        router.table.set_upstreams([Upstream("cut", "ns", "127.0.0.1", port)])
        async with router.client.post(router.url + "/v1/completions", json={}) as response:
            assert response.status == 200  # the headers had been relayed
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        async with router.client.post(router.url + "/v1/chat/completions", json={}) as response:
            assert response.status == 502
            assert (await response.json())["error"]["type"] == "upstream_error"
    assert sample(router.metrics, "climatik_router_upstream_aborts_total") == 2
