"""Benchmark the controller runtime: informer sync and memory at 5,000 objects, queue throughput.

Figures are reported next to baselines measured in the same run, on the same machine:

- initial sync: our informer (paginated raw-JSON list into the store) vs. one plain
  kubernetes-asyncio ``list_namespaced_config_map`` call (generated model classes);
- steady-state memory (tracemalloc, after the sync): our store vs. the same list held as
  kubernetes-asyncio model objects;
- reconciles per second of a no-op reconciler through our WorkQueue and workers (dedup,
  processing sets, metrics, structlog context per reconcile) vs. a bare ``asyncio.Queue``.

Run:  .venv/bin/python benchmarks/bench_informer.py [--kubeconfig PATH] [--objects 5000]
Without --kubeconfig it brings up a dev cluster (``climatik dev-cluster``) in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import structlog
from kubernetes_asyncio import client as k8s

from climatik.kube.client import KubeClient
from climatik.kube.informer import Informer, strip_managed_fields
from climatik.kube.resources import CONFIGMAPS, NAMESPACES
from climatik.kube.store import index_by_label
from climatik.kube.workqueue import WorkQueue
from climatik.runtime.metrics import RuntimeMetrics
from climatik.runtime.reconcile import Controller, Result, run_worker

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
# Only the benchmark's objects (a namespace also holds kube-root-ca.crt).
SELECTOR = "bench=informer"


async def _populate(client: KubeClient, namespace: str, count: int) -> float:
    semaphore = asyncio.Semaphore(32)
    payload = {f"key-{i}": "x" * 64 for i in range(4)}

    async def create(i: int) -> None:
        async with semaphore:
            await client.create(
                CONFIGMAPS,
                {
                    "metadata": {
                        "name": f"bench-{i:05d}",
                        "labels": {"rack": f"rack-{i % 8}", "bench": "informer"},
                    },
                    "data": payload,
                },
                namespace,
            )

    started = time.perf_counter()
    await asyncio.gather(*(create(i) for i in range(count)))
    return time.perf_counter() - started


async def _baseline_list(client: KubeClient, namespace: str, count: int) -> Any:
    core = k8s.CoreV1Api(client.api_client)
    listed = await core.list_namespaced_config_map(
        namespace, label_selector=SELECTOR, _request_timeout=120
    )
    assert len(listed.items) == count
    return listed


async def _informer_sync(client: KubeClient, namespace: str, count: int) -> Informer:
    # As the manager builds them: managedFields dropped, a rack index.
    informer = Informer(
        client,
        CONFIGMAPS,
        namespace=namespace,
        label_selector=SELECTOR,
        transform=strip_managed_fields,
    )
    informer.store.add_indexer("rack", index_by_label("rack"))
    task = asyncio.create_task(informer.run())
    await informer.wait_synced()
    assert len(informer.store) == count
    await asyncio.sleep(1.0)  # steady state: the watch is open
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return informer


async def _timed(coro: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - started


async def _traced(coro: Any) -> tuple[Any, int]:
    """Run ``coro`` under tracemalloc; bytes still allocated after it while its result lives."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = await coro
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return result, held


async def _bench_sync(client: KubeClient, namespace: str, count: int) -> dict[str, float]:
    # Timing first (tracemalloc slows allocation-heavy code and would skew the comparison);
    # best of three for each, alternating so both see the same server state.
    baseline_times, informer_times = [], []
    for _ in range(3):
        _, seconds = await _timed(_baseline_list(client, namespace, count))
        baseline_times.append(seconds)
        started = time.perf_counter()
        informer = Informer(
            client,
            CONFIGMAPS,
            namespace=namespace,
            label_selector=SELECTOR,
            transform=strip_managed_fields,
        )
        task = asyncio.create_task(informer.run())
        await informer.wait_synced()
        informer_times.append(time.perf_counter() - started)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        del informer
    sync_s, baseline_s = min(informer_times), min(baseline_times)
    # Memory: what each keeps alive for 5,000 objects.
    listed, baseline_b = await _traced(_baseline_list(client, namespace, count))
    del listed
    informer, informer_b = await _traced(_informer_sync(client, namespace, count))
    del informer
    return {
        "objects": count,
        "informer_sync_s": sync_s,
        "baseline_list_s": baseline_s,
        "sync_ratio_vs_baseline": sync_s / baseline_s,
        "informer_mem_mib": informer_b / 2**20,
        "baseline_models_mem_mib": baseline_b / 2**20,
        "mem_ratio_vs_baseline": informer_b / baseline_b,
        "informer_mem_bytes_per_object": informer_b / count,
    }


class _NoOp:
    async def reconcile(self, key: str) -> Result:
        del key
        return Result()


async def _bench_queue(keys: int, workers: int) -> dict[str, float]:
    # Baseline: a bare asyncio.Queue and the same number of workers doing the same no-op.
    bare: asyncio.Queue[str] = asyncio.Queue()
    noop = _NoOp()

    async def bare_worker() -> None:
        while True:
            key = await bare.get()
            await noop.reconcile(key)
            bare.task_done()

    for i in range(keys):
        bare.put_nowait(f"ns/k{i}")
    started = time.perf_counter()
    tasks = [asyncio.create_task(bare_worker()) for _ in range(workers)]
    await bare.join()
    baseline_s = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    queue: WorkQueue[str] = WorkQueue("bench", metrics=RuntimeMetrics())
    controller = Controller("bench", noop, queue, workers=workers)
    metrics = RuntimeMetrics()
    for i in range(keys):
        queue.add(f"ns/k{i}")
    started = time.perf_counter()
    tasks = [asyncio.create_task(run_worker(controller, metrics)) for _ in range(workers)]
    while len(queue) or queue.processing:  # noqa: ASYNC110 - the queue has no "idle" event
        await asyncio.sleep(0.001)
    ours_s = time.perf_counter() - started
    queue.shut_down()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "keys": keys,
        "workers": workers,
        "reconciles_per_s": keys / ours_s,
        "baseline_bare_queue_per_s": keys / baseline_s,
        "throughput_ratio_vs_baseline": (keys / ours_s) / (keys / baseline_s),
    }


async def _main(kubeconfig: Path, count: int) -> dict[str, Any]:
    client = await KubeClient.from_config(str(kubeconfig), request_timeout_s=120)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        await client.create(NAMESPACES, {"metadata": {"name": namespace}})
        populate_s = await _populate(client, namespace, count)
        results: dict[str, Any] = {"populate_s": populate_s}
        results["sync"] = await _bench_sync(client, namespace, count)
        results["queue"] = await _bench_queue(keys=20_000, workers=4)
        results["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return results
    finally:
        try:
            await client.delete(NAMESPACES, namespace)
        finally:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.kubeconfig is not None:
        results = asyncio.run(_main(args.kubeconfig, args.objects))
    else:
        from climatik.devcluster.cluster import down, up  # noqa: PLC0415
        from climatik.devcluster.topology import Rack, Topology  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            try:
                info = up(directory, Topology(racks=(Rack(name="rack-a", nodes=1),)))
                results = asyncio.run(_main(info.kubeconfig, args.objects))
            finally:
                down(directory)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
