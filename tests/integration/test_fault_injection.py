"""Faults injected into a running controller, end to end (issue 15).

The power-cap, carbon and placement controllers run together in a real manager against the dev
cluster, a real Prometheus scraping the metrics exporter, and a real local HTTP server answering
like Electricity Maps. One ScaledObject (min 1, max 10) runs three kwok pods under a 1,000 W cap
with the design document's Threshold rule, so its ceiling is 3 at 990 W and 10 at 300 W. Then,
one after another:

- the pods' watts become NaN, then negative, then 5e307 W (each must be "no data": the ceiling
  holds, `MetricsAvailable` says why);
- Prometheus dies and comes back;
- the carbon API key Secret is deleted and recreated with a new key, the old one revoked;
- the placement webhook's certificate is garbage at start and becomes valid later.

Throughout, the ceiling is sampled several times a second and must stay within [min, user max];
after each fault ends, capping must act on fresh data again within two control periods.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.runtime import placement as runtime_placement
from climatik.runtime.capping import carbon_controller, power_cap_controller
from tests.certificates import self_signed
from tests.integration.conftest import Kubectl
from tests.integration.helpers.carbon_servers import Answer, ProviderServer, provider_server
from tests.integration.helpers.polling import eventually
from tests.integration.helpers.scrape import free_port, manager_metric
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
    from tests.integration.helpers.prometheus import ExporterHandle, PrometheusFactory

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

PERIOD_S = 5.0
"""The control period of every controller here (capping interval, carbon wake, Secret refresh,
webhook certificate poll)."""
BREAKER_S = PERIOD_S - 1.0
"""The Prometheus breaker's cool-down: just under the period, so every round probes. At the
period itself a round starts a few milliseconds before the cool-down of the last round's
failure ends, is refused, and the probes come every other round (10 s, which with a scrape and
a cache left no room under `RECOVERY_S`)."""
RECOVERY_S = 2 * PERIOD_S
MIN_REPLICAS, USER_MAX = 1, 10
LATEST = "/v3/carbon-intensity/latest"
OLD_KEY, NEW_KEY = "em-key-old-0001", "em-key-new-0002"


def _latest(intensity: float) -> dict[str, Any]:
    """Electricity Maps' `latest` answer, for an hour already over (so it is asked again)."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    stamp = hour.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "zone": "DE",
        "carbonIntensity": intensity,
        "datetime": stamp,
        "updatedAt": stamp,
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
    }


def _secret(key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "em"},
        "data": {"token": base64.b64encode(key.encode()).decode()},
    }


