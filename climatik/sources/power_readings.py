"""What measuring a capped target comes back as: a `Reading`, a `NoData` or an error, per quantity.

Each quantity (watts, tokens per second, queued and finished requests) is its own `Outcome`, so
one bad query (a wrong custom token query, say) does not hide a good power reading. No reading is
negative, non-finite or out of the bounds of `climatik.sources.plausibility` (`screen` turns such
a value into `NoData(Implausible)` naming the value and the bound). Pods that request
`nvidia.com/gpu` without GPU power series under the preset are named in
`TargetMeasurement.gpu_coverage`: their GPUs count 0 W, but never silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from climatik.domain.config import MeasurementPreset
from climatik.sources import promql
from climatik.sources.plausibility import PlausibleRange
from climatik.sources.power_queries import PowerQueryConfig, TargetPods
from climatik.sources.prometheus_results import (
    NoData,
    NoDataReason,
    PodSamples,
    PrometheusError,
)


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
    def finished_per_s_or_none(self) -> float | None:
        return _value(self.finished_per_s)

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


def screen(outcome: Outcome, bounds: PlausibleRange) -> Outcome:
    """`outcome`, or `NoData(Implausible)` when it is a reading outside `bounds`."""
    if not isinstance(outcome, Reading):
        return outcome
    problem = bounds.problem(outcome.value)
    if problem is None:
        return outcome
    return NoData(NoDataReason.IMPLAUSIBLE, outcome.query or "", problem)
