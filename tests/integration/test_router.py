"""`climatik router` on the dev cluster: endpoints from a real Service's EndpointSlices, an
endpoint dying mid-stream, and a Prometheus that never answers.

The Service has no selector, so its EndpointSlices are ours (managed-by a name of our own, which
the kube-controller-manager leaves alone); their addresses point at fake OpenAI backends
(tests/router_backends.py) on this machine's non-loopback address, since the API server refuses
loopback addresses in EndpointSlices. The router runs in-process against the real API server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from envoy_data_plane.envoy.service.ext_proc.v3 import ExternalProcessorAsyncStub
from grpclib.client import Channel

from climatik.devcluster.cluster import ClusterInfo
from climatik.domain.routing import PickReason
from climatik.kube.client import KubeClient
from climatik.kube.resources import ENDPOINT_SLICES, Resource
from climatik.router.server import Router
from climatik.router.settings import RouterSettings
from tests.loopback import serving
from tests.router_backends import FakeBackend
from tests.unit.test_router_extproc import _destination, _exchange, _headers

pytestmark = [pytest.mark.integration]

SERVICES = Resource("", "v1", "services", kind="Service")
SERVICE = "models"


def host_address() -> str:
    """This machine's address on its default route (never loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.254", 9))  # UDP: no packet is sent
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("no non-loopback IPv4 address to put in an EndpointSlice")
    return address


def slice_for(backend: FakeBackend, address: str) -> dict[str, Any]:
    """One EndpointSlice per backend: a slice's port is shared by its endpoints, and each
    backend listens on a port of its own."""
    return {
        "metadata": {
            "name": f"{SERVICE}-{backend.name}",
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": "climatik-tests",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": {"kind": "Pod", "name": backend.name},
            }
        ],
    }


async def create_service(
    client: KubeClient, namespace: str, backends: Sequence[FakeBackend]
) -> None:
    address = host_address()
    await client.create(
        SERVICES,
        {"metadata": {"name": SERVICE}, "spec": {"ports": [{"name": "http", "port": 80}]}},
        namespace,
    )
    for backend in backends:
        await client.create(ENDPOINT_SLICES, slice_for(backend, address), namespace)


@asynccontextmanager
async def started(*backends: FakeBackend) -> AsyncIterator[None]:
    address = host_address()
    for backend in backends:
        await backend.start(address)
    try:
        yield
    finally:
        for backend in backends:
            await backend.stop()


def settings(namespace: str, **more: Any) -> RouterSettings:
    return RouterSettings(
        service=SERVICE,
        namespace=namespace,
        port_name="http",
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        **more,
    )


