"""Rack signals from Prometheus: per-rack templates, split queries, missing data, history."""

from __future__ import annotations

import math
from typing import Literal

import pytest

from climatik.domain.config import PowerMeasurementConfig
from climatik.sources import promql
from climatik.sources.power_queries import PowerQueryConfig, build_grouped_power_queries
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_results import (
    InstantResult,
    Matrix,
    NoData,
    NoDataReason,
    PrometheusUnreachableError,
    RangeResult,
    Sample,
    Series,
    Vector,
)
from climatik.sources.racks import (
    DEFAULT_RACK_POWER_QUERY,
    PrometheusRackSignalSource,
    RackNodes,
    RackSignalQueries,
    RackSignals,
    StaticRackSignalSource,
    build_rack_query,
    rack_queries_for,
)

RACKS = (RackNodes("rack-a", ("a-0", "a-1")), RackNodes("rack-b", ("b-0",)))


class Table:
    """Answers instant and range queries from dicts; unknown queries are empty."""

    def __init__(
        self,
        instant: dict[str, InstantResult | Exception],
        ranges: dict[str, RangeResult] | None = None,
    ) -> None:
        self.instant = instant
        self.ranges = ranges or {}
        self.asked: list[str] = []
        self.range_asked: list[tuple[str, float, float, float]] = []
        self.grouped_asked: list[bool] = []

    @property
    def address(self) -> str:
        return "http://table"

    @property
    def settings(self) -> PrometheusSettings:
        return PrometheusSettings()

    async def query(
        self,
        promql: str,
        *,
        at_s: float | None = None,
        lookback_delta_s: float | Literal["default"] | None = "default",
        check_age: bool = True,
    ) -> InstantResult:
        self.asked.append(promql)
        answer = self.instant.get(promql, NoData(NoDataReason.EMPTY, promql))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def query_range(
        self,
        promql: str,
        *,
        start_s: float,
        end_s: float,
        step_s: float,
        lookback_delta_s: float | Literal["default"] | None = "default",
        grouped: bool = False,
    ) -> RangeResult:
        self.range_asked.append((promql, start_s, end_s, step_s))
        self.grouped_asked.append(grouped)
        return self.ranges.get(promql, NoData(NoDataReason.EMPTY, promql))


def test_default_rack_power_query_sums_node_power_over_rack_nodes() -> None:
    query = build_rack_query(DEFAULT_RACK_POWER_QUERY, RackNodes("r1", ("n2", "n1")))
    assert query == (
        'sum(kepler_node_cpu_watts{zone="package",node_name=~"n1|n2"})'
        ' + (sum(kepler_node_gpu_watts{node_name=~"n1|n2"}) or vector(0))'
    )


def test_rack_queries_follow_the_power_measurement_spec_over_the_site() -> None:
    site = RackSignalQueries(rack_label="row", airflow_query="max by (row) (cfm)")
    spec = PowerMeasurementConfig(
        rack_power_query="sum by (row) (pdu_output_watts)",
        rack_temperature_query="max by (row) (inlet_celsius)",
    )
    queries = rack_queries_for(spec, site)
    assert queries.power_query == "sum by (row) (pdu_output_watts)"
    assert queries.inlet_temperature_query == "max by (row) (inlet_celsius)"
    assert (queries.rack_label, queries.airflow_query) == ("row", "max by (row) (cfm)")
    default = rack_queries_for(PowerMeasurementConfig())
    assert default.power_query == DEFAULT_RACK_POWER_QUERY
    assert default.inlet_temperature_query is None
    with pytest.raises(promql.QueryTemplateError, match=r"not \$pods"):
        rack_queries_for(PowerMeasurementConfig(rack_power_query='x{p=~"$pods"}'))


def vec(*pairs: tuple[str, float]) -> Vector:
    return Vector(tuple(Sample({"rack": r}, v, 1000.0) for r, v in pairs))


