"""The OpenAI-compatible reverse proxy: `/v1/completions`, `/v1/chat/completions`, `/v1/models`.

Each request is sent to the endpoint `pick_endpoint` chooses from the table's readings, with the
session key for affinity taken from a header (`x-session-id` by default; a header, not the body's
`user` field, so the router never parses a prompt). Bodies are relayed as they come, chunk by
chunk as they arrive, so server-sent events reach the client unchanged and unbuffered (small
answers of known length are read whole and sent in one write); bytes are
passed undecoded (`auto_decompress=False` on the session).

Failures:
- before any byte reached the endpoint (connection refused, reset, or a pooled connection
  closed under us before the response headers): tried once more on another endpoint; then 502;
- the upstream's headers not coming within the read timeout: 504, not retried (the model may be
  working on it);
- the upstream dying in the middle of a small answer of known length (a non-streaming
  completion, read whole before anything is relayed, see `WHOLE_BODY_MAX_BYTES`): 502;
- the upstream dying after its headers were relayed: an SSE stream gets one last event,
  `data: {"error": {...}}` (the OpenAI error shape, `type: "upstream_error"`), and then a clean
  end of the chunked body without `data: [DONE]`; any other body is aborted (the connection is
  closed without the final chunk), so a client can never take a cut JSON body for a whole one.
  Other requests, to that endpoint or others, are untouched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict

from climatik.domain.http_headers import HOP_BY_HOP, NOT_FORWARDED
from climatik.domain.routing import RoutingSettings
from climatik.policies.routing import pick_endpoint
from climatik.router.metrics import RouterMetrics
from climatik.router.table import EndpointTable

log = structlog.get_logger(__name__)

OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")
MODELS_PATH = "/v1/models"
DEFAULT_SESSION_HEADER = "x-session-id"
HTTP_BAD_GATEWAY = 502
HTTP_UNAVAILABLE = 503
HTTP_GATEWAY_TIMEOUT = 504
WHOLE_BODY_MAX_BYTES = 1024 * 1024
"""Answers of a known length up to this size, not SSE, are read whole and sent in one write."""


_UNREACHABLE = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ConnectionTimeoutError,
)
"""Nothing of the request can have been processed: the next endpoint may have it."""

_CUT = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError)
"""The upstream's body ended before it was whole."""


def sse_error_event(message: str) -> bytes:
    """The event an SSE client gets when its upstream dies mid-stream."""
    error = {"error": {"message": message, "type": "upstream_error", "code": HTTP_BAD_GATEWAY}}
    return b"data: " + json.dumps(error).encode() + b"\n\n"


def _error(status: int, message: str, kind: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status)


