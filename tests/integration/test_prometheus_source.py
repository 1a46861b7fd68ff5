"""The Prometheus source against a real Prometheus scraping the metrics exporter.

Every value asserted here was set through the exporter, scraped by Prometheus each second and
read back through our client and presets: watts per target for each preset, counters turned
into rates, tokens, racks, and the failure modes (NaN, empty, stale, bad PromQL, Prometheus
stopped and restarted).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from climatik.domain.config import MeasurementPreset
from climatik.sources.address import HTTPSession
from climatik.sources.power import PrometheusPowerSource
from climatik.sources.power_queries import (
    PowerQueryConfig,
    TargetPods,
    TokensQueryConfig,
    build_power_freshness_query,
    build_power_query,
    build_tokens_query,
)
from climatik.sources.power_readings import Reading, TargetMeasurement
from climatik.sources.prometheus import PrometheusClient, PrometheusSettings
from climatik.sources.prometheus_pool import PrometheusPool
from climatik.sources.prometheus_results import (
    Matrix,
    NoData,
    NoDataReason,
    PrometheusHTTPError,
    PrometheusTimeoutError,
    PrometheusUnreachableError,
    Vector,
)
from climatik.sources.racks import PrometheusRackSignalSource, RackNodes, RackSignalQueries
from tests.integration.helpers.polling import eventually

if TYPE_CHECKING:
    from tests.integration.helpers.prometheus import (
        ExporterHandle,
        PrometheusFactory,
        PrometheusServer,
    )

pytest_plugins = ["tests.integration.helpers.prometheus"]
pytestmark = [pytest.mark.integration]

# Short windows: with a 1 s scrape interval, rate over 10 s is settled within ~12 s.
RATE_WINDOW = "10s"
TOLERANCE = 0.05


def close_to(value: float | None, expected: float, tolerance: float = TOLERANCE) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=tolerance)


@pytest.fixture
def namespace() -> str:
    # Each test owns its namespace, so the shared exporter and Prometheus never mix tests.
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with HTTPSession() as shared:
        yield shared


def client_for(
    session: aiohttp.ClientSession, server: PrometheusServer, **settings: Any
) -> PrometheusClient:
    options: dict[str, Any] = {"timeout_s": 5.0, "max_sample_age_s": 30.0, **settings}
    return PrometheusClient(session, server.url, PrometheusSettings(**options))


async def add_service(
    exporter: ExporterHandle, namespace: str, pods: dict[str, dict[str, Any]], node: str = "n1"
) -> TargetPods:
    await exporter.add_pods(
        [{"namespace": namespace, "name": name, "node": node, **v} for name, v in pods.items()]
    )
    return TargetPods(key=f"{namespace}/svc", namespace=namespace, pods=tuple(pods))


async def measure(source: PrometheusPowerSource, target: TargetPods) -> TargetMeasurement:
    return (await source.measure_targets([target]))[target.key]


def watts_of(m: TargetMeasurement) -> float | None:
    return m.watts_or_none


PODS: dict[str, dict[str, Any]] = {
    "vllm-0": {"cpu_watts": 100.0, "gpu_watts": 300.0, "tokens_per_s": 40.0},
    "vllm-1": {"cpu_watts": 150.0, "gpu_watts": None, "tokens_per_s": 60.0},
}


async def test_kepler_pod_preset_reads_one_zone_plus_gpu(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    target = await add_service(metrics_exporter, namespace, PODS)
    client = client_for(session, prometheus)
    source = PrometheusPowerSource(client, power=PowerQueryConfig())
    # package zone only (100 + 150) plus GPU 300: summing all zones would give 812.5.
    result = await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 550))
    assert isinstance(result.watts, Reading)
    assert result.watts.value == pytest.approx(550.0)
    assert time.time() - result.watts.measured_at_s < 10

    cpu_only = PrometheusPowerSource(client, power=PowerQueryConfig(kepler_include_gpu=False))
    assert watts_of(await measure(cpu_only, target)) == pytest.approx(250.0)

    # A new value is followed within a few scrapes.
    await metrics_exporter.set(namespace, "vllm-1", cpu_watts=250.0)
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 650))


async def test_kepler07_preset_rates_the_joules_counters(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    target = await add_service(metrics_exporter, namespace, PODS)
    config = PowerQueryConfig(preset=MeasurementPreset.KEPLER_07, kepler07_window=RATE_WINDOW)
    source = PrometheusPowerSource(client_for(session, prometheus), power=config)
    # Container joules count CPU and GPU: rate = 100 + 300 + 150 W.
    await eventually(
        lambda: measure(source, target), lambda m: close_to(watts_of(m), 550), timeout_s=40
    )
    await metrics_exporter.set(namespace, "vllm-0", gpu_watts=100.0)
    await eventually(
        lambda: measure(source, target), lambda m: close_to(watts_of(m), 350), timeout_s=40
    )


async def test_dcgm_preset_reads_exported_pod_labels(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    target = await add_service(metrics_exporter, namespace, PODS)
    client = client_for(session, prometheus)
    source = PrometheusPowerSource(client, power=PowerQueryConfig(preset=MeasurementPreset.DCGM))
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 300))
    # The scrape job's own pod/namespace labels win; the exporter's are renamed exported_*.
    series = await client.query(
        f'DCGM_FI_DEV_POWER_USAGE{{exported_namespace="{namespace}"}}', check_age=False
    )
    assert isinstance(series, Vector)
    labels = series.samples[0].labels
    assert labels["exported_pod"] == "vllm-0"
    assert labels["namespace"] == "gpu-operator"
    assert labels["modelName"].startswith("NVIDIA")
    # The design document's metrics[].query: a fixed query whose sum is the scope's power.
    total = await source.measure_total(
        f'DCGM_FI_DEV_POWER_USAGE{{exported_namespace="{namespace}"}}'
    )
    assert isinstance(total, Reading)
    assert total.value == pytest.approx(300.0)


async def test_tokens_per_second_from_vllm_counters(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    target = await add_service(metrics_exporter, namespace, PODS)
    source = PrometheusPowerSource(
        client_for(session, prometheus),
        power=PowerQueryConfig(),
        tokens=TokensQueryConfig(window=RATE_WINDOW),
    )
    result = await eventually(
        lambda: measure(source, target),
        lambda m: close_to(m.tokens_per_s_or_none, 100.0),
        timeout_s=40,
    )
    # vLLM series carry model_name; our selection is by the scrape config's pod labels.
    assert result.watts_or_none == pytest.approx(550.0)


async def test_demand_from_vllms_backlog_and_finished_requests(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    """The headroom policy's demand signal, from vLLM's own series through a real Prometheus:
    the queued requests (a gauge) and tokens per request (generated tokens over the latency
    histogram's count of finished requests)."""
    pods = {
        name: {**values, "waiting_requests": 4.0, "tokens_per_request": 200.0}
        for name, values in PODS.items()
    }
    target = await add_service(metrics_exporter, namespace, pods)
    source = PrometheusPowerSource(
        client_for(session, prometheus),
        power=PowerQueryConfig(),
        tokens=TokensQueryConfig(window=RATE_WINDOW),
    )
    result = await eventually(
        lambda: measure(source, target),
        lambda m: (
            close_to(m.tokens_per_s_or_none, 100.0)
            and close_to(m.tokens_per_request, 200.0)
            and m.waiting_requests_or_none == 8.0
        ),
        timeout_s=40,
    )
    assert result.watts_or_none == pytest.approx(550.0)


async def test_custom_query_with_placeholders(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    target = await add_service(metrics_exporter, namespace, PODS)
    config = PowerQueryConfig(
        preset=MeasurementPreset.CUSTOM,
        custom_query=(
            'sum(kepler_pod_cpu_watts{zone="dram",pod_namespace="$namespace",pod_name=~"$pods"})'
        ),
    )
    source = PrometheusPowerSource(client_for(session, prometheus), power=config)
    # dram is 15 % of package in the exporter: 0.15 * 250 W.
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 37.5))