async def test_split_queries_match_samples_to_racks_and_missing_is_none() -> None:
    queries = RackSignalQueries(
        power_query="sum by (rack) (rack_watts)",
        inlet_temperature_query="max by (rack) (rack_inlet_celsius)",
        exhaust_temperature_query="max by (rack) (rack_exhaust_celsius)",
        cooling_power_query="crac_watts",
        history_window_s=0,
    )
    table = Table(
        {
            "sum by (rack) (rack_watts)": vec(("rack-a", 12_000.0), ("rack-b", 8_000.0)),
            "max by (rack) (rack_inlet_celsius)": vec(("rack-a", 26.0)),
            "max by (rack) (rack_exhaust_celsius)": PrometheusUnreachableError("down"),
        }
    )
    got = await PrometheusRackSignalSource(table, queries).read_racks(RACKS)
    a, b = got["rack-a"], got["rack-b"]
    assert (a.watts, a.inlet_c, a.exhaust_c, a.airflow_m3_per_s) == (12_000.0, 26.0, None, None)
    assert (b.watts, b.inlet_c) == (8_000.0, None)
    assert any(p.startswith("inlet_c:") for p in b.problems)
    assert any("exhaust_c" in p and "down" in p for p in a.problems)
    assert any("cooling_watts" in p and "no series" in p for p in a.problems)
    assert not any(p.startswith("airflow") for p in a.problems)  # not configured: no problem


async def test_per_rack_templates_run_once_per_rack_with_escaped_nodes() -> None:
    queries = RackSignalQueries(
        power_query='sum(node_watts{node=~"$nodes"})',
        inlet_temperature_query='rack_inlet{rack="$rack"}',
        history_window_s=0,
    )
    table = Table(
        {
            'sum(node_watts{node=~"a-0|a-1"})': vec(("x", 5000.0)),
            'sum(node_watts{node=~"b-0"})': vec(("x", 7000.0)),
            'rack_inlet{rack="rack-a"}': vec(("x", 21.0)),
            'rack_inlet{rack="rack-b"}': Vector(
                (Sample({"i": "1"}, 1.0, 0.0), Sample({"i": "2"}, 2.0, 0.0))
            ),
        }
    )
    got = await PrometheusRackSignalSource(table, queries).read_racks(RACKS)
    assert got["rack-a"].watts == 5000.0
    assert got["rack-b"].watts == 7000.0
    assert got["rack-a"].inlet_c == 21.0
    assert got["rack-b"].inlet_c is None
    assert "one series per rack" in got["rack-b"].problems[0]


async def test_duplicate_series_for_a_rack_are_refused() -> None:
    table = Table({"q": vec(("rack-a", 1.0), ("rack-a", 2.0))})
    got = await PrometheusRackSignalSource(
        table, RackSignalQueries(power_query="q", history_window_s=0)
    ).read_racks(RACKS)
    assert got["rack-a"].watts is None
    assert "several series" in got["rack-a"].problems[0]


async def test_history_is_put_on_a_fixed_grid_with_nan_gaps() -> None:
    queries = RackSignalQueries(power_query="q", history_window_s=300, history_step_s=60)
    # The grid ends at the last whole step before now (1020 for 1030) and spans 300 s.
    series = Series({"rack": "rack-a"}, ((720.0, 1.0), (900.0, 3.0), (1019.0, 6.0)))
    table = Table({"q": vec(("rack-a", 6.0))}, {"q": Matrix((series,))})
    source = PrometheusRackSignalSource(table, queries, clock=lambda: 1030.0)
    got = await source.read_racks(RACKS)
    hist = got["rack-a"].power_history_w
    assert len(hist) == 6
    assert hist[0] == 1.0
    assert hist[3] == 3.0
    assert hist[5] == 6.0
    assert math.isnan(hist[1])
    assert got["rack-b"].power_history_w == ()
    assert table.range_asked == [("q", 720.0, 1020.0, 60.0)]


