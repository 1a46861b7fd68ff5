"""The router process: discovery, score refresh and two HTTP servers, in one event loop.

`Router` is the whole process as an async context manager (the integration tests run it
in-process); `run_router` runs one until SIGTERM or SIGINT. The proxy listens on `port`; the ops
server (`/metrics`, `/healthz`, `/readyz`) on `metrics_port`, so scrapes and probes never share a
port, or a connection limit, with model traffic. `/readyz` is 200 once the EndpointSlice cache
has synced. A background task that ends (it never should) stops the process with status 1, so
the kubelet restarts it rather than leaving it to serve a frozen table.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable
from types import TracebackType
from typing import Self

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from climatik.domain.errors import EXIT_RUNTIME_FAILURE
from climatik.kube.client import KubeClient
from climatik.kube.watchstate import WatchSettings
from climatik.router.discovery import EndpointDiscovery
from climatik.router.metrics import RouterMetrics
from climatik.router.proxy import Proxy
from climatik.router.scores import (
    PodMetricsScores,
    PrometheusScores,
    ScoreRefresher,
    ScoreSource,
    VllmLabels,
)
from climatik.router.settings import RouterSettings, RouterSettingsError
from climatik.router.table import EndpointTable
from climatik.sources.address import HTTPSession
from climatik.sources.power_queries import PowerQueryConfig
from climatik.sources.prometheus import PrometheusClient, PrometheusSettings

log = structlog.get_logger(__name__)


class Router:
    """One running router; `port` and `metrics_port` are the bound ports once entered."""

    def __init__(self, settings: RouterSettings, client: KubeClient, namespace: str) -> None:
        self.settings = settings
        self.namespace = namespace
        self.metrics = RouterMetrics()
        self.table = EndpointTable(sends_horizon_s=settings.routing.ttft_budget_s)
        self.discovery = EndpointDiscovery(
            client,
            self.table,
            namespace=namespace,
            service=settings.service,
            port_name=settings.port_name,
            metrics=self.metrics,
            watch=WatchSettings(inactivity_timeout_s=settings.watch_inactivity_timeout_s),
        )
        self.port = settings.port
        self.metrics_port = settings.metrics_port
        self.ext_proc_port = settings.ext_proc_port
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopped = asyncio.Event()

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        settings = self.settings
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections, limit_per_host=0, ttl_dns_cache=30
        )
        upstream = await self._stack.enter_async_context(
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=settings.connect_timeout_s,
                    sock_read=settings.read_timeout_s,
                ),
                auto_decompress=False,  # bytes pass through as the upstream sent them
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        )
        sources: list[ScoreSource] = []
        if settings.pod_metrics.enabled:
            sources.append(
                PodMetricsScores(
                    upstream,
                    path=settings.pod_metrics.path,
                    port=settings.pod_metrics.port,
                    timeout_s=settings.pod_metrics.timeout_s,
                )
            )
        prometheus = settings.prometheus
        if prometheus.address:
            session = await self._stack.enter_async_context(
                HTTPSession(user_agent="climatik-router", connection_limit=8)
            )
            client = PrometheusClient(
                session, prometheus.address, PrometheusSettings(timeout_s=prometheus.timeout_s)
            )
            sources.append(
                PrometheusScores(
                    client,
                    self.namespace,
                    PowerQueryConfig(preset=prometheus.preset),
                    VllmLabels(
                        prometheus.namespace_label, prometheus.pod_label, prometheus.tokens_window
                    ),
                    with_load=not settings.pod_metrics.enabled,
                )
            )
        refresher = ScoreRefresher(
            self.table,
            sources,
            self.metrics,
            interval_s=settings.refresh_interval_s,
            timeout_s=settings.refresh_timeout_s,
        )
        proxy_app = web.Application(client_max_size=settings.max_body_bytes)
        Proxy(
            self.table,
            upstream,
            self.metrics,
            settings.routing.picker(),
            session_header=settings.session_header,
        ).add_routes(proxy_app)
        self.port = await self._serve(proxy_app, settings.port, settings.shutdown_grace_s)
        self.metrics_port = await self._serve(self._ops_app(), settings.metrics_port, 1.0)
        if settings.ext_proc_port is not None:
            self.ext_proc_port = await self._serve_ext_proc(settings.ext_proc_port)
        self._tasks = [
            asyncio.create_task(self._guarded("discovery", self.discovery.run())),
            asyncio.create_task(self._guarded("scores", refresher.run())),
        ]
        self._stack.push_async_callback(self._cancel_tasks)
        log.info(
            "router_started",
            service=settings.service,
            namespace=self.namespace,
            port=self.port,
            metrics_port=self.metrics_port,
            ext_proc_port=self.ext_proc_port,
            prometheus=prometheus.address or "",
        )

    async def _serve_ext_proc(self, port: int) -> int:
        """The Envoy Endpoint Picker on `port`, picking from this router's table and counting
        its picks in the same open counts and metrics as the proxy's."""
        try:
            from climatik.router.extproc import (  # noqa: PLC0415 - an optional extra
                EndpointPicker,
                running_ext_proc,
            )
        except ModuleNotFoundError as error:
            msg = (
                f"CLIMATIK_ROUTER__EXT_PROC_PORT needs the router-extproc extra ({error.name} is "
                "missing): pip install 'climatik[router-extproc]'"
            )
            raise RouterSettingsError(msg) from error
        picker = EndpointPicker(
            self.table.readings,
            self.settings.routing.picker(),
            address_of=self.table.address_of,
            open_requests=self.table,
            on_pick=lambda pick: self.metrics.picked(pick.reason),
            session_header=self.settings.session_header,
        )
        served = running_ext_proc(self.settings.host, port, picker, ready=self.discovery.has_synced)
        _host, bound = await self._stack.enter_async_context(served)
        return bound

    async def _serve(self, app: web.Application, port: int, grace_s: float) -> int:
        """Serve `app`; at exit it stops listening at once and gives the requests in flight
        `grace_s` to finish."""
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace_s)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, self.settings.host, port).start()
        return int(runner.addresses[0][1])

    def _ops_app(self) -> web.Application:
        app = web.Application()

        async def metrics(request: web.Request) -> web.Response:
            del request
            body = generate_latest(self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(request: web.Request) -> web.Response:
            del request
            return web.Response(text="ok\n")

        async def readyz(request: web.Request) -> web.Response:
            del request
            if self.discovery.has_synced():
                return web.Response(text="ok\n")
            return web.Response(status=503, text="EndpointSlice cache not synced\n")

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        return app

    async def _guarded(self, name: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("router_task_failed", task=name)
        else:
            log.error("router_task_ended", task=name)
        self.stopped.set()

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()


async def run_router(settings: RouterSettings) -> int:
    """Run until SIGTERM/SIGINT (0) or a background task's end (1)."""
    client = await KubeClient.from_config(
        settings.kubeconfig, request_timeout_s=settings.kube_request_timeout_s
    )
    try:
        await client.check_reachable()
        namespace = settings.namespace or client.default_namespace
        async with Router(settings, client, namespace) as router:
            signalled = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, signalled.set)
            waits = [
                asyncio.create_task(signalled.wait()),
                asyncio.create_task(router.stopped.wait()),
            ]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            log.info("router_stopping", signalled=signalled.is_set())
            return 0 if signalled.is_set() else EXIT_RUNTIME_FAILURE
    finally:
        await client.close()
