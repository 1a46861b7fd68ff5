"""The power-cap reconciler facing hostile measurements (issue 15).

A config's author chooses the Prometheus the controller asks; here it is a loopback aiohttp
server answering whatever the test says. Negative or absurd watts must take the missing-data
path (hold, `MetricsAvailable=False` naming the value and the bound), never fail the reconcile
(which used to back off for up to 1000 s with no fail-safe and a stale `MetricsAvailable=True`);
absurd tokens must neither fail it nor reach the status as a non-number.
"""

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

from climatik.api.status import apply_merge_patch
from climatik.domain.capping import TargetObservation
from climatik.kube.client import KubeClient
from climatik.kube.resources import Resource
from climatik.kube.store import Store, thaw
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap import PowerCapReconciler
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.settings import CappingSettings
from climatik.reconcilers.targets import WorkloadCaches
from climatik.sources.address import HTTPSession

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
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


class Cache:
    def __init__(self, *objs: dict[str, Any]) -> None:
        self.store = Store()
        for obj in objs:
            self.store.upsert(obj)


class Client(KubeClient):
    """Applies status patches to the cached config; records ceiling patches."""

    def __init__(self, configs: Cache) -> None:
        super().__init__(api_client=None)
        self.configs = configs
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
        current = self.configs.store.get(f"{namespace}/{name}")
        assert current is not None
        updated: dict[str, Any] = apply_merge_patch(thaw(current), patch)
        updated["metadata"].pop("resourceVersion", None)
        self.configs.store.upsert(updated)
        return updated


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str]] = []

    async def record(
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> bool:
        self.recorded.append((event_type, reason, message))
        return True


def objects(address: str, **spec: Any) -> tuple[Cache, WorkloadCaches]:
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
    workloads = WorkloadCaches(Cache(scaled_object), Cache(), Cache(deployment), Cache(*pods))
    return Cache(config), workloads


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
            nodes=Cache(*({"metadata": {"name": f"n{i}"}} for i in range(nodes))),
            events=Events(),
            metrics=capping_metrics or CappingMetrics(CollectorRegistry()),
            settings=settings or CappingSettings(),
            session_factory=session_factory,
        )
        await reconciler.reconcile(f"{NS}/cap")
    obj = configs.store.get(f"{NS}/cap")
    assert obj is not None
    return thaw(obj.get("status") or {}), client


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.mark.parametrize(
    ("cpu_watts", "shown"),
    [
        ("-50", "a negative sample (-50) for pod(s) llm-0, llm-1"),
        ("5e307", "1e+308 W is outside the plausible range 0..200000 W: 2 pod(s) x 100000 W"),
    ],
)
async def test_implausible_watts_take_the_missing_data_path(
    prometheus: FakePrometheus, cpu_watts: str, shown: str
) -> None:
    prometheus.cpu_watts = cpu_watts
    status, client = await reconcile(prometheus)
    metrics = condition(status, "MetricsAvailable")
    assert metrics["status"] == "False"
    assert metrics["reason"] == "NoDataImplausible"
    assert shown in metrics["message"]
    assert client.ceiling_patches == []  # missing data holds the ceiling


@pytest.mark.parametrize("tokens_per_s", ["-5", "1e300"])
async def test_implausible_tokens_neither_fail_the_reconcile_nor_reach_the_status(
    prometheus: FakePrometheus, tokens_per_s: str
) -> None:
    prometheus.tokens_per_s = tokens_per_s
    status, _ = await reconcile(prometheus)
    assert condition(status, "MetricsAvailable")["status"] == "True"
    assert status["targets"][0].get("tokensPerWatt") is None


async def test_a_tokens_per_watt_ratio_that_is_no_number_is_left_out(
    prometheus: FakePrometheus,
) -> None:
    # Each value is plausible; their ratio overflows to infinity, which JSON cannot carry.
    prometheus.cpu_watts = "1e-310"
    prometheus.tokens_per_s = "1000"
    status, _ = await reconcile(prometheus)
    assert condition(status, "MetricsAvailable")["status"] == "True"
    assert status["targets"][0].get("tokensPerWatt") is None


