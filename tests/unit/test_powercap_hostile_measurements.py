"""The power-cap reconciler facing hostile measurements (issue 15).

A config's author chooses the Prometheus the controller asks; here it is a loopback aiohttp
server answering whatever the test says. Negative or absurd watts must take the missing-data
path (hold, `MetricsAvailable=False` naming the value and the bound), never fail the reconcile
(which used to back off for up to 1000 s with no fail-safe and a stale `MetricsAvailable=True`);
absurd tokens must neither fail it nor reach the status as a non-number.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from climatik.domain.capping import TargetObservation
from climatik.kube.json import ObjectMeta, child
from climatik.kube.store import thaw
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap import PowerCapReconciler
from climatik.reconcilers.settings import CappingSettings
from climatik.sources.address import HTTPSession
from tests.json_paths import dict_at
from tests.unit.helpers.capping_world import (
    NS,
    Client,
    FakePrometheus,
    objects,
    prometheus,
    reconcile,
)
from tests.unit.helpers.status_world import RecordedEvents, StoreCache

__all__ = ["prometheus"]  # the fixture, used by name


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
            nodes=StoreCache(),
            events=RecordedEvents(),
            metrics=CappingMetrics(CollectorRegistry()),
            settings=CappingSettings(),
            session_factory=session_factory,
        )

        async def metrics_available() -> dict[str, Any]:
            await reconciler.reconcile(f"{NS}/cap")
            obj = configs.store.get(f"{NS}/cap")
            assert obj is not None
            return condition(thaw(child(obj, "status")), "MetricsAvailable")

        assert (await metrics_available())["status"] == "True"
        assert (await metrics_available())["status"] == "True"
        current = configs.store.get(f"{NS}/cap")
        assert current is not None
        moved = thaw(current)
        dict_at(moved, "metadata")["generation"] = (ObjectMeta.of(moved).generation or 1) + 1
        dict_at(moved, "spec", "powerMeasurement")["prometheusAddress"] = "http://127.0.0.1:9"
        configs.store.upsert(moved)
        after = await metrics_available()
    assert after["status"] == "False"
    assert after["reason"] == "PrometheusUnreachable"
