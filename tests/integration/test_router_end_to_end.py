"""`climatik router` end to end: fake vLLM replicas that follow the routing twin's physics (two
"H100" and two "A100" servers of the `hetero-routing` scenario, `climatik.world.vllm_replica`),
discovered from EndpointSlices on the dev cluster as test_router.py does, under the same
client load twice: once with the tokens-per-watt picker learning each replica's load curve
from its `/metrics`, once least-loaded (no efficiency and no curve: every pick `no_data`). The
figures are the replicas' own energy counters and token counts; no request may fail.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from climatik.kube.client import KubeClient
from climatik.kube.resources import ENDPOINT_SLICES
from climatik.router.server import Router
from climatik.router.settings import RouterSettings
from climatik.sim.routing_scenario import load_routing_scenario
from climatik.world.vllm_replica import LiveReplica, ReplicaServer
from tests.integration.test_router import SERVICE, SERVICES, eventually, host_address

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LOAD_S = 45.0
"""Per policy: 90 s of load in all."""
RATE_PER_S = 3.0
"""Poisson arrivals: with ~2 s prompts-plus-256-token streams, about 20 requests in flight."""
PROMPT_WORDS = 512
OUTPUT_TOKENS = 64


@dataclass
class Fleet:
    servers: list[ReplicaServer]
    ports: list[int]

    def energy(self) -> tuple[float, float]:
        """Tokens generated and GPU joules, all replicas together."""
        tokens = sum(s.replica.generated_tokens for s in self.servers)
        joules = sum(s.replica.gpu_joules for s in self.servers)
        return tokens, joules


@asynccontextmanager
async def fleet() -> AsyncIterator[Fleet]:
    scenario = load_routing_scenario("hetero-routing")
    groups = {g.name: g for g in scenario.replicas}
    servers = [
        ReplicaServer(LiveReplica(f"{kind}-{i}", groups[kind], scenario))
        for kind in ("h100", "a100")
        for i in range(2)
    ]
    runners = [web.AppRunner(s.app(), access_log=None, shutdown_timeout=1.0) for s in servers]
    address = host_address()
    ports = []
    try:
        for runner in runners:
            await runner.setup()
            await web.TCPSite(runner, address, 0).start()
            ports.append(runner.addresses[0][1])
        yield Fleet(servers, ports)
    finally:
        for runner in runners:
            await runner.cleanup()


async def create_service(client: KubeClient, namespace: str, named: Fleet) -> None:
    address = host_address()
    await client.create(
        SERVICES,
        {"metadata": {"name": SERVICE}, "spec": {"ports": [{"name": "http", "port": 80}]}},
        namespace,
    )
    for server, port in zip(named.servers, named.ports, strict=True):
        name = server.replica.name
        await client.create(
            ENDPOINT_SLICES,
            {
                "metadata": {
                    "name": f"{SERVICE}-{name}",
                    "labels": {
                        "kubernetes.io/service-name": SERVICE,
                        "endpointslice.kubernetes.io/managed-by": "climatik-tests",
                    },
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [address],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "targetRef": {"kind": "Pod", "name": name},
                    }
                ],
            },
            namespace,
        )


@dataclass
class Outcome:
    tokens_per_joule: float
    by_backend: dict[str, int]
    failures: int
    picks: dict[str, float]
    first_byte_p95_s: float
    duration_p95_s: float


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else math.nan


@dataclass
class Load:
    by_backend: dict[str, int]
    failures: int
    first_byte_s: list[float]
    duration_s: list[float]


async def drive(url: str, seconds: float, seed: int) -> Load:
    """Poisson load for `seconds`, every request streamed: answers by backend, failures, and
    each answer's time to its first streamed chunk and to its end."""
    rng = random.Random(seed)
    load = Load({}, 0, [], [])

    async def one(session: aiohttp.ClientSession) -> None:
        body = {"prompt": "w " * PROMPT_WORDS, "max_tokens": OUTPUT_TOKENS, "stream": True}
        started = time.monotonic()
        first: float | None = None
        text = b""
        try:
            async with session.post(url + "/v1/completions", json=body) as response:
                async for chunk in response.content.iter_any():
                    if first is None and b"text" in chunk:
                        first = time.monotonic() - started
                    text += chunk
                if response.status != 200 or not text.endswith(b"data: [DONE]\n\n"):
                    load.failures += 1
                    return
                backend = response.headers["x-backend"]
        except aiohttp.ClientError:
            load.failures += 1
            return
        load.by_backend[backend] = load.by_backend.get(backend, 0) + 1
        load.first_byte_s.append(first if first is not None else math.nan)
        load.duration_s.append(time.monotonic() - started)

    async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            group.create_task(one(session))
            await asyncio.sleep(rng.expovariate(RATE_PER_S))
    return load


async def run_policy(
    client: KubeClient, namespace: str, *, learn_curves: bool, seed: int
) -> Outcome:
    async with fleet() as replicas:
        await create_service(client, namespace, replicas)
        settings = RouterSettings(
            service=SERVICE,
            namespace=namespace,
            port_name="http",
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            refresh_interval_s=1.0,
            refresh_timeout_s=0.8,
            pod_metrics={"enabled": learn_curves},
        )
        async with Router(settings, client, namespace) as router:
            names = {s.replica.name for s in replicas.servers}
            await eventually(
                "the replicas", lambda: {r.name for r in router.table.readings()} == names
            )
            tokens_before, joules_before = replicas.energy()
            load = await drive(f"http://127.0.0.1:{router.port}", LOAD_S, seed)
            tokens, joules = replicas.energy()
            picks = {
                reason: router.metrics.registry.get_sample_value(
                    "climatik_router_picks_total", {"reason": reason}
                )
                or 0.0
                for reason in ("efficient", "no_data", "all_busy")
            }
        await client.delete(SERVICES, SERVICE, namespace)
        for server in replicas.servers:
            await client.delete(ENDPOINT_SLICES, f"{SERVICE}-{server.replica.name}", namespace)
    return Outcome(
        (tokens - tokens_before) / (joules - joules_before),
        load.by_backend,
        load.failures,
        picks,
        p95(load.first_byte_s),
        p95(load.duration_s),
    )


def h100_share(by_backend: dict[str, int]) -> float:
    total = sum(by_backend.values())
    return sum(n for name, n in by_backend.items() if name.startswith("h100")) / total


async def test_tokens_per_watt_routing_beats_least_loaded_on_the_replicas_own_counters(
    client: KubeClient, namespace: str
) -> None:
    learned = await run_policy(client, namespace, learn_curves=True, seed=1)
    print(f"\ntokens-per-watt: {learned}")
    spread = await run_policy(client, namespace, learn_curves=False, seed=1)
    print(f"\nleast-loaded: {spread}")
    assert learned.failures == spread.failures == 0
    assert learned.picks["efficient"] > learned.picks["no_data"]
    assert spread.picks["efficient"] == 0
    assert h100_share(learned.by_backend) > h100_share(spread.by_backend)
    assert h100_share(learned.by_backend) > 0.5
    assert learned.tokens_per_joule > spread.tokens_per_joule