class Proxy:
    """The request path: pick, count, forward, relay. Never awaits discovery or measurement."""

    def __init__(
        self,
        table: EndpointTable,
        session: aiohttp.ClientSession,
        metrics: RouterMetrics,
        routing: RoutingSettings,
        *,
        session_header: str = DEFAULT_SESSION_HEADER,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._table = table
        self._session = session
        self._metrics = metrics
        self._routing = routing
        self._session_header = session_header
        self._clock = clock

    def add_routes(self, app: web.Application) -> None:
        for path in OPENAI_PATHS:
            app.router.add_post(path, self.forward)
        app.router.add_get(MODELS_PATH, self.forward)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        started = self._clock()
        body = await request.read() if request.can_read_body else None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED
        )
        session_key = request.headers.get(self._session_header)
        tried: set[str] = set()
        upstream_s = 0.0
        for attempt in range(2):
            readings = self._table.readings()
            if tried:
                readings = [r for r in readings if r.name not in tried]
            pick = pick_endpoint(readings, self._routing, session_key=session_key)
            self._metrics.picked(pick.reason)
            upstream = self._table.upstream(pick.endpoint) if pick.endpoint else None
            if upstream is None:
                if tried:  # the only healthy endpoint could not be reached
                    self._metrics.answered(HTTP_BAD_GATEWAY)
                    message = f"endpoint {', '.join(sorted(tried))} unreachable, and no other"
                    return _error(HTTP_BAD_GATEWAY, message, "upstream_error")
                self._metrics.answered(HTTP_UNAVAILABLE)
                return _error(HTTP_UNAVAILABLE, "no healthy endpoint", "no_endpoint")
            name = upstream.name
            self._table.opened(name)
            sent = self._clock()
            try:
                response = await self._session.request(
                    request.method,
                    upstream.base_url + request.path_qs,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                )
            except _UNREACHABLE as error:
                self._table.closed(name)
                upstream_s += self._clock() - sent
                tried.add(name)
                log.warning("upstream_unreachable", endpoint=name, error=str(error))
                if attempt == 0:
                    self._metrics.retries.inc()
                    continue
                self._metrics.answered(HTTP_BAD_GATEWAY)
                return _error(HTTP_BAD_GATEWAY, "no endpoint could be reached", "upstream_error")
            except TimeoutError:
                self._table.closed(name)
                self._metrics.answered(HTTP_GATEWAY_TIMEOUT)
                return _error(HTTP_GATEWAY_TIMEOUT, "the endpoint did not answer", "timeout")
            upstream_s += self._clock() - sent
            try:
                return await self._relay(request, response, started, upstream_s, name)
            finally:
                response.release()
                self._table.closed(name)
        raise AssertionError("unreachable: the second attempt always returns")

    async def _relay(
        self,
        request: web.Request,
        response: aiohttp.ClientResponse,
        started: float,
        upstream_s: float,
        name: str,
    ) -> web.StreamResponse:
        headers = CIMultiDict(
            (k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP
        )
        length = response.content_length
        if (
            length is not None
            and length <= WHOLE_BODY_MAX_BYTES
            and response.content_type != "text/event-stream"
        ):
            return await self._relay_whole(
                request,
                response,
                headers=headers,
                started=started,
                upstream_s=upstream_s,
                name=name,
            )
        relayed = web.StreamResponse(
            status=response.status, reason=response.reason, headers=headers
        )
        try:
            await relayed.prepare(request)
        except ConnectionError:
            response.close()  # the client left: stop the upstream's generation too
            return relayed
        self._metrics.added_latency.observe(max(self._clock() - started - upstream_s, 0.0))
        self._metrics.answered(response.status)
        while True:
            try:
                chunk = await response.content.readany()
            except _CUT as error:
                return await self._cut(request, response, relayed, name, error)
            if not chunk:
                break
            try:
                await relayed.write(chunk)
            except ConnectionError:
                response.close()  # the client left: stop the upstream's generation too
                return relayed
        await relayed.write_eof()
        return relayed

    async def _relay_whole(
        self,
        request: web.Request,
        response: aiohttp.ClientResponse,
        *,
        headers: CIMultiDict[str],
        started: float,
        upstream_s: float,
        name: str,
    ) -> web.StreamResponse:
        """A small answer of known length (a non-streaming completion, the model list), read
        whole and sent in one write: one send for the client instead of two, and an upstream
        that dies before its end is a clean 502, since nothing has been relayed yet."""
        began = self._clock()
        try:
            body = await response.read()
        except _CUT as error:
            response.close()
            self._metrics.aborted_streams.inc()
            log.warning("upstream_cut_mid_response", endpoint=name, error=str(error))
            self._metrics.answered(HTTP_BAD_GATEWAY)
            return _error(HTTP_BAD_GATEWAY, f"endpoint {name} failed mid-answer", "upstream_error")
        upstream_s += self._clock() - began
        headers.popall("Content-Length", None)  # the body's own is set on send
        relayed = web.Response(
            body=body, status=response.status, reason=response.reason, headers=headers
        )
        try:
            await relayed.prepare(request)
            await relayed.write_eof()
        except ConnectionError:
            return relayed
        self._metrics.added_latency.observe(max(self._clock() - started - upstream_s, 0.0))
        self._metrics.answered(response.status)
        return relayed

    async def _cut(
        self,
        request: web.Request,
        response: aiohttp.ClientResponse,
        relayed: web.StreamResponse,
        name: str,
        error: BaseException,
    ) -> web.StreamResponse:
        """The upstream died after its headers were relayed (see the module docstring)."""
        response.close()
        self._metrics.aborted_streams.inc()
        log.warning("upstream_cut_mid_response", endpoint=name, error=str(error))
        if response.content_type == "text/event-stream":
            try:
                await relayed.write(sse_error_event(f"endpoint {name} failed mid-stream"))
                await relayed.write_eof()
            except ConnectionError:
                pass
            return relayed
        transport = request.transport
        if transport is not None:
            transport.abort()
        return relayed
