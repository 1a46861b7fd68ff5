"""A power-cap reconciler facing a Prometheus the test scripts: a loopback aiohttp server
answering whatever the test sets, the cluster objects of one config (caches, a recording
client, Events), and one reconcile of it. Shared by the power-cap unit tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from climatik.kube.json import child
from climatik.kube.resources import Resource
from climatik.kube.store import thaw
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap import PowerCapReconciler
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.settings import CappingSettings
from climatik.reconcilers.targets import WorkloadCaches
from climatik.sources.address import HTTPSession
from tests.loopback import serving
from tests.unit.helpers.status_world import RecordedEvents, StatusClient, StoreCache

NS = "tenant-a"
PODS = ("llm-0", "llm-1")


@dataclass
class FakePrometheus:
    """Answers grouped power and token queries with the values set here (per pod)."""

    url: str = ""
    cpu_watts: str = "100"
    tokens_per_s: str = "50"
    site_watts: str = "0"
    delay_s: float = 0.0
    """How long every answer takes (a Prometheus that is slow but answers)."""
    queries: list[str] = field(default_factory=list)

    def answer(self, query: str) -> list[dict[str, Any]]:
        """Per pod for a grouped query (`sum by`, `max by`), else one aggregated sample (the
        per-target queries of earlier versions)."""
        now = time.time()
        if "site_watts" in query:
            return [{"metric": {}, "value": [now, self.site_watts]}]
        if "timestamp(" in query:
            labels, value = ("pod_namespace", "pod_name"), str(now)
        elif "kepler_pod_cpu_watts" in query:
            labels, value = ("pod_namespace", "pod_name"), self.cpu_watts
        elif "vllm:generation_tokens_total" in query:
            labels, value = ("namespace", "pod"), self.tokens_per_s
        else:
            return []
        if " by (" in query:
            return [self._sample(*labels, pod, now, value) for pod in PODS]
        total = float(value) if "timestamp(" in query else float(value) * len(PODS)
        return [{"metric": {}, "value": [now, repr(total)]}]

    @staticmethod
    def _sample(ns_label: str, pod_label: str, pod: str, ts: float, value: str) -> dict[str, Any]:
        return {"metric": {ns_label: NS, pod_label: pod}, "value": [ts, value]}


@pytest.fixture
async def prometheus() -> AsyncIterator[FakePrometheus]:
    state = FakePrometheus()

    async def handle(request: web.Request) -> web.StreamResponse:
        query = str((await request.post())["query"])
        state.queries.append(query)
        await asyncio.sleep(state.delay_s)
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": state.answer(query)}}
        )

    app = web.Application()
    app.router.add_post("/api/v1/query", handle)
    async with serving(app) as state.url:
        yield state


class Client(StatusClient):
    """Applies the config's patches (status and metadata: finalizers, held targets) to its
    cache; records the ceiling patches of the targets."""

    def __init__(self, configs: StoreCache) -> None:
        super().__init__(configs)
        self.ceiling_patches: list[tuple[str, dict[str, Any]]] = []

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        if resource != POWER_CAPPING_CONFIGS:
            self.ceiling_patches.append((name, dict(patch)))
            return {}
        return self.apply_to_config(name, patch, namespace)


def objects(address: str, **spec: Any) -> tuple[StoreCache, WorkloadCaches]:
    config = {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {"name": "cap", "namespace": NS, "uid": "u1", "generation": 1},
        "spec": {
            "powerCapLimit": 1000,
            "deploymentName": "llm",
            "powerMeasurement": {"prometheusAddress": address},
            **spec,
        },
    }
    scaled_object = {
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "llm"}, "minReplicaCount": 1, "maxReplicaCount": 4},
    }
    deployment = {
        "metadata": {"name": "llm", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "llm"}}},
        "status": {"replicas": len(PODS)},
    }
    pods = [
        {
            "metadata": {"name": pod, "namespace": NS, "labels": {"app": "llm"}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running"},
        }
        for pod in PODS
    ]
    workloads = WorkloadCaches(
        StoreCache(scaled_object), StoreCache(), StoreCache(deployment), StoreCache(*pods)
    )
    return StoreCache(config), workloads


async def reconcile(
    prometheus: FakePrometheus,
    *,
    nodes: int = 0,
    settings: CappingSettings | None = None,
    capping_metrics: CappingMetrics | None = None,
    **spec: Any,
) -> tuple[dict[str, Any], Client]:
    configs, workloads = objects(prometheus.url, **spec)
    client = Client(configs)
    async with HTTPSession() as session:

        async def session_factory() -> aiohttp.ClientSession:
            return session

        reconciler = PowerCapReconciler(
            client,
            configs=configs,
            workloads=workloads,
            nodes=StoreCache(*({"metadata": {"name": f"n{i}"}} for i in range(nodes))),
            events=RecordedEvents(),
            metrics=capping_metrics or CappingMetrics(CollectorRegistry()),
            settings=settings or CappingSettings(),
            session_factory=session_factory,
        )
        await reconciler.reconcile(f"{NS}/cap")
    obj = configs.store.get(f"{NS}/cap")
    assert obj is not None
    return thaw(child(obj, "status")), client
