"""Piecewise-linear envelopes for the bounds' LPs: lines above a concave curve, points below a
convex one.

A bound stays a bound only if what it replaces by lines is replaced from the right side: the
SLO's met share (increasing, bounded above by its least concave majorant) and the clocks' energy
against replica time (mixing clocks reaches their lower convex hull). Both keep only some of the
hull's segments, which loosens the envelope a little and keeps the LPs small; it never crosses
to the wrong side.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _hull(x: FloatArray, y: FloatArray, *, upper: bool) -> list[int]:
    """Indices of the upper (or lower) convex hull of points sorted by x (monotone chain)."""
    sign = 1.0 if upper else -1.0
    hull: list[int] = []
    for k in range(x.size):
        while len(hull) >= 2:
            i, j = hull[-2], hull[-1]
            cross = (x[j] - x[i]) * (y[k] - y[i]) - (y[j] - y[i]) * (x[k] - x[i])
            if sign * cross >= 0:
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


def _kept_segments(count: int, most: int) -> npt.NDArray[np.int64]:
    """At most `most` of `count` hull segments, evenly spread, the first and last among them."""
    return np.unique(np.round(np.linspace(0, count - 1, min(count, most))).astype(np.int64))


def upper_lines(x: FloatArray, y: FloatArray, most: int) -> tuple[FloatArray, FloatArray]:
    """Lines (intercepts, slopes) whose minimum lies on or above the points, at most `most`.

    They are lines of segments of the points' least concave majorant: any subset of them still
    lies above it (a concave function is below each of its segments' lines), only less tightly.
    """
    hull = _hull(x, y, upper=True)
    xs, ys = x[hull], y[hull]
    keep = _kept_segments(len(hull) - 1, most)
    slopes = (ys[keep + 1] - ys[keep]) / (xs[keep + 1] - xs[keep])
    return ys[keep] - slopes * xs[keep], slopes


def lower_frontier(
    seconds: FloatArray, energy: FloatArray, most: int
) -> tuple[FloatArray, FloatArray]:
    """Points (replica-seconds, joules) on or below every clock's mix, at most `most` + 1.

    Mixing clocks reaches the lower convex hull of the clocks' (replica-s, J) points. Keeping
    some of its segments' lines and taking their consecutive intersections gives points on or
    below that hull: serving with them is a relaxation of serving with the real clocks.
    """
    order = np.argsort(seconds)
    xs, ys = seconds[order], energy[order]
    hull = _hull(xs, ys, upper=False)
    hx, hy = xs[hull], ys[hull]
    if len(hull) <= 2:
        return hx, hy
    keep = _kept_segments(len(hull) - 1, most)
    slopes = (hy[keep + 1] - hy[keep]) / (hx[keep + 1] - hx[keep])
    intercepts = hy[keep] - slopes * hx[keep]
    cross_x = (intercepts[1:] - intercepts[:-1]) / (slopes[:-1] - slopes[1:])
    points_x = np.concatenate([[hx[0]], cross_x, [hx[-1]]])
    points_y = np.concatenate([[hy[0]], intercepts[:-1] + slopes[:-1] * cross_x, [hy[-1]]])
    return points_x, points_y
