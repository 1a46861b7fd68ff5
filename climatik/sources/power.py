"""Power and tokens of capped targets, measured through Prometheus.

The controller knows each target's pods from its cache (namespace and pod names), so every query
here selects those pods exactly instead of joining on kube-state-metrics owner series. What is
built (pure, unit-tested) and what it guarantees:

- Power presets (`MeasurementPreset`):
  - `KeplerPod` (Kepler >= 0.10): `kepler_pod_cpu_watts` filtered to ONE zone (zones overlap:
    package includes core and uncore, so summing zones double counts), excluding terminated
    workloads, plus `kepler_pod_gpu_watts` when Kepler exports it (absent GPU series add 0 W,
    absent CPU series leave the whole result empty, i.e. no data). Kepler exports GPU series
    only with its GPU support on, so pods that request `nvidia.com/gpu` without GPU series (or
    DCGM series) are named in `TargetMeasurement.gpu_coverage`: still 0 W, never silently.
  - `Kepler07`: `sum(rate(kepler_container_joules_total{container_namespace, pod_name}[1m]))`.
  - `DCGM`: `sum(DCGM_FI_DEV_POWER_USAGE{exported_namespace, exported_pod})` (the exporter's own
    `pod`/`namespace` labels are renamed `exported_*` behind a ServiceMonitor).
  - `Custom`: the configured template (see `climatik.sources.promql` for placeholders).
- Tokens: `sum(rate(vllm:generation_tokens_total{namespace, pod}[5m]))`; vLLM itself labels only
  `model_name`, the pod and namespace labels come from the scrape configuration, so their names
  are configurable.
- Freshness: for presets, a companion query `max(timestamp(<raw selector>))` gives the time of
  the newest raw sample; a reading whose data is older than the maximum age is `NoData(Stale)`.
- Grouped reads: a preset (and the default tokens query) is asked ONCE for every pod of the
  server, grouped by its namespace and pod labels (`sum by (pod_namespace, pod_name) (...)`,
  `max by (...) (timestamp(...))`), and each target's value is the sum over its own pods'
  samples: one answer serves every target of every config asking the same server, which the
  shared read layer (`climatik.sources.prometheus_pool`) keeps for a few seconds. The
  semantics are those of the per-target queries: no CPU series for any of a target's pods is
  `NoData(Empty)`, absent GPU series add 0 W, a NaN sample of one of its pods makes it
  `NoData(NaN)`, pods without series are left out of the sum. A config only ever reads the
  samples of its own targets' pods, in its own namespace. `Custom` templates stay per target.
- Plausibility: a value no real system produces (negative, or over the bounds of
  `climatik.sources.plausibility`: watts per pod, node, rack; tokens per pod; inlet
  temperature) is `NoData(Implausible)` naming the value and the bound. No reading this module
  returns is negative, non-finite or out of bound.

`PowerSource` is the Protocol reconcilers use; `PrometheusPowerSource` implements it. Each
quantity comes back as a `Reading`, a `NoData` or a `PrometheusError` value, so one bad query
(a wrong custom token query, say) does not hide a good power reading.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from climatik.domain.config import MeasurementPreset, PowerMeasurementConfig
from climatik.sources import promql
from climatik.sources.plausibility import PlausibilityLimits, PlausibleRange
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_results import (
    MAX_FUTURE_SKEW_S,
    InstantResult,
    NoData,
    NoDataReason,
    PodSamples,
    PrometheusError,
    Sample,
    future_detail,
)

DEFAULT_KEPLER_ZONE: Final = "package"
DEFAULT_KEPLER07_WINDOW: Final = "1m"
DEFAULT_TOKENS_WINDOW: Final = "5m"
NEW_POD_GRACE_S: Final = 60.0
"""How long after a pod is created its first samples may still be on their way to Prometheus
(exporter sampling plus a scrape interval of up to 30 s, twice over)."""
MIN_REASK_S: Final = 1.0
"""A shared answer is asked again for new pods at most this often."""


# --------------------------------------------------------------------------------------------
# What is measured


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


# --------------------------------------------------------------------------------------------
# Query configuration and building (pure)


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


# --------------------------------------------------------------------------------------------
# Readings


@dataclass(frozen=True, slots=True)
class Reading:
    """A usable value. `measured_at_s` is the Unix time of the newest raw sample behind it when
    known (presets), else the evaluation time; `query` is None when nothing had to be asked
    (a target with no pods draws 0 W by definition)."""

    value: float
    measured_at_s: float
    query: str | None

    def age_s(self, now_s: float) -> float:
        return max(0.0, now_s - self.measured_at_s)


Outcome = Reading | NoData | PrometheusError


@dataclass(frozen=True, slots=True)
class TargetMeasurement:
    key: str
    watts: Outcome
    tokens_per_s: Outcome | None
    """None when tokens are not measured for this target."""
    gpu_coverage: GpuCoverage | None = None
    """Which GPU pods have GPU power series (None: no GPU pods, or the preset cannot say)."""
    waiting_requests: Outcome | None = None
    """Requests queued in its pods (None when not asked: a custom tokens query)."""
    finished_per_s: Outcome | None = None
    """Requests its pods finish per second (None when not asked)."""

    @property
    def tokens_per_request(self) -> float | None:
        """Generated tokens per finished request, when both rates are measured and nonzero."""
        tokens, finished = self.tokens_per_s_or_none, _value(self.finished_per_s)
        if tokens is None or finished is None or finished <= 0:
            return None
        return tokens / finished

    @property
    def waiting_requests_or_none(self) -> float | None:
        return _value(self.waiting_requests)

    @property
    def watts_or_none(self) -> float | None:
        return self.watts.value if isinstance(self.watts, Reading) else None

    @property
    def tokens_per_s_or_none(self) -> float | None:
        return self.tokens_per_s.value if isinstance(self.tokens_per_s, Reading) else None


def _value(outcome: Outcome | None) -> float | None:
    return outcome.value if isinstance(outcome, Reading) else None


@dataclass(frozen=True, slots=True)
class GpuCoverage:
    """What a preset's GPU power series say of a target's pods that request GPUs: which were
    judged, and which of those have no GPU series (their GPUs count 0 W, so a cap over them is
    a cap on the rest of their power only)."""

    judged: tuple[str, ...]
    """GPU pods the exporter reports at all (a pod not scraped yet is not judged)."""
    unmeasured: tuple[str, ...]
    """Judged GPU pods without GPU power series."""
    series: str = ""
    """The selector that came back empty for `unmeasured`."""
    fix: str = ""
    """What makes the series appear, in words."""

    def message(self, target: str) -> str:
        shown = ", ".join(self.unmeasured[:5]) + (", ..." if len(self.unmeasured) > 5 else "")
        return (
            f"{target}: pod(s) {shown} request nvidia.com/gpu but {self.series} has no series "
            f"for them, so their GPU power counts 0 W; {self.fix}"
        )


KEPLER_GPU_FIX: Final = (
    "switch on Kepler's GPU support (Helm value experimental.gpu.enabled=true on Kepler's "
    "chart), or measure with powerMeasurement.preset: DCGM"
)
DCGM_GPU_FIX: Final = (
    "check that the DCGM exporter runs on their nodes with its Kubernetes pod mapping on, and "
    "that the scrape keeps its pod labels as exported_namespace/exported_pod"
)


def judges_gpu_power(config: PowerQueryConfig) -> bool:
    """Whether the preset has series of GPU power alone to judge GPU pods by: `KeplerPod` and
    `DCGM` do; `Kepler07` totals and custom queries do not."""
    return config.custom_query is None and config.preset in {
        MeasurementPreset.KEPLER_POD,
        MeasurementPreset.DCGM,
    }


def gpu_coverage(
    config: PowerQueryConfig,
    target: TargetPods,
    gpu_series: PodSamples | None,
    *,
    watched: PodSamples | None = None,
) -> GpuCoverage | None:
    """How `gpu_series` (the preset's answer of GPU power; None when the preset asks for none)
    covers the GPU pods of `target`; None when it has none or the preset cannot say. With
    `watched` (Kepler's CPU series) only the pods the exporter reports are judged: Kepler
    seeing a pod's CPU but not its GPUs is the mark of its GPU support being off."""
    if not target.gpu_pods or not judges_gpu_power(config):
        return None
    judged = tuple(
        p for p in target.gpu_pods if watched is None or (target.namespace, p) in watched.by_pod
    )
    seen = gpu_series.by_pod if gpu_series is not None else {}
    missing = tuple(p for p in judged if (target.namespace, p) not in seen)
    if not missing:
        return GpuCoverage(judged, ())
    # The metric in the target's namespace: the pods are named beside it.
    if config.preset is MeasurementPreset.KEPLER_POD:
        selector = promql.selector(
            "kepler_pod_gpu_watts", [promql.matcher("pod_namespace", target.namespace)]
        )
        return GpuCoverage(judged, missing, selector, KEPLER_GPU_FIX)
    selector = promql.selector(
        "DCGM_FI_DEV_POWER_USAGE", [promql.matcher(config.dcgm_namespace_label, target.namespace)]
    )
    return GpuCoverage(judged, missing, selector, DCGM_GPU_FIX)


def outcome_message(outcome: Outcome) -> str:
    """One line for a status condition or an Event."""
    if isinstance(outcome, Reading):
        return f"{outcome.value:g} at {outcome.measured_at_s:.0f}"
    return outcome.message


class PowerSource(Protocol):
    """What power capping needs from a power backend (`PrometheusPowerSource` here)."""

    async def measure_targets(
        self, targets: Sequence[TargetPods]
    ) -> Mapping[str, TargetMeasurement]: ...

    async def measure_total(self, query: str, *, servers: int = 1) -> Outcome:
        """The sum of every series a fixed query returns (the design document's
        `metrics[].query`: one number for the whole scope, which runs on `servers` nodes)."""
        ...


def power_query_config_for(measurement: PowerMeasurementConfig) -> PowerQueryConfig:
    """The power query a PowerCappingConfig's `powerMeasurement` asks for: `powerQuery`
    overrides any preset. Raises `QueryTemplateError` for a query that uses placeholders it
    cannot have, which the reconciler reports as a condition."""
    return PowerQueryConfig(preset=measurement.preset, custom_query=measurement.power_query)


# --------------------------------------------------------------------------------------------
# Prometheus implementation


def _single(result: InstantResult, query: str) -> Reading | NoData:
    """Reduce an aggregated query's result to one reading; several samples are summed only
    when they are disjoint series of the same quantity, which an aggregated query never
    produces, so more than one is treated as a query mistake."""
    if isinstance(result, NoData):
        return result
    if len(result.samples) != 1:
        # Label names only: the values are another tenant's data as often as the author's.
        names = sorted({name for sample in result.samples for name in sample.labels})
        raise PrometheusQueryShapeError(
            f"query {query!r} must return one series (wrap it in sum()), got "
            f"{len(result.samples)} with labels {', '.join(names) or '(none)'}",
            query=query,
        )
    if result.dropped:
        # Part of an aggregated answer is unusable: do not pretend the rest is the total.
        return NoData(NoDataReason.NAN, query, f"{result.dropped} series unusable")
    sample = result.samples[0]
    return Reading(value=sample.value, measured_at_s=sample.timestamp_s, query=query)


class PrometheusQueryShapeError(PrometheusError):
    """A configured query returned a shape the controller cannot use (several series)."""

    reason = "PrometheusQueryShape"


class QueryConfigError(PrometheusError):
    """A configured query template cannot be expanded for this target or rack."""

    reason = "InvalidQuery"


class InstantQuerier(Protocol):
    """The part of `PrometheusClient` this module uses (so tests can answer queries directly);
    `climatik.sources.prometheus_pool` offers the same, shared and kept for a few seconds."""

    @property
    def settings(self) -> PrometheusSettings: ...

    async def query(
        self,
        promql: str,
        *,
        at_s: float | None = None,
        lookback_delta_s: float | Literal["default"] | None = "default",
        check_age: bool = True,
    ) -> InstantResult: ...


class PodQuerier(InstantQuerier, Protocol):
    """An `InstantQuerier` that also answers grouped queries indexed by pod."""

    async def query_by_pod(
        self,
        promql: str,
        *,
        namespace_label: str,
        pod_label: str,
        lookback_delta_s: float | Literal["default"] | None = "default",
        asked_after_s: float | None = None,
    ) -> PodSamples: ...


_Grouped = PodSamples | PrometheusError


@dataclass(frozen=True, slots=True)
class _GroupedReads:
    """The grouped answers one `measure_targets` call works from (None: not asked)."""

    watts: _Grouped | None = None
    gpu_watts: _Grouped | None = None
    freshness: _Grouped | None = None
    tokens: _Grouped | None = None
    waiting: _Grouped | None = None
    finished: _Grouped | None = None


def _pods_phrase(target: TargetPods) -> str:
    shown = ", ".join(target.pods[:5]) + (", ..." if len(target.pods) > 5 else "")
    return f"pod(s) {shown} of namespace {target.namespace}"


def _sum_pods(
    grouped: PodSamples,
    target: TargetPods,
    *,
    now_s: float,
    max_age_s: float | None,
    absent_is_zero: bool = False,
) -> Reading | NoData:
    """A target's share of a grouped answer: the sum over its own pods' samples, judged as the
    per-target `sum(...)` would have been (any NaN of its pods is NaN; none at all is empty)."""
    samples = grouped.of(target.namespace, target.pods)
    where = f"for {_pods_phrase(target)}"
    if not samples:
        if absent_is_zero:
            return Reading(0.0, now_s, grouped.query)
        return NoData(NoDataReason.EMPTY, grouped.query, f"no series {where}")
    if any(math.isnan(s.value) for s in samples):
        return NoData(NoDataReason.NAN, grouped.query, where)
    if any(math.isinf(s.value) for s in samples):
        return NoData(NoDataReason.INFINITE, grouped.query, where)
    negative = min(s.value for s in samples)
    if negative < 0:
        # One pod's -500 W beside another's +600 W would sum to a plausible 100 W.
        return NoData(
            NoDataReason.IMPLAUSIBLE, grouped.query, f"a negative sample ({negative:g}) {where}"
        )
    measured_at_s = min(s.timestamp_s for s in samples)
    ahead_s = max(s.timestamp_s for s in samples) - now_s
    if ahead_s > MAX_FUTURE_SKEW_S:
        return NoData(NoDataReason.IMPLAUSIBLE, grouped.query, f"{future_detail(ahead_s)}, {where}")
    if max_age_s is not None and now_s - measured_at_s > max_age_s:
        return NoData(
            NoDataReason.STALE,
            grouped.query,
            f"newest sample is {now_s - measured_at_s:.0f} s old, maximum {max_age_s:g} s, "
            + where,
        )
    return Reading(sum(s.value for s in samples), measured_at_s, grouped.query)


def _newest(grouped: PodSamples, target: TargetPods) -> Reading | NoData:
    """The time of the newest raw sample of a target's pods (a freshness answer's values)."""
    times: list[Sample] = [
        s for s in grouped.of(target.namespace, target.pods) if math.isfinite(s.value)
    ]
    if not times:
        return NoData(NoDataReason.EMPTY, grouped.query)
    newest = max(times, key=lambda s: s.value)
    return Reading(newest.value, newest.timestamp_s, grouped.query)


def screen(outcome: Outcome, bounds: PlausibleRange) -> Outcome:
    """`outcome`, or `NoData(Implausible)` when it is a reading outside `bounds`."""
    if not isinstance(outcome, Reading):
        return outcome
    problem = bounds.problem(outcome.value)
    if problem is None:
        return outcome
    return NoData(NoDataReason.IMPLAUSIBLE, outcome.query or "", problem)


class PrometheusPowerSource:
    """`PowerSource` over a `PrometheusClient` or the shared read layer. Queries run
    concurrently, at most `max_concurrency` at a time, each under the client's timeout."""

    def __init__(
        self,
        client: PodQuerier,
        *,
        power: PowerQueryConfig | None = None,
        tokens: TokensQueryConfig | None = None,
        plausibility: PlausibilityLimits | None = None,
        max_concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._power = power if power is not None else PowerQueryConfig()
        self._tokens = tokens
        self._limits = plausibility if plausibility is not None else PlausibilityLimits()
        self._grouped_power = build_grouped_power_queries(self._power)
        self._grouped_tokens = build_grouped_tokens_query(tokens) if tokens is not None else None
        self._grouped_demand = build_grouped_demand_queries(tokens) if tokens is not None else None
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._clock = clock

    async def measure_targets(
        self, targets: Sequence[TargetPods]
    ) -> Mapping[str, TargetMeasurement]:
        needed = any(t.pods for t in targets)
        reads = await self._read_grouped(needed)
        asked_after_s = self._answer_predates_new_pods(targets, reads.watts)
        if asked_after_s is not None:
            reads = await self._read_grouped(needed, asked_after_s)
        async with asyncio.TaskGroup() as group:
            tasks = {
                t.key: group.create_task(self._measure_target(t, reads), name=f"measure-{t.key}")
                for t in targets
            }
        return {key: task.result() for key, task in tasks.items()}

    def _answer_predates_new_pods(
        self, targets: Sequence[TargetPods], watts: _Grouped | None
    ) -> float | None:
        """A bound to ask the grouped queries again under, when a shared answer lacks pods that
        are new enough for their first samples to have come since it was asked (a config
        created beside another config's answer would otherwise wait a whole interval for its
        first decision). At most one question a second: a pod Prometheus never hears of costs
        nothing once it is `NEW_POD_GRACE_S` old."""
        if not isinstance(watts, PodSamples):
            return None
        now_s = self._clock()
        if now_s - watts.asked_at_s < MIN_REASK_S:
            return None
        for target in targets:
            created_s = target.newest_pod_created_s
            if (
                created_s is not None
                and watts.asked_at_s < created_s + NEW_POD_GRACE_S
                and any((target.namespace, pod) not in watts.by_pod for pod in target.pods)
            ):
                return now_s - MIN_REASK_S
        return None

    async def _read_grouped(
        self, needed: bool, asked_after_s: float | None = None
    ) -> _GroupedReads:
        """Ask each grouped query once for all targets (nothing when no target has pods)."""
        if not needed:
            return _GroupedReads()
        power, tokens = self._grouped_power, self._grouped_tokens
        max_age_s = self._client.settings.max_sample_age_s
        # Look back further than the maximum age, so an old sample is reported as stale with
        # its age instead of vanishing as "empty"; the value is a timestamp, not a reading.
        freshness_lookback_s = None if max_age_s is None else max(300.0, 4 * max_age_s)
        async with asyncio.TaskGroup() as group:
            watts = (
                group.create_task(self._by_pod(power.watts, asked_after_s=asked_after_s))
                if power
                else None
            )
            gpu = (
                group.create_task(self._by_pod(power.gpu_watts, asked_after_s=asked_after_s))
                if power and power.gpu_watts
                else None
            )
            fresh = (
                group.create_task(
                    self._by_pod(power.freshness, freshness_lookback_s, asked_after_s)
                )
                if power
                else None
            )
            tok = (
                group.create_task(self._by_pod(tokens, asked_after_s=asked_after_s))
                if tokens
                else None
            )
            demand = self._grouped_demand
            waiting = (
                group.create_task(self._by_pod(demand.waiting, asked_after_s=asked_after_s))
                if demand
                else None
            )
            finished = (
                group.create_task(self._by_pod(demand.finished_per_s, asked_after_s=asked_after_s))
                if demand
                else None
            )
        return _GroupedReads(
            watts=watts.result() if watts else None,
            gpu_watts=gpu.result() if gpu else None,
            freshness=fresh.result() if fresh else None,
            tokens=tok.result() if tok else None,
            waiting=waiting.result() if waiting else None,
            finished=finished.result() if finished else None,
        )

    async def _by_pod(
        self,
        query: GroupedQuery,
        lookback_delta_s: float | Literal["default"] | None = "default",
        asked_after_s: float | None = None,
    ) -> _Grouped:
        try:
            async with self._semaphore:
                return await self._client.query_by_pod(
                    query.promql,
                    namespace_label=query.namespace_label,
                    pod_label=query.pod_label,
                    lookback_delta_s=lookback_delta_s,
                    asked_after_s=asked_after_s,
                )
        except PrometheusError as exc:
            return exc

    async def _measure_target(self, target: TargetPods, reads: _GroupedReads) -> TargetMeasurement:
        if not target.pods:
            now_s = self._clock()
            return TargetMeasurement(
                key=target.key,
                watts=Reading(value=0.0, measured_at_s=now_s, query=None),
                tokens_per_s=(
                    Reading(value=0.0, measured_at_s=now_s, query=None) if self._tokens else None
                ),
            )
        async with asyncio.TaskGroup() as group:
            watts_task = group.create_task(self._target_watts(target, reads))
            tokens_task = (
                group.create_task(self._target_tokens(target, reads)) if self._tokens else None
            )
        pods = len(target.pods)
        return TargetMeasurement(
            key=target.key,
            watts=screen(watts_task.result(), self._limits.pod_watts(pods)),
            tokens_per_s=(
                screen(tokens_task.result(), self._limits.pod_tokens_per_s(pods))
                if tokens_task
                else None
            ),
            gpu_coverage=self._gpu_coverage(target, reads),
            waiting_requests=self._demand_part(reads.waiting, target),
            finished_per_s=self._demand_part(reads.finished, target),
        )

    def _demand_part(self, read: _Grouped | None, target: TargetPods) -> Outcome | None:
        """A target's share of a demand answer (None when it was not asked)."""
        if read is None or isinstance(read, PrometheusError):
            return read
        return _sum_pods(
            read, target, now_s=self._clock(), max_age_s=self._client.settings.max_sample_age_s
        )

    def _gpu_coverage(self, target: TargetPods, reads: _GroupedReads) -> GpuCoverage | None:
        """How the GPU series cover `target`'s GPU pods; None also when an answer that would say
        failed (that failure is the reading's own problem), and while the target's newest pod
        may still be on its way to Prometheus (the CPU and GPU answers are asked apart, so one
        may hold a new pod's first scrape and the other not)."""
        if not isinstance(reads.watts, PodSamples):
            return None
        created_s = target.newest_pod_created_s
        if created_s is not None and self._clock() - created_s < NEW_POD_GRACE_S:
            return None
        if self._power.preset is not MeasurementPreset.KEPLER_POD:
            return gpu_coverage(self._power, target, reads.watts)
        if isinstance(reads.gpu_watts, PrometheusError):
            return None
        return gpu_coverage(self._power, target, reads.gpu_watts, watched=reads.watts)

    async def _target_watts(self, target: TargetPods, reads: _GroupedReads) -> Outcome:
        if self._power.custom_query is not None:
            try:
                query = build_power_query(self._power, target.namespace, target.pods)
            except promql.QueryTemplateError as exc:
                return QueryConfigError(str(exc))
            return await self._instant(query)
        now_s = self._clock()
        max_age_s = self._client.settings.max_sample_age_s
        # A failed companion query fails the reading, as it did when both were one query.
        for part in (reads.watts, reads.gpu_watts):
            if isinstance(part, PrometheusError):
                return part
        assert isinstance(reads.watts, PodSamples)
        watts = _sum_pods(reads.watts, target, now_s=now_s, max_age_s=max_age_s)
        if isinstance(watts, Reading) and isinstance(reads.gpu_watts, PodSamples):
            gpu = _sum_pods(
                reads.gpu_watts, target, now_s=now_s, max_age_s=max_age_s, absent_is_zero=True
            )
            if isinstance(gpu, NoData):
                return gpu
            watts = Reading(
                watts.value + gpu.value, min(watts.measured_at_s, gpu.measured_at_s), watts.query
            )
        freshness: Reading | NoData | PrometheusError = NoData(NoDataReason.EMPTY, "")
        if isinstance(reads.freshness, PodSamples):
            freshness = _newest(reads.freshness, target)
        return self._apply_freshness(watts, freshness)

    async def _target_tokens(self, target: TargetPods, reads: _GroupedReads) -> Outcome:
        assert self._tokens is not None
        if self._tokens.custom_query is not None:
            try:
                query = build_tokens_query(self._tokens, target.namespace, target.pods)
            except promql.QueryTemplateError as exc:
                return QueryConfigError(str(exc))
            return await self._instant(query)
        if isinstance(reads.tokens, PrometheusError):
            return reads.tokens
        assert isinstance(reads.tokens, PodSamples)
        return _sum_pods(
            reads.tokens,
            target,
            now_s=self._clock(),
            max_age_s=self._client.settings.max_sample_age_s,
        )

    async def measure_total(self, query: str, *, servers: int = 1) -> Outcome:
        try:
            async with self._semaphore:
                result = await self._client.query(query)
        except PrometheusError as exc:
            return exc
        if isinstance(result, NoData):
            return result
        if result.dropped:
            return NoData(NoDataReason.NAN, query, f"{result.dropped} series unusable")
        total = Reading(
            value=sum(s.value for s in result.samples),
            measured_at_s=min(s.timestamp_s for s in result.samples),
            query=query,
        )
        return screen(total, self._limits.server_watts(servers))

    async def _instant(self, query: str) -> Reading | NoData | PrometheusError:
        try:
            async with self._semaphore:
                result = await self._client.query(query)
            return _single(result, query)
        except PrometheusError as exc:
            return exc

    def _apply_freshness(
        self, watts: Reading | NoData, freshness: Reading | NoData | PrometheusError
    ) -> Reading | NoData:
        """Judge the age of the raw samples behind a reading.

        An empty answer whose raw series still exist further back was dropped by the lookback
        window: report it as stale with its age, which tells the user far more than "empty".
        """
        if not isinstance(freshness, Reading):
            # No sharper age is known; keep the answer as it is.
            return watts
        max_age_s = self._client.settings.max_sample_age_s
        age_s = self._clock() - freshness.value
        if -age_s > MAX_FUTURE_SKEW_S:
            return NoData(NoDataReason.IMPLAUSIBLE, watts.query or "", future_detail(-age_s))
        too_old = max_age_s is not None and age_s > max_age_s
        if isinstance(watts, NoData):
            if watts.reason is NoDataReason.EMPTY and too_old:
                return NoData(
                    NoDataReason.STALE,
                    watts.query,
                    f"newest power sample is {age_s:.0f} s old, maximum {max_age_s:g} s",
                )
            return watts
        if too_old:
            return NoData(
                NoDataReason.STALE,
                watts.query or "",
                f"newest power sample is {age_s:.0f} s old, maximum {max_age_s:g} s",
            )
        return Reading(watts.value, min(watts.measured_at_s, freshness.value), watts.query)
