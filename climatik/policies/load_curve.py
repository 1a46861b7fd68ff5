"""An endpoint's load curve from its own scrapes: draw and time per output token against batch.

Each window between two scrapes with decoded tokens gives one point per curve: the mean decoding
batch (inter-token seconds over the window's seconds), the mean time per output token
(inter-token seconds over tokens) and the mean GPU draw. A straight line through each set of
points, weighted by the windows' seconds, is the curve (`domain.routing.LoadCurve`). Windows
without tokens teach nothing about decoding and are not used, so an idle endpoint keeps the
curve it last showed busy instead of reading 0 tokens per joule.

Physics bounds the fit: neither draw nor time per token falls as the batch grows (a negative
slope is noise and is fitted as flat) nor is negative at an empty batch; an endpoint seen at
only one batch gets flat lines, and `LoadCurve.tpot_s_at` is pessimistic past the largest
batch seen. The mean seconds of one prefill come from vLLM's
`vllm:request_prefill_time_seconds` `_sum` and `_count` over the same windows.

`LoadWindows` turns successive reads of the cumulative counters into those windows and keeps
the curve through the latest of them; `RecentSends` counts a router's sends over the TTFT
budget. The twin's router and the live router both keep one of each per endpoint, so the two
learn alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from climatik.domain.routing import LoadCounters, LoadCurve, LoadWindow

MIN_WINDOWS = 1
"""Windows with tokens needed before a curve is fitted: one is enough, since a curve through
one batch predicts nothing past it but the pessimistic bound (`LoadCurve.tpot_s_at`)."""


def fit_load_curve(windows: Sequence[LoadWindow]) -> LoadCurve | None:
    """The curve through `windows` with tokens, or None with fewer than `MIN_WINDOWS`."""
    used = [w for w in windows if w.seconds > 0 and w.decode_tokens > 0 and w.decode_s > 0]
    if len(used) < MIN_WINDOWS:
        return None
    weights = [w.seconds for w in used]
    batch = [w.batch for w in used]
    watts, watts_per_request = _line(batch, [w.watts for w in used], weights)
    tpot_s, tpot_s_per_request = _line(batch, [w.tpot_s for w in used], weights)
    prefills = sum(w.prefills for w in used)
    prefill_s = sum(w.prefill_s for w in used) / prefills if prefills > 0 else None
    return LoadCurve(watts, watts_per_request, tpot_s, tpot_s_per_request, max(batch), prefill_s)


def _line(x: Sequence[float], y: Sequence[float], w: Sequence[float]) -> tuple[float, float]:
    """Weighted least-squares intercept and slope, the slope at least 0."""
    total = sum(w)
    mean_x = sum(wi * xi for wi, xi in zip(w, x, strict=True)) / total
    mean_y = sum(wi * yi for wi, yi in zip(w, y, strict=True)) / total
    spread = sum(wi * (xi - mean_x) ** 2 for wi, xi in zip(w, x, strict=True))
    if spread <= 1e-9 * total:
        return mean_y, 0.0
    covariance = sum(wi * (xi - mean_x) * (yi - mean_y) for wi, xi, yi in zip(w, x, y, strict=True))
    slope = max(covariance / spread, 0.0)
    intercept = mean_y - slope * mean_x
    if intercept >= 0:
        return intercept, slope
    # Neither draw nor time per token is negative at an empty batch: the line through 0.
    through_origin = sum(wi * xi * yi for wi, xi, yi in zip(w, x, y, strict=True)) / sum(
        wi * xi * xi for wi, xi in zip(w, x, strict=True)
    )
    return 0.0, through_origin


CURVE_WINDOWS = 120
"""Windows with tokens a curve is fitted from (30 min of 15-s scrapes while busy; kept while
the endpoint idles)."""


class LoadWindows:
    """One endpoint's windows between successive reads of its counters, and the curve through
    them: the twin's router and the live router keep one per endpoint and feed it every read.

    A counter that fell (the pod restarted, a series was reset) starts afresh from that read:
    the window across the reset would be nonsense. A read no later than the previous one is
    ignored. The curve is refitted when a window with tokens is added, so whoever feeds the
    reads pays for the fit (the background scrape, never the request).
    """

    __slots__ = ("_last", "curve", "windows")

    def __init__(self, max_windows: int = CURVE_WINDOWS) -> None:
        self._last: LoadCounters | None = None
        self.windows: deque[LoadWindow] = deque(maxlen=max_windows)
        self.curve: LoadCurve | None = None

    def add(self, counters: LoadCounters) -> LoadWindow | None:
        """The window since the previous read (None for the first, or after a reset)."""
        previous, self._last = self._last, counters
        if previous is None:
            return None
        if counters.t <= previous.t:
            self._last = previous
            return None
        window = LoadWindow(
            seconds=counters.t - previous.t,
            decode_s=counters.decode_s - previous.decode_s,
            decode_tokens=counters.decode_tokens - previous.decode_tokens,
            gpu_joules=counters.gpu_joules - previous.gpu_joules,
            prefill_s=counters.prefill_s - previous.prefill_s,
            prefills=counters.prefills - previous.prefills,
        )
        if (
            min(window.decode_s, window.decode_tokens, window.gpu_joules) < 0
            or min(window.prefill_s, window.prefills) < 0
        ):
            return None
        if window.decode_tokens > 0:
            self.windows.append(window)
            self.curve = fit_load_curve(self.windows)
        return window


class RecentSends:
    """When a router sent one endpoint its requests, counted over a trailing horizon (the TTFT
    budget): the `EndpointReading.sent_recently` the twin's router and the live proxy both feed.
    Amortised O(1) per send and per count."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at: deque[float] = deque()

    def sent(self, t: float) -> None:
        self._at.append(t)

    def within(self, horizon_s: float | None, now: float) -> int:
        """Sends in (now - horizon_s, now]; with no horizon 0, and none are kept."""
        if horizon_s is None:
            self._at.clear()
            return 0
        while self._at and self._at[0] <= now - horizon_s:
            self._at.popleft()
        return len(self._at)
