"""What the informer caches and the status memo hold at 5,000 configs, without a cluster (issue 15).

Each cached kind (`--objects` of it, shaped as the API server returns them, see
`tests/unit/cluster_objects.py`) is served as 500-object list pages of JSON bytes by a fake
client to a real Informer, the way the manager builds it, so the figures cover the whole ingest
path: JSON parse, the informer's transform, the store and its namespace index. Reported, from
tracemalloc after the sync, with the baseline measured in the same run:

- per kind: bytes held with whole objects (managedFields dropped, what the manager cached
  before per-kind fields) vs. with the fields the reconcilers read (`cached_fields.py`);
- the status memo: bytes it adds once every config's status has been read and diffed
  (`status_from_wire`, `status_patch`), as a share of the config cache, and the cost of a
  reconcile's read-and-diff of an unchanged status (the memo's hit path).

Run:  PYTHONPATH=. .venv/bin/python benchmarks/bench_cache_memory.py [--objects 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import structlog

from climatik.api.status import status_from_wire, status_patch
from climatik.kube.fields import FieldFilter, Fields
from climatik.kube.informer import Informer
from climatik.kube.resources import (
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    NODES,
    PODS,
    SCALED_OBJECTS,
    Resource,
)
from climatik.kube.store import index_by_namespace
from climatik.reconcilers.cached_fields import (
    DEPLOYMENT_FIELDS,
    HPA_FIELDS,
    NODE_FIELDS,
    POD_FIELDS,
    SCALED_OBJECT_FIELDS,
)
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from tests.unit import cluster_objects

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
PAGE = 500
NAMESPACES = 100
MIB = 1024 * 1024


class _PagedClient:
    """Serves list pages of JSON bytes, parsed on each call as the real client parses them."""

    def __init__(self, pages: list[bytes]) -> None:
        self.pages = pages

    async def list(self, resource: Resource, namespace: str | None, **query: Any) -> Any:
        index = int(query.get("continue_token") or 0)
        return json.loads(self.pages[index])

    async def open_stream(self, *args: Any) -> Any:
        await asyncio.Event().wait()  # a watch that never speaks: the benchmark ends first


def _pages(kind: str, build: Callable[[int], dict[str, Any]], count: int) -> list[bytes]:
    pages = []
    for start in range(0, count, PAGE):
        metadata = {"resourceVersion": "999999"}
        if start + PAGE < count:
            metadata["continue"] = str(start // PAGE + 1)
        body = {
            "kind": f"{kind}List",
            "metadata": metadata,
            "items": [build(i) for i in range(start, min(start + PAGE, count))],
        }
        pages.append(json.dumps(body).encode())
    return pages


async def _sync(resource: Resource, pages: list[bytes], fields: Fields | None) -> Informer:
    informer = Informer(
        _PagedClient(pages),  # type: ignore[arg-type]
        resource,
        indexers={"namespace": index_by_namespace},
        transform=FieldFilter(fields),
    )
    task = asyncio.create_task(informer.run())
    await informer.wait_synced()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return informer


async def _held(resource: Resource, pages: list[bytes], fields: Fields | None) -> int:
    """Bytes a synced informer keeps alive."""
    gc.collect()
    tracemalloc.start()
    informer = await _sync(resource, pages, fields)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del informer
    return held


def _read_statuses(informer: Informer) -> None:
    """What each reconcile does with a config's status: parse it, diff a desire against it."""
    for obj in informer.store.objects():
        current = status_from_wire(obj)
        status_patch(current, current)  # type: ignore[arg-type]


async def _bench_memo(count: int) -> dict[str, float]:
    def build(i: int) -> dict[str, Any]:
        return cluster_objects.power_capping_config(
            f"scale-{i % NAMESPACES:03d}", i, tight=i % 5 == 0
        )

    pages = _pages("PowerCappingConfig", build, count)
    gc.collect()
    tracemalloc.start()
    informer = await _sync(POWER_CAPPING_CONFIGS, pages, None)
    gc.collect()
    cache_b = tracemalloc.get_traced_memory()[0]
    _read_statuses(informer)
    gc.collect()
    memo_b = tracemalloc.get_traced_memory()[0] - cache_b
    tracemalloc.stop()
    rounds = 5
    started = time.perf_counter()
    for _ in range(rounds):
        _read_statuses(informer)
    hit_us = (time.perf_counter() - started) / (rounds * count) * 1e6
    return {
        "config_cache_mib": cache_b / MIB,
        "status_memo_mib": memo_b / MIB,
        "memo_per_cache": memo_b / cache_b,
        "memo_hit_us": hit_us,
    }


KINDS: tuple[tuple[str, Resource, Callable[[str, int], dict[str, Any]], Fields], ...] = (
    ("Pod", PODS, cluster_objects.pod, POD_FIELDS),
    ("Deployment", DEPLOYMENTS, cluster_objects.deployment, DEPLOYMENT_FIELDS),
    (
        "ScaledObject",
        SCALED_OBJECTS,
        lambda ns, i: cluster_objects.scaled_object(ns, i, capped_by=f"{ns}/x" if i % 5 else None),
        SCALED_OBJECT_FIELDS,
    ),
    ("HorizontalPodAutoscaler", HORIZONTAL_POD_AUTOSCALERS, cluster_objects.hpa, HPA_FIELDS),
)


async def main_async(count: int) -> dict[str, Any]:
    report: dict[str, Any] = {"objects": count}
    whole_total = kept_total = 0
    for kind, resource, build, fields in KINDS:
        pages = _pages(kind, lambda i, b=build: b(f"scale-{i % NAMESPACES:03d}", i), count)  # type: ignore[misc]
        whole = await _held(resource, pages, None)
        kept = await _held(resource, pages, fields)
        whole_total, kept_total = whole_total + whole, kept_total + kept
        report[kind] = {"whole_mib": whole / MIB, "kept_mib": kept / MIB, "ratio": kept / whole}
    node_pages = _pages("Node", lambda i: cluster_objects.node(i, rack=f"rack-{i % 8}"), 64)
    whole, kept = await _held(NODES, node_pages, None), await _held(NODES, node_pages, NODE_FIELDS)
    report["Node (64)"] = {"whole_mib": whole / MIB, "kept_mib": kept / MIB, "ratio": kept / whole}
    report["workload caches"] = {
        "whole_mib": whole_total / MIB,
        "kept_mib": kept_total / MIB,
        "ratio": kept_total / whole_total,
    }
    report["status memo"] = await _bench_memo(count)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=5000)
    args = parser.parse_args()
    report = asyncio.run(main_async(args.objects))
    print(json.dumps(_rounded(report), indent=2))


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
