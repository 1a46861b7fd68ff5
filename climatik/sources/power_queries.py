"""PromQL for the power and tokens of capped targets: per preset, per target and grouped (pure).

The controller knows each target's pods from its cache (namespace and pod names), so every query
here selects those pods exactly instead of joining on kube-state-metrics owner series.

- Power presets (`MeasurementPreset`):
  - `KeplerPod` (Kepler >= 0.10): `kepler_pod_cpu_watts` filtered to ONE zone (zones overlap:
    package includes core and uncore, so summing zones double counts), excluding terminated
    workloads, plus `kepler_pod_gpu_watts` when Kepler exports it (absent GPU series add 0 W,
    absent CPU series leave the whole result empty, i.e. no data).
  - `Kepler07`: `sum(rate(kepler_container_joules_total{container_namespace, pod_name}[1m]))`.
  - `DCGM`: `sum(DCGM_FI_DEV_POWER_USAGE{exported_namespace, exported_pod})` (the exporter's own
    `pod`/`namespace` labels are renamed `exported_*` behind a ServiceMonitor).
  - `Custom`: the configured template (see `climatik.sources.promql` for placeholders).
- Tokens: `sum(rate(vllm:generation_tokens_total{namespace, pod}[5m]))`; vLLM itself labels only
  `model_name`, the pod and namespace labels come from the scrape configuration, so their names
  are configurable.
- Freshness: for presets, a companion query `max(timestamp(<raw selector>))` gives the time of
  the newest raw sample.
- Grouped queries: a preset (and the default tokens query) is asked ONCE for every pod of the
  server, grouped by its namespace and pod labels (`sum by (pod_namespace, pod_name) (...)`,
  `max by (...) (timestamp(...))`), so one answer serves every target of every config asking the
  same server. `Custom` templates stay per target.

Label values are escaped by `climatik.sources.promql`, so a hostile namespace or pod name cannot
change a query's meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from climatik.domain.config import MeasurementPreset, PowerMeasurementConfig
from climatik.sources import promql

DEFAULT_KEPLER_ZONE: Final = "package"
DEFAULT_KEPLER07_WINDOW: Final = "1m"
DEFAULT_TOKENS_WINDOW: Final = "5m"


@dataclass(frozen=True, slots=True)
class TargetPods:
    """A capped target and the pods that currently serve it (from the controller's cache)."""

    key: str
    """Stable id of the target (e.g. `namespace/scaledobject`), used to key results."""
    namespace: str
    pods: tuple[str, ...]
    newest_pod_created_s: float | None = None
    """When its youngest pod was created (wall clock), if known: a shared answer asked
    before that pod's first samples could reach Prometheus is asked again."""
    gpu_pods: tuple[str, ...] = ()
    """Those of `pods` that request GPUs: the preset must give GPU power series for them."""


@dataclass(frozen=True, slots=True)
class PowerQueryConfig:
    """How per-target watts are queried. Label names are configurable because scrape configs
    differ (DCGM behind a ServiceMonitor gives `exported_pod`; with `honorLabels` it is `pod`)."""

    preset: MeasurementPreset = MeasurementPreset.KEPLER_POD
    custom_query: str | None = None
    """Template for `Custom` (or an override for any preset), with `$namespace` and `$pods`."""
    kepler_zone: str = DEFAULT_KEPLER_ZONE
    kepler_include_gpu: bool = True
    kepler07_window: str = DEFAULT_KEPLER07_WINDOW
    dcgm_namespace_label: str = "exported_namespace"
    dcgm_pod_label: str = "exported_pod"

    def __post_init__(self) -> None:
        promql.check_duration(self.kepler07_window)
        promql.check_label_name(self.dcgm_namespace_label)
        promql.check_label_name(self.dcgm_pod_label)
        if self.custom_query is not None:
            unknown = promql.template_placeholders(self.custom_query) - {"namespace", "pods"}
            if unknown:
                names = ", ".join(f"${u}" for u in sorted(unknown))
                raise promql.QueryTemplateError(
                    f"a power query can use $namespace and $pods, not {names}"
                )
        elif self.preset is MeasurementPreset.CUSTOM:
            raise promql.QueryTemplateError("the Custom preset needs a power query")


@dataclass(frozen=True, slots=True)
class TokensQueryConfig:
    """How generated tokens per second are queried (vLLM counters by default)."""

    metric: str = "vllm:generation_tokens_total"
    namespace_label: str = "namespace"
    pod_label: str = "pod"
    window: str = DEFAULT_TOKENS_WINDOW
    custom_query: str | None = None
    waiting_metric: str = "vllm:num_requests_waiting"
    """Requests queued in each pod (vLLM's gauge): the backlog that tells a target's demand
    beyond what it serves."""
    finished_metric: str = "vllm:e2e_request_latency_seconds_count"
    """Requests finished (vLLM's end-to-end latency histogram count): tokens per request is
    generated tokens over finished requests."""

    def __post_init__(self) -> None:
        promql.check_metric_name(self.metric)
        promql.check_metric_name(self.waiting_metric)
        promql.check_metric_name(self.finished_metric)
        promql.check_label_name(self.namespace_label)
        promql.check_label_name(self.pod_label)
        promql.check_duration(self.window)
        if self.custom_query is not None:
            promql.template_placeholders(self.custom_query)


@dataclass(frozen=True, slots=True)
class TargetQueries:
    """The PromQL for one target: watts, the newest-sample time of its raw power series (None
    for custom queries), and tokens per second (None when tokens are not measured)."""

    watts: str
    watts_freshness: str | None
    tokens_per_s: str | None


def _kepler_pod_selectors(
    config: PowerQueryConfig, namespace: str, pods: Sequence[str]
) -> tuple[str, str]:
    common = [promql.matcher("pod_namespace", namespace), promql.regex_matcher("pod_name", pods)]
    # `!=` also matches series without a state label (older 0.10.x builds).
    running = 'state!="terminated"'
    cpu = promql.selector(
        "kepler_pod_cpu_watts", [*common, promql.matcher("zone", config.kepler_zone), running]
    )
    gpu = promql.selector("kepler_pod_gpu_watts", [*common, running])
    return cpu, gpu


def build_power_query(config: PowerQueryConfig, namespace: str, pods: Sequence[str]) -> str:
    """PromQL for the total watts of `pods` in `namespace` (one sample, or empty)."""
    if config.custom_query is not None:
        return promql.render_template(config.custom_query, namespace=namespace, pods=pods)
    match config.preset:
        case MeasurementPreset.KEPLER_POD:
            cpu, gpu = _kepler_pod_selectors(config, namespace, pods)
            if not config.kepler_include_gpu:
                return f"sum({cpu})"
            # GPU series exist only where Kepler's experimental GPU support is on: no GPU series
            # is 0 W of GPU, but no CPU series must stay "no data", so only the GPU side is
            # defaulted.
            return f"sum({cpu}) + (sum({gpu}) or vector(0))"
        case MeasurementPreset.KEPLER_07:
            return f"sum(rate({_kepler07_selector(namespace, pods)}[{config.kepler07_window}]))"
        case MeasurementPreset.DCGM:
            return f"sum({_dcgm_selector(config, namespace, pods)})"
        case MeasurementPreset.CUSTOM:
            raise promql.QueryTemplateError("the Custom preset needs a power query")


def _kepler07_selector(namespace: str, pods: Sequence[str]) -> str:
    return promql.selector(
        "kepler_container_joules_total",
        [promql.matcher("container_namespace", namespace), promql.regex_matcher("pod_name", pods)],
    )


def _dcgm_selector(config: PowerQueryConfig, namespace: str, pods: Sequence[str]) -> str:
    return promql.selector(
        "DCGM_FI_DEV_POWER_USAGE",
        [
            promql.matcher(config.dcgm_namespace_label, namespace),
            promql.regex_matcher(config.dcgm_pod_label, pods),
        ],
    )


def build_power_freshness_query(
    config: PowerQueryConfig, namespace: str, pods: Sequence[str]
) -> str | None:
    """PromQL for the Unix time of the newest raw power sample of `pods`, or None (custom)."""
    if config.custom_query is not None:
        return None
    match config.preset:
        case MeasurementPreset.KEPLER_POD:
            raw = _kepler_pod_selectors(config, namespace, pods)[0]
        case MeasurementPreset.KEPLER_07:
            raw = _kepler07_selector(namespace, pods)
        case MeasurementPreset.DCGM:
            raw = _dcgm_selector(config, namespace, pods)
        case MeasurementPreset.CUSTOM:
            return None
    return f"max(timestamp({raw}))"


def build_tokens_query(config: TokensQueryConfig, namespace: str, pods: Sequence[str]) -> str:
    """PromQL for generated tokens per second over `pods` in `namespace`."""
    if config.custom_query is not None:
        return promql.render_template(config.custom_query, namespace=namespace, pods=pods)
    raw = promql.selector(
        config.metric,
        [
            promql.matcher(config.namespace_label, namespace),
            promql.regex_matcher(config.pod_label, pods),
        ],
    )
    return f"sum(rate({raw}[{config.window}]))"


def build_target_queries(
    target: TargetPods, power: PowerQueryConfig, tokens: TokensQueryConfig | None
) -> TargetQueries:
    return TargetQueries(
        watts=build_power_query(power, target.namespace, target.pods),
        watts_freshness=build_power_freshness_query(power, target.namespace, target.pods),
        tokens_per_s=(
            build_tokens_query(tokens, target.namespace, target.pods) if tokens else None
        ),
    )


@dataclass(frozen=True, slots=True)
class GroupedQuery:
    """A query for every pod at once, and the labels its answer is grouped by."""

    promql: str
    namespace_label: str
    pod_label: str


@dataclass(frozen=True, slots=True)
class GroupedPowerQueries:
    """A preset's grouped queries: watts per pod, the GPU companion whose absent series add
    0 W (Kepler >= 0.10 with GPU), and the time of each pod's newest raw power sample."""

    watts: GroupedQuery
    gpu_watts: GroupedQuery | None
    freshness: GroupedQuery


def _grouped(
    aggregation: str, namespace_label: str, pod_label: str, expression: str
) -> GroupedQuery:
    return GroupedQuery(
        f"{aggregation} by ({namespace_label}, {pod_label}) ({expression})",
        namespace_label,
        pod_label,
    )


def _with_pod(metric: str, namespace_label: str, pod_label: str, *matchers: str) -> str:
    # Series without a pod belong to no target (idle GPUs under DCGM, system processes under
    # Kepler); leaving them out keeps the one answer for every pod small.
    return promql.selector(metric, [f'{namespace_label}!=""', f'{pod_label}!=""', *matchers])


def build_grouped_power_queries(config: PowerQueryConfig) -> GroupedPowerQueries | None:
    """The grouped form of a preset (None for a custom query, which stays per target)."""
    if config.custom_query is not None:
        return None
    running = 'state!="terminated"'
    match config.preset:
        case MeasurementPreset.KEPLER_POD:
            ns, pod = "pod_namespace", "pod_name"
            cpu = _with_pod(
                "kepler_pod_cpu_watts", ns, pod, promql.matcher("zone", config.kepler_zone), running
            )
            gpu = _with_pod("kepler_pod_gpu_watts", ns, pod, running)
            return GroupedPowerQueries(
                watts=_grouped("sum", ns, pod, cpu),
                gpu_watts=_grouped("sum", ns, pod, gpu) if config.kepler_include_gpu else None,
                freshness=_grouped("max", ns, pod, f"timestamp({cpu})"),
            )
        case MeasurementPreset.KEPLER_07:
            ns, pod = "container_namespace", "pod_name"
            raw = _with_pod("kepler_container_joules_total", ns, pod)
            return GroupedPowerQueries(
                watts=_grouped("sum", ns, pod, f"rate({raw}[{config.kepler07_window}])"),
                gpu_watts=None,
                freshness=_grouped("max", ns, pod, f"timestamp({raw})"),
            )
        case MeasurementPreset.DCGM:
            ns, pod = config.dcgm_namespace_label, config.dcgm_pod_label
            raw = _with_pod("DCGM_FI_DEV_POWER_USAGE", ns, pod)
            return GroupedPowerQueries(
                watts=_grouped("sum", ns, pod, raw),
                gpu_watts=None,
                freshness=_grouped("max", ns, pod, f"timestamp({raw})"),
            )
        case MeasurementPreset.CUSTOM:
            raise promql.QueryTemplateError("the Custom preset needs a power query")


@dataclass(frozen=True, slots=True)
class GroupedDemandQueries:
    """A target's demand beyond what it serves, for every pod at once: its queued requests and
    its finished requests per second (tokens per request = tokens per second over these)."""

    waiting: GroupedQuery
    finished_per_s: GroupedQuery


def build_grouped_demand_queries(config: TokensQueryConfig) -> GroupedDemandQueries | None:
    """vLLM's backlog and request rate of every pod (None for a custom tokens query: its
    metrics are not known to be vLLM's)."""
    if config.custom_query is not None:
        return None
    ns, pod = config.namespace_label, config.pod_label
    return GroupedDemandQueries(
        waiting=_grouped("sum", ns, pod, _with_pod(config.waiting_metric, ns, pod)),
        finished_per_s=_grouped(
            "sum",
            ns,
            pod,
            f"rate({_with_pod(config.finished_metric, ns, pod)}[{config.window}])",
        ),
    )


def build_grouped_tokens_query(config: TokensQueryConfig) -> GroupedQuery | None:
    """Tokens per second of every pod (None for a custom tokens query)."""
    if config.custom_query is not None:
        return None
    raw = _with_pod(config.metric, config.namespace_label, config.pod_label)
    return _grouped(
        "sum", config.namespace_label, config.pod_label, f"rate({raw}[{config.window}])"
    )


def power_query_config_for(measurement: PowerMeasurementConfig) -> PowerQueryConfig:
    """The power query a PowerCappingConfig's `powerMeasurement` asks for: `powerQuery`
    overrides any preset. Raises `QueryTemplateError` for a query that uses placeholders it
    cannot have, which the reconciler reports as a condition."""
    return PowerQueryConfig(preset=measurement.preset, custom_query=measurement.power_query)
