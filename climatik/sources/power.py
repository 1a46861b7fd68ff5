"""Power and tokens of capped targets, measured through Prometheus (`PrometheusPowerSource`).

The queries come from `climatik.sources.power_queries`, the outcomes are those of
`climatik.sources.power_readings`; this module asks and judges:

- Grouped reads: each grouped query is asked once for all targets, through the shared read layer
  (`climatik.sources.prometheus_pool`), which keeps an answer for a few seconds; each target's
  value is the sum over its own pods' samples. The semantics are those of the per-target
  queries: no CPU series for any of a target's pods is `NoData(Empty)`, absent GPU series add
  0 W, a NaN sample of one of its pods makes it `NoData(NaN)`, pods without series are left out
  of the sum. A config only ever reads the samples of its own targets' pods, in its own
  namespace. An answer asked before a new pod's first samples could arrive is asked again.
- Freshness: a reading whose newest raw sample is older than the maximum age is
  `NoData(Stale)`; one stamped in the future beyond the accepted skew is `NoData(Implausible)`.
- Plausibility: every reading is screened against `climatik.sources.plausibility` (watts per
  pod, node, rack; tokens per pod).

`PowerSource` is the Protocol reconcilers use; `PrometheusPowerSource` implements it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

from climatik.domain.config import MeasurementPreset
from climatik.sources import promql
from climatik.sources.plausibility import PlausibilityLimits
from climatik.sources.power_queries import (
    GroupedQuery,
    PowerQueryConfig,
    TargetPods,
    TokensQueryConfig,
    build_grouped_demand_queries,
    build_grouped_power_queries,
    build_grouped_tokens_query,
    build_power_query,
    build_tokens_query,
)
from climatik.sources.power_readings import (
    GpuCoverage,
    Outcome,
    Reading,
    TargetMeasurement,
    gpu_coverage,
    screen,
)
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

NEW_POD_GRACE_S: Final = 60.0
"""How long after a pod is created its first samples may still be on their way to Prometheus
(exporter sampling plus a scrape interval of up to 30 s, twice over)."""
MIN_REASK_S: Final = 1.0
"""A shared answer is asked again for new pods at most this often."""


class PowerSource(Protocol):
    """What power capping needs from a power backend (`PrometheusPowerSource` here)."""

    async def measure_targets(
        self, targets: Sequence[TargetPods]
    ) -> Mapping[str, TargetMeasurement]: ...

    async def measure_total(self, query: str, *, servers: int = 1) -> Outcome:
        """The sum of every series a fixed query returns (the design document's
        `metrics[].query`: one number for the whole scope, which runs on `servers` nodes)."""
        ...


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


@runtime_checkable
class KeepsPodAnswers(Protocol):
    """A `PodQuerier` that can hand over a kept grouped answer without asking or waiting."""

    def kept_by_pod(
        self,
        promql: str,
        *,
        namespace_label: str,
        pod_label: str,
        lookback_delta_s: float | Literal["default"] | None = "default",
        asked_after_s: float | None = None,
    ) -> PodSamples | None: ...


_Grouped = PodSamples | PrometheusError
_Lookback = float | Literal["default"] | None


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
        self._asks_per_target = self._power.custom_query is not None or (
            tokens is not None and tokens.custom_query is not None
        )
        """A custom query is asked per target; otherwise grouped answers cover every target."""

    async def measure_targets(
        self, targets: Sequence[TargetPods]
    ) -> Mapping[str, TargetMeasurement]:
        needed = any(t.pods for t in targets)
        reads = await self._read_grouped(needed)
        asked_after_s = self._answer_predates_new_pods(targets, reads.watts)
        if asked_after_s is not None:
            reads = await self._read_grouped(needed, asked_after_s)
        if not self._asks_per_target:
            # Every reading comes from the grouped answers: nothing to wait for per target.
            return {t.key: await self._measure_target(t, reads) for t in targets}
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
        """Ask each grouped query once for all targets (nothing when no target has pods).

        Within a round nearly every asker finds all its answers kept by the shared read
        layer: it takes them as they are, without a task per query."""
        if not needed:
            return _GroupedReads()
        asks = self._grouped_asks()
        if isinstance(self._client, KeepsPodAnswers):
            kept = {
                field: self._client.kept_by_pod(
                    query.promql,
                    namespace_label=query.namespace_label,
                    pod_label=query.pod_label,
                    lookback_delta_s=lookback,
                    asked_after_s=asked_after_s,
                )
                for field, (query, lookback) in asks.items()
            }
            if all(answer is not None for answer in kept.values()):
                return _GroupedReads(**kept)
        async with asyncio.TaskGroup() as group:
            tasks = {
                field: group.create_task(self._by_pod(query, lookback, asked_after_s))
                for field, (query, lookback) in asks.items()
            }
        return _GroupedReads(**{field: task.result() for field, task in tasks.items()})

    def _grouped_asks(self) -> dict[str, tuple[GroupedQuery, _Lookback]]:
        """The grouped queries this source reads, by `_GroupedReads` field, with lookbacks."""
        asks: dict[str, tuple[GroupedQuery, _Lookback]] = {}
        power = self._grouped_power
        if power:
            max_age_s = self._client.settings.max_sample_age_s
            asks["watts"] = (power.watts, "default")
            if power.gpu_watts:
                asks["gpu_watts"] = (power.gpu_watts, "default")
            # Look back further than the maximum age, so an old sample is reported as stale
            # with its age instead of vanishing as "empty"; the value is a timestamp.
            asks["freshness"] = (
                power.freshness,
                None if max_age_s is None else max(300.0, 4 * max_age_s),
            )
        if self._grouped_tokens:
            asks["tokens"] = (self._grouped_tokens, "default")
        if self._grouped_demand:
            asks["waiting"] = (self._grouped_demand.waiting, "default")
            asks["finished"] = (self._grouped_demand.finished_per_s, "default")
        return asks

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
        watts: Outcome
        tokens: Outcome | None
        if self._asks_per_target:
            async with asyncio.TaskGroup() as group:
                watts_task = group.create_task(self._target_watts(target, reads))
                tokens_task = (
                    group.create_task(self._target_tokens(target, reads)) if self._tokens else None
                )
            watts, tokens = watts_task.result(), tokens_task.result() if tokens_task else None
        else:
            watts = await self._target_watts(target, reads)
            tokens = await self._target_tokens(target, reads) if self._tokens else None
        pods = len(target.pods)
        return TargetMeasurement(
            key=target.key,
            watts=screen(watts, self._limits.pod_watts(pods)),
            tokens_per_s=(
                screen(tokens, self._limits.pod_tokens_per_s(pods)) if tokens is not None else None
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
