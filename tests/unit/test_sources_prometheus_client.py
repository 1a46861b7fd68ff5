"""The Prometheus client's transport guarantees against a local HTTP server: deadlines, size
limits, no redirects, address checks before any connection, the request it sends, and large
answers decoded off the event loop.

The server here is a plain loopback aiohttp app answering canned API responses; behaviour
against a real Prometheus is in tests/integration/test_prometheus_source.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from climatik.sources.address import AddressPolicy, HTTPSession
from climatik.sources.prometheus import (
    OFF_LOOP_PARSE_BYTES,
    PrometheusClient,
    PrometheusSettings,
    _decoded,
)
from climatik.sources.prometheus_results import (
    Matrix,
    NoData,
    NoDataReason,
    PrometheusAddressRejectedError,
    PrometheusHTTPError,
    PrometheusMalformedResponseError,
    PrometheusResponseTooLargeError,
    PrometheusTimeoutError,
    PrometheusUnreachableError,
    Vector,
)
from tests.loopback import serving

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    handler: Handler | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)


def ok_vector(value: str = "42", ts: float | None = None) -> dict[str, object]:
    stamp = time.time() if ts is None else ts
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [stamp, value]}]},
    }


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        state.requests.append((request.path, {k: str(v) for k, v in form.items()}))
        if state.handler is not None:
            return await state.handler(request)
        return web.json_response(ok_vector())

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serving(app) as state.url:
        try:
            yield state
        finally:
            state.release.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with HTTPSession() as shared:
        yield shared


async def test_query_posts_form_with_timeout_and_lookback(
    server: Server, session: aiohttp.ClientSession
) -> None:
    client = PrometheusClient(
        session, server.url, PrometheusSettings(timeout_s=3.0, max_sample_age_s=45.0)
    )
    result = await client.query('sum(up{job="x"})')
    assert isinstance(result, Vector)
    assert result.single_value() == 42.0
    path, form = server.requests[0]
    assert path == "/api/v1/query"
    assert form == {
        "query": 'sum(up{job="x"})',
        # Prometheus gives up before our 3 s deadline: a too-costly query is its `timeout`
        # answer, and only a server that does not answer runs into our deadline.
        "timeout": "2400ms",
        "lookback_delta": "45000ms",
    }


async def test_grouped_query_is_indexed_by_pod_and_may_be_larger(
    server: Server, session: aiohttp.ClientSession
) -> None:
    grouped = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"namespace": "llm", "pod": f"p-{i}"}, "value": [time.time(), "1"]}
                for i in range(40)
            ],
        },
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(grouped)

    server.handler = handler
    # The answer is over the 1 KiB limit of single queries, within the grouped allowance.
    settings = PrometheusSettings(max_response_bytes=1024, max_sample_age_s=45.0)
    client = PrometheusClient(session, server.url, settings)
    result = await client.query_by_pod(
        "sum by (namespace, pod) (x)", namespace_label="namespace", pod_label="pod"
    )
    assert len(result.by_pod) == 40
    assert [s.value for s in result.of("llm", ["p-3"])] == [1.0]
    assert server.requests[0][1]["lookback_delta"] == "45000ms"
    with pytest.raises(PrometheusResponseTooLargeError):
        await client.query("sum by (namespace, pod) (x)")


async def test_a_grouped_query_reads_the_past_at_the_time_asked(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A replay of a recorded trace evaluates the grouped queries at its decision times; live,
    no time is sent (the server's now)."""
    client = PrometheusClient(session, server.url, PrometheusSettings(max_sample_age_s=45.0))
    await client.query_by_pod(
        "sum by (namespace, pod) (x)", namespace_label="namespace", pod_label="pod"
    )
    await client.query_by_pod(
        "sum by (namespace, pod) (x)",
        namespace_label="namespace",
        pod_label="pod",
        at_s=1_800_000_000.25,
    )
    assert "time" not in server.requests[0][1]
    assert server.requests[1][1]["time"] == "1800000000.250"


async def test_path_prefix_is_kept(server: Server, session: aiohttp.ClientSession) -> None:
    client = PrometheusClient(session, server.url + "/prometheus/")
    await client.query("up")
    assert server.requests[0][0] == "/prometheus/api/v1/query"


async def test_range_query(server: Server, session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "status": "success",
                "data": {
                    "resultType": "matrix",
                    "result": [{"metric": {"pod": "a"}, "values": [[10, "1"], [20, "2"]]}],
                },
            }
        )

    server.handler = handler
    client = PrometheusClient(session, server.url)
    result = await client.query_range("up", start_s=10, end_s=20, step_s=10)
    assert isinstance(result, Matrix)
    assert result.series[0].points == ((10.0, 1.0), (20.0, 2.0))
    path, form = server.requests[0]
    assert path == "/api/v1/query_range"
    assert (form["start"], form["end"], form["step"]) == ("10.000", "20.000", "10000ms")


