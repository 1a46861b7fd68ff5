"""The API key Secret of a carbon provider on the real API server: late, missing, rotated.

The carbon controller runs in a real manager against the dev cluster; a real local HTTP server
answers like Electricity Maps (documented `latest` payload, `auth-token` header, 401 for a key it
does not accept). The served reading's hour is long past, so the controller asks again every
`MIN_REQUEUE_S` (5 s), and the Secret is re-read every 5 s: that is the control period here.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.kube.client import KubeClient
from climatik.reconcilers.carbon import MIN_REQUEUE_S
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.runtime.capping import carbon_controller
from climatik.runtime.manager import Manager
from tests.integration.conftest import Kubectl, wait_until
from tests.integration.helpers.carbon_servers import Answer, ProviderServer, provider_server
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.workloads import (
    capping_config,
    condition,
    kubectl_json,
    running_manager,
    so_ref,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

LATEST = "/v3/carbon-intensity/latest"
PERIOD_S = 5.0
"""The control period: the carbon wake while the served hour is past, and the Secret refresh."""
RETRY_S = 5.0
OLD_KEY, NEW_KEY = "em-key-old-0001", "em-key-new-0002"


def latest(intensity: float) -> dict[str, Any]:
    """Electricity Maps' `latest` answer, for an hour already over (so it is asked again)."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    return {
        "zone": "DE",
        "carbonIntensity": intensity,
        "datetime": hour.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "updatedAt": hour.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
    }


@pytest.fixture(scope="module", autouse=True)
def _pcc_discoverable(dev_cluster: ClusterInfo) -> None:
    """Wait until kubectl resolves `pcc`: discovery can lag an Established CRD for a moment."""
    admin = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, "default")
    wait_until(
        "the PowerCappingConfig kind to appear in discovery",
        lambda: admin.run("get", "pcc", check=False).returncode == 0,
        timeout_s=60,
    )


@pytest.fixture
async def electricity_maps() -> AsyncIterator[ProviderServer]:
    async with provider_server({LATEST: Answer(latest(200))}) as server:
        yield server


@pytest.fixture
async def controller(
    dev_cluster: ClusterInfo,
    namespace: str,
    electricity_maps: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Manager]:
    monkeypatch.setenv("CLIMATIK_CARBON__ELECTRICITY_MAPS_URL", electricity_maps.url)
    monkeypatch.setenv("CLIMATIK_CARBON__SECRET_REFRESH_S", str(PERIOD_S))
    monkeypatch.setenv("CLIMATIK_CARBON__SECRET_RETRY_S", str(RETRY_S))
    async with running_manager(dev_cluster, namespace, [carbon_controller]) as manager:
        yield manager


def em_config() -> dict[str, Any]:
    """A config following Electricity Maps: 800 W at 200 g/kWh, 600 W at 300, FloorCap 400 W."""
    config = capping_config(
        "cap", "http://127.0.0.1:9", [so_ref("llm")], policy="Headroom", cap_w=1000
    )
    config["spec"]["carbon"] = {
        "provider": "ElectricityMaps",
        "zone": "DE",
        "apiKeySecretRef": {"name": "em", "key": "token"},
        "target": {
            "type": "IntensityBand",
            "cleanIntensityGramsPerKWh": 100,
            "dirtyIntensityGramsPerKWh": 400,
        },
        "floorWatts": 400,
        "fallback": "FloorCap",
        "maxAgeSeconds": 600,
    }
    return config


def api_key_secret(value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "em"},
        "data": {"token": base64.b64encode(value.encode()).decode()},
    }


async def secret_events(kubectl: Kubectl) -> list[dict[str, Any]]:
    events = await kubectl_json(kubectl, "events")
    return [e for e in events["items"] if e.get("reason") == "CarbonSecretUnreadable"]


@dataclass
class Seen:
    at_s: float
    reason: str
    cap_w: float | None
    message: str


async def watch_status(
    client: KubeClient, namespace: str, seen: list[Seen], stop: asyncio.Event
) -> None:
    """Record every CarbonAvailable reason and effective cap the API server shows."""
    while not stop.is_set():
        obj = await client.get(POWER_CAPPING_CONFIGS, "cap", namespace)
        found = condition(obj, "CarbonAvailable")
        cap = (obj.get("status") or {}).get("effectiveCapWatts")
        seen.append(Seen(time.monotonic(), found.get("reason", ""), cap, found.get("message", "")))
        await asyncio.sleep(0.2)


async def timed(step: Callable[[], Awaitable[Any]]) -> float:
    started = time.monotonic()
    await step()
    return time.monotonic() - started


