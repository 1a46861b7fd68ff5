"""The heat matrix learned from history: inlet rise per kW, fitted to measured power and inlets.

Tang et al. (2008) write a room's inlets as supply + D · P: inlet i rises by D_ij per kW at
place j. The controller only measures power, inlets and the supply air, so D is fitted to their
history by least squares; two things make that fit poor unless they are modelled:

- Inlets lag power. Air and chassis take minutes to reach a new steady state (a first-order
  response), so the inlet read with a power sample belongs to the power of a few minutes
  before. With `sample_s` the fit regresses the inlets on the power passed through a
  first-order lag, and takes the lag (among `LAG_CANDIDATES_S`) whose fit leaves the least
  residual: the lag is a property of the room that the history shows, not a parameter to set.
- Places' powers move together (one diurnal load spread over the room), so the history cannot
  tell a place's heat on its own inlet from its neighbours': the diagonal is not identifiable
  from the data alone. With `positions` the fit is drawn toward a geometric prior, the shape
  CFD-derived cross-interference matrices show (Tang et al. 2006/2008; Moore et al. 2005):
  most of a place's recirculated heat lands on its own and nearby inlets, decaying with
  distance along the row and up or down the rack. The prior's scale per inlet comes from the
  data (what the inlet's total rise says), only its shape from geometry, and how much of a
  place's heat lands on its own inlet from the history too (the diagonal of `PRIOR_DIAGONALS`
  that predicts held-out samples best). Without positions the fit shrinks toward zero, as it
  always did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from climatik.domain.placement import RecirculationEstimate

FloatArray = npt.NDArray[np.float64]

LAG_CANDIDATES_S = (0.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0)
"""Time constants of the inlets' first-order response tried by the fit (0: no lag). A server
room's inlets settle in minutes (air transit and chassis heat capacity)."""
PRIOR_RACK_LENGTH = 1.0
"""Racks along the row over which the prior's weight falls by e: the next rack's exhaust still
reaches an inlet, the far end of the row hardly."""
PRIOR_HEIGHT_LENGTH = 0.5
"""Rack heights over which the prior's weight falls by e (a rack top and bottom are far apart)."""
PRIOR_DIAGONALS = (1.0, 0.5, 0.2, 0.05)
"""Weights of a place's heat on its own inlet in the prior's shape, the rest of the shape as
it is: the fit takes the one whose matrix best predicts the last `HELD_OUT_SHARE` of the
history from the rest. The diagonal is what powers that move together hide, and rooms differ
there: a chassis that draws in its own exhaust heats its own inlet most, a rack whose exhaust
wraps over the top heats the servers above it more than itself. Held-out prediction is what
the history can tell of it (in the twin it picked the matrix closer to the truth in both of
its generators' rooms)."""
HELD_OUT_SHARE = 0.25
PRIOR_WEIGHT = 3e-4
"""How strongly the fit is drawn to the prior, as a share of the mean square power per place
(the ridge's scale): enough to decide what the data cannot (the diagonal when powers move
together), small against what it can."""


@dataclass(frozen=True, slots=True)
class PlacePosition:
    """Where a place sits: its rack's position along the row (in racks) and its height in
    the rack (0 bottom, 1 top). A rack taken as one place sits at height 0.5."""

    rack: float
    height: float


def geometric_prior(positions: Sequence[PlacePosition]) -> FloatArray:
    """The prior's shape: G[i, j], the weight of inlet i in the heat of place j, 1 on the
    diagonal, falling with distance along the row and in height."""
    rack = np.array([p.rack for p in positions], dtype=np.float64)
    height = np.array([p.height for p in positions], dtype=np.float64)
    apart = np.abs(rack[:, None] - rack[None, :]) / PRIOR_RACK_LENGTH
    apart += np.abs(height[:, None] - height[None, :]) / PRIOR_HEIGHT_LENGTH
    return np.asarray(np.exp(-apart), dtype=np.float64)