async def test_service_series_sums_the_workloads_pods_from_one_grouped_history() -> None:
    """Issue 15: one range query per workload per reconcile was 167 a second with 5,000
    configs. Every config now reads the preset's grouped history (one per step for all pods)
    and sums its own pods; the GPU series adds where Kepler exports it."""
    grouped = build_grouped_power_queries(PowerQueryConfig())
    assert grouped is not None
    assert grouped.gpu_watts is not None

    def pod(namespace: str, name: str, *points: tuple[float, float]) -> Series:
        return Series({"pod_namespace": namespace, "pod_name": name}, points)

    cpu = Matrix(
        series=(
            pod("llm", "p-1", (960.0, 100.0), (1020.0, 110.0)),
            pod("llm", "p-2", (960.0, 50.0)),
            pod("other", "p-1", (960.0, 999.0), (1020.0, 999.0)),
        )
    )
    gpu = Matrix(series=(pod("llm", "p-2", (1020.0, 300.0)),))
    table = Table({}, {grouped.watts.promql: cpu, grouped.gpu_watts.promql: gpu})
    queries = RackSignalQueries(history_window_s=120, history_step_s=60)
    source = PrometheusRackSignalSource(table, queries, clock=lambda: 1080.0)
    assert await source.service_power_series("llm", ()) == ()
    series = await source.service_power_series("llm", ("p-1", "p-2"))
    assert series[:2] == (150.0, 410.0)
    assert math.isnan(series[2])  # no CPU series at 1080: a gap, never 0
    assert {asked for asked, *_ in table.range_asked} == {
        grouped.watts.promql,
        grouped.gpu_watts.promql,
    }
    assert all(table.grouped_asked)
    assert await source.service_power_series("llm", ("p-9",)) == ()


async def test_implausible_rack_signals_are_not_usable_and_say_why() -> None:
    queries = RackSignalQueries(
        power_query="sum by (rack) (rack_watts)",
        inlet_temperature_query="max by (rack) (rack_inlet_celsius)",
        airflow_query="sum by (rack) (rack_airflow)",
        supply_temperature_query="max by (rack) (supply_celsius)",
        history_window_s=120,
        history_step_s=60,
    )
    history = Series({"rack": "rack-a"}, ((960.0, 5_000.0), (1020.0, 5e12)))
    table = Table(
        {
            "sum by (rack) (rack_watts)": vec(("rack-a", -5.0), ("rack-b", 150_000.0)),
            "max by (rack) (rack_inlet_celsius)": vec(("rack-a", 24.0), ("rack-b", 150.0)),
            "sum by (rack) (rack_airflow)": vec(("rack-a", 1e9), ("rack-b", 2.0)),
            "max by (rack) (supply_celsius)": vec(("rack-a", -273.0)),
        },
        {"sum by (rack) (rack_watts)": Matrix((history,))},
    )
    source = PrometheusRackSignalSource(table, queries, clock=lambda: 1030.0)
    got = await source.read_racks(RACKS)
    a, b = got["rack-a"], got["rack-b"]
    assert (a.watts, a.inlet_c, a.airflow_m3_per_s, a.supply_c) == (None, 24.0, None, None)
    assert (b.watts, b.inlet_c, b.airflow_m3_per_s) == (None, None, 2.0)
    assert "watts: implausible value: -5 W is outside the plausible range" in a.problems[0]
    assert any("1 node(s) x 100000 W per server" in p for p in b.problems)
    assert any("150 °C" in p for p in b.problems)
    assert a.power_history_w[1] == 5_000.0
    assert math.isnan(a.power_history_w[2])  # 5e12 W is no history point


def test_queries_refuse_target_placeholders() -> None:
    with pytest.raises(promql.QueryTemplateError, match=r"\$rack and \$nodes"):
        RackSignalQueries(airflow_query='x{pod=~"$pods"}')


async def test_static_source_serves_what_was_set() -> None:
    source = StaticRackSignalSource()
    source.set(RackSignals("rack-a", watts=1.0, inlet_c=30.0))
    got = await source.read_racks(RACKS)
    assert got["rack-a"].inlet_c == 30.0
    assert got["rack-b"] == RackSignals("rack-b")
    source.set_service_series("llm", (1.0, 2.0, 3.0))
    assert await source.service_power_series("llm", ("p",)) == (1.0, 2.0, 3.0)