async def test_nan_is_no_data_and_recovers(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    target = await add_service(metrics_exporter, namespace, PODS)
    source = PrometheusPowerSource(
        client_for(session, prometheus), power=PowerQueryConfig(kepler_include_gpu=False)
    )
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 250))
    await metrics_exporter.set(namespace, "vllm-0", cpu_watts="NaN")
    result = await eventually(
        lambda: measure(source, target), lambda m: isinstance(m.watts, NoData)
    )
    assert isinstance(result.watts, NoData)
    assert result.watts.reason is NoDataReason.NAN
    await metrics_exporter.set(namespace, "vllm-0", cpu_watts=50.0)
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 200))


async def test_unknown_pods_are_no_data_never_zero(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    await add_service(metrics_exporter, namespace, PODS)
    ghost = TargetPods(key="ghost", namespace=namespace, pods=("not-scraped-0",))
    for preset in (
        MeasurementPreset.KEPLER_POD,
        MeasurementPreset.KEPLER_07,
        MeasurementPreset.DCGM,
    ):
        source = PrometheusPowerSource(
            client_for(session, prometheus), power=PowerQueryConfig(preset=preset)
        )
        result = await measure(source, ghost)
        assert isinstance(result.watts, NoData), preset
        assert result.watts.reason is NoDataReason.EMPTY
        assert result.watts_or_none is None


async def test_hostile_names_are_escaped_not_injected(
    prometheus: PrometheusServer, session: aiohttp.ClientSession
) -> None:
    # Without escaping, this namespace would close the matcher and add `or vector(1)`.
    hostile = TargetPods(key="x", namespace='a"} or vector(1) or up{job="', pods=("p.*",))
    source = PrometheusPowerSource(client_for(session, prometheus))
    result = await measure(source, hostile)
    assert isinstance(result.watts, NoData)
    assert result.watts.reason is NoDataReason.EMPTY


async def test_pod_removed_from_exporter_goes_stale_in_prometheus(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    target = await add_service(metrics_exporter, namespace, {"vllm-0": PODS["vllm-0"]})
    source = PrometheusPowerSource(client_for(session, prometheus))
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 400))
    await metrics_exporter.delete_pod(namespace, "vllm-0")
    # Prometheus writes staleness markers for series that vanish from a scrape.
    await eventually(lambda: measure(source, target), lambda m: isinstance(m.watts, NoData))