def lagged(power: FloatArray, keep: float) -> FloatArray:
    """Power through a first-order lag: each sample keeps `keep` of the last value (the first
    sample is taken as steady)."""
    out = np.empty_like(power)
    level = power[0].copy()
    for t in range(power.shape[0]):
        level = keep * level + (1.0 - keep) * power[t]
        out[t] = level
    return out


def estimate_recirculation(
    place_ids: Sequence[str],
    power_w: npt.ArrayLike,
    inlet_c: npt.ArrayLike,
    supply_c: npt.ArrayLike | None = None,
    ridge: float = 1e-3,
    *,
    sample_s: float | None = None,
    positions: Sequence[PlacePosition] | None = None,
) -> RecirculationEstimate:
    """Learn the recirculation matrix D from history by regularised least squares.

    Model (Tang et al. 2008): inlet_i(t) - supply_i(t) = Σ_j D_ij · P_j(t) [+ b_i]. Rows of
    `power_w` and `inlet_c` are samples (one per time, `sample_s` apart when given), columns
    follow `place_ids`; `supply_c` has one value per sample (one cooling unit) or one per sample
    and place. Without a supply series a per-inlet intercept b_i absorbs the supply
    temperature, assumed constant: where a cooling unit moves the supply air against the
    hottest inlet, that inlet barely follows the power and its coefficients come out near 0,
    so give the supply whenever it is measured. With `sample_s`, P is the power through the
    inlets' fitted lag; with `positions` (one per place) the fit is drawn toward the geometric
    prior instead of toward 0. Negative coefficients (noise: heat never cools an inlet) are
    clipped to 0. Rows with a non-finite value are dropped.

    Raises ValueError when there are fewer usable samples than unknowns.
    """
    n = len(place_ids)
    if n == 0:
        raise ValueError("no places to estimate")
    if positions is not None and len(positions) != n:
        raise ValueError("give one position per place")
    p = np.asarray(power_w, dtype=np.float64).reshape(-1, n) / 1000.0
    t = np.asarray(inlet_c, dtype=np.float64).reshape(-1, n)
    if p.shape != t.shape:
        raise ValueError("power and inlet histories must have the same shape")
    if supply_c is not None:
        s = np.asarray(supply_c, dtype=np.float64)
        s = s.reshape(-1, 1) if s.ndim < 2 else s
        if s.shape[0] != t.shape[0] or s.shape[1] not in (1, n):
            raise ValueError("the supply series must have one value, or one per place, per sample")
        y = t - s
    else:
        y = t
    ok = np.isfinite(p).all(axis=1) & np.isfinite(y).all(axis=1)
    p, y = p[ok], y[ok]
    intercept = supply_c is None
    unknowns = n + int(intercept)
    if p.shape[0] < unknowns + 1:
        raise ValueError(
            f"need at least {unknowns + 1} complete samples to estimate {n} places, "
            f"got {p.shape[0]}"
        )
    candidates = [0.0] if sample_s is None or sample_s <= 0 else list(LAG_CANDIDATES_S)
    fits = [
        _ridge_fit(_design(p, lag, sample_s, intercept), y, ridge, intercept) for lag in candidates
    ]
    lag_s = candidates[int(np.argmin([residual for _, residual in fits]))]
    x = _design(p, lag_s, sample_s, intercept)
    if positions is None:
        w, residual = _ridge_fit(x, y, ridge, intercept)
    else:
        shape = _held_out_prior(x, y, geometric_prior(positions), intercept)
        w, residual = _prior_fit(x, y, shape, intercept)
    d = np.clip(w[:n, :].T, 0.0, None)  # d[i, j]: rise of inlet i per kW at j
    return RecirculationEstimate(
        place_ids=tuple(place_ids),
        matrix_c_per_kw=tuple(tuple(float(v) for v in row) for row in d),
        factors_c_per_kw=tuple(float(v) for v in d.sum(axis=0)),
        rms_residual_c=residual,
        samples=int(x.shape[0]),
        lag_s=lag_s,
    )


