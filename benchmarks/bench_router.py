"""Benchmark `climatik router`'s request path: added latency and sustained requests per second,
beside a direct connection to the same backends, measured in the same run.

Three processes: the fake OpenAI backends (tests/router_backends.py, two of them), the router
pinned to one core (`os.sched_setaffinity` in its own process: the `Proxy`, endpoint table,
picker and metrics exactly as `climatik router` runs them, with readings refreshed every second
so picks take the `efficient` branch; EndpointSlice discovery is left out, as it is never on the
request path), and this process, the load generator, on the other cores.

- latency: one request at a time (no queueing anywhere), `--requests` of them, alternating
  direct and routed rounds so that the machine's other load falls on both alike; the added
  latency is the routed percentile less the direct one, for plain completions and for the time
  to first byte of a streaming chat completion. The router's own histogram
  (`climatik_router_added_latency_seconds`, see climatik/router/metrics.py) is reported beside.
- throughput: `--concurrency` requests in flight for `--seconds`, direct and routed in turn.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/bench_router.py [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import generate_latest

from climatik.domain.routing import RoutingSettings
from climatik.router.metrics import RouterMetrics
from climatik.router.proxy import Proxy
from climatik.router.slices import Upstream
from climatik.router.table import EndpointTable, Scores
from tests.router_backends import FakeBackend

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _pin(cores: set[int]) -> None:
    os.sched_setaffinity(0, cores)


def _backends_main(conn: Connection, cores: set[int], count: int) -> None:
    _pin(cores)

    async def serve() -> None:
        backends = [FakeBackend(f"backend-{i}", stream_chunks=8) for i in range(count)]
        for backend in backends:
            await backend.start()
        conn.send([b.port for b in backends])
        loop = asyncio.get_running_loop()
        # Asked "cpu", it answers the CPU seconds it has used so far; anything else stops it.
        while await loop.run_in_executor(None, conn.recv) == "cpu":
            conn.send(_cpu_s())
        for backend in backends:
            await backend.stop()

    asyncio.run(serve())


def _router_main(conn: Connection, core: int, ports: list[int]) -> None:
    _pin({core})

    async def serve() -> None:
        table = EndpointTable()
        table.set_upstreams(
            Upstream(f"backend-{i}", "bench", "127.0.0.1", p) for i, p in enumerate(ports)
        )
        metrics = RouterMetrics()
        connector = aiohttp.TCPConnector(limit=4096, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None, connect=2, sock_read=300),
        ) as session:
            app = web.Application()
            Proxy(table, session, metrics, RoutingSettings()).add_routes(app)

            async def scrape(request: web.Request) -> web.Response:
                del request
                return web.Response(body=generate_latest(metrics.registry))

            app.router.add_get("/metrics", scrape)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()

            async def refresh() -> None:  # what the score refresher does, every second
                while True:
                    for i, port in enumerate(ports):
                        table.record(f"backend-{i}", Scores(1.0 + i, running=0, waiting=0))
                        del port
                    await asyncio.sleep(1.0)

            refresher = asyncio.create_task(refresh())
            conn.send(runner.addresses[0][1])
            loop = asyncio.get_running_loop()
            # Asked "cpu", it answers the CPU seconds it has used so far; anything else stops it.
            while await loop.run_in_executor(None, conn.recv) == "cpu":
                conn.send(_cpu_s())
            refresher.cancel()
            await runner.cleanup()

    asyncio.run(serve())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _one(session: aiohttp.ClientSession, url: str, streaming: bool) -> float:
    """Seconds to the whole body (plain) or to the first byte (streaming)."""
    began = time.perf_counter()
    if streaming:
        async with session.post(
            url + "/v1/chat/completions", json={"model": "fake", "stream": True}
        ) as response:
            await response.content.readany()
            elapsed = time.perf_counter() - began
            await response.read()
            return elapsed
    async with session.post(url + "/v1/completions", json={"model": "fake", "prompt": "hi"}) as r:
        await r.read()
    return time.perf_counter() - began


async def _latency(
    session: aiohttp.ClientSession, direct: str, routed: str, requests: int, streaming: bool
) -> dict[str, float]:
    samples: dict[str, list[float]] = {"direct": [], "routed": []}
    rounds = 10
    for _ in range(rounds):
        for name, url in (("direct", direct), ("routed", routed)):
            for _ in range(requests // rounds):
                samples[name].append(await _one(session, url, streaming))
    out: dict[str, float] = {}
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        d, r = _percentile(samples["direct"], q), _percentile(samples["routed"], q)
        out[f"direct_{label}_ms"] = d * 1000
        out[f"routed_{label}_ms"] = r * 1000
        out[f"added_{label}_ms"] = (r - d) * 1000
    out["added_mean_ms"] = (
        statistics.fmean(samples["routed"]) - statistics.fmean(samples["direct"])
    ) * 1000
    return out


async def _throughput(
    session: aiohttp.ClientSession, url: str, concurrency: int, seconds: float
) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await _one(session, url, streaming=False)
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - began)


def _router_histogram(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("climatik_router_added_latency_seconds_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    count = values.get("climatik_router_added_latency_seconds_count", 0.0)
    total = values.get("climatik_router_added_latency_seconds_sum", 0.0)
    buckets = {  # le -> cumulative count
        float(k.split('le="')[1].rstrip('"}')): v
        for k, v in values.items()
        if "_bucket" in k and "+Inf" not in k
    }
    p99_bound = next((le for le, c in sorted(buckets.items()) if c >= 0.99 * count), float("inf"))
    return {
        "count": count,
        "mean_ms": total / count * 1000 if count else 0.0,
        "p99_at_most_ms": p99_bound * 1000,
        "share_within_1ms": buckets.get(0.001, 0.0) / count if count else 0.0,
        "share_within_2ms": buckets.get(0.002, 0.0) / count if count else 0.0,
    }


def _cpu_of(conn: Connection) -> float:
    conn.send("cpu")
    return float(conn.recv())


async def _measure(
    ports: list[int],
    router_port: int,
    processes: dict[str, Connection],
    args: argparse.Namespace,
) -> dict[str, Any]:
    direct = f"http://127.0.0.1:{ports[-1]}"  # the backend the router's picks favour
    routed = f"http://127.0.0.1:{router_port}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _latency(session, direct, routed, 200, streaming=False)  # warm up both paths
        results: dict[str, Any] = {
            "latency_completion": await _latency(session, direct, routed, args.requests, False),
            "latency_stream_first_byte": await _latency(
                session, direct, routed, args.requests, True
            ),
        }
        throughput: dict[str, list[float]] = {"direct": [], "routed": []}
        # CPU seconds per path and process: where each path's time goes.
        cpu: dict[str, dict[str, float]] = {
            path: dict.fromkeys(["load_generator", "backends", "router"], 0.0)
            for path in ("direct", "routed")
        }
        for _ in range(2):
            for path, url in (("direct", direct), ("routed", routed)):
                before = {name: _cpu_of(conn) for name, conn in processes.items()}
                before["load_generator"] = _cpu_s()
                rate = await _throughput(session, url, args.concurrency, args.seconds / 2)
                throughput[path].append(rate)
                cpu[path]["load_generator"] += _cpu_s() - before["load_generator"]
                for name, conn in processes.items():
                    cpu[path][name] += _cpu_of(conn) - before[name]
        direct_rps = statistics.fmean(throughput["direct"])
        routed_rps = statistics.fmean(throughput["routed"])
        routed_requests = routed_rps * args.seconds
        results["throughput"] = {
            "concurrency": args.concurrency,
            "direct_rps": direct_rps,
            "routed_rps": routed_rps,
            "routed_over_direct": routed_rps / direct_rps,
            # What one whole core would carry: requests per CPU-second the router used (the
            # core is shared with other work on a busy machine, so this is the steadier figure).
            "routed_requests_per_router_cpu_s": routed_requests / cpu["routed"]["router"],
            "router_core_share_used": cpu["routed"]["router"] / args.seconds,
            "cpu_s_per_path_and_process": cpu,
        }
        async with session.get(routed + "/metrics") as response:
            results["router_added_latency_histogram"] = _router_histogram(await response.text())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per path, latency phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="per path, throughput phase")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    router_core = cores[-1]
    others = set(cores[:-1]) or {router_core}
    _pin(others)  # the load generator stays off the router's core
    spawn = multiprocessing.get_context("spawn")
    backend_conn, backend_child = spawn.Pipe()
    router_conn, router_child = spawn.Pipe()
    backends = spawn.Process(target=_backends_main, args=(backend_child, others, 2))
    backends.start()
    ports = backend_conn.recv()
    router = spawn.Process(target=_router_main, args=(router_child, router_core, ports))
    router.start()
    router_port = router_conn.recv()
    try:
        results = asyncio.run(
            _measure(ports, router_port, {"router": router_conn, "backends": backend_conn}, args)
        )
    finally:
        router_conn.send("stop")
        backend_conn.send("stop")
        router.join(10)
        backends.join(10)
    results["machine"] = {
        "cpus": len(cores),
        "router_core": router_core,
        "load_generator_and_backends_cores": sorted(others),
        "load_average_1m": os.getloadavg()[0],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
