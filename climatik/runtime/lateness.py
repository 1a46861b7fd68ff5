"""How late a controller's periodic reconciles finish after they were due, and the lead that
keeps every key within its interval.

A polled key (`Result(requeue_after=interval)`) is queued again one interval after it was due.
Its gap between two reconciles is then the interval plus how much later the second one was than
the first: a wait behind other keys due at the same moment, and the reconcile itself. Over a
round of thousands of keys some of those differences are positive, so some gaps exceed the
interval, and the interval is what a config's reader is promised (the power cap's safety
assumes its ceilings are looked at that often). Queuing each key again a little early, by the
largest lateness of the last minute, keeps the gaps within the interval; it costs that share of
extra reconciles, and it is bounded so an overloaded controller cannot spin.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

HORIZON_S = 60.0
"""How long a lateness is remembered: four of the default 15 s intervals, so a key's next round
is led by whatever delayed the last few (a collection, a burst of events or writes). Counted in
reconciles instead (1,024, then 8,192), it was a few seconds at 5,000 configs and forgot a pause
before the keys it delayed came round again: a few keys in a hundred still missed."""
MAX_LEAD_FRACTION = 0.1
"""The lead never exceeds this share of the interval (at most 11 % more reconciles)."""
MAX_LEAD_RISE = 0.02
"""Seconds the lead may rise per second. Keys are queued again relative to when they were due,
so a lead that jumps by d makes every key queued afterwards due d earlier, on top of the keys
queued just before: a bunch d long, which keeps its spacing round after round and is late by
about d itself, holding the lead up. Rising at 2 % of elapsed time, the keys' due times crowd by
2 % at most. It falls at once (that only spaces keys out)."""


class Lateness:
    """The largest lateness of one controller's polled reconciles (seconds after they were due)
    within the horizon: every config is promised a reconcile within its interval, not most of
    them, so the lead is the worst recent lateness rather than a quantile of it. A sliding
    maximum (a deque of decreasing values) costs O(1) per reconcile."""

    def __init__(
        self,
        *,
        horizon_s: float = HORIZON_S,
        max_lead_fraction: float = MAX_LEAD_FRACTION,
        max_rise: float = MAX_LEAD_RISE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if horizon_s <= 0 or max_lead_fraction < 0 or max_rise < 0:
            raise ValueError("lateness: horizon_s > 0, max_lead_fraction and max_rise >= 0")
        self._horizon_s = horizon_s
        self._max_lead_fraction = max_lead_fraction
        self._max_rise = max_rise
        self._clock = clock
        self._lead_s = 0.0
        self._lead_at: float | None = None
        self._peaks: deque[tuple[float, float]] = deque()
        """(when, lateness), the lateness strictly decreasing from the left."""

    def observe(self, late_s: float) -> None:
        """One polled reconcile finished `late_s` after it was due."""
        now = self._clock()
        late_s = max(late_s, 0.0)
        peaks = self._peaks
        while peaks and peaks[-1][1] <= late_s:
            peaks.pop()
        peaks.append((now, late_s))
        self._expire(now)

    def _expire(self, now: float) -> None:
        peaks = self._peaks
        while peaks and peaks[0][0] < now - self._horizon_s:
            peaks.popleft()

    @property
    def high_s(self) -> float:
        """The largest lateness within the horizon."""
        return self._high(self._clock())

    def _high(self, now: float) -> float:
        self._expire(now)
        return self._peaks[0][1] if self._peaks else 0.0

    def lead_s(self, interval_s: float) -> float:
        """How much earlier than one interval after it was due to queue a key again: toward
        the largest recent lateness, rising at most `max_rise` per second."""
        now = self._clock()
        wanted = min(self._high(now), self._max_lead_fraction * max(interval_s, 0.0))
        since = now - self._lead_at if self._lead_at is not None else 0.0
        if wanted > self._lead_s:
            wanted = min(wanted, self._lead_s + self._max_rise * since)
        self._lead_s, self._lead_at = wanted, now
        return wanted
