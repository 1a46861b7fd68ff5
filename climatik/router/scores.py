"""Scores refreshed in the background, from Prometheus and from each pod's own `/metrics`.

Nothing here is on the request path: each source runs in its own loop, every read under a
deadline, and what it reads is recorded in the endpoint table with the time it was asked. A
source that is slow or dead only stops refreshing its part, which then ages past the picker's
`max_reading_age_s` and reads as stale (the pick falls back with reason `no_data`); it never
delays a request, nor the other source.

- `PrometheusScores`: per pod, generated tokens per second (`rate(vllm:generation_tokens_total
  [1m])`) over the pod's watts (Kepler or DCGM, the presets of `climatik.sources.power_queries`)
  is tokens per joule; and vLLM's `num_requests_running`, `num_requests_waiting`,
  `kv_cache_usage_perc`. Each asked once for all pods, grouped by namespace and pod.
- `PodMetricsScores`: the same three gauges scraped from each pod's own `/metrics` (fresher than
  Prometheus's scrape), and the counters of its load curve (`CounterTotals`): the `_sum` and
  `_count` of vLLM's `vllm:inter_token_latency_seconds` (or, before vLLM 0.10,
  `vllm:time_per_output_token_seconds`) and `vllm:request_prefill_time_seconds`, with a GPU
  energy counter where the pod's endpoint also exports one (DCGM's
  `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` in mJ, or Kepler's `kepler_pod_gpu_joules_total`,
  summed over GPUs); without an energy counter there is no curve from this source. Only the
  wanted lines are handed to prometheus_client's text parser, so a pod's large histograms
  (their `_bucket` lines) cost a line scan, not a parse.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp
import structlog
from prometheus_client.parser import text_string_to_metric_families

from climatik.router.metrics import RouterMetrics
from climatik.router.slices import Upstream
from climatik.router.table import CounterTotals, EndpointTable, Scores
from climatik.sources import promql
from climatik.sources.power_queries import (
    GroupedQuery,
    PowerQueryConfig,
    build_grouped_power_queries,
)
from climatik.sources.prometheus import PrometheusClient
from climatik.sources.prometheus_results import PodSamples

log = structlog.get_logger(__name__)

RUNNING: Final = "vllm:num_requests_running"
WAITING: Final = "vllm:num_requests_waiting"
KV_CACHE: Final = "vllm:kv_cache_usage_perc"
GENERATED: Final = "vllm:generation_tokens_total"
LOAD_GAUGES: Final = (RUNNING, WAITING, KV_CACHE)
DECODE_HISTOGRAM: Final = "vllm:inter_token_latency_seconds"
DECODE_HISTOGRAM_BEFORE_0_10: Final = "vllm:time_per_output_token_seconds"
"""The same histogram's name before vLLM 0.10; read only where the new one is absent."""
PREFILL: Final = "vllm:request_prefill_time_seconds"
DCGM_ENERGY_MJ: Final = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
KEPLER_GPU_JOULES: Final = "kepler_pod_gpu_joules_total"
_HISTOGRAMS: Final = (DECODE_HISTOGRAM, DECODE_HISTOGRAM_BEFORE_0_10, PREFILL)
COUNTER_SERIES: Final = (
    *(f"{histogram}{part}" for histogram in _HISTOGRAMS for part in ("_sum", "_count")),
    DCGM_ENERGY_MJ,
    KEPLER_GPU_JOULES,
)
_WANTED: Final = tuple(f"{name}{end}" for name in (*LOAD_GAUGES, *COUNTER_SERIES) for end in "{ ")


class ScoreSource(Protocol):
    name: str

    async def read(self, upstreams: Sequence[Upstream]) -> Mapping[str, Scores]:
        """Scores of those `upstreams` it could measure, by upstream name."""
        ...


@dataclass(frozen=True, slots=True)
class VllmLabels:
    """The labels the scrape configuration gives vLLM's series (vLLM itself sets only
    `model_name`)."""

    namespace: str = "namespace"
    pod: str = "pod"
    tokens_window: str = "1m"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _sum_of(answer: PodSamples | BaseException, namespace: str, pod: str) -> float | None:
    if isinstance(answer, BaseException):
        return None
    samples = answer.by_pod.get((namespace, pod))
    if not samples:
        return None
    return _finite(sum(s.value for s in samples))


