"""A watch that goes silent is declared dead and reopened within the inactivity timeout.

The far end is a real local HTTP server that accepts the list and the watch and then says nothing:
a network-failure injector (a half-open connection, a stuck proxy), not a fake API server. The
rest of the reflector's behaviour runs against the real API server in the other runtime tests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from climatik.kube.client import KubeClient
from climatik.kube.informer import Informer
from climatik.kube.resources import CONFIGMAPS
from climatik.kube.watchstate import WatchSettings
from climatik.runtime.metrics import RuntimeMetrics
from tests.loopback import serving

pytestmark = [pytest.mark.integration]


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[str, list[float]]]:
    """Lists one ConfigMap, then holds every watch open without a byte; records watch opens."""
    opened: list[float] = []
    hold = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response(
                {
                    "kind": "ConfigMapList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "7"},
                    "items": [
                        {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7"}}
                    ],
                }
            )
        opened.append(time.monotonic())
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await hold.wait()  # never set: silent until the client gives up
        return response

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps", handler)
    async with serving(app, shutdown_timeout_s=0.5) as url:
        yield url, opened
        hold.set()


async def test_silent_watch_is_reopened_within_the_inactivity_timeout(
    silent_server: tuple[str, list[float]],
) -> None:
    url, opened = silent_server
    client = KubeClient.for_url(url)
    metrics = RuntimeMetrics()
    inactivity_s = 1.0
    informer = Informer(
        client,
        CONFIGMAPS,
        namespace="ns",
        settings=WatchSettings(inactivity_timeout_s=inactivity_s),
        metrics=metrics,
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 5)
        deadline = time.monotonic() + 10
        while len(opened) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a server
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    assert len(opened) >= 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(opened)]
    # Each silent watch is abandoned after the timeout (plus scheduling slack), never later.
    assert all(inactivity_s * 0.9 <= gap <= inactivity_s + 0.5 for gap in gaps), gaps
    silent_restarts = metrics.registry.get_sample_value(
        "climatik_watch_restarts_total", {"resource": informer.name, "reason": "silent"}
    )
    assert silent_restarts is not None
    assert silent_restarts >= 2
    assert informer.reflector.lists_done == 1  # silence needs no relist
    assert "ns/a" in informer.store
