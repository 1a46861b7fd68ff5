"""A config whose Prometheus accepts connections and never answers still finishes its reconcile
within about one query timeout, so the reconcile deadline (CLIMATIK_CAPPING__RECONCILE_TIMEOUT_S)
never cuts it before it has said so in its status and, in time, applied the fail-safe ceiling.

The Prometheus here is a real local TCP server that never writes a byte; the caches and the
status client are the same stand-ins as in test_runtime_capping.py. The shared read layer's
circuit breaker is set out of the way (a microsecond cool-down, no kept answers): the reconcile
must end in time on its own, as it must for a Prometheus slow enough to hold it but quick enough
never to trip the breaker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap import PowerCapReconciler
from climatik.reconcilers.settings import CappingSettings
from climatik.reconcilers.targets import WorkloadCaches
from climatik.sources.address import HTTPSession
from tests.unit.helpers.status_world import RecordedEvents, StatusClient, StoreCache, conditions_of

QUERY_TIMEOUT_S = 0.5


class SilentPrometheus:
    """`url` accepts connections, reads, and never answers; `accepted_at` says when."""

    def __init__(self) -> None:
        self.url = ""
        self.accepted_at: list[float] = []

    async def hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted_at.append(time.monotonic())
        await reader.read()  # until the client gives up and closes
        writer.close()


@pytest.fixture
async def silent_prometheus() -> AsyncIterator[SilentPrometheus]:
    silent = SilentPrometheus()
    server = await asyncio.start_server(silent.hold, "127.0.0.1", 0)
    silent.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield silent
    finally:
        server.close()
        await server.wait_closed()


def _objects(url: str) -> dict[str, Any]:
    labels = {"app": "llm"}
    return {
        "config": {
            "apiVersion": "powercapping.climatik-project.ai/v1",
            "kind": "PowerCappingConfig",
            "metadata": {"name": "cap", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {
                "powerCapLimit": 1000,
                "scaleObjectRef": [{"metadata": {"name": "llm"}}],
                # Per-target queries, the scope's own query and the rack queries: three waits.
                "metrics": [{"type": "Prometheus", "prometheusAddress": url, "query": "sum(w)"}],
                "rackConstraints": [{"rackId": "r1", "maxPower": 5000}],
                "powerMeasurement": {"preset": "KeplerPod", "prometheusAddress": url},
            },
        },
        "scaled_object": {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "llm", "namespace": "ns", "uid": "u2"},
            "spec": {"scaleTargetRef": {"name": "llm"}, "minReplicaCount": 1, "maxReplicaCount": 8},
        },
        "deployment": {
            "metadata": {"name": "llm", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": labels}},
            "status": {"replicas": 1},
        },
        "pod": {
            "metadata": {"name": "llm-1", "namespace": "ns", "labels": labels},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running"},
        },
        "node": {"metadata": {"name": "n1", "labels": {"climatik-project.ai/rack": "r1"}}},
    }


async def test_a_silent_prometheus_costs_one_query_timeout_not_one_per_query(
    silent_prometheus: SilentPrometheus,
) -> None:
    objects = _objects(silent_prometheus.url)
    configs = StoreCache(objects["config"])
    client = StatusClient(configs)
    async with HTTPSession() as session:

        async def session_factory() -> Any:
            return session

        reconciler = PowerCapReconciler(
            client,
            configs=configs,
            workloads=WorkloadCaches(
                StoreCache(objects["scaled_object"]),
                StoreCache(),
                StoreCache(objects["deployment"]),
                StoreCache(objects["pod"]),
                StoreCache(),
            ),
            nodes=StoreCache(objects["node"]),
            events=RecordedEvents(),
            metrics=CappingMetrics(CollectorRegistry()),
            settings=CappingSettings(
                prometheus_timeout_s=QUERY_TIMEOUT_S,
                prometheus_cache_ttl_s=0,
                prometheus_breaker_initial_s=1e-6,
                prometheus_breaker_max_s=1e-6,
            ),
            session_factory=session_factory,
        )
        await reconciler.reconcile("ns/cap")
    metrics = conditions_of(configs)["MetricsAvailable"]
    assert (metrics["status"], metrics["reason"]) == ("False", "PrometheusTimeout")
    # Every query (targets, the scope's query, racks) was sent before the first one gave up.
    accepted = silent_prometheus.accepted_at
    assert len(accepted) >= 3
    assert max(accepted) - min(accepted) < QUERY_TIMEOUT_S, [a - accepted[0] for a in accepted]