def _design(
    power_kw: FloatArray, lag_s: float, sample_s: float | None, intercept: bool
) -> FloatArray:
    """The regressors: power (through the lag), and a column of ones for an intercept."""
    x = power_kw
    if lag_s > 0 and sample_s is not None and sample_s > 0:
        x = lagged(power_kw, float(np.exp(-sample_s / lag_s)))
    return np.hstack([x, np.ones((x.shape[0], 1))]) if intercept else x


def _ridge_fit(
    x: FloatArray, y: FloatArray, ridge: float, intercept: bool
) -> tuple[FloatArray, float]:
    """Coefficients shrunk toward 0 (an intercept, the last column without supply, is not)."""
    n = x.shape[1]
    gram = x.T @ x
    regulariser = ridge * np.eye(n) * max(1.0, float(np.trace(gram)) / n)
    if intercept:
        regulariser[-1, -1] = 0.0
    w = np.linalg.solve(gram + regulariser, x.T @ y)
    return w, _residual(x, y, w)


def _prior_fit(
    x: FloatArray, y: FloatArray, shape: FloatArray, intercept: bool
) -> tuple[FloatArray, float]:
    """Coefficients drawn toward `scale_i · shape[i, :]` per inlet i, the scale fitted to the
    inlet's rise against the prior-shaped heat (least squares, centred with an intercept)."""
    n = shape.shape[0]
    power = x[:, :n]
    heat = power @ shape.T  # (samples, inlets): heat each inlet gets under the prior's shape
    rise = y
    if intercept:
        heat = heat - heat.mean(axis=0)
        rise = y - y.mean(axis=0)
    scale = np.clip(
        (heat * rise).sum(axis=0) / np.maximum((heat * heat).sum(axis=0), 1e-12), 0, None
    )
    prior = (scale[:, None] * shape).T  # (places, inlets): prior coefficients per inlet column
    gram = x.T @ x
    weight = PRIOR_WEIGHT * max(1.0, float(np.trace(gram[:n, :n])) / n)
    regulariser = weight * np.eye(x.shape[1])
    target = np.zeros((x.shape[1], y.shape[1]))
    target[:n] = prior
    if intercept:
        regulariser[n, n] = 0.0  # the intercept is not drawn anywhere
    w = np.linalg.solve(gram + regulariser, x.T @ y + regulariser @ target)
    return w, _residual(x, y, w)


def _held_out_prior(x: FloatArray, y: FloatArray, shape: FloatArray, intercept: bool) -> FloatArray:
    """The prior's shape with the diagonal (of `PRIOR_DIAGONALS`) whose fit to the history's
    first part best predicts its last `HELD_OUT_SHARE`; the shape as given when the first part
    is too short to fit."""
    n = shape.shape[0]
    cut = round(x.shape[0] * (1.0 - HELD_OUT_SHARE))
    if cut < x.shape[1] + 1 or cut >= x.shape[0]:
        return shape
    best: tuple[float, FloatArray] | None = None
    for diagonal in PRIOR_DIAGONALS:
        candidate = shape.copy()
        candidate[np.diag_indices(n)] = diagonal
        w, _ = _prior_fit(x[:cut], y[:cut], candidate, intercept)
        error = _residual(x[cut:], y[cut:], w)
        if best is None or error < best[0]:
            best = (error, candidate)
    return shape if best is None else best[1]


def _residual(x: FloatArray, y: FloatArray, w: FloatArray) -> float:
    n = y.shape[1]
    d = np.clip(w[:n], 0.0, None)
    fitted = x[:, :n] @ d + (w[n] if x.shape[1] > n else 0.0)
    return float(np.sqrt(np.mean((y - fitted) ** 2)))