async def test_frozen_samples_older_than_max_age_are_stale(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    timestamped = {"vllm-0": {**PODS["vllm-0"], "timestamped": True}}
    target = await add_service(metrics_exporter, namespace, timestamped)
    source = PrometheusPowerSource(client_for(session, prometheus, max_sample_age_s=4.0))
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 400))
    # Explicitly timestamped samples are never marked stale by Prometheus: they just age.
    await metrics_exporter.set(namespace, "vllm-0", frozen=True)
    result = await eventually(
        lambda: measure(source, target), lambda m: isinstance(m.watts, NoData), timeout_s=20
    )
    assert isinstance(result.watts, NoData)
    # Prometheus drops the old sample (lookback = max age); the freshness query still sees it
    # and turns "empty" into "stale" with the age.
    assert result.watts.reason is NoDataReason.STALE
    assert "s old, maximum 4 s" in result.watts.message
    await metrics_exporter.set(namespace, "vllm-0", frozen=False)
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 400))


async def test_bad_promql_is_a_typed_error_with_prometheus_message(
    prometheus: PrometheusServer, session: aiohttp.ClientSession
) -> None:
    client = client_for(session, prometheus)
    with pytest.raises(PrometheusHTTPError) as caught:
        await client.query("sum(rate(kepler_container_joules_total[1m])")
    error = caught.value
    assert error.status == 400
    assert error.error_type == "bad_data"
    assert error.error is not None
    assert "parse error" in error.error
    assert error.reason == "PrometheusQueryFailed"

    config = PowerQueryConfig(preset=MeasurementPreset.CUSTOM, custom_query='sum(x{pod=~"$pods"')
    source = PrometheusPowerSource(client, power=config)
    result = await measure(source, TargetPods(key="k", namespace="n", pods=("p",)))
    assert isinstance(result.watts, PrometheusHTTPError)
    assert result.watts.error_type == "bad_data"


