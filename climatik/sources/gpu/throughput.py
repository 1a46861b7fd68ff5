"""Tokens per second and token latency of the vLLM replicas on a node, from their /metrics.

Two scrapes `seconds` apart: the rise of `vllm:generation_tokens_total` over the elapsed time is
the throughput, and the rise of the `vllm:inter_token_latency_seconds` histogram's buckets gives
the window's p99 time between tokens (older vLLM names it `vllm:time_per_output_token_seconds`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

TOKENS_COUNTER = "vllm:generation_tokens_total"
LATENCY_HISTOGRAMS = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
MAX_METRICS_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ThroughputWindow:
    """What the replicas served during one measurement window."""

    tokens_per_s: float
    p99_token_latency_s: float | None


class ThroughputProbe(Protocol):
    """Measures token throughput over a window."""

    async def measure(self, seconds: float) -> ThroughputWindow: ...


@dataclass(frozen=True, slots=True)
class _Scrape:
    tokens: float
    buckets: dict[float, float]


def parse_vllm_metrics(text: str) -> tuple[float, dict[float, float]]:
    """Sum the token counter and the latency histogram's cumulative buckets over all series."""
    tokens = 0.0
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == TOKENS_COUNTER:
                tokens += sample.value
            elif any(sample.name == f"{h}_bucket" for h in LATENCY_HISTOGRAMS):
                buckets[float(sample.labels["le"])] += sample.value
    return tokens, dict(buckets)


def p99_from_bucket_deltas(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile of the window's observations."""
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not deltas:
        return None
    total = deltas[-1][1]  # the +Inf bucket counts every observation
    if total <= 0:
        return None
    for le, cumulative in deltas:
        if cumulative >= 0.99 * total:
            return le if math.isfinite(le) else None
    return None


class VllmMetricsProbe:
    """Scrapes the /metrics of the vLLM pods on this node."""

    def __init__(
        self, session: aiohttp.ClientSession, urls: Sequence[str], *, timeout_s: float = 5.0
    ) -> None:
        if not urls:
            msg = "the throughput probe needs at least one vLLM /metrics URL"
            raise ValueError(msg)
        self._session = session
        self._urls = list(urls)
        self._timeout_s = timeout_s

    async def _scrape_one(self, url: str) -> _Scrape:
        async with asyncio.timeout(self._timeout_s), self._session.get(url) as response:
            response.raise_for_status()
            body = await response.content.read(MAX_METRICS_BYTES)
        tokens, buckets = parse_vllm_metrics(body.decode())
        return _Scrape(tokens, buckets)

    async def _scrape(self) -> _Scrape:
        scrapes = await asyncio.gather(*(self._scrape_one(url) for url in self._urls))
        buckets: dict[float, float] = defaultdict(float)
        for scrape in scrapes:
            for le, count in scrape.buckets.items():
                buckets[le] += count
        return _Scrape(sum(s.tokens for s in scrapes), dict(buckets))

    async def measure(self, seconds: float) -> ThroughputWindow:
        start = time.monotonic()
        before = await self._scrape()
        await asyncio.sleep(seconds)
        after = await self._scrape()
        elapsed = time.monotonic() - start
        return ThroughputWindow(
            tokens_per_s=max(0.0, after.tokens - before.tokens) / elapsed,
            p99_token_latency_s=p99_from_bucket_deltas(before.buckets, after.buckets),
        )
