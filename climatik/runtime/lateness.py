"""How late a controller's periodic reconciles finish after they were due, and the lead that
keeps every key within its interval.

A polled key (`Result(requeue_after=interval)`) is queued again one interval after it was due.
Its gap between two reconciles is then the interval plus how much later the second one was than
the first: a wait behind other keys due at the same moment, and the reconcile itself. Over a
round of thousands of keys some of those differences are positive, so some gaps exceed the
interval, and the interval is what a config's reader is promised (the power cap's safety
assumes its ceilings are looked at that often). Queuing each key again a little early, by a
the largest recent lateness, keeps the gaps within the interval; it costs that share
of extra reconciles, and it is bounded so an overloaded controller cannot spin.
"""

from __future__ import annotations

from collections import deque

WINDOW = 8192
"""Recent reconciles the quantile is taken over: at 5,000 configs, about one interval's worth.
A key's next round meets whatever the coming interval brings (a collection, a burst of
events); a window of a few seconds (it was 1,024) forgot the last such pause before the keys
it delayed came round again."""
QUANTILE = 1.0
"""The largest: every config is promised a reconcile within the interval, not most of them.
With the 99th percentile, the 1 % of reconciles later than the lead were, over 5,000 keys,
nearly every key once in a few rounds; with the 99.9th, still a few keys each round."""
REFRESH_EVERY = 256
"""The quantile is recomputed after this many new observations (a sort of `WINDOW` values)."""
MAX_LEAD_FRACTION = 0.1
"""The lead never exceeds this share of the interval (at most 11 % more reconciles)."""


class Lateness:
    """Recent lateness of one controller's polled reconciles (seconds after they were due)."""

    def __init__(
        self,
        *,
        window: int = WINDOW,
        quantile: float = QUANTILE,
        refresh_every: int = REFRESH_EVERY,
        max_lead_fraction: float = MAX_LEAD_FRACTION,
    ) -> None:
        if not 0 < quantile <= 1 or window < 1 or refresh_every < 1 or max_lead_fraction < 0:
            raise ValueError("lateness: window and refresh_every >= 1, 0 < quantile <= 1")
        self._recent: deque[float] = deque(maxlen=window)
        self._quantile = quantile
        self._refresh_every = refresh_every
        self._max_lead_fraction = max_lead_fraction
        self._since_refresh = 0
        self._high_s = 0.0

    def observe(self, late_s: float) -> None:
        """One polled reconcile finished `late_s` after it was due."""
        self._recent.append(max(late_s, 0.0))
        self._since_refresh += 1
        if self._since_refresh >= self._refresh_every or len(self._recent) <= self._refresh_every:
            ordered = sorted(self._recent)
            self._high_s = ordered[min(len(ordered) - 1, int(self._quantile * len(ordered)))]
            self._since_refresh = 0

    @property
    def high_s(self) -> float:
        """The quantile of the recent lateness."""
        return self._high_s

    def lead_s(self, interval_s: float) -> float:
        """How much earlier than one interval after it was due to queue a key again."""
        return min(self._high_s, self._max_lead_fraction * max(interval_s, 0.0))
