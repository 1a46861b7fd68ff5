"""Informer + work queue + workers against the real API server: one key is never reconciled twice
at once, and after a storm of concurrent updates the reconciler's last look is the final state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from climatik.kube.client import KubeClient
from climatik.kube.informer import Informer
from climatik.kube.resources import CONFIGMAPS
from climatik.kube.workqueue import WorkQueue
from climatik.runtime.metrics import RuntimeMetrics
from climatik.runtime.reconcile import Controller, Result, enqueue_handlers, run_worker
from tests.json_paths import text_at

pytestmark = [pytest.mark.integration]


class Watchful:
    """Reads the object from the cache like a real reconciler; records overlap and what it saw."""

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        self.active: set[str] = set()
        self.overlaps = 0
        self.seen: list[tuple[str, str]] = []  # (resourceVersion, data.n) per reconcile

    async def reconcile(self, key: str) -> Result:
        if key in self.active:
            self.overlaps += 1
        self.active.add(key)
        try:
            obj = self.informer.store.get(key)
            if obj is not None:
                self.seen.append(
                    (text_at(obj, "metadata", "resourceVersion"), text_at(obj, "data", "n"))
                )
            await asyncio.sleep(0.005)  # long enough for more updates to arrive meanwhile
        finally:
            self.active.discard(key)
        return Result()


async def test_hundred_concurrent_updates_reconcile_one_at_a_time_and_end_on_the_last(
    client: KubeClient, namespace: str
) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": "hot"}, "data": {"n": "-1"}}, namespace)
    informer = Informer(client, CONFIGMAPS, namespace=namespace)
    queue: WorkQueue[str] = WorkQueue("hot")
    # Only the hot object (the namespace also holds kube-root-ca.crt).
    informer.add_handlers(
        enqueue_handlers(
            queue, lambda o: f"{namespace}/hot" if o["metadata"]["name"] == "hot" else None
        )
    )
    reconciler = Watchful(informer)
    controller = Controller("hot", reconciler, queue, workers=4)
    metrics = RuntimeMetrics()
    tasks = [asyncio.create_task(informer.run())]
    try:
        await asyncio.wait_for(informer.wait_synced(), 30)
        tasks += [asyncio.create_task(run_worker(controller, metrics)) for _ in range(4)]

        async def update(n: int) -> dict[str, Any]:
            return await client.merge_patch(CONFIGMAPS, "hot", {"data": {"n": str(n)}}, namespace)

        await asyncio.gather(*(update(n) for n in range(100)))
        final = await client.get(CONFIGMAPS, "hot", namespace)
        final_rv = final["metadata"]["resourceVersion"]
        deadline = time.monotonic() + 30
        while not (reconciler.seen and reconciler.seen[-1][0] == final_rv and not queue.processing):
            assert time.monotonic() < deadline, "the reconciler never saw the final state"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # nothing further may arrive
    finally:
        queue.shut_down()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert reconciler.overlaps == 0
    assert reconciler.seen[-1] == (final_rv, final["data"]["n"])
    # Coalescing: far fewer reconciles than updates, but at least one.
    print(f"100 updates -> {len(reconciler.seen)} reconciles")
    assert 0 < len(reconciler.seen) <= 101
