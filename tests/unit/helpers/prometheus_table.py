"""Prometheus answers from a table, for the power source's tests: a querier answering instant
and grouped queries from a dict, per-pod answers, and the presets' grouped queries."""

from __future__ import annotations

from typing import Literal

from climatik.sources.power_queries import (
    PowerQueryConfig,
    TargetPods,
    TokensQueryConfig,
    build_grouped_demand_queries,
    build_grouped_power_queries,
    build_grouped_tokens_query,
)
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_results import (
    InstantResult,
    NoData,
    NoDataReason,
    PodSamples,
    Sample,
    Vector,
)


class TableQuerier:
    """Answers instant queries from a dict; a query not in the table returns an empty vector.
    Values that are exceptions are raised. Grouped queries (`query_by_pod`) are answered from
    the same table, their samples indexed by the asked labels; `asked` records every query."""

    def __init__(self, answers: dict[str, InstantResult | Exception], max_age_s: float = 60.0):
        self.answers = answers
        self.asked: list[str] = []
        self._settings = PrometheusSettings(max_sample_age_s=max_age_s)

    @property
    def settings(self) -> PrometheusSettings:
        return self._settings

    def _answer(self, promql: str) -> InstantResult:
        self.asked.append(promql)
        answer = self.answers.get(promql, NoData(NoDataReason.EMPTY, promql))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def query(
        self,
        promql: str,
        *,
        at_s: float | None = None,
        lookback_delta_s: float | Literal["default"] | None = "default",
        check_age: bool = True,
    ) -> InstantResult:
        return self._answer(promql)

    async def query_by_pod(
        self,
        promql: str,
        *,
        namespace_label: str,
        pod_label: str,
        lookback_delta_s: float | Literal["default"] | None = "default",
        asked_after_s: float | None = None,
    ) -> PodSamples:
        answer = self._answer(promql)
        by_pod: dict[tuple[str, str], tuple[Sample, ...]] = {}
        for sample in answer.samples if isinstance(answer, Vector) else ():
            key = (sample.labels[namespace_label], sample.labels[pod_label])
            by_pod[key] = (*by_pod.get(key, ()), sample)
        return PodSamples(query=promql, by_pod=by_pod)


def one(value: float, ts: float = 1000.0, **labels: str) -> Vector:
    return Vector(samples=(Sample(labels=labels, value=value, timestamp_s=ts),))


def per_pod(
    values: dict[str, float], *, ts: float = 1000.0, ns: str = "llm", labels: str = "pod"
) -> Vector:
    """A grouped answer: one sample per pod of namespace `ns` (labels of the Kepler preset by
    default, of the vLLM tokens query with labels="vllm")."""
    ns_label, pod_label = (
        ("namespace", "pod") if labels == "vllm" else ("pod_namespace", "pod_name")
    )
    return Vector(
        samples=tuple(
            Sample(labels={ns_label: ns, pod_label: pod}, value=v, timestamp_s=ts)
            for pod, v in values.items()
        )
    )


TARGET = TargetPods(key="llm/chat", namespace="llm", pods=("a", "b"))
POWER = PowerQueryConfig()
TOKENS = TokensQueryConfig(window="1m")


def _grouped_queries() -> tuple[str, str, str, str]:
    power = build_grouped_power_queries(POWER)
    tokens = build_grouped_tokens_query(TOKENS)
    if power is None or power.gpu_watts is None or tokens is None:
        raise AssertionError("presets have grouped queries")
    return power.watts.promql, power.gpu_watts.promql, power.freshness.promql, tokens.promql


CPU_Q, GPU_Q, FRESH_Q, TOKENS_Q = _grouped_queries()
_DEMAND = build_grouped_demand_queries(TOKENS)
assert _DEMAND is not None
WAITING_Q, FINISHED_Q = _DEMAND.waiting.promql, _DEMAND.finished_per_s.promql
