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
"""

from __future__ import annotations

from collections.abc import Sequence

from climatik.domain.routing import LoadCurve, LoadWindow

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
