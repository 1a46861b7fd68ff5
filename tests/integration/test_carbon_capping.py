"""Carbon-aware capping end to end: a real local server answering like the UK National Grid
ESO API, the carbon and power-cap controllers in a real manager, a real Prometheus, and KEDA
ScaledObjects on the real API server. The served intensity moves the effective cap; the
ceilings follow, and when some work is deferrable only that work yields to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.reconcilers.resources import DEFERRABLE_ANNOTATION, PRIORITY_ANNOTATION
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
    serve_watts,
    so_ref,
)

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusServer

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

SLOT_S = 6


def band_100_to_400(floor_w: int) -> dict[str, Any]:
    """A carbon section: UK national intensity, full cap at 100 g/kWh, `floor_w` at 400."""
    return {
        "provider": "UKNationalGrid",
        "target": {
            "type": "IntensityBand",
            "cleanIntensityGramsPerKWh": 100,
            "dirtyIntensityGramsPerKWh": 400,
        },
        "floorWatts": floor_w,
        "maxAgeSeconds": 600,
    }


def national(intensity: float) -> dict[str, Any]:
    """The current slot, a few seconds long so the test need not wait half an hour."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    end = start + timedelta(seconds=SLOT_S)
    return {
        "data": [
            {
                "from": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "to": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "intensity": {"forecast": intensity, "actual": None, "index": "moderate"},
            }
        ]
    }


@pytest.fixture
async def carbon_api() -> AsyncIterator[ProviderServer]:
    async with provider_server({"/intensity": Answer(national(100))}) as server:
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
    factories = [power_cap_controller, carbon_controller]
    async with running_manager(dev_cluster, namespace, factories) as manager:
        yield manager


async def serve_intensity(server: ProviderServer, intensity: float) -> None:
    # A fresh slot each time; the reconciler fetches again when the current slot ends.
    server.set_default("/intensity", Answer(national(intensity)))
    await asyncio.sleep(0)


async def test_served_intensity_moves_the_cap_and_the_ceilings_follow(
    controllers: Manager,
    kubectl: Kubectl,
    namespace: str,
    carbon_api: ProviderServer,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    kubectl.apply(deployment("llm", 3, {"app": "llm"}))
    kubectl.apply(scaled_object("llm", "llm", min_replicas=1, max_replicas=10))
    pods = await running_pods(kubectl, "llm", 3)
    await serve_watts(metrics_exporter, namespace, pods, 200)  # 600 W
    config = capping_config("cap", prometheus.url, [so_ref("llm")], policy="Threshold", cap_w=1000)
    config["spec"]["carbon"] = band_100_to_400(floor_w=400)
    kubectl.apply(config)

    clean = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "CarbonAvailable").get("status") == "True",
    )
    assert clean["status"]["effectiveCapWatts"] == 1000
    assert clean["status"]["effectiveCapSource"] == "Carbon"
    assert "100 g/kWh" in condition(clean, "CarbonAvailable")["message"]
    assert (await kubectl_json(kubectl, "scaledobject", "llm"))["spec"]["maxReplicaCount"] == 10

    # A dirty grid: the cap falls to the floor (400 W); 600 W is over 95 % of it: hold at 3.
    await serve_intensity(carbon_api, 400)
    dirty = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (obj.get("status") or {}).get("effectiveCapWatts") == 400,
        timeout_s=30,
    )
    assert "400 g/kWh" in condition(dirty, "CarbonAvailable")["message"]
    await ceiling_becomes(kubectl, "llm", 3)

    # Halfway: 250 g/kWh -> 700 W; 600 W is 86 % of it: current + 1.
    await serve_intensity(carbon_api, 250)
    await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (obj.get("status") or {}).get("effectiveCapWatts") == 700,
        timeout_s=30,
    )
    await ceiling_becomes(kubectl, "llm", 4)

    # Clean again: the full cap, the ceiling released.
    await serve_intensity(carbon_api, 90)
    await ceiling_becomes(kubectl, "llm", 10, timeout_s=45)