async def test_range_query_returns_series_over_time(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    await add_service(metrics_exporter, namespace, PODS)
    client = client_for(session, prometheus)
    query = (
        f'sum by (pod_name) (kepler_pod_cpu_watts{{zone="package",pod_namespace="{namespace}"}})'
    )

    async def window() -> Matrix | NoData:
        end_s = time.time()
        return await client.query_range(query, start_s=end_s - 4, end_s=end_s, step_s=1)

    result = await eventually(
        window, lambda r: isinstance(r, Matrix) and min(len(s.points) for s in r.series) >= 3
    )
    assert isinstance(result, Matrix)
    values = {s.labels["pod_name"]: {v for _, v in s.points} for s in result.series}
    assert values == {"vllm-0": {100.0}, "vllm-1": {150.0}}


async def test_rack_power_and_inlet_temperature(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    nodes = (f"{namespace}-n1", f"{namespace}-n2")
    await add_service(
        metrics_exporter, namespace, {"a": {"cpu_watts": 100.0, "gpu_watts": 200.0}}, nodes[0]
    )
    await add_service(metrics_exporter, namespace, {"b": {"cpu_watts": 50.0}}, nodes[1])
    await metrics_exporter.set_node(nodes[0], idle_cpu_watts=40.0, inlet_c=24.5)
    await metrics_exporter.set_node(nodes[1], idle_cpu_watts=30.0, inlet_c=27.0)
    queries = RackSignalQueries(
        inlet_temperature_query='max(ipmi_temperature_celsius{name="Inlet Temp",node=~"$nodes"})',
        history_window_s=0,
    )
    source = PrometheusRackSignalSource(client_for(session, prometheus), queries)
    racks = [RackNodes("r1", nodes), RackNodes("r1-half", nodes[1:])]

    async def read() -> dict[str, tuple[float | None, float | None]]:
        result = await source.read_racks(racks)
        return {rack: (m.watts, m.inlet_c) for rack, m in result.items()}

    # Node CPU (idle + pods, package zone) plus node GPU watts.
    expected = {"r1": (420.0, 27.0), "r1-half": (80.0, 27.0)}
    assert await eventually(read, lambda r: r == expected) == expected


async def test_prometheus_stopped_is_unreachable_then_restart_brings_data_back(
    prometheus_factory: PrometheusFactory,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    server = await asyncio.to_thread(prometheus_factory)
    target = await add_service(metrics_exporter, namespace, PODS)
    timeout_s = 2.0
    source = PrometheusPowerSource(client_for(session, server, timeout_s=timeout_s))
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 550))

    await asyncio.to_thread(server.stop)
    started = time.monotonic()
    result = await measure(source, target)
    elapsed_s = time.monotonic() - started
    assert isinstance(result.watts, PrometheusUnreachableError)
    assert result.watts.reason == "PrometheusUnreachable"
    assert str(server.port) in result.watts.message
    assert elapsed_s < timeout_s + 1

    await metrics_exporter.set(namespace, "vllm-1", cpu_watts=200.0)
    await asyncio.to_thread(server.start)
    # Same TSDB and port: data comes back, and then the new value once scraped.
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 600))


async def test_hung_prometheus_times_out_within_the_deadline(
    prometheus_factory: PrometheusFactory,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
) -> None:
    server = await asyncio.to_thread(prometheus_factory)
    target = await add_service(metrics_exporter, namespace, PODS)
    timeout_s = 1.5
    source = PrometheusPowerSource(client_for(session, server, timeout_s=timeout_s))
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 550))
    # A stopped process still has its listening socket: connections are accepted by the
    # kernel and never answered, the case only a deadline catches.
    await asyncio.to_thread(server.pause)
    try:
        started = time.monotonic()
        result = await measure(source, target)
        elapsed_s = time.monotonic() - started
    finally:
        server.resume()
    assert isinstance(result.watts, PrometheusTimeoutError)
    assert result.watts.reason == "PrometheusTimeout"
    assert timeout_s - 0.1 <= elapsed_s < timeout_s + 1.0
    await eventually(lambda: measure(source, target), lambda m: close_to(watts_of(m), 550))


