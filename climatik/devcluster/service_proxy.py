"""The dev cluster's service proxy: in-cluster Service names for processes outside the cluster.

Every dev-cluster component runs as a plain process on the host, where no cluster DNS resolves
`prometheus-server.monitoring.svc`. A user's ScaledObject names such an address, and KEDA's
operator must reach it as it would in a cluster. So `up` runs this HTTP forward proxy and gives
KEDA's processes `HTTP_PROXY` (Go's clients never send loopback addresses through it, so the API
server and KEDA's own gRPC stay direct).

A request for `http://NAME.NAMESPACE.svc[.cluster.local]:PORT/...` goes where the cluster says:
the Service NAME in NAMESPACE must be an ExternalName Service (the dev cluster's way to point a
Service at a process on the host, as its KEDA adapter's APIService does), and its port PORT's
`targetPort` is the port dialled on the external name. Anything else is answered 502 with the
reason: a ClusterIP Service's pods are kwok's and serve nothing. Plain HTTP only; `CONNECT`
(HTTPS through a proxy) is refused.

Run as `python -m climatik.devcluster.service_proxy` (`service_proxy_args`); the first line on
stdout is `listening on http://127.0.0.1:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from climatik.devcluster.apiclient import ApiClient
from climatik.domain.http_headers import NOT_FORWARDED

SUFFIXES = (".svc.cluster.local", ".svc")
CACHE_TTL_S = 2.0
"""A Service is read again after this long, so a re-pointed one takes effect quickly."""


class UnroutableError(Exception):
    """The request names nothing this proxy can reach; the message says why."""


def service_of(host: str) -> tuple[str, str] | None:
    """(namespace, name) of an in-cluster Service host name, or None for any other host."""
    host = host.lower().rstrip(".")
    for suffix in SUFFIXES:
        if host.endswith(suffix):
            labels = host.removesuffix(suffix).split(".")
            if len(labels) == 2 and all(labels):
                return labels[1], labels[0]
    return None


def upstream(service: dict[str, Any], port: int) -> tuple[str, int]:
    """Where a request to `port` of `service` goes: its external name, at the port's
    `targetPort` (the port itself when the target is unnamed or absent)."""
    meta = service.get("metadata", {})
    shown = f"Service {meta.get('namespace')}/{meta.get('name')}"
    spec = service.get("spec", {})
    if spec.get("type") != "ExternalName" or not spec.get("externalName"):
        raise UnroutableError(
            f"{shown} is not an ExternalName Service: the dev cluster's pods serve nothing, "
            "so only a Service pointing at a host process (type ExternalName) can be reached"
        )
    ports = spec.get("ports") or []
    if not ports:
        return str(spec["externalName"]), port
    for entry in ports:
        if entry.get("port") == port:
            target = entry.get("targetPort", port)
            return str(spec["externalName"]), target if isinstance(target, int) else port
    listed = ", ".join(str(p.get("port")) for p in ports)
    raise UnroutableError(f"{shown} has no port {port} (it lists {listed})")


@dataclass
class _Cached:
    at: float
    service: dict[str, Any] | None


class ServiceDirectory:
    """Services read from the API server, each kept for `CACHE_TTL_S`."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self._cache: dict[tuple[str, str], _Cached] = {}

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        key = (namespace, name)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached.at < CACHE_TTL_S:
            return cached.service
        path = f"/api/v1/namespaces/{namespace}/services/{name}"
        response = await asyncio.to_thread(self._api.get, path)
        if response.status == 404:
            service = None
        elif response.status != 200:
            raise UnroutableError(f"reading Service {namespace}/{name}: HTTP {response.status}")
        else:
            service = response.body
        self._cache[key] = _Cached(time.monotonic(), service)
        return service


def make_app(directory: ServiceDirectory) -> web.Application:
    """The proxy: `GET /healthz` for itself, absolute-form requests for the cluster's names."""
    app = web.Application()
    session: dict[str, aiohttp.ClientSession] = {}

    async def open_session(_: web.Application) -> None:
        session["client"] = aiohttp.ClientSession(auto_decompress=False)

    async def close_session(_: web.Application) -> None:
        await session["client"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.method == "CONNECT":
            return web.Response(status=405, text="CONNECT (HTTPS) is not proxied\n")
        url = request.url
        if not request.raw_path.startswith("http://"):
            if url.path == "/healthz":
                return web.Response(text="ok")
            return web.Response(status=400, text="send absolute-form requests (HTTP_PROXY)\n")
        named = service_of(url.host or "")
        if named is None:
            return web.Response(
                status=502, text=f"{url.host} is not an in-cluster Service name (NAME.NS.svc)\n"
            )
        try:
            service = await directory.get(*named)
            if service is None:
                raise UnroutableError(f"no Service {named[1]} in namespace {named[0]}")
            host, port = upstream(service, url.port or 80)
        except UnroutableError as error:
            return web.Response(status=502, text=f"{error}\n")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        target = url.with_host(host).with_port(port)
        try:
            async with session["client"].request(
                request.method,
                target,
                headers=headers,
                data=await request.read() if request.can_read_body else None,
                allow_redirects=False,
            ) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason)
                for key, value in answer.headers.items():
                    if key.lower() not in NOT_FORWARDED:
                        response.headers.add(key, value)
                await response.prepare(request)
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientError as error:
            return web.Response(status=502, text=f"{host}:{port}: {error}\n")

    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    return app


async def serve(api: ApiClient, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    runner = web.AppRunner(make_app(ServiceDirectory(api)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def local_service(namespace: str, name: str, port: int, local_port: int) -> list[dict[str, Any]]:
    """The namespace and ExternalName Service that make `http://NAME.NAMESPACE.svc:PORT` lead
    to a process on this host at `local_port` (through this proxy, or a `connect_to_rule`)."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "http", "port": port, "targetPort": local_port}],
            },
        },
    ]


def connect_to_rule(namespace: str, name: str, port: int, local_port: int) -> str:
    """The same route for Climatik's controller outside the cluster
    (`CLIMATIK_OUTBOUND__CONNECT_TO`, which keeps its own address guard in the path)."""
    return f"{name}.{namespace}.svc:{port}:127.0.0.1:{local_port}"


SERVICE_PROXY = "service-proxy"
"""The component's name: its log, its process record and its port in cluster.json."""


def service_proxy_args(api_port: int, ca: Path, cert: Path, key: Path, port: int) -> list[str]:
    """The proxy's command line after the interpreter: as the cluster admin (it reads
    Services in every namespace)."""
    return [
        "-m",
        "climatik.devcluster.service_proxy",
        f"--api-port={api_port}",
        f"--ca={ca}",
        f"--cert={cert}",
        f"--key={key}",
        f"--port={port}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m climatik.devcluster.service_proxy")
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    api = ApiClient("127.0.0.1", args.api_port, ca=args.ca, cert=args.cert, key=args.key)
    asyncio.run(serve(api, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