async def test_a_config_created_before_its_secret_falls_back_then_follows_the_grid(
    controller: Manager,
    kubectl: Kubectl,
    namespace: str,
    electricity_maps: ProviderServer,
) -> None:
    kubectl.apply(em_config())
    waiting = await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: condition(obj, "CarbonAvailable").get("reason") == "SecretUnreadable",
    )
    found = condition(waiting, "CarbonAvailable")
    assert found["status"] == "False"
    assert f"Secret {namespace}/em, key 'token'" in found["message"]
    assert "does not exist (HTTP 404)" in found["message"]
    assert waiting["status"]["effectiveCapWatts"] == 400, "FloorCap meanwhile"
    assert waiting["status"]["effectiveCapSource"] == "Carbon"
    assert electricity_maps.hits(LATEST) == 0

    # More than one retry period: the controller keeps trying, and says so once.
    await asyncio.sleep(RETRY_S + 1)
    (event,) = await secret_events(kubectl)
    assert event["type"] == "Warning"
    assert event["count"] == 1
    assert f"Secret {namespace}/em, key 'token'" in event["message"]

    # Two failed reads so far (at 0 and 5 s): the retry in force is 10 s.
    kubectl.apply(api_key_secret(OLD_KEY))
    recovery_s = await timed(
        lambda: eventually(
            lambda: kubectl_json(kubectl, "pcc", "cap"),
            lambda obj: condition(obj, "CarbonAvailable").get("reason") == "Live",
            timeout_s=60,
        )
    )
    live = await kubectl_json(kubectl, "pcc", "cap")
    print(f"Secret created -> live carbon cap: {recovery_s:.1f} s (retry in force <= 10 s)")
    assert recovery_s <= 2 * RETRY_S + 2, "within the retry period in force"
    assert live["status"]["effectiveCapWatts"] == 800
    assert "200 g/kWh" in condition(live, "CarbonAvailable")["message"]
    assert electricity_maps.requests[-1].headers.get("auth-token") == OLD_KEY
    assert len(await secret_events(kubectl)) == 1

    # The config goes, and with it every carbon series it had.
    key = f"{namespace}/cap"
    registry = controller.metrics.registry
    assert registry.get_sample_value("climatik_carbon_available", {"config": key}) == 1
    kubectl.run("delete", "pcc", "cap")

    async def carbon_series() -> list[str]:
        return [
            sample.name
            for metric in registry.collect()
            for sample in metric.samples
            if sample.labels.get("config") == key
        ]

    await eventually(carbon_series, lambda names: names == [], timeout_s=15)


@pytest.mark.parametrize(
    "noticed_first",
    [False, True],
    ids=["recreated-at-once", "recreated-after-the-controller-noticed"],
)
async def test_a_rotated_key_is_picked_up_without_a_fallback(
    controller: Manager,
    kubectl: Kubectl,
    namespace: str,
    client: KubeClient,
    electricity_maps: ProviderServer,
    noticed_first: bool,
) -> None:
    kubectl.apply(api_key_secret(OLD_KEY))
    electricity_maps.accept_only("auth-token", OLD_KEY)
    kubectl.apply(em_config())
    await eventually(
        lambda: kubectl_json(kubectl, "pcc", "cap"),
        lambda obj: (obj.get("status") or {}).get("effectiveCapWatts") == 800,
    )

    seen: list[Seen] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_status(client, namespace, seen, stop))

    async def last_seen() -> Seen | None:
        return seen[-1] if seen else None

    try:
        await asyncio.sleep(1)
        kubectl.run("delete", "secret", "em")
        # The provider revokes the old key and now answers 300 g/kWh, to the new key only.
        electricity_maps.accept_only("auth-token", NEW_KEY)
        electricity_maps.set_default(LATEST, Answer(latest(300)))
        if noticed_first:
            # The controller finds the key refused and the Secret gone: the last reading holds.
            held = await eventually(
                last_seen,
                lambda last: last is not None and last.reason == "SecretUnreadable",
                timeout_s=3 * PERIOD_S,
                interval_s=0.1,
            )
            assert held is not None
            assert held.cap_w == 800, "the last good reading, not the fallback"
            assert "does not exist (HTTP 404)" in held.message
        kubectl.apply(api_key_secret(NEW_KEY))
        recreated_at = time.monotonic()
        await eventually(
            last_seen,
            lambda last: last is not None and last.reason == "Live" and last.cap_w == 600,
            timeout_s=60,
            interval_s=0.1,
        )
        recovered_at = next(s.at_s for s in seen if s.reason == "Live" and s.cap_w == 600)
        await asyncio.sleep(1)
    finally:
        stop.set()
        await watcher

    recovery_s = recovered_at - recreated_at
    in_between = {(s.reason, s.cap_w) for s in seen if s.at_s < recovered_at}
    print(f"Secret recreated -> live with the new key: {recovery_s:.1f} s; seen {in_between}")
    assert recovery_s <= 2 * PERIOD_S, "within two control periods"
    assert all(reason != "Fallback" and cap == 800 for reason, cap in in_between), in_between
    assert all(OLD_KEY not in s.message and NEW_KEY not in s.message for s in seen)
    assert electricity_maps.requests[-1].headers.get("auth-token") == NEW_KEY
    assert MIN_REQUEUE_S == PERIOD_S, "the control period this test assumes"
