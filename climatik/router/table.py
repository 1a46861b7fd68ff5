"""The router's endpoint table: who may be sent to, what each was last measured at, and what
this router has open there now.

Discovery replaces the upstreams (`set_upstreams`), the background refresher records scores
(`record`: the counters it read go into the endpoint's `LoadWindows`, which refits its load
curve there, in the background), and the request path only counts (`opened`, `closed`: open
requests, and sends within the TTFT budget) and reads (`readings`): no await anywhere, so a
request never waits on discovery, on a measurement or on a fit. `readings` is the
seam the picker takes, the proxy's and the Envoy Endpoint Picker's alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from climatik.domain.routing import EndpointReading, LoadCounters, LoadCurve
from climatik.policies.load_curve import LoadWindows, RecentSends
from climatik.router.slices import Upstream


@dataclass(frozen=True, slots=True)
class CounterTotals:
    """An endpoint's cumulative counters as one source read them (`LoadCounters` less the time,
    which the table stamps): vLLM's inter-token latency and prefill-time histograms' `_sum` and
    `_count`, and its GPUs' energy in joules."""

    decode_s: float
    decode_tokens: float
    gpu_joules: float
    prefill_s: float = 0.0
    prefills: float = 0.0

    def at(self, t: float) -> LoadCounters:
        return LoadCounters(
            t, self.decode_s, self.decode_tokens, self.gpu_joules, self.prefill_s, self.prefills
        )


@dataclass(frozen=True, slots=True)
class Scores:
    """One endpoint's measurements, any of which may be missing (never zero for missing)."""

    tokens_per_joule: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    counters: CounterTotals | None = None
    """Read for the load curve; not merged (a window is two reads of one source)."""

    def merged(self, newer: Scores) -> Scores:
        """These scores with `newer`'s values where it has them."""
        return Scores(
            newer.tokens_per_joule if newer.tokens_per_joule is not None else self.tokens_per_joule,
            newer.running if newer.running is not None else self.running,
            newer.waiting if newer.waiting is not None else self.waiting,
            newer.kv_cache_usage if newer.kv_cache_usage is not None else self.kv_cache_usage,
        )


class _Entry:
    __slots__ = (
        "curve",
        "efficiency_at",
        "load_at",
        "load_windows",
        "open_at_reading",
        "open_requests",
        "scores",
        "sends",
        "upstream",
    )

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.open_requests = 0
        self.open_at_reading = 0
        self.scores = Scores()
        self.efficiency_at: float | None = None
        self.load_at: float | None = None
        self.load_windows: dict[str, LoadWindows] = {}
        """By source: a window is two reads of the same source's counters."""
        self.curve: LoadCurve | None = None
        """The newest curve fitted, from whichever source."""
        self.sends = RecentSends()

    def age_s(self, now: float) -> float | None:
        """How old the older of its two kinds of reading is: an efficiency that stopped coming
        (Prometheus down) goes stale even while the pod's own load keeps arriving."""
        stamps = [t for t in (self.efficiency_at, self.load_at) if t is not None]
        return max(now - min(stamps), 0.0) if stamps else None


class EndpointTable:
    """Upstreams by name with their scores and open-request counts. `clock` is monotonic."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        sends_horizon_s: float | None = None,
    ) -> None:
        self._clock = clock
        self._sends_horizon_s = sends_horizon_s
        """`sent_recently` counts sends within this (the TTFT budget); None: not counted."""
        self._entries: dict[str, _Entry] = {}

    def set_upstreams(self, upstreams: Iterable[Upstream]) -> None:
        """Discovery's view: endpoints gone are dropped (their open requests go on, uncounted);
        the survivors keep their counts and scores."""
        entries: dict[str, _Entry] = {}
        for upstream in upstreams:
            entry = self._entries.get(upstream.name) or _Entry(upstream)
            entry.upstream = upstream
            entries[upstream.name] = entry
        self._entries = entries

    def upstream(self, name: str) -> Upstream | None:
        entry = self._entries.get(name)
        return entry.upstream if entry is not None else None

    def address_of(self, name: str) -> str | None:
        """The endpoint's `ip:port`, for the Envoy Endpoint Picker (None: not in the table)."""
        entry = self._entries.get(name)
        return entry.upstream.address if entry is not None else None

    def upstreams(self) -> list[Upstream]:
        return [entry.upstream for entry in self._entries.values()]

    def opened(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            entry.open_requests += 1
            if self._sends_horizon_s is not None:
                entry.sends.sent(self._clock())

    def closed(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is not None and entry.open_requests > 0:
            entry.open_requests -= 1

    def record(
        self, name: str, scores: Scores, *, read_at: float | None = None, source: str = ""
    ) -> None:
        """Scores measured at `read_at` (monotonic; now when None) by `source`. Each kind
        (efficiency; load: running, waiting, KV cache) is dated on its own; what was open when
        the load was read is what that reading already shows. Counters extend the source's own
        windows of this endpoint, and a new curve fitted from them replaces its curve."""
        entry = self._entries.get(name)
        if entry is None:
            return
        at = self._clock() if read_at is None else read_at
        entry.scores = entry.scores.merged(scores)
        if scores.tokens_per_joule is not None:
            entry.efficiency_at = at
        if scores.running is not None or scores.waiting is not None:
            entry.load_at = at
            entry.open_at_reading = entry.open_requests
        if scores.counters is not None:
            windows = entry.load_windows.setdefault(source, LoadWindows())
            before = windows.curve
            windows.add(scores.counters.at(at))
            if windows.curve is not before:
                entry.curve = windows.curve

    def readings(self) -> Sequence[EndpointReading]:
        """Every endpoint as the picker sees it now."""
        now = self._clock()
        return [
            EndpointReading(
                name=name,
                healthy=entry.upstream.healthy,
                tokens_per_joule=entry.scores.tokens_per_joule,
                running=entry.scores.running,
                waiting=entry.scores.waiting,
                kv_cache_usage=entry.scores.kv_cache_usage,
                age_s=entry.age_s(now),
                added_since_reading=entry.open_requests - entry.open_at_reading,
                open_requests=entry.open_requests,
                curve=entry.curve,
                sent_recently=entry.sends.within(self._sends_horizon_s, now),
            )
            for name, entry in self._entries.items()
        ]