class CeilingWatch:
    """Samples the ScaledObject's ceiling until stopped; every value seen is kept."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl
        self.seen: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            so = await kubectl_json(self.kubectl, "scaledobject", "llm")
            self.seen.append((time.monotonic(), int(so["spec"]["maxReplicaCount"])))
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def electricity_maps() -> AsyncIterator[ProviderServer]:
    async with provider_server({LATEST: Answer(_latest(100))}) as server:
        server.accept_only("auth-token", OLD_KEY)
        yield server


async def _metrics_available(kubectl: Kubectl) -> dict[str, Any]:
    return condition(await kubectl_json(kubectl, "pcc", "cap"), "MetricsAvailable")


async def _set_watts(
    exporter: ExporterHandle, namespace: str, pods: list[dict[str, Any]], watts: Any
) -> None:
    for pod in pods:
        await exporter.set(namespace, pod["metadata"]["name"], cpu_watts=watts)


async def test_faults_never_push_a_ceiling_out_of_bounds_and_capping_recovers(
    dev_cluster: ClusterInfo,
    kubectl: Kubectl,
    namespace: str,
    metrics_exporter: ExporterHandle,
    prometheus_factory: PrometheusFactory,
    electricity_maps: ProviderServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prometheus = prometheus_factory()
    cert_dir = tmp_path / "webhook"
    cert_dir.mkdir()
    (cert_dir / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    (cert_dir / "tls.key").write_text("not a key")
    for name, value in {
        "CLIMATIK_CAPPING__INTERVAL_S": PERIOD_S,
        "CLIMATIK_CAPPING__PROMETHEUS_CACHE_TTL_S": 1,
        "CLIMATIK_CAPPING__PROMETHEUS_BREAKER_INITIAL_S": BREAKER_S,
        "CLIMATIK_CAPPING__PROMETHEUS_BREAKER_MAX_S": BREAKER_S,
        "CLIMATIK_CARBON__ELECTRICITY_MAPS_URL": electricity_maps.url,
        "CLIMATIK_CARBON__SECRET_REFRESH_S": PERIOD_S,
        "CLIMATIK_CARBON__SECRET_RETRY_S": PERIOD_S,
        "CLIMATIK_PLACEMENT__WEBHOOK_CERT_DIR": cert_dir,
        "CLIMATIK_PLACEMENT__WEBHOOK_PORT": free_port(),
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(runtime_placement, "CERTIFICATE_POLL_S", PERIOD_S)

    kubectl.apply(_secret(OLD_KEY))
    kubectl.apply(deployment("llm", 3, {"app": "llm"}))
    kubectl.apply(scaled_object("llm", "llm", min_replicas=MIN_REPLICAS, max_replicas=USER_MAX))
    pods = await running_pods(kubectl, "llm", 3)
    await serve_watts(metrics_exporter, namespace, pods, 330)  # 990 W of 1000: ceiling 3
    config = capping_config("cap", prometheus.url, [so_ref("llm")], policy="Threshold", cap_w=1000)
    config["spec"]["failSafe"] = {"maxMetricAgeSeconds": 30, "holdSeconds": 600}
    config["spec"]["carbon"] = {
        "provider": "ElectricityMaps",
        "zone": "DE",
        "apiKeySecretRef": {"name": "em", "key": "token"},
        # 100 g/kWh is clean: the carbon cap is the whole powerCapLimit.
        "target": {
            "type": "IntensityBand",
            "cleanIntensityGramsPerKWh": 100,
            "dirtyIntensityGramsPerKWh": 400,
        },
        "floorWatts": 400,
        "fallback": "StaticCap",
        "maxAgeSeconds": 600,
    }
    factories = [power_cap_controller, carbon_controller, runtime_placement.placement_controller]
    async with running_manager(dev_cluster, namespace, factories) as manager:
        await asyncio.to_thread(kubectl.apply, config)
        await ceiling_becomes(kubectl, "llm", 3, timeout_s=90)
        await eventually(
            lambda: kubectl_json(kubectl, "pcc", "cap"),
            lambda obj: condition(obj, "CarbonAvailable").get("reason") == "Live",
            timeout_s=60,
        )
        assert await manager_metric(manager, "climatik_placement_webhook_certificate_ok") == 0
        watch = CeilingWatch(kubectl)
        watch.start()
        recovery: dict[str, float] = {}
        try:
            for fault, watts, reason in (
                ("NaN", "NaN", "NoDataNaN"),
                ("negative", -50, "NoDataImplausible"),
                ("huge", 5e307, "NoDataImplausible"),
            ):
                await _set_watts(metrics_exporter, namespace, pods, watts)
                seen = await eventually(
                    lambda: _metrics_available(kubectl),
                    lambda c: c.get("status") == "False",
                    timeout_s=RECOVERY_S + 5,
                )
                assert seen["reason"] == reason, (fault, seen)
                so = await kubectl_json(kubectl, "scaledobject", "llm")
                assert so["spec"]["maxReplicaCount"] == 3, f"{fault}: no data holds the ceiling"
                recovery[fault] = await _recovers(kubectl, metrics_exporter, namespace, pods)

            await asyncio.to_thread(prometheus.stop)
            seen = await eventually(
                lambda: _metrics_available(kubectl),
                lambda c: c.get("status") == "False",
                timeout_s=RECOVERY_S + 5,
            )
            assert seen["reason"] == "PrometheusUnreachable", seen
            await asyncio.sleep(PERIOD_S)  # a failed probe, so the breaker is open again
            assert (await kubectl_json(kubectl, "scaledobject", "llm"))["spec"][
                "maxReplicaCount"
            ] == 3
            await asyncio.to_thread(prometheus.start)
            recovery["Prometheus down"] = await _recovers(
                kubectl, metrics_exporter, namespace, pods
            )

            # The API key is rotated: the old one revoked, the Secret recreated with a new one.
            electricity_maps.accept_only("auth-token", NEW_KEY)
            await asyncio.to_thread(kubectl.run, "delete", "secret", "em")
            await asyncio.to_thread(kubectl.apply, _secret(NEW_KEY))
            rotated = time.monotonic()
            await eventually(
                lambda: kubectl_json(kubectl, "pcc", "cap"),
                lambda obj: (
                    condition(obj, "CarbonAvailable").get("reason") == "Live"
                    and any(
                        r.headers.get("auth-token") == NEW_KEY for r in electricity_maps.requests
                    )
                ),
                timeout_s=RECOVERY_S + 5,
            )
            recovery["carbon key rotated"] = time.monotonic() - rotated

            # A valid webhook certificate appears.
            cert, key = self_signed(tmp_path, "webhook")
            key.replace(cert_dir / "tls.key")
            cert.replace(cert_dir / "tls.crt")
            written = time.monotonic()
            await eventually(
                lambda: manager_metric(manager, "climatik_placement_webhook_certificate_ok"),
                lambda value: value == 1,
                timeout_s=RECOVERY_S + 5,
            )
            recovery["webhook certificate"] = time.monotonic() - written
        finally:
            await watch.stop()

    ceilings = [value for _, value in watch.seen]
    print(f"ceilings seen: {sorted(set(ceilings))} in {len(ceilings)} samples")
    print("recovery (s): " + ", ".join(f"{k} {v:.1f}" for k, v in recovery.items()))
    assert ceilings
    assert all(MIN_REPLICAS <= c <= USER_MAX for c in ceilings), sorted(set(ceilings))
    for fault, seconds in recovery.items():
        assert seconds <= RECOVERY_S, f"{fault}: recovered in {seconds:.1f} s"


async def _recovers(
    kubectl: Kubectl,
    exporter: ExporterHandle,
    namespace: str,
    pods: list[dict[str, Any]],
) -> float:
    """Sane readings again (300 W: release to 10); seconds until the ceiling follows them.
    Then back to 990 W and ceiling 3, for the next fault."""
    await _set_watts(exporter, namespace, pods, 100)
    started = time.monotonic()
    await ceiling_becomes(kubectl, "llm", USER_MAX, timeout_s=RECOVERY_S + 10)
    seconds = time.monotonic() - started
    available = await _metrics_available(kubectl)
    assert available["status"] == "True", available
    await _set_watts(exporter, namespace, pods, 330)
    await ceiling_becomes(kubectl, "llm", 3, timeout_s=RECOVERY_S + 10)
    return seconds