class PrometheusScores:
    """Every pod's efficiency (and, `with_load`, its load) from one Prometheus, in six grouped
    queries at most. Prometheus's load is a scrape interval old: when the pods' own `/metrics`
    are read, leave it out, or its older figures would overwrite their fresher ones."""

    name = "prometheus"

    def __init__(
        self,
        client: PrometheusClient,
        namespace: str,
        power: PowerQueryConfig | None = None,
        labels: VllmLabels | None = None,
        *,
        with_load: bool = True,
    ) -> None:
        self._client = client
        labels = labels or VllmLabels()
        power_queries = build_grouped_power_queries(power or PowerQueryConfig())
        if power_queries is None:
            raise ValueError("the router needs a power preset, not a custom power query")
        scope = [promql.matcher(labels.namespace, namespace), f'{labels.pod}!=""']

        def grouped(aggregation: str, expression: str) -> GroupedQuery:
            return GroupedQuery(
                f"{aggregation} by ({labels.namespace}, {labels.pod}) ({expression})",
                labels.namespace,
                labels.pod,
            )

        self._load = (
            [
                grouped("sum", promql.selector(RUNNING, scope)),
                grouped("sum", promql.selector(WAITING, scope)),
                grouped("max", promql.selector(KV_CACHE, scope)),
            ]
            if with_load
            else []
        )
        generated = promql.selector(GENERATED, scope)
        self._tokens = grouped("sum", f"rate({generated}[{labels.tokens_window}])")
        self._watts = [power_queries.watts]
        if power_queries.gpu_watts is not None:
            self._watts.append(power_queries.gpu_watts)

    async def _ask(self, query: GroupedQuery) -> PodSamples:
        return await self._client.query_by_pod(
            query.promql, namespace_label=query.namespace_label, pod_label=query.pod_label
        )

    async def read(self, upstreams: Sequence[Upstream]) -> Mapping[str, Scores]:
        queries = [self._tokens, *self._watts, *self._load]
        answers = await asyncio.gather(*map(self._ask, queries), return_exceptions=True)
        failed = [a for a in answers if isinstance(a, BaseException)]
        if len(failed) == len(answers):
            raise failed[0]
        tokens = answers[0]
        watts = answers[1 : 1 + len(self._watts)]
        none: PodSamples | BaseException = LookupError("not asked")
        running, waiting, kv = answers[1 + len(self._watts) :] or (none, none, none)
        found: dict[str, Scores] = {}
        for upstream in upstreams:
            ns, pod = upstream.namespace, upstream.name
            tokens_per_s = _sum_of(tokens, ns, pod)
            watts_now = _sum_of(watts[0], ns, pod)
            if watts_now is not None and len(watts) > 1:  # absent GPU series add 0 W
                watts_now += _sum_of(watts[1], ns, pod) or 0.0
            efficiency = None
            if tokens_per_s is not None and tokens_per_s >= 0 and watts_now and watts_now > 0:
                efficiency = tokens_per_s / watts_now
            found[upstream.name] = Scores(
                tokens_per_joule=efficiency,
                running=_sum_of(running, ns, pod),
                waiting=_sum_of(waiting, ns, pod),
                kv_cache_usage=_sum_of(kv, ns, pod),
            )
        return found


def parse_load(text: str) -> Scores:
    """vLLM's three load gauges and the load curve's counters from a `/metrics` text (summed
    over models and GPUs; absent: None)."""
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(_WANTED))
    totals: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(wanted + "\n"):
            for sample in family.samples:
                if math.isfinite(sample.value):
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    except ValueError:
        return Scores()
    return Scores(
        running=totals.get(RUNNING),
        waiting=totals.get(WAITING),
        kv_cache_usage=totals.get(KV_CACHE),
        counters=_counters(totals),
    )


def _counters(totals: Mapping[str, float]) -> CounterTotals | None:
    """The curve's counters, when the decode histogram and an energy counter are both there."""
    decode = (
        DECODE_HISTOGRAM if f"{DECODE_HISTOGRAM}_count" in totals else DECODE_HISTOGRAM_BEFORE_0_10
    )
    decode_s, tokens = totals.get(f"{decode}_sum"), totals.get(f"{decode}_count")
    if DCGM_ENERGY_MJ in totals:
        joules: float | None = totals[DCGM_ENERGY_MJ] / 1000.0
    else:
        joules = totals.get(KEPLER_GPU_JOULES)
    if decode_s is None or tokens is None or joules is None:
        return None
    return CounterTotals(
        decode_s=decode_s,
        decode_tokens=tokens,
        gpu_joules=joules,
        prefill_s=totals.get(f"{PREFILL}_sum", 0.0),
        prefills=totals.get(f"{PREFILL}_count", 0.0),
    )


class PodMetricsScores:
    """Each pod's own `/metrics`, scraped concurrently under one deadline per pod."""

    name = "pods"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        path: str = "/metrics",
        port: int | None = None,
        timeout_s: float = 2.0,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._session = session
        self._path = path
        self._port = port
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_bytes = max_bytes

    async def _scrape(self, upstream: Upstream) -> Scores | None:
        target = upstream if self._port is None else _with_port(upstream, self._port)
        try:
            async with self._session.get(
                target.base_url + self._path, timeout=self._timeout, allow_redirects=False
            ) as response:
                if response.status != 200:
                    return None
                body = await response.content.read(self._max_bytes)
        except (aiohttp.ClientError, TimeoutError):
            return None
        return parse_load(body.decode("utf-8", "replace"))

    async def read(self, upstreams: Sequence[Upstream]) -> Mapping[str, Scores]:
        healthy = [u for u in upstreams if u.healthy]
        scraped = await asyncio.gather(*map(self._scrape, healthy))
        return {u.name: s for u, s in zip(healthy, scraped, strict=True) if s is not None}


def _with_port(upstream: Upstream, port: int) -> Upstream:
    return Upstream(upstream.name, upstream.namespace, upstream.host, port, upstream.healthy)


class ScoreRefresher:
    """One guarded loop per source: read, record, sleep; a failure or a deadline passed is
    counted and logged, and the loop goes on."""

    def __init__(
        self,
        table: EndpointTable,
        sources: Sequence[ScoreSource],
        metrics: RouterMetrics,
        *,
        interval_s: float = 5.0,
        timeout_s: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._sources = sources
        self._metrics = metrics
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._clock = clock

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for source in self._sources:
                group.create_task(self._loop(source), name=f"router-scores-{source.name}")

    async def _loop(self, source: ScoreSource) -> None:
        while True:
            await self.refresh(source)
            await asyncio.sleep(self._interval_s)

    async def refresh(self, source: ScoreSource) -> bool:
        """One read of `source` into the table; False when it failed or ran out of time."""
        asked_at = self._clock()
        try:
            async with asyncio.timeout(self._timeout_s):
                scores = await source.read(self._table.upstreams())
        except Exception as error:  # any failure only ages the readings
            self._metrics.refresh_failures.labels(source.name).inc()
            log.warning(
                "scores_refresh_failed", source=source.name, error=str(error) or repr(error)
            )
            return False
        for name, score in scores.items():
            self._table.record(name, score, read_at=asked_at, source=source.name)
        return True
