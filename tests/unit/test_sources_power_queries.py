"""Power and tokens queries: the exact PromQL of each preset, per target and grouped, and the
query configuration a PowerCappingConfig asks for."""

from __future__ import annotations

import pytest

from climatik.domain.config import MeasurementPreset, PowerMeasurementConfig
from climatik.sources.power_queries import (
    GroupedPowerQueries,
    GroupedQuery,
    PowerQueryConfig,
    TokensQueryConfig,
    build_grouped_power_queries,
    build_grouped_tokens_query,
    build_power_freshness_query,
    build_power_query,
    build_tokens_query,
    power_query_config_for,
)
from climatik.sources.promql import QueryTemplateError
from tests.unit.helpers.prometheus_table import POWER, TOKENS_Q

PODS = ("vllm-7f9c-abcde", "vllm-7f9c.x")


def test_kepler_pod_preset_filters_one_zone_and_adds_gpu() -> None:
    query = build_power_query(PowerQueryConfig(), "llm", PODS)
    assert query == (
        'sum(kepler_pod_cpu_watts{pod_namespace="llm",pod_name=~"vllm-7f9c-abcde|vllm-7f9c\\\\.x",'
        'zone="package",state!="terminated"})'
        ' + (sum(kepler_pod_gpu_watts{pod_namespace="llm",'
        'pod_name=~"vllm-7f9c-abcde|vllm-7f9c\\\\.x",state!="terminated"}) or vector(0))'
    )


def test_kepler_pod_preset_without_gpu_and_other_zone() -> None:
    config = PowerQueryConfig(kepler_zone="psys", kepler_include_gpu=False)
    assert build_power_query(config, "llm", ["a"]) == (
        'sum(kepler_pod_cpu_watts{pod_namespace="llm",pod_name=~"a",zone="psys",'
        'state!="terminated"})'
    )


def test_kepler07_preset_rates_container_joules() -> None:
    config = PowerQueryConfig(preset=MeasurementPreset.KEPLER_07)
    assert build_power_query(config, "llm", ["a", "b"]) == (
        'sum(rate(kepler_container_joules_total{container_namespace="llm",pod_name=~"a|b"}[1m]))'
    )


def test_dcgm_preset_uses_exported_labels_by_default() -> None:
    config = PowerQueryConfig(preset=MeasurementPreset.DCGM)
    assert build_power_query(config, "llm", ["a"]) == (
        'sum(DCGM_FI_DEV_POWER_USAGE{exported_namespace="llm",exported_pod=~"a"})'
    )
    honored = PowerQueryConfig(
        preset=MeasurementPreset.DCGM, dcgm_namespace_label="namespace", dcgm_pod_label="pod"
    )
    assert build_power_query(honored, "llm", ["a"]) == (
        'sum(DCGM_FI_DEV_POWER_USAGE{namespace="llm",pod=~"a"})'
    )


@pytest.mark.parametrize(
    ("preset", "raw_metric"),
    [
        (MeasurementPreset.KEPLER_POD, "kepler_pod_cpu_watts"),
        (MeasurementPreset.KEPLER_07, "kepler_container_joules_total"),
        (MeasurementPreset.DCGM, "DCGM_FI_DEV_POWER_USAGE"),
    ],
)
def test_freshness_query_times_the_raw_series(preset: MeasurementPreset, raw_metric: str) -> None:
    query = build_power_freshness_query(PowerQueryConfig(preset=preset), "llm", ["a"])
    assert query is not None
    assert query.startswith(f"max(timestamp({raw_metric}{{")
    assert query.endswith("}))")


def test_custom_query_renders_placeholders_and_has_no_freshness_query() -> None:
    config = PowerQueryConfig(
        preset=MeasurementPreset.CUSTOM,
        custom_query='sum(my_pod_watts{ns="$namespace",pod=~"$pods"})',
    )
    assert build_power_query(config, "llm", ["b", "a"]) == (
        'sum(my_pod_watts{ns="llm",pod=~"a|b"})'
    )
    assert build_power_freshness_query(config, "llm", ["a"]) is None