async def eventually(what: str, check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def stream(session: aiohttp.ClientSession, url: str) -> tuple[str, bytes]:
    async with session.post(url + "/v1/chat/completions", json={"stream": True}) as response:
        return response.headers["x-backend"], await response.read()


def healthy(router: Router) -> set[str]:
    return {r.name for r in router.table.readings() if r.healthy}


async def test_endpoints_come_from_the_slices_and_one_removed_gets_no_more_requests(
    client: KubeClient, namespace: str
) -> None:
    a, b = FakeBackend("backend-a"), FakeBackend("backend-b")
    async with started(a, b):
        await create_service(client, namespace, [a, b])
        async with Router(settings(namespace), client, namespace) as router:
            await eventually("both endpoints", lambda: healthy(router) == {a.name, b.name})
            url = f"http://127.0.0.1:{router.port}"
            async with aiohttp.ClientSession() as session:
                # Without readings, each request goes to the endpoint with the fewest open.
                results = await asyncio.gather(*(stream(session, url) for _ in range(2)))
                assert {name for name, _ in results} == {a.name, b.name}

                await client.merge_patch(
                    ENDPOINT_SLICES, f"{SERVICE}-{a.name}", {"endpoints": []}, namespace
                )
                await eventually("backend-a's removal", lambda: healthy(router) == {b.name})
                served_by_a = a.served
                for _ in range(10):
                    async with session.post(url + "/v1/completions", json={}) as response:
                        assert response.status == 200
                        assert response.headers["x-backend"] == b.name
                assert a.served == served_by_a

                ops = f"http://127.0.0.1:{router.metrics_port}"
                async with session.get(ops + "/readyz") as ready:
                    assert ready.status == 200
                async with session.get(ops + "/metrics") as scrape:
                    text = await scrape.text()
                assert 'climatik_router_requests_total{code="200"} 12.0' in text
                assert 'climatik_router_endpoints{healthy="true"} 1.0' in text
                assert "climatik_router_added_latency_seconds_count 12.0" in text


async def test_an_endpoint_dying_mid_stream_ends_its_client_cleanly_and_the_other_goes_on(
    client: KubeClient, namespace: str
) -> None:
    a = FakeBackend("backend-a", stream_chunks=100, chunk_delay_s=0.02)
    b = FakeBackend("backend-b", stream_chunks=100, chunk_delay_s=0.02)
    async with started(a, b):
        await create_service(client, namespace, [a, b])
        async with Router(settings(namespace), client, namespace) as router:
            await eventually("both endpoints", lambda: healthy(router) == {a.name, b.name})
            url = f"http://127.0.0.1:{router.port}"
            async with aiohttp.ClientSession() as session:
                streams = [asyncio.create_task(stream(session, url)) for _ in range(2)]
                await eventually("both streams running", lambda: a.running == b.running == 1)
                await a.kill()
                # The pod is gone: its slice says so too, as the endpoint controller would.
                await client.merge_patch(
                    ENDPOINT_SLICES, f"{SERVICE}-{a.name}", {"endpoints": []}, namespace
                )
                outcome = dict(await asyncio.gather(*streams))
            assert outcome[b.name].endswith(b"data: [DONE]\n\n")
            assert outcome[b.name].count(b"data: ") == 101
            cut = outcome[a.name]
            assert b"[DONE]" not in cut
            last = json.loads(cut.split(b"\n\n")[-2].removeprefix(b"data: "))
            assert last["error"]["type"] == "upstream_error"
            aborts = router.metrics.registry.get_sample_value(
                "climatik_router_upstream_aborts_total"
            )
            assert aborts == 1


class ScriptedPrometheus:
    """Answers the router's grouped queries with fixed figures, then (once `hang` is set)
    accepts every request and never answers."""

    def __init__(self, namespace: str, tokens_per_joule: dict[str, float]) -> None:
        self.namespace = namespace
        self.tokens_per_joule = tokens_per_joule
        self.hang = asyncio.Event()
        self.release = asyncio.Event()
        self.asked = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/query", self._query)
        return app

    def _value(self, query: str, pod: str) -> float | None:
        if "kepler_pod_gpu_watts" in query:
            return None
        if "kepler_pod_cpu_watts" in query:
            return 100.0
        if "generation_tokens_total" in query:
            return 100.0 * self.tokens_per_joule[pod]
        if "kv_cache" in query:
            return 0.1
        return 1.0 if "running" in query else 0.0

    async def _query(self, request: web.Request) -> web.Response:
        self.asked += 1
        if self.hang.is_set():
            await self.release.wait()
        query = str((await request.post())["query"])
        power = "kepler" in query
        ns_label, pod_label = ("pod_namespace", "pod_name") if power else ("namespace", "pod")
        result = []
        for pod in self.tokens_per_joule:
            value = self._value(query, pod)
            if value is not None:
                labels = {ns_label: self.namespace, pod_label: pod}
                result.append({"metric": labels, "value": [time.time(), str(value)]})
        data = {"resultType": "vector", "result": result}
        return web.json_response({"status": "success", "data": data})


async def test_a_prometheus_that_hangs_never_blocks_requests_and_picks_fall_back_to_no_data(
    client: KubeClient, namespace: str
) -> None:
    a, b = FakeBackend("backend-a"), FakeBackend("backend-b")
    prometheus = ScriptedPrometheus(namespace, {a.name: 1.0, b.name: 3.0})
    async with started(a, b), serving(prometheus.app()) as prometheus_url:
        await create_service(client, namespace, [a, b])
        more = {
            "prometheus": {"address": prometheus_url, "timeout_s": 0.5},
            "pod_metrics": {"enabled": False},
            "refresh_interval_s": 0.2,
            "refresh_timeout_s": 0.5,
            "routing": {"max_reading_age_s": 1.5},
        }
        async with Router(settings(namespace, **more), client, namespace) as router:
            await eventually("both endpoints", lambda: healthy(router) == {a.name, b.name})
            await eventually(
                "readings", lambda: all(r.tokens_per_joule for r in router.table.readings())
            )
            url = f"http://127.0.0.1:{router.port}"
            picks = router.metrics.registry.get_sample_value

            async def timed_completion(session: aiohttp.ClientSession) -> tuple[str, float]:
                began = time.perf_counter()
                async with session.post(url + "/v1/completions", json={}) as response:
                    assert response.status == 200
                    return response.headers["x-backend"], time.perf_counter() - began

            async with aiohttp.ClientSession() as session:
                backend, _ = await timed_completion(session)
                assert backend == b.name  # the more efficient one, with room
                assert picks("climatik_router_picks_total", {"reason": "efficient"}) == 1

                prometheus.hang.set()
                hung_at = time.monotonic()
                latencies: list[float] = []
                # Requests through the whole hang: the readings age past 1.5 s meanwhile.
                while time.monotonic() - hung_at < 3.0:
                    latencies.append((await timed_completion(session))[1])
                    await asyncio.sleep(0.02)
                no_data = picks("climatik_router_picks_total", {"reason": PickReason.NO_DATA.value})
                failures = picks(
                    "climatik_router_score_refresh_failures_total", {"source": "prometheus"}
                )
            prometheus.release.set()
        assert prometheus.asked > 6  # it was asked (and hung) throughout
        assert (failures or 0) >= 2
        assert (no_data or 0) >= 10
        # Bounded: below the Prometheus deadline (0.5 s), which a request waiting on a query
        # would reach, let alone the hang. A request waiting on the refresh would do so at every
        # one (at least two, above), so one slow request is a busy machine's, not the router's.
        slowest = sorted(latencies)[-2:]
        assert slowest[0] < 0.45, f"two requests took {slowest[0]:.3f} s or more"
        assert sorted(latencies)[len(latencies) // 2] < 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_command_serves_until_sigterm_and_exits_0(
    client: KubeClient, namespace: str, dev_cluster: ClusterInfo
) -> None:
    a = FakeBackend("backend-a")
    async with started(a):
        await create_service(client, namespace, [a])
        port, metrics_port = free_port(), free_port()
        command = [sys.executable, "-m", "climatik", "router", "--service", SERVICE]
        command += ["--namespace", namespace, "--kubeconfig", str(dev_cluster.kubeconfig)]
        command += ["--port", str(port), "--metrics-port", str(metrics_port)]
        env = {**os.environ, "CLIMATIK_ROUTER__HOST": "127.0.0.1"}
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            async with aiohttp.ClientSession() as session:

                async def ready() -> bool:
                    try:
                        async with session.get(f"http://127.0.0.1:{metrics_port}/readyz") as r:
                            return r.status == 200
                    except aiohttp.ClientError:
                        return False

                deadline = time.monotonic() + 30
                while not await ready():
                    assert process.returncode is None, (await process.communicate())[0]
                    assert time.monotonic() < deadline, "the router never became ready"
                    await asyncio.sleep(0.2)
                for _ in range(50):  # readiness means synced; the first add may trail by a tick
                    async with session.post(
                        f"http://127.0.0.1:{port}/v1/completions", json={}
                    ) as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.1)
                assert response.status == 200
                assert response.headers["x-backend"] == a.name
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    assert process.returncode == 0, output.decode()
    assert b"router_started" in output


async def test_the_endpoint_picker_answers_from_the_same_table_by_address(
    client: KubeClient, namespace: str
) -> None:
    """With an ext_proc port, a gateway's picks come from the slices' endpoints, named by pod
    and sent to by address, and count in the router's open requests and pick metrics."""
    a = FakeBackend("backend-a")
    async with started(a):
        await create_service(client, namespace, [a])
        more: dict[str, Any] = {"ext_proc_port": 0}
        async with Router(settings(namespace, **more), client, namespace) as router:
            await eventually("the endpoint", lambda: healthy(router) == {a.name})
            assert router.ext_proc_port
            channel = Channel("127.0.0.1", router.ext_proc_port)
            try:
                stub = ExternalProcessorAsyncStub(channel)
                (answer,) = await _exchange(stub, [_headers()])
            finally:
                channel.close()
            assert _destination(answer) == f"{host_address()}:{a.port}"
            picks = router.metrics.registry.get_sample_value(
                "climatik_router_picks_total", {"reason": "no_data"}
            )
            assert picks == 1
            # The stream ended: the open request it charged is closed again.
            assert [r.open_requests for r in router.table.readings()] == [0]
