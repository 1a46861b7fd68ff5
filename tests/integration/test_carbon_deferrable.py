"""Deferrable work with a deadline, planned on a served forecast, end to end: a real local server
answering like the UK National Grid ESO API (current slot and `fw24h` forecast), the carbon and
power-cap controllers in a real manager, a real Prometheus scraping vLLM-shaped metrics, and a
KEDA ScaledObject on the real API server annotated `climatik-project.ai/deferrable: "3m"`.

The forecast has a dirty slot now and a clean one 15 s ahead: the batch target's ceiling is held
at its minimum in the dirty slot and raised in the clean one, before its backlog would otherwise
be served, and no request is seen waiting past its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.reconcilers.resources import DEFERRABLE_ANNOTATION
from climatik.runtime.capping import carbon_controller, power_cap_controller
from climatik.runtime.manager import Manager
from tests.integration.conftest import Kubectl
from tests.integration.helpers.carbon_servers import Answer, ProviderServer, provider_server
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import (
    capping_config,
    ceiling_becomes,
    condition,
    deployment,
    kubectl_json,
    running_manager,
    running_pods,
    scaled_object,
    so_ref,
)

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

SLOT = timedelta(seconds=15)
DIRTY_SLOTS_FIRST = 2
"""The dirty slots before the clean one: time for the controllers to start and plan."""


def uk_forecast(start: datetime, intensities: list[float]) -> dict[str, Any]:
    """Slots from `start` in the UK API's documented shape (`fw24h` and `/intensity` alike)."""
    return {
        "data": [
            {
                "from": (start + i * SLOT).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "to": (start + (i + 1) * SLOT).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "intensity": {"forecast": value, "actual": None, "index": "moderate"},
            }
            for i, value in enumerate(intensities)
        ]
    }


@pytest.fixture
async def carbon_api() -> AsyncIterator[ProviderServer]:
    async with provider_server({}) as server:
        yield server


@pytest.fixture
async def controllers(
    dev_cluster: ClusterInfo,
    namespace: str,
    carbon_api: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Manager]:
    monkeypatch.setenv("CLIMATIK_CAPPING__INTERVAL_S", "1")
    monkeypatch.setenv("CLIMATIK_CARBON__UK_NATIONAL_GRID_URL", carbon_api.url)
    monkeypatch.setenv("CLIMATIK_CARBON__PLAN_INTERVAL_S", "1")
    factories = [power_cap_controller, carbon_controller]
    async with running_manager(dev_cluster, namespace, factories) as manager:
        yield manager


def serve_forecast(server: ProviderServer, start: datetime, intensities: list[float]) -> None:
    """The current slot and the forecast, asked by the minute the request is made in."""
    payload = Answer(uk_forecast(start, intensities))
    server.set_default("/intensity", payload)
    for minute in range(12):
        moment = start + timedelta(minutes=minute)
        server.set_default(f"/intensity/{moment:%Y-%m-%dT%H:%M}Z/fw24h", payload)


async def test_a_clean_slot_ahead_raises_the_deferrable_ceiling_in_it_and_no_deadline_is_missed(
    controllers: Manager,
    kubectl: Kubectl,
    namespace: str,
    carbon_api: ProviderServer,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    batch = scaled_object("batch", "batch", min_replicas=1, max_replicas=8)
    batch["metadata"]["annotations"] = {DEFERRABLE_ANNOTATION: "3m"}
    kubectl.apply(deployment("batch", 1, {"app": "batch"}))
    kubectl.apply(batch)
    (pod,) = await running_pods(kubectl, "batch", 1)
    # One replica at full batch: 100 requests/s finished (1,000 tokens/s, 10 each), a backlog of
    # 200 waiting. Prometheus's rate() over the 5-minute window ramps up during the test (the
    # arrivals the controller infers and the throughput it learns ramp together); ten seconds
    # of it before the config exists keep the first plan from seeing no throughput at all.
    await metrics_exporter.add_pods(
        [
            {
                "namespace": namespace,
                "name": pod["metadata"]["name"],
                "node": pod["spec"].get("nodeName", ""),
                "cpu_watts": 100,
                "gpu_watts": None,
                "tokens_per_s": 1000,
                "tokens_per_request": 10,
                "waiting_requests": 200,
            }
        ]
    )
    await asyncio.sleep(10)
    start = datetime.now(UTC).replace(microsecond=0)
    clean_at = start + DIRTY_SLOTS_FIRST * SLOT
    intensities = [400.0] * DIRTY_SLOTS_FIRST + [50.0] + [400.0] * 40
    serve_forecast(carbon_api, start, intensities)
    config = capping_config("cap", prometheus.url, [so_ref("batch")], policy="Headroom", cap_w=2000)
    config["spec"]["carbon"] = {
        "provider": "UKNationalGrid",
        "target": {
            "type": "IntensityBand",
            "cleanIntensityGramsPerKWh": 100,
            "dirtyIntensityGramsPerKWh": 400,
        },
        "floorWatts": 600,
        "maxAgeSeconds": 600,
    }
    kubectl.apply(config)

    # In the dirty slot the plan holds the work for the clean one: the minimum only.
    held = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: any(
            p["name"] == "batch" for p in (obj.get("status") or {}).get("deferrablePlans") or ()
        ),
        timeout_s=30,
    )
    assert datetime.now(UTC) < clean_at, "planned before the clean slot"
    (plan,) = held["status"]["deferrablePlans"]
    assert plan["plannedMaxReplicas"] == 1, (plan, held["status"].get("targets"))
    assert not plan["behind"]
    message = condition(held, "CarbonAvailable")["message"]
    assert "deferrable work planned into clean slots: batch:" in message
    assert "requests planned this slot done" in message
    await ceiling_becomes(kubectl, "batch", 1, timeout_s=20)
    # Still held just before the clean slot starts.
    await asyncio.sleep(max(0.0, (clean_at - datetime.now(UTC)).total_seconds() - 2))
    so = await kubectl_json(kubectl, "scaledobject", "batch")
    assert so["spec"]["maxReplicaCount"] == 1

    # The clean slot: the ceiling is raised in it.
    raised = await eventually(
        lambda: kubectl_json(kubectl, "scaledobject", "batch"),
        lambda obj: obj["spec"].get("maxReplicaCount", 0) > 1,
        timeout_s=(clean_at - datetime.now(UTC)).total_seconds() + 15,
    )
    raised_at = datetime.now(UTC)
    assert raised_at >= clean_at, (raised_at, clean_at)
    assert raised["spec"]["maxReplicaCount"] <= 8

    # Its deadline is met: nothing was seen waiting past it.
    status = (await kubectl_json(kubectl, "pcc", "cap"))["status"]
    (plan,) = status["deferrablePlans"]
    assert plan["deadlineMisses"] == 0
    assert plan["plannedMaxReplicas"] > 1
