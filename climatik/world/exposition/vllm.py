"""vLLM's engine metrics: token counters, running and waiting requests, and the finished
requests as its end-to-end latency histogram counts them.

vLLM has no pod or namespace labels of its own; a real scrape config adds them, and this one
target serves many pods, so it serves them itself (scrape with `honor_labels: true`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Final

from climatik.world.counters import finite_or_zero
from climatik.world.exposition.text import Scrape, header
from climatik.world.readings import PodReadings

E2E_LATENCY_S: Final = 5.0
"""The end-to-end latency every finished request is said to take (only the count is read)."""
TOKENS_PER_S_PER_RUNNING_REQUEST: Final = 30.0
"""How many requests run when only a token rate was set: one per this many tokens/s."""


def engine_labels(pod: PodReadings) -> dict[str, str]:
    return {
        "model_name": pod.model_name,
        "engine": "0",
        "namespace": pod.namespace,
        "pod": pod.name,
    }


def running_requests(pod: PodReadings) -> float:
    if pod.running_requests is not None:
        return pod.running_requests
    return float(math.ceil(finite_or_zero(pod.tokens_per_s) / TOKENS_PER_S_PER_RUNNING_REQUEST))


def render_vllm(pods: list[PodReadings], scrape: Scrape) -> Iterator[str]:
    """`pods` sorted by key."""
    metrics: tuple[tuple[str, str, Callable[[PodReadings], float]], ...] = (
        ("vllm:generation_tokens_total", "counter", lambda p: p.tokens_total),
        ("vllm:prompt_tokens_total", "counter", lambda p: p.prompt_tokens_total),
        ("vllm:num_requests_running", "gauge", running_requests),
        ("vllm:num_requests_waiting", "gauge", lambda p: p.waiting_requests),
    )
    for metric, kind, value in metrics:
        yield from header(metric, kind, f"vLLM {metric}")
        for pod in pods:
            yield scrape.sample(metric, engine_labels(pod), value(pod), pod)
    # One bucket: the count is what is read.
    histogram = "vllm:e2e_request_latency_seconds"
    yield from header(histogram, "histogram", "Histogram of end to end request latency")
    for pod in pods:
        labels = engine_labels(pod)
        finished = pod.requests_total
        yield scrape.sample(f"{histogram}_bucket", {**labels, "le": "+Inf"}, finished, pod)
        yield scrape.sample(f"{histogram}_sum", labels, finished * E2E_LATENCY_S, pod)
        yield scrape.sample(f"{histogram}_count", labels, finished, pod)