async def per_target(
    client: PrometheusClient, power: PowerQueryConfig, tokens: TokensQueryConfig, t: TargetPods
) -> tuple[float | None, float | None, float | None]:
    """Watts, the newest raw power sample's time and tokens/s, by the per-target queries."""

    async def value(query: str | None, **options: Any) -> float | None:
        if query is None:
            return None
        result = await client.query(query, **options)
        return result.single_value() if isinstance(result, Vector) else None

    freshness = build_power_freshness_query(power, t.namespace, t.pods)
    return (
        await value(build_power_query(power, t.namespace, t.pods)),
        await value(freshness, lookback_delta_s=300.0, check_age=False),
        await value(build_tokens_query(tokens, t.namespace, t.pods)),
    )


@pytest.mark.parametrize(
    "power",
    [
        PowerQueryConfig(),
        PowerQueryConfig(preset=MeasurementPreset.KEPLER_07, kepler07_window=RATE_WINDOW),
        PowerQueryConfig(preset=MeasurementPreset.DCGM),
    ],
    ids=["KeplerPod", "Kepler07", "DCGM"],
)
async def test_grouped_reads_match_the_per_target_queries(
    prometheus: PrometheusServer,
    metrics_exporter: ExporterHandle,
    session: aiohttp.ClientSession,
    namespace: str,
    power: PowerQueryConfig,
) -> None:
    """One grouped query per shape for every pod, through the shared read layer, gives each
    target what its own per-target queries give: watts, freshness and tokens."""
    chat = await add_service(metrics_exporter, namespace, PODS)
    batch = replace(
        await add_service(
            metrics_exporter,
            namespace,
            {"batch-0": {"cpu_watts": 70.0, "gpu_watts": 120.0, "tokens_per_s": 5.0}},
        ),
        key=f"{namespace}/batch",
    )
    client = client_for(session, prometheus)
    tokens = TokensQueryConfig(window=RATE_WINDOW)

    async def shared_session() -> aiohttp.ClientSession:
        return session

    pool = PrometheusPool(shared_session)
    grouped = PrometheusPowerSource(
        pool.querier(prometheus.url, client.settings), power=power, tokens=tokens
    )

    async def both() -> list[tuple[TargetMeasurement, tuple[float | None, ...]]]:
        measured = await grouped.measure_targets([chat, batch])
        return [
            (measured[t.key], await per_target(client, power, tokens, t)) for t in (chat, batch)
        ]

    # Each target sums its own pods only (batch-0 shares the namespace): DCGM sees the GPUs,
    # Kepler CPU and GPU. Rates settle within the window, so wait for the settled values.
    watts_w = (300.0, 120.0) if power.preset is MeasurementPreset.DCGM else (550.0, 190.0)
    settled = list(zip(watts_w, (100.0, 5.0), strict=True))

    def agree(pairs: list[tuple[TargetMeasurement, tuple[float | None, ...]]]) -> bool:
        for (measured, (watts, newest, tokens_per_s)), (want_w, want_tokens) in zip(
            pairs, settled, strict=True
        ):
            if not (isinstance(measured.watts, Reading) and watts and newest and tokens_per_s):
                return False
            if not (close_to(measured.watts.value, watts) and close_to(watts, want_w)):
                return False
            # The newest raw sample is the reading's time (both scraped each second).
            if abs(measured.watts.measured_at_s - newest) > 1.5:
                return False
            tokens_now = measured.tokens_per_s_or_none
            if not (close_to(tokens_now, tokens_per_s) and close_to(tokens_per_s, want_tokens)):
                return False
        return True

    try:
        await eventually(both, agree, timeout_s=40)
    finally:
        await pool.close()
