"""The router's own Prometheus metrics, in a registry of its own (served on its ops port).

`climatik_router_added_latency_seconds` is the router's cost on the time to first byte: from
the moment its handler starts (aiohttp has parsed the request line and headers) until the
upstream's status and headers have been written to the client, minus the time spent inside the
upstream call (from `ClientSession.request` being called until the upstream's response headers
arrived, which includes taking or opening a pooled connection). So it counts reading the
client's body, picking, building the upstream request and relaying the headers, and not the
model's own time to first token. An answer relayed whole (small, of known length: a
non-streaming completion) counts reading its body as upstream time and ends when the whole
answer is written. A retried request's failed first try counts as upstream time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from climatik.domain.routing import PickReason

ADDED_LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "climatik_router_requests_total",
            "Requests answered, by the HTTP status the client got (the upstream's, or the "
            "router's own 502/503 when no upstream answered).",
            ["code"],
            registry=self.registry,
        )
        self.picks = Counter(
            "climatik_router_picks_total",
            "Endpoint picks by reason (efficient, affinity, no_data, all_busy, no_endpoint).",
            ["reason"],
            registry=self.registry,
        )
        self.added_latency = Histogram(
            "climatik_router_added_latency_seconds",
            "Time to first byte added by the router: handler start to response headers "
            "relayed, less the upstream call's own time to response headers.",
            buckets=ADDED_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.retries = Counter(
            "climatik_router_retries_total",
            "Requests sent again to another endpoint because the first could not be reached.",
            registry=self.registry,
        )
        self.aborted_streams = Counter(
            "climatik_router_upstream_aborts_total",
            "Responses whose upstream failed after the headers were relayed (the client got "
            "an SSE error event, or an aborted body).",
            registry=self.registry,
        )
        self.endpoints = Gauge(
            "climatik_router_endpoints",
            "Endpoints discovered from the Service's EndpointSlices, by health.",
            ["healthy"],
            registry=self.registry,
        )
        self.refresh_failures = Counter(
            "climatik_router_score_refresh_failures_total",
            "Score refreshes that failed or ran out of time, by source (readings age meanwhile).",
            ["source"],
            registry=self.registry,
        )
        # Children made once: labels() takes a lock and a dict lookup per call.
        self._picks = {reason: self.picks.labels(reason.value) for reason in PickReason}
        self._codes: dict[int, Counter] = {}

    def picked(self, reason: PickReason) -> None:
        self._picks[reason].inc()

    def answered(self, status: int) -> None:
        counter = self._codes.get(status)
        if counter is None:
            counter = self._codes[status] = self.requests.labels(str(status))
        counter.inc()