async def test_the_bound_per_server_is_a_controller_setting(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIMATIK_CAPPING__MAX_PLAUSIBLE_WATTS_PER_SERVER", "500")
    prometheus.cpu_watts = "600"
    status, _ = await reconcile(prometheus)
    metrics = condition(status, "MetricsAvailable")
    assert metrics["reason"] == "NoDataImplausible"
    assert "1200 W is outside the plausible range 0..1000 W" in metrics["message"]


async def test_the_scope_total_is_bounded_by_the_cluster_node_count(
    prometheus: FakePrometheus,
) -> None:
    prometheus.site_watts = "250000"
    scope: dict[str, Any] = {
        "metrics": [
            {"type": "Prometheus", "prometheusAddress": prometheus.url, "query": "sum(site_watts)"}
        ]
    }
    status, _ = await reconcile(prometheus, nodes=3, **scope)
    assert condition(status, "MetricsAvailable")["status"] == "True"
    assert status["measuredPowerWatts"] == 250_000
    status, _ = await reconcile(prometheus, nodes=2, **scope)
    metrics = condition(status, "MetricsAvailable")
    assert metrics["reason"] == "NoDataImplausible"
    assert "metrics[0].query" in metrics["message"]
    assert "2 node(s) x 100000 W per server" in metrics["message"]


def test_an_efficiency_that_is_no_number_is_unknown_to_the_policies() -> None:
    # Plausible watts and tokens whose ratio overflows: no infinite weight in the allocation.
    observed = TargetObservation(
        name="chat",
        current_replicas=2,
        min_replicas=1,
        user_max_replicas=4,
        applied_max_replicas=4,
        watts=2e-310,
        tokens_per_s=1000.0,
    )
    assert observed.tokens_per_joule is None


async def test_a_slow_prometheus_is_no_data_before_the_reconcile_deadline(
    prometheus: FakePrometheus,
) -> None:
    """A reviewer's finding: queries that each answer inside their own timeout but together
    outlast the reconcile deadline had the reconcile cut before it wrote MetricsAvailable=False
    or applied the fail-safe, and retried with a growing backoff."""
    prometheus.delay_s = 0.8  # each answer well inside the 5 s query timeout
    settings = CappingSettings(reconcile_timeout_s=1.0)
    status, client = await reconcile(prometheus, settings=settings)
    metrics = condition(status, "MetricsAvailable")
    assert metrics["status"] == "False"
    assert metrics["reason"] == "PrometheusTimeout"
    assert "did not finish within 0.6 s" in metrics["message"]
    assert client.ceiling_patches == []  # missing data holds the ceiling


async def test_a_spec_change_rebuilds_the_kept_sources(prometheus: FakePrometheus) -> None:
    """The sources are kept between reconciles of one spec generation; a new generation (here
    a Prometheus address that refuses connections) is measured through new ones at once."""
    configs, workloads = objects(prometheus.url)
    async with HTTPSession() as session:

        async def session_factory() -> aiohttp.ClientSession:
            return session

        reconciler = PowerCapReconciler(
            Client(configs),
            configs=configs,
            workloads=workloads,
            nodes=Cache(),
            events=Events(),
            metrics=CappingMetrics(CollectorRegistry()),
            settings=CappingSettings(),
            session_factory=session_factory,
        )

        async def metrics_available() -> dict[str, Any]:
            await reconciler.reconcile(f"{NS}/cap")
            obj = configs.store.get(f"{NS}/cap")
            assert obj is not None
            return condition(thaw(obj.get("status") or {}), "MetricsAvailable")

        assert (await metrics_available())["status"] == "True"
        assert (await metrics_available())["status"] == "True"
        current = configs.store.get(f"{NS}/cap")
        assert current is not None
        moved = thaw(current)
        moved["metadata"]["generation"] = moved["metadata"].get("generation", 1) + 1
        moved["spec"]["powerMeasurement"]["prometheusAddress"] = "http://127.0.0.1:9"
        configs.store.upsert(moved)
        after = await metrics_available()
    assert after["status"] == "False"
    assert after["reason"] == "PrometheusUnreachable"
