"""What a tokens-per-watt router knows of each endpoint, and what it decided (design §10.1.1).

An endpoint is one model server (a vLLM pod). Its readings come from Prometheus or the pod's own
`/metrics` and are seconds old; what the router itself sent since, it knows exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PickReason(enum.StrEnum):
    """Why an endpoint was chosen: the label of the router's pick counter."""

    EFFICIENT = "efficient"
    """The most tokens per joule among the endpoints whose batch has room."""
    AFFINITY = "affinity"
    """The session's own endpoint: it has room and is nearly as efficient as the best."""
    NO_DATA = "no_data"
    """No endpoint with fresh readings has room (or none has readings): the endpoint with the
    fewest of this router's requests open, of those whose readings are missing or stale."""
    ALL_BUSY = "all_busy"
    """Every endpoint queues: the one with the shortest estimated queue for its batch."""
    NO_ENDPOINT = "no_endpoint"
    """No healthy endpoint."""


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


@dataclass(frozen=True, slots=True)
class Pick:
    endpoint: str | None
    reason: PickReason