async def test_old_samples_are_stale_by_the_injected_clock(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(ok_vector(ts=1000.0))

    server.handler = handler
    client = PrometheusClient(
        session, server.url, PrometheusSettings(max_sample_age_s=60.0), clock=lambda: 1100.0
    )
    result = await client.query("up")
    assert isinstance(result, NoData)
    assert result.reason is NoDataReason.STALE
    # A query whose value is a timestamp (or evaluated in the past) skips the age check.
    assert isinstance(await client.query("up", check_age=False), Vector)


async def test_slow_server_times_out_within_the_deadline(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await server.release.wait()
        return web.json_response(ok_vector())

    server.handler = handler
    client = PrometheusClient(session, server.url, PrometheusSettings(timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(PrometheusTimeoutError, match=r"within 0\.3 s"):
        await client.query("up")
    assert time.monotonic() - started < 2.0


async def test_slow_body_times_out_too(server: Server, session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"status": "success", ')
        await server.release.wait()
        return response

    server.handler = handler
    client = PrometheusClient(session, server.url, PrometheusSettings(timeout_s=0.3))
    with pytest.raises(PrometheusTimeoutError):
        await client.query("up")


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_response_is_refused(
    server: Server, session: aiohttp.ClientSession, chunked: bool
) -> None:
    payload = json.dumps(ok_vector()).encode() + b" " * 5000

    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=payload, content_type="application/json")
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(payload), 500):
            await response.write(payload[start : start + 500])
        await response.write_eof()
        return response

    server.handler = handler
    client = PrometheusClient(session, server.url, PrometheusSettings(max_response_bytes=1024))
    with pytest.raises(PrometheusResponseTooLargeError, match="1024-byte limit"):
        await client.query("up")


async def test_redirects_are_not_followed(server: Server, session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data")

    server.handler = handler
    client = PrometheusClient(session, server.url)
    with pytest.raises(PrometheusHTTPError, match="redirect") as caught:
        await client.query("up")
    assert caught.value.status == 302
    assert len(server.requests) == 1


async def test_redirect_target_is_named_without_path_or_query(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://sso.internal/login?session=secret-token-42")

    server.handler = handler
    client = PrometheusClient(session, server.url)
    with pytest.raises(PrometheusHTTPError) as caught:
        await client.query("up")
    assert "http://sso.internal:80" in caught.value.message
    assert "secret-token-42" not in caught.value.message


async def test_error_page_names_host_and_port_not_its_body(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="internal admin page: secret-token-42")

    server.handler = handler
    client = PrometheusClient(session, server.url)
    with pytest.raises(PrometheusHTTPError) as caught:
        await client.query("up")
    host_port = server.url.removeprefix("http://")
    assert caught.value.message == f"HTTP 503 from {host_port} (body not shown)"


async def test_api_error_is_typed(server: Server, session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"status": "error", "errorType": "execution", "error": "query timed out"}, status=503
        )

    server.handler = handler
    client = PrometheusClient(session, server.url)
    with pytest.raises(PrometheusHTTPError) as caught:
        await client.query("up")
    assert (caught.value.status, caught.value.error_type) == (503, "execution")


async def test_non_json_success_is_malformed(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>login</html>", content_type="text/html")

    server.handler = handler
    client = PrometheusClient(session, server.url)
    with pytest.raises(PrometheusMalformedResponseError, match="not JSON"):
        await client.query("up")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_closed_port_is_unreachable(session: aiohttp.ClientSession) -> None:
    client = PrometheusClient(session, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PrometheusUnreachableError, match="cannot reach Prometheus") as caught:
        await client.query("up")
    assert caught.value.reason == "PrometheusUnreachable"


async def test_refused_address_never_connects(
    server: Server, session: aiohttp.ClientSession
) -> None:
    client = PrometheusClient(session, "http://169.254.169.254:9090")
    with pytest.raises(PrometheusAddressRejectedError, match="link-local"):
        await client.query("up")
    allow_listed = PrometheusClient(
        session,
        server.url,
        PrometheusSettings(address_policy=AddressPolicy.from_hosts(["prometheus.monitoring"])),
    )
    with pytest.raises(PrometheusAddressRejectedError, match="not in the allowed"):
        await allow_listed.query("up")
    assert server.requests == []


async def test_session_owner_closes_its_session() -> None:
    owner = HTTPSession()
    async with owner as opened:
        assert owner.session is opened
        open_inside = not opened.closed
    assert open_inside
    assert opened.closed
    with pytest.raises(RuntimeError):
        _ = owner.session


async def test_large_answers_are_decoded_off_the_event_loop() -> None:
    """Megabytes of JSON parsed on the loop would stall every controller and the lease."""
    threads: list[int] = []

    def parse() -> int:
        threads.append(threading.get_ident())
        return len(threads)

    await _decoded(b"x" * (OFF_LOOP_PARSE_BYTES + 1), parse)
    await _decoded(b"{}", parse)
    assert threads[0] != threading.get_ident()
    assert threads[1] == threading.get_ident()