def test_custom_preset_requires_a_query_and_known_placeholders() -> None:
    with pytest.raises(QueryTemplateError, match="needs a power query"):
        PowerQueryConfig(preset=MeasurementPreset.CUSTOM)
    with pytest.raises(QueryTemplateError, match=r"not \$rack"):
        PowerQueryConfig(custom_query='x{r="$rack"}')
    with pytest.raises(QueryTemplateError):
        PowerQueryConfig(kepler07_window="1 minute")
    with pytest.raises(QueryTemplateError):
        PowerQueryConfig(dcgm_pod_label="exported-pod")


def test_tokens_query_defaults_to_vllm_generation_counter() -> None:
    assert build_tokens_query(TokensQueryConfig(), "llm", ["a"]) == (
        'sum(rate(vllm:generation_tokens_total{namespace="llm",pod=~"a"}[5m]))'
    )
    custom_labels = TokensQueryConfig(
        namespace_label="kubernetes_namespace", pod_label="kubernetes_pod_name", window="2m"
    )
    assert build_tokens_query(custom_labels, "llm", ["a"]) == (
        'sum(rate(vllm:generation_tokens_total{kubernetes_namespace="llm",'
        'kubernetes_pod_name=~"a"}[2m]))'
    )


def test_hostile_namespace_cannot_inject() -> None:
    query = build_power_query(PowerQueryConfig(), 'x"} or vector(1) or x{a="', ["a"])
    assert '"} or vector(1)' not in query
    assert 'pod_namespace="x\\x22} or vector(1) or x{a=\\x22"' in query


def test_grouped_presets_ask_every_pod_once_by_namespace_and_pod() -> None:
    assert build_grouped_power_queries(POWER) == GroupedPowerQueries(
        watts=GroupedQuery(
            'sum by (pod_namespace, pod_name) (kepler_pod_cpu_watts{pod_namespace!="",'
            'pod_name!="",zone="package",state!="terminated"})',
            "pod_namespace",
            "pod_name",
        ),
        gpu_watts=GroupedQuery(
            'sum by (pod_namespace, pod_name) (kepler_pod_gpu_watts{pod_namespace!="",'
            'pod_name!="",state!="terminated"})',
            "pod_namespace",
            "pod_name",
        ),
        freshness=GroupedQuery(
            'max by (pod_namespace, pod_name) (timestamp(kepler_pod_cpu_watts{pod_namespace!="",'
            'pod_name!="",zone="package",state!="terminated"}))',
            "pod_namespace",
            "pod_name",
        ),
    )
    kepler07 = build_grouped_power_queries(
        PowerQueryConfig(preset=MeasurementPreset.KEPLER_07, kepler07_window="2m")
    )
    assert kepler07 is not None
    assert kepler07.watts.promql == (
        "sum by (container_namespace, pod_name) (rate(kepler_container_joules_total"
        '{container_namespace!="",pod_name!=""}[2m]))'
    )
    assert kepler07.gpu_watts is None
    dcgm = build_grouped_power_queries(PowerQueryConfig(preset=MeasurementPreset.DCGM))
    assert dcgm is not None
    assert dcgm.watts.promql == (
        "sum by (exported_namespace, exported_pod) "
        '(DCGM_FI_DEV_POWER_USAGE{exported_namespace!="",exported_pod!=""})'
    )
    assert dcgm.freshness.promql.startswith("max by (exported_namespace, exported_pod) (timestamp(")
    assert TOKENS_Q == (
        'sum by (namespace, pod) (rate(vllm:generation_tokens_total{namespace!="",pod!=""}[1m]))'
    )
    assert build_grouped_power_queries(PowerQueryConfig(custom_query='x{p=~"$pods"}')) is None
    assert build_grouped_tokens_query(TokensQueryConfig(custom_query='x{p=~"$pods"}')) is None


def test_power_query_config_follows_the_power_measurement_spec() -> None:
    power = power_query_config_for(PowerMeasurementConfig(preset=MeasurementPreset.DCGM))
    assert power.preset is MeasurementPreset.DCGM
    assert power.custom_query is None
    assert power_query_config_for(PowerMeasurementConfig()).preset is MeasurementPreset.KEPLER_POD
    with pytest.raises(QueryTemplateError):
        power_query_config_for(
            PowerMeasurementConfig(preset=MeasurementPreset.CUSTOM, power_query='x{r="$rack"}')
        )