async def test_a_failing_provider_holds_the_last_cap_and_reports_it(
    controllers: Manager,
    kubectl: Kubectl,
    namespace: str,
    carbon_api: ProviderServer,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    await serve_intensity(carbon_api, 250)
    kubectl.apply(deployment("svc", 1, {"app": "svc"}))
    kubectl.apply(scaled_object("svc", "svc"))
    pods = await running_pods(kubectl, "svc", 1)
    await serve_watts(metrics_exporter, namespace, pods, 100)
    config = capping_config("cap", prometheus.url, [so_ref("svc")], policy="Headroom", cap_w=1000)
    config["spec"]["carbon"] = {
        "provider": "UKNationalGrid",
        "target": {"type": "EmissionRate", "emissionRateGramsPerHour": 100},
        "floorWatts": 200,
        "maxAgeSeconds": 600,
    }
    kubectl.apply(config)
    # 100 g/h at 250 g/kWh allows 400 W.
    await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (obj.get("status") or {}).get("effectiveCapWatts") == 400,
    )
    carbon_api.set_default("/intensity", Answer({"error": "down"}, status=500))
    stale = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "CarbonAvailable").get("status") == "False",
        timeout_s=45,
    )
    assert condition(stale, "CarbonAvailable")["reason"] == "LastKnownGood"
    assert "HTTP 500" in condition(stale, "CarbonAvailable")["message"]
    assert stale["status"]["effectiveCapWatts"] == 400, "last-known-good holds the cap"


async def test_a_dirty_grid_holds_back_deferrable_batch_work_only(
    controllers: Manager,
    kubectl: Kubectl,
    namespace: str,
    carbon_api: ProviderServer,
    metrics_exporter: ExporterHandle,
    prometheus: PrometheusServer,
) -> None:
    # chat (interactive, with a typo in its priority) and batch (deferrable), 400 W each.
    chat = scaled_object("chat", "chat", min_replicas=1, max_replicas=4)
    chat["metadata"]["annotations"] = {PRIORITY_ANNOTATION: "high"}
    batch = scaled_object("batch", "batch", min_replicas=0, max_replicas=4)
    batch["metadata"]["annotations"] = {DEFERRABLE_ANNOTATION: "true"}
    for name, so in (("chat", chat), ("batch", batch)):
        kubectl.apply(deployment(name, 2, {"app": name}))
        kubectl.apply(so)
    for name in ("chat", "batch"):
        await serve_watts(metrics_exporter, namespace, await running_pods(kubectl, name, 2), 200)
    config = capping_config(
        "cap", prometheus.url, [so_ref("chat"), so_ref("batch")], policy="Headroom", cap_w=2000
    )
    config["spec"]["carbon"] = band_100_to_400(floor_w=600)
    kubectl.apply(config)

    # The typo is reported where the user looks and changes nothing (priority 0).
    clean = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "TargetsResolved").get("reason") == "InvalidAnnotation",
    )
    resolved = condition(clean, "TargetsResolved")
    assert resolved["status"] == "True"
    assert f"ScaledObject {namespace}/chat" in resolved["message"]
    assert PRIORITY_ANNOTATION in resolved["message"]
    await eventually(
        lambda: kubectl_json(kubectl, "events"),
        lambda events: any(
            e.get("reason") == "InvalidAnnotation"
            and e["involvedObject"].get("kind") == "ScaledObject"
            and e["involvedObject"].get("name") == "chat"
            for e in events["items"]
        ),
    )

    # A dirty grid: the carbon cap falls to 600 W. Batch work yields (its 2 running replicas do
    # not fit 600 W beside chat's 400 W); chat keeps its own maximum under powerCapLimit. Were
    # the carbon cap the whole scope's, chat would be cut to 2.
    await serve_intensity(carbon_api, 400)
    dirty = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (
            "binds only deferrable targets (batch)" in condition(obj, "Capping").get("message", "")
        ),
        timeout_s=30,
    )
    assert dirty["status"]["effectiveCapWatts"] == 600, "still the carbon-adjusted cap"
    assert dirty["status"]["effectiveCapSource"] == "Carbon"
    await ceiling_becomes(kubectl, "batch", 1)
    await asyncio.sleep(3)
    assert (await kubectl_json(kubectl, "scaledobject", "chat"))["spec"]["maxReplicaCount"] == 4
