"""What a tokens-per-watt router knows of each endpoint, and what it decided (design §10.1.1).

An endpoint is one model server (a vLLM pod). Its readings come from Prometheus or the pod's own
`/metrics` and are seconds old; what the router itself sent since, it knows exactly.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class PickReason(enum.StrEnum):
    """Why an endpoint was chosen: the label of the router's pick counter."""

    EFFICIENT = "efficient"
    """The most tokens per joule among the endpoints with room (batch and latency budgets)."""
    AFFINITY = "affinity"
    """The session's own endpoint: it has room and is nearly as efficient as the best."""
    NO_DATA = "no_data"
    """No endpoint with fresh readings has room (or none has readings): the endpoint with the
    fewest of this router's requests open, of those whose readings are missing or stale (or,
    with a time-per-token budget, that have no load curve yet)."""
    ALL_BUSY = "all_busy"
    """Every endpoint queues or is predicted past a latency budget: the one with the shortest
    estimated queue for its batch, then the shortest predicted time per output token."""
    NO_ENDPOINT = "no_endpoint"
    """No healthy endpoint."""


@dataclass(frozen=True, slots=True)
class LoadWindow:
    """An endpoint between two scrapes: what its counters gained over `seconds`.

    vLLM's `vllm:inter_token_latency_seconds` histogram observes, for every generated token after
    a request's first, the time since that request's previous token; so over a window its `_sum`
    gains the seconds its requests spent decoding (stalls included) and its `_count` the tokens
    they decoded. Their ratio is the mean time per output token, and `_sum` over the window's
    seconds the mean decoding batch: both measured, not inferred from gauges read at instants.
    """

    seconds: float
    decode_s: float
    """Gain of `vllm:inter_token_latency_seconds_sum` (`time_per_output_token` before vLLM 0.10)."""
    decode_tokens: float
    """Gain of `vllm:inter_token_latency_seconds_count`."""
    gpu_joules: float
    """Gain of its GPUs' energy counter (Kepler or DCGM)."""
    prefill_s: float = 0.0
    """Gain of `vllm:request_prefill_time_seconds_sum`."""
    prefills: float = 0.0
    """Gain of `vllm:request_prefill_time_seconds_count`."""

    @property
    def batch(self) -> float:
        """Mean requests decoding over the window."""
        return self.decode_s / self.seconds

    @property
    def tpot_s(self) -> float:
        """Mean time per output token over the window."""
        return self.decode_s / self.decode_tokens

    @property
    def watts(self) -> float:
        return self.gpu_joules / self.seconds


@dataclass(frozen=True, slots=True)
class LoadCounters:
    """An endpoint's cumulative counters as read at `t` (seconds, any monotonic clock): two reads
    of them make a `LoadWindow`."""

    t: float
    decode_s: float
    """`vllm:inter_token_latency_seconds_sum`."""
    decode_tokens: float
    """`vllm:inter_token_latency_seconds_count`."""
    gpu_joules: float
    """Its GPUs' energy counter (Kepler `_joules_total`, or DCGM's millijoules over 1000)."""
    prefill_s: float = 0.0
    """`vllm:request_prefill_time_seconds_sum`."""
    prefills: float = 0.0
    """`vllm:request_prefill_time_seconds_count`."""


@dataclass(frozen=True, slots=True)
class LoadCurve:
    """How an endpoint's GPU draw and time per output token grow with its decoding batch,
    fitted from its own windows with tokens (`policies.load_curve`): a property of the
    endpoint, not of its current batch, so an idle endpoint keeps the curve it showed busy.

    Decode is memory bound: a step reads the weights once for the whole batch, so time per
    output token grows slowly with the batch and the GPU's draw even more slowly, and tokens
    per joule (batch over time per token over watts) rise as the batch fills.
    """

    watts: float
    """GPU draw while decoding, extrapolated to an empty batch."""
    watts_per_request: float
    tpot_s: float
    """Time per output token, extrapolated to an empty batch."""
    tpot_s_per_request: float
    batch_seen: float = math.inf
    """The largest mean batch among the windows it was fitted from."""
    prefill_s: float | None = None
    """Mean seconds of one of its prefills (None: none seen)."""

    def watts_at(self, batch: float) -> float:
        return self.watts + self.watts_per_request * batch

    def tpot_s_at(self, batch: float) -> float:
        """On the line up to the largest batch seen; beyond it, at least in proportion to the
        batch (the most pessimistic physics: a fuller batch makes no more tokens per second),
        since a line fitted near one batch says little about the slope beyond it."""
        on_line = self.tpot_s + self.tpot_s_per_request * batch
        seen = max(self.batch_seen, 1.0)  # one request alone is the line's own intercept
        if batch <= seen:
            return on_line
        return max(on_line, (self.tpot_s + self.tpot_s_per_request * seen) * batch / seen)

    def tokens_per_joule_at(self, batch: float) -> float:
        """Tokens per GPU joule while decoding `batch` requests."""
        joules_per_token = self.tpot_s_at(batch) * self.watts_at(batch) / batch
        return 1.0 / joules_per_token if joules_per_token > 0 else 0.0


@dataclass(frozen=True, slots=True)
class EndpointReading:
    """One endpoint as the router sees it when a request arrives."""

    name: str
    healthy: bool = True
    """Ready in its EndpointSlice and answering; an unhealthy endpoint is never picked."""
    tokens_per_joule: float | None = None
    """Generated tokens over the joules of its GPUs (vLLM counters over Kepler/DCGM)."""
    running: float | None = None
    """`vllm:num_requests_running` when read."""
    waiting: float | None = None
    """`vllm:num_requests_waiting` when read: vLLM queues only what its batch cannot admit."""
    kv_cache_usage: float | None = None
    """`vllm:kv_cache_usage_perc` when read (1 is full)."""
    age_s: float | None = None
    """How old the readings are."""
    added_since_reading: int = 0
    """This router's open requests to it now less those open when it was read (requests sent
    since, less those finished since): what the readings do not show yet."""
    open_requests: int = 0
    """This router's requests open to it now."""
    curve: LoadCurve | None = None
    """Its draw and time per output token against its batch, learned from its windows with
    tokens: when known, the picker judges its efficiency at the batch a request would join
    (not the last window's, which reads 0 while it idles) and its room by the latency budget."""
    sent_recently: int = 0
    """This router's requests sent to it within the last `RoutingSettings.ttft_budget_s`."""


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    max_reading_age_s: float = 15.0
    """Readings older than this are stale: the endpoint's efficiency and load are unknown."""
    kv_cache_limit: float = 0.9
    """An endpoint whose KV cache would pass this share has no room (vLLM would preempt)."""
    max_batch: int = 256
    """The most requests one endpoint runs at once (vLLM's `--max-num-seqs` default)."""
    affinity_tolerance: float = 0.1
    """With a session key, its endpoint is kept while within this share of the best efficiency."""
    tpot_budget_s: float | None = None
    """An endpoint whose learned curve predicts a longer time per output token than this at its
    load plus one request has no room, and one without a curve is judged only as a fallback
    (None: batch slots only)."""
    ttft_budget_s: float | None = None
    """An endpoint whose prefills of this router's requests sent within the last this many
    seconds, and of one more, would take longer than this has no room: its prefill queue would
    hold the next request past the budget (None: not judged)."""


@dataclass(frozen=True, slots=True)
class Pick:
    endpoint: str | None
    reason: PickReason
